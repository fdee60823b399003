//! Reading a guest page from the host without dying of it.
//!
//! Under pKVM a page the protected guest owns is unmapped from the host's stage 2, so the
//! VMM's load from it faults and the kernel sends SIGSEGV. The probe is a single load at a
//! known instruction; the handler recognises that instruction by its PC, flags the fault in
//! x1 and steps over the load, so the probe returns whether the page was readable. Any
//! other fault is not ours: the handler restores the default action and returns, the
//! instruction faults again and the process dies as it would have.

use std::sync::atomic::{AtomicI32, Ordering};

// The probe: x0 = address; returns 0 if the load completed, 1 if it faulted.
core::arch::global_asm!(
    ".text",
    ".p2align 2",
    ".globl ioguard_vmm_probe_load",
    "ioguard_vmm_probe_load:",
    "    mov x1, #0",
    ".globl ioguard_vmm_probe_insn",
    "ioguard_vmm_probe_insn:",
    "    ldrb w2, [x0]",
    "    mov x0, x1",
    "    ret",
);

extern "C" {
    fn ioguard_vmm_probe_load(addr: *const u8) -> u64;
    static ioguard_vmm_probe_insn: u32;
}

/// The signal the last caught fault came with (SIGSEGV or SIGBUS).
static CAUGHT: AtomicI32 = AtomicI32::new(0);

fn probe_pc() -> u64 {
    // The address of the load instruction, never read through.
    (&raw const ioguard_vmm_probe_insn) as u64
}

extern "C" fn on_fault(sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let uc = ctx.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes a valid ucontext_t for a handler installed with SA_SIGINFO;
    // this thread is the one that faulted and nothing else uses its context meanwhile.
    let mc = unsafe { &mut (*uc).uc_mcontext };
    if mc.pc == probe_pc() {
        mc.regs[1] = 1;
        mc.pc += 4;
        CAUGHT.store(sig, Ordering::Relaxed);
        return;
    }
    // SAFETY: resetting a signal's action to the default is async-signal-safe; the faulting
    // instruction then runs again and the default action ends the process.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

#[derive(Debug)]
pub struct InstallError(std::io::Error);

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "installing the SIGSEGV handler: {}", self.0)
    }
}

/// Installs the handler for SIGSEGV and SIGBUS (process-wide).
pub fn install() -> Result<(), InstallError> {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: a zeroed sigaction is a valid value of the C struct; every field the
        // kernel reads is set below.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_fault as extern "C" fn(_, _, _) as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        // SAFETY: `sa.sa_mask` is a valid sigset_t owned by this frame.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
        // SAFETY: `sa` is fully initialised and the handler only touches the faulting
        // thread's context and an atomic.
        if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
            return Err(InstallError(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// What a single load from `addr` did: None if it completed, else the signal it raised.
/// [`install`] must have run.
pub fn read_faults(addr: *const u8) -> Option<i32> {
    // SAFETY: the probe loads one byte from `addr` and nothing else; a fault on that load
    // is caught by the installed handler, which steps over it. `addr` is a host address of
    // guest RAM that stays mapped in the VMM for the VM's life.
    let faulted = unsafe { ioguard_vmm_probe_load(addr) };
    (faulted != 0).then(|| CAUGHT.load(Ordering::Relaxed))
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        _ => "a signal",
    }
}
