//! The suite's probe bookkeeping: which device pages may still be registered with the
//! guard (so that a check that needs a page the hypervisor must refuse picks another),
//! stage-1 windows that are deliberately *not* registered, and the two expectations every
//! access check is built from: this read must be refused exactly as pKVM refuses it, this
//! one must be forwarded.

use crate::fault::Fault;
use crate::hyp::abi::Ret;
use crate::hyp::profile::Profile;
use crate::kernel::hyp::mmio_guard::{self, GuardCall, GuardOp, MmioGuard};
use crate::kernel::mm::{ioremap, mmu};
use crate::kernel::probe::{self, LoadFault, Width};
use crate::refusal::{judge_stray, Deviation, Observed, StrayAccess};
use crate::report::Outcome;
use crate::targets::{self, Target, TargetKind};
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::fmt;
use spin::{Mutex, Once};

use super::Ctx;

/// Granules that may still be registered: MAPped (by ioremap or by a check's own call)
/// and not since UNMAPped by a profile whose UNMAP takes effect.
static TAINTED: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());
/// Granules that were MAPped at some point: a check that needs one of them refused
/// proves it first (an UNMAP that did not take effect leaves a leftover).
static EVER: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());
static PROFILE: Once<Profile> = Once::new();

/// Starts watching the guard's calls (before the first one, the console's MAP).
pub fn watch_guard(profile: Profile) {
    PROFILE.call_once(|| profile);
    mmio_guard::observe(on_guard_call);
}

fn on_guard_call(c: &GuardCall) {
    let granules = (0..c.count).map(|i| (c.base & !(c.granule - 1)) + i * c.granule);
    let mut tainted = TAINTED.lock();
    match c.op {
        // Whatever else the answer, the hypervisor may have registered something.
        GuardOp::Map if c.answer != Ok(Ret::InvalidParameter) => {
            let granules: Vec<u64> = granules.collect();
            if let Some(mut ever) = EVER.try_lock() {
                ever.extend(granules.iter().copied());
            }
            tainted.extend(granules)
        }
        GuardOp::Map => {}
        GuardOp::Unmap if c.succeeded && PROFILE.get().is_some_and(|p| p.unmap_takes_effect()) => {
            for g in granules {
                tainted.remove(&g);
            }
        }
        GuardOp::Unmap => {}
    }
}

/// Whether `addr`'s granule may be registered.
pub fn tainted(addr: u64) -> bool {
    let g = ioremap::guard_granule().unwrap_or(targets::PAGE);
    TAINTED.lock().contains(&(addr & !(g - 1)))
}

/// The guard, or the SKIP/FAIL that replaces a check that needs one.
pub fn guard<'a>(ctx: &Ctx<'a>) -> Result<&'static MmioGuard, Outcome> {
    let hv = ctx.hv;
    if !hv.profile.has_guard() {
        return Err(Outcome::skip(format_args!(
            "profile {} has no MMIO guard",
            hv.profile
        )));
    }
    match (hv.mmio_guard(), hv.guard_unusable()) {
        (Some(g), _) => Ok(g),
        (None, Some(why)) => Err(Outcome::fail(format_args!("the guard is unusable: {why}"))),
        (None, None) => Err(Outcome::fail("the guard is unusable")),
    }
}

/// Every probe target outside the guard granules the devices' windows touch (a check that
/// MAPs and UNMAPs a target's granule would otherwise take a driver's registration away).
pub fn all_targets(ctx: &Ctx) -> Vec<Target> {
    let g = ioremap::guard_granule().unwrap_or(targets::PAGE);
    let held = ctx.devices.units(g);
    targets::targets(ctx.platform, &ctx.devices.pages())
        .into_iter()
        .filter(|t| !held.contains(&(t.base & !(g - 1))))
        .collect()
}

/// The probe targets whose granule no check or driver has registered.
pub fn unregistered_targets(ctx: &Ctx) -> Vec<Target> {
    all_targets(ctx)
        .into_iter()
        .filter(|t| !tainted(t.base))
        .collect()
}

