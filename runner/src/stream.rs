//! The backend-neutral half of a boot: read a started process's stdout (the guest's
//! console) and stderr line by line as they arrive, kill it when the timeout passes, and
//! decide the runner's verdict from what the guest printed. Whatever starts the process
//! (plain QEMU, QEMU with hypmodel, a pKVM host some day) ends up here.

use crate::exec::RunError;
use crate::output::{decide, Ending, Report, Stop, Verdict};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Where a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The process's stdout: the guest's console (serial port).
    Console,
    /// The process's own stderr (QEMU's warnings and errors).
    QemuStderr,
}

/// What [`stream`] saw of one process, up to its exit or the timeout.
#[derive(Clone, Debug)]
pub struct Streamed {
    /// The console lines, parsed (`report.lines` are the raw lines, `\r` stripped).
    pub report: Report,
    /// When each console line arrived, since the process was started.
    pub times: Vec<Duration>,
    /// The process's stderr lines.
    pub stderr: Vec<String>,
    /// The timeout fired and the process was killed.
    pub timed_out: bool,
    /// The guest printed nothing for the silence limit and the process was killed.
    pub silent: bool,
    /// The process's exit status (`None` when killed by the runner or a signal).
    pub exit_code: Option<i32>,
    /// Wall time from starting the process to its exit.
    pub elapsed: Duration,
    /// The runner's status and, if the run did not end normally, why.
    pub verdict: Verdict,
}

enum Event {
    /// A line; `false` when it had no newline (the last one, cut off or not ended).
    Line(Stream, String, Duration, bool),
    Eof,
}

/// Accumulates the events of both pipes, handing each line to the caller as it arrives.
struct Collector<'a> {
    on_line: &'a mut dyn FnMut(Stream, &str),
    /// Ends of stderr lines that are not complaints: dropped.
    expected: &'a [String],
    report: Report,
    times: Vec<Duration>,
    stderr: Vec<String>,
    open_pipes: usize,
    /// The runner stopped the process: a last line without its newline was cut off there
    /// (`SKIP: guard: regi`), so it is kept but not read as a result.
    stopped: bool,
}

impl Collector<'_> {
    fn take(&mut self, ev: Event) {
        match ev {
            Event::Line(Stream::QemuStderr, line, ..)
                if self.expected.iter().any(|e| line.ends_with(e.as_str())) => {}
            Event::Line(s, line, t, complete) => {
                (self.on_line)(s, &line);
                match s {
                    Stream::Console if !complete && self.stopped => {
                        self.report.push_unparsed(&line);
                        self.times.push(t);
                    }
                    Stream::Console => {
                        self.report.push_line(&line);
                        self.times.push(t);
                    }
                    Stream::QemuStderr => self.stderr.push(line),
                }
            }
            Event::Eof => self.open_pipes -= 1,
        }
    }

    /// Takes events until both pipes close (`None`) or a limit passes: the `deadline`
    /// of the whole run, or `silence` after the last console line (or the start).
    fn until_closed(
        &mut self,
        rx: &mpsc::Receiver<Event>,
        deadline: Option<Instant>,
        silence: Option<(Duration, Instant)>,
    ) -> Option<Limit> {
        let (quiet_for, mut last) = match silence {
            Some((d, since)) => (Some(d), since),
            None => (None, Instant::now()),
        };
        while self.open_pipes > 0 {
            let quiet_until = quiet_for.map(|d| last + d);
            let (until, limit) = match (deadline, quiet_until) {
                (Some(d), Some(q)) if q < d => (Some(q), Limit::Silence),
                (Some(d), _) => (Some(d), Limit::Deadline),
                (None, Some(q)) => (Some(q), Limit::Silence),
                (None, None) => (None, Limit::Deadline),
            };
            let ev = match until {
                Some(u) => match rx.recv_timeout(u.saturating_duration_since(Instant::now())) {
                    Ok(ev) => ev,
                    Err(mpsc::RecvTimeoutError::Timeout) => return Some(limit),
                    Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                },
                None => match rx.recv() {
                    Ok(ev) => ev,
                    Err(_) => return None,
                },
            };
            if matches!(ev, Event::Line(Stream::Console, ..)) {
                last = Instant::now();
            }
            self.take(ev);
        }
        None
    }
}

