//! Host tests of the device-tree interpretation, on trees built here (QEMU `virt`-like and
//! crosvm-like) and on broken blobs.

use super::*;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};

fn prop<T: dtoolkit::ToPropertyValue>(name: &str, v: T) -> DeviceTreeProperty {
    DeviceTreeProperty::new(name, v).unwrap()
}

fn node(name: &str, props: Vec<DeviceTreeProperty>) -> DeviceTreeNode {
    let mut b = DeviceTreeNode::builder(name).unwrap();
    for p in props {
        b = b.property(p);
    }
    b.build()
}

/// A tree shaped like QEMU 7.2's `virt` (2 address and size cells at the root).
fn qemu_virt() -> DeviceTree {
    let mut t = DeviceTree::new();
    let r = &mut t.root;
    r.add_property(prop("#address-cells", 2u32));
    r.add_property(prop("#size-cells", 2u32));
    r.add_property(prop("model", "linux,dummy-virt"));
    r.add_child(node(
        "memory@40000000",
        vec![
            prop("device_type", "memory"),
            prop("reg", [0u32, 0x4000_0000, 0, 0x1000_0000]),
        ],
    ));
    r.add_child(node(
        "pl011@9000000",
        vec![
            prop("compatible", vec!["arm,pl011", "arm,primecell"]),
            prop("reg", [0u32, 0x0900_0000, 0, 0x1000]),
        ],
    ));
    r.add_child(node(
        "pl031@9010000",
        vec![
            prop("compatible", vec!["arm,pl031", "arm,primecell"]),
            prop("reg", [0u32, 0x0901_0000, 0, 0x1000]),
        ],
    ));
    for i in 0..3u32 {
        let base = 0x0a00_0000 + i * 0x200;
        r.add_child(node(
            &format!("virtio_mmio@{base:x}"),
            vec![
                prop("compatible", "virtio,mmio"),
                prop("reg", [0u32, base, 0, 0x200]),
            ],
        ));
    }
    r.add_child(node(
        "pcie@10000000",
        vec![
            prop("compatible", "pci-host-ecam-generic"),
            prop("device_type", "pci"),
            prop("#address-cells", 3u32),
            prop("#size-cells", 2u32),
            prop("reg", [0x40u32, 0x1000_0000, 0, 0x1000_0000]),
        ],
    ));
    r.add_child(node(
        "psci",
        vec![
            prop("compatible", vec!["arm,psci-1.0", "arm,psci-0.2"]),
            prop("method", "hvc"),
        ],
    ));
    let mut cpus = node(
        "cpus",
        vec![prop("#address-cells", 1u32), prop("#size-cells", 0u32)],
    );
    for i in 0..2u32 {
        cpus.add_child(node(
            &format!("cpu@{i}"),
            vec![prop("device_type", "cpu"), prop("reg", i)],
        ));
    }
    r.add_child(cpus);
    r.add_child(node(
        "chosen",
        vec![
            prop("stdout-path", "/pl011@9000000"),
            prop("bootargs", "only=boot:* log=debug"),
        ],
    ));
    t
}

fn parse_tree(t: &DeviceTree) -> Result<Platform, PlatformError> {
    parse(&t.to_dtb())
}

#[test]
fn qemu_virt_tree() {
    let p = parse_tree(&qemu_virt()).unwrap();
    assert_eq!(p.model, "linux,dummy-virt");
    assert_eq!(p.memory, [Region::new(0x4000_0000, 0x1000_0000)]);
    assert_eq!(p.console.kind, UartKind::Pl011);
    assert_eq!(p.console.region, Region::new(0x0900_0000, 0x1000));
    assert_eq!(p.console_source, ConsoleSource::StdoutPath);
    assert_eq!(p.psci, Conduit::Hvc);
    assert_eq!(p.bootargs, "only=boot:* log=debug");
    assert_eq!(p.cpus, [0, 1]);
    assert_eq!(p.virtio_mmio.len(), 3);
    assert_eq!(p.virtio_mmio[0], Region::new(0x0a00_0000, 0x200));
    assert_eq!(p.pci.len(), 1);
    assert!(p.pci[0].ecam);
    // The PCI node's 3-cell children never reach the device list, the bridge does.
    assert!(p.devices.iter().any(|d| d.compatible == "arm,pl031"));
    assert_eq!(
        p.devices
            .iter()
            .filter(|d| d.compatible == "arm,pl031")
            .count(),
        1
    );
    assert_eq!(p.first_ram().map(|r| r.base), Some(0x4000_0000));
    assert!(p.ram_containing(0x4800_0000).is_some());
    assert!(p.ram_containing(0x5000_0000).is_none());
}

