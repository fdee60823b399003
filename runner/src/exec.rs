//! Side effects: building the guest, creating drive files, running QEMU with a timeout.

use crate::options::{Command, Hyp, Options};
use crate::output::{decide, Report};
use crate::qemu::{qemu_argv, shell_line};
use crate::render::{render_junit, render_tap, run_failure};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The guest's target triple.
pub const GUEST_TARGET: &str = "aarch64-unknown-none";
/// Size of each `--virtio-blk` drive file.
pub const BLK_SIZE: u64 = 1 << 20;

/// Why a run could not happen (as opposed to a run that happened and failed, which is an
/// [`Outcome`] with a non-zero status). The command exits with [`RunError::exit_status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunError {
    /// A bad option value found when running (missing image, `--hyp` not available).
    Usage(String),
    /// The guest did not build or could not be converted to a raw Image.
    Build(String),
    /// QEMU could not be started.
    Qemu(String),
    /// A file could not be written (drive images, `--tap`, `--junit`).
    Io(String),
}

impl RunError {
    /// The runner's exit status for this error (always 2).
    pub fn exit_status(&self) -> i32 {
        crate::output::STATUS_USAGE
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Usage(m) => write!(f, "{m}"),
            RunError::Build(m) => write!(f, "build failed: {m}"),
            RunError::Qemu(m) => write!(f, "{m}"),
            RunError::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Where a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// QEMU's stdout: the guest's console (serial port).
    Console,
    /// QEMU's own stderr (its warnings and errors).
    QemuStderr,
}

/// Everything about one finished (or timed-out) boot.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The QEMU argv used (program first).
    pub argv: Vec<String>,
    /// `argv` as one pasteable shell line (printed as `qemu: ...`).
    pub command_line: String,
    /// The raw Image that was booted.
    pub image: PathBuf,
    /// Every console line, `\r` stripped (same as `report.lines`).
    pub lines: Vec<String>,
    /// When each console line arrived, since QEMU was started (parallel to `lines`).
    pub times: Vec<Duration>,
    /// QEMU's own stderr lines.
    pub stderr: Vec<String>,
    /// The parsed lines: header, results, LIST entries, summary, EXIT.
    pub report: Report,
    /// The runner's exit status: the guest's decoded code, or 3 / QEMU's status when
    /// there was no valid EXIT line, or 124 on timeout.
    pub status: i32,
    /// Why the run did not end normally (the `TIMEOUT: ...` / `guest ended without an
    /// EXIT line; ...` / malformed EXIT message), `None` if it did.
    pub problem: Option<String>,
    /// The timeout fired and QEMU was killed.
    pub timed_out: bool,
    /// QEMU's exit status (`None` when killed by the runner or a signal).
    pub qemu_status: Option<i32>,
    /// Wall time from starting QEMU to its exit.
    pub elapsed: Duration,
}

impl Outcome {
    /// The result lines (PASS/FAIL/SKIP/KFAIL/XPASS) in order.
    pub fn results(&self) -> &[crate::CheckResult] {
        &self.report.results
    }

    /// The result of check `"group: case"`.
    pub fn result(&self, name: &str) -> Option<&crate::CheckResult> {
        self.report.result(name)
    }

    /// The first console line starting with `prefix`.
    pub fn line_starting(&self, prefix: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .map(String::as_str)
    }

    /// When the first console line starting with `prefix` arrived (since QEMU started).
    pub fn time_of(&self, prefix: &str) -> Option<Duration> {
        let i = self.lines.iter().position(|l| l.starts_with(prefix))?;
        self.times.get(i).copied()
    }

    /// The console lines joined with newlines (handy in assertion messages).
    pub fn transcript(&self) -> String {
        let mut s = format!("qemu: {}\n", self.command_line);
        for l in self.lines.iter().chain(&self.stderr) {
            s.push_str(l);
            s.push('\n');
        }
        if let Some(p) = &self.problem {
            s.push_str(p);
            s.push('\n');
        }
        s
    }

    /// The results as TAP version 13.
    pub fn tap(&self) -> String {
        render_tap(&self.report, self.status, self.problem.as_deref())
    }

    /// The results as JUnit XML.
    pub fn junit(&self) -> String {
        render_junit(
            &self.report,
            self.status,
            self.problem.as_deref(),
            &self.command_line,
            self.elapsed.as_secs_f64(),
        )
    }

    /// Whether the run failed for a reason beyond its result lines (see
    /// [`crate::render::run_failure`]).
    pub fn run_failure(&self) -> Option<String> {
        run_failure(&self.report, self.status, self.problem.as_deref())
    }
}

