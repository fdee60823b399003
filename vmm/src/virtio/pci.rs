//! The virtio-pci transport, modern only (virtio 1.x §4.1), laid out as crosvm lays it
//! out (google/crosvm devices/src/virtio/virtio_pci_device.rs: one 32 KiB, 32-bit,
//! non-prefetchable memory BAR0 holding every structure; vendor 0x1af4, device 0x1040 +
//! the virtio device ID, revision 1, class 0x00 / subclass 0xff; a common, ISR, device,
//! notify (multiplier 4), PCI-configuration-access and MSI-X capability).
//!
//! MSI-X is there as memory that reads back: ioguard polls, so no interrupt is delivered.

use virtio_queue::{Queue, QueueT};

use super::core::Core;
use super::queue::Dma;
use super::VirtioDevice;
use crate::pci::config::{self, ConfigSpace, FixedBar, Header};
use crate::pci::PciFunction;

pub const VENDOR: u16 = 0x1af4;
/// Modern devices are 0x1040 + the virtio device ID (virtio 1.x §4.1.2.1).
pub const DEVICE_BASE: u16 = 0x1040;
pub const BAR_SIZE: u64 = 0x8000;

pub const COMMON: u64 = 0x0000;
/// `virtio_pci_common_cfg` up to queue_device (virtio 1.x §4.1.4.3; no queue_notify_data
/// or queue_reset, whose features are not offered), as crosvm's 56 bytes.
pub const COMMON_LEN: u64 = 56;
pub const ISR: u64 = 0x1000;
pub const DEVICE_CFG: u64 = 0x2000;
pub const DEVICE_CFG_LEN: u64 = 0x1000;
pub const NOTIFY: u64 = 0x3000;
pub const NOTIFY_LEN: u64 = 0x1000;
/// A dword per queue: queue i is notified at NOTIFY + 4 * i.
pub const NOTIFY_MULTIPLIER: u32 = 4;
pub const MSIX_TABLE: u64 = 0x6000;
pub const MSIX_PBA: u64 = 0x7000;

const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;
pub const CFG_COMMON: u8 = 1;
pub const CFG_NOTIFY: u8 = 2;
pub const CFG_ISR: u8 = 3;
pub const CFG_DEVICE: u8 = 4;
pub const CFG_PCI: u8 = 5;
const NO_VECTOR: u16 = 0xffff;
const MSIX_ENTRY: usize = 16;

/// Common configuration fields: (offset, width).
const FIELDS: [(u64, usize); 16] = [
    (0x00, 4), // device_feature_select
    (0x04, 4), // device_feature
    (0x08, 4), // driver_feature_select
    (0x0c, 4), // driver_feature
    (0x10, 2), // config_msix_vector
    (0x12, 2), // num_queues
    (0x14, 1), // device_status
    (0x15, 1), // config_generation
    (0x16, 2), // queue_select
    (0x18, 2), // queue_size
    (0x1a, 2), // queue_msix_vector
    (0x1c, 2), // queue_enable
    (0x1e, 2), // queue_notify_off
    (0x20, 8), // queue_desc
    (0x28, 8), // queue_driver
    (0x30, 8), // queue_device
];

fn field_of(offset: u64) -> Option<(u64, usize)> {
    FIELDS
        .iter()
        .copied()
        .find(|&(at, w)| offset >= at && offset < at + w as u64)
}

/// The body of a virtio capability after its ID and next bytes (virtio 1.x §4.1.4):
/// cap_len, cfg_type, bar, id, padding, offset, length, then `extra`.
fn virtio_cap(cfg_type: u8, offset: u32, length: u32, extra: &[u8]) -> Vec<u8> {
    let mut b = vec![(16 + extra.len()) as u8, cfg_type, 0, 0, 0, 0];
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&length.to_le_bytes());
    b.extend_from_slice(extra);
    b
}

