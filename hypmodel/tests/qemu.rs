//! QEMU integration tests: boot hypmodel's test guest (and the real `ioguard` guest) under
//! hypmodel in every profile, granule and mutant, and check hypmodel's counters and trace
//! against what the guest saw.
//!
//! Needs `qemu-system-aarch64` (Debian `qemu-system-arm`) and the pinned toolchain's
//! `aarch64-unknown-none` target and `llvm-tools`.

use ioguard_runner::{
    boot_with, build_bin_image, build_hypmodel, Hypmodel, Launcher, Options, Outcome,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// hypmodel's test guest as a raw Image (hypmodel itself is built by the runner's launcher).
fn testguest() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        build_hypmodel()
            .and_then(|_| build_bin_image("hypmodel", "testguest"))
            .unwrap_or_else(|e| panic!("building hypmodel for aarch64-unknown-none failed:\n{e}"))
    })
}

/// Boots `guest` under hypmodel with `append` as hypmodel's whole command line, through
/// the runner's hypmodel launcher (the QEMU command line of hypmodel/README.md); returns
/// the console output.
fn qemu(guest: &Path, append: &str, smp: u32, mem: &str) -> String {
    let opts = Options {
        smp,
        mem: mem.to_string(),
        ..Options::default()
    };
    let (text, out) = boot_opts(guest, append, opts);
    if out.timed_out {
        panic!("QEMU did not stop within its timeout ({append}); output:\n{text}");
    }
    text
}

/// Boots `guest` under hypmodel with `append` as hypmodel's whole command line and `opts`
/// (CPU model, extra QEMU arguments...; 60 s timeout unless set); returns the console
/// output and the runner's outcome (QEMU's status, timeout).
fn boot_opts(guest: &Path, append: &str, mut opts: Options) -> (String, Outcome) {
    opts.timeout = opts.timeout.or(Some(Duration::from_secs(60)));
    opts.echo = false;
    let hypmodel = Hypmodel::with_bootargs(append);
    // A fresh machine lacks the bare-metal target and QEMU: the runner installs them.
    let out = hypmodel
        .ready(&opts)
        .and_then(|()| boot_with(&hypmodel, &opts, guest, &mut |_, _| {}))
        .unwrap_or_else(|e| panic!("cannot boot hypmodel: {e}"));
    let text: String = out.lines.iter().map(|l| format!("{l}\n")).collect();
    // Like the console itself: no carriage returns, even inside a line.
    (text.replace('\r', ""), out)
}

/// The real guest (package ioguard) as a raw Image, built once.
fn real_guest() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        ioguard_runner::build_image().unwrap_or_else(|e| {
            panic!(
                "the guest (package ioguard) does not build for aarch64-unknown-none, so it \
                 cannot be booted under hypmodel:\n{e}"
            )
        })
    })
}

fn run_tg(append: &str, smp: u32) -> Run {
    Run::new(qemu(testguest(), append, smp, "512M"))
}

/// One run's output, with the test guest's `TG: key rest` lines and hypmodel's counters.
struct Run {
    out: String,
    tg: BTreeMap<String, String>,
    counters: BTreeMap<String, u64>,
}

impl Run {
    fn new(out: String) -> Run {
        let mut tg = BTreeMap::new();
        let mut counters = BTreeMap::new();
        for l in out.lines() {
            if let Some(rest) = l.strip_prefix("TG: ") {
                let key_end = rest.find([' ', '=']).unwrap_or(rest.len());
                let v = rest[key_end..].trim_start_matches([' ', '=']).to_string();
                // A key printed twice ("memshare ...") keeps both lines, joined.
                tg.entry(rest[..key_end].to_string())
                    .and_modify(|old: &mut String| {
                        old.push_str(" | ");
                        old.push_str(&v);
                    })
                    .or_insert(v);
            }
            let Some(rest) = l.strip_prefix("hypmodel: ") else {
                continue;
            };
            let (group, kvs) = rest.split_once(' ').unwrap_or((rest, ""));
            if !matches!(group, "calls" | "accesses" | "guard" | "memshare" | "dma") {
                continue;
            }
            for kv in kvs.split_whitespace() {
                if let Some((k, v)) = kv.split_once('=') {
                    if let Ok(n) = v.parse() {
                        counters.insert(format!("{group}.{k}"), n);
                    }
                }
            }
        }
        Run { out, tg, counters }
    }

    fn tg(&self, key: &str) -> &str {
        self.tg
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no 'TG: {key}' line in:\n{}", self.out))
    }

    fn has(&self, key: &str, want: &str) {
        let got = self.tg(key);
        assert!(
            got.contains(want),
            "TG: {key}: expected '{want}', got '{got}'\n--- output:\n{}",
            self.out
        );
    }

    /// The line's value starts with `want` (for values such as `0` or `-3`).
    fn is(&self, key: &str, want: &str) {
        let got = self.tg(key);
        assert!(
            got.starts_with(want),
            "TG: {key}: expected '{want}...', got '{got}'\n--- output:\n{}",
            self.out
        );
    }

    fn c(&self, key: &str) -> u64 {
        self.counters.get(key).copied().unwrap_or(0)
    }

