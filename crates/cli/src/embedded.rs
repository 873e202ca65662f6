//! Guest kernels built from `guests/` by the build script and embedded in
//! the binary: the guest hypervisor of the nested demo (what `turtles`
//! runs without arguments), the first demo kernel and the benchmark
//! kernels.

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The embedded kernel called `name`.
pub fn find(name: &str) -> Option<&'static [u8]> {
    KERNELS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demos_are_embedded_and_are_elfs() {
        for name in ["demo", "hyper", "bench-l2"] {
            let k = super::find(name).unwrap_or_else(|| panic!("{name} embedded"));
            assert!(k.starts_with(b"\x7fELF"), "{name}");
        }
        assert!(super::KERNELS.iter().all(|(n, _)| *n == "demo" || *n == "hyper" || n.starts_with("bench")));
    }
}