#[test]
fn crosvm_like_tree_with_ns16550_and_alias() {
    let mut t = DeviceTree::new();
    let r = &mut t.root;
    r.add_property(prop("#address-cells", 2u32));
    r.add_property(prop("#size-cells", 2u32));
    r.add_child(node(
        "memory",
        vec![
            prop("device_type", "memory"),
            prop(
                "reg",
                [0u32, 0x8000_0000, 0, 0x800_0000, 1, 0, 0, 0x1000_0000],
            ),
        ],
    ));
    r.add_child(node(
        "U6_16550A@3f8",
        vec![
            prop("compatible", "ns16550a"),
            prop("reg", [0u32, 0x3f8, 0, 8]),
        ],
    ));
    r.add_child(node(
        "pci",
        vec![
            prop("compatible", "pci-host-cam-generic"),
            prop("device_type", "pci"),
            prop("reg", [0u32, 0x1_0000, 0, 0x100_0000]),
        ],
    ));
    r.add_child(node(
        "rtc@2000",
        vec![
            prop("compatible", "arm,primecell"),
            prop("arm,primecell-periphid", 0x0004_1030u32),
            prop("reg", [0u32, 0x2000, 0, 0x1000]),
        ],
    ));
    r.add_child(node("psci", vec![prop("method", "hvc")]));
    r.add_child(node("aliases", vec![prop("serial0", "/U6_16550A@3f8")]));
    r.add_child(node(
        "chosen",
        vec![prop("stdout-path", "serial0:115200n8")],
    ));
    let p = parse_tree(&t).unwrap();
    assert_eq!(
        p.memory,
        [
            Region::new(0x8000_0000, 0x800_0000),
            Region::new(0x1_0000_0000, 0x1000_0000)
        ]
    );
    assert_eq!(
        p.console.kind,
        UartKind::Ns16550 {
            reg_shift: 0,
            io_width: 1
        }
    );
    assert_eq!(p.console.region, Region::new(0x3f8, 8));
    assert_eq!(p.pci.len(), 1);
    assert!(!p.pci[0].ecam);
    assert!(p.cpus.is_empty());
    assert!(p.virtio_mmio.is_empty());
    let rtc = p.devices.iter().find(|d| d.path == "/rtc@2000").unwrap();
    assert_eq!(
        (rtc.compatible.as_str(), rtc.periphid),
        ("arm,primecell", Some(0x0004_1030))
    );
    let uart = p
        .devices
        .iter()
        .find(|d| d.path == "/U6_16550A@3f8")
        .unwrap();
    assert_eq!(uart.periphid, None);
}

#[test]
fn no_stdout_path_falls_back_to_first_uart() {
    let mut t = qemu_virt();
    t.root
        .child_mut("chosen")
        .unwrap()
        .remove_property("stdout-path");
    let p = parse_tree(&t).unwrap();
    assert_eq!(p.console.path, "/pl011@9000000");
    assert_eq!(p.console_source, ConsoleSource::FirstUart);
}

#[test]
fn console_that_is_not_there() {
    let mut t = qemu_virt();
    t.root
        .child_mut("chosen")
        .unwrap()
        .property_mut("stdout-path")
        .unwrap()
        .set_value("/serial@1234");
    assert_eq!(
        parse_tree(&t),
        Err(PlatformError::ConsoleNotFound {
            path: "/serial@1234".into()
        })
    );
}