    /// A `TG: calls`/`TG: accesses` number.
    fn tg_num(&self, line: &str, key: &str) -> u64 {
        let l = self.tg(line);
        l.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}= in 'TG: {line} {l}'"))
    }

    fn done(&self) {
        assert!(
            self.tg.contains_key("done"),
            "the test guest did not finish:\n{}",
            self.out
        );
        assert!(
            self.out.contains("hypmodel: end"),
            "no hypmodel report:\n{}",
            self.out
        );
    }

    /// hypmodel's counters agree with what the test guest did.
    fn counters_match_guest(&self) {
        for (tg, hyp) in [
            ("MEMINFO", "HYP_MEMINFO"),
            ("SHARE", "MEM_SHARE"),
            ("UNSHARE", "MEM_UNSHARE"),
            ("INFO", "MMIO_GUARD_INFO"),
            ("ENROLL", "MMIO_GUARD_ENROLL"),
            ("MAP", "MMIO_GUARD_MAP"),
            ("UNMAP", "MMIO_GUARD_UNMAP"),
            ("RMAP", "MMIO_RGUARD_MAP"),
        ] {
            assert_eq!(
                self.tg_num("calls", tg),
                self.c(&format!("calls.{hyp}")),
                "calls of {hyp}\n{}",
                self.out
            );
        }
        let ok = self.tg_num("accesses", "ok");
        let faulted = self.tg_num("accesses", "faulted");
        assert_eq!(
            self.c("accesses.forwarded") - self.c("accesses.console"),
            ok,
            "every access the guest saw succeed was forwarded once\n{}",
            self.out
        );
        assert_eq!(
            self.c("accesses.refused") + self.c("accesses.bus_errors"),
            faulted,
            "every abort the guest saw was injected once\n{}",
            self.out
        );
        assert_eq!(
            self.c("accesses.refused_hypmem"),
            3,
            "three probes of hypmodel's memory\n{}",
            self.out
        );
    }
}

fn einval(profile: &str) -> &'static str {
    if profile == "android13" {
        "4294967293"
    } else {
        "-3"
    }
}

#[test]
fn every_profile_and_granule() {
    for profile in ["android14", "android13", "android16", "upstream", "kvm"] {
        for (gname, g) in [("4k", 4096u64), ("16k", 16384), ("64k", 65536)] {
            let r = run_tg(
                &format!("hypmodel.profile={profile} hypmodel.granule={gname} -- tg {profile}"),
                2,
            );
            r.done();
            r.counters_match_guest();
            assert!(
                r.out
                    .contains(&format!("hypmodel: report profile={profile} ")),
                "{}",
                r.out
            );
            // The environment hypmodel gives every guest.
            r.has("start", "el=1 dtb=0x40000000");
            r.has("dt", "psci-method=hvc");
            r.has("dt", &format!("bootargs=[tg {profile}]"));
            r.has("dt", "memory=0x40000000+0x600000,0x40a00000+0x1f600000");
            r.has("hole", "0x40600000+0x400000");
            r.has(
                "features",
                "uid=0xb66fb428,0xe911c52e,0x564bcaa9,0x743a004d",
            );
            for probe in ["hypmem-read", "hypmem-read-end", "hypmem-write"] {
                r.has(probe, "fault=1 esr=0x96000010");
            }
            r.has("hypmem-read", "far=0x40600000 elr_ok=1 dest_kept=1");
            r.has("cpu1", "on=0 rtc fault=0 value=0x31");
            r.has("cpu1", "off=1");
            r.is("cpu-on-bad", "-2");
            // Accesses without syndrome are refused by every profile.
            r.has(
                "ldp",
                "fault=1 esr=0x96000010 far=0x9010fe0 elr_ok=1 dest_kept=1",
            );
            r.has("read-sx8", "fault=0 value=0xffffffffffffffb1");
            r.has("read8", "fault=0 value=0x31");
            r.has("read64", "fault=0 value=0x1000000031");

            let features = match profile {
                "android14" | "android13" => "0x1fd",
                "android16" => "0xdfd",
                "upstream" => "0x9d",
                _ => "0x1",
            };
            r.is("features", &format!("{features} uid="));
            r.has(
                "features",
                if profile == "android16" {
                    "smccc_version=0x10002"
                } else {
                    "smccc_version=0x10001"
                },
            );

            if profile == "kvm" {
                // No guard: stray accesses reach the device; no pKVM calls.
                r.is("meminfo", "0xffffffffffffffff ");
                r.has("stray-read", "fault=0 value=0x31");
                r.is("stray-write-arrived", "1");
                r.is("map-rtc", "-1");
                r.has("neighbour", "fault=0 value=0x74726976");
                r.has("cpu1", "stray fault=0");
                r.has("memshare", "share=-1 ");
                assert_eq!(r.c("memshare.shared_bytes"), 0);
                continue;
            }
            let info = if profile == "upstream" { u64::MAX } else { g }; // no INFO upstream
            r.is(
                "meminfo",
                &format!(
                    "{g:#x} x1={} info={info:#x}",
                    u8::from(profile == "android16")
                ),
            );
            r.has("granule-last", "fault=0 value=0x74726976");
            r.has(
                "neighbour",
                &format!("{:#x} fault=1 esr=0x96000010", 0x0a00_0000 + g),
            );
            r.has(
                "stray-read",
                "fault=1 esr=0x96000010 far=0x9010fe0 elr_ok=1 dest_kept=1",
            );
            r.has("stray-write", "fault=1 esr=0x96000010 far=0x9010004");
            r.is("map-rtc", "0");
            r.has("registered-read", "fault=0 value=0x31");
            r.is("stray-write-arrived", "0");
            r.has("registered-write", "readback fault=0 value=0x5678");
            r.has("cpu1", "stray fault=1 esr=0x96000010 far=0x9030000");
            r.is(
                "map-misaligned",
                &format!("{} then fault=1", einval(profile)),
            );
            r.is("map-ram", einval(profile));
            r.is("map-outside-ipa", einval(profile));
            r.is("map-hypmem", einval(profile));
            r.has("memshare", "share=0 share-twice=-3 unshare=0 unshare-twice=-3 share-mmio=-3 misaligned=-3 hypmem=-3");
            r.has("memshare", "final=0");
            assert_eq!(
                r.c("memshare.shared_bytes"),
                g,
                "one granule left shared\n{}",
                r.out
            );
            assert_eq!(r.c("memshare.shared_pages"), 1);
            match profile {
                "upstream" => {
                    r.has("pre-enroll-read", "fault=1 esr=0x96000010");
                    r.is("enroll", "-1 uart-map=0");
                    r.is("unmap", "-1 after-unmap fault=0 value=0x31 unmap-again=-1");
                }
                _ => {
                    r.has("pre-enroll-read", "fault=0 value=0x31");
                    r.is("enroll", "0 uart-map=0");
                    r.has("enroll-again", "0 then fault=0 value=0x31");
                }
            }
            match profile {
                "android14" => {
                    r.is("unmap", "0 after-unmap fault=1 esr=0x96000010 far=0x9010fe0");
                    r.has("unmap", "unmap-again=-3");
                    r.is("rguard-map", "-1 pages=0");
                }
                "android13" => r.is("unmap", "-1 after-unmap fault=1 esr=0x96000010 far=0x9010fe0 elr_ok=1 dest_kept=1 unmap-again=0"),
                "android16" => {
                    r.is("unmap", "0 after-unmap fault=0 value=0x31 unmap-again=0");
                    r.is("rguard-map", "0 pages=2");
                    r.has("memshare", "x2=1 -> 0 x1=1");
                }
                _ => {}
            }
            if profile != "android16" {
                r.has("memshare", "x2=1 -> -3");
            }
        }
    }
}

