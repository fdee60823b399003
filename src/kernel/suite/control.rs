//! `control:` checks: the same probes where no guard refuses them, which proves the
//! probes reach real devices.

use super::pages::{all_targets, stray_read};
use super::Ctx;
use crate::kernel::probe::Width;
use crate::report::Outcome;
use crate::targets;

checks!("control": stray_forwarded);

/// Profile none/kvm/pkvm: the same stray access reaches the device (proves the probes
/// are real); under pkvm the line says plainly that this hypervisor forwards stray
/// accesses to the host.
pub fn stray_forwarded(ctx: &Ctx) -> Outcome {
    let profile = ctx.hv.profile;
    if profile.has_guard() {
        return Outcome::skip(format_args!(
            "profile {profile} has a guard: stray accesses must abort"
        ));
    }
    let Some(t) = targets::pick(&all_targets(ctx), targets::PAGE, &[]) else {
        return Outcome::skip("no probe target");
    };
    match stray_read(&t, Width::W32, t.id_offset) {
        Err(e) => Outcome::fail(format_args!("stage-1 map of {:#x}: {e}", t.page())),
        Ok(Ok(v)) if t.answers(v as u32) => Outcome::pass(format_args!(
            "profile {profile} has no MMIO guard: a stray access reaches the host \
             (unregistered {} page {:#x} forwarded, ID {v:#x})",
            t.device,
            t.page()
        )),
        Ok(Ok(v)) => Outcome::fail(format_args!(
            "{} ID read {v:#x}, expected {}",
            t.device,
            t.expected()
        )),
        Ok(Err(l)) => Outcome::fail(format_args!(
            "profile {profile}: unregistered {} page aborted: {}",
            t.device, l.fault
        )),
    }
}
