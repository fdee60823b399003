//! The split virtqueue as a device sees it (virtio 1.x section 2.7; the legacy layout of
//! section 2.7.2 too), and the walk hypmodel makes at each notify: everything the device
//! is about to read or write must lie in memory the guest shared with the host.
//!
//! Pure: guest memory and the share record come in through [`GuestView`], so the walk is
//! unit-tested on the host with fake memory. The walk never trusts the guest: every index
//! is checked against its table, every chain is bounded by its table (a loop ends as an
//! error, not a hang), an avail index more than a queue ahead of the last one walked is
//! refused, and one walk reads at most [`WALK_BUDGET`] descriptors.

use core::fmt;

/// A descriptor: `addr` u64, `len` u32, `flags` u16, `next` u16, little-endian.
pub const DESC_SIZE: u64 = 16;
pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;
/// The largest split queue (virtio 1.x section 2.7: Queue Size is at most 32768).
pub const MAX_QUEUE_SIZE: u32 = 32768;
/// Descriptors one walk reads at most (a correct queue has at most its size in flight,
/// plus the entries of their indirect tables).
pub const WALK_BUDGET: u32 = 1 << 16;

/// What the walk needs from the VM: guest memory, and which of it the host can access.
pub trait GuestView {
    /// Reads guest memory at `ipa` into `buf`; false when it cannot (not guest RAM).
    fn read(&self, ipa: u64, buf: &mut [u8]) -> bool;
    /// The first page of `[ipa, ipa + len)` the host cannot access, or `None` when it can
    /// access all of it. `len` > 0, and the range does not wrap.
    fn first_private(&self, ipa: u64, len: u64) -> Option<u64>;
}

/// Where a queue's three parts are, as the device was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Descriptor table.
    pub desc: u64,
    /// Available ring (the driver area).
    pub avail: u64,
    /// Used ring (the device area).
    pub used: u64,
    /// Queue size: entries in the table and in each ring.
    pub size: u32,
    /// VIRTIO_F_EVENT_IDX accepted: each ring ends with its event field.
    pub event_idx: bool,
}

impl Ring {
    pub fn desc_len(&self) -> u64 {
        DESC_SIZE * u64::from(self.size)
    }
    /// flags, idx, ring[size] (and used_event).
    pub fn avail_len(&self) -> u64 {
        4 + 2 * u64::from(self.size) + 2 * u64::from(self.event_idx)
    }
    /// flags, idx, ring[size] of {id u32, len u32} (and avail_event).
    pub fn used_len(&self) -> u64 {
        4 + 8 * u64::from(self.size) + 2 * u64::from(self.event_idx)
    }

    /// The legacy layout (QueuePFN): the descriptor table at `base`, the avail ring right
    /// after it, the used ring at the next multiple of `align` after the avail ring's
    /// entries (where QEMU's device model puts it). `None` for an `align` of 0 or a layout
    /// past the end of the address space.
    pub fn legacy(base: u64, size: u32, align: u64, event_idx: bool) -> Option<Ring> {
        let avail = base.checked_add(DESC_SIZE * u64::from(size))?;
        let avail_end = avail.checked_add(4 + 2 * u64::from(size))?;
        let used = avail_end.checked_next_multiple_of(align)?;
        Some(Ring {
            desc: base,
            avail,
            used,
            size,
            event_idx,
        })
    }
}

/// A descriptor: its index in the queue's table, and in the indirect table it points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescAt {
    pub desc: u16,
    pub indirect: Option<u32>,
}

impl fmt::Display for DescAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "descriptor {}", self.desc)?;
        match self.indirect {
            Some(j) => write!(f, " indirect {j}"),
            None => Ok(()),
        }
    }
}

/// A queue's ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    DescTable,
    AvailRing,
    UsedRing,
}

impl Area {
    pub fn name(self) -> &'static str {
        match self {
            Area::DescTable => "descriptor table",
            Area::AvailRing => "avail ring",
            Area::UsedRing => "used ring",
        }
    }
}

/// What the device would reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Ring(Area),
    /// A buffer the device writes (`write`) or reads.
    Buffer {
        at: DescAt,
        write: bool,
    },
    /// The indirect table a descriptor points to.
    IndirectTable {
        at: DescAt,
    },
}

impl Reach {
    pub fn name(self) -> &'static str {
        match self {
            Reach::Ring(a) => a.name(),
            Reach::Buffer { write: true, .. } => "device-writable buffer",
            Reach::Buffer { write: false, .. } => "device-readable buffer",
            Reach::IndirectTable { .. } => "indirect table",
        }
    }
}

impl fmt::Display for Reach {
    /// Where it is: the ring's name, or the descriptor.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reach::Ring(a) => f.write_str(a.name()),
            Reach::Buffer { at, .. } | Reach::IndirectTable { at } => write!(f, "{at}"),
        }
    }
}

