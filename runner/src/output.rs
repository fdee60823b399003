//! Parsing the guest's console lines into results, and deciding the run's exit status.

use std::fmt;

/// Status when every check passed (KFAIL allowed): the guest's code 0.
pub const STATUS_PASS: i32 = 0;
/// Status when a check failed (FAIL or XPASS): the guest's code 1.
pub const STATUS_FAIL: i32 = 1;
/// Status when ioguard could not run its checks: the guest's code 2 (a fatal boot error,
/// `EXIT: STATUS=5`), or a bad option or usage of the runner.
pub const STATUS_USAGE: i32 = 2;
/// Status when the launcher could not start or died on its own: QEMU missing or refusing
/// its arguments, a failed build, a file that is not an arm64 Image, QEMU killed by a
/// signal the runner did not send.
pub const STATUS_LAUNCH: i32 = 3;
/// Status when the guest went silent or powered off without a verdict (no valid `EXIT:`
/// line).
pub const STATUS_NO_EXIT: i32 = 4;
/// Status on timeout (as coreutils `timeout`).
pub const STATUS_TIMEOUT: i32 = 124;

/// The kind of a result line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `PASS:`
    Pass,
    /// `FAIL:` (an unexpected failure)
    Fail,
    /// `SKIP:`
    Skip,
    /// `KFAIL:` (a known failure, expected for this profile)
    KFail,
    /// `XPASS:` (an unexpected pass: the profile expected a failure)
    XPass,
}

impl Kind {
    /// The line prefix without the colon.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Pass => "PASS",
            Kind::Fail => "FAIL",
            Kind::Skip => "SKIP",
            Kind::KFail => "KFAIL",
            Kind::XPass => "XPASS",
        }
    }

    /// FAIL and XPASS are unexpected results (they make the run fail).
    pub fn is_unexpected(self) -> bool {
        matches!(self, Kind::Fail | Kind::XPass)
    }

    fn from_tag(tag: &str) -> Option<Kind> {
        Some(match tag {
            "PASS" => Kind::Pass,
            "FAIL" => Kind::Fail,
            "SKIP" => Kind::Skip,
            "KFAIL" => Kind::KFail,
            "XPASS" => Kind::XPass,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// One `PASS|FAIL|SKIP|KFAIL|XPASS: group: case[: detail]` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// Which kind of line.
    pub kind: Kind,
    /// The group (`guard` in `PASS: guard: stray-read`); empty if the line had none.
    pub group: String,
    /// The case (`stray-read`).
    pub case: String,
    /// The rest (`ESR=0x96000010 FAR=0x09010000`, or a SKIP's reason), if any.
    pub detail: Option<String>,
    /// Index of the line in [`Report::lines`] / [`crate::Outcome::lines`].
    pub line: usize,
}

impl CheckResult {
    /// `group: case` (or just `case` without a group), as the guest names its checks.
    pub fn name(&self) -> String {
        if self.group.is_empty() {
            self.case.clone()
        } else {
            format!("{}: {}", self.group, self.case)
        }
    }
}

/// The `ioguard 0.1.0: hypervisor=... profile=... granule=... cpus=N` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The whole line.
    pub raw: String,
    /// `0.1.0`.
    pub version: String,
    /// `key=value` words in order.
    pub fields: Vec<(String, String)>,
}

impl Header {
    /// The value of field `key` (`cpus` -> `"4"`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `SUMMARY: N tests, N unexpected failures, N known failures, N skipped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Summary {
    /// `N tests`
    pub tests: u64,
    /// `N unexpected failures`
    pub unexpected_failures: u64,
    /// `N known failures`
    pub known_failures: u64,
    /// `N skipped`
    pub skipped: u64,
}

/// `ioguard: N passed, N failed, N skipped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Totals {
    /// `N passed`
    pub passed: u64,
    /// `N failed`
    pub failed: u64,
    /// `N skipped`
    pub skipped: u64,
}

