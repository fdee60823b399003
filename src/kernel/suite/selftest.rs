//! Self-tests of the reporting path, run only when named exactly (`only=selftest:panic`):
//! they fail on purpose, to show that a crash inside a check becomes that check's FAIL line
//! and the run still ends with a summary and a status.

use super::{Ctx, Outcome};

/// Reads a page that is not mapped in stage 1 with a plain load, outside the probe API.
pub fn unexpected_exception(ctx: &Ctx) -> Outcome {
    // The page below the first RAM region is never mapped (RAM starts page aligned and
    // device pages are mapped only by ioremap).
    let addr = ctx.platform.memory[0].base.wrapping_sub(0x1000);
    // SAFETY: the address is not mapped, so the load faults before it reads anything; the
    // exception handler abandons this check and never resumes after the load.
    let v = unsafe { core::ptr::read_volatile(addr as *const u32) };
    Outcome::Pass(alloc::format!(
        "read {v:#x} at {addr:#x}: no exception was raised"
    ))
}

pub fn panic(_: &Ctx) -> Outcome {
    panic!("deliberate panic in a check")
}
