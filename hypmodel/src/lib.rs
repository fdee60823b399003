//! hypmodel's pure logic: everything that decides, none of what touches registers. Built
//! and unit-tested on the host; the EL2 binary (`main.rs`) is a thin layer over it.
#![cfg_attr(not(test), no_std)]
// Every unsafe block says why it is sound, and an unsafe fn's body is not one unsafe block.
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
pub mod chaos;
pub mod console;
pub mod dma;
pub mod fdt;
pub mod guard;
pub mod image;
pub mod layout;
pub mod memshare;
pub mod options;
pub mod pci;
pub mod profile;
pub mod stage2;
pub mod syndrome;
pub mod virtq;
pub mod vm;
