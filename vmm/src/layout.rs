//! Guest physical address maps: where RAM, the devices, the GIC and the images go.

/// Which machine the guest is made to see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutKind {
    /// QEMU `virt`: PL011, PL031, virtio-mmio at 0x0a00_0000, RAM at 1 GiB.
    Qemu,
    /// crosvm's aarch64 map: ns16550a at 0x3f8, PL030 at 0x2000, RAM at 2 GiB.
    Crosvm,
}

impl LayoutKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Qemu => "qemu",
            Self::Crosvm => "crosvm",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    Pl011,
    Ns16550a,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcKind {
    Pl031,
    Pl030,
}

/// A device's register window and its SPI (counted from 0, i.e. INTID - 32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub base: u64,
    pub size: u64,
    pub spi: u32,
}

#[cfg(test)]
impl Window {
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.size
    }
}

pub const MIB: u64 = 1 << 20;
/// One GICv3 redistributor frame pair (RD_base + SGI_base) per vCPU.
pub const GIC_REDIST_SIZE: u64 = 0x2_0000;
pub const GIC_DIST_SIZE: u64 = 0x1_0000;
pub const VIRTIO_MMIO_BASE: u64 = 0x0a00_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x200;
pub const VIRTIO_MMIO_FIRST_SPI: u32 = 16;
/// crosvm's PCI CAM (aarch64/src/lib.rs): 256 bytes per function, bus 0 only used.
pub const PCI_CAM_BASE: u64 = 0x1_0000;
pub const PCI_CAM_SIZE: u64 = 16 * MIB;
/// crosvm's low MMIO window, where its virtio-pci BAR0s go.
pub const PCI_MEM32_BASE: u64 = 0x0200_0000;
pub const PCI_MEM32_SIZE: u64 = 32 * MIB;
/// crosvm's high MMIO starts 1 GiB past the end of RAM (a platform MMIO region between);
/// this VMM gives the 64-bit prefetchable window 1 GiB of it, unused.
pub const PCI_MEM64_GAP: u64 = 1 << 30;
pub const PCI_MEM64_SIZE: u64 = 1 << 30;
/// Each virtio-pci BAR0 (crosvm's CAPABILITY_BAR_SIZE), naturally aligned.
pub const PCI_BAR0_SIZE: u64 = 0x8000;
/// crosvm allocates device interrupts from SPI 4 on (aarch64/src/lib.rs AARCH64_IRQ_BASE).
pub const PCI_FIRST_SPI: u32 = 4;
/// The device tree's slot: 2 MiB, 2 MiB aligned, as crosvm's `end` position has it.
pub const FDT_SLOT: u64 = 2 * MIB;
/// Linux's arm64 boot protocol wants the tree within the first 512 MiB of RAM.
pub const FDT_LIMIT: u64 = 512 * MIB;
/// The restricted DMA pool the tree asks the guest to set aside and share.
pub const DMA_POOL_SIZE: u64 = MIB;
pub const DMA_POOL_ALIGN: u64 = 64 * 1024;

/// One PCI function: its device number on bus 0, its BAR0 and its INTA# SPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciSlot {
    pub device: u8,
    pub bar0: Window,
}

/// A CAM host bridge and the windows of its `ranges` (PCI address = CPU address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciLayout {
    pub cam_base: u64,
    pub cam_size: u64,
    pub mem32: (u64, u64),
    pub mem64: (u64, u64),
    /// 00:00.0 is the host bridge; these start at 00:01.0.
    pub functions: Vec<PciSlot>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub kind: LayoutKind,
    pub ram_base: u64,
    pub ram_size: u64,
    pub uart_kind: UartKind,
    pub uart: Window,
    pub rtc_kind: RtcKind,
    pub rtc: Window,
    pub gic_dist: u64,
    pub gic_redist: u64,
    pub gic_redist_size: u64,
    /// virtio-mmio windows.
    pub virtio: Vec<Window>,
    /// The PCI host bridge, whose functions are virtio-pci devices.
    pub pci: Option<PciLayout>,
}

