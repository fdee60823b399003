//! What the guest tells its virtio devices about DMA memory, and the check at each notify.
//!
//! hypmodel performs every forwarded access itself, so it sees each write to a virtio
//! transport with its IPA and value:
//! - virtio-mmio windows (the device tree's `compatible = "virtio,mmio"` nodes): per
//!   window and per QueueSel, the legacy set-up (GuestPageSize, QueueNum, QueueAlign,
//!   QueuePFN) or the modern one (QueueNum, QueueDesc/Driver/Device Low/High, QueueReady);
//! - virtio-pci (modern) functions behind a `pci-host-ecam-generic` bridge: a write in the
//!   bridge's memory ranges is located in the common configuration or notification
//!   structure of a virtio function (`pci.rs` finds them in config space, read again
//!   after the guest wrote to the ECAM), and the common configuration's queue_select,
//!   queue_size, queue_enable and queue_desc/driver/device (64-bit, or two 32-bit
//!   halves) are followed, field by field as QEMU's device takes them.
//!
//! Both follow the driver's EVENT_IDX and RING_PACKED features; a device reset (status
//! written 0) forgets the device's queues.
//!
//! At every notify hypmodel walks the queue as the device is about to (`virtq::walk`):
//! under a profile with memory sharing (a protected VM, whose memory is private unless
//! shared) the rings and every buffer must lie in pages the guest shared; if not, the
//! notify is refused (not performed: the host could not have read the request, so the
//! device never sees it). Without memory sharing the notifies are counted and nothing is
//! judged.

use crate::pci::{self, ConfigSpace, PciHost, VirtioPci, MAX_VIRTIO_PCI};
use crate::virtq::{self, GuestView, Malformed, Problem, Ring, Walk, WalkBugs};
use core::fmt;

/// QEMU `virt` has 32 virtio-mmio transports.
pub const MAX_MMIO_WINDOWS: usize = 32;
/// virtio-mmio windows whose queues hypmodel follows at once (the first ones set up).
pub const MAX_DRIVEN: usize = 8;
/// Queues followed per device (queue index 0..8).
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

// virtio-pci common configuration (virtio 1.x section 4.1.4.3), by byte offset.
const COMMON_DRIVER_FEATURE_SELECT: u64 = 0x08;
const COMMON_DRIVER_FEATURE: u64 = 0x0c;
const COMMON_DEVICE_STATUS: u64 = 0x14;
const COMMON_QUEUE_SELECT: u64 = 0x16;
const COMMON_QUEUE_SIZE: u64 = 0x18;
const COMMON_QUEUE_ENABLE: u64 = 0x1c;
const COMMON_QUEUE_DESC: u64 = 0x20;
const COMMON_QUEUE_DESC_HI: u64 = 0x24;
const COMMON_QUEUE_DRIVER: u64 = 0x28;
const COMMON_QUEUE_DRIVER_HI: u64 = 0x2c;
const COMMON_QUEUE_DEVICE: u64 = 0x30;
const COMMON_QUEUE_DEVICE_HI: u64 = 0x34;

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
    /// A virtio-pci function, by bus << 8 | device << 3 | function.
    Pci(u16),
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Transport::Mmio(base) => write!(f, "virtio-mmio@{base:#x}"),
            Transport::Pci(bdf) => write!(
                f,
                "virtio-pci@{:02x}:{:02x}.{}",
                bdf >> 8,
                (bdf >> 3) & 0x1f,
                bdf & 7
            ),
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
    /// Modern: QueueReady / queue_enable.
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

/// What a driver told one device, whatever the transport.
#[derive(Clone, Copy, Debug)]
struct Driver {
    sel: u32,
    features_sel: u32,
    features: u64,
    queues: [Queue; MAX_QUEUES],
}

impl Driver {
    const fn new() -> Driver {
        Driver {
            sel: 0,
            features_sel: 0,
            features: 0,
            queues: [QUEUE_RESET; MAX_QUEUES],
        }
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.sel as usize)
    }

    /// The driver's feature word `features_sel` (0: bits 0..31, 1: bits 32..63).
    fn set_features_word(&mut self, v: u32) {
        let shift = match self.features_sel {
            0 => 0,
            1 => 32,
            _ => return,
        };
        self.features = (self.features & !(0xffff_ffff << shift)) | (u64::from(v) << shift);
    }

    fn event_idx(&self) -> bool {
        self.features & F_EVENT_IDX != 0
    }

    /// A modern queue: its three addresses, once enabled.
    fn modern_ring(&self, q: usize) -> Option<Ring> {
        let qu = self.queues.get(q)?;
        qu.ready.then_some(Ring {
            desc: qu.desc,
            avail: qu.driver,
            used: qu.device,
            size: qu.num,
            event_idx: self.event_idx(),
        })
    }
}

