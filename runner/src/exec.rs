//! One run: pick the launcher for `--hyp`, build the guest, boot it, stream it, decide the
//! status, write the report files. The pieces live in [`crate::build`],
//! [`crate::launch`] and [`mod@crate::stream`].

use crate::build::{build_image, build_image_now};
use crate::image::check_image;
use crate::launch::{launcher_for, Launch, Launcher};
use crate::options::{Command, Options};
use crate::output::{
    Report, Stall, Verdict, STATUS_LAUNCH, STATUS_NO_EXIT, STATUS_PASS, STATUS_TIMEOUT,
    STATUS_USAGE,
};
use crate::render::{render_junit, render_tap, run_failure};
use crate::stream::{stream_expecting, Limits, Stream};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a run could not happen (as opposed to a run that happened and failed, which is an
/// [`Outcome`] with a non-zero status). The command exits with [`RunError::exit_status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunError {
    /// A bad option value found when running (missing image, `--hyp` not available,
    /// a `--tap`/`--junit` file that cannot be written). Exit status 2.
    Usage(String),
    /// The guest did not build or could not be converted to a raw Image. Exit status 3.
    Build(String),
    /// QEMU could not be started (missing, not executable). Exit status 3.
    Qemu(String),
    /// The file to boot is not an arm64 Image (see [`crate::image`]). Exit status 3.
    Image(String),
    /// A file the launcher needs could not be made (drive images). Exit status 3.
    Io(String),
}

