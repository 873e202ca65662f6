//! Guest kernels built from `guests/` by the build script and embedded in
//! the binary: the demo (what `turtles` runs without arguments) and the
//! benchmark kernels.

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The embedded kernel called `name`.
pub fn find(name: &str) -> Option<&'static [u8]> {
    KERNELS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_is_embedded_and_is_an_elf() {
        let demo = super::find("demo").expect("demo kernel embedded");
        assert!(demo.starts_with(b"\x7fELF"));
        assert!(super::KERNELS.iter().all(|(n, _)| *n == "demo" || n.starts_with("bench")));
    }
}