/// Which limit stopped the wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    Deadline,
    Silence,
}

/// How long a run may take, and how long the guest may stay silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The whole run (`--timeout`): past it the process is stopped, status 124.
    pub timeout: Option<Duration>,
    /// Between two console lines (`--silence`): past it the process is stopped, status 4.
    pub silence: Option<Duration>,
}

/// Stream `child` (spawned at `started` with piped stdout and stderr): every line goes to
/// `on_line` as it arrives and into the result; after `timeout` the child is stopped.
/// The verdict is [`decide`]'s, from the console lines, the exit status and the timeout.
pub fn stream(
    child: Child,
    started: Instant,
    timeout: Option<Duration>,
    on_line: &mut dyn FnMut(Stream, &str),
) -> Result<Streamed, RunError> {
    let limits = Limits {
        timeout,
        silence: None,
    };
    stream_limited(child, started, limits, on_line)
}

/// [`stream`] with a limit on silence too: when the guest prints no line for
/// `limits.silence`, the child is stopped and the verdict is 4 (the guest went silent).
pub fn stream_limited(
    child: Child,
    started: Instant,
    limits: Limits,
    on_line: &mut dyn FnMut(Stream, &str),
) -> Result<Streamed, RunError> {
    stream_expecting(child, started, limits, &[], on_line)
}

/// [`stream_limited`], except that the stderr lines ending with one of `expected` (what
/// the command is known to print without anything being wrong, e.g.
/// [`crate::qemu::HUB_WARNING`]) are dropped: not handed to `on_line`, not in
/// [`Streamed::stderr`], not a complaint.
pub fn stream_expecting(
    mut child: Child,
    started: Instant,
    limits: Limits,
    expected: &[String],
    on_line: &mut dyn FnMut(Stream, &str),
) -> Result<Streamed, RunError> {
    let _registered = Registered::new(child.id());
    let deadline = limits.timeout.map(|t| started + t);
    let (tx, rx) = mpsc::channel();
    let mut c = Collector {
        on_line,
        expected,
        report: Report::parse::<&str>(&[]),
        times: Vec::new(),
        stderr: Vec::new(),
        open_pipes: 0,
        stopped: false,
    };
    if let Some(out) = child.stdout.take() {
        spawn_reader(out, Stream::Console, started, tx.clone());
        c.open_pipes += 1;
    }
    if let Some(err) = child.stderr.take() {
        spawn_reader(err, Stream::QemuStderr, started, tx.clone());
        c.open_pipes += 1;
    }
    drop(tx);

    let mut limit = c.until_closed(&rx, deadline, limits.silence.map(|d| (d, started)));
    // The pipes are closed: the process is exiting. Wait for it, still within the deadline.
    let mut status = None;
    if limit.is_none() {
        status = wait_until(&mut child, deadline)?;
        if status.is_none() {
            limit = Some(Limit::Deadline);
        }
    }
    if limit.is_some() {
        c.stopped = true;
        stop(&mut child);
        // Collect what was still in the pipes (a partial last line, for instance).
        c.until_closed(&rx, Some(Instant::now() + Duration::from_secs(2)), None);
    }
    let secs = |d: Option<Duration>| d.map(|t| t.as_secs_f64()).unwrap_or(0.0);
    let stopped = limit.map(|l| match l {
        Limit::Deadline => Stop::Timeout(secs(limits.timeout)),
        Limit::Silence => Stop::Silence(secs(limits.silence)),
    });
    let exit_code = status.and_then(|st| st.code());
    let ending = Ending {
        qemu_status: exit_code,
        stopped,
        complained: !c.stderr.is_empty(),
    };
    Ok(Streamed {
        verdict: decide(&c.report, ending),
        report: c.report,
        times: c.times,
        stderr: c.stderr,
        timed_out: matches!(stopped, Some(Stop::Timeout(_))),
        silent: matches!(stopped, Some(Stop::Silence(_))),
        exit_code,
        elapsed: started.elapsed(),
    })
}

