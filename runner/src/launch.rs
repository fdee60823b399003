//! Launchers: what starts the process that runs the guest, one per `--hyp`. A launcher
//! turns the options and a guest Image into a [`Launch`] (a command to spawn); everything
//! after the spawn is backend-neutral ([`crate::stream()`]). [`launcher_for`] is the only
//! place that looks at `--hyp` to pick one.

use crate::build::{build_hypmodel, build_vmm, guest_elf_path, runner_dir};
use crate::exec::RunError;
use crate::hyp::{Hyp, ModelSpec, PkvmSpec, PkvmVm};
use crate::options::{Options, VirtioTransport, DEFAULT_BLK_SIZE};
use crate::pkvm;
use crate::qemu::{expected_stderr, qemu_argv, shell_line, Boot, Drives};
use crate::setup::{ensure_qemu, QEMU_INSTALL};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Size of each `--virtio-blk` drive file.
pub const BLK_SIZE: u64 = 1 << 20;

/// A ready-to-spawn boot of one guest Image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Printed to stderr after the command line when echoing (how to attach gdb).
    pub notice: Option<String>,
    /// The command that provides the program, named in the error when it is missing.
    pub install: Option<&'static str>,
    /// Files made for this boot only ([`crate::temp`]); the runner removes them when the
    /// boot ends, however it ends.
    pub temp_files: Vec<PathBuf>,
    /// Ends of stderr lines the program prints without anything being wrong
    /// ([`crate::qemu::expected_stderr`]): dropped, neither shown nor counted as a
    /// complaint.
    pub expected_stderr: Vec<String>,
}

impl Launch {
    /// `argv` as one pasteable shell line (printed as `qemu: ...`).
    pub fn command_line(&self) -> String {
        shell_line(&self.argv)
    }

    /// The command to run: no stdin; stdout (the guest's console) and stderr piped for
    /// [`crate::stream::stream`].
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.argv[0]);
        c.args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Spawn [`Launch::command`].
    pub fn spawn(&self) -> Result<Child, RunError> {
        let program = &self.argv[0];
        crate::stream::spawn_listed(&mut self.command()).map_err(|e| {
            RunError::Qemu(match self.install {
                Some(how) if e.kind() == std::io::ErrorKind::NotFound => {
                    format!("{program} not found; install it (as root) with: {how}")
                }
                _ => format!("cannot start {program}: {e}"),
            })
        })
    }

    /// Remove [`Launch::temp_files`] (those already gone are fine).
    pub fn clean_up(&self) {
        crate::temp::remove(&self.temp_files);
    }
}

/// A way to run the guest: plain QEMU, QEMU with hypmodel at EL2, a pKVM host.
pub trait Launcher {
    /// Short name for messages (`qemu`, `hypmodel`, `pkvm`).
    fn name(&self) -> &'static str;

    /// Make the host ready before the guest is built (find or install QEMU, build
    /// hypmodel), or say why this backend cannot run, so that a run fails early.
    fn ready(&self, opts: &Options) -> Result<(), RunError>;

    /// The command that boots `image` with `opts`.
    fn prepare(&self, opts: &Options, image: &Path) -> Result<Launch, RunError>;

    /// What the launcher's own lines (not the guest's) say about a finished boot:
    /// `Some((status, why))` when the machinery around the guest failed or caught the
    /// hypervisor out (a pKVM host that did not initialise, a VMM that read private
    /// memory). Plain QEMU and hypmodel have none.
    fn judge(&self, _lines: &[String]) -> Option<(i32, String)> {
        None
    }
}

/// The launcher for `--hyp`.
pub fn launcher_for(hyp: &Hyp) -> Box<dyn Launcher> {
    match hyp {
        Hyp::Plain => Box::new(PlainQemu),
        Hyp::Model(spec) => Box::new(Hypmodel::new(spec.clone())),
        Hyp::Pkvm(spec) => Box::new(PkvmHost::new(spec.clone())),
    }
}

