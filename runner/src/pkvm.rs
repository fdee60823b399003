//! `--hyp pkvm`: ioguard on a real upstream pKVM host. Debian's arm64 kernel (at least
//! 7.2, the first that lets userspace create a protected VM) boots at EL2 under QEMU TCG
//! with `kvm-arm.mode=protected`; an initramfs of busybox, ioguard's VMM (`vmm/`) and the
//! guest Image runs the guest as a protected or an ordinary VM and relays its console.
//!
//! The pieces: [`fetch_kit`] gets the kernel and busybox (`runner/pkvm/fetch.sh`, through
//! the machine's apt mirror, cached); [`init_script`] is what the host runs;
//! [`initramfs`] packs it; [`host_argv`] boots it; [`judge`] reads the host's own lines
//! (`pkvm-host: ...` from the init script, `vmm: ...` from the VMM) for what the guest's
//! EXIT line cannot say: pKVM did not initialise, the VMM failed, private memory was
//! readable.

use crate::build::repo_root;
use crate::cpio::{newc, Entry};
use crate::exec::RunError;
use crate::hyp::{PkvmLayout, PkvmSpec, PkvmVm};
use crate::output::{STATUS_FAIL, STATUS_LAUNCH};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// What the host boots, from Debian's arm64 packages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kit {
    /// The kernel's version, e.g. `7.3.4+deb13-arm64`.
    pub kernel_version: String,
    /// The uncompressed arm64 Image.
    pub kernel: PathBuf,
    /// busybox-static's binary.
    pub busybox: PathBuf,
    /// Debian's arm64 qemu-system-arm and its dependencies unpacked (for `--hyp pkvm:qemu`).
    pub qemu_root: Option<PathBuf>,
}

/// Where the kit is cached between runs: `$IOGUARD_CACHE/pkvm`, else
/// `$XDG_CACHE_HOME/ioguard/pkvm`, else `~/.cache/ioguard/pkvm`.
pub fn cache_dir() -> PathBuf {
    cache_dir_from(&|k| std::env::var_os(k))
}

/// [`cache_dir`] with the environment read through `env`.
fn cache_dir_from(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var("IOGUARD_CACHE") {
        return d.join("pkvm");
    }
    let base = var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("ioguard").join("pkvm")
}

/// Reads fetch.sh's output: `kernel VERSION PATH` and `busybox PATH`.
pub fn parse_fetch_output(out: &str) -> Result<Kit, String> {
    let mut kernel = None;
    let mut busybox = None;
    let mut qemu_root = None;
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["kernel", ver, path] => kernel = Some((ver.to_string(), PathBuf::from(path))),
            ["busybox", path] => busybox = Some(PathBuf::from(path)),
            ["qemu-root", path] => qemu_root = Some(PathBuf::from(path)),
            _ => {}
        }
    }
    match (kernel, busybox) {
        (Some((kernel_version, kernel)), Some(busybox)) => Ok(Kit {
            kernel_version,
            kernel,
            busybox,
            qemu_root,
        }),
        _ => Err(format!(
            "fetch.sh did not name a kernel and busybox; it printed:\n{out}"
        )),
    }
}

