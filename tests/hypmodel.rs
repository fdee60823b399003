//! The suite under hypmodel, the reference EL2 hypervisor: every profile and granule
//! passes (KFAIL only where the profile has a known bug), and every mutant is caught by at
//! least one FAIL line that names the bug.

mod common;
use common::*;
use ioguard_runner::{Kind, Outcome};

fn model(spec: &str, append: &str) -> Outcome {
    let hyp = format!("model:{spec}");
    // Two CPUs, so that guard: other-cpu runs.
    let mut args = vec!["--smp", "2", "--hyp", hyp.as_str()];
    if !append.is_empty() {
        args.extend(["--append", append]);
    }
    run(&args)
}

fn fails(out: &Outcome) -> Vec<String> {
    out.report.of_kind(Kind::Fail).map(|r| r.name()).collect()
}

/// What each profile must answer, check by check, when hypmodel behaves correctly.
fn expected(profile: &str, granule: &str, name: &str) -> Kind {
    let pass_or_skip = |yes: bool| if yes { Kind::Pass } else { Kind::Skip };
    // kvm is an ordinary VM: no pKVM services. pkvm is upstream pKVM as measured: memory
    // sharing and no guard.
    let guard = profile != "kvm" && profile != "pkvm";
    let sharing = profile != "kvm";
    let android = profile.starts_with("android");
    match name {
        "meminfo: granule" => pass_or_skip(sharing),
        // Upstream pKVM answers MEM_SHARE of a device page with an abort at the HVC.
        "memshare: share-mmio" if profile == "pkvm" => Kind::KFail,
        n if n.starts_with("memshare:") => pass_or_skip(sharing),
        "guard: unmap-return" | "guard: unmap-unmapped" if profile == "android13" => Kind::KFail,
        "guard: info" | "guard: enroll" | "guard: unmap-return" | "guard: unmap-unmapped"
            if !android =>
        {
            Kind::Skip
        }
        "guard: after-unmap" if !android || profile == "android16" => Kind::Skip,
        "guard: granule-16k" if granule == "4k" || !guard => Kind::Skip,
        // An access without syndrome aborts under pKVM, guard or not; kvm leaves it to
        // the VMM (SKIP).
        "guard: no-syndrome" => pass_or_skip(profile != "kvm"),
        // Forwarding of every access width is checked with or without a guard, and the
        // runs here have two CPUs.
        "guard: widths" | "psci: cpu-on" | "guard: console" | "guard: access-forms" => Kind::Pass,
        "guard: range" => pass_or_skip(profile == "android16"),
        "ioremap: spanning" => pass_or_skip(guard),
        "guard: returns" => pass_or_skip(sharing),
        // The default devices are attached; DMA goes through shared memory where there is
        // memory sharing, unchanged elsewhere.
        "virtio: dma-shared" | "virtio: pool-unshared" => pass_or_skip(sharing),
        "control: stray-forwarded" => pass_or_skip(!guard),
        n if n.starts_with("guard:") => pass_or_skip(guard),
        _ => Kind::Pass,
    }
}

#[test]
fn every_profile_and_granule_passes() {
    for profile in [
        "android13",
        "android14",
        "android16",
        "upstream",
        "kvm",
        "pkvm",
    ] {
        for granule in ["4k", "16k", "64k"] {
            let out = model(&format!("{profile},granule={granule}"), "");
            let t = out.transcript();
            assert_eq!(
                out.status, 0,
                "{profile} {granule}: status {}\n{t}",
                out.status
            );
            assert_eq!(header(&out, "profile"), profile, "{t}");
            assert_eq!(header(&out, "hypervisor"), "kvm", "{t}");
            let g = match (profile, granule) {
                ("kvm" | "pkvm", _) => "0",
                (_, "4k") => "4096",
                (_, "16k") => "16384",
                _ => "65536",
            };
            assert_eq!(header(&out, "granule"), g, "{t}");
            for name in DEFAULT_CHECKS {
                let r = out
                    .result(name)
                    .unwrap_or_else(|| panic!("{profile} {granule}: no {name}\n{t}"));
                assert_eq!(
                    r.kind,
                    expected(profile, granule, name),
                    "{profile} {granule}: {name}: {:?}\n{t}",
                    r.detail
                );
            }
            let kfails = out.report.count(Kind::KFail);
            let known = match profile {
                "android13" => 2,
                "pkvm" => 1,
                _ => 0,
            };
            assert_eq!(kfails, known, "{t}");
        }
    }
}