/// What the `EXIT: STATUS=` line said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// No `EXIT:` line was seen.
    Missing,
    /// A valid line; the decoded code (`STATUS=3` -> 1).
    Code(i32),
    /// An `EXIT:` line that does not carry `(code << 1) | 1`.
    Malformed {
        /// The line.
        line: String,
        /// Why it is not valid.
        reason: String,
    },
}

/// Everything recognised in the guest's lines. Unrecognised lines are simply kept in
/// [`Report::lines`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// All lines, trailing `\r` (and other trailing whitespace) removed.
    pub lines: Vec<String>,
    /// The first header line.
    pub header: Option<Header>,
    /// Result lines in order.
    pub results: Vec<CheckResult>,
    /// `LIST: group: case` entries (`group: case`), in order.
    pub listed: Vec<String>,
    /// `INFO:` lines' text.
    pub info: Vec<String>,
    /// The first `SUMMARY:` line, if it parsed.
    pub summary: Option<Summary>,
    /// The first `ioguard: N passed, ...` line, if it parsed.
    pub totals: Option<Totals>,
    /// The first `EXIT:` line.
    pub exit: Exit,
}

/// Remove the console's line ending and trailing blanks.
pub fn clean_line(s: &str) -> String {
    s.trim_end_matches(['\r', '\n', ' ', '\t']).to_string()
}

/// Decode the value of `EXIT: STATUS=N`: N must be an odd non-negative decimal
/// (or `0x` hexadecimal) number, and the code is `N >> 1`.
pub fn decode_exit_status(value: &str) -> Result<i32, String> {
    let v = value.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => v.parse::<u32>(),
    };
    let n = parsed.map_err(|_| format!("STATUS value '{v}' is not a number"))?;
    if n & 1 == 0 {
        return Err(format!(
            "STATUS={n} is even: the guest must print (code << 1) | 1"
        ));
    }
    Ok((n >> 1) as i32)
}

fn parse_counts(text: &str) -> Option<Vec<(u64, String)>> {
    text.split(',')
        .map(|part| {
            let part = part.trim();
            let (num, label) = part.split_once(' ')?;
            Some((num.parse().ok()?, label.trim().to_string()))
        })
        .collect()
}

fn find(counts: &[(u64, String)], label: &str) -> Option<u64> {
    counts.iter().find(|(_, l)| l == label).map(|(n, _)| *n)
}

/// Parse `41 tests, 0 unexpected failures, 1 known failures, 3 skipped`.
fn parse_summary(text: &str) -> Option<Summary> {
    let c = parse_counts(text)?;
    Some(Summary {
        tests: find(&c, "tests").or_else(|| find(&c, "test"))?,
        unexpected_failures: find(&c, "unexpected failures")
            .or_else(|| find(&c, "unexpected failure"))?,
        known_failures: find(&c, "known failures").or_else(|| find(&c, "known failure"))?,
        skipped: find(&c, "skipped")?,
    })
}

/// Parse `37 passed, 0 failed, 3 skipped`.
fn parse_totals(text: &str) -> Option<Totals> {
    let c = parse_counts(text)?;
    Some(Totals {
        passed: find(&c, "passed")?,
        failed: find(&c, "failed")?,
        skipped: find(&c, "skipped")?,
    })
}

fn parse_header(line: &str) -> Option<Header> {
    let rest = line.strip_prefix("ioguard ")?;
    let (version, fields) = rest.split_once(':')?;
    if version.is_empty() || !version.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let fields = fields
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Header {
        raw: line.to_string(),
        version: version.to_string(),
        fields,
    })
}

fn parse_result(kind: Kind, rest: &str, line: usize) -> CheckResult {
    let mut parts = rest.splitn(3, ": ");
    let first = parts.next().unwrap_or("").trim().to_string();
    match parts.next() {
        Some(case) => CheckResult {
            kind,
            group: first,
            case: case.trim().to_string(),
            detail: parts.next().map(|d| d.trim().to_string()),
            line,
        },
        None => CheckResult {
            kind,
            group: String::new(),
            case: first,
            detail: None,
            line,
        },
    }
}

