//! ioguard on a real upstream pKVM host (`--hyp pkvm`): Debian's arm64 kernel at EL2 under
//! QEMU TCG with `kvm-arm.mode=protected`, running the unchanged image in a VM of
//! ioguard's own VMM (`vmm/`), protected and ordinary, in QEMU's layout and crosvm's, with
//! pKVM in hVHE mode (`-cpu max`) and nVHE mode (`-cpu cortex-a72`). The first run fetches
//! the kernel and busybox (runner/pkvm/fetch.sh): a machine that cannot fails here, it
//! does not skip.

mod common;

use common::{dma_requests, ops_at_once, private_dma_requests, DEFAULT_CHECKS};
use ioguard_runner::{Kind, Outcome};
use std::sync::Mutex;

/// One emulated host at a time: each keeps both cores busy, and its guest's timing-bound
/// checks (polling deadlines) should not depend on how many others run beside it.
static ONE_HOST: Mutex<()> = Mutex::new(());

fn run_host(hyp: &str) -> Outcome {
    run_host_with(hyp, &[])
}

/// `run_host` with more runner options.
fn run_host_with(hyp: &str, more: &[&str]) -> Outcome {
    let _one = ONE_HOST.lock().unwrap_or_else(|e| e.into_inner());
    // The host boots in about 5 s; the guest's run takes about 1 s of that host's time.
    let mut args = vec!["--timeout", "240", "--smp", "2", "--hyp", hyp];
    args.extend_from_slice(more);
    common::run(&args)
}

/// The guard checks that still run without a guard: what every access does there, and
/// the ABI's answers so far.
const GUARDLESS_RUNS: &[&str] = &[
    "guard: widths",
    "guard: no-syndrome",
    "guard: access-forms",
    "guard: returns",
    "guard: console",
];

/// What each default check answers in a protected VM under upstream pKVM (profile `pkvm`),
/// in QEMU's layout.
fn protected(name: &str) -> Kind {
    match name {
        // Upstream answers MEM_SHARE of a device page with an abort at the HVC.
        "memshare: share-mmio" => Kind::KFail,
        // QEMU virt's 32 virtio-mmio slots, 29 of them empty: windows no driver holds.
        "ioremap: windows" => Kind::Pass,
        // No guard to span; no virtio-net.
        "ioremap: spanning" | "virtio: net" => Kind::Skip,
        n if n.starts_with("guard:") && !GUARDLESS_RUNS.contains(&n) => Kind::Skip,
        _ => Kind::Pass,
    }
}

/// What each default check answers in an ordinary VM (profile `kvm`).
fn ordinary(name: &str) -> Kind {
    match name {
        n if n.starts_with("meminfo:") || n.starts_with("memshare:") => Kind::Skip,
        "virtio: dma-shared" | "virtio: pool-unshared" => Kind::Skip,
        // The VMM, not the hypervisor, decides what an access without syndrome does.
        "guard: no-syndrome" | "guard: returns" => Kind::Skip,
        n => protected(n),
    }
}

/// crosvm's layout has virtio-pci only: no empty virtio-mmio window to map.
fn protected_crosvm(name: &str) -> Kind {
    match name {
        "ioremap: windows" => Kind::Skip,
        n => protected(n),
    }
}

fn ordinary_crosvm(name: &str) -> Kind {
    match name {
        "ioremap: windows" => Kind::Skip,
        n => ordinary(n),
    }
}

fn assert_verdicts(out: &Outcome, want: fn(&str) -> Kind) {
    let t = out.transcript();
    assert!(!out.timed_out, "timed out:\n{t}");
    for name in DEFAULT_CHECKS {
        let r = out
            .result(name)
            .unwrap_or_else(|| panic!("no result for {name}:\n{t}"));
        assert_eq!(r.kind, want(name), "{name}: {:?}\n{t}", r.detail);
    }
    assert_eq!(out.status, 0, "status {}:\n{t}", out.status);
    assert_eq!(out.problem, None, "{t}");
}

fn line<'a>(out: &'a Outcome, prefix: &str) -> &'a str {
    out.line_starting(prefix)
        .unwrap_or_else(|| panic!("no line '{prefix}...':\n{}", out.transcript()))
}

fn detail<'a>(out: &'a Outcome, name: &str) -> &'a str {
    out.result(name)
        .unwrap_or_else(|| panic!("no {name}:\n{}", out.transcript()))
        .detail
        .as_deref()
        .unwrap_or("")
}

