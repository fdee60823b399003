//! virtio-pci (modern) as hypmodel finds it: the PCI host bridge from the device tree
//! (`pci-host-ecam-generic`: its ECAM `reg`, `bus-range` and memory `ranges`), then, from
//! config space read at EL2, the virtio functions behind it (vendor 0x1af4), the BARs the
//! guest assigned them, and in those BARs the common configuration and notification
//! structures their vendor-specific capabilities point to (virtio 1.x section 4.1.4).
//!
//! Pure: config space comes in through [`ConfigSpace`], so the scan is unit-tested on the
//! host with a fake one. Every loop is bounded: buses by the bus range, capabilities by
//! [`MAX_CAPS`].

use crate::fdt::Node;

/// Memory ranges of a host bridge hypmodel keeps.
pub const MAX_PCI_RANGES: usize = 4;
/// virtio functions followed.
pub const MAX_VIRTIO_PCI: usize = 8;
pub const VENDOR_VIRTIO: u16 = 0x1af4;
/// virtio device IDs: transitional 0x1000..0x103f, modern 0x1040..0x107f.
const VIRTIO_IDS: core::ops::RangeInclusive<u16> = 0x1000..=0x107f;
/// Capabilities read per function at most (a list that loops ends there).
pub const MAX_CAPS: usize = 48;

// Config space (PCI 3.0 type 0/1 headers) and virtio's capability (virtio 1.x 4.1.4).
const CFG_COMMAND: u64 = 0x04;
const COMMAND_MEMORY: u32 = 1 << 1;
const STATUS_CAP_LIST: u32 = 1 << (16 + 4);
const CFG_HEADER: u64 = 0x0c;
const CFG_BAR0: u64 = 0x10;
const CFG_BUS_NUMBERS: u64 = 0x18;
const CFG_CAP_PTR: u64 = 0x34;
const CAP_ID_VENDOR: u8 = 0x09;
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const BARS: u8 = 6;

/// Reads one aligned 32-bit word of config space, by its ECAM address; `None` when the
/// bus answers with an abort.
pub trait ConfigSpace {
    fn read32(&self, addr: u64) -> Option<u32>;
}

/// A memory range of the bridge: PCI addresses from `pci` map to CPU addresses from `cpu`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciRange {
    pub pci: u64,
    pub cpu: u64,
    pub size: u64,
}

/// A `pci-host-ecam-generic` host bridge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciHost {
    pub ecam: u64,
    pub ecam_size: u64,
    pub bus_start: u8,
    pub bus_end: u8,
    pub ranges: [PciRange; MAX_PCI_RANGES],
    pub nranges: usize,
}

