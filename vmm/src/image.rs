//! The arm64 Linux Image header (Documentation/arch/arm64/booting.rst).
//!
//! Parsed here rather than with linux-loader's `pe` loader: the VMM needs the header's
//! text_offset and image_size itself (to place the image, to check that it fits below the
//! device tree and to name its first page for the private-memory proof), and 64 bytes of
//! little-endian fields are less code than adapting a loader that also writes guest memory.

use std::fmt;

pub const HEADER_LEN: usize = 64;
const MAGIC_OFFSET: usize = 56;
const MAGIC: &[u8; 4] = b"ARM\x64";
/// What crosvm and Linux assume when image_size is 0 (images older than Linux 3.17).
const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub text_offset: u64,
    /// Bytes from the load address the image needs, bss included (0 on old images).
    pub image_size: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ImageError {
    TooShort(usize),
    BadMagic([u8; 4]),
    /// The image's text_offset is not a multiple of 4 KiB, which no arm64 image has.
    Misaligned(u64),
    DoesNotFit {
        need: u64,
        room: u64,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort(n) => write!(
                f,
                "not an arm64 Image: {n} bytes, shorter than the {HEADER_LEN}-byte header"
            ),
            Self::BadMagic(m) => write!(
                f,
                "not an arm64 Image: magic at offset 56 is {m:02x?}, expected \"ARM\\x64\""
            ),
            Self::Misaligned(o) => write!(f, "arm64 Image with text_offset {o:#x}: not 4 KiB aligned"),
            Self::DoesNotFit { need, room } => write!(
                f,
                "the image needs {need:#x} bytes from its load address, only {room:#x} fit below the device tree"
            ),
        }
    }
}

impl Header {
    pub fn parse(file: &[u8]) -> Result<Self, ImageError> {
        let h = file
            .get(..HEADER_LEN)
            .ok_or(ImageError::TooShort(file.len()))?;
        let magic: [u8; 4] = h[MAGIC_OFFSET..MAGIC_OFFSET + 4]
            .try_into()
            .map_err(|_| ImageError::TooShort(file.len()))?;
        if &magic != MAGIC {
            return Err(ImageError::BadMagic(magic));
        }
        let le = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let image_size = le(16);
        let text_offset = if image_size == 0 {
            LEGACY_TEXT_OFFSET
        } else {
            le(8)
        };
        if text_offset % 0x1000 != 0 {
            return Err(ImageError::Misaligned(text_offset));
        }
        Ok(Self {
            text_offset,
            image_size,
        })
    }

    /// The load address for RAM at `ram_base`, checked against `limit` (the device
    /// tree's address) for a file of `file_len` bytes.
    pub fn place(&self, ram_base: u64, file_len: u64, limit: u64) -> Result<u64, ImageError> {
        let load = ram_base + self.text_offset;
        let need = self.image_size.max(file_len);
        let room = limit.saturating_sub(load);
        if need > room {
            return Err(ImageError::DoesNotFit { need, room });
        }
        Ok(load)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(text_offset: u64, image_size: u64) -> Vec<u8> {
        let mut v = vec![0u8; 4096];
        v[8..16].copy_from_slice(&text_offset.to_le_bytes());
        v[16..24].copy_from_slice(&image_size.to_le_bytes());
        v[56..60].copy_from_slice(b"ARM\x64");
        v
    }

    #[test]
    fn reads_the_header() {
        let h = Header::parse(&image(0x20_0000, 0x4_0000)).unwrap();
        assert_eq!(
            h,
            Header {
                text_offset: 0x20_0000,
                image_size: 0x4_0000
            }
        );
        assert_eq!(h.place(0x4000_0000, 4096, 0x4400_0000), Ok(0x4020_0000));
    }

    #[test]
    fn zero_image_size_means_the_legacy_offset() {
        let h = Header::parse(&image(0x1234_0000, 0)).unwrap();
        assert_eq!(h.text_offset, 0x8_0000);
    }

    #[test]
    fn refuses_what_is_not_an_image() {
        assert_eq!(Header::parse(b"short"), Err(ImageError::TooShort(5)));
        let mut elf = image(0, 1);
        elf[56..60].copy_from_slice(b"\x7fELF");
        assert_eq!(Header::parse(&elf), Err(ImageError::BadMagic(*b"\x7fELF")));
        assert!(Header::parse(&elf)
            .unwrap_err()
            .to_string()
            .contains("not an arm64 Image"));
        assert_eq!(
            Header::parse(&image(0x80, 1)),
            Err(ImageError::Misaligned(0x80))
        );
    }

    #[test]
    fn refuses_an_image_that_reaches_the_tree() {
        let h = Header::parse(&image(0x20_0000, 0x10_0000)).unwrap();
        assert_eq!(
            h.place(0x4000_0000, 0x1000, 0x4028_0000),
            Err(ImageError::DoesNotFit {
                need: 0x10_0000,
                room: 0x8_0000
            })
        );
        // The file itself may be longer than image_size says.
        assert!(h.place(0x4000_0000, 0x20_0000, 0x4030_0000).is_err());
    }
}
