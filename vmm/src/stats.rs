//! Exit counts, the unclaimed accesses the guest makes on purpose, and their report.

use std::fmt;

use crate::devices::bus::DeviceKind;
use crate::nisv::Access;

/// Unclaimed accesses shown one line each; the rest only counted.
pub const SHOWN: u32 = 8;

#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub uart: u64,
    pub rtc: u64,
    pub virtio: u64,
    pub pci_config: u64,
    pub unclaimed_reads: u64,
    pub unclaimed_writes: u64,
    pub first_unclaimed: Option<u64>,
    pub system_event: u64,
    /// Accesses without a valid syndrome (KVM_EXIT_ARM_NISV, or KVM_RUN's ENOSYS).
    pub nisv: u64,
    pub first_nisv: Option<u64>,
    pub other: u64,
}

impl Stats {
    /// Counts an MMIO exit; for an unclaimed one returns the line to show, if any.
    pub fn mmio(
        &mut self,
        kind: Option<DeviceKind>,
        addr: u64,
        len: usize,
        write: bool,
    ) -> Option<String> {
        match kind {
            Some(DeviceKind::Uart) => self.uart += 1,
            Some(DeviceKind::Rtc) => self.rtc += 1,
            Some(DeviceKind::Virtio) => self.virtio += 1,
            Some(DeviceKind::PciConfig) => self.pci_config += 1,
            None => {
                if write {
                    self.unclaimed_writes += 1;
                } else {
                    self.unclaimed_reads += 1;
                }
                self.first_unclaimed.get_or_insert(addr);
                let n = self.unclaimed();
                if n <= u64::from(SHOWN) {
                    let what = if write { "write" } else { "read" };
                    let more = if n == u64::from(SHOWN) {
                        " (further ones only counted)"
                    } else {
                        ""
                    };
                    return Some(format!(
                        "vmm: unclaimed mmio {what} of {len} bytes at {addr:#x}: {}{more}",
                        if write { "ignored" } else { "reads as 0" }
                    ));
                }
            }
        }
        None
    }

    /// Counts an access without a valid syndrome; returns the line to show, if any.
    pub fn nisv(&mut self, access: &Access, answer: &str) -> Option<String> {
        self.nisv += 1;
        if let Some(a) = access.addr {
            self.first_nisv.get_or_insert(a);
        }
        (self.nisv <= u64::from(SHOWN)).then(|| format!("vmm: {access}: {answer}"))
    }

    pub fn unclaimed(&self) -> u64 {
        self.unclaimed_reads + self.unclaimed_writes
    }

    pub fn mmio_total(&self) -> u64 {
        self.uart + self.rtc + self.virtio + self.pci_config + self.unclaimed()
    }

    /// `vmm: unclaimed mmio: ...`, when there were any.
    pub fn unclaimed_line(&self) -> Option<String> {
        let first = self.first_unclaimed?;
        Some(format!(
            "vmm: unclaimed mmio: {} reads, {} writes, first at {first:#x}",
            self.unclaimed_reads, self.unclaimed_writes
        ))
    }

    pub fn nisv_line(&self) -> Option<String> {
        (self.nisv > 0).then(|| {
            format!(
                "vmm: accesses without a valid syndrome: {}{}",
                self.nisv,
                self.first_nisv
                    .map(|a| format!(", first at {a:#x}"))
                    .unwrap_or_default()
            )
        })
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vmm: exits: mmio={} (uart={}, rtc={}, virtio={}, pci-config={}, unclaimed={}), system_event={}, nisv={}, other={}",
            self.mmio_total(),
            self.uart,
            self.rtc,
            self.virtio,
            self.pci_config,
            self.unclaimed(),
            self.system_event,
            self.nisv,
            self.other
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_formats_the_summary() {
        let mut s = Stats::default();
        assert_eq!(s.mmio(Some(DeviceKind::Uart), 0x900_0000, 4, true), None);
        s.mmio(Some(DeviceKind::Rtc), 0x901_0000, 4, false);
        s.mmio(Some(DeviceKind::Virtio), 0xa00_0050, 4, true);
        s.mmio(Some(DeviceKind::PciConfig), 0x1_0800, 4, false);
        let line = s.mmio(None, 0x901_1000, 4, false).unwrap();
        assert_eq!(
            line,
            "vmm: unclaimed mmio read of 4 bytes at 0x9011000: reads as 0"
        );
        s.mmio(None, 0x902_0000, 8, true);
        s.system_event += 1;
        s.other += 2;
        assert_eq!(
            s.to_string(),
            "vmm: exits: mmio=6 (uart=1, rtc=1, virtio=1, pci-config=1, unclaimed=2), system_event=1, nisv=0, other=2"
        );
        assert_eq!(
            s.unclaimed_line().unwrap(),
            "vmm: unclaimed mmio: 1 reads, 1 writes, first at 0x9011000"
        );
        assert_eq!(s.nisv_line(), None);
    }

    #[test]
    fn shows_the_first_few_unclaimed_accesses_only() {
        let mut s = Stats::default();
        let shown: Vec<String> = (0..20)
            .filter_map(|i| s.mmio(None, 0x1000 * i, 4, i % 2 == 1))
            .collect();
        assert_eq!(shown.len(), SHOWN as usize);
        assert!(shown[7].ends_with("(further ones only counted)"));
        assert_eq!(s.unclaimed(), 20);
        assert_eq!(s.first_unclaimed, Some(0));
    }

    #[test]
    fn nisv_lines() {
        let mut s = Stats::default();
        assert_eq!(Stats::default().unclaimed_line(), None);
        let at = |addr| Access {
            vcpu: 1,
            addr,
            pc: Some(0x4000_10d0),
        };
        let l = s
            .nisv(&at(Some(0x901_0000)), "external data abort injected")
            .unwrap();
        assert_eq!(
            l,
            "vmm: vCPU 1: access without a valid syndrome at 0x9010000, PC 0x400010d0: \
             external data abort injected"
        );
        s.nisv(&at(None), "x");
        assert_eq!(
            s.nisv_line().unwrap(),
            "vmm: accesses without a valid syndrome: 2, first at 0x9010000"
        );
    }
}
