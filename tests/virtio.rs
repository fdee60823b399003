//! Virtio devices through registered windows: every transport (virtio-mmio legacy and
//! modern, virtio-pci) on plain QEMU and under hypmodel's profiles and granules, DMA
//! through the shared pool, and the suite's lines through virtio-console.

mod common;
use common::*;
use ioguard_runner::{Kind, Outcome};

fn virtio_run(transport: &str, hyp: Option<&str>) -> Outcome {
    let mut args = vec!["--virtio-transport", transport, "--append", "only=virtio:*"];
    if let Some(h) = hyp {
        args.extend(["--hyp", h]);
    }
    run(&args)
}

/// Every virtio check as `want` says, and the devices found where `transport` put them.
fn assert_virtio(out: &Outcome, transport: &str, sharing: bool) {
    let t = out.transcript();
    for name in virtio_checks() {
        let r = out
            .result(name)
            .unwrap_or_else(|| panic!("no result for {name}:\n{t}"));
        let memshare = name.ends_with("dma-shared") || name.ends_with("pool-unshared");
        let want = if memshare && !sharing {
            Kind::Skip
        } else {
            Kind::Pass
        };
        assert_eq!(r.kind, want, "{name} over {transport}:\n{t}");
    }
    let found = detail(out, "virtio: discovered");
    assert!(
        found.starts_with("5 devices (blk 1, rng 1, console 1, net 2)"),
        "{found}"
    );
    let where_ = match transport {
        "mmio" => "(legacy): ",
        "mmio-modern" => "(modern): ",
        _ => "virtio-pci 00:",
    };
    let driven = out
        .report
        .info
        .iter()
        .filter(|l| {
            l.starts_with("virtio: discovered: ") && l.contains(where_) && l.ends_with(" driven")
        })
        .count();
    assert_eq!(driven, 5, "{t}");
    assert_eq!(out.status, 0, "{t}");
}

#[test]
fn every_transport_on_plain_qemu() {
    for transport in ["mmio", "mmio-modern", "pci"] {
        let out = virtio_run(transport, None);
        assert_virtio(&out, transport, false);
        assert!(
            detail(&out, "virtio: dma-shared").contains("has no memory sharing"),
            "{}",
            out.transcript()
        );
    }
}

#[test]
fn every_profile_and_transport_under_hypmodel() {
    for profile in ["android14", "android16", "upstream", "pkvm"] {
        for transport in ["mmio", "mmio-modern", "pci"] {
            let out = virtio_run(transport, Some(&format!("model:{profile}")));
            assert_virtio(&out, transport, true);
            // The pool was shared granule by granule, and taken back.
            let t = out.transcript();
            let shared = detail(&out, "virtio: dma-shared");
            assert!(
                shared.contains("all in the") && shared.contains("granules the pools shared"),
                "{t}"
            );
            assert!(
                detail(&out, "virtio: pool-unshared").contains("MEM_UNSHAREd"),
                "{t}"
            );
        }
    }
}

#[test]
fn larger_granules_and_both_transports() {
    for granule in ["16k", "64k"] {
        let out = virtio_run("mmio", Some(&format!("model:android14,granule={granule}")));
        assert_virtio(&out, "mmio", true);
    }
    let out = virtio_run("both", Some("model:android14"));
    let t = out.transcript();
    assert_eq!(out.status, 0, "{t}");
    assert!(
        detail(&out, "virtio: discovered")
            .starts_with("7 devices (blk 2, rng 2, console 1, net 2)"),
        "{t}"
    );
}

/// The line `virtio: console` wrote is on the host's side of the device, exactly once,
/// with the nonce the check reports.
#[test]
fn the_console_line_reaches_the_host() {
    let out = virtio_run("mmio", Some("model:android14"));
    let d = detail(&out, "virtio: console");
    let line = d
        .split('\'')
        .nth(1)
        .unwrap_or_else(|| panic!("no quoted line in '{d}'"));
    assert!(line.starts_with("ioguard: virtio-console: a line from the guest, nonce 0x"));
    let seen = out
        .report
        .lines
        .iter()
        .filter(|l| l.trim_end() == line)
        .count();
    assert_eq!(seen, 1, "{}", out.transcript());
}

