//! `vmx`: VMX instruction conformance (issue 6, item 7), in the style of
//! kvm-unit-tests' `vmx.c`: one check per case.
//!
//! Covers SDM Vol. 3C, chapter 31 "VMX Instruction Reference" (each
//! instruction's "Operation" pseudocode: #UD outside VMX operation, #GP for
//! unsupported CR0/CR4, VMfailInvalid without a current VMCS, VMfailValid
//! with the numbers of 31.4 "VM Instruction Error Numbers"), 24.8
//! "Restrictions on VMX Operation" (CR0/CR4 fixed bits while in VMX
//! operation), 25.11.2 "VMREAD, VMWRITE, and Encodings of VMCS Fields", and
//! chapter 27 "VM Entries": a control-field failure (VMfailValid 7), a
//! host-state failure (8), guest-state failures (a VM exit with basic reason
//! 33 and bit 31 set, at host RIP, SDM 27.8), then a real entry whose guest
//! executes CPUID and exits with reason 10.
//!
//! Order matters: the VMCS tests start with no current VMCS (where every
//! VMfail is VMfailInvalid, 31.2 "Conventions") and then make VMCS A
//! current, after which failures carry an error number.
#![no_std]
#![no_main]

use core::arch::global_asm;
use rt::arch::{self, cr0};
use rt::idt::{vector, Fault};
use rt::sync::Global;
use rt::vmx::{self, error, exit_reason, field, Caps, GuestRegs, Page, VmFail, VmResult};
use rt::{check, check_eq, println, skip};

rt::entry!("vmx", main);

static VMXON_REGION: Global<Page> = Global::new(Page::zeroed());
static VMCS_A: Global<Page> = Global::new(Page::zeroed());
static VMCS_B: Global<Page> = Global::new(Page::zeroed());

#[repr(C, align(16))]
struct Stack([u8; 8192]);
static GUEST_STACK: Global<Stack> = Global::new(Stack([0; 8192]));

// The guest of the entry tests: CPUID forever (CPUID exits unconditionally,
// SDM Vol. 3C, 26.1.2 "Instructions That Cause VM Exits Unconditionally").
global_asm!(
    r#"
    .section .text.vmxguest, "ax"
    .globl vmx_guest_entry
vmx_guest_entry:
    cpuid
    jmp     vmx_guest_entry
"#
);

extern "C" {
    fn vmx_guest_entry();
}

fn pa<T>(g: &Global<T>) -> u64 {
    g.as_ptr() as u64
}

fn guest_rip() -> u64 {
    vmx_guest_entry as *const () as u64
}

fn guest_rsp() -> u64 {
    pa(&GUEST_STACK) + core::mem::size_of::<Stack>() as u64
}

/// Formats an optional fault for check names.
struct Got(Option<Fault>);

impl core::fmt::Display for Got {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self.0 {
            Some(x) => write!(f, "vector {} error {:#x}", x.vector, x.error_code),
            None => write!(f, "no exception"),
        }
    }
}

/// Checks that `f` raised exactly `vector` with error code `error_code`.
fn expect_fault(name: &str, f: Option<Fault>, vector: u8, error_code: u64) -> bool {
    check!(f.is_some_and(|x| x.is(vector, error_code)), "{} (got {})", name, Got(f))
}

fn expect(name: &str, got: VmResult, want: VmResult) -> bool {
    check_eq!(got, want, "{}", name)
}

fn fail_valid(n: u32) -> VmResult {
    Err(VmFail::Valid(n))
}

fn vmwrite(f: u64, v: u64) -> VmResult {
    // SAFETY: the tests own every VMCS they make current.
    unsafe { vmx::vmwrite(f, v) }
}

/// A bit set in `mask`'s complement (a must-be-0 control bit), if any.
fn highest_clear(mask: u32) -> Option<u32> {
    (mask != u32::MAX).then(|| 31 - (!mask).leading_zeros())
}

