//! `smccc:` checks: discovery.

use super::Ctx;
use crate::hyp::abi::{self, feature, Ret};
use crate::kernel::hyp::conduit;
use crate::report::Outcome;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

checks!("smccc": version, vendor_uid, kvm_features, profile);

fn dotted(v: u32) -> String {
    format!("{}.{}", v >> 16, v & 0xffff)
}

/// PSCI >= 1.0; SMCCC_VERSION >= 1.1 when PSCI_FEATURES reports it.
pub fn version(ctx: &Ctx) -> Outcome {
    let hv = ctx.hv;
    let Some(psci) = hv.psci_version else {
        return Outcome::fail("PSCI_VERSION did not answer");
    };
    if psci >> 16 < 1 {
        return Outcome::fail(format_args!(
            "PSCI {} < 1.0: no PSCI_FEATURES, no SMCCC discovery",
            dotted(psci)
        ));
    }
    match (hv.smccc_version_feature, hv.smccc_version) {
        (Some(f), _) if f as u32 as i32 == -1 => Outcome::pass(format_args!(
            "PSCI {}; SMCCC_VERSION not advertised by PSCI_FEATURES (SMCCC 1.0)",
            dotted(psci)
        )),
        (_, Some(v)) if v >= 0x1_0001 => {
            Outcome::pass(format_args!("PSCI {}, SMCCC {}", dotted(psci), dotted(v)))
        }
        (_, Some(v)) => Outcome::fail(format_args!(
            "PSCI_FEATURES advertises SMCCC_VERSION, which answers {v:#x} (< 1.1)"
        )),
        (_, None) => Outcome::fail("PSCI_FEATURES advertises SMCCC_VERSION, which did not answer"),
    }
}

/// INFO line names the hypervisor; the UID is a well-formed UUID; KVM UID decoded
/// correctly.
pub fn vendor_uid(ctx: &Ctx) -> Outcome {
    match ctx.hv.uid {
        Err(f) => Outcome::pass(format_args!(
            "CALL_UID raised {}: no vendor hypervisor service",
            f.esr
        )),
        Ok(w) if w[0] as i32 == -1 => {
            Outcome::pass("CALL_UID answered NOT_SUPPORTED: no vendor hypervisor service")
        }
        Ok(w) => {
            let u = abi::uuid(w);
            ctx.info(format_args!("vendor UID {u}"));
            if !abi::is_rfc4122(w) {
                Outcome::fail(format_args!("CALL_UID answered {u}, not an RFC 4122 UUID"))
            } else if ctx.hv.discovery.kvm_uid {
                Outcome::pass(format_args!("KVM ({u})"))
            } else {
                Outcome::pass(format_args!("not KVM: {u}"))
            }
        }
    }
}

/// Calls a pKVM function harmlessly (arguments every hypervisor must refuse, or a query)
/// and returns its answer.
fn poke(fid: u32, ctx: &Ctx) -> Result<Ret, String> {
    let ram = ctx.platform.first_ram().map_or(0, |r| r.base);
    let args = match fid {
        abi::HYP_MEMINFO | abi::MMIO_GUARD_INFO | abi::MMIO_GUARD_ENROLL => [0, 0, 0],
        // A misaligned RAM address: refused by every correct hypervisor, harmless to a
        // buggy one (RAM is never forwarded).
        _ => [ram + 0x10, 0, 0],
    };
    conduit::call(fid, args)
        .map(|r| Ret::decode(r[0], true))
        .map_err(|f| format!("aborted: {f}"))
}

/// Bit 0 set; every advertised pKVM call answers something other than NOT_SUPPORTED.
pub fn kvm_features(ctx: &Ctx) -> Outcome {
    let hv = ctx.hv;
    let Some(f) = hv.discovery.features else {
        return Outcome::skip(format_args!(
            "not KVM ({}), or KVM_FEATURES unanswered",
            hv.name()
        ));
    };
    let bits: Vec<String> = f.bits().map(|b| format!("{b}")).collect();
    ctx.info(format_args!("KVM_FEATURES bits {}", bits.join(",")));
    if !f.has(feature::FEATURES) {
        return Outcome::fail("bit 0 (KVM_FEATURES itself) is clear");
    }
    let calls = [
        (feature::HYP_MEMINFO, abi::HYP_MEMINFO),
        (feature::MEM_SHARE, abi::MEM_SHARE),
        (feature::MEM_UNSHARE, abi::MEM_UNSHARE),
        (feature::MMIO_GUARD_INFO, abi::MMIO_GUARD_INFO),
        (feature::MMIO_GUARD_ENROLL, abi::MMIO_GUARD_ENROLL),
        (feature::MMIO_GUARD_MAP, abi::MMIO_GUARD_MAP),
        (feature::MMIO_GUARD_UNMAP, abi::MMIO_GUARD_UNMAP),
        (feature::MMIO_RGUARD_MAP, abi::MMIO_RGUARD_MAP),
        (feature::MMIO_RGUARD_UNMAP, abi::MMIO_RGUARD_UNMAP),
    ];
    let mut bad = Vec::new();
    let mut tried = 0;
    for (bit, fid) in calls {
        if !f.has(bit) {
            continue;
        }
        tried += 1;
        match poke(fid, ctx) {
            Ok(Ret::NotSupported) => bad.push(format!(
                "{} (bit {bit}) answers NOT_SUPPORTED",
                abi::name(fid)
            )),
            Ok(_) => {}
            Err(e) => bad.push(format!("{} (bit {bit}) {e}", abi::name(fid))),
        }
    }
    if bad.is_empty() {
        Outcome::pass(format_args!(
            "bits {}; {tried} advertised pKVM calls answer",
            bits.join(",")
        ))
    } else {
        Outcome::fail(bad.join("; "))
    }
}

/// INFO line: profile detected and why; the hypervisor advertises what the profile needs.
pub fn profile(ctx: &Ctx) -> Outcome {
    let hv = ctx.hv;
    let f = hv.features();
    let missing: Vec<String> = hv
        .profile
        .required_features()
        .iter()
        .filter(|b| !f.has(**b))
        .map(|b| format!("{b}"))
        .collect();
    if !missing.is_empty() {
        return Outcome::fail(format_args!(
            "profile {} needs KVM_FEATURES bits {} the hypervisor does not advertise",
            hv.profile,
            missing.join(",")
        ));
    }
    Outcome::pass(format_args!("{}: {}", hv.profile, hv.reason))
}
