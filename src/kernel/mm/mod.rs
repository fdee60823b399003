//! Memory: the heap, stage-1 page tables, and `ioremap`, which registers device windows
//! with the hypervisor's guard. Nothing here knows of checks.

pub mod heap;
pub mod ioremap;
pub mod mmu;