fn main(_mb: u32) {
    vmx::install_ud_reporter();
    if !check!(vmx::cpuid_has_vmx(), "CPUID.1:ECX.VMX is set") {
        return;
    }
    // SAFETY: CPUID says VMX exists, so the capability MSRs do.
    let caps = unsafe { Caps::read() };
    println!(
        "IA32_VMX_BASIC {:#x} MISC {:#x} CR0 fixed {:#x}/{:#x} CR4 fixed {:#x}/{:#x}",
        caps.basic, caps.misc, caps.cr0_fixed0, caps.cr0_fixed1, caps.cr4_fixed0, caps.cr4_fixed1
    );
    check!(caps.revision_id() != 0, "IA32_VMX_BASIC revision identifier is nonzero");
    check!(caps.region_size() > 0 && caps.region_size() <= 4096, "VMCS region size in (0, 4096]");
    check!(caps.cr4_fixed0 & vmx::CR4_VMXE != 0, "CR4.VMXE is fixed to 1 in VMX operation");

    vmxon_preconditions(&caps);
    no_current_vmcs();
    current_vmcs(&caps);
    vm_entry(&caps);
    leave(&caps);
}

/// SDM Vol. 3C, 31.3, VMXON "Operation" (outside VMX operation), in order.
fn vmxon_preconditions(caps: &Caps) {
    let region = pa(&VMXON_REGION);
    // SAFETY: the region belongs to this kernel.
    unsafe { vmx::init_region(region, caps.revision_id()) };
    check_eq!(arch::read_cr4() & vmx::CR4_VMXE, 0, "CR4.VMXE is clear at boot");
    // SAFETY: VMXON with CR4.VMXE = 0 raises #UD and changes nothing.
    let f = vmx::expect_ud(|| unsafe { vmx::vmxon(region) });
    expect_fault("VMXON with CR4.VMXE=0: #UD", f, vector::UD, 0);

    // IA32_FEATURE_CONTROL: firmware (or L0) normally locks it with VMX on;
    // lock it ourselves if it was left open.
    // SAFETY: MSR 3AH exists on VMX processors; the write only sets the
    // lock and enable bits, as firmware does.
    let fc = unsafe { arch::rdmsr(vmx::msr::IA32_FEATURE_CONTROL) };
    if fc & vmx::msr::FEATURE_CONTROL_LOCK == 0 {
        let v = fc | vmx::msr::FEATURE_CONTROL_LOCK | vmx::msr::FEATURE_CONTROL_VMX_OUTSIDE_SMX;
        // SAFETY: see above.
        unsafe { arch::wrmsr(vmx::msr::IA32_FEATURE_CONTROL, v) };
    }
    // SAFETY: as above.
    let fc = unsafe { arch::rdmsr(vmx::msr::IA32_FEATURE_CONTROL) };
    check_eq!(
        fc & (vmx::msr::FEATURE_CONTROL_LOCK | vmx::msr::FEATURE_CONTROL_VMX_OUTSIDE_SMX),
        vmx::msr::FEATURE_CONTROL_LOCK | vmx::msr::FEATURE_CONTROL_VMX_OUTSIDE_SMX,
        "IA32_FEATURE_CONTROL locked with VMX outside SMX"
    );

    let cr0 = caps.fix_cr0(arch::read_cr0());
    // SAFETY: sets the bits VMX requires (NE, PE, PG are already set in
    // long mode) and CR4.VMXE; neither changes the running code.
    unsafe {
        arch::write_cr0(cr0);
        arch::write_cr4(caps.fix_cr4(arch::read_cr4() | vmx::CR4_VMXE));
    }
    if caps.cr0_fixed0 & cr0::NE != 0 {
        // SAFETY: CR0.NE only selects how x87 errors are reported; it is
        // restored right after.
        let f = vmx::expect_ud(|| unsafe {
            arch::write_cr0(cr0 & !cr0::NE);
            let _ = vmx::vmxon(region);
        });
        // SAFETY: restores CR0.
        unsafe { arch::write_cr0(cr0) };
        expect_fault("VMXON with CR0.NE=0 (fixed to 1): #GP(0)", f, vector::GP, 0);
    } else {
        skip!("CR0.NE is not fixed to 1", "VMXON with CR0.NE=0");
    }

    // SAFETY (this block): VMXON with invalid operands fails without
    // entering VMX operation.
    unsafe {
        expect("VMXON with a misaligned pointer: VMfailInvalid", vmx::vmxon(region + 8), Err(VmFail::Invalid));
        let width = arch::maxphyaddr();
        if width < 64 {
            expect(
                "VMXON with a pointer beyond MAXPHYADDR: VMfailInvalid",
                vmx::vmxon(region | 1 << width),
                Err(VmFail::Invalid),
            );
        }
        vmx::init_region(region, caps.revision_id() ^ 1);
        expect("VMXON with a wrong revision identifier: VMfailInvalid", vmx::vmxon(region), Err(VmFail::Invalid));
        vmx::init_region(region, caps.revision_id() | 1 << 31);
        expect("VMXON with revision bit 31 set: VMfailInvalid", vmx::vmxon(region), Err(VmFail::Invalid));
        vmx::init_region(region, caps.revision_id());
    }
    // SAFETY: enters VMX root operation with a prepared region.
    expect("VMXON", unsafe { vmx::vmxon(region) }, Ok(()));

    // 24.8 "Restrictions on VMX Operation": fixed bits cannot change now.
    let cr4 = arch::read_cr4();
    // SAFETY: the write must fault; if it does not, CR4 is restored.
    let f = vmx::expect_ud(|| unsafe { arch::write_cr4(cr4 & !vmx::CR4_VMXE) });
    // SAFETY: restores CR4 in case the write went through.
    unsafe { arch::write_cr4(cr4) };
    expect_fault("clearing CR4.VMXE in VMX operation: #GP(0)", f, vector::GP, 0);
    if caps.cr0_fixed0 & cr0::NE != 0 {
        let c = arch::read_cr0();
        // SAFETY: as above.
        let f = vmx::expect_ud(|| unsafe { arch::write_cr0(c & !cr0::NE) });
        // SAFETY: restores CR0.
        unsafe { arch::write_cr0(c) };
        expect_fault("clearing CR0.NE in VMX operation: #GP(0)", f, vector::GP, 0);
    }
}

