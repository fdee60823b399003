//! ioguard: a minimal aarch64 guest kernel that exercises, and checks, the guest side of
//! pKVM's MMIO guard.
//!
//! The crate is split in two halves:
//! - pure logic (device-tree interpretation, ESR decoding, the judgement of a probe's
//!   result, profiles and their expectations, command line, check names, result
//!   formatting) that builds everywhere and is unit-tested on the host;
//! - the kernel proper (`kernel`: arch, exceptions and probes, console, mm, hyp, smp and
//!   the suite), built only for `target_os = "none"`, which touches registers.
#![cfg_attr(target_os = "none", no_std)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod access;
pub mod bars;
pub mod checks;
pub mod cmdline;
pub mod cpus;
pub mod devices;
pub mod dma;
pub mod esr;
pub mod fault;
pub mod fuzz;
pub mod glob;
pub mod granules;
pub mod hyp;
pub mod platform;
pub mod refusal;
pub mod report;
pub mod targets;
pub mod width;

#[cfg(target_os = "none")]
pub mod kernel;
