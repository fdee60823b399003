//! The guest's device tree, written with vm-fdt from a [`Layout`].

use std::fmt;

use vm_fdt::FdtWriter;

use crate::layout::{
    Layout, LayoutKind, PciLayout, RtcKind, UartKind, DMA_POOL_ALIGN, DMA_POOL_SIZE,
};

pub const GIC_PHANDLE: u32 = 1;
/// crosvm's phandle for its restricted DMA pool; every virtio node points at it.
pub const DMA_POOL_PHANDLE: u32 = 2;
const CLOCK_PHANDLE: u32 = 3;

const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const IRQ_EDGE_RISING: u32 = 1;
const IRQ_LEVEL_HIGH: u32 = 4;
const IRQ_LEVEL_LOW: u32 = 8;
/// The timer PPIs: secure physical, non-secure physical, virtual, hypervisor.
const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
const NS16550_CLOCK: u32 = 1_843_200;
const PL030_PERIPHID: u32 = 0x0004_1030;

/// What goes into the tree beyond the layout itself.
#[derive(Clone, Debug)]
pub struct TreeSpec<'a> {
    pub layout: &'a Layout,
    pub cpus: u32,
    pub bootargs: &'a str,
    /// Ask the guest for a restricted DMA pool (`/reserved-memory/restricted_dma_reserved`)
    /// and point every virtio device at it.
    pub dma_pool: bool,
}

#[derive(Debug)]
pub struct FdtError(vm_fdt::Error);

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "writing the device tree: {}", self.0)
    }
}