/// A queue the device could not make sense of (the spec's MUSTs for a driver, broken).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// 0, or over [`MAX_QUEUE_SIZE`].
    QueueSize(u32),
    /// The avail index moved more than a queue's worth past the last one walked.
    AvailIdx { last: u16, idx: u16, size: u32 },
    /// An avail entry names a descriptor outside the table.
    Head { entry: u32, head: u16, size: u32 },
    /// A descriptor's `next` is outside its table.
    Next { at: DescAt, next: u16, entries: u32 },
    /// A chain longer than its table: a loop.
    Loop { at: DescAt, entries: u32 },
    /// INDIRECT and NEXT both set (section 2.7.5.3.1: the driver MUST NOT).
    IndirectNext { at: DescAt },
    /// INDIRECT inside an indirect table (MUST NOT).
    NestedIndirect { at: DescAt },
    /// An indirect table whose length is 0 or not a multiple of 16.
    IndirectLen { at: DescAt, len: u32 },
    /// A range past the end of the address space.
    Wraps { what: Reach, addr: u64, len: u64 },
    /// Shared guest memory that could not be read (the view disagrees with itself).
    Unreadable { addr: u64 },
    /// A legacy queue whose QueueAlign (0) leaves no place for the used ring.
    LegacyLayout { base: u64, align: u64 },
    /// More than [`WALK_BUDGET`] descriptors in one walk.
    Budget,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Malformed::QueueSize(n) => {
                write!(f, "queue size {n} (0, or over {MAX_QUEUE_SIZE})")
            }
            Malformed::AvailIdx { last, idx, size } => write!(
                f,
                "avail idx {idx} is {} entries past the last one walked ({last}): more than the queue size {size}",
                idx.wrapping_sub(last)
            ),
            Malformed::Head { entry, head, size } => write!(
                f,
                "avail entry {entry} names descriptor {head}, outside the table of {size}"
            ),
            Malformed::Next { at, next, entries } => {
                write!(f, "{at} chains to {next}, outside its table of {entries}")
            }
            Malformed::Loop { at, entries } => write!(
                f,
                "the chain reaches {at} after {entries} descriptors, the size of its table: a loop"
            ),
            Malformed::IndirectNext { at } => write!(f, "{at} sets both INDIRECT and NEXT"),
            Malformed::NestedIndirect { at } => {
                write!(f, "{at} is an indirect table inside an indirect table")
            }
            Malformed::IndirectLen { at, len } => write!(
                f,
                "{at} is an indirect table of {len:#x} bytes, not a non-zero multiple of 16"
            ),
            Malformed::Wraps { what, addr, len } => write!(
                f,
                "{what} [{addr:#x}, +{len:#x}) runs past the end of the address space"
            ),
            Malformed::Unreadable { addr } => {
                write!(f, "shared guest memory at {addr:#x} cannot be read")
            }
            Malformed::LegacyLayout { base, align } => write!(
                f,
                "legacy queue at {base:#x} with QueueAlign {align:#x} has no place for its used ring"
            ),
            Malformed::Budget => write!(f, "more than {WALK_BUDGET} descriptors in one notify"),
        }
    }
}

/// Why a notify is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The device would reach `[addr, addr + len)`, and `page` of it is private.
    Private {
        what: Reach,
        addr: u64,
        len: u64,
        page: u64,
    },
    Malformed(Malformed),
}

impl Problem {
    /// What the FAIL line names first.
    pub fn what(&self) -> &'static str {
        match self {
            Problem::Private { what, .. } => what.name(),
            Problem::Malformed(_) => "malformed queue",
        }
    }
    pub fn is_private(&self) -> bool {
        matches!(self, Problem::Private { .. })
    }
}

impl fmt::Display for Problem {
    /// The detail: `descriptor 3 [0x41234000, 0x41235000) in private page 0x41234000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Private {
                what,
                addr,
                len,
                page,
            } => write!(
                f,
                "{what} [{addr:#x}, {:#x}) in private page {page:#x}",
                addr + len
            ),
            Problem::Malformed(m) => write!(f, "{m}"),
        }
    }
}

/// One walk: the avail entries `[from, to)` (mod 2^16), what was found in them, and the
/// problem that stopped it, if any (the counts then run up to the problem).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    pub from: u16,
    pub to: u16,
    pub chains: u32,
    pub descriptors: u32,
    pub problem: Option<Problem>,
}

/// A bug the walk can be told to have (the `dma-private-through` mutant).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkBugs {
    /// The chain loop runs `while (flags & NEXT)`: the last descriptor of every chain
    /// (the only one of a one-descriptor chain) is neither checked nor followed.
    pub skips_last: bool,
}

#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

struct Walker<'a> {
    mem: &'a dyn GuestView,
    bugs: WalkBugs,
    descriptors: u32,
}

/// Walks `ring` from avail index `last` (the first entry not walked yet) to the avail
/// index in guest memory: the three rings, then every new chain, descriptor by descriptor
/// and through indirect tables. Stops at the first problem.
pub fn walk(ring: &Ring, last: u16, mem: &dyn GuestView, bugs: WalkBugs) -> Walk {
    let mut w = Walker {
        mem,
        bugs,
        descriptors: 0,
    };
    let mut out = Walk {
        from: last,
        to: last,
        chains: 0,
        descriptors: 0,
        problem: None,
    };
    let r = w.walk(ring, last, &mut out);
    out.descriptors = w.descriptors;
    out.problem = r.err();
    out
}

