//! Helpers shared by the Turtles guest test kernels (the kernels themselves
//! are the binaries in `src/bin/`). Built only for the bare-metal target;
//! empty on the host.
#![no_std]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "none")]
pub mod paging;
#[cfg(target_os = "none")]
pub mod user;
