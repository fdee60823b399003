//! `guard:` and `control:` checks: the guard hypercalls, and what reaches the host
//! (CHECKS.md). Every access check uses a page where a real device answers when the page
//! is registered, so an abort proves the *hypervisor* refused the access.

use super::{Ctx, Outcome};
use crate::esr::{fsc, fsc_name, PKVM_INJECTED_DABT};
use crate::hyp::abi::{self, Ret};
use crate::hyp::profile::Profile;
use crate::kernel::exceptions::Fault;
use crate::kernel::ioremap::{self, raw_map, raw_unmap, tainted};
use crate::kernel::probe::{self, LoadFault, Width};
use crate::kernel::smccc;
use crate::targets::{self, Target};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The guard's profile and granule, or the SKIP/FAIL that replaces the check.
pub(super) fn guard(ctx: &Ctx) -> Result<(Profile, u64), Outcome> {
    let hv = ctx.hv;
    if !hv.profile.has_guard() {
        return Err(Outcome::Skip(format!(
            "profile {} has no MMIO guard",
            hv.profile
        )));
    }
    match (hv.guard(), &hv.guard_problem) {
        (Some(g), _) => Ok((hv.profile, g)),
        (None, Some(p)) => Err(Outcome::Fail(format!("the guard is unusable: {p}"))),
        (None, None) => Err(Outcome::Fail(String::from("the guard is unusable"))),
    }
}

/// A probe target no check has registered (so the hypervisor must refuse it), avoiding
/// the granules in `avoid`.
pub(super) fn fresh(ctx: &Ctx, g: u64, avoid: &[u64]) -> Result<Target, Outcome> {
    let ts: Vec<Target> = targets::targets(ctx.platform)
        .into_iter()
        .filter(|t| !tainted(t.base))
        .collect();
    targets::pick(&ts, g, avoid).ok_or_else(|| {
        Outcome::Skip(String::from(
            "no unregistered device page with a known ID register is left to probe",
        ))
    })
}

fn show(r: &Result<Ret, Fault>) -> String {
    match r {
        Ok(r) => format!("{r}"),
        Err(f) => format!("an abort ({f})"),
    }
}

/// Reads `t`'s ID register through a stage-1 mapping that is *not* registered.
fn stray_read(t: &Target, width: Width, offset: u64) -> Result<Result<u64, LoadFault>, Outcome> {
    let _window = ioremap::map_unregistered(t.page(), targets::PAGE)
        .map_err(|e| Outcome::Fail(format!("stage-1 map of {:#x}: {e}", t.page())))?;
    // SAFETY: a read of a device register on a page mapped as device memory just above;
    // identification registers have no read side effects, and a fault is expected.
    Ok(unsafe { probe::read(t.base + offset, width) })
}

/// Why a load that the hypervisor should have refused is not the abort pKVM injects, or
/// None when it is exactly that: ESR 0x96000010, FAR = the address, ELR = the access,
/// destination register untouched.
fn not_refused(t: &Target, addr: u64, width: Width, r: &Result<u64, LoadFault>) -> Option<String> {
    match r {
        Ok(v) if t.id_value.is_some() && t.answers(*v as u32) && addr == t.id_addr() => Some(format!(
            "unregistered {} page {:#x} was forwarded: read its ID {v:#x} without an abort",
            t.device,
            t.page()
        )),
        Ok(v) => Some(match t.id_value {
            Some(id) => format!("access to unregistered {addr:#x} returned {v:#x} with no abort injected (dropped silently; the device reads {id:#x})"),
            None => format!("access to unregistered {} {addr:#x} returned {v:#x} with no abort injected", t.device),
        }),
        Err(l) => {
            let f = l.fault;
            if f.esr.0 != PKVM_INJECTED_DABT {
                if f.esr.is_data_abort() && f.esr.fsc() != fsc::SYNC_EXTERNAL {
                    return Some(format!(
                        "the injected abort has DFSC {:#x} ({}), not 0x10 (synchronous external abort): ESR={:#x}",
                        f.esr.fsc(),
                        fsc_name(f.esr.fsc()),
                        f.esr.0
                    ));
                }
                return Some(format!("ESR={:#x}, not pKVM's 0x96000010 ({})", f.esr.0, f.esr));
            }
            if f.far != addr {
                return Some(format!("FAR={:#x} is not the faulting address {addr:#x}", f.far));
            }
            if f.elr != probe::load_site(width) {
                return Some(format!("ELR={:#x} is not the access at {:#x}", f.elr, probe::load_site(width)));
            }
            if !l.dest_untouched() {
                return Some(format!("the destination register changed to {:#x}", l.dest));
            }
            None
        }
    }
}