/// `--hyp plain`: QEMU TCG `virt` loads the guest and runs it at EL1.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainQemu;

impl PlainQemu {
    /// The QEMU argv (pure: no build, no drive files).
    pub fn argv(&self, opts: &Options, image: &Path, drives: &Drives) -> Vec<String> {
        let boot = Boot::Kernel {
            image,
            append: &opts.append,
        };
        qemu_argv(opts, &boot, drives)
    }
}

impl Launcher for PlainQemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn ready(&self, opts: &Options) -> Result<(), RunError> {
        ensure_qemu(&opts.qemu)
    }

    fn prepare(&self, opts: &Options, image: &Path) -> Result<Launch, RunError> {
        let drives = drives(opts)?;
        Ok(qemu_launch(opts, self.argv(opts, image, &drives), drives))
    }
}

/// `--hyp model`: QEMU starts hypmodel at EL2 with the guest Image staged for it.
#[derive(Clone, Debug, Default)]
pub struct Hypmodel {
    spec: ModelSpec,
    bootargs: Option<String>,
}

impl Hypmodel {
    /// hypmodel as `spec` says, with the guest's command line from `--append`.
    pub fn new(spec: ModelSpec) -> Hypmodel {
        Hypmodel {
            spec,
            bootargs: None,
        }
    }

    /// hypmodel with exactly `bootargs` as its command line (its options, `--`, the
    /// guest's), whatever `--append` says: for testing hypmodel itself, including with
    /// options the runner would refuse.
    pub fn with_bootargs(bootargs: impl Into<String>) -> Hypmodel {
        Hypmodel {
            spec: ModelSpec::default(),
            bootargs: Some(bootargs.into()),
        }
    }

    /// The QEMU argv (pure) with hypmodel's ELF at `hypmodel`.
    pub fn argv(
        &self,
        opts: &Options,
        hypmodel: &Path,
        image: &Path,
        drives: &Drives,
    ) -> Vec<String> {
        let bootargs = match &self.bootargs {
            Some(b) => b.clone(),
            None => self.spec.bootargs(&opts.append),
        };
        let boot = Boot::Hypmodel {
            hypmodel,
            image,
            bootargs: &bootargs,
        };
        qemu_argv(opts, &boot, drives)
    }
}

impl Launcher for Hypmodel {
    fn name(&self) -> &'static str {
        "hypmodel"
    }

    fn ready(&self, opts: &Options) -> Result<(), RunError> {
        build_hypmodel()?;
        ensure_qemu(&opts.qemu)
    }

    fn prepare(&self, opts: &Options, image: &Path) -> Result<Launch, RunError> {
        let hypmodel = build_hypmodel()?;
        let drives = drives(opts)?;
        Ok(qemu_launch(
            opts,
            self.argv(opts, &hypmodel, image, &drives),
            drives,
        ))
    }
}

/// `--hyp pkvm`: a real pKVM host ([`crate::pkvm`]) runs the guest in a VM of its own.
#[derive(Clone, Debug, Default)]
pub struct PkvmHost {
    spec: PkvmSpec,
}

impl PkvmHost {
    /// The host as `spec` says.
    pub fn new(spec: PkvmSpec) -> PkvmHost {
        PkvmHost { spec }
    }

    /// Whether the VMM gets virtio devices, from `--virtio-transport`.
    fn virtio(opts: &Options) -> Result<bool, RunError> {
        match opts.virtio_transport {
            VirtioTransport::Mmio | VirtioTransport::MmioModern => Ok(true),
            VirtioTransport::None => Ok(false),
            VirtioTransport::Pci | VirtioTransport::Both => Err(RunError::Usage(String::from(
                "--hyp pkvm: ioguard's VMM offers virtio-mmio (modern) only; use \
                 --virtio-transport mmio or none",
            ))),
        }
    }
}

