//! A small hand assembler for the AML the DSDT needs.
//!
//! Encodings follow the ACPI 6.x specification, chapter 20 "ACPI Machine
//! Language (AML) Specification", section 20.2 "AML Grammar Definition":
//! 20.2.2 "Name Objects Encoding" (NameSeg, NameString, RootChar,
//! DualNamePrefix, MultiNamePrefix), 20.2.3 "Data Objects Encoding"
//! (ZeroOp/OneOp and the Byte/Word/DWord/QWord prefixes), 20.2.4 "Package
//! Length Encoding" (1 to 4 bytes, the length counting itself) and 20.2.5
//! "Term Objects Encoding" (DefName, DefScope, DefDevice, DefPackage,
//! DefBuffer). Resource templates follow 6.4 "Resource Data Types for
//! ACPI": the large Word/DWord Address Space and Memory32Fixed
//! descriptors, and the small End Tag whose checksum makes the template's
//! bytes sum to zero. `EISAID` compression is the one ASL's `EisaId()`
//! macro performs (19.6.35 "EISAID (EISA ID String To Integer Conversion
//! Macro)").
//!
//! Every function returns the encoded bytes; terms nest by concatenation.
//! Names are 1-4 characters of `[A-Z0-9_]`, padded with `_`; invalid input
//! is an internal invariant of the table builder (names are constants).

const NAME_OP: u8 = 0x08;
const SCOPE_OP: u8 = 0x10;
const PACKAGE_OP: u8 = 0x12;
const BUFFER_OP: u8 = 0x11;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const QWORD_PREFIX: u8 = 0x0e;
const ROOT_CHAR: u8 = b'\\';
const DUAL_NAME_PREFIX: u8 = 0x2e;
const MULTI_NAME_PREFIX: u8 = 0x2f;

/// One NameSeg: up to four characters, padded with `_`.
fn name_seg(seg: &str) -> [u8; 4] {
    let b = seg.as_bytes();
    assert!(
        (1..=4).contains(&b.len())
            && b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
            && !b[0].is_ascii_digit(),
        "invalid AML NameSeg {seg:?}"
    );
    let mut out = [b'_'; 4];
    out[..b.len()].copy_from_slice(b);
    out
}

/// A NameString: an optional leading `\` and dot-separated NameSegs
/// (`\_SB.PCI0`).
pub fn name_string(path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let rel = match path.strip_prefix('\\') {
        Some(rest) => {
            out.push(ROOT_CHAR);
            rest
        }
        None => path,
    };
    let segs: Vec<[u8; 4]> = if rel.is_empty() { Vec::new() } else { rel.split('.').map(name_seg).collect() };
    match segs.len() {
        0 => out.push(0), // NullName
        1 => {}
        2 => out.push(DUAL_NAME_PREFIX),
        n => {
            out.push(MULTI_NAME_PREFIX);
            out.push(u8::try_from(n).expect("at most 255 NameSegs"));
        }
    }
    for s in segs {
        out.extend_from_slice(&s);
    }
    out
}

/// PkgLength for a body of `body_len` bytes: the encoded length counts the
/// PkgLength bytes themselves. One byte holds up to 63; longer lengths put
/// the byte count minus one in bits 7:6 of the lead byte, the low nibble in
/// its bits 3:0 and the rest in the following bytes.
pub fn pkg_length(body_len: usize) -> Vec<u8> {
    if body_len + 1 < 1 << 6 {
        return vec![(body_len + 1) as u8];
    }
    for extra in 1..=3usize {
        let total = body_len + 1 + extra;
        if total < 1 << (4 + 8 * extra) {
            let mut out = vec![((extra as u8) << 6) | (total & 0xf) as u8];
            for i in 0..extra {
                out.push((total >> (4 + 8 * i)) as u8);
            }
            return out;
        }
    }
    panic!("AML package of {body_len} bytes exceeds PkgLength");
}

/// The shortest integer encoding of `v` (ZeroOp, OneOp or a prefixed
/// constant).
pub fn integer(v: u64) -> Vec<u8> {
    match v {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        2..=0xff => vec![BYTE_PREFIX, v as u8],
        0x100..=0xffff => {
            let mut out = vec![WORD_PREFIX];
            out.extend_from_slice(&(v as u16).to_le_bytes());
            out
        }
        0x1_0000..=0xffff_ffff => dword(v as u32),
        _ => {
            let mut out = vec![QWORD_PREFIX];
            out.extend_from_slice(&v.to_le_bytes());
            out
        }
    }
}