/// Fetch (or find in the cache) the kit, once per process; `with_qemu` adds Debian's arm64
/// QEMU. A machine that cannot reach Debian's archive gets an error that says so: the run
/// fails, it is not skipped.
pub fn fetch_kit(with_qemu: bool) -> Result<Kit, RunError> {
    static KIT: OnceLock<Result<Kit, RunError>> = OnceLock::new();
    static KIT_QEMU: OnceLock<Result<Kit, RunError>> = OnceLock::new();
    let once = if with_qemu { &KIT_QEMU } else { &KIT };
    once.get_or_init(|| {
        let script = repo_root().join("runner").join("pkvm").join("fetch.sh");
        let cache = cache_dir();
        let out = Command::new("bash")
            .arg(&script)
            .arg(&cache)
            .args(with_qemu.then_some("qemu"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| RunError::Io(format!("cannot run {}: {e}", script.display())))?;
        if !out.status.success() {
            return Err(RunError::Io(format!(
                "the pKVM host kit could not be fetched into {} ({}):\n{}",
                cache.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            )));
        }
        let kit =
            parse_fetch_output(&String::from_utf8_lossy(&out.stdout)).map_err(RunError::Io)?;
        if with_qemu && kit.qemu_root.is_none() {
            return Err(RunError::Io(String::from("fetch.sh did not unpack QEMU")));
        }
        Ok(kit)
    })
    .clone()
}

/// `s` as one word for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The dmesg line that proves pKVM took EL2 (hVHE on `max`/`neoverse-n1`, nVHE on
/// `cortex-a72`). Some command lines fall back to plain KVM silently, and then a protected
/// VM cannot be created: the line is required, not assumed.
pub const PKVM_READY: &str = "Protected (h|n)VHE mode initialized successfully";

/// Prefix of the init script's own lines.
pub const HOST_PREFIX: &str = "pkvm-host: ";

/// The guest's memory size in MiB for the VMM, from `--mem` (`256M`, `1G`, `512`).
pub fn mem_mib(mem: &str) -> Result<u64, String> {
    let (num, scale) = match mem.trim().to_ascii_uppercase() {
        m if m.ends_with('G') => (m.trim_end_matches('G').to_string(), 1024),
        m if m.ends_with('M') => (m.trim_end_matches('M').to_string(), 1),
        m => (m, 1),
    };
    num.parse::<u64>()
        .ok()
        .map(|n| n * scale)
        .filter(|&n| (16..=1024).contains(&n))
        .ok_or_else(|| {
            format!("--mem {mem}: under --hyp pkvm the guest gets 16M to 1G (inside a 2G host)")
        })
}

/// Options that mean nothing under `--hyp pkvm`, refused rather than ignored: the guest's
/// CPU is the host's (`cpu=` in `--hyp`), the VMM has GICv3 only, nothing reaches the
/// guest through the host's QEMU, and there is no gdb stub inside the host.
pub fn refused_option(opts: &crate::Options, vm: PkvmVm) -> Option<String> {
    let why = if opts.cpu != "max" {
        "--cpu: under --hyp pkvm the guest runs on the host's CPU; choose it with --hyp pkvm,cpu=MODEL"
    } else if opts.gic != 3 && vm != PkvmVm::Qemu {
        "--gic 2: ioguard's VMM creates an in-kernel GICv3 only"
    } else if opts.virtio_blk > 0 {
        "--virtio-blk: the drives would stay outside the pKVM host"
    } else if !opts.qemu_args.is_empty() {
        "-- QEMU ARGS: the guest does not run in the QEMU the runner starts, but inside the pKVM host"
    } else if opts.gdb {
        "--gdb: there is no gdb stub for a guest inside the pKVM host"
    } else {
        return None;
    };
    Some(why.to_string())
}

/// The VMM's command line for `spec` (image at `/ioguard.bin`).
pub fn vmm_args(
    spec: &PkvmSpec,
    cpus: u32,
    mem_mib: u64,
    cmdline: &str,
    virtio: bool,
) -> Vec<String> {
    let mut a = vec![String::from("/ioguard-vmm")];
    if spec.vm == PkvmVm::Protected {
        a.push("--protected".into());
    }
    a.extend(["--cpus".into(), cpus.to_string()]);
    a.extend(["--mem".into(), mem_mib.to_string()]);
    let layout = match spec.layout {
        PkvmLayout::Qemu => "qemu",
        PkvmLayout::Crosvm => "crosvm",
    };
    a.extend(["--layout".into(), layout.into()]);
    if !cmdline.is_empty() {
        a.extend(["--cmdline".into(), cmdline.to_string()]);
    }
    if !virtio {
        a.push("--no-virtio".into());
    }
    a.push("/ioguard.bin".into());
    a
}

/// The host's `/init`: mount, require pKVM, run the VM with `vm` (the VMM's or QEMU's
/// command line), say how it ended (`vmm exit status N` or `qemu exit status N`), power
/// off.
pub fn init_script(vm: &[String]) -> String {
    let what = if vm.first().is_some_and(|p| p.ends_with("ioguard-vmm")) {
        "vmm"
    } else {
        "qemu"
    };
    let vmm_line = vm
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() {{ echo "{HOST_PREFIX}$*"; }}
ready=$(dmesg | grep -m1 -E '{PKVM_READY}')
if [ -z "$ready" ]; then
  say "FAIL: pKVM did not initialise: no '{PKVM_READY}' in dmesg"
  dmesg | grep -i -E 'kvm|hyp' | tail -n 8 | while read -r l; do say "dmesg: $l"; done
  poweroff -f
fi
say "kernel $(uname -r), ${{ready#*]: }}"
{vmm_line}
say "{what} exit status $?"
poweroff -f
"#
    )
}

