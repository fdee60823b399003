//! The kernel proper: everything that touches registers. Built only for the guest target.

pub mod arch;
pub mod boot;
pub mod console;
pub mod cpu;
pub mod exceptions;
pub mod heap;
pub mod hypervisor;
pub mod ioremap;
pub mod mmu;
pub mod power;
pub mod probe;
pub mod smccc;
pub mod smp;
pub mod suite;