#[test]
fn an_enrolled_guest_touches_no_device_page_it_did_not_register() {
    // Enrolled before the first instruction: the console's first byte must already be
    // registered. hypmodel's refused accesses are then exactly the deliberate probes the
    // guest reports as expected faults with pKVM's syndrome.
    let out = model("android14,enrolled=boot", "trace");
    let t = out.transcript();
    assert_eq!(out.status, 0, "{t}");
    let deliberate = out
        .report
        .lines
        .iter()
        .filter(|l| l.starts_with("trace: fault (expected) ESR=0x96000010"))
        .count();
    let refused: usize = out
        .report
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("hypmodel: accesses "))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("refused="))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no hypmodel refused= counter\n{t}"));
    assert!(deliberate > 5, "{t}");
    assert_eq!(
        refused, deliberate,
        "hypmodel refused {refused} accesses, the guest expected {deliberate}\n{t}"
    );
    assert!(
        out.report
            .lines
            .iter()
            .any(|l| l.starts_with("hypmodel: report ") && l.contains("enrolled=yes")),
        "{t}"
    );
}

#[test]
fn a_check_reproduces_alone_with_its_hypercalls_and_faults() {
    // output=uart: no virtio set-up at boot, so the trace holds only what the check needs.
    let out = model(
        "android14,mutant=guard-off",
        "only=guard:stray-read trace output=uart",
    );
    let t = out.transcript();
    assert_eq!(out.status, 1, "{t}");
    assert_eq!(out.report.results.len(), 1, "{t}");
    assert_eq!(
        out.result("guard: stray-read").unwrap().kind,
        Kind::Fail,
        "{t}"
    );
    // Every hypercall of the run is traced: discovery, ENROLL, the console's MAP.
    for call in [
        "VENDOR_HYP_CALL_UID",
        "KVM_FEATURES",
        "HYP_MEMINFO",
        "MMIO_GUARD_ENROLL",
        "MMIO_GUARD_MAP(0xc6000007) x1=0x9000000",
    ] {
        assert!(
            out.report
                .lines
                .iter()
                .any(|l| l.starts_with("trace: hvc ") && l.contains(call)),
            "{call}\n{t}"
        );
    }
    // A minimal reproducer: the only MAP is the console's (no virtio set-up at boot).
    let maps: Vec<&String> = out
        .report
        .lines
        .iter()
        .filter(|l| l.starts_with("trace: hvc MMIO_GUARD_MAP"))
        .collect();
    assert_eq!(maps.len(), 1, "{maps:?}\n{t}");
}

