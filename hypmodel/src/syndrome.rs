//! Exception syndromes: decoding what EL2 receives, building what EL1 gets injected, and the
//! few instruction decodings the `no-syndrome-forward` mutant needs.

use crate::abi::*;

/// The parts of ESR_ELx every exception has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Esr {
    pub ec: u32,
    /// IL: 32-bit instruction.
    pub il: bool,
    pub iss: u32,
}

pub fn decode_esr(esr: u64) -> Esr {
    Esr {
        ec: ((esr >> 26) & 0x3f) as u32,
        il: esr & (1 << 25) != 0,
        iss: (esr & 0x1ff_ffff) as u32,
    }
}

/// A data abort's ISS (EC 0x24/0x25).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// ISV: the fields below up to `acquire_release` are valid.
    pub isv: bool,
    /// Access size in bytes (from SAS).
    pub size: u8,
    /// SSE: sign-extend the loaded value.
    pub sign_extend: bool,
    /// SRT: the transfer register, 31 = XZR.
    pub reg: u8,
    /// SF: the register is 64 bits wide (else 32).
    pub sixty_four: bool,
    pub acquire_release: bool,
    /// FnV: FAR is not valid.
    pub fnv: bool,
    pub ea: bool,
    /// CM: cache maintenance.
    pub cm: bool,
    /// S1PTW: the fault happened on a stage-1 table walk.
    pub s1ptw: bool,
    /// WnR: write.
    pub write: bool,
    pub dfsc: u8,
}

pub fn decode_dabt(iss: u32) -> DataAbort {
    DataAbort {
        isv: iss & (1 << 24) != 0,
        size: 1 << ((iss >> 22) & 3),
        sign_extend: iss & (1 << 21) != 0,
        reg: ((iss >> 16) & 0x1f) as u8,
        sixty_four: iss & (1 << 15) != 0,
        acquire_release: iss & (1 << 14) != 0,
        fnv: iss & (1 << 10) != 0,
        ea: iss & (1 << 9) != 0,
        cm: iss & (1 << 8) != 0,
        s1ptw: iss & (1 << 7) != 0,
        write: iss & (1 << 6) != 0,
        dfsc: (iss & 0x3f) as u8,
    }
}

impl DataAbort {
    /// A stage-2 translation fault (levels 0..3), the only kind hypmodel's unmapped pages make.
    pub fn is_translation_fault(&self) -> bool {
        self.dfsc & 0x3c == 0x04
    }
}

/// The IPA of a stage-2 fault: HPFAR_EL2.FIPA (bits 43:4 = IPA[51:12]) plus FAR's page offset.
pub fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    ((hpfar & 0x0000_0FFF_FFFF_FFF0) << 8) | (far & 0xfff)
}

/// The value a load writes to its register: sign-extended from `size` when SSE, then
/// truncated to 32 bits when the register is a W register.
pub fn load_result(raw: u64, d: &DataAbort) -> u64 {
    let bits = u32::from(d.size) * 8;
    let mut v = if bits == 64 {
        raw
    } else {
        raw & ((1u64 << bits) - 1)
    };
    if d.sign_extend && bits < 64 && v & (1u64 << (bits - 1)) != 0 {
        v |= !((1u64 << bits) - 1);
    }
    if !d.sixty_four {
        v &= 0xffff_ffff;
    }
    v
}

/// The value a store puts on the bus: the register's low `size` bytes.
pub fn store_value(reg: u64, size: u8) -> u64 {
    if size >= 8 {
        reg
    } else {
        reg & ((1u64 << (u32::from(size) * 8)) - 1)
    }
}

/// Where an exception injected into EL1 is taken, from the interrupted SPSR_EL2.M.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    El1h,
    El1t,
    El0A64,
    El0A32,
}

pub fn source_of(spsr: u64) -> Source {
    if spsr & 0x10 != 0 {
        return Source::El0A32;
    }
    match spsr & 0xf {
        0b0101 => Source::El1h,
        0b0100 => Source::El1t,
        _ => Source::El0A64,
    }
}

