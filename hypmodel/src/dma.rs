//! What the guest tells its virtio devices about DMA memory, and the check at each notify.
//!
//! hypmodel performs every forwarded access itself, so it sees each write to a virtio-mmio
//! window (found in the device tree: `compatible = "virtio,mmio"`) with its IPA and value.
//! From those writes it follows, per window and per QueueSel, the queue set-up the device
//! was given: legacy (GuestPageSize, QueueNum, QueueAlign, QueuePFN) and modern (QueueNum,
//! QueueDesc/Driver/Device Low/High, QueueReady), and the driver's EVENT_IDX and
//! RING_PACKED features. A device reset (Status written 0) forgets the window's queues.
//!
//! At every write to QueueNotify it walks the queue as the device is about to
//! (`virtq::walk`): under a profile with memory sharing (a protected VM, whose memory is
//! private unless shared) the rings and every buffer must lie in pages the guest shared;
//! if not, the notify is refused (not performed: the host could not have read the
//! request, so the device never sees it). Without memory sharing the notifies are counted
//! and nothing is judged.

use crate::virtq::{self, GuestView, Malformed, Problem, Ring, Walk, WalkBugs};
use core::fmt;

/// QEMU `virt` has 32 virtio-mmio transports.
pub const MAX_MMIO_WINDOWS: usize = 32;
/// Windows whose queues hypmodel follows at once (the first ones the guest sets up).
pub const MAX_DRIVEN: usize = 8;
/// Queues followed per device (QueueSel 0..8).
pub const MAX_QUEUES: usize = 8;

// virtio-mmio registers (virtio 1.x section 4.2.2; legacy section 4.2.4).
const REG_VERSION: u64 = 0x004;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_GUEST_PAGE_SIZE: u64 = 0x028;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_ALIGN: u64 = 0x03c;
const REG_QUEUE_PFN: u64 = 0x040;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
/// The registers end here; the device's configuration space follows.
const REGS_END: u64 = 0x100;

/// VIRTIO_F_RING_EVENT_IDX (feature bit 29) and VIRTIO_F_RING_PACKED (bit 34).
const F_EVENT_IDX: u64 = 1 << 29;
const F_RING_PACKED: u64 = 1 << 34;
/// QueueAlign of a legacy queue until the driver writes one (QEMU's default).
const DEFAULT_ALIGN: u64 = 4096;

/// Where a queue lives, for the lines hypmodel prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A virtio-mmio window, by its base.
    Mmio(u64),
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Mmio(base) => write!(f, "virtio-mmio@{base:#x}"),
        }
    }
}

/// One queue's registers as the driver wrote them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Queue {
    num: u32,
    align: u64,
    /// Legacy: QueuePFN × GuestPageSize as the device computed it (0: no queue).
    pfn_base: u64,
    desc: u64,
    driver: u64,
    device: u64,
    /// Modern: QueueReady.
    ready: bool,
    /// The first avail entry not walked yet (the device's last_avail_idx).
    next_avail: u16,
}

const QUEUE_RESET: Queue = Queue {
    num: 0,
    align: DEFAULT_ALIGN,
    pfn_base: 0,
    desc: 0,
    driver: 0,
    device: 0,
    ready: false,
    next_avail: 0,
};

/// The set-up of one driven virtio-mmio device.
#[derive(Clone, Copy, Debug)]
struct MmioDev {
    /// Index into the windows.
    window: usize,
    /// log2 of GuestPageSize (legacy; kept across resets, as QEMU does).
    page_shift: u32,
    sel: u32,
    features_sel: u32,
    features: u64,
    queues: [Queue; MAX_QUEUES],
}

impl MmioDev {
    const fn new(window: usize) -> MmioDev {
        MmioDev {
            window,
            page_shift: 0,
            sel: 0,
            features_sel: 0,
            features: 0,
            queues: [QUEUE_RESET; MAX_QUEUES],
        }
    }

