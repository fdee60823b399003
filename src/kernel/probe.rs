//! The expected-fault API: accesses that may fault, returning the value or the fault.
//!
//! `read*` preload the destination register with `POISON`; on a fault the value the
//! probe hands back is what that register held afterwards, so a check can prove that the
//! faulting load did not write it.

pub use super::exceptions::Slot;
use super::exceptions::{arm_probe, disarm_probe};
use crate::fault::Fault;

/// What a faulting load's destination register holds if the load did not touch it.
pub const POISON: u64 = 0x5afe_c0de_dead_beef;

/// A faulting load: the fault, and what the destination register held afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadFault {
    pub fault: Fault,
    pub dest: u64,
}

impl LoadFault {
    pub fn dest_untouched(&self) -> bool {
        self.dest == POISON
    }
}

pub use crate::width::Width;

extern "C" {
    fn ioguard_probe_ld8(addr: u64, poison: u64) -> u64;
    fn ioguard_probe_ld16(addr: u64, poison: u64) -> u64;
    fn ioguard_probe_ld32(addr: u64, poison: u64) -> u64;
    fn ioguard_probe_ld64(addr: u64, poison: u64) -> u64;
    fn ioguard_probe_lds8(addr: u64, poison: u64) -> u64;
    fn ioguard_probe_lds16(addr: u64, poison: u64) -> u64;
    fn ioguard_probe_lds32(addr: u64, poison: u64) -> u64;
    fn ioguard_probe_st8(addr: u64, value: u64);
    fn ioguard_probe_st16(addr: u64, value: u64);
    fn ioguard_probe_st32(addr: u64, value: u64);
    fn ioguard_probe_st64(addr: u64, value: u64);
    fn ioguard_probe_ldp(addr: u64, poison: u64, second: *mut u64) -> u64;
    fn ioguard_probe_stp(addr: u64, first: u64, second: u64);
    fn ioguard_probe_brk();
    fn ioguard_probe_udf();
    fn ioguard_probe_semihost(op: u64, param: u64) -> u64;
    fn ioguard_probe_hvc(fid: u64) -> u64;
    fn ioguard_probe_smc(fid: u64) -> u64;
    static ioguard_probe_ld8_site: u8;
    static ioguard_probe_ld16_site: u8;
    static ioguard_probe_ld32_site: u8;
    static ioguard_probe_ld64_site: u8;
    static ioguard_probe_lds8_site: u8;
    static ioguard_probe_lds16_site: u8;
    static ioguard_probe_lds32_site: u8;
    static ioguard_probe_st8_site: u8;
    static ioguard_probe_st16_site: u8;
    static ioguard_probe_st32_site: u8;
    static ioguard_probe_st64_site: u8;
    static ioguard_probe_ldp_site: u8;
    static ioguard_probe_stp_site: u8;
    static ioguard_probe_brk_site: u8;
    static ioguard_probe_udf_site: u8;
}

/// The address of the instruction that performs a load of `width`, so a check can
/// compare a fault's ELR with it.
pub fn load_site(width: Width) -> u64 {
    use core::ptr::addr_of;
    match width {
        Width::W8 => addr_of!(ioguard_probe_ld8_site) as u64,
        Width::W16 => addr_of!(ioguard_probe_ld16_site) as u64,
        Width::W32 => addr_of!(ioguard_probe_ld32_site) as u64,
        Width::W64 => addr_of!(ioguard_probe_ld64_site) as u64,
    }
}

/// The sign-extending load of `width` (a 64-bit one is a plain `ldr`).
pub fn signed_load_site(width: Width) -> u64 {
    use core::ptr::addr_of;
    match width {
        Width::W8 => addr_of!(ioguard_probe_lds8_site) as u64,
        Width::W16 => addr_of!(ioguard_probe_lds16_site) as u64,
        Width::W32 => addr_of!(ioguard_probe_lds32_site) as u64,
        Width::W64 => addr_of!(ioguard_probe_ld64_site) as u64,
    }
}

pub fn store_site(width: Width) -> u64 {
    use core::ptr::addr_of;
    match width {
        Width::W8 => addr_of!(ioguard_probe_st8_site) as u64,
        Width::W16 => addr_of!(ioguard_probe_st16_site) as u64,
        Width::W32 => addr_of!(ioguard_probe_st32_site) as u64,
        Width::W64 => addr_of!(ioguard_probe_st64_site) as u64,
    }
}

pub fn ldp_site() -> u64 {
    core::ptr::addr_of!(ioguard_probe_ldp_site) as u64
}

pub fn stp_site() -> u64 {
    core::ptr::addr_of!(ioguard_probe_stp_site) as u64
}

pub fn brk_site() -> u64 {
    core::ptr::addr_of!(ioguard_probe_brk_site) as u64
}

pub fn udf_site() -> u64 {
    core::ptr::addr_of!(ioguard_probe_udf_site) as u64
}

/// Reads `width` bytes at `addr` with one `ldr`.
///
/// # Safety
/// Reading `addr` must have no effect that breaks memory safety (reading a device register
/// with read side effects is the caller's business; a fault is not a problem).
pub unsafe fn read(addr: u64, width: Width) -> Result<u64, LoadFault> {
    // SAFETY: the caller's promise, passed on.
    unsafe { read_in(Slot::Main, addr, width) }
}

