//! `psci:` checks: secondary CPUs through PSCI.

use super::Ctx;
use crate::cpus::affinity;
use crate::kernel::smp;
use crate::report::Outcome;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

checks!("psci": cpu_on);

/// Every other CPU comes up with CPU_ON, runs a job at EL1 with the boot CPU's page
/// tables, reports its own MPIDR, and is OFF again per AFFINITY_INFO; the first one is
/// started twice, to show a CPU can be started again.
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
        return Outcome::skip(format_args!(
            "the device tree has {} CPU: needs -smp 2 or more",
            ctx.platform.cpus.len()
        ));
    }
    let slots = crate::cpus::MAX_CPUS - 1;
    let mut seen = Vec::new();
    let mut runs = others
        .iter()
        .copied()
        .take(slots)
        .enumerate()
        .collect::<Vec<_>>();
    // The first CPU once more, after it went off.
    runs.extend(runs.first().copied());
    for (i, mpidr) in runs {
        match smp::run_on(i + 1, mpidr, smp::this_mpidr) {
            Ok(there) if affinity(there) == affinity(mpidr) => {
                seen.push(format!("{:#x}", affinity(there)))
            }
            Ok(there) => {
                return Outcome::fail(format_args!(
                    "CPU_ON({mpidr:#x}) started a CPU whose MPIDR is {there:#x}"
                ))
            }
            Err(e) => return Outcome::fail(format_args!("CPU {mpidr:#x}: {e}")),
        }
    }
    let skipped = others.len().saturating_sub(slots);
    let note = if skipped > 0 {
        format!(" ({skipped} more CPUs than stack slots, not started)")
    } else {
        String::new()
    };
    Outcome::pass(format_args!(
        "CPUs {} each came up, ran a job and went off{note}",
        seen.join(", ")
    ))
}
