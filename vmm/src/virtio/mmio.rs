//! The virtio-mmio transport, version 2 (virtio 1.x §4.2.2).

use virtio_queue::{Queue, QueueT};

use super::core::Core;
#[cfg(test)]
use super::core::{INT_CONFIG_CHANGE, INT_USED_BUFFER, STATUS_FEATURES_OK, STATUS_NEEDS_RESET};
use super::queue::Dma;
use super::{VirtioDevice, QUEUE_MAX};
use crate::devices::{read_reg32, write_value, MmioDevice};

const MAGIC: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const VENDOR_ID: u64 = 0x00c;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC_LOW: u64 = 0x080;
const QUEUE_DESC_HIGH: u64 = 0x084;
const QUEUE_DRIVER_LOW: u64 = 0x090;
const QUEUE_DRIVER_HIGH: u64 = 0x094;
const QUEUE_DEVICE_LOW: u64 = 0x0a0;
const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const SHM_LEN_LOW: u64 = 0x0b0;
const SHM_BASE_HIGH: u64 = 0x0bc;
const QUEUE_RESET: u64 = 0x0c0;
const CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG: u64 = 0x100;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
/// "IOGV": any value will do, drivers do not check it.
const VENDOR: u32 = 0x5647_4f49;

#[cfg(test)]
pub const STATUS_ACKNOWLEDGE: u32 = 1;
#[cfg(test)]
pub const STATUS_DRIVER: u32 = 2;

/// virtio-mmio's registers over the shared [`Core`].
pub struct MmioTransport {
    pub core: Core,
    device_features_sel: u32,
    driver_features_sel: u32,
    queue_sel: u32,
}

impl MmioTransport {
    /// `access_platform`: offer VIRTIO_F_ACCESS_PLATFORM (protected VMs).
    pub fn new(dev: Box<dyn VirtioDevice>, dma: Dma, base: u64, access_platform: bool) -> Self {
        Self {
            core: Core::new(dev, dma, &format!("{base:#x}"), access_platform),
            device_features_sel: 0,
            driver_features_sel: 0,
            queue_sel: 0,
        }
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.core.queue(self.queue_sel as usize)
    }

    fn reg(&mut self, offset: u64) -> u32 {
        match offset {
            MAGIC => MAGIC_VALUE,
            VERSION => 2,
            DEVICE_ID => self.core.device_id(),
            VENDOR_ID => VENDOR,
            DEVICE_FEATURES => self.core.offered_half(self.device_features_sel),
            QUEUE_NUM_MAX => self.queue().map_or(0, |_| u32::from(QUEUE_MAX)),
            QUEUE_READY => self.queue().map_or(0, |q| u32::from(q.ready())),
            INTERRUPT_STATUS => self.core.interrupt_status,
            STATUS => self.core.status(),
            // No shared memory regions: length and base read as all ones.
            SHM_LEN_LOW..=SHM_BASE_HIGH => u32::MAX,
            QUEUE_RESET => 0,
            CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.device_features_sel = 0;
            self.driver_features_sel = 0;
            self.queue_sel = 0;
        }
        self.core.set_status(v);
    }
}

