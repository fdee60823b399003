//! Secondary CPUs: run one job on another CPU and bring its result back to the boot CPU.
//!
//! `run_on` publishes the job in the slot's mailbox, starts the CPU with PSCI CPU_ON at
//! secondary.S's entry (context id = slot index), and waits, bounded by the generic
//! counter, for the outcome. The secondary runs the job under the guarded-call mechanism
//! the suite uses (an unexpected exception or a panic abandons the job, not the run),
//! writes the outcome, and powers itself off with CPU_OFF; `run_on` returns once
//! AFFINITY_INFO says the CPU is OFF, so the next `run_on` can start it again.
//!
//! Secondaries never print: all they saw comes back as data.
//! One job at a time per slot; the boot CPU waits for it (no scheduler, no interrupts).

use crate::cpus::{stack_range, Power, PsciError, MAX_CPUS, STACK_SIZE};
use crate::fault::Fault;
use crate::hyp::abi;
use alloc::boxed::Box;
use alloc::sync::Arc;
use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use spin::Mutex;

use super::arch::sysreg::{self, counter, frequency};
use super::exceptions::{self, Unexpected};
use super::hyp::conduit;
use super::mm::mmu;
use super::time::Deadline;
use super::{power, trace};

/// From CPU_ON to the job's end. TCG on a loaded 2-core host starts a CPU in well under
/// 10 ms; 2 s only bounds a CPU that never comes.
const JOB_TIMEOUT_MS: u64 = 2000;
/// From the job's end to AFFINITY_INFO = OFF.
const OFF_TIMEOUT_MS: u64 = 1000;
/// Pause between two AFFINITY_INFO calls, so a poll does not flood the hypervisor.
const POLL_PAUSE_US: u64 = 100;

// Mailbox states. The boot CPU moves IDLE -> POSTED and POSTED -> REVOKED, a secondary
// POSTED -> RUNNING -> DONE | ABANDONED; the boot CPU returns a finished slot to IDLE
// once the CPU is off. Each move is one atomic store or exchange, made after the data it
// publishes (Release) and read before that data (Acquire): a multi-word struct handed
// over by plain copies was seen torn under TCG.
const IDLE: u32 = 0;
const POSTED: u32 = 1;
const RUNNING: u32 = 2;
const DONE: u32 = 3;
const ABANDONED: u32 = 4;
const REVOKED: u32 = 5;

/// A job as the mailbox carries it: a thin pointer to this (a `Box<Job>`).
type Job = Box<dyn FnOnce() + Send>;

struct Mailbox {
    state: AtomicU32,
    /// `Box::into_raw` of the posted `Box<Job>`.
    job: AtomicU64,
    /// The secondary's stack pointer at its first Rust instruction, checked by the boot
    /// CPU against the slot's stack (secondary.S computed it).
    sp: AtomicU64,
    /// With ABANDONED: the unexpected exception (vector, ESR, FAR, ELR), if it was one.
    has_exception: AtomicBool,
    exception: [AtomicU64; 4],
}

impl Mailbox {
    const fn new() -> Self {
        Self {
            state: AtomicU32::new(IDLE),
            job: AtomicU64::new(0),
            sp: AtomicU64::new(0),
            has_exception: AtomicBool::new(false),
            exception: [const { AtomicU64::new(0) }; 4],
        }
    }

    fn record(&self, u: Option<Unexpected>) {
        if let Some(u) = u {
            let vals = [u.vector, u.fault.esr.0, u.fault.far, u.fault.elr];
            for (slot, v) in self.exception.iter().zip(vals) {
                slot.store(v, Ordering::Relaxed);
            }
        }
        self.has_exception.store(u.is_some(), Ordering::Relaxed);
    }

    fn exception(&self) -> Option<Unexpected> {
        if !self.has_exception.load(Ordering::Relaxed) {
            return None;
        }
        let [vector, esr, far, elr] =
            [0, 1, 2, 3].map(|i| self.exception[i].load(Ordering::Relaxed));
        Some(Unexpected {
            vector,
            fault: Fault {
                esr: crate::esr::Esr(esr),
                far,
                elr,
            },
            spsr: 0,
            cpu: 0,
        })
    }
}

static MAILBOXES: [Mailbox; MAX_CPUS] = [const { Mailbox::new() }; MAX_CPUS];