pub struct VirtioPci {
    pub core: Core,
    config: ConfigSpace,
    device_features_sel: u32,
    driver_features_sel: u32,
    queue_sel: u16,
    config_vector: u16,
    queue_vectors: Vec<u16>,
    msix_table: Vec<u8>,
    /// Offset of the PCI-configuration-access capability.
    pci_cfg_cap: usize,
}

impl VirtioPci {
    /// Device `device` on bus 0 with its BAR0 at `bar0` (32 KiB aligned, below 4 GiB).
    pub fn new(
        dev: Box<dyn VirtioDevice>,
        dma: Dma,
        device: u8,
        bar0: u32,
        access_platform: bool,
    ) -> Result<Self, config::CapError> {
        let id = DEVICE_BASE + dev.device_id() as u16;
        let core = Core::new(dev, dma, &format!("00:{device:02x}.0"), access_platform);
        let mut config = ConfigSpace::new(&Header {
            vendor: VENDOR,
            device: id,
            revision: 1,
            class: (0x00, 0xff, 0x00),
            subsystem_vendor: VENDOR,
            subsystem: id,
            interrupt_pin: 1,
        });
        config.set_bar0(FixedBar {
            base: bar0,
            size: BAR_SIZE as u32,
        });
        let cap = |t, o: u64, l: u64, extra: &[u8]| virtio_cap(t, o as u32, l as u32, extra);
        config.add_capability(CAP_VENDOR, &cap(CFG_COMMON, COMMON, COMMON_LEN, &[]), &[])?;
        config.add_capability(CAP_VENDOR, &cap(CFG_ISR, ISR, 1, &[]), &[])?;
        config.add_capability(
            CAP_VENDOR,
            &cap(CFG_DEVICE, DEVICE_CFG, DEVICE_CFG_LEN, &[]),
            &[],
        )?;
        config.add_capability(
            CAP_VENDOR,
            &cap(
                CFG_NOTIFY,
                NOTIFY,
                NOTIFY_LEN,
                &NOTIFY_MULTIPLIER.to_le_bytes(),
            ),
            &[],
        )?;
        // The driver's window into the BARs through configuration space (§4.1.4.9): bar,
        // offset and length are its to write, pci_cfg_data is the access.
        let mut w = [0u8; 18];
        w[2] = 0xff;
        w[6..14].fill(0xff);
        let pci_cfg_cap = config.add_capability(CAP_VENDOR, &cap(CFG_PCI, 0, 0, &[0; 4]), &w)?;
        // MSI-X (PCI 3.0 §6.8.2): one vector per queue and one for configuration
        // changes, as crosvm; enable and function mask writable, table and PBA in BAR0.
        let vectors = core.queue_count() + 1;
        let mut msix = ((vectors - 1) as u16).to_le_bytes().to_vec();
        msix.extend_from_slice(&(MSIX_TABLE as u32).to_le_bytes());
        msix.extend_from_slice(&(MSIX_PBA as u32).to_le_bytes());
        config.add_capability(CAP_MSIX, &msix, &[0, 0xc0])?;
        let queues = core.queue_count();
        Ok(Self {
            core,
            config,
            device_features_sel: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            config_vector: NO_VECTOR,
            queue_vectors: vec![NO_VECTOR; queues],
            msix_table: Self::msix_reset(vectors),
            pci_cfg_cap,
        })
    }

    /// Every entry masked (vector control bit 0), as after a reset (PCI 3.0 §6.8.2.9).
    fn msix_reset(vectors: usize) -> Vec<u8> {
        let mut t = vec![0u8; vectors * MSIX_ENTRY];
        for e in t.chunks_mut(MSIX_ENTRY) {
            e[12] = 1;
        }
        t
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.core.queue(usize::from(self.queue_sel))
    }