/// Each mutant, its granule, and the checks that must catch it, each with words its FAIL
/// line must contain. Other checks may fail too (a broken guard breaks more than one
/// check); these must, and must say why.
type MutantRow = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);
const MUTANTS: &[MutantRow] = &[
    (
        "guard-off",
        "4k",
        &[
            ("guard: stray-read", "was forwarded"),
            ("guard: stray-write", "the refused write arrived"),
            ("guard: after-unmap", "was forwarded"),
        ],
    ),
    (
        "silent-drop",
        "4k",
        &[
            ("guard: stray-read", "no abort"),
            ("guard: stray-write", "raised no abort"),
        ],
    ),
    (
        "wrong-dfsc",
        "4k",
        &[
            ("guard: stray-read", "not 0x10"),
            ("guard: stray-write", "not 0x10"),
            // An ldp (no syndrome) gets the same wrong abort.
            ("guard: no-syndrome", "aborted with ESR=0x96000007"),
        ],
    ),
    (
        "bad-far",
        "4k",
        &[
            ("guard: stray-read", "is not the faulting address"),
            ("guard: stray-write", "is not the faulting address"),
            ("guard: no-syndrome", "expected ESR 0x96000010 FAR=0x"),
        ],
    ),
    (
        "map-noop",
        "4k",
        &[
            ("guard: registered-read", "aborted"),
            ("guard: registered-write", "aborted"),
            // The read that aborted, with its width.
            ("guard: widths", "4-byte read at 0x"),
            // What the forwarded read met (pages::NotForwarded).
            ("guard: map-twice", "after MAP: registered "),
        ],
    ),
    (
        "map-neighbour",
        "4k",
        &[("guard: neighbour", "the next granule")],
    ),
    ("map-accepts-ram", "4k", &[("guard: map-ram", "RAM page")]),
    (
        "map-accepts-misaligned",
        "4k",
        &[("guard: map-misaligned", "answered SUCCESS (expected -3")],
    ),
    (
        "unmap-noop",
        "4k",
        &[
            ("guard: after-unmap", "after UNMAP"),
            ("guard: map-twice", "after two MAPs and one UNMAP"),
        ],
    ),
    (
        "unmap-inverted",
        "4k",
        &[
            ("guard: unmap-return", "answered NOT_SUPPORTED (expected 0)"),
            // ioremap counts the UNMAPs it could not get accepted.
            (
                "ioremap: spanning",
                "UNMAP runs on release were not accepted",
            ),
        ],
    ),
    (
        "granule-mismatch",
        "16k",
        &[
            ("guard: granule-16k", "did not cover"),
            // The byte read is the granule's last, which the 4 KiB registration misses.
            ("guard: neighbour", "3fff of registered granule"),
        ],
    ),
    (
        "no-syndrome-forward",
        "4k",
        &[("guard: no-syndrome", "(no valid syndrome)")],
    ),
    ("per-cpu-guard", "4k", &[("guard: other-cpu", "per CPU")]),
    (
        "wnr-leak",
        "4k",
        &[(
            "guard: stray-write",
            "ESR=0x96000050, not pKVM's 0x96000010",
        )],
    ),
    (
        "isv-leak",
        "4k",
        &[
            ("guard: stray-read", "not pKVM's 0x96000010"),
            ("guard: stray-write", "not pKVM's 0x96000010"),
        ],
    ),
    (
        "elr-advanced",
        "4k",
        &[
            ("guard: stray-read", "is not the access at"),
            ("guard: stray-write", "is not the access at"),
            // The ldp's ESR and FAR are right; only its ELR is not the ldp's.
            ("guard: no-syndrome", "expected ESR 0x96000010 FAR=0x"),
        ],
    ),
    (
        "map-returns-one",
        "4k",
        &[
            (
                "guard: returns",
                "MMIO_GUARD_MAP(0x9000000, 0x0, 0x0) answered x0=0x1",
            ),
            ("guard: console", "MAP answered 0x1"),
            // ioremap's own refusal names the call and the value.
            ("guard: registered-read", "): MMIO_GUARD_MAP(0x"),
        ],
    ),
    (
        "console-dropped",
        "4k",
        &[(
            "guard: console",
            "an access to the console's window aborted",
        )],
    ),
    (
        "rguard-first-only",
        "4k",
        &[("guard: range", "after RGUARD_MAP of 2 granules")],
    ),
    (
        "dest-clobbered",
        "4k",
        &[(
            "guard: stray-read",
            "the destination register changed to 0x0",
        )],
    ),
    (
        "info-host-page",
        "4k",
        &[(
            "guard: info",
            "MMIO_GUARD_INFO 0x10000 != HYP_MEMINFO 0x1000",
        )],
    ),
    (
        "enroll-resets",
        "4k",
        &[(
            "guard: enroll",
            "after a second ENROLL the registered console page aborts",
        )],
    ),
    (
        "map-twice-einval",
        "4k",
        &[(
            "guard: map-twice",
            "twice answered SUCCESS and INVALID_PARAMETER (expected 0, 0)",
        )],
    ),
    (
        "unmap-unmapped-ok",
        "4k",
        &[(
            "guard: unmap-unmapped",
            "answered SUCCESS (expected INVALID_PARAMETER)",
        )],
    ),
    (
        "map-beyond-ipa",
        "4k",
        &[(
            "guard: map-outside-ipa",
            "IPA space answered SUCCESS (expected -3)",
        )],
    ),
    (
        "share-twice-ok",
        "4k",
        &[(
            "memshare: share-twice",
            "second SUCCESS (expected 0, then -3)",
        )],
    ),
    (
        "share-mmio-ok",
        "4k",
        &[("memshare: share-mmio", "answered SUCCESS (expected -3)")],
    ),
    (
        "share-misaligned-ok",
        "4k",
        &[("memshare: misaligned", "MEM_SHARE SUCCESS")],
    ),
    (
        "unshare-misaligned-ok",
        "4k",
        &[(
            "memshare: misaligned",
            "MEM_SHARE INVALID_PARAMETER, MEM_UNSHARE SUCCESS",
        )],
    ),
    (
        "share-x1-zero",
        "4k",
        &[(
            "memshare: reserved-args",
            "android16 x2 = 1 (one page) answered x0=0x0 x1=0x0",
        )],
    ),
    (
        "unshare-refused",
        "4k",
        &[(
            "memshare: share-unshare",
            "MEM_SHARE answered SUCCESS, MEM_UNSHARE INVALID_PARAMETER",
        )],
    ),
    (
        "unshare-private-ok",
        "4k",
        &[("memshare: unshare-private", "MEM_UNSHARE of never-shared")],
    ),
    (
        "meminfo-ignores-args",
        "4k",
        &[("meminfo: granule", "x1 = 1 answered 0x1000")],
    ),
    (
        "no-sign-extend",
        "4k",
        &[(
            "guard: widths",
            "ldrsb read 0xf0, expected 0xfffffffffffffff0",
        )],
    ),
    (
        "load64-as-32",
        "4k",
        &[("guard: widths", "64-bit read 0x31, expected 0x1000000031")],
    ),
    (
        "secondary-unguarded",
        "4k",
        &[("guard: other-cpu", "was not refused there")],
    ),
    (
        "share-ignored",
        "4k",
        &[
            ("virtio: blk-rw", "the device did not answer within"),
            ("virtio: rng", "the device did not answer within"),
            (
                "guard: console",
                "the virtio-console carrying the suite's lines did not answer",
            ),
        ],
    ),
    (
        "range-x1-zero",
        "4k",
        &[
            // The guest refuses x1 = 0 with SUCCESS instead of calling again forever: its
            // resume loop names the call it stopped at and the success it did not take.
            (
                "guard: range",
                ", 2) answered SUCCESS; after RGUARD_MAP of 2 granules from",
            ),
            ("guard: returns", ", 0x2, 0x0) answered x0=0x0 x1=0x0"),
            // The range call by its name, with the count it was asked for.
            ("ioremap: spanning", ", 0x2000): MMIO_RGUARD_MAP(0x"),
            ("ioremap: spanning", ", 2) answered SUCCESS"),
        ],
    ),
    (
        "dma-private-through",
        "4k",
        &[(
            "selftest: dma-private",
            "the device wrote 32 bytes into private memory",
        )],
    ),
    (
        "enroll-twice-refused",
        "4k",
        &[
            (
                "guard: enroll",
                "ENROLL at boot answered SUCCESS, again INVALID_PARAMETER",
            ),
            // The -3 of each later ENROLL (guard: enroll's, guard: console's) is named.
            (
                "guard: returns",
                "MMIO_GUARD_ENROLL(0x0, 0x0, 0x0) answered x0=0xfffffffffffffffd",
            ),
        ],
    ),
    (
        "forward-wrong-page",
        "4k",
        &[
            // The PL031 and PL061 are read one page off, where `virt` has no device: 0.
            ("guard: registered-read", "ID read 0x0, expected 0x"),
            ("guard: map-twice", "read 0x0, not its ID 0x"),
            ("guard: other-cpu", "read 0x0, not its ID 0x"),
            ("guard: registered-write", "wrote 0x13579bdf, read back 0x0"),
        ],
    ),
    (
        "range-x1-overcount",
        "4k",
        &[
            // Run with range-max=1 (`options_of`): the call that resumes a run of 2 after
            // its first granule is asked for 1 and answers x1 = 2, which the guest must not
            // take as progress past its run.
            ("guard: range", "RGUARD_MAP of 2 granules from 0x"),
            (
                "guard: range",
                ", 1) answered SUCCESS; RGUARD_UNMAP of 2 granules",
            ),
            ("guard: returns", ", 0x1, 0x0) answered x0=0x0 x1=0x2"),
            ("ioremap: spanning", ", 0x2000): MMIO_RGUARD_MAP(0x"),
            ("ioremap: spanning", ", 1) answered SUCCESS"),
        ],
    ),
];

