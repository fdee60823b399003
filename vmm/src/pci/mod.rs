//! A PCI bus 0 behind a CAM host bridge (`pci-host-cam-generic`), as crosvm's aarch64
//! machine has it: the configuration space of every function through one 16 MiB window,
//! and each function's BAR0, which the VMM places and the guest reads in place
//! (`linux,pci-probe-only`).

pub mod config;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::devices::MmioDevice;
use config::{ConfigSpace, Header};

/// Devices on bus 0 (5 bits of device number).
pub const DEVICES: usize = 32;

/// The parts of a CAM offset (bus << 16 | device << 11 | function << 8 | register):
/// 256 bytes of configuration space per function, 8-bit register offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CamAddress {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
    pub register: u8,
}

impl CamAddress {
    pub fn decode(offset: u64) -> Self {
        Self {
            bus: (offset >> 16) as u8,
            device: ((offset >> 11) & 0x1f) as u8,
            function: ((offset >> 8) & 7) as u8,
            register: offset as u8,
        }
    }
}

/// One function on the bus: its configuration space and, if it has one, its BAR0.
pub trait PciFunction: Send {
    fn config_read(&mut self, register: usize, data: &mut [u8]);
    fn config_write(&mut self, register: usize, data: &[u8]);
    /// BAR0 (base, size), which never moves.
    fn bar0(&self) -> Option<(u64, u64)> {
        None
    }
    /// Whether the command register lets the BARs decode.
    fn memory_enabled(&self) -> bool {
        false
    }
    fn bar_read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _offset: u64, _data: &[u8]) {}
}

/// 00:00.0, the host bridge crosvm puts there (devices/src/pci/pci_root.rs:
/// `PciRootConfiguration`, Intel 0x8086:0x1237, class bridge / host bridge), so the
/// devices start at 00:01.0 as on crosvm.
pub struct HostBridge(ConfigSpace);

impl HostBridge {
    pub fn new() -> Self {
        Self(ConfigSpace::new(&Header {
            vendor: 0x8086,
            device: 0x1237,
            revision: 0,
            class: (0x06, 0x00, 0x00),
            subsystem_vendor: 0,
            subsystem: 0,
            interrupt_pin: 0,
        }))
    }
}

impl PciFunction for HostBridge {
    fn config_read(&mut self, register: usize, data: &mut [u8]) {
        self.0.read(register, data);
    }
    fn config_write(&mut self, register: usize, data: &[u8]) {
        self.0.write(register, data);
    }
}

/// Bus 0: function 0 of each device slot (no multi-function devices).
pub struct PciBus {
    slots: Vec<Option<Box<dyn PciFunction>>>,
}

impl Default for PciBus {
    fn default() -> Self {
        Self {
            slots: (0..DEVICES).map(|_| None).collect(),
        }
    }
}

impl PciBus {
    /// Puts `f` at 00:`device`.0; false if the slot is taken or does not exist.
    pub fn add(&mut self, device: u8, f: Box<dyn PciFunction>) -> bool {
        match self.slots.get_mut(usize::from(device)) {
            Some(s @ None) => {
                *s = Some(f);
                true
            }
            _ => false,
        }
    }

    fn function(&mut self, a: CamAddress) -> Option<&mut Box<dyn PciFunction>> {
        if a.bus != 0 || a.function != 0 {
            return None;
        }
        self.slots.get_mut(usize::from(a.device))?.as_mut()
    }

    /// A CAM read; no function there reads as all ones, which is how PCI says "absent".
    /// As crosvm's CAM (devices/src/pci/pci_root.rs `PciConfigMmio`), an access must
    /// stay within one dword: a wider one (a 64-bit load) reads as all ones and a wider
    /// write is dropped, so that a 64-bit store of an ID register cannot reach the
    /// command register next to it.
    pub fn config_read(&mut self, offset: u64, data: &mut [u8]) {
        let a = CamAddress::decode(offset);
        match self.function(a) {
            Some(f) if within_dword(a.register, data.len()) => {
                f.config_read(usize::from(a.register), data)
            }
            _ => data.fill(0xff),
        }
    }

