//! The VMM's access to guest memory on a device's behalf (queues, descriptors, buffers).
//!
//! Every range is checked before it is touched: it must lie in guest RAM and, for a
//! protected VM, each of its pages must be readable from the host (the guest shared it).
//! A protected guest's private page faults in the VMM (SIGSEGV): reading it through
//! vm-memory would kill the VMM, so the [`Gate`] asks a probe first (a single load whose
//! fault is caught) and turns a private page into an error the device reports. The gate
//! also remembers each page it let through, most recent last, for the private-memory
//! proof at the end of a protected run.
//!
//! A guest that unshares a page on another vCPU between the check and the copy can still
//! make the VMM fault; ioguard does not, and the hypervisor keeps the page private either way.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

pub const PAGE: u64 = 0x1000;

/// Whether the VMM can read the guest page at this IPA (page aligned).
pub type Probe = Box<dyn Fn(u64) -> bool + Send + Sync>;

#[derive(Debug, PartialEq, Eq)]
pub enum DmaError {
    /// The range is not (wholly) guest RAM.
    OutsideRam { addr: u64, len: u64 },
    /// The page is the guest's own: the host cannot touch it.
    Private { page: u64 },
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutsideRam { addr, len } => {
                write!(f, "[{addr:#x}, +{len:#x}) is not guest RAM")
            }
            Self::Private { page } => write!(
                f,
                "page {page:#x} is private to the guest (never shared): the VMM cannot read it"
            ),
        }
    }
}

#[derive(Default)]
struct PageLog {
    last_use: HashMap<u64, u64>,
    clock: u64,
}

pub struct Gate {
    probe: Option<Probe>,
    log: Mutex<PageLog>,
}

impl Gate {
    /// `probe` is None where every page of RAM is the host's to read (an ordinary VM).
    pub fn new(probe: Option<Probe>) -> Self {
        Self {
            probe,
            log: Mutex::new(PageLog::default()),
        }
    }

    /// Checks `[addr, addr + len)` before the VMM touches it, and logs its pages.
    pub fn check(&self, mem: &GuestMemoryMmap, addr: u64, len: u64) -> Result<(), DmaError> {
        let outside = DmaError::OutsideRam { addr, len };
        let end = addr
            .checked_add(len)
            .ok_or(DmaError::OutsideRam { addr, len })?;
        let Ok(ulen) = usize::try_from(len) else {
            return Err(outside);
        };
        if !mem.check_range(GuestAddress(addr), ulen, Permissions::ReadWrite) {
            return Err(outside);
        }
        if len == 0 {
            return Ok(());
        }
        let first = addr & !(PAGE - 1);
        let mut pages = Vec::new();
        let mut page = first;
        while page < end {
            if let Some(p) = &self.probe {
                if !p(page) {
                    return Err(DmaError::Private { page });
                }
            }
            pages.push(page);
            page += PAGE;
        }
        // A poisoned lock only means another vCPU thread panicked: the log is still sound.
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        for p in pages {
            log.clock += 1;
            let now = log.clock;
            log.last_use.insert(p, now);
        }
        Ok(())
    }

    /// Every page the VMM touched for DMA, the most recently used first.
    pub fn pages_recent_first(&self) -> Vec<u64> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(u64, u64)> = log.last_use.iter().map(|(&p, &t)| (t, p)).collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.into_iter().map(|(_, p)| p).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0x4000_0000), 0x10_0000)]).unwrap()
    }

    #[test]
    fn refuses_what_is_not_ram() {
        let g = Gate::new(None);
        let m = ram();
        assert!(g.check(&m, 0x4000_0000, 0x10_0000).is_ok());
        assert_eq!(
            g.check(&m, 0x400f_f000, 0x2000),
            Err(DmaError::OutsideRam {
                addr: 0x400f_f000,
                len: 0x2000
            })
        );
        assert!(g.check(&m, 0x0900_0000, 4).is_err());
        assert!(g.check(&m, u64::MAX, 2).is_err());
    }

    #[test]
    fn refuses_private_pages_and_logs_nothing_of_them() {
        let g = Gate::new(Some(Box::new(|p| p != 0x4000_2000)));
        let m = ram();
        assert_eq!(
            g.check(&m, 0x4000_1ff0, 0x20),
            Err(DmaError::Private { page: 0x4000_2000 })
        );
        assert!(g.pages_recent_first().is_empty());
        assert!(g.check(&m, 0x4000_1000, 0x10).is_ok());
    }

    #[test]
    fn remembers_pages_most_recent_first() {
        let g = Gate::new(None);
        let m = ram();
        g.check(&m, 0x4000_0000, 0x10).unwrap();
        g.check(&m, 0x4000_5ff0, 0x20).unwrap();
        g.check(&m, 0x4000_0800, 0x10).unwrap();
        assert_eq!(
            g.pages_recent_first(),
            [0x4000_0000, 0x4000_6000, 0x4000_5000]
        );
    }
}