/// Public mutants no guest check can catch, and why (docs/mutants.md says more).
const MUTANTS_NOT_REACHABLE: &[(&str, &str)] = &[];

/// The guest's command line for a mutant's run. `console-dropped` drops the UART's
/// registration after 1000 accesses to it: with virtio-console carrying the lines the UART
/// never gets there, so that run keeps the lines on the UART, as a guest without a
/// virtio-console does. `dma-private-through` lets a private buffer reach a device, and
/// only the self-test that offers one can tell.
fn append_of(mutant: &str) -> &'static str {
    match mutant {
        "console-dropped" => "output=uart",
        // Only a guest that hands a device a private buffer shows this one: the self-test.
        "dma-private-through" => "only=selftest:dma-private",
        _ => "",
    }
}

/// The profile a mutant is run under: its bug is in a call only that profile has.
fn profile_of(mutant: &str) -> &'static str {
    match mutant {
        "rguard-first-only" | "share-x1-zero" | "range-x1-zero" | "range-x1-overcount" => {
            "android16"
        }
        _ => "android14",
    }
}

/// hypmodel options a mutant's run adds: `range-x1-overcount` shows only on a call that
/// resumes a run, so its run has every range call stop after one granule (§10.1 allows it).
fn options_of(mutant: &str) -> &'static str {
    match mutant {
        "range-x1-overcount" => ",range-max=1",
        _ => "",
    }
}

#[test]
fn every_mutant_is_caught_by_a_fail_that_names_it() {
    for (mutant, granule, checks) in MUTANTS {
        let profile = profile_of(mutant);
        let out = model(
            &format!(
                "{profile},granule={granule},mutant={mutant}{}",
                options_of(mutant)
            ),
            append_of(mutant),
        );
        let t = out.transcript();
        assert_ne!(out.status, 0, "{mutant}: status 0\n{t}");
        assert!(!out.timed_out, "{mutant}: timed out\n{t}");
        for (check, words) in *checks {
            let r = out
                .result(check)
                .unwrap_or_else(|| panic!("{mutant}: no {check}\n{t}"));
            assert_eq!(r.kind, Kind::Fail, "{mutant}: {check}\n{t}");
            let detail = r.detail.clone().unwrap_or_default();
            assert!(
                detail.contains(words),
                "{mutant}: '{check}' should say '{words}': {detail}"
            );
        }
        eprintln!("{mutant}: {}", fails(&out).join(", "));
    }
}

#[test]
fn the_mutant_tables_cover_every_public_mutant() {
    let mut listed: Vec<&str> = MUTANTS.iter().map(|m| m.0).collect();
    listed.extend(MUTANTS_NOT_REACHABLE.iter().map(|m| m.0));
    listed.sort_unstable();
    let mut public = ioguard_runner::hyp::MODEL_MUTANTS.to_vec();
    public.sort_unstable();
    assert_eq!(listed, public);
    assert!(public.len() >= 25, "{} public mutants", public.len());
}

