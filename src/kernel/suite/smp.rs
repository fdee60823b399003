//! `guard: other-cpu` (CHECKS.md): the guard belongs to the VM, not to a CPU. A page the
//! boot CPU registered must be forwarded on another CPU, and a stray access there must
//! still abort, there. The other CPU is started twice (once per access), which also
//! proves that it can be brought up again after it powered off.

use super::guard::{expect_forwarded, expect_refused, fresh, guard};
use super::{Ctx, Outcome};
use crate::kernel::{ioremap, smp};
use crate::smp::{affinity, other_cpu};
use crate::targets::{self, Target};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The stack slot the other CPU runs on (slot 0 is the boot CPU's).
const SLOT: usize = 1;

/// The page CPU 0 registers: one an earlier check may have left registered, if there is
/// one, else a fresh one. Under profiles whose UNMAP has no effect a registration lasts
/// for the whole run, and a fresh page spent here would be missing for later checks that
/// need an unregistered one; registering a page again is what ioremap does anyway.
fn page_to_register(ctx: &Ctx, g: u64) -> Result<Target, Outcome> {
    let registered: Vec<Target> = targets::targets(ctx.platform)
        .into_iter()
        .filter(|t| ioremap::tainted(t.base))
        .collect();
    match targets::pick(&registered, g, &[]) {
        Some(t) => Ok(t),
        None => fresh(ctx, g, &[]),
    }
}

pub fn other_cpu_check(ctx: &Ctx) -> Outcome {
    let (_, g) = need!(guard(ctx));
    let cpus = &ctx.platform.cpus;
    if cpus.len() < 2 {
        return Outcome::Skip(format!(
            "the device tree has {} CPU: needs -smp 2 or more",
            cpus.len()
        ));
    }
    let me = smp::this_mpidr();
    let Some(mpidr) = other_cpu(cpus, me) else {
        return Outcome::Skip(format!(
            "no CPU in /cpus other than this one (MPIDR {me:#x})"
        ));
    };
    let n = cpus.iter().position(|&c| c == mpidr).unwrap_or(SLOT);
    let other = format!("CPU {n} (MPIDR {mpidr:#x})");

    let registered = need!(page_to_register(ctx, g));
    let stray = need!(fresh(ctx, g, &[registered.base]));
    // Registered here, on the boot CPU, for as long as `window` lives.
    let window = match ioremap::ioremap(registered.page(), targets::PAGE) {
        Ok(m) => m,
        Err(e) => return Outcome::Fail(format!("ioremap({:#x}): {e}", registered.page())),
    };

    let forwarded = smp::run_on(SLOT, mpidr, move || {
        (smp::this_mpidr(), expect_forwarded(&registered))
    });
    let refused = smp::run_on(SLOT, mpidr, move || {
        (smp::this_mpidr(), expect_refused(&stray))
    });
    // The control: the boot CPU itself still sees its registration.
    let here = expect_forwarded(&registered);
    drop(window);

    let mut wrong: Vec<String> = Vec::new();
    let misplaced = |who: u64, what: &str| {
        (affinity(who) != affinity(mpidr))
            .then(|| format!("the {what} job meant for {other} ran on MPIDR {who:#x}"))
    };
    let mut seen = None;
    match &forwarded {
        Err(e) => wrong.push(format!(
            "could not run the registered-page read on {other}: {e}"
        )),
        Ok((who, r)) => {
            wrong.extend(misplaced(*who, "registered-page"));
            seen = Some(*who);
            if let Err(why) = r {
                wrong.push(match &here {
                    Ok(()) => format!(
                        "a page registered on CPU 0 aborts on {other} while CPU 0 still reads it: the registration holds only on the CPU that made it (per CPU, not per VM): {why}"
                    ),
                    Err(why0) => format!(
                        "the page registered on CPU 0 aborts on CPU 0 too ({why0}), so registration itself failed (see guard: registered-read); on {other}: {why}"
                    ),
                });
            }
        }
    }
    let mut fault = None;
    match &refused {
        Err(e) => wrong.push(format!("could not run the stray read on {other}: {e}")),
        Ok((who, r)) => {
            wrong.extend(misplaced(*who, "stray-read"));
            match r {
                Ok(f) => fault = Some(*f),
                Err(why) => wrong.push(format!(
                    "a stray access on {other} was not refused there: {why}"
                )),
            }
        }
    }
    if !wrong.is_empty() {
        return Outcome::Fail(wrong.join("; "));
    }
    let fault = fault.map(|f| format!("{f}")).unwrap_or_default();
    Outcome::Pass(format!(
        "{} page {:#x} registered on CPU 0 is forwarded on {other} (MPIDR_EL1 there {:#x}); stray {} {:#x} aborts there: {fault}; started twice",
        registered.device,
        registered.page(),
        seen.unwrap_or(0),
        stray.device,
        stray.id_addr(),
    ))
}

/// Every other CPU of the tree comes up with PSCI CPU_ON, runs a job at EL1 with the
/// boot CPU's page tables, reports its own MPIDR, and goes off again (CPU_OFF, then
/// AFFINITY_INFO says OFF); the first one twice, to show a CPU can be started again.
pub fn cpu_on(ctx: &Ctx) -> Outcome {
    let me = smp::this_mpidr();
    let others: Vec<u64> = ctx
        .platform
        .cpus
        .iter()
        .copied()
        .filter(|c| affinity(*c) != affinity(me))
        .collect();
    if others.is_empty() {
        return Outcome::Skip(format!(
            "the device tree has {} CPU: needs -smp 2 or more",
            ctx.platform.cpus.len()
        ));
    }
    let slots = crate::smp::MAX_CPUS - 1;
    let mut seen = Vec::new();
    let mut runs = others
        .iter()
        .copied()
        .take(slots)
        .enumerate()
        .collect::<Vec<_>>();
    // The first CPU once more, after it went off.
    runs.push(runs[0]);
    for (i, mpidr) in runs {
        match smp::run_on(i + 1, mpidr, smp::this_mpidr) {
            Ok(there) if affinity(there) == affinity(mpidr) => {
                seen.push(format!("{:#x}", affinity(there)))
            }
            Ok(there) => {
                return Outcome::Fail(format!(
                    "CPU_ON({mpidr:#x}) started a CPU whose MPIDR is {there:#x}"
                ))
            }
            Err(e) => return Outcome::Fail(format!("CPU {mpidr:#x}: {e}")),
        }
    }
    let skipped = others.len().saturating_sub(slots);
    let note = if skipped > 0 {
        format!(" ({skipped} more CPUs than stack slots, not started)")
    } else {
        String::new()
    };
    Outcome::Pass(format!(
        "CPUs {} each came up, ran a job and went off{note}",
        seen.join(", ")
    ))
}
