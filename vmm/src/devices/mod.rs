//! Emulated devices and the bus that dispatches MMIO exits to them by address.

pub mod bus;
pub mod pl011;
pub mod pl030;
pub mod superio;

/// A device behind a register window; offsets are relative to the window's base.
pub trait MmioDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// PrimeCell identification registers at 0xfe0..0xffc: peripheral ID 0..3 (one byte of
/// `periph` each, low first) then the PrimeCell ID 0xb105f00d, likewise.
pub fn primecell_id(offset: u64, periph: u32) -> Option<u32> {
    const CELL: u32 = 0xb105_f00d;
    match offset {
        0xfe0..=0xfef if offset % 4 == 0 => Some((periph >> (8 * ((offset - 0xfe0) / 4))) & 0xff),
        0xff0..=0xfff if offset % 4 == 0 => Some((CELL >> (8 * ((offset - 0xff0) / 4))) & 0xff),
        _ => None,
    }
}

/// A read of `data.len()` bytes at `offset` from a bank of 32-bit registers: narrower
/// reads see their bytes of the register, wider or straddling ones read the rest as 0.
pub fn read_reg32(offset: u64, data: &mut [u8], reg: impl FnOnce(u64) -> u32) {
    let value = reg(offset & !3).to_le_bytes();
    let skip = (offset & 3) as usize;
    for (i, b) in data.iter_mut().enumerate() {
        *b = value.get(skip + i).copied().unwrap_or(0);
    }
}

/// The value of a write to a 32-bit register: narrower writes are zero-extended (the
/// byte stores a UART driver may use for its data register).
pub fn write_value(data: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    for (d, s) in b.iter_mut().zip(data) {
        *d = *s;
    }
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primecell_ids() {
        let p = |o| primecell_id(o, 0x0004_1030);
        assert_eq!(
            [p(0xfe0), p(0xfe4), p(0xfe8), p(0xfec)],
            [Some(0x30), Some(0x10), Some(0x04), Some(0)]
        );
        assert_eq!(
            [p(0xff0), p(0xff4), p(0xff8), p(0xffc)],
            [Some(0x0d), Some(0xf0), Some(0x05), Some(0xb1)]
        );
        assert_eq!(p(0xfe2), None);
        assert_eq!(p(0xfdc), None);
    }

    #[test]
    fn narrow_and_wide_accesses() {
        let mut b = [0u8; 1];
        read_reg32(0x19, &mut b, |o| {
            assert_eq!(o, 0x18);
            0x1234_5678
        });
        assert_eq!(b, [0x56]);
        let mut w = [0xffu8; 8];
        read_reg32(0x0, &mut w, |_| 0x0403_0201);
        assert_eq!(w, [1, 2, 3, 4, 0, 0, 0, 0]);
        assert_eq!(write_value(&[0x41]), 0x41);
        assert_eq!(write_value(&[1, 2, 3, 4, 5]), 0x0403_0201);
    }
}
