//! `ioremap`: a device window mapped in stage 1 and, where the hypervisor has a guard,
//! registered with it (MAP per guard granule, refcounted, UNMAP when the last window of a
//! granule goes). Registration is eager, never from the fault handler: lazy registration
//! would forward every stray access, which is what the guard exists to stop.

use crate::granules::{runs, Registry};
use crate::hyp::abi::{self, Ret};
use crate::hyp::profile::Profile;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use spin::Mutex;

use super::exceptions::Fault;
use super::mmu::{self, MmuError};
use super::smccc;

/// The guard as the ioremap layer uses it.
struct Guard {
    profile: Profile,
    registry: Registry,
    counters: Counters,
}

/// Hypercalls the layer made, for checks and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// MMIO_GUARD_MAP calls (or granules passed to MMIO_RGUARD_MAP).
    pub maps: u64,
    pub unmaps: u64,
    /// Range calls made (android16).
    pub range_calls: u64,
    pub failures: u64,
}

static GUARD: Mutex<Option<Guard>> = Mutex::new(None);

/// Granules that may still be registered with the hypervisor: MAPped (by the layer or by
/// a check's raw call) and not since UNMAPped by a profile whose UNMAP takes effect.
/// Checks that need a page the hypervisor must refuse pick one outside this set.
static TAINTED: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

fn taint(granule: u64) {
    TAINTED.lock().insert(granule);
}

fn untaint_if_effective(profile: Profile, granule: u64, answer: &Result<Ret, Fault>) {
    let success = match answer {
        Ok(Ret::Success) => !profile.unmap_inverted(),
        Ok(Ret::NotSupported) => profile.unmap_inverted(),
        _ => false,
    };
    if success && profile.has_unmap() && !profile.unmap_is_noop() {
        TAINTED.lock().remove(&granule);
    }
}

/// Whether `addr`'s granule may be registered.
pub fn tainted(addr: u64) -> bool {
    let g = guard_granule().unwrap_or(0x1000);
    TAINTED.lock().contains(&(addr & !(g - 1)))
}

/// A raw MMIO_GUARD_MAP outside the layer (for checks), keeping the taint set right.
pub fn raw_map(ipa: u64) -> Result<Ret, Fault> {
    let Some((profile, g)) = GUARD
        .lock()
        .as_ref()
        .map(|g| (g.profile, g.registry.granule()))
    else {
        return smccc::status(abi::MMIO_GUARD_MAP, [ipa, 0, 0], false);
    };
    let r = smccc::status(
        abi::MMIO_GUARD_MAP,
        [ipa, 0, 0],
        profile.map_error_is_narrow(),
    );
    if r != Ok(Ret::InvalidParameter) {
        // Whatever else the answer, the hypervisor may have registered something.
        taint(ipa & !(g - 1));
    }
    r
}

/// A raw MMIO_GUARD_UNMAP outside the layer (for checks). The answer is as the
/// hypervisor gave it (android13's inverted UNMAP is the caller's to judge).
pub fn raw_unmap(ipa: u64) -> Result<Ret, Fault> {
    let r = smccc::status(abi::MMIO_GUARD_UNMAP, [ipa, 0, 0], false);
    if let Some((profile, g)) = GUARD
        .lock()
        .as_ref()
        .map(|g| (g.profile, g.registry.granule()))
    {
        untaint_if_effective(profile, ipa & !(g - 1), &r);
    }
    r
}

/// Switches registration on: from now on every ioremap MAPs its granules.
pub fn enable_guard(profile: Profile, granule: u64) {
    if let Some(registry) = Registry::new(granule) {
        *GUARD.lock() = Some(Guard {
            profile,
            registry,
            counters: Counters::default(),
        });
    }
}

pub fn counters() -> Counters {
    GUARD
        .lock()
        .as_ref()
        .map(|g| g.counters)
        .unwrap_or_default()
}

/// Windows currently registered on `granule`'s granule (0 without a guard).
pub fn users(granule: u64) -> u32 {
    GUARD
        .lock()
        .as_ref()
        .map_or(0, |g| g.registry.users(granule))
}

pub fn guard_granule() -> Option<u64> {
    GUARD.lock().as_ref().map(|g| g.registry.granule())
}

#[derive(Debug)]
pub enum IoremapError {
    Mmu(MmuError),
    /// The hypervisor refused (or aborted) a MAP: the window is not usable.
    Map {
        granule: u64,
        answer: Result<Ret, Fault>,
    },
}

