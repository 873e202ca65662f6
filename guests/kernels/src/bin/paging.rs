//! `paging`: 4-level paging in 64-bit mode (SDM Vol. 3A, chapter 5
//! "Paging": 5.5 "4-Level Paging and 5-Level Paging", 5.6 "Access Rights",
//! 5.7 "Page-Fault Exceptions", 5.8 "Accessed and Dirty Flags", 5.10
//! "Caching Translation Information").
//!
//! Test mappings live under PML4[1] (linear 512 GiB and up) so the boot
//! identity map stays intact; page tables and test frames come from scratch
//! memory at 17 MiB and up. Checks: 4 KiB, 2 MiB and 1 GiB translations;
//! every #PF error-code bit (P, W/R, U/S, RSVD, I/D, PK) with CR2; CR0.WP;
//! effective rights combining all levels; SMEP; SMAP with STAC/CLAC;
//! accessed/dirty bits at every level; INVLPG, CR3 reload and CR4.PGE
//! flushes; PCID and INVPCID.
#![no_std]
#![no_main]

use core::arch::asm;
use rt::arch::{self, cr0, cr4, feature};
use rt::idt::{catch, vector, Fault};
use rt::{check, check_eq, skip};
use turtles_guest_kernels::paging::{self as pg, A, D, P, PS, SIZE_1G, SIZE_2M, SIZE_4K, U, W, XD};
use turtles_guest_kernels::user;

rt::entry!("paging", main);

/// Base of the test region (PML4 index 1).
const T: u64 = 0x0000_0080_0000_0000;
/// Table frames come from here.
const POOL: u64 = rt::SCRATCH_BASE + 0x10_0000;
/// Test data frames (4 KiB each) from here.
const DATA: u64 = rt::SCRATCH_BASE + 0x80_0000;
/// A 2 MiB-aligned physical block for the large-page tests.
const BIG: u64 = rt::SCRATCH_BASE + 0x100_0000;

/// Intermediate-table flags: everything allowed, so leaf flags decide.
const TF: u64 = P | W | U;

fn frame(n: u64) -> u64 {
    DATA + n * SIZE_4K
}

fn rd(va: u64) -> Result<u64, Fault> {
    catch(|| {
        let v: u64;
        // SAFETY: may fault inside catch (asm: the address may be unaligned
        // or unmapped on purpose).
        unsafe { asm!("mov {v}, [{a}]", a = in(reg) va, v = out(reg) v) };
        v
    })
}

fn wr(va: u64, v: u64) -> Result<(), Fault> {
    catch(|| {
        // SAFETY: as rd.
        unsafe { asm!("mov [{a}], {v}", a = in(reg) va, v = in(reg) v) }
    })
}

fn phys_rd(pa: u64) -> u64 {
    // SAFETY: identity-mapped scratch RAM.
    unsafe { core::ptr::read_volatile(pa as *const u64) }
}

fn phys_wr(pa: u64, v: u64) {
    // SAFETY: identity-mapped scratch RAM.
    unsafe { core::ptr::write_volatile(pa as *mut u64, v) }
}

/// Checks a page fault with `err` and CR2 = `va`.
fn expect_pf(name: &str, r: Result<impl Sized, Fault>, err: u64, va: u64) {
    expect_pf_sdm(name, r, err, va, false)
}

/// As [`expect_pf`], for reserved-bit faults: QEMU 7.2 reports them with
/// P = 0; the SDM (5.7: the entry was present) and hardware set P = 1.
fn expect_rsvd(name: &str, r: Result<impl Sized + Copy, Fault>, err: u64, va: u64) {
    // What every platform must agree on: #PF, RSVD set, the right CR2.
    let f = r.err().unwrap_or_default();
    check!(f.vector == vector::PF && f.error_code & 8 != 0 && f.cr2 == va, "{}: RSVD bit and CR2", name);
    expect_pf_sdm(name, r, err, va, true)
}