/// `read` through the probe slot `slot` (the console has its own).
///
/// # Safety
/// As for `read`.
pub unsafe fn read_in(slot: Slot, addr: u64, width: Width) -> Result<u64, LoadFault> {
    arm_probe(slot);
    // SAFETY: the probe functions perform one load at `addr`; a fault there is caught and
    // stepped over by the exception handler because the probe is armed.
    let v = unsafe {
        match width {
            Width::W8 => ioguard_probe_ld8(addr, POISON),
            Width::W16 => ioguard_probe_ld16(addr, POISON),
            Width::W32 => ioguard_probe_ld32(addr, POISON),
            Width::W64 => ioguard_probe_ld64(addr, POISON),
        }
    };
    match disarm_probe(slot) {
        None => Ok(v),
        Some(fault) => Err(LoadFault { fault, dest: v }),
    }
}

/// Reads `width` bytes at `addr` with one sign-extending load into a 64-bit register
/// (`ldrsb`/`ldrsh`/`ldrsw`; a 64-bit width is a plain `ldr`).
///
/// # Safety
/// As for `read`.
pub unsafe fn read_signed(addr: u64, width: Width) -> Result<u64, LoadFault> {
    arm_probe(Slot::Main);
    // SAFETY: as for `read`: one load at `addr`, a fault is caught by the armed handler.
    let v = unsafe {
        match width {
            Width::W8 => ioguard_probe_lds8(addr, POISON),
            Width::W16 => ioguard_probe_lds16(addr, POISON),
            Width::W32 => ioguard_probe_lds32(addr, POISON),
            Width::W64 => ioguard_probe_ld64(addr, POISON),
        }
    };
    match disarm_probe(Slot::Main) {
        None => Ok(v),
        Some(fault) => Err(LoadFault { fault, dest: v }),
    }
}

/// Writes the low `width` bytes of `value` at `addr` with one `str`.
///
/// # Safety
/// Writing `addr` must not break memory safety: it must not be memory Rust uses.
pub unsafe fn write(addr: u64, width: Width, value: u64) -> Result<(), Fault> {
    // SAFETY: the caller's promise, passed on.
    unsafe { write_in(Slot::Main, addr, width, value) }
}

/// `write` through the probe slot `slot`.
///
/// # Safety
/// As for `write`.
pub unsafe fn write_in(slot: Slot, addr: u64, width: Width, value: u64) -> Result<(), Fault> {
    arm_probe(slot);
    // SAFETY: one store at `addr`, caught like the loads; the caller vouches for the
    // write itself.
    unsafe {
        match width {
            Width::W8 => ioguard_probe_st8(addr, value),
            Width::W16 => ioguard_probe_st16(addr, value),
            Width::W32 => ioguard_probe_st32(addr, value),
            Width::W64 => ioguard_probe_st64(addr, value),
        }
    }
    disarm_probe(slot).map_or(Ok(()), Err)
}

/// A load pair (no valid syndrome) of two doublewords at `addr`.
///
/// # Safety
/// As for `read`.
pub unsafe fn read_pair(addr: u64) -> Result<(u64, u64), (LoadFault, u64)> {
    let mut second = 0u64;
    arm_probe(Slot::Main);
    // SAFETY: one ldp at `addr`, caught like the other probes; `second` is a local.
    let first = unsafe { ioguard_probe_ldp(addr, POISON, &mut second) };
    match disarm_probe(Slot::Main) {
        None => Ok((first, second)),
        Some(fault) => Err((LoadFault { fault, dest: first }, second)),
    }
}

/// A store pair (no valid syndrome) of two doublewords at `addr`.
///
/// # Safety
/// As for `write`, for 16 bytes.
pub unsafe fn write_pair(addr: u64, first: u64, second: u64) -> Result<(), Fault> {
    arm_probe(Slot::Main);
    // SAFETY: one stp at `addr`, caught like the other probes; the caller vouches for the
    // write itself.
    unsafe { ioguard_probe_stp(addr, first, second) };
    disarm_probe(Slot::Main).map_or(Ok(()), Err)
}

/// Executes `brk #0x10a`; returns the fault it raised (None would mean BRK did nothing).
pub fn brk() -> Option<Fault> {
    arm_probe(Slot::Main);
    // SAFETY: the site raises a debug exception that the armed handler steps over.
    unsafe { ioguard_probe_brk() };
    disarm_probe(Slot::Main)
}

/// Executes `udf #0x10b` (permanently undefined).
pub fn udf() -> Option<Fault> {
    arm_probe(Slot::Main);
    // SAFETY: the site raises an undefined-instruction exception that the armed handler
    // steps over.
    unsafe { ioguard_probe_udf() };
    disarm_probe(Slot::Main)
}

/// A semihosting call; Err when semihosting is not enabled (HLT is undefined then).
/// Through the console's slot: semihosting is the console of last resort, used from the
/// exception and panic paths too.
pub fn semihost(op: u64, param: u64) -> Result<u64, Fault> {
    arm_probe(Slot::Console);
    // SAFETY: HLT #0xf000 either performs the semihosting operation, whose parameter block
    // the caller provides, or is an undefined instruction the armed handler steps over.
    let r = unsafe { ioguard_probe_semihost(op, param) };
    disarm_probe(Slot::Console).map_or(Ok(r), Err)
}

/// A bare HVC or SMC with function ID `fid` and no arguments, tolerating its absence.
pub fn conduit_call(smc: bool, fid: u32) -> Result<u64, Fault> {
    arm_probe(Slot::Main);
    // SAFETY: the call is made only for PSCI functions that take no argument (SYSTEM_OFF);
    // where the conduit does not exist the instruction is undefined and stepped over.
    let r = unsafe {
        if smc {
            ioguard_probe_smc(u64::from(fid))
        } else {
            ioguard_probe_hvc(u64::from(fid))
        }
    };
    disarm_probe(Slot::Main).map_or(Ok(r), Err)
}