impl fmt::Display for IoremapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mmu(e) => write!(f, "{e}"),
            Self::Map {
                granule,
                answer: Ok(r),
            } => write!(f, "MMIO_GUARD_MAP({granule:#x}) answered {r}"),
            Self::Map {
                granule,
                answer: Err(fault),
            } => write!(f, "MMIO_GUARD_MAP({granule:#x}) aborted: {fault}"),
        }
    }
}

fn map_call(g: &mut Guard, base: u64, count: u64) -> Result<(), Result<Ret, Fault>> {
    let narrow = g.profile.map_error_is_narrow();
    let answer = if g.profile.has_range() {
        g.counters.range_calls += 1;
        smccc::status(abi::MMIO_RGUARD_MAP, [base, count, 0], narrow)
    } else {
        smccc::status(abi::MMIO_GUARD_MAP, [base, 0, 0], narrow)
    };
    g.counters.maps += count;
    for i in 0..count {
        taint(base + i * g.registry.granule());
    }
    match answer {
        Ok(Ret::Success) => Ok(()),
        other => {
            g.counters.failures += 1;
            Err(other)
        }
    }
}

fn unmap_call(g: &mut Guard, base: u64, count: u64) {
    if !g.profile.has_unmap() {
        return;
    }
    // Failures here are the checks' business (guard: unmap-return); the layer forgets the
    // granule either way.
    let answer = if g.profile.has_range() {
        g.counters.range_calls += 1;
        smccc::status(abi::MMIO_RGUARD_UNMAP, [base, count, 0], false)
    } else {
        smccc::status(abi::MMIO_GUARD_UNMAP, [base, 0, 0], false)
    };
    g.counters.unmaps += count;
    for i in 0..count {
        untaint_if_effective(g.profile, base + i * g.registry.granule(), &answer);
    }
}

/// Registers the granules of a window (those no other window holds yet).
fn register(base: u64, size: u64) -> Result<(), IoremapError> {
    let mut lock = GUARD.lock();
    let Some(g) = lock.as_mut() else {
        return Ok(());
    };
    let fresh = g.registry.acquire(base, size);
    let granule = g.registry.granule();
    let calls: Vec<(u64, u64)> = if g.profile.has_range() {
        runs(&fresh, granule)
    } else {
        fresh.iter().map(|a| (*a, 1)).collect()
    };
    for (i, (start, count)) in calls.iter().enumerate() {
        if let Err(answer) = map_call(g, *start, *count) {
            // Undo: the window is refused as a whole.
            for (s, c) in &calls[..i] {
                unmap_call(g, *s, *c);
            }
            g.registry.release(base, size);
            return Err(IoremapError::Map {
                granule: *start,
                answer,
            });
        }
    }
    Ok(())
}

fn unregister(base: u64, size: u64) {
    let mut lock = GUARD.lock();
    let Some(g) = lock.as_mut() else { return };
    let gone = g.registry.release(base, size);
    let granule = g.registry.granule();
    let calls: Vec<(u64, u64)> = if g.profile.has_range() {
        runs(&gone, granule)
    } else {
        gone.iter().map(|a| (*a, 1)).collect()
    };
    for (start, count) in calls {
        unmap_call(g, start, count);
    }
}

/// A registered device window. Dropping it is iounmap.
#[derive(Debug)]
pub struct IoMapping {
    stage1: mmu::DeviceMapping,
}

impl IoMapping {
    pub fn addr(&self) -> u64 {
        self.stage1.addr()
    }
    pub fn size(&self) -> u64 {
        self.stage1.size()
    }
}

impl Drop for IoMapping {
    fn drop(&mut self) {
        // stage1 is unmapped after this, by its own Drop; the order does not matter to the
        // hypervisor, and nothing accesses the window any more.
        unregister(self.stage1.addr(), self.stage1.size());
    }
}

/// Maps `[base, base + size)` as device memory and registers it with the guard.
pub fn ioremap(base: u64, size: u64) -> Result<IoMapping, IoremapError> {
    register(base, size)?;
    match mmu::map_device(base, size) {
        Ok(stage1) => Ok(IoMapping { stage1 }),
        Err(e) => {
            unregister(base, size);
            Err(IoremapError::Mmu(e))
        }
    }
}

/// Maps a window in stage 1 only, **without** registering it: for probes that must reach
/// stage 2 as a stray access would.
pub fn map_unregistered(base: u64, size: u64) -> Result<mmu::DeviceMapping, MmuError> {
    mmu::map_device(base, size)
}

/// A short description for INFO lines.
pub fn describe() -> String {
    match GUARD.lock().as_ref() {
        None => String::from("no guard: windows are mapped in stage 1 only"),
        Some(g) => format!(
            "guard granule {:#x}, {} granules registered",
            g.registry.granule(),
            g.registry.registered()
        ),
    }
}
