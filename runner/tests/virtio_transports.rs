//! The default virtio devices on each `--virtio-transport`, with the real guest: QEMU
//! accepts each set, the guest boots to its summary, and it drives the virtio-mmio devices
//! the transport puts there (`virtio: discovered` names each transport and the device it
//! drives, given here as virtio device IDs: 1 net, 2 blk, 3 console, 4 rng). Each boot
//! runs that one check. Needs qemu-system-aarch64 and the guest's toolchain.

use ioguard_runner::{boot, Outcome, RunError, VirtioTransport};
use std::path::PathBuf;

/// Boots the real guest with `args` and only `virtio: discovered`.
fn windows(args: &[&str]) -> Outcome {
    let mut all = vec!["--timeout", "60", "--append", "only=virtio:discovered"];
    all.extend_from_slice(args);
    boot(&all).unwrap_or_else(|e| panic!("{args:?}: could not run: {e}"))
}

/// The device IDs of the devices the guest drives through virtio-mmio windows, sorted.
fn mmio_device_ids(out: &Outcome) -> Vec<u32> {
    let mut ids: Vec<u32> = out
        .report
        .info
        .iter()
        .filter(|l| l.starts_with("virtio: discovered: virtio-mmio@"))
        .filter_map(|l| l.strip_suffix(" driven"))
        .filter_map(|l| l.rsplit(": ").next())
        .map(|kind| match kind {
            "net" => 1,
            "blk" => 2,
            "console" => 3,
            "rng" => 4,
            other => panic!("a device ioguard does not drive: {other}"),
        })
        .collect();
    ids.sort();
    ids
}

/// The files behind the default blk devices (`id=vblkN` drives) of a run's command.
fn default_blk_files(out: &Outcome) -> Vec<PathBuf> {
    out.argv
        .windows(2)
        .filter(|w| w[0] == "-drive" && w[1].contains(",id=vblk"))
        .map(|w| {
            let file = w[1].strip_prefix("file=").unwrap().split(",if=").next();
            PathBuf::from(file.unwrap().replace(",,", ","))
        })
        .collect()
}

/// QEMU ran the guest to its verdict, with nothing on QEMU's stderr (the NICs' hub
/// warning is expected and dropped), and the run's blk files are gone.
fn assert_clean(out: &Outcome, what: &str) {
    let t = out.transcript();
    assert_eq!(out.status, 0, "{what}:\n{t}");
    assert_eq!(out.qemu_status, Some(0), "{what}:\n{t}");
    assert!(out.report.summary.is_some(), "{what}: no SUMMARY\n{t}");
    assert!(out.stderr.is_empty(), "{what}: QEMU said {:?}", out.stderr);
    for f in default_blk_files(out) {
        assert!(!f.exists(), "{what}: {} left behind", f.display());
    }
}

#[test]
fn every_transport_boots_the_real_guest() {
    for t in VirtioTransport::ALL {
        let out = windows(&["--virtio-transport", t.name()]);
        let what = t.name();
        assert_clean(&out, what);
        let line = &out.command_line;
        let has = |w: &str| line.contains(w);
        let ids = mmio_device_ids(&out);
        let files = default_blk_files(&out);
        assert_eq!(files.len(), t.blk_devices(), "{what}: {line}");
        match t {
            // net, net, blk, console, rng: the devices of the mmio transport.
            VirtioTransport::Mmio | VirtioTransport::MmioModern | VirtioTransport::Both => {
                assert_eq!(ids, [1, 1, 2, 3, 4], "{what}:\n{}", out.transcript());
            }
            VirtioTransport::Pci | VirtioTransport::None => {
                assert_eq!(ids, [] as [u32; 0], "{what}:\n{}", out.transcript());
            }
        }
        assert_eq!(
            has("-global virtio-mmio.force-legacy=false"),
            t == VirtioTransport::MmioModern,
            "{line}"
        );
        assert_eq!(
            has("virtio-net-pci"),
            t == VirtioTransport::Pci,
            "{what}: {line}"
        );
        assert_eq!(
            has("-device virtio-blk-pci,drive=vblk") && has("-device virtio-rng-pci"),
            matches!(t, VirtioTransport::Pci | VirtioTransport::Both),
            "{what}: {line}"
        );
        assert_eq!(
            has("virtconsole,chardev=con"),
            t != VirtioTransport::None,
            "{line}"
        );
        // The guest drives every device the transport attached, on either bus.
        let found = out
            .result("virtio: discovered")
            .expect("virtio: discovered");
        let devices = match t {
            VirtioTransport::None => None,
            VirtioTransport::Both => Some(7),
            _ => Some(5),
        };
        let detail = found.detail.as_deref().unwrap_or("");
        match devices {
            Some(n) => assert!(
                detail.starts_with(&format!("{n} devices (")),
                "{what}: {detail}"
            ),
            None => assert!(
                detail.starts_with("no virtio device attached"),
                "{what}: {detail}"
            ),
        }
    }
}

#[test]
fn the_hypmodel_launcher_attaches_them_too() {
    for t in ["mmio", "pci"] {
        let out = windows(&["--hyp", "model", "--virtio-transport", t]);
        assert_clean(&out, t);
        assert!(out.command_line.contains("virtualization=on"));
        let want: &[u32] = if t == "mmio" { &[1, 1, 2, 3, 4] } else { &[] };
        assert_eq!(mmio_device_ids(&out), want, "{t}:\n{}", out.transcript());
    }
}

#[test]
fn virtio_blk_fills_the_slots_the_defaults_leave() {
    // 5 default devices and 27 more blk: every virtio-mmio slot has a device.
    let out = windows(&["--virtio-blk", "27"]);
    assert_clean(&out, "--virtio-blk 27");
    let ids = mmio_device_ids(&out);
    assert_eq!(ids.len(), 32, "{}", out.transcript());
    assert_eq!(ids.iter().filter(|id| **id == 2).count(), 28);
    // One more is refused before anything is built or booted.
    match boot(&["--virtio-blk", "28", "--image", "/nonexistent"]) {
        Err(RunError::Usage(m)) => assert!(m.contains("at most 27 more"), "{m}"),
        other => panic!("{other:?}"),
    }
    // With no default device, all 32 are --virtio-blk's, as before.
    let out = windows(&["--virtio-blk", "32", "--virtio-transport", "none"]);
    assert_clean(&out, "--virtio-blk 32 --virtio-transport none");
    assert_eq!(mmio_device_ids(&out), [2; 32]);
}
