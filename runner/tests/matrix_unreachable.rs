//! A matrix column whose hypervisor cannot be reached is shown as such, with the reason,
//! never dropped: the `ioguard-run` binary runs `--matrix` with a QEMU that does not
//! exist, so neither plain QEMU nor the pKVM host can start, and the matrix must still
//! have both columns, say why, write their report files and exit 3.

use ioguard_runner::target_dir;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ioguard-run");

#[test]
fn an_unreachable_column_is_shown_with_its_reason() {
    let dir = target_dir().join("matrix-unreachable");
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(BIN)
        .arg("--matrix")
        .arg(&dir)
        .args(["--matrix-columns", "plain,pkvm-qemu"])
        .args(["--qemu", "/nonexistent/qemu-system-aarch64"])
        .output()
        .expect("ioguard-run runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("plain (--hyp plain): unreachable: "),
        "{said}"
    );
    assert!(
        said.contains("pkvm-qemu (--hyp pkvm:qemu): unreachable: "),
        "{said}"
    );
    let md = std::fs::read_to_string(dir.join("matrix.md")).unwrap();
    for col in ["plain", "pkvm-qemu"] {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {col} | ")))
            .unwrap_or_else(|| panic!("no {col} column\n{md}"));
        assert!(row.contains("| unreachable | - | - | "), "{row}");
        assert!(row.contains("/nonexistent/qemu-system-aarch64"), "{row}");
    }
    // No check ran, so there is no row; the columns are there all the same.
    assert!(md.contains("| check | plain | pkvm-qemu |"), "{md}");
    let html = std::fs::read_to_string(dir.join("matrix.html")).unwrap();
    assert_eq!(
        html.matches("<td class=\"unreachable\" title=\"").count(),
        2,
        "{html}"
    );
    for col in ["plain", "pkvm-qemu"] {
        let tap = std::fs::read_to_string(dir.join(format!("{col}.tap"))).unwrap();
        assert!(tap.contains("not ok 1 - runner: exit"), "{tap}");
        let ktap = std::fs::read_to_string(dir.join(format!("{col}.ktap"))).unwrap();
        assert!(
            ktap.starts_with("KTAP version 1\n1..1\nnot ok 1 runner_exit # ERROR "),
            "{ktap}"
        );
        assert!(ktap.contains("/nonexistent/qemu-system-aarch64"), "{ktap}");
    }
}