impl Launcher for PkvmHost {
    fn name(&self) -> &'static str {
        "pkvm"
    }

    fn ready(&self, opts: &Options) -> Result<(), RunError> {
        let qemu = self.spec.vm == PkvmVm::Qemu;
        if let Some(why) = pkvm::refused_option(opts, self.spec.vm) {
            return Err(RunError::Usage(why));
        }
        if !qemu {
            PkvmHost::virtio(opts)?;
        }
        pkvm::mem_mib(&opts.mem).map_err(RunError::Usage)?;
        ensure_qemu(&opts.qemu)?;
        pkvm::fetch_kit(qemu)?;
        if !qemu {
            build_vmm()?;
        }
        Ok(())
    }

    fn prepare(&self, opts: &Options, image: &Path) -> Result<Launch, RunError> {
        let qemu = self.spec.vm == PkvmVm::Qemu;
        let kit = pkvm::fetch_kit(qemu)?;
        let cpio = if qemu {
            let root = kit
                .qemu_root
                .clone()
                .ok_or_else(|| RunError::Io("the kit has no QEMU".into()))?;
            let size = DEFAULT_BLK_SIZE;
            let mut blk = blk_header(size).into_bytes();
            blk.resize(size as usize, 0);
            let init = pkvm::init_script(&pkvm::qemu_in_host_args(opts));
            pkvm::initramfs(&kit, pkvm::Vm::Qemu { root: &root, blk }, image, &init)?
        } else {
            let vmm = build_vmm()?;
            let mem = pkvm::mem_mib(&opts.mem).map_err(RunError::Usage)?;
            let args = pkvm::vmm_args(
                &self.spec,
                opts.smp,
                mem,
                &opts.append,
                PkvmHost::virtio(opts)?,
            );
            pkvm::initramfs(&kit, pkvm::Vm::Vmm(&vmm), image, &pkvm::init_script(&args))?
        };
        let initrd = crate::temp::create("initrd", 0)?;
        let launch = Launch {
            argv: pkvm::host_argv(&opts.qemu, &self.spec.cpu, &kit.kernel, &initrd),
            notice: None,
            install: Some(QEMU_INSTALL),
            temp_files: vec![initrd.clone()],
            expected_stderr: Vec::new(),
        };
        if let Err(e) = std::fs::write(&initrd, cpio) {
            launch.clean_up();
            return Err(RunError::Io(format!("{}: {e}", initrd.display())));
        }
        Ok(launch)
    }

    fn judge(&self, lines: &[String]) -> Option<(i32, String)> {
        pkvm::judge(lines)
    }
}

/// The launch of `argv`; `drives.default` are its temporary files.
fn qemu_launch(opts: &Options, argv: Vec<String>, drives: Drives) -> Launch {
    let notice = opts.gdb.then(|| {
        format!(
            "gdb: QEMU is halted and waits for a debugger on tcp::1234; attach with:\n  \
             gdb-multiarch -ex 'target remote :1234' {}",
            match &opts.image {
                Some(_) => "<the guest ELF>".to_string(),
                None => guest_elf_path().display().to_string(),
            }
        )
    });
    Launch {
        argv,
        notice,
        install: Some(QEMU_INSTALL),
        temp_files: drives.default,
        expected_stderr: expected_stderr(opts),
    }
}

/// The drive files of a boot with `opts`: the shared `--virtio-blk` files, and the
/// default blk devices' files made for this boot (last, once nothing else can fail; the
/// caller removes them, see [`Launch::clean_up`]).
pub fn drives(opts: &Options) -> Result<Drives, RunError> {
    let extra = blk_images(opts.virtio_blk)?;
    let default = default_blk_files(opts.virtio_transport)?;
    Ok(Drives { default, extra })
}

/// What the first sector of a default blk file starts with: the capacity the guest's
/// `virtio: blk-rw` compares the device's with.
pub fn blk_header(size: u64) -> String {
    format!("IOGUARD-BLK sectors={}\n", size / 512)
}

