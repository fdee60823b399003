//! QEMU's floor: the smallest raw arm64 Image that prints one line and powers off.
//!
//! Booted with the same QEMU options as ioguard, it measures what QEMU itself costs (start,
//! machine and device-tree setup, TCG warm-up, exit), so `--bench` can compare ioguard's
//! boot against it. It carries the same arm64 Image header as ioguard, so QEMU's loader
//! treats both alike; it is position independent, writes to the PL011 data register at
//! 0x0900_0000 of QEMU `virt` and calls PSCI SYSTEM_OFF through `hvc #0` (the conduit of
//! plain `virt`). It prints no EXIT line.

use std::io;
use std::path::{Path, PathBuf};

/// The line the floor program prints.
pub const FLOOR_LINE: &str = "ioguard-floor: up";

/// The program as little-endian instruction words, Image header included. Encodings were
/// produced with `llvm-mc -triple=aarch64` and checked with `llvm-objdump -d`.
const WORDS: [u32; 27] = [
    // --- arm64 Image header (Documentation/arch/arm64/booting.rst), 64 bytes ---
    0x1400_0010, // 0x00 code0: b 0x40 (over the header)
    0x0000_0000, // 0x04 code1
    0x0008_0000, // 0x08 text_offset = 0x80000 (low word)
    0x0000_0000, // 0x0c   (high word)
    0x0000_1000, // 0x10 image_size (low word; patched to the file size rounded to 4 KiB)
    0x0000_0000, // 0x14   (high word)
    0x0000_000a, // 0x18 flags: little endian, 4K pages, placeable anywhere
    0x0000_0000, // 0x1c
    0x0000_0000, // 0x20 res2
    0x0000_0000, // 0x24
    0x0000_0000, // 0x28 res3
    0x0000_0000, // 0x2c
    0x0000_0000, // 0x30 res4
    0x0000_0000, // 0x34
    0x644d_5241, // 0x38 magic "ARM\x64"
    0x0000_0000, // 0x3c res5
    // --- code ---
    0xd2a1_2001, // 0x40 movz x1, #0x0900, lsl #16   x1 = PL011 UARTDR (0x0900_0000)
    0x1000_0142, // 0x44 adr  x2, 0x6c               x2 = the message
    0x3840_1443, // 0x48 ldrb w3, [x2], #1           next byte
    0x3400_0063, // 0x4c cbz  w3, 0x58               NUL: done
    0x3900_0023, // 0x50 strb w3, [x1]               write it to the UART
    0x17ff_fffd, // 0x54 b    0x48
    0x5280_0100, // 0x58 movz w0, #0x0008
    0x72b0_8000, // 0x5c movk w0, #0x8400, lsl #16   w0 = PSCI SYSTEM_OFF 0x8400_0008
    0xd400_0002, // 0x60 hvc  #0
    0xd503_207f, // 0x64 wfi                         (not reached)
    0x17ff_ffff, // 0x68 b    0x64
];

/// The raw Image bytes: the words above, then the NUL-terminated message at 0x6c.
pub fn floor_image() -> Vec<u8> {
    scripted_image(&format!("{FLOOR_LINE}\r\n"))
}

/// The floor program printing `text` instead of its line: a stand-in guest that says
/// whatever a test wants (for example result lines and an `EXIT:` line) and then powers
/// off with PSCI SYSTEM_OFF (QEMU exits 0). NUL bytes in `text` end it early.
pub fn scripted_image(text: &str) -> Vec<u8> {
    let mut v: Vec<u8> = WORDS.iter().flat_map(|w| w.to_le_bytes()).collect();
    debug_assert_eq!(v.len(), 0x6c);
    v.extend_from_slice(text.as_bytes());
    v.push(0);
    // image_size (offset 0x10): the file rounded up to 4 KiB.
    let size = (v.len() as u32).div_ceil(4096) * 4096;
    v[0x10..0x14].copy_from_slice(&size.to_le_bytes());
    v
}

/// Write the floor Image to `dir/ioguard-floor.bin` (atomically) and return its path.
pub fn write_floor_image(dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("ioguard-floor.bin");
    let tmp = dir.join(format!("ioguard-floor.bin.{}.tmp", std::process::id()));
    std::fs::write(&tmp, floor_image())?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let img = floor_image();
        assert_eq!(&img[0x38..0x3c], b"ARM\x64");
        // code0 branches to 0x40: imm26 = 0x40 / 4.
        assert_eq!(
            u32::from_le_bytes(img[0..4].try_into().unwrap()),
            0x1400_0000 | (0x40 / 4)
        );
        // adr x2 at 0x44 points at the message: immlo = bits 29..30, immhi = bits 5..23.
        let adr = WORDS[0x44 / 4];
        let imm = ((adr >> 5) & 0x7ffff) << 2 | ((adr >> 29) & 3);
        assert_eq!(0x44 + imm as usize, 0x6c);
        assert_eq!(&img[0x6c..0x6c + FLOOR_LINE.len()], FLOOR_LINE.as_bytes());
        assert_eq!(&img[img.len() - 3..], b"\r\n\0");
        assert_eq!(&img[0x10..0x14], &4096u32.to_le_bytes());
        let big = scripted_image(&"x".repeat(5000));
        assert_eq!(&big[0x10..0x14], &8192u32.to_le_bytes());
        assert_eq!(big.len(), 0x6c + 5001);
        // hvc #0 and the SYSTEM_OFF function id (movz 0x0008, movk 0x8400 << 16).
        assert_eq!(WORDS[0x60 / 4], 0xd400_0002);
        assert_eq!((WORDS[0x58 / 4] >> 5) & 0xffff, 0x0008);
        assert_eq!((WORDS[0x5c / 4] >> 5) & 0xffff, 0x8400);
    }
}