/// What every protected run must show beyond its verdicts: the profile, plain words on
/// stray accesses, DMA through shared pages, and the VMM's proof that memory the guest did
/// not share stayed private.
fn assert_protected(out: &Outcome, ram: u64) {
    let t = out.transcript();
    assert!(line(out, "vmm: protected VM").contains("type 0x8"), "{t}");
    assert!(detail(out, "smccc: profile").starts_with("pkvm:"), "{t}");
    for name in DEFAULT_CHECKS
        .iter()
        .filter(|n| n.starts_with("guard:") && !GUARDLESS_RUNS.contains(n))
    {
        assert_eq!(
            detail(out, name),
            "profile pkvm has no MMIO guard",
            "{name}"
        );
    }
    assert!(
        detail(out, "control: stray-forwarded")
            .starts_with("profile pkvm has no MMIO guard: a stray access reaches the host"),
        "{t}"
    );
    assert!(
        detail(out, "virtio: dma-shared").contains("nothing shared outside them"),
        "{t}"
    );
    assert!(
        detail(out, "memshare: share-mmio").contains("abort at the HVC"),
        "{t}"
    );
    // The VMM read back a page the guest still shared, and faulted on the Image's first
    // page, which the guest never shared.
    let shared = line(out, "vmm: shared page 0x");
    assert!(shared.ends_with(": read ok"), "{t}");
    assert_eq!(
        line(out, "vmm: private page 0x"),
        format!("vmm: private page {ram:#x}: read faulted (SIGSEGV)"),
        "{t}"
    );
    // The DMA the VMM saw went through the pages the guest shared: its pool.
    let ipa = u64::from_str_radix(
        shared
            .trim_start_matches("vmm: shared page 0x")
            .trim_end_matches(": read ok"),
        16,
    )
    .unwrap();
    assert!((ram..ram + (256 << 20)).contains(&ipa), "{t}");
}

fn assert_host(out: &Outcome, mode: &str) {
    let t = out.transcript();
    assert!(
        line(out, "pkvm-host: kernel 7.")
            .ends_with(&format!("Protected {mode} mode initialized successfully")),
        "{t}"
    );
    assert_eq!(
        line(out, "pkvm-host: vmm exit status "),
        "pkvm-host: vmm exit status 0"
    );
    assert!(
        line(out, "vmm: exits: mmio=").contains("system_event=1"),
        "{t}"
    );
}

#[test]
fn protected_vm_under_hvhe_pkvm() {
    let out = run_host("pkvm:protected,cpu=max");
    assert_host(&out, "hVHE");
    assert_verdicts(&out, protected);
    assert_protected(&out, 0x4000_0000);
    assert!(line(&out, "ioguard 0.1.0: ").contains("console=pl011@0x9000000"));
}

#[test]
fn ordinary_vm_under_nvhe_pkvm() {
    let out = run_host("pkvm:ordinary,cpu=cortex-a72");
    assert_host(&out, "nVHE");
    assert_verdicts(&out, ordinary);
    let t = out.transcript();
    assert!(line(&out, "vmm: ordinary VM").contains("type 0x28"), "{t}");
    assert!(detail(&out, "smccc: profile").starts_with("kvm:"), "{t}");
    assert!(
        detail(&out, "control: stray-forwarded")
            .starts_with("profile kvm has no MMIO guard: a stray access reaches the host"),
        "{t}"
    );
    // Nothing private to prove in an ordinary VM.
    assert!(out.line_starting("vmm: private page").is_none(), "{t}");
}

/// The same image, unchanged, in crosvm's layout: RAM at 0x8000_0000, the 16550 at 0x3f8,
/// crosvm's PL030 (known only by its periphid) as the probe target, a restricted DMA pool.
#[test]
fn protected_vm_in_crosvms_layout_under_nvhe_pkvm() {
    let out = run_host("pkvm:protected,layout=crosvm,cpu=cortex-a72");
    assert_host(&out, "nVHE");
    assert_verdicts(&out, protected_crosvm);
    assert_protected(&out, 0x8000_0000);
    let t = out.transcript();
    let header = line(&out, "ioguard 0.1.0: ");
    assert!(header.contains("console=ns16550a@0x3f8"), "{t}");
    assert!(header.contains("load=0x80000000"), "{t}");
    assert!(
        detail(&out, "control: stray-forwarded").contains("unregistered pl030 page 0x2000"),
        "{t}"
    );
    assert!(
        out.lines
            .iter()
            .any(|l| l.starts_with("INFO: virtio: discovered: DMA pool")
                && l.contains("restricted_dma_reserved")),
        "{t}"
    );
    assert_virtio_pci(&out);
}

/// crosvm's virtio: the three devices as virtio-pci functions 00:01.0.. behind the CAM,
/// whose configuration pages the scan registered, and no virtio-mmio.
fn assert_virtio_pci(out: &Outcome) {
    let t = out.transcript();
    for (at, kind) in [
        ("00:01.0", "blk"),
        ("00:02.0", "rng"),
        ("00:03.0", "console"),
    ] {
        let want = format!("INFO: virtio: discovered: virtio-pci {at}: {kind} driven");
        assert!(out.lines.iter().any(|l| l == &want), "{want}\n{t}");
    }
    assert!(
        detail(out, "virtio: discovered").ends_with("; 0 empty virtio-mmio windows"),
        "{t}"
    );
    assert!(
        detail(out, "virtio: registered")
            .ends_with("; 16 PCI configuration pages likewise during the scan"),
        "{t}"
    );
    assert!(
        line(out, "vmm: exits: mmio=").contains("pci-config="),
        "{t}"
    );
}