    fn reset(&mut self) {
        *self = MmioDev {
            page_shift: self.page_shift,
            ..MmioDev::new(self.window)
        };
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.sel as usize)
    }

    /// The ring of queue `q` as the device uses it, `Ok(None)` when it has none.
    /// `legacy`: the window's Version, if the guest read it (1 legacy, 2 modern);
    /// otherwise whichever set-up the driver made (a QueuePFN means legacy).
    fn ring(&self, q: usize, version: Option<u32>) -> Result<Option<Ring>, Malformed> {
        let Some(qu) = self.queues.get(q) else {
            return Ok(None);
        };
        let event_idx = self.features & F_EVENT_IDX != 0;
        let legacy = match version {
            Some(1) => true,
            Some(2) => false,
            _ => qu.pfn_base != 0,
        };
        if legacy {
            if qu.pfn_base == 0 {
                return Ok(None);
            }
            return Ring::legacy(qu.pfn_base, qu.num, qu.align, event_idx)
                .map(Some)
                .ok_or(Malformed::LegacyLayout {
                    base: qu.pfn_base,
                    align: qu.align,
                });
        }
        Ok(qu.ready.then_some(Ring {
            desc: qu.desc,
            avail: qu.driver,
            used: qu.device,
            size: qu.num,
            event_idx,
        }))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub base: u64,
    pub size: u64,
    /// The Version register as the guest last read it (0: not read).
    pub version: u32,
    /// Its entry in the driven devices.
    driven: Option<u8>,
}

/// The counters of the report's `dma` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaStats {
    /// Writes to QueueNotify.
    pub notifies: u64,
    /// Of those, the ones whose queue was walked.
    pub walked: u64,
    /// Descriptors read in those walks.
    pub descriptors: u64,
    /// Notifies refused: the device would have reached private memory.
    pub private: u64,
    /// Notifies refused: a queue the walk could not follow.
    pub malformed: u64,
}

/// What hypmodel made of a notify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judged {
    /// The queue was walked; the notify is refused if the walk found a problem.
    Walked(Walk),
    /// Nothing judged (and why): forwarded.
    NotJudged(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notify {
    pub transport: Transport,
    pub queue: u32,
    pub judged: Judged,
}

pub const NO_SHARING: &str = "no memory sharing in this profile";
pub const NOT_SET_UP: &str = "queue not set up";
pub const BEYOND_QUEUES: &str = "a queue beyond the 8 hypmodel follows";
pub const PACKED: &str = "packed ring, not modelled";
pub const TOO_MANY_DEVICES: &str = "more devices driven than the 8 hypmodel follows";

impl Notify {
    /// The problem that refuses this notify, if any.
    pub fn refused(&self) -> Option<Problem> {
        match self.judged {
            Judged::Walked(w) => w.problem,
            Judged::NotJudged(_) => None,
        }
    }

    pub fn forward(&self) -> bool {
        self.refused().is_none()
    }

    /// `FAIL dma: <what>: queue Q of virtio-mmio@B: <detail>` (after `hypmodel: `), for a
    /// refused notify.
    pub fn fail_line(&self) -> Option<impl fmt::Display + '_> {
        self.refused().map(move |p| FailLine(self, p))
    }

    /// `dma notify queue Q of virtio-mmio@B: ... -> forwarded|refused` (after
    /// `hypmodel: trace cpuN `).
    pub fn trace_line(&self) -> impl fmt::Display + '_ {
        TraceLine(self)
    }
}

struct FailLine<'a>(&'a Notify, Problem);

impl fmt::Display for FailLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, p) = (self.0, self.1);
        write!(
            f,
            "FAIL dma: {}: queue {} of {}: {p}",
            p.what(),
            n.queue,
            n.transport
        )
    }
}

struct TraceLine<'a>(&'a Notify);

impl fmt::Display for TraceLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        write!(f, "dma notify queue {} of {}: ", n.queue, n.transport)?;
        match n.judged {
            Judged::NotJudged(why) => write!(f, "not judged ({why}) -> forwarded"),
            Judged::Walked(w) => {
                write!(
                    f,
                    "avail {}..{}: {} chains, {} descriptors",
                    w.from, w.to, w.chains, w.descriptors
                )?;
                match w.problem {
                    None => write!(f, ", all in shared memory -> forwarded"),
                    Some(p) => write!(f, ", then {}: {p} -> refused", p.what()),
                }
            }
        }
    }
}

