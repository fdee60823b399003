//! `guard:` checks: the guard hypercalls, and what reaches the host. Every access check
//! uses a page where a real device answers when the page is registered, so an abort
//! proves the *hypervisor* refused the access.

use super::pages::{
    all_targets, consecutive, expect_forwarded, expect_refused, fresh, guard, pick_refused,
    pick_unused, unregistered_targets, unregistered_window, Answer, NotRefused,
};
use super::{forms, Ctx};
use crate::access::{expect, Expect, Form, State};
use crate::esr::PKVM_INJECTED_DABT;
use crate::hyp::abi::Ret;
use crate::hyp::profile::{KnownBug, NoSyndrome};
use crate::kernel::arch::sysreg;
use crate::kernel::hyp::MmioGuard;
use crate::kernel::mm::ioremap::{self, IoMapping};
use crate::kernel::probe::{self, Width};
use crate::kernel::{console, smp};
use crate::refusal::{judge_stray, Observed, StrayAccess};
use crate::report::Outcome;
use crate::targets::{self, Target, TargetKind};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

checks!("guard":
    info,
    enroll,
    stray_read,
    stray_write,
    map_misaligned,
    map_ram,
    map_outside_ipa,
    unmap_unmapped,
    neighbour,
    after_unmap,
    refcount,
    other_cpu,
    map_twice,
    unmap_return,
    granule_16k,
    range,
    registered_read,
    registered_write,
    widths,
    no_syndrome,
    access_forms,
    returns,
    console,
);

fn map(base: u64, size: u64) -> Result<IoMapping, Outcome> {
    ioremap::ioremap(base, size).map_err(|e| Outcome::fail(format_args!("ioremap({base:#x}): {e}")))
}

/// INFO == HYP_MEMINFO granule (android profiles).
pub fn info(ctx: &Ctx) -> Outcome {
    let guard = need!(guard(ctx));
    let (profile, g) = (ctx.hv.profile, guard.granule());
    if !profile.is_android() {
        return Outcome::skip(format_args!("profile {profile} has no MMIO_GUARD_INFO"));
    }
    match guard.info() {
        Ok(x0) if x0 == g => Outcome::pass(format_args!("INFO = HYP_MEMINFO = {g:#x}")),
        Ok(x0) => Outcome::fail(format_args!(
            "MMIO_GUARD_INFO {x0:#x} != HYP_MEMINFO {g:#x}"
        )),
        Err(f) => Outcome::fail(format_args!("MMIO_GUARD_INFO aborted: {f}")),
    }
}

/// ENROLL answers 0, and a second ENROLL is also 0 and drops no registration.
pub fn enroll(ctx: &Ctx) -> Outcome {
    let guard = need!(guard(ctx));
    let profile = ctx.hv.profile;
    if !profile.has_enroll() {
        return Outcome::skip(format_args!(
            "profile {profile} has no MMIO_GUARD_ENROLL (already enrolled)"
        ));
    }
    let second = guard.enroll();
    let Some(first) = ctx.hv.boot_enroll() else {
        return Outcome::fail("no ENROLL was made at boot");
    };
    if first != Ok(Ret::Success) || second != Ok(Ret::Success) {
        return Outcome::fail(format_args!(
            "ENROLL at boot answered {}, again {}",
            Answer(&first),
            Answer(&second)
        ));
    }
    // The console's page was registered before the second ENROLL: it must still answer.
    match console::ping() {
        Some(Ok(_)) => Outcome::pass("0 at boot, 0 again; the console's registration survived"),
        Some(Err(f)) => Outcome::fail(format_args!(
            "after a second ENROLL the registered console page aborts: {f}"
        )),
        None => Outcome::fail("no console to look at"),
    }
}

/// Unregistered device page: ESR_EL1 = 0x96000010, FAR_EL1 = the address, ELR = the
/// access, destination register unchanged.
pub fn stray_read(ctx: &Ctx) -> Outcome {
    let g = need!(guard(ctx)).granule();
    let ts = unregistered_targets(ctx);
    // Keep the writable device for stray-write.
    let w: Vec<u64> = targets::writable(&ts).map(|t| t.base).into_iter().collect();
    let Some(t) = pick_refused(ctx, ts.clone(), g, &w).or_else(|| pick_refused(ctx, ts, g, &[]))
    else {
        return Outcome::skip("no unregistered device page with a known ID register");
    };
    match expect_refused(&t) {
        Ok(f) => Outcome::pass(format_args!("{} {f}", t.device)),
        Err(why) => Outcome::fail(why),
    }
}

/// Same abort for a write, and after registering the page the device shows the write
/// never arrived.
pub fn stray_write(ctx: &Ctx) -> Outcome {
    need!(guard(ctx));
    let ts = unregistered_targets(ctx);
    let Some((t, rw)) = targets::writable(&ts).and_then(|t| Some((t, t.rw_offset?))) else {
        return Outcome::skip("no unregistered device with a read/write register");
    };
    let addr = t.base + rw;
    const MARK: u64 = 0x5a5a_1234;
    let stray = {
        let _w = need!(unregistered_window(t.page())
            .map_err(|e| Outcome::fail(format_args!("stage-1 map: {e}"))));
        // SAFETY: a 32-bit write to the device's read/write register (PL031 match
        // register); harmless to the device, and expected to be refused.
        unsafe { probe::write(addr, Width::W32, MARK) }
    };
    let access = StrayAccess {
        addr,
        site: probe::store_site(Width::W32),
        device_answer: None,
    };
    let observed = stray.map_or_else(Observed::StoreFaulted, |()| Observed::Stored);
    let mut why = Vec::new();
    if let Err(deviation) = judge_stray(&access, observed) {
        why.push(format!(
            "{}",
            NotRefused::Deviation {
                device: t.device,
                addr,
                deviation
            }
        ));
    }
    // Now register the page and look.
    let m = need!(map(t.page(), targets::PAGE));
    // SAFETY: a read of the same register through the registered mapping.
    match unsafe { probe::read(m.addr() + rw, Width::W32) } {
        Ok(v) if v == MARK => why.push(format!(
            "the refused write arrived: {} register reads {v:#x}",
            t.device
        )),
        Ok(_) => {}
        Err(l) => why.push(format!("registered read-back aborted: {}", l.fault)),
    }
    if why.is_empty() {
        Outcome::pass(format_args!(
            "{} {addr:#x}: write refused with 0x96000010 and never arrived",
            t.device
        ))
    } else {
        Outcome::fail(why.join("; "))
    }
}