#[test]
fn ordinary_vm_in_crosvms_layout_under_hvhe_pkvm() {
    let out = run_host("pkvm:ordinary,layout=crosvm");
    assert_host(&out, "hVHE");
    assert_verdicts(&out, ordinary_crosvm);
    assert!(detail(&out, "smccc: profile").starts_with("kvm:"));
    assert_virtio_pci(&out);
}

/// What each default check answers under Debian's QEMU with KVM inside the host: an
/// ordinary VM on QEMU's own `virt`, whose 32 virtio-mmio slots leave windows no driver
/// holds and whose two NICs share a hub.
fn qemu_kvm(name: &str) -> Kind {
    match name {
        "virtio: net" => Kind::Pass,
        n => ordinary(n),
    }
}

/// The card's "QEMU with pKVM": Debian's arm64 `qemu-system-aarch64 -accel kvm` inside
/// the pKVM host runs the image as an ordinary VM.
#[test]
fn qemu_with_kvm_inside_the_pkvm_host() {
    let out = run_host("pkvm:qemu");
    assert_verdicts(&out, qemu_kvm);
    let t = out.transcript();
    assert!(
        line(&out, "pkvm-host: kernel 7.")
            .ends_with("Protected hVHE mode initialized successfully"),
        "{t}"
    );
    assert_eq!(
        line(&out, "pkvm-host: qemu exit status "),
        "pkvm-host: qemu exit status 0"
    );
    assert!(detail(&out, "smccc: profile").starts_with("kvm:"), "{t}");
    assert!(
        line(&out, "ioguard 0.1.0: ").contains("hypervisor=kvm"),
        "{t}"
    );
    // Not the VMM: QEMU's own tree.
    assert!(out.line_starting("vmm: ").is_none(), "{t}");
    assert!(
        out.lines
            .iter()
            .any(|l| l.contains("model 'linux,dummy-virt'")),
        "{t}"
    );
}

/// `fuzz=APPEND` in a protected VM on upstream pKVM: every invariant held, and the only
/// unexpected answers were upstream's known one (MEM_SHARE of a device page aborts at the
/// HVC), so the run is a KFAIL, as the suite's `share-mmio` is. Returns the run and the
/// result's detail.
fn fuzz_in_a_protected_vm(append: &str) -> (Outcome, String) {
    let out = run_host_with("pkvm", &["--append", append]);
    let t = out.transcript();
    assert_host(&out, "hVHE");
    let r = out
        .result("fuzz: run")
        .unwrap_or_else(|| panic!("no fuzz: run:\n{t}"));
    assert_eq!(r.kind, Kind::KFail, "{t}");
    let d = r.detail.clone().unwrap_or_default();
    assert!(d.contains("every invariant held"), "{t}");
    assert!(d.contains("profile pkvm's known bug"), "{t}");
    assert_eq!(out.status, 0, "{t}");
    (out, d)
}

/// The hypercall fuzzer's fixed budget runs clean in a protected VM on upstream pKVM, its
/// DMA steps served by the VMM's virtio-rng through pages the guest shared.
#[test]
fn the_fuzzers_budget_runs_clean_in_a_protected_vm() {
    let (out, d) = fuzz_in_a_protected_vm("fuzz=1,2000");
    let t = out.transcript();
    assert!(d.starts_with("seed 1: 2000 steps"), "{t}");
    let (made, private, skipped) = dma_requests(&d);
    assert!(
        made >= 20 && private == 0 && skipped >= 20,
        "{made} {private} {skipped}\n{t}"
    );
    // Some of its steps made two ops at once, from both vCPUs.
    assert!(ops_at_once(&d) >= 20, "{t}");
}

/// pKVM keeps a protected VM's private pages from the host: each of the fuzzer's requests
/// into a private page (`private-dma`) goes unanswered in the guest, and the VMM's one
/// load from that page faults (it reports the page and marks the device for a reset), one
/// for one, while requests into shared pages are served.
#[test]
fn private_pages_stay_out_of_the_vmms_reach() {
    let (out, d) = fuzz_in_a_protected_vm("fuzz=1,500,private-dma");
    let t = out.transcript();
    let private = private_dma_requests(&d, &t);
    let refused = out
        .report
        .lines
        .iter()
        .filter(|l| l.starts_with("vmm: virtio-rng@") && l.contains("is private to the guest"))
        .count() as u64;
    assert_eq!(refused, private, "{t}");
}
