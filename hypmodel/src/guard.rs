//! The MMIO guard registry: which device ranges the guest registered (MAP) and may reach.
//!
//! One entry per registered range (a protection granule, or 4 KiB under the
//! `granule-mismatch` mutant), with the set of vCPUs that see it. The correct model makes
//! every registration visible to every vCPU (the guard is per VM, as in pKVM where the
//! annotation lives in the VM's single stage-2 table); only the `per-cpu-guard` mutant
//! looks at the vCPU set. There is no refcount: one UNMAP removes a range whatever number
//! of MAPs came before (pkvm-abi.md section 3).

pub const CAPACITY: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    base: u64,
    size: u64,
    cpus: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardError {
    Full,
}

impl core::fmt::Display for GuardError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GuardError::Full => write!(f, "the registry's {CAPACITY} ranges are in use"),
        }
    }
}

pub struct Registry {
    entries: [Entry; CAPACITY],
    len: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub const fn new() -> Self {
        Registry {
            entries: [Entry {
                base: 0,
                size: 0,
                cpus: 0,
            }; CAPACITY],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn find(&self, base: u64) -> Option<usize> {
        self.entries[..self.len].iter().position(|e| e.base == base)
    }

    /// Registers `[base, base + size)` for `cpu`. Registering it again is not an error.
    pub fn map(&mut self, base: u64, size: u64, cpu: usize) -> Result<(), GuardError> {
        let bit = 1u64 << (cpu % 64);
        if let Some(i) = self.find(base) {
            self.entries[i].cpus |= bit;
            self.entries[i].size = self.entries[i].size.max(size);
            return Ok(());
        }
        if self.len == CAPACITY {
            return Err(GuardError::Full);
        }
        self.entries[self.len] = Entry {
            base,
            size,
            cpus: bit,
        };
        self.len += 1;
        Ok(())
    }

    /// Removes the range registered at `base`; false if there was none. With `per_cpu`
    /// only `cpu`'s view of it is removed.
    pub fn unmap(&mut self, base: u64, cpu: usize, per_cpu: bool) -> bool {
        let Some(i) = self.find(base) else {
            return false;
        };
        if per_cpu {
            let bit = 1u64 << (cpu % 64);
            if self.entries[i].cpus & bit == 0 {
                return false;
            }
            self.entries[i].cpus &= !bit;
            if self.entries[i].cpus != 0 {
                return true;
            }
        }
        self.len -= 1;
        self.entries[i] = self.entries[self.len];
        true
    }

    /// Is the byte at `addr` inside a registered range that `cpu` sees?
    pub fn covers(&self, addr: u64, cpu: usize, per_cpu: bool) -> bool {
        let bit = 1u64 << (cpu % 64);
        self.entries[..self.len]
            .iter()
            .any(|e| addr >= e.base && addr - e.base < e.size && (!per_cpu || e.cpus & bit != 0))
    }

    /// Does the registry allow an access of `size` bytes at `addr`? Both the first and the
    /// last byte must be covered, as pKVM checks the pages of both.
    pub fn allows(&self, addr: u64, size: u64, cpu: usize, per_cpu: bool) -> bool {
        self.covers(addr, cpu, per_cpu) && self.covers(addr + size.max(1) - 1, cpu, per_cpu)
    }

    pub fn is_registered(&self, base: u64) -> bool {
        self.find(base).is_some()
    }

    /// The base of the `i`-th registered range (in no particular order).
    pub fn base_at(&self, i: usize) -> Option<u64> {
        self.entries[..self.len].get(i).map(|e| e.base)
    }

    /// Forgets every registration.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_unmap_per_vm() {
        let mut r = Registry::new();
        r.map(0x0901_0000, 0x1000, 0).unwrap();
        assert!(r.allows(0x0901_0fe0, 4, 0, false));
        assert!(
            r.allows(0x0901_0fe0, 4, 3, false),
            "another vCPU sees the registration"
        );
        assert!(r.allows(0x0901_0ffc, 4, 0, false), "last word of the page");
        assert!(
            !r.allows(0x0901_0ffe, 4, 0, false),
            "crosses into the next page"
        );
        assert!(!r.allows(0x0901_1000, 4, 0, false));
        assert!(!r.allows(0x0900_fffc, 4, 0, false));
        r.map(0x0901_0000, 0x1000, 1).unwrap();
        assert_eq!(r.len(), 1, "no second entry for a second MAP");
        assert!(r.unmap(0x0901_0000, 0, false));
        assert!(
            !r.allows(0x0901_0fe0, 4, 0, false),
            "one UNMAP removes it (no refcount)"
        );
        assert!(!r.unmap(0x0901_0000, 0, false));
        assert!(r.is_empty());
    }

    #[test]
    fn per_cpu_view_only_with_flag() {
        let mut r = Registry::new();
        r.map(0x0a00_0000, 0x4000, 0).unwrap();
        assert!(r.allows(0x0a00_3e00, 4, 0, true));
        assert!(!r.allows(0x0a00_3e00, 4, 1, true));
        assert!(r.allows(0x0a00_3e00, 4, 1, false));
        assert!(!r.unmap(0x0a00_0000, 1, true));
        r.map(0x0a00_0000, 0x4000, 1).unwrap();
        assert!(r.unmap(0x0a00_0000, 0, true));
        assert!(r.allows(0x0a00_0000, 4, 1, true) && !r.allows(0x0a00_0000, 4, 0, true));
    }

    #[test]
    fn capacity_is_an_error_not_a_crash() {
        let mut r = Registry::new();
        for i in 0..CAPACITY as u64 {
            r.map(i << 12, 0x1000, 0).unwrap();
        }
        assert_eq!(r.map(1 << 40, 0x1000, 0), Err(GuardError::Full));
        assert!(r.is_registered(5 << 12));
        assert!(r.unmap(5 << 12, 0, false));
        assert!(!r.is_registered(5 << 12) && r.is_registered((CAPACITY as u64 - 1) << 12));
    }

    #[test]
    fn full_error_names_the_capacity() {
        let text = format!("{}", GuardError::Full);
        assert_eq!(text, "the registry's 512 ranges are in use");
    }

    #[test]
    fn len_is_empty_and_base_at_follow_the_entries() {
        let mut r = Registry::new();
        assert_eq!((r.len(), r.is_empty(), r.base_at(0)), (0, true, None));
        r.map(0x0901_0000, 0x1000, 0).unwrap();
        assert_eq!((r.len(), r.is_empty()), (1, false));
        r.map(0x0902_0000, 0x1000, 0).unwrap();
        r.map(0x0903_0000, 0x1000, 0).unwrap();
        assert_eq!((r.len(), r.is_empty()), (3, false));
        assert_eq!(r.base_at(0), Some(0x0901_0000));
        assert_eq!(r.base_at(1), Some(0x0902_0000));
        assert_eq!(r.base_at(2), Some(0x0903_0000));
        assert_eq!(r.base_at(3), None, "past the last entry");
        r.clear();
        assert_eq!((r.len(), r.is_empty(), r.base_at(0)), (0, true, None));
        assert!(
            !r.covers(0x0901_0000, 0, false),
            "clear forgets every range"
        );
        assert!(!r.is_registered(0x0901_0000));
        assert!(Registry::default().is_empty());
    }

    #[test]
    fn unmap_of_a_middle_entry_keeps_the_others() {
        let mut r = Registry::new();
        for base in [0x0901_0000, 0x0902_0000, 0x0903_0000] {
            r.map(base, 0x1000, 0).unwrap();
        }
        assert!(r.is_registered(0x0902_0000));
        assert!(!r.is_registered(0x0904_0000));
        assert!(!r.unmap(0x0904_0000, 0, false), "nothing registered there");
        assert_eq!(r.len(), 3);
        assert!(r.unmap(0x0902_0000, 0, false));
        assert_eq!(r.len(), 2);
        assert!(!r.is_registered(0x0902_0000));
        assert!(r.is_registered(0x0901_0000) && r.is_registered(0x0903_0000));
        assert!(!r.covers(0x0902_0000, 0, false));
        assert!(r.covers(0x0901_0000, 0, false) && r.covers(0x0903_0fff, 0, false));
        // The last entry moved into the hole.
        assert_eq!(r.base_at(0), Some(0x0901_0000));
        assert_eq!(r.base_at(1), Some(0x0903_0000));
        assert_eq!(r.base_at(2), None);
        assert!(r.unmap(0x0903_0000, 0, false));
        assert_eq!(
            (r.len(), r.base_at(0), r.base_at(1)),
            (1, Some(0x0901_0000), None)
        );
        assert!(!r.covers(0x0903_0000, 0, false));
    }

    #[test]
    fn covers_and_allows_at_the_range_edges() {
        let mut r = Registry::new();
        r.map(0x0901_0000, 0x1000, 0).unwrap();
        assert!(!r.covers(0x0900_ffff, 0, false), "byte before the range");
        assert!(r.covers(0x0901_0000, 0, false), "first byte");
        assert!(r.covers(0x0901_0fff, 0, false), "last byte");
        assert!(!r.covers(0x0901_1000, 0, false), "byte after the range");
        assert!(!r.covers(0, 0, false) && !r.covers(u64::MAX, 0, false));
        assert!(r.allows(0x0901_0fff, 1, 0, false), "last byte alone");
        assert!(
            !r.allows(0x0901_1000, 1, 0, false),
            "first byte past the range"
        );
        assert!(!r.allows(0x0900_ffff, 1, 0, false));
        assert!(
            !r.allows(0x0900_ffff, 2, 0, false),
            "starts before the range"
        );
        assert!(r.allows(0x0901_0000, 0x1000, 0, false), "the whole range");
        assert!(
            !r.allows(0x0901_0000, 0x1001, 0, false),
            "one byte too many"
        );
        assert!(r.allows(0x0901_0ff8, 8, 0, false));
        assert!(!r.allows(0x0901_0ff9, 8, 0, false));
        assert!(r.allows(0x0901_0fff, 0, 0, false), "size 0 checks one byte");
        assert!(!r.allows(0x0901_1000, 0, 0, false));
        // A second range right after the first: an access across both is allowed.
        r.map(0x0901_1000, 0x1000, 0).unwrap();
        assert!(r.allows(0x0901_0ffc, 8, 0, false));
        assert!(!r.allows(0x0901_1ffc, 8, 0, false));
        // A range far from address 0 (a division or sum instead of the offset).
        let mut r = Registry::new();
        r.map(0x4000_0000, 0x4000, 0).unwrap();
        assert!(!r.covers(0x4000_4000, 0, false) && !r.covers(0x7fff_0000, 0, false));
        assert!(r.covers(0x4000_3fff, 0, false));
    }

    #[test]
    fn per_cpu_bits_for_several_cpus() {
        let mut r = Registry::new();
        r.map(0x0a00_0000, 0x1000, 2).unwrap();
        assert!(r.covers(0x0a00_0000, 2, true), "cpu 2 sees its own MAP");
        for cpu in [0, 1, 3, 4, 63] {
            assert!(!r.covers(0x0a00_0000, cpu, true), "cpu {cpu} does not");
            assert!(r.covers(0x0a00_0000, cpu, false), "per VM: cpu {cpu} does");
        }
        assert!(r.allows(0x0a00_0000, 4, 2, true));
        assert!(!r.allows(0x0a00_0000, 4, 1, true));
        assert!(r.allows(0x0a00_0000, 4, 1, false));
        // cpu 66 is bit 2 again (cpu % 64).
        assert!(r.covers(0x0a00_0000, 66, true));
        r.map(0x0a00_0000, 0x1000, 1).unwrap();
        assert_eq!(r.len(), 1);
        assert!(r.covers(0x0a00_0000, 1, true) && r.covers(0x0a00_0000, 2, true));
        assert!(!r.covers(0x0a00_0000, 0, true) && !r.covers(0x0a00_0000, 3, true));
        // Per-cpu UNMAP by a cpu that never mapped it: refused, nothing changes.
        assert!(!r.unmap(0x0a00_0000, 3, true));
        assert!(!r.unmap(0x0a00_0000, 0, true));
        assert!(r.covers(0x0a00_0000, 1, true) && r.covers(0x0a00_0000, 2, true));
        // cpu 2 drops its view; cpu 1 keeps it; the entry stays.
        assert!(r.unmap(0x0a00_0000, 2, true));
        assert_eq!(r.len(), 1);
        assert!(r.is_registered(0x0a00_0000));
        assert!(!r.covers(0x0a00_0000, 2, true) && r.covers(0x0a00_0000, 1, true));
        assert!(!r.unmap(0x0a00_0000, 2, true), "already dropped");
        // The last view goes: the entry goes.
        assert!(r.unmap(0x0a00_0000, 1, true));
        assert_eq!((r.len(), r.is_registered(0x0a00_0000)), (0, false));
        assert!(!r.covers(0x0a00_0000, 1, false));
    }

    #[test]
    fn map_again_keeps_the_larger_size() {
        let mut r = Registry::new();
        r.map(0x0901_0000, 0x1000, 0).unwrap();
        r.map(0x0901_0000, 0x4000, 0).unwrap();
        assert!(r.covers(0x0901_3fff, 0, false));
        r.map(0x0901_0000, 0x1000, 0).unwrap();
        assert!(
            r.covers(0x0901_3fff, 0, false),
            "a smaller MAP does not shrink it"
        );
        assert_eq!(r.len(), 1);
    }
}