/// -3, and nothing becomes forwarded.
pub fn map_misaligned(ctx: &Ctx) -> Outcome {
    let guard = need!(guard(ctx));
    let t = need!(fresh(ctx, guard.granule(), &[]));
    let ipa = t.page() + 0x10;
    let r = guard.map_granule(ipa);
    if r != Ok(Ret::InvalidParameter) {
        return Outcome::fail(format_args!(
            "MMIO_GUARD_MAP({ipa:#x}) answered {} (expected -3; {})",
            Answer(&r),
            ctx.hv.profile
        ));
    }
    match expect_refused(&t) {
        Ok(_) => Outcome::pass(format_args!(
            "MAP({ipa:#x}) = -3; {} page still refused",
            t.device
        )),
        Err(why) => Outcome::fail(format_args!("after a refused misaligned MAP: {why}")),
    }
}

/// -3, and RAM keeps working.
pub fn map_ram(ctx: &Ctx) -> Outcome {
    let guard = need!(guard(ctx));
    let mut page = alloc::boxed::Box::new([0u64; 512]);
    let ipa = page.as_ptr() as u64 & !0xfff;
    let r = guard.map_granule(ipa);
    page[100] = 0xfeed_f00d;
    // SAFETY: a volatile read of memory this function owns.
    let back = unsafe { core::ptr::read_volatile(&page[100]) };
    if back != 0xfeed_f00d {
        return Outcome::fail(format_args!(
            "RAM at {ipa:#x} stopped working after MAP: read {back:#x}"
        ));
    }
    match r {
        Ok(Ret::InvalidParameter) => {
            Outcome::pass(format_args!("MAP(RAM {ipa:#x}) = -3; RAM still works"))
        }
        r => Outcome::fail(format_args!(
            "MMIO_GUARD_MAP of RAM page {ipa:#x} answered {} (expected -3)",
            Answer(&r)
        )),
    }
}

/// -3 (beyond the IPA size from the device tree / ID_AA64MMFR0).
pub fn map_outside_ipa(ctx: &Ctx) -> Outcome {
    let guard = need!(guard(ctx));
    let bits = sysreg::pa_bits(sysreg::pa_range());
    let ipa = 1u64 << bits;
    match guard.map_granule(ipa) {
        Ok(Ret::InvalidParameter) => Outcome::pass(format_args!(
            "MAP({ipa:#x}, beyond the {bits}-bit IPA space) = -3"
        )),
        r => Outcome::fail(format_args!(
            "MMIO_GUARD_MAP({ipa:#x}) beyond the {bits}-bit IPA space answered {} (expected -3)",
            Answer(&r)
        )),
    }
}

/// The guard of a profile that has UNMAP, and a page no check has registered.
fn unmap_and_page(ctx: &Ctx) -> Result<(&'static MmioGuard, u64), Outcome> {
    let guard = guard(ctx)?;
    let profile = ctx.hv.profile;
    if !profile.has_unmap() {
        return Err(Outcome::skip(format_args!(
            "profile {profile} has no MMIO_GUARD_UNMAP"
        )));
    }
    Ok((guard, fresh(ctx, guard.granule(), &[])?.page()))
}

/// -3 (android14); 0 (android16 no-op); android13: KFAIL when 0.
pub fn unmap_unmapped(ctx: &Ctx) -> Outcome {
    let (guard, p) = need!(unmap_and_page(ctx));
    let profile = ctx.hv.profile;
    let r = guard.unmap_granule(p);
    let expected = profile.unmap_of_unmapped();
    let known = profile.has_bug(KnownBug::UnmapInverted) && r == Ok(Ret::Success);
    let detail = match r {
        Ok(v) if v == expected => format!("UNMAP({p:#x}) never mapped = {v}"),
        _ if known => String::from("android13 returns 0 when UNMAP fails"),
        r => format!(
            "UNMAP of never-mapped {p:#x} answered {} (expected {expected})",
            Answer(&r)
        ),
    };
    Outcome::kfail(known, r == Ok(expected), detail)
}

/// The granule after a registered one aborts; the last byte of the registered one does not.
pub fn neighbour(ctx: &Ctx) -> Outcome {
    let g = need!(guard(ctx)).granule();
    let Some((a, b)) = targets::neighbours(&unregistered_targets(ctx), g) else {
        return Outcome::skip(format_args!(
            "no two unregistered probe targets in consecutive {g:#x} granules"
        ));
    };
    let ga = a.base & !(g - 1);
    let m = need!(map(ga, g));
    let last = ga + g - 1;
    // SAFETY: a byte read of the last byte of a registered device granule (inside a
    // device's register window or the unused space after it: reads have no side effects
    // on the devices probed here).
    if let Err(l) = unsafe { probe::read(m.addr() + (last - ga), Width::W8) } {
        return Outcome::fail(format_args!(
            "the last byte {last:#x} of registered granule {ga:#x} aborted: {}",
            l.fault
        ));
    }
    match expect_refused(&b) {
        Ok(_) => Outcome::pass(format_args!(
            "{ga:#x} registered; last byte read; next granule ({} {:#x}) refused",
            b.device,
            b.page()
        )),
        Err(why) => Outcome::fail(format_args!(
            "with {ga:#x} registered, the next granule: {why}"
        )),
    }
}

