//! The `ioguard-run` binary's exit status, one per outcome, observed by running it as a
//! real process (with stand-in guests: scripted Images that print given lines, so no
//! guest build is needed). Needs qemu-system-aarch64.

use ioguard_runner::{runner_dir, scripted_image};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ioguard-run");

/// A scratch directory for this test file.
fn scratch() -> PathBuf {
    let d = runner_dir().join("tests").join("exit-status");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A scripted guest that prints `text` and powers off.
fn guest(name: &str, text: &str) -> PathBuf {
    write(name, &scripted_image(text))
}

/// A scripted guest that prints `text` and then spins forever (`hvc #0` at 0x60 replaced
/// by `b .`).
fn spinning(name: &str, text: &str) -> PathBuf {
    let mut bytes = scripted_image(text);
    bytes[0x60..0x64].copy_from_slice(&0x1400_0000u32.to_le_bytes());
    write(name, &bytes)
}

/// What one run of the binary did.
struct Ran {
    status: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Ran {
    fn all(&self) -> String {
        format!("status {}\n{}{}", self.status, self.stdout, self.stderr)
    }
}

fn runner(args: &[&str]) -> Ran {
    runner_with_tmp(args, &std::env::temp_dir())
}

/// [`runner`] with `TMPDIR=tmp`: where it makes the default virtio-blk files.
fn runner_with_tmp(args: &[&str], tmp: &Path) -> Ran {
    runner_with_env(args, &[("TMPDIR", tmp.as_os_str())])
}

/// [`runner`] with these environment variables.
fn runner_with_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Ran {
    let start = Instant::now();
    let out = Command::new(BIN)
        .args(args)
        .env_remove("IOGUARD_RUN_CWD")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("ioguard-run runs");
    Ran {
        status: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

fn boot(image: &Path, extra: &[&str]) -> Ran {
    let mut args = vec!["--image", image.to_str().unwrap(), "--timeout", "30"];
    args.extend_from_slice(extra);
    runner(&args)
}

const PASSING: &str =
    "ioguard 0.1.0: hypervisor=none cpus=1\r\nPASS: a: x\r\nKFAIL: a: y: known\r\n\
                       SUMMARY: 2 tests, 0 unexpected failures, 1 known failures, 0 skipped\r\n\
                       EXIT: STATUS=1\r\n";

/// A machine that cannot reach Debian's archive cannot run `--hyp pkvm`: the run fails
/// with the launcher's status and says why, it is not skipped.
#[test]
fn a_pkvm_host_without_its_kernel_fails_and_says_why() {
    let cache = scratch().join("pkvm-cache-unreachable");
    let _ = std::fs::remove_dir_all(&cache);
    let image = guest("pkvm-nofetch.bin", PASSING);
    let r = runner_with_env(
        &["--image", image.to_str().unwrap(), "--hyp", "pkvm"],
        &[
            ("IOGUARD_CACHE", cache.as_os_str()),
            // Port 9 (discard) on the loopback: nothing listens, the connection is refused.
            (
                "IOGUARD_DEBIAN_MIRROR",
                "http://127.0.0.1:9/debian".as_ref(),
            ),
        ],
    );
    assert_eq!(r.status, 3, "{}", r.all());
    assert!(
        r.stderr.contains("the pKVM host kit could not be fetched")
            && r.stderr.contains(
                "cannot read Debian's arm64 package lists from http://127.0.0.1:9/debian"
            ),
        "{}",
        r.all()
    );
    assert!(!r.stdout.contains("PASS"), "nothing booted:\n{}", r.all());
}

#[test]
fn each_outcome_has_its_own_status() {
    let pass = boot(&guest("pass.bin", PASSING), &[]);
    let fail = boot(
        &guest("fail.bin", "PASS: a: x\nFAIL: a: y: no\nEXIT: STATUS=3\n"),
        &[],
    );
    let fatal = boot(
        &guest("fatal.bin", "ioguard: fatal: no tree\nEXIT: STATUS=5\n"),
        &[],
    );
    let usage = runner(&["--smp", "x"]);
    let launch = boot(&guest("launch.bin", PASSING), &["--qemu", "/bin/false"]);
    let no_exit = boot(
        &guest(
            "noexit.bin",
            "ioguard 0.1.0: cpus=1\nPASS: a: x\nPASS: a: y\n",
        ),
        &[],
    );
    let timeout = boot(&spinning("timeout.bin", ""), &["--timeout", "1.5"]);
    let got = [&pass, &fail, &fatal, &usage, &launch, &no_exit, &timeout].map(|r| r.status);
    assert_eq!(
        got,
        [0, 1, 2, 2, 3, 4, 124],
        "pass, fail, fatal, usage, launch, no EXIT, timeout:\n{}\n{}",
        launch.all(),
        no_exit.all()
    );
    for r in [&pass, &fail, &fatal, &launch, &no_exit] {
        assert!(
            r.took < Duration::from_secs(10),
            "took {:?}\n{}",
            r.took,
            r.all()
        );
    }
}

/// A fresh, empty directory to be one run's `TMPDIR`.
fn empty_tmp(name: &str) -> PathBuf {
    let d = scratch().join(format!("tmp-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn the_default_blk_file_is_gone_after_every_outcome() {
    let pass = guest("cleanup-pass.bin", PASSING);
    let fail = guest(
        "cleanup-fail.bin",
        "PASS: a: x\nFAIL: a: y: no\nEXIT: STATUS=3\n",
    );
    let no_exit = guest("cleanup-noexit.bin", "ioguard 0.1.0: cpus=1\nPASS: a: x\n");
    // Prints nothing, so that no second boot lists the selection.
    let spin = spinning("cleanup-spin.bin", "");
    let cases: [(&str, &Path, &[&str], i32); 8] = [
        ("pass", &pass, &[], 0),
        ("fail", &fail, &[], 1),
        ("both", &pass, &["--virtio-transport", "both"], 0),
        ("qemu-false", &pass, &["--qemu", "/bin/false"], 3),
        ("qemu-refuses", &pass, &["--cpu", "nosuch"], 3),
        ("no-exit", &no_exit, &[], 4),
        ("silence", &spin, &["--silence", "1"], 4),
        ("timeout", &spin, &["--timeout", "1"], 124),
    ];
    for (name, img, extra, status) in cases {
        let tmp = empty_tmp(name);
        let mut args = vec!["--image", img.to_str().unwrap(), "--timeout", "30"];
        args.extend_from_slice(extra);
        let r = runner_with_tmp(&args, &tmp);
        assert_eq!(r.status, status, "{name}:\n{}", r.all());
        // The file was there: the command named it.
        let made = format!("file={}/ioguard-", tmp.display());
        assert!(r.stdout.contains(&made), "{name}: no {made}\n{}", r.all());
        assert_eq!(entries(&tmp), [] as [String; 0], "{name}: left behind");
    }
    // Without default devices there is no file to make.
    let tmp = empty_tmp("none");
    let r = runner_with_tmp(
        &[
            "--image",
            pass.to_str().unwrap(),
            "--virtio-transport",
            "none",
        ],
        &tmp,
    );
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(!r.stdout.contains("-drive"), "{}", r.all());
    assert!(entries(&tmp).is_empty());
}

#[test]
fn launcher_failures_are_3() {
    let img = guest("qemu-refuses.bin", PASSING);
    let img = img.to_str().unwrap();
    let cases: [&[&str]; 5] = [
        &["--qemu", "/bin/false"],
        &["--qemu", "/nonexistent/qemu-system-aarch64"],
        &["--cpu", "nosuch"],
        &["--mem", "64T"],
        &["--", "-dtb", "/nonexistent/ioguard.dtb"],
    ];
    for args in cases {
        let mut full = vec!["--image", img, "--timeout", "30"];
        full.extend_from_slice(args);
        let r = runner(&full);
        assert_eq!(r.status, 3, "{args:?}:\n{}", r.all());
        assert!(r.took < Duration::from_secs(10), "{args:?}: {:?}", r.took);
    }
}

#[test]
fn files_that_are_not_images_are_refused_at_once() {
    let good = scripted_image(PASSING);
    let mut elf = vec![0u8; 4096];
    elf[..4].copy_from_slice(b"\x7fELF");
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("empty.bin", Vec::new(), "is empty"),
        (
            "truncated.bin",
            good[..40].to_vec(),
            "shorter than the 64-byte",
        ),
        ("elf.bin", elf, "is an ELF file"),
        (
            "text.bin",
            b"root:x:0:0:root:/root:/bin/bash\n".repeat(4),
            "no magic",
        ),
    ];
    let mut paths = vec![(PathBuf::from("/etc/passwd"), "arm64 Image")];
    for (name, bytes, why) in cases {
        paths.push((write(name, &bytes), why));
    }
    for (path, why) in paths {
        let r = boot(&path, &[]);
        assert_eq!(r.status, 3, "{}:\n{}", path.display(), r.all());
        assert!(r.stderr.contains(why), "{}:\n{}", path.display(), r.all());
        assert!(
            !r.stdout.contains("qemu: "),
            "QEMU was started:\n{}",
            r.all()
        );
        assert!(
            r.took < Duration::from_secs(2),
            "{}: {:?}",
            path.display(),
            r.took
        );
    }
}

#[test]
fn silence_and_power_off_without_verdict_name_where_it_stopped() {
    // Lists its selection (as `list` would), reports one check, then powers off: the
    // running check is the second, the third never ran.
    let text = "ioguard 0.1.0: cpus=1\nLIST: a: x\nLIST: a: y\nLIST: b: z\nPASS: a: x: fine\n";
    let dir = scratch();
    let tap = dir.join("stopped.tap");
    let xml = dir.join("stopped.xml");
    let img = guest("stopped.bin", text);
    let r = boot(
        &img,
        &[
            "--tap",
            tap.to_str().unwrap(),
            "--junit",
            xml.to_str().unwrap(),
        ],
    );
    assert_eq!(r.status, 4, "{}", r.all());
    assert!(
        r.stdout.contains("guest ended without an EXIT line"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("ioguard-run: stopped in 'a: y'"),
        "{}",
        r.all()
    );
    assert!(r
        .stdout
        .contains("ioguard-run: last line: 'PASS: a: x: fine'"));
    assert!(r.stdout.contains("ioguard-run: 1 check(s) never ran: b: z"));
    let t = std::fs::read_to_string(&tap).unwrap();
    assert!(t.contains("1..4\nok 1 - a: x\n"), "{t}");
    assert!(
        t.contains("not ok 2 - a: y\n") && t.contains("not ok 3 - b: z\n"),
        "{t}"
    );
    assert!(t.contains("not ok 4 - runner: exit\n"), "{t}");
    let x = std::fs::read_to_string(&xml).unwrap();
    assert!(
        x.contains(r#"tests="4" failures="0" errors="2" skipped="1""#),
        "{x}"
    );

    // Prints a line, then nothing: stopped after --silence, not at the timeout.
    let quiet = spinning("silent.bin", "ioguard 0.1.0: cpus=1\nPASS: a: x\n");
    let r = boot(&quiet, &["--silence", "1"]);
    assert_eq!(r.status, 4, "{}", r.all());
    assert!(
        r.stdout.contains("SILENT: guest went silent"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("ioguard-run: stopped after 'PASS: a: x'"),
        "{}",
        r.all()
    );
    assert!(r.took < Duration::from_secs(10), "{:?}", r.took);

    // Prints nothing: the timeout, and the runner says so.
    let r = boot(&spinning("nothing.bin", ""), &["--timeout", "1"]);
    assert_eq!(r.status, 124, "{}", r.all());
    assert!(r
        .stdout
        .contains("TIMEOUT: guest did not finish within 1 s"));
    assert!(
        r.stdout.contains("ioguard-run: the guest printed nothing"),
        "{}",
        r.all()
    );
}

#[test]
fn bad_options_are_refused_before_booting() {
    let img = guest("options.bin", PASSING);
    let img = img.to_str().unwrap();
    let dir = scratch();
    let same = dir.join("same.out");
    let long = "x".repeat(2049);
    let cases: [(&[&str], &str); 10] = [
        (
            &["--hyp", "model", "--smp", "9"],
            "hypmodel runs at most 8 vCPUs",
        ),
        (
            &["--hyp", "model", "--append", &long],
            "passes at most 2048",
        ),
        (
            &[
                "--tap",
                same.to_str().unwrap(),
                "--junit",
                same.to_str().unwrap(),
            ],
            "give each its own",
        ),
        (
            &["--tap", "/nonexistent/x.tap"],
            "--tap /nonexistent/x.tap: cannot be written",
        ),
        (&["--junit", "/"], "--junit /: cannot be written"),
        (&["--tap", img], "it would be overwritten"),
        (&["--cpu", "cortex-a15"], "has no AArch64"),
        (&["--mem", "1"], "needs at least 8M"),
        (
            &["--virtio-transport", "pcie"],
            "--virtio-transport 'pcie': expected mmio, mmio-modern, pci, both or none",
        ),
        (&["--virtio-blk", "28"], "so at most 27 more drives"),
    ];
    for (args, why) in cases {
        let mut full = vec!["--image", img, "--timeout", "30"];
        full.extend_from_slice(args);
        let r = runner(&full);
        assert_eq!(r.status, 2, "{args:?}:\n{}", r.all());
        assert!(
            r.stderr.contains(why),
            "{args:?}: expected '{why}'\n{}",
            r.all()
        );
        assert!(
            !r.stdout.contains("qemu: "),
            "{args:?}: QEMU was started\n{}",
            r.all()
        );
        assert!(r.took < Duration::from_secs(2), "{args:?}: {:?}", r.took);
    }
    assert!(!same.exists() && !Path::new("/nonexistent/x.tap").exists());
}

#[test]
fn help_and_readme_document_every_status() {
    let help = runner(&["--help"]);
    assert_eq!(help.status, 0);
    let readme = std::fs::read_to_string(ioguard_runner::repo_root().join("README.md")).unwrap();
    let section = readme
        .split("## Exit status of ./qemu-run.sh")
        .nth(1)
        .expect("README has the exit status section");
    let section = section.split("\n## ").next().unwrap();
    for status in ["0", "1", "2", "3", "4", "124", "128+N"] {
        assert!(
            help.stdout.contains(&format!("\n  {status} ")),
            "--help lacks status {status}"
        );
        assert!(
            section.contains(&format!("| {status} |")),
            "README lacks status {status}"
        );
    }
    assert!(!readme.contains("exits with the guest's status"));
}

/// The pids of running processes whose command line has `word` right after `flag`.
fn processes_with(flag: &str, word: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args
            .windows(2)
            .any(|w| w[0] == flag.as_bytes() && w[1] == word.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The file behind the default virtio-blk device of the running process `pid`.
fn default_blk_file_of(pid: u32) -> PathBuf {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let drive = cmd
        .split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .find(|a| a.starts_with("file=") && a.contains(",id=vblk0"))
        .unwrap_or_else(|| panic!("no default blk drive in {cmd:?}"))
        .into_owned();
    let file = drive["file=".len()..].split(",if=").next().unwrap();
    PathBuf::from(file.replace(",,", ","))
}

/// Sends `signal` to the runner while QEMU runs a guest that never ends; QEMU must be
/// gone right after, so must the run's default virtio-blk file, and the runner must
/// exit 128 + the signal's number.
fn signal_stops_qemu(signal: &str, number: i32) {
    let img = spinning(&format!("signal-{signal}-{}.bin", std::process::id()), "");
    let path = img.to_str().unwrap().to_string();
    let tmp = empty_tmp(&format!("signal-{signal}"));
    let mut child = Command::new(BIN)
        .args(["--image", &path, "--timeout", "120", "--silence", "120"])
        .env_remove("IOGUARD_RUN_CWD")
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("QEMU to start", || {
        !processes_with("-kernel", &path).is_empty()
    });
    let qemu = processes_with("-kernel", &path);
    let blk = default_blk_file_of(qemu[0]);
    assert!(blk.starts_with(&tmp) && blk.is_file(), "{}", blk.display());
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    let status = child.wait().unwrap();
    let took = started.elapsed();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    // Gone, not orphaned: no process runs the Image any more (an orphan is re-parented
    // to init and keeps running; clean it up before failing).
    let until = Instant::now() + Duration::from_secs(5);
    let mut left = processes_with("-kernel", &path);
    while !left.is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        left = processes_with("-kernel", &path);
    }
    for pid in &left {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(
        left.is_empty(),
        "{signal}: QEMU {qemu:?} left running\n{err}"
    );
    assert_eq!(
        status.code(),
        Some(128 + number),
        "{signal}: {status:?}\n{err}"
    );
    assert!(err.contains(&format!("{signal}: stopped QEMU")), "{err}");
    assert!(!blk.exists(), "{signal}: {} left behind", blk.display());
    assert!(entries(&tmp).is_empty(), "{:?}", entries(&tmp));
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn sigterm_to_the_runner_stops_qemu() {
    signal_stops_qemu("TERM", 15);
}

#[test]
fn sighup_to_the_runner_stops_qemu() {
    signal_stops_qemu("HUP", 1);
}

#[test]
fn sigint_to_the_runner_stops_qemu() {
    signal_stops_qemu("INT", 2);
}