/// The set-up of one driven virtio-mmio device.
#[derive(Clone, Copy, Debug)]
struct MmioDev {
    /// log2 of GuestPageSize (legacy; kept across resets, as QEMU does).
    page_shift: u32,
    drv: Driver,
}

impl MmioDev {
    const fn new() -> MmioDev {
        MmioDev {
            page_shift: 0,
            drv: Driver::new(),
        }
    }

    /// The ring of queue `q` as the device uses it, `Ok(None)` when it has none.
    /// `version`: the window's Version, if the guest read it (1 legacy, 2 modern);
    /// otherwise whichever set-up the driver made (a QueuePFN means legacy).
    fn ring(&self, q: usize, version: Option<u32>) -> Result<Option<Ring>, Malformed> {
        let Some(qu) = self.drv.queues.get(q) else {
            return Ok(None);
        };
        let legacy = match version {
            Some(1) => true,
            Some(2) => false,
            _ => qu.pfn_base != 0,
        };
        if !legacy {
            return Ok(self.drv.modern_ring(q));
        }
        if qu.pfn_base == 0 {
            return Ok(None);
        }
        Ring::legacy(qu.pfn_base, qu.num, qu.align, self.drv.event_idx())
            .map(Some)
            .ok_or(Malformed::LegacyLayout {
                base: qu.pfn_base,
                align: qu.align,
            })
    }

    /// A 32-bit write to register `off` (not Status, not QueueNotify).
    fn write(&mut self, off: u64, v: u32) {
        let lo = |old: u64| (old & !0xffff_ffff) | u64::from(v);
        let hi = |old: u64| (old & 0xffff_ffff) | (u64::from(v) << 32);
        let shift = self.page_shift;
        let drv = &mut self.drv;
        match off {
            REG_DRIVER_FEATURES_SEL => drv.features_sel = v,
            REG_DRIVER_FEATURES => drv.set_features_word(v),
            // QEMU: log2 of the value, 0 when it is not below 2^32.
            REG_GUEST_PAGE_SIZE => self.page_shift = v.trailing_zeros() % 32,
            REG_QUEUE_SEL => drv.sel = v,
            _ => {
                let Some(q) = drv.selected() else {
                    return;
                };
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
    }
}

/// A virtio-pci function and what its driver told it.
#[derive(Clone, Copy, Debug)]
struct PciDev {
    f: VirtioPci,
    drv: Driver,
}

/// QEMU's VIRTIO_QUEUE_MAX: a larger queue_select is ignored.
const PCI_QUEUE_MAX: u64 = 1024;

impl PciDev {
    /// A write to the common configuration at `off`, as QEMU's device takes it: by the
    /// field that starts at `off`, with the value as written (a write elsewhere in a
    /// field is ignored); an 8-byte write comes as two 4-byte ones.
    fn common_write(&mut self, off: u64, size: u8, value: u64) {
        if size == 8 {
            self.common_field(off, value & 0xffff_ffff);
            self.common_field(off + 4, value >> 32);
        } else {
            self.common_field(off, value);
        }
    }

    fn common_field(&mut self, off: u64, v: u64) {
        let drv = &mut self.drv;
        let v32 = v as u32;
        let lo = |old: u64| (old & !0xffff_ffff) | u64::from(v32);
        let hi = |old: u64| (old & 0xffff_ffff) | (u64::from(v32) << 32);
        match off {
            COMMON_DRIVER_FEATURE_SELECT => drv.features_sel = v32,
            COMMON_DRIVER_FEATURE => drv.set_features_word(v32),
            COMMON_DEVICE_STATUS if v & 0xff == 0 => *drv = Driver::new(),
            COMMON_QUEUE_SELECT if v < PCI_QUEUE_MAX => drv.sel = v32,
            _ => {
                let Some(q) = drv.selected() else {
                    return;
                };
                match off {
                    COMMON_QUEUE_SIZE => q.num = v32,
                    // QEMU takes only 1 (a 0 is an error it reports and ignores).
                    COMMON_QUEUE_ENABLE if v == 1 => q.ready = true,
                    COMMON_QUEUE_DESC => q.desc = lo(q.desc),
                    COMMON_QUEUE_DESC_HI => q.desc = hi(q.desc),
                    COMMON_QUEUE_DRIVER => q.driver = lo(q.driver),
                    COMMON_QUEUE_DRIVER_HI => q.driver = hi(q.driver),
                    COMMON_QUEUE_DEVICE => q.device = lo(q.device),
                    COMMON_QUEUE_DEVICE_HI => q.device = hi(q.device),
                    _ => {}
                }
            }
        }
    }
}

/// A virtio-mmio window of the device tree.
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
    pci: Option<PciHost>,
    /// The guest wrote to the ECAM since the last scan: BARs may have moved.
    pci_dirty: bool,
    pdevs: [PciDev; MAX_VIRTIO_PCI],
    npdev: usize,
    pub stats: DmaStats,
}

impl Default for Dma {
    fn default() -> Self {
        Dma::new()
    }
}

/// The devices' side of a forwarded write: what it reads, where it writes.
pub struct DmaEnv<'a> {
    /// Does the profile judge DMA (memory sharing)?
    pub judge: bool,
    pub view: &'a dyn GuestView,
    /// Config space, for virtio-pci.
    pub cfg: &'a dyn ConfigSpace,
    pub bugs: WalkBugs,
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
            devs: [MmioDev::new(); MAX_DRIVEN],
            ndev: 0,
            pci: None,
            pci_dirty: true,
            pdevs: [PciDev {
                f: VirtioPci {
                    bdf: 0,
                    common: pci::Region { base: 0, len: 0 },
                    notify: pci::Region { base: 0, len: 0 },
                    notify_off_multiplier: 0,
                },
                drv: Driver::new(),
            }; MAX_VIRTIO_PCI],
            npdev: 0,
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

