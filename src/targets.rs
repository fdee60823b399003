//! Probe targets: device pages where a real device answers a known value, so that an abort
//! on such a page proves the *hypervisor* refused the access (a hole in the machine's map
//! aborts too, with the same syndrome, and proves nothing).

use crate::platform::{Device, Platform, Region};
use alloc::collections::BTreeSet;
use alloc::vec::Vec;

pub const PAGE: u64 = 0x1000;

/// What answers at a probe target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TargetKind {
    Pl011,
    Pl030,
    Pl031,
    Pl061,
    VirtioMmio,
    PciConfig,
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pl011 => "pl011",
            Self::Pl030 => "pl030",
            Self::Pl031 => "pl031",
            Self::Pl061 => "pl061",
            Self::VirtioMmio => "virtio-mmio",
            Self::PciConfig => "pci-config",
        }
    }

    /// Preference when picking a target: devices with a page of their own and a known ID
    /// first, then virtio-mmio windows (which share pages), then PCI configuration space
    /// (whose answer is not known in advance).
    fn rank(self) -> u8 {
        match self {
            Self::VirtioMmio => 1,
            Self::PciConfig => 2,
            Self::Pl011 | Self::Pl030 | Self::Pl031 | Self::Pl061 => 0,
        }
    }
}

impl core::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A device register with a known value, on a page the guest may probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// What answers there, for result lines.
    pub device: TargetKind,
    /// Base of the device's registers (page aligned for every device listed here).
    pub base: u64,
    /// Offset and expected value of a read-only identification register (32 bits); no
    /// value where any answer will do (PCI configuration space: a function that is not
    /// there reads all ones, which is still an answer, not an abort).
    pub id_offset: u64,
    pub id_value: Option<u32>,
    /// Offset of a read/write register whose writes read back, if the device has one.
    pub rw_offset: Option<u64>,
}

impl Target {
    pub fn page(&self) -> u64 {
        self.base & !(PAGE - 1)
    }
    pub fn id_addr(&self) -> u64 {
        self.base + self.id_offset
    }
    /// The expected ID, for messages.
    pub fn expected(&self) -> alloc::string::String {
        match self.id_value {
            Some(v) => alloc::format!("{v:#x}"),
            None => alloc::string::String::from("any answer"),
        }
    }

    /// Whether `v` is what the device answers at its ID register.
    pub fn answers(&self, v: u32) -> bool {
        self.id_value.is_none_or(|id| id == v)
    }
}

/// Offsets into a PCI configuration window probed as targets: pages in consecutive 4 KiB,
/// 16 KiB and 64 KiB granules, so the neighbour check finds a pair at every granule; the
/// same again 1 MiB in (bus 1 on ECAM), which the virtio layer's scan of bus 0 never
/// registers, so that pages never registered remain for the checks that need them.
const PCI_CONFIG_OFFSETS: [u64; 12] = [
    0, 0x1000, 0x4000, 0x8000, 0x10000, 0x20000, 0x10_0000, 0x10_1000, 0x10_4000, 0x10_8000,
    0x11_0000, 0x12_0000,
];

/// crosvm's RTC: a PrimeCell known only by its `arm,primecell-periphid`.
const PL030_PERIPHID: u32 = 0x0004_1030;

/// The devices ioguard knows an identification register of.
fn known(d: &Device) -> Option<(TargetKind, u64, u32, Option<u64>)> {
    Some(match d.compatible.as_str() {
        // PrimeCell peripheral ID0 at 0xfe0 (crosvm implements the ID registers); the
        // match register (0x004) is read/write.
        "arm,primecell" if d.periphid == Some(PL030_PERIPHID) => {
            (TargetKind::Pl030, 0xfe0, 0x30, Some(0x004))
        }
        // PrimeCell peripheral ID0 at 0xfe0; PL031's match register (0x004) is read/write.
        "arm,pl031" => (TargetKind::Pl031, 0xfe0, 0x31, Some(0x004)),
        "arm,pl061" => (TargetKind::Pl061, 0xfe0, 0x61, None),
        "arm,pl011" => (TargetKind::Pl011, 0xfe0, 0x11, None),
        // Magic "virt".
        "virtio,mmio" => (TargetKind::VirtioMmio, 0x000, 0x7472_6976, None),
        _ => return None,
    })
}

