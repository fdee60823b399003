//! The runner against real QEMU, with stand-in guests (the floor program printing scripted
//! lines), so the runner is tested without the ioguard guest. Needs qemu-system-aarch64.

use ioguard_runner::{
    run, scripted_image, write_floor_image, Exit, Kind, Options, RunError, FLOOR_LINE,
    STATUS_LAUNCH, STATUS_NO_EXIT, STATUS_TIMEOUT,
};
use std::path::PathBuf;
use std::time::Duration;

/// A per-test scratch directory under the runner's target dir.
fn scratch(name: &str) -> PathBuf {
    let d = ioguard_runner::runner_dir().join("tests").join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn image(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch(name).join("image.bin");
    std::fs::write(&p, bytes).unwrap();
    p
}

fn quiet(image: PathBuf) -> Options {
    Options {
        image: Some(image),
        echo: false,
        timeout: Some(Duration::from_secs(30)),
        ..Options::default()
    }
}

#[test]
fn floor_without_exit_line_is_a_clear_failure() {
    let img = write_floor_image(&scratch("floor")).unwrap();
    let out = run(&quiet(img.clone())).expect("QEMU ran");
    assert_eq!(out.lines, [FLOOR_LINE], "{}", out.transcript());
    assert_eq!(out.qemu_status, Some(0));
    assert!(!out.timed_out);
    assert_eq!(out.report.exit, Exit::Missing);
    assert_eq!(out.status, STATUS_NO_EXIT);
    assert_eq!(
        out.problem.as_deref(),
        Some("guest ended without an EXIT line; QEMU exit status 0")
    );
    assert_eq!(out.argv[0], "qemu-system-aarch64");
    assert!(out
        .command_line
        .contains(&format!("-kernel {}", img.display())));
    assert!(out.elapsed < Duration::from_secs(10));
    assert_eq!(out.times.len(), 1);
}

#[test]
fn scripted_results_are_parsed_and_status_decoded() {
    let text = "ioguard 0.1.0: hypervisor=none profile=plain granule=4096 cpus=1\r\n\
                PASS: guard: stray-read: ESR=0x96000010\r\n\
                FAIL: guard: map: returned -1\r\n\
                SKIP: virtio: blk: no device\r\n\
                SUMMARY: 3 tests, 1 unexpected failures, 0 known failures, 1 skipped\r\n\
                ioguard: 1 passed, 1 failed, 1 skipped\r\n\
                EXIT: STATUS=3\r\n";
    let dir = scratch("scripted");
    let mut opts = quiet(image("scripted", &scripted_image(text)));
    opts.tap = Some(dir.join("out.tap"));
    opts.junit = Some(dir.join("out.xml"));
    let out = run(&opts).expect("QEMU ran");
    assert_eq!(out.status, 1, "{}", out.transcript());
    assert_eq!(out.problem, None);
    assert_eq!(out.qemu_status, Some(0));
    let kinds: Vec<Kind> = out.results().iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [Kind::Pass, Kind::Fail, Kind::Skip]);
    assert_eq!(out.report.header.as_ref().unwrap().get("cpus"), Some("1"));
    assert!(out.report.inconsistencies().is_empty());
    assert!(out.lines.iter().all(|l| !l.contains('\r')));
    let tap = std::fs::read_to_string(dir.join("out.tap")).unwrap();
    assert!(tap.contains("1..3\nok 1 - guard: stray-read"), "{tap}");
    assert!(tap.contains("not ok 2 - guard: map"));
    let xml = std::fs::read_to_string(dir.join("out.xml")).unwrap();
    assert!(
        xml.contains(r#"tests="3" failures="1" errors="0" skipped="1""#),
        "{xml}"
    );
}

#[test]
fn malformed_exit_line_is_an_error() {
    let img = image("malformed", &scripted_image("PASS: a: b\nEXIT: STATUS=4\n"));
    let out = run(&quiet(img)).unwrap();
    assert_eq!(out.status, STATUS_NO_EXIT, "{}", out.transcript());
    assert!(out.problem.unwrap().contains("STATUS=4 is even"));
}

#[test]
fn hang_times_out_and_keeps_the_lines() {
    // The floor with `hvc #0` (at 0x60) replaced by `b .`: it prints, then spins.
    let mut bytes = scripted_image("PASS: a: b\r\nno newline at the end");
    bytes[0x60..0x64].copy_from_slice(&0x1400_0000u32.to_le_bytes());
    let mut opts = quiet(image("hang", &bytes));
    opts.timeout = Some(Duration::from_millis(1500));
    let out = run(&opts).unwrap();
    assert!(out.timed_out);
    assert_eq!(out.status, STATUS_TIMEOUT);
    assert_eq!(out.qemu_status, None);
    assert_eq!(
        out.problem.as_deref(),
        Some("TIMEOUT: guest did not finish within 1.5 s")
    );
    assert_eq!(out.lines, ["PASS: a: b", "no newline at the end"]);
    assert!(out.elapsed < Duration::from_secs(6), "{:?}", out.elapsed);
}

#[test]
fn qemu_failure_is_reported_with_its_status() {
    // An unreadable -dtb makes QEMU itself fail before the guest runs.
    let img = write_floor_image(&scratch("dtb")).unwrap();
    let opts = quiet(img).with_qemu_args(["-dtb", "/nonexistent/ioguard-test.dtb"]);
    let out = run(&opts).unwrap();
    assert_eq!(
        out.argv[out.argv.len() - 2..],
        ["-dtb", "/nonexistent/ioguard-test.dtb"]
    );
    assert_ne!(out.qemu_status, Some(0));
    assert!(out.lines.is_empty());
    assert!(
        out.stderr.iter().any(|l| l.contains("dtb")),
        "{:?}",
        out.stderr
    );
    assert_eq!(out.status, STATUS_LAUNCH);
    let problem = out.problem.unwrap();
    assert!(
        problem.starts_with("guest ended without an EXIT line"),
        "{problem}"
    );
    assert!(problem.contains("QEMU failed (exit status 1)"), "{problem}");
}

#[test]
fn machine_variants_are_accepted_by_qemu() {
    let img = write_floor_image(&scratch("variants")).unwrap();
    let variants: [&[&str]; 12] = [
        &["--smp", "4"],
        &["--mem", "128M"],
        &["--mem", "2G"],
        &["--gic", "2"],
        &["--cpu", "cortex-a53"],
        &["--virtio-blk", "27"],
        &["--virtio-blk", "32", "--virtio-transport", "none"],
        &["--virtio-blk", "32", "--virtio-transport", "pci"],
        &["--virtio-transport", "mmio-modern", "--virtio-blk", "27"],
        &["--virtio-transport", "both", "--virtio-blk", "27"],
        &["--virtio-transport", "pci", "--gic", "2"],
        &["--hyp", "model", "--virtio-transport", "both"],
    ];
    for args in variants {
        let mut full = vec!["--image", img.to_str().unwrap(), "--timeout", "30"];
        full.extend_from_slice(args);
        let out = ioguard_runner::boot(&full).unwrap();
        if args.contains(&"model") {
            // hypmodel prints its own lines around the floor's.
            assert!(out.lines.iter().any(|l| l == FLOOR_LINE), "{args:?}");
        } else {
            assert_eq!(out.lines, [FLOOR_LINE], "{args:?}:\n{}", out.transcript());
        }
        assert_eq!(out.qemu_status, Some(0), "{args:?}: {:?}", out.stderr);
        // Nothing on QEMU's stderr: the default NICs' hub warning is expected, dropped.
        assert!(out.stderr.is_empty(), "{args:?}: {:?}", out.stderr);
    }
}

#[test]
fn errors_before_qemu_starts() {
    let missing = quiet(PathBuf::from("/nonexistent/ioguard.bin"));
    let e = run(&missing).unwrap_err();
    assert!(
        matches!(&e, RunError::Usage(m) if m.contains("no such file")),
        "{e}"
    );
    assert_eq!(e.exit_status(), 2);

    let img = write_floor_image(&scratch("errors")).unwrap();
    let mut no_qemu = quiet(img.clone());
    no_qemu.qemu = PathBuf::from("/nonexistent/qemu-system-aarch64");
    let e = run(&no_qemu).unwrap_err();
    assert!(
        matches!(&e, RunError::Qemu(m) if m.contains("qemu-system-arm")),
        "{e}"
    );
    assert_eq!(e.exit_status(), STATUS_LAUNCH);

    let mut hyp = quiet(img);
    hyp.hyp = ioguard_runner::Hyp::parse("pkvm").unwrap();
    hyp.virtio_transport = ioguard_runner::VirtioTransport::Pci;
    assert!(
        matches!(run(&hyp), Err(RunError::Usage(m)) if m.contains("virtio-mmio (modern) only"))
    );
    assert!(matches!(
        ioguard_runner::boot(&["--smp", "x"]),
        Err(RunError::Usage(_))
    ));
}

#[test]
fn dump_dtb_writes_the_machine_tree() {
    let dir = scratch("dtb-dump");
    let path = dir.join("virt,smp2.dtb");
    let _ = std::fs::remove_file(&path);
    let opts = Options {
        smp: 2,
        echo: false,
        ..Options::default()
    };
    ioguard_runner::dump_dtb(&opts, &path).expect("dumpdtb");
    let dtb = std::fs::read(&path).unwrap();
    assert_eq!(&dtb[..4], &[0xd0, 0x0d, 0xfe, 0xed], "FDT magic");
    // Two cpu nodes.
    let needle = b"cpu@1";
    assert!(dtb.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn the_real_guest_run_names_the_check_it_stopped_in() {
    // The real guest's output cut before its 11th result line stands for a run that
    // stopped there; the runner lists the same selection with a second boot.
    let image = ioguard_runner::build_image().expect("the guest builds");
    for append in ["", "only=memshare:*,guard:*"] {
        let opts = Options {
            append: append.to_string(),
            ..quiet(image.clone())
        };
        let full = run(&opts).expect("QEMU ran");
        assert_eq!(full.status, 0, "{}", full.transcript());
        let names: Vec<String> = full.results().iter().map(|r| r.name()).collect();
        let k = 10;
        let partial = ioguard_runner::Report::parse(&full.lines[..full.results()[k].line]);
        let stall =
            ioguard_runner::locate_stall(&ioguard_runner::PlainQemu, &opts, &image, &partial);
        assert_eq!(
            stall.running.as_deref(),
            Some(names[k].as_str()),
            "{append}"
        );
        assert_eq!(stall.not_run, names[k + 1..], "{append}");
        assert_eq!(
            stall.last_line.as_deref(),
            partial.lines.last().map(String::as_str)
        );
    }
}