/// Why a job did not run, or did not come back.
#[derive(Debug)]
pub enum SmpError {
    /// Slot 0 is the boot CPU's; slots end at MAX_CPUS.
    NotASecondarySlot(usize),
    /// linker.ld's stack area is not `STACK_SIZE * MAX_CPUS` (crate::cpus disagrees).
    StackArea {
        have: u64,
        want: u64,
    },
    /// The boot CPU has not turned its MMU on: there is nothing for a secondary to copy.
    NoMmu,
    /// The slot still holds a job that never finished (an earlier timeout).
    Busy(usize),
    CpuOn {
        mpidr: u64,
        error: PsciError,
    },
    CpuOnAborted {
        mpidr: u64,
        fault: Fault,
    },
    NeverStarted {
        mpidr: u64,
        ms: u64,
    },
    Timeout {
        mpidr: u64,
        ms: u64,
    },
    Exception {
        mpidr: u64,
        what: Unexpected,
    },
    Panic {
        mpidr: u64,
    },
    WrongStack {
        index: usize,
        sp: u64,
    },
    AffinityInfo {
        mpidr: u64,
        error: PsciError,
    },
    AffinityInfoAborted {
        mpidr: u64,
        fault: Fault,
    },
    StayedOn {
        mpidr: u64,
        ms: u64,
        last: Power,
    },
    NoResult {
        mpidr: u64,
    },
}

impl fmt::Display for SmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotASecondarySlot(i) => write!(f, "CPU slot {i} is not a secondary slot (1..{MAX_CPUS})"),
            Self::StackArea { have, want } => write!(f, "linker.ld reserves {have:#x} bytes of stacks, crate::cpus expects {want:#x}"),
            Self::NoMmu => write!(f, "the boot CPU's MMU is not on: nothing for a secondary CPU to copy"),
            Self::Busy(i) => write!(f, "CPU slot {i} still holds a job that never finished"),
            Self::CpuOn { mpidr, error } => write!(f, "PSCI CPU_ON of MPIDR {mpidr:#x} answered {error}"),
            Self::CpuOnAborted { mpidr, fault } => write!(f, "PSCI CPU_ON of MPIDR {mpidr:#x} aborted: {fault}"),
            Self::NeverStarted { mpidr, ms } => write!(f, "CPU {mpidr:#x} accepted CPU_ON but did not reach ioguard's secondary entry within {ms} ms"),
            Self::Timeout { mpidr, ms } => write!(f, "CPU {mpidr:#x} started its job but did not finish it within {ms} ms"),
            Self::Exception { mpidr, what } => write!(f, "unexpected exception on CPU {mpidr:#x}: {what}"),
            Self::Panic { mpidr } => write!(f, "panic on CPU {mpidr:#x} (see its PANIC line)"),
            Self::WrongStack { index, sp } => write!(f, "CPU slot {index} ran on SP={sp:#x}, outside its stack"),
            Self::AffinityInfo { mpidr, error } => write!(f, "PSCI AFFINITY_INFO of MPIDR {mpidr:#x} answered {error}"),
            Self::AffinityInfoAborted { mpidr, fault } => write!(f, "PSCI AFFINITY_INFO of MPIDR {mpidr:#x} aborted: {fault}"),
            Self::StayedOn { mpidr, ms, last } => write!(f, "CPU {mpidr:#x} finished its job but AFFINITY_INFO still says {last} after {ms} ms (did CPU_OFF fail?)"),
            Self::NoResult { mpidr } => write!(f, "CPU {mpidr:#x} finished without a result"),
        }
    }
}

/// The running CPU's MPIDR_EL1.
pub fn this_mpidr() -> u64 {
    sysreg::mpidr()
}

fn mailbox(index: usize) -> Result<&'static Mailbox, SmpError> {
    match MAILBOXES.get(index) {
        Some(mb) if index != 0 => Ok(mb),
        _ => Err(SmpError::NotASecondarySlot(index)),
    }
}

fn check_stack_area() -> Result<(), SmpError> {
    let have = crate::sym_addr!(__stacks_end) - crate::sym_addr!(__stacks_start);
    let want = STACK_SIZE * MAX_CPUS as u64;
    if have != want {
        return Err(SmpError::StackArea { have, want });
    }
    Ok(())
}

/// Takes back a job no CPU claimed; false if a secondary claimed it meanwhile.
fn revoke(mb: &Mailbox) -> bool {
    if mb
        .state
        .compare_exchange(POSTED, REVOKED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return false;
    }
    let job = mb.job.swap(0, Ordering::Relaxed) as *mut Job;
    if !job.is_null() {
        // SAFETY: the pointer came from Box::into_raw in run_on; a secondary takes
        // ownership only by moving the state POSTED -> RUNNING, which the exchange above
        // has just made impossible, so this CPU is its only owner.
        drop(unsafe { Box::from_raw(job) });
    }
    true
}

