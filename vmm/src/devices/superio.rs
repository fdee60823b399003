//! vm-superio's 16550 UART and PL031 RTC on the bus.

use std::convert::Infallible;
use std::io::Write;

use vm_superio::serial::NoEvents as NoSerialEvents;
use vm_superio::{Rtc, Serial, Trigger};

use super::{read_reg32, write_reg32, MmioDevice};

/// The guest polls: a raised interrupt goes nowhere.
pub struct NoIrq;

impl Trigger for NoIrq {
    type E = Infallible;
    fn trigger(&self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// A 16550 with byte registers at stride 1 (crosvm's: no reg-shift).
pub struct Uart16550<W: Write + Send>(pub Serial<NoIrq, NoSerialEvents, W>);

impl<W: Write + Send> Uart16550<W> {
    pub fn new(out: W) -> Self {
        Self(Serial::new(NoIrq, out))
    }
}

impl<W: Write + Send> MmioDevice for Uart16550<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(o)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.0.read(o);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&v), Ok(o)) = (data.first(), u8::try_from(offset)) {
            // Only the output can fail (a closed stdout): the guest goes on regardless.
            let _ = self.0.write(o, v);
            if o == 0 && v == b'\n' {
                let _ = self.0.writer_mut().flush();
            }
        }
    }
}

pub struct Pl031(pub Rtc<vm_superio::rtc_pl031::NoEvents>);

impl Pl031 {
    pub fn new() -> Self {
        Self(Rtc::new())
    }
}

impl MmioDevice for Pl031 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_reg32(offset, data, |o| {
            let mut b = [0u8; 4];
            if let Ok(o) = u16::try_from(o) {
                self.0.read(o, &mut b);
            }
            u32::from_le_bytes(b)
        });
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_reg32(offset, data, |o, v| {
            if let Ok(o) = u16::try_from(o) {
                self.0.write(o, &v.to_le_bytes());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uart_transmits_and_reports_an_empty_transmitter() {
        let mut u = Uart16550::new(Vec::new());
        u.write(0, b"h");
        u.write(0, b"i");
        let mut lsr = [0u8];
        u.read(5, &mut lsr);
        assert_eq!(lsr[0] & 0x60, 0x60, "THR empty and idle");
        assert_eq!(u.0.writer(), b"hi");
        // A wide read sees the register in its low byte only.
        let mut wide = [0xffu8; 4];
        u.read(5, &mut wide);
        assert_eq!(wide[1..], [0, 0, 0]);
        // Out of any 8-bit offset: ignored, reads 0.
        u.write(0x1_0000, b"x");
        assert_eq!(u.0.writer(), b"hi");
    }

    #[test]
    fn pl031_match_register_reads_back_and_ids_answer() {
        let mut r = Pl031::new();
        r.write(4, &0xabcdu32.to_le_bytes());
        let mut b = [0u8; 4];
        r.read(4, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0xabcd);
        r.read(0xfe0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x31);
        let mut one = [0u8; 1];
        r.read(0xfe0, &mut one);
        assert_eq!(one, [0x31]);
        // A 64-bit read spans two ID registers, as on QEMU.
        let mut wide = [0u8; 8];
        r.read(0xfe0, &mut wide);
        assert_eq!(u64::from_le_bytes(wide), 0x10_0000_0031);
    }
}
