//! Dispatch of MMIO exits to the device whose window holds the whole access.

use super::MmioDevice;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Uart,
    Rtc,
    Virtio,
    /// PCI configuration space (the CAM window).
    PciConfig,
}

struct Entry {
    base: u64,
    size: u64,
    kind: DeviceKind,
    dev: Box<dyn MmioDevice>,
}

#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Overlap {
    pub base: u64,
}

impl Bus {
    pub fn add(
        &mut self,
        base: u64,
        size: u64,
        kind: DeviceKind,
        dev: Box<dyn MmioDevice>,
    ) -> Result<(), Overlap> {
        let end = base.saturating_add(size);
        if self
            .entries
            .iter()
            .any(|e| base < e.base.saturating_add(e.size) && e.base < end)
        {
            return Err(Overlap { base });
        }
        self.entries.push(Entry {
            base,
            size,
            kind,
            dev,
        });
        Ok(())
    }

    fn find(&mut self, addr: u64, len: usize) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| {
            addr >= e.base
                && (addr - e.base)
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= e.size)
        })
    }

    /// Reads into `data`; no device there (or an access straddling a window's end) reads
    /// as zeros and returns None.
    pub fn read(&mut self, addr: u64, data: &mut [u8]) -> Option<DeviceKind> {
        match self.find(addr, data.len()) {
            Some(e) => {
                e.dev.read(addr - e.base, data);
                Some(e.kind)
            }
            None => {
                data.fill(0);
                None
            }
        }
    }

    /// Writes `data`; no device there: ignored, None.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Option<DeviceKind> {
        let e = self.find(addr, data.len())?;
        e.dev.write(addr - e.base, data);
        Some(e.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Log = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;
    struct Echo(Log);
    impl MmioDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8 + 1);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_address_and_refuses_the_rest() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut bus = Bus::default();
        bus.add(0x1000, 0x100, DeviceKind::Uart, Box::new(Echo(log.clone())))
            .unwrap();
        bus.add(0x2000, 0x10, DeviceKind::Rtc, Box::new(Echo(log.clone())))
            .unwrap();
        assert_eq!(
            bus.add(0x10ff, 1, DeviceKind::Virtio, Box::new(Echo(log.clone()))),
            Err(Overlap { base: 0x10ff })
        );
        let mut d = [9u8; 4];
        assert_eq!(bus.read(0x1004, &mut d), Some(DeviceKind::Uart));
        assert_eq!(d, [5; 4]);
        assert_eq!(bus.read(0x200c, &mut d), Some(DeviceKind::Rtc));
        // Straddling the end of the window, or in no window: zeros, unclaimed.
        assert_eq!(bus.read(0x200e, &mut d), None);
        assert_eq!(d, [0; 4]);
        assert_eq!(bus.read(0x3000, &mut d), None);
        assert_eq!(bus.write(0x3000, &[1]), None);
        assert_eq!(bus.write(0x10fc, &[1, 2, 3, 4]), Some(DeviceKind::Uart));
        assert_eq!(*log.lock().unwrap(), vec![(0xfc, vec![1, 2, 3, 4])]);
    }
}