impl From<vm_fdt::Error> for FdtError {
    fn from(e: vm_fdt::Error) -> Self {
        Self(e)
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The node name of the console, for `/chosen/stdout-path`.
pub fn uart_node_name(l: &Layout) -> String {
    match l.uart_kind {
        UartKind::Pl011 => format!("pl011@{:x}", l.uart.base),
        // crosvm's name, which its stdout-path and guests' earlycon settings use.
        UartKind::Ns16550a => format!("U6_16550A@{:x}", l.uart.base),
    }
}

pub fn build(spec: &TreeSpec<'_>) -> Result<Vec<u8>, FdtError> {
    let l = spec.layout;
    let mut w = FdtWriter::new()?;
    let root = w.begin_node("")?;
    w.property_string("compatible", "linux,dummy-virt")?;
    w.property_string("model", &format!("ioguard-vmm ({} layout)", l.kind.name()))?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;

    let chosen = w.begin_node("chosen")?;
    w.property_string("bootargs", spec.bootargs)?;
    w.property_string("stdout-path", &format!("/{}", uart_node_name(l)))?;
    if l.kind == LayoutKind::Crosvm {
        w.property_u32("linux,pci-probe-only", 1)?;
    }
    w.end_node(chosen)?;

    let mem = w.begin_node(&format!("memory@{:x}", l.ram_base))?;
    w.property_string("device_type", "memory")?;
    w.property_array_u64("reg", &[l.ram_base, l.ram_size])?;
    w.end_node(mem)?;

    if spec.dma_pool {
        let rm = w.begin_node("reserved-memory")?;
        w.property_u32("#address-cells", 2)?;
        w.property_u32("#size-cells", 2)?;
        w.property_null("ranges")?;
        // No `reg`: as crosvm on KVM, the guest places the pool and shares it itself.
        let pool = w.begin_node("restricted_dma_reserved")?;
        w.property_string("compatible", "restricted-dma-pool")?;
        w.property_u64("size", DMA_POOL_SIZE)?;
        w.property_u64("alignment", DMA_POOL_ALIGN)?;
        w.property_u32("phandle", DMA_POOL_PHANDLE)?;
        w.end_node(pool)?;
        w.end_node(rm)?;
    }

    let cpus = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for i in 0..spec.cpus {
        let cpu = w.begin_node(&format!("cpu@{i}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,arm-v8")?;
        w.property_string("enable-method", "psci")?;
        // KVM gives vCPU i the MPIDR affinity i (Aff0 = i for up to 16 vCPUs).
        w.property_u32("reg", i)?;
        w.end_node(cpu)?;
    }
    w.end_node(cpus)?;

    let psci = w.begin_node("psci")?;
    w.property_string_list("compatible", strings(&["arm,psci-1.0", "arm,psci-0.2"]))?;
    w.property_string("method", "hvc")?;
    w.end_node(psci)?;

    let gic = w.begin_node(&format!("intc@{:x}", l.gic_dist))?;
    w.property_string("compatible", "arm,gic-v3")?;
    w.property_u32("#interrupt-cells", 3)?;
    w.property_null("interrupt-controller")?;
    w.property_array_u64(
        "reg",
        &[
            l.gic_dist,
            crate::layout::GIC_DIST_SIZE,
            l.gic_redist,
            l.gic_redist_size,
        ],
    )?;
    w.property_u32("phandle", GIC_PHANDLE)?;
    // The parent unit address of the PCI bridge's interrupt-map entries is 2 cells, as
    // crosvm's and QEMU's GIC nodes say.
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.end_node(gic)?;

    let timer = w.begin_node("timer")?;
    w.property_string("compatible", "arm,armv8-timer")?;
    let flags = match l.kind {
        LayoutKind::Qemu => IRQ_LEVEL_HIGH,
        // crosvm: level-low, with the GICv2-style CPU mask it writes for every GIC.
        LayoutKind::Crosvm => (((1u32 << spec.cpus) - 1) << 8) & 0xff00 | IRQ_LEVEL_LOW,
    };
    let cells: Vec<u32> = TIMER_PPIS
        .iter()
        .flat_map(|&p| [GIC_PPI, p, flags])
        .collect();
    w.property_array_u32("interrupts", &cells)?;
    w.property_null("always-on")?;
    w.end_node(timer)?;

    // PrimeCell devices probe only with an apb_pclk clock (Linux's AMBA bus insists).
    let clk = w.begin_node(match l.kind {
        LayoutKind::Qemu => "apb-pclk",
        LayoutKind::Crosvm => "pclk@3M",
    })?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32(
        "clock-frequency",
        match l.kind {
            LayoutKind::Qemu => 24_000_000,
            LayoutKind::Crosvm => 3_141_592,
        },
    )?;
    w.property_string("clock-output-names", "clk24mhz")?;
    w.property_u32("phandle", CLOCK_PHANDLE)?;
    w.end_node(clk)?;

    let uart = w.begin_node(&uart_node_name(l))?;
    match l.uart_kind {
        UartKind::Pl011 => {
            w.property_string_list("compatible", strings(&["arm,pl011", "arm,primecell"]))?;
            w.property_array_u32("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
            w.property_string_list("clock-names", strings(&["uartclk", "apb_pclk"]))?;
            w.property_array_u32("interrupts", &[GIC_SPI, l.uart.spi, IRQ_LEVEL_HIGH])?;
        }
        UartKind::Ns16550a => {
            w.property_string("compatible", "ns16550a")?;
            w.property_u32("clock-frequency", NS16550_CLOCK)?;
            w.property_array_u32("interrupts", &[GIC_SPI, l.uart.spi, IRQ_EDGE_RISING])?;
        }
    }
    w.property_array_u64("reg", &[l.uart.base, l.uart.size])?;
    w.end_node(uart)?;

    let rtc = w.begin_node(&match l.rtc_kind {
        RtcKind::Pl031 => format!("pl031@{:x}", l.rtc.base),
        RtcKind::Pl030 => format!("rtc@{:x}", l.rtc.base),
    })?;
    match l.rtc_kind {
        RtcKind::Pl031 => {
            w.property_string_list("compatible", strings(&["arm,pl031", "arm,primecell"]))?
        }
        RtcKind::Pl030 => {
            w.property_string("compatible", "arm,primecell")?;
            w.property_u32("arm,primecell-periphid", PL030_PERIPHID)?;
        }
    }
    w.property_array_u64("reg", &[l.rtc.base, l.rtc.size])?;
    w.property_array_u32("interrupts", &[GIC_SPI, l.rtc.spi, IRQ_LEVEL_HIGH])?;
    w.property_u32("clocks", CLOCK_PHANDLE)?;
    w.property_string("clock-names", "apb_pclk")?;
    w.end_node(rtc)?;

    for v in &l.virtio {
        let node = w.begin_node(&format!("virtio_mmio@{:x}", v.base))?;
        w.property_string("compatible", "virtio,mmio")?;
        w.property_array_u64("reg", &[v.base, v.size])?;
        w.property_array_u32("interrupts", &[GIC_SPI, v.spi, IRQ_EDGE_RISING])?;
        w.property_null("dma-coherent")?;
        if spec.dma_pool {
            w.property_u32("memory-region", DMA_POOL_PHANDLE)?;
        }
        w.end_node(node)?;
    }

    if let Some(pci) = &l.pci {
        pci_node(&mut w, pci, spec.dma_pool)?;
    }

    w.end_node(root)?;
    Ok(w.finish()?)
}

/// The first cell of a PCI address (IEEE 1275 PCI binding): space code in bits 24-25
/// (2: 32-bit memory, 3: 64-bit memory), prefetchable in bit 30.
const PCI_MEM32: u32 = 2 << 24;
const PCI_MEM64_PREFETCH: u32 = 3 << 24 | 1 << 30;
const PCI_INTA: u32 = 1;

/// crosvm's `/pci` (aarch64/src/fdt.rs `create_pci_nodes`): a CAM generic host bridge on
/// bus 0, its windows identity-mapped, INTx routed per device to a level-high SPI.
fn pci_node(w: &mut FdtWriter, pci: &PciLayout, dma_pool: bool) -> Result<(), FdtError> {
    let range = |hi: u32, (base, size): (u64, u64)| {
        let split = |v: u64| [(v >> 32) as u32, v as u32];
        let mut r = vec![hi];
        r.extend(split(base));
        r.extend(split(base));
        r.extend(split(size));
        r
    };
    let mut ranges = range(PCI_MEM32, pci.mem32);
    ranges.extend(range(PCI_MEM64_PREFETCH, pci.mem64));
    let mut map = Vec::new();
    for f in &pci.functions {
        // Child: device in bits 11-15 of the first address cell, then INTA#; parent:
        // the GIC with a 2-cell unit address of 0 and its 3 interrupt cells.
        map.extend([u32::from(f.device) << 11, 0, 0, PCI_INTA, GIC_PHANDLE, 0, 0]);
        map.extend([GIC_SPI, f.bar0.spi, IRQ_LEVEL_HIGH]);
    }
    let node = w.begin_node("pci")?;
    w.property_string("compatible", "pci-host-cam-generic")?;
    w.property_string("device_type", "pci")?;
    w.property_array_u32("ranges", &ranges)?;
    w.property_array_u32("bus-range", &[0, 0])?;
    w.property_u32("#address-cells", 3)?;
    w.property_u32("#size-cells", 2)?;
    w.property_array_u64("reg", &[pci.cam_base, pci.cam_size])?;
    w.property_u32("#interrupt-cells", 1)?;
    w.property_array_u32("interrupt-map", &map)?;
    w.property_array_u32("interrupt-map-mask", &[0xf800, 0, 0, 7])?;
    w.property_null("dma-coherent")?;
    // The pool serves every device behind the bridge.
    if dma_pool {
        w.property_u32("memory-region", DMA_POOL_PHANDLE)?;
    }
    w.end_node(node)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{LayoutKind, MIB};
    use std::collections::BTreeMap;

    type Props = BTreeMap<String, Vec<u8>>;

    /// A reader of the flattened tree's structure block, enough to check what was written
    /// (path -> properties), independent of the writer.
    fn read(blob: &[u8]) -> BTreeMap<String, Props> {
        let be = |at: usize| u32::from_be_bytes(blob[at..at + 4].try_into().unwrap()) as usize;
        assert_eq!(be(0), 0xd00d_feed);
        let (structs, strings) = (be(8), be(12));
        let mut at = structs;
        let mut path: Vec<String> = Vec::new();
        let mut out: BTreeMap<String, Props> = BTreeMap::new();
        let cstr = |from: usize| {
            let end = blob[from..].iter().position(|&b| b == 0).unwrap() + from;
            String::from_utf8(blob[from..end].to_vec()).unwrap()
        };
        loop {
            let tok = be(at);
            at += 4;
            match tok {
                1 => {
                    let name = cstr(at);
                    at += (name.len() + 1).div_ceil(4) * 4;
                    path.push(name);
                    out.entry(format!("/{}", path[1..].join("/"))).or_default();
                }
                2 => {
                    path.pop();
                }
                3 => {
                    let (len, name_off) = (be(at), be(at + 4));
                    let value = blob[at + 8..at + 8 + len].to_vec();
                    at += 8 + len.div_ceil(4) * 4;
                    let p = format!("/{}", path[1..].join("/"));
                    out.get_mut(&p)
                        .unwrap()
                        .insert(cstr(strings + name_off), value);
                }
                4 => {}
                9 => return out,
                t => panic!("token {t}"),
            }
        }
    }

    fn u32s(v: &[u8]) -> Vec<u32> {
        v.chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn u64s(v: &[u8]) -> Vec<u64> {
        v.chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn tree(kind: LayoutKind, cpus: u32, dma_pool: bool) -> BTreeMap<String, Props> {
        let l = Layout::new(kind, cpus, 64 * MIB, 3);
        read(
            &build(&TreeSpec {
                layout: &l,
                cpus,
                bootargs: "only=boot:*",
                dma_pool,
            })
            .unwrap(),
        )
    }

    #[test]
    fn qemu_tree() {
        let t = tree(LayoutKind::Qemu, 2, false);
        let chosen = &t["/chosen"];
        assert_eq!(chosen["bootargs"], b"only=boot:*\0");
        assert_eq!(chosen["stdout-path"], b"/pl011@9000000\0");
        assert!(!chosen.contains_key("linux,pci-probe-only"));
        assert_eq!(u64s(&t["/memory@40000000"]["reg"]), [0x4000_0000, 64 * MIB]);
        let uart = &t["/pl011@9000000"];
        assert_eq!(uart["compatible"], b"arm,pl011\0arm,primecell\0");
        assert_eq!(uart["clock-names"], b"uartclk\0apb_pclk\0");
        assert_eq!(
            t["/pl031@9010000"]["compatible"],
            b"arm,pl031\0arm,primecell\0"
        );
        assert_eq!(
            u64s(&t["/intc@8000000"]["reg"]),
            [0x0800_0000, 0x1_0000, 0x080a_0000, 0x4_0000]
        );
        assert_eq!(
            u32s(&t["/timer"]["interrupts"]),
            [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
        );
        assert_eq!(t["/psci"]["method"], b"hvc\0");
        assert_eq!(t["/psci"]["compatible"], b"arm,psci-1.0\0arm,psci-0.2\0");
        assert_eq!(t["/cpus/cpu@1"]["enable-method"], b"psci\0");
        let v = &t["/virtio_mmio@a000200"];
        assert_eq!(u64s(&v["reg"]), [0x0a00_0200, 0x200]);
        assert_eq!(u32s(&v["interrupts"]), [0, 17, 1]);
        assert!(!v.contains_key("memory-region"));
        assert!(!t.contains_key("/reserved-memory"));
    }

    #[test]
    fn protected_qemu_tree_has_the_pool() {
        let t = tree(LayoutKind::Qemu, 1, true);
        let pool = &t["/reserved-memory/restricted_dma_reserved"];
        assert_eq!(pool["compatible"], b"restricted-dma-pool\0");
        assert_eq!(u64s(&pool["size"]), [MIB]);
        assert_eq!(u64s(&pool["alignment"]), [0x1_0000]);
        assert_eq!(u32s(&pool["phandle"]), [2]);
        assert!(!pool.contains_key("reg"));
        assert_eq!(u32s(&t["/virtio_mmio@a000000"]["memory-region"]), [2]);
    }

    #[test]
    fn ordinary_crosvm_tree_has_no_pool() {
        let t = tree(LayoutKind::Crosvm, 1, false);
        assert!(!t.contains_key("/reserved-memory"));
        assert!(!t["/pci"].contains_key("memory-region"));
    }

    #[test]
    fn crosvm_tree() {
        let t = tree(LayoutKind::Crosvm, 1, true);
        let chosen = &t["/chosen"];
        assert_eq!(chosen["stdout-path"], b"/U6_16550A@3f8\0");
        assert_eq!(u32s(&chosen["linux,pci-probe-only"]), [1]);
        let uart = &t["/U6_16550A@3f8"];
        assert_eq!(uart["compatible"], b"ns16550a\0");
        assert_eq!(u64s(&uart["reg"]), [0x3f8, 8]);
        assert_eq!(u32s(&uart["clock-frequency"]), [1_843_200]);
        assert!(!uart.contains_key("reg-shift"));
        let rtc = &t["/rtc@2000"];
        assert_eq!(rtc["compatible"], b"arm,primecell\0");
        assert_eq!(u32s(&rtc["arm,primecell-periphid"]), [0x41030]);
        assert_eq!(
            u64s(&t["/intc@3fff0000"]["reg"]),
            [0x3fff_0000, 0x1_0000, 0x3ffd_0000, 0x2_0000]
        );
        assert_eq!(u64s(&t["/memory@80000000"]["reg"]), [0x8000_0000, 64 * MIB]);
        assert!(
            !t.keys().any(|k| k.contains("virtio_mmio")),
            "crosvm has no virtio-mmio"
        );
        let pci = &t["/pci"];
        assert_eq!(pci["compatible"], b"pci-host-cam-generic\0");
        assert_eq!(pci["device_type"], b"pci\0");
        assert_eq!(u64s(&pci["reg"]), [0x1_0000, 0x100_0000]);
        assert_eq!(u32s(&pci["bus-range"]), [0, 0]);
        assert_eq!(
            [
                &pci["#address-cells"],
                &pci["#size-cells"],
                &pci["#interrupt-cells"]
            ]
            .map(|v| u32s(v)[0]),
            [3, 2, 1]
        );
        assert!(pci.contains_key("dma-coherent"));
        assert_eq!(u32s(&pci["memory-region"]), [2]);
        assert_eq!(u32s(&pci["interrupt-map-mask"]), [0xf800, 0, 0, 7]);
        let end = 0x8000_0000 + 64 * MIB + (1 << 30);
        assert_eq!(
            u32s(&pci["ranges"]),
            [
                0x0200_0000,
                0,
                0x0200_0000,
                0,
                0x0200_0000,
                0,
                0x0200_0000,
                0x4300_0000,
                (end >> 32) as u32,
                end as u32,
                (end >> 32) as u32,
                end as u32,
                0,
                1 << 30,
            ]
        );
        let map = u32s(&pci["interrupt-map"]);
        assert_eq!(map.len(), 30);
        assert_eq!(map[..10], [0x800, 0, 0, 1, 1, 0, 0, 0, 4, 4]);
        assert_eq!(map[20..23], [0x1800, 0, 0]);
        assert_eq!(u32s(&t["/intc@3fff0000"]["#address-cells"]), [2]);
        assert_eq!(u32s(&t["/"]["interrupt-parent"]), [1]);
        assert_eq!(u32s(&t["/intc@3fff0000"]["phandle"]), [1]);
    }
}