/// One new file of [`DEFAULT_BLK_SIZE`] bytes per default virtio-blk device of
/// `transport` ([`crate::temp::create`]: unique to this boot, registered for removal),
/// zeros but for [`blk_header`] at the start.
pub fn default_blk_files(transport: VirtioTransport) -> Result<Vec<PathBuf>, RunError> {
    let mut files = Vec::new();
    for _ in 0..transport.blk_devices() {
        let made = crate::temp::create("blk", DEFAULT_BLK_SIZE).and_then(|f| {
            use std::io::Write;
            let written = std::fs::OpenOptions::new()
                .write(true)
                .open(&f)
                .and_then(|mut w| w.write_all(blk_header(DEFAULT_BLK_SIZE).as_bytes()));
            match written {
                Ok(()) => Ok(f),
                Err(e) => {
                    crate::temp::remove(std::slice::from_ref(&f));
                    Err(RunError::Io(format!("{}: {e}", f.display())))
                }
            }
        });
        match made {
            Ok(f) => files.push(f),
            Err(e) => {
                crate::temp::remove(&files);
                return Err(e);
            }
        }
    }
    Ok(files)
}

/// Create (if needed) `n` raw drive files of [`BLK_SIZE`] bytes for `--virtio-blk` and
/// return their paths. Sector 0 of drive `i` starts with `ioguard-blk-NN\n`.
pub fn blk_images(n: u32) -> Result<Vec<PathBuf>, RunError> {
    let dir = runner_dir().join("blk");
    let io = |e: std::io::Error| RunError::Io(format!("drive images in {}: {e}", dir.display()));
    if n > 0 {
        std::fs::create_dir_all(&dir).map_err(io)?;
    }
    (0..n)
        .map(|i| {
            let path = dir.join(format!("blk{i:02}.img"));
            let ok = std::fs::metadata(&path)
                .map(|m| m.len() == BLK_SIZE)
                .unwrap_or(false);
            if !ok {
                let mut data = vec![0u8; BLK_SIZE as usize];
                let tag = format!("ioguard-blk-{i:02}\n");
                data[..tag.len()].copy_from_slice(tag.as_bytes());
                let tmp = path.with_extension(format!("img.{}.tmp", std::process::id()));
                std::fs::write(&tmp, &data).map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
            }
            Ok(path)
        })
        .collect()
}

/// Write the device tree QEMU would give a guest booted with `opts` (machine, CPU, SMP,
/// memory, GIC, drives, extra QEMU arguments) to `path`, using QEMU's `dumpdtb`. Handy for
/// tests that boot with a modified or foreign tree (`-dtb FILE`). This is plain QEMU's
/// tree whatever `--hyp` says (under hypmodel the guest gets hypmodel's rewrite of it).
pub fn dump_dtb(opts: &Options, path: &Path) -> Result<(), RunError> {
    let drives = drives(opts)?;
    let argv = PlainQemu.argv(opts, Path::new("unused"), &drives);
    let dumped = run_dumpdtb(argv, path);
    crate::temp::remove(&drives.default);
    dumped
}