/// Where the nested QEMU's virtio-blk disk is inside the host.
pub const QEMU_BLK: &str = "/blk.img";

/// QEMU's command line inside the host (`--hyp pkvm:qemu`): KVM, the host's CPU, the
/// runner's usual virtio devices with the disk at [`QEMU_BLK`], the console on stdio.
/// No semihosting: under KVM the guest ends with PSCI and its EXIT line.
pub fn qemu_in_host_args(opts: &crate::Options) -> Vec<String> {
    let mut a: Vec<String> = [
        "/usr/bin/qemu-system-aarch64",
        "-M",
        &format!("virt,gic-version={}", opts.gic),
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-smp",
        &opts.smp.to_string(),
        "-m",
        &opts.mem,
        "-chardev",
        "stdio,id=con,mux=on",
        "-serial",
        "chardev:con",
    ]
    .iter()
    .chain(HEADLESS)
    .chain(&["-kernel", "/ioguard.bin"])
    .map(|s| s.to_string())
    .collect();
    if !opts.append.is_empty() {
        a.extend(["-append".into(), opts.append.clone()]);
    }
    a.extend(crate::qemu::virtio_args(
        opts.virtio_transport,
        &[PathBuf::from(QEMU_BLK)],
    ));
    a
}

/// Whether a path of the unpacked QEMU tree stays out of the initramfs: what QEMU does not
/// load to boot a kernel on `virt` (documentation, locales, character-set converters,
/// PAM modules, the 32-bit Arm emulator, perl).
fn not_for_qemu(p: &str) -> bool {
    [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/perl5",
    ]
    .contains(&p)
        || p.ends_with("/gconv")
        || p.ends_with("/security")
        || p.contains("/perl")
        || (p.starts_with("usr/bin/") && p != "usr/bin/qemu-system-aarch64")
        || p.starts_with("usr/sbin")
        || p.starts_with("etc")
        || p.starts_with("var")
}

/// The initramfs: busybox, the VMM (or Debian's QEMU and what it needs), the guest Image,
/// `/init`, and for QEMU its disk.
pub fn initramfs(kit: &Kit, vm: Vm<'_>, image: &Path, init: &str) -> Result<Vec<u8>, RunError> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| RunError::Io(format!("{}: {e}", p.display())));
    let file = |path: &str, mode, data| Entry::File {
        path: path.into(),
        mode,
        data,
    };
    let mut entries = vec![
        Entry::Dir("bin".into()),
        Entry::Dir("dev".into()),
        Entry::Dir("proc".into()),
        Entry::Dir("sys".into()),
        Entry::Dir("tmp".into()),
        file("bin/busybox", 0o755, read(&kit.busybox)?),
        file("ioguard.bin", 0o644, read(image)?),
        file("init", 0o755, init.as_bytes().to_vec()),
    ];
    match vm {
        Vm::Vmm(vmm) => entries.push(file("ioguard-vmm", 0o755, read(vmm)?)),
        Vm::Qemu { root, blk } => {
            entries.push(Entry::Dir("usr".into()));
            entries.extend(
                crate::cpio::tree(root, "usr", &not_for_qemu)
                    .map_err(|e| RunError::Io(format!("{}: {e}", root.display())))?,
            );
            // The dynamic loader's path in every binary; merged /usr has it under usr/lib.
            entries.push(Entry::Symlink {
                path: "lib".into(),
                target: "usr/lib".into(),
            });
            entries.push(file(QEMU_BLK.trim_start_matches('/'), 0o644, blk));
        }
    }
    Ok(newc(&entries))
}

