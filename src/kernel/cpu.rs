//! Small register accessors that no crate offers in the shape needed here.

use core::arch::asm;

/// The index of the running CPU (set in TPIDR_EL1 at its entry).
pub fn index() -> usize {
    let v: u64;
    // SAFETY: reading TPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, tpidr_el1", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v as usize
}

/// Translates `va` with the current stage-1 tables as a read at EL1 (`AT S1E1R`).
/// Returns PAR_EL1: bit 0 set means the translation faulted.
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

pub fn read_esr_el1() -> u64 {
    let v: u64;
    // SAFETY: reading ESR_EL1 has no side effects.
    unsafe { asm!("mrs {}, esr_el1", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

pub fn read_far_el1() -> u64 {
    let v: u64;
    // SAFETY: reading FAR_EL1 has no side effects.
    unsafe { asm!("mrs {}, far_el1", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Clean and invalidate data cache lines covering [start, end) to the point of coherency.
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
    // SAFETY: a barrier has no effect on program state.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// The generic counter (CNTPCT_EL0), readable at EL1 wherever ioguard runs (a hypervisor
/// that hid it would trap the read; none of those ioguard meets does).
pub fn counter() -> u64 {
    let v: u64;
    // SAFETY: reading the physical counter has no side effects; the ISB keeps the read
    // after the code before it.
    unsafe {
        asm!("isb", "mrs {}, cntpct_el0", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// The counter's frequency in Hz (CNTFRQ_EL0).
pub fn frequency() -> u64 {
    let v: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Microseconds since `start` (a `counter()` value).
pub fn micros_since(start: u64) -> u64 {
    counter().wrapping_sub(start).saturating_mul(1_000_000) / frequency().max(1)
}