/// Polls AFFINITY_INFO until `mpidr` is OFF, for at most `ms`. Untraced per poll; the
/// last answer is traced.
fn wait_off(mpidr: u64, ms: u64) -> Result<u32, SmpError> {
    let deadline = Deadline::after_ms(ms);
    let args = [mpidr, 0, 0];
    let mut polls = 0;
    loop {
        let answer = conduit::call_untraced(abi::PSCI_AFFINITY_INFO_64, args);
        polls += 1;
        let power = match answer {
            Err(fault) => Err(SmpError::AffinityInfoAborted { mpidr, fault }),
            Ok(r) => Power::decode(r[0]).map_err(|error| SmpError::AffinityInfo { mpidr, error }),
        };
        let done = !matches!(power, Ok(Power::On | Power::OnPending)) || deadline.passed();
        if done {
            if trace::enabled() {
                conduit::trace_call(abi::PSCI_AFFINITY_INFO_64, args, &answer);
            }
            return match power? {
                Power::Off => Ok(polls),
                last => Err(SmpError::StayedOn { mpidr, ms, last }),
            };
        }
        let pause = Deadline::after_us(POLL_PAUSE_US);
        while !pause.passed() {
            core::hint::spin_loop();
        }
    }
}

/// Runs `job` on the CPU `mpidr`, using stack slot `index` (1..MAX_CPUS), and returns its
/// result. The CPU must be off; it is off again when this returns Ok. Never hangs: a CPU
/// that does not come, does not finish, or does not power off is an error.
///
/// The job is `'static` because on a timeout it may still run later, after this returns.
pub fn run_on<R, F>(index: usize, mpidr: u64, job: F) -> Result<R, SmpError>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    run_on_beside(index, mpidr, job, || ()).0
}

/// `run_on`, and `here` on this CPU while the job runs there: `here` is called once the
/// CPU was asked to start (or alone, when it could not be): the job's result and `here`'s.
pub fn run_on_beside<R, F, S>(
    index: usize,
    mpidr: u64,
    job: F,
    here: impl FnOnce() -> S,
) -> (Result<R, SmpError>, S)
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let mb = match ready_mailbox(index, mpidr) {
        Ok(mb) => mb,
        Err(e) => return (Err(e), here()),
    };
    let result: Arc<Mutex<Option<R>>> = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&result);
    post(
        mb,
        Box::new(move || {
            let r = job();
            *slot.lock() = Some(r);
        }),
    );
    let started = counter();
    let on = start(mb, index, mpidr);
    let beside = here();
    let r = on.and_then(|()| finish_job(mb, index, mpidr, started, &result));
    (r, beside)
}

/// Waits for the job `run_on_beside` started, and for its CPU to power off.
fn finish_job<R>(
    mb: &Mailbox,
    index: usize,
    mpidr: u64,
    started: u64,
    result: &Mutex<Option<R>>,
) -> Result<R, SmpError> {
    let end = wait_job(mb, mpidr)?;
    let ran_us = (counter() - started).saturating_mul(1_000_000) / frequency().max(1);
    // The job's expected faults, which the secondary could not print itself.
    let (faults, untold) = exceptions::take_deferred_trace(index);
    let off = wait_off(mpidr, OFF_TIMEOUT_MS);
    // A CPU still on leaves the slot finished, so that the next run_on waits for OFF.
    if off.is_ok() {
        mb.state.store(IDLE, Ordering::Release);
    }
    if trace::enabled() {
        trace_job(index, mpidr, end, ran_us, &off, &faults, untold);
    }
    off?;
    judge_job(mb, index, mpidr, end)?;
    let r = result.lock().take();
    r.ok_or(SmpError::NoResult { mpidr })
}

/// The slot's mailbox, once it can take a job.
fn ready_mailbox(index: usize, mpidr: u64) -> Result<&'static Mailbox, SmpError> {
    let mb = mailbox(index)?;
    check_stack_area()?;
    if !mmu::config_recorded() {
        return Err(SmpError::NoMmu);
    }
    match mb.state.load(Ordering::Acquire) {
        IDLE => {}
        // A job that finished after its run_on gave up, or one revoked before its CPU came
        // up (which then powers itself off): usable again once the CPU is off.
        DONE | ABANDONED | REVOKED => {
            wait_off(mpidr, OFF_TIMEOUT_MS)?;
        }
        _ => return Err(SmpError::Busy(index)),
    }
    Ok(mb)
}

fn post(mb: &Mailbox, job: Job) {
    let boxed: Box<Job> = Box::new(job);
    mb.job.store(Box::into_raw(boxed) as u64, Ordering::Relaxed);
    mb.sp.store(0, Ordering::Relaxed);
    mb.has_exception.store(false, Ordering::Relaxed);
    mb.state.store(POSTED, Ordering::Release);
}

/// PSCI CPU_ON at secondary.S's entry, context id = the slot.
fn start(mb: &Mailbox, index: usize, mpidr: u64) -> Result<(), SmpError> {
    // The physical address of the entry: the image runs identity mapped.
    let entry = crate::sym_addr!(ioguard_secondary_entry);
    let on = match conduit::call(abi::PSCI_CPU_ON_64, [mpidr, entry, index as u64]) {
        Err(fault) => Err(SmpError::CpuOnAborted { mpidr, fault }),
        Ok(r) => PsciError::status(r[0]).map_err(|error| SmpError::CpuOn { mpidr, error }),
    };
    if on.is_err() {
        // No CPU was started, so nothing can have claimed the job.
        revoke(mb);
        mb.state.store(IDLE, Ordering::Release);
    }
    on
}

