//! `boot:` checks: the guest itself (CHECKS.md).

use super::{Ctx, Outcome};
use crate::esr::ec;
use crate::kernel::cpu::{self, Translation};
use crate::kernel::ioremap as layer;
use crate::kernel::mmu::{self, ATTR_DEVICE, ATTR_NORMAL, PAGE_SIZE};
use crate::kernel::probe::{self, Width};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The tree from x0 parses; memory, console and PSCI method are found.
pub fn device_tree(ctx: &Ctx) -> Outcome {
    let p = ctx.platform;
    let b = ctx.boot;
    if p.ram_containing(b.dtb).is_none() {
        return Outcome::Fail(format!(
            "device tree at {:#x} lies outside the memory it describes",
            b.dtb
        ));
    }
    let mem: u64 = p.memory.iter().map(|r| r.size).sum();
    for r in &p.memory {
        ctx.info(format_args!("memory {r}"));
    }
    ctx.info(format_args!(
        "{} device nodes, {} virtio-mmio, {} PCI host bridges, model '{}'",
        p.devices.len(),
        p.virtio_mmio.len(),
        p.pci.len(),
        p.model
    ));
    Outcome::Pass(format!(
        "tree at {:#x} ({} bytes); memory {} MiB in {} range(s); console {} ({}, from {}); psci {}; {} cpu(s)",
        b.dtb,
        b.dtb_size,
        mem >> 20,
        p.memory.len(),
        p.console.path,
        p.console.kind.name(),
        p.console_source,
        p.psci,
        p.cpus.len()
    ))
}

static MARKER: u32 = 0x10_6a4d;
/// An absolute pointer in data: correct only if the image relocated itself.
static MARKER_REF: &u32 = &MARKER;
fn answer() -> u32 {
    42
}
/// A function pointer in data, called through.
static ANSWER: fn() -> u32 = answer;

/// The image runs correctly at an address other than its link address (0).
pub fn relocated(ctx: &Ctx) -> Outcome {
    let b = ctx.boot;
    // SAFETY: reading a static through a volatile load, so the compiler cannot fold it.
    let stored = unsafe { core::ptr::read_volatile(&MARKER_REF) } as *const u32 as u64;
    let actual = core::ptr::addr_of!(MARKER) as u64;
    // SAFETY: as above, for the function pointer.
    let f = unsafe { core::ptr::read_volatile(&ANSWER) };
    if b.load_base == 0 {
        return Outcome::Fail(String::from(
            "loaded at 0, its link address: relocation not exercised",
        ));
    }
    if b.relocations == 0 {
        return Outcome::Fail(String::from("no relocation applied"));
    }
    if stored != actual {
        return Outcome::Fail(format!(
            "pointer in data is {stored:#x}, object is at {actual:#x}"
        ));
    }
    if f() != 42 {
        return Outcome::Fail(String::from(
            "call through a function pointer in data went wrong",
        ));
    }
    if crate::sym_addr!(__image_start) != b.load_base {
        return Outcome::Fail(format!(
            "image start {:#x} != load base {:#x}",
            crate::sym_addr!(__image_start),
            b.load_base
        ));
    }
    Outcome::Pass(format!(
        "running at {:#x}, linked at 0x0, {} relocations applied",
        b.load_base, b.relocations
    ))
}

fn expect_ram(what: &str, va: u64, bad: &mut Vec<String>) {
    match cpu::translate(va) {
        Translation::Mapped { pa, attr } if pa == va && attr == ATTR_NORMAL => {}
        t => bad.push(format!("{what} {va:#x}: {t}")),
    }
}