fn expect_pf_sdm(name: &str, r: Result<impl Sized, Fault>, err: u64, va: u64, qemu_deviates: bool) {
    let f = r.err();
    let (v, e, c) = f.map_or((0xff, 0, 0), |f| (f.vector, f.error_code, f.cr2));
    rt::check_sdm!(
        v == vector::PF && e == err && c == va,
        qemu_deviates,
        "{}: #PF error {:#x} cr2 {:#x} (got vector {} error {:#x} cr2 {:#x})",
        name,
        err,
        va,
        v,
        e,
        c
    );
}

fn root() -> u64 {
    rt::boot::pml4()
}

fn main(_mb: u32) {
    pg::set_frame_pool(POOL);
    // SAFETY: CR0.WP set: supervisor writes honour R/W (the identity map is
    // all writable, so nothing else changes).
    unsafe { arch::write_cr0(arch::read_cr0() | cr0::WP) };
    translations();
    fault_codes();
    write_protect();
    accessed_dirty();
    tlb_flushes();
    smep_smap();
    protection_keys();
    pcid();
    user_faults();
}

fn translations() {
    // 4 KiB page.
    phys_wr(frame(0), 0x1111_2222_3333_4444);
    pg::map(root(), T, frame(0), SIZE_4K, P | W, TF);
    check_eq!(rd(T), Ok(0x1111_2222_3333_4444u64), "4 KiB page read");
    check!(wr(T + 8, 0x55).is_ok() && phys_rd(frame(0) + 8) == 0x55, "4 KiB page write reaches the frame");

    // 2 MiB page: PDE with PS.
    phys_wr(BIG + 0x12_3450, 0xabcd);
    pg::map(root(), T + SIZE_1G, BIG, SIZE_2M, P | W, TF);
    check_eq!(rd(T + SIZE_1G + 0x12_3450), Ok(0xabcdu64), "2 MiB page read at offset 0x123450");

    // 1 GiB page: PDPTE with PS, mapping physical 0 (the kernel image at
    // 1 MiB is visible through it).
    let va = T + 4 * SIZE_1G;
    let image_word = phys_rd(0x10_0000);
    if arch::has(feature::PAGE1GB) {
        pg::map(root(), va, 0, SIZE_1G, P | W, TF);
        check_eq!(rd(va + 0x10_0000), Ok(image_word), "1 GiB page read");
    } else {
        // Without 1-GiB page support PS in a PDPTE is reserved.
        let e = pg::walk_create(root(), va, 3, TF);
        pg::write(e, P | W | PS);
        arch::invlpg(va);
        // QEMU 7.2 maps the 1 GiB page anyway.
        expect_pf_sdm("1 GiB page without CPUID support: RSVD", rd(va + 0x10_0000), 0x9, va + 0x10_0000, true);
        pg::write(e, 0);
        skip!("CPUID.80000001H:EDX.Page1GB = 0", "1 GiB page read");
    }
    // Two linear pages aliasing one frame.
    pg::map(root(), T + 0x5000, frame(0), SIZE_4K, P | W, TF);
    let _ = wr(T + 0x5010, 0x77);
    check_eq!(rd(T + 0x10), Ok(0x77u64), "aliased pages see each other's writes");
}

