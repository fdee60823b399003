//! System registers the kernel reads: plain reads through aarch64-cpu's accessors; what
//! that crate has no accessor for (an address translation, cache maintenance by VA) is a
//! few lines of inline assembly here, each with its reason.

use aarch64_cpu::registers::{
    Readable, CNTFRQ_EL0, CNTPCT_EL0, ESR_EL1, FAR_EL1, ID_AA64MMFR0_EL1, MIDR_EL1, MPIDR_EL1,
    SCTLR_EL1, TPIDR_EL1, TTBR0_EL1,
};
use core::arch::asm;

/// The index of the running CPU (set in TPIDR_EL1 at its entry).
pub fn cpu_index() -> usize {
    TPIDR_EL1.get() as usize
}

pub fn mpidr() -> u64 {
    MPIDR_EL1.get()
}

/// MIDR_EL1: implementer, part number and revision of the CPU.
pub fn midr() -> u64 {
    MIDR_EL1.get()
}

pub fn esr_el1() -> u64 {
    ESR_EL1.get()
}

pub fn far_el1() -> u64 {
    FAR_EL1.get()
}

pub fn sctlr_el1() -> u64 {
    SCTLR_EL1.get()
}

pub fn ttbr0_el1() -> u64 {
    TTBR0_EL1.get()
}

/// ID_AA64MMFR0_EL1.PARange: the CPU's physical (and so the VM's IPA) address size code.
pub fn pa_range() -> u64 {
    ID_AA64MMFR0_EL1.get() & 0xf
}

/// The physical address size in bits that PARange `code` stands for (Arm ARM D19.2.64).
pub fn pa_bits(code: u64) -> u32 {
    match code {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// Translates `va` with the current stage-1 tables as a read at EL1 (`AT S1E1R`).
/// Returns PAR_EL1: bit 0 set means the translation faulted. aarch64-cpu has no AT.
pub fn translate_read(va: u64) -> u64 {
    let par: u64;
    // SAFETY: AT only updates PAR_EL1, which nothing else in ioguard keeps live; the ISB
    // makes the result visible to the MRS.
    unsafe {
        asm!(
            "at s1e1r, {va}",
            "isb",
            "mrs {par}, par_el1",
            va = in(reg) va,
            par = out(reg) par,
            options(nostack, preserves_flags),
        )
    };
    par
}

/// What `AT` found for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Translation {
    Fault,
    /// Output address and the MAIR attribute byte of the mapping.
    Mapped {
        pa: u64,
        attr: u8,
    },
}

impl core::fmt::Display for Translation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Fault => write!(f, "not mapped"),
            Self::Mapped { pa, attr } => write!(f, "mapped to {pa:#x} with attribute {attr:#04x}"),
        }
    }
}

pub fn translate(va: u64) -> Translation {
    let par = translate_read(va);
    if par & 1 != 0 {
        Translation::Fault
    } else {
        Translation::Mapped {
            pa: (par & 0x000f_ffff_ffff_f000) | (va & 0xfff),
            attr: (par >> 56) as u8,
        }
    }
}

/// Clean and invalidate data cache lines covering [start, end) to the point of coherency
/// (DC CIVAC by address: no accessor in aarch64-cpu).
pub fn dcache_clean_inval_poc(start: u64, end: u64) {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    let line = 4u64 << ((ctr >> 16) & 0xf);
    let mut addr = start & !(line - 1);
    while addr < end {
        // SAFETY: DC CIVAC writes back and invalidates a line; memory contents are unchanged
        // from the program's point of view.
        unsafe { asm!("dc civac, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
}

/// The generic counter (CNTPCT_EL0), readable at EL1 wherever ioguard runs (a hypervisor
/// that hid it would trap the read; none of those ioguard meets does).
pub fn counter() -> u64 {
    // The ISB keeps the read after the code before it.
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    CNTPCT_EL0.get()
}

/// The counter's frequency in Hz (CNTFRQ_EL0).
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// Microseconds since `start` (a `counter()` value).
pub fn micros_since(start: u64) -> u64 {
    counter().wrapping_sub(start).saturating_mul(1_000_000) / frequency().max(1)
}