/// The virtio transports hypmodel follows, and their counters.
#[derive(Clone, Copy, Debug)]
pub struct Dma {
    windows: [Window; MAX_MMIO_WINDOWS],
    nwin: usize,
    devs: [MmioDev; MAX_DRIVEN],
    ndev: usize,
    pub stats: DmaStats,
}

impl Default for Dma {
    fn default() -> Self {
        Dma::new()
    }
}

impl Dma {
    pub const fn new() -> Dma {
        Dma {
            windows: [Window {
                base: 0,
                size: 0,
                version: 0,
                driven: None,
            }; MAX_MMIO_WINDOWS],
            nwin: 0,
            devs: [MmioDev::new(0); MAX_DRIVEN],
            ndev: 0,
            stats: DmaStats {
                notifies: 0,
                walked: 0,
                descriptors: 0,
                private: 0,
                malformed: 0,
            },
        }
    }

    /// Adds a virtio-mmio window from the device tree; false when the table is full.
    pub fn add_mmio_window(&mut self, base: u64, size: u64) -> bool {
        let Some(w) = self.windows.get_mut(self.nwin) else {
            return false;
        };
        *w = Window {
            base,
            size,
            version: 0,
            driven: None,
        };
        self.nwin += 1;
        true
    }

    pub fn mmio_windows(&self) -> &[Window] {
        &self.windows[..self.nwin]
    }

    /// The window `[ipa, ipa + size)` falls in, and the register offset.
    fn window_of(&self, ipa: u64, size: u8) -> Option<(usize, u64)> {
        self.mmio_windows()
            .iter()
            .position(|w| {
                ipa >= w.base
                    && ipa.saturating_add(u64::from(size)) <= w.base.saturating_add(w.size)
            })
            .map(|i| (i, ipa - self.windows[i].base))
    }

    /// A forwarded read: the guest learns the window's Version, and so does hypmodel.
    pub fn on_read(&mut self, ipa: u64, size: u8, value: u64) {
        if let Some((i, REG_VERSION)) = self.window_of(ipa, size) {
            if size == 4 {
                self.windows[i].version = value as u32;
            }
        }
    }

    /// The driven device of window `i`, set up on first use.
    fn driven(&mut self, i: usize) -> Option<usize> {
        if let Some(d) = self.windows[i].driven {
            return Some(usize::from(d));
        }
        if self.ndev == MAX_DRIVEN {
            return None;
        }
        let d = self.ndev;
        self.devs[d] = MmioDev::new(i);
        self.windows[i].driven = Some(d as u8);
        self.ndev += 1;
        Some(d)
    }