#[test]
fn console_of_unknown_kind() {
    let mut t = qemu_virt();
    t.root
        .child_mut("chosen")
        .unwrap()
        .property_mut("stdout-path")
        .unwrap()
        .set_value("/pl031@9010000");
    assert!(matches!(
        parse_tree(&t),
        Err(PlatformError::ConsoleUnsupported { .. })
    ));
}

#[test]
fn missing_nodes() {
    let mut t = qemu_virt();
    t.root.remove_child("memory@40000000");
    assert_eq!(parse_tree(&t), Err(PlatformError::NoMemory));

    let mut t = qemu_virt();
    t.root.remove_child("psci");
    assert_eq!(parse_tree(&t), Err(PlatformError::NoPsci));

    let mut t = qemu_virt();
    t.root
        .child_mut("psci")
        .unwrap()
        .property_mut("method")
        .unwrap()
        .set_value("svc");
    assert_eq!(
        parse_tree(&t),
        Err(PlatformError::BadPsciMethod("svc".into()))
    );

    let mut t = qemu_virt();
    t.root.remove_child("chosen");
    t.root.remove_child("pl011@9000000");
    assert_eq!(parse_tree(&t), Err(PlatformError::NoConsole));
}

#[test]
fn reg_cells_that_do_not_fit() {
    // A reg whose length is not a multiple of (address + size) cells.
    let mut t = qemu_virt();
    t.root
        .child_mut("memory@40000000")
        .unwrap()
        .property_mut("reg")
        .unwrap()
        .set_value([0u32, 0x4000_0000, 0]);
    assert!(
        matches!(parse_tree(&t), Err(PlatformError::BadReg { ref node, .. }) if node == "/memory@40000000")
    );

    // Three address cells: the address does not fit in 64 bits.
    let mut t = qemu_virt();
    t.root
        .property_mut("#address-cells")
        .unwrap()
        .set_value(3u32);
    assert!(matches!(parse_tree(&t), Err(PlatformError::BadReg { .. })));

    // A region that wraps around the address space.
    let mut t = qemu_virt();
    t.root
        .child_mut("pl011@9000000")
        .unwrap()
        .property_mut("reg")
        .unwrap()
        .set_value([0xffff_ffffu32, 0xffff_f000, 0, 0x2000]);
    assert!(matches!(parse_tree(&t), Err(PlatformError::BadReg { .. })));
}

#[test]
fn disabled_nodes_are_ignored() {
    let mut t = qemu_virt();
    t.root
        .child_mut("virtio_mmio@a000000")
        .unwrap()
        .add_property(prop("status", "disabled"));
    assert_eq!(parse_tree(&t).unwrap().virtio_mmio.len(), 2);
}

#[test]
fn ranges_translate_child_addresses() {
    let mut t = qemu_virt();
    let mut soc = node(
        "soc",
        vec![
            prop("#address-cells", 1u32),
            prop("#size-cells", 1u32),
            // child 0x0 -> parent 0x2000_0000, 16 MiB
            prop("ranges", [0u32, 0, 0x2000_0000, 0x100_0000]),
        ],
    );
    soc.add_child(node(
        "virtio_mmio@1000",
        vec![
            prop("compatible", "virtio,mmio"),
            prop("reg", [0x1000u32, 0x200]),
        ],
    ));
    t.root.add_child(soc);
    let p = parse_tree(&t).unwrap();
    assert!(p.virtio_mmio.contains(&Region::new(0x2000_1000, 0x200)));
}

#[test]
fn truncated_and_garbage_blobs_are_errors_not_panics() {
    let good = qemu_virt().to_dtb();
    // Every truncation of a valid blob.
    for len in 0..good.len() {
        let r = parse(&good[..len]);
        assert!(r.is_err(), "truncated to {len} bytes parsed");
    }
    // Corrupt each byte of the header and of the structure block in turn: no panic.
    for i in 0..good.len().min(4096) {
        let mut b = good.clone();
        b[i] ^= 0xa5;
        let _ = parse(&b);
    }
    // Pseudo-random garbage, some with a valid magic.
    let mut x: u64 = 0x1234_5678_9abc_def0;
    for round in 0..2000 {
        let mut b = vec![0u8; 64 + round % 512];
        for byte in b.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
        if round % 2 == 0 {
            b[..4].copy_from_slice(&[0xd0, 0x0d, 0xfe, 0xed]);
        }
        assert!(parse(&b).is_err());
    }
    assert!(matches!(
        parse(b"not a tree at all"),
        Err(PlatformError::NotATree(_))
    ));
}

