//! Virtio devices on the virtio-mmio transport (virtio 1.x, §4.2.2: version 2 only).
//!
//! rust-vmm's device crates (virtio-device, virtio-blk, virtio-console) are not in the
//! crate registry, so the transport and the three devices are written here on top of
//! virtio-queue's split-ring `Queue`.

pub mod blk;
pub mod console;
pub mod core;
pub mod dma;
pub mod mmio;
pub mod pci;
pub mod queue;
pub mod rng;

use std::fmt;

use virtio_queue::Queue;

pub use queue::Dma;

pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
pub const VIRTIO_F_ACCESS_PLATFORM: u64 = 1 << 33;

pub const ID_BLOCK: u32 = 2;
pub const ID_CONSOLE: u32 = 3;
pub const ID_RNG: u32 = 4;

/// Largest queue the devices offer.
pub const QUEUE_MAX: u16 = 256;

#[derive(Debug)]
pub enum VirtioError {
    Dma(dma::DmaError),
    Queue(virtio_queue::Error),
    /// A descriptor chain the devices cannot use.
    Chain(&'static str),
}

impl fmt::Display for VirtioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dma(e) => write!(f, "{e}"),
            Self::Queue(e) => write!(f, "queue: {e}"),
            Self::Chain(why) => write!(f, "descriptor chain: {why}"),
        }
    }
}

impl From<dma::DmaError> for VirtioError {
    fn from(e: dma::DmaError) -> Self {
        Self::Dma(e)
    }
}

impl From<virtio_queue::Error> for VirtioError {
    fn from(e: virtio_queue::Error) -> Self {
        Self::Queue(e)
    }
}

/// A device type's part of a virtio device; the transport does the rest.
pub trait VirtioDevice: Send {
    fn device_id(&self) -> u32;
    fn name(&self) -> &'static str;
    /// Device-specific feature bits (the transport adds VERSION_1 and ACCESS_PLATFORM).
    fn features(&self) -> u64 {
        0
    }
    fn queue_count(&self) -> usize;
    /// Device configuration space; bytes beyond it read as 0.
    fn config(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Handles what the driver made available on queue `index`; returns whether any
    /// buffer was used (the transport then raises the used-buffer interrupt status).
    fn process(&mut self, index: usize, q: &mut Queue, dma: &Dma) -> Result<bool, VirtioError>;
}

/// An empty virtio-mmio slot (device ID 0), as QEMU `virt` has many: a window a driver
/// probes and leaves, which ioguard's `ioremap: windows` uses.
pub struct Empty;

impl VirtioDevice for Empty {
    fn device_id(&self) -> u32 {
        0
    }
    fn name(&self) -> &'static str {
        "none"
    }
    fn queue_count(&self) -> usize {
        0
    }
    fn process(&mut self, _: usize, _: &mut Queue, _: &Dma) -> Result<bool, VirtioError> {
        Ok(false)
    }
}
