//! `meminfo:` checks: HYP_MEMINFO.

use super::Ctx;
use crate::hyp::abi::{self, feature, Ret};
use crate::kernel::hyp::{conduit, discovery};
use crate::report::Outcome;
use alloc::format;
use alloc::vec::Vec;

checks!("meminfo": granule);

/// Power of two, 4 KiB..64 KiB; non-zero x1..x3 gives -3.
pub fn granule(ctx: &Ctx) -> Outcome {
    if !ctx.hv.features().has(feature::HYP_MEMINFO) {
        return Outcome::skip(format_args!(
            "HYP_MEMINFO not advertised (profile {})",
            ctx.hv.profile
        ));
    }
    let g = match conduit::call(abi::HYP_MEMINFO, [0; 3]) {
        Ok(r) => r[0],
        Err(f) => return Outcome::fail(format_args!("HYP_MEMINFO aborted: {f}")),
    };
    if !discovery::granule_ok(g) {
        return Outcome::fail(format_args!(
            "granule {g:#x} is not a power of two in 4 KiB..64 KiB"
        ));
    }
    let mut bad = Vec::new();
    for (i, args) in [[1, 0, 0], [0, 1, 0], [0, 0, 1]].into_iter().enumerate() {
        match conduit::status(abi::HYP_MEMINFO, args, false) {
            Ok(Ret::InvalidParameter) => {}
            Ok(r) => bad.push(format!("x{} = 1 answered {r}", i + 1)),
            Err(f) => bad.push(format!("x{} = 1 aborted: {f}", i + 1)),
        }
    }
    if bad.is_empty() {
        Outcome::pass(format_args!(
            "granule {g:#x}; reserved arguments refused with -3"
        ))
    } else {
        Outcome::fail(bad.join("; "))
    }
}
