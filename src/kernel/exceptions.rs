//! Exception handling: the mechanism, no policy. A fault at an armed probe site is
//! recorded in the probe slot that armed it and stepped over. Anything else is handed to
//! the handlers the binary installed (aarch64-rt's `ExceptionHandlers` is the model):
//! `unexpected` reports it, and then the guarded call in progress, if any, is abandoned
//! through its recovery point; with none, `unrecoverable` ends the run.

use crate::cpus::MAX_CPUS;
use crate::esr::Esr;
use crate::fault::Fault;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use spin::Once;

use super::arch::sysreg;
use super::trace;

extern "C" {
    /// probes.S: resumes the guarded call whose JmpBuf is `buf`, returning 1 from it.
    fn ioguard_recover(buf: u64) -> !;
}

/// The register frame vectors.S saves (`FRAME_SIZE` there).
#[repr(C)]
pub struct Frame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    _pad: u64,
}

const _: () = assert!(core::mem::size_of::<Frame>() == 272);

/// SPSR for resuming at EL1h with D, A, I and F masked: where ioguard_recover runs.
const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// Independent expected-fault slots per CPU. The console reaches its UART through probes
/// too, and it may print while a check's probe result is still unread (a trace line from
/// the handler itself): with a slot of its own it can never overwrite that result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Main = 0,
    Console = 1,
}

const SLOTS: usize = 2;

struct ProbeSlot {
    armed: AtomicBool,
    faulted: AtomicBool,
    esr: AtomicU64,
    far: AtomicU64,
    elr: AtomicU64,
}

impl ProbeSlot {
    const fn new() -> Self {
        Self {
            armed: AtomicBool::new(false),
            faulted: AtomicBool::new(false),
            esr: AtomicU64::new(0),
            far: AtomicU64::new(0),
            elr: AtomicU64::new(0),
        }
    }

    fn record(&self, f: Fault) {
        self.esr.store(f.esr.0, Ordering::Relaxed);
        self.far.store(f.far, Ordering::Relaxed);
        self.elr.store(f.elr, Ordering::Relaxed);
        self.faulted.store(true, Ordering::Release);
        self.armed.store(false, Ordering::Release);
    }
}

/// Per-CPU state shared between the code that arms probes and the handler.
struct CpuState {
    probes: [ProbeSlot; SLOTS],
    /// Address of the JmpBuf of the guarded call in progress, or 0.
    jmpbuf: AtomicU64,
    /// The last unexpected exception (vector index, ESR, FAR, ELR); `last_valid` says it
    /// is unread. A secondary CPU hands it to the boot CPU this way.
    last_valid: AtomicBool,
    last: [AtomicU64; 4],
    /// Expected faults a secondary took while tracing (ESR, FAR, ELR each), for the boot
    /// CPU to print after the job; `deferred_len` counts them all, kept or not.
    deferred: [[AtomicU64; 3]; DEFERRED],
    deferred_len: AtomicUsize,
    /// The previous unexpected exception (as `last`, but never taken away) and how many
    /// times in a row it came; whether one is being reported now.
    prev: [AtomicU64; 4],
    repeats: AtomicU32,
    reporting: AtomicBool,
}

/// Expected faults a secondary keeps for the trace per job (`guard: access-forms` makes
/// one per access form).
const DEFERRED: usize = 32;

impl CpuState {
    const fn new() -> Self {
        Self {
            probes: [const { ProbeSlot::new() }; SLOTS],
            jmpbuf: AtomicU64::new(0),
            last_valid: AtomicBool::new(false),
            last: [const { AtomicU64::new(0) }; 4],
            deferred: [const { [const { AtomicU64::new(0) }; 3] }; DEFERRED],
            deferred_len: AtomicUsize::new(0),
            prev: [const { AtomicU64::new(0) }; 4],
            repeats: AtomicU32::new(0),
            reporting: AtomicBool::new(false),
        }
    }
}

static CPUS: [CpuState; MAX_CPUS] = [const { CpuState::new() }; MAX_CPUS];

/// This CPU's state; None for a CPU whose index bring-up got wrong, which then has no
/// probes and no guarded calls (its first fault is unrecoverable) instead of silently
/// sharing another CPU's.
fn this_cpu() -> Option<&'static CpuState> {
    CPUS.get(sysreg::cpu_index())
}

/// Arms `slot` on this CPU for one expected-fault site.
pub fn arm_probe(slot: Slot) {
    if let Some(c) = this_cpu() {
        let p = &c.probes[slot as usize];
        p.faulted.store(false, Ordering::Relaxed);
        p.armed.store(true, Ordering::Release);
    }
}

