//! The devices ioguard drives for the whole run, each with the window it holds through
//! ioremap (the console, and the virtio devices when they are set up at boot). Checks that reason about every
//! window of the machine (`boot: mmu`, `ioremap: windows`, the choice of probe targets)
//! ask this registry which windows are not theirs to touch or count.

use crate::platform::Region;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;

/// What a device is, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Console,
    /// A virtio transport's window (virtio-mmio window, PCI BAR).
    Virtio,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Console => "console",
            Self::Virtio => "virtio",
        }
    }
}

/// A device and the window it holds (registered, mapped at `addr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub kind: DeviceKind,
    pub window: Region,
    pub addr: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    held: Vec<Held>,
}

const PAGE: u64 = 0x1000;

impl Devices {
    pub fn hold(&mut self, kind: DeviceKind, window: Region, addr: u64) {
        self.held.push(Held { kind, window, addr });
    }

    pub fn iter(&self) -> impl Iterator<Item = &Held> {
        self.held.iter()
    }

    /// The window `kind` holds, if it holds one.
    pub fn get(&self, kind: DeviceKind) -> Option<&Held> {
        self.held.iter().find(|h| h.kind == kind)
    }

    /// Every 4 KiB page the devices' windows cover.
    pub fn pages(&self) -> BTreeSet<u64> {
        self.units(PAGE)
    }

    /// Every granule of `size` (a power of two) the devices' windows touch.
    pub fn units(&self, size: u64) -> BTreeSet<u64> {
        let mask = !(size - 1);
        let mut out = BTreeSet::new();
        for h in &self.held {
            let mut u = h.window.base & mask;
            while u < h.window.end() {
                out.insert(u);
                match u.checked_add(size) {
                    Some(next) => u = next,
                    None => break,
                }
            }
        }
        out
    }

    /// Whether any device's window touches the granule of `size` that holds `addr`.
    pub fn holds(&self, addr: u64, size: u64) -> bool {
        self.units(size).contains(&(addr & !(size - 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_granules_of_held_windows() {
        let mut d = Devices::default();
        assert!(d.pages().is_empty());
        d.hold(
            DeviceKind::Console,
            Region::new(0x900_0000, 0x1000),
            0x900_0000,
        );
        assert_eq!(d.pages().into_iter().collect::<Vec<_>>(), [0x900_0000]);
        assert!(d.holds(0x900_0ffc, PAGE));
        assert!(!d.holds(0x901_0000, PAGE));
        // At 64 KiB the console's granule covers its neighbours' pages too.
        assert!(d.holds(0x900_f000, 0x10000));
        assert_eq!(d.get(DeviceKind::Console).map(|h| h.addr), Some(0x900_0000));
        // A window that straddles pages holds both.
        d.hold(
            DeviceKind::Console,
            Region::new(0xa00_0f00, 0x200),
            0xa00_0f00,
        );
        assert_eq!(d.pages().len(), 3);
    }

    #[test]
    fn held_windows_are_listed_with_their_kind() {
        let mut d = Devices::default();
        d.hold(DeviceKind::Console, Region::new(0x1000, 0x100), 0x1000);
        assert_eq!(d.iter().count(), 1);
        assert_eq!(d.iter().next().map(|h| h.kind.name()), Some("console"));
    }
}