/// MMU on; RAM cached and identity mapped; no device page mapped before ioremap.
pub fn mmu(ctx: &Ctx) -> Outcome {
    let sctlr = mmu::sctlr();
    if sctlr & 1 == 0 || sctlr & (1 << 2) == 0 || sctlr & (1 << 12) == 0 {
        return Outcome::Fail(format!("SCTLR_EL1={sctlr:#x}: MMU or caches off"));
    }
    let mut bad = Vec::new();
    let local = 0u64;
    let boxed = Box::new(0u64);
    expect_ram("image", crate::sym_addr!(__image_start), &mut bad);
    expect_ram("stack", &local as *const u64 as u64, &mut bad);
    expect_ram("heap", &*boxed as *const u64 as u64, &mut bad);
    expect_ram("device tree", ctx.boot.dtb, &mut bad);
    let mut ram_pages = 4;
    for r in &ctx.platform.memory {
        expect_ram("RAM start", r.base, &mut bad);
        expect_ram("RAM end", r.end() - PAGE_SIZE, &mut bad);
        ram_pages += 2;
        let after = r.end();
        if ctx.platform.ram_containing(after).is_none()
            && cpu::translate(after) != Translation::Fault
        {
            bad.push(format!("page after RAM {after:#x} is mapped"));
        }
    }
    let console_page = ctx.boot.console_window & !(PAGE_SIZE - 1);
    let mut unmapped = 0;
    for d in &ctx.platform.devices {
        for r in &d.regs {
            let page = r.base & !(PAGE_SIZE - 1);
            match cpu::translate(page) {
                Translation::Mapped { attr, .. } if page == console_page => {
                    if attr != ATTR_DEVICE {
                        bad.push(format!("console page {page:#x} has attribute {attr:#x}"));
                    }
                }
                Translation::Fault if page != console_page => unmapped += 1,
                t => bad.push(format!("{} page {page:#x}: {t}", d.path)),
            }
        }
    }
    if mmu::device_pages() != 1 {
        bad.push(format!(
            "{} device pages mapped, expected only the console's",
            mmu::device_pages()
        ));
    }
    if bad.is_empty() {
        Outcome::Pass(format!(
            "SCTLR_EL1={sctlr:#x}; {ram_pages} RAM pages normal write-back and identity mapped; {unmapped} device pages unmapped; console nGnRE"
        ))
    } else {
        Outcome::Fail(bad.join("; "))
    }
}

/// A deliberate `brk` and an undefined instruction are caught, reported and survived.
pub fn vectors(_: &Ctx) -> Outcome {
    let Some(b) = probe::brk() else {
        return Outcome::Fail(String::from("brk raised no exception"));
    };
    if b.esr.ec() != ec::BRK64 || b.esr.brk_imm() != 0x10a || b.elr != probe::brk_site() {
        return Outcome::Fail(format!(
            "brk: {b}, expected EC 0x3c imm 0x10a at {:#x}",
            probe::brk_site()
        ));
    }
    let Some(u) = probe::udf() else {
        return Outcome::Fail(String::from("udf raised no exception"));
    };
    if u.esr.ec() != ec::UNKNOWN || u.elr != probe::udf_site() {
        return Outcome::Fail(format!(
            "udf: {u}, expected EC 0x0 at {:#x}",
            probe::udf_site()
        ));
    }
    Outcome::Pass(format!(
        "brk ESR={:#x}, udf ESR={:#x}, both resumed",
        b.esr.0, u.esr.0
    ))
}

/// The expected-fault API reports an access to an unmapped page exactly: a translation
/// fault with FAR = the address, ELR = the access, and the destination register untouched.
pub fn probe_fault(ctx: &Ctx) -> Outcome {
    let addr = ctx.platform.memory[0].base.wrapping_sub(PAGE_SIZE) + 0x7c;
    if cpu::translate(addr) != Translation::Fault {
        return Outcome::Skip(format!("{addr:#x} is mapped; no unmapped page to probe"));
    }
    // SAFETY: the address is unmapped in stage 1, so nothing is read; the fault is expected.
    let load = match unsafe { probe::read(addr, Width::W32) } {
        Ok(v) => return Outcome::Fail(format!("read of unmapped {addr:#x} returned {v:#x}")),
        Err(f) => f,
    };
    let f = load.fault;
    if !f.esr.is_translation_fault()
        || f.esr.wnr()
        || f.far != addr
        || f.elr != probe::load_site(Width::W32)
    {
        return Outcome::Fail(format!(
            "load: {f}; expected a read translation fault at FAR={addr:#x} ELR={:#x}",
            probe::load_site(Width::W32)
        ));
    }
    if !load.dest_untouched() {
        return Outcome::Fail(format!("destination register changed to {:#x}", load.dest));
    }
    // SAFETY: as above, for a write: nothing is written to an unmapped page.
    let w = match unsafe { probe::write(addr, Width::W64, 0x1234) } {
        Ok(()) => return Outcome::Fail(format!("write to unmapped {addr:#x} did not fault")),
        Err(f) => f,
    };
    if !w.esr.is_translation_fault()
        || !w.esr.wnr()
        || w.far != addr
        || w.elr != probe::store_site(Width::W64)
    {
        return Outcome::Fail(format!(
            "store: {w}; expected a write translation fault at FAR={addr:#x}"
        ));
    }
    Outcome::Pass(format!("load {}; store ESR={:#x}", f, w.esr.0))
}