#[test]
fn trace_shows_every_call_and_access_and_keeps_guest_lines_whole() {
    let plain = run_tg("hypmodel.profile=android14", 2);
    let traced = run_tg("hypmodel.profile=android14 hypmodel.trace", 2);
    traced.done();
    // The guest's lines are the same with and without trace: no trace line cut one.
    assert_eq!(
        plain.tg, traced.tg,
        "TG lines differ with trace on:\n{}",
        traced.out
    );
    let lines: Vec<&str> = traced
        .out
        .lines()
        .filter(|l| l.starts_with("hypmodel: trace "))
        .collect();
    let count = |pat: &str| lines.iter().filter(|l| l.contains(pat)).count() as u64;
    assert_eq!(count(" hvc MMIO_GUARD_MAP("), traced.tg_num("calls", "MAP"));
    assert_eq!(count(" hvc MEM_SHARE("), traced.tg_num("calls", "SHARE"));
    assert_eq!(
        count(" dabt ") - count("-> refused") - count("bus error"),
        traced.tg_num("accesses", "ok"),
        "one trace line per forwarded non-console access"
    );
    assert_eq!(
        count("-> refused"),
        traced.tg_num("accesses", "faulted"),
        "one trace line per refused access"
    );
    // The first stray read, exactly as the guest saw it.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("dabt read 4B ipa=0x9010fe0")
                && l.contains(
                    "-> refused (unregistered): injected ESR_EL1=0x96000010 FAR_EL1=0x9010fe0"
                )),
        "{}",
        traced.out
    );
    assert!(lines
        .iter()
        .any(|l| l.contains("dabt read 4B ipa=0x9010fe0 x9") && l.contains("-> forwarded 0x31")));
    assert!(lines
        .iter()
        .any(|l| l.contains("no-syndrome") && l.contains("refused (no-syndrome)")));
    assert!(lines
        .iter()
        .any(|l| l.contains("refused (hypmodel-memory)") && l.contains("FAR_EL1=0x40600000")));
    assert!(lines.iter().any(|l| l.contains("cpu1 up at EL2")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("hypmodel: trace cpu1 ") && l.contains("forwarded 0x31")));
    // Console accesses are counted, not traced one by one.
    assert!(traced.c("accesses.console") > 1000);
    assert!(count("ipa=0x9000") == 0, "console accesses are not traced");
}

/// Runs a mutant and the correct model with the same options.
fn mutant(name: &str, extra: &str, smp: u32) -> (Run, Run) {
    let good = run_tg(&format!("hypmodel.trace {extra}"), smp);
    let bad = run_tg(
        &format!("hypmodel.trace hypmodel.mutant={name} {extra}"),
        smp,
    );
    assert!(bad.out.contains(&format!("mutant={name}")), "{}", bad.out);
    good.done();
    (good, bad)
}