    /// The PCI host bridge whose virtio functions hypmodel follows.
    pub fn set_pci_host(&mut self, h: PciHost) {
        self.pci = Some(h);
        self.pci_dirty = true;
    }

    pub fn pci_host(&self) -> Option<&PciHost> {
        self.pci.as_ref()
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

    /// A forwarded read: the guest learns a window's Version, and so does hypmodel.
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
        self.devs[d] = MmioDev::new();
        self.windows[i].driven = Some(d as u8);
        self.ndev += 1;
        Some(d)
    }

    /// A forwarded write: follows the queue set-ups; at a notify, walks the queue (when
    /// `a.judge`: the profile shares memory) and says whether to perform the write.
    /// `None` for every other write (perform it).
    pub fn on_write(&mut self, ipa: u64, size: u8, value: u64, a: &DmaEnv<'_>) -> Option<Notify> {
        if let Some((i, off)) = self.window_of(ipa, size) {
            return self.mmio_write(i, off, size, value, a);
        }
        let host = self.pci?;
        if host.in_ecam(ipa) {
            self.pci_dirty = true;
            return None;
        }
        if !host.in_memory(ipa, u64::from(size)) {
            return None;
        }
        self.pci_write(&host, ipa, size, value, a)
    }

    fn mmio_write(
        &mut self,
        i: usize,
        off: u64,
        size: u8,
        value: u64,
        a: &DmaEnv<'_>,
    ) -> Option<Notify> {
        // The registers are 32 bits wide: QEMU ignores other accesses to them.
        if size != 4 || off >= REGS_END || !off.is_multiple_of(4) {
            return None;
        }
        let v = value as u32;
        match off {
            REG_QUEUE_NOTIFY => {
                let w = self.windows[i];
                let version = (w.version != 0).then_some(w.version);
                let queue = v & 0xffff;
                let dev = match w.driven {
                    Some(d) => Ok(&mut self.devs[usize::from(d)]),
                    None if self.ndev == MAX_DRIVEN => Err(TOO_MANY_DEVICES),
                    None => Err(NOT_SET_UP),
                };
                let ring = dev.as_ref().ok().map(|d| d.ring(queue as usize, version));
                let judged = judge(
                    &mut self.stats,
                    dev.map(|d| &mut d.drv),
                    queue,
                    ring.unwrap_or(Ok(None)),
                    a,
                );
                Some(Notify {
                    transport: Transport::Mmio(w.base),
                    queue,
                    judged,
                })
            }
            REG_STATUS => {
                if v == 0 {
                    if let Some(d) = self.windows[i].driven {
                        self.devs[usize::from(d)].drv = Driver::new();
                    }
                }
                None
            }
            REG_DRIVER_FEATURES
            | REG_DRIVER_FEATURES_SEL
            | REG_GUEST_PAGE_SIZE
            | REG_QUEUE_SEL
            | REG_QUEUE_NUM
            | REG_QUEUE_ALIGN
            | REG_QUEUE_PFN
            | REG_QUEUE_READY
            | REG_QUEUE_DESC_LOW..=REG_QUEUE_DEVICE_HIGH => {
                let d = self.driven(i)?;
                self.devs[d].write(off, v);
                None
            }
            _ => None,
        }
    }

