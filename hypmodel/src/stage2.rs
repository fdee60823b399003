//! Stage-2 translation tables (4 KiB granule, walk starting at level 0): guest RAM
//! identity-mapped read/write/execute as normal write-back memory; everything else absent,
//! so every device access and every access to hypmodel's own memory is a stage-2 fault.
//!
//! Tables come from a pool whose physical address is known, so the same code builds real
//! tables at EL2 and checkable ones on the host.

pub const ENTRIES: usize = 512;
pub type Table = [u64; ENTRIES];

const VALID: u64 = 1;
const TABLE: u64 = 0b11;
const BLOCK: u64 = 0b01;
const PAGE: u64 = 0b11;
/// MemAttr = 0b1111 (normal, inner and outer write-back), S2AP = RW, SH = inner, AF.
const NORMAL_RW: u64 = (0b1111 << 2) | (0b11 << 6) | (0b11 << 8) | (1 << 10);
const ADDR_MASK: u64 = 0x0000_FFFF_FFFF_F000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage2Error {
    OutOfTables,
    Misaligned,
}

impl core::fmt::Display for Stage2Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Stage2Error::OutOfTables => "out of stage-2 tables",
            Stage2Error::Misaligned => "not 4 KiB aligned",
        })
    }
}

pub struct Builder<'t> {
    pool: &'t mut [Table],
    pool_pa: u64,
    used: usize,
}

impl<'t> Builder<'t> {
    /// `pool[i]` lives at physical address `pool_pa + i * 4096`; `pool[0]` becomes the root.
    pub fn new(pool: &'t mut [Table], pool_pa: u64) -> Result<Self, Stage2Error> {
        if pool.is_empty() {
            return Err(Stage2Error::OutOfTables);
        }
        pool[0] = [0; ENTRIES];
        Ok(Builder {
            pool,
            pool_pa,
            used: 1,
        })
    }

    pub fn root_pa(&self) -> u64 {
        self.pool_pa
    }

    pub fn tables_used(&self) -> usize {
        self.used
    }

    fn index_of(&self, pa: u64) -> usize {
        ((pa - self.pool_pa) / 4096) as usize
    }

    /// The next-level table behind entry `i` of table `t`, made if absent.
    fn next(&mut self, t: usize, i: usize) -> Result<usize, Stage2Error> {
        let d = self.pool[t][i];
        if d & VALID != 0 {
            return Ok(self.index_of(d & ADDR_MASK));
        }
        if self.used == self.pool.len() {
            return Err(Stage2Error::OutOfTables);
        }
        let n = self.used;
        self.used += 1;
        self.pool[n] = [0; ENTRIES];
        self.pool[t][i] = (self.pool_pa + n as u64 * 4096) | TABLE;
        Ok(n)
    }

    /// Identity-maps `[base, base + size)`, with 1 GiB and 2 MiB blocks where aligned.
    pub fn map_ram(&mut self, base: u64, size: u64) -> Result<(), Stage2Error> {
        if !base.is_multiple_of(4096) || !size.is_multiple_of(4096) {
            return Err(Stage2Error::Misaligned);
        }
        let mut a = base;
        let end = base + size;
        while a < end {
            let l0 = self.next(0, ((a >> 39) & 511) as usize)?;
            let l1i = ((a >> 30) & 511) as usize;
            if a.is_multiple_of(1 << 30) && end - a >= 1 << 30 {
                self.pool[l0][l1i] = a | NORMAL_RW | BLOCK;
                a += 1 << 30;
                continue;
            }
            let l1 = self.next(l0, l1i)?;
            let l2i = ((a >> 21) & 511) as usize;
            if a.is_multiple_of(1 << 21) && end - a >= 1 << 21 {
                self.pool[l1][l2i] = a | NORMAL_RW | BLOCK;
                a += 1 << 21;
                continue;
            }
            let l2 = self.next(l1, l2i)?;
            self.pool[l2][((a >> 12) & 511) as usize] = a | NORMAL_RW | PAGE;
            a += 4096;
        }
        Ok(())
    }

    /// Walks the tables like the MMU: the output address for `ipa`, if mapped.
    pub fn translate(&self, ipa: u64) -> Option<u64> {
        let mut t = 0usize;
        for level in 0..4 {
            let shift = 39 - 9 * level;
            let d = self.pool[t][((ipa >> shift) & 511) as usize];
            if d & VALID == 0 {
                return None;
            }
            if level == 3 || d & 0b10 == 0 {
                if level == 0 || (level == 3 && d & 0b10 == 0) {
                    return None; // no blocks at level 0; a level-3 "block" is invalid
                }
                let mask = (1u64 << shift) - 1;
                return Some((d & ADDR_MASK & !mask) | (ipa & mask));
            }
            t = self.index_of(d & ADDR_MASK);
        }
        None
    }
}