/// Every probe target of the platform, in address order, leaving out the pages drivers
/// hold (`held`: the console's, registered for the whole run) and anything that overlaps
/// RAM.
pub fn targets(p: &Platform, held: &BTreeSet<u64>) -> Vec<Target> {
    let mut out: Vec<Target> = p
        .devices
        .iter()
        .filter_map(|d| {
            let (device, id_offset, id_value, rw_offset) = known(d)?;
            let r = d.regs.first()?;
            let fits = r.size >= id_offset + 4 && r.base % 4 == 0;
            let page = r.base & !(PAGE - 1);
            let in_ram = p
                .memory
                .iter()
                .any(|m| m.overlaps(&Region::new(page, PAGE)));
            (fits && !held.contains(&page) && !in_ram).then_some(Target {
                device,
                base: r.base,
                id_offset,
                id_value: Some(id_value),
                rw_offset,
            })
        })
        .collect();
    for host in &p.pci {
        for off in PCI_CONFIG_OFFSETS {
            let page = host.config.base + off;
            if off + PAGE <= host.config.size && !held.contains(&page) {
                out.push(Target {
                    device: TargetKind::PciConfig,
                    base: page,
                    id_offset: 0,
                    id_value: None,
                    rw_offset: None,
                });
            }
        }
    }
    out.sort_unstable_by_key(|t| t.base);
    out
}

/// The first target that has a read/write register.
pub fn writable(ts: &[Target]) -> Option<Target> {
    ts.iter().copied().find(|t| t.rw_offset.is_some())
}

/// A target other than those in `avoid`'s granules (granule `g`), in the order of
/// `TargetKind::rank`, then by address.
pub fn pick(ts: &[Target], g: u64, avoid: &[u64]) -> Option<Target> {
    let free = |t: &&Target| !avoid.iter().any(|a| a & !(g - 1) == t.base & !(g - 1));
    ts.iter()
        .filter(free)
        .min_by_key(|t| (t.device.rank(), t.base))
        .copied()
}

/// Two targets in consecutive granules, for the neighbour check: registering the first
/// must not forward the second.
pub fn neighbours(ts: &[Target], g: u64) -> Option<(Target, Target)> {
    ts.iter().find_map(|a| {
        let next = (a.base & !(g - 1)).checked_add(g)?;
        ts.iter()
            .find(|b| b.base & !(g - 1) == next)
            .map(|b| (*a, *b))
    })
}