fn fault_codes() {
    // Not present: P = 0; W/R says what the access was.
    let va = T + 0x10_0000 + 0x123;
    pg::walk_create(root(), va, 1, TF); // PT exists, PTE = 0
    expect_pf("#PF not-present read", rd(va), 0x0, va);
    expect_pf("#PF not-present write", wr(va, 1), 0x2, va);
    // Missing upper level (PDPTE not present).
    let far = T + 200 * SIZE_1G + 8;
    expect_pf("#PF not-present PDPTE", rd(far), 0x0, far);

    // Protection: read-only page, supervisor write with CR0.WP = 1.
    let ro = T + 0x20_0000;
    pg::map(root(), ro, frame(1), SIZE_4K, P, TF);
    check!(rd(ro).is_ok(), "read-only page is readable");
    expect_pf("#PF write to read-only page (WP = 1)", wr(ro + 0x10, 1), 0x3, ro + 0x10);

    // Intermediate level read-only, leaf writable: the AND applies.
    let va2 = T + 0x40_0000;
    let pte = pg::map(root(), va2, frame(2), SIZE_4K, P | W, P | W | U);
    let pde = pg::walk_create(root(), va2, 2, TF);
    pg::write(pde, pg::read(pde) & !W);
    arch::invlpg(va2);
    expect_pf("#PF write with R/W = 0 in the PDE only", wr(va2, 1), 0x3, va2);
    pg::write(pde, pg::read(pde) | W);
    arch::invlpg(va2);
    check!(wr(va2, 1).is_ok(), "write allowed after setting the PDE R/W");
    let _ = pte;

    // Reserved bits: a physical-address bit at or above MAXPHYADDR.
    let maxphy = arch::maxphyaddr();
    let rsv = T + 0x60_0000;
    let e = pg::map(root(), rsv, frame(3), SIZE_4K, P | W, TF);
    if maxphy < 52 {
        pg::write(e, pg::read(e) | 1 << maxphy);
        arch::invlpg(rsv);
        expect_rsvd("#PF RSVD: address bit >= MAXPHYADDR (read)", rd(rsv), 0x9, rsv);
        expect_rsvd("#PF RSVD: address bit >= MAXPHYADDR (write)", wr(rsv, 0), 0xb, rsv);
        pg::write(e, pg::read(e) & !(1 << maxphy));
    } else {
        skip!("MAXPHYADDR = 52", "#PF RSVD: address bit >= MAXPHYADDR");
    }
    // PS in a PML4E is reserved.
    let pml4e = pg::entry(root(), 2);
    let pdpt2 = pg::alloc_frame();
    pg::write(pml4e, pdpt2 | P | W | PS);
    let va3 = 2 * 0x80_0000_0000u64 + 0x40;
    arch::invlpg(va3);
    expect_rsvd("#PF RSVD: PS set in a PML4E", rd(va3), 0x9, va3);
    pg::write(pml4e, 0);
    // Bits 2:1 of a 2 MiB PDE's address field (bit 13..20) are reserved.
    let big = T + 3 * SIZE_1G;
    let e = pg::map(root(), big, BIG, SIZE_2M, P | W, TF);
    pg::write(e, pg::read(e) | 1 << 13);
    arch::invlpg(big);
    expect_rsvd("#PF RSVD: bit 13 of a 2 MiB PDE", rd(big + 0x100), 0x9, big + 0x100);
    pg::write(e, pg::read(e) & !(1 << 13));
    arch::invlpg(big);
    check!(rd(big + 0x100).is_ok(), "2 MiB PDE readable again after clearing bit 13");

    // Instruction fetch: I/D is set for fetches when NX is enabled.
    // SAFETY: reads EFER.
    let nxe = unsafe { arch::rdmsr(arch::msr::EFER) } & arch::msr::EFER_NXE != 0;
    let code = T + 0x80_0000;
    phys_wr(frame(4), 0xc3); // ret
    let e = pg::map(root(), code, frame(4), SIZE_4K, P | W, TF);
    let call = |va: u64| {
        catch(|| {
            // SAFETY: calls a page holding `ret`, or faults inside catch.
            unsafe { asm!("call {}", in(reg) va, clobber_abi("C")) }
        })
    };
    check!(call(code).is_ok(), "fetch from an executable test page");
    if nxe {
        pg::write(e, pg::read(e) | XD);
        arch::invlpg(code);
        expect_pf("#PF I/D: fetch from an XD page", call(code), 0x11, code);
        pg::write(e, pg::read(e) & !XD);
        pg::write(e, 0);
        arch::invlpg(code);
        expect_pf("#PF I/D: fetch from a not-present page", call(code), 0x10, code);
        // XD in the PDE applies to the whole table.
        let e = pg::map(root(), code, frame(4), SIZE_4K, P | W, TF);
        let pde = pg::walk_create(root(), code, 2, TF);
        pg::write(pde, pg::read(pde) | XD);
        arch::invlpg(code);
        expect_pf("#PF I/D: XD in the PDE", call(code), 0x11, code);
        pg::write(pde, pg::read(pde) & !XD);
        arch::invlpg(code);
        let _ = e;
        // XD with EFER.NXE = 0 is a reserved bit.
        let e = pg::map(root(), code, frame(4), SIZE_4K, P | W | XD, TF);
        // SAFETY: clears NXE briefly; no kernel mapping uses XD.
        unsafe { arch::wrmsr(arch::msr::EFER, arch::rdmsr(arch::msr::EFER) & !arch::msr::EFER_NXE) };
        arch::invlpg(code);
        let r = rd(code);
        // SAFETY: restores NXE.
        unsafe { arch::wrmsr(arch::msr::EFER, arch::rdmsr(arch::msr::EFER) | arch::msr::EFER_NXE) };
        expect_rsvd("#PF RSVD: XD set while EFER.NXE = 0", r, 0x9, code);
        pg::write(e, P | W | frame(4));
        arch::invlpg(code);
    } else {
        skip!("no NX", "#PF I/D with XD pages");
    }
}