    fn common_value(&mut self, at: u64) -> u64 {
        let sel = usize::from(self.queue_sel);
        match at {
            0x00 => self.device_features_sel.into(),
            0x04 => self.core.offered_half(self.device_features_sel).into(),
            0x08 => self.driver_features_sel.into(),
            0x0c => match self.driver_features_sel {
                0 => self.core.driver_features & 0xffff_ffff,
                1 => self.core.driver_features >> 32,
                _ => 0,
            },
            0x10 => self.config_vector.into(),
            0x12 => self.core.queue_count() as u64,
            0x14 => self.core.status().into(),
            0x16 => self.queue_sel.into(),
            0x18 => self.queue().map_or(0, |q| q.size().into()),
            0x1a => self
                .queue_vectors
                .get(sel)
                .copied()
                .unwrap_or(NO_VECTOR)
                .into(),
            0x1c => self.queue().map_or(0, |q| q.ready().into()),
            // Queue i's notify_off is i: with the multiplier, its own dword.
            0x1e => self.queue().map_or(0, |_| sel as u64),
            0x20 => self.queue().map_or(0, |q| q.desc_table()),
            0x28 => self.queue().map_or(0, |q| q.avail_ring()),
            0x30 => self.queue().map_or(0, |q| q.used_ring()),
            _ => 0,
        }
    }

    fn common_read(&mut self, offset: u64, data: &mut [u8]) {
        let mut cached: Option<(u64, [u8; 8])> = None;
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            let Some((start, _)) = field_of(at) else {
                *b = 0;
                continue;
            };
            let bytes = match cached {
                Some((s, v)) if s == start => v,
                _ => {
                    let v = self.common_value(start).to_le_bytes();
                    cached = Some((start, v));
                    v
                }
            };
            *b = bytes[(at - start) as usize];
        }
    }

    /// A write of a whole field, or of either 32-bit half of a 64-bit one (§4.1.3.1);
    /// anything else is no register and is dropped.
    fn common_write(&mut self, offset: u64, data: &[u8]) {
        let Some((start, width)) = field_of(offset) else {
            return;
        };
        let whole = offset == start && data.len() == width;
        let half = width == 8 && data.len() == 4;
        if !whole && !half {
            return;
        }
        let mut b = [0u8; 8];
        b[..data.len()].copy_from_slice(data);
        let v = u64::from_le_bytes(b);
        let (lo, hi) = match (whole, offset == start) {
            (true, _) => (Some(v as u32), Some((v >> 32) as u32)),
            (false, true) => (Some(v as u32), None),
            (false, false) => (None, Some(v as u32)),
        };
        let vectors = self.msix_table.len() / MSIX_ENTRY;
        // A vector the table lacks cannot be mapped: the device answers NO_VECTOR.
        let vector = |v: u64| {
            if (v as usize) < vectors {
                v as u16
            } else {
                NO_VECTOR
            }
        };
        match start {
            0x00 => self.device_features_sel = v as u32,
            0x08 => self.driver_features_sel = v as u32,
            0x0c => self
                .core
                .set_driver_half(self.driver_features_sel, v as u32),
            0x10 => self.config_vector = vector(v),
            0x14 => self.set_status(v as u32),
            0x16 => self.queue_sel = v as u16,
            0x18 => {
                if let Some(q) = self.queue() {
                    // An invalid size leaves the queue unusable; the notify reports it.
                    let _ = q.try_set_size(v as u16);
                }
            }
            0x1a => {
                let sel = usize::from(self.queue_sel);
                if let Some(slot) = self.queue_vectors.get_mut(sel) {
                    *slot = vector(v);
                }
            }
            // Drivers only ever enable a queue (§4.1.4.3.2).
            0x1c if v == 1 => {
                if let Some(q) = self.queue() {
                    q.set_ready(true);
                }
            }
            0x20 => {
                if let Some(q) = self.queue() {
                    q.set_desc_table_address(lo, hi);
                }
            }
            0x28 => {
                if let Some(q) = self.queue() {
                    q.set_avail_ring_address(lo, hi);
                }
            }
            0x30 => {
                if let Some(q) = self.queue() {
                    q.set_used_ring_address(lo, hi);
                }
            }
            // Read-only fields.
            _ => {}
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.device_features_sel = 0;
            self.driver_features_sel = 0;
            self.queue_sel = 0;
            self.config_vector = NO_VECTOR;
            self.queue_vectors.fill(NO_VECTOR);
        }
        self.core.set_status(v);
    }

    /// BAR0 accesses, decoding or not (the PCI-configuration-access window uses it too).
    fn bar0_read(&mut self, offset: u64, data: &mut [u8]) {
        let len = data.len() as u64;
        match offset {
            o if o + len <= COMMON + COMMON_LEN => self.common_read(o - COMMON, data),
            // The ISR status clears when read (§4.1.4.5).
            ISR => {
                data.fill(0);
                data[0] = self.core.interrupt_status as u8;
                self.core.interrupt_status = 0;
            }
            o if (DEVICE_CFG..DEVICE_CFG + DEVICE_CFG_LEN).contains(&o) => {
                let config = self.core.config();
                let start = (o - DEVICE_CFG) as usize;
                for (i, b) in data.iter_mut().enumerate() {
                    *b = config.get(start + i).copied().unwrap_or(0);
                }
            }
            o if (MSIX_TABLE..MSIX_PBA).contains(&o) => {
                let start = (o - MSIX_TABLE) as usize;
                for (i, b) in data.iter_mut().enumerate() {
                    *b = self.msix_table.get(start + i).copied().unwrap_or(0);
                }
            }
            // The PBA: nothing is ever pending, as nothing is ever delivered.
            _ => data.fill(0),
        }
    }

    fn bar0_write(&mut self, offset: u64, data: &[u8]) {
        let len = data.len() as u64;
        match offset {
            o if o + len <= COMMON + COMMON_LEN => self.common_write(o - COMMON, data),
            // Any write to queue i's dword is its notify, whatever the value (crosvm
            // registers an ioevent per queue address with any length and data).
            o if (NOTIFY..NOTIFY + NOTIFY_LEN).contains(&o) && (o - NOTIFY).is_multiple_of(4) => {
                let q = (o - NOTIFY) / 4;
                if (q as usize) < self.core.queue_count() {
                    self.core.notify(q as u32);
                }
            }
            o if (MSIX_TABLE..MSIX_PBA).contains(&o) => {
                let start = (o - MSIX_TABLE) as usize;
                for (i, &v) in data.iter().enumerate() {
                    if let Some(b) = self.msix_table.get_mut(start + i) {
                        *b = v;
                    }
                }
            }
            // ISR, device configuration (read-only for these devices), PBA, holes.
            _ => {}
        }
    }

    /// The PCI-configuration-access window: (offset, length) in BAR0 if its fields
    /// name a valid access.
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let c = self.pci_cfg_cap;
        let word = |at: usize| {
            let mut d = [0u8; 4];
            self.config.read(at, &mut d);
            u32::from_le_bytes(d)
        };
        let (bar, offset, length) = (self.config.byte(c + 4), word(c + 8), word(c + 12));
        let ok = bar == 0
            && matches!(length, 1 | 2 | 4)
            && offset.is_multiple_of(length)
            && u64::from(offset) + u64::from(length) <= BAR_SIZE;
        ok.then_some((offset.into(), length as usize))
    }
}