/// A stray read of `t`'s ID register must be refused; Err explains how it was not.
pub(super) fn expect_refused(t: &Target) -> Result<Fault, String> {
    let r = stray_read(t, Width::W32, t.id_offset).map_err(|o| match o {
        Outcome::Fail(s) | Outcome::Skip(s) | Outcome::Pass(s) | Outcome::KFail(s) => s,
    })?;
    match (not_refused(t, t.id_addr(), Width::W32, &r), r) {
        (None, Err(l)) => Ok(l.fault),
        (Some(why), _) => Err(why),
        (None, Ok(_)) => Err(String::from("forwarded")),
    }
}

/// A read of `t`'s ID register must be forwarded (the page is registered).
pub(super) fn expect_forwarded(t: &Target) -> Result<(), String> {
    let _window = ioremap::map_unregistered(t.page(), targets::PAGE).map_err(|e| format!("{e}"))?;
    // SAFETY: as in stray_read; the page is registered, so the read should reach the device.
    match unsafe { probe::read(t.id_addr(), Width::W32) } {
        Ok(v) if t.answers(v as u32) => Ok(()),
        Ok(v) => Err(format!(
            "registered {} page {:#x} read {v:#x}, not its ID {}",
            t.device,
            t.page(),
            t.expected()
        )),
        Err(l) => Err(format!(
            "registered {} page {:#x} aborted: {}",
            t.device,
            t.page(),
            l.fault
        )),
    }
}

/// INFO == HYP_MEMINFO granule.
pub fn info(ctx: &Ctx) -> Outcome {
    let (profile, g) = need!(guard(ctx));
    if !profile.is_android() {
        return Outcome::Skip(format!("profile {profile} has no MMIO_GUARD_INFO"));
    }
    match smccc::call(abi::MMIO_GUARD_INFO, [0; 3]) {
        Ok(r) if r[0] == g => Outcome::Pass(format!("INFO = HYP_MEMINFO = {g:#x}")),
        Ok(r) => Outcome::Fail(format!("MMIO_GUARD_INFO {:#x} != HYP_MEMINFO {g:#x}", r[0])),
        Err(f) => Outcome::Fail(format!("MMIO_GUARD_INFO aborted: {f}")),
    }
}

/// ENROLL answers 0, and a second ENROLL is also 0 and drops no registration.
pub fn enroll(ctx: &Ctx) -> Outcome {
    let (profile, _) = need!(guard(ctx));
    if !profile.has_enroll() {
        return Outcome::Skip(format!(
            "profile {profile} has no MMIO_GUARD_ENROLL (already enrolled)"
        ));
    }
    let first = ctx.hv.enroll.unwrap_or(Ok(Ret::Other(-99)));
    let second = smccc::status(abi::MMIO_GUARD_ENROLL, [0; 3], false);
    if first != Ok(Ret::Success) || second != Ok(Ret::Success) {
        return Outcome::Fail(format!(
            "ENROLL at boot answered {}, again {}",
            show(&first),
            show(&second)
        ));
    }
    // The console's page was registered before the second ENROLL: it must still answer.
    let c = &ctx.platform.console;
    let reg = match c.kind {
        crate::platform::UartKind::Pl011 => 0x18,
        crate::platform::UartKind::Ns16550 { reg_shift, .. } => 5 << reg_shift,
    };
    // SAFETY: a read of the PL011 FR or the 16550 LSR (no side effect) through the console
    // window, which stays mapped for the whole run.
    match unsafe { probe::read(ctx.boot.console_window + reg, Width::W8) } {
        Ok(_) => Outcome::Pass(String::from(
            "0 at boot, 0 again; the console's registration survived",
        )),
        Err(l) => Outcome::Fail(format!(
            "after a second ENROLL the registered console page aborts: {}",
            l.fault
        )),
    }
}

