//! The QEMU command line (pure) and shell quoting for printing it. Only the QEMU-based
//! launchers ([`crate::launch`]) call this, and only this module reads the QEMU-only
//! options (`--cpu`, `--gic`, `--qemu`, `--gdb`, the arguments after `--`).

use crate::hyp::MODEL_STAGING_ADDR;
use crate::options::{Options, VirtioTransport};
use std::path::{Path, PathBuf};

/// What QEMU says on its stderr when a hub has NICs and no host network, as the default
/// NICs' hub 0 has on purpose ([`virtio_args`]): the one stderr line of such a command
/// that is not a complaint ([`expected_stderr`]).
pub const HUB_WARNING: &str = "warning: hub 0 is not connected to host network";

/// The MAC addresses of the two default NICs (locally administered, QEMU's 52:54:00).
pub const NIC_MACS: [&str; 2] = ["52:54:00:10:00:01", "52:54:00:10:00:02"];

/// The files behind a boot's virtio-blk devices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drives {
    /// One file per default virtio-blk device ([`VirtioTransport::blk_devices`]), made
    /// for this boot alone: attached without `snapshot=on`, so the guest's writes land
    /// in it (the launcher removes it when the boot ends).
    pub default: Vec<PathBuf>,
    /// The `--virtio-blk` files ([`crate::blk_images`]), shared by every run and
    /// attached with `snapshot=on`, so they never change.
    pub extra: Vec<PathBuf>,
}

/// How the guest gets into the machine.
#[derive(Clone, Copy, Debug)]
pub enum Boot<'a> {
    /// QEMU loads the raw `image` itself and starts it at EL1; `append` is the guest's
    /// command line (no `-append` when empty).
    Kernel {
        /// The guest's raw arm64 Image.
        image: &'a Path,
        /// The guest's command line.
        append: &'a str,
    },
    /// QEMU starts hypmodel at EL2; hypmodel loads `image`, which QEMU staged at
    /// [`MODEL_STAGING_ADDR`], and runs it at EL1 (hypmodel/README.md).
    Hypmodel {
        /// hypmodel's ELF.
        hypmodel: &'a Path,
        /// The guest's raw arm64 Image.
        image: &'a Path,
        /// hypmodel's whole command line: its options, `--`, then the guest's.
        bootargs: &'a str,
    },
}

/// The full QEMU argv (program first) that boots the guest as `boot` says with `opts`.
///
/// The default virtio devices of `opts.virtio_transport` ([`virtio_args`], backed by
/// `drives.default`) come first, so that they take the same virtio-mmio slots whatever
/// `--virtio-blk` adds; then the `--virtio-blk` devices, backed by `drives.extra` (one
/// per device, see [`crate::blk_images`]), each attached with `snapshot=on`: the guest may
/// write, the file never changes, and parallel runs can share the files.
pub fn qemu_argv(opts: &Options, boot: &Boot, drives: &Drives) -> Vec<String> {
    let mut a: Vec<String> = vec![opts.qemu.to_string_lossy().into_owned()];
    a.extend(machine_args(opts, matches!(boot, Boot::Hypmodel { .. })));
    a.extend(boot_args(boot));
    a.extend(words(&[
        "-semihosting-config",
        "enable=on,target=native,chardev=con",
    ]));
    a.extend(virtio_args(opts.virtio_transport, &drives.default));
    a.extend(drive_args(&drives.extra));
    if opts.gdb {
        a.extend(words(&["-s", "-S"]));
    }
    a.extend(opts.qemu_args.iter().cloned());
    a
}