impl PciFunction for VirtioPci {
    fn config_read(&mut self, register: usize, data: &mut [u8]) {
        self.config.read(register, data);
        if register == self.pci_cfg_cap + 16 {
            if let Some((offset, length)) = self.pci_cfg_window() {
                if data.len() >= length {
                    self.bar0_read(offset, &mut data[..length]);
                }
            }
        }
    }

    fn config_write(&mut self, register: usize, data: &[u8]) {
        if register == self.pci_cfg_cap + 16 {
            if let Some((offset, length)) = self.pci_cfg_window() {
                if data.len() >= length {
                    self.bar0_write(offset, &data[..length]);
                }
            }
            return;
        }
        self.config.write(register, data);
    }

    fn bar0(&self) -> Option<(u64, u64)> {
        self.config
            .bar0()
            .map(|b| (u64::from(b.base), u64::from(b.size)))
    }

    fn memory_enabled(&self) -> bool {
        self.config.memory_enabled()
    }

    fn bar_read(&mut self, offset: u64, data: &mut [u8]) {
        self.bar0_read(offset, data);
    }

    fn bar_write(&mut self, offset: u64, data: &[u8]) {
        self.bar0_write(offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::super::core::{INT_USED_BUFFER, STATUS_FEATURES_OK};
    use super::super::queue::driver::{self, *};
    use super::super::ID_RNG;
    use super::*;
    use crate::devices::MmioDevice;
    use crate::pci::{BarWindow, CamWindow, PciBus};
    use std::sync::{Arc, Mutex};

    const BAR: u32 = 0x0200_8000;

    fn function(access_platform: bool) -> VirtioPci {
        VirtioPci::new(
            Box::new(Sink {
                id: ID_RNG,
                features: 0,
                heads: Default::default(),
            }),
            driver::dma(None),
            1,
            BAR,
            access_platform,
        )
        .unwrap()
    }

    fn cfg(f: &mut VirtioPci, at: usize, len: usize) -> u64 {
        let mut d = [0u8; 8];
        f.config_read(at, &mut d[..len]);
        u64::from_le_bytes(d)
    }

    fn rd(f: &mut VirtioPci, at: u64, len: usize) -> u64 {
        let mut d = [0u8; 8];
        f.bar_read(at, &mut d[..len]);
        u64::from_le_bytes(d)
    }

    fn wr(f: &mut VirtioPci, at: u64, len: usize, v: u64) {
        f.bar_write(at, &v.to_le_bytes()[..len]);
    }

    /// A vendor capability: (cfg_type, cap_len, bar, offset, length).
    type Cap = (u8, u8, u8, u32, u32);

    /// The vendor capabilities as a driver walks them, and every capability's ID.
    fn capabilities(f: &mut VirtioPci) -> (Vec<Cap>, Vec<u8>) {
        let mut out = Vec::new();
        let mut ids = Vec::new();
        assert_ne!(cfg(f, 6, 2) & 0x10, 0, "status: capability list");
        let mut at = cfg(f, 0x34, 1) as usize;
        while at != 0 {
            assert_eq!(at % 4, 0);
            let id = cfg(f, at, 1) as u8;
            ids.push(id);
            if id == 9 {
                out.push((
                    cfg(f, at + 3, 1) as u8,
                    cfg(f, at + 2, 1) as u8,
                    cfg(f, at + 4, 1) as u8,
                    cfg(f, at + 8, 4) as u32,
                    cfg(f, at + 12, 4) as u32,
                ));
                if cfg(f, at + 3, 1) == 2 {
                    assert_eq!(cfg(f, at + 16, 4), 4, "notify_off_multiplier");
                }
            }
            at = cfg(f, at + 1, 1) as usize;
        }
        (out, ids)
    }

    #[test]
    fn header_identifies_a_modern_virtio_device() {
        let mut f = function(false);
        assert_eq!(cfg(&mut f, 0, 4), 0x1044_1af4, "rng: 0x1040 + 4");
        assert_eq!(cfg(&mut f, 8, 4), 0x00ff_0001, "class 00/ff, revision 1");
        assert_eq!(cfg(&mut f, 0x2c, 4), 0x1044_1af4, "subsystem");
        assert_eq!(cfg(&mut f, 0x3d, 1), 1, "INTA#");
        assert_eq!(cfg(&mut f, 0x0e, 1), 0, "type 0, single function");
        assert_eq!(f.bar0(), Some((u64::from(BAR), 0x8000)));
    }

    #[test]
    fn capabilities_point_into_bar0_as_crosvm_lays_it_out() {
        let mut f = function(false);
        let (caps, ids) = capabilities(&mut f);
        assert_eq!(ids, [9, 9, 9, 9, 9, 0x11]);
        assert_eq!(
            caps,
            [
                (CFG_COMMON, 16, 0, 0, 56),
                (CFG_ISR, 16, 0, 0x1000, 1),
                (CFG_DEVICE, 16, 0, 0x2000, 0x1000),
                (CFG_NOTIFY, 20, 0, 0x3000, 0x1000),
                (CFG_PCI, 20, 0, 0, 0),
            ]
        );
        for (_, _, _, offset, length) in caps {
            assert!(u64::from(offset) + u64::from(length) <= BAR_SIZE);
        }
        // MSI-X: 3 vectors (2 queues + configuration), table at 0x6000, PBA at 0x7000.
        let msix = 0x98;
        assert_eq!(cfg(&mut f, msix, 1), 0x11);
        assert_eq!(cfg(&mut f, msix + 2, 2), 2);
        assert_eq!(cfg(&mut f, msix + 4, 4), 0x6000);
        assert_eq!(cfg(&mut f, msix + 8, 4), 0x7000);
        f.config_write(msix + 2, &[0xff, 0xff]);
        assert_eq!(cfg(&mut f, msix + 2, 2), 0xc002, "enable and mask only");
    }

    #[test]
    fn bar_sizing_through_the_cam_and_memory_decode() {
        let bus = Arc::new(Mutex::new(PciBus::default()));
        bus.lock().unwrap().add(1, Box::new(function(false)));
        let mut cam = CamWindow(bus.clone());
        let mut bar = BarWindow { bus, device: 1 };
        let at = 1 << 11 | 0x10;
        let mut d = [0u8; 4];
        cam.write(at, &u32::MAX.to_le_bytes());
        cam.read(at, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0xffff_8000, "32 KiB, 32-bit memory");
        cam.write(at, &BAR.to_le_bytes());
        cam.read(at, &mut d);
        assert_eq!(u32::from_le_bytes(d), BAR);
        // Decoding is on from the start, and follows the command register.
        bar.read(0x12, &mut d[..2]);
        assert_eq!(u16::from_le_bytes([d[0], d[1]]), 2, "num_queues");
        cam.write(1 << 11 | 4, &[0, 0]);
        bar.read(0x12, &mut d[..2]);
        assert_eq!(d[..2], [0xff, 0xff]);
        // A 64-bit store at the IDs does not reach the command register.
        cam.write(1 << 11 | 4, &[2, 0]);
        cam.write(1 << 11, &[0; 8]);
        bar.read(0x12, &mut d[..2]);
        assert_eq!(d[..2], [2, 0]);
    }

    #[test]
    fn features_and_queue_set_up_through_the_common_configuration() {
        let mut f = function(true);
        wr(&mut f, 0x00, 4, 1);
        assert_eq!(rd(&mut f, 0x04, 4), 3, "VERSION_1 and ACCESS_PLATFORM");
        wr(&mut f, 0x00, 4, 0);
        assert_eq!(rd(&mut f, 0x04, 4), 0);
        wr(&mut f, 0x14, 1, 3);
        wr(&mut f, 0x08, 4, 1);
        wr(&mut f, 0x0c, 4, 1);
        wr(&mut f, 0x14, 1, 0xb);
        assert_eq!(
            rd(&mut f, 0x14, 1) as u32 & STATUS_FEATURES_OK,
            STATUS_FEATURES_OK
        );
        assert_eq!(rd(&mut f, 0x12, 2), 2);
        wr(&mut f, 0x16, 2, 1);
        assert_eq!(rd(&mut f, 0x18, 2), 256, "queue_size starts at the maximum");
        assert_eq!(rd(&mut f, 0x1e, 2), 1, "queue 1's notify_off");
        wr(&mut f, 0x16, 2, 0);
        wr(&mut f, 0x18, 2, u64::from(SIZE));
        // One 64-bit store, or two 32-bit halves.
        wr(&mut f, 0x20, 8, DESC);
        wr(&mut f, 0x28, 4, AVAIL);
        wr(&mut f, 0x2c, 4, 0);
        wr(&mut f, 0x30, 8, USED);
        assert_eq!(rd(&mut f, 0x20, 8), DESC);
        assert_eq!(rd(&mut f, 0x28, 8), AVAIL);
        wr(&mut f, 0x1a, 2, 1);
        assert_eq!(rd(&mut f, 0x1a, 2), 1, "queue vector");
        wr(&mut f, 0x10, 2, 7);
        assert_eq!(rd(&mut f, 0x10, 2), 0xffff, "no such vector");
        wr(&mut f, 0x1c, 2, 1);
        assert_eq!(rd(&mut f, 0x1c, 2), 1);
        wr(&mut f, 0x14, 1, 0xf);
        offer(&f.core.dma, 0, &[(RAM + 0x8000, 64, true)]);
        wr(&mut f, NOTIFY, 2, 0);
        assert_eq!(used(&f.core.dma), (1, vec![(0, 64)]));
        assert_eq!(rd(&mut f, ISR, 1) as u32, INT_USED_BUFFER);
        assert_eq!(rd(&mut f, ISR, 1), 0, "the ISR clears when read");
        // A notify address of no queue, or inside a dword, is nothing.
        wr(&mut f, NOTIFY + 8, 2, 0);
        wr(&mut f, NOTIFY + 2, 2, 0);
        assert!(f.core.incidents.is_empty());
        // A reset clears the queues and selectors.
        wr(&mut f, 0x14, 1, 0);
        assert_eq!(rd(&mut f, 0x14, 1), 0);
        assert_eq!(rd(&mut f, 0x1c, 2), 0);
        assert_eq!(rd(&mut f, 0x20, 8), 0);
    }

    #[test]
    fn partial_field_writes_are_dropped_and_reads_compose() {
        let mut f = function(false);
        wr(&mut f, 0x16, 2, 1);
        wr(&mut f, 0x17, 1, 1);
        assert_eq!(rd(&mut f, 0x16, 2), 1);
        // A 32-bit read across num_queues and device_status.
        wr(&mut f, 0x14, 1, 1);
        assert_eq!(rd(&mut f, 0x12, 4), 0x0001_0002);
        assert_eq!(rd(&mut f, 55, 1), 0);
        assert_eq!(rd(&mut f, 56, 4), 0, "past the common configuration");
    }

    #[test]
    fn device_config_msix_table_and_pba() {
        let mut f = function(false);
        assert_eq!(rd(&mut f, DEVICE_CFG + 3, 4), 0x0504);
        wr(&mut f, DEVICE_CFG, 4, 0xdead);
        assert_eq!(rd(&mut f, DEVICE_CFG, 1), 1, "read-only");
        assert_eq!(rd(&mut f, MSIX_TABLE + 12, 4), 1, "entries start masked");
        wr(&mut f, MSIX_TABLE + 16, 8, 0x1234_5678_9abc_def0);
        wr(&mut f, MSIX_TABLE + 16 + 8, 4, 0x41);
        assert_eq!(rd(&mut f, MSIX_TABLE + 16, 8), 0x1234_5678_9abc_def0);
        assert_eq!(rd(&mut f, MSIX_TABLE + 24, 4), 0x41);
        wr(&mut f, MSIX_TABLE + 3 * 16, 4, 5);
        assert_eq!(rd(&mut f, MSIX_TABLE + 3 * 16, 4), 0, "past the last entry");
        wr(&mut f, MSIX_PBA, 8, u64::MAX);
        assert_eq!(rd(&mut f, MSIX_PBA, 8), 0, "nothing pending");
    }

    #[test]
    fn pci_cfg_capability_reaches_bar0() {
        let mut f = function(false);
        let c = f.pci_cfg_cap;
        f.config_write(c + 8, &0x12u32.to_le_bytes());
        f.config_write(c + 12, &2u32.to_le_bytes());
        assert_eq!(cfg(&mut f, c + 16, 4), 2, "num_queues through the window");
        f.config_write(c + 8, &0x16u32.to_le_bytes());
        f.config_write(c + 16, &1u16.to_le_bytes());
        assert_eq!(rd(&mut f, 0x16, 2), 1, "queue_select written through it");
        f.config_write(c + 12, &3u32.to_le_bytes());
        assert_eq!(cfg(&mut f, c + 16, 4), 0, "a length of 3 is no access");
    }
}