/// VMX root operation without a current VMCS: every VMfail is
/// VMfailInvalid (31.2 "Conventions").
fn no_current_vmcs() {
    check_eq!(vmx::vmptrst(), u64::MAX, "VMPTRST with no current VMCS: all ones");
    expect("VMREAD with no current VMCS: VMfailInvalid", vmx::vmread(field::GUEST_RIP).map(drop), Err(VmFail::Invalid));
    expect("VMWRITE with no current VMCS: VMfailInvalid", vmwrite(field::GUEST_RIP, 0), Err(VmFail::Invalid));
    // SAFETY (this block): without a current VMCS these instructions fail
    // before touching any state.
    unsafe {
        expect("VMXON in VMX root, no current VMCS: VMfailInvalid", vmx::vmxon(pa(&VMXON_REGION)), Err(VmFail::Invalid));
        expect("VMCLEAR misaligned, no current VMCS: VMfailInvalid", vmx::vmclear(pa(&VMCS_A) + 8), Err(VmFail::Invalid));
        expect("VMLAUNCH with no current VMCS: VMfailInvalid", Err(vmx::vmlaunch()), Err(VmFail::Invalid));
        expect("VMRESUME with no current VMCS: VMfailInvalid", Err(vmx::vmresume()), Err(VmFail::Invalid));
    }
}

