//! The check of a guest Image before it is booted: QEMU loads any file given to `-kernel`
//! (a text file, an ELF, half an Image) and the guest then never prints a line, so the
//! runner reads the arm64 Image header itself (Documentation/arch/arm64/booting.rst, as
//! hypmodel does) and says what is wrong within a second.

use crate::exec::RunError;
use std::io::Read;
use std::path::Path;

/// Size of the arm64 Image header.
pub const HEADER_SIZE: usize = 64;
/// `ARM\x64` at offset 0x38, little-endian 0x644d5241.
pub const MAGIC: [u8; 4] = *b"ARM\x64";
/// Offset of the magic in the header.
pub const MAGIC_OFFSET: usize = 0x38;
/// Largest effective Image size (`image_size`) the runner believes: ioguard takes 3 MiB.
pub const MAX_IMAGE_SIZE: u64 = 1 << 30;

fn le64(h: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[off..off + 8]);
    u64::from_le_bytes(b)
}

/// What is wrong with a file of `len` bytes that starts with `head` (its first bytes, up
/// to [`HEADER_SIZE`]) as an arm64 Image, if anything.
pub fn image_problem(head: &[u8], len: u64) -> Option<String> {
    if len == 0 {
        return Some("is empty".to_string());
    }
    if head.starts_with(b"\x7fELF") {
        return Some(
            "is an ELF file, not a raw arm64 Image (convert it with llvm-objcopy -O binary; \
             the runner's own build is target/aarch64-unknown-none/release/ioguard.bin)"
                .to_string(),
        );
    }
    if len < HEADER_SIZE as u64 || head.len() < HEADER_SIZE {
        return Some(format!(
            "is {len} bytes, shorter than the {HEADER_SIZE}-byte arm64 Image header (truncated?)"
        ));
    }
    if head[MAGIC_OFFSET..MAGIC_OFFSET + 4] != MAGIC {
        return Some(format!(
            "is not an arm64 Image: no magic \"ARM\\x64\" at offset 0x38 (found {:02x?})",
            &head[MAGIC_OFFSET..MAGIC_OFFSET + 4]
        ));
    }
    let image_size = le64(head, 16);
    let flags = le64(head, 24);
    if flags & 1 != 0 {
        return Some("is a big-endian arm64 Image (the guest is little-endian)".to_string());
    }
    if image_size > MAX_IMAGE_SIZE {
        return Some(format!(
            "has an implausible header: image_size {image_size:#x} (over 1 GiB)"
        ));
    }
    // image_size is the whole footprint, .bss included: the file cannot be longer.
    if image_size != 0 && len > image_size {
        return Some(format!(
            "has an implausible header: the file is {len} bytes but image_size says the \
             Image takes {image_size}"
        ));
    }
    None
}

/// Check that `path` looks like a bootable arm64 Image; [`RunError::Image`] (status 3)
/// says what it is instead.
pub fn check_image(path: &Path) -> Result<(), RunError> {
    let fail = |what: String| RunError::Image(format!("--image {}: {what}", path.display()));
    let mut f = std::fs::File::open(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let len = f
        .metadata()
        .map_err(|e| fail(format!("cannot read: {e}")))?
        .len();
    let mut head = Vec::with_capacity(HEADER_SIZE);
    f.by_ref()
        .take(HEADER_SIZE as u64)
        .read_to_end(&mut head)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    match image_problem(&head, len) {
        Some(p) => Err(fail(p)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::floor::{floor_image, scripted_image};

    fn problem(bytes: &[u8]) -> Option<String> {
        image_problem(&bytes[..bytes.len().min(HEADER_SIZE)], bytes.len() as u64)
    }

    #[test]
    fn good_images_pass() {
        assert_eq!(problem(&floor_image()), None);
        assert_eq!(problem(&scripted_image(&"x".repeat(5000))), None);
        assert_eq!(MAGIC, 0x644d_5241u32.to_le_bytes());
    }

    #[test]
    fn bad_files_are_named() {
        assert_eq!(problem(b"").unwrap(), "is empty");
        assert!(problem(b"root:x:0:0:root:/root:/bin/bash\n")
            .unwrap()
            .contains("shorter than the 64-byte"));
        let passwd = "root:x:0:0:root:/root:/bin/bash\n".repeat(10);
        assert!(problem(passwd.as_bytes())
            .unwrap()
            .contains("no magic \"ARM\\x64\" at offset 0x38"));
        let mut elf = vec![0u8; 4096];
        elf[..4].copy_from_slice(b"\x7fELF");
        assert!(problem(&elf).unwrap().contains("is an ELF file"));
        let img = floor_image();
        assert!(problem(&img[..40]).unwrap().contains("40 bytes"));
        let mut big_endian = img.clone();
        big_endian[24] |= 1;
        assert!(problem(&big_endian).unwrap().contains("big-endian"));
        // A file longer than the footprint its header declares.
        let mut long = img.clone();
        long.resize(8192, 0);
        assert!(problem(&long).unwrap().contains("image_size says"));
    }
}
