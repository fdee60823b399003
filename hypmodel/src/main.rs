//! hypmodel: the EL2 program. Only the thin layer that touches registers lives here:
//! entry, exception vectors, register save/restore, the UART, stage-2 set-up, guest entry,
//! the forwarded accesses themselves and PSCI calls to QEMU. Every decision is made by the
//! library (`hypmodel::vm`), which is unit-tested on the host.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod el2;