#[test]
fn every_mutant_is_active() {
    let (g, b) = mutant("guard-off", "", 2);
    g.has("stray-read", "fault=1");
    b.has("stray-read", "fault=0 value=0x31");
    b.is("stray-write-arrived", "1");
    b.has("cpu1", "stray fault=0");
    assert!(b.c("accesses.refused") < g.c("accesses.refused"));

    let (g, b) = mutant("silent-drop", "", 2);
    g.has("stray-read", "fault=1");
    b.has("stray-read", "fault=0 value=0x0");
    b.has("stray-write", "fault=0");
    assert!(b.c("accesses.dropped") > 0 && g.c("accesses.dropped") == 0);
    assert!(b.out.contains("-> dropped, reads 0 (mutant silent-drop)"));

    let (g, b) = mutant("wrong-dfsc", "", 2);
    g.has("stray-read", "esr=0x96000010");
    b.has("stray-read", "fault=1 esr=0x96000007 far=0x9010fe0");
    assert!(b.out.contains("injected ESR_EL1=0x96000007") && !g.out.contains("ESR_EL1=0x96000007"));

    let (g, b) = mutant("bad-far", "", 2);
    g.has("stray-read", "far=0x9010fe0");
    b.has("stray-read", "fault=1 esr=0x96000010 far=0x9010000 ");
    assert!(b.out.contains("ipa=0x9010fe0 pc=") && b.out.contains("FAR_EL1=0x9010000\n"));

    // MAP registers nothing: even the console stays refused, so the guest prints nothing
    // after ENROLL while hypmodel counts successful MAPs and no registration. The test
    // guest retries its console's flag register forever: hypmodel ends the run.
    let (g, b) = mutant("map-noop", "", 2);
    assert!(g.c("guard.registered") > 0);
    assert_eq!(b.c("guard.registered"), 0, "{}", b.out);
    assert!(b.c("guard.map_ok") >= 1);
    assert!(
        !b.tg.contains_key("done")
            && b.c("accesses.refused") == 8
            && b.out
                .contains("hypmodel: FAIL: the guest takes the same abort at pc=")
            && b.out
                .contains("(ESR_EL1=0x96000010 FAR_EL1=0x9000018, 8 times in a row on cpu0)"),
        "{}",
        b.out
    );
    assert!(b
        .out
        .contains("hvc MMIO_GUARD_MAP(0x9000000, 0x0, 0x0) fid=0xc6000007 -> x0=0x0"));

    let (g, b) = mutant("map-neighbour", "", 2);
    g.has("neighbour", "0xa001000 fault=1");
    b.has("neighbour", "0xa001000 fault=0 value=0x74726976");

    let (g, b) = mutant("map-accepts-ram", "", 2);
    g.is("map-ram", "-3");
    b.is("map-ram", "0");
    b.is("map-hypmem", "-3"); // never hypmodel's own memory

    let (g, b) = mutant("map-accepts-misaligned", "", 2);
    g.is("map-misaligned", "-3 then fault=1");
    b.is("map-misaligned", "0 then fault=0");

    let (g, b) = mutant("unmap-noop", "", 2);
    g.is("unmap", "0 after-unmap fault=1");
    b.is("unmap", "0 after-unmap fault=0 value=0x31 unmap-again=0");

    let (g, b) = mutant("unmap-inverted", "", 2);
    g.is("unmap", "0 after-unmap fault=1");
    b.is("unmap", "-1 after-unmap fault=1");
    b.has("unmap", "unmap-again=0");

    let (g, b) = mutant("per-cpu-guard", "", 2);
    g.has("cpu1", "rtc fault=0 value=0x31");
    b.has("cpu1", "rtc fault=1 esr=0x96000010 far=0x9010fe0");
    b.has("registered-read", "fault=0 value=0x31");

    let (g, b) = mutant("granule-mismatch", "", 2);
    g.is("meminfo", "0x1000 ");
    b.is("meminfo", "0x4000 x1=0 info=0x4000");
    g.has("granule-last", "0xa000e00 fault=0");
    b.has("granule-last", "0xa003e00 fault=1 esr=0x96000010");

    let (g, b) = mutant("no-syndrome-forward", "", 2);
    g.has("ldp", "fault=1");
    b.has("ldp", "fault=0 value=0x31 value2=0x10");
    assert_eq!(b.c("accesses.emulated"), 1);
    assert!(b
        .out
        .contains("emulated from the instruction (mutant no-syndrome-forward)"));
}

/// The test guest under `enroll-twice-refused` (its second ENROLL answers -3, the first 0,
/// and the registration holds) and `forward-wrong-page` (the registered PL031 is read at
/// 0x9011000, where `virt` has no device: 0 instead of its ID, a write lost; the console
/// still works, so the run ends as ever).
#[test]
fn enroll_twice_refused_and_forward_wrong_page_in_the_test_guest() {
    let (g, b) = mutant("enroll-twice-refused", "", 1);
    g.has("enroll-again", "0 then fault=0 value=0x31");
    b.done();
    b.is("enroll", "0 uart-map=0");
    b.has("enroll-again", "-3 then fault=0 value=0x31");
    assert!(
        b.out.contains(
            "hvc MMIO_GUARD_ENROLL(0x0, 0x0, 0x0) fid=0xc6000006 -> x0=0xfffffffffffffffd"
        ),
        "{}",
        b.out
    );

    let (g, b) = mutant("forward-wrong-page", "", 1);
    g.has("registered-read", "fault=0 value=0x31");
    b.done();
    b.has("stray-read", "fault=1 esr=0x96000010 far=0x9010fe0");
    b.has("registered-read", "fault=0 value=0x0");
    b.has("registered-write", "readback fault=0 value=0x0");
    assert!(
        b.out.contains("ipa=0x9010fe0 ")
            && b.out
                .contains("-> forwarded 0x0 at 0x9011fe0 (mutant forward-wrong-page)"),
        "{}",
        b.out
    );
    assert!(!g.out.contains("forward-wrong-page"));
    assert_eq!(b.c("accesses.bus_errors"), 0, "{}", b.out);
    assert!(b.c("accesses.console") > 0);
}