impl Walker<'_> {
    fn walk(&mut self, ring: &Ring, last: u16, out: &mut Walk) -> Result<(), Problem> {
        let size = ring.size;
        if size == 0 || size > MAX_QUEUE_SIZE {
            return Err(Problem::Malformed(Malformed::QueueSize(size)));
        }
        self.check(ring.desc, ring.desc_len(), Reach::Ring(Area::DescTable))?;
        self.check(ring.avail, ring.avail_len(), Reach::Ring(Area::AvailRing))?;
        self.check(ring.used, ring.used_len(), Reach::Ring(Area::UsedRing))?;
        let idx = self.read_u16(ring.avail + 2)?;
        out.to = idx;
        let n = idx.wrapping_sub(last);
        if u32::from(n) > size {
            return Err(Problem::Malformed(Malformed::AvailIdx { last, idx, size }));
        }
        for k in 0..n {
            let entry = u32::from(last.wrapping_add(k)) % size;
            let head = self.read_u16(ring.avail + 4 + 2 * u64::from(entry))?;
            if u32::from(head) >= size {
                return Err(Problem::Malformed(Malformed::Head { entry, head, size }));
            }
            self.chain(ring, head)?;
            out.chains += 1;
        }
        Ok(())
    }

    /// One chain of the queue's table, from `head`.
    fn chain(&mut self, ring: &Ring, head: u16) -> Result<(), Problem> {
        let mut i = head;
        for _ in 0..ring.size {
            let at = DescAt {
                desc: i,
                indirect: None,
            };
            let d = self.desc(ring.desc + DESC_SIZE * u64::from(i))?;
            let next = d.flags & DESC_F_NEXT != 0;
            if self.bugs.skips_last && !next {
                return Ok(());
            }
            self.count()?;
            if d.flags & DESC_F_INDIRECT != 0 {
                if next {
                    return Err(Problem::Malformed(Malformed::IndirectNext { at }));
                }
                return self.indirect(at, d);
            }
            self.buffer(at, d)?;
            if !next {
                return Ok(());
            }
            if u32::from(d.next) >= ring.size {
                return Err(Problem::Malformed(Malformed::Next {
                    at,
                    next: d.next,
                    entries: ring.size,
                }));
            }
            i = d.next;
        }
        let at = DescAt {
            desc: i,
            indirect: None,
        };
        Err(Problem::Malformed(Malformed::Loop {
            at,
            entries: ring.size,
        }))
    }

    /// The indirect table descriptor `outer` points to, and the chain in it from entry 0.
    fn indirect(&mut self, outer: DescAt, t: Desc) -> Result<(), Problem> {
        if t.len == 0 || u64::from(t.len) % DESC_SIZE != 0 {
            return Err(Problem::Malformed(Malformed::IndirectLen {
                at: outer,
                len: t.len,
            }));
        }
        self.check(t.addr, u64::from(t.len), Reach::IndirectTable { at: outer })?;
        let entries = (u64::from(t.len) / DESC_SIZE) as u32;
        let mut j = 0u32;
        for _ in 0..entries {
            let at = DescAt {
                desc: outer.desc,
                indirect: Some(j),
            };
            let d = self.desc(t.addr + DESC_SIZE * u64::from(j))?;
            let next = d.flags & DESC_F_NEXT != 0;
            if self.bugs.skips_last && !next {
                return Ok(());
            }
            self.count()?;
            if d.flags & DESC_F_INDIRECT != 0 {
                return Err(Problem::Malformed(Malformed::NestedIndirect { at }));
            }
            self.buffer(at, d)?;
            if !next {
                return Ok(());
            }
            if u32::from(d.next) >= entries {
                return Err(Problem::Malformed(Malformed::Next {
                    at,
                    next: d.next,
                    entries,
                }));
            }
            j = u32::from(d.next);
        }
        let at = DescAt {
            desc: outer.desc,
            indirect: Some(j),
        };
        Err(Problem::Malformed(Malformed::Loop { at, entries }))
    }

    /// A buffer: a zero-length one touches no memory.
    fn buffer(&self, at: DescAt, d: Desc) -> Result<(), Problem> {
        let write = d.flags & DESC_F_WRITE != 0;
        self.check(d.addr, u64::from(d.len), Reach::Buffer { at, write })
    }

    fn count(&mut self) -> Result<(), Problem> {
        if self.descriptors >= WALK_BUDGET {
            return Err(Problem::Malformed(Malformed::Budget));
        }
        self.descriptors += 1;
        Ok(())
    }

    /// `[addr, addr + len)` must be memory the host can access.
    fn check(&self, addr: u64, len: u64, what: Reach) -> Result<(), Problem> {
        if len == 0 {
            return Ok(());
        }
        if addr.checked_add(len - 1).is_none() {
            return Err(Problem::Malformed(Malformed::Wraps { what, addr, len }));
        }
        match self.mem.first_private(addr, len) {
            Some(page) => Err(Problem::Private {
                what,
                addr,
                len,
                page,
            }),
            None => Ok(()),
        }
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Problem> {
        if self.mem.read(addr, buf) {
            Ok(())
        } else {
            Err(Problem::Malformed(Malformed::Unreadable { addr }))
        }
    }

    fn read_u16(&self, addr: u64) -> Result<u16, Problem> {
        let mut b = [0u8; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// A descriptor, read only from memory already checked to be shared.
    fn desc(&self, addr: u64) -> Result<Desc, Problem> {
        let mut b = [0u8; DESC_SIZE as usize];
        self.read(addr, &mut b)?;
        let le64 = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        Ok(Desc {
            addr: le64(0),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: u16::from_le_bytes([b[12], b[13]]),
            next: u16::from_le_bytes([b[14], b[15]]),
        })
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::cell::Cell;

    pub const BASE: u64 = 0x4100_0000;
    pub const PAGE: u64 = 0x1000;

    /// Guest RAM `[BASE, BASE + pages * 4 KiB)`, with a shared flag per page, and a count of
    /// the bytes read (the walk must only read shared memory).
    pub struct FakeMem {
        pub bytes: Vec<u8>,
        pub shared: Vec<bool>,
        pub read_private: Cell<bool>,
    }

    impl FakeMem {
        pub fn new(pages: usize) -> FakeMem {
            FakeMem {
                bytes: vec![0; pages * PAGE as usize],
                shared: vec![false; pages],
                read_private: Cell::new(false),
            }
        }
        pub fn share(&mut self, page: u64) -> &mut Self {
            self.shared[((page - BASE) / PAGE) as usize] = true;
            self
        }
        pub fn share_all(&mut self) -> &mut Self {
            self.shared.iter_mut().for_each(|s| *s = true);
            self
        }
        pub fn put(&mut self, at: u64, b: &[u8]) {
            let o = (at - BASE) as usize;
            self.bytes[o..o + b.len()].copy_from_slice(b);
        }
        pub fn put_u16(&mut self, at: u64, v: u16) {
            self.put(at, &v.to_le_bytes());
        }
        pub fn put_desc(&mut self, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&addr.to_le_bytes());
            b[8..12].copy_from_slice(&len.to_le_bytes());
            b[12..14].copy_from_slice(&flags.to_le_bytes());
            b[14..].copy_from_slice(&next.to_le_bytes());
            self.put(at, &b);
        }
        fn page_shared(&self, a: u64) -> bool {
            a >= BASE && self.shared.get(((a - BASE) / PAGE) as usize) == Some(&true)
        }
    }

    impl GuestView for FakeMem {
        fn read(&self, ipa: u64, buf: &mut [u8]) -> bool {
            let Some(o) = ipa.checked_sub(BASE) else {
                return false;
            };
            let o = o as usize;
            let Some(src) = self.bytes.get(o..o + buf.len()) else {
                return false;
            };
            if !(ipa..ipa + buf.len() as u64).all(|a| self.page_shared(a)) {
                self.read_private.set(true);
            }
            buf.copy_from_slice(src);
            true
        }
        fn first_private(&self, ipa: u64, len: u64) -> Option<u64> {
            let last = ipa + (len - 1);
            let mut p = ipa & !(PAGE - 1);
            loop {
                if !self.page_shared(p) {
                    return Some(p);
                }
                if p >= last & !(PAGE - 1) {
                    return None;
                }
                p += PAGE;
            }
        }
    }

    /// A modern-layout queue of `size` in page 0 (descriptors), page 1 (avail), page 2
    /// (used), all three shared; buffers go from page 4 on.
    pub fn queue(size: u32) -> (FakeMem, Ring) {
        let mut m = FakeMem::new(64);
        for p in 0..3 {
            m.share(BASE + p * PAGE);
        }
        let r = Ring {
            desc: BASE,
            avail: BASE + PAGE,
            used: BASE + 2 * PAGE,
            size,
            event_idx: false,
        };
        (m, r)
    }

    /// Publishes `heads` in the avail ring from entry `from`, and sets idx after them.
    pub fn publish(m: &mut FakeMem, r: &Ring, from: u16, heads: &[u16]) {
        for (k, &h) in heads.iter().enumerate() {
            let e = u32::from(from.wrapping_add(k as u16)) % r.size;
            m.put_u16(r.avail + 4 + 2 * u64::from(e), h);
        }
        m.put_u16(r.avail + 2, from.wrapping_add(heads.len() as u16));
    }

    fn desc_at(r: &Ring, i: u16) -> u64 {
        r.desc + 16 * u64::from(i)
    }

    fn buf(n: u64) -> u64 {
        BASE + (4 + n) * PAGE
    }

    const OK: WalkBugs = WalkBugs { skips_last: false };
    const SKIPS_LAST: WalkBugs = WalkBugs { skips_last: true };

    fn private(w: &Walk) -> Option<(Reach, u64)> {
        match w.problem {
            Some(Problem::Private { what, page, .. }) => Some((what, page)),
            _ => None,
        }
    }

    fn malformed(w: &Walk) -> Option<Malformed> {
        match w.problem {
            Some(Problem::Malformed(m)) => Some(m),
            _ => None,
        }
    }

    #[test]
    fn shared_chains_are_walked_and_counted() {
        let (mut m, r) = queue(8);
        m.share(buf(0)).share(buf(1));
        // A request: header (device reads), data (device writes), status (writes).
        m.put_desc(desc_at(&r, 0), buf(0), 16, DESC_F_NEXT, 1);
        m.put_desc(desc_at(&r, 1), buf(1), 512, DESC_F_NEXT | DESC_F_WRITE, 2);
        m.put_desc(desc_at(&r, 2), buf(0) + 16, 1, DESC_F_WRITE, 0);
        m.put_desc(desc_at(&r, 3), buf(1) + 512, 64, DESC_F_WRITE, 0);
        publish(&mut m, &r, 0, &[0, 3]);
        let w = walk(&r, 0, &m, OK);
        assert_eq!(
            w,
            Walk {
                from: 0,
                to: 2,
                chains: 2,
                descriptors: 4,
                problem: None
            }
        );
        // Nothing new: nothing walked.
        let w = walk(&r, 2, &m, OK);
        assert_eq!((w.chains, w.descriptors, w.problem), (0, 0, None));
        assert!(!m.read_private.get());
    }

    #[test]
    fn the_avail_index_wraps_at_65536() {
        let (mut m, r) = queue(4);
        m.share(buf(0));
        for i in 0..4 {
            m.put_desc(desc_at(&r, i), buf(0) + 64 * u64::from(i), 64, 0, 0);
        }
        // Entries 65534, 65535, 0, 1 sit in slots 2, 3, 0, 1.
        publish(&mut m, &r, 65534, &[3, 2, 1, 0]);
        let w = walk(&r, 65534, &m, OK);
        assert_eq!((w.from, w.to, w.chains, w.problem), (65534, 2, 4, None));
        // The heads really came from slots 2, 3, 0, 1: make slot 0's head private.
        m.put_desc(desc_at(&r, 1), buf(9), 64, 0, 0);
        let w = walk(&r, 65534, &m, OK);
        assert_eq!(w.chains, 2);
        assert_eq!(
            private(&w),
            Some((
                Reach::Buffer {
                    at: DescAt {
                        desc: 1,
                        indirect: None
                    },
                    write: false
                },
                buf(9)
            ))
        );
    }

    #[test]
    fn a_bogus_avail_index_is_refused_without_walking() {
        let (mut m, r) = queue(8);
        m.put_u16(r.avail + 2, 9);
        let w = walk(&r, 0, &m, OK);
        assert_eq!(
            malformed(&w),
            Some(Malformed::AvailIdx {
                last: 0,
                idx: 9,
                size: 8
            })
        );
        assert_eq!((w.chains, w.descriptors), (0, 0));
        // An index behind the last one walked is 65535 ahead.
        m.put_u16(r.avail + 2, 4);
        let w = walk(&r, 5, &m, OK);
        assert!(matches!(malformed(&w), Some(Malformed::AvailIdx { .. })));
        assert_eq!(
            w.problem.unwrap().to_string(),
            "avail idx 4 is 65535 entries past the last one walked (5): more than the queue size 8"
        );
        // Exactly one queue's worth is fine.
        for i in 0..8 {
            m.put_desc(desc_at(&r, i), 0, 0, 0, 0);
        }
        publish(&mut m, &r, 5, &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(walk(&r, 5, &m, OK).chains, 8);
    }

    #[test]
    fn a_loop_in_a_chain_ends_the_walk() {
        let (mut m, r) = queue(4);
        m.share(buf(0));
        // 0 -> 1 -> 2 -> 3 -> 0 -> ...: a chain longer than the queue.
        for i in 0..4u16 {
            m.put_desc(desc_at(&r, i), buf(0), 8, DESC_F_NEXT, (i + 1) % 4);
        }
        publish(&mut m, &r, 0, &[2]);
        let w = walk(&r, 0, &m, OK);
        assert_eq!(
            malformed(&w),
            Some(Malformed::Loop {
                at: DescAt {
                    desc: 2,
                    indirect: None
                },
                entries: 4
            })
        );
        assert_eq!(
            w.descriptors, 4,
            "each descriptor once, then the loop is seen"
        );
        // A descriptor that chains to itself.
        m.put_desc(desc_at(&r, 0), buf(0), 8, DESC_F_NEXT, 0);
        publish(&mut m, &r, 0, &[0]);
        assert!(matches!(
            malformed(&walk(&r, 0, &m, OK)),
            Some(Malformed::Loop { .. })
        ));
    }

    #[test]
    fn indexes_outside_the_table_are_refused() {
        let (mut m, r) = queue(4);
        publish(&mut m, &r, 0, &[4]);
        assert_eq!(
            malformed(&walk(&r, 0, &m, OK)),
            Some(Malformed::Head {
                entry: 0,
                head: 4,
                size: 4
            })
        );
        m.put_desc(desc_at(&r, 0), 0, 0, DESC_F_NEXT, 7);
        publish(&mut m, &r, 0, &[0]);
        let w = walk(&r, 0, &m, OK);
        assert_eq!(
            malformed(&w),
            Some(Malformed::Next {
                at: DescAt {
                    desc: 0,
                    indirect: None
                },
                next: 7,
                entries: 4
            })
        );
        assert_eq!(
            w.problem.unwrap().to_string(),
            "descriptor 0 chains to 7, outside its table of 4"
        );
    }

    #[test]
    fn indirect_tables_and_their_descriptors_are_checked() {
        let (mut m, r) = queue(4);
        let table = buf(0);
        m.share(table).share(buf(1));
        m.put_desc(table, buf(1), 16, DESC_F_NEXT, 1);
        m.put_desc(table + 16, buf(1) + 16, 512, DESC_F_NEXT | DESC_F_WRITE, 2);
        m.put_desc(table + 32, buf(1) + 528, 1, DESC_F_WRITE, 0);
        m.put_desc(desc_at(&r, 2), table, 48, DESC_F_INDIRECT, 0);
        publish(&mut m, &r, 0, &[2]);
        let w = walk(&r, 0, &m, OK);
        assert_eq!((w.chains, w.descriptors, w.problem), (1, 4, None));
        // A private buffer inside the table.
        m.put_desc(table + 16, buf(5), 512, DESC_F_NEXT | DESC_F_WRITE, 2);
        let w = walk(&r, 0, &m, OK);
        let at = DescAt {
            desc: 2,
            indirect: Some(1),
        };
        assert_eq!(
            private(&w),
            Some((Reach::Buffer { at, write: true }, buf(5)))
        );
        assert_eq!(w.problem.unwrap().what(), "device-writable buffer");
        assert_eq!(
            w.problem.unwrap().to_string(),
            format!(
                "descriptor 2 indirect 1 [{:#x}, {:#x}) in private page {:#x}",
                buf(5),
                buf(5) + 512,
                buf(5)
            )
        );
        // The table itself private: refused before anything in it is read.
        let mut m2 = FakeMem::new(64);
        m2.bytes.clone_from(&m.bytes);
        for p in 0..3 {
            m2.share(BASE + p * PAGE);
        }
        let w = walk(&r, 0, &m2, OK);
        let outer = DescAt {
            desc: 2,
            indirect: None,
        };
        assert_eq!(
            private(&w),
            Some((Reach::IndirectTable { at: outer }, table))
        );
        assert_eq!(w.problem.unwrap().what(), "indirect table");
        assert!(!m2.read_private.get(), "the private table was not read");
    }

    #[test]
    fn malformed_indirect_tables() {
        let (mut m, r) = queue(4);
        let table = buf(0);
        m.share(table);
        let outer = DescAt {
            desc: 0,
            indirect: None,
        };
        publish(&mut m, &r, 0, &[0]);
        for len in [0, 15, 17] {
            m.put_desc(desc_at(&r, 0), table, len, DESC_F_INDIRECT, 0);
            assert_eq!(
                malformed(&walk(&r, 0, &m, OK)),
                Some(Malformed::IndirectLen { at: outer, len })
            );
        }
        m.put_desc(desc_at(&r, 0), table, 32, DESC_F_INDIRECT | DESC_F_NEXT, 1);
        assert_eq!(
            malformed(&walk(&r, 0, &m, OK)),
            Some(Malformed::IndirectNext { at: outer })
        );
        m.put_desc(desc_at(&r, 0), table, 32, DESC_F_INDIRECT, 0);
        m.put_desc(table, table, 16, DESC_F_NEXT, 1);
        m.put_desc(table + 16, table, 16, DESC_F_INDIRECT, 0);
        let at1 = DescAt {
            desc: 0,
            indirect: Some(1),
        };
        assert_eq!(
            malformed(&walk(&r, 0, &m, OK)),
            Some(Malformed::NestedIndirect { at: at1 })
        );
        // A loop inside the table: entry 1 chains back to entry 0.
        m.put_desc(table + 16, table, 16, DESC_F_NEXT, 0);
        assert_eq!(
            malformed(&walk(&r, 0, &m, OK)),
            Some(Malformed::Loop {
                at: DescAt {
                    desc: 0,
                    indirect: Some(0)
                },
                entries: 2
            })
        );
        m.put_desc(table + 16, table, 16, DESC_F_NEXT, 2);
        assert!(matches!(
            malformed(&walk(&r, 0, &m, OK)),
            Some(Malformed::Next {
                next: 2,
                entries: 2,
                ..
            })
        ));
    }

    #[test]
    fn a_buffer_straddling_a_shared_and_a_private_page() {
        let (mut m, r) = queue(4);
        m.share(buf(0));
        m.put_desc(desc_at(&r, 0), buf(0) + 0xf00, 0x100, 0, 0);
        publish(&mut m, &r, 0, &[0]);
        assert_eq!(
            walk(&r, 0, &m, OK).problem,
            None,
            "ends on the last shared byte"
        );
        m.put_desc(desc_at(&r, 0), buf(0) + 0xf00, 0x101, DESC_F_WRITE, 0);
        let w = walk(&r, 0, &m, OK);
        assert_eq!(private(&w).map(|p| p.1), Some(buf(1)));
        assert_eq!(
            w.problem.unwrap().to_string(),
            format!(
                "descriptor 0 [{:#x}, {:#x}) in private page {:#x}",
                buf(0) + 0xf00,
                buf(1) + 1,
                buf(1)
            )
        );
    }

    #[test]
    fn a_zero_length_buffer_touches_no_memory() {
        let (mut m, r) = queue(4);
        m.put_desc(desc_at(&r, 0), buf(7), 0, DESC_F_NEXT, 1);
        m.put_desc(desc_at(&r, 1), 0xffff_ffff_ffff_fff0, 0, DESC_F_WRITE, 0);
        publish(&mut m, &r, 0, &[0]);
        let w = walk(&r, 0, &m, OK);
        assert_eq!((w.descriptors, w.problem), (2, None));
    }

    #[test]
    fn a_buffer_past_the_end_of_the_address_space() {
        let (mut m, r) = queue(4);
        m.put_desc(desc_at(&r, 0), 0xffff_ffff_ffff_f000, 0x2000, 0, 0);
        publish(&mut m, &r, 0, &[0]);
        let w = walk(&r, 0, &m, OK);
        assert!(matches!(malformed(&w), Some(Malformed::Wraps { .. })));
        assert_eq!(
            w.problem.unwrap().to_string(),
            "descriptor 0 [0xfffffffffffff000, +0x2000) runs past the end of the address space"
        );
        // The very last byte of the address space does not wrap.
        m.put_desc(desc_at(&r, 0), u64::MAX, 1, 0, 0);
        assert_eq!(
            private(&walk(&r, 0, &m, OK)).map(|p| p.1),
            Some(u64::MAX - 0xfff)
        );
    }

    #[test]
    fn private_rings_are_refused_before_they_are_read() {
        for (area, page) in [
            (Area::DescTable, BASE),
            (Area::AvailRing, BASE + PAGE),
            (Area::UsedRing, BASE + 2 * PAGE),
        ] {
            let (mut m, r) = queue(8);
            m.shared[((page - BASE) / PAGE) as usize] = false;
            publish(&mut m, &r, 0, &[0]);
            let w = walk(&r, 0, &m, OK);
            assert_eq!(private(&w), Some((Reach::Ring(area), page)), "{area:?}");
            assert_eq!((w.to, w.chains), (0, 0));
            assert!(!m.read_private.get());
            assert_eq!(w.problem.unwrap().what(), area.name());
        }
        // The used ring of a 256-entry queue is 2052 bytes: from 0xc00 it crosses a page.
        let (mut m, mut r) = queue(256);
        r.used += 0xc00;
        publish(&mut m, &r, 0, &[]);
        let w = walk(&r, 0, &m, OK);
        assert_eq!(
            private(&w),
            Some((Reach::Ring(Area::UsedRing), BASE + 3 * PAGE))
        );
        assert_eq!(
            w.problem.unwrap().to_string(),
            format!(
                "used ring [{:#x}, {:#x}) in private page {:#x}",
                BASE + 2 * PAGE + 0xc00,
                BASE + 2 * PAGE + 0xc00 + 2052,
                BASE + 3 * PAGE
            )
        );
    }

    #[test]
    fn event_idx_adds_the_event_fields_to_the_rings() {
        // An avail ring of 8 ending exactly at the end of its page: 20 bytes, or 22.
        let (mut m, mut r) = queue(8);
        r.avail = BASE + 2 * PAGE - 20;
        r.used = BASE + 0x800;
        m.shared[2] = false;
        publish(&mut m, &r, 0, &[]);
        assert_eq!(walk(&r, 0, &m, OK).problem, None);
        r.event_idx = true;
        assert_eq!(
            private(&walk(&r, 0, &m, OK)),
            Some((Reach::Ring(Area::AvailRing), BASE + 2 * PAGE))
        );
    }

    #[test]
    fn queue_sizes_out_of_range() {
        let (m, mut r) = queue(0);
        assert_eq!(
            malformed(&walk(&r, 0, &m, OK)),
            Some(Malformed::QueueSize(0))
        );
        r.size = MAX_QUEUE_SIZE + 1;
        assert_eq!(
            malformed(&walk(&r, 0, &m, OK)),
            Some(Malformed::QueueSize(MAX_QUEUE_SIZE + 1))
        );
    }

    #[test]
    fn one_walk_reads_at_most_the_budget() {
        // One chain through an indirect table of more entries than the budget.
        let entries = WALK_BUDGET + 2;
        let table_pages = (u64::from(entries) * 16).div_ceil(PAGE) as usize;
        let mut m = FakeMem::new(4 + table_pages);
        m.share_all();
        let r = Ring {
            desc: BASE,
            avail: BASE + PAGE,
            used: BASE + 2 * PAGE,
            size: 4,
            event_idx: false,
        };
        let table = BASE + 4 * PAGE;
        for j in 0..entries {
            let a = table + 16 * u64::from(j);
            m.put_desc(a, BASE, 0, DESC_F_NEXT, (j + 1) as u16);
        }
        // `next` is a u16: make the chain run 0, 1, ..., 65535, 0, ... inside the table;
        // the table is longer than that, so only the budget stops it.
        m.put_desc(desc_at(&r, 0), table, entries * 16, DESC_F_INDIRECT, 0);
        publish(&mut m, &r, 0, &[0]);
        let w = walk(&r, 0, &m, OK);
        assert_eq!(malformed(&w), Some(Malformed::Budget));
        assert_eq!(w.descriptors, WALK_BUDGET);
    }

    #[test]
    fn the_skips_last_bug_lets_the_last_descriptor_through() {
        let (mut m, r) = queue(4);
        m.share(buf(0));
        // A two-descriptor request whose status byte is private.
        m.put_desc(desc_at(&r, 0), buf(0), 16, DESC_F_NEXT, 1);
        m.put_desc(desc_at(&r, 1), buf(3), 1, DESC_F_WRITE, 0);
        publish(&mut m, &r, 0, &[0]);
        assert_eq!(private(&walk(&r, 0, &m, OK)).map(|p| p.1), Some(buf(3)));
        let w = walk(&r, 0, &m, SKIPS_LAST);
        assert_eq!((w.chains, w.descriptors, w.problem), (1, 1, None));
        // A private first descriptor is still caught.
        m.put_desc(desc_at(&r, 0), buf(2), 16, DESC_F_NEXT, 1);
        assert_eq!(
            private(&walk(&r, 0, &m, SKIPS_LAST)).map(|p| p.1),
            Some(buf(2))
        );
        // A one-descriptor chain is its own last: never looked at.
        m.put_desc(desc_at(&r, 2), buf(2), 64, DESC_F_WRITE, 0);
        publish(&mut m, &r, 0, &[2]);
        let w = walk(&r, 0, &m, SKIPS_LAST);
        assert_eq!((w.chains, w.descriptors, w.problem), (1, 0, None));
        assert!(walk(&r, 0, &m, OK).problem.is_some());
        // Inside an indirect table too.
        let table = buf(0) + 0x800;
        m.put_desc(table, buf(0), 16, DESC_F_NEXT, 1);
        m.put_desc(table + 16, buf(2), 16, DESC_F_WRITE, 0);
        m.put_desc(desc_at(&r, 3), table, 32, DESC_F_INDIRECT, 0);
        m.put_desc(desc_at(&r, 0), buf(0), 16, DESC_F_NEXT, 3);
        publish(&mut m, &r, 0, &[0]);
        // Correct: 0, 3 (the table), its entries 0 and 1 (private).
        assert_eq!(private(&walk(&r, 0, &m, OK)).map(|p| p.1), Some(buf(2)));
        // Buggy: 3 is the last of its chain, so its table is never even followed.
        let w = walk(&r, 0, &m, SKIPS_LAST);
        assert_eq!((w.descriptors, w.problem), (1, None));
    }

    #[test]
    fn legacy_layout() {
        // Linux's vring_size for 8 entries and 4 KiB alignment: used ring on the next page.
        let r = Ring::legacy(BASE, 8, 4096, false).unwrap();
        assert_eq!((r.desc, r.avail, r.used), (BASE, BASE + 128, BASE + PAGE));
        // 256 entries: 4 KiB of descriptors, a 516-byte avail ring, used at 8 KiB.
        let r = Ring::legacy(BASE, 256, 4096, false).unwrap();
        assert_eq!((r.avail, r.used), (BASE + PAGE, BASE + 2 * PAGE));
        // A small alignment packs the used ring right after the avail entries.
        let r = Ring::legacy(BASE, 8, 4, true).unwrap();
        assert_eq!(r.used, BASE + 128 + 20);
        assert!(r.event_idx);
        assert_eq!(Ring::legacy(BASE, 8, 0, false), None);
        assert_eq!(Ring::legacy(u64::MAX - 0x10, 8, 4096, false), None);
    }

    #[test]
    fn names_and_lines() {
        let at = DescAt {
            desc: 3,
            indirect: None,
        };
        let p = Problem::Private {
            what: Reach::Buffer { at, write: false },
            addr: 0x4123_4000,
            len: 0x1000,
            page: 0x4123_4000,
        };
        assert_eq!(p.what(), "device-readable buffer");
        assert!(p.is_private());
        assert_eq!(
            p.to_string(),
            "descriptor 3 [0x41234000, 0x41235000) in private page 0x41234000"
        );
        let m = Problem::Malformed(Malformed::Budget);
        assert_eq!(m.what(), "malformed queue");
        assert!(!m.is_private());
        assert_eq!(m.to_string(), "more than 65536 descriptors in one notify");
        for (m, s) in [
            (Malformed::QueueSize(0), "queue size 0 (0, or over 32768)"),
            (
                Malformed::IndirectNext { at },
                "descriptor 3 sets both INDIRECT and NEXT",
            ),
            (
                Malformed::NestedIndirect { at },
                "descriptor 3 is an indirect table inside an indirect table",
            ),
            (
                Malformed::IndirectLen { at, len: 15 },
                "descriptor 3 is an indirect table of 0xf bytes, not a non-zero multiple of 16",
            ),
            (
                Malformed::Unreadable { addr: 0x10 },
                "shared guest memory at 0x10 cannot be read",
            ),
            (
                Malformed::Head {
                    entry: 1,
                    head: 9,
                    size: 8,
                },
                "avail entry 1 names descriptor 9, outside the table of 8",
            ),
            (
                Malformed::Loop { at, entries: 8 },
                "the chain reaches descriptor 3 after 8 descriptors, the size of its table: a loop",
            ),
        ] {
            assert_eq!(m.to_string(), s);
        }
    }
}