fn words(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The machine, its CPUs and memory, and where its console goes. `el2` gives the first
/// program EL2 (hypmodel runs there and gives the guest EL1).
fn machine_args(opts: &Options, el2: bool) -> Vec<String> {
    let machine = if el2 {
        format!("virt,virtualization=on,gic-version={}", opts.gic)
    } else {
        format!("virt,gic-version={}", opts.gic)
    };
    let smp = opts.smp.to_string();
    words(&[
        "-M",
        &machine,
        "-cpu",
        &opts.cpu,
        "-smp",
        &smp,
        "-m",
        &opts.mem,
        // -nographic, spelt out so that the semihosting console shares the serial line:
        // a guest whose UART is gone (no console in its tree, or a hypervisor refusing
        // the UART) still reports, in order, on the one stream the runner reads.
        "-display",
        "none",
        "-chardev",
        "stdio,id=con,mux=on",
        "-serial",
        "chardev:con",
        "-mon",
        "chardev=con,mode=readline",
        "-nic",
        "none",
        "-no-reboot",
    ])
}

fn boot_args(boot: &Boot) -> Vec<String> {
    match *boot {
        Boot::Kernel { image, append } => {
            let mut a = words(&["-kernel", &image.to_string_lossy()]);
            if !append.is_empty() {
                a.extend(words(&["-append", append]));
            }
            a
        }
        Boot::Hypmodel {
            hypmodel,
            image,
            bootargs,
        } => {
            let loader = format!(
                "loader,file={},addr={MODEL_STAGING_ADDR},force-raw=on",
                qemu_opt_escape(&image.to_string_lossy())
            );
            words(&[
                "-kernel",
                &hypmodel.to_string_lossy(),
                "-device",
                &loader,
                "-append",
                bootargs,
            ])
        }
    }
}

/// The QEMU words of the default virtio devices on `transport`, the blk devices backed
/// by `blk_files` (one each, in order: [`VirtioTransport::blk_devices`] of them; a file
/// missing from the list leaves its device out).
///
/// The console is a `virtconsole` on the `con` chardev that the UART, the monitor and
/// semihosting already share (`mux=on`): its output reaches the same stdout stream, in
/// order. That is the mux's fourth and last frontend (QEMU 7.2 allows 4). The NICs are
/// two hub ports of hub 0 and nothing else: frames one sends reach the other, and QEMU
/// warns once ([`HUB_WARNING`]). `virtio-net-pci` gets `romfile=` (Debian's QEMU without
/// recommends has no `efi-virtio.rom`); the virtio-mmio devices need no ROM.
pub fn virtio_args(transport: VirtioTransport, blk_files: &[PathBuf]) -> Vec<String> {
    let (mmio, pci) = match transport {
        VirtioTransport::None => return Vec::new(),
        VirtioTransport::Mmio | VirtioTransport::MmioModern => (true, false),
        VirtioTransport::Pci => (false, true),
        VirtioTransport::Both => (true, true),
    };
    let mut a = Vec::new();
    if transport == VirtioTransport::MmioModern {
        a.extend(words(&["-global", "virtio-mmio.force-legacy=false"]));
    }
    // blk and rng on each transport asked for; with `both`, virtio-mmio first.
    let kinds: Vec<&str> = [(mmio, "device"), (pci, "pci")]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect();
    for (i, (kind, file)) in kinds.iter().zip(blk_files).enumerate() {
        let drive = format!(
            "file={},if=none,format=raw,id=vblk{i}",
            qemu_opt_escape(&file.to_string_lossy())
        );
        let dev = format!("virtio-blk-{kind},drive=vblk{i}");
        a.extend(words(&["-drive", &drive, "-device", &dev]));
    }
    for kind in &kinds {
        a.extend(words(&["-device", &format!("virtio-rng-{kind}")]));
    }
    // The console and the NICs: on virtio-mmio unless the transport is pci alone.
    let (kind, rom) = if mmio {
        ("device", "")
    } else {
        ("pci", ",romfile=")
    };
    a.extend(words(&[
        "-device",
        &format!("virtio-serial-{kind},id=vser0"),
        "-device",
        "virtconsole,chardev=con,bus=vser0.0",
    ]));
    for (i, mac) in NIC_MACS.iter().enumerate() {
        a.extend(words(&[
            "-netdev",
            &format!("hubport,id=vnet{i},hubid=0"),
            "-device",
            &format!("virtio-net-{kind},netdev=vnet{i},mac={mac}{rom}"),
        ]));
    }
    a
}

/// The ends of QEMU stderr lines that a command built with `opts` prints without
/// anything being wrong (the [`HUB_WARNING`] of the default NICs): not complaints.
pub fn expected_stderr(opts: &Options) -> Vec<String> {
    if opts.virtio_transport.has_nics() {
        vec![HUB_WARNING.to_string()]
    } else {
        Vec::new()
    }
}

fn drive_args(drives: &[PathBuf]) -> Vec<String> {
    let mut a = Vec::new();
    for (i, d) in drives.iter().enumerate() {
        let drive = format!(
            "file={},if=none,format=raw,snapshot=on,id=blk{i}",
            qemu_opt_escape(&d.to_string_lossy())
        );
        let dev = format!("virtio-blk-device,drive=blk{i}");
        a.extend(words(&["-drive", &drive, "-device", &dev]));
    }
    a
}

/// Escape a value inside a QEMU `-drive` option list (a comma is written `,,`).
fn qemu_opt_escape(s: &str) -> String {
    s.replace(',', ",,")
}

/// Quote one word for a POSIX shell so that the printed command can be pasted.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The argv as one pasteable shell line.
pub fn shell_line<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| shell_quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{parse_args, Command};

    fn opts(args: &[&str]) -> Options {
        match parse_args(args.iter().copied()) {
            Ok(Command::Run(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    fn kernel<'a>(image: &'a str, o: &'a Options) -> Boot<'a> {
        Boot::Kernel {
            image: Path::new(image),
            append: &o.append,
        }
    }

    fn value_after<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
        argv.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    /// `files` as the default blk devices' files, no `--virtio-blk` file.
    fn default_drives(files: &[&str]) -> Drives {
        Drives {
            default: files.iter().map(PathBuf::from).collect(),
            extra: Vec::new(),
        }
    }

    #[test]
    fn default_command_is_the_contract() {
        let o = opts(&[]);
        let drives = default_drives(&["/tmp/ioguard-7-0-blk.img"]);
        let argv = qemu_argv(&o, &kernel("t/ioguard.bin", &o), &drives);
        assert_eq!(
            shell_line(&argv),
            "qemu-system-aarch64 -M virt,gic-version=3 -cpu max -smp 1 -m 256M -display none \
             -chardev stdio,id=con,mux=on -serial chardev:con -mon chardev=con,mode=readline \
             -nic none -no-reboot -kernel t/ioguard.bin \
             -semihosting-config enable=on,target=native,chardev=con \
             -drive file=/tmp/ioguard-7-0-blk.img,if=none,format=raw,id=vblk0 \
             -device virtio-blk-device,drive=vblk0 -device virtio-rng-device \
             -device virtio-serial-device,id=vser0 -device virtconsole,chardev=con,bus=vser0.0 \
             -netdev hubport,id=vnet0,hubid=0 \
             -device virtio-net-device,netdev=vnet0,mac=52:54:00:10:00:01 \
             -netdev hubport,id=vnet1,hubid=0 \
             -device virtio-net-device,netdev=vnet1,mac=52:54:00:10:00:02"
        );
    }

    /// `virtio_args` of `--virtio-transport name` with one file per default blk device,
    /// as one line.
    fn transport_line(name: &str) -> String {
        let o = opts(&["--virtio-transport", name]);
        let files: Vec<PathBuf> = (0..o.virtio_transport.blk_devices())
            .map(|i| PathBuf::from(format!("/t/b{i}.img")))
            .collect();
        shell_line(&virtio_args(o.virtio_transport, &files))
    }

    #[test]
    fn each_transport_has_its_words() {
        let console = "-device virtconsole,chardev=con,bus=vser0.0";
        let nics = |kind: &str, rom: &str| {
            format!(
                "-netdev hubport,id=vnet0,hubid=0 \
                 -device virtio-net-{kind},netdev=vnet0,mac=52:54:00:10:00:01{rom} \
                 -netdev hubport,id=vnet1,hubid=0 \
                 -device virtio-net-{kind},netdev=vnet1,mac=52:54:00:10:00:02{rom}"
            )
        };
        let mmio = format!(
            "-drive file=/t/b0.img,if=none,format=raw,id=vblk0 \
             -device virtio-blk-device,drive=vblk0 -device virtio-rng-device \
             -device virtio-serial-device,id=vser0 {console} {}",
            nics("device", "")
        );
        assert_eq!(transport_line("mmio"), mmio);
        assert_eq!(
            transport_line("mmio-modern"),
            format!("-global virtio-mmio.force-legacy=false {mmio}")
        );
        assert_eq!(
            transport_line("pci"),
            format!(
                "-drive file=/t/b0.img,if=none,format=raw,id=vblk0 \
                 -device virtio-blk-pci,drive=vblk0 -device virtio-rng-pci \
                 -device virtio-serial-pci,id=vser0 {console} {}",
                nics("pci", ",romfile=")
            )
        );
        assert_eq!(
            transport_line("both"),
            format!(
                "-drive file=/t/b0.img,if=none,format=raw,id=vblk0 \
                 -device virtio-blk-device,drive=vblk0 \
                 -drive file=/t/b1.img,if=none,format=raw,id=vblk1 \
                 -device virtio-blk-pci,drive=vblk1 \
                 -device virtio-rng-device -device virtio-rng-pci \
                 -device virtio-serial-device,id=vser0 {console} {}",
                nics("device", "")
            )
        );
        assert_eq!(transport_line("none"), "");
    }

    #[test]
    fn each_transport_fills_its_slots() {
        for t in VirtioTransport::ALL {
            let files: Vec<PathBuf> = (0..t.blk_devices())
                .map(|i| PathBuf::from(format!("/b{i}")))
                .collect();
            let a = virtio_args(t, &files);
            let devices = value_after(&a, "-device");
            let count = |suffix: &str| {
                devices
                    .iter()
                    .filter(|d| d.split(',').next().unwrap().ends_with(suffix))
                    .count() as u32
            };
            // The virtio-mmio devices are what `mmio_slots` reserves for.
            assert_eq!(count("-device"), t.mmio_slots(), "{t:?}");
            assert_eq!(value_after(&a, "-drive").len(), t.blk_devices(), "{t:?}");
            let pci = devices.iter().filter(|d| d.contains("-pci")).count();
            let want_pci = match t {
                VirtioTransport::Pci => 5,
                VirtioTransport::Both => 2,
                _ => 0,
            };
            assert_eq!(pci, want_pci, "{t:?}");
            // Every virtio-net-pci has an empty romfile; no mmio device has one.
            assert!(devices
                .iter()
                .all(|d| d.starts_with("virtio-net-pci,") == d.ends_with(",romfile=")));
            assert_eq!(
                a.iter().any(|w| w == "virtio-mmio.force-legacy=false"),
                t == VirtioTransport::MmioModern
            );
        }
    }

    #[test]
    fn transport_none_attaches_nothing() {
        let o = opts(&["--virtio-transport", "none"]);
        let argv = qemu_argv(&o, &kernel("i", &o), &Drives::default());
        for flag in ["-device", "-drive", "-netdev", "-global"] {
            assert!(!argv.iter().any(|a| a == flag), "{flag} in {argv:?}");
        }
        assert!(!argv.iter().any(|a| a.contains("virtio")), "{argv:?}");
        assert_eq!(value_after(&argv, "-nic"), ["none"]);
        assert!(expected_stderr(&o).is_empty());
        // The NICs' hub warning is expected whenever there are NICs.
        for t in ["mmio", "mmio-modern", "pci", "both"] {
            let o = opts(&["--virtio-transport", t]);
            assert_eq!(expected_stderr(&o), [HUB_WARNING], "{t}");
        }
    }

    #[test]
    fn default_devices_come_before_virtio_blk_and_gdb_and_pass_through() {
        // So they keep the top virtio-mmio slots whatever --virtio-blk adds.
        let o = opts(&["--virtio-blk", "2", "--gdb", "--", "-dtb", "x"]);
        let drives = Drives {
            default: vec![PathBuf::from("/t/d.img")],
            extra: vec![PathBuf::from("/e0"), PathBuf::from("/e1")],
        };
        let argv = qemu_argv(&o, &kernel("i", &o), &drives);
        let devices = value_after(&argv, "-device");
        assert_eq!(devices.first(), Some(&"virtio-blk-device,drive=vblk0"));
        assert_eq!(
            &devices[devices.len() - 2..],
            [
                "virtio-blk-device,drive=blk0",
                "virtio-blk-device,drive=blk1"
            ]
        );
        assert_eq!(&argv[argv.len() - 4..], ["-s", "-S", "-dtb", "x"]);
    }

    #[test]
    fn options_map_to_qemu_flags() {
        let o = opts(&[
            "--smp",
            "4",
            "--mem",
            "2G",
            "--cpu",
            "cortex-a53",
            "--gic",
            "2",
            "--append",
            "only=guard:* trace",
            "--gdb",
            "--",
            "-dtb",
            "bad.dtb",
        ]);
        let argv = qemu_argv(&o, &kernel("/i.bin", &o), &Drives::default());
        assert_eq!(value_after(&argv, "-M"), ["virt,gic-version=2"]);
        assert_eq!(value_after(&argv, "-smp"), ["4"]);
        assert_eq!(value_after(&argv, "-m"), ["2G"]);
        assert_eq!(value_after(&argv, "-cpu"), ["cortex-a53"]);
        assert_eq!(value_after(&argv, "-append"), ["only=guard:* trace"]);
        assert_eq!(value_after(&argv, "-kernel"), ["/i.bin"]);
        assert!(argv.iter().any(|a| a == "-S") && argv.iter().any(|a| a == "-s"));
        // Pass-through arguments come last, unchanged.
        assert_eq!(&argv[argv.len() - 2..], ["-dtb", "bad.dtb"]);
    }

    #[test]
    fn virtio_blk_drives() {
        let extra: Vec<PathBuf> = (0..3)
            .map(|i| PathBuf::from(format!("/d/b,{i}.img")))
            .collect();
        let drives = Drives {
            default: Vec::new(),
            extra,
        };
        let o = opts(&["--virtio-blk", "3", "--virtio-transport", "none"]);
        let argv = qemu_argv(&o, &kernel("i", &o), &drives);
        assert_eq!(
            value_after(&argv, "-drive"),
            [
                "file=/d/b,,0.img,if=none,format=raw,snapshot=on,id=blk0",
                "file=/d/b,,1.img,if=none,format=raw,snapshot=on,id=blk1",
                "file=/d/b,,2.img,if=none,format=raw,snapshot=on,id=blk2",
            ]
        );
        assert_eq!(
            value_after(&argv, "-device"),
            [
                "virtio-blk-device,drive=blk0",
                "virtio-blk-device,drive=blk1",
                "virtio-blk-device,drive=blk2"
            ]
        );
        assert!(!argv.iter().any(|a| a == "-S" || a == "-append"));

        // The default blk's file is the run's own: escaped too, but written (no snapshot).
        let o = opts(&["--virtio-blk", "1"]);
        let drives = Drives {
            default: vec![PathBuf::from("/t/a,b.img")],
            extra: vec![PathBuf::from("/d/blk00.img")],
        };
        let argv = qemu_argv(&o, &kernel("i", &o), &drives);
        assert_eq!(
            value_after(&argv, "-drive"),
            [
                "file=/t/a,,b.img,if=none,format=raw,id=vblk0",
                "file=/d/blk00.img,if=none,format=raw,snapshot=on,id=blk0",
            ]
        );
    }

    #[test]
    fn quoted_line_round_trips_through_sh() {
        let words = [
            "a",
            "",
            "two words",
            "it's",
            "$HOME",
            "*",
            "a\\b",
            "\"q\"",
            "x;y",
            "`id`",
            "^x",
            "~",
            "=eq",
        ];
        let line = format!("printf '%s\\n' {}", shell_line(&words));
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .output()
            .expect("sh");
        let got = String::from_utf8(out.stdout).unwrap();
        let want: String = words.iter().map(|w| format!("{w}\n")).collect();
        assert_eq!(got, want, "{line}");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc-1.2/x=y,z:w"), "abc-1.2/x=y,z:w");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("only=guard:*"), "'only=guard:*'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(
            shell_line(&["q", "-append", "list log=x"]),
            "q -append 'list log=x'"
        );
    }
}
