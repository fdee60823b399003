//! Exception handling: expected faults at probe sites are recorded and stepped over;
//! anything else is reported in full and fails the running check, which is abandoned
//! through its recovery point so that the run still ends with a summary.

use crate::esr::Esr;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::cpu;

pub const MAX_CPUS: usize = 8;

extern "C" {
    /// probes.S: resumes the guarded call whose JmpBuf is `buf`, returning 1 from it.
    pub fn ioguard_recover(buf: u64) -> !;
}

/// The register frame vectors.S saves.
#[repr(C)]
pub struct Frame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    _pad: u64,
}

/// A fault the handler recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub esr: Esr,
    pub far: u64,
    pub elr: u64,
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} FAR={:#x} ELR={:#x}", self.esr, self.far, self.elr)
    }
}

/// Per-CPU state shared between the code that runs checks and the handler.
pub struct CpuState {
    probe_armed: AtomicBool,
    probe_faulted: AtomicBool,
    esr: AtomicU64,
    far: AtomicU64,
    elr: AtomicU64,
    /// Address of the JmpBuf of the guarded call in progress, or 0.
    jmpbuf: AtomicU64,
    /// The running check's name, as (pointer, length) of a `&'static str`.
    check_ptr: AtomicUsize,
    check_len: AtomicUsize,
    /// Unexpected exceptions taken on this CPU.
    unexpected: AtomicUsize,
}

impl CpuState {
    const fn new() -> Self {
        Self {
            probe_armed: AtomicBool::new(false),
            probe_faulted: AtomicBool::new(false),
            esr: AtomicU64::new(0),
            far: AtomicU64::new(0),
            elr: AtomicU64::new(0),
            jmpbuf: AtomicU64::new(0),
            check_ptr: AtomicUsize::new(0),
            check_len: AtomicUsize::new(0),
            unexpected: AtomicUsize::new(0),
        }
    }
}

static CPUS: [CpuState; MAX_CPUS] = [const { CpuState::new() }; MAX_CPUS];

/// `trace` on the command line: print every fault as it happens.
pub static TRACE: AtomicBool = AtomicBool::new(false);

pub fn this_cpu() -> &'static CpuState {
    // An index out of range would be a bug in CPU bring-up; fall back to slot 0 rather
    // than fault inside the fault handler.
    CPUS.get(cpu::index()).unwrap_or(&CPUS[0])
}

/// Arms the probe machinery on this CPU for one expected-fault site.
pub fn arm_probe() {
    let c = this_cpu();
    c.probe_faulted.store(false, Ordering::Relaxed);
    c.probe_armed.store(true, Ordering::Release);
}

/// Disarms it and returns the fault taken at the site, if any.
pub fn disarm_probe() -> Option<Fault> {
    let c = this_cpu();
    c.probe_armed.store(false, Ordering::Release);
    c.probe_faulted.load(Ordering::Acquire).then(|| Fault {
        esr: Esr(c.esr.load(Ordering::Relaxed)),
        far: c.far.load(Ordering::Relaxed),
        elr: c.elr.load(Ordering::Relaxed),
    })
}

pub fn set_current_check(name: Option<&'static str>) {
    let c = this_cpu();
    let (p, l) = name.map_or((0, 0), |n| (n.as_ptr() as usize, n.len()));
    c.check_len.store(l, Ordering::Relaxed);
    c.check_ptr.store(p, Ordering::Release);
}

fn current_check(c: &CpuState) -> &'static str {
    let p = c.check_ptr.load(Ordering::Acquire);
    let l = c.check_len.load(Ordering::Relaxed);
    if p == 0 {
        return "(none)";
    }
    // SAFETY: (p, l) were taken from a `&'static str` by set_current_check.
    unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(p as *const u8, l)) }
}

pub fn set_jmpbuf(addr: u64) {
    this_cpu().jmpbuf.store(addr, Ordering::Release);
}

pub fn jmpbuf() -> u64 {
    this_cpu().jmpbuf.load(Ordering::Acquire)
}

pub fn unexpected_count() -> usize {
    this_cpu().unexpected.load(Ordering::Relaxed)
}

fn is_probe_site(elr: u64) -> bool {
    let start = crate::sym_addr!(ioguard_probe_sites) as *const u64;
    let end = crate::sym_addr!(ioguard_probe_sites_end) as *const u64;
    // SAFETY: [start, end) is the table of site addresses in probes.S, 8-byte aligned.
    let sites = unsafe { core::slice::from_raw_parts(start, end.offset_from(start) as usize) };
    sites.contains(&elr)
}

fn vector_name(index: u64) -> (&'static str, &'static str) {
    let kind = ["synchronous", "IRQ", "FIQ", "SError"][(index & 3) as usize];
    let from = [
        "EL1 with SP_EL0",
        "EL1 with SP_EL1",
        "lower EL (AArch64)",
        "lower EL (AArch32)",
    ][((index >> 2) & 3) as usize];
    (kind, from)
}

/// Called by vectors.S with the saved frame and the vector index (0..16).
#[no_mangle]
extern "C" fn ioguard_exception(frame: &mut Frame, vector: u64) {
    let esr = Esr(cpu::read_esr_el1());
    let far = cpu::read_far_el1();
    let elr = frame.elr;
    let c = this_cpu();
    let synchronous = vector & 3 == 0;

    if synchronous && c.probe_armed.load(Ordering::Acquire) && is_probe_site(elr) {
        if TRACE.load(Ordering::Relaxed) {
            // Before recording: the console reaches its UART through probes too, which
            // re-arm and disarm this CPU's probe state.
            super::console::write_fmt_emergency(format_args!(
                "trace: fault (expected) {esr} FAR={far:#x} ELR={elr:#x}\n"
            ));
        }
        c.esr.store(esr.0, Ordering::Relaxed);
        c.far.store(far, Ordering::Relaxed);
        c.elr.store(elr, Ordering::Relaxed);
        c.probe_faulted.store(true, Ordering::Release);
        c.probe_armed.store(false, Ordering::Release);
        // Resume after the faulting instruction (all probe sites are 4 bytes).
        frame.elr = elr + 4;
        return;
    }

    c.unexpected.fetch_add(1, Ordering::Relaxed);
    let (kind, from) = vector_name(vector);
    let check = current_check(c);
    super::console::write_fmt_emergency(format_args!(
        "UNEXPECTED EXCEPTION: vector {vector} ({kind} from {from}): EC {:#04x} ({}) {esr} FAR={far:#x} ELR={elr:#x} SPSR={:#x} in check '{check}'\n",
        esr.ec(),
        esr.ec_name(),
        frame.spsr,
    ));
    super::suite::note_unexpected(Fault { esr, far, elr });

    let jb = c.jmpbuf.load(Ordering::Acquire);
    if jb != 0 {
        // Abandon the check: return into ioguard_recover with x0 = its JmpBuf, at EL1h
        // with everything masked.
        frame.x[0] = jb;
        frame.elr = ioguard_recover as *const () as u64;
        frame.spsr = 0x3c5;
        return;
    }
    super::suite::abort_run("unexpected exception outside any check");
}
