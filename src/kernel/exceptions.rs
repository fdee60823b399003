//! Exception handling: expected faults at probe sites are recorded and stepped over;
//! anything else is reported in full and fails the running check, which is abandoned
//! through its recovery point so that the run still ends with a summary.

use crate::esr::Esr;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::cpu;

pub const MAX_CPUS: usize = crate::smp::MAX_CPUS;

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
    /// The last unexpected exception (vector index, ESR, FAR, ELR), kept for a secondary
    /// CPU to hand to the boot CPU, which prints it; `last_valid` says it is unread.
    last_valid: AtomicBool,
    last: [AtomicU64; 4],
    /// Expected faults a secondary took while tracing (ESR, FAR, ELR each), for the boot
    /// CPU to print after the job; `deferred_len` counts them all, kept or not.
    deferred: [[AtomicU64; 3]; DEFERRED],
    deferred_len: AtomicUsize,
}

/// Expected faults a secondary keeps for the trace per job (a job makes a few).
const DEFERRED: usize = 8;

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
            last_valid: AtomicBool::new(false),
            last: [const { AtomicU64::new(0) }; 4],
            deferred: [const { [const { AtomicU64::new(0) }; 3] }; DEFERRED],
            deferred_len: AtomicUsize::new(0),
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

/// An unexpected exception taken on a secondary CPU, for the boot CPU to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unexpected {
    pub vector: u64,
    pub fault: Fault,
}

impl core::fmt::Display for Unexpected {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (kind, from) = vector_name(self.vector);
        write!(
            f,
            "vector {} ({kind} from {from}): EC {:#04x} ({}) {}",
            self.vector,
            self.fault.esr.ec(),
            self.fault.esr.ec_name(),
            self.fault
        )
    }
}

/// Takes the unexpected exception this CPU recorded since the last call, if any.
pub fn take_unexpected() -> Option<Unexpected> {
    let c = this_cpu();
    if !c.last_valid.swap(false, Ordering::Acquire) {
        return None;
    }
    let [vector, esr, far, elr] = [0, 1, 2, 3].map(|i| c.last[i].load(Ordering::Relaxed));
    Some(Unexpected {
        vector,
        fault: Fault {
            esr: Esr(esr),
            far,
            elr,
        },
    })
}

/// The trace of expected faults CPU slot `cpu` took since the last call (none unless
/// `trace` is on), and how many did not fit. For the boot CPU, once that CPU's job is
/// over: the job's end was published with Release after the faults were recorded.
pub fn take_deferred_trace(cpu: usize) -> (alloc::vec::Vec<Fault>, usize) {
    let Some(c) = CPUS.get(cpu) else {
        return (alloc::vec::Vec::new(), 0);
    };
    let n = c.deferred_len.swap(0, Ordering::Acquire);
    let kept = c.deferred[..n.min(DEFERRED)]
        .iter()
        .map(|[esr, far, elr]| Fault {
            esr: Esr(esr.load(Ordering::Relaxed)),
            far: far.load(Ordering::Relaxed),
            elr: elr.load(Ordering::Relaxed),
        })
        .collect();
    (kept, n.saturating_sub(DEFERRED))
}

fn defer_trace(c: &CpuState, f: Fault) {
    let i = c.deferred_len.load(Ordering::Relaxed);
    if let Some([esr, far, elr]) = c.deferred.get(i) {
        esr.store(f.esr.0, Ordering::Relaxed);
        far.store(f.far, Ordering::Relaxed);
        elr.store(f.elr, Ordering::Relaxed);
    }
    c.deferred_len.store(i + 1, Ordering::Release);
}

/// Only the boot CPU prints. A secondary runs checks against a hypervisor that may be
/// buggy exactly in what it allows other CPUs (the `guard: other-cpu` check): there the
/// console's page, registered by CPU 0, may abort, which would mark the console broken
/// for the rest of the run. Secondaries hand what they saw to CPU 0 instead.
fn may_print() -> bool {
    cpu::index() == 0
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
        if TRACE.load(Ordering::Relaxed) && !may_print() {
            defer_trace(c, Fault { esr, far, elr });
        } else if TRACE.load(Ordering::Relaxed) {
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
    if may_print() {
        let (kind, from) = vector_name(vector);
        let check = current_check(c);
        super::console::write_fmt_emergency(format_args!(
            "UNEXPECTED EXCEPTION: vector {vector} ({kind} from {from}): EC {:#04x} ({}) {esr} FAR={far:#x} ELR={elr:#x} SPSR={:#x} in check '{check}'\n",
            esr.ec(),
            esr.ec_name(),
            frame.spsr,
        ));
        super::suite::note_unexpected(Fault { esr, far, elr });
    } else {
        for (slot, v) in c.last.iter().zip([vector, esr.0, far, elr]) {
            slot.store(v, Ordering::Relaxed);
        }
        c.last_valid.store(true, Ordering::Release);
    }

    let jb = c.jmpbuf.load(Ordering::Acquire);
    if jb != 0 {
        // Abandon the check (or a secondary's job): return into ioguard_recover with
        // x0 = its JmpBuf, at EL1h with everything masked.
        frame.x[0] = jb;
        frame.elr = ioguard_recover as *const () as u64;
        frame.spsr = 0x3c5;
        return;
    }
    if !may_print() {
        // A secondary outside its job: nothing to resume; tell the boot CPU and power off.
        super::smp::secondary_failed();
    }
    super::suite::abort_run("unexpected exception outside any check");
}

extern "C" {
    /// probes.S: calls f(arg) with the callee-saved state saved in `buf`; returns 0, or 1
    /// when the call was abandoned through `ioguard_recover`.
    fn ioguard_guarded_call(
        f: extern "C" fn(*mut core::ffi::c_void),
        arg: *mut core::ffi::c_void,
        buf: *mut JmpBuf,
    ) -> u64;
}

/// Callee-saved state for abandoning a call (layout in probes.S).
#[repr(C, align(16))]
struct JmpBuf([u64; 22]);

/// Runs `f` so that an unexpected exception or a panic inside it abandons `f` instead of
/// the run. Returns false when `f` was abandoned (its destructors do not run: what it
/// owned leaks). Used for each check, and for each job a secondary CPU runs.
pub fn run_abandonable<F: FnMut()>(mut f: F) -> bool {
    extern "C" fn trampoline<F: FnMut()>(arg: *mut core::ffi::c_void) {
        // SAFETY: `arg` is the `F` that run_abandonable passed, alive for the whole call.
        let f = unsafe { &mut *(arg as *mut F) };
        f();
    }
    let mut buf = JmpBuf([0; 22]);
    let outer = jmpbuf();
    set_jmpbuf(&mut buf as *mut JmpBuf as u64);
    // SAFETY: the trampoline receives `f`, which outlives the call; `buf` stays on this
    // frame until the outer JmpBuf is put back, so a recovery always lands in a live frame.
    let abandoned = unsafe {
        ioguard_guarded_call(
            trampoline::<F>,
            &mut f as *mut F as *mut core::ffi::c_void,
            &mut buf,
        )
    };
    set_jmpbuf(outer);
    abandoned == 0
}