    /// A forwarded write: follows the queue set-up; at QueueNotify, walks the queue
    /// (when `judge`: the profile shares memory) and says whether to perform the write.
    /// `None` for every other write (perform it).
    pub fn on_write(
        &mut self,
        ipa: u64,
        size: u8,
        value: u64,
        judge: bool,
        view: &dyn GuestView,
        bugs: WalkBugs,
    ) -> Option<Notify> {
        let (i, off) = self.window_of(ipa, size)?;
        // The registers are 32 bits wide: QEMU ignores other accesses to them.
        if size != 4 || off >= REGS_END || off % 4 != 0 {
            return None;
        }
        let v = value as u32;
        match off {
            REG_QUEUE_NOTIFY => return Some(self.notify(i, v & 0xffff, judge, view, bugs)),
            REG_STATUS => {
                if v == 0 {
                    if let Some(d) = self.windows[i].driven {
                        self.devs[usize::from(d)].reset();
                    }
                }
                return None;
            }
            REG_DRIVER_FEATURES
            | REG_DRIVER_FEATURES_SEL
            | REG_GUEST_PAGE_SIZE
            | REG_QUEUE_SEL
            | REG_QUEUE_NUM
            | REG_QUEUE_ALIGN
            | REG_QUEUE_PFN
            | REG_QUEUE_READY
            | REG_QUEUE_DESC_LOW..=REG_QUEUE_DEVICE_HIGH => {}
            _ => return None,
        }
        let d = self.driven(i)?;
        let dev = &mut self.devs[d];
        let lo = |old: u64| (old & !0xffff_ffff) | u64::from(v);
        let hi = |old: u64| (old & 0xffff_ffff) | (u64::from(v) << 32);
        match off {
            REG_DRIVER_FEATURES_SEL => dev.features_sel = v,
            REG_DRIVER_FEATURES => match dev.features_sel {
                0 => dev.features = lo(dev.features),
                1 => dev.features = hi(dev.features),
                _ => {}
            },
            // QEMU: log2 of the value, 0 when it is not below 2^32.
            REG_GUEST_PAGE_SIZE => dev.page_shift = v.trailing_zeros() % 32,
            REG_QUEUE_SEL => dev.sel = v,
            _ => {
                let shift = dev.page_shift;
                let q = dev.selected()?;
                match off {
                    REG_QUEUE_NUM => q.num = v,
                    REG_QUEUE_ALIGN => q.align = u64::from(v),
                    REG_QUEUE_PFN => q.pfn_base = u64::from(v) << shift,
                    REG_QUEUE_READY => q.ready = v & 1 != 0,
                    REG_QUEUE_DESC_LOW => q.desc = lo(q.desc),
                    REG_QUEUE_DESC_HIGH => q.desc = hi(q.desc),
                    REG_QUEUE_DRIVER_LOW => q.driver = lo(q.driver),
                    REG_QUEUE_DRIVER_HIGH => q.driver = hi(q.driver),
                    REG_QUEUE_DEVICE_LOW => q.device = lo(q.device),
                    REG_QUEUE_DEVICE_HIGH => q.device = hi(q.device),
                    _ => {}
                }
            }
        }
        None
    }

    fn notify(
        &mut self,
        i: usize,
        queue: u32,
        judge: bool,
        view: &dyn GuestView,
        bugs: WalkBugs,
    ) -> Notify {
        self.stats.notifies += 1;
        let w = self.windows[i];
        let out = |judged| Notify {
            transport: Transport::Mmio(w.base),
            queue,
            judged,
        };
        if !judge {
            return out(Judged::NotJudged(NO_SHARING));
        }
        let Some(d) = w.driven.map(usize::from) else {
            // Nothing set up on this window: no slot was needed so far. A full table means
            // hypmodel cannot follow this device.
            return out(Judged::NotJudged(if self.ndev == MAX_DRIVEN {
                TOO_MANY_DEVICES
            } else {
                NOT_SET_UP
            }));
        };
        let q = queue as usize;
        if q >= MAX_QUEUES {
            return out(Judged::NotJudged(BEYOND_QUEUES));
        }
        let dev = &mut self.devs[d];
        if dev.features & F_RING_PACKED != 0 {
            return out(Judged::NotJudged(PACKED));
        }
        let version = (w.version != 0).then_some(w.version);
        let next = dev.queues[q].next_avail;
        let walk = match dev.ring(q, version) {
            Ok(None) => return out(Judged::NotJudged(NOT_SET_UP)),
            Ok(Some(ring)) => virtq::walk(&ring, next, view, bugs),
            Err(m) => Walk {
                from: next,
                to: next,
                chains: 0,
                descriptors: 0,
                problem: Some(Problem::Malformed(m)),
            },
        };
        self.stats.walked += 1;
        self.stats.descriptors += u64::from(walk.descriptors);
        match walk.problem {
            // Walked up to the avail index: the next notify starts from there. A refused
            // entry stays unwalked, so every later notify of the queue is refused too
            // (the device would take that entry first) until the device is reset.
            None => dev.queues[q].next_avail = walk.to,
            Some(p) if p.is_private() => self.stats.private += 1,
            Some(_) => self.stats.malformed += 1,
        }
        out(Judged::Walked(walk))
    }

    /// Notifies refused so far: any fails the run.
    pub fn refused(&self) -> u64 {
        self.stats.private + self.stats.malformed
    }

    /// The report's line, after `hypmodel: `.
    pub fn report_line(&self) -> impl fmt::Display + '_ {
        let s = self.stats;
        DmaLine(s)
    }
}