impl Report {
    /// Parse the guest's lines (raw console lines; `\r` is stripped here).
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Report {
        let mut r = Report {
            lines: Vec::with_capacity(raw.len()),
            header: None,
            results: Vec::new(),
            listed: Vec::new(),
            info: Vec::new(),
            summary: None,
            totals: None,
            exit: Exit::Missing,
        };
        for s in raw {
            r.push_line(s.as_ref());
        }
        r
    }

    /// Add one more line (used while streaming).
    pub fn push_line(&mut self, raw: &str) {
        let line = clean_line(raw);
        let idx = self.lines.len();
        if let Some((tag, rest)) = line.split_once(": ") {
            if let Some(kind) = Kind::from_tag(tag) {
                self.results.push(parse_result(kind, rest, idx));
            } else {
                match tag {
                    "LIST" => self.listed.push(rest.trim().to_string()),
                    "INFO" => self.info.push(rest.to_string()),
                    "SUMMARY" if self.summary.is_none() => self.summary = parse_summary(rest),
                    "ioguard" if self.totals.is_none() => self.totals = parse_totals(rest),
                    "EXIT" if self.exit == Exit::Missing => {
                        self.exit = match rest.trim().strip_prefix("STATUS=") {
                            Some(v) => match decode_exit_status(v) {
                                Ok(code) => Exit::Code(code),
                                Err(reason) => Exit::Malformed {
                                    line: line.clone(),
                                    reason,
                                },
                            },
                            None => Exit::Malformed {
                                line: line.clone(),
                                reason: "expected 'EXIT: STATUS=N'".to_string(),
                            },
                        }
                    }
                    _ => {}
                }
            }
        }
        if self.header.is_none() {
            self.header = parse_header(&line);
        }
        self.lines.push(line);
    }

    /// Add a line that is kept but not read (a line the runner cut off).
    pub fn push_unparsed(&mut self, raw: &str) {
        self.lines.push(clean_line(raw));
    }

    /// The result for check `name` (`"group: case"`), the first if repeated.
    pub fn result(&self, name: &str) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.name() == name)
    }

    /// Results of one kind.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &CheckResult> {
        self.results.iter().filter(move |r| r.kind == kind)
    }

    /// Count of results of one kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.of_kind(kind).count()
    }

    /// Disagreements between the result lines, the summary, the totals and the exit
    /// code (empty when all agree). These are reported, they do not change the status.
    pub fn inconsistencies(&self) -> Vec<String> {
        let mut v = Vec::new();
        let n = |k| self.count(k) as u64;
        let unexpected = n(Kind::Fail) + n(Kind::XPass);
        if let Some(s) = self.summary {
            let want = Summary {
                tests: self.results.len() as u64,
                unexpected_failures: unexpected,
                known_failures: n(Kind::KFail),
                skipped: n(Kind::Skip),
            };
            if s != want {
                v.push(format!(
                    "SUMMARY says {} tests, {} unexpected failures, {} known failures, {} \
                     skipped; the result lines give {}, {}, {}, {}",
                    s.tests,
                    s.unexpected_failures,
                    s.known_failures,
                    s.skipped,
                    want.tests,
                    want.unexpected_failures,
                    want.known_failures,
                    want.skipped
                ));
            }
        }
        if let Exit::Code(code) = self.exit {
            if code == 0 && unexpected > 0 {
                v.push(format!(
                    "EXIT code 0 but {unexpected} unexpected failure line(s)"
                ));
            }
            if code == 1 && unexpected == 0 {
                v.push("EXIT code 1 but no FAIL or XPASS line".to_string());
            }
        }
        v
    }
}

