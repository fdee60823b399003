//! Stage-2 translation tables (4 KiB granule): guest RAM identity-mapped read/write/execute
//! as normal write-back memory; everything else absent, so every device access and every
//! access to hypmodel's own memory is a stage-2 fault.
//!
//! The walk's shape follows the CPU's physical address size (ID_AA64MMFR0_EL1.PARange):
//! 44 bits or more start at level 0 (one root table, IPA capped at 48 bits without LPA2);
//! 40 and 42 bits start at level 1 with 2 or 8 concatenated root tables, because a level-0
//! start needs a PA size of at least 44 bits (Arm ARM, VTCR_EL2.SL0); 32 and 36 bits start
//! at level 1 with one table.
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
    /// The range lies beyond the IPA size the tables translate.
    BeyondIpa,
}

/// The most root tables a level-1 start concatenates here (42-bit IPA).
pub const MAX_ROOT_TABLES: usize = 8;

/// The stage-2 walk for one PA size: IPA bits, VTCR_EL2.PS, first level, root tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub ipa_bits: u32,
    pub ps: u64,
    /// 0 or 1.
    pub start_level: u32,
    /// Concatenated root tables (level-1 start only; 1 for a level-0 start).
    pub root_tables: usize,
}

impl Geometry {
    /// From ID_AA64MMFR0_EL1.PARange (bits [3:0]); codes above 48 bits (52-bit PA, LPA)
    /// are capped at 48 bits, the most a 4 KiB-granule stage 2 without LPA2 translates.
    pub fn of_parange(code: u64) -> Geometry {
        let (ipa_bits, ps) = parange_bits(code);
        let (start_level, root_tables) = match ipa_bits {
            44.. => (0, 1),
            40 => (1, 2),
            42 => (1, 8),
            _ => (1, 1),
        };
        Geometry {
            ipa_bits,
            ps,
            start_level,
            root_tables,
        }
    }

    /// VTCR_EL2: T0SZ for `ipa_bits`, SL0 for the first level, 4 KiB granule, write-back
    /// inner-shareable walks, PS.
    pub fn vtcr(&self) -> u64 {
        let t0sz = u64::from(64 - self.ipa_bits);
        let sl0: u64 = if self.start_level == 0 { 2 } else { 1 };
        t0sz | (sl0 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (self.ps << 16) | (1 << 31)
    }

    /// The alignment VTTBR_EL2's base needs: the size of the concatenated root.
    pub fn root_align(&self) -> u64 {
        self.root_tables as u64 * 4096
    }
}

impl core::fmt::Display for Stage2Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Stage2Error::OutOfTables => "out of stage-2 tables",
            Stage2Error::Misaligned => "not 4 KiB aligned",
            Stage2Error::BeyondIpa => "beyond the IPA size",
        })
    }
}

pub struct Builder<'t> {
    pool: &'t mut [Table],
    pool_pa: u64,
    used: usize,
    geo: Geometry,
}

impl<'t> Builder<'t> {
    /// `pool[i]` lives at physical address `pool_pa + i * 4096`; the first
    /// `geo.root_tables` tables become the root (`pool_pa` must be `geo.root_align()`
    /// aligned).
    pub fn new(pool: &'t mut [Table], pool_pa: u64, geo: Geometry) -> Result<Self, Stage2Error> {
        if pool.len() < geo.root_tables {
            return Err(Stage2Error::OutOfTables);
        }
        if !pool_pa.is_multiple_of(geo.root_align()) {
            return Err(Stage2Error::Misaligned);
        }
        for t in &mut pool[..geo.root_tables] {
            *t = [0; ENTRIES];
        }
        Ok(Builder {
            pool,
            pool_pa,
            used: geo.root_tables,
            geo,
        })
    }

