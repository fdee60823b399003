//! Launchers: what starts the process that runs the guest, one per `--hyp`. A launcher
//! turns the options and a guest Image into a [`Launch`] (a command to spawn); everything
//! after the spawn is backend-neutral ([`crate::stream`]). [`launcher_for`] is the only
//! place that looks at `--hyp` to pick one.

use crate::build::{build_hypmodel, guest_elf_path, runner_dir};
use crate::exec::RunError;
use crate::hyp::{Hyp, ModelSpec};
use crate::options::Options;
use crate::qemu::{qemu_argv, shell_line, Boot};
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
    /// Files made for this boot only; the runner removes them when the boot ends.
    pub temp_files: Vec<PathBuf>,
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
        self.command().spawn().map_err(|e| {
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
        for f in &self.temp_files {
            let _ = std::fs::remove_file(f);
        }
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
}

/// The launcher for `--hyp`.
pub fn launcher_for(hyp: &Hyp) -> Box<dyn Launcher> {
    match hyp {
        Hyp::Plain => Box::new(PlainQemu),
        Hyp::Model(spec) => Box::new(Hypmodel::new(spec.clone())),
        Hyp::Pkvm => Box::new(PkvmHost),
    }
}

/// `--hyp plain`: QEMU TCG `virt` loads the guest and runs it at EL1.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainQemu;

impl PlainQemu {
    /// The QEMU argv (pure: no build, no drive files).
    pub fn argv(&self, opts: &Options, image: &Path, drives: &[PathBuf]) -> Vec<String> {
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
        let drives = blk_images(opts.virtio_blk)?;
        Ok(qemu_launch(opts, self.argv(opts, image, &drives)))
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
        drives: &[PathBuf],
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
        let drives = blk_images(opts.virtio_blk)?;
        Ok(qemu_launch(
            opts,
            self.argv(opts, &hypmodel, image, &drives),
        ))
    }
}

/// `--hyp pkvm`: a real pKVM host (reserved; refuses to run until it exists).
#[derive(Clone, Copy, Debug, Default)]
pub struct PkvmHost;

impl PkvmHost {
    fn unavailable() -> RunError {
        RunError::Usage(String::from(
            "--hyp pkvm is not yet available (--hyp plain and --hyp model are)",
        ))
    }
}

impl Launcher for PkvmHost {
    fn name(&self) -> &'static str {
        "pkvm"
    }

    fn ready(&self, _: &Options) -> Result<(), RunError> {
        Err(PkvmHost::unavailable())
    }

    fn prepare(&self, _: &Options, _: &Path) -> Result<Launch, RunError> {
        Err(PkvmHost::unavailable())
    }
}

fn qemu_launch(opts: &Options, argv: Vec<String>) -> Launch {
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
        temp_files: Vec::new(),
    }
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
    let drives = blk_images(opts.virtio_blk)?;
    let mut argv = PlainQemu.argv(opts, Path::new("unused"), &drives);
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
