//! KTAP version 1 rendering of a run (a pure function of the parsed lines), for the
//! kernel's CI tooling and for KernelCI/LAVA, whose kvm-unit-tests parser (Linaro's
//! test-definitions) keeps only `[A-Za-z0-9_-]` of a test name: spaces become `-`, runs
//! of `-` collapse to one and every other character is dropped.
//!
//! # Names
//!
//! A check `group: case` is written `group_case` ([`ktap_name`]): ioguard's groups are
//! `[a-z0-9]+` and its cases `[a-z0-9]+(-[a-z0-9]+)*` (a function name with `_` written
//! `-`), so the name is already made only of characters the sanitiser keeps, never holds
//! `--`, and the first `_` is where the group ends: [`check_name`] undoes it. `.` would be
//! the natural separator but the sanitiser drops it (`guard.stray-read` would become
//! `guardstray-read`, which cannot be split again).
//!
//! # Results
//!
//! | line | KTAP |
//! |---|---|
//! | PASS | `ok N name` |
//! | FAIL | `# name: detail` then `not ok N name` |
//! | SKIP | `ok N name # SKIP reason` |
//! | KFAIL | `ok N name # XFAIL reason` (kselftest's expected failure: not a failure) |
//! | XPASS | `# name: XPASS: ...` then `not ok N name` (KTAP has no XPASS directive) |
//! | the check running when the run stopped without a verdict | `not ok N name # TIMEOUT ...` after a timeout or silence, `# ERROR ...` otherwise |
//! | a check that never ran | `not ok N name # ERROR never ran: ...` |
//! | a run that failed beyond its lines ([`run_failure`]) | `not ok N runner_exit # TIMEOUT/ERROR reason` |

use crate::output::{Kind, Report, Stall, STATUS_TIMEOUT};
use crate::render::run_failure;
use std::fmt::Write as _;

/// The KTAP name of check `name`: `group: case` becomes `group_case`; anything outside
/// `[A-Za-z0-9-]` in either part is dropped and runs of `-` become one, so that the result
/// is left unchanged by Linaro's sanitiser (see the module documentation).
pub fn ktap_name(name: &str) -> String {
    let clean = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            let c = if c == ' ' { '-' } else { c };
            let keep = c.is_ascii_alphanumeric() || c == '-';
            if keep && !(c == '-' && out.ends_with('-')) {
                out.push(c);
            }
        }
        out
    };
    match name.split_once(": ") {
        Some((group, case)) => format!("{}_{}", clean(group), clean(case)),
        None => clean(name),
    }
}

/// The check a KTAP name stands for: the inverse of [`ktap_name`] for ioguard's names
/// (`guard_stray-read` -> `guard: stray-read`; a name without `_` is itself).
pub fn check_name(ktap: &str) -> String {
    match ktap.split_once('_') {
        Some((group, case)) => format!("{group}: {case}"),
        None => ktap.to_string(),
    }
}

/// Text after a directive or in a diagnostic line: one line, no control characters.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// ` # DIRECTIVE reason` (the reason may be empty).
fn directive(word: &str, reason: &str) -> String {
    let reason = one_line(reason);
    if reason.is_empty() {
        format!(" # {word}")
    } else {
        format!(" # {word} {reason}")
    }
}

/// Whether the run was stopped by one of the runner's clocks (`--timeout`, `--silence`):
/// then the running check gets `# TIMEOUT`, otherwise `# ERROR`.
fn stopped_by_clock(status: i32, problem: Option<&str>) -> bool {
    status == STATUS_TIMEOUT || problem.is_some_and(|p| p.starts_with("SILENT:"))
}

