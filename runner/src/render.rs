//! TAP version 13 and JUnit XML renderings of a run (pure functions of the parsed lines).

use crate::output::{CheckResult, Kind, Report, Stall};
use std::fmt::Write as _;

/// Why a run failed beyond its result lines, if it did: the runner's `problem` (timeout,
/// missing or bad EXIT line, QEMU failure), or a non-zero status that no FAIL/XPASS line
/// explains (a fatal boot error, or a code-1 exit without a failed check). Renderers add a
/// failing `runner: exit` entry for it so CI never reads a broken run as green.
pub fn run_failure(report: &Report, status: i32, problem: Option<&str>) -> Option<String> {
    if let Some(p) = problem {
        return Some(p.to_string());
    }
    let unexpected = report.results.iter().any(|r| r.kind.is_unexpected());
    match status {
        0 => None,
        1 if unexpected => None,
        1 => Some("guest exit code 1 without a FAIL or XPASS line".to_string()),
        2 => Some("guest exit code 2 (fatal boot error)".to_string()),
        s => Some(format!("exit status {s}")),
    }
}

/// Escape a TAP description or directive text (`#` starts a directive, `\` escapes).
fn tap_text(s: &str) -> String {
    s.replace('\\', r"\\").replace('#', r"\#")
}

/// A YAML double-quoted scalar.
fn yaml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Render TAP version 13: one test point per result line (LIST/INFO lines are not
/// results), plus a failing `runner: exit` point when [`run_failure`] finds a reason.
///
/// PASS -> `ok`; FAIL -> `not ok`; SKIP -> `ok ... # SKIP reason`; KFAIL ->
/// `not ok ... # TODO known failure`; XPASS -> `not ok` (unexpected pass). When the run
/// stopped without a verdict (`stall`), the check that was running and each check that
/// never ran are `not ok` points too, so the plan counts the whole selection.
pub fn render_tap(
    report: &Report,
    status: i32,
    problem: Option<&str>,
    stall: Option<&Stall>,
) -> String {
    let failure = run_failure(report, status, problem);
    let unfinished = unfinished(stall, failure.as_deref());
    let n = report.results.len() + unfinished.len() + usize::from(failure.is_some());
    let mut t = String::from("TAP version 13\n");
    if let Some(h) = &report.header {
        let _ = writeln!(t, "# {}", h.raw);
    }
    let _ = writeln!(t, "1..{n}");
    for (i, r) in report.results.iter().enumerate() {
        let num = i + 1;
        let name = tap_text(&r.name());
        let detail = r.detail.as_deref();
        let (line, yaml) = match r.kind {
            Kind::Pass => (format!("ok {num} - {name}"), detail),
            Kind::Fail => (format!("not ok {num} - {name}"), detail),
            Kind::XPass => (
                format!("not ok {num} - {name} (XPASS: passed, but a failure was expected)"),
                detail,
            ),
            Kind::Skip => (
                format!(
                    "ok {num} - {name} # SKIP {}",
                    tap_text(detail.unwrap_or(""))
                ),
                None,
            ),
            Kind::KFail => (
                format!(
                    "not ok {num} - {name} # TODO known failure{}",
                    detail
                        .map(|d| format!(": {}", tap_text(d)))
                        .unwrap_or_default()
                ),
                None,
            ),
        };
        t.push_str(line.trim_end());
        t.push('\n');
        if let Some(d) = yaml {
            let _ = writeln!(
                t,
                "  ---\n  message: {}\n  severity: {}\n  ...",
                yaml_str(d),
                if r.kind == Kind::Pass {
                    "comment"
                } else {
                    "fail"
                }
            );
        }
    }
    for (i, (name, why)) in unfinished.iter().enumerate() {
        let num = report.results.len() + i + 1;
        let _ = writeln!(
            t,
            "not ok {num} - {}\n  ---\n  message: {}\n  severity: fail\n  ...",
            tap_text(name),
            yaml_str(why)
        );
    }
    if let Some(f) = failure {
        let _ = writeln!(
            t,
            "not ok {n} - runner: exit\n  ---\n  message: {}\n  severity: fail\n  status: {status}\n  ...",
            yaml_str(&f)
        );
    }
    t
}

/// The checks without a result because the run stopped, each with why: the running one
/// ("did not finish") first, then those that never ran.
fn unfinished(stall: Option<&Stall>, failure: Option<&str>) -> Vec<(String, String)> {
    let Some(st) = stall else {
        return Vec::new();
    };
    let why = failure.unwrap_or("the run stopped");
    let mut v = Vec::new();
    if let Some(r) = &st.running {
        v.push((
            r.clone(),
            format!("did not finish: it was running when {why}"),
        ));
    }
    for n in &st.not_run {
        v.push((
            n.clone(),
            format!("never ran: the run stopped before it ({why})"),
        ));
    }
    v
}

/// Escape text for XML content and attribute values; characters XML 1.0 cannot carry
/// (C0 controls other than tab, newline, carriage return) become U+FFFD.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Render JUnit XML: one `<testcase>` per result line (`classname` `ioguard.GROUP`,
/// `name` CASE), FAIL and XPASS as `<failure>`, SKIP and KFAIL as `<skipped>`, a
/// `runner: exit` case with `<error>` when [`run_failure`] finds a reason, the QEMU
/// command line and the header as properties, and every console line in `<system-out>`.
///
/// When the run stopped without a verdict (`stall`), the check that was running is an
/// `<error>` case and each check that never ran a `<skipped>` one.
pub fn render_junit(
    report: &Report,
    status: i32,
    problem: Option<&str>,
    stall: Option<&Stall>,
    command_line: &str,
    elapsed_secs: f64,
) -> String {
    let failure = run_failure(report, status, problem);
    let unfinished = unfinished(stall, failure.as_deref());
    let running = usize::from(stall.is_some_and(|s| s.running.is_some()));
    let count = |k: Kind| report.count(k);
    let tests = report.results.len() + unfinished.len() + usize::from(failure.is_some());
    let failures = count(Kind::Fail) + count(Kind::XPass);
    let errors = usize::from(failure.is_some()) + running;
    let skipped = count(Kind::Skip) + count(Kind::KFail) + unfinished.len() - running;
    let counts = format!(
        r#"tests="{tests}" failures="{failures}" errors="{errors}" skipped="{skipped}" time="{elapsed_secs:.3}""#
    );
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(x, r#"<testsuites name="ioguard" {counts}>"#);
    let _ = writeln!(x, r#"  <testsuite name="ioguard" {counts}>"#);
    junit_properties(&mut x, report, status, command_line);
    for r in &report.results {
        junit_testcase(&mut x, r, &report.lines[r.line]);
    }
    for (i, (name, why)) in unfinished.iter().enumerate() {
        let (group, case) = name.split_once(": ").unwrap_or(("", name));
        let class = if group.is_empty() {
            "ioguard".to_string()
        } else {
            format!("ioguard.{group}")
        };
        let inner = if i < running {
            format!("<error type=\"stopped\" message=\"{}\"/>", xml_escape(why))
        } else {
            format!("<skipped message=\"{}\"/>", xml_escape(why))
        };
        let _ = writeln!(
            x,
            "    <testcase classname=\"{}\" name=\"{}\">\n      {inner}\n    </testcase>",
            xml_escape(&class),
            xml_escape(case)
        );
    }
    if let Some(f) = failure {
        let _ = writeln!(
            x,
            "    <testcase classname=\"ioguard.runner\" name=\"exit\">\n      <error type=\"run\" message=\"{}\"/>\n    </testcase>",
            xml_escape(&f)
        );
    }
    let _ = writeln!(
        x,
        "    <system-out>{}</system-out>",
        xml_escape(&report.lines.join("\n"))
    );
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// The run's `<properties>`: the QEMU command line, the guest's header, the status.
fn junit_properties(x: &mut String, report: &Report, status: i32, command_line: &str) {
    x.push_str("    <properties>\n");
    let _ = writeln!(
        x,
        r#"      <property name="qemu" value="{}"/>"#,
        xml_escape(command_line)
    );
    if let Some(h) = &report.header {
        let _ = writeln!(
            x,
            r#"      <property name="header" value="{}"/>"#,
            xml_escape(&h.raw)
        );
    }
    let _ = writeln!(x, r#"      <property name="status" value="{status}"/>"#);
    x.push_str("    </properties>\n");
}

/// One result line as a `<testcase>`; `raw_line` (the console line it came from) is the
/// text of a `<failure>`.
fn junit_testcase(x: &mut String, r: &CheckResult, raw_line: &str) {
    let class = if r.group.is_empty() {
        "ioguard".to_string()
    } else {
        format!("ioguard.{}", r.group)
    };
    let _ = write!(
        x,
        r#"    <testcase classname="{}" name="{}""#,
        xml_escape(&class),
        xml_escape(&r.case)
    );
    let msg = |prefix: &str| {
        let m = match &r.detail {
            Some(d) => format!("{prefix}{d}"),
            None => prefix.trim_end_matches([':', ' ']).to_string(),
        };
        xml_escape(&m)
    };
    let line = xml_escape(raw_line);
    match r.kind {
        Kind::Pass => x.push_str("/>\n"),
        Kind::Fail => {
            let _ = writeln!(
                x,
                ">\n      <failure type=\"FAIL\" message=\"{}\">{line}</failure>\n    </testcase>",
                msg("")
            );
        }
        Kind::XPass => {
            let _ = writeln!(
                x,
                ">\n      <failure type=\"XPASS\" message=\"{}\">{line}</failure>\n    </testcase>",
                msg("unexpected pass: ")
            );
        }
        Kind::Skip => {
            let _ = writeln!(
                x,
                ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                msg("")
            );
        }
        Kind::KFail => {
            let _ = writeln!(
                x,
                ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                msg("known failure: ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report::parse(&[
            "ioguard 0.1.0: hypervisor=kvm profile=android14 granule=4096 cpus=2",
            "PASS: guard: stray-read: ESR=0x96000010 FAR=0x09010000",
            "FAIL: guard: a<b>&\"c\": got 'x' # not y \\ z",
            "SKIP: guard: unmap-aborts: android16 # keeps pages",
            "KFAIL: guard: unmap-return: android13 returns -1",
            "XPASS: virtio: blk-read",
            "INFO: not a result",
            "LIST: not: a result",
            "junk \u{1b}[31m\u{0} here",
            "EXIT: STATUS=3",
        ])
    }

    #[test]
    fn tap13() {
        let tap = render_tap(&sample(), 1, None, None);
        let expected = "\
TAP version 13
# ioguard 0.1.0: hypervisor=kvm profile=android14 granule=4096 cpus=2
1..5
ok 1 - guard: stray-read
  ---
  message: \"ESR=0x96000010 FAR=0x09010000\"
  severity: comment
  ...
not ok 2 - guard: a<b>&\"c\"
  ---
  message: \"got 'x' # not y \\\\ z\"
  severity: fail
  ...
ok 3 - guard: unmap-aborts # SKIP android16 \\# keeps pages
not ok 4 - guard: unmap-return # TODO known failure: android13 returns -1
not ok 5 - virtio: blk-read (XPASS: passed, but a failure was expected)
";
        assert_eq!(tap, expected);
    }

    #[test]
    fn tap_adds_a_failing_point_for_a_broken_run() {
        let r = Report::parse(&["PASS: a: b"]);
        let tap = render_tap(
            &r,
            124,
            Some("TIMEOUT: guest did not finish within 60 s"),
            None,
        );
        assert!(tap.contains("1..2\n"), "{tap}");
        assert!(tap.contains("not ok 2 - runner: exit\n"));
        assert!(tap.contains("message: \"TIMEOUT: guest did not finish within 60 s\""));
        // No results at all and a fatal boot error: still one failing point.
        let tap = render_tap(&Report::parse(&["EXIT: STATUS=5"]), 2, None, None);
        assert!(tap.contains("1..1\nnot ok 1 - runner: exit\n"), "{tap}");
        assert!(tap.contains("fatal boot error"));
        // A clean run has none.
        assert_eq!(
            render_tap(&Report::parse(&["EXIT: STATUS=1"]), 0, None, None),
            "TAP version 13\n1..0\n"
        );
    }

    #[test]
    fn run_failure_reasons() {
        let failed = Report::parse(&["FAIL: a: b"]);
        assert_eq!(run_failure(&failed, 1, None), None);
        assert_eq!(run_failure(&failed, 0, None), None);
        let passed = Report::parse(&["PASS: a: b"]);
        assert!(run_failure(&passed, 1, None)
            .unwrap()
            .contains("without a FAIL"));
        assert_eq!(run_failure(&passed, 3, Some("x")).as_deref(), Some("x"));
        assert_eq!(
            run_failure(&passed, 7, None).as_deref(),
            Some("exit status 7")
        );
    }

    #[test]
    fn xml_escaping() {
        assert_eq!(xml_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(
            xml_escape("t\tn\n\u{1b}[0m\u{0}"),
            "t\tn\n\u{fffd}[0m\u{fffd}"
        );
        assert_eq!(xml_escape("ünï ✓"), "ünï ✓");
    }

    #[test]
    fn junit() {
        let x = render_junit(
            &sample(),
            1,
            None,
            None,
            "qemu-system-aarch64 -append 'a b'",
            1.25,
        );
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"ioguard\" tests=\"5\" failures=\"2\" errors=\"0\" skipped=\"2\" time=\"1.250\">\n"), "{x}");
        for want in [
            r#"<property name="qemu" value="qemu-system-aarch64 -append &apos;a b&apos;"/>"#,
            r#"<property name="status" value="1"/>"#,
            r#"<testcase classname="ioguard.guard" name="stray-read"/>"#,
            r#"<testcase classname="ioguard.guard" name="a&lt;b&gt;&amp;&quot;c&quot;">"#,
            r#"<failure type="FAIL" message="got &apos;x&apos; # not y \ z">FAIL: guard: a&lt;b&gt;&amp;&quot;c&quot;: got &apos;x&apos; # not y \ z</failure>"#,
            r#"<skipped message="android16 # keeps pages"/>"#,
            r#"<skipped message="known failure: android13 returns -1"/>"#,
            r#"<failure type="XPASS" message="unexpected pass">XPASS: virtio: blk-read</failure>"#,
            "junk \u{fffd}[31m\u{fffd} here",
        ] {
            assert!(x.contains(want), "missing {want}\n{x}");
        }
        assert!(!x.contains("runner"));
        assert!(!x.contains('\u{0}') && !x.contains('\u{1b}'));
        assert_eq!(x.matches("<testcase ").count(), 5);
        assert_eq!(x.matches("</testcase>").count(), 4);
    }

    #[test]
    fn junit_broken_run_has_an_error_case() {
        let r = Report::parse(&["PASS: a: b"]);
        let x = render_junit(
            &r,
            3,
            Some("guest ended without an EXIT line; QEMU exit status 0"),
            None,
            "q",
            0.0,
        );
        assert!(
            x.contains(r#"tests="2" failures="0" errors="1" skipped="0""#),
            "{x}"
        );
        assert!(x.contains(
            r#"<error type="run" message="guest ended without an EXIT line; QEMU exit status 0"/>"#
        ));
    }

    #[test]
    fn a_stalled_run_lists_the_running_and_unrun_checks() {
        let r = Report::parse(&["PASS: a: x"]);
        let stall = Stall {
            running: Some("a: y".into()),
            not_run: vec!["b: z".into(), "b: w".into()],
            ..Stall::default()
        };
        let problem = Some("TIMEOUT: guest did not finish within 2 s");
        let tap = render_tap(&r, 124, problem, Some(&stall));
        assert!(
            tap.contains("1..5\nok 1 - a: x\nnot ok 2 - a: y\n"),
            "{tap}"
        );
        assert!(tap.contains("did not finish: it was running when TIMEOUT"));
        assert!(tap.contains("not ok 3 - b: z\n") && tap.contains("not ok 4 - b: w\n"));
        assert!(tap.contains("never ran: the run stopped before it (TIMEOUT"));
        assert!(tap.contains("not ok 5 - runner: exit\n"));
        // Every point has a number and the plan matches them.
        let points = tap
            .lines()
            .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "));
        assert_eq!(points.count(), 5);
        let x = render_junit(&r, 124, problem, Some(&stall), "q", 2.0);
        assert!(
            x.contains(r#"tests="5" failures="0" errors="2" skipped="2""#),
            "{x}"
        );
        assert!(x.contains(r#"<testcase classname="ioguard.a" name="y">"#));
        assert!(x.contains(r#"<error type="stopped" message="did not finish"#));
        assert!(x.contains(r#"<skipped message="never ran: the run stopped before it"#));
        assert_eq!(x.matches("<testcase ").count(), 5);
    }
}