fn granule_of(addr: u64) -> u64 {
    addr & !(ioremap::guard_granule().unwrap_or(targets::PAGE) - 1)
}

/// Whether `addr`'s granule was ever MAPped.
fn was_registered(addr: u64) -> bool {
    EVER.lock().contains(&granule_of(addr))
}

/// The first of `ts` (as `targets::pick` orders them, avoiding the granules in `avoid`)
/// whose granule the hypervisor refuses now. A granule an earlier check registered and
/// unregistered is proven refused first: if it is still forwarded (that check's UNMAP did
/// not take effect), an INFO line says so, it counts as registered from then on, and the
/// next candidate is tried. So a check's verdict does not depend on what ran before it.
pub fn pick_refused(ctx: &Ctx, mut ts: Vec<Target>, g: u64, avoid: &[u64]) -> Option<Target> {
    loop {
        let t = targets::pick(&ts, g, avoid)?;
        if !was_registered(t.base) {
            return Some(t);
        }
        match expect_refused(&t) {
            // It answered (the device's value, or one that cannot be told from it where the
            // device has no fixed ID): not refused, so possibly still registered.
            Err(NotRefused::Deviation {
                deviation: Deviation::Forwarded { .. } | Deviation::Dropped { .. },
                ..
            }) => {
                ctx.info(format_args!(
                    "{} page {:#x} still answers although it was unregistered by an earlier check: a leftover, not used here",
                    t.device,
                    t.page()
                ));
                let leftover = granule_of(t.base);
                TAINTED.lock().insert(leftover);
                ts.retain(|x| granule_of(x.base) != leftover);
            }
            // Refused (as it must be), or refused in some other wrong way the check
            // itself will report.
            _ => return Some(t),
        }
    }
}

/// The target a check that registers a page itself should use: one no call ever
/// registered if there is one (so the check does not meet the hypervisor's memory of an
/// earlier check's MAP), else any.
pub fn pick_unused(ts: &[Target], g: u64) -> Option<Target> {
    let unused: Vec<Target> = ts
        .iter()
        .copied()
        .filter(|t| !was_registered(t.base))
        .collect();
    targets::pick(&unused, g, &[]).or_else(|| targets::pick(ts, g, &[]))
}

/// A run of `n` consecutive granules with a probe target in each, unregistered ones
/// preferred: (first granule, the targets, whether all were unregistered).
pub fn consecutive(ctx: &Ctx, g: u64, n: u64) -> Option<(u64, Vec<Target>, bool)> {
    let by_granule =
        |ts: &[Target], base: u64| ts.iter().copied().find(|t| t.base & !(g - 1) == base);
    let run_in = |ts: &[Target]| {
        ts.iter().find_map(|a| {
            let first = a.base & !(g - 1);
            (0..n)
                .map(|i| by_granule(ts, first + i * g))
                .collect::<Option<Vec<Target>>>()
                .map(|run| (first, run))
        })
    };
    if let Some((first, run)) = run_in(&unregistered_targets(ctx)) {
        return Some((first, run, true));
    }
    run_in(&all_targets(ctx)).map(|(first, run)| (first, run, false))
}

/// A probe target no check has registered (so the hypervisor must refuse it), avoiding
/// the granules in `avoid`.
pub fn fresh(ctx: &Ctx, g: u64, avoid: &[u64]) -> Result<Target, Outcome> {
    pick_refused(ctx, unregistered_targets(ctx), g, avoid).ok_or_else(|| {
        Outcome::skip("no unregistered device page with a known ID register is left to probe")
    })
}

/// Maps a device page in stage 1 only, **without** registering it: an access through it
/// reaches stage 2 as a stray access would.
pub fn unregistered_window(page: u64) -> Result<mmu::DeviceMapping, mmu::MmuError> {
    mmu::map_device(page, targets::PAGE)
}

