//! ioguard's entry glue. The kernel lives in the library (`ioguard::kernel`); this binary
//! only pulls it in. On the host it is an empty program, so `cargo test` builds everywhere.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(target_os = "none")]
use ioguard as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "ioguard is a guest kernel: build it with `cargo image` and boot it with ./qemu-run.sh"
    );
}
