//! Building bare-metal binaries of the workspace (the guest, hypmodel, hypmodel's test
//! guest) and turning them into raw arm64 Images, plus where those files live.

use crate::exec::RunError;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The guest's target triple.
pub const GUEST_TARGET: &str = "aarch64-unknown-none";

/// The workspace root (the runner crate's parent directory).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The workspace's target directory: `$CARGO_TARGET_DIR` (relative to the root) if set,
/// else `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => repo_root().join(d),
        _ => repo_root().join("target"),
    }
}

/// Where `cargo build --release --target aarch64-unknown-none` puts its binaries.
pub fn release_dir() -> PathBuf {
    target_dir().join(GUEST_TARGET).join("release")
}

/// The guest ELF that `cargo build --release --target aarch64-unknown-none` produces.
pub fn guest_elf_path() -> PathBuf {
    release_dir().join("ioguard")
}

/// The raw Image the runner boots by default (`ioguard.bin` next to the ELF).
pub fn image_path() -> PathBuf {
    guest_elf_path().with_extension("bin")
}

/// Where the hypmodel ELF is built.
pub fn hypmodel_elf_path() -> PathBuf {
    release_dir().join("hypmodel")
}

/// A scratch directory for the runner's own files (drive images, the floor Image).
pub fn runner_dir() -> PathBuf {
    target_dir().join("ioguard-runner")
}

fn command_output(cmd: &mut Command, what: &str) -> Result<String, RunError> {
    let out = cmd
        .output()
        .map_err(|e| RunError::Build(format!("cannot run {what}: {e}")))?;
    if !out.status.success() {
        return Err(RunError::Build(format!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Find llvm-objcopy: the toolchain's llvm-tools, then its `rust-objcopy`, then PATH.
fn find_objcopy(root: &Path) -> PathBuf {
    let rustc =
        |arg: &str| command_output(Command::new("rustc").arg(arg).current_dir(root), "rustc");
    if let (Ok(sysroot), Ok(vv)) = (rustc("--print=sysroot"), rustc("-vV")) {
        if let Some(host) = vv.lines().find_map(|l| l.strip_prefix("host: ")) {
            let bin = Path::new(&sysroot)
                .join("lib/rustlib")
                .join(host.trim())
                .join("bin");
            for name in ["llvm-objcopy", "rust-objcopy"] {
                if bin.join(name).is_file() {
                    return bin.join(name);
                }
            }
        }
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
    };
    on_path("llvm-objcopy")
        .or_else(|| on_path("rust-objcopy"))
        .unwrap_or_else(|| PathBuf::from("llvm-objcopy"))
}

/// `cargo build --release --target aarch64-unknown-none -p PACKAGE [--bin BIN]` in the
/// workspace's target directory, after making sure the target is installed. `verbose` lets
/// cargo's progress through to stderr; otherwise its output is shown only in the error.
fn cargo_build_bare(package: &str, bin: Option<&str>, verbose: bool) -> Result<(), RunError> {
    cargo_build_for(GUEST_TARGET, package, bin, verbose)
}

/// The VMM's target triple: a static Linux binary for the pKVM host's userland.
pub const VMM_TARGET: &str = "aarch64-unknown-linux-musl";

/// Builds the VMM (`vmm/`) once per process for [`VMM_TARGET`] (linked by rust-lld, as
/// `.cargo/config.toml` says); returns the binary's path.
pub fn build_vmm() -> Result<PathBuf, RunError> {
    static BUILT: OnceLock<Result<PathBuf, RunError>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            cargo_build_for(VMM_TARGET, "ioguard-vmm", Some("ioguard-vmm"), false)?;
            Ok(target_dir()
                .join(VMM_TARGET)
                .join("release")
                .join("ioguard-vmm"))
        })
        .clone()
}

fn cargo_build_for(
    target: &str,
    package: &str,
    bin: Option<&str>,
    verbose: bool,
) -> Result<(), RunError> {
    let root = repo_root();
    crate::setup::ensure_guest_target(&root, target)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", target, "-p", package])
        .args(bin.map(|b| ["--bin", b]).into_iter().flatten())
        .env("CARGO_TARGET_DIR", target_dir())
        .stdin(Stdio::null());
    let failed = |detail: String| RunError::Build(format!("cargo build of {package}: {detail}"));
    if verbose {
        let st = cmd
            .status()
            .map_err(|e| RunError::Build(format!("cannot run cargo: {e}")))?;
        if !st.success() {
            return Err(failed(st.to_string()));
        }
    } else {
        let out = cmd
            .output()
            .map_err(|e| RunError::Build(format!("cannot run cargo: {e}")))?;
        if !out.status.success() {
            return Err(failed(format!(
                "{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    Ok(())
}

/// Convert `elf` to the raw Image `image` with llvm-objcopy.
fn elf_to_image(elf: &Path, image: &Path) -> Result<(), RunError> {
    if !elf.is_file() {
        return Err(RunError::Build(format!(
            "no guest ELF at {}",
            elf.display()
        )));
    }
    // Convert to a temporary name and rename, so concurrent runs never boot half a file.
    let tmp = image.with_extension(format!("bin.{}.tmp", std::process::id()));
    let objcopy = find_objcopy(&repo_root());
    command_output(
        Command::new(&objcopy)
            .args(["-O", "binary"])
            .arg(elf)
            .arg(&tmp),
        &objcopy.display().to_string(),
    )?;
    std::fs::rename(&tmp, image)
        .map_err(|e| RunError::Build(format!("rename to {}: {e}", image.display())))
}

/// Build the guest and convert it to a raw Image; returns the Image path.
///
/// `verbose` lets cargo's progress through to stderr; otherwise its output is captured
/// and shown only in the error.
pub fn build_image_now(verbose: bool) -> Result<PathBuf, RunError> {
    cargo_build_bare("ioguard", None, verbose)?;
    let image = image_path();
    elf_to_image(&guest_elf_path(), &image)?;
    Ok(image)
}

/// Build the guest Image once per process (later calls return the first result), quietly.
/// Integration tests call this (directly or through [`crate::run`]) from many threads.
pub fn build_image() -> Result<PathBuf, RunError> {
    static BUILT: OnceLock<Result<PathBuf, RunError>> = OnceLock::new();
    BUILT.get_or_init(|| build_image_now(false)).clone()
}

/// Build binary `bin` of `package` for the guest target (quietly) and convert it to the
/// raw Image `<bin>.bin` next to its ELF; returns the Image path. For guests other than
/// ioguard, such as hypmodel's test guest.
pub fn build_bin_image(package: &str, bin: &str) -> Result<PathBuf, RunError> {
    cargo_build_bare(package, Some(bin), false)?;
    let elf = release_dir().join(bin);
    let image = elf.with_extension("bin");
    elf_to_image(&elf, &image)?;
    Ok(image)
}

/// Builds hypmodel once per process (quietly; the error carries cargo's output).
pub fn build_hypmodel() -> Result<PathBuf, RunError> {
    static BUILT: OnceLock<Result<PathBuf, RunError>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            cargo_build_bare("hypmodel", Some("hypmodel"), false)?;
            Ok(hypmodel_elf_path())
        })
        .clone()
}
