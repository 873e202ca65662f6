//! The exit rules that read a bitmap or a mask, as pure functions (SDM
//! vol. 3C, 26.1.3 "Instructions That Cause VM Exits Conditionally", 26.2
//! "Other Causes of VM Exits"; 25.6.3 "Exception Bitmap", 25.6.4
//! "I/O-Bitmap Addresses", 25.6.9 "MSR-Bitmap Address").
//!
//! The processor applies them to the VMCS it runs, L0 to vmcs12 when it
//! routes an L2 exit; each supplies the bitmap reader for its memory
//! (the processor reads physical memory, L0 only L1's RAM).

/// Whether exception `vector` with `error_code` exits under the
/// exception bitmap; for #PF the error-code mask and match decide
/// whether the bitmap bit keeps its meaning (match) or is inverted.
pub const fn exception_exits(bitmap: u32, pf_mask: u32, pf_match: u32, vector: u8, error_code: u32) -> bool {
    let bit = vector < 32 && bitmap & (1 << (vector & 31)) != 0;
    if vector == x86::vector::PF {
        bit == ((error_code & pf_mask) == pf_match)
    } else {
        bit
    }
}

/// Whether an access to `size` ports from `port` exits under the I/O
/// bitmaps: when the bit of any port is set (`bit(bitmap, n)` reads bit
/// `n` of bitmap A (0) or B (1)) or the range wraps past FFFFh.
pub fn io_bitmaps_exit(port: u16, size: u8, mut bit: impl FnMut(usize, u32) -> bool) -> bool {
    (0..u32::from(size)).any(|i| {
        let p = u32::from(port) + i;
        p > 0xffff || bit((p >> 15) as usize, p & 0x7fff)
    })
}

/// The bit of the MSR-bitmap page that decides RDMSR (`write` false) or
/// WRMSR of `msr`: read bitmaps for low (0-1FFFh) and high
/// (C0000000h-C0001FFFh) MSRs at byte offsets 0 and 1024, write bitmaps at
/// 2048 and 3072. `None` for an MSR outside both ranges, which always
/// exits.
pub const fn msr_bitmap_bit(msr: u32, write: bool) -> Option<u64> {
    let (offset, index) = match msr {
        0..=0x1fff => (0u64, msr),
        0xc000_0000..=0xc000_1fff => (1024, msr - 0xc000_0000),
        _ => return None,
    };
    let offset = if write { offset + 2048 } else { offset };
    Some(offset * 8 + index as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_faults_follow_the_mask_and_match() {
        let pf = 1 << 14;
        assert!(exception_exits(pf, 0, 0, 14, 7));
        assert!(!exception_exits(pf, 1, 1, 14, 0), "mismatch inverts the set bit");
        assert!(exception_exits(0, 1, 1, 14, 0), "mismatch inverts the clear bit");
        assert!(exception_exits(1 << 6, 0, 0, 6, 0));
        assert!(!exception_exits(1 << 6, 0, 0, 13, 0));
        assert!(!exception_exits(u32::MAX, 0, 0, 255, 0), "not an exception vector");
    }

    #[test]
    fn io_ranges_pick_bitmaps_and_wrap() {
        let mut seen = Vec::new();
        assert!(!io_bitmaps_exit(0x7fff, 2, |b, n| {
            seen.push((b, n));
            false
        }));
        assert_eq!(seen, [(0, 0x7fff), (1, 0)]);
        assert!(io_bitmaps_exit(0xffff, 2, |_, _| false), "wraps past FFFFh");
    }

    #[test]
    fn msr_bits_by_quarter() {
        assert_eq!(msr_bitmap_bit(0x10, false), Some(0x10));
        assert_eq!(msr_bitmap_bit(0xc000_0080, false), Some(1024 * 8 + 0x80));
        assert_eq!(msr_bitmap_bit(0x10, true), Some(2048 * 8 + 0x10));
        assert_eq!(msr_bitmap_bit(0xc000_0080, true), Some(3072 * 8 + 0x80));
        assert_eq!(msr_bitmap_bit(0x4000_0000, false), None);
    }
}
