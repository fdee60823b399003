//! `ioremap:` the layer itself.

use super::pages::{consecutive, expect_forwarded, expect_refused};
use super::Ctx;
use crate::kernel::arch::sysreg::{self, Translation};
use crate::kernel::mm::ioremap::{self, IoMapping};
use crate::kernel::mm::mmu::{self, PAGE_SIZE};
use crate::kernel::probe::{self, Width};
use crate::platform::Region;
use crate::report::Outcome;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

checks!("ioremap": windows, spanning);

const VIRTIO_MMIO_MAGIC: u32 = 0x7472_6976; // "virt"
const VIRTIO_MMIO_DEVICE_ID: u64 = 0x008;

/// The distinct units of `size` that `windows` touch.
fn units(windows: &[Region], size: u64) -> BTreeSet<u64> {
    windows
        .iter()
        .flat_map(|w| (w.base & !(size - 1)..w.end()).step_by(size as usize))
        .collect()
}

/// Every window through the layer: one stage-1 mapping per page however many windows
/// share it, one MAP per distinct guard granule, one UNMAP per granule's last release,
/// and every page unmapped again. Shown on the virtio-mmio transports no driver holds:
/// each answers the virtio magic through its mapping.
pub fn windows(ctx: &Ctx) -> Outcome {
    let held = ctx.devices.pages();
    let windows: Vec<Region> = ctx
        .platform
        .virtio_mmio
        .iter()
        .copied()
        .filter(|w| units(&[*w], PAGE_SIZE).is_disjoint(&held))
        .collect();
    if windows.is_empty() {
        return Outcome::skip("no virtio-mmio window in the device tree that no driver holds");
    }
    let pages = units(&windows, PAGE_SIZE);
    let before = mmu::device_pages();
    let calls_before = ioremap::counters();
    let maps = need!(map_all(&windows));
    let mapped = mmu::device_pages() - before;
    if mapped != pages.len() {
        return Outcome::fail(format_args!(
            "{} windows in {} distinct pages mapped {mapped} pages",
            windows.len(),
            pages.len()
        ));
    }
    let attached = need!(device_ids(&maps));
    for (addr, id) in &attached {
        ctx.info(format_args!("virtio-mmio {addr:#x}: device ID {id}"));
    }
    let new_maps = ioremap::counters().maps - calls_before.maps;
    drop(maps);
    let unmaps = ioremap::counters().unmaps - calls_before.unmaps;
    let guard_calls = need!(judge_guard_calls(ctx, &windows, new_maps, unmaps));
    if mmu::device_pages() != before {
        return Outcome::fail(format_args!(
            "{} device pages mapped after release, {before} before",
            mmu::device_pages()
        ));
    }
    if let Some(p) = pages
        .iter()
        .find(|p| sysreg::translate(**p) != Translation::Fault)
    {
        return Outcome::fail(format_args!(
            "page {p:#x} still mapped after its last window was released"
        ));
    }
    Outcome::pass(format_args!(
        "{} windows in {} pages: magic ok, {} with a device attached; all unmapped again; {guard_calls}",
        windows.len(),
        pages.len(),
        attached.len()
    ))
}

fn map_all(windows: &[Region]) -> Result<Vec<IoMapping>, Outcome> {
    windows
        .iter()
        .map(|w| {
            ioremap::ioremap(w.base, w.size)
                .map_err(|e| Outcome::fail(format_args!("ioremap({w}): {e}")))
        })
        .collect()
}

/// The windows with a device attached (device ID not 0), after checking every magic.
fn device_ids(maps: &[IoMapping]) -> Result<Vec<(u64, u64)>, Outcome> {
    let mut attached = Vec::new();
    for m in maps {
        // SAFETY: magic and device ID are read-only registers of a mapped virtio-mmio window.
        let magic = unsafe { probe::read(m.addr(), Width::W32) };
        // SAFETY: as above.
        let id = unsafe { probe::read(m.addr() + VIRTIO_MMIO_DEVICE_ID, Width::W32) };
        match (magic, id) {
            (Ok(magic), _) if magic as u32 != VIRTIO_MMIO_MAGIC => {
                return Err(Outcome::fail(format_args!(
                    "window {:#x}: magic {magic:#x}",
                    m.addr()
                )))
            }
            (Ok(_), Ok(id)) if id != 0 => attached.push((m.addr(), id)),
            (Ok(_), Ok(_)) => {}
            (Err(f), _) | (_, Err(f)) => {
                return Err(Outcome::fail(format_args!(
                    "window {:#x}: {}",
                    m.addr(),
                    f.fault
                )))
            }
        }
    }
    Ok(attached)
}

