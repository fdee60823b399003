//! The DMA ledger: everything a device was given (queues and buffers), judged as it is
//! given against the pool of granules the guest shared with the host. Pure, so that the
//! judgement is unit-tested on the host; the kernel's pool (`kernel::virtio::pool`) feeds it.
//!
//! Under a hypervisor with memory sharing a device may only see shared memory: a queue or
//! a buffer that is not wholly inside granules the pool shared is a violation, and so is a
//! share of anything outside the pool (a private page handed to the host).

use crate::platform::Region;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::fmt;

/// Violations kept for the report; more are counted, not kept.
const KEPT: usize = 8;

/// What a device was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Given {
    /// Ring memory (descriptor table, driver or device area).
    Queue,
    /// A copy of a driver buffer, in the pool.
    Bounce,
    /// A driver buffer passed as it is (no memory sharing: nothing to bounce through).
    Direct,
}

impl Given {
    pub fn name(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Bounce => "bounce buffer",
            Self::Direct => "buffer",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The device was given `[addr, addr + len)`, not wholly in shared granules.
    Private { what: Given, addr: u64, len: u64 },
    /// A granule outside the pool was shared.
    SharedOutsidePool { granule: u64 },
    /// The pool had no room for a bounce buffer of `len` bytes: the buffer went unbounced.
    Exhausted { len: u64 },
    /// MMIO outside every window ioguard registered was asked for (`mmio_phys_to_virt`).
    UnknownMmio { addr: u64, len: u64 },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Private { what, addr, len } => write!(
                f,
                "{} [{addr:#x}, {:#x}) is not in shared memory",
                what.name(),
                addr.saturating_add(len)
            ),
            Self::SharedOutsidePool { granule } => {
                write!(f, "granule {granule:#x} outside the DMA pool was shared")
            }
            Self::Exhausted { len } => {
                write!(f, "the DMA pool had no room to bounce {len} bytes")
            }
            Self::UnknownMmio { addr, len } => write!(
                f,
                "MMIO [{addr:#x}, {:#x}) is outside every window ioguard registered",
                addr.saturating_add(len)
            ),
        }
    }
}

/// Counts of what the ledger saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub queues: u64,
    pub bounces: u64,
    pub direct: u64,
    pub bytes: u64,
    pub shares: u64,
    pub unshares: u64,
    pub violations: u64,
}

#[derive(Debug)]
pub struct Ledger {
    /// The pool's region and sharing granule; None when there is no memory sharing.
    pool: Option<(Region, u64)>,
    shared: BTreeSet<u64>,
    tally: Tally,
    kept: Vec<Violation>,
}

impl Ledger {
    /// A ledger for a pool shared in `granule`s; `None`: no memory sharing, buffers pass
    /// through unchanged.
    pub fn new(pool: Option<(Region, u64)>) -> Self {
        Self {
            pool: pool.filter(|&(_, g)| g.is_power_of_two()),
            shared: BTreeSet::new(),
            tally: Tally::default(),
            kept: Vec::new(),
        }
    }

    pub fn sharing(&self) -> bool {
        self.pool.is_some()
    }

    fn violate(&mut self, v: Violation) {
        self.tally.violations += 1;
        if self.kept.len() < KEPT {
            self.kept.push(v);
        }
    }

    /// The pool shared `granule` with the host.
    pub fn shared(&mut self, granule: u64) {
        self.tally.shares += 1;
        let inside = self
            .pool
            .is_some_and(|(r, g)| r.contains(granule) && r.contains(granule + g - 1));
        if !inside {
            self.violate(Violation::SharedOutsidePool { granule });
        }
        self.shared.insert(granule);
    }

    /// The pool took `granule` back.
    pub fn unshared(&mut self, granule: u64) {
        self.tally.unshares += 1;
        self.shared.remove(&granule);
    }

    /// Granules still shared.
    pub fn still_shared(&self) -> usize {
        self.shared.len()
    }

    /// Whether every byte of `[addr, addr + len)` is in a shared granule.
    fn in_shared(&self, addr: u64, len: u64) -> bool {
        let Some((_, g)) = self.pool else {
            return false;
        };
        let Some(last) = addr.checked_add(len.max(1) - 1) else {
            return false;
        };
        let mut granule = addr & !(g - 1);
        while granule <= last {
            if !self.shared.contains(&granule) {
                return false;
            }
            match granule.checked_add(g) {
                Some(next) => granule = next,
                None => break,
            }
        }
        true
    }

    /// The device was given `[addr, addr + len)` as `what`.
    pub fn given(&mut self, what: Given, addr: u64, len: u64) {
        match what {
            Given::Queue => self.tally.queues += 1,
            Given::Bounce => self.tally.bounces += 1,
            Given::Direct => self.tally.direct += 1,
        }
        self.tally.bytes = self.tally.bytes.saturating_add(len);
        if self.sharing() && !self.in_shared(addr, len) {
            self.violate(Violation::Private { what, addr, len });
        }
    }