const VIRTIO_MMIO_MAGIC: u32 = 0x7472_6976; // "virt"

/// ioremap maps device windows in stage 1, one mapping per page however many windows
/// share it, and unmaps a page when its last window goes. Shown on the virtio-mmio
/// transports: every window answers the virtio magic through its mapping.
pub fn ioremap(ctx: &Ctx) -> Outcome {
    let windows = &ctx.platform.virtio_mmio;
    if windows.is_empty() {
        return Outcome::Skip(String::from("no virtio-mmio node in the device tree"));
    }
    let before = mmu::device_pages();
    let calls_before = layer::counters();
    let mut maps = Vec::new();
    for w in windows {
        match layer::ioremap(w.base, w.size) {
            Ok(m) => maps.push(m),
            Err(e) => return Outcome::Fail(format!("ioremap({}): {e}", w)),
        }
    }
    let mut pages: Vec<u64> = windows.iter().map(|w| w.base & !(PAGE_SIZE - 1)).collect();
    pages.sort_unstable();
    pages.dedup();
    let mapped = mmu::device_pages() - before;
    if mapped != pages.len() {
        return Outcome::Fail(format!(
            "{} windows in {} distinct pages mapped {mapped} pages",
            windows.len(),
            pages.len()
        ));
    }
    let mut attached = Vec::new();
    for m in &maps {
        // SAFETY: magic and device ID are read-only registers of a mapped virtio-mmio window.
        let magic = unsafe { probe::read(m.addr(), Width::W32) };
        // SAFETY: as above.
        let id = unsafe { probe::read(m.addr() + 8, Width::W32) };
        match (magic, id) {
            (Ok(magic), _) if magic as u32 != VIRTIO_MMIO_MAGIC => {
                return Outcome::Fail(format!("window {:#x}: magic {magic:#x}", m.addr()))
            }
            (Ok(_), Ok(id)) => {
                if id != 0 {
                    attached.push((m.addr(), id));
                }
            }
            (Err(f), _) | (_, Err(f)) => {
                return Outcome::Fail(format!("window {:#x}: {}", m.addr(), f.fault))
            }
        }
    }
    for (addr, id) in &attached {
        ctx.info(format_args!("virtio-mmio {addr:#x}: device ID {id}"));
    }
    // The guard's share: one MAP per distinct granule, one UNMAP per granule's last release.
    let granule = layer::guard_granule();
    let mut granules: Vec<u64> = windows
        .iter()
        .filter_map(|w| granule.map(|g| w.base & !(g - 1)))
        .collect();
    granules.sort_unstable();
    granules.dedup();
    let new_maps = layer::counters().maps - calls_before.maps;
    drop(maps);
    let unmaps = layer::counters().unmaps - calls_before.unmaps;
    let guard_calls = match granule {
        None => String::from("no guard"),
        Some(g) => {
            let want_unmaps = if ctx.hv.profile.has_unmap() {
                granules.len() as u64
            } else {
                0
            };
            if new_maps != granules.len() as u64 || unmaps != want_unmaps {
                return Outcome::Fail(format!(
                    "{} distinct {g:#x} granules took {new_maps} MAPs and {unmaps} UNMAPs (expected {} and {want_unmaps})",
                    granules.len(),
                    granules.len()
                ));
            }
            ctx.info(format_args!(
                "guard calls: {} distinct granules, {new_maps} MAPs, {unmaps} UNMAPs",
                granules.len()
            ));
            format!(
                "{new_maps} MAPs for {} granules, {unmaps} UNMAPs",
                granules.len()
            )
        }
    };
    let after = mmu::device_pages();
    if after != before {
        return Outcome::Fail(format!(
            "{after} device pages mapped after release, {before} before"
        ));
    }
    if let Some(p) = pages
        .iter()
        .find(|p| cpu::translate(**p) != Translation::Fault)
    {
        return Outcome::Fail(format!(
            "page {p:#x} still mapped after its last window was released"
        ));
    }
    Outcome::Pass(format!(
        "{} windows in {} pages: magic ok, {} with a device attached; all unmapped again; {guard_calls}",
        windows.len(),
        pages.len(),
        attached.len()
    ))
}
