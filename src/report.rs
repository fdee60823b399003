//! Result lines, the summary and the exit status, in the style of kvm-unit-tests so that
//! existing tooling reads them (DESIGN.md "Output").

use alloc::format;
use alloc::string::String;
use core::fmt;

/// What a check concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Skip,
    /// A deviation the detected profile is known to have: visible, not a failure.
    KFail,
}

impl Verdict {
    pub fn tag(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
            Self::KFail => "KFAIL",
        }
    }
}

/// A check's conclusion: its verdict and the detail for its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub detail: String,
}

impl Outcome {
    pub fn pass(detail: impl fmt::Display) -> Self {
        Self::new(Verdict::Pass, detail)
    }
    pub fn fail(detail: impl fmt::Display) -> Self {
        Self::new(Verdict::Fail, detail)
    }
    pub fn skip(detail: impl fmt::Display) -> Self {
        Self::new(Verdict::Skip, detail)
    }

    /// kvm-unit-tests' `report_kfail(kfail, pass, ...)`: PASS when `pass`, otherwise KFAIL
    /// when the failure is one the profile is known to have (`kfail`), otherwise FAIL.
    pub fn kfail(kfail: bool, pass: bool, detail: impl fmt::Display) -> Self {
        let verdict = match (pass, kfail) {
            (true, _) => Verdict::Pass,
            (false, true) => Verdict::KFail,
            (false, false) => Verdict::Fail,
        };
        Self::new(verdict, detail)
    }

    fn new(verdict: Verdict, detail: impl fmt::Display) -> Self {
        Self {
            verdict,
            detail: format!("{detail}"),
        }
    }
}

/// One result line: `TAG: name[: detail]`. Line breaks in the detail are flattened so
/// one check always gives one line.
pub fn result_line(verdict: Verdict, name: &str, detail: &str) -> String {
    let detail = detail.trim();
    if detail.is_empty() {
        format!("{}: {}", verdict.tag(), name)
    } else {
        let flat: String = detail
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        format!("{}: {}: {}", verdict.tag(), name, flat)
    }
}

/// Exit codes (the value before `EXIT: STATUS=` encoding).
pub mod code {
    pub const OK: u8 = 0;
    pub const CHECK_FAILED: u8 = 1;
    /// The guest could not run its checks at all (bad device tree, bad command line, ...).
    pub const FATAL: u8 = 2;
}

/// `EXIT: STATUS=` carries `(code << 1) | 1`, so that a runner can tell "the guest said 0"
/// (STATUS=1) from an absent or truncated line, and recover the code from the console.
pub fn exit_line(code: u8) -> String {
    format!("EXIT: STATUS={}", (u32::from(code) << 1) | 1)
}

/// Counts of each verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub pass: u32,
    pub fail: u32,
    pub skip: u32,
    pub kfail: u32,
}

impl Tally {
    pub fn record(&mut self, v: Verdict) {
        match v {
            Verdict::Pass => self.pass += 1,
            Verdict::Fail => self.fail += 1,
            Verdict::Skip => self.skip += 1,
            Verdict::KFail => self.kfail += 1,
        }
    }

    pub fn total(&self) -> u32 {
        self.pass + self.fail + self.skip + self.kfail
    }

    pub fn unexpected(&self) -> u32 {
        self.fail
    }

    /// `SUMMARY: N tests, N unexpected failures, N known failures, N skipped`
    pub fn summary_line(&self) -> String {
        format!(
            "SUMMARY: {} tests, {} unexpected failures, {} known failures, {} skipped",
            self.total(),
            self.unexpected(),
            self.kfail,
            self.skip
        )
    }

    /// `ioguard: N passed, N failed, N skipped` (the plain closing line CI tools read).
    pub fn totals_line(&self) -> String {
        format!(
            "ioguard: {} passed, {} failed, {} skipped",
            self.pass,
            self.unexpected(),
            self.skip
        )
    }

    /// The exit code this tally ends the run with.
    pub fn exit_code(&self) -> u8 {
        if self.unexpected() == 0 {
            code::OK
        } else {
            code::CHECK_FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            result_line(Verdict::Pass, "boot: mmu", ""),
            "PASS: boot: mmu"
        );
        assert_eq!(
            result_line(Verdict::Fail, "guard: stray-read", " ESR=0x0\nFAR=0x1 "),
            "FAIL: guard: stray-read: ESR=0x0 FAR=0x1"
        );
        assert_eq!(result_line(Verdict::KFail, "a: b", "x"), "KFAIL: a: b: x");
    }

    #[test]
    fn kfail_is_a_predicate_over_a_failure() {
        assert_eq!(Outcome::kfail(true, true, "x").verdict, Verdict::Pass);
        assert_eq!(Outcome::kfail(false, true, "x").verdict, Verdict::Pass);
        assert_eq!(Outcome::kfail(true, false, "x").verdict, Verdict::KFail);
        assert_eq!(Outcome::kfail(false, false, "x").verdict, Verdict::Fail);
        assert_eq!(Outcome::skip(format_args!("{}", 3)).detail, "3");
    }

    #[test]
    fn tally_matches_design_example() {
        let mut t = Tally::default();
        for _ in 0..37 {
            t.record(Verdict::Pass);
        }
        t.record(Verdict::KFail);
        for _ in 0..3 {
            t.record(Verdict::Skip);
        }
        assert_eq!(
            t.summary_line(),
            "SUMMARY: 41 tests, 0 unexpected failures, 1 known failures, 3 skipped"
        );
        assert_eq!(t.totals_line(), "ioguard: 37 passed, 0 failed, 3 skipped");
        assert_eq!(t.exit_code(), code::OK);
        assert_eq!(exit_line(t.exit_code()), "EXIT: STATUS=1");
    }

    #[test]
    fn failures_fail_the_run_and_known_failures_do_not() {
        let mut t = Tally::default();
        t.record(Verdict::Pass);
        t.record(Verdict::KFail);
        assert_eq!(t.exit_code(), code::OK);
        t.record(Verdict::Fail);
        assert_eq!(t.unexpected(), 1);
        assert_eq!(t.exit_code(), code::CHECK_FAILED);
        assert_eq!(exit_line(t.exit_code()), "EXIT: STATUS=3");
        assert_eq!(exit_line(code::FATAL), "EXIT: STATUS=5");
    }

    #[test]
    fn every_verdict_counts_in_the_total() {
        let mut t = Tally::default();
        for v in [Verdict::Pass, Verdict::Fail, Verdict::Skip, Verdict::KFail] {
            t.record(v);
        }
        assert_eq!(t.total(), 4);
        assert_eq!(t.unexpected(), 1);
    }
}