/// The verdict of a finished (or killed) run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The runner's exit status.
    pub status: i32,
    /// Why the run did not end normally (timeout, no or bad EXIT line, QEMU failure).
    /// `None` when the guest printed a valid EXIT line and QEMU agreed.
    pub problem: Option<String>,
}

/// Why the runner stopped a process that was still running.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    /// The whole run took longer than this many seconds (`--timeout`).
    Timeout(f64),
    /// The guest printed no line for this many seconds (`--silence`).
    Silence(f64),
}

/// How the process that ran the guest ended, as far as the verdict is concerned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ending {
    /// Its exit status (`None` when a signal ended it).
    pub qemu_status: Option<i32>,
    /// The runner stopped it, and why (then `qemu_status` does not matter).
    pub stopped: Option<Stop>,
    /// It wrote something on its own stderr (QEMU's errors go there, the guest's never).
    pub complained: bool,
}

impl Ending {
    /// A process that exited by itself with `status` and wrote nothing on stderr.
    pub fn exited(status: i32) -> Ending {
        Ending {
            qemu_status: Some(status),
            stopped: None,
            complained: false,
        }
    }
}

fn verdict(status: i32, problem: Option<String>) -> Verdict {
    Verdict { status, problem }
}

/// Decide the runner's status from the parsed lines and how the process ended.
///
/// 124 when the timeout fired; 4 when the guest went silent, or ended without a valid
/// `EXIT:` line; 3 when the launcher failed instead (a signal the runner did not send, or a
/// non-zero exit with QEMU complaining on stderr or before the guest printed its header);
/// otherwise the guest's code (0, 1, 2).
pub fn decide(report: &Report, end: Ending) -> Verdict {
    match end.stopped {
        Some(Stop::Timeout(secs)) => {
            let after = match report.exit {
                Exit::Code(_) => " (it printed its EXIT line but did not power off)",
                _ => "",
            };
            let msg = format!(
                "TIMEOUT: guest did not finish within {} s{after}",
                fmt_secs(secs)
            );
            return verdict(STATUS_TIMEOUT, Some(msg));
        }
        Some(Stop::Silence(secs)) => {
            let what = match report.exit {
                Exit::Code(_) => "printed its EXIT line but did not power off",
                _ => "went silent without an EXIT line",
            };
            let msg = format!("SILENT: guest {what}: no line for {} s", fmt_secs(secs));
            return verdict(STATUS_NO_EXIT, Some(msg));
        }
        None => {}
    }
    let qemu = match end.qemu_status {
        Some(s) => s.to_string(),
        None => "none (killed by a signal)".to_string(),
    };
    // The launcher itself failed: a signal the runner did not send, or a non-zero exit
    // that QEMU explained on stderr or that came before the guest said who it is.
    let launch_failed = match end.qemu_status {
        None => true,
        Some(0) => false,
        Some(_) => end.complained || report.header.is_none(),
    };
    let no_verdict = |what: String| {
        if launch_failed {
            verdict(
                STATUS_LAUNCH,
                Some(format!("{what}; QEMU failed (exit status {qemu})")),
            )
        } else {
            verdict(
                STATUS_NO_EXIT,
                Some(format!("{what}; QEMU exit status {qemu}")),
            )
        }
    };
    match &report.exit {
        Exit::Code(code) => decide_code(*code, end.qemu_status, &qemu),
        Exit::Malformed { line, reason } => {
            no_verdict(format!("malformed EXIT line '{line}': {reason}"))
        }
        Exit::Missing => no_verdict("guest ended without an EXIT line".to_string()),
    }
}

/// The verdict when the guest printed a valid `EXIT:` line with `code`.
fn decide_code(code: i32, qemu_status: Option<i32>, qemu: &str) -> Verdict {
    if !(0..=2).contains(&code) {
        return verdict(
            STATUS_NO_EXIT,
            Some(format!(
                "guest reported code {code}, which is not 0, 1 or 2"
            )),
        );
    }
    match qemu_status {
        // PSCI SYSTEM_OFF ends QEMU with 0; semihosting exit with the code itself.
        Some(0) => verdict(code, None),
        Some(s) if s == code => verdict(code, None),
        _ if code != 0 => verdict(
            code,
            Some(format!(
                "guest reported code {code} but QEMU exit status is {qemu}"
            )),
        ),
        _ => verdict(
            STATUS_LAUNCH,
            Some(format!(
                "guest reported success but QEMU exit status is {qemu}"
            )),
        ),
    }
}

