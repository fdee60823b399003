//! The guest boots on QEMU `virt` in the machine shapes the issue names, and its boot
//! checks pass there.

mod common;
use common::*;
use ioguard_runner::Kind;

#[test]
fn default_run_passes_and_says_so() {
    let out = run(&[]);
    assert_clean_pass(&out);
    assert!(
        out.command_line.contains("qemu-system-aarch64"),
        "{}",
        out.command_line
    );
    assert_eq!(header(&out, "cpus"), "1");
    assert_eq!(header(&out, "psci"), "hvc");
    assert_eq!(header(&out, "console"), "pl011@0x9000000");
    let totals = out.report.totals.as_ref().expect("totals line");
    let skipped = DEFAULT_CHECKS
        .iter()
        .filter(|n| plain_qemu_expectation(n) == Kind::Skip)
        .count() as u64;
    assert_eq!(
        (totals.passed, totals.failed, totals.skipped),
        (DEFAULT_CHECKS.len() as u64 - skipped, 0, skipped)
    );
    assert_eq!(header(&out, "hypervisor"), "unknown");
    assert_eq!(header(&out, "profile"), "none");
    // The image relocated itself: it runs at QEMU's Image address, not at 0.
    assert!(
        detail(&out, "boot: relocated").starts_with("running at 0x40200000"),
        "{}",
        out.transcript()
    );
}

#[test]
fn four_cpus() {
    let out = run(&["--smp", "4"]);
    assert_clean_pass(&out);
    assert_eq!(header(&out, "cpus"), "4");
    assert!(detail(&out, "boot: device-tree").ends_with("4 cpu(s)"));
    // Every secondary came up through PSCI CPU_ON, ran at EL1 and went off, and CPU 1
    // came up a second time.
    assert!(
        detail(&out, "psci: cpu-on").starts_with("CPUs 0x1, 0x2, 0x3, 0x1 each came up"),
        "{}",
        out.transcript()
    );
}

#[test]
fn small_and_large_memory() {
    for (mem, mib) in [("128M", "128MiB"), ("2G", "2048MiB")] {
        let out = run(&["--mem", mem]);
        assert_clean_pass(&out);
        assert_eq!(header(&out, "memory"), mib);
        // Both ends of RAM were checked as normal write-back memory.
        let want = format!(
            "memory 0x40000000..{:#x}",
            0x4000_0000u64 + if mem == "2G" { 2 << 30 } else { 128 << 20 }
        );
        assert!(
            out.report.info.iter().any(|l| l.contains(&want)),
            "{want}:\n{}",
            out.transcript()
        );
    }
}

/// The device tree's interrupt controller, as the guest reported it.
fn gic(out: &ioguard_runner::Outcome) -> String {
    out.report
        .info
        .iter()
        .find_map(|l| l.split("interrupt controller ").nth(1))
        .unwrap_or_else(|| panic!("no interrupt controller line:\n{}", out.transcript()))
        .to_string()
}

#[test]
fn gicv2() {
    let out = run(&["--gic", "2"]);
    assert_clean_pass(&out);
    assert!(gic(&out).contains("arm,cortex-a15-gic"), "{}", gic(&out));
    assert!(gic(&run(&[])).contains("arm,gic-v3"));
}

/// MIDR_EL1's part number (bits 15:4).
fn part(out: &ioguard_runner::Outcome) -> u64 {
    let midr = header(out, "midr").trim_start_matches("0x");
    (u64::from_str_radix(midr, 16).unwrap() >> 4) & 0xfff
}

#[test]
fn cortex_a53() {
    let out = run(&["--cpu", "cortex-a53"]);
    assert_clean_pass(&out);
    assert_eq!(part(&out), 0xd03, "{}", out.transcript());
}

#[test]
fn entered_at_el2_drops_to_el1() {
    // virtualization=on: QEMU starts the guest at EL2 and PSCI moves to SMC.
    let out = run(&["--", "-machine", "virtualization=on"]);
    assert_clean_pass(&out);
    assert_eq!(header(&out, "entered-el"), "2");
    assert_eq!(header(&out, "psci"), "smc");
}

/// The virtio transports the guest drives a device through, by kind.
fn driven(out: &ioguard_runner::Outcome) -> Vec<&str> {
    out.report
        .info
        .iter()
        .filter_map(|l| l.strip_prefix("virtio: discovered: virtio-"))
        .filter_map(|l| l.strip_suffix(" driven"))
        .filter_map(|l| l.rsplit(": ").next())
        .collect()
}

#[test]
fn no_virtio_device_attached() {
    let out = run(&["--virtio-transport", "none"]);
    assert_clean_pass_except(&out, NO_VIRTIO_DEVICE);
    assert_eq!(driven(&out), Vec::<&str>::new(), "{}", out.transcript());
    assert!(detail(&out, "virtio: discovered")
        .starts_with("no virtio device attached (32 virtio-mmio windows"));
    assert!(detail(&out, "ioremap: windows").starts_with("32 windows in 4 pages"));
}