/// Waits, bounded, for the job to end: DONE or ABANDONED.
fn wait_job(mb: &Mailbox, mpidr: u64) -> Result<u32, SmpError> {
    let deadline = Deadline::after_ms(JOB_TIMEOUT_MS);
    loop {
        match mb.state.load(Ordering::Acquire) {
            s @ (DONE | ABANDONED) => return Ok(s),
            s if deadline.passed() => {
                let ms = JOB_TIMEOUT_MS;
                return Err(if s == POSTED && revoke(mb) {
                    SmpError::NeverStarted { mpidr, ms }
                } else {
                    // Left RUNNING: the slot stays busy, the job and its result leak.
                    SmpError::Timeout { mpidr, ms }
                });
            }
            _ => core::hint::spin_loop(),
        }
    }
}

fn trace_job(
    index: usize,
    mpidr: u64,
    end: u32,
    ran_us: u64,
    off: &Result<u32, SmpError>,
    faults: &[Fault],
    untold: usize,
) {
    for f in faults {
        trace::line(format_args!(
            "trace: fault (expected) {f} on cpu slot {index}"
        ));
    }
    if untold > 0 {
        trace::line(format_args!(
            "trace: {untold} more expected fault(s) on cpu slot {index}"
        ));
    }
    let job = if end == DONE { "done" } else { "abandoned" };
    match off {
        Ok(polls) => trace::line(format_args!(
            "trace: cpu slot {index} (MPIDR {mpidr:#x}): up, job {job} in {ran_us} us, off after {polls} AFFINITY_INFO call(s)"
        )),
        Err(_) => trace::line(format_args!(
            "trace: cpu slot {index} (MPIDR {mpidr:#x}): up, job {job} in {ran_us} us, not off"
        )),
    }
}

/// How the job ended, and whether it ran where it should.
fn judge_job(mb: &Mailbox, index: usize, mpidr: u64, end: u32) -> Result<(), SmpError> {
    if end == ABANDONED {
        return Err(match mb.exception() {
            Some(what) => SmpError::Exception { mpidr, what },
            None => SmpError::Panic { mpidr },
        });
    }
    let sp = mb.sp.load(Ordering::Relaxed);
    let on_its_stack = stack_range(crate::sym_addr!(__stacks_start), index)
        .is_some_and(|(bottom, top)| sp > bottom && sp <= top);
    if !on_its_stack {
        return Err(SmpError::WrongStack { index, sp });
    }
    Ok(())
}

/// secondary.S's call into Rust, on the slot's own stack with the MMU on.
#[no_mangle]
extern "C" fn ioguard_secondary(index: u64) -> ! {
    let Some(mb) = MAILBOXES.get(index as usize) else {
        power_off()
    };
    let sp: u64;
    // SAFETY: reading SP has no side effects.
    unsafe { asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    mb.sp.store(sp, Ordering::Relaxed);
    if mb
        .state
        .compare_exchange(POSTED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // Revoked (the boot CPU gave up waiting) or started by someone else.
        power_off()
    }
    let job = mb.job.swap(0, Ordering::Relaxed) as *mut Job;
    // SAFETY: `job` is the Box<Job> that run_on leaked into the mailbox; this CPU claimed
    // it (POSTED -> RUNNING), which makes it the only owner.
    let job = unsafe { Box::from_raw(job) };
    let mut job = Some(job);
    let finished = exceptions::run_abandonable(|| {
        if let Some(j) = job.take() {
            j()
        }
    });
    finish(mb, !finished)
}

fn finish(mb: &Mailbox, abandoned: bool) -> ! {
    if abandoned {
        mb.record(exceptions::take_unexpected());
        mb.state.store(ABANDONED, Ordering::Release);
    } else {
        mb.state.store(DONE, Ordering::Release);
    }
    power_off()
}

/// An unexpected exception on a secondary outside its job: report it as the end of the
/// job, if one is running, and power off.
pub fn secondary_failed() -> ! {
    match MAILBOXES.get(sysreg::cpu_index()) {
        Some(mb) if mb.state.load(Ordering::Acquire) == RUNNING => finish(mb, true),
        _ => power_off(),
    }
}

fn power_off() -> ! {
    let _ = conduit::call_untraced(abi::PSCI_CPU_OFF, [0; 3]);
    // CPU_OFF came back, so it failed: run_on's AFFINITY_INFO wait reports the CPU on.
    power::park()
}