/// QEMU's ECAM bridge `ranges` (I/O, 32-bit and 64-bit memory) and crosvm's CAM bridge with
/// probe-only and a restricted-dma-pool that has a size and no reg.
#[test]
fn pci_windows_probe_only_and_dma_pools() {
    let mut t = qemu_virt();
    let r = &mut t.root;
    let pcie = r
        .children_mut()
        .find(|n| n.name() == "pcie@10000000")
        .unwrap();
    pcie.add_property(prop(
        "ranges",
        [
            0x0100_0000u32,
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
            0x2eff_0000, // 32-bit
            0x4300_0000,
            0x80,
            0,
            0x80,
            0,
            0x80,
            0, // 64-bit prefetchable
        ],
    ));
    pcie.add_property(prop("memory-region", 2u32));
    let mut rm = node(
        "reserved-memory",
        vec![
            prop("#address-cells", 2u32),
            prop("#size-cells", 2u32),
            prop("ranges", Vec::<u8>::new()),
        ],
    );
    rm.add_child(node(
        "restricted_dma_reserved",
        vec![
            prop("compatible", "restricted-dma-pool"),
            prop("size", [0u32, 0x400_0000]),
            prop("alignment", [0u32, 0x1_0000]),
            prop("phandle", 2u32),
        ],
    ));
    rm.add_child(node(
        "placed",
        vec![
            prop("compatible", "restricted-dma-pool"),
            prop("reg", [0u32, 0x4800_0000, 0, 0x10_0000]),
        ],
    ));
    rm.add_child(node(
        "broken",
        vec![prop("compatible", "restricted-dma-pool")],
    ));
    r.add_child(rm);
    let chosen = r.children_mut().find(|n| n.name() == "chosen").unwrap();
    chosen.add_property(prop("linux,pci-probe-only", 1u32));

    let p = parse_tree(&t).unwrap();
    assert!(p.pci_probe_only);
    let w = &p.pci[0].windows;
    assert_eq!(w.len(), 3);
    assert_eq!(
        (w[0].space, w[0].cpu, w[0].size),
        (PciSpace::Io, 0x3eff_0000, 0x1_0000)
    );
    assert_eq!(
        w[1],
        PciWindow {
            space: PciSpace::Mem32,
            prefetchable: false,
            pci: 0x1000_0000,
            cpu: 0x1000_0000,
            size: 0x2eff_0000
        }
    );
    assert_eq!((w[2].space, w[2].prefetchable), (PciSpace::Mem64, true));
    assert_eq!(
        (w[2].pci, w[2].cpu, w[2].size),
        (0x80_0000_0000, 0x80_0000_0000, 0x80_0000_0000)
    );
    assert_eq!(p.pci[0].memory_region, Some(2));
    let pools: Vec<_> = p
        .dma_pools
        .iter()
        .map(|d| (d.path.as_str(), d.phandle, d.reg, d.size))
        .collect();
    assert_eq!(
        pools,
        [
            (
                "/reserved-memory/restricted_dma_reserved",
                Some(2),
                None,
                Some(0x400_0000)
            ),
            (
                "/reserved-memory/placed",
                None,
                Some(Region::new(0x4800_0000, 0x10_0000)),
                Some(0x10_0000)
            ),
            ("/reserved-memory/broken", None, None, None),
        ]
    );

    // Without the property, or with <0>, BARs are ioguard's to assign.
    assert!(!parse_tree(&qemu_virt()).unwrap().pci_probe_only);
    let mut t = qemu_virt();
    let chosen = t
        .root
        .children_mut()
        .find(|n| n.name() == "chosen")
        .unwrap();
    chosen.add_property(prop("linux,pci-probe-only", 0u32));
    assert!(!parse_tree(&t).unwrap().pci_probe_only);
}