/// Offset of the synchronous vector in VBAR_EL1 for an exception from `src`.
pub fn sync_vector_offset(src: Source) -> u64 {
    match src {
        Source::El1t => 0x000,
        Source::El1h => 0x200,
        Source::El0A64 => 0x400,
        Source::El0A32 => 0x600,
    }
}

/// ESR_EL1 of an injected data abort with `dfsc` (ISV = 0, WnR = 0, FnV = 0).
pub fn injected_dabt_esr(src: Source, dfsc: u32) -> u32 {
    let ec = if matches!(src, Source::El1h | Source::El1t) {
        EC_DABT_CUR
    } else {
        EC_DABT_LOW
    };
    (ec << ESR_EC_SHIFT) | ESR_IL | dfsc
}

/// ESR_EL1 of an injected instruction abort (external abort on fetch).
pub fn injected_iabt_esr(src: Source) -> u32 {
    let ec = if matches!(src, Source::El1h | Source::El1t) {
        EC_IABT_CUR
    } else {
        EC_IABT_LOW
    };
    (ec << ESR_EC_SHIFT) | ESR_IL | DFSC_EXTABT
}

/// ESR_EL1 for an undefined instruction (EC 0).
pub fn injected_undef_esr() -> u32 {
    (EC_UNKNOWN << ESR_EC_SHIFT) | ESR_IL
}

/// PSTATE on entry to EL1h for an injected exception: D, A, I, F masked; PAN set unless
/// SCTLR_EL1.SPAN; SSBS from SCTLR_EL1.DSSBS; everything else clear.
pub fn injected_spsr(old_spsr: u64, sctlr_el1: u64) -> u64 {
    /// M = EL1h (0b0101) with D, A, I, F set.
    const EL1H_DAIF_MASKED: u64 = 0x3c5;
    const PAN: u64 = 1 << 22;
    const SSBS: u64 = 1 << 12;
    const SCTLR_SPAN: u64 = 1 << 23;
    const SCTLR_DSSBS: u64 = 1 << 44;
    let mut n = EL1H_DAIF_MASKED;
    if sctlr_el1 & SCTLR_SPAN == 0 {
        n |= PAN;
    } else {
        n |= old_spsr & PAN;
    }
    if sctlr_el1 & SCTLR_DSSBS != 0 {
        n |= SSBS;
    }
    n
}

/// A load/store pair (LDP/STP of W or X registers) decoded from its encoding, for the
/// `no-syndrome-forward` mutant which "emulates" accesses that carry no syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairAccess {
    pub load: bool,
    /// 4 or 8.
    pub size: u8,
    pub rt: u8,
    pub rt2: u8,
    pub rn: u8,
    /// Byte offset added to the base.
    pub offset: i64,
    /// Pre-index (address = base + offset, base updated), post-index (address = base,
    /// base += offset), or signed offset (no writeback).
    pub mode: PairMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairMode {
    Offset,
    PreIndex,
    PostIndex,
}