/// Where a run that ended without a verdict stopped: the check that was running, the
/// last line seen, and the checks that never ran. The guest does not announce a check
/// before running it, so the running check is the first of the run's selection (its
/// `LIST:` lines, from a second boot with `list`) without a result line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stall {
    /// The check that was running (the first of the selection without a result line).
    pub running: Option<String>,
    /// The last result line, named when the selection is unknown.
    pub after: Option<String>,
    /// The last console line, if there was one.
    pub last_line: Option<String>,
    /// The checks of the selection after the running one, none of which printed a result.
    pub not_run: Vec<String>,
}

impl Stall {
    /// Where `report` stopped, given the run's selection in order (`None` if it could
    /// not be listed).
    pub fn locate(report: &Report, selection: Option<&[String]>) -> Stall {
        let last_line = report.lines.iter().rev().find(|l| !l.is_empty()).cloned();
        let after = report.results.last().map(|r| report.lines[r.line].clone());
        let Some(selection) = selection.filter(|s| !s.is_empty()) else {
            return Stall {
                after,
                last_line,
                ..Stall::default()
            };
        };
        let mut missing = selection
            .iter()
            .filter(|name| report.result(name).is_none())
            .cloned();
        Stall {
            running: missing.next(),
            after,
            last_line,
            not_run: missing.collect(),
        }
    }

    /// The lines the runner prints about it (without its `ioguard-run: ` prefix).
    pub fn describe(&self) -> Vec<String> {
        let mut v = Vec::new();
        match (&self.running, &self.after) {
            (Some(r), _) => v.push(format!(
                "stopped in '{r}' (the first check of the selection without a result)"
            )),
            (None, Some(a)) => v.push(format!("stopped after '{a}'")),
            (None, None) => v.push("stopped before any check reported".to_string()),
        }
        match &self.last_line {
            Some(l) => v.push(format!("last line: '{l}'")),
            None => v.push("the guest printed nothing".to_string()),
        }
        if !self.not_run.is_empty() {
            v.push(format!(
                "{} check(s) never ran: {}",
                self.not_run.len(),
                self.not_run.join(", ")
            ));
        }
        v
    }
}

