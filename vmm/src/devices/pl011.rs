//! An ARM PL011 UART, transmit only.
//!
//! Hand-written: vm-superio has a 16550 and a PL031 but no PL011. The guest only writes;
//! the receive FIFO stays empty and the transmit FIFO is always empty (every byte goes
//! straight to the host's stdout), so no interrupt is ever raised.

use std::io::Write;

use super::{primecell_id, read_reg32, write_reg32, MmioDevice};

const DR: u64 = 0x000;
const RSR_ECR: u64 = 0x004;
const FR: u64 = 0x018;
const ILPR: u64 = 0x020;
const IBRD: u64 = 0x024;
const FBRD: u64 = 0x028;
const LCR_H: u64 = 0x02c;
const CR: u64 = 0x030;
const IFLS: u64 = 0x034;
const IMSC: u64 = 0x038;
const RIS: u64 = 0x03c;
const MIS: u64 = 0x040;
const ICR: u64 = 0x044;
const DMACR: u64 = 0x048;

const FR_RXFE: u32 = 1 << 4;
const FR_TXFE: u32 = 1 << 7;
/// PL011 r1p5 as QEMU models it: part 0x011, designer 0x41 ('A'), revision 1.
const PERIPH_ID: u32 = 0x0014_1011;

pub struct Pl011<W: Write + Send> {
    out: W,
    regs: [u32; 9],
}

/// Index of a plain read/write register in `regs`.
fn slot(offset: u64) -> Option<usize> {
    Some(match offset {
        ILPR => 0,
        IBRD => 1,
        FBRD => 2,
        LCR_H => 3,
        CR => 4,
        IFLS => 5,
        IMSC => 6,
        DMACR => 7,
        _ => return None,
    })
}

impl<W: Write + Send> Pl011<W> {
    pub fn new(out: W) -> Self {
        let mut regs = [0; 9];
        // Reset values: transmit and receive enabled, FIFO levels at half.
        regs[4] = 0x300;
        regs[5] = 0x12;
        Self { out, regs }
    }

    fn reg(&self, offset: u64) -> u32 {
        if let Some(i) = slot(offset) {
            return self.regs[i];
        }
        match offset {
            FR => FR_RXFE | FR_TXFE,
            // Nothing is ever pending: RIS, MIS, DR (empty FIFO) and RSR read 0.
            DR | RSR_ECR | RIS | MIS => 0,
            _ => primecell_id(offset, PERIPH_ID).unwrap_or(0),
        }
    }

    #[cfg(test)]
    pub fn out(&self) -> &W {
        &self.out
    }
}

impl<W: Write + Send> MmioDevice for Pl011<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_reg32(offset, data, |o| self.reg(o));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_reg32(offset, data, |o, v| self.write_reg(o, v));
    }
}

impl<W: Write + Send> Pl011<W> {
    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            DR => {
                // The console is best effort: a closed stdout must not stop the guest.
                let _ = self.out.write_all(&[v as u8]);
                if v as u8 == b'\n' {
                    let _ = self.out.flush();
                }
            }
            // ICR clears interrupts that never rise; RSR/ECR clears errors never set.
            ICR | RSR_ECR => {}
            o => {
                if let Some(i) = slot(o) {
                    self.regs[i] = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r32(u: &mut Pl011<Vec<u8>>, o: u64) -> u32 {
        let mut d = [0u8; 4];
        u.read(o, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn transmits_bytes_of_word_and_byte_writes() {
        let mut u = Pl011::new(Vec::new());
        u.write(DR, b"o\0\0\0");
        u.write(DR, b"k");
        assert_eq!(u.out(), b"ok");
    }

    #[test]
    fn always_ready_never_receives() {
        let mut u = Pl011::new(Vec::new());
        assert_eq!(r32(&mut u, FR), FR_TXFE | FR_RXFE);
        assert_eq!(r32(&mut u, DR), 0);
        assert_eq!(r32(&mut u, RIS), 0);
    }

    #[test]
    fn control_registers_read_back() {
        let mut u = Pl011::new(Vec::new());
        assert_eq!(r32(&mut u, CR), 0x300);
        u.write(CR, &0x301u32.to_le_bytes());
        u.write(IBRD, &13u32.to_le_bytes());
        u.write(IMSC, &0x50u32.to_le_bytes());
        assert_eq!((r32(&mut u, CR), r32(&mut u, IBRD)), (0x301, 13));
        assert_eq!(r32(&mut u, IMSC), 0x50);
        // Interrupts are masked in, but none is raised.
        assert_eq!(r32(&mut u, MIS), 0);
    }

    #[test]
    fn identifies_as_a_pl011() {
        let mut u = Pl011::new(Vec::new());
        let ids: Vec<u32> = (0..8).map(|i| r32(&mut u, 0xfe0 + 4 * i)).collect();
        assert_eq!(ids, [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
    }
}