pub fn decode_pair(insn: u32) -> Option<PairAccess> {
    // opc(31:30) 101 V(26)=0 mode(24:23) L(22) imm7(21:15) Rt2(14:10) Rn(9:5) Rt(4:0)
    if (insn >> 27) & 0x7 != 0b101 || insn & (1 << 26) != 0 {
        return None;
    }
    let size = match insn >> 30 {
        0b00 => 4,
        0b10 => 8,
        _ => return None, // LDPSW and reserved forms are not modelled
    };
    let mode = match (insn >> 23) & 3 {
        0b01 => PairMode::PostIndex,
        0b10 => PairMode::Offset,
        0b11 => PairMode::PreIndex,
        _ => return None, // non-temporal pairs
    };
    let imm7 = ((insn >> 15) & 0x7f) as i64;
    let imm7 = if imm7 & 0x40 != 0 { imm7 - 0x80 } else { imm7 };
    Some(PairAccess {
        load: insn & (1 << 22) != 0,
        size,
        rt: (insn & 0x1f) as u8,
        rt2: ((insn >> 10) & 0x1f) as u8,
        rn: ((insn >> 5) & 0x1f) as u8,
        offset: imm7 * i64::from(size),
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldr_w_syndrome_as_qemu_reports_it() {
        // ldr w9, [x0]: ISV, SAS=2 (word), SRT=9, SF=0, WnR=0, DFSC = level-3 translation.
        let iss = (1 << 24) | (2 << 22) | (9 << 16) | 0x07;
        let d = decode_dabt(iss);
        assert!(d.isv && !d.write && !d.sign_extend && !d.sixty_four);
        assert_eq!((d.size, d.reg, d.dfsc), (4, 9, 7));
        assert!(d.is_translation_fault());
        let e = decode_esr((0x24u64 << 26) | (1 << 25) | u64::from(iss));
        assert_eq!((e.ec, e.il, e.iss), (0x24, true, iss));
    }

    #[test]
    fn store_byte_and_ldp_syndromes() {
        let d = decode_dabt((1 << 24) | (3 << 16) | (1 << 6) | 0x06);
        assert!(d.isv && d.write);
        assert_eq!((d.size, d.reg), (1, 3));
        // An LDP arrives with ISV = 0.
        let d = decode_dabt(0x07);
        assert!(!d.isv && d.is_translation_fault());
        assert!(!decode_dabt(0x10).is_translation_fault());
        assert!(decode_dabt(1 << 8).cm && decode_dabt(1 << 7).s1ptw && decode_dabt(1 << 10).fnv);
    }

    #[test]
    fn load_sign_extension_and_width() {
        let mk = |size: u8, sse: bool, sf: bool| DataAbort {
            size,
            sign_extend: sse,
            sixty_four: sf,
            ..decode_dabt(0)
        };
        assert_eq!(load_result(0xff, &mk(1, false, false)), 0xff);
        assert_eq!(load_result(0xff, &mk(1, true, false)), 0xffff_ffff);
        assert_eq!(load_result(0xff, &mk(1, true, true)), u64::MAX);
        assert_eq!(
            load_result(0x8000, &mk(2, true, true)),
            0xffff_ffff_ffff_8000
        );
        assert_eq!(load_result(0x7fff, &mk(2, true, true)), 0x7fff);
        assert_eq!(
            load_result(0x8000_0000, &mk(4, true, true)),
            0xffff_ffff_8000_0000
        );
        assert_eq!(load_result(0x1_2345_6789, &mk(4, false, true)), 0x2345_6789);
        assert_eq!(load_result(u64::MAX, &mk(8, false, true)), u64::MAX);
        assert_eq!(store_value(0x1122_3344_5566_7788, 2), 0x7788);
        assert_eq!(store_value(0x1122_3344_5566_7788, 8), 0x1122_3344_5566_7788);
    }

    #[test]
    fn ipa_from_hpfar() {
        assert_eq!(fault_ipa(0x9010 << 4, 0x0901_0fe0), 0x0901_0fe0);
        assert_eq!(
            fault_ipa(0x12_3456_7890 << 4, 0xffff_0abc),
            0x0001_2345_6789_0abc
        );
    }

    #[test]
    fn injected_abort_is_pkvms() {
        assert_eq!(injected_dabt_esr(Source::El1h, DFSC_EXTABT), 0x9600_0010);
        assert_eq!(injected_dabt_esr(Source::El0A64, DFSC_EXTABT), 0x9200_0010);
        assert_eq!(
            injected_dabt_esr(Source::El1h, DFSC_TRANSLATION_L3),
            0x9600_0007
        );
        assert_eq!(injected_iabt_esr(Source::El1h), 0x8600_0010);
        assert_eq!(injected_undef_esr(), 0x0200_0000);
        assert_eq!(source_of(0x3c5), Source::El1h);
        assert_eq!(source_of(0x3c4), Source::El1t);
        assert_eq!(source_of(0x0), Source::El0A64);
        assert_eq!(source_of(0x10), Source::El0A32);
        assert_eq!(sync_vector_offset(Source::El1h), 0x200);
        assert_eq!(injected_spsr(0, 0x30d0_0800), 0x3c5); // SPAN = 1: PAN kept (0)
        assert_eq!(injected_spsr(1 << 22, 0x30d0_0800), 0x3c5 | 1 << 22);
        assert_eq!(injected_spsr(0, 0), 0x3c5 | 1 << 22); // SPAN = 0: PAN set
    }

    #[test]
    fn pair_decoding() {
        // ldp w9, w10, [x0]      = 0x29402809
        let p = decode_pair(0x2940_2809).unwrap();
        assert_eq!(
            p,
            PairAccess {
                load: true,
                size: 4,
                rt: 9,
                rt2: 10,
                rn: 0,
                offset: 0,
                mode: PairMode::Offset
            }
        );
        // stp x1, x2, [sp, #-16]! = 0xa9bf0be1
        let p = decode_pair(0xa9bf_0be1).unwrap();
        assert_eq!(
            p,
            PairAccess {
                load: false,
                size: 8,
                rt: 1,
                rt2: 2,
                rn: 31,
                offset: -16,
                mode: PairMode::PreIndex
            }
        );
        // ldp x3, x4, [x5], #32  = 0xa8c210a3
        let p = decode_pair(0xa8c2_10a3).unwrap();
        assert_eq!(
            (p.mode, p.offset, p.rn, p.rt, p.rt2, p.load),
            (PairMode::PostIndex, 32, 5, 3, 4, true)
        );
        assert_eq!(decode_pair(0xb940_0009), None); // ldr w9, [x0]
        assert_eq!(decode_pair(0xad40_0400), None); // ldp q0, q1 (SIMD)
    }

    #[test]
    fn esr_fields_from_real_values() {
        // ldr w1, [x0] on an unmapped page, as QEMU reports it: EC 0x24, IL, ISV, SAS = word,
        // SRT = 1, level-3 translation fault.
        let e = decode_esr(0x9380_0007 | (1 << 16));
        assert_eq!((e.ec, e.il, e.iss), (0x24, true, 0x181_0007));
        // IL clear (a 16-bit instruction), and ISS2 (bits 32 and up) is not part of the ISS.
        let e = decode_esr((0xab << 32) | 0x9165_8007);
        assert_eq!((e.ec, e.il, e.iss), (0x24, false, 0x165_8007));
        let e = decode_esr(0x5e00_0000 | 0x1_2345);
        assert_eq!((e.ec, e.il, e.iss), (0x17, true, 0x1_2345), "smc");
        assert_eq!(
            decode_esr(0),
            Esr {
                ec: 0,
                il: false,
                iss: 0
            }
        );
        assert_eq!(
            decode_esr(u64::MAX),
            Esr {
                ec: 0x3f,
                il: true,
                iss: 0x1ff_ffff
            }
        );
    }

    #[test]
    fn dabt_fields_from_real_values() {
        let d = decode_dabt(decode_esr(0x9380_0007 | (1 << 16)).iss);
        assert_eq!(
            d,
            DataAbort {
                isv: true,
                size: 4,
                sign_extend: false,
                reg: 1,
                sixty_four: false,
                acquire_release: false,
                fnv: false,
                ea: false,
                cm: false,
                s1ptw: false,
                write: false,
                dfsc: 7,
            }
        );
        // str x3, [x0]: SAS = doubleword, SF, WnR.
        let d = decode_dabt(decode_esr(0x93c3_8047).iss);
        assert!(d.isv && d.sixty_four && d.write && !d.sign_extend);
        assert_eq!((d.size, d.reg, d.dfsc), (8, 3, 7));
        // ldrsh x5, [x0]: SAS = halfword, SSE, SF.
        let d = decode_dabt(decode_esr(0x9365_8007).iss);
        assert!(d.isv && d.sixty_four && d.sign_extend && !d.write);
        assert_eq!((d.size, d.reg), (2, 5));
        // ldarb w30: SAS = byte, AR.
        let d = decode_dabt((1 << 24) | (30 << 16) | (1 << 14) | 0x06);
        assert!(d.acquire_release && !d.sixty_four);
        assert_eq!((d.size, d.reg, d.dfsc), (1, 30, 6));
    }

    #[test]
    fn dabt_every_field_alone_and_missing() {
        let none = DataAbort {
            isv: false,
            size: 1,
            sign_extend: false,
            reg: 0,
            sixty_four: false,
            acquire_release: false,
            fnv: false,
            ea: false,
            cm: false,
            s1ptw: false,
            write: false,
            dfsc: 0,
        };
        let all = DataAbort {
            isv: true,
            size: 8,
            sign_extend: true,
            reg: 31,
            sixty_four: true,
            acquire_release: true,
            fnv: true,
            ea: true,
            cm: true,
            s1ptw: true,
            write: true,
            dfsc: 0x3f,
        };
        assert_eq!(decode_dabt(0), none);
        assert_eq!(decode_dabt(0x1ff_ffff), all);
        type Set = fn(&mut DataAbort, bool);
        let flags: [(u32, Set); 9] = [
            (24, |d, v| d.isv = v),
            (21, |d, v| d.sign_extend = v),
            (15, |d, v| d.sixty_four = v),
            (14, |d, v| d.acquire_release = v),
            (10, |d, v| d.fnv = v),
            (9, |d, v| d.ea = v),
            (8, |d, v| d.cm = v),
            (7, |d, v| d.s1ptw = v),
            (6, |d, v| d.write = v),
        ];
        for (bit, set) in flags {
            let mut alone = none;
            set(&mut alone, true);
            assert_eq!(decode_dabt(1 << bit), alone, "bit {bit} alone");
            let mut missing = all;
            set(&mut missing, false);
            assert_eq!(
                decode_dabt(0x1ff_ffff & !(1 << bit)),
                missing,
                "all but {bit}"
            );
        }
        for (sas, size) in [(0, 1), (1, 2), (2, 4), (3, 8)] {
            assert_eq!(decode_dabt(sas << 22).size, size);
            assert_eq!(
                decode_dabt(0x1ff_ffff & !(3 << 22) | (sas << 22)).size,
                size
            );
        }
        for srt in [0, 1, 9, 16, 30, 31] {
            assert_eq!(decode_dabt(srt << 16).reg, srt as u8);
            assert_eq!(
                decode_dabt(0x1ff_ffff & !(0x1f << 16) | (srt << 16)).reg,
                srt as u8
            );
        }
        assert_eq!(decode_dabt(0x1ff_ffff & !0x3f | 0x07).dfsc, 0x07);
        assert_eq!(decode_dabt(0x24).dfsc, 0x24);
    }

    #[test]
    fn translation_fault_is_dfsc_4_to_7_only() {
        for dfsc in 0u8..0x40 {
            let d = DataAbort {
                dfsc,
                ..decode_dabt(0)
            };
            assert_eq!(
                d.is_translation_fault(),
                (4..=7).contains(&dfsc),
                "{dfsc:#x}"
            );
        }
    }

    #[test]
    fn ipa_ignores_bits_outside_fipa_and_far_page() {
        assert_eq!(
            fault_ipa(0xf000_0000_0000_000f | (0x9010 << 4), 0xffff_ffff_ffff_ffe0),
            0x0901_0fe0
        );
        assert_eq!(
            fault_ipa(u64::MAX, u64::MAX),
            0x000f_ffff_ffff_ffff,
            "52-bit IPA at most"
        );
        assert_eq!(fault_ipa(0, 0x123), 0x123);
        assert_eq!(fault_ipa(0x10, 0), 0x1000);
    }

    #[test]
    fn load_and_store_widths() {
        let mk = |size: u8, sse: bool, sf: bool| DataAbort {
            size,
            sign_extend: sse,
            sixty_four: sf,
            ..decode_dabt(0)
        };
        // SSE on a doubleword is never reported, but must not break (no 64-bit shift).
        let top = 0x8000_0000_0000_0001;
        assert_eq!(load_result(top, &mk(8, true, true)), top);
        assert_eq!(load_result(top, &mk(8, false, true)), top);
        assert_eq!(load_result(top, &mk(8, false, false)), 1, "W register");
        assert_eq!(
            load_result(0x1234_5680, &mk(1, true, true)),
            0xffff_ffff_ffff_ff80
        );
        assert_eq!(load_result(0x1234_5680, &mk(1, false, true)), 0x80);
        assert_eq!(load_result(0x1234_567f, &mk(1, true, true)), 0x7f);
        assert_eq!(load_result(0xffff_8000, &mk(2, true, false)), 0xffff_8000);
        assert_eq!(load_result(0xabcd_ffff_8000, &mk(2, false, true)), 0x8000);
        assert_eq!(
            load_result(0xabcd_8000_0000, &mk(4, true, false)),
            0x8000_0000
        );
        let reg = 0x1122_3344_5566_7788;
        assert_eq!(store_value(reg, 1), 0x88);
        assert_eq!(store_value(reg, 4), 0x5566_7788);
        assert_eq!(store_value(reg, 16), reg);
    }

    #[test]
    fn injection_for_every_source() {
        assert_eq!(injected_dabt_esr(Source::El1t, DFSC_EXTABT), 0x9600_0010);
        assert_eq!(injected_dabt_esr(Source::El0A32, DFSC_EXTABT), 0x9200_0010);
        assert_eq!(injected_iabt_esr(Source::El1t), 0x8600_0010);
        assert_eq!(injected_iabt_esr(Source::El0A64), 0x8200_0010);
        assert_eq!(injected_iabt_esr(Source::El0A32), 0x8200_0010);
        let vectors = [
            (Source::El1t, 0x000),
            (Source::El1h, 0x200),
            (Source::El0A64, 0x400),
            (Source::El0A32, 0x600),
        ];
        for (src, off) in vectors {
            assert_eq!(sync_vector_offset(src), off);
        }
        // M[4] = 1 is AArch32 whatever the low bits; EL2h/EL2t/EL0t are "EL0 AArch64" here.
        assert_eq!(source_of(0x3d5), Source::El0A32);
        assert_eq!(source_of(0x1f), Source::El0A32);
        assert_eq!(source_of(0x3c0), Source::El0A64);
        assert_eq!(source_of(0x3c9), Source::El0A64);
        assert_eq!(source_of(0xffff_ffe5), Source::El1h, "other bits ignored");
        assert_eq!(source_of(0xffff_ffe4), Source::El1t);
        const PAN: u64 = 1 << 22;
        const SSBS: u64 = 1 << 12;
        const SPAN: u64 = 1 << 23;
        const DSSBS: u64 = 1 << 44;
        assert_eq!(injected_spsr(0, DSSBS), 0x3c5 | PAN | SSBS);
        assert_eq!(injected_spsr(u64::MAX, DSSBS), 0x3c5 | PAN | SSBS);
        assert_eq!(injected_spsr(u64::MAX, SPAN | DSSBS), 0x3c5 | PAN | SSBS);
        assert_eq!(injected_spsr(u64::MAX, SPAN), 0x3c5 | PAN);
        assert_eq!(injected_spsr(!PAN, SPAN), 0x3c5, "no other old bit kept");
        assert_eq!(injected_spsr(u64::MAX, !(SPAN | DSSBS)), 0x3c5 | PAN);
    }

    #[test]
    fn pair_forms_not_modelled_and_offsets() {
        assert_eq!(decode_pair(0x6940_0440), None, "ldpsw x0, x1, [x2]");
        assert_eq!(decode_pair(0xe940_0440), None, "opc 11 is reserved");
        assert_eq!(decode_pair(0x2840_2809), None, "ldnp w9, w10, [x0]");
        // ldp x0, x1, [x2, #504] and [x2, #-512]: the imm7 extremes, scaled by 8.
        let p = decode_pair(0xa95f_8440).unwrap();
        assert_eq!((p.offset, p.size, p.rt, p.rt2, p.rn), (504, 8, 0, 1, 2));
        assert_eq!(decode_pair(0xa960_0440).unwrap().offset, -512);
        // stp w30, w29, [x28], #-4: post-index, scaled by 4.
        let p = decode_pair(0x28bf_f79e).unwrap();
        assert_eq!(
            (p.load, p.size, p.rt, p.rt2, p.rn, p.offset, p.mode),
            (false, 4, 30, 29, 28, -4, PairMode::PostIndex)
        );
    }
}