/// A DWordConst, whatever its value (as iasl emits `EisaId()`).
pub fn dword(v: u32) -> Vec<u8> {
    let mut out = vec![DWORD_PREFIX];
    out.extend_from_slice(&v.to_le_bytes());
    out
}

/// Compressed EISA ID of a seven-character ID like `PNP0A03`: three
/// letters in five bits each and four hex digits, stored big-endian in a
/// little-endian DWord.
pub fn eisa_id(id: &str) -> u32 {
    let b = id.as_bytes();
    assert!(
        b.len() == 7 && b[..3].iter().all(u8::is_ascii_uppercase) && b[3..].iter().all(u8::is_ascii_hexdigit),
        "invalid EISA ID {id:?}"
    );
    let vendor = b[..3].iter().fold(0u16, |acc, &c| (acc << 5) | u16::from(c - b'@'));
    let product = u16::from_str_radix(&id[3..], 16).expect("checked hex digits");
    u32::from(vendor.swap_bytes()) | (u32::from(product.swap_bytes()) << 16)
}

/// `Name (name, object)`.
pub fn name(name: &str, object: &[u8]) -> Vec<u8> {
    let mut out = vec![NAME_OP];
    out.extend(name_string(name));
    out.extend_from_slice(object);
    out
}

fn with_pkg_length(lead: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = lead.to_vec();
    out.extend(pkg_length(body.len()));
    out.extend_from_slice(body);
    out
}

/// `Scope (path) { terms }`.
pub fn scope(path: &str, terms: &[Vec<u8>]) -> Vec<u8> {
    let mut body = name_string(path);
    body.extend(terms.concat());
    with_pkg_length(&[SCOPE_OP], &body)
}

/// `Device (name) { terms }`.
pub fn device(name: &str, terms: &[Vec<u8>]) -> Vec<u8> {
    let mut body = name_string(name);
    body.extend(terms.concat());
    with_pkg_length(&[EXT_OP_PREFIX, DEVICE_OP], &body)
}

/// `Package () { elements }` of data objects.
pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![u8::try_from(elements.len()).expect("at most 255 package elements")];
    body.extend(elements.concat());
    with_pkg_length(&[PACKAGE_OP], &body)
}

/// `Buffer () { bytes }`.
pub fn buffer(bytes: &[u8]) -> Vec<u8> {
    let mut body = integer(bytes.len() as u64);
    body.extend_from_slice(bytes);
    with_pkg_length(&[BUFFER_OP], &body)
}

/// `ResourceTemplate () { descriptors }`: a buffer of the descriptors and
/// an End Tag whose checksum makes the descriptor bytes sum to zero.
pub fn resource_template(descriptors: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = descriptors.concat();
    bytes.push(0x79); // small item 0xf (End Tag), length 1
    bytes.push(crate::acpi::checksum(&bytes));
    buffer(&bytes)
}

/// Address space resource types (6.4.3.5 "Address Space Resource
/// Descriptors").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AddressSpace {
    /// Memory range.
    Memory = 0,
    /// I/O range.
    Io = 1,
    /// Bus number range.
    BusNumber = 2,
}

/// General flags of a producer range with fixed minimum and maximum,
/// positive decode.
const PRODUCER_MIN_MAX_FIXED: u8 = (1 << 3) | (1 << 2);