/// android16's range call as the test guest makes it (RGUARD_MAP of 2 granules of the
/// PL061): whole by default, one granule with `hypmodel.range-max=1` (x1 = 1, the caller
/// must resume), and under `range-x1-zero` success with x1 = 0 and nothing registered.
#[test]
fn range_max_and_range_x1_zero_in_the_test_guest() {
    let a16 = "hypmodel.profile=android16 hypmodel.trace";
    let whole = run_tg(a16, 1);
    whole.done();
    whole.is("rguard-map", "0 pages=2");
    assert!(!whole.out.contains("range_max"), "{}", whole.out);

    let stepped = run_tg(&format!("{a16} hypmodel.range-max=1"), 1);
    stepped.done();
    stepped.is("rguard-map", "0 pages=1");
    assert!(
        stepped.out.contains(" range_max=1\n") && stepped.out.contains("hypmodel: range_max=1\n"),
        "the configuration line and the report say so\n{}",
        stepped.out
    );
    assert!(
        stepped
            .out
            .contains("hvc MMIO_RGUARD_MAP(0x9030000, 0x2, 0x0) fid=0xc600000a -> x0=0x0 x1=0x1"),
        "{}",
        stepped.out
    );
    assert_eq!(
        stepped.c("guard.registered") + 1,
        whole.c("guard.registered"),
        "one granule fewer registered"
    );
    // The rest of the run is the correct model's.
    assert_eq!(stepped.tg("unmap"), whole.tg("unmap"));
    assert_eq!(stepped.tg("memshare"), whole.tg("memshare"));

    let bad = run_tg(&format!("{a16} hypmodel.mutant=range-x1-zero"), 1);
    bad.done();
    bad.is("rguard-map", "0 pages=0");
    assert_eq!(
        bad.c("guard.registered") + 2,
        whole.c("guard.registered"),
        "nothing registered\n{}",
        bad.out
    );
    assert!(bad
        .out
        .contains("hvc MMIO_RGUARD_MAP(0x9030000, 0x2, 0x0) fid=0xc600000a -> x0=0x0 x1=0x0"));
}

#[test]
fn cpu_on_with_four_cpus() {
    let r = run_tg("hypmodel.profile=android16", 4);
    r.done();
    r.counters_match_guest();
    r.has("dt", "cpus=4");
    for i in 1..4 {
        r.has(
            &format!("cpu{i}"),
            "on=0 rtc fault=0 value=0x31 stray fault=1 esr=0x96000010 far=0x9030000",
        );
        r.has(&format!("cpu{i}"), "off=1");
    }
    assert_eq!(r.c("calls.PSCI_CPU_ON"), 4);
    assert_eq!(r.c("calls.PSCI_CPU_OFF"), 3);
    assert!(r.out.contains("cpus=4"));
}

#[test]
fn memory_sizes_and_boot_enrolment() {
    for (mem, second) in [
        ("128M", "0x40a00000+0x7600000"),
        ("2G", "0x40a00000+0x7f600000"),
    ] {
        let r = Run::new(qemu(testguest(), "", 1, mem));
        r.done();
        r.counters_match_guest();
        r.has("dt", &format!("memory=0x40000000+0x600000,{second}"));
        r.has("dt", "cpus=1");
        assert!(!r.tg.contains_key("cpu1"));
    }
    let r = run_tg("hypmodel.enrolled=boot", 1);
    r.done();
    r.has("pre-enroll-read", "fault=1 esr=0x96000010 far=0x9010fe0");
    r.has("stray-read", "fault=1");
}

#[test]
fn bad_options_and_missing_guest_are_reported() {
    let r = run_tg("hypmodel.mutant=guard-of -- x", 1);
    assert!(
        r.out
            .contains("hypmodel: FATAL: bad value in 'hypmodel.mutant=guard-of'"),
        "{}",
        r.out
    );
    assert!(!r.tg.contains_key("start"));
    let r = run_tg("hypmodel.nosuch", 1);
    assert!(
        r.out
            .contains("hypmodel: FATAL: unknown option 'hypmodel.nosuch'"),
        "{}",
        r.out
    );
    // No image at the staging address (an empty file).
    let empty = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hypmodel-empty.bin");
    std::fs::create_dir_all(empty.parent().expect("tmp")).expect("tmp dir");
    std::fs::write(&empty, [0u8; 64]).expect("write");
    let out = qemu(&empty, "", 1, "256M");
    assert!(
        out.contains("hypmodel: FATAL: guest image at 0x41000000: no arm64 Image"),
        "{out}"
    );
}

/// The real guest, built from this workspace, under hypmodel in every profile.
#[test]
fn real_guest_boots_under_hypmodel() {
    let bin = real_guest();
    for profile in ["android14", "android13", "android16", "upstream", "kvm"] {
        let r = Run::new(qemu(
            bin,
            &format!("hypmodel.profile={profile} --"),
            2,
            "512M",
        ));
        assert!(
            r.out.contains("EXIT: STATUS="),
            "the guest did not reach its EXIT line under {profile}:\n{}",
            r.out
        );
        assert!(r.out.contains("SUMMARY:"), "{}", r.out);
        assert!(
            r.out
                .contains(&format!("hypmodel: report profile={profile} ")),
            "{}",
            r.out
        );
        assert!(
            r.out.contains("hypmodel: end"),
            "the guest powered off through hypmodel:\n{}",
            r.out
        );
        assert!(
            r.c("accesses.console") > 0,
            "its console went through hypmodel:\n{}",
            r.out
        );
        assert_eq!(r.c("accesses.refused_hypmem"), 0);
        if profile != "kvm" {
            assert!(
                r.c("calls.HYP_MEMINFO") + r.c("calls.MMIO_GUARD_MAP") > 0,
                "the guest found the pKVM calls of {profile}:\n{}",
                r.out
            );
        }
    }
}

