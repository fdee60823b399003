//! The command line: `list`, `only=`, bad options.

mod common;
use common::*;
use ioguard_runner::Kind;

#[test]
fn list_names_every_default_check_and_runs_none() {
    let out = run(&["--append", "list"]);
    assert_eq!(out.status, 0, "{}", out.transcript());
    assert_eq!(out.report.listed, DEFAULT_CHECKS, "{}", out.transcript());
    assert!(out.report.results.is_empty());
}

#[test]
fn list_with_only_lists_the_selection() {
    let out = run(&["--append", "list only=boot:v*,boot:mmu"]);
    assert_eq!(out.report.listed, ["boot: mmu", "boot: vectors"]);
}

#[test]
fn only_runs_the_selected_checks() {
    let out = run(&["--append", "only=boot:mmu,boot:probe-*"]);
    assert_eq!(out.status, 0, "{}", out.transcript());
    let names: Vec<String> = out.report.results.iter().map(|r| r.name()).collect();
    assert_eq!(names, ["boot: mmu", "boot: probe-fault"]);
    assert_eq!(out.report.summary.as_ref().unwrap().tests, 2);
}

#[test]
fn only_matching_nothing_is_an_error() {
    let out = run(&["--append", "only=gaurd:*"]);
    assert_eq!(out.status, 2, "{}", out.transcript());
    assert!(
        out.report
            .lines
            .iter()
            .any(|l| l.contains("matches no check")),
        "{}",
        out.transcript()
    );
}

#[test]
fn malformed_option_is_an_error_not_a_guess() {
    let out = run(&["--append", "log=loud"]);
    assert_eq!(out.status, 2, "{}", out.transcript());
    assert!(
        out.report
            .lines
            .iter()
            .any(|l| l.contains("bad value 'loud' for option 'log'")),
        "{}",
        out.transcript()
    );
}

#[test]
fn unknown_tokens_are_reported_and_ignored() {
    let out = run(&["--append", "console=ttyAMA0 only=boot:mmu"]);
    assert_eq!(out.status, 0, "{}", out.transcript());
    assert!(
        out.report
            .lines
            .iter()
            .any(|l| l == "INFO: ignored command-line tokens: console=ttyAMA0"),
        "{}",
        out.transcript()
    );
}

#[test]
fn trace_prints_every_fault() {
    let out = run(&["--append", "trace only=boot:probe-fault,boot:vectors"]);
    assert_eq!(out.status, 0, "{}", out.transcript());
    let traced = out
        .report
        .lines
        .iter()
        .filter(|l| l.starts_with("trace: fault (expected)"))
        .count();
    // brk + udf + one load + one store.
    assert_eq!(traced, 4, "{}", out.transcript());
}

#[test]
fn unexpected_exception_fails_its_check_and_the_run_goes_on() {
    let out = run(&["--append", "only=selftest:unexpected-exception,boot:mmu"]);
    let t = out.transcript();
    assert_eq!(out.status, 1, "{t}");
    let report = out
        .report
        .lines
        .iter()
        .find(|l| l.starts_with("UNEXPECTED EXCEPTION:"))
        .unwrap_or_else(|| panic!("{t}"));
    // The page below RAM is not mapped: a read translation fault at exactly that address.
    for part in [
        "vector 4 (synchronous from EL1 with SP_EL1)",
        "EC 0x25",
        "translation fault, read",
        "FAR=0x3ffff000",
        "ELR=0x",
        "in check 'selftest: unexpected-exception'",
    ] {
        assert!(report.contains(part), "{part} in {report}");
    }
    let r = out.result("selftest: unexpected-exception").unwrap();
    assert_eq!(r.kind, Kind::Fail);
    // The check after it still ran, and the run ended with a summary.
    assert_eq!(out.result("boot: mmu").unwrap().kind, Kind::Pass, "{t}");
    assert_eq!(out.report.summary.as_ref().unwrap().unexpected_failures, 1);
    assert_cleanup_ran_before(&out, "FAIL: selftest: unexpected-exception");
}