/// Render KTAP version 1: the plan, one test line per result line, then (when the run
/// stopped without a verdict) the running check and each check that never ran, then a
/// failing `runner_exit` when [`run_failure`] finds a reason, so that the plan counts the
/// whole selection and a broken run is never read as green.
pub fn render_ktap(
    report: &Report,
    status: i32,
    problem: Option<&str>,
    stall: Option<&Stall>,
) -> String {
    let failure = run_failure(report, status, problem);
    let stopped = if stopped_by_clock(status, problem) {
        "TIMEOUT"
    } else {
        "ERROR"
    };
    let why = failure.as_deref().unwrap_or("the run stopped");
    let running = stall.and_then(|s| s.running.as_deref());
    let not_run = stall.map_or(&[][..], |s| &s.not_run[..]);
    let n = report.results.len()
        + usize::from(running.is_some())
        + not_run.len()
        + usize::from(failure.is_some());
    let mut t = String::from("KTAP version 1\n");
    if let Some(h) = &report.header {
        let _ = writeln!(t, "# {}", one_line(&h.raw));
    }
    let _ = writeln!(t, "1..{n}");
    let mut num = 0;
    let mut point = |t: &mut String, ok: bool, name: &str, dir: String| {
        num += 1;
        let result = if ok { "ok" } else { "not ok" };
        let _ = writeln!(t, "{result} {num} {}{dir}", ktap_name(name));
    };
    for r in &report.results {
        let name = r.name();
        let detail = r.detail.as_deref().unwrap_or("");
        // A failure's detail goes on a diagnostic line before its test line.
        let note = match r.kind {
            Kind::XPass => Some(format!("XPASS: passed, but a failure was expected{}", {
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                }
            })),
            Kind::Fail if !detail.is_empty() => Some(detail.to_string()),
            _ => None,
        };
        if let Some(note) = note {
            let _ = writeln!(t, "# {}: {}", ktap_name(&name), one_line(&note));
        }
        match r.kind {
            Kind::Pass => point(&mut t, true, &name, String::new()),
            Kind::Skip => point(&mut t, true, &name, directive("SKIP", detail)),
            Kind::KFail => point(&mut t, true, &name, directive("XFAIL", detail)),
            Kind::Fail | Kind::XPass => point(&mut t, false, &name, String::new()),
        }
    }
    if let Some(r) = running {
        let reason = format!("did not finish: it was running when {why}");
        point(&mut t, false, r, directive(stopped, &reason));
    }
    for name in not_run {
        let reason = format!("never ran: the run stopped before it ({why})");
        point(&mut t, false, name, directive("ERROR", &reason));
    }
    if let Some(f) = &failure {
        point(&mut t, false, "runner: exit", directive(stopped, f));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linaro test-definitions' rule for kvm-unit-tests names, as its documentation
    /// states it (spaces to `-`, drop everything outside `[A-Za-z0-9_-]`, collapse runs
    /// of `-`), written here from that description.
    fn linaro(name: &str) -> String {
        let mut out = String::new();
        for c in name.replace(' ', "-").chars() {
            let keep = c.is_ascii_alphanumeric() || c == '_' || c == '-';
            if keep && !(c == '-' && out.ends_with('-')) {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn names_survive_the_sanitiser_and_map_back() {
        for name in [
            "guard: stray-read",
            "boot: device-tree",
            "virtio: pool-unshared",
            "smccc: vendor-uid",
            "runner: exit",
            "lonely",
        ] {
            let k = ktap_name(name);
            assert_eq!(linaro(&k), k, "{name} -> {k}");
            assert_eq!(check_name(&k), name, "{k}");
        }
        assert_eq!(ktap_name("guard: stray-read"), "guard_stray-read");
        assert_eq!(ktap_name("lonely"), "lonely");
        // Names ioguard never prints still come out unchanged by the sanitiser.
        for odd in ["a b: c  d", "x.y: z#1", "g: --a--b", "ü: ✓ ok", "a: b_c"] {
            let k = ktap_name(odd);
            assert_eq!(linaro(&k), k, "{odd} -> {k}");
        }
        assert_eq!(ktap_name("a b: c  d"), "a-b_c-d");
        assert_eq!(ktap_name("g: --a--b"), "g_-a-b");
        assert_eq!(ktap_name("x.y: z#1"), "xy_z1");
        // The separator is the first `_`: the sanitiser would eat `.`.
        assert_eq!(linaro("guard.stray-read"), "guardstray-read");
        assert_eq!(check_name("guard_stray-read"), "guard: stray-read");
    }

    fn sample() -> Report {
        Report::parse(&[
            "ioguard 0.1.0: hypervisor=kvm profile=android14 granule=4096 cpus=2",
            "PASS: guard: stray-read: ESR=0x96000010 FAR=0x09010000",
            "FAIL: guard: map-twice: returned -1 # not 0",
            "SKIP: guard: unmap-aborts: android16 keeps pages",
            "KFAIL: guard: unmap-return: android13 returns -1",
            "XPASS: virtio: blk-read",
            "XPASS: virtio: rng: got 8 bytes",
            "FAIL: virtio: net",
            "SKIP: virtio: console",
            "INFO: not a result",
            "EXIT: STATUS=3",
        ])
    }

    #[test]
    fn ktap_v1() {
        let k = render_ktap(&sample(), 1, None, None);
        let expected = "\
KTAP version 1
# ioguard 0.1.0: hypervisor=kvm profile=android14 granule=4096 cpus=2
1..8
ok 1 guard_stray-read
# guard_map-twice: returned -1 # not 0
not ok 2 guard_map-twice
ok 3 guard_unmap-aborts # SKIP android16 keeps pages
ok 4 guard_unmap-return # XFAIL android13 returns -1
# virtio_blk-read: XPASS: passed, but a failure was expected
not ok 5 virtio_blk-read
# virtio_rng: XPASS: passed, but a failure was expected: got 8 bytes
not ok 6 virtio_rng
not ok 7 virtio_net
ok 8 virtio_console # SKIP
";
        assert_eq!(k, expected);
    }

    #[test]
    fn a_clean_run_has_only_its_points() {
        let r = Report::parse(&["PASS: a: b", "EXIT: STATUS=1"]);
        assert_eq!(
            render_ktap(&r, 0, None, None),
            "KTAP version 1\n1..1\nok 1 a_b\n"
        );
    }

    #[test]
    fn a_timed_out_run_names_the_running_check_timeout_and_the_rest_error() {
        let r = Report::parse(&["PASS: a: x"]);
        let stall = Stall {
            running: Some("a: y".into()),
            not_run: vec!["b: z".into()],
            ..Stall::default()
        };
        let p = "TIMEOUT: guest did not finish within 2 s";
        let k = render_ktap(&r, 124, Some(p), Some(&stall));
        assert_eq!(
            k,
            "KTAP version 1\n1..4\nok 1 a_x\n\
             not ok 2 a_y # TIMEOUT did not finish: it was running when TIMEOUT: guest did not finish within 2 s\n\
             not ok 3 b_z # ERROR never ran: the run stopped before it (TIMEOUT: guest did not finish within 2 s)\n\
             not ok 4 runner_exit # TIMEOUT TIMEOUT: guest did not finish within 2 s\n"
        );
        // Silence is the other clock.
        let p = "SILENT: guest went silent without an EXIT line: no line for 20 s";
        let k = render_ktap(&r, 4, Some(p), Some(&stall));
        assert!(k.contains("not ok 2 a_y # TIMEOUT did not finish"), "{k}");
        assert!(k.contains("not ok 4 runner_exit # TIMEOUT SILENT"), "{k}");
        // A guest that powered off without a verdict is an error, not a timeout.
        let p = "guest ended without an EXIT line; QEMU exit status 0";
        let k = render_ktap(&r, 4, Some(p), Some(&stall));
        assert!(k.contains("not ok 2 a_y # ERROR did not finish"), "{k}");
        assert!(k.contains("not ok 3 b_z # ERROR never ran"), "{k}");
        assert!(
            k.contains("not ok 4 runner_exit # ERROR guest ended"),
            "{k}"
        );
        // Without a selection only the run's failure is added.
        let k = render_ktap(&r, 4, Some(p), Some(&Stall::default()));
        assert!(
            k.contains("1..2\nok 1 a_x\nnot ok 2 runner_exit # ERROR"),
            "{k}"
        );
    }

    #[test]
    fn a_fatal_boot_error_is_one_failing_point() {
        let r = Report::parse(&["EXIT: STATUS=5"]);
        assert_eq!(
            render_ktap(&r, 2, None, None),
            "KTAP version 1\n1..1\nnot ok 1 runner_exit # ERROR guest exit code 2 (fatal boot error)\n"
        );
    }

    #[test]
    fn control_characters_never_break_a_line() {
        let r = Report::parse(&["SKIP: a: b: x\u{1b}y\u{0}z"]);
        let k = render_ktap(&r, 0, None, None);
        assert!(k.ends_with("ok 1 a_b # SKIP x y z\n"), "{k:?}");
        assert_eq!(one_line("a\nb\tc"), "a b c");
    }
}