fn be32(b: &[u8], i: usize) -> Option<u32> {
    let w = b.get(4 * i..4 * i + 4)?;
    Some(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

fn cells(b: &[u8], i: usize, n: u32) -> Option<u64> {
    match n {
        1 => be32(b, i).map(u64::from),
        2 => Some((u64::from(be32(b, i)?) << 32) | u64::from(be32(b, i + 1)?)),
        _ => None,
    }
}

impl PciHost {
    /// From the bridge's node: `reg` (ECAM), `bus-range` (default: what the ECAM holds),
    /// the 32- and 64-bit memory `ranges` (PCI address 3 cells, CPU address the root's
    /// cells, size 2 cells). `None` without an ECAM.
    pub fn from_node(n: &Node<'_>) -> Option<PciHost> {
        let (ecam, ecam_size) = n.reg(0)?;
        let buses = (ecam_size >> 20).clamp(1, 256) as u32;
        let (bus_start, bus_end) = match (be32(n.bus_range, 0), be32(n.bus_range, 1)) {
            (Some(a), Some(b)) if a <= b && b < 256 => (a, b),
            _ => (0, buses - 1),
        };
        // The ECAM starts at `bus_start`'s config space and holds no more than it holds.
        let (bus_start, bus_end) = (bus_start as u8, bus_end.min(bus_start + buses - 1) as u8);
        let mut h = PciHost {
            ecam,
            ecam_size,
            bus_start,
            bus_end,
            ..PciHost::default()
        };
        let pac = n.cells.0;
        let step = (3 + pac + 2) as usize;
        let words = n.ranges.len() / 4;
        for e in 0..words / step {
            let i = e * step;
            let (Some(hi), Some(pci), Some(cpu), Some(size)) = (
                be32(n.ranges, i),
                cells(n.ranges, i + 1, 2),
                cells(n.ranges, i + 3, pac),
                cells(n.ranges, i + 3 + pac as usize, 2),
            ) else {
                break;
            };
            // Space code (bits 25:24): 2 = 32-bit memory, 3 = 64-bit memory.
            if (hi >> 24) & 3 >= 2 && h.nranges < MAX_PCI_RANGES {
                h.ranges[h.nranges] = PciRange { pci, cpu, size };
                h.nranges += 1;
            }
        }
        Some(h)
    }

    pub fn ranges(&self) -> &[PciRange] {
        &self.ranges[..self.nranges]
    }

    /// Is `[a, a + len)` in the bridge's memory ranges (CPU addresses)?
    pub fn in_memory(&self, a: u64, len: u64) -> bool {
        self.ranges()
            .iter()
            .any(|r| a >= r.cpu && a.saturating_add(len) <= r.cpu.saturating_add(r.size))
    }

    pub fn in_ecam(&self, a: u64) -> bool {
        a >= self.ecam && a - self.ecam < self.ecam_size
    }

    /// The CPU address of PCI memory address `pci`, if a range holds it.
    pub fn to_cpu(&self, pci: u64) -> Option<u64> {
        self.ranges()
            .iter()
            .find(|r| pci >= r.pci && pci - r.pci < r.size)
            .map(|r| r.cpu + (pci - r.pci))
    }

    /// The ECAM address of register `off` of bus/device/function `bdf` (a bus in the
    /// bus range: the ECAM starts at `bus_start`).
    pub fn cfg(&self, bdf: u16, off: u64) -> u64 {
        let rel = bdf.wrapping_sub(u16::from(self.bus_start) << 8);
        self.ecam + (u64::from(rel) << 12) + off
    }
}

/// A region of guest-physical address space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub len: u64,
}

impl Region {
    pub fn holds(&self, a: u64, len: u64) -> bool {
        a >= self.base && a.saturating_add(len) <= self.base.saturating_add(self.len)
    }
}

/// A virtio function: where its common configuration and notification structures are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioPci {
    /// bus << 8 | device << 3 | function.
    pub bdf: u16,
    pub common: Region,
    pub notify: Region,
    pub notify_off_multiplier: u32,
}

/// The functions found by one scan.
#[derive(Clone, Copy, Debug, Default)]
pub struct Found {
    pub fns: [VirtioPci; MAX_VIRTIO_PCI],
    pub n: usize,
}

impl Found {
    pub fn fns(&self) -> &[VirtioPci] {
        &self.fns[..self.n]
    }
}

struct Scan<'a> {
    host: &'a PciHost,
    cfg: &'a dyn ConfigSpace,
}

