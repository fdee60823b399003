//! SMCCC calls through the device tree's conduit, each one traced on request and each one
//! safe against a hypervisor that answers with an abort instead of a return value.
//!
//! Hand-written rather than the `smccc` crate's calls: the HVC/SMC must sit at a probe
//! site (probes.S) so that an abort injected at the call comes back as a value, and the
//! whole x0..x3 answer is needed (range calls return a count in x1).

use crate::fault::Fault;
use crate::hyp::abi;
use crate::platform::Conduit;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::kernel::exceptions::{arm_probe, disarm_probe, Slot};
use crate::kernel::trace;

extern "C" {
    fn ioguard_hvc_call(regs: *mut [u64; 4]);
    fn ioguard_smc_call(regs: *mut [u64; 4]);
}

/// 0 until the device tree named the conduit.
static CONDUIT: AtomicU8 = AtomicU8::new(0);
const HVC: u8 = 1;
const SMC: u8 = 2;

/// Sets the conduit `/psci` `method` names.
pub fn set(c: Conduit) {
    CONDUIT.store(if c == Conduit::Hvc { HVC } else { SMC }, Ordering::Relaxed);
}

/// Whether the device tree named the conduit yet.
pub fn known() -> bool {
    CONDUIT.load(Ordering::Relaxed) != 0
}

fn conduit() -> Conduit {
    match CONDUIT.load(Ordering::Relaxed) {
        SMC => Conduit::Smc,
        // Before the tree is read only discovery-free code runs; HVC is the guest's norm.
        _ => Conduit::Hvc,
    }
}

/// What a call came back with.
pub type Answer = Result<[u64; 4], Fault>;

/// Calls `fid` with x1..x3 = `args` through the conduit; returns x0..x3, or the fault the
/// call raised (an abort injected at the HVC, or UNDEF where there is no such conduit).
pub fn call(fid: u32, args: [u64; 3]) -> Answer {
    let result = call_untraced(fid, args);
    if trace::enabled() {
        trace_call(fid, args, &result);
    }
    result
}

/// `call` without its trace line: for secondary CPUs, which never print, and for polling
/// loops, which trace their outcome once.
pub fn call_untraced(fid: u32, args: [u64; 3]) -> Answer {
    let mut regs = [u64::from(fid), args[0], args[1], args[2]];
    arm_probe(Slot::Main);
    // SAFETY: the call site only moves registers to and from `regs`, a local; a fault at
    // the HVC/SMC is caught by the armed handler. The hypervisor or firmware may change
    // the machine's state as the call asks, which is the point.
    unsafe {
        match conduit() {
            Conduit::Hvc => ioguard_hvc_call(&mut regs),
            Conduit::Smc => ioguard_smc_call(&mut regs),
        }
    }
    match disarm_probe(Slot::Main) {
        None => Ok(regs),
        Some(f) => Err(f),
    }
}

/// A call as its trace line names it.
struct Called {
    conduit: Conduit,
    fid: u32,
    args: [u64; 3],
}

impl core::fmt::Display for Called {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [x1, x2, x3] = self.args;
        write!(
            f,
            "{} {}({:#x}) x1={x1:#x} x2={x2:#x} x3={x3:#x}",
            self.conduit,
            abi::name(self.fid),
            self.fid
        )
    }
}

/// The trace line of one call.
pub fn trace_call(fid: u32, args: [u64; 3], result: &Answer) {
    let call = Called {
        conduit: conduit(),
        fid,
        args,
    };
    match result {
        Ok([x0, x1, x2, x3]) => trace::line(format_args!(
            "trace: {call} -> x0={x0:#x} x1={x1:#x} x2={x2:#x} x3={x3:#x}"
        )),
        Err(f) => trace::line(format_args!("trace: {call} -> abort {f}")),
    }
}

/// `call` for functions that answer a status in x0.
pub fn status(fid: u32, args: [u64; 3], narrow: bool) -> Result<abi::Ret, Fault> {
    call(fid, args).map(|r| abi::Ret::decode(r[0], narrow))
}
