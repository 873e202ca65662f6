//! The parts of ELF a kernel loader reads: the file header and the PT_LOAD
//! program headers (System V ABI, "ELF Header" and "Program Header"; the
//! x86-64 psABI for `EM_X86_64`).
//!
//! Every offset and size comes from the file, so every one is checked
//! against the file length before it is used.

use super::LoadError;

/// `e_machine` of 32-bit x86.
pub const EM_386: u16 = 3;
/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;

/// ELF class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfClass {
    /// ELFCLASS32.
    Elf32,
    /// ELFCLASS64.
    Elf64,
}

/// One PT_LOAD segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    /// Physical load address (`p_paddr`).
    pub paddr: u64,
    /// Offset of the file bytes (`p_offset`).
    pub offset: u64,
    /// Bytes taken from the file (`p_filesz`).
    pub filesz: u64,
    /// Bytes occupied in memory (`p_memsz`); the rest is zero.
    pub memsz: u64,
}

/// A parsed ELF executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage {
    /// 32- or 64-bit.
    pub class: ElfClass,
    /// `e_machine`.
    pub machine: u16,
    /// `e_entry`.
    pub entry: u64,
    /// PT_LOAD segments with a non-zero memory size, in file order.
    pub segments: Vec<LoadSegment>,
}

/// Whether `bytes` starts with the ELF magic.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// The class byte of an ELF file, if it has one.
pub fn class(bytes: &[u8]) -> Option<ElfClass> {
    if !is_elf(bytes) {
        return None;
    }
    match bytes.get(4) {
        Some(1) => Some(ElfClass::Elf32),
        Some(2) => Some(ElfClass::Elf64),
        _ => None,
    }
}

fn field(bytes: &[u8], off: u64, len: usize, what: &'static str) -> Result<u64, LoadError> {
    let file_len = bytes.len() as u64;
    let start = usize::try_from(off).map_err(|_| LoadError::Truncated { what, offset: off, file_len })?;
    let end = start.checked_add(len).ok_or(LoadError::Truncated { what, offset: off, file_len })?;
    let b = bytes.get(start..end).ok_or(LoadError::Truncated { what, offset: off, file_len })?;
    let mut v = [0u8; 8];
    v[..len].copy_from_slice(b);
    Ok(u64::from_le_bytes(v))
}

/// Parses the header and program headers of an x86 ELF executable.
pub fn parse(bytes: &[u8]) -> Result<ElfImage, LoadError> {
    let class = match bytes.get(4).copied() {
        _ if !is_elf(bytes) => return Err(LoadError::NotAKernel { len: bytes.len() as u64 }),
        Some(1) => ElfClass::Elf32,
        Some(2) => ElfClass::Elf64,
        other => return Err(LoadError::BadElfClass(other.unwrap_or(0))),
    };
    let data = field(bytes, 5, 1, "ELF identification")? as u8;
    if data != 1 {
        return Err(LoadError::BadElfEncoding(data));
    }
    let machine = field(bytes, 18, 2, "ELF header")? as u16;
    let wide = class == ElfClass::Elf64;
    let (entry, phoff, phentsize, phnum, min_phent) = if wide {
        (
            field(bytes, 24, 8, "ELF header")?,
            field(bytes, 32, 8, "ELF header")?,
            field(bytes, 54, 2, "ELF header")?,
            field(bytes, 56, 2, "ELF header")?,
            56,
        )
    } else {
        (
            field(bytes, 24, 4, "ELF header")?,
            field(bytes, 28, 4, "ELF header")?,
            field(bytes, 42, 2, "ELF header")?,
            field(bytes, 44, 2, "ELF header")?,
            32,
        )
    };
    if phnum > 0 && phentsize < min_phent {
        return Err(LoadError::BadPhentsize(phentsize as u16));
    }
    let mut segments = Vec::new();
    for i in 0..phnum {
        let ph = phoff.checked_add(i * phentsize).ok_or(LoadError::Truncated {
            what: "program header",
            offset: phoff,
            file_len: bytes.len() as u64,
        })?;
        let p_type = field(bytes, ph, 4, "program header")? as u32;
        let seg = if wide {
            LoadSegment {
                offset: field(bytes, ph + 8, 8, "program header")?,
                paddr: field(bytes, ph + 24, 8, "program header")?,
                filesz: field(bytes, ph + 32, 8, "program header")?,
                memsz: field(bytes, ph + 40, 8, "program header")?,
            }
        } else {
            LoadSegment {
                offset: field(bytes, ph + 4, 4, "program header")?,
                paddr: field(bytes, ph + 12, 4, "program header")?,
                filesz: field(bytes, ph + 16, 4, "program header")?,
                memsz: field(bytes, ph + 20, 4, "program header")?,
            }
        };
        if p_type != PT_LOAD || seg.memsz == 0 {
            continue;
        }
        if seg.filesz > seg.memsz {
            return Err(LoadError::SegmentFileSizeTooLarge { paddr: seg.paddr, filesz: seg.filesz, memsz: seg.memsz });
        }
        let end = seg.offset.checked_add(seg.filesz);
        if end.is_none_or(|e| e > bytes.len() as u64) {
            return Err(LoadError::Truncated { what: "segment", offset: seg.offset, file_len: bytes.len() as u64 });
        }
        if seg.paddr.checked_add(seg.memsz).is_none() {
            return Err(LoadError::SegmentAddressOverflow { addr: seg.paddr, len: seg.memsz });
        }
        segments.push(seg);
    }
    if segments.is_empty() {
        return Err(LoadError::NoLoadableSegments);
    }
    Ok(ElfImage { class, machine, entry, segments })
}