/// The guard's share: one MAP per distinct granule no device already holds, one UNMAP
/// per granule's last release.
fn judge_guard_calls(
    ctx: &Ctx,
    windows: &[Region],
    new_maps: u64,
    unmaps: u64,
) -> Result<String, Outcome> {
    let Some(g) = ioremap::guard_granule() else {
        return Ok(String::from("no guard"));
    };
    let granules: BTreeSet<u64> = units(windows, g)
        .difference(&ctx.devices.units(g))
        .copied()
        .collect();
    let n = granules.len() as u64;
    let want_unmaps = if ctx.hv.profile.has_unmap() { n } else { 0 };
    if new_maps != n || unmaps != want_unmaps {
        return Err(Outcome::fail(format_args!(
            "{n} distinct {g:#x} granules took {new_maps} MAPs and {unmaps} UNMAPs (expected {n} and {want_unmaps})"
        )));
    }
    ctx.info(format_args!(
        "guard calls: {n} distinct granules, {new_maps} MAPs, {unmaps} UNMAPs"
    ));
    Ok(format!("{new_maps} MAPs for {n} granules, {unmaps} UNMAPs"))
}

/// A window spanning several guard granules: one MAP per granule (one range call where
/// the ABI has them), every granule forwarded while it lives, and as many UNMAPs, each
/// accepted, when it goes; then every granule refused again where UNMAP takes effect.
pub fn spanning(ctx: &Ctx) -> Outcome {
    const N: u64 = 2;
    let Some(guard) = ctx.hv.mmio_guard() else {
        return Outcome::skip(format_args!("profile {} has no MMIO guard", ctx.hv.profile));
    };
    let g = guard.granule();
    let Some((first, run, fresh)) = consecutive(ctx, g, N) else {
        return Outcome::skip(format_args!(
            "no {N} consecutive {g:#x} granules with a probe target"
        ));
    };
    let before = ioremap::counters();
    let window = need!(ioremap::ioremap(first, N * g)
        .map_err(|e| Outcome::fail(format_args!("ioremap({first:#x}, {:#x}): {e}", N * g))));
    let maps = ioremap::counters().maps - before.maps;
    let mut bad = Vec::new();
    if maps != N {
        bad.push(format!("{maps} granules MAPped for a window of {N}"));
    }
    for t in &run {
        if let Err(why) = expect_forwarded(t) {
            bad.push(format!("{why}"));
        }
    }
    drop(window);
    let after = ioremap::counters();
    let unmaps = after.unmaps - before.unmaps;
    let want = if guard.has_unmap() { N } else { 0 };
    if unmaps != want {
        bad.push(format!(
            "{unmaps} granules UNMAPped on release (expected {want})"
        ));
    }
    let refused = after.unmaps_refused - before.unmaps_refused;
    if refused > 0 {
        bad.push(format!("{refused} UNMAP runs on release were not accepted"));
    }
    // Where UNMAP takes effect, every granule the window held is refused again.
    if fresh && ctx.hv.profile.unmap_takes_effect() {
        for t in &run {
            if let Err(why) = expect_refused(t) {
                bad.push(format!("after release: {why}"));
            }
        }
    }
    if !bad.is_empty() {
        return Outcome::fail(format_args!(
            "window {first:#x}..{:#x}: {}",
            first + N * g,
            bad.join("; ")
        ));
    }
    let shown = if fresh {
        ""
    } else {
        " (already registered: coverage not shown)"
    };
    Outcome::pass(format_args!(
        "window of {N} {g:#x} granules from {first:#x}: {maps} MAPs, every granule forwarded{shown}, {unmaps} UNMAPs"
    ))
}
