//! An initramfs writer: the "newc" cpio format Linux unpacks at boot
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`). Written here rather than
//! by running `cpio`, which a fresh Debian machine does not have, and because the pKVM host
//! kit's initramfs is a handful of files whose modes and owners must not depend on the
//! machine that packs them.

use std::path::Path;

/// One entry of an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A directory (mode 0755).
    Dir(String),
    /// A regular file.
    File {
        /// Where, relative to the root.
        path: String,
        /// Its permission bits (e.g. 0o755).
        mode: u32,
        /// Its contents.
        data: Vec<u8>,
    },
    /// A symbolic link (shared libraries are found through them).
    Symlink {
        /// Where, relative to the root.
        path: String,
        /// What it points to.
        target: String,
    },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// The archive of `entries`, in order, owned by root, dated 0, ending with the trailer.
pub fn newc(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ino, e) in (1u32..).zip(entries) {
        let (path, mode, data): (&str, u32, &[u8]) = match e {
            Entry::Dir(p) => (p, S_IFDIR | 0o755, &[]),
            Entry::File { path, mode, data } => (path, S_IFREG | (mode & 0o7777), data),
            Entry::Symlink { path, target } => (path, S_IFLNK | 0o777, target.as_bytes()),
        };
        let nlink = if matches!(e, Entry::Dir(_)) { 2 } else { 1 };
        push_entry(&mut out, ino, mode, nlink, path, data);
    }
    push_entry(&mut out, 0, 0, 1, "TRAILER!!!", &[]);
    out
}

/// The entries of the tree at `root/dir` (directories before what they hold), with paths
/// relative to `root`, leaving out every path `skip` says yes to.
pub fn tree(root: &Path, dir: &str, skip: &dyn Fn(&str) -> bool) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(root.join(dir))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    // Sorted: the same archive from the same tree.
    names.sort();
    for name in names {
        let rel = format!("{dir}/{name}");
        if skip(&rel) {
            continue;
        }
        let full = root.join(&rel);
        let meta = std::fs::symlink_metadata(&full)?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full)?.to_string_lossy().into_owned();
            out.push(Entry::Symlink { path: rel, target });
        } else if meta.is_dir() {
            out.push(Entry::Dir(rel.clone()));
            out.extend(tree(root, &rel, skip)?);
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            out.push(Entry::File {
                path: rel,
                mode: meta.permissions().mode(),
                data: std::fs::read(&full)?,
            });
        }
    }
    Ok(out)
}

fn push_entry(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) {
    let name = name.trim_start_matches('/');
    // The name size counts its NUL; sizes are 32-bit in this format.
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads an archive back: (name, mode, data) per entry, trailer included.
    fn read(mut a: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut v = Vec::new();
        let mut off = 0;
        loop {
            assert_eq!(&a[..6], b"070701", "magic at {off}");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&a[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap() as usize
            };
            let (mode, size, namesize) = (field(1), field(6), field(11));
            let name_end = 110 + namesize;
            assert_eq!(a[name_end - 1], 0, "name is NUL-terminated");
            let name = String::from_utf8(a[110..name_end - 1].to_vec()).unwrap();
            let data_at = name_end.next_multiple_of(4);
            assert_eq!((off + data_at) % 4, 0);
            let data = a[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            v.push((name.clone(), mode as u32, data));
            off += next;
            a = &a[next..];
            if name == "TRAILER!!!" {
                assert!(a.is_empty(), "nothing after the trailer");
                return v;
            }
        }
    }

    #[test]
    fn entries_round_trip_with_padding_and_trailer() {
        let entries = [
            Entry::Dir("/bin".into()),
            Entry::File {
                path: "init".into(),
                mode: 0o755,
                data: b"#!/bin/sh\n".to_vec(),
            },
            Entry::File {
                path: "bin/x".into(),
                mode: 0o644,
                data: vec![7; 5],
            },
            Entry::Symlink {
                path: "lib".into(),
                target: "usr/lib".into(),
            },
        ];
        let a = newc(&entries);
        assert_eq!(a.len() % 4, 0);
        let got = read(&a);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], ("bin".into(), 0o040755, vec![]));
        assert_eq!(got[1], ("init".into(), 0o100755, b"#!/bin/sh\n".to_vec()));
        assert_eq!(got[2], ("bin/x".into(), 0o100644, vec![7; 5]));
        assert_eq!(got[3], ("lib".into(), 0o120777, b"usr/lib".to_vec()));
        assert_eq!(got[4].0, "TRAILER!!!");
    }

    #[test]
    fn a_tree_is_packed_parents_first_with_links_and_skips() {
        let root = std::env::temp_dir().join(format!("ioguard-cpio-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("usr/lib/x/skipme")).unwrap();
        std::fs::write(root.join("usr/lib/x/a.so.1.2"), b"elf").unwrap();
        std::os::unix::fs::symlink("a.so.1.2", root.join("usr/lib/x/a.so.1")).unwrap();
        std::fs::write(root.join("usr/lib/x/skipme/big"), b"no").unwrap();
        let got = tree(&root, "usr", &|p| p.ends_with("/skipme")).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        let names: Vec<String> = got
            .iter()
            .map(|e| match e {
                Entry::Dir(p) => format!("d {p}"),
                Entry::File { path, data, .. } => format!("f {path} {}", data.len()),
                Entry::Symlink { path, target } => format!("l {path} {target}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "d usr/lib",
                "d usr/lib/x",
                "l usr/lib/x/a.so.1 a.so.1.2",
                "f usr/lib/x/a.so.1.2 3"
            ]
        );
    }

    #[test]
    fn header_fields_are_root_owned_and_numbered() {
        let a = newc(&[Entry::Dir("d".into())]);
        let h = std::str::from_utf8(&a[..110]).unwrap();
        // ino 1, mode, uid 0, gid 0, nlink 2, mtime 0, size 0, ..., namesize 2.
        assert_eq!(&h[6..14], "00000001");
        assert_eq!(&h[14..22], "000041ed");
        assert_eq!(&h[22..38], "0000000000000000");
        assert_eq!(&h[38..46], "00000002");
        assert_eq!(&h[94..102], "00000002");
    }
}