/// The hypervisor's count of accesses to the UART's page (hypmodel's report line).
fn uart_accesses(out: &Outcome) -> u64 {
    out.report
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("hypmodel: accesses "))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("console="))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no hypmodel accesses line:\n{}", out.transcript()))
}

/// With virtio-console as the output the UART carries only the boot lines: the same run
/// with `output=uart` makes several times as many UART accesses, and both give every check
/// the same verdict.
#[test]
fn output_through_virtio_console_spares_the_uart() {
    let runs: Vec<Outcome> = ["output=auto", "output=uart"]
        .iter()
        .map(|o| run(&["--hyp", "model:android14", "--append", o]))
        .collect();
    let (virtio, uart) = (&runs[0], &runs[1]);
    for out in &runs {
        assert_eq!(out.status, 0, "{}", out.transcript());
    }
    assert!(
        virtio
            .report
            .lines
            .iter()
            .any(|l| l.starts_with("ioguard: output: virtio-console virtio-")),
        "{}",
        virtio.transcript()
    );
    let (v, u) = (uart_accesses(virtio), uart_accesses(uart));
    assert!(
        v * 3 < u,
        "UART accesses: {v} with virtio output, {u} without"
    );
    let verdicts = |o: &Outcome| -> Vec<(String, Kind)> {
        o.report
            .results
            .iter()
            .map(|r| (r.name(), r.kind))
            .collect()
    };
    assert_eq!(verdicts(virtio), verdicts(uart));
}

/// `output=virtio` where there is no virtio-console says so and keeps the UART.
#[test]
fn output_virtio_without_a_console_keeps_the_uart() {
    let out = run(&[
        "--virtio-transport",
        "none",
        "--append",
        "output=virtio only=boot:*",
    ]);
    assert_eq!(out.status, 0, "{}", out.transcript());
    assert!(
        out.report
            .info
            .iter()
            .any(|l| l.starts_with("output=virtio: no virtio-console was set up")),
        "{}",
        out.transcript()
    );
}

/// hypmodel keeps a private buffer from the device: the self-test's request is never
/// answered (PASS), and hypmodel reports the refused notify, which fails the run.
#[test]
fn a_private_buffer_never_reaches_the_device() {
    let out = run(&[
        "--hyp",
        "model:android14",
        "--append",
        "only=selftest:dma-private",
    ]);
    let t = out.transcript();
    assert_eq!(
        out.result("selftest: dma-private").map(|r| r.kind),
        Some(Kind::Pass),
        "{t}"
    );
    assert!(
        out.report
            .lines
            .iter()
            .any(|l| l.starts_with("hypmodel: FAIL dma: device-writable buffer")),
        "{t}"
    );
    assert_ne!(out.status, 0, "{t}");
}

/// Under hypmodel every notify of a default run is walked, and every descriptor the devices
/// saw was in shared memory.
#[test]
fn hypmodel_walks_every_notify_and_finds_nothing_private() {
    let out = run(&["--hyp", "model:android14"]);
    let t = out.transcript();
    assert_eq!(out.status, 0, "{t}");
    let dma = out
        .report
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("hypmodel: dma notifies="))
        .unwrap_or_else(|| panic!("no dma report line:\n{t}"));
    let field = |k: &str| -> u64 {
        dma.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in '{dma}'"))
    };
    let notifies: u64 = dma
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(notifies > 20, "{dma}");
    assert_eq!(field("walked="), notifies, "{dma}");
    assert!(field("descriptors=") >= notifies, "{dma}");
    assert_eq!(field("private="), 0, "{dma}");
}
