//! Helpers shared by the integration tests: boot the real image in real QEMU and look at
//! what the guest printed.

#![allow(dead_code)]

use ioguard_runner::{boot, Kind, Outcome};

/// The checks a default run executes, in order (the `list` output must match).
pub const DEFAULT_CHECKS: &[&str] = &[
    "boot: device-tree",
    "boot: relocated",
    "boot: mmu",
    "boot: vectors",
    "boot: probe-fault",
    "boot: ioremap",
];

/// Boots with runner words; fails the test with the whole transcript if QEMU did not run.
pub fn run(args: &[&str]) -> Outcome {
    let mut all = vec!["--timeout", "60"];
    all.extend_from_slice(args);
    match boot(&all) {
        Ok(o) => o,
        Err(e) => panic!("run {args:?} could not happen: {e:?}"),
    }
}

/// Asserts a run passed every default check and ended with status 0.
pub fn assert_clean_pass(out: &Outcome) {
    let t = out.transcript();
    assert!(!out.timed_out, "timed out:\n{t}");
    assert_eq!(out.status, 0, "status {}:\n{t}", out.status);
    for name in DEFAULT_CHECKS {
        let r = out
            .result(name)
            .unwrap_or_else(|| panic!("no result for {name}:\n{t}"));
        assert_eq!(r.kind, Kind::Pass, "{name}:\n{t}");
    }
    let s = out
        .report
        .summary
        .as_ref()
        .unwrap_or_else(|| panic!("no SUMMARY:\n{t}"));
    assert_eq!(s.unexpected_failures, 0, "{t}");
    assert_eq!(out.report.count(Kind::Pass), DEFAULT_CHECKS.len(), "{t}");
}

pub fn header<'a>(out: &'a Outcome, key: &str) -> &'a str {
    out.report
        .header
        .as_ref()
        .and_then(|h| h.get(key))
        .unwrap_or_else(|| panic!("no header field {key}:\n{}", out.transcript()))
}

pub fn detail<'a>(out: &'a Outcome, name: &str) -> &'a str {
    out.result(name)
        .and_then(|r| r.detail.as_deref())
        .unwrap_or_else(|| panic!("no detail for {name}:\n{}", out.transcript()))
}