fn write_protect() {
    let ro = T + 0x20_0000;
    // SAFETY: toggles CR0.WP around one write to a test page.
    unsafe { arch::write_cr0(arch::read_cr0() & !cr0::WP) };
    let r = wr(ro + 0x18, 0x99);
    // SAFETY: restores WP.
    unsafe { arch::write_cr0(arch::read_cr0() | cr0::WP) };
    check!(r.is_ok() && phys_rd(frame(1) + 0x18) == 0x99, "CR0.WP = 0: supervisor writes ignore R/W");
}

fn accessed_dirty() {
    let va = T + 0xa0_0000;
    let pte = pg::map(root(), va, frame(5), SIZE_4K, P | W, TF);
    let pde = pg::walk_create(root(), va, 2, TF);
    let pdpte = pg::walk_create(root(), va, 3, TF);
    let pml4e = pg::walk_create(root(), va, 4, TF);
    for e in [pte, pde, pdpte, pml4e] {
        pg::write(e, pg::read(e) & !(A | D));
    }
    arch::flush_tlb();
    let _ = rd(va);
    check!(pg::read(pte) & (A | D) == A, "read sets A, not D, in the PTE");
    check!(
        pg::read(pde) & A != 0 && pg::read(pdpte) & A != 0 && pg::read(pml4e) & A != 0,
        "read sets A in the PDE, PDPTE and PML4E"
    );
    check!(pg::read(pde) & D == 0, "D is not set in non-leaf entries");
    let _ = wr(va, 1);
    check!(pg::read(pte) & (A | D) == A | D, "write sets D in the PTE");
    // Dirty on a 2 MiB page lives in the PDE.
    let big = T + SIZE_1G;
    let (e, level) = pg::leaf(root(), big).unwrap();
    pg::write(e, pg::read(e) & !(A | D));
    arch::invlpg(big);
    let _ = rd(big + 0x40);
    let after_read = pg::read(e);
    let _ = wr(big + 0x40, 3);
    check!(
        level == 2 && after_read & (A | D) == A && pg::read(e) & D != 0,
        "2 MiB page: A on read, D on write in the PDE"
    );
    // A write through a cached translation whose D is clear must still set D
    // (SDM 5.8: the processor does not use a TLB entry with D = 0 for writes).
    pg::write(pte, pg::read(pte) & !D);
    // No invlpg on purpose: the TLB may hold the entry with D = 1.
    arch::invlpg(va);
    let _ = rd(va);
    let _ = wr(va, 2);
    check!(pg::read(pte) & D != 0, "write after a read-only TLB fill sets D");
}

