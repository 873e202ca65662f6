//! L0's instruction emulator: what KVM's `arch/x86/kvm/emulate.c` is to
//! VT-x. Some exits leave L0 an instruction to carry out on the guest's
//! behalf — an access to a device page that EPT01 does not map (SDM vol.
//! 3C, 29.3.3.2 "EPT Violations"), string I/O (INS/OUTS with a REP
//! prefix) — and doing that needs a decoder and an executor. Turtles has
//! one already, so L0 reuses it rather than carrying a second copy: the
//! guest state of the current VMCS is loaded, one instruction runs in root
//! operation with guest-physical addresses taken as physical (which is
//! what they are under L0's identity EPT01: RAM where RAM is, devices
//! where devices are), and the guest state goes back into the VMCS.
//!
//! Exceptions the instruction raises are delivered to the guest through
//! its IDT, as KVM's emulator injects them. The processor is back in root
//! operation afterwards, with the VMCS ready for VMRESUME.

use super::Controls;
use crate::mem::Memory;
use crate::{events, Activity, Bus, Cpu, Ctx};

/// Why [`Cpu::emulate_guest_instruction`] could not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmulateError {
    /// Not in VMX root operation with a current VMCS.
    NoGuest,
    /// The guest shut down (triple fault) while the instruction ran.
    Shutdown(String),
}

impl Cpu {
    /// Executes the guest instruction at the current VMCS's guest RIP on
    /// the guest's state and stores the resulting state back.
    pub fn emulate_guest_instruction(&mut self, mem: &mut Memory, bus: &mut dyn Bus) -> Result<(), EmulateError> {
        if self.non_root || self.vmx.current.is_none() {
            return Err(EmulateError::NoGuest);
        }
        if self.guest_parked() && !self.vmx.live_rflags {
            return self.emulate_parked(mem, bus);
        }
        self.load_host_context();
        if let Some(v) = self.vmx.current.as_deref() {
            self.vmx.ctls = Controls::from_vmcs(v);
        }
        self.vmx.ctls_valid = true;
        self.load_guest_state();
        // Guest-physical is physical here: no EPT, and no exits since
        // the processor stays in root operation.
        self.ept = None;
        let mut ctx = Ctx { mem, bus };
        let end = self.icount + 1;
        self.execute_block(&mut ctx, end);
        let shutdown = (self.activity == Activity::Shutdown).then(|| self.shutdown.clone().unwrap_or_default());
        self.save_guest_state_at_emulation();
        self.load_host_state(&mut ctx);
        // This was not a VM exit: the next run must not report one.
        self.events &= !events::VM_EXIT;
        match shutdown {
            Some(why) => Err(EmulateError::Shutdown(why)),
            None => Ok(()),
        }
    }

    /// The same with the guest's registers parked (`cache.rs`): they are
    /// already loaded, so the instruction runs on them directly and they
    /// stay parked; the VMCS copies parking keeps current are refreshed,
    /// and the non-register state saved, as the eager path saves them.
    fn emulate_parked(&mut self, mem: &mut Memory, bus: &mut dyn Bus) -> Result<(), EmulateError> {
        let ept = self.ept.take();
        let mut ctx = Ctx { mem, bus };
        let end = self.icount + 1;
        self.execute_block(&mut ctx, end);
        self.ept = ept;
        let shutdown = (self.activity == Activity::Shutdown).then(|| self.shutdown.clone().unwrap_or_default());
        self.write_park_copies();
        self.save_guest_state_inner(false, false);
        self.events &= !events::VM_EXIT;
        match shutdown {
            Some(why) => Err(EmulateError::Shutdown(why)),
            None => Ok(()),
        }
    }
}
