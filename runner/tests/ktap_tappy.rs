//! `--ktap` read back by a TAP parser we did not write: tappy (`tap.py` from PyPI), which
//! the test installs into a venv under the target directory. Real boots of the real Image
//! (plain QEMU, hypmodel's android13 for its KFAILs) and a stand-in guest that hangs (for
//! the TIMEOUT and ERROR directives). Needs qemu-system-aarch64, python3 with venv, and
//! PyPI the first time.

use ioguard_runner::{boot, check_name, ktap_name, scripted_image, target_dir, Kind, Outcome};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The tappy release the test pins.
const TAPPY: &str = "tap.py==3.2.1";

/// The venv holding tappy (made once, reused across runs).
fn venv() -> PathBuf {
    target_dir().join("tappy-venv")
}

fn install_command() -> String {
    let v = venv();
    format!(
        "apt-get install -y --no-install-recommends python3-venv && python3 -m venv {} && {}/bin/pip install '{TAPPY}'",
        v.display(),
        v.display()
    )
}

/// The venv's python with tappy importable; fails with the command that installs it.
fn tappy_python() -> PathBuf {
    static ONCE: Mutex<()> = Mutex::new(());
    let _g = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    let py = venv().join("bin").join("python");
    let has_tap = |py: &Path| {
        Command::new(py)
            .args(["-c", "import tap.parser"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_tap(&py) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv())
            .status()
            .is_ok_and(|s| s.success());
        let pip = venv().join("bin").join("pip");
        let installed = made
            && Command::new(&pip)
                .args(["install", "--quiet", TAPPY])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            installed && has_tap(&py),
            "tappy (the independent TAP parser) is not installed; install it with:\n  {}",
            install_command()
        );
    }
    py
}

/// What tappy saw in a file.
#[derive(Debug, Default)]
struct Parsed {
    plan: Option<usize>,
    /// (ok, number, description, skip, todo, directive text)
    tests: Vec<(bool, usize, String, bool, bool, String)>,
    diagnostics: usize,
}

/// Parse `file` with tappy; one tab-separated line per TAP line comes back.
fn tappy(file: &Path) -> Parsed {
    let script = r#"
import sys
from tap.parser import Parser
for line in Parser().parse_file(sys.argv[1]):
    c = line.category
    if c == "plan":
        print("plan", line.expected_tests, sep="\t")
    elif c == "test":
        d = line.directive.text if line.directive else ""
        print("test", int(line.ok), line.number, line.description, int(line.skip), int(line.todo), d, sep="\t")
    else:
        print(c)
"#;
    let out = Command::new(tappy_python())
        .args(["-c", script])
        .arg(file)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut p = Parsed::default();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let w: Vec<&str> = line.split('\t').collect();
        match w[0] {
            "plan" => p.plan = Some(w[1].parse().unwrap()),
            "test" => p.tests.push((
                w[1] == "1",
                w[2].parse().unwrap(),
                w[3].to_string(),
                w[4] == "1",
                w[5] == "1",
                w[6].to_string(),
            )),
            "diagnostic" => p.diagnostics += 1,
            _ => {}
        }
    }
    p
}