/// VTCR_EL2 for a walk starting at level 0 with 4 KiB granule, `ipa_bits` of IPA,
/// write-back inner-shareable walks, physical size code `ps`.
pub fn vtcr(ipa_bits: u32, ps: u64) -> u64 {
    let t0sz = u64::from(64 - ipa_bits);
    t0sz | (2 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (ps << 16) | (1 << 31)
}

/// PARange code (ID_AA64MMFR0_EL1[3:0]) to bits; capped at 48, the most a 4 KiB-granule
/// stage 2 without LPA2 can translate.
pub fn parange_bits(code: u64) -> (u32, u64) {
    match code & 0xf {
        0 => (32, 0),
        1 => (36, 1),
        2 => (40, 2),
        3 => (42, 3),
        4 => (44, 4),
        _ => (48, 5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Vec<Table> {
        vec![[0u64; ENTRIES]; n]
    }

    #[test]
    fn guest_ram_around_the_hole() {
        let mut p = pool(16);
        let mut b = Builder::new(&mut p, 0x4030_0000).unwrap();
        // 512 MiB at 0x4000_0000 minus [0x4020_0000, 0x4060_0000).
        b.map_ram(0x4000_0000, 0x20_0000).unwrap();
        b.map_ram(0x4060_0000, 0x1fa0_0000).unwrap();
        assert_eq!(b.tables_used(), 3, "L0, L1, one L2 with 2 MiB blocks");
        assert_eq!(b.translate(0x4000_0000), Some(0x4000_0000));
        assert_eq!(b.translate(0x401f_fff8), Some(0x401f_fff8));
        assert_eq!(
            b.translate(0x4020_0000),
            None,
            "hypmodel's memory is absent"
        );
        assert_eq!(b.translate(0x405f_ffff), None);
        assert_eq!(b.translate(0x4060_0000), Some(0x4060_0000));
        assert_eq!(b.translate(0x5fff_fff0), Some(0x5fff_fff0));
        assert_eq!(b.translate(0x6000_0000), None, "past RAM");
        assert_eq!(b.translate(0x0900_0000), None, "devices are absent");
        assert_eq!(b.translate(0x0901_0fe0), None);
        let l1 = b.pool[1][1];
        assert_eq!(l1 & 3, TABLE);
        let blk = b.pool[2][0];
        assert_eq!(
            blk,
            0x4000_0000 | (0b1111 << 2) | (3 << 6) | (3 << 8) | (1 << 10) | 1
        );
    }

    #[test]
    fn gigabyte_blocks_and_pages() {
        let mut p = pool(8);
        let mut b = Builder::new(&mut p, 0x1000_0000).unwrap();
        b.map_ram(0x4000_0000, 0x4000_3000).unwrap(); // 1 GiB + 3 pages
        assert_eq!(b.translate(0x7fff_ffff), Some(0x7fff_ffff));
        assert_eq!(b.pool[1][1] & 3, BLOCK, "1 GiB block at level 1");
        assert_eq!(b.translate(0x8000_2ff0), Some(0x8000_2ff0));
        assert_eq!(b.translate(0x8000_3000), None);
        assert_eq!(b.map_ram(0x1001, 0x1000), Err(Stage2Error::Misaligned));
    }

    #[test]
    fn out_of_tables_is_an_error() {
        let mut p = pool(3);
        let mut b = Builder::new(&mut p, 0).unwrap();
        assert_eq!(
            b.map_ram(0x4000_0000, 0x1000),
            Err(Stage2Error::OutOfTables)
        );
    }

    #[test]
    fn vtcr_values() {
        assert_eq!(parange_bits(5), (48, 5));
        assert_eq!(
            parange_bits(6),
            (48, 5),
            "52-bit PA still gives a 48-bit IPA"
        );
        assert_eq!(parange_bits(2), (40, 2));
        let v = vtcr(48, 5);
        assert_eq!(v & 0x3f, 16);
        assert_eq!((v >> 6) & 3, 2, "SL0 = level 0");
        assert_eq!((v >> 16) & 7, 5);
        assert_eq!(v >> 31 & 1, 1);
    }
}