/// hypmodel's trace shows exactly what the guest did: for `guard: registered-read`, one
/// MAP of the PL031 page, one forwarded 4-byte read of its ID register that returns 0x31,
/// one UNMAP; for `guard: stray-read`, one refused read of the PL061 ID register.
#[test]
fn hypmodel_trace_matches_the_guest_access_for_access() {
    let device_lines = |out: &Outcome| -> Vec<String> {
        out.report
            .lines
            .iter()
            .filter(|l| l.starts_with("hypmodel: trace cpu0 "))
            .filter(|l| !l.contains("ipa=0x9000") && !l.contains("(0x9000000,"))
            .filter(|l| {
                l.contains("dabt") || l.contains("MMIO_GUARD_MAP") || l.contains("MMIO_GUARD_UNMAP")
            })
            .map(|l| l.trim_start_matches("hypmodel: trace cpu0 ").to_string())
            .collect()
    };
    let out = model("android14,trace", "only=guard:registered-read output=uart");
    let lines = device_lines(&out);
    assert_eq!(lines.len(), 3, "{lines:#?}\n{}", out.transcript());
    assert!(
        lines[0].starts_with("hvc MMIO_GUARD_MAP(0x9010000, 0x0, 0x0)")
            && lines[0].ends_with("-> x0=0x0 x1=0x0"),
        "{lines:#?}"
    );
    assert!(
        lines[1].starts_with("dabt read 4B ipa=0x9010fe0 ")
            && lines[1].ends_with("-> forwarded 0x31"),
        "{lines:#?}"
    );
    assert!(
        lines[2].starts_with("hvc MMIO_GUARD_UNMAP(0x9010000, 0x0, 0x0)"),
        "{lines:#?}"
    );
    assert_eq!(
        out.result("guard: registered-read").unwrap().kind,
        Kind::Pass
    );

    let out = model("android14,trace", "only=guard:stray-read output=uart");
    let lines = device_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:#?}\n{}", out.transcript());
    assert!(
        lines[0].starts_with("dabt read 4B ipa=0x9030fe0 ") && lines[0].contains("refused"),
        "{lines:#?}"
    );
}

/// The KFAIL of `memshare: share-mmio` is pkvm's known bug, not any abort: the same
/// abort under a profile that does not have that bug (forced with `ioguard.profile=`)
/// is a FAIL, and each line says which case it is.
#[test]
fn a_known_bug_is_the_profiles_not_any_abort() {
    let out = model("pkvm", "only=memshare:share-mmio");
    let r = out.result("memshare: share-mmio").unwrap();
    assert_eq!(r.kind, Kind::KFail, "{}", out.transcript());
    assert!(r
        .detail
        .as_deref()
        .unwrap_or_default()
        .contains("upstream pKVM answers with an abort"));
    let out = model(
        "pkvm",
        "only=memshare:share-mmio,guard:returns ioguard.profile=android14",
    );
    let r = out.result("memshare: share-mmio").unwrap();
    assert_eq!(r.kind, Kind::Fail, "{}", out.transcript());
    assert!(r
        .detail
        .as_deref()
        .unwrap_or_default()
        .contains("(expected -3)"));
    // `guard: returns` exempts that abort only under the profile whose bug it is: here it
    // names it (with the ENROLL that pkvm does not have, which android14 makes).
    let r = out.result("guard: returns").unwrap();
    assert_eq!(r.kind, Kind::Fail, "{}", out.transcript());
    let d = r.detail.as_deref().unwrap_or_default();
    assert!(
        d.contains("; MEM_SHARE(0x") && d.contains(", 0x0, 0x0) aborted (ESR=0x96000010 "),
        "{d}\n{}",
        out.transcript()
    );
}

/// A guest calls only what its profile's ABI has: upstream pKVM's guard ABI is MAP alone
/// (no INFO, ENROLL or UNMAP), and ioguard's layer must not call the rest there.
#[test]
fn a_guest_calls_only_what_its_profiles_abi_has() {
    let out = model("upstream", "");
    let t = out.transcript();
    assert_eq!(out.status, 0, "{t}");
    let calls: Vec<&String> = out
        .report
        .lines
        .iter()
        .filter(|l| l.starts_with("hypmodel: calls MMIO_"))
        .collect();
    assert!(
        calls
            .iter()
            .any(|l| l.starts_with("hypmodel: calls MMIO_GUARD_MAP=")),
        "{calls:?}\n{t}"
    );
    for absent in [
        "MMIO_GUARD_UNMAP",
        "MMIO_GUARD_ENROLL",
        "MMIO_GUARD_INFO",
        "MMIO_RGUARD",
    ] {
        assert!(
            !calls.iter().any(|l| l.contains(absent)),
            "{absent} called under upstream: {calls:?}"
        );
    }
}

