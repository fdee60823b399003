//! hypmodel: the EL2 program. Only the thin layer that touches registers lives here:
//! entry, exception vectors, register save/restore, the UART, stage-2 set-up, guest entry,
//! the forwarded accesses themselves and PSCI calls to QEMU. Every decision is made by the
//! library (`hypmodel::vm`), which is unit-tested on the host.
#![cfg_attr(target_os = "none", no_std, no_main)]
// Every unsafe block says why it is sound, and an unsafe fn's body is not one unsafe block.
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod el2;