    /// Reads the virtio functions behind the bridge again, keeping what their drivers
    /// told each function that is still there.
    fn rescan(&mut self, host: &PciHost, cfg: &dyn ConfigSpace) {
        let found = pci::scan(host, cfg);
        let old = self.pdevs;
        let nold = self.npdev;
        for (k, f) in found.fns().iter().enumerate() {
            let drv = old[..nold]
                .iter()
                .find(|p| p.f.bdf == f.bdf)
                .map_or(Driver::new(), |p| p.drv);
            self.pdevs[k] = PciDev { f: *f, drv };
        }
        self.npdev = found.n;
        self.pci_dirty = false;
    }

    fn pci_write(
        &mut self,
        host: &PciHost,
        ipa: u64,
        size: u8,
        value: u64,
        a: &DmaEnv<'_>,
    ) -> Option<Notify> {
        if self.pci_dirty {
            self.rescan(host, a.cfg);
        }
        let len = u64::from(size);
        let n = self.npdev;
        let d = self.pdevs[..n]
            .iter()
            .position(|p| p.f.common.holds(ipa, len) || p.f.notify.holds(ipa, len))?;
        let dev = &mut self.pdevs[d];
        if dev.f.common.holds(ipa, len) {
            dev.common_write(ipa - dev.f.common.base, size, value);
            return None;
        }
        // The device takes the queue from the address: QEMU (and crosvm) give queue q
        // the notify offset q, so the address says q × notify_off_multiplier. With a
        // multiplier of 0 every queue shares one address and the value names it.
        let mult = u64::from(dev.f.notify_off_multiplier);
        let queue = match mult {
            0 => value as u32 & 0xffff,
            m => ((ipa - dev.f.notify.base) / m) as u32,
        };
        let ring = Ok(dev.drv.modern_ring(queue as usize));
        let judged = judge(&mut self.stats, Ok(&mut dev.drv), queue, ring, a);
        Some(Notify {
            transport: Transport::Pci(dev.f.bdf),
            queue,
            judged,
        })
    }

    /// Notifies refused so far: any fails the run.
    pub fn refused(&self) -> u64 {
        self.stats.private + self.stats.malformed
    }

    /// The report's line, after `hypmodel: `.
    pub fn report_line(&self) -> impl fmt::Display + '_ {
        DmaLine(self.stats)
    }
}