/// `hypmodel: calls NAME=N` from hypmodel's report (0 when absent: zero counters are not
/// printed).
fn calls(out: &Outcome, name: &str) -> u64 {
    let prefix = format!("hypmodel: calls {name}=");
    out.report
        .lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |n| {
            n.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{prefix}{n}\n{}", out.transcript()))
        })
}

/// hypmodel's `range-max=1` is a correct hypervisor that stops every range call after one
/// granule (§10.1: the caller resumes at base + x1 * granule): the whole suite must give
/// the same verdicts as with range calls that do their whole run, through more calls.
#[test]
fn range_max_1_gives_every_check_the_same_verdict() {
    let whole = model("android16", "");
    let stepped = model("android16,range-max=1", "");
    let verdicts = |out: &Outcome| -> Vec<(String, Kind)> {
        assert!(!out.timed_out, "timed out\n{}", out.transcript());
        out.report
            .results
            .iter()
            .map(|r| (r.name(), r.kind))
            .collect()
    };
    let (a, b) = (verdicts(&whole), verdicts(&stepped));
    for name in DEFAULT_CHECKS {
        assert!(
            a.iter().any(|(n, _)| n == name),
            "no {name}\n{}",
            whole.transcript()
        );
    }
    let t = stepped.transcript();
    assert_eq!(a, b, "verdicts without and with range-max=1\n{t}");
    assert_eq!(
        (whole.status, stepped.status),
        (0, 0),
        "{}\n{t}",
        whole.transcript()
    );
    // The option took effect: hypmodel says so, and the runs needed more range calls.
    assert!(
        stepped
            .report
            .lines
            .iter()
            .any(|l| l == "hypmodel: range_max=1"),
        "{t}"
    );
    assert!(!whole.report.lines.iter().any(|l| l.contains("range_max")));
    let (m1, m2) = (
        calls(&whole, "MMIO_RGUARD_MAP"),
        calls(&stepped, "MMIO_RGUARD_MAP"),
    );
    let (u1, u2) = (
        calls(&whole, "MMIO_RGUARD_UNMAP"),
        calls(&stepped, "MMIO_RGUARD_UNMAP"),
    );
    assert!(m1 > 0 && m2 > m1, "RGUARD_MAP calls: {m1}, then {m2}\n{t}");
    assert!(u2 > u1, "RGUARD_UNMAP calls: {u1}, then {u2}\n{t}");
    eprintln!(
        "RGUARD_MAP {m1} -> {m2}, RGUARD_UNMAP {u1} -> {u2}; {} verdicts equal",
        a.len()
    );
}

/// Under `range-max=1` each range call of a run of N granules is followed by the next one
/// exactly where hypmodel stopped (base + x1 * granule) for the rest (N - x1), until the
/// run is done: hypmodel's trace of `guard: range` and `ioremap: spanning`, which register
/// and release runs of 2.
#[test]
fn range_max_1_resumes_where_the_hypervisor_stopped() {
    let out = model(
        "android16,range-max=1,trace",
        "only=guard:range,ioremap:spanning output=uart",
    );
    let t = out.transcript();
    assert_eq!(out.status, 0, "{t}");
    for check in ["guard: range", "ioremap: spanning"] {
        assert_eq!(out.result(check).map(|r| r.kind), Some(Kind::Pass), "{t}");
    }
    // `hvc MMIO_RGUARD_MAP(0xa000000, 0x2, 0x0) fid=0xc600000a -> x0=0x0 x1=0x1`
    let hex = |w: &str| u64::from_str_radix(w.trim().trim_start_matches("0x"), 16).unwrap();
    let range_calls: Vec<(String, [u64; 5])> = out
        .report
        .lines
        .iter()
        .filter_map(|l| l.strip_prefix("hypmodel: trace cpu0 hvc MMIO_RGUARD_"))
        .map(|l| {
            let (op, rest) = l.split_once('(').unwrap();
            let (args, rest) = rest.split_once(')').unwrap();
            let a: Vec<u64> = args.split(',').map(hex).collect();
            let x0 = hex(rest.split("x0=").nth(1).unwrap().split(' ').next().unwrap());
            let x1 = hex(rest.split("x1=").nth(1).unwrap());
            (op.to_string(), [a[0], a[1], a[2], x0, x1])
        })
        .filter(|(_, c)| c[2] == 0)
        .collect();
    let mut expect: Option<(String, u64, u64)> = None;
    let mut resumed = 0;
    for (op, [base, count, _, x0, x1]) in &range_calls {
        assert_eq!(
            (*x0, *x1),
            (0, 1),
            "{op}({base:#x}, {count}): one granule\n{t}"
        );
        if let Some(e) = expect.take() {
            assert_eq!(
                (op.clone(), *base, *count),
                e,
                "the call after a stop\n{range_calls:#x?}\n{t}"
            );
            resumed += 1;
        }
        if *count > 1 {
            expect = Some((op.clone(), base + 0x1000, count - 1));
        }
    }
    assert!(expect.is_none(), "a run left unfinished\n{t}");
    // Each check maps and unmaps a run of 2: four resumed calls at least.
    assert!(
        resumed >= 4,
        "{resumed} resumed calls\n{range_calls:#x?}\n{t}"
    );
}