/// The processes this runner has started and not yet reaped, so that a signal to the
/// runner can stop them ([`stop_children`]). A process leaves the list in the same
/// critical section that reaps it, so a pid in the list is never a recycled one.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Set (under the [`CHILDREN`] lock) once [`stop_children`] has run: the runner is exiting
/// on a signal, and a process registered after that is killed at once.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether the runner is stopping on a signal ([`stop_children`] ran): what the run then
/// sees (QEMU killed) is not a verdict.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

fn children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a pid in [`CHILDREN`] while a stream runs (and removes it if the stream ends
/// early on an error).
struct Registered(u32);

/// Held while a process is spawned and listed ([`spawn_listed`]) and while
/// [`stop_children`] reads the list, so that a signal arriving while QEMU is being started
/// finds it listed (and stops it) instead of finding nothing.
static SPAWNING: Mutex<()> = Mutex::new(());

/// Spawns `cmd` and lists it in [`CHILDREN`] before [`stop_children`] can look: between
/// a plain `spawn` and the stream's registration the process exists, can be seen, and a
/// signal to the runner then reported "no QEMU was running".
pub fn spawn_listed(cmd: &mut std::process::Command) -> std::io::Result<Child> {
    let _spawning = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    let mut list = children();
    list.push(child.id());
    if stopping() {
        signal_all(&[child.id()], "-KILL");
    }
    Ok(child)
}

impl Registered {
    fn new(pid: u32) -> Registered {
        let mut list = children();
        // Listed already when it was spawned through [`spawn_listed`].
        if !list.contains(&pid) {
            list.push(pid);
        }
        if stopping() {
            signal_all(&[pid], "-KILL");
        }
        Registered(pid)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        children().retain(|p| *p != self.0);
    }
}

/// Reaps `child` if it has exited, removing it from [`CHILDREN`] at the same time.
fn try_reap(child: &mut Child) -> std::io::Result<Option<std::process::ExitStatus>> {
    let mut list = children();
    let st = child.try_wait()?;
    if st.is_some() {
        list.retain(|p| *p != child.id());
    }
    Ok(st)
}

/// Stops every process the runner is streaming: SIGTERM, then SIGKILL to those still
/// there after a second. For the runner's own signal handler ([`crate::signals`]).
/// Returns the pids it signalled.
pub fn stop_children() -> Vec<u32> {
    let pids = {
        // A spawn in progress finishes listing its process first.
        let _spawning = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
        let list = children();
        STOPPING.store(true, Ordering::SeqCst);
        list.clone()
    };
    signal_all(&pids, "-TERM");
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until && !children().is_empty() {
        thread::sleep(Duration::from_millis(10));
    }
    // Those still listed are still unreaped, so their pids are still theirs.
    let list = children();
    signal_all(&list, "-KILL");
    pids
}

fn signal_all(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// The child's exit status, or `None` if it is still running at `deadline`.
fn wait_until(
    child: &mut Child,
    deadline: Option<Instant>,
) -> Result<Option<std::process::ExitStatus>, RunError> {
    loop {
        match try_reap(child) {
            Ok(Some(st)) => return Ok(Some(st)),
            Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(None),
            Ok(None) => thread::sleep(Duration::from_millis(1)),
            Err(e) => {
                return Err(RunError::Qemu(format!(
                    "waiting for process {}: {e}",
                    child.id()
                )))
            }
        }
    }
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
                    let complete = buf.ends_with(b"\n");
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    let ev = Event::Line(stream, line, start.elapsed(), complete);
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Event::Eof);
    });
}

