//! `memshare:` checks: MEM_SHARE / MEM_UNSHARE of guest pages (CHECKS.md).

use super::{Ctx, Outcome};
use crate::hyp::abi::{self, Ret};
use crate::hyp::profile::Profile;
use crate::kernel::exceptions::Fault;
use crate::kernel::smccc;
use alloc::format;
use alloc::string::String;
use core::alloc::Layout;

/// The sharing granule (HYP_MEMINFO), or 4 KiB where it did not answer.
fn granule(ctx: &Ctx) -> u64 {
    ctx.hv
        .meminfo
        .filter(|g| crate::kernel::hypervisor::granule_ok(*g))
        .unwrap_or(0x1000)
}

fn need_sharing(ctx: &Ctx) -> Option<Outcome> {
    (!ctx.hv.mem_share()).then(|| {
        Outcome::Skip(format!(
            "MEM_SHARE/MEM_UNSHARE not advertised (profile {})",
            ctx.hv.profile
        ))
    })
}

/// A fresh private RAM page of one granule. It is never freed: a check that fails may leave
/// it shared, and shared memory must not go back to the heap.
fn private_page(ctx: &Ctx) -> Result<u64, Outcome> {
    let g = granule(ctx) as usize;
    let layout =
        Layout::from_size_align(g, g).map_err(|_| Outcome::Fail(format!("bad granule {g:#x}")))?;
    // SAFETY: a non-zero size, power-of-two aligned layout; the memory is only ever touched
    // through hypercalls and the volatile accesses below.
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return Err(Outcome::Fail(String::from("out of memory for a test page")));
    }
    Ok(p as u64)
}

fn share(ipa: u64, x2: u64, x3: u64) -> Result<Ret, Fault> {
    smccc::status(abi::MEM_SHARE, [ipa, x2, x3], false)
}

fn unshare(ipa: u64, x2: u64, x3: u64) -> Result<Ret, Fault> {
    smccc::status(abi::MEM_UNSHARE, [ipa, x2, x3], false)
}

fn show(r: &Result<Ret, Fault>) -> String {
    match r {
        Ok(r) => format!("{r}"),
        Err(f) => format!("an abort ({f})"),
    }
}

/// MEM_SHARE then MEM_UNSHARE of a private RAM page: 0, 0.
pub fn share_unshare(ctx: &Ctx) -> Outcome {
    if let Some(s) = need_sharing(ctx) {
        return s;
    }
    let page = need!(private_page(ctx));
    let s = share(page, 0, 0);
    let u = unshare(page, 0, 0);
    if s == Ok(Ret::Success) && u == Ok(Ret::Success) {
        Outcome::Pass(format!("page {page:#x}: share 0, unshare 0"))
    } else {
        Outcome::Fail(format!(
            "page {page:#x}: MEM_SHARE answered {}, MEM_UNSHARE {}",
            show(&s),
            show(&u)
        ))
    }
}

/// A second MEM_SHARE of the same page: -3.
pub fn share_twice(ctx: &Ctx) -> Outcome {
    if let Some(s) = need_sharing(ctx) {
        return s;
    }
    let page = need!(private_page(ctx));
    let first = share(page, 0, 0);
    let second = share(page, 0, 0);
    let _ = unshare(page, 0, 0);
    match (first, second) {
        (Ok(Ret::Success), Ok(Ret::InvalidParameter)) => {
            Outcome::Pass(format!("page {page:#x}: 0 then -3"))
        }
        (f, s) => Outcome::Fail(format!(
            "page {page:#x}: first MEM_SHARE {}, second {} (expected 0, then -3)",
            show(&f),
            show(&s)
        )),
    }
}

/// MEM_UNSHARE of a page never shared: -3.
pub fn unshare_private(ctx: &Ctx) -> Outcome {
    if let Some(s) = need_sharing(ctx) {
        return s;
    }
    let page = need!(private_page(ctx));
    match unshare(page, 0, 0) {
        Ok(Ret::InvalidParameter) => Outcome::Pass(format!("page {page:#x}: -3")),
        r => Outcome::Fail(format!(
            "MEM_UNSHARE of never-shared {page:#x} answered {}",
            show(&r)
        )),
    }
}