/// Every virtio function the guest can reach through `host`: bus `bus_start`, and the
/// buses behind its bridges, within the bus range. A function whose memory decoding is
/// off, or whose structures are not in a memory BAR inside the ranges, is left out.
pub fn scan(host: &PciHost, cfg: &dyn ConfigSpace) -> Found {
    let s = Scan { host, cfg };
    let mut found = Found::default();
    let mut todo = [false; 256];
    todo[usize::from(host.bus_start)] = true;
    for bus in host.bus_start..=host.bus_end {
        if !todo[usize::from(bus)] {
            continue;
        }
        for dev in 0..32u16 {
            let bdf0 = (u16::from(bus) << 8) | (dev << 3);
            let Some(hdr) = s.present(bdf0) else {
                continue;
            };
            let nfn = if hdr & 0x80 != 0 { 8 } else { 1 };
            for f in 0..nfn {
                let bdf = bdf0 | f;
                let Some(hdr) = s.present(bdf) else {
                    continue;
                };
                if hdr & 0x7f == 1 {
                    // A bridge: its secondary bus is reachable.
                    if let Some(sec) = s.read(bdf, CFG_BUS_NUMBERS).map(|w| (w >> 8) as u8) {
                        if sec > bus && sec <= host.bus_end {
                            todo[usize::from(sec)] = true;
                        }
                    }
                } else if let Some(v) = s.virtio(bdf) {
                    if found.n < MAX_VIRTIO_PCI {
                        found.fns[found.n] = v;
                        found.n += 1;
                    }
                }
            }
        }
    }
    found
}