/// android14: aborts after UNMAP; android16: SKIP (UNMAP is a no-op there).
pub fn after_unmap(ctx: &Ctx) -> Outcome {
    let g = need!(guard(ctx)).granule();
    let profile = ctx.hv.profile;
    if !profile.has_unmap() {
        return Outcome::skip(format_args!("profile {profile} has no MMIO_GUARD_UNMAP"));
    }
    if !profile.unmap_takes_effect() {
        return Outcome::skip(format_args!("{profile} keeps pages forwarded after UNMAP"));
    }
    let t = need!(fresh(ctx, g, &[]));
    {
        let m = need!(map(t.page(), targets::PAGE));
        // SAFETY: an ID register read through its registered mapping.
        if let Err(l) = unsafe { probe::read(m.addr() + t.id_offset, Width::W32) } {
            return Outcome::fail(format_args!(
                "registered {} page aborted before UNMAP: {}",
                t.device, l.fault
            ));
        }
    }
    match expect_refused(&t) {
        Ok(f) => Outcome::pass(format_args!("{} page refused after iounmap: {f}", t.device)),
        Err(why) => Outcome::fail(format_args!("after UNMAP: {why}")),
    }
}

/// A window (base, size) and the probe target it covers.
type Window = ((u64, u64), Target);

/// Two windows of one granule: in two devices of that granule, or else two halves of
/// one device's page.
fn two_windows(ts: &[Target], g: u64) -> Option<(Window, Window)> {
    Some(match targets::same_granule(ts, g) {
        Some((a, b)) => (((a.base, 0x200), a), ((b.base, 0x200), b)),
        None => {
            let t = *ts.first()?;
            (((t.base, 0x800), t), ((t.base + 0x800, 0x800), t))
        }
    })
}

/// Two windows in one granule: one MAP; dropping one keeps the other forwarded; dropping
/// both sends one UNMAP.
pub fn refcount(ctx: &Ctx) -> Outcome {
    let g = need!(guard(ctx)).granule();
    let profile = ctx.hv.profile;
    let Some(((wa, a), (wb, b))) = two_windows(&unregistered_targets(ctx), g) else {
        return Outcome::skip("no unregistered probe target");
    };
    let before = ioremap::counters();
    let ma = need!(map(wa.0, wa.1));
    let mb = need!(map(wb.0, wb.1));
    let maps = ioremap::counters().maps - before.maps;
    if maps != 1 {
        return Outcome::fail(format_args!(
            "two windows in granule {:#x} made {maps} MAPs",
            wa.0 & !(g - 1)
        ));
    }
    drop(ma);
    if ioremap::counters().unmaps != before.unmaps {
        return Outcome::fail(
            "dropping the first window sent an UNMAP while the second still uses the granule",
        );
    }
    if let Err(why) = expect_forwarded(&b) {
        return Outcome::fail(format_args!("after dropping one of two windows: {why}"));
    }
    drop(mb);
    let unmaps = ioremap::counters().unmaps - before.unmaps;
    let want = u64::from(profile.has_unmap());
    if unmaps != want {
        return Outcome::fail(format_args!(
            "dropping both windows sent {unmaps} UNMAPs (expected {want})"
        ));
    }
    if profile.unmap_takes_effect() {
        if let Err(why) = expect_refused(&a) {
            return Outcome::fail(format_args!("after both windows were dropped: {why}"));
        }
    }
    Outcome::pass(format_args!(
        "windows {:#x} and {:#x}: 1 MAP, other kept forwarded, {unmaps} UNMAP",
        wa.0, wb.0
    ))
}

/// The stack slot the other CPU runs on (slot 0 is the boot CPU's).
const OTHER_SLOT: usize = 1;

/// The page CPU 0 registers for `other-cpu`: one an earlier check may have left
/// registered, if there is one, else a fresh one. Under profiles whose UNMAP has no
/// effect a registration lasts for the whole run, and a fresh page spent here would be
/// missing for later checks that need an unregistered one.
fn page_to_register(ctx: &Ctx, g: u64) -> Result<Target, Outcome> {
    let registered: Vec<Target> = all_targets(ctx)
        .into_iter()
        .filter(|t| super::pages::tainted(t.base))
        .collect();
    match targets::pick(&registered, g, &[]) {
        Some(t) => Ok(t),
        None => fresh(ctx, g, &[]),
    }
}

/// A page registered on CPU 0 is forwarded on CPU 1, and a stray access on CPU 1 aborts
/// there: the guard belongs to the VM, not to a CPU. The other CPU is started twice (once
/// per access), which also proves that it can be brought up again after it powered off.
pub fn other_cpu(ctx: &Ctx) -> Outcome {
    let g = need!(guard(ctx)).granule();
    let cpus = &ctx.platform.cpus;
    if cpus.len() < 2 {
        return Outcome::skip(format_args!(
            "the device tree has {} CPU: needs -smp 2 or more",
            cpus.len()
        ));
    }
    let me = smp::this_mpidr();
    let Some(mpidr) = crate::cpus::other_cpu(cpus, me) else {
        return Outcome::skip(format_args!(
            "no CPU in /cpus other than this one (MPIDR {me:#x})"
        ));
    };
    let registered = need!(page_to_register(ctx, g));
    let stray = need!(fresh(ctx, g, &[registered.base]));
    // Registered here, on the boot CPU, for as long as `window` lives.
    let window = need!(map(registered.page(), targets::PAGE));
    let forwarded = smp::run_on(OTHER_SLOT, mpidr, move || {
        (smp::this_mpidr(), expect_forwarded(&registered))
    });
    let refused = smp::run_on(OTHER_SLOT, mpidr, move || {
        (smp::this_mpidr(), expect_refused(&stray))
    });
    // The control: the boot CPU itself still sees its registration.
    let here = expect_forwarded(&registered);
    drop(window);
    let n = cpus.iter().position(|&c| c == mpidr).unwrap_or(OTHER_SLOT);
    let other = format!("CPU {n} (MPIDR {mpidr:#x})");
    other_cpu_verdict(&other, mpidr, forwarded, refused, here, &registered, &stray)
}

