//! SMCCC calls through the device tree's conduit, each one traced on request and each one
//! safe against a hypervisor that answers with an abort instead of a return value.

use crate::hyp::abi;
use crate::platform::Conduit;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use spin::Mutex;

use super::exceptions::{arm_probe, disarm_probe, Fault, TRACE};
use super::{console, power};

extern "C" {
    fn ioguard_hvc_call(regs: *mut [u64; 4]);
    fn ioguard_smc_call(regs: *mut [u64; 4]);
}

/// Trace lines produced before the console exists (discovery and the console's own MAP
/// run first), printed as soon as it does.
static PENDING_TRACE: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn trace(line: String) {
    if !TRACE.load(Ordering::Relaxed) {
        return;
    }
    if console::is_installed() {
        flush_trace();
        console::write_fmt(format_args!("{line}\n"));
    } else {
        PENDING_TRACE.lock().push(line);
    }
}

/// Prints the trace lines held back until the console existed.
pub fn flush_trace() {
    let pending = core::mem::take(&mut *PENDING_TRACE.lock());
    for l in pending {
        console::write_fmt(format_args!("{l}\n"));
    }
}

/// What a call came back with.
pub type Answer = Result<[u64; 4], Fault>;

/// Calls `fid` with x1..x3 = `args` through the conduit; returns x0..x3, or the fault the
/// call raised (an abort injected at the HVC, or UNDEF where there is no such conduit).
pub fn call(fid: u32, args: [u64; 3]) -> Answer {
    let result = call_untraced(fid, args);
    if TRACE.load(Ordering::Relaxed) {
        trace_call(fid, args, &result);
    }
    result
}

/// `call` without its trace line: for secondary CPUs, which never print (see
/// exceptions::may_print), and for polling loops, which trace their outcome once.
pub fn call_untraced(fid: u32, args: [u64; 3]) -> Answer {
    let conduit = power::conduit().unwrap_or(Conduit::Hvc);
    let mut regs = [u64::from(fid), args[0], args[1], args[2]];
    arm_probe();
    // SAFETY: the call site only moves registers to and from `regs`, a local; a fault at
    // the HVC/SMC is caught by the armed handler. The hypervisor or firmware may change
    // the machine's state as the call asks, which is the point.
    unsafe {
        match conduit {
            Conduit::Hvc => ioguard_hvc_call(&mut regs),
            Conduit::Smc => ioguard_smc_call(&mut regs),
        }
    }
    match disarm_probe() {
        None => Ok(regs),
        Some(f) => Err(f),
    }
}

/// The trace line of one call.
pub fn trace_call(fid: u32, args: [u64; 3], result: &Answer) {
    let conduit = power::conduit().unwrap_or(Conduit::Hvc);
    let head = format!(
        "trace: {conduit} {}({fid:#x}) x1={:#x} x2={:#x} x3={:#x}",
        abi::name(fid),
        args[0],
        args[1],
        args[2]
    );
    trace(match result {
        Ok(r) => format!(
            "{head} -> x0={:#x} x1={:#x} x2={:#x} x3={:#x}",
            r[0], r[1], r[2], r[3]
        ),
        Err(f) => format!("{head} -> abort {f}"),
    });
}

/// `call` for functions that answer a status in x0.
pub fn status(fid: u32, args: [u64; 3], narrow: bool) -> Result<abi::Ret, Fault> {
    call(fid, args).map(|r| abi::Ret::decode(r[0], narrow))
}
