//! ioguard: a minimal aarch64 guest kernel that exercises, and checks, the guest side of
//! pKVM's MMIO guard.
//!
//! The crate is split in two halves:
//! - pure logic (device-tree interpretation, ESR decoding, command line, check selection,
//!   result formatting) that builds everywhere and is unit-tested on the host;
//! - the kernel proper (`arch`, `mm`, console, probes, the suite), built only for
//!   `target_os = "none"`, which touches registers.
#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

pub mod cmdline;
pub mod esr;
pub mod glob;
pub mod granules;
pub mod hyp;
pub mod platform;
pub mod report;
pub mod smp;
pub mod targets;

#[cfg(target_os = "none")]
pub mod kernel;