/// The workspace root (the runner crate's parent directory).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The workspace's target directory: `$CARGO_TARGET_DIR` (relative to the root) if set,
/// else `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => repo_root().join(d),
        _ => repo_root().join("target"),
    }
}

/// The guest ELF that `cargo build --release --target aarch64-unknown-none` produces.
pub fn guest_elf_path() -> PathBuf {
    target_dir()
        .join(GUEST_TARGET)
        .join("release")
        .join("ioguard")
}

/// The raw Image the runner boots by default (`ioguard.bin` next to the ELF).
pub fn image_path() -> PathBuf {
    guest_elf_path().with_extension("bin")
}

/// A scratch directory for the runner's own files (drive images, the floor Image).
pub fn runner_dir() -> PathBuf {
    target_dir().join("ioguard-runner")
}

fn command_output(cmd: &mut std::process::Command, what: &str) -> Result<String, RunError> {
    let out = cmd
        .output()
        .map_err(|e| RunError::Build(format!("cannot run {what}: {e}")))?;
    if !out.status.success() {
        return Err(RunError::Build(format!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Find llvm-objcopy: the toolchain's llvm-tools, then its `rust-objcopy`, then PATH.
fn find_objcopy(root: &Path) -> PathBuf {
    let rustc = |arg: &str| {
        command_output(
            std::process::Command::new("rustc")
                .arg(arg)
                .current_dir(root),
            "rustc",
        )
    };
    if let (Ok(sysroot), Ok(vv)) = (rustc("--print=sysroot"), rustc("-vV")) {
        if let Some(host) = vv.lines().find_map(|l| l.strip_prefix("host: ")) {
            let bin = Path::new(&sysroot)
                .join("lib/rustlib")
                .join(host.trim())
                .join("bin");
            for name in ["llvm-objcopy", "rust-objcopy"] {
                if bin.join(name).is_file() {
                    return bin.join(name);
                }
            }
        }
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
    };
    on_path("llvm-objcopy")
        .or_else(|| on_path("rust-objcopy"))
        .unwrap_or_else(|| PathBuf::from("llvm-objcopy"))
}

/// `cargo build --release --target aarch64-unknown-none -p PACKAGE [--bin BIN]` in the
/// workspace's target directory, after making sure the target is installed. `verbose` lets
/// cargo's progress through to stderr; otherwise its output is shown only in the error.
fn cargo_build_bare(package: &str, bin: Option<&str>, verbose: bool) -> Result<(), RunError> {
    let root = repo_root();
    crate::setup::ensure_guest_target(&root, GUEST_TARGET)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            GUEST_TARGET,
            "-p",
            package,
        ])
        .args(bin.map(|b| ["--bin", b]).into_iter().flatten())
        .env("CARGO_TARGET_DIR", target_dir())
        .stdin(Stdio::null());
    let failed = |detail: String| RunError::Build(format!("cargo build of {package}: {detail}"));
    if verbose {
        let st = cmd
            .status()
            .map_err(|e| RunError::Build(format!("cannot run cargo: {e}")))?;
        if !st.success() {
            return Err(failed(st.to_string()));
        }
    } else {
        let out = cmd
            .output()
            .map_err(|e| RunError::Build(format!("cannot run cargo: {e}")))?;
        if !out.status.success() {
            return Err(failed(format!(
                "{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    Ok(())
}

/// Build the guest and convert it to a raw Image; returns the Image path.
///
/// `verbose` lets cargo's progress through to stderr; otherwise its output is captured
/// and shown only in the error.
pub fn build_image_now(verbose: bool) -> Result<PathBuf, RunError> {
    let root = repo_root();
    cargo_build_bare("ioguard", None, verbose)?;
    let elf = guest_elf_path();
    if !elf.is_file() {
        return Err(RunError::Build(format!(
            "no guest ELF at {}",
            elf.display()
        )));
    }
    let image = image_path();
    // Convert to a temporary name and rename, so concurrent runs never boot half a file.
    let tmp = image.with_extension(format!("bin.{}.tmp", std::process::id()));
    let objcopy = find_objcopy(&root);
    command_output(
        std::process::Command::new(&objcopy)
            .args(["-O", "binary"])
            .arg(&elf)
            .arg(&tmp),
        &objcopy.display().to_string(),
    )?;
    std::fs::rename(&tmp, &image)
        .map_err(|e| RunError::Build(format!("rename to {}: {e}", image.display())))?;
    Ok(image)
}

/// Build the guest Image once per process (later calls return the first result), quietly.
/// Integration tests call this (directly or through [`run`]) from many threads.
pub fn build_image() -> Result<PathBuf, RunError> {
    static BUILT: OnceLock<Result<PathBuf, RunError>> = OnceLock::new();
    BUILT.get_or_init(|| build_image_now(false)).clone()
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

fn check_supported(opts: &Options) -> Result<(), RunError> {
    match opts.hyp {
        Hyp::Plain => Ok(()),
        Hyp::Model(_) => build_hypmodel().map(|_| ()),
        Hyp::Pkvm => Err(RunError::Usage(String::from(
            "--hyp pkvm is not yet available (--hyp plain and --hyp model are)",
        ))),
    }
}

/// Where the hypmodel ELF is built.
pub fn hypmodel_elf_path() -> PathBuf {
    target_dir()
        .join(GUEST_TARGET)
        .join("release")
        .join("hypmodel")
}

/// Builds hypmodel once per process (quietly; the error carries cargo's output).
pub fn build_hypmodel() -> Result<PathBuf, RunError> {
    static BUILT: OnceLock<Result<PathBuf, RunError>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            cargo_build_bare("hypmodel", Some("hypmodel"), false)?;
            Ok(hypmodel_elf_path())
        })
        .clone()
}

/// The Image a run boots: `--image` (which must exist) or a fresh build.
pub fn resolve_image(opts: &Options) -> Result<PathBuf, RunError> {
    match &opts.image {
        Some(p) if p.is_file() => Ok(p.clone()),
        Some(p) => Err(RunError::Usage(format!(
            "--image {}: no such file",
            p.display()
        ))),
        None if opts.echo => build_image_now(true),
        None => build_image(),
    }
}

/// Run with `opts`: build (unless `--image`), boot, stream, decide the status, and write
/// `--tap`/`--junit` files. With `opts.echo` the command line, every line and the runner's
/// verdict go to stdout (QEMU's stderr to stderr) as they arrive.
pub fn run(opts: &Options) -> Result<Outcome, RunError> {
    let echo = opts.echo;
    run_with(opts, &mut |stream, line| {
        if echo {
            match stream {
                Stream::Console => println!("{line}"),
                Stream::QemuStderr => eprintln!("{line}"),
            }
        }
    })
}

/// Like [`run`], but every console and QEMU-stderr line is also handed to `on_line` as it
/// arrives (whatever `opts.echo` says; the `qemu: ...` line and verdicts still follow
/// `opts.echo`).
pub fn run_with(
    opts: &Options,
    on_line: &mut dyn FnMut(Stream, &str),
) -> Result<Outcome, RunError> {
    check_supported(opts)?;
    crate::setup::ensure_qemu(&opts.qemu)?;
    let image = resolve_image(opts)?;
    let outcome = boot_image(opts, &image, on_line)?;
    if opts.echo {
        for w in outcome.report.inconsistencies() {
            eprintln!("ioguard-run: warning: {w}");
        }
    }
    let write = |path: &Option<PathBuf>, text: String| -> Result<(), RunError> {
        match path {
            Some(p) => std::fs::write(p, text)
                .map_err(|e| RunError::Io(format!("cannot write {}: {e}", p.display()))),
            None => Ok(()),
        }
    };
    write(&opts.tap, outcome.tap())?;
    write(&opts.junit, outcome.junit())?;
    Ok(outcome)
}

/// Parse runner-style arguments (as given to `./qemu-run.sh`) and run quietly.
///
/// `boot(&["--smp", "4", "--append", "list"])`. Bad arguments give [`RunError::Usage`].
pub fn boot(args: &[&str]) -> Result<Outcome, RunError> {
    match crate::options::parse_args(args.iter().copied()) {
        Ok(Command::Run(mut o)) if o.bench.is_none() => {
            o.echo = false;
            run(&o)
        }
        Ok(_) => Err(RunError::Usage(
            "boot(): --help and --bench are not runs".into(),
        )),
        Err(e) => Err(RunError::Usage(e.0)),
    }
}

/// Write the device tree QEMU would give a guest booted with `opts` (machine, CPU, SMP,
/// memory, GIC, drives, extra QEMU arguments) to `path`, using QEMU's `dumpdtb`. Handy for
/// tests that boot with a modified or foreign tree (`-dtb FILE`).
pub fn dump_dtb(opts: &Options, path: &Path) -> Result<(), RunError> {
    let drives = blk_images(opts.virtio_blk)?;
    let mut argv = qemu_argv(opts, Path::new("unused"), &drives);
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
    let out = std::process::Command::new(&v[0])
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

enum Event {
    Line(Stream, String, Duration),
    Eof,
}

fn spawn_reader<R: Read + Send + 'static>(
    r: R,
    stream: Stream,
    start: Instant,
    tx: mpsc::Sender<Event>,
) {
    thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if tx.send(Event::Line(stream, line, start.elapsed())).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Event::Eof);
    });
}

/// End a QEMU that overran its time: SIGTERM first (QEMU then removes its temporary
/// snapshot files), SIGKILL if it is still there after a second.
fn stop(child: &mut Child) {
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    if term.is_ok_and(|s| s.success()) {
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn exit_code(st: ExitStatus) -> Option<i32> {
    st.code()
}

/// Boot `image` with `opts` (no build, no `--hyp` check, no report files): the core of
/// [`run`] and of the benchmark.
pub fn boot_image(
    opts: &Options,
    image: &Path,
    on_line: &mut dyn FnMut(Stream, &str),
) -> Result<Outcome, RunError> {
    let drives = blk_images(opts.virtio_blk)?;
    let argv = qemu_argv(opts, image, &drives);
    let command_line = shell_line(&argv);
    if opts.echo {
        println!("qemu: {command_line}");
        if opts.gdb {
            eprintln!(
                "gdb: QEMU is halted and waits for a debugger on tcp::1234; attach with:\n  \
                 gdb-multiarch -ex 'target remote :1234' {}",
                match &opts.image {
                    Some(_) => "<the guest ELF>".to_string(),
                    None => guest_elf_path().display().to_string(),
                }
            );
        }
    }
    let timeout = opts.effective_timeout();
    let start = Instant::now();
    let mut child: Child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            RunError::Qemu(if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{} not found; install it with: apt-get install -y \
                     --no-install-recommends qemu-system-arm",
                    argv[0]
                )
            } else {
                format!("cannot start {}: {e}", argv[0])
            })
        })?;
    let deadline = timeout.map(|t| start + t);
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        spawn_reader(out, Stream::Console, start, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        spawn_reader(err, Stream::QemuStderr, start, tx.clone());
    }
    drop(tx);

    let mut report = Report::parse::<&str>(&[]);
    let mut times = Vec::new();
    let mut stderr = Vec::new();
    let mut open = 2;
    let mut timed_out = false;
    let mut handle = |ev: Event,
                      open: &mut i32,
                      report: &mut Report,
                      times: &mut Vec<Duration>,
                      stderr: &mut Vec<String>| match ev {
        Event::Line(s, line, t) => {
            on_line(s, &line);
            match s {
                Stream::Console => {
                    report.push_line(&line);
                    times.push(t);
                }
                Stream::QemuStderr => stderr.push(line),
            }
        }
        Event::Eof => *open -= 1,
    };
    // Stream until both pipes close or the deadline passes.
    while open > 0 {
        let ev = match deadline {
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(ev) => ev,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(ev) => ev,
                Err(_) => break,
            },
        };
        handle(ev, &mut open, &mut report, &mut times, &mut stderr);
    }
    // The pipes are closed: QEMU is exiting. Wait for it, still within the deadline.
    let mut status = None;
    if !timed_out {
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    status = Some(st);
                    break;
                }
                Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    timed_out = true;
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(1)),
                Err(e) => return Err(RunError::Qemu(format!("waiting for QEMU: {e}"))),
            }
        }
    }
    if timed_out {
        stop(&mut child);
        // Collect what was still in the pipes (a partial last line, for instance).
        let grace = Instant::now() + Duration::from_secs(2);
        while open > 0 {
            match rx.recv_timeout(grace.saturating_duration_since(Instant::now())) {
                Ok(ev) => handle(ev, &mut open, &mut report, &mut times, &mut stderr),
                Err(_) => break,
            }
        }
    }
    let elapsed = start.elapsed();
    let qemu_status = if timed_out {
        None
    } else {
        status.and_then(exit_code)
    };
    let verdict = decide(
        &report,
        qemu_status,
        timed_out,
        timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0),
    );
    if opts.echo {
        if let Some(p) = &verdict.problem {
            println!("{p}");
        }
    }
    Ok(Outcome {
        argv,
        command_line,
        image: image.to_path_buf(),
        lines: report.lines.clone(),
        times,
        stderr,
        report,
        status: verdict.status,
        problem: verdict.problem,
        timed_out,
        qemu_status,
        elapsed,
    })
}