/// Disarms `slot` and returns the fault taken at the site, if any.
pub fn disarm_probe(slot: Slot) -> Option<Fault> {
    let p = &this_cpu()?.probes[slot as usize];
    p.armed.store(false, Ordering::Release);
    p.faulted.load(Ordering::Acquire).then(|| Fault {
        esr: Esr(p.esr.load(Ordering::Relaxed)),
        far: p.far.load(Ordering::Relaxed),
        elr: p.elr.load(Ordering::Relaxed),
    })
}

fn set_jmpbuf(addr: u64) -> u64 {
    this_cpu().map_or(0, |c| c.jmpbuf.swap(addr, Ordering::AcqRel))
}

/// An exception that no probe expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unexpected {
    /// The vector index (0..16).
    pub vector: u64,
    pub fault: Fault,
    pub spsr: u64,
    pub cpu: usize,
}

/// Why nothing can be resumed after an unexpected exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unrecoverable {
    /// No guarded call is in progress on that CPU.
    NoGuardedCall,
    /// The same exception (ESR, FAR, ELR) came this many times in a row: resuming would
    /// only take it again.
    Repeated(u32),
    /// An exception was taken while the previous one was being reported.
    Nested,
}

impl fmt::Display for Unrecoverable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoGuardedCall => write!(f, "unexpected exception outside any check"),
            Self::Repeated(n) => write!(f, "the same exception {n} times in a row"),
            Self::Nested => write!(f, "an exception while reporting an exception"),
        }
    }
}

/// Identical unexpected exceptions in a row after which the run stops.
const REPEAT_LIMIT: u32 = 8;

impl fmt::Display for Unexpected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// The policy for exceptions no probe expected, supplied by the binary.
pub struct Handlers {
    /// Reports the exception (on whichever CPU took it). When it returns, the guarded
    /// call in progress on that CPU is abandoned.
    pub unexpected: fn(&Unexpected),
    /// Nothing to resume on that CPU.
    pub unrecoverable: fn(&Unexpected, Unrecoverable) -> !,
}

static HANDLERS: Once<Handlers> = Once::new();

/// Installs the policy (once, before anything can fault).
pub fn install(handlers: Handlers) {
    HANDLERS.call_once(|| handlers);
}

/// Takes the unexpected exception this CPU recorded since the last call, if any.
pub fn take_unexpected() -> Option<Unexpected> {
    let c = this_cpu()?;
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
        spsr: 0,
        cpu: sysreg::cpu_index(),
    })
}

