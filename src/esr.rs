//! Decoding of the Exception Syndrome Register (ESR_ELx), for fault reports and checks.

use core::fmt;

/// Exception classes ioguard meets or reports (Arm ARM D24.2.40, ESR_EL1.EC).
pub mod ec {
    pub const UNKNOWN: u8 = 0x00;
    pub const WFX: u8 = 0x01;
    pub const FP_ACCESS: u8 = 0x07;
    pub const ILLEGAL_STATE: u8 = 0x0e;
    pub const SVC64: u8 = 0x15;
    pub const HVC64: u8 = 0x16;
    pub const SMC64: u8 = 0x17;
    pub const SYSREG: u8 = 0x18;
    pub const IABT_LOWER: u8 = 0x20;
    pub const IABT_CURRENT: u8 = 0x21;
    pub const PC_ALIGNMENT: u8 = 0x22;
    pub const DABT_LOWER: u8 = 0x24;
    pub const DABT_CURRENT: u8 = 0x25;
    pub const SP_ALIGNMENT: u8 = 0x26;
    pub const SERROR: u8 = 0x2f;
    pub const BRK64: u8 = 0x3c;
}

/// Data/instruction fault status codes (ISS[5:0]) that matter here.
pub mod fsc {
    /// Synchronous external abort, not on a table walk: what pKVM injects for a refused
    /// MMIO access.
    pub const SYNC_EXTERNAL: u8 = 0x10;
}

/// The ESR value pKVM injects for a refused MMIO access taken from EL1 (pkvm-abi.md §3):
/// EC 0x25 (data abort, current EL), IL = 1, ISV = 0, WnR = 0, DFSC 0x10.
pub const PKVM_INJECTED_DABT: u64 = 0x9600_0010;

/// A decoded syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Esr(pub u64);

impl Esr {
    pub fn ec(self) -> u8 {
        ((self.0 >> 26) & 0x3f) as u8
    }
    /// Instruction length bit: 1 for a 32-bit instruction.
    pub fn il(self) -> bool {
        self.0 & (1 << 25) != 0
    }
    pub fn is_data_abort(self) -> bool {
        matches!(self.ec(), ec::DABT_LOWER | ec::DABT_CURRENT)
    }
    pub fn is_instruction_abort(self) -> bool {
        matches!(self.ec(), ec::IABT_LOWER | ec::IABT_CURRENT)
    }
    /// Fault status code of a data or instruction abort.
    pub fn fsc(self) -> u8 {
        (self.0 & 0x3f) as u8
    }
    /// Instruction syndrome valid (data aborts).
    pub fn isv(self) -> bool {
        self.0 & (1 << 24) != 0
    }
    /// Write not Read (data aborts).
    pub fn wnr(self) -> bool {
        self.0 & (1 << 6) != 0
    }
    /// FAR not valid (data and instruction aborts).
    pub fn fnv(self) -> bool {
        self.0 & (1 << 10) != 0
    }
    /// The immediate of a BRK instruction.
    pub fn brk_imm(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// Translation fault at any level (FSC 0b0001xx).
    pub fn is_translation_fault(self) -> bool {
        (self.is_data_abort() || self.is_instruction_abort()) && (self.fsc() & 0x3c) == 0x04
    }

    pub fn ec_name(self) -> &'static str {
        ec_name(self.ec())
    }
}

/// A short name for an exception class.
pub fn ec_name(ec: u8) -> &'static str {
    match ec {
        ec::UNKNOWN => "unknown/undefined instruction",
        ec::WFX => "WFI/WFE",
        ec::FP_ACCESS => "FP/SIMD access",
        ec::ILLEGAL_STATE => "illegal execution state",
        ec::SVC64 => "SVC",
        ec::HVC64 => "HVC",
        ec::SMC64 => "SMC",
        ec::SYSREG => "system register access",
        ec::IABT_LOWER => "instruction abort (lower EL)",
        ec::IABT_CURRENT => "instruction abort (current EL)",
        ec::PC_ALIGNMENT => "PC alignment",
        ec::DABT_LOWER => "data abort (lower EL)",
        ec::DABT_CURRENT => "data abort (current EL)",
        ec::SP_ALIGNMENT => "SP alignment",
        ec::SERROR => "SError",
        ec::BRK64 => "BRK",
        _ => "other",
    }
}

/// A short name for a data/instruction fault status code.
pub fn fsc_name(fsc: u8) -> &'static str {
    match fsc {
        0x00..=0x03 => "address size fault",
        0x04..=0x07 => "translation fault",
        0x09..=0x0b => "access flag fault",
        0x0d..=0x0f => "permission fault",
        fsc::SYNC_EXTERNAL => "synchronous external abort",
        0x11 => "synchronous tag check fault",
        0x14..=0x17 => "external abort on table walk",
        0x21 => "alignment fault",
        0x30 => "TLB conflict abort",
        _ => "other fault",
    }
}

impl fmt::Display for Esr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ESR={:#010x} ({}", self.0, self.ec_name())?;
        if self.is_data_abort() || self.is_instruction_abort() {
            write!(f, ", {}", fsc_name(self.fsc()))?;
            if self.is_data_abort() {
                write!(f, ", {}", if self.wnr() { "write" } else { "read" })?;
                if !self.isv() {
                    write!(f, ", no syndrome")?;
                }
            }
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn pkvm_abort_decodes_as_documented() {
        let e = Esr(PKVM_INJECTED_DABT);
        assert_eq!(e.ec(), ec::DABT_CURRENT);
        assert!(e.il());
        assert!(!e.isv());
        assert!(!e.wnr());
        assert!(!e.fnv());
        assert_eq!(e.fsc(), fsc::SYNC_EXTERNAL);
        assert!(!e.is_translation_fault());
        assert_eq!(
            format!("{e}"),
            "ESR=0x96000010 (data abort (current EL), synchronous external abort, read, no syndrome)"
        );
    }

    #[test]
    fn translation_faults_at_each_level() {
        for level in 0..4u64 {
            let e = Esr(0x9600_0004 | level);
            assert!(e.is_translation_fault(), "level {level}");
        }
        // A write with a valid syndrome (QEMU reports ISV for a stage-1 fault of a plain STR).
        let w = Esr(0x9600_0045);
        assert!(w.wnr() && w.is_translation_fault());
        assert!(!Esr(0x9600_0010).is_translation_fault());
    }

    #[test]
    fn brk_and_undefined() {
        let brk = Esr(0xf200_1234);
        assert_eq!(brk.ec(), ec::BRK64);
        assert_eq!(brk.brk_imm(), 0x1234);
        assert_eq!(brk.ec_name(), "BRK");
        let udf = Esr(0x0200_0000);
        assert_eq!(udf.ec(), ec::UNKNOWN);
        assert!(udf.il());
    }

    #[test]
    fn isv_and_class_of_a_stage2_data_abort() {
        // ldr w1, [x0] through a stage-2 fault as an EL2 sees it: ISV, SAS=2, SRT=1.
        let e = Esr(0x9382_0007 | (1 << 16));
        assert!(e.isv());
        assert_eq!(e.ec(), ec::DABT_LOWER);
    }
}