/// Unregistered device page: ESR 0x96000010, FAR = the address, ELR = the access,
/// destination register unchanged.
pub fn stray_read_check(ctx: &Ctx) -> Outcome {
    let (_, g) = need!(guard(ctx));
    let ts: Vec<Target> = targets::targets(ctx.platform)
        .into_iter()
        .filter(|t| !tainted(t.base))
        .collect();
    // Keep the writable device for stray-write.
    let w = targets::writable(&ts)
        .map(|t| t.base)
        .into_iter()
        .collect::<Vec<_>>();
    let t = match targets::pick(&ts, g, &w).or_else(|| targets::pick(&ts, g, &[])) {
        Some(t) => t,
        None => {
            return Outcome::Skip(String::from(
                "no unregistered device page with a known ID register",
            ))
        }
    };
    match expect_refused(&t) {
        Ok(f) => Outcome::Pass(format!("{} {f}", t.device)),
        Err(why) => Outcome::Fail(why),
    }
}

/// A refused write never arrives: after registering the page the device shows it did not.
pub fn stray_write(ctx: &Ctx) -> Outcome {
    need!(guard(ctx));
    let ts: Vec<Target> = targets::targets(ctx.platform)
        .into_iter()
        .filter(|t| !tainted(t.base))
        .collect();
    let Some(t) = targets::writable(&ts) else {
        return Outcome::Skip(String::from(
            "no unregistered device with a read/write register",
        ));
    };
    let Some(rw) = t.rw_offset else {
        return Outcome::Skip(String::from("no read/write register"));
    };
    let addr = t.base + rw;
    const MARK: u64 = 0x5a5a_1234;
    let stray = {
        let _w = match ioremap::map_unregistered(t.page(), targets::PAGE) {
            Ok(w) => w,
            Err(e) => return Outcome::Fail(format!("stage-1 map: {e}")),
        };
        // SAFETY: a 32-bit write to the device's read/write register (PL031 match
        // register); harmless to the device, and expected to be refused.
        unsafe { probe::write(addr, Width::W32, MARK) }
    };
    let mut why = Vec::new();
    match stray {
        Ok(()) => why.push(format!(
            "stray write to unregistered {} {addr:#x} raised no abort",
            t.device
        )),
        // pKVM's injected abort is the same for writes: WnR is 0 (pkvm-abi.md §3).
        Err(f) if f.esr.0 != PKVM_INJECTED_DABT => {
            if f.esr.is_data_abort() && f.esr.fsc() != fsc::SYNC_EXTERNAL {
                why.push(format!(
                    "the injected abort has DFSC {:#x} ({}), not 0x10",
                    f.esr.fsc(),
                    fsc_name(f.esr.fsc())
                ));
            } else {
                why.push(format!("ESR={:#x}, not 0x96000010", f.esr.0));
            }
        }
        Err(f) if f.far != addr => why.push(format!(
            "FAR={:#x} is not the faulting address {addr:#x}",
            f.far
        )),
        Err(f) if f.elr != probe::store_site(Width::W32) => {
            why.push(format!("ELR={:#x} is not the store", f.elr))
        }
        Err(_) => {}
    }
    // Now register the page and look.
    let m = match ioremap::ioremap(t.page(), targets::PAGE) {
        Ok(m) => m,
        Err(e) => return Outcome::Fail(format!("ioremap of {:#x} to look: {e}", t.page())),
    };
    // SAFETY: a read of the same register through the registered mapping.
    let now = unsafe { probe::read(m.addr() + rw, Width::W32) };
    match now {
        Ok(v) if v == MARK => why.push(format!(
            "the refused write arrived: {} register reads {v:#x}",
            t.device
        )),
        Ok(_) => {}
        Err(l) => why.push(format!("registered read-back aborted: {}", l.fault)),
    }
    if why.is_empty() {
        Outcome::Pass(format!(
            "{} {addr:#x}: write refused with 0x96000010 and never arrived",
            t.device
        ))
    } else {
        Outcome::Fail(why.join("; "))
    }
}

/// The device's ID comes back through a registered window.
pub fn registered_read(ctx: &Ctx) -> Outcome {
    need!(guard(ctx));
    let ts = targets::targets(ctx.platform);
    let Some(t) = targets::pick(&ts, targets::PAGE, &[]) else {
        return Outcome::Skip(String::from("no device with a known ID register"));
    };
    let m = match ioremap::ioremap(t.page(), targets::PAGE) {
        Ok(m) => m,
        Err(e) => return Outcome::Fail(format!("ioremap({:#x}): {e}", t.page())),
    };
    // SAFETY: an ID register read through its registered mapping.
    match unsafe { probe::read(m.addr() + t.id_offset, Width::W32) } {
        Ok(v) if t.answers(v as u32) => {
            Outcome::Pass(format!("{} ID {v:#x} at {:#x}", t.device, t.id_addr()))
        }
        Ok(v) => Outcome::Fail(format!(
            "{} ID read {v:#x}, expected {}",
            t.device,
            t.expected()
        )),
        Err(l) => Outcome::Fail(format!("registered {} page aborted: {}", t.device, l.fault)),
    }
}