/// Every CPU model QEMU offers with AArch64 and EL2, 40- to 52-bit PA: stage 2 follows
/// ID_AA64MMFR0_EL1.PARange, and the real guest passes under each.
#[test]
fn real_guest_runs_on_every_cpu_model() {
    for (cpu, ipa_bits) in [
        ("cortex-a53", 40),
        ("cortex-a57", 44),
        ("cortex-a72", 44),
        ("cortex-a76", 40),
        ("a64fx", 40),
        ("neoverse-n1", 48),
        ("max", 48),
    ] {
        let opts = Options {
            smp: 2,
            mem: "512M".into(),
            cpu: cpu.into(),
            ..Options::default()
        };
        let (text, out) = boot_opts(real_guest(), "hypmodel.profile=android14 --", opts);
        assert!(!out.timed_out, "{cpu}: timed out\n{text}");
        assert!(
            text.contains(&format!(" ipa_bits={ipa_bits} ")),
            "{cpu}: expected a {ipa_bits}-bit IPA\n{text}"
        );
        assert_eq!(out.status, 0, "{cpu}: the guest failed\n{text}");
        assert!(text.contains("hypmodel: end"), "{cpu}\n{text}");
    }
}

/// A raw Image whose first instructions jump to address 0 (flash, not guest RAM): an
/// instruction abort, whose vector (VBAR_EL1 = 0) aborts again, forever.
fn looping_image() -> PathBuf {
    let mut img = vec![0u8; 0x1000];
    img[0..4].copy_from_slice(&0xd280_0000u32.to_le_bytes()); // mov x0, #0
    img[4..8].copy_from_slice(&0xd61f_0000u32.to_le_bytes()); // br x0
    img[16..24].copy_from_slice(&0x1000u64.to_le_bytes()); // image_size
    img[0x38..0x3c].copy_from_slice(b"ARM\x64");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hypmodel-loop.bin");
    std::fs::create_dir_all(path.parent().expect("tmp")).expect("tmp dir");
    std::fs::write(&path, img).expect("write");
    path
}

#[test]
fn a_guest_stuck_on_one_abort_ends_the_run_with_a_fail() {
    let opts = Options {
        timeout: Some(Duration::from_secs(20)),
        ..Options::default()
    };
    let (text, out) = boot_opts(&looping_image(), "", opts);
    assert!(!out.timed_out, "{text}");
    assert!(
        text.contains(
            "hypmodel: FAIL: the guest takes the same abort at pc=0x200 again and again \
             (ESR_EL1=0x86000010 FAR_EL1=0x200, 8 times in a row on cpu0)"
        ),
        "{text}"
    );
    assert!(text.contains("hypmodel: end"), "the report: {text}");
    assert_eq!(out.qemu_status, Some(1), "semihosting exit 1\n{text}");
    assert_ne!(out.status, 0);
}

#[test]
fn started_at_el3_says_so_and_exits() {
    let opts = Options {
        timeout: Some(Duration::from_secs(20)),
        qemu_args: vec!["-M".into(), "virt,secure=on".into()],
        ..Options::default()
    };
    let (text, out) = boot_opts(testguest(), "", opts);
    assert!(!out.timed_out, "hangs at EL3\n{text}");
    assert!(
        text.contains("hypmodel: FATAL: started at EL3, not EL2") && text.contains("secure=on"),
        "{text}"
    );
    assert_eq!(out.qemu_status, Some(2), "semihosting exit 2\n{text}");
}

/// A tree dumped by QEMU (`-machine dumpdtb=`, 1 MiB) and given back with `-dtb` (QEMU
/// adds about 10 KiB): hypmodel reads it as its own.
#[test]
fn a_dumped_device_tree_given_with_dtb_is_accepted() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hypmodel-dumped.dtb");
    std::fs::create_dir_all(path.parent().expect("tmp")).expect("tmp dir");
    let opts = Options {
        smp: 2,
        mem: "512M".into(),
        ..Options::default()
    };
    ioguard_runner::dump_dtb(&opts, &path).unwrap_or_else(|e| panic!("dumpdtb: {e}"));
    let size = std::fs::metadata(&path).expect("dtb").len();
    assert!(
        size >= 0x10_0000,
        "QEMU dumps its whole 1 MiB tree: {size:#x}"
    );
    let opts = Options {
        qemu_args: vec!["-dtb".into(), path.to_string_lossy().into_owned()],
        ..opts
    };
    let (text, out) = boot_opts(testguest(), "-- tg android14", opts);
    assert!(!out.timed_out, "{text}");
    let r = Run::new(text);
    r.done();
    r.has("dt", "psci-method=hvc");
    r.has("dt", "memory=0x40000000+0x600000,0x40a00000+0x1f600000");
}

/// Chaos seeds under which the real guest is known not to end with a verdict, with the
/// reason (none today). A seed not listed that hangs, or that makes hypmodel panic, fails
/// the test; a listed seed that behaves fails it too, so the list stays true.
const CHAOS_KNOWN_BAD: &[(u64, &str)] = &[];