/// End a process that overran its time: SIGTERM first (QEMU then removes its temporary
/// snapshot files), SIGKILL if it is still there after a second.
fn stop(child: &mut Child) {
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    if term.is_ok_and(|s| s.success()) {
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if let Ok(Some(_)) = try_reap(child) {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
    let _ = child.kill();
    let mut list = children();
    let _ = child.wait();
    list.retain(|p| *p != child.id());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Kind, STATUS_LAUNCH, STATUS_NO_EXIT, STATUS_TIMEOUT};
    use std::path::Path;
    use std::process::Command;

    /// A real process standing in for QEMU: `script` runs under sh with piped output.
    fn sh(script: &str) -> (Child, Instant) {
        let started = Instant::now();
        let child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh");
        (child, started)
    }

    fn run(script: &str, timeout: Option<Duration>) -> (Streamed, Vec<(Stream, String)>) {
        let (child, started) = sh(script);
        let mut seen = Vec::new();
        let s = stream(child, started, timeout, &mut |st, l| {
            seen.push((st, l.to_string()))
        })
        .expect("streamed");
        (s, seen)
    }

    #[test]
    fn console_lines_are_parsed_and_stderr_kept_apart() {
        let (s, seen) = run(
            r"printf 'PASS: guard: a\r\n'; echo 'qemu: warning' >&2; printf 'FAIL: guard: b\nEXIT: STATUS=3\n'",
            Some(Duration::from_secs(20)),
        );
        assert_eq!(
            s.report.lines,
            ["PASS: guard: a", "FAIL: guard: b", "EXIT: STATUS=3"]
        );
        assert_eq!(s.times.len(), 3);
        assert_eq!(s.stderr, ["qemu: warning"]);
        assert_eq!(s.report.count(Kind::Fail), 1);
        assert_eq!((s.verdict.status, s.verdict.problem), (1, None));
        assert_eq!((s.timed_out, s.exit_code), (false, Some(0)));
        // Every line reached the caller, from the right stream.
        assert_eq!(seen.len(), 4);
        assert!(seen.contains(&(Stream::QemuStderr, "qemu: warning".to_string())));
    }

    #[test]
    fn expected_stderr_lines_are_dropped_and_no_complaint() {
        let expected = [crate::qemu::HUB_WARNING.to_string()];
        let script =
            "echo 'qemu-system-aarch64: warning: hub 0 is not connected to host network' >&2; \
                      echo 'ioguard 0.1.0: cpus=1'; echo PASS: a: b; exit 7";
        let (child, started) = sh(script);
        let mut seen = Vec::new();
        let limits = Limits {
            timeout: Some(Duration::from_secs(20)),
            silence: None,
        };
        let s = stream_expecting(child, started, limits, &expected, &mut |st, l| {
            seen.push((st, l.to_string()))
        })
        .expect("streamed");
        assert!(s.stderr.is_empty(), "{:?}", s.stderr);
        assert!(
            seen.iter().all(|(st, _)| *st == Stream::Console),
            "{seen:?}"
        );
        // Powered off after the header without a verdict, QEMU silent otherwise: 4, not 3.
        assert_eq!(s.verdict.status, STATUS_NO_EXIT);
        // Another hub's warning, or any other line, is still QEMU complaining.
        let (child, started) = sh(
            "echo 'warning: hub 1 is not connected to host network' >&2; \
                                   echo 'ioguard 0.1.0: cpus=1'; exit 7",
        );
        let s = stream_expecting(child, started, limits, &expected, &mut |_, _| {}).unwrap();
        assert_eq!(s.stderr.len(), 1);
        assert_eq!(s.verdict.status, STATUS_LAUNCH);
    }

    #[test]
    fn no_exit_line_is_no_verdict_or_a_launch_failure() {
        // Exit 7 before any header line: the launcher failed.
        let (s, _) = run("echo PASS: a: b; exit 7", None);
        assert_eq!(s.exit_code, Some(7));
        assert_eq!(s.verdict.status, STATUS_LAUNCH);
        // After the header, with nothing on stderr: the guest powered off without a verdict.
        let (s, _) = run(
            "echo 'ioguard 0.1.0: cpus=1'; echo PASS: a: b; exit 7",
            None,
        );
        assert_eq!(s.verdict.status, STATUS_NO_EXIT);
        // The same with QEMU complaining on stderr: the launcher failed.
        let (s, _) = run("echo 'ioguard 0.1.0: cpus=1'; echo oops >&2; exit 7", None);
        assert_eq!(s.verdict.status, STATUS_LAUNCH);
        let (s, _) = run("printf 'no newline at the end'", None);
        assert_eq!(s.report.lines, ["no newline at the end"]);
        assert_eq!(s.verdict.status, STATUS_NO_EXIT);
        assert!(s.verdict.problem.unwrap().contains("without an EXIT line"));
    }

    #[test]
    fn timeout_kills_and_keeps_what_was_printed() {
        let (s, _) = run("echo $$; exec sleep 30", Some(Duration::from_millis(300)));
        assert!(s.timed_out);
        assert_eq!(s.exit_code, None);
        // The process was stopped and reaped, not left running.
        let pid = &s.report.lines[0];
        assert!(pid.parse::<u32>().is_ok(), "{pid}");
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        assert_eq!(s.verdict.status, STATUS_TIMEOUT);
        assert!(s.elapsed < Duration::from_secs(10), "{:?}", s.elapsed);
    }

    #[test]
    fn closed_pipes_do_not_end_the_wait_before_the_process() {
        // The child closes its output and keeps running past the deadline.
        let (s, _) = run(
            "echo EXIT: STATUS=1; exec sleep 30 >&- 2>&-",
            Some(Duration::from_millis(300)),
        );
        assert!(s.timed_out);
        assert!(s.verdict.problem.unwrap().contains("did not power off"));
    }

    #[test]
    fn silence_stops_a_quiet_process_but_not_a_talking_one() {
        let limits = Limits {
            timeout: Some(Duration::from_secs(20)),
            silence: Some(Duration::from_millis(400)),
        };
        let (child, started) = sh("echo PASS: a: b; exec sleep 30");
        let s = stream_limited(child, started, limits, &mut |_, _| {}).unwrap();
        assert!(s.silent && !s.timed_out);
        assert_eq!(s.verdict.status, STATUS_NO_EXIT);
        assert!(s.verdict.problem.unwrap().starts_with("SILENT:"));
        assert!(s.elapsed < Duration::from_secs(5), "{:?}", s.elapsed);
        // A line every 0.1 s for a second keeps it going.
        let (child, started) = sh("for i in 1 2 3 4 5 6 7 8 9 10; do echo x; sleep 0.1; done");
        let s = stream_limited(child, started, limits, &mut |_, _| {}).unwrap();
        assert!(!s.silent, "{:?}", s.verdict);
        assert_eq!(s.report.lines.len(), 10);
    }

    #[test]
    fn a_line_cut_off_by_the_stop_is_not_a_result() {
        let (s, _) = run(
            "printf 'PASS: a: x\\nSKIP: a: y'; exec sleep 30",
            Some(Duration::from_millis(500)),
        );
        assert!(s.timed_out);
        assert_eq!(s.report.lines, ["PASS: a: x", "SKIP: a: y"]);
        assert_eq!(s.report.results.len(), 1);
        // Ended by the process itself, a last line without newline still counts.
        let (s, _) = run("printf 'PASS: a: x\\nEXIT: STATUS=1'", None);
        assert_eq!(s.verdict.status, 0);
    }
}