/// `60`, `2.5`, `0.25`.
pub fn fmt_secs(s: f64) -> String {
    let t = format!("{s:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
booting...\r
ioguard 0.1.0: hypervisor=kvm profile=android14 granule=4096 cpus=2\r
INFO: guard: 3 windows\r
PASS: guard: stray-read: ESR=0x96000010 FAR=0x09010000\r
FAIL: guard: map-twice: returned -1: expected 0\r
SKIP: guard: unmap-aborts: android16 keeps pages forwarded after UNMAP\r
KFAIL: guard: unmap-return: android13 returns -1 on success\r
XPASS: virtio: blk-read\r
\x1b[0m garbage: FAIL without start\r
PASS: lonely\r
SUMMARY: 6 tests, 2 unexpected failures, 1 known failures, 1 skipped\r
ioguard: 2 passed, 2 failed, 1 skipped\r
EXIT: STATUS=3\r
EXIT: STATUS=1\r
";

    fn lines(s: &str) -> Vec<&str> {
        s.split('\n').filter(|l| !l.is_empty()).collect()
    }

    #[test]
    fn parses_a_full_run_with_crlf() {
        let r = Report::parse(&lines(GOOD));
        assert!(r.lines.iter().all(|l| !l.ends_with('\r')));
        assert_eq!(r.lines.len(), 14);
        let h = r.header.as_ref().expect("header");
        assert_eq!(h.version, "0.1.0");
        assert_eq!(h.get("cpus"), Some("2"));
        assert_eq!(h.get("profile"), Some("android14"));
        assert_eq!(h.get("nope"), None);
        assert_eq!(r.info, ["guard: 3 windows"]);
        let kinds: Vec<Kind> = r.results.iter().map(|c| c.kind).collect();
        use Kind::*;
        assert_eq!(kinds, [Pass, Fail, Skip, KFail, XPass, Pass]);
        let p = &r.results[0];
        assert_eq!((p.group.as_str(), p.case.as_str()), ("guard", "stray-read"));
        assert_eq!(p.detail.as_deref(), Some("ESR=0x96000010 FAR=0x09010000"));
        assert_eq!(p.line, 3);
        assert_eq!(
            r.lines[p.line],
            "PASS: guard: stray-read: ESR=0x96000010 FAR=0x09010000"
        );
        // A detail that itself contains ": " stays whole.
        let f = r.result("guard: map-twice").unwrap();
        assert_eq!(f.detail.as_deref(), Some("returned -1: expected 0"));
        assert_eq!(r.result("virtio: blk-read").unwrap().detail, None);
        let lonely = r.result("lonely").unwrap();
        assert_eq!((lonely.group.as_str(), lonely.kind), ("", Pass));
        assert_eq!(
            r.summary,
            Some(Summary {
                tests: 6,
                unexpected_failures: 2,
                known_failures: 1,
                skipped: 1
            })
        );
        assert_eq!(
            r.totals,
            Some(Totals {
                passed: 2,
                failed: 2,
                skipped: 1
            })
        );
        // The first EXIT line counts.
        assert_eq!(r.exit, Exit::Code(1));
        assert_eq!(r.inconsistencies(), Vec::<String>::new());
        assert_eq!(
            decide(&r, Ending::exited(0)),
            Verdict {
                status: 1,
                problem: None
            }
        );
    }

    #[test]
    fn list_lines() {
        let r = Report::parse(&[
            "LIST: guard: stray-read",
            "LIST: virtio: blk-read\r",
            "EXIT: STATUS=1",
        ]);
        assert_eq!(r.listed, ["guard: stray-read", "virtio: blk-read"]);
        assert!(r.results.is_empty());
        assert_eq!(r.exit, Exit::Code(0));
    }

    #[test]
    fn garbage_and_near_misses_are_not_results() {
        let r = Report::parse(&[
            "",
            "\u{fffd}\u{fffd}",
            "PASS:no-space",
            "pass: lower",
            " PASS: indented",
            "PASSED: x",
            "ioguard: bogus",
            "ioguard x.y: a=b",
            "SUMMARY: many tests",
            "EXIT STATUS=1",
        ]);
        assert!(r.results.is_empty(), "{:?}", r.results);
        assert_eq!(r.header, None);
        assert_eq!(r.summary, None);
        assert_eq!(r.totals, None);
        assert_eq!(r.exit, Exit::Missing);
        assert_eq!(r.lines.len(), 10);
    }

    #[test]
    fn missing_summary_and_exit() {
        let r = Report::parse(&["ioguard 0.1.0: cpus=1", "PASS: a: b", "panicked at x"]);
        assert_eq!(r.summary, None);
        assert_eq!(r.exit, Exit::Missing);
        let v = decide(&r, Ending::exited(0));
        assert_eq!(v.status, STATUS_NO_EXIT);
        assert_eq!(
            v.problem.as_deref(),
            Some("guest ended without an EXIT line; QEMU exit status 0")
        );
        // A non-zero exit after the guest's header, QEMU silent: the guest powered off
        // (semihosting) without a verdict.
        let v = decide(&r, Ending::exited(1));
        assert_eq!(v.status, STATUS_NO_EXIT);
        assert!(v.problem.unwrap().contains("QEMU exit status 1"));
        // QEMU complained on stderr, or was killed by a signal the runner did not send:
        // the launcher failed.
        let complained = Ending {
            complained: true,
            ..Ending::exited(1)
        };
        let v = decide(&r, complained);
        assert_eq!(v.status, STATUS_LAUNCH);
        assert!(v.problem.unwrap().contains("QEMU failed (exit status 1)"));
        let killed = Ending {
            qemu_status: None,
            ..Ending::exited(0)
        };
        let v = decide(&r, killed);
        assert_eq!(v.status, STATUS_LAUNCH);
        assert!(v.problem.unwrap().contains("signal"));
        // QEMU refusing its arguments: no console line at all, a non-zero status.
        let none = Report::parse::<&str>(&[]);
        assert_eq!(decide(&none, Ending::exited(1)).status, STATUS_LAUNCH);
        // QEMU exiting 0 without a single line: powered off without a verdict.
        assert_eq!(decide(&none, Ending::exited(0)).status, STATUS_NO_EXIT);
    }

    #[test]
    fn exit_decoding() {
        assert_eq!(decode_exit_status("1"), Ok(0));
        assert_eq!(decode_exit_status("3"), Ok(1));
        assert_eq!(decode_exit_status("5"), Ok(2));
        assert_eq!(decode_exit_status("0x7"), Ok(3));
        assert_eq!(decode_exit_status(" 255 "), Ok(127));
        assert!(decode_exit_status("2").unwrap_err().contains("even"));
        assert!(decode_exit_status("0").unwrap_err().contains("even"));
        assert!(decode_exit_status("abc")
            .unwrap_err()
            .contains("not a number"));
        assert!(decode_exit_status("").unwrap_err().contains("not a number"));
        assert!(decode_exit_status("-1")
            .unwrap_err()
            .contains("not a number"));
    }

    #[test]
    fn malformed_exit_is_an_error() {
        for (line, why) in [
            ("EXIT: STATUS=2", "even"),
            ("EXIT: STATUS=two", "not a number"),
            ("EXIT: 1", "expected 'EXIT: STATUS=N'"),
        ] {
            let r = Report::parse(&[line, "EXIT: STATUS=1"]);
            let Exit::Malformed { reason, .. } = &r.exit else {
                panic!("{line}: {:?}", r.exit)
            };
            assert!(reason.contains(why), "{line}: {reason}");
            let v = decide(&r, Ending::exited(0));
            assert_eq!(v.status, STATUS_NO_EXIT);
            assert!(v.problem.unwrap().starts_with("malformed EXIT line"));
        }
    }

    #[test]
    fn status_with_semihosting_and_disagreement() {
        let fatal = Report::parse(&["EXIT: STATUS=5"]);
        assert_eq!(
            decide(&fatal, Ending::exited(2)),
            Verdict {
                status: 2,
                problem: None
            }
        );
        assert_eq!(decide(&fatal, Ending::exited(0)).status, 2);
        let v = decide(&fatal, Ending::exited(1));
        assert_eq!(v.status, 2);
        assert!(v.problem.is_some());
        let ok = Report::parse(&["EXIT: STATUS=1"]);
        let v = decide(&ok, Ending::exited(1));
        assert_eq!(v.status, STATUS_LAUNCH);
        assert!(v
            .problem
            .unwrap()
            .contains("guest reported success but QEMU exit status is 1"));
        // A code the guest does not define cannot pass for one of the runner's statuses.
        let v = decide(&Report::parse(&["EXIT: STATUS=7"]), Ending::exited(0));
        assert_eq!(v.status, STATUS_NO_EXIT);
        assert!(v
            .problem
            .unwrap()
            .contains("code 3, which is not 0, 1 or 2"));
    }

    #[test]
    fn every_outcome_has_its_own_status() {
        let statuses = [
            STATUS_PASS,
            STATUS_FAIL,
            STATUS_USAGE,
            STATUS_LAUNCH,
            STATUS_NO_EXIT,
            STATUS_TIMEOUT,
        ];
        assert_eq!(statuses, [0, 1, 2, 3, 4, 124]);
    }

    fn stopped(stop: Stop) -> Ending {
        Ending {
            qemu_status: None,
            stopped: Some(stop),
            complained: true,
        }
    }

    #[test]
    fn timeout_and_silence() {
        let r = Report::parse(&["PASS: a: b"]);
        let v = decide(&r, stopped(Stop::Timeout(2.5)));
        assert_eq!(v.status, 124);
        assert_eq!(
            v.problem.as_deref(),
            Some("TIMEOUT: guest did not finish within 2.5 s")
        );
        assert_eq!(
            decide(&r, stopped(Stop::Timeout(60.0))).problem.as_deref(),
            Some("TIMEOUT: guest did not finish within 60 s")
        );
        let v = decide(&r, stopped(Stop::Silence(20.0)));
        assert_eq!(v.status, STATUS_NO_EXIT);
        assert_eq!(
            v.problem.as_deref(),
            Some("SILENT: guest went silent without an EXIT line: no line for 20 s")
        );
        let r = Report::parse(&["EXIT: STATUS=1"]);
        assert!(decide(&r, stopped(Stop::Timeout(1.0)))
            .problem
            .unwrap()
            .contains("did not power off"));
        assert!(decide(&r, stopped(Stop::Silence(1.0)))
            .problem
            .unwrap()
            .contains("did not power off"));
    }

    #[test]
    fn inconsistencies_are_found() {
        let r = Report::parse(&[
            "PASS: a: b",
            "FAIL: a: c",
            "SUMMARY: 2 tests, 0 unexpected failures, 0 known failures, 0 skipped",
            "EXIT: STATUS=1",
        ]);
        let inc = r.inconsistencies();
        assert_eq!(inc.len(), 2, "{inc:?}");
        assert!(inc[0].contains("result lines give 2, 1, 0, 0"));
        assert!(inc[1].contains("EXIT code 0 but 1 unexpected"));
        let r = Report::parse(&["PASS: a: b", "EXIT: STATUS=3"]);
        assert_eq!(
            r.inconsistencies(),
            ["EXIT code 1 but no FAIL or XPASS line"]
        );
    }

    #[test]
    fn streaming_equals_batch() {
        let all = lines(GOOD);
        let mut r = Report::parse::<&str>(&[]);
        for l in &all {
            r.push_line(l);
        }
        assert_eq!(r, Report::parse(&all));
    }

    #[test]
    fn stall_names_the_running_check_and_the_unrun_ones() {
        let r = Report::parse(&[
            "ioguard 0.1.0: cpus=1",
            "PASS: a: x",
            "SKIP: a: y: no",
            "INFO: hm",
        ]);
        let sel: Vec<String> = ["a: x", "a: y", "b: z", "b: w"].map(String::from).to_vec();
        let st = Stall::locate(&r, Some(&sel));
        assert_eq!(st.running.as_deref(), Some("b: z"));
        assert_eq!(st.not_run, ["b: w"]);
        assert_eq!(st.last_line.as_deref(), Some("INFO: hm"));
        let d = st.describe();
        assert!(d[0].contains("stopped in 'b: z'"), "{d:?}");
        assert_eq!(d[1], "last line: 'INFO: hm'");
        assert_eq!(d[2], "1 check(s) never ran: b: w");
        // Without the selection: after the last result line.
        let st = Stall::locate(&r, None);
        assert_eq!((st.running.as_deref(), st.not_run.len()), (None, 0));
        assert_eq!(st.describe()[0], "stopped after 'SKIP: a: y: no'");
        // Nothing printed at all.
        let st = Stall::locate(&Report::parse::<&str>(&[]), None);
        assert_eq!(
            st.describe(),
            [
                "stopped before any check reported",
                "the guest printed nothing"
            ]
        );
    }
}