/// Two targets in one granule (different windows), for the refcount check.
pub fn same_granule(ts: &[Target], g: u64) -> Option<(Target, Target)> {
    ts.iter().enumerate().find_map(|(i, a)| {
        ts[i + 1..]
            .iter()
            .find(|b| b.base & !(g - 1) == a.base & !(g - 1))
            .map(|b| (*a, *b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{Conduit, Console, Device, UartKind};
    use alloc::string::{String, ToString};
    use alloc::vec;

    fn dev(compatible: &str, base: u64, size: u64) -> Device {
        Device {
            path: alloc::format!("/dev@{base:x}"),
            compatible: compatible.to_string(),
            regs: vec![Region::new(base, size)],
            periphid: None,
        }
    }

    fn virt() -> Platform {
        let mut devices = vec![
            dev("arm,pl011", 0x0900_0000, 0x1000),
            dev("arm,pl031", 0x0901_0000, 0x1000),
            dev("qemu,fw-cfg-mmio", 0x0902_0000, 0x18),
            dev("arm,pl061", 0x0903_0000, 0x1000),
        ];
        for i in 0..32 {
            devices.push(dev("virtio,mmio", 0x0a00_0000 + i * 0x200, 0x200));
        }
        Platform {
            model: "virt".into(),
            memory: vec![Region::new(0x4000_0000, 0x1000_0000)],
            console: Console {
                path: "/pl011@9000000".into(),
                kind: UartKind::Pl011,
                region: Region::new(0x0900_0000, 0x1000),
            },
            console_source: crate::platform::ConsoleSource::StdoutPath,
            psci: Conduit::Hvc,
            bootargs: String::new(),
            cpus: vec![0],
            virtio_mmio: vec![],
            pci: vec![crate::platform::PciHost {
                path: "/pcie@10000000".into(),
                ecam: true,
                config: Region::new(0x3f00_0000, 0x100_0000),
                windows: vec![],
                memory_region: None,
            }],
            pci_probe_only: false,
            dma_pools: vec![],
            devices,
        }
    }

    fn console() -> BTreeSet<u64> {
        BTreeSet::from([0x0900_0000])
    }

    #[test]
    fn crosvms_pl030_is_known_by_its_periphid_only() {
        let mut p = virt();
        p.pci.clear();
        let mut rtc = dev("arm,primecell", 0x2000, 0x1000);
        p.devices = vec![rtc.clone()];
        assert!(targets(&p, &console()).is_empty(), "no periphid, no target");
        rtc.periphid = Some(0x0004_1031);
        p.devices = vec![rtc.clone()];
        assert!(targets(&p, &console()).is_empty(), "another PrimeCell");
        rtc.periphid = Some(0x0004_1030);
        p.devices = vec![rtc];
        let ts = targets(&p, &console());
        assert_eq!(ts.len(), 1);
        assert_eq!(ts[0].device.name(), "pl030");
        assert_eq!((ts[0].id_addr(), ts[0].id_value), (0x2fe0, Some(0x30)));
        assert_eq!(writable(&ts).unwrap().rw_offset, Some(0x004));
    }

    #[test]
    fn qemu_virt_targets() {
        let ts = targets(&virt(), &console());
        // The console's PL011 is left out; fw_cfg has no known ID register.
        assert_eq!(ts[0].device, TargetKind::Pl031);
        assert_eq!(ts[0].id_addr(), 0x0901_0fe0);
        assert_eq!(ts[1].device, TargetKind::Pl061);
        assert_eq!(
            ts.iter()
                .filter(|t| t.device == TargetKind::VirtioMmio)
                .count(),
            32
        );
        assert_eq!(
            ts.iter()
                .filter(|t| t.device == TargetKind::PciConfig)
                .count(),
            12
        );
        // Pages on bus 1, which a scan of bus 0 never registers.
        assert!(ts.iter().any(|t| t.base == 0x3f00_0000 + 0x10_1000));
        assert_eq!(writable(&ts).unwrap().device, TargetKind::Pl031);
    }

    #[test]
    fn held_pages_are_not_targets() {
        let all = targets(&virt(), &BTreeSet::new());
        assert_eq!(all[0].device, TargetKind::Pl011);
        let held = BTreeSet::from([0x0901_0000, 0x3f00_1000]);
        let ts = targets(&virt(), &held);
        assert!(ts.iter().all(|t| !held.contains(&t.page())));
        assert_eq!(ts.len(), all.len() - 2);
    }

    #[test]
    fn picking() {
        let ts = targets(&virt(), &console());
        assert_eq!(pick(&ts, 0x1000, &[]).unwrap().device, TargetKind::Pl031);
        assert_eq!(
            pick(&ts, 0x1000, &[0x0901_0000]).unwrap().device,
            TargetKind::Pl061
        );
        // With 64 KiB granules the PL031 and PL061 granules differ, the PL011's is avoided.
        assert_eq!(
            pick(&ts, 0x10000, &[0x0901_0000, 0x0903_0000])
                .unwrap()
                .device,
            TargetKind::VirtioMmio
        );
        let (a, b) = neighbours(&ts, 0x1000).unwrap();
        assert_eq!((a.base, b.base), (0x0a00_0000, 0x0a00_1000));
        // At 16 and 64 KiB only PCI configuration space has targets in consecutive granules.
        let (a, b) = neighbours(&ts, 0x4000).unwrap();
        assert_eq!((a.base, b.base), (0x3f00_0000, 0x3f00_4000));
        let (a, b) = neighbours(&ts, 0x10000).unwrap();
        assert_eq!((a.base, b.base), (0x3f00_0000, 0x3f01_0000));
        // PCI configuration space is picked last.
        let only_pci: Vec<Target> = ts
            .iter()
            .copied()
            .filter(|t| t.device == TargetKind::PciConfig)
            .collect();
        assert_eq!(
            pick(&only_pci, 0x1000, &[0x3f00_0000]).unwrap().base,
            0x3f00_1000
        );
        assert!(ts
            .iter()
            .find(|t| t.device == TargetKind::PciConfig)
            .unwrap()
            .answers(0xffff_ffff));
        assert!(!ts[0].answers(0));
        let (a, b) = same_granule(&ts, 0x1000).unwrap();
        assert_eq!((a.base, b.base), (0x0a00_0000, 0x0a00_0200));
    }

    #[test]
    fn devices_in_ram_or_too_small_are_not_targets() {
        let mut p = virt();
        p.pci = vec![];
        p.devices = vec![
            dev("arm,pl031", 0x4000_1000, 0x1000),
            dev("arm,pl061", 0x0903_0000, 0x100),
        ];
        assert!(targets(&p, &console()).is_empty());
    }

    #[test]
    fn kinds_and_pages() {
        let names: Vec<String> = [
            TargetKind::Pl011,
            TargetKind::Pl031,
            TargetKind::Pl061,
            TargetKind::VirtioMmio,
            TargetKind::PciConfig,
        ]
        .iter()
        .map(|k| alloc::format!("{k}"))
        .collect();
        assert_eq!(
            names,
            ["pl011", "pl031", "pl061", "virtio-mmio", "pci-config"]
        );
        assert!(TargetKind::Pl061.rank() < TargetKind::VirtioMmio.rank());
        assert!(TargetKind::VirtioMmio.rank() < TargetKind::PciConfig.rank());
        let t = Target {
            device: TargetKind::VirtioMmio,
            base: 0x0a00_0e00,
            id_offset: 0,
            id_value: Some(0x7472_6976),
            rw_offset: None,
        };
        assert_eq!(t.page(), 0x0a00_0000);
        assert_eq!(t.expected(), "0x74726976");
        let any = Target {
            id_value: None,
            ..t
        };
        assert_eq!(any.expected(), "any answer");
    }

    #[test]
    fn windows_that_do_not_start_a_page_are_targets_of_their_page() {
        let mut p = virt();
        p.pci = vec![];
        // A device whose registers start inside a page, next to RAM's end.
        p.devices = vec![dev("arm,pl031", 0x0901_0800, 0x1000)];
        let held = BTreeSet::from([0x0901_0000]);
        assert!(targets(&p, &held).is_empty(), "its page is held");
        let ts = targets(&p, &BTreeSet::new());
        assert_eq!(ts.len(), 1);
        // Two windows in one 4 KiB page, not at its start, share the granule.
        let a = Target {
            base: 0x0a00_0200,
            ..ts[0]
        };
        let b = Target {
            base: 0x0a00_0400,
            ..ts[0]
        };
        assert!(same_granule(&[a, b], 0x1000).is_some());
        let c = Target {
            base: 0x0a00_1400,
            ..ts[0]
        };
        assert!(same_granule(&[a, c], 0x1000).is_none());
    }
}