type Job<T> = Result<(u64, T), smp::SmpError>;

fn other_cpu_verdict(
    other: &str,
    mpidr: u64,
    forwarded: Job<Result<(), super::pages::NotForwarded>>,
    refused: Job<Result<crate::fault::Fault, NotRefused>>,
    here: Result<(), super::pages::NotForwarded>,
    registered: &Target,
    stray: &Target,
) -> Outcome {
    use crate::cpus::affinity;
    let mut wrong: Vec<String> = Vec::new();
    let misplaced = |who: u64, what: &str| {
        (affinity(who) != affinity(mpidr))
            .then(|| format!("the {what} job meant for {other} ran on MPIDR {who:#x}"))
    };
    let seen = forwarded.as_ref().map_or(0, |(who, _)| *who);
    match &forwarded {
        Err(e) => wrong.push(format!(
            "could not run the registered-page read on {other}: {e}"
        )),
        Ok((who, r)) => {
            wrong.extend(misplaced(*who, "registered-page"));
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
    let mut fault = String::new();
    match &refused {
        Err(e) => wrong.push(format!("could not run the stray read on {other}: {e}")),
        Ok((who, r)) => {
            wrong.extend(misplaced(*who, "stray-read"));
            match r {
                Ok(f) => fault = format!("{f}"),
                Err(why) => wrong.push(format!(
                    "a stray access on {other} was not refused there: {why}"
                )),
            }
        }
    }
    if !wrong.is_empty() {
        return Outcome::fail(wrong.join("; "));
    }
    Outcome::pass(format_args!(
        "{} page {:#x} registered on CPU 0 is forwarded on {other} (MPIDR_EL1 there {seen:#x}); stray {} {:#x} aborts there: {fault}; started twice",
        registered.device,
        registered.page(),
        stray.device,
        stray.id_addr(),
    ))
}

/// 0 both times; one UNMAP then removes it (android14).
pub fn map_twice(ctx: &Ctx) -> Outcome {
    let guard = need!(guard(ctx));
    let profile = ctx.hv.profile;
    let t = need!(fresh(ctx, guard.granule(), &[]));
    let p = t.page();
    let (a, b) = (guard.map_granule(p), guard.map_granule(p));
    // On a failure the page is unregistered again where UNMAP takes effect, so that no
    // later check meets this check's registration.
    let undo = || {
        if profile.unmap_takes_effect() {
            let _ = guard.unmap_granule(p);
        }
    };
    if a != Ok(Ret::Success) || b != Ok(Ret::Success) {
        undo();
        return Outcome::fail(format_args!(
            "MAP({p:#x}) twice answered {} and {} (expected 0, 0)",
            Answer(&a),
            Answer(&b)
        ));
    }
    if let Err(why) = expect_forwarded(&t) {
        undo();
        return Outcome::fail(format_args!("after MAP: {why}"));
    }
    if !profile.unmap_takes_effect() {
        return Outcome::pass(format_args!(
            "0, 0; {} forwarded ({profile} has no effective UNMAP)",
            t.device
        ));
    }
    let u = guard.unmap_granule(p);
    match expect_refused(&t) {
        Ok(_) => Outcome::pass(format_args!("0, 0; one UNMAP ({}) removed it", Answer(&u))),
        Err(why) => Outcome::fail(format_args!(
            "after two MAPs and one UNMAP ({}): {why}",
            Answer(&u)
        )),
    }
}

/// 0 on a mapped page; android13: KFAIL when -1.
pub fn unmap_return(ctx: &Ctx) -> Outcome {
    // Any device page no driver holds serves: the answer to MAP then UNMAP is the same
    // whether an earlier check left it registered or not, so a run whose earlier UNMAPs
    // were refused (every page then possibly registered) still gets this verdict.
    let (guard, p) = match unmap_and_page(ctx) {
        Ok(found) => found,
        Err(skip) => {
            let Ok(guard) = guard(ctx) else { return skip };
            let g = guard.granule();
            match targets::pick(&all_targets(ctx), g, &[]) {
                Some(t) if ctx.hv.profile.has_unmap() => (guard, t.page()),
                _ => return skip,
            }
        }
    };
    let profile = ctx.hv.profile;
    let m = guard.map_granule(p);
    if m != Ok(Ret::Success) {
        return Outcome::fail(format_args!("MAP({p:#x}) answered {}", Answer(&m)));
    }
    let u = guard.unmap_granule(p);
    let inverted = profile.has_bug(KnownBug::UnmapInverted);
    match u {
        Ok(Ret::Success) if inverted => Outcome::fail(format_args!(
            "UNMAP({p:#x}) = 0, which android13 answers when the unmap failed"
        )),
        Ok(Ret::Success) => Outcome::pass(format_args!("UNMAP({p:#x}) = 0")),
        Ok(Ret::NotSupported) if inverted => {
            Outcome::kfail(true, false, "android13 returns -1 on success")
        }
        r => Outcome::fail(format_args!(
            "UNMAP({p:#x}) of a mapped page answered {} (expected 0)",
            Answer(&r)
        )),
    }
}

/// With a 16 KiB (or 64 KiB) granule the whole granule is registered by one MAP.
pub fn granule_16k(ctx: &Ctx) -> Outcome {
    let g = need!(guard(ctx)).granule();
    if g == targets::PAGE {
        return Outcome::skip("the guard granule is 4 KiB");
    }
    // A probe target that is not at the start of its granule, so that registering the
    // granule's first page through one MAP must cover it.
    let ts = unregistered_targets(ctx);
    let Some(t) = ts
        .iter()
        .find(|t| t.page() & (g - 1) != 0)
        .or(ts.first())
        .copied()
    else {
        return Outcome::skip("no unregistered probe target");
    };
    let gbase = t.base & !(g - 1);
    let before = ioremap::counters();
    let m = need!(map(gbase, targets::PAGE));
    let maps = ioremap::counters().maps - before.maps;
    let r = expect_forwarded(&t);
    drop(m);
    match (maps, r) {
        (1, Ok(())) => Outcome::pass(format_args!(
            "one MAP of {gbase:#x} ({g:#x} granule) forwards {} at {:#x}",
            t.device,
            t.page()
        )),
        (1, Err(why)) => Outcome::fail(format_args!(
            "one MAP of {gbase:#x} with a {g:#x} granule did not cover {:#x}: {why}",
            t.page()
        )),
        (n, _) => Outcome::fail(format_args!("{n} MAPs for one {g:#x} granule")),
    }
}

/// The device's identification value comes back through a registered window.
pub fn registered_read(ctx: &Ctx) -> Outcome {
    need!(guard(ctx));
    let Some(t) = pick_unused(&all_targets(ctx), targets::PAGE) else {
        return Outcome::skip("no device with a known ID register");
    };
    let m = need!(map(t.page(), targets::PAGE));
    // SAFETY: an ID register read through its registered mapping.
    match unsafe { probe::read(m.addr() + t.id_offset, Width::W32) } {
        Ok(v) if t.answers(v as u32) => {
            Outcome::pass(format_args!("{} ID {v:#x} at {:#x}", t.device, t.id_addr()))
        }
        Ok(v) => Outcome::fail(format_args!(
            "{} ID read {v:#x}, expected {}",
            t.device,
            t.expected()
        )),
        Err(l) => Outcome::fail(format_args!(
            "registered {} page aborted: {}",
            t.device, l.fault
        )),
    }
}

/// A write takes effect (read back through the registered window).
pub fn registered_write(ctx: &Ctx) -> Outcome {
    need!(guard(ctx));
    let ts: Vec<Target> = all_targets(ctx)
        .into_iter()
        .filter(|t| t.rw_offset.is_some())
        .collect();
    let Some((t, rw)) = pick_unused(&ts, targets::PAGE).and_then(|t| Some((t, t.rw_offset?)))
    else {
        return Outcome::skip("no device with a read/write register");
    };
    let m = need!(map(t.page(), targets::PAGE));
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
            Ok(back) => return Outcome::fail(format_args!("wrote {v:#x}, read back {back:#x}")),
            Err(f) => {
                return Outcome::fail(format_args!(
                    "registered {} register aborted: {f}",
                    t.device
                ))
            }
        }
    }
    Outcome::pass(format_args!(
        "{} {:#x}: wrote and read back {}",
        t.device,
        t.base + rw,
        seen.join(", ")
    ))
}