/// A write through a registered window takes effect (read back).
pub fn registered_write(ctx: &Ctx) -> Outcome {
    need!(guard(ctx));
    let ts = targets::targets(ctx.platform);
    let Some(t) = targets::writable(&ts) else {
        return Outcome::Skip(String::from("no device with a read/write register"));
    };
    let Some(rw) = t.rw_offset else {
        return Outcome::Skip(String::from("no read/write register"));
    };
    let m = match ioremap::ioremap(t.page(), targets::PAGE) {
        Ok(m) => m,
        Err(e) => return Outcome::Fail(format!("ioremap({:#x}): {e}", t.page())),
    };
    let mut seen = Vec::new();
    for v in [0x1357_9bdfu64, 0x2468_ace0] {
        // SAFETY: writes and reads back the device's read/write register (PL031 match
        // register) through its registered mapping.
        let r = unsafe {
            probe::write(m.addr() + rw, Width::W32, v)
                .and_then(|()| probe::read(m.addr() + rw, Width::W32).map_err(|l| l.fault))
        };
        match r {
            Ok(back) if back == v => seen.push(format!("{back:#x}")),
            Ok(back) => return Outcome::Fail(format!("wrote {v:#x}, read back {back:#x}")),
            Err(f) => {
                return Outcome::Fail(format!("registered {} register aborted: {f}", t.device))
            }
        }
    }
    Outcome::Pass(format!(
        "{} {:#x}: wrote and read back {}",
        t.device,
        t.base + rw,
        seen.join(", ")
    ))
}

/// MAP of a misaligned address: -3, and nothing becomes forwarded.
pub fn map_misaligned(ctx: &Ctx) -> Outcome {
    let (profile, g) = need!(guard(ctx));
    let t = need!(fresh(ctx, g, &[]));
    let ipa = t.page() + 0x10;
    let r = raw_map(ipa);
    if r != Ok(Ret::InvalidParameter) {
        return Outcome::Fail(format!(
            "MMIO_GUARD_MAP({ipa:#x}) answered {} (expected -3; {profile})",
            show(&r)
        ));
    }
    match expect_refused(&t) {
        Ok(_) => Outcome::Pass(format!(
            "MAP({ipa:#x}) = -3; {} page still refused",
            t.device
        )),
        Err(why) => Outcome::Fail(format!("after a refused misaligned MAP: {why}")),
    }
}

/// MAP of a RAM page: -3, and RAM keeps working.
pub fn map_ram(ctx: &Ctx) -> Outcome {
    need!(guard(ctx));
    let mut page = alloc::boxed::Box::new([0u64; 512]);
    let ipa = page.as_ptr() as u64 & !0xfff;
    let r = raw_map(ipa);
    page[100] = 0xfeed_f00d;
    // SAFETY: a volatile read of memory this function owns.
    let back = unsafe { core::ptr::read_volatile(&page[100]) };
    if back != 0xfeed_f00d {
        return Outcome::Fail(format!(
            "RAM at {ipa:#x} stopped working after MAP: read {back:#x}"
        ));
    }
    match r {
        Ok(Ret::InvalidParameter) => {
            Outcome::Pass(format!("MAP(RAM {ipa:#x}) = -3; RAM still works"))
        }
        r => Outcome::Fail(format!(
            "MMIO_GUARD_MAP of RAM page {ipa:#x} answered {} (expected -3)",
            show(&r)
        )),
    }
}

