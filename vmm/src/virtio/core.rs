//! What every virtio transport shares (virtio 1.x §2, §3): feature negotiation, the
//! device status, the queues and the notify that hands them to the device. The transports
//! (virtio-mmio, virtio-pci) only lay these out in registers of their own.

use virtio_queue::{Queue, QueueT};

use super::queue::Dma;
use super::{VirtioDevice, VirtioError, QUEUE_MAX, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_VERSION_1};

pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 0x40;

pub const INT_USED_BUFFER: u32 = 1;
pub const INT_CONFIG_CHANGE: u32 = 2;

pub struct Core {
    dev: Box<dyn VirtioDevice>,
    pub dma: Dma,
    /// Where the guest reaches it, for the VMM's lines: `virtio-blk@0xa000000`.
    label: String,
    offered: u64,
    pub driver_features: u64,
    queues: Vec<Queue>,
    status: u32,
    /// What an interrupt would say (virtio-mmio InterruptStatus, virtio-pci ISR).
    pub interrupt_status: u32,
    /// Reported problems.
    pub incidents: Vec<String>,
}

impl Core {
    /// `access_platform`: offer VIRTIO_F_ACCESS_PLATFORM (protected VMs: the device can
    /// reach only what the guest shares). `at` says where the transport is.
    pub fn new(dev: Box<dyn VirtioDevice>, dma: Dma, at: &str, access_platform: bool) -> Self {
        let mut offered = dev.features() | VIRTIO_F_VERSION_1;
        if access_platform {
            offered |= VIRTIO_F_ACCESS_PLATFORM;
        }
        let queues = (0..dev.queue_count())
            .filter_map(|_| Queue::new(QUEUE_MAX).ok())
            .collect();
        let label = format!("virtio-{}@{at}", dev.name());
        Self {
            dev,
            dma,
            label,
            offered,
            driver_features: 0,
            queues,
            status: 0,
            interrupt_status: 0,
            incidents: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.label
    }

    pub fn device_id(&self) -> u32 {
        self.dev.device_id()
    }

    pub fn config(&self) -> Vec<u8> {
        self.dev.config()
    }

    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// 32 bits of the offered features: `sel` 0 the low half, 1 the high one, others 0.
    pub fn offered_half(&self, sel: u32) -> u32 {
        match sel {
            0 => self.offered as u32,
            1 => (self.offered >> 32) as u32,
            _ => 0,
        }
    }

    /// The driver's features, half `sel`; fixed once FEATURES_OK is set.
    pub fn set_driver_half(&mut self, sel: u32, v: u32) {
        if self.status & STATUS_FEATURES_OK != 0 || sel > 1 {
            return;
        }
        let v = u64::from(v);
        self.driver_features = if sel == 1 {
            (self.driver_features & 0xffff_ffff) | (v << 32)
        } else {
            (self.driver_features & !0xffff_ffff) | v
        };
    }

    pub fn queue(&mut self, index: usize) -> Option<&mut Queue> {
        self.queues.get_mut(index)
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    /// A device reset (status 0): everything but what the transport keeps itself.
    fn reset(&mut self) {
        self.status = 0;
        self.interrupt_status = 0;
        self.driver_features = 0;
        for q in &mut self.queues {
            q.reset();
        }
    }

    /// A write of the device status; 0 resets the device.
    pub fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let mut v = v;
        if v & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            // A modern device insists on VERSION_1 and on nothing it did not offer.
            // ACCESS_PLATFORM not accepted is tolerated, as crosvm does.
            let unknown = self.driver_features & !self.offered;
            if self.driver_features & VIRTIO_F_VERSION_1 == 0 || unknown != 0 {
                v &= !STATUS_FEATURES_OK;
            }
        }
        // The device keeps NEEDS_RESET until the driver resets it.
        self.status = v | (self.status & STATUS_NEEDS_RESET);
    }

    /// The driver made buffers available on queue `index`; a queue the device lacks is a
    /// driver error that makes the device need a reset.
    pub fn notify(&mut self, index: u32) {
        let ready = STATUS_DRIVER_OK;
        if self.status & (ready | STATUS_NEEDS_RESET) != ready {
            return;
        }
        let i = index as usize;
        let Some(q) = self.queues.get_mut(i) else {
            return self.fail(format!("notify of queue {index}, which does not exist"));
        };
        match self.dev.process(i, q, &self.dma) {
            Ok(true) => self.interrupt_status |= INT_USED_BUFFER,
            Ok(false) => {}
            Err(e) => self.fail_on(i, e),
        }
    }

    fn fail_on(&mut self, queue: usize, e: VirtioError) {
        self.fail(format!("queue {queue}: {e}"));
    }

    /// The device stops until the driver resets it (virtio 1.x §2.1.2), and says why.
    fn fail(&mut self, why: String) {
        self.status |= STATUS_NEEDS_RESET;
        self.interrupt_status |= INT_CONFIG_CHANGE;
        let line = format!("{}: {why}; device needs reset", self.name());
        eprintln!("vmm: {line}");
        self.incidents.push(line);
    }
}