/// PrimeCell identification registers: 0xfe0..0xfff, eight 32-bit words.
const PRIMECELL_ID: u64 = 0xfe0;

/// A PrimeCell device (PL031, PL061) to read, one no call registered if there is one.
fn primecell(ctx: &Ctx) -> Result<Target, Outcome> {
    let ts: Vec<Target> = all_targets(ctx)
        .into_iter()
        .filter(|t| t.id_offset == PRIMECELL_ID)
        .collect();
    pick_unused(&ts, targets::PAGE)
        .ok_or_else(|| Outcome::skip("no PrimeCell device (PL031, PL061) to read"))
}

/// One load of the identification block at `base + off`.
fn id_load(base: u64, off: u64, w: Width, signed: bool) -> Result<u64, Outcome> {
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
        Outcome::fail(format_args!(
            "{}-byte read at {:#x} aborted: {}",
            w.bytes(),
            base + off,
            l.fault
        ))
    })
}

/// Forwarded loads of 8/16/32/64 bits and sign-extending loads agree with the device:
/// the emulation honours the syndrome's access size, register width and sign extension
/// (SAS, SF, SSE). Checked on the PrimeCell identification registers of a registered
/// page, whose values the 32-bit reads give.
pub fn widths(ctx: &Ctx) -> Outcome {
    let t = need!(primecell(ctx));
    let m = need!(map(t.page(), targets::PAGE));
    let base = m.addr() + PRIMECELL_ID;
    // The eight ID registers as 32-bit words: the reference.
    let mut words = [0u64; 8];
    for (i, w) in words.iter_mut().enumerate() {
        *w = need!(id_load(base, i as u64 * 4, Width::W32, false));
    }
    // A byte with its top bit set shows sign extension, if the device has one.
    let (i, word) = words
        .iter()
        .copied()
        .enumerate()
        .find(|(_, w)| w & 0x80 != 0)
        .unwrap_or((0, words[0]));
    let off = i as u64 * 4;
    let loads = [
        ("8-bit", 0, Width::W8, false, words[0] & 0xff),
        ("16-bit", 0, Width::W16, false, words[0] & 0xffff),
        ("64-bit", 0, Width::W64, false, words[0] | (words[1] << 32)),
        (
            "ldrsb",
            off,
            Width::W8,
            true,
            word as u8 as i8 as i64 as u64,
        ),
        (
            "ldrsh",
            off,
            Width::W16,
            true,
            word as u16 as i16 as i64 as u64,
        ),
        (
            "ldrsw",
            off,
            Width::W32,
            true,
            word as u32 as i32 as i64 as u64,
        ),
    ];
    let mut bad = Vec::new();
    for (what, o, w, signed, want) in loads {
        let got = need!(id_load(base, o, w, signed));
        if got != want {
            bad.push(format!("{what} read {got:#x}, expected {want:#x}"));
        }
    }
    let at = t.base + PRIMECELL_ID;
    if bad.is_empty() {
        Outcome::pass(format_args!(
            "{} {at:#x}: 8/16/32/64-bit and sign-extending loads agree (ID bytes {:#x}.., signed byte at +{off:#x})",
            t.device, words[0]
        ))
    } else {
        Outcome::fail(format_args!("{} {at:#x}: {}", t.device, bad.join("; ")))
    }
}

