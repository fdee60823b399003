//! One run: pick the launcher for `--hyp`, build the guest, boot it, stream it, decide the
//! status, write the report files. The pieces live in [`crate::build`],
//! [`crate::launch`] and [`mod@crate::stream`].

use crate::build::{build_image, build_image_now};
use crate::launch::{launcher_for, Launcher};
use crate::options::{Command, Options};
use crate::output::Report;
use crate::render::{render_junit, render_tap, run_failure};
use crate::stream::{stream, Stream};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    let launcher = launcher_for(&opts.hyp);
    launcher.ready(opts)?;
    let image = resolve_image(opts)?;
    let outcome = boot_with(&*launcher, opts, &image, on_line)?;
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

/// Boot `image` with `opts` under the launcher `--hyp` names (no build, no report files):
/// the core of [`run`] and of the benchmark.
pub fn boot_image(
    opts: &Options,
    image: &Path,
    on_line: &mut dyn FnMut(Stream, &str),
) -> Result<Outcome, RunError> {
    boot_with(&*launcher_for(&opts.hyp), opts, image, on_line)
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
    if opts.echo {
        println!("qemu: {command_line}");
        if let Some(n) = &launch.notice {
            eprintln!("{n}");
        }
    }
    let started = Instant::now();
    let streamed = launch
        .spawn()
        .and_then(|child| stream(child, started, opts.effective_timeout(), on_line));
    launch.clean_up();
    let s = streamed?;
    if opts.echo {
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
        qemu_status: s.exit_code,
        elapsed: s.elapsed,
    })
}