/// One ELF note (System V ABI, "Note Section"): name and descriptor
/// without their padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Note<'a> {
    /// The owner's name, its NUL terminator included when present.
    pub name: &'a [u8],
    /// `n_type`.
    pub kind: u32,
    /// The descriptor.
    pub desc: &'a [u8],
}

/// The notes of every PT_NOTE segment, in file order. Each note is a
/// 12-byte header (`n_namesz`, `n_descsz`, `n_type`), then the name and
/// the descriptor, each padded to 4 bytes (x86 ELF64 kernels use 4-byte
/// alignment too, as Linux's `ELFNOTE` macro emits them).
pub fn notes(bytes: &[u8]) -> Result<Vec<Note<'_>>, LoadError> {
    let wide = match class(bytes) {
        Some(ElfClass::Elf64) => true,
        Some(ElfClass::Elf32) => false,
        None => return Err(LoadError::NotAKernel { len: bytes.len() as u64 }),
    };
    let file_len = bytes.len() as u64;
    let (phoff, phentsize, phnum) = if wide {
        (field(bytes, 32, 8, "ELF header")?, field(bytes, 54, 2, "ELF header")?, field(bytes, 56, 2, "ELF header")?)
    } else {
        (field(bytes, 28, 4, "ELF header")?, field(bytes, 42, 2, "ELF header")?, field(bytes, 44, 2, "ELF header")?)
    };
    let mut out = Vec::new();
    for i in 0..phnum {
        let ph = phoff.checked_add(i * phentsize).ok_or(LoadError::Truncated {
            what: "program header",
            offset: phoff,
            file_len,
        })?;
        if field(bytes, ph, 4, "program header")? as u32 != PT_NOTE {
            continue;
        }
        let (offset, size) = if wide {
            (field(bytes, ph + 8, 8, "program header")?, field(bytes, ph + 32, 8, "program header")?)
        } else {
            (field(bytes, ph + 4, 4, "program header")?, field(bytes, ph + 16, 4, "program header")?)
        };
        let end = offset.checked_add(size).ok_or(LoadError::Truncated { what: "note segment", offset, file_len })?;
        let mut at = offset;
        while at.saturating_add(12) <= end {
            let namesz = field(bytes, at, 4, "note")?;
            let descsz = field(bytes, at + 4, 4, "note")?;
            let kind = field(bytes, at + 8, 4, "note")? as u32;
            let name_at = at + 12;
            let desc_at = name_at + namesz.next_multiple_of(4);
            let next = desc_at + descsz.next_multiple_of(4);
            if desc_at + descsz > end {
                return Err(LoadError::Truncated { what: "note", offset: at, file_len });
            }
            let slice = |off: u64, len: u64| -> Result<&[u8], LoadError> {
                bytes.get(off as usize..(off + len) as usize).ok_or(LoadError::Truncated {
                    what: "note",
                    offset: off,
                    file_len,
                })
            };
            out.push(Note { name: slice(name_at, namesz)?, kind, desc: slice(desc_at, descsz)? });
            at = next;
        }
    }
    Ok(out)
}