/// An `ldp` on a device page aborts, ESR 0x96000010 and FAR = the address (pKVM cannot
/// emulate it; upstream pKVM does this for protected VMs too); forwarded under profile
/// none; SKIP under profile kvm, where the VMM decides and may stop the VM.
pub fn no_syndrome(ctx: &Ctx) -> Outcome {
    let profile = ctx.hv.profile;
    let expect = profile.no_syndrome();
    if expect == NoSyndrome::VmmDecides {
        return Outcome::skip("profile kvm: the VMM decides what an access without syndrome does, and may stop the VM");
    }
    // A PrimeCell device: its ID block is not at the start of its page, so a FAR that is
    // the page (or granule) base instead of the address shows.
    let t = need!(primecell(ctx));
    let m = need!(map(t.page(), targets::PAGE));
    let addr = m.addr() + (t.id_offset & !0xf);
    // SAFETY: a pair load of two doublewords of a device's ID register block: no side
    // effects; a fault is expected where the hypervisor cannot emulate it.
    let r = unsafe { probe::read_pair(addr) };
    match (expect, r) {
        (NoSyndrome::Aborts, Err((l, _)))
            if l.fault.esr.0 == PKVM_INJECTED_DABT
                && l.fault.far == addr
                && l.fault.elr == probe::ldp_site() =>
        {
            Outcome::pass(format_args!("ldp at {addr:#x}: {}", l.fault))
        }
        (NoSyndrome::Aborts, Err((l, _))) => Outcome::fail(format_args!(
            "ldp at {addr:#x} aborted with {}, expected ESR 0x96000010 FAR={addr:#x}",
            l.fault
        )),
        (NoSyndrome::Aborts, Ok((x, y))) => Outcome::fail(format_args!(
            "an ldp (no valid syndrome) at {addr:#x} was forwarded: read {x:#x}, {y:#x}"
        )),
        (_, Ok((x, _))) => Outcome::pass(format_args!(
            "profile {profile}: ldp forwarded, read {x:#x}"
        )),
        (_, Err((l, _))) => Outcome::fail(format_args!(
            "profile {profile}: ldp at {addr:#x} aborted: {}",
            l.fault
        )),
    }
}

/// Console incidents the `console` check has reported (the run's end reports the rest).
static CONSOLE_REPORTED: AtomicUsize = AtomicUsize::new(0);

pub(super) fn console_incidents_reported() -> usize {
    CONSOLE_REPORTED.load(Ordering::Relaxed)
}

/// The console's page stays registered through every check (ENROLL again, UNMAPs of other
/// pages); if it is lost, ioguard re-registers it, FAILs this check naming what happened,
/// and goes on.
pub fn console(ctx: &Ctx) -> Outcome {
    // What every check does around the console, done here too, so that the check shows
    // something alone: ENROLL again, register and unregister another page.
    if let Some(guard) = ctx.hv.mmio_guard() {
        if guard.has_enroll() {
            let _ = guard.enroll();
        }
        if let Ok(t) = page_to_register(ctx, guard.granule()) {
            drop(ioremap::ioremap(t.page(), targets::PAGE));
        }
    }
    crate::println!(
        "INFO: {}: one line through the console after that",
        ctx.name
    );
    let now = console::ping();
    let (incidents, total) = console::incidents();
    CONSOLE_REPORTED.store(total, Ordering::Relaxed);
    let registered = if ctx.hv.mmio_guard().is_some() {
        "registered "
    } else {
        ""
    };
    let mut what: Vec<String> = incidents.iter().map(|i| format!("{i}")).collect();
    if total > incidents.len() {
        what.push(format!("{} more", total - incidents.len()));
    }
    match now {
        Some(Err(f)) => what.push(format!("the console's page aborts now: {f}")),
        None => what.push(String::from("there is no console")),
        Some(Ok(_)) => {}
    }
    if what.is_empty() {
        Outcome::pass(format_args!(
            "the console's {registered}page answered through every check so far"
        ))
    } else {
        Outcome::fail(what.join("; "))
    }
}