/// Every virtio-mmio slot holds a blk device: all are driven, and their windows are the
/// drivers', not `ioremap: windows`' to count.
#[test]
fn thirty_two_virtio_devices_attached() {
    let out = run(&["--virtio-blk", "32", "--virtio-transport", "none"]);
    assert_clean_pass_except(
        &out,
        &[
            ("virtio: console", Kind::Skip),
            ("virtio: rng", Kind::Skip),
            ("virtio: net", Kind::Skip),
            ("ioremap: windows", Kind::Skip),
        ],
    );
    assert_eq!(driven(&out), vec!["blk"; 32], "{}", out.transcript());
    assert!(detail(&out, "virtio: discovered").starts_with("32 devices (blk 32,"));
}

#[test]
fn loaded_at_another_address() {
    // The same image with another text_offset in its header: QEMU loads it 16 MiB + 4 KiB
    // further up, and everything still works.
    let image = ioguard_runner::build_image().expect("image");
    let mut bytes = std::fs::read(&image).expect("read image");
    bytes[8..16].copy_from_slice(&0x0100_1000u64.to_le_bytes());
    let dir = ioguard_runner::runner_dir();
    std::fs::create_dir_all(&dir).expect("runner dir");
    let moved = dir.join("ioguard-moved.bin");
    std::fs::write(&moved, &bytes).expect("write moved image");
    let out = run(&["--image", moved.to_str().unwrap()]);
    assert_clean_pass(&out);
    assert!(
        detail(&out, "boot: relocated").starts_with("running at 0x41001000"),
        "{}",
        out.transcript()
    );
}

#[test]
fn semihosting_exit_carries_the_status() {
    let out = run(&["--append", "exit=semihosting only=selftest:panic"]);
    assert_eq!(out.qemu_status, Some(1), "{}", out.transcript());
    assert_eq!(out.status, 1);
}

#[test]
fn image_header_is_a_linux_arm64_image() {
    let image = ioguard_runner::build_image().expect("image");
    let bytes = std::fs::read(&image).expect("read image");
    assert_eq!(&bytes[0x38..0x3c], b"ARM\x64");
    let image_size = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let flags = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
    assert!(
        image_size >= bytes.len() as u64,
        "image_size {image_size} < file {}",
        bytes.len()
    );
    assert_eq!(flags, 0xa, "little endian, 4K pages, placement anywhere");
    // Stacks and heap are NOLOAD: counted in image_size, not written to the file.
    assert!(
        image_size >= bytes.len() as u64 + (2 << 20),
        "image_size {image_size}"
    );
}

#[test]
fn results_are_one_line_each_and_in_order() {
    let out = run(&[]);
    let names: Vec<String> = out.report.results.iter().map(|r| r.name()).collect();
    assert_eq!(names, DEFAULT_CHECKS);
    assert_eq!(out.report.count(Kind::Fail), 0);
    // One result line per check, nothing else tagged like one.
    let tagged = out
        .report
        .lines
        .iter()
        .filter(|l| {
            ["PASS: ", "FAIL: ", "SKIP: ", "KFAIL: ", "XPASS: "]
                .iter()
                .any(|t| l.starts_with(t))
        })
        .count();
    assert_eq!(tagged, DEFAULT_CHECKS.len());
}

/// QEMU with the Image loaded as firmware would load it (`-device loader`, no `-kernel`:
/// no device tree in x0), machine `machine`, and `extra` arguments; coreutils' timeout
/// bounds a guest that would not end (status 124).
fn boot_as_firmware(machine: &str, extra: &[&str]) -> std::process::Output {
    let image = ioguard_runner::build_image().expect("image");
    std::process::Command::new("timeout")
        .args(["20", "qemu-system-aarch64"])
        .args(["-M", machine, "-cpu", "max", "-m", "256M"])
        .args([
            "-display", "none", "-nic", "none", "-serial", "null", "-monitor", "none",
        ])
        .args(extra)
        .arg("-device")
        .arg(format!(
            "loader,file={},addr=0x40200000,cpu-num=0",
            image.display()
        ))
        .output()
        .expect("qemu-system-aarch64")
}

/// Entered at EL3 (QEMU `secure=on`, the Image loaded as firmware would be), ioguard
/// says so through semihosting and exits with its fatal status, instead of running with
/// nothing to catch a fault.
#[test]
fn entered_at_el3_says_so_and_exits() {
    let out = boot_as_firmware(
        "virt,secure=on",
        &[
            "-chardev",
            "stdio,id=c",
            "-semihosting-config",
            "enable=on,target=native,chardev=c",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("ioguard: fatal: entered at EL3"), "{text}");
}

/// Loaded without a device tree (x0 = 0) on a QEMU without semihosting, ioguard can
/// neither print nor exit through semihosting: it still powers the machine off, trying
/// PSCI SYSTEM_OFF through both conduits, instead of hanging.
#[test]
fn without_a_tree_or_semihosting_it_still_powers_off() {
    let started = std::time::Instant::now();
    let out = boot_as_firmware("virt", &[]);
    // 124 would be coreutils' timeout: the guest parked instead of powering off.
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
