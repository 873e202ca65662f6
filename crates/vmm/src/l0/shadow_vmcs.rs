//! L1's VMREAD and VMWRITE without exits: vmcs12 as the shadow VMCS of
//! vmcs01 (Intel SDM vol. 3C, 25.10 "VMCS Types: Ordinary and Shadow",
//! 25.6.15 "VMCS Shadowing Bitmap Addresses"; KVM's nested VMX does the
//! same with a separate shadow VMCS it copies to and from).
//!
//! Invariant: while L1 runs with a current vmcs12, the fields of L0's
//! cached vmcs12 are the processor's shadow VMCS ([`Cpu::set_shadow_vmcs`],
//! the box moved, not copied: [`nested::Vmcs12::swap_vmcs`]), vmcs01 has
//! "VMCS shadowing" set, the bitmaps of [`nested::vmcs12::shadow_bitmap`]
//! and a link pointer naming an L0-private page. L1's VMREAD/VMWRITE of
//! a supported (and, for VMWRITE, writable) field then act on those
//! fields on the processor, and its writes mark their check groups in
//! [`vmx::Vmcs::written`] as L0's emulation would, so the virtual entry
//! re-checks what L1 wrote. Whenever L0 itself needs vmcs12 (any VMX
//! instruction of L1, which includes VMLAUNCH/VMRESUME) it takes the
//! fields back first ([`Vcpu::unlink_vmcs12`]) and lends them again
//! ([`Vcpu::link_vmcs12`]) before L1 runs: at the end of the
//! instruction, after a reflected exit, after vmcs02's entry failed.
//! Without a current vmcs12 (or while L2 runs) nothing is linked and
//! vmcs01's shadowing is off, so every VMREAD/VMWRITE exits as before.
//!
//! [`Cpu::set_shadow_vmcs`]: cpu::Cpu::set_shadow_vmcs

use cpu::{Bus, Memory};
use vmx::controls::ProcCtls2;
use vmx::{ExitReason, Vmcs, VmcsField as F};

use super::{Next, Vcpu};

/// L0's pages and spare storage for shadowing vmcs12.
#[derive(Default)]
pub(super) struct VmcsShadowing {
    /// VMREAD bitmap, VMWRITE bitmap and the page the link pointer names;
    /// `None` until first needed (or when private memory ran out, which
    /// leaves shadowing off).
    pages: Option<[u64; 3]>,
    /// The box the cached vmcs12 holds while its fields are lent out.
    spare: Option<Box<Vmcs>>,
}

impl VmcsShadowing {
    /// The bitmap and link pages, allocated and filled on first use.
    fn pages(&mut self, mem: &mut Memory) -> Option<[u64; 3]> {
        if self.pages.is_none() {
            let pages = [mem.alloc_private_page()?, mem.alloc_private_page()?, mem.alloc_private_page()?];
            mem.write_phys(pages[0], &nested::vmcs12::shadow_bitmap(false)).ok()?;
            mem.write_phys(pages[1], &nested::vmcs12::shadow_bitmap(true)).ok()?;
            self.pages = Some(pages);
        }
        self.pages
    }
}

impl Vcpu {
    /// A VMX instruction of L1, with the vmcs12 fields back in L0's cache
    /// while L0 emulates it.
    pub(super) fn l1_vmx_instruction(&mut self, mem: &mut Memory, bus: &mut dyn Bus, reason: ExitReason) -> Next {
        self.unlink_vmcs12();
        let next = self.vmx_instruction(mem, bus, reason);
        self.link_vmcs12(mem);
        next
    }

    /// Lends the current vmcs12 to the processor as vmcs01's shadow VMCS
    /// when L1 is about to run with one, and sets vmcs01's shadowing
    /// controls to match (writing only fields that change, since a
    /// control write makes the next entry re-run every check).
    pub(super) fn link_vmcs12(&mut self, mem: &mut Memory) {
        let Some(n) = self.nested.as_mut() else { return };
        if n.l2_active {
            return;
        }
        let pages = match n.vmx.current_mut() {
            Some(v12) if self.cpu.shadow_vmcs().is_none() => match n.vmcs_shadowing.pages(mem) {
                Some(pages) => {
                    let mut fields = n.vmcs_shadowing.spare.take().unwrap_or_default();
                    v12.swap_vmcs(&mut fields);
                    self.cpu.set_shadow_vmcs(Some(fields));
                    Some(pages)
                }
                None => None,
            },
            Some(_) => n.vmcs_shadowing.pages,
            None => None,
        };
        let proc2 = self.cpu.vmread(F::SecondaryProcControls);
        let shadowing = u64::from(ProcCtls2::VMCS_SHADOWING.bits());
        let (want_proc2, link) = match pages {
            Some(p) => {
                if self.cpu.vmread(F::VmreadBitmapAddress) != p[0] {
                    self.cpu.vmwrite(F::VmreadBitmapAddress, p[0]);
                    self.cpu.vmwrite(F::VmwriteBitmapAddress, p[1]);
                }
                (proc2 | shadowing, p[2])
            }
            None => (proc2 & !shadowing, u64::MAX),
        };
        if want_proc2 != proc2 {
            self.cpu.vmwrite(F::SecondaryProcControls, want_proc2);
        }
        if self.cpu.vmread(F::VmcsLinkPointer) != link {
            self.cpu.vmwrite(F::VmcsLinkPointer, link);
        }
    }

    /// Takes the lent fields back into the cached vmcs12 before L0 reads
    /// or writes it. vmcs01's controls stay as they are: L1 does not run
    /// before [`Vcpu::link_vmcs12`] sets them again.
    pub(super) fn unlink_vmcs12(&mut self) {
        let Some(n) = self.nested.as_mut() else { return };
        let Some(mut fields) = self.cpu.set_shadow_vmcs(None) else { return };
        // The current vmcs12 cannot change while its fields are lent: only
        // L1's VMX instructions change it, and they unlink first.
        if let Some(v12) = n.vmx.current_mut() {
            v12.swap_vmcs(&mut fields);
        }
        n.vmcs_shadowing.spare = Some(fields);
    }
}