#[test]
fn panic_fails_its_check_and_the_run_goes_on() {
    let out = run(&["--append", "only=boot:vectors,selftest:panic,boot:mmu"]);
    let t = out.transcript();
    assert_eq!(out.status, 1, "{t}");
    assert_eq!(out.result("selftest: panic").unwrap().kind, Kind::Fail);
    assert!(out
        .result("selftest: panic")
        .unwrap()
        .detail
        .as_deref()
        .unwrap()
        .contains("deliberate panic"));
    assert_eq!(out.result("boot: mmu").unwrap().kind, Kind::Pass, "{t}");
    assert_eq!(out.result("boot: vectors").unwrap().kind, Kind::Pass, "{t}");
    assert_cleanup_ran_before(&out, "FAIL: selftest: panic");
}

/// The clean-up the abandoned check registered ran once, before its FAIL line.
fn assert_cleanup_ran_before(out: &ioguard_runner::Outcome, fail: &str) {
    let t = out.transcript();
    let at = |prefix: &str| out.report.lines.iter().position(|l| l.starts_with(prefix));
    let cleanup = "INFO: selftest: clean-up ran after the check was abandoned";
    let runs = out.report.lines.iter().filter(|l| *l == cleanup).count();
    assert_eq!(runs, 1, "{t}");
    assert!(at(cleanup) < at(fail), "{t}");
}

#[test]
fn selftests_do_not_run_by_default_nor_by_wildcard() {
    let out = run(&["--append", "list only=*"]);
    assert_eq!(out.report.listed, DEFAULT_CHECKS);
}

#[test]
fn forced_profile_the_hypervisor_cannot_back_fails_clearly() {
    // Plain QEMU has no pKVM calls: forcing android14 must not pass a single guard check.
    let out = run(&[
        "--append",
        "ioguard.profile=android14 only=smccc:profile,guard:stray-read,control:*",
    ]);
    let t = out.transcript();
    assert_eq!(out.status, 1, "{t}");
    assert_eq!(header(&out, "profile"), "android14");
    let p = out.result("smccc: profile").unwrap();
    assert_eq!(p.kind, Kind::Fail, "{t}");
    assert!(
        p.detail
            .as_deref()
            .unwrap()
            .contains("needs KVM_FEATURES bits 2,5,6,7,8"),
        "{t}"
    );
    let g = out.result("guard: stray-read").unwrap();
    assert_eq!(g.kind, Kind::Fail, "{t}");
    assert!(
        g.detail
            .as_deref()
            .unwrap()
            .contains("HYP_MEMINFO not advertised"),
        "{t}"
    );
    assert_eq!(
        out.result("control: stray-forwarded").unwrap().kind,
        Kind::Skip,
        "{t}"
    );
}

#[test]
fn unknown_profile_is_an_error() {
    let out = run(&["--append", "ioguard.profile=android15"]);
    assert_eq!(out.status, 2, "{}", out.transcript());
    assert!(
        out.report
            .lines
            .iter()
            .any(|l| l.contains("unknown profile 'android15'")),
        "{}",
        out.transcript()
    );
}

#[test]
fn trace_prints_every_hypercall() {
    let out = run(&["--append", "trace only=smccc:version"]);
    let calls: Vec<&String> = out
        .report
        .lines
        .iter()
        .filter(|l| l.starts_with("trace: hvc "))
        .collect();
    // Discovery on plain QEMU: PSCI_VERSION, PSCI_FEATURES(SMCCC_VERSION), CALL_UID; each
    // with its arguments and the registers that came back.
    assert!(
        calls[0]
            .starts_with("trace: hvc PSCI_VERSION(0x84000000) x1=0x0 x2=0x0 x3=0x0 -> x0=0x10001"),
        "{calls:?}"
    );
    assert!(
        calls[1].contains("PSCI_FEATURES(0x8400000a) x1=0x80000000"),
        "{calls:?}"
    );
    assert!(
        calls[2].contains("VENDOR_HYP_CALL_UID(0x8600ff01)")
            && calls[2].contains("x0=0xffffffffffffffff"),
        "{calls:?}"
    );
    // They were made before the console existed and printed before the header.
    let header_at = out
        .report
        .lines
        .iter()
        .position(|l| l.starts_with("ioguard "))
        .unwrap();
    let first_trace = out
        .report
        .lines
        .iter()
        .position(|l| l.starts_with("trace: hvc"))
        .unwrap();
    assert!(first_trace < header_at);
}