/// What PASS, KFAIL and SKIP lines say is part of the result: the answer the check saw, the
/// CPU it ran on, the reason it could not run.
#[test]
fn result_lines_say_what_was_seen() {
    let detail = |out: &Outcome, name: &str, kind: Kind| -> String {
        let r = out
            .result(name)
            .unwrap_or_else(|| panic!("no {name}\n{}", out.transcript()));
        assert_eq!(r.kind, kind, "{name}\n{}", out.transcript());
        r.detail.clone().unwrap_or_default()
    };
    let out = model("android14", "only=guard:unmap-unmapped,guard:other-cpu");
    assert!(detail(&out, "guard: unmap-unmapped", Kind::Pass)
        .contains(") never mapped = INVALID_PARAMETER"));
    assert!(detail(&out, "guard: other-cpu", Kind::Pass).contains("forwarded on CPU 1 (MPIDR 0x1)"));
    let out = model("android13", "only=guard:unmap-unmapped");
    assert_eq!(
        detail(&out, "guard: unmap-unmapped", Kind::KFail),
        "android13 returns 0 when UNMAP fails"
    );
    // Every page state of the access matrix, each on the page it is meant for: 13 forms
    // on each page, and on the neighbour granule one more (the ldp that straddles it and
    // the registered granule).
    let out = model("android14", "only=guard:access-forms");
    assert_eq!(
        detail(&out, "guard: access-forms", Kind::Pass),
        "79 accesses on 6 page states as profile android14 says"
    );
    for state in [
        "never registered: ",
        "registered: ",
        "after UNMAP: ",
        "the granule after a registered one: virtio-mmio 0xa001000: 14 of 14 accesses",
        "registered on CPU 0, from CPU 1: ",
        "never registered, from CPU 1: ",
    ] {
        assert!(
            out.report
                .info
                .iter()
                .any(|l| l.starts_with(&format!("guard: access-forms: {state}"))),
            "{state}\n{}",
            out.transcript()
        );
    }
    // With a 64 KiB granule the neighbour state is on the PCI configuration page after
    // the granule of the first one: the granule before holds a probe target. (The PL031's
    // granule follows the console's, which holds none, and is not the neighbour state's.)
    // 11 forms (no stp and no 64-bit str on configuration space: they would write the
    // command register) and the ldp across the boundary.
    let out = model("android14,granule=64k", "only=guard:access-forms");
    assert_eq!(
        detail(&out, "guard: access-forms", Kind::Pass),
        "77 accesses on 6 page states as profile android14 says"
    );
    let state = "guard: access-forms: the granule after a registered one: pci-config 0x4010010000: 12 of 12 accesses";
    assert!(
        out.report.info.iter().any(|l| l.starts_with(state)),
        "{state}\n{}",
        out.transcript()
    );
    // Under kvm the VMM decides what an access without a syndrome does (it may stop the
    // VM): no pair is tried on any state, not even the ldp across the neighbour boundary.
    let out = model("kvm", "only=guard:access-forms");
    assert_eq!(
        detail(&out, "guard: access-forms", Kind::Pass),
        "55 accesses on 5 page states as profile kvm says"
    );
    let state = "guard: access-forms: the granule after a registered one: virtio-mmio 0xa001000: 11 of 11 accesses";
    assert!(
        out.report.info.iter().any(|l| l.starts_with(state)),
        "{state}\n{}",
        out.transcript()
    );
    let out = model("android14", "only=guard:widths");
    assert!(detail(&out, "guard: widths", Kind::Pass).starts_with("pl031 0x9010fe0: "));
    let one = run(&[
        "--hyp",
        "model:android14",
        "--append",
        "only=guard:other-cpu",
    ]);
    assert!(
        detail(&one, "guard: other-cpu", Kind::Skip).contains("has 1 CPU: needs -smp 2 or more")
    );
}

/// Console incidents a check reported are not reported again at the end of the run (two
/// here: the UART's registration and the virtio-console's, both dropped by a second ENROLL).
#[test]
fn reported_console_incidents_are_not_reported_twice() {
    let out = model("android14,mutant=enroll-resets", "");
    let t = out.transcript();
    let d = out
        .result("guard: console")
        .and_then(|r| r.detail.clone())
        .unwrap_or_default();
    assert!(
        d.contains("the console's window aborted") && d.contains("virtio-console"),
        "{d}\n{t}"
    );
    assert!(
        !out.report
            .lines
            .iter()
            .any(|l| l.contains("console incident(s) no check reported")),
        "{t}"
    );
}