fn pa_bits() -> u32 {
    let v: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, id_aa64mmfr0_el1", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    match v & 0xf {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// MAP beyond the IPA size: -3.
pub fn map_outside_ipa(ctx: &Ctx) -> Outcome {
    need!(guard(ctx));
    let bits = pa_bits();
    let ipa = 1u64 << bits;
    match raw_map(ipa) {
        Ok(Ret::InvalidParameter) => Outcome::Pass(format!(
            "MAP({ipa:#x}, beyond the {bits}-bit IPA space) = -3"
        )),
        r => Outcome::Fail(format!(
            "MMIO_GUARD_MAP({ipa:#x}) beyond the {bits}-bit IPA space answered {} (expected -3)",
            show(&r)
        )),
    }
}

/// Two MAPs of one page both answer 0; one UNMAP then removes it (android14).
pub fn map_twice(ctx: &Ctx) -> Outcome {
    let (profile, g) = need!(guard(ctx));
    let t = need!(fresh(ctx, g, &[]));
    let p = t.page();
    let (a, b) = (raw_map(p), raw_map(p));
    if a != Ok(Ret::Success) || b != Ok(Ret::Success) {
        return Outcome::Fail(format!(
            "MAP({p:#x}) twice answered {} and {} (expected 0, 0)",
            show(&a),
            show(&b)
        ));
    }
    if let Err(why) = expect_forwarded(&t) {
        return Outcome::Fail(format!("after MAP: {why}"));
    }
    if !profile.has_unmap() || profile.unmap_is_noop() {
        return Outcome::Pass(format!(
            "0, 0; {} forwarded ({profile} has no effective UNMAP)",
            t.device
        ));
    }
    let u = raw_unmap(p);
    match expect_refused(&t) {
        Ok(_) => Outcome::Pass(format!("0, 0; one UNMAP ({}) removed it", show(&u))),
        Err(why) => Outcome::Fail(format!(
            "after two MAPs and one UNMAP ({}): {why}",
            show(&u)
        )),
    }
}

/// UNMAP of a mapped page answers 0 (android13: -1, a known bug).
pub fn unmap_return(ctx: &Ctx) -> Outcome {
    let (profile, g) = need!(guard(ctx));
    if !profile.has_unmap() {
        return Outcome::Skip(format!("profile {profile} has no MMIO_GUARD_UNMAP"));
    }
    let t = need!(fresh(ctx, g, &[]));
    let p = t.page();
    let m = raw_map(p);
    if m != Ok(Ret::Success) {
        return Outcome::Fail(format!("MAP({p:#x}) answered {}", show(&m)));
    }
    let u = raw_unmap(p);
    match (profile.unmap_inverted(), u) {
        (false, Ok(Ret::Success)) => Outcome::Pass(format!("UNMAP({p:#x}) = 0")),
        (true, Ok(Ret::NotSupported)) => {
            Outcome::KFail(String::from("android13 returns -1 on success"))
        }
        (true, Ok(Ret::Success)) => Outcome::Fail(format!(
            "UNMAP({p:#x}) = 0, which android13 answers when the unmap failed"
        )),
        (_, r) => Outcome::Fail(format!(
            "UNMAP({p:#x}) of a mapped page answered {} (expected 0)",
            show(&r)
        )),
    }
}

/// UNMAP of a page never mapped: -3 (android14); 0 (android16 no-op).
pub fn unmap_unmapped(ctx: &Ctx) -> Outcome {
    let (profile, g) = need!(guard(ctx));
    if !profile.has_unmap() {
        return Outcome::Skip(format!("profile {profile} has no MMIO_GUARD_UNMAP"));
    }
    let t = need!(fresh(ctx, g, &[]));
    let p = t.page();
    let r = raw_unmap(p);
    let expected = if profile.unmap_is_noop() {
        Ret::Success
    } else {
        Ret::InvalidParameter
    };
    match r {
        Ok(v) if v == expected => Outcome::Pass(format!("UNMAP({p:#x}) never mapped = {v}")),
        Ok(Ret::Success) if profile.unmap_inverted() => {
            Outcome::KFail(String::from("android13 returns 0 when UNMAP fails"))
        }
        r => Outcome::Fail(format!(
            "UNMAP of never-mapped {p:#x} answered {} (expected {expected})",
            show(&r)
        )),
    }
}

/// The granule after a registered one aborts; the last byte of the registered one does not.
pub fn neighbour(ctx: &Ctx) -> Outcome {
    let (_, g) = need!(guard(ctx));
    let ts: Vec<Target> = targets::targets(ctx.platform)
        .into_iter()
        .filter(|t| !tainted(t.base))
        .collect();
    let (a, b) = match targets::neighbours(&ts, g) {
        Some(pair) => pair,
        None => {
            return Outcome::Skip(format!(
                "no two unregistered probe targets in consecutive {g:#x} granules"
            ))
        }
    };
    let ga = a.base & !(g - 1);
    let m = match ioremap::ioremap(ga, g) {
        Ok(m) => m,
        Err(e) => return Outcome::Fail(format!("ioremap({ga:#x}): {e}")),
    };
    let last = ga + g - 1;
    // SAFETY: a byte read of the last byte of a registered device granule (inside a
    // device's register window or the unused space after it: reads have no side effects
    // on the devices probed here).
    if let Err(l) = unsafe { probe::read(m.addr() + (last - ga), Width::W8) } {
        return Outcome::Fail(format!(
            "the last byte {last:#x} of registered granule {ga:#x} aborted: {}",
            l.fault
        ));
    }
    match expect_refused(&b) {
        Ok(_) => Outcome::Pass(format!(
            "{ga:#x} registered; last byte read; next granule ({} {:#x}) refused",
            b.device,
            b.page()
        )),
        Err(why) => Outcome::Fail(format!("with {ga:#x} registered, the next granule: {why}")),
    }
}

/// android14: aborts after UNMAP; android16: SKIP (UNMAP is a no-op there).
pub fn after_unmap(ctx: &Ctx) -> Outcome {
    let (profile, g) = need!(guard(ctx));
    if !profile.has_unmap() {
        return Outcome::Skip(format!("profile {profile} has no MMIO_GUARD_UNMAP"));
    }
    if profile.unmap_is_noop() {
        return Outcome::Skip(format!("{profile} keeps pages forwarded after UNMAP"));
    }
    let t = need!(fresh(ctx, g, &[]));
    {
        let m = match ioremap::ioremap(t.page(), targets::PAGE) {
            Ok(m) => m,
            Err(e) => return Outcome::Fail(format!("ioremap: {e}")),
        };
        // SAFETY: an ID register read through its registered mapping.
        if let Err(l) = unsafe { probe::read(m.addr() + t.id_offset, Width::W32) } {
            return Outcome::Fail(format!(
                "registered {} page aborted before UNMAP: {}",
                t.device, l.fault
            ));
        }
    }
    match expect_refused(&t) {
        Ok(f) => Outcome::Pass(format!("{} page refused after iounmap: {f}", t.device)),
        Err(why) => Outcome::Fail(format!("after UNMAP: {why}")),
    }
}

/// Two windows in one granule: one MAP; dropping one keeps the other forwarded; dropping
/// both sends one UNMAP.
pub fn refcount(ctx: &Ctx) -> Outcome {
    let (profile, g) = need!(guard(ctx));
    let ts: Vec<Target> = targets::targets(ctx.platform)
        .into_iter()
        .filter(|t| !tainted(t.base))
        .collect();
    let (a, b) = match targets::same_granule(&ts, g) {
        Some(pair) => pair,
        None => match ts.first() {
            // One device split into two windows of one granule.
            Some(t) => (
                *t,
                Target {
                    id_offset: t.id_offset,
                    ..*t
                },
            ),
            None => return Outcome::Skip(String::from("no unregistered probe target")),
        },
    };
    let (wa, wb) = if a.base == b.base {
        ((a.base, 0x800), (a.base + 0x800, 0x800))
    } else {
        ((a.base, 0x200), (b.base, 0x200))
    };
    let before = ioremap::counters();
    let ma = match ioremap::ioremap(wa.0, wa.1) {
        Ok(m) => m,
        Err(e) => return Outcome::Fail(format!("ioremap {:#x}: {e}", wa.0)),
    };
    let mb = match ioremap::ioremap(wb.0, wb.1) {
        Ok(m) => m,
        Err(e) => return Outcome::Fail(format!("ioremap {:#x}: {e}", wb.0)),
    };
    let maps = ioremap::counters().maps - before.maps;
    if maps != 1 {
        return Outcome::Fail(format!(
            "two windows in granule {:#x} made {maps} MAPs",
            wa.0 & !(g - 1)
        ));
    }
    drop(ma);
    if ioremap::counters().unmaps != before.unmaps {
        return Outcome::Fail(String::from(
            "dropping the first window sent an UNMAP while the second still uses the granule",
        ));
    }
    if let Err(why) = expect_forwarded(&b) {
        return Outcome::Fail(format!("after dropping one of two windows: {why}"));
    }
    drop(mb);
    let unmaps = ioremap::counters().unmaps - before.unmaps;
    let want = if profile.has_unmap() { 1 } else { 0 };
    if unmaps != want {
        return Outcome::Fail(format!(
            "dropping both windows sent {unmaps} UNMAPs (expected {want})"
        ));
    }
    if profile.has_unmap() && !profile.unmap_is_noop() {
        if let Err(why) = expect_refused(&a) {
            return Outcome::Fail(format!("after both windows were dropped: {why}"));
        }
    }
    Outcome::Pass(format!(
        "windows {:#x} and {:#x}: 1 MAP, other kept forwarded, {unmaps} UNMAP",
        wa.0, wb.0
    ))
}

/// An `ldp` on a registered device page aborts (no valid syndrome); forwarded under
/// profile none; SKIP under kvm.
pub fn no_syndrome(ctx: &Ctx) -> Outcome {
    let hv = ctx.hv;
    if hv.profile == Profile::Kvm {
        return Outcome::Skip(String::from("profile kvm: the VMM decides what an access without syndrome does, and may stop the VM"));
    }
    let ts = targets::targets(ctx.platform);
    let Some(t) = targets::pick(&ts, targets::PAGE, &[]) else {
        return Outcome::Skip(String::from("no probe target"));
    };
    let m = match ioremap::ioremap(t.page(), targets::PAGE) {
        Ok(m) => m,
        Err(e) => return Outcome::Fail(format!("ioremap: {e}")),
    };
    let addr = m.addr() + (t.id_offset & !0xf);
    // SAFETY: a pair load of two doublewords of a device's ID register block: no side
    // effects; a fault is expected where the hypervisor cannot emulate it.
    let r = unsafe { probe::read_pair(addr) };
    let expect_abort = hv.profile.has_guard() || hv.profile == Profile::Pkvm;
    match (expect_abort, r) {
        (true, Err((l, _)))
            if l.fault.esr.0 == PKVM_INJECTED_DABT
                && l.fault.far == addr
                && l.fault.elr == probe::ldp_site() =>
        {
            Outcome::Pass(format!("ldp at {addr:#x}: {}", l.fault))
        }
        (true, Err((l, _))) => Outcome::Fail(format!(
            "ldp at {addr:#x} aborted with {}, expected ESR 0x96000010 FAR={addr:#x}",
            l.fault
        )),
        (true, Ok((x, y))) => Outcome::Fail(format!(
            "an ldp (no valid syndrome) at {addr:#x} was forwarded: read {x:#x}, {y:#x}"
        )),
        (false, Ok((x, _))) => Outcome::Pass(format!(
            "profile {}: ldp forwarded, read {x:#x}",
            hv.profile
        )),
        (false, Err((l, _))) => Outcome::Fail(format!(
            "profile {}: ldp at {addr:#x} aborted: {}",
            hv.profile, l.fault
        )),
    }
}

/// With a 16 KiB (or 64 KiB) granule the whole granule is registered by one MAP.
pub fn granule_16k(ctx: &Ctx) -> Outcome {
    let (_, g) = need!(guard(ctx));
    if g == 0x1000 {
        return Outcome::Skip(String::from("the guard granule is 4 KiB"));
    }
    // A probe target that is not at the start of its granule, so that registering the
    // granule's first page through one MAP must cover it.
    let ts: Vec<Target> = targets::targets(ctx.platform)
        .into_iter()
        .filter(|t| !tainted(t.base))
        .collect();
    let Some(t) = ts
        .iter()
        .find(|t| t.page() & (g - 1) != 0)
        .or(ts.first())
        .copied()
    else {
        return Outcome::Skip(String::from("no unregistered probe target"));
    };
    let gbase = t.base & !(g - 1);
    let before = ioremap::counters();
    let m = match ioremap::ioremap(gbase, 0x1000) {
        Ok(m) => m,
        Err(e) => return Outcome::Fail(format!("ioremap({gbase:#x}): {e}")),
    };
    let maps = ioremap::counters().maps - before.maps;
    let r = expect_forwarded(&t);
    drop(m);
    match (maps, r) {
        (1, Ok(())) => Outcome::Pass(format!(
            "one MAP of {gbase:#x} ({g:#x} granule) forwards {} at {:#x}",
            t.device,
            t.page()
        )),
        (1, Err(why)) => Outcome::Fail(format!(
            "one MAP of {gbase:#x} with a {g:#x} granule did not cover {:#x}: {why}",
            t.page()
        )),
        (n, _) => Outcome::Fail(format!("{n} MAPs for one {g:#x} granule")),
    }
}

/// Profiles without a guard: the same stray access reaches the device (proves the probes
/// are real).
pub fn stray_forwarded(ctx: &Ctx) -> Outcome {
    let hv = ctx.hv;
    if hv.profile.has_guard() {
        return Outcome::Skip(format!(
            "profile {} has a guard: stray accesses must abort",
            hv.profile
        ));
    }
    let ts = targets::targets(ctx.platform);
    let Some(t) = targets::pick(&ts, targets::PAGE, &[]) else {
        return Outcome::Skip(String::from("no probe target"));
    };
    match stray_read(&t, Width::W32, t.id_offset) {
        Err(o) => o,
        Ok(Ok(v)) if t.answers(v as u32) => Outcome::Pass(format!(
            "profile {}: unregistered {} page forwarded, ID {v:#x}",
            hv.profile, t.device
        )),
        Ok(Ok(v)) => Outcome::Fail(format!(
            "{} ID read {v:#x}, expected {}",
            t.device,
            t.expected()
        )),
        Ok(Err(l)) => Outcome::Fail(format!(
            "profile {}: unregistered {} page aborted: {}",
            hv.profile, t.device, l.fault
        )),
    }
}

/// Forwarded loads of every width come back as the device answered them: the emulation
/// honours the syndrome's access size, register width and sign extension (SAS, SF, SSE).
/// Checked on the PrimeCell identification registers of a registered page, whose values
/// the 32-bit reads give.
pub fn widths(ctx: &Ctx) -> Outcome {
    let ts = targets::targets(ctx.platform);
    let Some(t) = ts.iter().copied().find(|t| t.id_offset == 0xfe0) else {
        return Outcome::Skip(String::from("no PrimeCell device (PL031, PL061) to read"));
    };
    let m = need!(ioremap::ioremap(t.page(), targets::PAGE)
        .map_err(|e| Outcome::Fail(format!("ioremap({:#x}): {e}", t.page()))));
    let base = m.addr() + 0xfe0;
    let read = |off: u64, w: Width, signed: bool| -> Result<u64, Outcome> {
        // SAFETY: reads of the device's read-only identification registers (0xfe0..0xfff)
        // through their registered mapping; no side effects.
        let r = unsafe {
            if signed {
                probe::read_signed(base + off, w)
            } else {
                probe::read(base + off, w)
            }
        };
        r.map_err(|l| {
            Outcome::Fail(format!(
                "{}-byte read at {:#x} aborted: {}",
                w.bytes(),
                base + off,
                l.fault
            ))
        })
    };
    // The eight ID registers as 32-bit words: the reference.
    let mut words = [0u64; 8];
    for (i, w) in words.iter_mut().enumerate() {
        *w = need!(read(i as u64 * 4, Width::W32, false));
    }
    let mut bad = Vec::new();
    let mut expect = |what: &str, got: u64, want: u64| {
        if got != want {
            bad.push(format!("{what} read {got:#x}, expected {want:#x}"));
        }
    };
    expect("8-bit", need!(read(0, Width::W8, false)), words[0] & 0xff);
    expect(
        "16-bit",
        need!(read(0, Width::W16, false)),
        words[0] & 0xffff,
    );
    expect(
        "64-bit",
        need!(read(0, Width::W64, false)),
        words[0] | (words[1] << 32),
    );
    // A byte with its top bit set shows sign extension, if the device has one.
    let (i, word) = words
        .iter()
        .enumerate()
        .find(|(_, w)| **w & 0x80 != 0)
        .unwrap_or((0, &words[0]));
    let off = i as u64 * 4;
    expect(
        "ldrsb",
        need!(read(off, Width::W8, true)),
        *word as u8 as i8 as i64 as u64,
    );
    expect(
        "ldrsh",
        need!(read(off, Width::W16, true)),
        *word as u16 as i16 as i64 as u64,
    );
    expect(
        "ldrsw",
        need!(read(off, Width::W32, true)),
        *word as u32 as i32 as i64 as u64,
    );
    if bad.is_empty() {
        Outcome::Pass(format!("{} {:#x}: 8/16/32/64-bit and sign-extending loads agree (ID bytes {:#x}.., signed byte at +{off:#x})", t.device, t.base + 0xfe0, words[0]))
    } else {
        Outcome::Fail(format!(
            "{} {:#x}: {}",
            t.device,
            t.base + 0xfe0,
            bad.join("; ")
        ))
    }
}
