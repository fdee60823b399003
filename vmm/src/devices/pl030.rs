//! An ARM PL030 real-time clock, as crosvm places one at 0x2000 on aarch64.
//!
//! Hand-written: vm-superio has only the PL031. The PL030's registers (Linux
//! drivers/rtc/rtc-pl030.c, crosvm devices/src/pl030.rs) are fewer than the PL031's and
//! at other offsets: DR 0x00 (the counter, in seconds), MR 0x04 (match), STAT 0x08 when
//! read / EOI 0x08 when written (interrupt status and its clear), LR 0x0c (load) and
//! CR 0x10 (bit 0: match interrupt enable). Its peripheral ID is 0x00041030. Alarms are
//! not implemented (as in crosvm): the match interrupt never rises, so STAT reads 0.

use super::{primecell_id, read_reg32, write_reg32, MmioDevice};

const DR: u64 = 0x00;
const MR: u64 = 0x04;
const STAT_EOI: u64 = 0x08;
const LR: u64 = 0x0c;
const CR: u64 = 0x10;
pub const PERIPH_ID: u32 = 0x0004_1030;

pub struct Pl030 {
    /// Seconds since the Unix epoch, from the host.
    now: fn() -> u64,
    /// The counter is `now() + offset` (wrapping at 32 bits).
    offset: i64,
    lr: u32,
    mr: u32,
    cr: u32,
}

pub fn host_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Pl030 {
    pub fn new(now: fn() -> u64) -> Self {
        Self {
            now,
            offset: 0,
            lr: 0,
            mr: 0,
            cr: 0,
        }
    }

    fn counter(&self) -> u32 {
        ((self.now)() as i64).wrapping_add(self.offset) as u32
    }

    fn reg(&self, offset: u64) -> u32 {
        match offset {
            DR => self.counter(),
            MR => self.mr,
            STAT_EOI => 0,
            LR => self.lr,
            CR => self.cr,
            _ => primecell_id(offset, PERIPH_ID).unwrap_or(0),
        }
    }
}

impl MmioDevice for Pl030 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_reg32(offset, data, |o| self.reg(o));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_reg32(offset, data, |o, v| self.write_reg(o, v));
    }
}

impl Pl030 {
    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            MR => self.mr = v,
            LR => {
                self.lr = v;
                self.offset = i64::from(v) - (self.now)() as i64;
            }
            CR => self.cr = v & 1,
            // DR is read-only, EOI clears an interrupt that never rises.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static NOW: AtomicU64 = AtomicU64::new(1_000_000);
    fn now() -> u64 {
        NOW.load(Ordering::Relaxed)
    }

    fn r32(d: &mut Pl030, o: u64) -> u32 {
        let mut b = [0u8; 4];
        d.read(o, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn counts_host_seconds_from_the_loaded_value() {
        let mut d = Pl030::new(now);
        let start = r32(&mut d, DR);
        d.write(LR, &500u32.to_le_bytes());
        assert_eq!(r32(&mut d, DR), 500);
        assert_eq!(r32(&mut d, LR), 500);
        NOW.fetch_add(7, Ordering::Relaxed);
        assert_eq!(r32(&mut d, DR), 507);
        d.write(DR, &0u32.to_le_bytes());
        assert_eq!(r32(&mut d, DR), 507, "DR is read-only");
        assert!(start >= 1_000_000);
    }

    #[test]
    fn match_and_control_read_back_status_stays_clear() {
        let mut d = Pl030::new(now);
        d.write(MR, &0x1234u32.to_le_bytes());
        d.write(CR, &0xffu32.to_le_bytes());
        assert_eq!((r32(&mut d, MR), r32(&mut d, CR)), (0x1234, 1));
        d.write(STAT_EOI, &1u32.to_le_bytes());
        assert_eq!(r32(&mut d, STAT_EOI), 0);
    }

    #[test]
    fn identifies_as_a_pl030() {
        let mut d = Pl030::new(now);
        let ids: Vec<u32> = (0..8).map(|i| r32(&mut d, 0xfe0 + 4 * i)).collect();
        assert_eq!(ids, [0x30, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
    }
}
