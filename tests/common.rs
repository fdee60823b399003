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
    "smccc: version",
    "smccc: vendor-uid",
    "smccc: kvm-features",
    "smccc: profile",
    "meminfo: granule",
    "memshare: share-unshare",
    "memshare: share-twice",
    "memshare: unshare-private",
    "memshare: share-mmio",
    "memshare: misaligned",
    "memshare: reserved-args",
    "psci: cpu-on",
    "guard: info",
    "guard: enroll",
    "guard: stray-read",
    "guard: stray-write",
    "guard: map-misaligned",
    "guard: map-ram",
    "guard: map-outside-ipa",
    "guard: unmap-unmapped",
    "guard: neighbour",
    "guard: after-unmap",
    "guard: refcount",
    "guard: other-cpu",
    "guard: map-twice",
    "guard: unmap-return",
    "guard: granule-16k",
    "guard: range",
    "guard: registered-read",
    "guard: registered-write",
    "guard: widths",
    "guard: no-syndrome",
    "guard: access-forms",
    "guard: returns",
    "guard: console",
    "control: stray-forwarded",
    "ioremap: windows",
    "ioremap: spanning",
    "virtio: discovered",
    "virtio: registered",
    "virtio: blk-rw",
    "virtio: console",
    "virtio: rng",
    "virtio: net",
    "virtio: no-stray",
    "virtio: dma-shared",
    "virtio: pool-unshared",
];

/// What plain QEMU (TCG, no hypervisor: profile none) must answer for each default check:
/// the checks of the guest itself and the control checks pass; everything that needs a
/// KVM or pKVM service skips with a reason.
pub fn plain_qemu_expectation(name: &str) -> Kind {
    // psci: cpu-on needs a second CPU, which the default run does not have.
    let needs_hypervisor = name == "smccc: kvm-features"
        || name == "psci: cpu-on"
        || name.starts_with("meminfo:")
        || name.starts_with("memshare:")
        || name == "ioremap: spanning"
        // The default devices are attached, but plain QEMU has no memory sharing.
        || name == "virtio: dma-shared"
        || name == "virtio: pool-unshared"
        || (name.starts_with("guard:")
            && ![
                "guard: no-syndrome",
                "guard: widths",
                "guard: access-forms",
                "guard: console",
            ]
            .contains(&name));
    if needs_hypervisor {
        Kind::Skip
    } else {
        Kind::Pass
    }
}

/// Boots with runner words; fails the test with the whole transcript if QEMU did not run.
pub fn run(args: &[&str]) -> Outcome {
    let mut all = vec!["--timeout", "60"];
    all.extend_from_slice(args);
    match boot(&all) {
        Ok(o) => o,
        Err(e) => panic!("run {args:?} could not happen: {e:?}"),
    }
}

/// Asserts a plain-QEMU run answered every default check as `plain_qemu_expectation`
/// says, and ended with status 0.
pub fn assert_clean_pass(out: &Outcome) {
    assert_clean_pass_except(out, &[]);
}

/// The default checks of the `virtio:` group.
pub fn virtio_checks() -> impl Iterator<Item = &'static str> {
    DEFAULT_CHECKS
        .iter()
        .copied()
        .filter(|n| n.starts_with("virtio: "))
}

/// The virtio checks' verdicts on plain QEMU without any virtio device.
pub const NO_VIRTIO_DEVICE: &[(&str, Kind)] = &[
    ("virtio: discovered", Kind::Skip),
    ("virtio: registered", Kind::Skip),
    ("virtio: blk-rw", Kind::Skip),
    ("virtio: console", Kind::Skip),
    ("virtio: rng", Kind::Skip),
    ("virtio: net", Kind::Skip),
    ("virtio: no-stray", Kind::Skip),
    ("virtio: dma-shared", Kind::Skip),
    ("virtio: pool-unshared", Kind::Skip),
];

/// `assert_clean_pass`, but for the checks `except` names, whose verdicts it gives.
pub fn assert_clean_pass_except(out: &Outcome, except: &[(&str, Kind)]) {
    let t = out.transcript();
    assert!(!out.timed_out, "timed out:\n{t}");
    assert_eq!(out.status, 0, "status {}:\n{t}", out.status);
    let smp = header(out, "cpus") != "1";
    for name in DEFAULT_CHECKS {
        let r = out
            .result(name)
            .unwrap_or_else(|| panic!("no result for {name}:\n{t}"));
        let want = match *name {
            n if except.iter().any(|(e, _)| *e == n) => except
                .iter()
                .find(|(e, _)| *e == n)
                .map_or(Kind::Pass, |(_, k)| *k),
            // Needs a second CPU.
            "psci: cpu-on" if smp => Kind::Pass,
            n => plain_qemu_expectation(n),
        };
        assert_eq!(r.kind, want, "{name}:\n{t}");
        if r.kind == Kind::Skip {
            assert!(
                r.detail.as_deref().is_some_and(|d| !d.is_empty()),
                "{name} skips without a reason"
            );
        }
    }
    let s = out
        .report
        .summary
        .as_ref()
        .unwrap_or_else(|| panic!("no SUMMARY:\n{t}"));
    assert_eq!(s.unexpected_failures, 0, "{t}");
    assert_eq!(s.tests as usize, DEFAULT_CHECKS.len(), "{t}");
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

/// From a `fuzz: run` line: the DMA requests made, of them into private pages, and those
/// not made because the page was private.
pub fn dma_requests(detail: &str) -> (u64, u64, u64) {
    let number_before = |words: &str| -> Option<u64> {
        let at = detail.find(words)?;
        detail[..at].split([' ', '(']).next_back()?.parse().ok()
    };
    (
        number_before(" DMA requests").unwrap_or(0),
        number_before(" into private pages").unwrap_or(0),
        number_before(" into private pages not made").unwrap_or(0),
    )
}

/// A `private-dma` run's DMA counts: requests into private pages were made (at least 5,
/// besides requests into shared ones), none left out. Returns how many.
pub fn private_dma_requests(detail: &str, transcript: &str) -> u64 {
    let (made, private, skipped) = dma_requests(detail);
    assert!(
        private >= 5 && made > private && skipped == 0,
        "{made} {private} {skipped}\n{transcript}"
    );
    private
}

/// From a `fuzz: run` line: how many steps made two ops at once (CPU 1 and the boot CPU).
pub fn ops_at_once(detail: &str) -> u64 {
    detail
        .find(" of them two ops at once")
        .and_then(|at| detail[..at].rsplit('(').next()?.parse().ok())
        .unwrap_or(0)
}