/// Run `argv` (a boot's) as a `dumpdtb` to `path` instead.
fn run_dumpdtb(mut argv: Vec<String>, path: &Path) -> Result<(), RunError> {
    // Drop `-kernel`, `-append` and `-s -S`; add dumpdtb to the machine.
    let mut v = Vec::with_capacity(argv.len());
    let mut it = argv.drain(..);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-kernel" | "-append" => {
                it.next();
            }
            "-s" | "-S" => {}
            "-M" => {
                let m = it.next().unwrap_or_default();
                v.push(a);
                v.push(format!(
                    "{m},dumpdtb={}",
                    path.to_string_lossy().replace(',', ",,")
                ));
            }
            _ => v.push(a),
        }
    }
    let out = Command::new(&v[0])
        .args(&v[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RunError::Qemu(format!("cannot start {}: {e}", v[0])))?;
    if !out.status.success() || !path.is_file() {
        return Err(RunError::Qemu(format!(
            "{} failed ({}): {}",
            shell_line(&v),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_default_blk_file_starts_with_its_capacity() {
        let files = super::default_blk_files(crate::options::VirtioTransport::Both).unwrap();
        assert_eq!(files.len(), 2);
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            assert_eq!(bytes.len() as u64, super::DEFAULT_BLK_SIZE);
            assert!(bytes.starts_with(b"IOGUARD-BLK sectors=16384\n"), "{f:?}");
            assert!(bytes[26..].iter().all(|&b| b == 0));
        }
        crate::temp::remove(&files);
        assert!(files.iter().all(|f| !f.exists()));
    }

    use super::*;
    use crate::options::{parse_args, Command as Cmd};
    use crate::qemu::shell_line;

    fn opts(args: &[&str]) -> Options {
        match parse_args(args.iter().copied()) {
            Ok(Cmd::Run(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hyp_picks_the_launcher() {
        let name = |args: &[&str]| launcher_for(&opts(args).hyp).name();
        assert_eq!(name(&[]), "qemu");
        assert_eq!(name(&["--hyp", "plain"]), "qemu");
        assert_eq!(name(&["--hyp", "model:android16,trace"]), "hypmodel");
        assert_eq!(name(&["--hyp", "pkvm"]), "pkvm");
    }

    #[test]
    fn pkvm_refuses_what_it_cannot_run_before_fetching_anything() {
        let refused = |args: &[&str]| {
            let o = opts(args);
            match launcher_for(&o.hyp).ready(&o) {
                Err(RunError::Usage(m)) => m,
                other => panic!("{args:?}: {other:?}"),
            }
        };
        assert!(refused(&["--hyp", "pkvm", "--virtio-transport", "pci"]).contains("virtio-mmio"));
        assert!(refused(&["--hyp", "pkvm", "--mem", "4G"]).contains("16M to 1G"));
    }

    #[test]
    fn hypmodel_command_is_the_contract() {
        let o = opts(&["--smp", "2", "--hyp", "model:android14", "--append", "list"]);
        let Hyp::Model(spec) = &o.hyp else {
            panic!("{:?}", o.hyp)
        };
        let drives = Drives {
            default: vec![PathBuf::from("/tmp/ioguard-7-0-blk.img")],
            extra: Vec::new(),
        };
        let argv = Hypmodel::new(spec.clone()).argv(
            &o,
            Path::new("t/hypmodel"),
            Path::new("t/i,1.bin"),
            &drives,
        );
        assert_eq!(
            shell_line(&argv),
            "qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu max -smp 2 -m 256M \
             -display none -chardev stdio,id=con,mux=on -serial chardev:con \
             -mon chardev=con,mode=readline -nic none -no-reboot -kernel t/hypmodel \
             -device loader,file=t/i,,1.bin,addr=0x41000000,force-raw=on \
             -append 'hypmodel.profile=android14 -- list' \
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

    #[test]
    fn hypmodel_bootargs_can_be_given_whole() {
        // Used by hypmodel's own tests: `--append` is ignored, an empty line is passed on.
        let o = opts(&["--append", "list", "--mem", "2G"]);
        for (given, want) in [("", ""), ("hypmodel.nosuch", "hypmodel.nosuch")] {
            let argv = Hypmodel::with_bootargs(given).argv(
                &o,
                Path::new("h"),
                Path::new("g"),
                &Drives::default(),
            );
            let append: Vec<_> = argv.windows(2).filter(|w| w[0] == "-append").collect();
            assert_eq!(append, [["-append", want]]);
            assert!(argv.contains(&"-m".to_string()) && argv.contains(&"2G".to_string()));
        }
    }

    #[test]
    fn plain_and_hypmodel_share_machine_drives_gdb_and_pass_through() {
        let o = opts(&[
            "--gic",
            "2",
            "--cpu",
            "cortex-a53",
            "--gdb",
            "--",
            "-dtb",
            "x.dtb",
        ]);
        let drives = Drives {
            default: vec![PathBuf::from("/t/vblk.img")],
            extra: vec![PathBuf::from("/d/blk00.img")],
        };
        let plain = PlainQemu.argv(&o, Path::new("g"), &drives);
        let model = Hypmodel::default().argv(&o, Path::new("h"), Path::new("g"), &drives);
        for argv in [&plain, &model] {
            assert!(argv.windows(2).any(|w| w == ["-cpu", "cortex-a53"]));
            assert!(argv.iter().any(|a| a == "virtio-blk-device,drive=blk0"));
            // The default devices too, under both launchers.
            let defaults = crate::qemu::virtio_args(o.virtio_transport, &drives.default);
            assert!(argv.windows(defaults.len()).any(|w| w == defaults));
            assert_eq!(&argv[argv.len() - 4..], ["-s", "-S", "-dtb", "x.dtb"]);
        }
        assert!(plain.windows(2).any(|w| w == ["-M", "virt,gic-version=2"]));
        assert!(model
            .windows(2)
            .any(|w| w == ["-M", "virt,virtualization=on,gic-version=2"]));
        assert!(!plain.iter().any(|a| a.starts_with("loader,")));
        // The gdb hint comes with the launch, for the runner to print.
        let launch = qemu_launch(&o, plain, drives);
        assert!(launch.notice.unwrap().contains("tcp::1234"));
        assert_eq!(launch.install, Some(QEMU_INSTALL));
        // The run's own file is its temporary file; the shared --virtio-blk one is not.
        assert_eq!(launch.temp_files, [PathBuf::from("/t/vblk.img")]);
        assert_eq!(launch.expected_stderr, [crate::qemu::HUB_WARNING]);
    }

    #[test]
    fn a_missing_program_names_its_install_command() {
        let launch = Launch {
            argv: vec!["/nonexistent/qemu-system-aarch64".into()],
            notice: None,
            install: Some(QEMU_INSTALL),
            temp_files: Vec::new(),
            expected_stderr: Vec::new(),
        };
        let e = launch.spawn().unwrap_err();
        assert_eq!(
            e,
            RunError::Qemu(format!(
                "/nonexistent/qemu-system-aarch64 not found; install it (as root) with: {QEMU_INSTALL}"
            ))
        );
    }

    #[test]
    fn temp_files_are_removed() {
        let dir = std::env::temp_dir().join(format!("ioguard-launch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t");
        std::fs::write(&f, "x").unwrap();
        let launch = Launch {
            argv: vec!["true".into()],
            notice: None,
            install: None,
            temp_files: vec![f.clone(), dir.join("never-made")],
            expected_stderr: Vec::new(),
        };
        launch.clean_up();
        assert!(!f.exists());
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn each_run_gets_its_own_default_blk_files() {
        let o = opts(&["--virtio-transport", "both"]);
        let a = drives(&o).unwrap();
        let b = drives(&o).unwrap();
        assert_eq!((a.default.len(), b.default.len()), (2, 2));
        assert!(a.extra.is_empty());
        let mut all: Vec<_> = a.default.iter().chain(&b.default).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4, "{all:?}");
        for f in &all {
            assert_eq!(std::fs::metadata(f).unwrap().len(), DEFAULT_BLK_SIZE);
            assert!(crate::temp::is_registered(f));
        }
        // prepare() hands them to the launch, whose clean-up removes them.
        let launch = PlainQemu.prepare(&o, Path::new("i.bin")).unwrap();
        assert_eq!(launch.temp_files.len(), 2);
        assert!(launch.temp_files.iter().all(|f| f.exists()));
        launch.clean_up();
        assert!(launch.temp_files.iter().all(|f| !f.exists()));
        crate::temp::remove(&a.default);
        crate::temp::remove(&b.default);
        assert!(all.iter().all(|f| !f.exists()));
        let none = opts(&["--virtio-transport", "none"]);
        assert_eq!(drives(&none).unwrap(), Drives::default());
    }
}
