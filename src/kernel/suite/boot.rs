//! `boot:` checks: the guest itself.

use super::Ctx;
use crate::esr::ec;
use crate::kernel::arch::sysreg::{self, Translation};
use crate::kernel::mm::mmu::{self, ATTR_DEVICE, ATTR_NORMAL, PAGE_SIZE};
use crate::kernel::probe::{self, Width};
use crate::report::Outcome;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

checks!("boot": device_tree, relocated, mmu, vectors, probe_fault);

/// The tree from x0 parses; memory, console and PSCI method are found.
pub fn device_tree(ctx: &Ctx) -> Outcome {
    let p = ctx.platform;
    let b = ctx.boot;
    if p.ram_containing(b.dtb).is_none() {
        return Outcome::fail(format_args!(
            "device tree at {:#x} lies outside the memory it describes",
            b.dtb
        ));
    }
    let mem: u64 = p.memory.iter().map(|r| r.size).sum();
    for r in &p.memory {
        ctx.info(format_args!("memory {r}"));
    }
    for gic in p.devices.iter().filter(|d| d.compatible.contains("gic")) {
        ctx.info(format_args!(
            "interrupt controller {} ({})",
            gic.path, gic.compatible
        ));
    }
    ctx.info(format_args!(
        "{} device nodes, {} virtio-mmio, {} PCI host bridges, model '{}'",
        p.devices.len(),
        p.virtio_mmio.len(),
        p.pci.len(),
        p.model
    ));
    Outcome::pass(format_args!(
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
        return Outcome::fail("loaded at 0, its link address: relocation not exercised");
    }
    if b.relocations == 0 {
        return Outcome::fail("no relocation applied");
    }
    if stored != actual {
        return Outcome::fail(format_args!(
            "pointer in data is {stored:#x}, object is at {actual:#x}"
        ));
    }
    if f() != 42 {
        return Outcome::fail("call through a function pointer in data went wrong");
    }
    if crate::sym_addr!(__image_start) != b.load_base {
        return Outcome::fail(format_args!(
            "image start {:#x} != load base {:#x}",
            crate::sym_addr!(__image_start),
            b.load_base
        ));
    }
    Outcome::pass(format_args!(
        "running at {:#x}, linked at 0x0, {} relocations applied",
        b.load_base, b.relocations
    ))
}

fn expect_ram(what: &str, va: u64, bad: &mut Vec<String>) {
    match sysreg::translate(va) {
        Translation::Mapped { pa, attr } if pa == va && attr == ATTR_NORMAL => {}
        t => bad.push(format!("{what} {va:#x}: {t}")),
    }
}

/// MMU on; RAM cached and identity mapped; no device page mapped before ioremap.
pub fn mmu(ctx: &Ctx) -> Outcome {
    let sctlr = sysreg::sctlr_el1();
    if sctlr & 1 == 0 || sctlr & (1 << 2) == 0 || sctlr & (1 << 12) == 0 {
        return Outcome::fail(format_args!("SCTLR_EL1={sctlr:#x}: MMU or caches off"));
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
            && sysreg::translate(after) != Translation::Fault
        {
            bad.push(format!("page after RAM {after:#x} is mapped"));
        }
    }
    let held = ctx.devices.pages();
    let mut unmapped = 0;
    for d in &ctx.platform.devices {
        for r in &d.regs {
            let page = r.base & !(PAGE_SIZE - 1);
            match sysreg::translate(page) {
                Translation::Mapped { attr, .. } if held.contains(&page) => {
                    if attr != ATTR_DEVICE {
                        bad.push(format!(
                            "held device page {page:#x} has attribute {attr:#x}"
                        ));
                    }
                }
                Translation::Fault if !held.contains(&page) => unmapped += 1,
                t => bad.push(format!("{} page {page:#x}: {t}", d.path)),
            }
        }
    }
    if mmu::device_pages() != held.len() {
        bad.push(format!(
            "{} device pages mapped, expected only the {} the devices hold",
            mmu::device_pages(),
            held.len()
        ));
    }
    if bad.is_empty() {
        Outcome::pass(format_args!(
            "SCTLR_EL1={sctlr:#x}; {ram_pages} RAM pages normal write-back and identity mapped; {unmapped} device pages unmapped; console nGnRE"
        ))
    } else {
        Outcome::fail(bad.join("; "))
    }
}

/// A deliberate `brk` and an undefined instruction are caught, reported and survived.
pub fn vectors(_: &Ctx) -> Outcome {
    let Some(b) = probe::brk() else {
        return Outcome::fail("brk raised no exception");
    };
    if b.esr.ec() != ec::BRK64 || b.esr.brk_imm() != 0x10a || b.elr != probe::brk_site() {
        return Outcome::fail(format_args!(
            "brk: {b}, expected EC 0x3c imm 0x10a at {:#x}",
            probe::brk_site()
        ));
    }
    let Some(u) = probe::udf() else {
        return Outcome::fail("udf raised no exception");
    };
    if u.esr.ec() != ec::UNKNOWN || u.elr != probe::udf_site() {
        return Outcome::fail(format_args!(
            "udf: {u}, expected EC 0x0 at {:#x}",
            probe::udf_site()
        ));
    }
    Outcome::pass(format_args!(
        "brk ESR={:#x}, udf ESR={:#x}, both resumed",
        b.esr.0, u.esr.0
    ))
}

/// The expected-fault API reports an access to an unmapped page exactly: a translation
/// fault with FAR = the address, ELR = the access, and the destination register untouched.
pub fn probe_fault(ctx: &Ctx) -> Outcome {
    let Some(ram) = ctx.platform.first_ram() else {
        return Outcome::skip("no RAM in the device tree");
    };
    let addr = ram.base.wrapping_sub(PAGE_SIZE) + 0x7c;
    if sysreg::translate(addr) != Translation::Fault {
        return Outcome::skip(format_args!(
            "{addr:#x} is mapped; no unmapped page to probe"
        ));
    }
    // SAFETY: the address is unmapped in stage 1, so nothing is read; the fault is expected.
    let load = match unsafe { probe::read(addr, Width::W32) } {
        Ok(v) => return Outcome::fail(format_args!("read of unmapped {addr:#x} returned {v:#x}")),
        Err(f) => f,
    };
    let f = load.fault;
    if !f.esr.is_translation_fault()
        || f.esr.wnr()
        || f.far != addr
        || f.elr != probe::load_site(Width::W32)
    {
        return Outcome::fail(format_args!(
            "load: {f}; expected a read translation fault at FAR={addr:#x} ELR={:#x}",
            probe::load_site(Width::W32)
        ));
    }
    if !load.dest_untouched() {
        return Outcome::fail(format_args!(
            "destination register changed to {:#x}",
            load.dest
        ));
    }
    // SAFETY: as above, for a write: nothing is written to an unmapped page.
    let w = match unsafe { probe::write(addr, Width::W64, 0x1234) } {
        Ok(()) => return Outcome::fail(format_args!("write to unmapped {addr:#x} did not fault")),
        Err(f) => f,
    };
    if !w.esr.is_translation_fault()
        || !w.esr.wnr()
        || w.far != addr
        || w.elr != probe::store_site(Width::W64)
    {
        return Outcome::fail(format_args!(
            "store: {w}; expected a write translation fault at FAR={addr:#x}"
        ));
    }
    Outcome::pass(format_args!("load {}; store ESR={:#x}", f, w.esr.0))
}
