//! hypmodel's own test guest. It makes the pKVM calls and device accesses that show what the
//! hypervisor does (enrol, MAP a PL031 page and read its PeriphID, stray accesses, an LDP on
//! a registered page, UNMAP, MEM_SHARE/UNSHARE, CPU_ON of every other CPU, a probe of
//! hypmodel's own memory) and prints one `TG:` line per observation. It runs the same
//! sequence under every profile; the integration tests judge the lines per profile and
//! compare them with hypmodel's own counters and trace.
//!
//! It runs with its MMU off (all accesses Device-nGnRnE, so every access is a single
//! aligned load or store) and hard-codes QEMU `virt` device addresses: it is a fixture for
//! hypmodel on QEMU, not a portable guest (that is `ioguard`).
#![cfg_attr(target_os = "none", no_std, no_main)]
// Every unsafe block says why it is sound, and an unsafe fn's body is not one unsafe block.
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest;