impl RunError {
    /// The runner's exit status for this error: 2 for a usage error, 3 when the launcher
    /// could not start (build, QEMU, Image, files it needs).
    pub fn exit_status(&self) -> i32 {
        match self {
            RunError::Usage(_) => STATUS_USAGE,
            RunError::Build(_) | RunError::Qemu(_) | RunError::Image(_) | RunError::Io(_) => {
                STATUS_LAUNCH
            }
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Usage(m) => write!(f, "{m}"),
            RunError::Build(m) => write!(f, "build failed: {m}"),
            RunError::Qemu(m) | RunError::Image(m) | RunError::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for RunError {}

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
    /// The guest printed nothing for the silence limit and QEMU was killed.
    pub silent: bool,
    /// Where a run without a verdict stopped (status 4 or 124; set by [`run`], not by
    /// [`boot_with`]).
    pub stall: Option<Stall>,
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
        render_tap(
            &self.report,
            self.status,
            self.problem.as_deref(),
            self.stall.as_ref(),
        )
    }

    /// The results as KTAP version 1 ([`crate::ktap`]).
    pub fn ktap(&self) -> String {
        crate::ktap::render_ktap(
            &self.report,
            self.status,
            self.problem.as_deref(),
            self.stall.as_ref(),
        )
    }

    /// The results as JUnit XML.
    pub fn junit(&self) -> String {
        render_junit(
            &self.report,
            self.status,
            self.problem.as_deref(),
            self.stall.as_ref(),
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

/// The Image a run boots: `--image` (which must exist and be an arm64 Image) or a fresh
/// build.
pub fn resolve_image(opts: &Options) -> Result<PathBuf, RunError> {
    let image = match &opts.image {
        Some(p) if p.is_file() => p.clone(),
        Some(p) if p.exists() => {
            return Err(RunError::Image(format!(
                "--image {}: not a regular file",
                p.display()
            )))
        }
        Some(p) => {
            return Err(RunError::Usage(format!(
                "--image {}: no such file",
                p.display()
            )))
        }
        None if opts.echo => build_image_now(true)?,
        None => build_image()?,
    };
    check_image(&image)?;
    Ok(image)
}

/// Check before anything is built or booted that the `--tap`, `--junit` and `--ktap` files
/// can be written, and are neither the same file nor the Image.
pub fn check_report_paths(opts: &Options) -> Result<(), RunError> {
    let paths: Vec<(&str, &Path)> = [
        ("--tap", &opts.tap),
        ("--junit", &opts.junit),
        ("--ktap", &opts.ktap),
    ]
    .into_iter()
    .filter_map(|(n, p)| p.as_deref().map(|p| (n, p)))
    .collect();
    let same = |a: &Path, b: &Path| {
        a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    };
    for (i, (name, path)) in paths.iter().enumerate() {
        let usage = |m: String| RunError::Usage(format!("{name} {}: {m}", path.display()));
        if let Some((other, _)) = paths[..i].iter().find(|(_, p)| same(p, path)) {
            return Err(usage(format!(
                "the same file as {other}; give each its own"
            )));
        }
        if opts.image.as_deref().is_some_and(|img| same(img, path)) {
            return Err(usage(
                "is the --image to boot; it would be overwritten".into(),
            ));
        }
        let existed = path.exists();
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| usage(format!("cannot be written: {e}")))?;
        if !existed {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

/// Run with `opts`: build (unless `--image`), boot, stream, decide the status, and write
/// `--tap`/`--junit`/`--ktap` files. With `opts.echo` the command line, every line and the runner's
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
    check_report_paths(opts)?;
    let launcher = launcher_for(&opts.hyp);
    launcher.ready(opts)?;
    let image = resolve_image(opts)?;
    let mut outcome = boot_with(&*launcher, opts, &image, on_line)?;
    if crate::stream::stopping() {
        // A signal stopped QEMU; the runner exits on it (crate::signals), with no verdict.
        return Ok(outcome);
    }
    if matches!(outcome.status, STATUS_NO_EXIT | STATUS_TIMEOUT) {
        let stall = locate_stall(&*launcher, opts, &image, &outcome.report);
        if opts.echo {
            for l in stall.describe() {
                println!("ioguard-run: {l}");
            }
        }
        outcome.stall = Some(stall);
    }
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
    write(&opts.ktap, outcome.ktap())?;
    Ok(outcome)
}

/// How long the second boot that lists the selection may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a run without a verdict stopped. The guest does not announce its checks, so the
/// selection's order comes from booting the same Image with the same options and `list`
/// added to the guest's command line (at most [`LIST_TIMEOUT`]); without it (the listing
/// failed too, the run was a listing, or the guest never printed its header), the stall is
/// named after the last result line.
pub fn locate_stall(
    launcher: &dyn Launcher,
    opts: &Options,
    image: &Path,
    report: &Report,
) -> Stall {
    let listing = opts.append.split_whitespace().any(|w| w == "list");
    // Without the guest's header line its suite never started (or the Image is not
    // ioguard): a listing would go the same way, so do not wait for it.
    let selection = if listing || report.header.is_none() {
        None
    } else {
        let mut probe = opts.clone();
        probe.append = format!("{} list", opts.append).trim_start().to_string();
        probe.echo = false;
        probe.gdb = false;
        // Its own bound, not the run's: a run stopped by a short --timeout still gets
        // a listing that has time to finish.
        probe.timeout = Some(LIST_TIMEOUT);
        probe.silence = Some(LIST_TIMEOUT);
        boot_with(launcher, &probe, image, &mut |_, _| {})
            .ok()
            .map(|o| o.report.listed)
    };
    Stall::locate(report, selection.as_deref())
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

/// Boot `image` with `opts` under the launcher `--hyp` names (no build, no report files):
/// the core of [`run`] and of the benchmark.
pub fn boot_image(
    opts: &Options,
    image: &Path,
    on_line: &mut dyn FnMut(Stream, &str),
) -> Result<Outcome, RunError> {
    boot_with(&*launcher_for(&opts.hyp), opts, image, on_line)
}

/// The guest's verdict with what the launcher's own lines say ([`Launcher::judge`]): a
/// failed launcher (status 3) explains a missing EXIT line and overrides a pass; a
/// hypervisor caught out by the launcher (status 1) overrides a pass. Either way its
/// reason joins the verdict's problem.
fn with_launcher_verdict(guest: Verdict, (status, why): (i32, String)) -> Verdict {
    let status = match guest.status {
        STATUS_PASS => status,
        STATUS_NO_EXIT if status == STATUS_LAUNCH => status,
        other => other,
    };
    let problem = match guest.problem {
        Some(p) => format!("{why}; {p}"),
        None => why,
    };
    Verdict {
        status,
        problem: Some(problem),
    }
}

/// Removes a launch's temporary files when dropped.
struct CleanUp<'a>(&'a Launch);

impl Drop for CleanUp<'_> {
    fn drop(&mut self) {
        self.0.clean_up();
    }
}

/// Boot `image` with `launcher` (which must be [`Launcher::ready`]): print the command
/// line (with `opts.echo`), spawn, stream with `opts`' timeout, decide the status.
pub fn boot_with(
    launcher: &dyn Launcher,
    opts: &Options,
    image: &Path,
    on_line: &mut dyn FnMut(Stream, &str),
) -> Result<Outcome, RunError> {
    let launch = launcher.prepare(opts, image)?;
    let command_line = launch.command_line();
    let streamed = {
        // Its temporary files go when the boot ends: with its result, an error or a panic.
        let _clean_up = CleanUp(&launch);
        if opts.echo {
            println!("qemu: {command_line}");
            if let Some(n) = &launch.notice {
                eprintln!("{n}");
            }
        }
        let limits = Limits {
            timeout: opts.effective_timeout(),
            silence: opts.effective_silence(),
        };
        let started = Instant::now();
        launch.spawn().and_then(|child| {
            stream_expecting(child, started, limits, &launch.expected_stderr, on_line)
        })
    };
    let mut s = streamed?;
    if !s.timed_out && !s.silent && !crate::stream::stopping() {
        if let Some(judged) = launcher.judge(&s.report.lines) {
            s.verdict = with_launcher_verdict(s.verdict, judged);
        }
    }
    if opts.echo && !crate::stream::stopping() {
        if let Some(p) = &s.verdict.problem {
            println!("{p}");
        }
    }
    Ok(Outcome {
        argv: launch.argv,
        command_line,
        image: image.to_path_buf(),
        lines: s.report.lines.clone(),
        times: s.times,
        stderr: s.stderr,
        report: s.report,
        status: s.verdict.status,
        problem: s.verdict.problem,
        timed_out: s.timed_out,
        silent: s.silent,
        stall: None,
        qemu_status: s.exit_code,
        elapsed: s.elapsed,
    })
}