impl Scan<'_> {
    fn read(&self, bdf: u16, off: u64) -> Option<u32> {
        self.cfg.read32(self.host.cfg(bdf, off))
    }

    /// The header type byte of a function that exists.
    fn present(&self, bdf: u16) -> Option<u8> {
        let id = self.read(bdf, 0)?;
        if id & 0xffff == 0xffff || id & 0xffff == 0 {
            return None;
        }
        self.read(bdf, CFG_HEADER).map(|w| (w >> 16) as u8)
    }

    fn virtio(&self, bdf: u16) -> Option<VirtioPci> {
        let id = self.read(bdf, 0)?;
        if id as u16 != VENDOR_VIRTIO || !VIRTIO_IDS.contains(&((id >> 16) as u16)) {
            return None;
        }
        let cmd = self.read(bdf, CFG_COMMAND)?;
        if cmd & COMMAND_MEMORY == 0 || cmd & STATUS_CAP_LIST == 0 {
            return None;
        }
        let mut v = VirtioPci {
            bdf,
            ..VirtioPci::default()
        };
        let mut at = u64::from(self.read(bdf, CFG_CAP_PTR)? as u8 & !3);
        for _ in 0..MAX_CAPS {
            if at < 0x40 {
                break;
            }
            let w0 = self.read(bdf, at)?;
            let next = u64::from((w0 >> 8) as u8 & !3);
            if w0 as u8 == CAP_ID_VENDOR {
                let kind = (w0 >> 24) as u8;
                let first = match kind {
                    CAP_COMMON => v.common.len == 0,
                    CAP_NOTIFY => v.notify.len == 0,
                    _ => false,
                };
                if first {
                    if let Some(r) = self.structure(bdf, at) {
                        if kind == CAP_COMMON {
                            v.common = r;
                        } else {
                            v.notify = r;
                            v.notify_off_multiplier = self.read(bdf, at + 16)?;
                        }
                    }
                }
            }
            at = next;
        }
        (v.common.len > 0 && v.notify.len > 0).then_some(v)
    }

    /// Where a virtio capability at `at` says its structure is: BAR `bar`, `offset`,
    /// `length`, as a CPU address range.
    fn structure(&self, bdf: u16, at: u64) -> Option<Region> {
        let bar = self.read(bdf, at + 4)? as u8;
        let offset = self.read(bdf, at + 8)?;
        let len = self.read(bdf, at + 12)?;
        if bar >= BARS {
            return None;
        }
        let lo = self.read(bdf, CFG_BAR0 + 4 * u64::from(bar))?;
        if lo & 1 != 0 {
            return None; // an I/O BAR
        }
        let mut base = u64::from(lo & !0xf);
        if (lo >> 1) & 3 == 2 && bar + 1 < BARS {
            base |= u64::from(self.read(bdf, CFG_BAR0 + 4 * u64::from(bar + 1))?) << 32;
        }
        let pci = base.checked_add(u64::from(offset))?;
        let cpu = self.host.to_cpu(pci)?;
        Some(Region {
            base: cpu,
            len: u64::from(len),
        })
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::collections::BTreeMap;

    pub const ECAM: u64 = 0x40_1000_0000;
    pub const MEM32: u64 = 0x1000_0000;

    /// QEMU virt's bridge: high ECAM (256 buses), 32-bit memory at 0x10000000 and 64-bit
    /// memory at 0x80_0000_0000, both identity-mapped.
    pub fn qemu_host() -> PciHost {
        let mut h = PciHost {
            ecam: ECAM,
            ecam_size: 0x1000_0000,
            bus_start: 0,
            bus_end: 255,
            ..PciHost::default()
        };
        h.ranges[0] = PciRange {
            pci: MEM32,
            cpu: MEM32,
            size: 0x2eff_0000,
        };
        h.ranges[1] = PciRange {
            pci: 0x80_0000_0000,
            cpu: 0x80_0000_0000,
            size: 0x80_0000_0000,
        };
        h.nranges = 2;
        h
    }

    /// Config space as a map of ECAM word addresses; absent words read all ones.
    #[derive(Default)]
    pub struct FakeCfg {
        pub words: BTreeMap<u64, u32>,
        pub reads: std::cell::Cell<usize>,
    }

    impl ConfigSpace for FakeCfg {
        fn read32(&self, addr: u64) -> Option<u32> {
            self.reads.set(self.reads.get() + 1);
            assert_eq!(addr % 4, 0, "aligned reads only");
            Some(*self.words.get(&addr).unwrap_or(&0xffff_ffff))
        }
    }

    impl FakeCfg {
        pub fn set(&mut self, h: &PciHost, bdf: u16, off: u64, v: u32) {
            self.words.insert(h.cfg(bdf, off), v);
        }

        /// A modern virtio function as QEMU makes one: BAR 4 (64-bit memory) at `bar4`,
        /// common config at +0 (0x1000), notify at +0x3000 (0x1000, multiplier 4), caps
        /// at 0x40 (a non-vendor one first), 0x50, 0x64.
        pub fn virtio(&mut self, h: &PciHost, bdf: u16, device: u16, bar4: u64) {
            self.set(
                h,
                bdf,
                0,
                (u32::from(device) << 16) | u32::from(VENDOR_VIRTIO),
            );
            self.set(h, bdf, CFG_COMMAND, STATUS_CAP_LIST | COMMAND_MEMORY | 4);
            self.set(h, bdf, CFG_HEADER, 0);
            self.set(h, bdf, CFG_BAR0 + 16, (bar4 as u32) | 0b100);
            self.set(h, bdf, CFG_BAR0 + 20, (bar4 >> 32) as u32);
            self.set(h, bdf, CFG_CAP_PTR, 0x40);
            self.set(h, bdf, 0x40, 0x5011); // MSI-X, next 0x50
            let cap = |t: u32, next: u32| (t << 24) | (0x10 << 16) | (next << 8) | 0x09;
            self.set(h, bdf, 0x50, cap(1, 0x64));
            self.set(h, bdf, 0x54, 4);
            self.set(h, bdf, 0x58, 0);
            self.set(h, bdf, 0x5c, 0x1000);
            self.set(h, bdf, 0x64, cap(2, 0));
            self.set(h, bdf, 0x68, 4);
            self.set(h, bdf, 0x6c, 0x3000);
            self.set(h, bdf, 0x70, 0x1000);
            self.set(h, bdf, 0x74, 4);
        }
    }

    fn bdf(bus: u16, dev: u16, f: u16) -> u16 {
        (bus << 8) | (dev << 3) | f
    }

    #[test]
    fn finds_a_modern_virtio_function_and_its_structures() {
        let h = qemu_host();
        let mut c = FakeCfg::default();
        // A host bridge at 00:00.0 (not virtio), the virtio function at 00:01.0.
        c.set(&h, 0, 0, 0x0008_1b36);
        c.set(&h, 0, CFG_HEADER, 0);
        c.virtio(&h, bdf(0, 1, 0), 0x1044, 0x1000_4000);
        let f = scan(&h, &c);
        assert_eq!(
            f.fns(),
            &[VirtioPci {
                bdf: 8,
                common: Region {
                    base: 0x1000_4000,
                    len: 0x1000
                },
                notify: Region {
                    base: 0x1000_7000,
                    len: 0x1000
                },
                notify_off_multiplier: 4,
            }]
        );
        // Bus 0 only: 32 devices' first words and two functions' headers, not 8192.
        assert!(c.reads.get() < 100, "{} reads", c.reads.get());
    }

    #[test]
    fn functions_it_leaves_out() {
        let h = qemu_host();
        let mut c = FakeCfg::default();
        // Memory decoding off.
        c.virtio(&h, bdf(0, 1, 0), 0x1041, 0x1000_0000);
        c.set(&h, bdf(0, 1, 0), CFG_COMMAND, STATUS_CAP_LIST);
        // Not virtio's vendor; a virtio vendor with a device ID outside virtio's.
        c.virtio(&h, bdf(0, 2, 0), 0x1041, 0x1001_0000);
        c.set(&h, bdf(0, 2, 0), 0, 0x1041_8086);
        c.virtio(&h, bdf(0, 3, 0), 0x1100, 0x1002_0000);
        // BAR outside the bridge's ranges (not assigned yet: 0).
        c.virtio(&h, bdf(0, 4, 0), 0x1041, 0);
        // No notify capability.
        c.virtio(&h, bdf(0, 5, 0), 0x1041, 0x1003_0000);
        c.set(&h, bdf(0, 5, 0), 0x64, 0x09);
        // An I/O BAR.
        c.virtio(&h, bdf(0, 6, 0), 0x1041, 0x1004_0000);
        c.set(&h, bdf(0, 6, 0), CFG_BAR0 + 16, 0x1001);
        // A capability index past the six BARs.
        c.virtio(&h, bdf(0, 7, 0), 0x1041, 0x1005_0000);
        c.set(&h, bdf(0, 7, 0), 0x54, 6);
        assert_eq!(scan(&h, &c).n, 0);
        // A transitional ID (legacy and modern) is virtio.
        c.virtio(&h, bdf(0, 8, 0), 0x1005, 0x1006_0000);
        assert_eq!(scan(&h, &c).fns()[0].bdf, bdf(0, 8, 0));
    }

    #[test]
    fn a_looping_capability_list_ends() {
        let h = qemu_host();
        let mut c = FakeCfg::default();
        c.virtio(&h, bdf(0, 1, 0), 0x1041, 0x1000_0000);
        c.set(&h, bdf(0, 1, 0), 0x40, 0x4011); // points at itself
        let before = c.reads.get();
        assert_eq!(scan(&h, &c).n, 0);
        assert!(c.reads.get() - before < 32 * 2 + MAX_CAPS + 10);
    }

    #[test]
    fn buses_behind_bridges_and_functions_of_multifunction_devices() {
        let h = qemu_host();
        let mut c = FakeCfg::default();
        // A PCIe root port at 00:02.0 (type 1 header), secondary bus 3.
        c.set(&h, bdf(0, 2, 0), 0, 0x000c_1b36);
        c.set(&h, bdf(0, 2, 0), CFG_HEADER, 1 << 16);
        c.set(&h, bdf(0, 2, 0), CFG_BUS_NUMBERS, 0x0003_0300);
        c.virtio(&h, bdf(3, 0, 0), 0x1042, 0x80_0000_0000);
        // A multifunction device at 00:04: function 0 something else, function 2 virtio.
        c.set(&h, bdf(0, 4, 0), 0, 0x0001_1234);
        c.set(&h, bdf(0, 4, 0), CFG_HEADER, 0x80 << 16);
        c.virtio(&h, bdf(0, 4, 2), 0x1043, 0x1000_8000);
        let f = scan(&h, &c);
        let bdfs: Vec<u16> = f.fns().iter().map(|v| v.bdf).collect();
        assert_eq!(bdfs, vec![bdf(0, 4, 2), bdf(3, 0, 0)]);
        assert_eq!(f.fns()[1].common.base, 0x80_0000_0000);
        // Bus 5 is not behind any bridge: never read.
        c.virtio(&h, bdf(5, 0, 0), 0x1042, 0x1001_0000);
        assert_eq!(scan(&h, &c).n, 2);
    }

    #[test]
    fn the_host_from_qemus_node() {
        use crate::fdt::Node;
        let be = |v: &[u32]| -> Vec<u8> { v.iter().flat_map(|c| c.to_be_bytes()).collect() };
        let reg = be(&[0x40, 0x1000_0000, 0, 0x1000_0000]);
        let ranges = be(&[
            0x0100_0000,
            0,
            0,
            0,
            0x3eff_0000,
            0,
            0x1_0000, // I/O
            0x0200_0000,
            0,
            0x1000_0000,
            0,
            0x1000_0000,
            0,
            0x2eff_0000, // 32-bit memory
            0x0300_0000,
            0x80,
            0,
            0x80,
            0,
            0x80,
            0, // 64-bit memory
        ]);
        let buses = be(&[0, 0xff]);
        let n = Node {
            name: b"pcie@10000000",
            compatible: b"pci-host-ecam-generic\0",
            reg: &reg,
            ranges: &ranges,
            bus_range: &buses,
            cells: (2, 2),
        };
        let h = PciHost::from_node(&n).unwrap();
        assert_eq!(h, qemu_host());
        assert!(h.in_memory(0x1000_0000, 4) && h.in_memory(0x80_0000_0000, 8));
        assert!(!h.in_memory(0x3eff_0000, 4), "I/O space is not memory");
        assert!(!h.in_memory(0x3eff_0000 - 2, 4), "straddles the end");
        assert!(h.in_ecam(ECAM) && h.in_ecam(ECAM + 0xfff_ffff) && !h.in_ecam(ECAM - 1));
        assert_eq!(
            h.cfg(bdf(1, 2, 3), 0x10),
            ECAM + (1 << 20) + (2 << 15) + (3 << 12) + 0x10
        );
        assert_eq!(h.to_cpu(0x1000_0010), Some(0x1000_0010));
        assert_eq!(h.to_cpu(0x3f00_0000), None);
        let one = be(&[2, 2]);
        let h = PciHost::from_node(&Node {
            bus_range: &one,
            ..n
        })
        .unwrap();
        assert_eq!((h.bus_start, h.bus_end), (2, 2));
        assert_eq!(
            h.cfg(bdf(2, 1, 0), 4),
            ECAM + (1 << 15) + 4,
            "relative to bus 2"
        );
        // A bus range larger than the ECAM is cut to it.
        let many = be(&[0, 0xff]);
        let small = be(&[0, 0x3f00_0000, 0, 0x100_0000]);
        let h = PciHost::from_node(&Node {
            reg: &small,
            bus_range: &many,
            ..n
        })
        .unwrap();
        assert_eq!(h.bus_end, 15);
        // Without bus-range: as many buses as the ECAM holds.
        let small = be(&[0, 0x3f00_0000, 0, 0x100_0000]);
        let h = PciHost::from_node(&Node {
            reg: &small,
            bus_range: &[],
            ..n
        })
        .unwrap();
        assert_eq!((h.ecam, h.bus_start, h.bus_end), (0x3f00_0000, 0, 15));
        assert!(PciHost::from_node(&Node { reg: &[], ..n }).is_none());
    }
}