/// MEM_SHARE of a device page: -3 (upstream pKVM aborts at the HVC instead: KFAIL there).
pub fn share_mmio(ctx: &Ctx) -> Outcome {
    if let Some(s) = need_sharing(ctx) {
        return s;
    }
    let targets = crate::targets::targets(ctx.platform);
    let Some(t) = targets.first() else {
        return Outcome::Skip(String::from("no device page to try"));
    };
    let ipa = t.page();
    match share(ipa, 0, 0) {
        Ok(Ret::InvalidParameter) => Outcome::Pass(format!("{} page {ipa:#x}: -3", t.device)),
        Err(f) if ctx.hv.profile == Profile::Pkvm && f.esr.0 == crate::esr::PKVM_INJECTED_DABT => {
            Outcome::KFail(format!(
                "{} page {ipa:#x}: upstream pKVM answers with an abort at the HVC ({f})",
                t.device
            ))
        }
        r => {
            if r == Ok(Ret::Success) {
                let _ = unshare(ipa, 0, 0);
            }
            Outcome::Fail(format!(
                "MEM_SHARE of {} page {ipa:#x} answered {} (expected -3)",
                t.device,
                show(&r)
            ))
        }
    }
}

/// MEM_SHARE / MEM_UNSHARE of a misaligned IPA: -3, and nothing is shared.
pub fn misaligned(ctx: &Ctx) -> Outcome {
    if let Some(s) = need_sharing(ctx) {
        return s;
    }
    let page = need!(private_page(ctx));
    let s = share(page + 0x10, 0, 0);
    let u = unshare(page + 0x10, 0, 0);
    // Had the misaligned share shared the page, unsharing it properly would succeed.
    let proof = unshare(page, 0, 0);
    if s == Ok(Ret::InvalidParameter)
        && u == Ok(Ret::InvalidParameter)
        && proof == Ok(Ret::InvalidParameter)
    {
        Outcome::Pass(format!(
            "{:#x}: share -3, unshare -3, page not shared",
            page + 0x10
        ))
    } else {
        Outcome::Fail(format!(
            "{:#x}: MEM_SHARE {}, MEM_UNSHARE {}; aligned MEM_UNSHARE afterwards {} (expected -3, -3, -3)",
            page + 0x10,
            show(&s),
            show(&u),
            show(&proof)
        ))
    }
}

/// x2 or x3 non-zero: -3, nothing shared (android16 reads x2 as a page count).
pub fn reserved_args(ctx: &Ctx) -> Outcome {
    if let Some(s) = need_sharing(ctx) {
        return s;
    }
    let page = need!(private_page(ctx));
    let x3 = share(page, 0, 1);
    let x2 = smccc::call(abi::MEM_SHARE, [page, 1, 0]);
    let mut problems = String::new();
    if x3 != Ok(Ret::InvalidParameter) {
        problems += &format!("x3 = 1 answered {}; ", show(&x3));
    }
    if ctx.hv.profile == Profile::Android16 {
        // One page shared, x1 = 1 page done.
        match x2 {
            Ok(r) if r[0] == 0 && r[1] == 1 => {
                let _ = smccc::call(abi::MEM_UNSHARE, [page, 1, 0]);
            }
            Ok(r) => {
                problems += &format!(
                    "android16 x2 = 1 (one page) answered x0={:#x} x1={:#x}; ",
                    r[0], r[1]
                )
            }
            Err(f) => problems += &format!("x2 = 1 aborted: {f}; "),
        }
    } else {
        let r = x2.map(|r| Ret::decode(r[0], false));
        if r != Ok(Ret::InvalidParameter) {
            problems += &format!("x2 = 1 answered {}; ", show(&r));
        }
    }
    let proof = unshare(page, 0, 0);
    if proof != Ok(Ret::InvalidParameter) {
        problems += &format!(
            "the page was left shared (MEM_UNSHARE answered {})",
            show(&proof)
        );
    }
    if problems.is_empty() {
        Outcome::Pass(format!(
            "page {page:#x}: reserved arguments refused, nothing shared"
        ))
    } else {
        Outcome::Fail(String::from(problems.trim_end_matches("; ")))
    }
}