    pub fn config_write(&mut self, offset: u64, data: &[u8]) {
        let a = CamAddress::decode(offset);
        if !within_dword(a.register, data.len()) {
            return;
        }
        if let Some(f) = self.function(a) {
            f.config_write(usize::from(a.register), data);
        }
    }

    /// The BAR0 of device `device`, for the memory bus.
    pub fn bar0(&self, device: u8) -> Option<(u64, u64)> {
        self.slots.get(usize::from(device))?.as_ref()?.bar0()
    }

    /// An access to device `device`'s BAR0 at `offset`; with memory decoding off the BAR
    /// does not answer (reads as ones, writes dropped), as on a real bus.
    pub fn bar_read(&mut self, device: u8, offset: u64, data: &mut [u8]) {
        match self
            .slots
            .get_mut(usize::from(device))
            .and_then(|s| s.as_mut())
        {
            Some(f) if f.memory_enabled() => f.bar_read(offset, data),
            _ => data.fill(0xff),
        }
    }

    pub fn bar_write(&mut self, device: u8, offset: u64, data: &[u8]) {
        if let Some(f) = self
            .slots
            .get_mut(usize::from(device))
            .and_then(|s| s.as_mut())
        {
            if f.memory_enabled() {
                f.bar_write(offset, data);
            }
        }
    }
}

fn within_dword(register: u8, len: usize) -> bool {
    usize::from(register % 4) + len <= 4
}

/// The bus as the MMIO bus's devices share it: the CAM window and each BAR are separate
/// windows of the same functions.
pub type SharedBus = Arc<Mutex<PciBus>>;

fn lock(b: &SharedBus) -> MutexGuard<'_, PciBus> {
    // Only a panicking vCPU thread poisons it; the state stays usable.
    b.lock().unwrap_or_else(|e| e.into_inner())
}

/// The CAM window (offsets relative to its base).
pub struct CamWindow(pub SharedBus);

impl MmioDevice for CamWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.0).config_read(offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        lock(&self.0).config_write(offset, data);
    }
}

/// Device `device`'s BAR0 window (offsets relative to the BAR).
pub struct BarWindow {
    pub bus: SharedBus,
    pub device: u8,
}

impl MmioDevice for BarWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.bus).bar_read(self.device, offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        lock(&self.bus).bar_write(self.device, offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(device: u64, function: u64, register: u64) -> u64 {
        device << 11 | function << 8 | register
    }

    #[test]
    fn cam_offsets_decode() {
        assert_eq!(
            CamAddress::decode(0x01_0a_fc),
            CamAddress {
                bus: 1,
                device: 1,
                function: 2,
                register: 0xfc
            }
        );
    }

    #[test]
    fn absent_functions_read_all_ones() {
        let mut bus = PciBus::default();
        assert!(bus.add(0, Box::new(HostBridge::new())));
        assert!(!bus.add(0, Box::new(HostBridge::new())), "taken");
        assert!(!bus.add(32, Box::new(HostBridge::new())), "no such slot");
        let mut d = [0u8; 4];
        bus.config_read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1237_8086);
        bus.config_read(cam(0, 0, 8), &mut d);
        assert_eq!(u32::from_le_bytes(d) >> 16, 0x0600, "host bridge class");
        for absent in [cam(1, 0, 0), cam(0, 1, 0), 1 << 16] {
            bus.config_read(absent, &mut d);
            assert_eq!(d, [0xff; 4], "{absent:#x}");
        }
        // Nothing wider than a dword, nor across one.
        let mut wide = [0u8; 8];
        bus.config_read(0, &mut wide);
        assert_eq!(wide, [0xff; 8]);
        bus.config_read(2, &mut d);
        assert_eq!(d, [0xff; 4]);
        bus.config_read(2, &mut d[..2]);
        assert_eq!(d[..2], [0x37, 0x12]);
        // Writes to nothing go nowhere; no BAR, no decode.
        bus.config_write(cam(5, 0, 4), &[2]);
        assert_eq!(bus.bar0(0), None);
        bus.bar_read(0, 0, &mut d);
        assert_eq!(d, [0xff; 4]);
    }
}