/// Test helpers: minimal ELF files built in memory.
#[cfg(test)]
pub(crate) mod build {
    /// A little-endian ELF executable with one PT_LOAD segment per
    /// `(paddr, data, memsz)`, data placed from file offset 0x1000.
    pub fn elf(wide: bool, machine: u16, entry: u64, segs: &[(u64, &[u8], u64)]) -> Vec<u8> {
        let (ehsize, phentsize) = if wide { (64usize, 56usize) } else { (52, 32) };
        let mut f = vec![0u8; 0x1000];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = if wide { 2 } else { 1 };
        f[5] = 1;
        f[6] = 1;
        f[16] = 2; // ET_EXEC
        f[18..20].copy_from_slice(&machine.to_le_bytes());
        f[20] = 1;
        let mut ph = Vec::new();
        let mut data = Vec::new();
        for &(paddr, bytes, memsz) in segs {
            let off = 0x1000 + data.len() as u64;
            data.extend_from_slice(bytes);
            let mut p = vec![0u8; phentsize];
            p[..4].copy_from_slice(&1u32.to_le_bytes());
            if wide {
                p[4..8].copy_from_slice(&7u32.to_le_bytes());
                p[8..16].copy_from_slice(&off.to_le_bytes());
                p[16..24].copy_from_slice(&paddr.to_le_bytes());
                p[24..32].copy_from_slice(&paddr.to_le_bytes());
                p[32..40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
                p[40..48].copy_from_slice(&memsz.to_le_bytes());
            } else {
                p[4..8].copy_from_slice(&(off as u32).to_le_bytes());
                p[8..12].copy_from_slice(&(paddr as u32).to_le_bytes());
                p[12..16].copy_from_slice(&(paddr as u32).to_le_bytes());
                p[16..20].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
                p[20..24].copy_from_slice(&(memsz as u32).to_le_bytes());
                p[24..28].copy_from_slice(&7u32.to_le_bytes());
            }
            ph.extend_from_slice(&p);
        }
        let phoff = ehsize as u64;
        if wide {
            f[24..32].copy_from_slice(&entry.to_le_bytes());
            f[32..40].copy_from_slice(&phoff.to_le_bytes());
            f[52..54].copy_from_slice(&(ehsize as u16).to_le_bytes());
            f[54..56].copy_from_slice(&(phentsize as u16).to_le_bytes());
            f[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        } else {
            f[24..28].copy_from_slice(&(entry as u32).to_le_bytes());
            f[28..32].copy_from_slice(&(phoff as u32).to_le_bytes());
            f[40..42].copy_from_slice(&(ehsize as u16).to_le_bytes());
            f[42..44].copy_from_slice(&(phentsize as u16).to_le_bytes());
            f[44..46].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        }
        f[ehsize..ehsize + ph.len()].copy_from_slice(&ph);
        f.extend_from_slice(&data);
        f
    }

    /// One note's bytes: header, name and descriptor, each padded to 4.
    pub fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    /// `elf(true, ...)` (ELF64) with a PT_NOTE segment holding `notes`
    /// appended at the end of the file, its program header added after
    /// the PT_LOAD ones.
    pub fn elf64_with_notes(machine: u16, entry: u64, segs: &[(u64, &[u8], u64)], notes: &[u8]) -> Vec<u8> {
        let mut f = elf(true, machine, entry, segs);
        let off = f.len() as u64;
        f.extend_from_slice(notes);
        let ph = 64 + 56 * segs.len();
        let mut p = [0u8; 56];
        p[..4].copy_from_slice(&4u32.to_le_bytes());
        p[8..16].copy_from_slice(&off.to_le_bytes());
        p[32..40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        p[40..48].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        p[48..56].copy_from_slice(&4u64.to_le_bytes());
        f[ph..ph + 56].copy_from_slice(&p);
        f[56..58].copy_from_slice(&(segs.len() as u16 + 1).to_le_bytes());
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_elf32_and_elf64() {
        for wide in [false, true] {
            let m = if wide { EM_X86_64 } else { EM_386 };
            let f = build::elf(wide, m, 0x10_0010, &[(0x10_0000, &[0x90; 16], 0x2000)]);
            let e = parse(&f).unwrap();
            assert_eq!(e.class, if wide { ElfClass::Elf64 } else { ElfClass::Elf32 });
            assert_eq!(e.machine, m);
            assert_eq!(e.entry, 0x10_0010);
            assert_eq!(e.segments, vec![LoadSegment { paddr: 0x10_0000, offset: 0x1000, filesz: 16, memsz: 0x2000 }]);
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let good = build::elf(true, EM_X86_64, 0x10_0000, &[(0x10_0000, &[1, 2, 3], 3)]);
        let mut f = good.clone();
        f[4] = 3;
        assert_eq!(parse(&f), Err(LoadError::BadElfClass(3)));
        let mut f = good.clone();
        f[5] = 2;
        assert_eq!(parse(&f), Err(LoadError::BadElfEncoding(2)));
        let mut f = good.clone();
        f[54] = 8;
        assert_eq!(parse(&f), Err(LoadError::BadPhentsize(8)));
        let mut f = good.clone();
        f.truncate(0x1001);
        assert!(matches!(parse(&f), Err(LoadError::Truncated { what: "segment", .. })));
        let f = build::elf(true, EM_X86_64, 0, &[(0x10_0000, &[1, 2, 3], 2)]);
        assert!(matches!(parse(&f), Err(LoadError::SegmentFileSizeTooLarge { filesz: 3, memsz: 2, .. })));
        let f = build::elf(true, EM_X86_64, 0, &[]);
        assert_eq!(parse(&f), Err(LoadError::NoLoadableSegments));
        let f = build::elf(true, EM_X86_64, 0, &[(u64::MAX - 1, &[1], 4)]);
        assert!(matches!(parse(&f), Err(LoadError::SegmentAddressOverflow { .. })));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let f = build::elf(false, EM_386, 0x10_0000, &[(0x10_0000, &[7; 64], 64)]);
        for len in 0..f.len() {
            assert!(parse(&f[..len]).is_err(), "len {len}");
        }
        assert!(parse(&f).is_ok());
    }
}