fn tlb_flushes() {
    let va = T + 0xc0_0000;
    phys_wr(frame(6), 6);
    phys_wr(frame(7), 7);
    let e = pg::map(root(), va, frame(6), SIZE_4K, P | W, TF);
    check_eq!(rd(va), Ok(6u64), "mapping to frame A");
    pg::write(e, frame(7) | P | W);
    arch::invlpg(va);
    check_eq!(rd(va), Ok(7u64), "INVLPG makes the new frame visible");
    pg::write(e, frame(6) | P | W);
    arch::flush_tlb();
    check_eq!(rd(va), Ok(6u64), "CR3 reload makes the new frame visible");
    // Global page: CR3 reload may keep it; toggling CR4.PGE must flush it.
    if arch::has(feature::PGE) {
        pg::write(e, frame(7) | P | W | pg::G);
        // SAFETY: enables global pages; kernel mappings have G = 0.
        unsafe { arch::write_cr4(arch::read_cr4() | cr4::PGE) };
        arch::invlpg(va);
        check_eq!(rd(va), Ok(7u64), "global mapping");
        pg::write(e, frame(6) | P | W | pg::G);
        // SAFETY: clearing PGE flushes all translations, including global.
        unsafe { arch::write_cr4(arch::read_cr4() & !cr4::PGE) };
        check_eq!(rd(va), Ok(6u64), "clearing CR4.PGE flushes global translations");
        // INVLPG also drops global entries.
        // SAFETY: as above.
        unsafe { arch::write_cr4(arch::read_cr4() | cr4::PGE) };
        let _ = rd(va);
        pg::write(e, frame(7) | P | W | pg::G);
        arch::invlpg(va);
        check_eq!(rd(va), Ok(7u64), "INVLPG flushes a global translation");
        // SAFETY: back to no global pages.
        unsafe { arch::write_cr4(arch::read_cr4() & !cr4::PGE) };
    } else {
        skip!("no PGE", "global pages");
    }
}

fn smep_smap() {
    // A user page (U = 1 at every level) with `ret` and data.
    let code = T + 0xe0_0000;
    phys_wr(frame(8), 0xc3);
    pg::map(root(), code, frame(8), SIZE_4K, P | W | U, TF);
    let call = |va: u64| {
        catch(|| {
            // SAFETY: calls a page holding `ret`, or faults inside catch.
            unsafe { asm!("call {}", in(reg) va, clobber_abi("C")) }
        })
    };
    if arch::has(feature::SMEP) {
        check!(call(code).is_ok(), "supervisor fetch from a user page without SMEP");
        // SAFETY: the kernel itself runs from supervisor pages.
        unsafe { arch::write_cr4(arch::read_cr4() | cr4::SMEP) };
        expect_pf("SMEP: supervisor fetch from a user page", call(code), 0x11, code);
        // SAFETY: restores CR4.
        unsafe { arch::write_cr4(arch::read_cr4() & !cr4::SMEP) };
    } else {
        skip!("CPUID.7.0:EBX.SMEP = 0", "SMEP");
    }
    if arch::has(feature::SMAP) {
        let data = code + 0x40;
        check!(rd(data).is_ok(), "supervisor read of a user page without SMAP");
        // SAFETY: the kernel's own data is on supervisor pages.
        unsafe { arch::write_cr4(arch::read_cr4() | cr4::SMAP) };
        expect_pf("SMAP: supervisor read of a user page (AC = 0)", rd(data), 0x1, data);
        expect_pf("SMAP: supervisor write to a user page (AC = 0)", wr(data, 1), 0x3, data);
        let r = catch(|| {
            let v: u64;
            // SAFETY: STAC sets RFLAGS.AC, allowing the access; CLAC after.
            unsafe { asm!("stac", "mov {v}, [{a}]", "clac", a = in(reg) data, v = out(reg) v) };
            v
        });
        check!(r.is_ok(), "SMAP: access allowed between STAC and CLAC");
        check!(arch::read_rflags() & arch::rflags::AC == 0, "CLAC clears RFLAGS.AC");
        expect_pf("SMAP: faults again after CLAC", rd(data), 0x1, data);
        // SAFETY: restores CR4.
        unsafe { arch::write_cr4(arch::read_cr4() & !cr4::SMAP) };
    } else {
        skip!("CPUID.7.0:EBX.SMAP = 0", "SMAP");
    }
}