/// Reads `t`'s register at `offset` through a stage-1 mapping that is not registered.
pub fn stray_read(
    t: &Target,
    width: Width,
    offset: u64,
) -> Result<Result<u64, LoadFault>, mmu::MmuError> {
    let _window = unregistered_window(t.page())?;
    // SAFETY: a read of a device register on a page mapped as device memory just above;
    // identification registers have no read side effects, and a fault is expected.
    Ok(unsafe { probe::read(t.base + offset, width) })
}

/// Why a read that had to be refused was not.
#[derive(Debug)]
pub enum NotRefused {
    Unmapped(mmu::MmuError),
    Deviation {
        device: TargetKind,
        addr: u64,
        deviation: Deviation,
    },
}

impl fmt::Display for NotRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unmapped(e) => write!(f, "stage-1 map: {e}"),
            Self::Deviation {
                device,
                addr,
                deviation:
                    d @ (Deviation::Forwarded { .. }
                    | Deviation::Dropped { .. }
                    | Deviation::StoreCompleted),
            } => write!(f, "access to unregistered {device} {addr:#x} {d}"),
            Self::Deviation { deviation, .. } => write!(f, "{deviation}"),
        }
    }
}

/// What a load came back with, as the judgement reads it.
pub fn observed_load(r: Result<u64, LoadFault>) -> Observed {
    match r {
        Ok(v) => Observed::Loaded(v),
        Err(l) => Observed::LoadFaulted {
            fault: l.fault,
            dest: l.dest,
            untouched: l.dest_untouched(),
        },
    }
}

/// A stray read of `t`'s ID register must be refused exactly as pKVM refuses it.
pub fn expect_refused(t: &Target) -> Result<Fault, NotRefused> {
    let r = stray_read(t, Width::W32, t.id_offset).map_err(NotRefused::Unmapped)?;
    let access = StrayAccess {
        addr: t.id_addr(),
        site: probe::load_site(Width::W32),
        device_answer: t.id_value.map(u64::from),
    };
    judge_stray(&access, observed_load(r)).map_err(|deviation| NotRefused::Deviation {
        device: t.device,
        addr: t.id_addr(),
        deviation,
    })
}

/// Why a read of a registered page did not reach the device.
#[derive(Debug)]
pub enum NotForwarded {
    Unmapped(mmu::MmuError),
    Value {
        device: TargetKind,
        page: u64,
        value: u64,
        expected: alloc::string::String,
    },
    Aborted {
        device: TargetKind,
        page: u64,
        fault: Fault,
    },
}

impl fmt::Display for NotForwarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unmapped(e) => write!(f, "{e}"),
            Self::Value {
                device,
                page,
                value,
                expected,
            } => write!(
                f,
                "registered {device} page {page:#x} read {value:#x}, not its ID {expected}"
            ),
            Self::Aborted {
                device,
                page,
                fault,
            } => write!(f, "registered {device} page {page:#x} aborted: {fault}"),
        }
    }
}

/// A read of `t`'s ID register must be forwarded (the page is registered).
pub fn expect_forwarded(t: &Target) -> Result<(), NotForwarded> {
    let _window = unregistered_window(t.page()).map_err(NotForwarded::Unmapped)?;
    // SAFETY: as in stray_read; the page is registered, so the read should reach the device.
    match unsafe { probe::read(t.id_addr(), Width::W32) } {
        Ok(v) if t.answers(v as u32) => Ok(()),
        Ok(value) => Err(NotForwarded::Value {
            device: t.device,
            page: t.page(),
            value,
            expected: t.expected(),
        }),
        Err(l) => Err(NotForwarded::Aborted {
            device: t.device,
            page: t.page(),
            fault: l.fault,
        }),
    }
}

/// A guard or memshare answer, for messages.
pub struct Answer<'a>(pub &'a Result<Ret, Fault>);

impl fmt::Display for Answer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(r) => write!(f, "{r}"),
            Err(fault) => write!(f, "an abort ({fault})"),
        }
    }
}

/// The granules that may be registered now (what the guest itself MAPped and did not take
/// back with an UNMAP that takes effect): where the fuzzer's model starts.
pub fn tainted_granules() -> BTreeSet<u64> {
    TAINTED.lock().clone()
}
