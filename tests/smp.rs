//! `guard: other-cpu` and the secondary-CPU bring-up under it: a registration made on
//! CPU 0 holds on CPU 1 under hypmodel, the `per-cpu-guard` mutant is caught by name, and
//! machines without a second CPU or without a guard skip with a reason.

mod common;
use common::*;
use ioguard_runner::{Kind, Outcome};

const CHECK: &str = "guard: other-cpu";

fn result_of(out: &Outcome) -> (Kind, String) {
    let r = out
        .result(CHECK)
        .unwrap_or_else(|| panic!("no result for {CHECK}:\n{}", out.transcript()));
    (r.kind, r.detail.clone().unwrap_or_default())
}

#[test]
fn registration_on_cpu0_holds_on_cpu1() {
    let out = run(&[
        "--smp",
        "2",
        "--hyp",
        "model:android14",
        "--append",
        "only=guard:other-cpu trace",
    ]);
    let t = out.transcript();
    assert!(!out.timed_out, "{t}");
    assert_eq!(out.status, 0, "{t}");
    let (kind, detail) = result_of(&out);
    assert_eq!(kind, Kind::Pass, "{t}");
    // CPU 1 really ran the accesses: its own MPIDR_EL1 (Aff0 = 1, RES1 bit 31) came back.
    assert!(detail.contains("forwarded on CPU 1"), "{detail}");
    assert!(detail.contains("MPIDR_EL1 there 0x80000001"), "{detail}");
    assert!(detail.contains("ESR=0x96000010"), "{detail}");
    // Brought up twice: CPU_ON, the job, CPU_OFF, AFFINITY_INFO = OFF, and again.
    let lines = |pat: &str| out.report.lines.iter().filter(|l| l.contains(pat)).count();
    assert_eq!(
        lines("trace: hvc PSCI_CPU_ON(0xc4000003) x1=0x1 "),
        2,
        "{t}"
    );
    assert_eq!(
        lines("trace: cpu slot 1 (MPIDR 0x1): up, job done"),
        2,
        "{t}"
    );
    // The console stayed healthy: secondaries never print.
    assert!(!t.contains("continuing on the semihosting console"), "{t}");
}

#[test]
fn per_cpu_registration_is_caught_by_name() {
    let out = run(&[
        "--smp",
        "2",
        "--hyp",
        "model:android14,mutant=per-cpu-guard",
        "--append",
        "only=guard:other-cpu",
    ]);
    let t = out.transcript();
    assert!(!out.timed_out, "{t}");
    assert_eq!(out.status, 1, "{t}");
    let (kind, detail) = result_of(&out);
    assert_eq!(kind, Kind::Fail, "{t}");
    assert!(
        detail.contains("a page registered on CPU 0 aborts on CPU 1"),
        "{detail}"
    );
    assert!(detail.contains("per CPU"), "{detail}");
}

#[test]
fn every_guarded_profile_passes_in_a_full_run_with_two_cpus() {
    for spec in [
        "android13",
        "android14",
        "android16,granule=16k",
        "upstream,granule=64k",
    ] {
        let hyp = format!("model:{spec}");
        let out = run(&["--smp", "2", "--hyp", &hyp]);
        let t = out.transcript();
        assert!(!out.timed_out, "{spec}: {t}");
        assert_eq!(out.status, 0, "{spec}: {t}");
        assert_eq!(result_of(&out).0, Kind::Pass, "{spec}: {t}");
    }
}

#[test]
fn one_cpu_skips_with_the_reason() {
    let out = run(&[
        "--smp",
        "1",
        "--hyp",
        "model:android14",
        "--append",
        "only=guard:other-cpu",
    ]);
    let t = out.transcript();
    assert_eq!(out.status, 0, "{t}");
    let (kind, detail) = result_of(&out);
    assert_eq!(kind, Kind::Skip, "{t}");
    assert!(detail.contains("needs -smp 2 or more"), "{detail}");
}

#[test]
fn no_guard_skips_and_the_run_passes() {
    for extra in [&[][..], &["--", "-machine", "virtualization=on"][..]] {
        let mut args = vec!["--smp", "4"];
        args.extend_from_slice(extra);
        let out = run(&args);
        let t = out.transcript();
        assert!(!out.timed_out, "{t}");
        assert_eq!(out.status, 0, "{t}");
        assert_eq!(header(&out, "cpus"), "4");
        let (kind, detail) = result_of(&out);
        assert_eq!(kind, Kind::Skip, "{t}");
        assert!(
            detail.contains("profile none has no MMIO guard"),
            "{detail}"
        );
    }
}
