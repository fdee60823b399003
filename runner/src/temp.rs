//! Files made for one boot only (the default virtio-blk devices' images): each gets a name
//! no other run can have, and every file is registered here from the moment it exists, so
//! that each way out removes it: the boot's end, an error before or after QEMU starts, a
//! panic ([`crate::exec::boot_with`]), and a signal to the runner ([`crate::signals`]:
//! [`remove_all`] after QEMU is stopped, before the process exits).

use crate::exec::RunError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

struct Registry {
    files: Vec<PathBuf>,
    /// Set by [`remove_all`]: the runner is exiting, no new file may be made.
    closed: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    files: Vec::new(),
    closed: false,
});

/// Numbers the files of this process (with the pid, the name is unique on the machine).
static NEXT: AtomicU64 = AtomicU64::new(0);

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the files go: the system's temporary directory (`$TMPDIR`, else `/tmp`).
pub fn dir() -> PathBuf {
    std::env::temp_dir()
}

/// The file-name prefix of this process's files: `ioguard-<pid>-`.
pub fn prefix() -> String {
    format!("ioguard-{}-", std::process::id())
}

/// Make a new file of `size` bytes of zeros (sparse), named
/// `ioguard-<pid>-<n>-<what>.img` in [`dir`], and register it. The file is created with
/// `O_EXCL`, so two runs (threads or processes) never share one: a name that exists
/// already (left by a killed runner whose pid came back) is skipped.
pub fn create(what: &str, size: u64) -> Result<PathBuf, RunError> {
    let dir = dir();
    let mut reg = registry();
    if reg.closed {
        return Err(RunError::Io(
            "the runner is exiting: no new temporary file".into(),
        ));
    }
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}{n}-{what}.img", prefix()));
        let io = |e: std::io::Error| RunError::Io(format!("{}: {e}", path.display()));
        let file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(e)),
        };
        // The lock is held: a signal's [`remove_all`] waits until the file is registered.
        if let Err(e) = file.set_len(size) {
            let _ = std::fs::remove_file(&path);
            return Err(io(e));
        }
        reg.files.push(path.clone());
        return Ok(path);
    }
}

/// Remove `paths` (those already gone are fine) and forget them.
pub fn remove(paths: &[PathBuf]) {
    let mut reg = registry();
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
    reg.files.retain(|f| !paths.contains(f));
}

/// Remove every registered file and refuse new ones: for the runner's exit on a signal.
/// Returns how many there were.
pub fn remove_all() -> usize {
    let mut reg = registry();
    reg.closed = true;
    for p in &reg.files {
        let _ = std::fs::remove_file(p);
    }
    std::mem::take(&mut reg.files).len()
}

/// Whether `path` is registered (made by [`create`] and not removed yet).
pub fn is_registered(path: &Path) -> bool {
    registry().files.iter().any(|f| f == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_unique_zeroed_and_removed() {
        let a = create("blk", 8 << 20).unwrap();
        let b = create("blk", 8 << 20).unwrap();
        assert_ne!(a, b);
        for f in [&a, &b] {
            assert_eq!(std::fs::metadata(f).unwrap().len(), 8 << 20);
            assert!(is_registered(f));
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.starts_with(&prefix()) && name.ends_with("-blk.img"),
                "{name}"
            );
            assert_eq!(f.parent(), Some(dir().as_path()));
        }
        assert!(std::fs::read(&a).unwrap().iter().all(|b| *b == 0));
        remove(std::slice::from_ref(&a));
        assert!(!a.exists() && !is_registered(&a));
        assert!(b.exists() && is_registered(&b));
        remove(std::slice::from_ref(&b));
        assert!(!b.exists());
    }

    #[test]
    fn an_existing_name_is_skipped_not_shared() {
        // A file left with the next name (a killed runner whose pid came back).
        let n = NEXT.load(Ordering::Relaxed);
        let squatter = dir().join(format!("{}{n}-stale.img", prefix()));
        std::fs::write(&squatter, "old").unwrap();
        let made = create("stale", 4096).unwrap();
        // Another test may have taken number n first; either way nothing was shared.
        assert_ne!(made, squatter);
        assert_eq!(std::fs::read(&squatter).unwrap(), b"old");
        remove(&[made, squatter.clone()]);
        assert!(!squatter.exists());
    }
}