/// Word Address Space Descriptor of a producer range `min..=max`
/// (`WordBusNumber`/`WordIO` with MinFixed, MaxFixed, PosDecode);
/// `type_flags` is the type-specific byte (3 = EntireRange for I/O).
pub fn word_address(space: AddressSpace, type_flags: u8, min: u16, max: u16) -> Vec<u8> {
    let mut out = vec![0x88, 13, 0, space as u8, PRODUCER_MIN_MAX_FIXED, type_flags];
    for v in [0, min, max, 0, max.wrapping_sub(min).wrapping_add(1)] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// DWord Address Space Descriptor of a producer memory range `min..=max`
/// (`DWordMemory` with PosDecode, MinFixed, MaxFixed, ReadWrite);
/// `cacheable` selects Cacheable over NonCacheable.
pub fn dword_memory(cacheable: bool, min: u32, max: u32) -> Vec<u8> {
    let type_flags = 1 | (u8::from(cacheable) << 1);
    let mut out = vec![0x87, 23, 0, AddressSpace::Memory as u8, PRODUCER_MIN_MAX_FIXED, type_flags];
    for v in [0, min, max, 0, max.wrapping_sub(min).wrapping_add(1)] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// `Memory32Fixed (ReadWrite, base, len)`.
pub fn memory32_fixed(base: u32, len: u32) -> Vec<u8> {
    let mut out = vec![0x86, 9, 0, 1];
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_strings() {
        assert_eq!(name_string("_S5"), b"_S5_");
        assert_eq!(name_string("PCI0"), b"PCI0");
        assert_eq!(name_string("\\_SB"), b"\\_SB_");
        assert_eq!(name_string("\\_SB.PCI0"), b"\\\x2e_SB_PCI0");
        assert_eq!(name_string("_SB.PCI0.HPET"), b"\x2f\x03_SB_PCI0HPET");
        assert_eq!(name_string("\\"), b"\\\x00");
    }

    #[test]
    fn pkg_lengths() {
        assert_eq!(pkg_length(0), [0x01]);
        assert_eq!(pkg_length(62), [0x3f]);
        // 63 + 2 = 65 = 0x41: lead 0x41 (one extra byte, low nibble 1), 0x04.
        assert_eq!(pkg_length(63), [0x41, 0x04]);
        assert_eq!(pkg_length(0xffd), [0x4f, 0xff]);
        assert_eq!(pkg_length(0xffe), [0x81, 0x00, 0x01]);
        assert_eq!(pkg_length(0x12345), [0x88, 0x34, 0x12]);
        assert_eq!(pkg_length(0xf_fffc), [0x8f, 0xff, 0xff]);
        assert_eq!(pkg_length(0xf_fffd), [0xc1, 0x00, 0x00, 0x01]);
    }

    #[test]
    fn integers() {
        assert_eq!(integer(0), [0x00]);
        assert_eq!(integer(1), [0x01]);
        assert_eq!(integer(5), [0x0a, 0x05]);
        assert_eq!(integer(0xd00), [0x0b, 0x00, 0x0d]);
        assert_eq!(integer(0xfed0_0000), [0x0c, 0x00, 0x00, 0xd0, 0xfe]);
        assert_eq!(integer(1 << 32), [0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn eisa_ids() {
        assert_eq!(eisa_id("PNP0A03"), 0x030a_d041);
        assert_eq!(eisa_id("PNP0103"), 0x0301_d041);
        assert_eq!(eisa_id("PNP0C0F"), 0x0f0c_d041);
        assert_eq!(dword(eisa_id("PNP0A03")), [0x0c, 0x41, 0xd0, 0x0a, 0x03]);
    }

    #[test]
    fn terms() {
        // Name (_S5, Package () { 5, 5, 0, 0 })
        let s5 = name("_S5", &package(&[integer(5), integer(5), integer(0), integer(0)]));
        assert_eq!(s5, [0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00]);
        // Device (HPET) { Name (_UID, Zero) }
        let d = device("HPET", &[name("_UID", &integer(0))]);
        assert_eq!(d, [0x5b, 0x82, 0x0b, b'H', b'P', b'E', b'T', 0x08, b'_', b'U', b'I', b'D', 0x00]);
        // Scope (\_SB) {}
        assert_eq!(scope("\\_SB", &[]), [0x10, 0x06, b'\\', b'_', b'S', b'B', b'_']);
        assert_eq!(buffer(&[0xaa]), [0x11, 0x03, 0x01, 0xaa]);
    }

    #[test]
    fn resource_descriptors() {
        // Memory32Fixed (ReadWrite, 0xFED00000, 0x00000400)
        assert_eq!(memory32_fixed(0xfed0_0000, 0x400), [0x86, 0x09, 0x00, 0x01, 0, 0, 0xd0, 0xfe, 0, 4, 0, 0]);
        // WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
        //     0x0000, 0x0000, 0x00FF, 0x0000, 0x0100)
        assert_eq!(
            word_address(AddressSpace::BusNumber, 0, 0, 0xff),
            [0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0, 0, 0, 0, 0xff, 0, 0, 0, 0x00, 0x01]
        );
        // DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed,
        //     Cacheable, ReadWrite, 0, 0xA0000, 0xBFFFF, 0, 0x20000)
        let m = dword_memory(true, 0xa_0000, 0xb_ffff);
        assert_eq!(m.len(), 26);
        assert_eq!(m[..6], [0x87, 0x17, 0x00, 0x00, 0x0c, 0x03]);
        assert_eq!(m[10..14], 0xa_0000u32.to_le_bytes());
        assert_eq!(m[22..26], 0x2_0000u32.to_le_bytes());
        let t = resource_template(&[memory32_fixed(0xfed0_0000, 0x400)]);
        assert_eq!(t[..3], [0x11, 0x11, 0x0a]);
        assert_eq!(t[3], 14);
        assert_eq!(t[t.len() - 2], 0x79);
        assert_eq!(t[4..].iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
    }
}