/// What runs the guest inside the host, for [`initramfs`].
pub enum Vm<'a> {
    /// ioguard's VMM binary.
    Vmm(&'a Path),
    /// Debian's QEMU unpacked at `root`, and the disk image to give the guest.
    Qemu {
        /// The unpacked packages.
        root: &'a Path,
        /// The virtio-blk disk's contents.
        blk: Vec<u8>,
    },
}

/// The host's kernel command line. `quiet loglevel=1` keeps the kernel's messages off the
/// console the guest's lines come through; `panic=-1` with `-no-reboot` turns a host panic
/// into QEMU's exit instead of a hang.
pub const HOST_APPEND: &str =
    "console=ttyAMA0 kvm-arm.mode=protected rdinit=/init quiet loglevel=1 panic=-1";

/// QEMU's argv for the host. `max` gets `pauth-impdef=on`: QEMU's default pointer
/// authentication algorithm is emulated so slowly that the host takes 9 s instead of 3 to
/// boot.
pub fn host_argv(qemu: &Path, cpu: &str, kernel: &Path, initrd: &Path) -> Vec<String> {
    let cpu = if cpu == "max" {
        String::from("max,pauth-impdef=on")
    } else {
        cpu.to_string()
    };
    [
        qemu.to_string_lossy().as_ref(),
        "-M",
        "virt,virtualization=on,gic-version=3",
        "-cpu",
        &cpu,
        "-smp",
        "2",
        "-m",
        "2G",
        "-serial",
        "stdio",
    ]
    .iter()
    .chain(HEADLESS)
    .chain(&[
        "-kernel",
        &kernel.to_string_lossy(),
        "-initrd",
        &initrd.to_string_lossy(),
        "-append",
        HOST_APPEND,
    ])
    .map(|s| s.to_string())
    .collect()
}

/// What both QEMUs (the host's, and the one `:qemu` runs inside it) have beside their
/// console: no display, no monitor, no network but the guest's own virtio NICs, and an
/// exit instead of a reset.
const HEADLESS: &[&str] = &[
    "-display",
    "none",
    "-monitor",
    "none",
    "-nic",
    "none",
    "-no-reboot",
];