fn wrpkru(v: u32) {
    // SAFETY: WRPKRU with ECX = EDX = 0 (CR4.PKE is set by the caller).
    unsafe { asm!("wrpkru", in("eax") v, in("ecx") 0, in("edx") 0) };
}

fn rdpkru() -> u32 {
    let v: u32;
    // SAFETY: RDPKRU with ECX = 0.
    unsafe { asm!("rdpkru", out("eax") v, in("ecx") 0, out("edx") _) };
    v
}

fn protection_keys() {
    if !arch::has(feature::PKU) {
        skip!("CPUID.7.0:ECX.PKU = 0", "protection keys");
        return;
    }
    // A user page with protection key 1 (PTE bits 62:59).
    let va = T + 0x100_0000;
    let e = pg::map(root(), va, frame(9), SIZE_4K, P | W | U | 1 << 59, TF);
    // SAFETY: enables protection keys; PKRU starts at 0 (all allowed).
    unsafe { arch::write_cr4(arch::read_cr4() | cr4::PKE) };
    wrpkru(0);
    check!(rd(va).is_ok(), "PKRU = 0 allows access");
    wrpkru(0b01 << 2); // AD for key 1
    check_eq!(rdpkru(), 0b0100u32, "rdpkru reads back");
    // Supervisor data accesses to user pages are subject to PKRU too
    // (SDM Vol. 3A, 5.6.2 "Protection Keys").
    expect_pf("PK: read with access-disable for key 1", rd(va), 0x21, va);
    wrpkru(0b10 << 2); // WD for key 1
    check!(rd(va).is_ok(), "PK: write-disable allows reads");
    expect_pf("PK: write with write-disable for key 1 (WP = 1)", wr(va, 1), 0x23, va);
    wrpkru(0b11); // key 0 disabled, key 1 free
    check!(wr(va, 1).is_ok(), "PK: other keys' bits do not apply");
    wrpkru(0);
    pg::write(e, 0);
    arch::invlpg(va);
    // SAFETY: disables protection keys again.
    unsafe { arch::write_cr4(arch::read_cr4() & !cr4::PKE) };
}