    pub fn exhausted(&mut self, len: u64) {
        self.violate(Violation::Exhausted { len });
    }

    pub fn unknown_mmio(&mut self, addr: u64, len: u64) {
        self.violate(Violation::UnknownMmio { addr, len });
    }

    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// The first violations seen (at most 8; `tally().violations` counts them all).
    pub fn violations(&self) -> &[Violation] {
        &self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 0x1000;

    fn shared_pool() -> Ledger {
        let mut l = Ledger::new(Some((Region::new(0x4000_0000, 4 * G), G)));
        for i in 0..4 {
            l.shared(0x4000_0000 + i * G);
        }
        l
    }

    #[test]
    fn buffers_inside_the_shared_pool_pass() {
        let mut l = shared_pool();
        l.given(Given::Queue, 0x4000_0000, G);
        l.given(Given::Bounce, 0x4000_0ff0, 0x20); // spans two shared granules
        l.given(Given::Bounce, 0x4000_3fff, 1); // the pool's last byte
        assert_eq!(l.violations(), &[]);
        let t = l.tally();
        assert_eq!(
            (t.queues, t.bounces, t.bytes, t.shares),
            (1, 2, G + 0x21, 4)
        );
    }

    #[test]
    fn a_buffer_reaching_past_the_pool_is_private() {
        let mut l = shared_pool();
        l.given(Given::Bounce, 0x4000_3ff0, 0x11);
        l.given(Given::Direct, 0x5000_0000, 4);
        assert_eq!(
            l.violations(),
            &[
                Violation::Private {
                    what: Given::Bounce,
                    addr: 0x4000_3ff0,
                    len: 0x11
                },
                Violation::Private {
                    what: Given::Direct,
                    addr: 0x5000_0000,
                    len: 4
                }
            ]
        );
        assert!(l.violations()[0]
            .to_string()
            .contains("[0x40003ff0, 0x40004001)"));
    }

    #[test]
    fn an_unshared_granule_is_private_again() {
        let mut l = shared_pool();
        l.unshared(0x4000_1000);
        assert_eq!(l.still_shared(), 3);
        l.given(Given::Queue, 0x4000_1800, 8);
        assert_eq!(l.tally().violations, 1);
        assert_eq!(l.tally().unshares, 1);
    }

    #[test]
    fn sharing_outside_the_pool_is_a_violation() {
        let mut l = shared_pool();
        l.shared(0x4000_4000);
        l.shared(0x3fff_f000);
        assert_eq!(
            l.violations(),
            &[
                Violation::SharedOutsidePool {
                    granule: 0x4000_4000
                },
                Violation::SharedOutsidePool {
                    granule: 0x3fff_f000
                }
            ]
        );
    }

    #[test]
    fn larger_granules_are_judged_whole() {
        let g = 0x1_0000;
        let mut l = Ledger::new(Some((Region::new(0x4001_0000, 2 * g), g)));
        l.shared(0x4001_0000);
        l.given(Given::Bounce, 0x4001_fff0, 0x10);
        assert_eq!(l.tally().violations, 0);
        l.given(Given::Bounce, 0x4001_fff0, 0x11);
        assert_eq!(l.tally().violations, 1);
    }

    #[test]
    fn without_sharing_nothing_is_private() {
        let mut l = Ledger::new(None);
        l.given(Given::Direct, 0x5000_0000, 4);
        l.given(Given::Queue, 0x5000_1000, 4);
        assert!(!l.sharing());
        assert_eq!(l.tally().violations, 0);
        assert_eq!(l.tally().direct, 1);
        l.shared(0x5000_0000);
        assert_eq!(l.tally().violations, 1, "no pool: any share is outside it");
    }

    #[test]
    fn only_the_first_violations_are_kept_but_all_are_counted() {
        let mut l = shared_pool();
        for i in 0..20 {
            l.unknown_mmio(i * G, 4);
        }
        l.exhausted(9);
        assert_eq!(l.violations().len(), KEPT);
        assert_eq!(l.tally().violations, 21);
        assert!(l.violations()[1].to_string().contains("[0x1000, 0x1004)"));
        assert_eq!(
            Violation::Exhausted { len: 9 }.to_string(),
            "the DMA pool had no room to bounce 9 bytes"
        );
    }

    #[test]
    fn wrapping_buffers_are_private() {
        let mut l = shared_pool();
        l.given(Given::Bounce, u64::MAX - 2, 8);
        assert_eq!(l.tally().violations, 1);
        let l = Ledger::new(Some((Region::new(0, G), 3)));
        assert!(
            !l.sharing(),
            "a granule that is not a power of two is no pool"
        );
    }
}
