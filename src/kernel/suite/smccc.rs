//! `smccc:` and `meminfo:` checks: discovery (CHECKS.md).

use super::{Ctx, Outcome};
use crate::hyp::abi::{self, feature, Ret};
use crate::hyp::profile::Profile;
use crate::kernel::smccc;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

fn version(v: u32) -> String {
    format!("{}.{}", v >> 16, v & 0xffff)
}

/// PSCI >= 1.0; SMCCC_VERSION >= 1.1 when PSCI_FEATURES reports it.
pub fn smccc_version(ctx: &Ctx) -> Outcome {
    let hv = ctx.hv;
    let Some(psci) = hv.psci_version else {
        return Outcome::Fail(String::from("PSCI_VERSION did not answer"));
    };
    if psci >> 16 < 1 {
        return Outcome::Fail(format!(
            "PSCI {} < 1.0: no PSCI_FEATURES, no SMCCC discovery",
            version(psci)
        ));
    }
    match (hv.smccc_version_feature, hv.smccc_version) {
        (Some(f), _) if f as u32 as i32 == -1 => Outcome::Pass(format!(
            "PSCI {}; SMCCC_VERSION not advertised by PSCI_FEATURES (SMCCC 1.0)",
            version(psci)
        )),
        (_, Some(v)) if v >= 0x1_0001 => {
            Outcome::Pass(format!("PSCI {}, SMCCC {}", version(psci), version(v)))
        }
        (_, Some(v)) => Outcome::Fail(format!(
            "PSCI_FEATURES advertises SMCCC_VERSION, which answers {v:#x} (< 1.1)"
        )),
        (_, None) => Outcome::Fail(String::from(
            "PSCI_FEATURES advertises SMCCC_VERSION, which did not answer",
        )),
    }
}

/// Formats CALL_UID's w0..w3 as a UUID (byte 0 is the low byte of w0).
pub fn uuid(w: [u32; 4]) -> String {
    let mut b = [0u8; 16];
    for (i, word) in w.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        hex[0..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..16].concat()
    )
}

/// The INFO line names the hypervisor; KVM's UID decodes to the documented UUID.
pub fn vendor_uid(ctx: &Ctx) -> Outcome {
    match ctx.hv.uid {
        Err(f) => Outcome::Pass(format!(
            "CALL_UID raised {}: no vendor hypervisor service",
            f.esr
        )),
        Ok(w) if w[0] as i32 == -1 => Outcome::Pass(String::from(
            "CALL_UID answered NOT_SUPPORTED: no vendor hypervisor service",
        )),
        Ok(w) => {
            let u = uuid(w);
            ctx.info(format_args!("vendor UID {u}"));
            if ctx.hv.discovery.kvm_uid {
                if u == "28b46fb6-2ec5-11e9-a9ca-4b564d003a74" {
                    Outcome::Pass(format!("KVM ({u})"))
                } else {
                    Outcome::Fail(format!("KVM's UID words decode to {u}"))
                }
            } else {
                Outcome::Pass(format!("not KVM: {u}"))
            }
        }
    }
}

/// Calls a pKVM function harmlessly (arguments every hypervisor must refuse, or a query)
/// and returns its answer.
fn poke(fid: u32, ctx: &Ctx) -> Result<Ret, String> {
    let ram = ctx.platform.memory[0].base;
    let args = match fid {
        abi::HYP_MEMINFO | abi::MMIO_GUARD_INFO | abi::MMIO_GUARD_ENROLL => [0, 0, 0],
        // A misaligned RAM address: refused by every correct hypervisor, harmless to a
        // buggy one (RAM is never forwarded).
        _ => [ram + 0x10, 0, 0],
    };
    smccc::call(fid, args)
        .map(|r| Ret::decode(r[0], true))
        .map_err(|f| format!("aborted: {f}"))
}

/// Bit 0 set; every advertised pKVM call answers something other than NOT_SUPPORTED.
pub fn kvm_features(ctx: &Ctx) -> Outcome {
    let hv = ctx.hv;
    let Some(f) = hv.discovery.features else {
        return Outcome::Skip(format!(
            "not KVM ({}), or KVM_FEATURES unanswered",
            hv.name()
        ));
    };
    let bits: Vec<String> = f.bits().map(|b| format!("{b}")).collect();
    ctx.info(format_args!("KVM_FEATURES bits {}", bits.join(",")));
    if !f.has(feature::FEATURES) {
        return Outcome::Fail(String::from("bit 0 (KVM_FEATURES itself) is clear"));
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
        Outcome::Pass(format!(
            "bits {}; {tried} advertised pKVM calls answer",
            bits.join(",")
        ))
    } else {
        Outcome::Fail(bad.join("; "))
    }
}

/// The profile is detected with its reason, an override is honoured, and the hypervisor
/// advertises what the profile needs.
pub fn profile(ctx: &Ctx) -> Outcome {
    let hv = ctx.hv;
    if let Some(forced) = ctx.opts.profile.as_deref() {
        if hv.profile.name() != forced {
            return Outcome::Fail(format!(
                "ioguard.profile={forced} but running as {}",
                hv.profile
            ));
        }
    }
    let f = hv.features();
    let needs: &[u32] = match hv.profile {
        Profile::None | Profile::Kvm => &[],
        Profile::Pkvm => &[2, 3, 4],
        Profile::Android13 | Profile::Android14 => &[2, 5, 6, 7, 8],
        Profile::Android16 => &[2, 5, 6, 7, 8, 10, 11],
        Profile::Upstream => &[2, 7],
    };
    let missing: Vec<String> = needs
        .iter()
        .filter(|b| !f.has(**b))
        .map(|b| format!("{b}"))
        .collect();
    if !missing.is_empty() {
        return Outcome::Fail(format!(
            "profile {} needs KVM_FEATURES bits {} the hypervisor does not advertise",
            hv.profile,
            missing.join(",")
        ));
    }
    Outcome::Pass(format!("{}: {}", hv.profile, hv.reason))
}

/// HYP_MEMINFO: a power of two, 4 KiB..64 KiB; any non-zero x1..x3 gives -3.
pub fn meminfo_granule(ctx: &Ctx) -> Outcome {
    if !ctx.hv.features().has(feature::HYP_MEMINFO) {
        return Outcome::Skip(format!(
            "HYP_MEMINFO not advertised (profile {})",
            ctx.hv.profile
        ));
    }
    let g = match smccc::call(abi::HYP_MEMINFO, [0; 3]) {
        Ok(r) => r[0],
        Err(f) => return Outcome::Fail(format!("HYP_MEMINFO aborted: {f}")),
    };
    if !crate::kernel::hypervisor::granule_ok(g) {
        return Outcome::Fail(format!(
            "granule {g:#x} is not a power of two in 4 KiB..64 KiB"
        ));
    }
    let mut bad = Vec::new();
    for (i, args) in [[1, 0, 0], [0, 1, 0], [0, 0, 1]].into_iter().enumerate() {
        match smccc::status(abi::HYP_MEMINFO, args, false) {
            Ok(Ret::InvalidParameter) => {}
            Ok(r) => bad.push(format!("x{} = 1 answered {r}", i + 1)),
            Err(f) => bad.push(format!("x{} = 1 aborted: {f}", i + 1)),
        }
    }
    if bad.is_empty() {
        Outcome::Pass(format!(
            "granule {g:#x}; reserved arguments refused with -3"
        ))
    } else {
        Outcome::Fail(bad.join("; "))
    }
}
