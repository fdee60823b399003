//! Self-tests of the reporting path, run only when named exactly (`only=selftest:panic`):
//! they fail on purpose, to show that a crash inside a check becomes that check's FAIL line,
//! that the clean-up the check registered runs, and that the run still ends with a summary
//! and a status.

use super::Ctx;
use crate::println;
use crate::report::Outcome;

checks!(explicit "selftest": unexpected_exception, panic);

/// A plain load from a page that is not mapped in stage 1, outside the probe API.
pub fn unexpected_exception(ctx: &Ctx) -> Outcome {
    let Some(ram) = ctx.platform.first_ram() else {
        return Outcome::skip("no RAM in the device tree");
    };
    // The page below the first RAM region is never mapped (RAM starts page aligned and
    // device pages are mapped only by ioremap).
    let addr = ram.base.wrapping_sub(0x1000);
    ctx.on_abandon(|| println!("INFO: selftest: clean-up ran after the check was abandoned"));
    // SAFETY: the address is not mapped, so the load faults before it reads anything; the
    // exception handler abandons this check and never resumes after the load.
    let v = unsafe { core::ptr::read_volatile(addr as *const u32) };
    Outcome::pass(format_args!(
        "read {v:#x} at {addr:#x}: no exception was raised"
    ))
}

/// A panic inside a check.
pub fn panic(ctx: &Ctx) -> Outcome {
    ctx.on_abandon(|| println!("INFO: selftest: clean-up ran after the check was abandoned"));
    panic!("deliberate panic in a check")
}