    /// The level-1 table for `ipa`: behind the root's level-0 entry, or one of the
    /// concatenated roots (made if absent only for a level-0 start).
    fn level1(&mut self, ipa: u64) -> Result<usize, Stage2Error> {
        if ipa >> self.geo.ipa_bits != 0 {
            return Err(Stage2Error::BeyondIpa);
        }
        if self.geo.start_level == 1 {
            return Ok((ipa >> 39) as usize);
        }
        self.next(0, ((ipa >> 39) & 511) as usize)
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
        if end > 1 << self.geo.ipa_bits {
            return Err(Stage2Error::BeyondIpa);
        }
        while a < end {
            let l0 = self.level1(a)?;
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
        if ipa >> self.geo.ipa_bits != 0 {
            return None;
        }
        let mut t = 0usize;
        if self.geo.start_level == 1 {
            t = (ipa >> 39) as usize;
        }
        for level in self.geo.start_level as usize..4 {
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
        let mut b = Builder::new(&mut p, 0x4030_0000, Geometry::of_parange(5)).unwrap();
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
        let mut b = Builder::new(&mut p, 0x1000_0000, Geometry::of_parange(5)).unwrap();
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
        let mut b = Builder::new(&mut p, 0, Geometry::of_parange(5)).unwrap();
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
        let v = Geometry::of_parange(5).vtcr();
        assert_eq!(v & 0x3f, 16);
        assert_eq!((v >> 6) & 3, 2, "SL0 = level 0");
        assert_eq!((v >> 16) & 7, 5);
        assert_eq!(v >> 31 & 1, 1);
        // cortex-a53/a76/a64fx: 40-bit PA. Level 0 would need 44 bits: level 1, two tables.
        let g = Geometry::of_parange(2);
        assert_eq!(
            (g.start_level, g.root_tables, g.root_align()),
            (1, 2, 0x2000)
        );
        let v = g.vtcr();
        assert_eq!(v & 0x3f, 24, "T0SZ for 40 bits");
        assert_eq!((v >> 6) & 3, 1, "SL0 = level 1");
        assert_eq!((v >> 16) & 7, 2, "PS = 40 bits");
        assert_eq!(Geometry::of_parange(3).root_tables, 8, "42 bits: 8 tables");
        let g = Geometry::of_parange(4);
        assert_eq!((g.ipa_bits, g.start_level, g.vtcr() & 0x3f), (44, 0, 20));
        assert_eq!(Geometry::of_parange(1).vtcr() & 0x3f, 28, "36 bits");
    }

    #[test]
    fn level1_start_with_concatenated_roots() {
        let mut p = pool(8);
        let g = Geometry::of_parange(2);
        let mut b = Builder::new(&mut p, 0x4030_0000, g).unwrap();
        b.map_ram(0x4000_0000, 0x20_0000).unwrap();
        b.map_ram(0x80_4000_0000, 0x1000).unwrap(); // second root table (bit 39 set)
        assert_eq!(
            b.tables_used(),
            2 + 1 + 1 + 1,
            "2 roots, 1 L2, then L2 + L3"
        );
        assert_eq!(
            b.pool[0][1] & 3,
            TABLE,
            "root 0, entry 1: level-1 table entry"
        );
        assert_eq!(b.translate(0x4010_0000), Some(0x4010_0000));
        assert_eq!(b.translate(0x80_4000_0ff8), Some(0x80_4000_0ff8));
        assert_eq!(b.translate(0x80_4000_1000), None);
        assert_eq!(b.translate(1 << 40), None, "beyond 40 bits");
        assert_eq!(
            b.map_ram(0xff_ffff_f000, 0x2000),
            Err(Stage2Error::BeyondIpa)
        );
        assert!(
            Builder::new(&mut pool(2), 0x1000, g).is_err(),
            "root misaligned"
        );
    }

    /// Non-zero entries of table `t`, as (index, descriptor).
    fn entries(b: &Builder<'_>, t: usize) -> Vec<(usize, u64)> {
        (0..ENTRIES)
            .filter(|&i| b.pool[t][i] != 0)
            .map(|i| (i, b.pool[t][i]))
            .collect()
    }

    #[test]
    fn geometry_and_vtcr_for_every_parange() {
        assert_eq!(NORMAL_RW, 0x7fc, "MemAttr 0b1111, S2AP RW, SH inner, AF");
        // (code, ipa_bits, ps, start level, root tables, VTCR_EL2): T0SZ, SL0, IRGN0 = ORGN0 =
        // write-back (01), SH0 = inner (11), TG0 = 4 KiB (00), PS, bit 31 RES1.
        let expected = [
            (0, 32, 0, 1, 1, 0x8000_3560),
            (1, 36, 1, 1, 1, 0x8001_355c),
            (2, 40, 2, 1, 2, 0x8002_3558),
            (3, 42, 3, 1, 8, 0x8003_3556),
            (4, 44, 4, 0, 1, 0x8004_3594),
            (5, 48, 5, 0, 1, 0x8005_3590),
            (6, 48, 5, 0, 1, 0x8005_3590),
            (15, 48, 5, 0, 1, 0x8005_3590),
            (0x10, 32, 0, 1, 1, 0x8000_3560),
        ];
        for (code, ipa_bits, ps, start_level, root_tables, vtcr) in expected {
            assert_eq!(parange_bits(code), (ipa_bits, ps), "PARange {code}");
            let g = Geometry::of_parange(code);
            assert_eq!(
                g,
                Geometry {
                    ipa_bits,
                    ps,
                    start_level,
                    root_tables
                },
                "PARange {code}"
            );
            assert_eq!(g.vtcr(), vtcr, "VTCR_EL2 for PARange {code}");
            assert_eq!(g.root_align(), root_tables as u64 * 0x1000);
        }
        assert_eq!(Geometry::of_parange(3).root_align(), 0x8000);
    }

    #[test]
    fn errors_are_named() {
        assert_eq!(
            Stage2Error::OutOfTables.to_string(),
            "out of stage-2 tables"
        );
        assert_eq!(Stage2Error::Misaligned.to_string(), "not 4 KiB aligned");
        assert_eq!(Stage2Error::BeyondIpa.to_string(), "beyond the IPA size");
        let g = Geometry::of_parange(3);
        assert!(matches!(
            Builder::new(&mut pool(7), 0, g),
            Err(Stage2Error::OutOfTables)
        ));
        assert!(matches!(
            Builder::new(&mut pool(8), 0x4000, g),
            Err(Stage2Error::Misaligned)
        ));
        let mut p = pool(8);
        let mut b = Builder::new(&mut p, 0x8000, g).unwrap();
        assert_eq!(b.map_ram(0x4000_0000, 0x800), Err(Stage2Error::Misaligned));
        assert_eq!(b.map_ram(0x4000_0800, 0x1000), Err(Stage2Error::Misaligned));
        assert_eq!(b.tables_used(), 8);
    }

    #[test]
    fn exact_descriptors_of_blocks_pages_and_tables() {
        let mut p = pool(8);
        let mut b = Builder::new(&mut p, 0x4030_0000, Geometry::of_parange(5)).unwrap();
        assert_eq!(b.root_pa(), 0x4030_0000);
        assert_eq!(b.tables_used(), 1);
        b.map_ram(0x4000_0000, 0x4000_0000).unwrap(); // one 1 GiB block
        b.map_ram(0x8000_0000, 0x20_2000).unwrap(); // a 2 MiB block and two pages
        assert_eq!(b.tables_used(), 4, "root, L1, L2, L3");
        assert_eq!(entries(&b, 0), [(0, 0x4030_1000 | 0b11)], "root -> L1");
        assert_eq!(
            entries(&b, 1),
            [(1, 0x4000_0000 | 0x7fc | 0b01), (2, 0x4030_2000 | 0b11)],
            "L1: 1 GiB block, then -> L2"
        );
        assert_eq!(
            entries(&b, 2),
            [(0, 0x8000_0000 | 0x7fc | 0b01), (1, 0x4030_3000 | 0b11)],
            "L2: 2 MiB block, then -> L3"
        );
        assert_eq!(
            entries(&b, 3),
            [
                (0, 0x8020_0000 | 0x7fc | 0b11),
                (1, 0x8020_1000 | 0x7fc | 0b11)
            ],
            "L3: two pages"
        );
        assert_eq!(b.translate(0x4000_0000), Some(0x4000_0000));
        assert_eq!(b.translate(0x7fff_fffc), Some(0x7fff_fffc));
        assert_eq!(b.translate(0x801f_fffc), Some(0x801f_fffc));
        assert_eq!(b.translate(0x8020_1abc), Some(0x8020_1abc));
        assert_eq!(b.translate(0x8020_2000), None);
        assert_eq!(b.translate(0x3fff_ffff), None);
        assert_eq!(b.translate(0), None);
        // Mapping again inside existing tables reuses them.
        b.map_ram(0x8040_0000, 0x1000).unwrap();
        assert_eq!(b.tables_used(), 5, "a second L3 only");
        assert_eq!(entries(&b, 2)[2], (2, 0x4030_4000 | 0b11));
        assert_eq!(entries(&b, 4), [(0, 0x8040_0000 | 0x7ff)]);
        assert_eq!(b.translate(0x8040_0010), Some(0x8040_0010));
    }

    #[test]
    fn level0_start_above_512_gib_and_at_the_top() {
        let mut p = pool(12);
        let mut b = Builder::new(&mut p, 0x1_0000_0000, Geometry::of_parange(5)).unwrap();
        b.map_ram(0x4000_0000, 0x1000).unwrap();
        b.map_ram(0x80_4000_0000, 0x1000).unwrap(); // root entry 1
        b.map_ram(0xffff_ffff_f000, 0x1000).unwrap(); // root entry 511, ends at 1 << 48
        let root: Vec<usize> = entries(&b, 0).iter().map(|e| e.0).collect();
        assert_eq!(root, [0, 1, 511]);
        assert_eq!(b.translate(0x4000_0ff0), Some(0x4000_0ff0));
        assert_eq!(b.translate(0x80_4000_0ff0), Some(0x80_4000_0ff0));
        assert_eq!(b.translate(0xffff_ffff_fff8), Some(0xffff_ffff_fff8));
        assert_eq!(b.translate(0x80_4000_1000), None);
        assert_eq!(b.translate(0x80_0000_0000), None);
        assert_eq!(b.translate(0xc0_4000_0000), None, "root entry 1 only");
        assert_eq!(b.translate(1 << 48), None, "beyond 48 bits");
        assert_eq!(
            b.map_ram(0xffff_ffff_f000, 0x2000),
            Err(Stage2Error::BeyondIpa)
        );
    }

    #[test]
    fn level1_start_edges_32_and_42_bits() {
        // 32 bits: one root table, the last page of the IPA space is mappable.
        let mut p = pool(4);
        let mut b = Builder::new(&mut p, 0x1000, Geometry::of_parange(0)).unwrap();
        b.map_ram(0xffff_f000, 0x1000).unwrap();
        assert_eq!(b.translate(0xffff_f123), Some(0xffff_f123));
        assert_eq!(b.translate(1 << 32), None);
        // A range that crosses the end is refused before anything is mapped.
        assert_eq!(b.map_ram(0xffff_d000, 0x4000), Err(Stage2Error::BeyondIpa));
        assert_eq!(b.translate(0xffff_d000), None);
        assert_eq!(b.translate(0xffff_e000), None);
        assert_eq!(b.tables_used(), 3);
        // 42 bits: eight concatenated roots; the last one holds the top of the IPA space.
        let mut p = pool(12);
        let mut b = Builder::new(&mut p, 0x4030_0000, Geometry::of_parange(3)).unwrap();
        b.map_ram(0x3ff_ffe0_0000, 0x20_0000).unwrap();
        assert_eq!(entries(&b, 7), [(511, 0x4030_8000 | 0b11)]);
        assert_eq!(
            entries(&b, 8),
            [(511, 0x3ff_ffe0_0000 | 0x7fc | 0b01)],
            "2 MiB block"
        );
        for t in 0..7 {
            assert!(entries(&b, t).is_empty(), "root {t} untouched");
        }
        assert_eq!(b.translate(0x3ff_ffff_fffc), Some(0x3ff_ffff_fffc));
        assert_eq!(b.translate(0x1ff_ffff_fffc), None);
        assert_eq!(b.translate(1 << 42), None);
    }

    #[test]
    fn walk_refuses_invalid_descriptors() {
        let mut p = pool(8);
        let mut b = Builder::new(&mut p, 0x4030_0000, Geometry::of_parange(5)).unwrap();
        b.map_ram(0x4000_0000, 0x1000).unwrap();
        assert_eq!(b.translate(0x4000_0abc), Some(0x4000_0abc));
        assert_eq!(entries(&b, 3), [(0, 0x4000_0000 | 0x7ff)]);
        // A level-3 entry with bit 1 clear is reserved (there are no level-3 blocks).
        b.pool[3][0] = 0x4000_0000 | NORMAL_RW | BLOCK;
        assert_eq!(b.translate(0x4000_0abc), None);
        // A level-0 "block" does not exist with a 4 KiB granule.
        b.pool[0][2] = 0x100_0000_0000 | NORMAL_RW | BLOCK;
        assert_eq!(b.translate(0x100_0000_0abc), None);
        // An invalid entry (bit 0 clear) with an address in it.
        b.pool[0][3] = 0x180_0000_0000 | NORMAL_RW | 0b10;
        assert_eq!(b.translate(0x180_0000_0abc), None);
    }
}