/// With VMCS A current: error numbers, field access, launch state.
fn current_vmcs(caps: &Caps) {
    let (a, b, vmxon) = (pa(&VMCS_A), pa(&VMCS_B), pa(&VMXON_REGION));
    // SAFETY (this block): VMCS A and B and the VMXON region belong to this
    // kernel; the failing instructions change nothing.
    unsafe {
        vmx::init_region(a, caps.revision_id());
        expect("VMCLEAR of VMCS A", vmx::vmclear(a), Ok(()));
        expect("VMPTRLD of VMCS A", vmx::vmptrld(a), Ok(()));
        check_eq!(vmx::vmptrst(), a, "VMPTRST after VMPTRLD returns the pointer");

        expect("VMXON in VMX root operation: VMfailValid 15", vmx::vmxon(vmxon), fail_valid(error::VMXON_IN_ROOT));
        expect("VMPTRLD misaligned: VMfailValid 9", vmx::vmptrld(b + 8), fail_valid(error::VMPTRLD_INVALID_ADDRESS));
        let width = arch::maxphyaddr();
        if width < 64 {
            expect(
                "VMPTRLD beyond MAXPHYADDR: VMfailValid 9",
                vmx::vmptrld(b | 1 << width),
                fail_valid(error::VMPTRLD_INVALID_ADDRESS),
            );
        }
        expect("VMPTRLD of the VMXON region: VMfailValid 10", vmx::vmptrld(vmxon), fail_valid(error::VMPTRLD_VMXON_POINTER));
        vmx::init_region(b, caps.revision_id() ^ 1);
        expect("VMPTRLD with a wrong revision: VMfailValid 11", vmx::vmptrld(b), fail_valid(error::VMPTRLD_BAD_REVISION));
        check_eq!(vmx::vmptrst(), a, "failed VMPTRLDs leave VMCS A current");
        expect("VMCLEAR misaligned: VMfailValid 2", vmx::vmclear(b + 8), fail_valid(error::VMCLEAR_INVALID_ADDRESS));
        expect("VMCLEAR of the VMXON region: VMfailValid 3", vmx::vmclear(vmxon), fail_valid(error::VMCLEAR_VMXON_POINTER));
    }

    // Field access (25.11.2, 31.3 VMREAD/VMWRITE).
    let unsupported = error::UNSUPPORTED_COMPONENT;
    expect(
        "VMREAD of encoding 0x10000 (reserved bits 31:15): VMfailValid 12",
        vmx::vmread(0x1_0000).map(drop),
        fail_valid(unsupported),
    );
    expect(
        "VMREAD of an encoding with bits 63:32 set: VMfailValid 12",
        vmx::vmread(1 << 32 | field::GUEST_RIP).map(drop),
        fail_valid(unsupported),
    );
    expect("VMWRITE of encoding 0x10000: VMfailValid 12", vmwrite(0x1_0000, 0), fail_valid(unsupported));
    expect("VMWRITE GUEST_RIP", vmwrite(field::GUEST_RIP, 0x1234_5678_9abc), Ok(()));
    check_eq!(vmx::vmread(field::GUEST_RIP), Ok(0x1234_5678_9abc), "VMREAD GUEST_RIP returns what was written");
    expect("VMWRITE GUEST_ES_SELECTOR with high bits", vmwrite(field::GUEST_ES_SELECTOR, 0xdead_0018), Ok(()));
    check_eq!(vmx::vmread(field::GUEST_ES_SELECTOR), Ok(0x18), "a 16-bit field keeps only the low 16 bits");
    expect("VMWRITE TSC_OFFSET (full)", vmwrite(field::TSC_OFFSET, 0x1111_2222_3333_4444), Ok(()));
    check_eq!(vmx::vmread(field::TSC_OFFSET + 1), Ok(0x1111_2222), "VMREAD TSC_OFFSET (high) is bits 63:32");
    let ro = vmwrite(field::EXIT_REASON, exit_reason::CPUID as u64);
    if caps.vmwrite_any_field() {
        expect("VMWRITE to EXIT_REASON with IA32_VMX_MISC[29]=1 succeeds", ro, Ok(()));
        check_eq!(vmx::vmread(field::EXIT_REASON), Ok(exit_reason::CPUID as u64), "VMREAD EXIT_REASON returns the write");
    } else {
        expect("VMWRITE to read-only EXIT_REASON: VMfailValid 13", ro, fail_valid(error::VMWRITE_READ_ONLY));
    }

    // Launch state (25.11.3 "Initializing a VMCS"): A is clear.
    let mut regs = GuestRegs::default();
    // SAFETY: VMRESUME of a clear VMCS fails before any state is loaded.
    let r = unsafe { vmx::enter(&mut regs, true) };
    expect("VMRESUME of a clear VMCS: VMfailValid 5", r, fail_valid(error::VMRESUME_NONLAUNCHED));

    // VMCLEAR of the current VMCS: flushed to memory, no longer current.
    // SAFETY: VMCS A belongs to this kernel.
    unsafe {
        expect("VMCLEAR of the current VMCS", vmx::vmclear(a), Ok(()));
        check_eq!(vmx::vmptrst(), u64::MAX, "VMCLEAR of the current VMCS leaves none current");
        expect("VMPTRLD of VMCS A again", vmx::vmptrld(a), Ok(()));
    }
    check_eq!(vmx::vmread(field::GUEST_RIP), Ok(0x1234_5678_9abc), "GUEST_RIP survives VMCLEAR + VMPTRLD");

    // INVEPT / INVVPID operand checks (31.3 INVEPT, INVVPID "Operation").
    let invalid = error::INVALID_INVEPT_INVVPID_OPERAND;
    if caps.ept_vpid >> 20 & 1 == 1 {
        // SAFETY: INVEPT only drops cached translations.
        unsafe {
            expect("INVEPT type 0 (undefined): VMfailValid 28", vmx::invept(0, 0), fail_valid(invalid));
            if caps.ept_vpid >> 26 & 1 == 1 {
                expect("INVEPT all-context", vmx::invept(vmx::invept_type::ALL_CONTEXT, 0), Ok(()));
            }
        }
    } else {
        skip!("INVEPT not offered", "INVEPT");
    }
    if caps.ept_vpid >> 32 & 1 == 1 {
        // SAFETY: INVVPID only drops cached translations.
        unsafe {
            expect("INVVPID type 4 (undefined): VMfailValid 28", vmx::invvpid(4, 1, 0), fail_valid(invalid));
            if caps.ept_vpid >> 41 & 1 == 1 {
                expect(
                    "INVVPID single-context with VPID 0: VMfailValid 28",
                    vmx::invvpid(vmx::invvpid_type::SINGLE_CONTEXT, 0, 0),
                    fail_valid(invalid),
                );
            }
            if caps.ept_vpid >> 42 & 1 == 1 {
                expect("INVVPID all-context", vmx::invvpid(vmx::invvpid_type::ALL_CONTEXT, 0, 0), Ok(()));
            }
        }
    } else {
        skip!("INVVPID not offered", "INVVPID");
    }
}