impl MmioDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG {
            let config = self.core.config();
            let start = (offset - CONFIG) as usize;
            for (i, b) in data.iter_mut().enumerate() {
                *b = config.get(start + i).copied().unwrap_or(0);
            }
            return;
        }
        // Registers below the configuration space are 32 bits wide (§4.2.2.2).
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        read_reg32(offset, data, |o| self.reg(o));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG || data.len() != 4 || !offset.is_multiple_of(4) {
            // The devices' configuration spaces are read-only.
            return;
        }
        let v = write_value(data);
        match offset {
            DEVICE_FEATURES_SEL => self.device_features_sel = v,
            DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            DRIVER_FEATURES => self.core.set_driver_half(self.driver_features_sel, v),
            QUEUE_SEL => self.queue_sel = v,
            QUEUE_NUM => {
                if let Some(q) = self.queue() {
                    // An invalid size leaves the queue unusable; the notify reports it.
                    let _ = u16::try_from(v).map(|n| q.try_set_size(n));
                }
            }
            QUEUE_READY => {
                if let Some(q) = self.queue() {
                    q.set_ready(v == 1);
                }
            }
            QUEUE_DESC_LOW | QUEUE_DESC_HIGH => {
                if let Some(q) = self.queue() {
                    let (l, h) = if offset == QUEUE_DESC_LOW {
                        (Some(v), None)
                    } else {
                        (None, Some(v))
                    };
                    q.set_desc_table_address(l, h);
                }
            }
            QUEUE_DRIVER_LOW | QUEUE_DRIVER_HIGH => {
                if let Some(q) = self.queue() {
                    let (l, h) = if offset == QUEUE_DRIVER_LOW {
                        (Some(v), None)
                    } else {
                        (None, Some(v))
                    };
                    q.set_avail_ring_address(l, h);
                }
            }
            QUEUE_DEVICE_LOW | QUEUE_DEVICE_HIGH => {
                if let Some(q) = self.queue() {
                    let (l, h) = if offset == QUEUE_DEVICE_LOW {
                        (Some(v), None)
                    } else {
                        (None, Some(v))
                    };
                    q.set_used_ring_address(l, h);
                }
            }
            QUEUE_RESET if v == 1 => {
                if let Some(q) = self.queue() {
                    q.reset();
                }
            }
            QUEUE_NOTIFY => self.core.notify(v & 0xffff),
            INTERRUPT_ACK => self.core.interrupt_status &= !v,
            STATUS => self.set_status(v),
            // Read-only registers and holes: ignored.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue::driver::{self, *};
    use super::*;
    use std::sync::{Arc, Mutex};

    fn r(t: &mut MmioTransport, o: u64) -> u32 {
        let mut d = [0u8; 4];
        t.read(o, &mut d);
        u32::from_le_bytes(d)
    }
    fn w(t: &mut MmioTransport, o: u64, v: u32) {
        t.write(o, &v.to_le_bytes());
    }

    fn transport(access_platform: bool) -> (MmioTransport, Arc<Mutex<Vec<u16>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let t = MmioTransport::new(
            Box::new(Sink {
                id: 42,
                features: 1 << 5,
                heads: log.clone(),
            }),
            driver::dma(None),
            0xa00_0000,
            access_platform,
        );
        (t, log)
    }

    /// What virtio-drivers does: status, features, queue 0 at the test rings, DRIVER_OK.
    fn bring_up(t: &mut MmioTransport, features_high: u32) {
        w(t, STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(t, DRIVER_FEATURES_SEL, 1);
        w(t, DRIVER_FEATURES, features_high);
        w(t, DRIVER_FEATURES_SEL, 0);
        w(t, DRIVER_FEATURES, 0);
        w(
            t,
            STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        w(t, QUEUE_SEL, 0);
        assert_eq!(r(t, QUEUE_READY), 0);
        w(t, QUEUE_NUM, u32::from(SIZE));
        w(t, QUEUE_DESC_LOW, DESC as u32);
        w(t, QUEUE_DESC_HIGH, 0);
        w(t, QUEUE_DRIVER_LOW, AVAIL as u32);
        w(t, QUEUE_DRIVER_HIGH, 0);
        w(t, QUEUE_DEVICE_LOW, USED as u32);
        w(t, QUEUE_DEVICE_HIGH, 0);
        w(t, QUEUE_READY, 1);
        w(t, STATUS, 0xf);
    }

    #[test]
    fn identifies_as_a_modern_device() {
        let (mut t, _) = transport(false);
        assert_eq!(r(&mut t, MAGIC), 0x7472_6976);
        assert_eq!(r(&mut t, VERSION), 2);
        assert_eq!(r(&mut t, DEVICE_ID), 42);
        w(&mut t, DEVICE_FEATURES_SEL, 0);
        assert_eq!(r(&mut t, DEVICE_FEATURES), 1 << 5);
        w(&mut t, DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(&mut t, DEVICE_FEATURES), 1, "VERSION_1 only");
        let (mut p, _) = transport(true);
        w(&mut p, DEVICE_FEATURES_SEL, 1);
        assert_eq!(
            r(&mut p, DEVICE_FEATURES),
            3,
            "VERSION_1 and ACCESS_PLATFORM"
        );
        w(&mut p, DEVICE_FEATURES_SEL, 2);
        assert_eq!(r(&mut p, DEVICE_FEATURES), 0);
        assert_eq!(r(&mut t, QUEUE_NUM_MAX), 256);
        w(&mut t, QUEUE_SEL, 2);
        assert_eq!(r(&mut t, QUEUE_NUM_MAX), 0, "no third queue");
        assert_eq!(r(&mut t, SHM_LEN_LOW), u32::MAX);
        let mut cfg = [0u8; 4];
        t.read(CONFIG + 3, &mut cfg);
        assert_eq!(cfg, [4, 5, 0, 0]);
        let mut narrow = [9u8; 2];
        t.read(MAGIC, &mut narrow);
        assert_eq!(narrow, [0, 0], "registers are 32-bit only");
    }

    #[test]
    fn an_empty_slot_says_device_id_0_and_has_no_queues() {
        let mut t = MmioTransport::new(Box::new(super::super::Empty), driver::dma(None), 0, false);
        assert_eq!((r(&mut t, MAGIC), r(&mut t, VERSION)), (0x7472_6976, 2));
        assert_eq!(r(&mut t, DEVICE_ID), 0);
        assert_eq!(r(&mut t, QUEUE_NUM_MAX), 0);
        w(&mut t, QUEUE_NOTIFY, 0);
        assert!(
            t.core.incidents.is_empty(),
            "no notify is processed before DRIVER_OK"
        );
    }

    #[test]
    fn features_ok_needs_version_1_and_nothing_unoffered() {
        let (mut t, _) = transport(true);
        w(&mut t, STATUS, 3);
        w(&mut t, STATUS, 0xb);
        assert_eq!(r(&mut t, STATUS), 3, "VERSION_1 not accepted");
        w(&mut t, DRIVER_FEATURES_SEL, 1);
        w(&mut t, DRIVER_FEATURES, 1 | 4);
        w(&mut t, STATUS, 0xb);
        assert_eq!(r(&mut t, STATUS), 3, "a feature never offered");
        w(&mut t, DRIVER_FEATURES, 1);
        w(&mut t, STATUS, 0xb);
        assert_eq!(r(&mut t, STATUS), 0xb, "ACCESS_PLATFORM may be left out");
        // Features are fixed once FEATURES_OK is set.
        w(&mut t, DRIVER_FEATURES, 3);
        assert_eq!(t.core.driver_features, 1 << 32);
    }

    #[test]
    fn notify_uses_buffers_and_raises_the_interrupt_status() {
        let (mut t, log) = transport(false);
        bring_up(&mut t, 1);
        assert_eq!(r(&mut t, QUEUE_READY), 1);
        offer(&t.core.dma, 0, &[(RAM + 0x8000, 64, true)]);
        w(&mut t, QUEUE_NOTIFY, 0);
        assert_eq!(*log.lock().unwrap(), [0]);
        assert_eq!(used(&t.core.dma), (1, vec![(0, 64)]));
        assert_eq!(r(&mut t, INTERRUPT_STATUS), INT_USED_BUFFER);
        w(&mut t, INTERRUPT_ACK, INT_USED_BUFFER);
        assert_eq!(r(&mut t, INTERRUPT_STATUS), 0);
        // Nothing new available: no interrupt.
        w(&mut t, QUEUE_NOTIFY, 0);
        assert_eq!(r(&mut t, INTERRUPT_STATUS), 0);
    }

    #[test]
    fn nothing_is_processed_before_driver_ok() {
        let (mut t, log) = transport(false);
        offer(&t.core.dma, 0, &[(RAM + 0x8000, 64, true)]);
        w(&mut t, QUEUE_NOTIFY, 0);
        assert!(log.lock().unwrap().is_empty());
    }

    #[test]
    fn a_bad_queue_makes_the_device_need_a_reset() {
        let (mut t, log) = transport(false);
        bring_up(&mut t, 1);
        offer(&t.core.dma, 0, &[(0x0900_0000, 64, true)]);
        w(&mut t, QUEUE_NOTIFY, 0);
        assert!(log.lock().unwrap().is_empty());
        assert_ne!(r(&mut t, STATUS) & STATUS_NEEDS_RESET, 0);
        assert_eq!(r(&mut t, INTERRUPT_STATUS), INT_CONFIG_CHANGE);
        assert_eq!(t.core.incidents.len(), 1);
        assert!(
            t.core.incidents[0].contains("is not guest RAM"),
            "{:?}",
            t.core.incidents
        );
        // Notifies are ignored until the reset, and a reset clears everything.
        w(&mut t, QUEUE_NOTIFY, 0);
        assert_eq!(t.core.incidents.len(), 1);
        w(&mut t, QUEUE_NOTIFY, 7);
        w(&mut t, STATUS, 0);
        assert_eq!((r(&mut t, STATUS), r(&mut t, INTERRUPT_STATUS)), (0, 0));
        assert_eq!(r(&mut t, QUEUE_READY), 0);
        bring_up(&mut t, 1);
        w(&mut t, QUEUE_NOTIFY, 5);
        assert_eq!(t.core.incidents.len(), 2, "{:?}", t.core.incidents);
        assert!(t.core.incidents[1].contains("queue 5"));
    }
}
