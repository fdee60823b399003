//! What a fresh machine lacks: the guest's Rust target and QEMU. Both are installed by the
//! project's own means when that is possible (rustup from the toolchain file; Debian's
//! package as root), otherwise reported with the exact command to run.

use crate::exec::RunError;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The Debian command that provides `qemu-system-aarch64`.
pub const QEMU_INSTALL: &str =
    "apt-get update && apt-get install -y --no-install-recommends qemu-system-arm";

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Makes sure `qemu` can be started. A bare name missing from PATH is installed from
/// Debian's archive when running as root with apt-get (once per process, serialised);
/// otherwise the error names the command to run.
pub fn ensure_qemu(qemu: &Path) -> Result<(), RunError> {
    if qemu.components().count() != 1 {
        return if qemu.is_file() {
            Ok(())
        } else {
            Err(RunError::Qemu(format!(
                "{} does not exist (Debian's qemu-system-arm installs qemu-system-aarch64: {QEMU_INSTALL})",
                qemu.display()
            )))
        };
    }
    let name = qemu.to_string_lossy();
    if on_path(&name) {
        return Ok(());
    }
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if on_path(&name) {
        return Ok(());
    }
    if name != "qemu-system-aarch64" || !is_root() || !on_path("apt-get") {
        return Err(RunError::Qemu(format!(
            "{name} not found; install it (as root) with: {QEMU_INSTALL}"
        )));
    }
    eprintln!("ioguard-run: {name} not found; installing Debian's qemu-system-arm: {QEMU_INSTALL}");
    let ok = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if ok(&["update", "-qq"])
        && ok(&[
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "qemu-system-arm",
        ])
        && on_path(&name)
    {
        Ok(())
    } else {
        Err(RunError::Qemu(format!(
            "installing qemu-system-arm failed; run: {QEMU_INSTALL}"
        )))
    }
}

/// Makes sure the toolchain pinned in rust-toolchain.toml has the guest target and
/// llvm-tools (for llvm-objcopy). rustup installs a toolchain file's targets only when it
/// installs the toolchain itself, so a machine that already had that toolchain lacks them.
/// `rustup target add` is used rather than `rustup toolchain install`: under cargo,
/// RUSTUP_TOOLCHAIN is set and the latter then ignores the toolchain file's targets.
/// Runs at most once per process and target.
pub fn ensure_guest_target(root: &Path, target: &str) -> Result<(), RunError> {
    static DONE: Mutex<Vec<(String, Result<(), RunError>)>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = done.iter().find(|(t, _)| t == target) {
        return r.clone();
    }
    let r = add_target(root, target);
    done.push((target.to_string(), r.clone()));
    r
}

fn add_target(root: &Path, target: &str) -> Result<(), RunError> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root)
        .output();
    match installed {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == target) =>
        {
            Ok(())
        }
        // No rustup: let cargo report what is missing.
        Err(_) => Ok(()),
        Ok(_) => {
            eprintln!("ioguard-run: adding the guest target: rustup target add {target} && rustup component add llvm-tools");
            let rustup = |args: &[&str]| {
                Command::new("rustup")
                    .args(args)
                    .current_dir(root)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            };
            if rustup(&["target", "add", target]) && rustup(&["component", "add", "llvm-tools"]) {
                Ok(())
            } else {
                Err(RunError::Build(format!(
                    "target {target} is not installed; run in {}: rustup target add {target} && rustup component add llvm-tools",
                    root.display()
                )))
            }
        }
    }
}