/// `hypmodel.chaos=SEED` for 50 seeds (odd: android14, even: android16): whatever
/// garbage hypmodel answers, the real guest's run ends with a verdict (its EXIT line, or a
/// hypmodel FAIL/FATAL line and a power-off) within the timeout, and hypmodel never
/// panics. Prints, per seed, how the guest came out of it.
#[test]
fn chaos_every_seed_ends_with_a_verdict() {
    let mut table = Vec::new();
    let mut wrong = Vec::new();
    for seed in 1..=50u64 {
        let profile = if seed % 2 == 1 {
            "android14"
        } else {
            "android16"
        };
        let opts = Options {
            smp: 2,
            mem: "256M".into(),
            timeout: Some(Duration::from_secs(30)),
            ..Options::default()
        };
        let append = format!("hypmodel.profile={profile} hypmodel.chaos={seed} --");
        let (text, out) = boot_opts(real_guest(), &append, opts);
        let exit = text
            .lines()
            .find_map(|l| l.strip_prefix("EXIT: STATUS="))
            .map(str::to_string);
        let hyp_end = text
            .lines()
            .find(|l| l.starts_with("hypmodel: FAIL:") || l.starts_with("hypmodel: FATAL:"));
        let ok = !out.timed_out
            && !text.contains("hypmodel: PANIC")
            && (exit.is_some() || hyp_end.is_some());
        let events = text
            .lines()
            .filter(|l| l.contains(" calls="))
            .find_map(|l| l.strip_prefix("hypmodel: chaos seed="))
            .and_then(|l| l.split_once(' '))
            .map_or("", |(_, e)| e)
            .to_string();
        table.push(format!(
            "seed {seed:2} {profile}: runner status {} EXIT={} {} {events}",
            out.status,
            exit.as_deref().unwrap_or("-"),
            hyp_end.unwrap_or("")
        ));
        let known = CHAOS_KNOWN_BAD.iter().any(|&(s, _)| s == seed);
        if ok == known {
            let last: Vec<&str> = text.lines().rev().take(8).collect();
            wrong.push(format!(
                "seed {seed} ({profile}): {} (timed out: {}); last lines:\n{}",
                if known {
                    "listed as bad but ended with a verdict"
                } else {
                    "no verdict"
                },
                out.timed_out,
                last.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    eprintln!("{}", table.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// The test guest with `-device virtio-rng-device` and `virtio` on its command line: it
/// shares its queue and one buffer, then asks for 16 bytes into the shared buffer and 16
/// into a private one. Returns the run and the rng's window (`virtio-mmio@0x...`).
fn virtio_rng(hypmodel_args: &str) -> (Run, Outcome, String) {
    let (r, out) = boot_virtio("virtio-rng-device", "virtio", hypmodel_args);
    let base = r
        .tg("virtio")
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rng="))
        .unwrap_or_else(|| panic!("no virtio-rng found:\n{}", r.out))
        .to_string();
    r.has("virtio", "version=1");
    (r, out, format!("virtio-mmio@{base}"))
}

/// The test guest with `-device DEVICE` and the word `mode` on its command line.
fn boot_virtio(device: &str, mode: &str, hypmodel_args: &str) -> (Run, Outcome) {
    let opts = Options {
        smp: 1,
        mem: "512M".into(),
        qemu_args: vec!["-device".into(), device.into()],
        ..Options::default()
    };
    let (text, out) = boot_opts(testguest(), &format!("{hypmodel_args} -- {mode}"), opts);
    assert!(!out.timed_out, "{text}");
    let r = Run::new(text);
    r.done();
    (r, out)
}

/// Under a profile with memory sharing, hypmodel walks each notified queue: a request into
/// shared memory reaches the device, one into a private page does not, with a FAIL line
/// that says where, and the run fails. Without memory sharing nothing is judged.
#[test]
fn a_virtio_request_into_private_memory_is_refused() {
    for granule in ["4k", "64k"] {
        let (r, out, win) = virtio_rng(&format!(
            "hypmodel.profile=android14 hypmodel.granule={granule} hypmodel.trace"
        ));
        r.has(
            "virtio",
            &format!("shares={}", if granule == "4k" { 3 } else { 2 }),
        );
        r.has("virtio", "shared buffer=");
        assert!(r.tg("virtio").contains("used=1 len=16 |"), "{}", r.out);
        let private = r
            .tg("virtio")
            .split(" | ")
            .find_map(|l| l.strip_prefix("private buffer="))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{}", r.out));
        r.has(
            "virtio",
            &format!("private buffer={private} notify-fault=0 used=1 "),
        );
        let p = u64::from_str_radix(private.trim_start_matches("0x"), 16).unwrap();
        let fail = format!(
            "hypmodel: FAIL dma: device-writable buffer: queue 0 of {win}: descriptor 1 \
             [{p:#x}, {:#x}) in private page {p:#x}\n",
            p + 16
        );
        assert!(r.out.contains(&fail), "{fail}\n{}", r.out);
        assert!(
            r.out.contains(&format!(
                "hypmodel: trace cpu0 dma notify queue 0 of {win}: avail 0..1: 1 chains, \
                 1 descriptors, all in shared memory -> forwarded\n"
            )),
            "{}",
            r.out
        );
        assert!(
            r.out.contains("-> not performed (dma refused) 0x0\n"),
            "{}",
            r.out
        );
        assert_eq!(
            (r.c("dma.notifies"), r.c("dma.walked"), r.c("dma.private")),
            (2, 2, 1)
        );
        assert!(r.out.contains(
            "hypmodel: FAIL: dma: 1 notifies refused (1 private, 0 malformed), see the \
             'hypmodel: FAIL dma:' lines; the run fails\nhypmodel: end\n"
        ));
        assert_eq!(out.qemu_status, Some(1), "semihosting exit 1\n{}", r.out);
        assert_ne!(out.status, 0);
    }
    // kvm: an ordinary VM, memory is the host's anyway. Counted, not judged.
    let (r, out, _) = virtio_rng("hypmodel.profile=kvm");
    r.has("virtio", "shares=0");
    r.has("virtio", "private buffer=");
    assert!(r.tg("virtio").ends_with("used=2 len=16"), "{}", r.out);
    assert!(r
        .out
        .contains("hypmodel: dma virtio-mmio windows=32 virtio-pci ecam=0x"));
    assert!(r
        .out
        .contains(" judge=off (no memory sharing in this profile)\n"));
    assert_eq!((r.c("dma.notifies"), r.c("dma.walked")), (2, 0));
    assert!(!r.out.contains("FAIL"), "{}", r.out);
    assert_eq!(out.qemu_status, Some(0), "{}", r.out);
}

/// The two DMA mutants against the correct model, with the same guest.
#[test]
fn the_dma_mutants_show_in_a_virtio_request() {
    // share-ignored: every memshare answer is right, but the host never gets the pages:
    // the first request is refused at its descriptor table, and so is the next.
    let (r, out, win) = virtio_rng("hypmodel.profile=android14 hypmodel.mutant=share-ignored");
    r.has("virtio", "shares=3");
    assert!(r.tg("virtio").contains("used=0 len=0 |"), "{}", r.out);
    assert!(
        r.out.contains(&format!(
            "hypmodel: FAIL dma: descriptor table: queue 0 of {win}: descriptor table ["
        )),
        "{}",
        r.out
    );
    assert_eq!((r.c("dma.private"), r.c("memshare.share_ok")), (2, 3));
    assert_eq!(out.qemu_status, Some(1));
    // dma-private-through: the last descriptor of a chain is not checked, and a
    // one-descriptor request is all last: the private buffer reaches the device.
    let (r, out, _) = virtio_rng("hypmodel.profile=android14 hypmodel.mutant=dma-private-through");
    assert!(r.tg("virtio").ends_with("used=2 len=16"), "{}", r.out);
    assert_eq!((r.c("dma.walked"), r.c("dma.private")), (2, 0));
    assert!(!r.out.contains("FAIL"), "{}", r.out);
    assert_eq!(out.qemu_status, Some(0));
}

/// `unshare-misaligned-ok` under the real guest: `memshare: misaligned` FAILs with the
/// words tests/hypmodel.rs expects of it.
#[test]
fn unshare_misaligned_ok_fails_the_real_guests_misaligned_check() {
    let r = Run::new(qemu(
        real_guest(),
        "hypmodel.profile=android14 hypmodel.mutant=unshare-misaligned-ok -- only=memshare:misaligned",
        2,
        "512M",
    ));
    let line = r
        .out
        .lines()
        .find(|l| l.contains("memshare: misaligned"))
        .unwrap_or_else(|| panic!("{}", r.out));
    assert!(
        line.starts_with("FAIL: memshare: misaligned: ")
            && line.contains("MEM_SHARE INVALID_PARAMETER, MEM_UNSHARE SUCCESS;"),
        "{line}"
    );
    let good = Run::new(qemu(
        real_guest(),
        "hypmodel.profile=android14 -- only=memshare:misaligned",
        2,
        "512M",
    ));
    assert!(
        good.out.contains("PASS: memshare: misaligned: "),
        "{}",
        good.out
    );
}

/// The same two requests on a modern virtio-rng behind QEMU's PCIe host bridge: hypmodel
/// finds the function and its structures in config space after the guest placed its BAR,
/// follows the common configuration, and walks the queue at the notify address.
#[test]
fn a_virtio_pci_request_into_private_memory_is_refused() {
    let (r, out) = boot_virtio(
        "virtio-rng-pci",
        "virtio-pci",
        "hypmodel.profile=android14 hypmodel.trace",
    );
    assert!(r
        .out
        .contains("hypmodel: dma virtio-mmio windows=32 virtio-pci ecam=0x"));
    r.has("virtio-pci", "rng=00:01.0");
    r.has("virtio-pci", "status=0xf");
    let lines = r.tg("virtio-pci");
    assert!(lines.contains("used=1 len=16 |"), "{}", r.out);
    let private = lines
        .split(" | ")
        .find_map(|l| l.strip_prefix("private buffer="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{}", r.out));
    assert!(lines.ends_with("used=1 len=0"), "{}", r.out);
    let p = u64::from_str_radix(private.trim_start_matches("0x"), 16).unwrap();
    let fail = format!(
        "hypmodel: FAIL dma: device-writable buffer: queue 0 of virtio-pci@00:01.0: \
         descriptor 1 [{p:#x}, {:#x}) in private page {p:#x}\n",
        p + 16
    );
    assert!(r.out.contains(&fail), "{fail}\n{}", r.out);
    assert!(
        r.out.contains(
            "hypmodel: trace cpu0 dma notify queue 0 of virtio-pci@00:01.0: avail 0..1: \
             1 chains, 1 descriptors, all in shared memory -> forwarded\n"
        ),
        "{}",
        r.out
    );
    assert_eq!(
        (r.c("dma.notifies"), r.c("dma.walked"), r.c("dma.private")),
        (2, 2, 1)
    );
    assert_eq!(out.qemu_status, Some(1), "{}", r.out);
    // Without memory sharing both requests are served.
    let (r, out) = boot_virtio("virtio-rng-pci", "virtio-pci", "hypmodel.profile=kvm");
    assert!(r.tg("virtio-pci").ends_with("used=2 len=16"), "{}", r.out);
    assert_eq!((r.c("dma.notifies"), r.c("dma.walked")), (2, 0));
    assert_eq!(out.qemu_status, Some(0), "{}", r.out);
}