/// Writes a complete, valid VMCS A for the CPUID guest: L1's host state, a
/// 64-bit guest, controls at their defaults, every exception exiting.
fn setup_valid_vmcs(caps: &Caps) -> VmResult {
    // SAFETY: VMCS A is current and belongs to this kernel.
    unsafe {
        let load_efer = vmx::write_controls(caps, 0, 0, 0, true)?;
        vmx::write_host_state(load_efer)?;
        vmx::write_guest_state_64(guest_rip(), guest_rsp(), load_efer)
    }
}

/// VMLAUNCH with `f` applied to the valid VMCS, then `f`'s change undone
/// by restoring `field` to its old value.
fn launch_with(field: u64, value: impl FnOnce(u64) -> u64) -> (VmResult, GuestRegs) {
    let old = vmx::vmread(field).unwrap_or(0);
    let mut regs = GuestRegs::default();
    let r = vmwrite(field, value(old)).and_then(|()| {
        // SAFETY: VMCS A holds this kernel's host state.
        unsafe { vmx::enter(&mut regs, false) }
    });
    let _ = vmwrite(field, old);
    (r, regs)
}

/// Reads the exit reason and qualification after [`vmx::enter`] returned.
fn exit_info() -> (u64, u64) {
    (vmx::vmread(field::EXIT_REASON).unwrap_or(u64::MAX), vmx::vmread(field::EXIT_QUALIFICATION).unwrap_or(u64::MAX))
}

/// Re-establishes VMCS A as current and clear (VMCLEAR + VMPTRLD), so the
/// next VMLAUNCH does not depend on what a failed entry did to its launch
/// state.
fn reload_clear() -> VmResult {
    let a = pa(&VMCS_A);
    // SAFETY: VMCS A belongs to this kernel.
    unsafe { vmx::vmclear(a).and_then(|()| vmx::vmptrld(a)) }
}