/// A notify of `queue` of a device with driver state `drv` (or none, and why) and that
/// queue's ring as the device sees it: walked, counted, judged.
fn judge(
    stats: &mut DmaStats,
    drv: Result<&mut Driver, &'static str>,
    queue: u32,
    ring: Result<Option<Ring>, Malformed>,
    a: &DmaEnv<'_>,
) -> Judged {
    stats.notifies += 1;
    if !a.judge {
        return Judged::NotJudged(NO_SHARING);
    }
    let drv = match drv {
        Ok(d) => d,
        Err(why) => return Judged::NotJudged(why),
    };
    let Some(qu) = drv.queues.get_mut(queue as usize) else {
        return Judged::NotJudged(BEYOND_QUEUES);
    };
    if drv.features & F_RING_PACKED != 0 {
        return Judged::NotJudged(PACKED);
    }
    let next = qu.next_avail;
    let walk = match ring {
        Ok(None) => return Judged::NotJudged(NOT_SET_UP),
        Ok(Some(ring)) => virtq::walk(&ring, next, a.view, a.bugs),
        Err(m) => Walk {
            from: next,
            to: next,
            chains: 0,
            descriptors: 0,
            problem: Some(Problem::Malformed(m)),
        },
    };
    stats.walked += 1;
    stats.descriptors += u64::from(walk.descriptors);
    match walk.problem {
        // Walked up to the avail index: the next notify starts from there. A refused
        // entry stays unwalked, so every later notify of the queue is refused too
        // (the device would take that entry first) until the device is reset.
        None => qu.next_avail = walk.to,
        Some(p) if p.is_private() => stats.private += 1,
        Some(_) => stats.malformed += 1,
    }
    Judged::Walked(walk)
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

    struct NoPci;
    impl ConfigSpace for NoPci {
        fn read32(&self, _: u64) -> Option<u32> {
            None
        }
    }

    fn acc(m: &FakeMem, judge: bool) -> DmaEnv<'_> {
        DmaEnv {
            judge,
            view: m,
            cfg: &NoPci,
            bugs: OK,
        }
    }

    fn w(d: &mut Dma, m: &FakeMem, off: u64, v: u64) -> Option<Notify> {
        d.on_write(WIN + off, 4, v, &acc(m, true))
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
            .on_write(WIN + REG_QUEUE_NOTIFY, 4, 0, &acc(&m, false))
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
        assert_eq!(d.on_write(0x0900_0000, 4, 0, &acc(&m, true)), None);
        assert_eq!(d.on_write(WIN + 0x100, 4, 0, &acc(&m, true)), None);
        assert_eq!(
            d.on_write(WIN + REG_QUEUE_NOTIFY, 2, 0, &acc(&m, true)),
            None
        );
        assert_eq!(
            d.on_write(WIN + REG_QUEUE_NOTIFY + 1, 1, 0, &acc(&m, true)),
            None
        );
        // Straddling the end of a window.
        assert_eq!(d.on_write(0x0a00_3ffe, 4, 0, &acc(&m, true)), None);
        assert_eq!(d.stats.notifies, 0);
        // A notify on a window nothing was set up on.
        let n = d
            .on_write(0x0a00_0000 + REG_QUEUE_NOTIFY, 4, 3, &acc(&m, true))
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
            d.on_write(base + REG_QUEUE_PFN, 4, BASE >> 12, &acc(&m, true));
        }
        let n = d
            .on_write(
                0x0a00_0000 + 8 * 0x200 + REG_QUEUE_NOTIFY,
                4,
                0,
                &acc(&m, true),
            )
            .unwrap();
        assert_eq!(n.judged, Judged::NotJudged(TOO_MANY_DEVICES));
        let n = d
            .on_write(0x0a00_0000 + REG_QUEUE_NOTIFY, 4, 0, &acc(&m, true))
            .unwrap();
        assert!(matches!(n.judged, Judged::Walked(_)), "the first eight are");
    }

    mod pci {
        use super::*;
        use crate::pci::tests::{qemu_host, FakeCfg, ECAM, MEM32};
        use crate::pci::PciHost;

        const BAR4: u64 = MEM32 + 0x4000;
        const COMMON: u64 = BAR4;
        const NOTIFY: u64 = BAR4 + 0x3000;
        const FN: u16 = 1 << 3; // 00:01.0

        fn env<'a>(m: &'a FakeMem, c: &'a FakeCfg) -> DmaEnv<'a> {
            DmaEnv {
                judge: true,
                view: m,
                cfg: c,
                bugs: OK,
            }
        }

        fn setup() -> (Dma, FakeMem, FakeCfg, PciHost) {
            let h = qemu_host();
            let mut c = FakeCfg::default();
            c.virtio(&h, FN, 0x1044, BAR4);
            let mut d = Dma::new();
            d.set_pci_host(h);
            let mut m = FakeMem::new(16);
            for p in 0..5 {
                m.share(BASE + p * PAGE);
            }
            (d, m, c, h)
        }

        /// A queue of 8 at BASE + PAGE (descriptors), + 2 pages (avail), + 3 (used), set
        /// up as Linux's virtio_pci_modern does (64-bit fields as halves, or whole).
        fn queue(d: &mut Dma, m: &FakeMem, c: &FakeCfg, q: u64) -> Ring {
            let e = env(m, c);
            for (off, size, v) in [
                (COMMON_DEVICE_STATUS, 1, 0),
                (COMMON_DEVICE_STATUS, 1, 3),
                (COMMON_DRIVER_FEATURE_SELECT, 4, 1),
                (COMMON_DRIVER_FEATURE, 4, 1), // VIRTIO_F_VERSION_1
                (COMMON_QUEUE_SELECT, 2, q),
                (COMMON_QUEUE_SIZE, 2, 8),
                (COMMON_QUEUE_DESC, 4, (BASE + PAGE) & 0xffff_ffff),
                (COMMON_QUEUE_DESC + 4, 4, (BASE + PAGE) >> 32),
                (COMMON_QUEUE_DRIVER, 8, BASE + 2 * PAGE),
                (COMMON_QUEUE_DEVICE, 4, (BASE + 3 * PAGE) & 0xffff_ffff),
                (COMMON_QUEUE_DEVICE_HI, 4, (BASE + 3 * PAGE) >> 32),
                (COMMON_QUEUE_ENABLE, 2, 1),
            ] {
                assert_eq!(d.on_write(COMMON + off, size, v, &e), None);
            }
            Ring {
                desc: BASE + PAGE,
                avail: BASE + 2 * PAGE,
                used: BASE + 3 * PAGE,
                size: 8,
                event_idx: false,
            }
        }

        fn notify(d: &mut Dma, m: &FakeMem, c: &FakeCfg, at: u64, v: u64) -> Option<Notify> {
            d.on_write(at, 2, v, &env(m, c))
        }

        #[test]
        fn a_modern_pci_queue_is_walked_at_its_notify_address() {
            let (mut d, mut m, c, _) = setup();
            let r = queue(&mut d, &m, &c, 1);
            m.put_desc(r.desc, BASE + 4 * PAGE, 16, DESC_F_WRITE, 0);
            publish(&mut m, &r, 0, &[0]);
            // Queue 1's notify address: offset 1 × multiplier 4.
            let n = notify(&mut d, &m, &c, NOTIFY + 4, 1).unwrap();
            assert_eq!(n.transport, Transport::Pci(FN));
            assert_eq!(n.queue, 1);
            assert_eq!(walked(&n).descriptors, 1);
            assert_eq!(
                n.trace_line().to_string(),
                "dma notify queue 1 of virtio-pci@00:01.0: avail 0..1: 1 chains, 1 descriptors, \
                 all in shared memory -> forwarded"
            );
            // Queue 0 was never set up.
            let n = notify(&mut d, &m, &c, NOTIFY, 0).unwrap();
            assert_eq!((n.queue, n.judged), (0, Judged::NotJudged(NOT_SET_UP)));
            // A private buffer.
            m.put_desc(r.desc + 16, BASE + 9 * PAGE, 16, DESC_F_WRITE, 0);
            publish(&mut m, &r, 1, &[1]);
            let n = notify(&mut d, &m, &c, NOTIFY + 4, 1).unwrap();
            assert_eq!(
                n.fail_line().unwrap().to_string(),
                format!(
                    "FAIL dma: device-writable buffer: queue 1 of virtio-pci@00:01.0: \
                     descriptor 1 [{:#x}, {:#x}) in private page {:#x}",
                    BASE + 9 * PAGE,
                    BASE + 9 * PAGE + 16,
                    BASE + 9 * PAGE
                )
            );
            // Device reset: the queues are gone.
            d.on_write(COMMON + COMMON_DEVICE_STATUS, 1, 0, &env(&m, &c));
            let n = notify(&mut d, &m, &c, NOTIFY + 4, 1).unwrap();
            assert_eq!(n.judged, Judged::NotJudged(NOT_SET_UP));
        }

        #[test]
        fn config_space_is_read_again_after_the_guest_writes_to_it() {
            let (mut d, mut m, mut c, h) = setup();
            let r = queue(&mut d, &m, &c, 0);
            m.put_desc(r.desc, BASE + 4 * PAGE, 16, DESC_F_WRITE, 0);
            publish(&mut m, &r, 0, &[0]);
            assert!(notify(&mut d, &m, &c, NOTIFY, 0).unwrap().forward());
            // Scanned once, on the first write in the bridge's memory.
            let reads = c.reads.get();
            assert!(notify(&mut d, &m, &c, NOTIFY, 0).unwrap().forward());
            assert_eq!(c.reads.get(), reads, "no ECAM write, no new scan");
            // The guest moves BAR 4 through the ECAM.
            let moved = MEM32 + 0x10_0000;
            c.virtio(&h, FN, 0x1044, moved);
            assert_eq!(d.on_write(h.cfg(FN, 0x20), 4, moved, &env(&m, &c)), None);
            assert_eq!(notify(&mut d, &m, &c, NOTIFY, 0), None, "the old place");
            assert!(c.reads.get() > reads);
            // The queue's set-up and walk position came along.
            publish(&mut m, &r, 1, &[0]);
            let wk = walked(&notify(&mut d, &m, &c, moved + 0x3000, 0).unwrap());
            assert_eq!((wk.from, wk.to), (1, 2));
            // Writes in the bridge's memory that are no virtio structure, and outside it.
            assert_eq!(notify(&mut d, &m, &c, moved + 0x1000, 0), None, "ISR");
            assert_eq!(notify(&mut d, &m, &c, 0x3eff_0000, 0), None, "I/O space");
            assert!(h.in_ecam(ECAM));
        }

        #[test]
        fn a_multiplier_of_zero_takes_the_queue_from_the_value() {
            let (mut d, mut m, mut c, h) = setup();
            c.set(&h, FN, 0x74, 0);
            let r = queue(&mut d, &m, &c, 2);
            publish(&mut m, &r, 0, &[]);
            let n = notify(&mut d, &m, &c, NOTIFY, 2).unwrap();
            assert_eq!(n.queue, 2);
            assert!(matches!(n.judged, Judged::Walked(_)));
        }

        #[test]
        fn common_configuration_writes_as_the_device_takes_them() {
            let (mut d, mut m, c, _) = setup();
            let r = queue(&mut d, &m, &c, 0);
            publish(&mut m, &r, 0, &[]);
            let walks = |d: &mut Dma, q: u64| {
                let n = d.on_write(NOTIFY + 4 * q, 2, q, &env(&m, &c)).unwrap();
                matches!(n.judged, Judged::Walked(Walk { problem: None, .. }))
            };
            assert!(walks(&mut d, 0));
            let e = env(&m, &c);
            // Ignored by the device, so by hypmodel: a byte inside a field, a queue_select
            // of 1024 or more (a 32-bit write at 0x16 carries queue_size along), a
            // queue_enable of 0.
            d.on_write(COMMON + COMMON_QUEUE_DESC + 1, 1, 0x77, &e);
            d.on_write(COMMON + COMMON_QUEUE_SELECT, 4, 0x0008_0001, &e);
            d.on_write(COMMON + COMMON_QUEUE_ENABLE, 2, 0, &e);
            assert!(walks(&mut d, 0), "queue 0 as it was");
            // queue_select 1, then its fields: queue 1, not queue 0.
            d.on_write(COMMON + COMMON_QUEUE_SELECT, 2, 1, &e);
            d.on_write(COMMON + COMMON_QUEUE_SIZE, 2, 0, &e);
            d.on_write(COMMON + COMMON_QUEUE_ENABLE, 2, 1, &e);
            assert!(walks(&mut d, 0));
            let n = d.on_write(NOTIFY + 4, 2, 1, &e).unwrap();
            assert!(matches!(
                n.refused(),
                Some(Problem::Malformed(Malformed::QueueSize(0)))
            ));
            // A status byte of 0 resets; one with bits set does not.
            d.on_write(COMMON + COMMON_DEVICE_STATUS, 1, 0x0f, &e);
            assert!(walks(&mut d, 0));
            d.on_write(COMMON + COMMON_DEVICE_STATUS, 1, 0, &e);
            assert!(!walks(&mut d, 0));
        }

        #[test]
        fn pci_transport_names() {
            assert_eq!(Transport::Pci(0x03ff).to_string(), "virtio-pci@03:1f.7");
            assert_eq!(Transport::Pci(0).to_string(), "virtio-pci@00:00.0");
        }
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
