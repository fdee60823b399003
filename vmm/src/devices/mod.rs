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
        0xfe0..=0xfef if offset.is_multiple_of(4) => {
            Some((periph >> (8 * ((offset - 0xfe0) / 4))) & 0xff)
        }
        0xff0..=0xfff if offset.is_multiple_of(4) => {
            Some((CELL >> (8 * ((offset - 0xff0) / 4))) & 0xff)
        }
        _ => None,
    }
}

/// A read of `data.len()` bytes at `offset` from a bank of 32-bit registers: each byte
/// comes from the register that holds it, so a narrow read sees its bytes of one register
/// and a 64-bit read two neighbouring registers (as QEMU splits it for such devices).
pub fn read_reg32(offset: u64, data: &mut [u8], mut reg: impl FnMut(u64) -> u32) {
    let mut cached: Option<(u64, [u8; 4])> = None;
    for (i, b) in data.iter_mut().enumerate() {
        let at = offset + i as u64;
        let aligned = at & !3;
        let bytes = match cached {
            Some((a, v)) if a == aligned => v,
            _ => {
                let v = reg(aligned).to_le_bytes();
                cached = Some((aligned, v));
                v
            }
        };
        *b = bytes[(at & 3) as usize];
    }
}

/// A write of `data` at `offset` to a bank of 32-bit registers, as the register writes
/// it makes: a wide write is split into its 32-bit halves, a narrow one at a register's
/// start is zero-extended (the byte stores a UART driver may use for its data register),
/// and a narrow one inside a register is dropped.
pub fn write_reg32(offset: u64, data: &[u8], mut reg: impl FnMut(u64, u32)) {
    if data.len() > 4 && offset.is_multiple_of(4) {
        for (i, chunk) in data.chunks(4).enumerate() {
            reg(offset + 4 * i as u64, write_value(chunk));
        }
    } else if offset.is_multiple_of(4) {
        reg(offset, write_value(data));
    }
}

/// The value of a write of at most 4 bytes, zero-extended.
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
        // A 64-bit read takes the next register as its upper half.
        let mut w = [0xffu8; 8];
        read_reg32(0xfe0, &mut w, |o| (o as u32) << 4);
        assert_eq!(u64::from_le_bytes(w), 0xfe40_0000_fe00);
        assert_eq!(write_value(&[0x41]), 0x41);
        let mut writes = Vec::new();
        write_reg32(0x8, &[1, 2, 3, 4, 5, 6, 7, 8], |o, v| writes.push((o, v)));
        write_reg32(0x0, &[0x41], |o, v| writes.push((o, v)));
        write_reg32(0x1, &[0x41], |o, v| writes.push((o, v)));
        assert_eq!(writes, [(0x8, 0x0403_0201), (0xc, 0x0807_0605), (0, 0x41)]);
    }
}
