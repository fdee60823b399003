//! `memshare:` checks: MEM_SHARE / MEM_UNSHARE of guest pages.

use super::pages::{all_targets, Answer};
use super::Ctx;
use crate::hyp::abi::{self, Ret};
use crate::hyp::profile::{KnownBug, Profile};
use crate::kernel::hyp::{conduit, MemSharer};
use crate::report::Outcome;
use alloc::format;
use alloc::string::String;
use core::alloc::Layout;

checks!("memshare":
    share_unshare,
    share_twice,
    unshare_private,
    share_mmio,
    misaligned,
    reserved_args,
);

/// Memory sharing, or the SKIP that replaces a check that needs it.
fn sharer<'a>(ctx: &Ctx<'a>) -> Result<&'static MemSharer, Outcome> {
    ctx.hv.mem_sharer().ok_or_else(|| {
        Outcome::skip(format_args!(
            "MEM_SHARE/MEM_UNSHARE not advertised (profile {})",
            ctx.hv.profile
        ))
    })
}

/// A fresh private RAM page of one granule. It is never freed: a check that fails may leave
/// it shared, and shared memory must not go back to the heap.
fn private_page(sharer: &MemSharer) -> Result<u64, Outcome> {
    let g = sharer.granule() as usize;
    let layout = Layout::from_size_align(g, g)
        .map_err(|_| Outcome::fail(format_args!("bad granule {g:#x}")))?;
    // SAFETY: a non-zero size, power-of-two aligned layout; the memory is only ever touched
    // through hypercalls.
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return Err(Outcome::fail("out of memory for a test page"));
    }
    Ok(p as u64)
}

/// MEM_SHARE then MEM_UNSHARE of a private RAM page: 0, 0.
pub fn share_unshare(ctx: &Ctx) -> Outcome {
    let sharer = need!(sharer(ctx));
    let page = need!(private_page(sharer));
    let s = sharer.share_call(page, 0, 0);
    let u = sharer.unshare_call(page, 0, 0);
    if s == Ok(Ret::Success) && u == Ok(Ret::Success) {
        Outcome::pass(format_args!("page {page:#x}: share 0, unshare 0"))
    } else {
        Outcome::fail(format_args!(
            "page {page:#x}: MEM_SHARE answered {}, MEM_UNSHARE {}",
            Answer(&s),
            Answer(&u)
        ))
    }
}

/// A second MEM_SHARE of the same page: -3.
pub fn share_twice(ctx: &Ctx) -> Outcome {
    let sharer = need!(sharer(ctx));
    let page = need!(private_page(sharer));
    let first = sharer.share_call(page, 0, 0);
    let second = sharer.share_call(page, 0, 0);
    let _ = sharer.unshare_call(page, 0, 0);
    match (first, second) {
        (Ok(Ret::Success), Ok(Ret::InvalidParameter)) => {
            Outcome::pass(format_args!("page {page:#x}: 0 then -3"))
        }
        (f, s) => Outcome::fail(format_args!(
            "page {page:#x}: first MEM_SHARE {}, second {} (expected 0, then -3)",
            Answer(&f),
            Answer(&s)
        )),
    }
}

/// MEM_UNSHARE of a page never shared: -3.
pub fn unshare_private(ctx: &Ctx) -> Outcome {
    let sharer = need!(sharer(ctx));
    let page = need!(private_page(sharer));
    match sharer.unshare_call(page, 0, 0) {
        Ok(Ret::InvalidParameter) => Outcome::pass(format_args!("page {page:#x}: -3")),
        r => Outcome::fail(format_args!(
            "MEM_UNSHARE of never-shared {page:#x} answered {}",
            Answer(&r)
        )),
    }
}

/// MEM_SHARE of a device page: -3; profile pkvm: KFAIL, upstream answers with an abort
/// at the HVC instead.
pub fn share_mmio(ctx: &Ctx) -> Outcome {
    let sharer = need!(sharer(ctx));
    let Some(t) = all_targets(ctx).first().copied() else {
        return Outcome::skip("no device page to try");
    };
    let ipa = t.page();
    let r = sharer.share_call(ipa, 0, 0);
    if r == Ok(Ret::Success) {
        let _ = sharer.unshare_call(ipa, 0, 0);
    }
    let aborted = matches!(r, Err(f) if f.esr.0 == crate::esr::PKVM_INJECTED_DABT);
    let known = ctx.hv.profile.has_bug(KnownBug::ShareMmioAborts) && aborted;
    let detail = match r {
        Ok(Ret::InvalidParameter) => format!("{} page {ipa:#x}: -3", t.device),
        Err(f) if known => format!(
            "{} page {ipa:#x}: upstream pKVM answers with an abort at the HVC ({f})",
            t.device
        ),
        r => format!(
            "MEM_SHARE of {} page {ipa:#x} answered {} (expected -3)",
            t.device,
            Answer(&r)
        ),
    };
    Outcome::kfail(known, r == Ok(Ret::InvalidParameter), detail)
}

/// MEM_SHARE / MEM_UNSHARE of a misaligned IPA: -3, and nothing is shared.
pub fn misaligned(ctx: &Ctx) -> Outcome {
    let sharer = need!(sharer(ctx));
    let page = need!(private_page(sharer));
    let s = sharer.share_call(page + 0x10, 0, 0);
    let u = sharer.unshare_call(page + 0x10, 0, 0);
    // Had the misaligned share shared the page, unsharing it properly would succeed.
    let proof = sharer.unshare_call(page, 0, 0);
    if s == Ok(Ret::InvalidParameter)
        && u == Ok(Ret::InvalidParameter)
        && proof == Ok(Ret::InvalidParameter)
    {
        Outcome::pass(format_args!(
            "{:#x}: share -3, unshare -3, page not shared",
            page + 0x10
        ))
    } else {
        Outcome::fail(format_args!(
            "{:#x}: MEM_SHARE {}, MEM_UNSHARE {}; aligned MEM_UNSHARE afterwards {} (expected -3, -3, -3)",
            page + 0x10,
            Answer(&s),
            Answer(&u),
            Answer(&proof)
        ))
    }
}

/// x2 or x3 non-zero: -3, nothing shared (android16 reads x2 as a page count).
pub fn reserved_args(ctx: &Ctx) -> Outcome {
    let sharer = need!(sharer(ctx));
    let page = need!(private_page(sharer));
    let x3 = sharer.share_call(page, 0, 1);
    let x2 = conduit::call(abi::MEM_SHARE, [page, 1, 0]);
    let mut problems = String::new();
    if x3 != Ok(Ret::InvalidParameter) {
        problems += &format!("x3 = 1 answered {}; ", Answer(&x3));
    }
    if ctx.hv.profile == Profile::Android16 {
        // One page shared, x1 = 1 page done.
        match x2 {
            Ok(r) if r[0] == 0 && r[1] == 1 => {
                let _ = conduit::call(abi::MEM_UNSHARE, [page, 1, 0]);
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
            problems += &format!("x2 = 1 answered {}; ", Answer(&r));
        }
    }
    let proof = sharer.unshare_call(page, 0, 0);
    if proof != Ok(Ret::InvalidParameter) {
        problems += &format!(
            "the page was left shared (MEM_UNSHARE answered {})",
            Answer(&proof)
        );
    }
    if problems.is_empty() {
        Outcome::pass(format_args!(
            "page {page:#x}: reserved arguments refused, nothing shared"
        ))
    } else {
        Outcome::fail(problems.trim_end_matches("; "))
    }
}
