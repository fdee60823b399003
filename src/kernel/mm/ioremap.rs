//! `ioremap`: a device window mapped in stage 1 and, where the hypervisor has a guard,
//! registered with it (MAP per guard granule, refcounted, UNMAP when the last window of a
//! granule goes). Registration is eager, never from the fault handler: lazy registration
//! would forward every stray access, which is what the guard exists to stop.
//!
//! The layer is handed the guard capability once (`init`) and never asks which ABI
//! generation is below: `MmioGuard::map`/`unmap` carry the quirks.

use crate::granules::{runs, Registry};
use crate::kernel::hyp::mmio_guard::{GuardError, MmioGuard};
use core::fmt;
use spin::Mutex;

use super::mmu::{self, MmuError};

/// The guard as the layer uses it: the capability and who holds each granule.
struct Guarded {
    guard: &'static MmioGuard,
    registry: Registry,
}

struct Layer {
    guarded: Option<Guarded>,
    counters: Counters,
}

/// Hypercalls the layer made, for checks and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Granules passed to MAP (one per MMIO_GUARD_MAP, or a run per MMIO_RGUARD_MAP).
    pub maps: u64,
    /// Granules passed to UNMAP.
    pub unmaps: u64,
    /// UNMAP runs the hypervisor did not accept (the layer forgets the granules anyway).
    pub unmaps_refused: u64,
}

static LAYER: Mutex<Layer> = Mutex::new(Layer {
    guarded: None,
    counters: Counters {
        maps: 0,
        unmaps: 0,
        unmaps_refused: 0,
    },
});

/// Hands the layer the guard: from now on every ioremap registers its granules. Without
/// a guard (None, or a granule the registry cannot use) windows are mapped in stage 1
/// only.
pub fn init(guard: Option<&'static MmioGuard>) {
    let guarded = guard.and_then(|guard| {
        Registry::new(guard.granule()).map(|registry| Guarded { guard, registry })
    });
    LAYER.lock().guarded = guarded;
}

pub fn counters() -> Counters {
    LAYER.lock().counters
}

/// The guard granule windows are registered in, when there is a guard.
pub fn guard_granule() -> Option<u64> {
    LAYER.lock().guarded.as_ref().map(|g| g.registry.granule())
}

/// Whether every guard granule of `[base, base + size)` is registered (held by a window):
/// None when there is no guard to register with.
pub fn registered(base: u64, size: u64) -> Option<bool> {
    let lock = LAYER.lock();
    let g = lock.guarded.as_ref()?;
    let mut granules = g.registry.granules_of(base, size);
    Some(granules.all(|gr| g.registry.users(gr) > 0))
}

#[derive(Debug)]
pub enum IoremapError {
    Mmu(MmuError),
    /// The hypervisor refused (or aborted) a MAP: the window is not usable.
    Map(GuardError),
}

impl fmt::Display for IoremapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mmu(e) => write!(f, "{e}"),
            Self::Map(e) => write!(f, "{e}"),
        }
    }
}

impl Layer {
    fn map_run(&mut self, g: &Guarded, start: u64, count: u64) -> Result<(), GuardError> {
        self.counters.maps += count;
        g.guard.map(start, count)
    }

    fn unmap_run(&mut self, g: &Guarded, start: u64, count: u64) {
        if !g.guard.has_unmap() {
            return;
        }
        self.counters.unmaps += count;
        // A refused UNMAP is counted for the checks (guard: unmap-return judges the answer
        // itself); the layer forgets the granule either way.
        if g.guard.unmap(start, count).is_err() {
            self.counters.unmaps_refused += 1;
        }
    }
}

/// Registers the granules of a window (those no other window holds yet).
fn register(base: u64, size: u64) -> Result<(), IoremapError> {
    let mut lock = LAYER.lock();
    let Some(mut g) = lock.guarded.take() else {
        return Ok(());
    };
    let fresh = runs(&g.registry.acquire(base, size), g.registry.granule());
    let mut result = Ok(());
    for (i, &(start, count)) in fresh.iter().enumerate() {
        if let Err(e) = lock.map_run(&g, start, count) {
            // The window is refused as a whole.
            for &(s, c) in &fresh[..i] {
                lock.unmap_run(&g, s, c);
            }
            g.registry.release(base, size);
            result = Err(IoremapError::Map(e));
            break;
        }
    }
    lock.guarded = Some(g);
    result
}

fn unregister(base: u64, size: u64) {
    let mut lock = LAYER.lock();
    let Some(mut g) = lock.guarded.take() else {
        return;
    };
    for (start, count) in runs(&g.registry.release(base, size), g.registry.granule()) {
        lock.unmap_run(&g, start, count);
    }
    lock.guarded = Some(g);
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