/// What the host's lines say about the run, beyond the guest's EXIT line: `Some((status,
/// why))` when the host or the VMM failed. The VMM's statuses (vmm/README.md): 0 the guest
/// powered off, 3 it reset, 4 the private-memory proof failed, others a VMM failure.
pub fn judge(lines: &[String]) -> Option<(i32, String)> {
    let host: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(HOST_PREFIX))
        .collect();
    if let Some(f) = host.iter().find(|l| l.starts_with("FAIL: ")) {
        return Some((STATUS_LAUNCH, format!("pkvm host: {}", &f[6..])));
    }
    if !host.iter().any(|l| l.starts_with("kernel ")) {
        return Some((
            STATUS_LAUNCH,
            String::from(
                "pkvm host: the host never reached its init (no 'pkvm-host: kernel' line)",
            ),
        ));
    }
    let qemu = host
        .iter()
        .find_map(|l| l.strip_prefix("qemu exit status "));
    if let Some(q) = qemu {
        return match q.trim() {
            "0" => None,
            s => Some((
                STATUS_LAUNCH,
                format!("pkvm host: QEMU inside the host failed with status {s}"),
            )),
        };
    }
    let status = host
        .iter()
        .find_map(|l| l.strip_prefix("vmm exit status "))
        .and_then(|s| s.trim().parse::<i32>().ok());
    let last_vmm = || {
        lines
            .iter()
            .rev()
            .find(|l| l.starts_with("vmm: "))
            .map(|l| format!(" (last: {l})"))
            .unwrap_or_default()
    };
    match status {
        Some(0) => None,
        Some(3) => Some((
            STATUS_FAIL,
            String::from("pkvm host: the guest reset instead of powering off"),
        )),
        Some(4) => {
            let proof: Vec<&str> = lines
                .iter()
                .filter(|l| l.starts_with("vmm: shared page") || l.starts_with("vmm: private page"))
                .map(String::as_str)
                .collect();
            Some((
                STATUS_FAIL,
                format!(
                    "pkvm host: the VMM's private-memory proof failed: {}",
                    proof.join("; ")
                ),
            ))
        }
        Some(s) => Some((
            STATUS_LAUNCH,
            format!("pkvm host: the VMM failed with status {s}{}", last_vmm()),
        )),
        None => Some((
            STATUS_LAUNCH,
            format!("pkvm host: the VMM's end was never reported{}", last_vmm()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fetch_output_is_read_or_refused() {
        let k = parse_fetch_output(
            "kernel 7.3.4+deb13-arm64 /c/vmlinuz-7.3.4+deb13-arm64\nbusybox /c/busybox\n",
        )
        .unwrap();
        assert_eq!(k.kernel_version, "7.3.4+deb13-arm64");
        assert_eq!(k.kernel, PathBuf::from("/c/vmlinuz-7.3.4+deb13-arm64"));
        assert_eq!(k.busybox, PathBuf::from("/c/busybox"));
        assert_eq!(k.qemu_root, None);
        let q = parse_fetch_output("kernel v /k\nbusybox /b\nqemu-root /c/qemu-root\n").unwrap();
        assert_eq!(q.qemu_root, Some(PathBuf::from("/c/qemu-root")));
        assert!(parse_fetch_output("kernel 7.3 /k\n")
            .unwrap_err()
            .contains("kernel 7.3 /k"));
        assert!(parse_fetch_output("busybox /b\n").is_err());
    }

    #[test]
    fn vmm_args_follow_the_spec() {
        let spec = PkvmSpec::default();
        assert_eq!(
            vmm_args(&spec, 2, 256, "output=uart trace", true).join(" "),
            "/ioguard-vmm --protected --cpus 2 --mem 256 --layout qemu --cmdline output=uart trace /ioguard.bin"
        );
        let ordinary = PkvmSpec {
            vm: PkvmVm::Ordinary,
            layout: PkvmLayout::Crosvm,
            ..PkvmSpec::default()
        };
        assert_eq!(
            vmm_args(&ordinary, 1, 64, "", false).join(" "),
            "/ioguard-vmm --cpus 1 --mem 64 --layout crosvm --no-virtio /ioguard.bin"
        );
    }

    #[test]
    fn init_quotes_the_vmm_line_and_requires_pkvm() {
        let s = init_script(&lines(&["/ioguard-vmm", "--cmdline", "only=a: b it's"]));
        assert!(
            s.contains(r"'/ioguard-vmm' '--cmdline' 'only=a: b it'\''s'"),
            "{s}"
        );
        assert!(s.contains("grep -m1 -E 'Protected (h|n)VHE mode initialized successfully'"));
        assert!(s.starts_with("#!/bin/busybox sh\n"));
        assert!(s.trim_end().ends_with("poweroff -f"));
        assert!(s.contains("say \"vmm exit status $?\""));
        let q = init_script(&lines(&["/usr/bin/qemu-system-aarch64", "-accel", "kvm"]));
        assert!(q.contains("say \"qemu exit status $?\""), "{q}");
    }

    #[test]
    fn qemu_in_the_host_uses_kvm_and_the_disk_in_the_initramfs() {
        let o = match crate::options::parse_args(["--smp", "2", "--append", "only=boot:*"]) {
            Ok(crate::Command::Run(o)) => o,
            other => panic!("{other:?}"),
        };
        let a = qemu_in_host_args(&o).join(" ");
        assert!(a.starts_with("/usr/bin/qemu-system-aarch64 -M virt,gic-version=3 -accel kvm -cpu host -smp 2 -m 256M "), "{a}");
        assert!(
            a.contains("-kernel /ioguard.bin -append only=boot:*"),
            "{a}"
        );
        assert!(a.contains("file=/blk.img,if=none,format=raw"), "{a}");
        assert!(!a.contains("semihosting"), "{a}");
        for kept in [
            "usr/bin/qemu-system-aarch64",
            "usr/lib/aarch64-linux-gnu",
            "usr/share/qemu",
        ] {
            assert!(!not_for_qemu(kept), "{kept}");
        }
        for kept in [
            "usr/lib/ld-linux-aarch64.so.1",
            "usr/lib/aarch64-linux-gnu/libc.so.6",
        ] {
            assert!(!not_for_qemu(kept), "{kept}");
        }
        for left in [
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
            "usr/share/perl5",
            "usr/lib/aarch64-linux-gnu/gconv",
            "usr/lib/aarch64-linux-gnu/security",
            "usr/lib/aarch64-linux-gnu/perl-base",
            "usr/bin/qemu-system-arm",
            "usr/sbin/qemu-pr-helper",
            "etc",
            "var",
        ] {
            assert!(not_for_qemu(left), "{left}");
        }
    }

    #[test]
    fn options_that_mean_nothing_inside_the_host_are_refused() {
        let refused = |args: &[&str], vm| match crate::options::parse_args(args.iter().copied()) {
            Ok(crate::Command::Run(o)) => refused_option(&o, vm),
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(&["--smp", "2"], PkvmVm::Protected), None);
        assert!(refused(&["--cpu", "cortex-a53"], PkvmVm::Protected)
            .unwrap()
            .contains("cpu=MODEL"));
        assert!(refused(&["--gic", "2"], PkvmVm::Ordinary)
            .unwrap()
            .contains("GICv3 only"));
        assert_eq!(refused(&["--gic", "2"], PkvmVm::Qemu), None);
        assert!(refused(&["--virtio-blk", "1"], PkvmVm::Qemu)
            .unwrap()
            .contains("--virtio-blk"));
        assert!(refused(&["--", "-dtb", "x"], PkvmVm::Protected)
            .unwrap()
            .contains("QEMU ARGS"));
        assert!(refused(&["--gdb"], PkvmVm::Protected)
            .unwrap()
            .contains("gdb"));
    }

    #[test]
    fn the_cache_follows_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let all = env(&[
            ("IOGUARD_CACHE", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(cache_dir_from(&all), PathBuf::from("/c/pkvm"));
        let xdg = env(&[
            ("IOGUARD_CACHE", ""),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(cache_dir_from(&xdg), PathBuf::from("/x/ioguard/pkvm"));
        let home = env(&[("HOME", "/h")]);
        assert_eq!(
            cache_dir_from(&home),
            PathBuf::from("/h/.cache/ioguard/pkvm")
        );
        assert!(cache_dir_from(&env(&[])).ends_with("ioguard/pkvm"));
    }

    #[test]
    fn the_initramfs_holds_busybox_the_vmm_the_image_and_init() {
        let dir = std::env::temp_dir().join(format!("ioguard-pkvm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let put = |name: &str, data: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, data).unwrap();
            p
        };
        let kit = Kit {
            kernel_version: "7.3".into(),
            kernel: put("vmlinuz", b"k"),
            busybox: put("busybox", b"bb"),
            qemu_root: None,
        };
        let vmm = put("vmm", b"vmm!");
        let image = put("image", b"ARM\x64");
        let a = initramfs(&kit, Vm::Vmm(&vmm), &image, "#!init").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8_lossy(&a);
        for (name, data) in [
            ("bin/busybox", "bb"),
            ("ioguard-vmm", "vmm!"),
            ("ioguard.bin", "ARM\x64"),
            ("init", "#!init"),
        ] {
            assert!(text.contains(&format!("{name}\0")), "{name}");
            assert!(text.contains(data), "{data}");
        }
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn mem_sizes() {
        assert_eq!(mem_mib("256M"), Ok(256));
        assert_eq!(mem_mib("1G"), Ok(1024));
        assert_eq!(mem_mib("64"), Ok(64));
        assert!(mem_mib("2G").unwrap_err().contains("16M to 1G"));
        assert!(mem_mib("8M").is_err());
        assert!(mem_mib("lots").is_err());
    }

    #[test]
    fn host_argv_speeds_up_pauth_on_max_only() {
        let a = host_argv(Path::new("q"), "max", Path::new("k"), Path::new("i")).join(" ");
        assert!(a.contains("-cpu max,pauth-impdef=on "), "{a}");
        assert!(a.contains("virtualization=on"));
        assert!(a.ends_with(&format!("-append {HOST_APPEND}")));
        let b = host_argv(Path::new("q"), "cortex-a72", Path::new("k"), Path::new("i")).join(" ");
        assert!(b.contains("-cpu cortex-a72 "), "{b}");
    }

    #[test]
    fn judge_reads_the_hosts_lines() {
        let ok = lines(&[
            "pkvm-host: kernel 7.3.4+deb13-arm64, Protected hVHE mode initialized successfully",
            "EXIT: STATUS=1",
            "vmm: guest powered off",
            "pkvm-host: vmm exit status 0",
        ]);
        assert_eq!(judge(&ok), None);
        let no_pkvm = lines(&["pkvm-host: FAIL: pKVM did not initialise: no ..."]);
        let (st, why) = judge(&no_pkvm).unwrap();
        assert_eq!(st, STATUS_LAUNCH);
        assert!(why.contains("pKVM did not initialise"), "{why}");
        assert_eq!(judge(&[]).unwrap().0, STATUS_LAUNCH);
        let mut leak = ok.clone();
        leak[3] = "pkvm-host: vmm exit status 4".into();
        leak.insert(
            3,
            "vmm: private page 0x40080000: read ok (NOT private)".into(),
        );
        let (st, why) = judge(&leak).unwrap();
        assert_eq!(st, STATUS_FAIL);
        assert!(why.contains("read ok (NOT private)"), "{why}");
        let mut crash = ok.clone();
        crash[3] = "pkvm-host: vmm exit status 1".into();
        crash[2] = "vmm: KVM_RUN failed: EINVAL".into();
        let (st, why) = judge(&crash).unwrap();
        assert_eq!(st, STATUS_LAUNCH);
        assert!(
            why.contains("status 1") && why.contains("KVM_RUN failed"),
            "{why}"
        );
        let mut reset = ok.clone();
        reset[3] = "pkvm-host: vmm exit status 3".into();
        assert_eq!(judge(&reset).unwrap().0, STATUS_FAIL);
        let qemu_ok = lines(&[&ok[0], "EXIT: STATUS=1", "pkvm-host: qemu exit status 0"]);
        assert_eq!(judge(&qemu_ok), None);
        let qemu_bad = lines(&[&ok[0], "pkvm-host: qemu exit status 1"]);
        assert_eq!(judge(&qemu_bad).unwrap().0, STATUS_LAUNCH);
        let unended = lines(&[&ok[0], "vmm: something"]);
        assert!(judge(&unended).unwrap().1.contains("never reported"));
    }
}