impl Layout {
    /// The map for `cpus` vCPUs, `ram_size` bytes of RAM and `virtio` virtio transports:
    /// virtio-mmio windows in QEMU's layout, virtio-pci functions in crosvm's (which has
    /// no virtio-mmio).
    pub fn new(kind: LayoutKind, cpus: u32, ram_size: u64, virtio: usize) -> Self {
        let redist_size = GIC_REDIST_SIZE * u64::from(cpus);
        let mmio = (0..virtio)
            .map(|i| Window {
                base: VIRTIO_MMIO_BASE + VIRTIO_MMIO_SIZE * i as u64,
                size: VIRTIO_MMIO_SIZE,
                spi: VIRTIO_MMIO_FIRST_SPI + i as u32,
            })
            .collect();
        match kind {
            LayoutKind::Qemu => Self {
                kind,
                ram_base: 0x4000_0000,
                ram_size,
                uart_kind: UartKind::Pl011,
                uart: Window {
                    base: 0x0900_0000,
                    size: 0x1000,
                    spi: 1,
                },
                rtc_kind: RtcKind::Pl031,
                rtc: Window {
                    base: 0x0901_0000,
                    size: 0x1000,
                    spi: 2,
                },
                gic_dist: 0x0800_0000,
                gic_redist: 0x080a_0000,
                gic_redist_size: redist_size,
                virtio: mmio,
                pci: None,
            },
            LayoutKind::Crosvm => Self {
                kind,
                ram_base: 0x8000_0000,
                ram_size,
                uart_kind: UartKind::Ns16550a,
                uart: Window {
                    base: 0x3f8,
                    size: 8,
                    spi: 0,
                },
                rtc_kind: RtcKind::Pl030,
                rtc: Window {
                    base: 0x2000,
                    size: 0x1000,
                    spi: 1,
                },
                gic_dist: 0x3fff_0000,
                // crosvm puts the redistributors right below the distributor.
                gic_redist: 0x3fff_0000 - redist_size,
                gic_redist_size: redist_size,
                virtio: Vec::new(),
                pci: Some(PciLayout {
                    cam_base: PCI_CAM_BASE,
                    cam_size: PCI_CAM_SIZE,
                    mem32: (PCI_MEM32_BASE, PCI_MEM32_SIZE),
                    mem64: (0x8000_0000 + ram_size + PCI_MEM64_GAP, PCI_MEM64_SIZE),
                    functions: (0..virtio)
                        .map(|i| PciSlot {
                            device: 1 + i as u8,
                            bar0: Window {
                                base: PCI_MEM32_BASE + PCI_BAR0_SIZE * i as u64,
                                size: PCI_BAR0_SIZE,
                                spi: PCI_FIRST_SPI + i as u32,
                            },
                        })
                        .collect(),
                }),
            },
        }
    }

    pub fn ram_end(&self) -> u64 {
        self.ram_base + self.ram_size
    }

    /// Where the device tree goes: the last 2 MiB-aligned 2 MiB slot of RAM below 512 MiB.
    pub fn fdt_addr(&self) -> u64 {
        let top = self.ram_end().min(self.ram_base + FDT_LIMIT);
        (top - FDT_SLOT) & !(FDT_SLOT - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_map() {
        let l = Layout::new(LayoutKind::Qemu, 2, 64 * MIB, 3);
        assert_eq!(l.ram_base, 0x4000_0000);
        assert_eq!(l.uart.base, 0x0900_0000);
        assert_eq!(l.rtc.base, 0x0901_0000);
        assert_eq!((l.gic_dist, l.gic_redist), (0x0800_0000, 0x080a_0000));
        assert_eq!(l.gic_redist_size, 0x4_0000);
        assert_eq!(
            l.virtio.iter().map(|w| (w.base, w.spi)).collect::<Vec<_>>(),
            [(0x0a00_0000, 16), (0x0a00_0200, 17), (0x0a00_0400, 18)]
        );
        assert_eq!(l.fdt_addr(), 0x4000_0000 + 62 * MIB);
    }

    #[test]
    fn crosvm_map() {
        let l = Layout::new(LayoutKind::Crosvm, 1, 64 * MIB, 3);
        assert_eq!(l.ram_base, 0x8000_0000);
        let pci = l.pci.as_ref().unwrap();
        assert_eq!((pci.cam_base, pci.cam_size), (0x1_0000, 0x100_0000));
        assert_eq!(pci.mem32, (0x0200_0000, 0x0200_0000));
        assert_eq!(pci.mem64, (0x8400_0000 + (1 << 30), 1 << 30));
        assert_eq!(
            pci.functions
                .iter()
                .map(|f| (f.device, f.bar0.base, f.bar0.spi))
                .collect::<Vec<_>>(),
            [
                (1, 0x0200_0000, 4),
                (2, 0x0200_8000, 5),
                (3, 0x0201_0000, 6)
            ]
        );
        for f in &pci.functions {
            assert!(f.bar0.base + f.bar0.size <= pci.mem32.0 + pci.mem32.1);
            assert!(!f.bar0.contains(l.uart.base) && !f.bar0.contains(l.rtc.base));
        }
        assert_eq!((l.uart.base, l.uart.size), (0x3f8, 8));
        assert_eq!(l.rtc.base, 0x2000);
        assert_eq!(l.gic_dist, 0x3fff_0000);
        assert_eq!(l.gic_redist + l.gic_redist_size, l.gic_dist);
        assert!(l.virtio.is_empty());
    }

    #[test]
    fn fdt_stays_below_512_mib_and_aligned() {
        let l = Layout::new(LayoutKind::Qemu, 1, 2048 * MIB, 0);
        assert_eq!(l.fdt_addr(), l.ram_base + 510 * MIB);
        let l = Layout::new(LayoutKind::Crosvm, 1, 17 * MIB, 0);
        assert_eq!(l.fdt_addr() % FDT_SLOT, 0);
        assert!(l.fdt_addr() + FDT_SLOT <= l.ram_end());
    }

    #[test]
    fn window_bounds() {
        let w = Window {
            base: 0x1000,
            size: 0x200,
            spi: 0,
        };
        assert!(w.contains(0x1000) && w.contains(0x11ff));
        assert!(!w.contains(0xfff) && !w.contains(0x1200));
    }
}