/// Undocumented answers that come after `guard: returns` ran still fail the run, named at
/// its end (`map-returns-one`: the MAPs of the later checks answer 1).
#[test]
fn undocumented_answers_after_guard_returns_fail_the_run() {
    let out = model("android14,mutant=map-returns-one", "");
    let t = out.transcript();
    assert!(
        out.report.lines.iter().any(|l| l
            .contains("undocumented answer(s) after guard: returns ran: MMIO_GUARD_MAP(")
            && l.ends_with("answered x0=0x1 x1=0x0: failing the run")),
        "{t}"
    );
    assert_ne!(out.status, 0, "{t}");
}

/// `guard: returns` names the first eight undocumented answers and counts the rest
/// (`map-returns-one`: every MAP since boot answers 1), and with fewer names them all and
/// counts nothing more (`enroll-twice-refused`: the second ENROLL of `guard: enroll` and
/// the check's own); answers it reported are not reported again at the end of the run.
#[test]
fn returns_names_eight_answers_and_counts_the_rest() {
    let out = model("android14,mutant=map-returns-one", "only=guard:returns");
    let t = out.transcript();
    let r = out.result("guard: returns").unwrap();
    assert_eq!(r.kind, Kind::Fail, "{t}");
    let d = r.detail.as_deref().unwrap_or_default();
    assert_eq!(d.matches("MMIO_GUARD_MAP(").count(), 8, "{d}");
    let more: u64 = d
        .rsplit_once("; ")
        .and_then(|(_, m)| m.strip_suffix(" more"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no '; N more' at the end: {d}"));
    assert!(more > 0, "{d}");

    let out = model(
        "android14,mutant=enroll-twice-refused",
        "only=guard:enroll,guard:returns",
    );
    let t = out.transcript();
    let r = out.result("guard: returns").unwrap();
    assert_eq!(r.kind, Kind::Fail, "{t}");
    let d = r.detail.as_deref().unwrap_or_default();
    assert_eq!(
        d,
        ["MMIO_GUARD_ENROLL(0x0, 0x0, 0x0) answered x0=0xfffffffffffffffd x1=0x0"; 2].join("; "),
        "{t}"
    );
    assert!(
        !out.report
            .lines
            .iter()
            .any(|l| l.contains("after guard: returns ran")),
        "{t}"
    );
}

/// Alone, `guard: returns` makes one call of each kind itself (ENROLL, MAP and UNMAP twice,
/// MEM_SHARE and MEM_UNSHARE) and judges them with the boot's: the count on its line is the
/// number of guard and memshare calls hypmodel answered.
#[test]
fn returns_alone_judges_a_call_of_each_kind() {
    // output=uart: no virtio set-up at boot, whose pool would share memory.
    let out = model("android14", "only=guard:returns output=uart");
    let t = out.transcript();
    let r = out.result("guard: returns").unwrap();
    assert_eq!(r.kind, Kind::Pass, "{t}");
    let d = r.detail.as_deref().unwrap_or_default();
    let judged: u64 = d
        .strip_suffix(" guard and memshare calls so far, every answer documented for its call")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{d}"));
    let kinds = [
        "MMIO_GUARD_ENROLL",
        "MMIO_GUARD_MAP",
        "MMIO_GUARD_UNMAP",
        "MMIO_RGUARD_MAP",
        "MMIO_RGUARD_UNMAP",
        "MEM_SHARE",
        "MEM_UNSHARE",
    ];
    let answered: u64 = kinds.iter().map(|k| calls(&out, k)).sum();
    assert_eq!(judged, answered, "{t}");
    // The boot makes one ENROLL and the console's MAP; the rest are the check's own.
    for (k, n) in [
        ("MMIO_GUARD_ENROLL", 2),
        ("MMIO_GUARD_MAP", 3),
        ("MMIO_GUARD_UNMAP", 2),
        ("MEM_SHARE", 1),
        ("MEM_UNSHARE", 1),
    ] {
        assert_eq!(calls(&out, k), n, "{k}\n{t}");
    }
}

/// `guard: refcount` alone, with the console's window the only one held before it (no
/// virtio set-up at boot): two windows of one granule cost one MAP and one UNMAP, as the
/// check says and hypmodel counts (the console's MAP is the other).
#[test]
fn refcount_alone_makes_one_map_and_one_unmap() {
    let out = model("android14", "only=guard:refcount output=uart");
    let t = out.transcript();
    let r = out.result("guard: refcount").unwrap();
    assert_eq!(r.kind, Kind::Pass, "{t}");
    assert_eq!(
        r.detail.as_deref().unwrap_or_default(),
        "windows 0xa000000 and 0xa000200: 1 MAP, other kept forwarded, 1 UNMAP",
        "{t}"
    );
    assert_eq!(
        (
            calls(&out, "MMIO_GUARD_MAP"),
            calls(&out, "MMIO_GUARD_UNMAP")
        ),
        (2, 1),
        "{t}"
    );
}
