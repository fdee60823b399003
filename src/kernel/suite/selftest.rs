//! Self-tests, run only when named exactly (`only=selftest:panic`). Two fail on purpose,
//! to show that a crash inside a check becomes that check's FAIL line, that the clean-up
//! the check registered runs, and that the run still ends with a summary and a status.
//! One breaks a rule on purpose to show the hypervisor enforces it (`dma-private`).

use super::virtio::with_bus;
use super::Ctx;
use crate::kernel::virtio::{devices, pool};
use crate::println;
use crate::report::Outcome;

checks!(explicit "selftest": unexpected_exception, panic, dma_private);

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

/// Under memory sharing, hands the entropy device a buffer in a private page, unbounced:
/// a hypervisor that keeps private memory from the host never lets the device fill it.
/// Not for a real pKVM host: there the VMM's access to the private page is fatal to it.
pub fn dma_private(ctx: &Ctx) -> Outcome {
    if ctx.hv.mem_sharer().is_none() {
        return Outcome::skip(format_args!(
            "profile {} has no memory sharing: every page is the host's",
            ctx.hv.profile
        ));
    }
    with_bus(ctx, |bus| {
        let Some(rng) = bus.rng.first_mut() else {
            return Outcome::skip("no virtio-rng device");
        };
        let mut private = [0u8; 32];
        let at = private.as_ptr() as u64;
        pool::give_next_unbounced();
        match rng.fill(&mut private) {
            Err(devices::DeviceError::NoAnswer { ms }) => Outcome::pass(format_args!(
                "the device never answered a request into private memory at {at:#x} \
                 (given up after {ms} ms): the host could not reach it"
            )),
            Err(e) => Outcome::fail(format_args!("requesting entropy: {e}")),
            Ok(n) => Outcome::fail(format_args!(
                "the device wrote {n} bytes into private memory at {at:#x}, which was never shared"
            )),
        }
    })
}
