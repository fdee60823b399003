//! The backend-neutral half of a boot: read a started process's stdout (the guest's
//! console) and stderr line by line as they arrive, kill it when the timeout passes, and
//! decide the runner's verdict from what the guest printed. Whatever starts the process
//! (plain QEMU, QEMU with hypmodel, a pKVM host some day) ends up here.

use crate::exec::RunError;
use crate::output::{decide, Report, Verdict};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
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
    /// The process's exit status (`None` when killed by the runner or a signal).
    pub exit_code: Option<i32>,
    /// Wall time from starting the process to its exit.
    pub elapsed: Duration,
    /// The runner's status and, if the run did not end normally, why.
    pub verdict: Verdict,
}

enum Event {
    Line(Stream, String, Duration),
    Eof,
}

/// Accumulates the events of both pipes, handing each line to the caller as it arrives.
struct Collector<'a> {
    on_line: &'a mut dyn FnMut(Stream, &str),
    report: Report,
    times: Vec<Duration>,
    stderr: Vec<String>,
    open_pipes: usize,
}

impl Collector<'_> {
    fn take(&mut self, ev: Event) {
        match ev {
            Event::Line(s, line, t) => {
                (self.on_line)(s, &line);
                match s {
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

    /// Takes events until both pipes close (`false`) or `deadline` passes (`true`).
    fn until_closed(&mut self, rx: &mpsc::Receiver<Event>, deadline: Option<Instant>) -> bool {
        while self.open_pipes > 0 {
            let ev = match deadline {
                Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                    Ok(ev) => ev,
                    Err(mpsc::RecvTimeoutError::Timeout) => return true,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                },
                None => match rx.recv() {
                    Ok(ev) => ev,
                    Err(_) => return false,
                },
            };
            self.take(ev);
        }
        false
    }
}

/// Stream `child` (spawned at `started` with piped stdout and stderr): every line goes to
/// `on_line` as it arrives and into the result; after `timeout` the child is stopped.
/// The verdict is [`decide`]'s, from the console lines, the exit status and the timeout.
pub fn stream(
    mut child: Child,
    started: Instant,
    timeout: Option<Duration>,
    on_line: &mut dyn FnMut(Stream, &str),
) -> Result<Streamed, RunError> {
    let deadline = timeout.map(|t| started + t);
    let (tx, rx) = mpsc::channel();
    let mut c = Collector {
        on_line,
        report: Report::parse::<&str>(&[]),
        times: Vec::new(),
        stderr: Vec::new(),
        open_pipes: 0,
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

    let mut timed_out = c.until_closed(&rx, deadline);
    // The pipes are closed: the process is exiting. Wait for it, still within the deadline.
    let mut status = None;
    if !timed_out {
        status = wait_until(&mut child, deadline)?;
        timed_out = status.is_none();
    }
    if timed_out {
        stop(&mut child);
        // Collect what was still in the pipes (a partial last line, for instance).
        c.until_closed(&rx, Some(Instant::now() + Duration::from_secs(2)));
    }
    let elapsed = started.elapsed();
    let exit_code = status.and_then(|st| st.code());
    let verdict = decide(
        &c.report,
        exit_code,
        timed_out,
        timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0),
    );
    Ok(Streamed {
        report: c.report,
        times: c.times,
        stderr: c.stderr,
        timed_out,
        exit_code,
        elapsed,
        verdict,
    })
}

/// The child's exit status, or `None` if it is still running at `deadline`.
fn wait_until(
    child: &mut Child,
    deadline: Option<Instant>,
) -> Result<Option<std::process::ExitStatus>, RunError> {
    loop {
        match child.try_wait() {
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
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Kind, STATUS_NO_EXIT, STATUS_TIMEOUT};
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
    fn no_exit_line_takes_the_process_status() {
        let (s, _) = run("echo PASS: a: b; exit 7", None);
        assert_eq!(s.exit_code, Some(7));
        assert_eq!(s.verdict.status, 7);
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
}