/// SDM Vol. 3C, chapter 27 "VM Entries": one failure per stage, then a
/// successful entry and exit.
fn vm_entry(caps: &Caps) {
    if !expect("write a valid VMCS for the CPUID guest", setup_valid_vmcs(caps), Ok(())) {
        return;
    }
    let pin_ok = vmx::vmread(field::PIN_BASED_CONTROLS).unwrap_or(0) as u32;
    println!("pin-based controls {:#x}, allowed0 {:#x} allowed1 {:#x}", pin_ok, caps.pin.allowed0, caps.pin.allowed1);

    // 27.2.1.1 "VM-Execution Control Fields": reserved bits.
    if let Some(bit) = highest_clear(caps.pin.allowed1) {
        let (r, _) = launch_with(field::PIN_BASED_CONTROLS, |v| v | 1 << bit);
        check_eq!(r, fail_valid(error::ENTRY_INVALID_CONTROLS), "VM entry with must-be-0 pin-based bit {} set: VMfailValid 7", bit);
    }
    if caps.pin.allowed0 != 0 {
        let bit = caps.pin.allowed0.trailing_zeros();
        let (r, _) = launch_with(field::PIN_BASED_CONTROLS, |v| v & !(1 << bit));
        check_eq!(r, fail_valid(error::ENTRY_INVALID_CONTROLS), "VM entry with must-be-1 pin-based bit {} clear: VMfailValid 7", bit);
    }
    if let Some(bit) = highest_clear(caps.entry.allowed1) {
        let (r, _) = launch_with(field::VM_ENTRY_CONTROLS, |v| v | 1 << bit);
        check_eq!(r, fail_valid(error::ENTRY_INVALID_CONTROLS), "VM entry with must-be-0 VM-entry control bit {} set: VMfailValid 7", bit);
    }

    // 27.2.2 "Checks on Host Control Registers, MSRs, and SSP" and 27.2.3
    // "Checks on Host Segment and Descriptor-Table Registers".
    let host_state = fail_valid(error::ENTRY_INVALID_HOST_STATE);
    if caps.cr0_fixed0 & cr0::PG != 0 {
        let (r, _) = launch_with(field::HOST_CR0, |v| v & !cr0::PG);
        expect("VM entry with HOST_CR0.PG=0 (fixed to 1): VMfailValid 8", r, host_state);
    }
    let (r, _) = launch_with(field::HOST_CS_SELECTOR, |_| 0);
    expect("VM entry with HOST_CS_SELECTOR 0: VMfailValid 8", r, host_state);
    let (r, _) = launch_with(field::HOST_TR_SELECTOR, |_| 0);
    expect("VM entry with HOST_TR_SELECTOR 0: VMfailValid 8", r, host_state);
    let (r, _) = launch_with(field::HOST_SS_SELECTOR, |v| v | 3);
    expect("VM entry with HOST_SS_SELECTOR RPL 3: VMfailValid 8", r, host_state);

    // 27.3 "Checking and Loading Guest State": failures are VM exits with
    // bit 31 set in the exit reason (27.8), back at HOST_RIP.
    let entry_fail = exit_reason::ENTRY_FAILURE as u64 | exit_reason::INVALID_GUEST_STATE as u64;
    let (r, _) = launch_with(field::GUEST_CR0, |v| v & !cr0::PE);
    if expect("VM entry with GUEST_CR0.PE=0 (no unrestricted guest) exits", r, Ok(())) {
        check_eq!(exit_info(), (entry_fail, 0), "GUEST_CR0.PE=0: exit reason 0x80000021, qualification 0");
    }
    let _ = reload_clear();
    let (r, _) = launch_with(field::GUEST_RFLAGS, |v| v & !2);
    if expect("VM entry with GUEST_RFLAGS bit 1 clear exits", r, Ok(())) {
        check_eq!(exit_info(), (entry_fail, 0), "GUEST_RFLAGS bit 1 clear: exit reason 0x80000021, qualification 0");
    }
    let _ = reload_clear();
    let (r, _) = launch_with(field::VMCS_LINK_POINTER, |_| 0x1000 | 8);
    if expect("VM entry with a misaligned VMCS link pointer exits", r, Ok(())) {
        check_eq!(exit_info(), (entry_fail, 4), "bad VMCS link pointer: exit reason 0x80000021, qualification 4");
    }
    let _ = reload_clear();

    // A successful entry: the guest's CPUID exits (reason 10).
    let mut regs = GuestRegs { rax: 0, rcx: 0, ..Default::default() };
    // SAFETY: VMCS A is valid and holds this kernel's host state.
    let r = unsafe { vmx::enter(&mut regs, false) };
    if !expect("VMLAUNCH of a valid VMCS", r, Ok(())) {
        return;
    }
    let (reason, _) = exit_info();
    check_eq!(reason, exit_reason::CPUID as u64, "guest CPUID: exit reason 10");
    check_eq!(vmx::vmread(field::VM_EXIT_INSTRUCTION_LENGTH), Ok(2), "CPUID exit: instruction length 2");
    check_eq!(vmx::vmread(field::GUEST_RIP), Ok(guest_rip()), "CPUID exit: GUEST_RIP is the CPUID");
    check_eq!(vmx::vmread(field::GUEST_RSP), Ok(guest_rsp()), "CPUID exit: GUEST_RSP unchanged");

    // SAFETY: VMCS A is launched; VMLAUNCH fails before entering.
    let r = unsafe { vmx::enter(&mut regs, false) };
    expect("VMLAUNCH of a launched VMCS: VMfailValid 4", r, fail_valid(error::VMLAUNCH_NONCLEAR));

    let _ = vmwrite(field::GUEST_RIP, guest_rip() + 2);
    regs.rax = 0;
    // SAFETY: as above; the guest jumps back to its CPUID.
    let r = unsafe { vmx::enter(&mut regs, true) };
    if expect("VMRESUME of a launched VMCS", r, Ok(())) {
        check_eq!(exit_info().0, exit_reason::CPUID as u64, "VMRESUME: the guest's next CPUID exits");
        check_eq!(vmx::vmread(field::GUEST_RIP), Ok(guest_rip()), "VMRESUME: GUEST_RIP back at the CPUID");
    }

    let _ = reload_clear();
    // SAFETY: VMCS A is clear again; VMRESUME fails before entering.
    let r = unsafe { vmx::enter(&mut regs, true) };
    expect("VMRESUME after VMCLEAR: VMfailValid 5", r, fail_valid(error::VMRESUME_NONLAUNCHED));
}

