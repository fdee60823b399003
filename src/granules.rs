//! The guard registry of the ioremap layer: which guard granules are registered with the
//! hypervisor, and by how many windows. Two windows in one granule cost one MAP; a granule
//! is UNMAPped only when its last window goes. Pure bookkeeping, host-tested; the kernel
//! makes the hypercalls it asks for.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

#[derive(Clone, Debug)]
pub struct Registry {
    granule: u64,
    users: BTreeMap<u64, u32>,
}

impl Registry {
    /// `granule` must be a power of two (checked by the caller against the ABI's
    /// 4 KiB..64 KiB; anything else is refused here too).
    pub fn new(granule: u64) -> Option<Self> {
        granule.is_power_of_two().then(|| Self {
            granule,
            users: BTreeMap::new(),
        })
    }

    pub fn granule(&self) -> u64 {
        self.granule
    }

    /// The granules `[base, base + size)` touches.
    pub fn granules_of(&self, base: u64, size: u64) -> impl Iterator<Item = u64> {
        let g = self.granule;
        let start = base & !(g - 1);
        let last = base.saturating_add(size.saturating_sub(1)) & !(g - 1);
        let first = (size != 0).then_some(start);
        core::iter::successors(first, move |a| a.checked_add(g).filter(|n| *n <= last))
    }

    /// Adds one user to every granule of the window; returns those that had none, which
    /// must now be registered (MAP).
    pub fn acquire(&mut self, base: u64, size: u64) -> Vec<u64> {
        let mut fresh = Vec::new();
        for g in self.granules_of(base, size).collect::<Vec<_>>() {
            let n = self.users.entry(g).or_insert(0);
            if *n == 0 {
                fresh.push(g);
            }
            *n += 1;
        }
        fresh
    }

    /// Removes one user from every granule of the window; returns those left with none,
    /// which must now be unregistered (UNMAP). A granule with no user is left alone.
    pub fn release(&mut self, base: u64, size: u64) -> Vec<u64> {
        let mut gone = Vec::new();
        for g in self.granules_of(base, size).collect::<Vec<_>>() {
            if let Some(n) = self.users.get_mut(&g) {
                *n -= 1;
                if *n == 0 {
                    self.users.remove(&g);
                    gone.push(g);
                }
            }
        }
        gone
    }

    pub fn users(&self, granule: u64) -> u32 {
        self.users
            .get(&(granule & !(self.granule - 1)))
            .copied()
            .unwrap_or(0)
    }

    pub fn registered(&self) -> usize {
        self.users.len()
    }
}

/// Groups sorted granule addresses into runs of consecutive granules, for the range calls
/// (MMIO_RGUARD_MAP takes a base and a page count).
pub fn runs(granules: &[u64], granule: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &g in granules {
        match out.last_mut() {
            Some((base, n)) if *base + *n * granule == g => *n += 1,
            _ => out.push((g, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_windows_in_one_granule_cost_one_map_and_one_unmap() {
        let mut r = Registry::new(0x1000).unwrap();
        assert_eq!(r.acquire(0x0a00_0000, 0x200), [0x0a00_0000]);
        assert_eq!(r.acquire(0x0a00_0200, 0x200), []);
        assert_eq!(r.users(0x0a00_0000), 2);
        assert_eq!(r.release(0x0a00_0000, 0x200), []);
        assert_eq!(r.users(0x0a00_0123), 1);
        assert_eq!(r.release(0x0a00_0200, 0x200), [0x0a00_0000]);
        assert_eq!(r.registered(), 0);
        // Releasing again does nothing (no underflow, no second UNMAP).
        assert_eq!(r.release(0x0a00_0200, 0x200), []);
    }

    #[test]
    fn windows_spanning_granules() {
        let mut r = Registry::new(0x1000).unwrap();
        assert_eq!(r.acquire(0x0900_0ff8, 0x10), [0x0900_0000, 0x0900_1000]);
        assert_eq!(r.acquire(0x0900_1000, 0x2000), [0x0900_2000]);
        assert_eq!(r.release(0x0900_0ff8, 0x10), [0x0900_0000]);
        assert_eq!(r.registered(), 2);
    }

    #[test]
    fn larger_granules_cover_more() {
        let mut r = Registry::new(0x4000).unwrap();
        // A 16 KiB granule: the PL011 and the PL031 4 KiB apart share nothing, but two
        // pages of one 16 KiB granule share it.
        assert_eq!(r.acquire(0x0900_0000, 0x1000), [0x0900_0000]);
        assert_eq!(r.acquire(0x0900_3000, 0x1000), []);
        assert_eq!(r.acquire(0x0901_0000, 0x1000), [0x0901_0000]);
        assert_eq!(r.granule(), 0x4000);
        let mut r = Registry::new(0x10000).unwrap();
        assert_eq!(r.granule(), 0x10000);
        assert_eq!(r.acquire(0x0a00_0000, 0x4000), [0x0a00_0000]);
        assert_eq!(
            r.granules_of(0x0a00_fff0, 0x20).collect::<Vec<_>>(),
            [0x0a00_0000, 0x0a01_0000]
        );
    }

    #[test]
    fn empty_and_bad() {
        let mut r = Registry::new(0x1000).unwrap();
        assert_eq!(r.acquire(0x1000, 0), []);
        assert!(Registry::new(0x3000).is_none());
        assert!(Registry::new(0).is_none());
        // A window at the very top of the address space does not wrap.
        assert_eq!(r.acquire(u64::MAX - 0xfff, 0x1000), [u64::MAX - 0xfff]);
    }

    #[test]
    fn runs_of_consecutive_granules() {
        assert_eq!(
            runs(&[0x1000, 0x2000, 0x3000, 0x5000, 0x6000, 0x9000], 0x1000),
            [(0x1000, 3), (0x5000, 2), (0x9000, 1)]
        );
        assert_eq!(runs(&[], 0x1000), []);
    }
}