fn pcid() {
    if !arch::has(feature::PCID) {
        skip!("CPUID.1:ECX.PCID = 0", "PCID");
        return;
    }
    let cr3 = arch::read_cr3();
    // SAFETY: PCIDE with CR3[11:0] = 0 (the boot PML4 is page aligned).
    unsafe { arch::write_cr4(arch::read_cr4() | cr4::PCIDE) };
    check!(arch::read_cr4() & cr4::PCIDE != 0, "CR4.PCIDE set with PCID 0");
    // SAFETY: same PML4, PCID 5, bit 63 = no flush.
    unsafe { arch::write_cr3(cr3 | 5 | 1 << 63) };
    check_eq!(arch::read_cr3(), cr3 | 5, "CR3 holds the PCID; bit 63 is not stored");
    let va = T + 0xc0_0000;
    let e = pg::leaf(root(), va).unwrap().0;
    pg::write(e, frame(6) | P | W);
    // SAFETY: flushes PCID 5 (bit 63 clear).
    unsafe { arch::write_cr3(cr3 | 5) };
    check_eq!(rd(va), Ok(6u64), "mov cr3 without bit 63 flushes the PCID");
    if arch::has(feature::INVPCID) {
        pg::write(e, frame(7) | P | W);
        let desc: [u64; 2] = [5, va];
        // SAFETY: individual-address invalidation (type 0) for PCID 5.
        unsafe { asm!("invpcid {t}, [{d}]", t = in(reg) 0u64, d = in(reg) &desc) };
        check_eq!(rd(va), Ok(7u64), "INVPCID type 0 flushes the address");
        let bad: [u64; 2] = [1 << 12, 0];
        let r = catch(|| {
            // SAFETY: PCID > 4095 in the descriptor is #GP(0).
            unsafe { asm!("invpcid {t}, [{d}]", t = in(reg) 1u64, d = in(reg) &bad) }
        });
        check!(matches!(r, Err(f) if f.is(vector::GP, 0)), "INVPCID with a PCID > 4095 is #GP(0)");
    } else {
        skip!("no INVPCID", "INVPCID");
    }
    // Clearing PCIDE requires PCID 0 in CR3... no: it is allowed any time;
    // setting it requires CR3[11:0] = 0 (SDM Vol. 3A, 5.10.1).
    // SAFETY: back to PCID 0, then PCIDE off.
    unsafe {
        arch::write_cr3(cr3);
        arch::write_cr4(arch::read_cr4() & !cr4::PCIDE);
        arch::write_cr3(cr3 | 3);
    }
    let r = catch(|| {
        // SAFETY: setting PCIDE with CR3[11:0] != 0 is #GP(0).
        unsafe { arch::write_cr4(arch::read_cr4() | cr4::PCIDE) }
    });
    check!(matches!(r, Err(f) if f.is(vector::GP, 0)), "setting CR4.PCIDE with CR3[11:0] != 0 is #GP(0)");
    // SAFETY: restores CR3/CR4.
    unsafe {
        arch::write_cr4(arch::read_cr4() & !cr4::PCIDE);
        arch::write_cr3(cr3);
    }
}

fn user_faults() {
    user::init();
    // ring 3: rdi = address, read then int 0x80.
    let (read_code, write_code): (u64, u64);
    // SAFETY: label addresses only.
    unsafe {
        asm!("lea {0}, [rip + 2f]", "lea {1}, [rip + 3f]", "jmp 9f",
             "2: mov rax, [rdi]", "int 0x80",
             "3: mov [rdi], rax", "int 0x80", "9:",
             out(reg) read_code, out(reg) write_code)
    };
    let sup = T + 0x120_0000;
    pg::map(root(), sup, frame(10), SIZE_4K, P | W, TF);
    let usr = T + 0x140_0000;
    pg::map(root(), usr, frame(11), SIZE_4K, P | U, TF);
    let np = T + 0x160_0000;
    pg::walk_create(root(), np, 1, TF);
    let urd = |va| user::run(read_code, user::stack_top(), 2, va);
    let uwr = |va| user::run(write_code, user::stack_top(), 2, va);
    check!(urd(usr).is_ok(), "ring 3 reads a user page");
    expect_pf("#PF ring 3 read of a supervisor page", urd(sup), 0x5, sup);
    expect_pf("#PF ring 3 write to a supervisor page", uwr(sup), 0x7, sup);
    expect_pf("#PF ring 3 write to a read-only user page", uwr(usr), 0x7, usr);
    expect_pf("#PF ring 3 read of a not-present page", urd(np), 0x4, np);
    // U = 0 in the PDE only.
    let pde = pg::walk_create(root(), usr, 2, TF);
    pg::write(pde, pg::read(pde) & !U);
    arch::invlpg(usr);
    expect_pf("#PF ring 3 read with U/S = 0 in the PDE only", urd(usr), 0x5, usr);
    pg::write(pde, pg::read(pde) | U);
    arch::invlpg(usr);
    // CR0.WP does not matter for user writes.
    // SAFETY: toggles WP around one ring-3 write.
    unsafe { arch::write_cr0(arch::read_cr0() & !cr0::WP) };
    let r = uwr(usr);
    // SAFETY: restores WP.
    unsafe { arch::write_cr0(arch::read_cr0() | cr0::WP) };
    expect_pf("#PF ring 3 write to a read-only user page with WP = 0", r, 0x7, usr);
}