fn scratch(name: &str) -> PathBuf {
    let d = target_dir().join("ktap-tests");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Boot with `--ktap` and have tappy read the file.
fn boot_ktap(name: &str, args: &[&str]) -> (Outcome, Parsed, String) {
    let file = scratch(name);
    let f = file.to_str().unwrap();
    let mut all = vec!["--timeout", "60", "--ktap", f];
    all.extend_from_slice(args);
    let out = boot(&all).expect("the run happened");
    let text = std::fs::read_to_string(&file).unwrap();
    let parsed = tappy(&file);
    (out, parsed, text)
}

/// Every result line is one tappy test, in order, with its number, its name (which maps
/// back to the check), ok/not ok, and its directive.
fn assert_same_results(out: &Outcome, p: &Parsed, text: &str) {
    assert_eq!(p.plan, Some(out.results().len()), "{text}");
    assert_eq!(p.tests.len(), out.results().len(), "{text}");
    for (i, (r, t)) in out.results().iter().zip(&p.tests).enumerate() {
        let (ok, num, desc, skip, todo, dir) = t;
        assert_eq!(*num, i + 1, "{text}");
        assert_eq!(*desc, ktap_name(&r.name()), "{text}");
        assert_eq!(check_name(desc), r.name(), "{text}");
        assert_eq!(*ok, !r.kind.is_unexpected(), "{}: {text}", r.name());
        assert_eq!(*skip, r.kind == Kind::Skip, "{}: {dir}", r.name());
        assert!(!todo, "{}: {dir}", r.name());
        let want = match r.kind {
            Kind::Skip => format!("SKIP {}", r.detail.clone().unwrap_or_default()),
            Kind::KFail => format!("XFAIL {}", r.detail.clone().unwrap_or_default()),
            _ => String::new(),
        };
        assert_eq!(dir.trim_end(), want.trim_end(), "{}", r.name());
    }
}

#[test]
fn a_plain_run_reads_back_in_tappy() {
    let (out, p, text) = boot_ktap("plain.ktap", &[]);
    assert_eq!(out.status, 0, "{}", out.transcript());
    assert!(text.starts_with("KTAP version 1\n# ioguard "), "{text}");
    assert_same_results(&out, &p, &text);
    let skips = p.tests.iter().filter(|t| t.3).count();
    assert_eq!(skips, out.report.count(Kind::Skip));
    assert!(skips > 0 && p.tests.iter().all(|t| t.0), "{text}");
    // The header is a diagnostic line, not a test.
    assert_eq!(p.diagnostics, 1, "{text}");
}

#[test]
fn a_kfail_is_an_xfail_that_tappy_counts_as_ok() {
    let (out, p, text) = boot_ktap("android13.ktap", &["--hyp", "model:android13"]);
    assert_eq!(out.status, 0, "{}", out.transcript());
    assert_same_results(&out, &p, &text);
    let xfail: Vec<&String> = p
        .tests
        .iter()
        .filter(|t| t.5.starts_with("XFAIL "))
        .map(|t| &t.2)
        .collect();
    assert_eq!(
        xfail,
        ["guard_unmap-unmapped", "guard_unmap-return"],
        "{text}"
    );
    assert!(p.tests.iter().all(|t| t.0), "{text}");
}

#[test]
fn a_hung_run_names_the_running_check_timeout_and_the_rest_error() {
    // A stand-in guest that lists its selection, passes the first check and hangs: the
    // runner's second boot (with `list`) reads the same LIST lines, so it knows which
    // check was running.
    let mut image = scripted_image(
        "ioguard 0.1.0: hypervisor=unknown profile=none\r\nLIST: a: x\r\nLIST: a: y\r\nLIST: b: z\r\nPASS: a: x: fine\r\n",
    );
    image[0x60..0x64].copy_from_slice(&0x1400_0000u32.to_le_bytes()); // hvc -> b .
    let img = scratch("hangs.bin");
    std::fs::write(&img, image).unwrap();
    let (out, p, text) = boot_ktap(
        "hung.ktap",
        &["--image", img.to_str().unwrap(), "--timeout", "2"],
    );
    assert_eq!(out.status, 124, "{}", out.transcript());
    assert_eq!(p.plan, Some(4), "{text}");
    let got: Vec<(bool, &str, &str)> = p
        .tests
        .iter()
        .map(|t| (t.0, t.2.as_str(), t.5.split(' ').next().unwrap_or("")))
        .collect();
    assert_eq!(
        got,
        [
            (true, "a_x", ""),
            (false, "a_y", "TIMEOUT"),
            (false, "b_z", "ERROR"),
            (false, "runner_exit", "TIMEOUT"),
        ],
        "{text}"
    );
    assert!(p.tests[1].5.contains("did not finish"), "{text}");
    assert!(p.tests[2].5.contains("never ran"), "{text}");
}