struct DmaLine(DmaStats);

impl fmt::Display for DmaLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.0;
        write!(
            f,
            "dma notifies={} walked={} descriptors={} private={} malformed={}",
            s.notifies, s.walked, s.descriptors, s.private, s.malformed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtq::tests::{publish, FakeMem, BASE, PAGE};
    use crate::virtq::{Area, Reach, DESC_F_NEXT, DESC_F_WRITE};

    const WIN: u64 = 0x0a00_3e00;
    const OK: WalkBugs = WalkBugs { skips_last: false };

    fn dma() -> Dma {
        let mut d = Dma::new();
        for n in 0..32 {
            assert!(d.add_mmio_window(0x0a00_0000 + n * 0x200, 0x200));
        }
        assert!(!d.add_mmio_window(0x0b00_0000, 0x200), "32 at most");
        d
    }

    fn w(d: &mut Dma, m: &FakeMem, off: u64, v: u64) -> Option<Notify> {
        d.on_write(WIN + off, 4, v, true, m, OK)
    }

    /// A legacy virtio-rng: 8 entries at `BASE` (page 0: descriptors and avail ring,
    /// page 1: used ring), set up as Linux's virtio_mmio does.
    fn legacy_rng(d: &mut Dma, m: &FakeMem) {
        assert_eq!(w(d, m, REG_STATUS, 0), None);
        w(d, m, REG_GUEST_PAGE_SIZE, 4096);
        w(d, m, REG_QUEUE_SEL, 0);
        w(d, m, REG_QUEUE_NUM, 8);
        w(d, m, REG_QUEUE_ALIGN, 4096);
        w(d, m, REG_QUEUE_PFN, BASE >> 12);
        w(d, m, REG_STATUS, 0xf);
    }

    fn legacy_mem() -> (FakeMem, Ring) {
        let mut m = FakeMem::new(16);
        m.share(BASE).share(BASE + PAGE).share(BASE + 4 * PAGE);
        let r = Ring::legacy(BASE, 8, 4096, false).unwrap();
        m.put_desc(BASE, BASE + 4 * PAGE, 64, DESC_F_WRITE, 0);
        (m, r)
    }

    fn walked(n: &Notify) -> Walk {
        match n.judged {
            Judged::Walked(w) => w,
            j => panic!("not walked: {j:?}"),
        }
    }

    #[test]
    fn a_legacy_queue_is_walked_at_each_notify() {
        let mut d = dma();
        let (mut m, r) = legacy_mem();
        legacy_rng(&mut d, &m);
        publish(&mut m, &r, 0, &[0]);
        let n = w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap();
        assert_eq!(n.transport, Transport::Mmio(WIN));
        let wk = walked(&n);
        assert_eq!((wk.from, wk.to, wk.chains, wk.descriptors), (0, 1, 1, 1));
        assert!(n.forward() && n.fail_line().is_none());
        // The next notify starts where this one stopped.
        publish(&mut m, &r, 1, &[0, 0]);
        let wk = walked(&w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap());
        assert_eq!((wk.from, wk.to, wk.chains), (1, 3, 2));
        assert_eq!(
            d.stats,
            DmaStats {
                notifies: 2,
                walked: 2,
                descriptors: 3,
                private: 0,
                malformed: 0
            }
        );
        assert_eq!(
            d.report_line().to_string(),
            "dma notifies=2 walked=2 descriptors=3 private=0 malformed=0"
        );
    }

    #[test]
    fn a_private_buffer_refuses_the_notify_until_reset() {
        let mut d = dma();
        let (mut m, r) = legacy_mem();
        legacy_rng(&mut d, &m);
        m.put_desc(BASE, BASE + 5 * PAGE, 64, DESC_F_WRITE, 0);
        publish(&mut m, &r, 0, &[0]);
        let n = w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap();
        assert!(!n.forward());
        assert_eq!(
            n.fail_line().unwrap().to_string(),
            format!(
                "FAIL dma: device-writable buffer: queue 0 of virtio-mmio@0xa003e00: \
                 descriptor 0 [{:#x}, {:#x}) in private page {:#x}",
                BASE + 5 * PAGE,
                BASE + 5 * PAGE + 64,
                BASE + 5 * PAGE
            )
        );
        assert_eq!(
            n.trace_line().to_string(),
            format!(
                "dma notify queue 0 of virtio-mmio@0xa003e00: avail 0..1: 0 chains, 1 descriptors, \
                 then device-writable buffer: descriptor 0 [{:#x}, {:#x}) in private page {:#x} -> refused",
                BASE + 5 * PAGE,
                BASE + 5 * PAGE + 64,
                BASE + 5 * PAGE
            )
        );
        // The refused entry was not walked: the next notify walks it again (now shared).
        m.put_desc(BASE, BASE + 4 * PAGE, 64, DESC_F_WRITE, 0);
        assert!(w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap().forward());
        // A private one again, then a reset: the queue is forgotten, nothing to walk.
        m.put_desc(BASE + 16, BASE + 6 * PAGE, 64, DESC_F_WRITE, 0);
        publish(&mut m, &r, 1, &[1]);
        assert!(!w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap().forward());
        assert!(
            !w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap().forward(),
            "still"
        );
        assert_eq!(d.stats.private, 3);
        assert_eq!(d.refused(), 3);
        w(&mut d, &m, REG_STATUS, 0);
        let n = w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap();
        assert_eq!(n.judged, Judged::NotJudged(NOT_SET_UP));
        assert_eq!(
            n.trace_line().to_string(),
            "dma notify queue 0 of virtio-mmio@0xa003e00: not judged (queue not set up) -> forwarded"
        );
        // Set up again after the reset: the walk starts from avail entry 0.
        legacy_rng(&mut d, &m);
        publish(&mut m, &r, 0, &[0]);
        let wk = walked(&w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap());
        assert_eq!((wk.from, wk.to, wk.problem), (0, 1, None));
    }

    #[test]
    fn a_modern_queue_from_its_three_addresses() {
        let mut d = dma();
        let mut m = FakeMem::new(16);
        m.share(BASE + PAGE)
            .share(BASE + 2 * PAGE)
            .share(BASE + 3 * PAGE);
        m.share(BASE + 4 * PAGE);
        // Version 2, read by the guest: PFN writes would mean nothing.
        d.on_read(WIN + REG_VERSION, 4, 2);
        w(&mut d, &m, REG_STATUS, 0);
        w(&mut d, &m, REG_DRIVER_FEATURES_SEL, 0);
        w(&mut d, &m, REG_DRIVER_FEATURES, F_EVENT_IDX);
        w(&mut d, &m, REG_QUEUE_SEL, 1);
        w(&mut d, &m, REG_QUEUE_NUM, 4);
        for (lo, a) in [
            (REG_QUEUE_DESC_LOW, BASE + PAGE),
            (REG_QUEUE_DRIVER_LOW, BASE + 2 * PAGE),
            (REG_QUEUE_DEVICE_LOW, BASE + 3 * PAGE),
        ] {
            w(&mut d, &m, lo, a & 0xffff_ffff);
            w(&mut d, &m, lo + 4, a >> 32);
        }
        let r = Ring {
            desc: BASE + PAGE,
            avail: BASE + 2 * PAGE,
            used: BASE + 3 * PAGE,
            size: 4,
            event_idx: true,
        };
        m.put_desc(r.desc, BASE + 4 * PAGE, 16, DESC_F_NEXT, 1);
        m.put_desc(r.desc + 16, BASE + 4 * PAGE + 16, 16, DESC_F_WRITE, 0);
        publish(&mut m, &r, 0, &[0]);
        let n = w(&mut d, &m, REG_QUEUE_NOTIFY, 1).unwrap();
        assert_eq!(n.judged, Judged::NotJudged(NOT_SET_UP), "not ready yet");
        w(&mut d, &m, REG_QUEUE_READY, 1);
        let n = w(&mut d, &m, REG_QUEUE_NOTIFY, 1).unwrap();
        assert_eq!(walked(&n).descriptors, 2);
        assert_eq!(
            n.trace_line().to_string(),
            "dma notify queue 1 of virtio-mmio@0xa003e00: avail 0..1: 1 chains, 2 descriptors, \
             all in shared memory -> forwarded"
        );
        // Queue 0 of the same device was never set up.
        let n = w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap();
        assert_eq!(n.judged, Judged::NotJudged(NOT_SET_UP));
        // A stale QueuePFN write is not a legacy queue on a modern transport.
        w(&mut d, &m, REG_QUEUE_SEL, 0);
        w(&mut d, &m, REG_QUEUE_PFN, 0x41000);
        let n = w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap();
        assert_eq!(n.judged, Judged::NotJudged(NOT_SET_UP));
        // Un-ready: not set up.
        w(&mut d, &m, REG_QUEUE_SEL, 1);
        w(&mut d, &m, REG_QUEUE_READY, 0);
        let n = w(&mut d, &m, REG_QUEUE_NOTIFY, 1).unwrap();
        assert_eq!(n.judged, Judged::NotJudged(NOT_SET_UP));
    }

    #[test]
    fn the_avail_ring_with_event_idx_must_be_shared_to_its_last_byte() {
        let mut d = dma();
        let mut m = FakeMem::new(16);
        m.share(BASE);
        d.on_read(WIN + REG_VERSION, 4, 2);
        w(&mut d, &m, REG_DRIVER_FEATURES_SEL, 0);
        w(&mut d, &m, REG_DRIVER_FEATURES, F_EVENT_IDX);
        w(&mut d, &m, REG_QUEUE_NUM, 8);
        // The avail ring's 20 entry bytes end at the page; used_event is in the next one.
        w(&mut d, &m, REG_QUEUE_DESC_LOW, BASE);
        w(&mut d, &m, REG_QUEUE_DRIVER_LOW, BASE + PAGE - 20);
        w(&mut d, &m, REG_QUEUE_DEVICE_LOW, BASE + 0x800);
        w(&mut d, &m, REG_QUEUE_READY, 1);
        let n = w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap();
        assert_eq!(
            n.refused(),
            Some(Problem::Private {
                what: Reach::Ring(Area::AvailRing),
                addr: BASE + PAGE - 20,
                len: 22,
                page: BASE + PAGE
            })
        );
        assert_eq!(
            n.fail_line().unwrap().to_string(),
            format!(
                "FAIL dma: avail ring: queue 0 of virtio-mmio@0xa003e00: avail ring [{:#x}, {:#x}) in private page {:#x}",
                BASE + PAGE - 20,
                BASE + PAGE + 2,
                BASE + PAGE
            )
        );
        // Without EVENT_IDX it fits.
        w(&mut d, &m, REG_DRIVER_FEATURES, 0);
        assert!(w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap().forward());
        // Packed rings are not modelled.
        w(&mut d, &m, REG_DRIVER_FEATURES_SEL, 1);
        w(&mut d, &m, REG_DRIVER_FEATURES, F_RING_PACKED >> 32);
        let n = w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap();
        assert_eq!(n.judged, Judged::NotJudged(PACKED));
    }

    #[test]
    fn nothing_is_judged_without_memory_sharing() {
        let mut d = dma();
        let (mut m, r) = legacy_mem();
        legacy_rng(&mut d, &m);
        m.put_desc(BASE, BASE + 9 * PAGE, 64, DESC_F_WRITE, 0);
        publish(&mut m, &r, 0, &[0]);
        let n = d
            .on_write(WIN + REG_QUEUE_NOTIFY, 4, 0, false, &m, OK)
            .unwrap();
        assert_eq!(n.judged, Judged::NotJudged(NO_SHARING));
        assert!(n.forward());
        assert_eq!((d.stats.notifies, d.stats.walked, d.refused()), (1, 0, 0));
    }

    #[test]
    fn writes_that_are_not_queue_registers() {
        let mut d = dma();
        let (m, _) = legacy_mem();
        // Outside every window, device config space, not 32 bits, not aligned.
        assert_eq!(d.on_write(0x0900_0000, 4, 0, true, &m, OK), None);
        assert_eq!(d.on_write(WIN + 0x100, 4, 0, true, &m, OK), None);
        assert_eq!(d.on_write(WIN + REG_QUEUE_NOTIFY, 2, 0, true, &m, OK), None);
        assert_eq!(
            d.on_write(WIN + REG_QUEUE_NOTIFY + 1, 1, 0, true, &m, OK),
            None
        );
        // Straddling the end of a window.
        assert_eq!(d.on_write(0x0a00_3ffe, 4, 0, true, &m, OK), None);
        assert_eq!(d.stats.notifies, 0);
        // A notify on a window nothing was set up on.
        let n = d
            .on_write(0x0a00_0000 + REG_QUEUE_NOTIFY, 4, 3, true, &m, OK)
            .unwrap();
        assert_eq!((n.queue, n.judged), (3, Judged::NotJudged(NOT_SET_UP)));
        // The queue index is the low 16 bits (NOTIFICATION_DATA puts more above).
        let n = w(&mut d, &m, REG_QUEUE_NOTIFY, 0x0005_0002).unwrap();
        assert_eq!(n.queue, 2);
        // Queue registers beyond the queues hypmodel follows are ignored.
        w(&mut d, &m, REG_QUEUE_SEL, 9);
        w(&mut d, &m, REG_QUEUE_PFN, BASE >> 12);
        let n = w(&mut d, &m, REG_QUEUE_NOTIFY, 9).unwrap();
        assert_eq!(n.judged, Judged::NotJudged(BEYOND_QUEUES));
    }

    #[test]
    fn at_most_eight_devices_are_followed() {
        let mut d = dma();
        let (m, _) = legacy_mem();
        for n in 0..9u64 {
            let base = 0x0a00_0000 + n * 0x200;
            d.on_write(base + REG_QUEUE_PFN, 4, BASE >> 12, true, &m, OK);
        }
        let n = d
            .on_write(
                0x0a00_0000 + 8 * 0x200 + REG_QUEUE_NOTIFY,
                4,
                0,
                true,
                &m,
                OK,
            )
            .unwrap();
        assert_eq!(n.judged, Judged::NotJudged(TOO_MANY_DEVICES));
        let n = d
            .on_write(0x0a00_0000 + REG_QUEUE_NOTIFY, 4, 0, true, &m, OK)
            .unwrap();
        assert!(matches!(n.judged, Judged::Walked(_)), "the first eight are");
    }

    #[test]
    fn legacy_page_size_and_a_bad_alignment() {
        let mut d = dma();
        let (mut m, _) = legacy_mem();
        // GuestPageSize 16 KiB: the PFN counts 16 KiB pages.
        m.share_all();
        w(&mut d, &m, REG_GUEST_PAGE_SIZE, 0x4000);
        w(&mut d, &m, REG_QUEUE_NUM, 8);
        w(&mut d, &m, REG_QUEUE_PFN, BASE >> 14);
        let r = Ring::legacy(BASE, 8, 4096, false).unwrap();
        publish(&mut m, &r, 0, &[0]);
        assert!(walked(&w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap())
            .problem
            .is_none());
        w(&mut d, &m, REG_QUEUE_ALIGN, 0);
        let n = w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap();
        assert_eq!(
            n.refused(),
            Some(Problem::Malformed(Malformed::LegacyLayout {
                base: BASE,
                align: 0
            }))
        );
        assert_eq!(d.stats.malformed, 1);
        assert_eq!(
            n.fail_line().unwrap().to_string(),
            format!(
                "FAIL dma: malformed queue: queue 0 of virtio-mmio@0xa003e00: legacy queue at {BASE:#x} \
                 with QueueAlign 0x0 has no place for its used ring"
            )
        );
        // The page size survives a reset (QEMU keeps it; Linux writes it once, at probe).
        w(&mut d, &m, REG_STATUS, 0);
        w(&mut d, &m, REG_QUEUE_NUM, 8);
        w(&mut d, &m, REG_QUEUE_PFN, BASE >> 14);
        assert!(w(&mut d, &m, REG_QUEUE_NOTIFY, 0).unwrap().forward());
    }
}
