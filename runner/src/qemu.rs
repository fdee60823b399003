//! The QEMU command line (pure) and shell quoting for printing it. Only the QEMU-based
//! launchers ([`crate::launch`]) call this, and only this module reads the QEMU-only
//! options (`--cpu`, `--gic`, `--qemu`, `--gdb`, the arguments after `--`).

use crate::hyp::MODEL_STAGING_ADDR;
use crate::options::Options;
use std::path::{Path, PathBuf};

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
/// `drives` are the raw files backing the `--virtio-blk` devices (one per device, see
/// [`crate::blk_images`]). Each drive is attached with `snapshot=on`: the guest may write,
/// the file never changes, and parallel runs can share the files.
pub fn qemu_argv(opts: &Options, boot: &Boot, drives: &[PathBuf]) -> Vec<String> {
    let mut a: Vec<String> = vec![opts.qemu.to_string_lossy().into_owned()];
    a.extend(machine_args(opts, matches!(boot, Boot::Hypmodel { .. })));
    a.extend(boot_args(boot));
    a.extend(words(&[
        "-semihosting-config",
        "enable=on,target=native,chardev=con",
    ]));
    a.extend(drive_args(drives));
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

    #[test]
    fn default_command_is_the_contract() {
        let o = opts(&[]);
        let argv = qemu_argv(&o, &kernel("t/ioguard.bin", &o), &[]);
        assert_eq!(
            shell_line(&argv),
            "qemu-system-aarch64 -M virt,gic-version=3 -cpu max -smp 1 -m 256M -display none \
             -chardev stdio,id=con,mux=on -serial chardev:con -mon chardev=con,mode=readline \
             -nic none -no-reboot -kernel t/ioguard.bin \
             -semihosting-config enable=on,target=native,chardev=con"
        );
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
        let argv = qemu_argv(&o, &kernel("/i.bin", &o), &[]);
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
        let drives: Vec<PathBuf> = (0..3)
            .map(|i| PathBuf::from(format!("/d/b,{i}.img")))
            .collect();
        let o = opts(&["--virtio-blk", "3"]);
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
