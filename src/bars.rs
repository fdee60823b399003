//! Placing PCI BARs in a bridge's memory window, for a bridge whose BARs ioguard assigns
//! (QEMU's ECAM bridge; crosvm's are pre-assigned, `linux,pci-probe-only`). Pure.

use crate::platform::PciWindow;

/// Hands out naturally aligned ranges of one window, lowest first.
#[derive(Clone, Copy, Debug)]
pub struct BarAllocator {
    window: PciWindow,
    /// The next free PCI address.
    next: u64,
}

/// A placed BAR: the PCI address (written to the BAR) and the CPU address it appears at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub pci: u64,
    pub cpu: u64,
}

impl BarAllocator {
    pub fn new(window: PciWindow) -> Self {
        Self {
            window,
            next: window.pci,
        }
    }

    /// Whether the window is 64-bit memory.
    pub fn is_64(&self) -> bool {
        self.window.space == crate::platform::PciSpace::Mem64
    }

    /// Room for a BAR of `size` bytes (a power of two), aligned to its size, or None when
    /// the window is full, or `size` is not a BAR size, or `below_4g` and the range would
    /// not fit a 32-bit BAR.
    pub fn place(&mut self, size: u64, below_4g: bool) -> Option<Placed> {
        if !size.is_power_of_two() {
            return None;
        }
        let start = self.next.checked_add(size - 1)? & !(size - 1);
        let end = start.checked_add(size)?;
        let window_end = self.window.pci.checked_add(self.window.size)?;
        if end > window_end || (below_4g && end > 1 << 32) {
            return None;
        }
        self.next = end;
        Some(Placed {
            pci: start,
            cpu: self.window.cpu + (start - self.window.pci),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::PciSpace;

    fn window(pci: u64, cpu: u64, size: u64) -> PciWindow {
        PciWindow {
            space: PciSpace::Mem32,
            prefetchable: false,
            pci,
            cpu,
            size,
        }
    }

    #[test]
    fn bars_are_naturally_aligned_and_do_not_overlap() {
        let mut a = BarAllocator::new(window(0x1000_0000, 0x1000_0000, 0x10_0000));
        assert_eq!(a.place(0x1000, true).unwrap().pci, 0x1000_0000);
        assert_eq!(a.place(0x4000, true).unwrap().pci, 0x1000_4000);
        assert_eq!(a.place(0x1000, true).unwrap().pci, 0x1000_8000);
        assert_eq!(a.place(0x8_0000, true).unwrap().pci, 0x1008_0000);
        assert_eq!(a.place(0x8_0000, true), None, "the window is full");
        assert_eq!(a.place(0x3000, true), None, "not a power of two");
    }

    #[test]
    fn cpu_addresses_follow_the_window_translation() {
        let mut a = BarAllocator::new(window(0x0, 0x4000_0000, 0x1_0000));
        assert_eq!(
            a.place(0x100, true),
            Some(Placed {
                pci: 0,
                cpu: 0x4000_0000
            })
        );
        assert_eq!(a.place(0x100, true).unwrap().cpu, 0x4000_0100);
    }

    #[test]
    fn a_32_bit_bar_is_not_placed_above_4_gib() {
        let mut a = BarAllocator::new(window(0x0008_0000_0000, 0x0008_0000_0000, 0x1_0000_0000));
        assert_eq!(a.place(0x1000, true), None);
        assert_eq!(a.place(0x1000, false).unwrap().pci, 0x0008_0000_0000);
        let mut edge = BarAllocator::new(window(0xffff_f000, 0xffff_f000, 0x2000));
        assert!(edge.place(0x1000, true).is_some());
        assert_eq!(edge.place(0x1000, true), None, "would end above 4 GiB");
    }

    #[test]
    fn huge_sizes_do_not_wrap() {
        let mut a = BarAllocator::new(window(u64::MAX - 0xfff, u64::MAX - 0xfff, 0x1000));
        assert_eq!(a.place(1 << 63, false), None);
        assert_eq!(a.place(0x1000, false), None, "end would wrap past 2^64");
    }
}
