//! The kernel proper: everything that touches registers. Built only for the guest target.
//!
//! Layers, lowest first; a layer never calls one above it, and what a low layer must hand
//! upwards (an unexpected exception, a trace line, a guard call) goes through a hook the
//! upper layer installs:
//! - `arch`, `exceptions` + `probe`, `trace`, `semihosting`, `time`;
//! - `console`, `hyp` (conduit, discovery, capabilities), `mm`, `power`;
//! - `smp`, `virtio` (transports through `mm::ioremap`, DMA through `hyp`'s sharing);
//! - `suite`, the checks, and `start`, which boots and hands over to it.

pub mod arch;
pub mod console;
pub mod exceptions;
pub mod hyp;
pub mod mm;
pub mod power;
pub mod probe;
pub mod semihosting;
pub mod smp;
pub mod start;
pub mod suite;
pub mod time;
pub mod trace;
pub mod virtio;
