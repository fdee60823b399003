//! `temp::remove_all`, what the signal handler calls before the runner exits, in a process
//! of its own (it closes the registry for good): every file made for a boot is removed,
//! even one whose boot never got to remove it, and no new one can be made.

use ioguard_runner::{default_blk_files, temp, RunError, VirtioTransport};

#[test]
fn remove_all_removes_every_file_and_refuses_new_ones() {
    let mut files = default_blk_files(VirtioTransport::Both).expect("two files");
    files.extend(default_blk_files(VirtioTransport::Mmio).expect("one file"));
    assert_eq!(files.len(), 3);
    assert!(files.iter().all(|f| f.is_file() && temp::is_registered(f)));
    assert_eq!(temp::remove_all(), 3);
    for f in &files {
        assert!(!f.exists(), "{} left behind", f.display());
        assert!(!temp::is_registered(f));
    }
    // The runner is exiting: a boot that starts now gets no file (and so no QEMU).
    match default_blk_files(VirtioTransport::Pci) {
        Err(RunError::Io(m)) => assert!(m.contains("exiting"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(temp::remove_all(), 0);
}