/// android16: RGUARD_MAP/UNMAP over N granules return x1 <= N and resume correctly; x3 != 0
/// gives -3; func 7 ignores x2/x3 and does one granule; every granule of the run is then
/// forwarded.
pub fn range(ctx: &Ctx) -> Outcome {
    use crate::kernel::hyp::mmio_guard::GuardOp;
    let guard = need!(guard(ctx));
    let (profile, g) = (ctx.hv.profile, guard.granule());
    if !profile.has_range() {
        return Outcome::skip(format_args!("profile {profile} has no range calls"));
    }
    const N: u64 = 2;
    let Some((first, run, fresh)) = consecutive(ctx, g, N) else {
        return Outcome::skip(format_args!(
            "no {N} consecutive {g:#x} granules with a probe target"
        ));
    };
    let mut bad = Vec::new();
    let show = |r: &Result<(Ret, u64), crate::fault::Fault>| match r {
        Ok((ret, x1)) => format!("{ret} with x1={x1}"),
        Err(f) => format!("an abort ({f})"),
    };
    let r = guard.range_call(GuardOp::Map, first, N, 1);
    if !matches!(r, Ok((Ret::InvalidParameter, _))) {
        bad.push(format!(
            "RGUARD_MAP({first:#x}, {N}, x3=1) answered {} (expected -3)",
            show(&r)
        ));
    }
    match guard.map(first, N) {
        Ok(()) => {}
        Err(e) => bad.push(format!("RGUARD_MAP of {N} granules from {first:#x}: {e}")),
    }
    for t in &run {
        if let Err(why) = expect_forwarded(t) {
            bad.push(format!(
                "after RGUARD_MAP of {N} granules from {first:#x}: {why}"
            ));
        }
    }
    let r = guard.map_call(first, 5, 7);
    if !matches!(r, Ok((Ret::Success, 1))) {
        bad.push(format!(
            "MMIO_GUARD_MAP({first:#x}, x2=5, x3=7) answered {} (expected 0 with x1=1: func 7 does one granule)",
            show(&r)
        ));
    }
    let r = guard.range_call(GuardOp::Unmap, first, N, 1);
    if !matches!(r, Ok((Ret::InvalidParameter, _))) {
        bad.push(format!(
            "RGUARD_UNMAP({first:#x}, {N}, x3=1) answered {} (expected -3)",
            show(&r)
        ));
    }
    if let Err(e) = guard.unmap(first, N) {
        bad.push(format!("RGUARD_UNMAP of {N} granules from {first:#x}: {e}"));
    }
    if !bad.is_empty() {
        return Outcome::fail(bad.join("; "));
    }
    let coverage = if fresh {
        "every granule forwarded after one run"
    } else {
        "granules already registered, so coverage is not shown"
    };
    Outcome::pass(format_args!(
        "{N} granules from {first:#x}: x3 != 0 refused, x1 counts the run ({coverage}), func 7 does one granule"
    ))
}

/// Every guard and memshare call answers only with a code its ABI documents for that
/// case (0, -1, -3; android13's 32-bit forms under that profile); any other value FAILs
/// naming the call, arguments and value.
pub fn returns(ctx: &Ctx) -> Outcome {
    let hv = ctx.hv;
    if hv.mmio_guard().is_none() && hv.mem_sharer().is_none() {
        return Outcome::skip(format_args!(
            "profile {} has neither a guard nor memory sharing",
            hv.profile
        ));
    }
    exercise_answers(ctx);
    let (calls, kept, total) = crate::kernel::hyp::answers();
    RETURNS_REPORTED.store(total, Ordering::Relaxed);
    // Upstream's abort for MEM_SHARE of a device page is the KFAIL of memshare: share-mmio.
    let known = |u: &crate::kernel::hyp::Undocumented| {
        hv.profile.has_bug(KnownBug::ShareMmioAborts)
            && u.fid == crate::hyp::abi::MEM_SHARE
            && matches!(u.answer, Err(f) if f.esr.0 == PKVM_INJECTED_DABT)
    };
    let bad: Vec<String> = kept
        .iter()
        .filter(|u| !known(u))
        .map(|u| format!("{u}"))
        .collect();
    let unkept = total - kept.len();
    if bad.is_empty() && unkept == 0 {
        return Outcome::pass(format_args!(
            "{calls} guard and memshare calls so far, every answer documented for its call"
        ));
    }
    let more = if unkept > 0 {
        format!("; {unkept} more")
    } else {
        String::new()
    };
    Outcome::fail(format_args!("{}{more}", bad.join("; ")))
}

/// Undocumented answers the `returns` check has reported (the run's end reports the rest).
static RETURNS_REPORTED: AtomicUsize = AtomicUsize::new(0);

pub(super) fn undocumented_reported() -> usize {
    RETURNS_REPORTED.load(Ordering::Relaxed)
}

/// One call of each kind the capabilities make, so that the check judges answers of its
/// own too (alone, the run so far is only the boot): ENROLL, MAP twice and UNMAP twice of a
/// page, MEM_SHARE and MEM_UNSHARE of a fresh granule of RAM.
fn exercise_answers(ctx: &Ctx) {
    if let Some(guard) = ctx.hv.mmio_guard() {
        if guard.has_enroll() {
            let _ = guard.enroll();
        }
        if let Ok(t) = page_to_register(ctx, guard.granule()) {
            let _ = (guard.map_granule(t.page()), guard.map_granule(t.page()));
            if guard.has_unmap() {
                let _ = (guard.unmap_granule(t.page()), guard.unmap_granule(t.page()));
            }
        }
    }
    if let Some(sharer) = ctx.hv.mem_sharer() {
        let g = sharer.granule() as usize;
        if let Ok(layout) = core::alloc::Layout::from_size_align(g, g) {
            // SAFETY: a non-zero, power-of-two aligned layout; the granule is only shared
            // and unshared, and never freed (a failed unshare leaves it shared).
            let p = unsafe { alloc::alloc::alloc_zeroed(layout) } as u64;
            if p != 0 {
                let _ = (sharer.share_call(p, 0, 0), sharer.unshare_call(p, 0, 0));
            }
        }
    }
}

/// What one page state of the access matrix gave: the state, the page, how many accesses
/// were as expected, and what was wrong.
type StateResult = (State, Target, usize, Vec<String>);

/// A target for a state that needs the page registered: one already registered if there
/// is one (under profiles whose UNMAP has no effect a fresh page spent here is gone for
/// good), else any.
fn registered_candidate(ctx: &Ctx, g: u64) -> Option<Target> {
    page_to_register(ctx, g)
        .ok()
        .or_else(|| targets::pick(&all_targets(ctx), g, &[]))
}