/// Leaves VMX operation; VMX instructions raise #UD afterwards.
fn leave(_caps: &Caps) {
    // SAFETY: VMCS A is flushed before VMXOFF.
    unsafe {
        expect("VMCLEAR before VMXOFF", vmx::vmclear(pa(&VMCS_A)), Ok(()));
        expect("VMXOFF", vmx::vmxoff(), Ok(()));
    }
    let f = vmx::expect_ud(|| vmx::vmread(field::GUEST_RIP));
    expect_fault("VMREAD after VMXOFF: #UD", f, vector::UD, 0);
    let f = vmx::expect_ud(vmx::vmptrst);
    expect_fault("VMPTRST after VMXOFF: #UD", f, vector::UD, 0);
    // SAFETY: VMXOFF outside VMX operation raises #UD.
    let f = vmx::expect_ud(|| unsafe { vmx::vmxoff() });
    expect_fault("VMXOFF outside VMX operation: #UD", f, vector::UD, 0);
    let cr4 = arch::read_cr4();
    // SAFETY: outside VMX operation CR4.VMXE may be cleared.
    let f = vmx::expect_ud(|| unsafe { arch::write_cr4(cr4 & !vmx::CR4_VMXE) });
    check!(f.is_none() && arch::read_cr4() & vmx::CR4_VMXE == 0, "CR4.VMXE clears after VMXOFF (got {})", Got(f));
}
