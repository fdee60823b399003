//! Hypervisor discovery (pkvm-abi.md §7): who is below us and what it offers, in calls
//! only (no device access, no ENROLL), so it runs before the console exists.

use crate::fault::Fault;
use crate::hyp::abi::{self, feature};
use crate::hyp::profile::{self, Discovery, Features, Profile};

use super::conduit;
use super::mem_sharer::MemSharer;
use super::mmio_guard::{Generation, MmioGuard};
use super::{GuardState, GuardUnusable, Hypervisor, Reason};

/// Whether a granule the hypervisor reports is one the ABI allows.
pub fn granule_ok(g: u64) -> bool {
    g.is_power_of_two() && (0x1000..=0x10000).contains(&g)
}

/// The sharing granule where HYP_MEMINFO gave none the ABI allows.
const DEFAULT_SHARE_GRANULE: u64 = 0x1000;

fn x0(fid: u32, args: [u64; 3]) -> Option<u64> {
    conduit::call(fid, args).ok().map(|r| r[0])
}

/// A 32-bit answer that is not an SMCCC error.
fn version(v: u64) -> Option<u32> {
    Some(v as u32).filter(|v| (*v as i32) >= 0)
}

/// PSCI_VERSION, PSCI_FEATURES(SMCCC_VERSION) and SMCCC_VERSION, as far as each exists.
fn versions() -> (Option<u32>, Option<u64>, Option<u32>) {
    let psci = x0(abi::PSCI_VERSION, [0; 3]).and_then(version);
    if psci.is_none_or(|v| v >> 16 < 1) {
        return (psci, None, None);
    }
    let feature = x0(abi::PSCI_FEATURES, [u64::from(abi::SMCCC_VERSION), 0, 0]);
    let smccc = feature
        .filter(|f| *f as u32 as i32 != -1)
        .and_then(|_| x0(abi::SMCCC_VERSION, [0; 3]))
        .and_then(version);
    (psci, feature, smccc)
}

fn words(r: [u64; 4]) -> [u32; 4] {
    r.map(|w| w as u32)
}

/// CALL_UID, and KVM_FEATURES where the UID is KVM's.
fn identity() -> (Result<[u32; 4], Fault>, Discovery) {
    let uid = conduit::call(abi::VENDOR_HYP_CALL_UID, [0; 3]).map(words);
    let kvm_uid = uid == Ok(abi::KVM_UID);
    let features = kvm_uid
        .then(|| conduit::call(abi::KVM_FEATURES, [0; 3]).ok())
        .flatten()
        .filter(|r| r[0] as u32 as i32 != -1)
        .map(|r| Features(words(r)));
    (uid, Discovery { kvm_uid, features })
}

fn generation(p: Profile) -> Option<Generation> {
    match p {
        Profile::Android13 => Some(Generation::Android13),
        Profile::Android14 => Some(Generation::Android14),
        Profile::Android16 => Some(Generation::Android16),
        Profile::Upstream => Some(Generation::Upstream),
        Profile::None | Profile::Kvm | Profile::Pkvm => None,
    }
}

fn guard(p: Profile, meminfo: Option<u64>) -> GuardState {
    let Some(generation) = generation(p) else {
        return GuardState::Absent;
    };
    match meminfo {
        Some(g) if granule_ok(g) => GuardState::Usable {
            guard: MmioGuard::new(generation, g),
            enrolled: None,
        },
        Some(g) => GuardState::Unusable(GuardUnusable::BadGranule(g)),
        None => GuardState::Unusable(GuardUnusable::NoMeminfo),
    }
}

/// Asks the hypervisor who it is and what it offers; `forced` is `ioguard.profile=`.
pub fn discover(forced: Option<Profile>) -> Hypervisor {
    let (psci_version, smccc_version_feature, smccc_version) = versions();
    let (uid, discovery) = identity();
    let (detected, why) = profile::detect(&discovery);
    let (profile, reason) = match forced {
        Some(p) if p != detected => (
            p,
            Reason::Forced {
                forced: p,
                detected,
                why,
            },
        ),
        _ => (detected, Reason::Detected(why)),
    };
    let features = discovery.features.unwrap_or_default();
    let meminfo = features
        .has(feature::HYP_MEMINFO)
        .then(|| x0(abi::HYP_MEMINFO, [0; 3]))
        .flatten();
    let sharer = (discovery.kvm_uid
        && features.has(feature::MEM_SHARE)
        && features.has(feature::MEM_UNSHARE))
    .then(|| {
        MemSharer::new(
            meminfo
                .filter(|g| granule_ok(*g))
                .unwrap_or(DEFAULT_SHARE_GRANULE),
        )
    });
    Hypervisor {
        psci_version,
        smccc_version_feature,
        smccc_version,
        uid,
        discovery,
        profile,
        reason,
        meminfo,
        guard: guard(profile, meminfo),
        sharer,
    }
}
