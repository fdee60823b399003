//! The arm64 Linux `Image` header (Documentation/arch/arm64/booting.rst): what a VMM reads
//! to place a kernel.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    pub text_offset: u64,
    /// Whole footprint including .bss.
    pub image_size: u64,
    pub flags: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    NoMagic,
    NoSize,
    BigEndian,
    UnsupportedPageSize,
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ImageError::NoMagic => "no arm64 Image (magic \"ARM\\x64\" missing at 0x38)",
            ImageError::NoSize => "Image header has image_size 0 (pre-3.17 layout not supported)",
            ImageError::BigEndian => "big-endian Image",
            ImageError::UnsupportedPageSize => "Image wants a page size other than 4 KiB",
        })
    }
}

/// The header's size: what must be read before the Image can be placed.
pub const HEADER_SIZE: usize = 64;

fn le64(h: &[u8; HEADER_SIZE], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[off..off + 8]);
    u64::from_le_bytes(b)
}

pub fn parse(h: &[u8; HEADER_SIZE]) -> Result<ImageHeader, ImageError> {
    if &h[0x38..0x3c] != b"ARM\x64" {
        return Err(ImageError::NoMagic);
    }
    let hdr = ImageHeader {
        text_offset: le64(h, 8),
        image_size: le64(h, 16),
        flags: le64(h, 24),
    };
    if hdr.image_size == 0 {
        return Err(ImageError::NoSize);
    }
    if hdr.flags & 1 != 0 {
        return Err(ImageError::BigEndian);
    }
    if !matches!((hdr.flags >> 1) & 3, 0 | 1) {
        return Err(ImageError::UnsupportedPageSize);
    }
    Ok(hdr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(text: u64, size: u64, flags: u64) -> [u8; 64] {
        let mut h = [0u8; 64];
        h[8..16].copy_from_slice(&text.to_le_bytes());
        h[16..24].copy_from_slice(&size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[0x38..0x3c].copy_from_slice(b"ARM\x64");
        h
    }

    #[test]
    fn header() {
        assert_eq!(
            parse(&hdr(0, 0x12_3000, 0b1010)),
            Ok(ImageHeader {
                text_offset: 0,
                image_size: 0x12_3000,
                flags: 0b1010
            })
        );
        assert_eq!(parse(&hdr(0, 0, 0)), Err(ImageError::NoSize));
        assert_eq!(parse(&hdr(0, 1, 1)), Err(ImageError::BigEndian));
        assert_eq!(
            parse(&hdr(0, 1, 0b100)),
            Err(ImageError::UnsupportedPageSize)
        );
        let mut h = hdr(0, 1, 0);
        h[0x38] = b'X';
        assert_eq!(parse(&h), Err(ImageError::NoMagic));
    }
}