/// The trace of expected faults CPU slot `cpu` took since the last call (none unless
/// `trace` is on), and how many did not fit. For the boot CPU, once that CPU's job is
/// over: the job's end was published with Release after the faults were recorded.
pub fn take_deferred_trace(cpu: usize) -> (Vec<Fault>, usize) {
    let Some(c) = CPUS.get(cpu) else {
        return (Vec::new(), 0);
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

fn is_probe_site(elr: u64) -> bool {
    let start = crate::sym_addr!(ioguard_probe_sites) as *const u64;
    let end = crate::sym_addr!(ioguard_probe_sites_end) as *const u64;
    // SAFETY: [start, end) is the table of site addresses in probes.S, 8-byte aligned, in
    // one object (the probes section).
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

/// An armed slot, innermost first: the console arms its slot only while it prints, which
/// may happen inside the handling of a main-slot fault.
fn armed_slot(c: &CpuState) -> Option<&ProbeSlot> {
    [Slot::Console, Slot::Main]
        .into_iter()
        .map(|s| &c.probes[s as usize])
        .find(|p| p.armed.load(Ordering::Acquire))
}

/// Records an expected fault and steps over the probe site (all sites are 4 bytes). Only
/// the boot CPU traces as it goes: a secondary's console page may be exactly what a
/// buggy hypervisor refuses there (guard: other-cpu), so it keeps its faults for CPU 0.
fn expected(c: &CpuState, slot: &ProbeSlot, frame: &mut Frame, f: Fault) {
    slot.record(f);
    if trace::enabled() {
        if sysreg::cpu_index() == 0 {
            trace::line(format_args!(
                "trace: fault (expected) {} FAR={:#x} ELR={:#x}",
                f.esr, f.far, f.elr
            ));
        } else {
            defer_trace(c, f);
        }
    }
    frame.elr = f.elr + 4;
}

/// Called by vectors.S with the saved frame and the vector index (0..16).
#[no_mangle]
extern "C" fn ioguard_exception(frame: &mut Frame, vector: u64) {
    let fault = Fault {
        esr: Esr(sysreg::esr_el1()),
        far: sysreg::far_el1(),
        elr: frame.elr,
    };
    let u = Unexpected {
        vector,
        fault,
        spsr: frame.spsr,
        cpu: sysreg::cpu_index(),
    };
    let Some(c) = this_cpu() else {
        unrecoverable(&u, Unrecoverable::NoGuardedCall)
    };
    let synchronous = vector & 3 == 0;
    // A hypervisor that advanced ELR past the access it refused reports the instruction
    // after the probe site: still the probe's fault, recorded with that ELR (for the
    // check to judge), and resumed where the probe goes on anyway.
    let after_site = fault.elr.checked_sub(4).is_some_and(is_probe_site);
    if let Some(slot) =
        armed_slot(c).filter(|_| synchronous && (is_probe_site(fault.elr) || after_site))
    {
        expected(c, slot, frame, fault);
        if after_site {
            frame.elr = fault.elr;
        }
        return;
    }
    if c.reporting.swap(true, Ordering::AcqRel) {
        unrecoverable(&u, Unrecoverable::Nested)
    }
    let repeats = record_unexpected(c, &u);
    if repeats >= REPEAT_LIMIT {
        unrecoverable(&u, Unrecoverable::Repeated(repeats))
    }
    if let Some(h) = HANDLERS.get() {
        (h.unexpected)(&u);
    }
    c.reporting.store(false, Ordering::Release);
    let jb = c.jmpbuf.load(Ordering::Acquire);
    if jb == 0 {
        unrecoverable(&u, Unrecoverable::NoGuardedCall)
    }
    // Abandon the guarded call: return into ioguard_recover with x0 = its JmpBuf.
    frame.x[0] = jb;
    frame.elr = ioguard_recover as *const () as u64;
    frame.spsr = SPSR_EL1H_MASKED;
}

/// Keeps `u` as this CPU's last unexpected exception; returns how many times in a row it
/// came.
fn record_unexpected(c: &CpuState, u: &Unexpected) -> u32 {
    let f = u.fault;
    let values = [u.vector, f.esr.0, f.far, f.elr];
    let same = c
        .prev
        .iter()
        .zip(values)
        .all(|(s, v)| s.load(Ordering::Relaxed) == v);
    for (slot, v) in c.last.iter().zip(values) {
        slot.store(v, Ordering::Relaxed);
    }
    for (slot, v) in c.prev.iter().zip(values) {
        slot.store(v, Ordering::Relaxed);
    }
    c.last_valid.store(true, Ordering::Release);
    if same {
        c.repeats.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        c.repeats.store(1, Ordering::Relaxed);
        1
    }
}

/// Set once the boot CPU is past saving: a fault in the `unrecoverable` handler itself
/// parks it instead of recursing (the runner's timeout reports it).
static DYING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

fn unrecoverable(u: &Unexpected, why: Unrecoverable) -> ! {
    // A secondary powers itself off from the handler and may be started again later.
    let first = u.cpu != 0
        || DYING
            .get(u.cpu)
            .is_some_and(|d| !d.swap(true, Ordering::AcqRel));
    match HANDLERS.get() {
        Some(h) if first => (h.unrecoverable)(u, why),
        _ => loop {
            aarch64_cpu::asm::wfe();
        },
    }
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

/// Callee-saved state for abandoning a call: x19..x30, SP, d8..d15 at the offsets
/// probes.S uses (the last pair at 152..168).
#[repr(C, align(16))]
struct JmpBuf([u64; 22]);

const _: () = assert!(core::mem::size_of::<JmpBuf>() >= 168);

/// Runs `f` so that an unexpected exception or a panic inside it abandons `f` instead of
/// the run. Returns false when `f` was abandoned (its destructors do not run: what it
/// owned leaks; the caller's clean-up must stop whatever it left running).
pub fn run_abandonable<F: FnMut()>(mut f: F) -> bool {
    extern "C" fn trampoline<F: FnMut()>(arg: *mut core::ffi::c_void) {
        // SAFETY: `arg` is the `F` that run_abandonable passed, alive for the whole call.
        let f = unsafe { &mut *(arg as *mut F) };
        f();
    }
    let mut buf = JmpBuf([0; 22]);
    let outer = set_jmpbuf(&mut buf as *mut JmpBuf as u64);
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

/// Abandons the guarded call in progress on this CPU (from the panic handler); returns
/// if there is none.
pub fn abandon_guarded_call() {
    let jb = this_cpu().map_or(0, |c| c.jmpbuf.load(Ordering::Acquire));
    if jb != 0 {
        // SAFETY: jb is the JmpBuf of the guarded call in progress on this CPU, whose
        // frame is still live below us on this stack.
        unsafe { ioguard_recover(jb) }
    }
}