/// A page never registered, after the granule before it is registered: (that granule,
/// the page). Contiguous windows (virtio-mmio, PCI configuration space) also give an
/// `ldp` across the boundary.
fn neighbour_pair(ctx: &Ctx, g: u64) -> Option<(u64, Target)> {
    let all = all_targets(ctx);
    let has_before = |b: &Target| {
        let gb = b.base & !(g - 1);
        gb.checked_sub(g)
            .is_some_and(|ga| all.iter().any(|a| a.base & !(g - 1) == ga))
    };
    let candidates: Vec<Target> = unregistered_targets(ctx)
        .into_iter()
        .filter(has_before)
        .collect();
    let b = pick_refused(ctx, candidates, g, &[])?;
    Some(((b.base & !(g - 1)) - g, b))
}

fn on_page(
    ctx: &Ctx,
    state: State,
    t: Target,
    across: Option<u64>,
) -> Result<StateResult, Outcome> {
    let profile = ctx.hv.profile;
    let tried = forms::try_forms(&t, &forms::forms_for(&t, state, profile), across)
        .map_err(|e| Outcome::fail(format_args!("stage-1 map of {:#x}: {e}", t.page())))?;
    let (ok, bad) = forms::judge(&tried, state, profile);
    Ok((state, t, ok, bad))
}

/// The states CPU 0 can set up and try itself.
fn states_here(ctx: &Ctx, g: u64) -> Result<Vec<StateResult>, Outcome> {
    let profile = ctx.hv.profile;
    let mut out = Vec::new();
    if let Some(t) = pick_refused(ctx, unregistered_targets(ctx), g, &[]) {
        out.push(on_page(ctx, State::NeverRegistered, t, None)?);
    }
    if let Some(t) = registered_candidate(ctx, g) {
        let m = map(t.page(), targets::PAGE)?;
        out.push(on_page(ctx, State::Registered, t, None)?);
        drop(m);
    }
    if profile.unmap_takes_effect() {
        if let Ok(t) = fresh(ctx, g, &[]) {
            drop(map(t.page(), targets::PAGE)?);
            out.push(on_page(ctx, State::AfterUnmap, t, None)?);
        }
    }
    if let Some((ga, b)) = neighbour_pair(ctx, g) {
        let m = map(ga, g)?;
        let contiguous = matches!(b.device, TargetKind::VirtioMmio | TargetKind::PciConfig);
        let across = (contiguous
            && b.base == ga + g
            && expect(Form::PairAcross, State::Neighbour, profile) != Expect::NotTried)
            .then_some(ga + g);
        out.push(on_page(ctx, State::Neighbour, b, across)?);
        drop(m);
    }
    Ok(out)
}

/// The states tried from CPU 1: a page CPU 0 registered, and one never registered.
fn states_there(ctx: &Ctx, g: u64) -> Vec<Result<StateResult, String>> {
    let Some(mpidr) = crate::cpus::other_cpu(&ctx.platform.cpus, smp::this_mpidr()) else {
        return Vec::new();
    };
    let profile = ctx.hv.profile;
    let mut out = Vec::new();
    let mut there = |state: State, t: Target| {
        let forms = forms::forms_for(&t, state, profile);
        match smp::run_on(OTHER_SLOT, mpidr, move || {
            forms::try_forms(&t, &forms, None)
        }) {
            Ok(Err(e)) => out.push(Err(format!("{state}: stage-1 map on CPU 1: {e}"))),
            Ok(Ok(tried)) => {
                let (ok, bad) = forms::judge(&tried, state, profile);
                out.push(Ok((state, t, ok, bad)));
            }
            Err(e) => out.push(Err(format!("{state}: could not run on CPU 1: {e}"))),
        }
    };
    if let Some(t) = registered_candidate(ctx, g) {
        if let Ok(m) = ioremap::ioremap(t.page(), targets::PAGE) {
            there(State::RegisteredOtherCpu, t);
            drop(m);
        }
    }
    if let Some(t) = pick_refused(ctx, unregistered_targets(ctx), g, &[]) {
        there(State::NeverRegisteredOtherCpu, t);
    }
    out
}

/// Every access form (ldr/str of 8, 16, 32, 64 bits, sign-extending loads, ldp/stp, an
/// ldp straddling a registered and an unregistered granule) on every page state (never
/// registered, registered, after UNMAP, neighbour granule, registered from the other CPU):
/// forwarded exactly when the profile says so, otherwise pKVM's abort with exact
/// ESR/FAR/ELR and registers unchanged; one line per page state.
pub fn access_forms(ctx: &Ctx) -> Outcome {
    let g = if ctx.hv.profile.has_guard() {
        need!(guard(ctx)).granule()
    } else {
        targets::PAGE
    };
    let mut results: Vec<Result<StateResult, String>> =
        need!(states_here(ctx, g)).into_iter().map(Ok).collect();
    results.extend(states_there(ctx, g));
    let mut bad = Vec::new();
    let mut states = 0;
    let mut accesses = 0;
    for r in results {
        match r {
            Ok((state, t, ok, wrong)) => {
                states += 1;
                accesses += ok + wrong.len();
                ctx.info(format_args!(
                    "{state}: {} {:#x}: {ok} of {} accesses as expected",
                    t.device,
                    t.id_addr(),
                    ok + wrong.len()
                ));
                bad.extend(
                    wrong
                        .into_iter()
                        .map(|w| format!("{state} ({}): {w}", t.device)),
                );
            }
            Err(e) => bad.push(e),
        }
    }
    if bad.is_empty() && states == 0 {
        Outcome::skip("no probe target: no page state could be tried")
    } else if bad.is_empty() {
        Outcome::pass(format_args!(
            "{accesses} accesses on {states} page states as profile {} says",
            ctx.hv.profile
        ))
    } else {
        Outcome::fail(bad.join("; "))
    }
}
