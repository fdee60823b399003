//! Hypervisor discovery (pkvm-abi.md §7) and the capabilities it offers: the MMIO guard
//! and memory sharing, each present or absent, so that an absent one turns its checks
//! into SKIP lines that say why.

use crate::hyp::abi::{self, feature, Ret};
use crate::hyp::profile::{self, Discovery, Features, Profile};
use alloc::format;
use alloc::string::String;
use spin::Once;

use super::exceptions::Fault;
use super::smccc;

/// What discovery saw, call by call, for the report and the checks.
#[derive(Clone, Debug)]
pub struct Hypervisor {
    pub psci_version: Option<u32>,
    /// PSCI_FEATURES(SMCCC_VERSION), when PSCI >= 1.0.
    pub smccc_version_feature: Option<u64>,
    pub smccc_version: Option<u32>,
    /// CALL_UID's w0..w3, or the fault it raised.
    pub uid: Result<[u32; 4], Fault>,
    pub discovery: Discovery,
    pub profile: Profile,
    pub detected: Profile,
    pub reason: String,
    /// HYP_MEMINFO's answer (x0) when feature 2 is advertised.
    pub meminfo: Option<u64>,
    /// The guard granule, when the profile has a guard and the hypervisor gave a usable one.
    pub granule: Option<u64>,
    /// Why the guard is unusable although the profile has one.
    pub guard_problem: Option<String>,
    /// ENROLL's answer at boot (android profiles).
    pub enroll: Option<Result<Ret, Fault>>,
}

impl Hypervisor {
    pub fn features(&self) -> Features {
        self.discovery.features.unwrap_or_default()
    }

    /// The guard, if the profile has one and it was set up.
    pub fn guard(&self) -> Option<u64> {
        if self.profile.has_guard() && self.guard_problem.is_none() {
            self.granule
        } else {
            None
        }
    }

    /// Memory sharing (MEM_SHARE and MEM_UNSHARE advertised).
    pub fn mem_share(&self) -> bool {
        let f = self.features();
        self.discovery.kvm_uid && f.has(feature::MEM_SHARE) && f.has(feature::MEM_UNSHARE)
    }

    pub fn name(&self) -> &'static str {
        if self.discovery.kvm_uid {
            "kvm"
        } else {
            match self.uid {
                Ok(w) if w[0] as i32 == -1 => "unknown",
                Ok(_) => "other",
                Err(_) => "none",
            }
        }
    }
}

static HYPERVISOR: Once<Hypervisor> = Once::new();

pub fn get() -> Option<&'static Hypervisor> {
    HYPERVISOR.get()
}

/// Whether a granule the hypervisor reports is one the ABI allows.
pub fn granule_ok(g: u64) -> bool {
    g.is_power_of_two() && (0x1000..=0x10000).contains(&g)
}

/// Asks the hypervisor who it is and what it offers; `forced` is `ioguard.profile=`.
/// Makes hypercalls only (no device access), so it runs before the console exists.
pub fn discover(forced: Option<Profile>) -> &'static Hypervisor {
    HYPERVISOR.call_once(|| {
        let x0 = |fid: u32, args: [u64; 3]| smccc::call(fid, args).ok().map(|r| r[0]);
        let psci_version = x0(abi::PSCI_VERSION, [0; 3])
            .map(|v| v as u32)
            .filter(|v| (*v as i32) >= 0);
        let mut smccc_version_feature = None;
        let mut smccc_version = None;
        if psci_version.is_some_and(|v| v >> 16 >= 1) {
            smccc_version_feature = x0(abi::PSCI_FEATURES, [u64::from(abi::SMCCC_VERSION), 0, 0]);
            if smccc_version_feature.is_some_and(|f| f as u32 as i32 != -1) {
                smccc_version = x0(abi::SMCCC_VERSION, [0; 3])
                    .map(|v| v as u32)
                    .filter(|v| (*v as i32) >= 0);
            }
        }
        let uid = smccc::call(abi::VENDOR_HYP_CALL_UID, [0; 3])
            .map(|r| [r[0] as u32, r[1] as u32, r[2] as u32, r[3] as u32]);
        let kvm_uid = uid == Ok(abi::KVM_UID);
        let features = if kvm_uid {
            smccc::call(abi::KVM_FEATURES, [0; 3])
                .ok()
                .filter(|r| r[0] as u32 as i32 != -1)
                .map(|r| Features([r[0] as u32, r[1] as u32, r[2] as u32, r[3] as u32]))
        } else {
            None
        };
        let discovery = Discovery { kvm_uid, features };
        let (detected, why) = profile::detect(&discovery);
        let (profile, reason) = match forced {
            Some(p) if p != detected => (
                p,
                format!("ioguard.profile={p} (detected {detected}: {why})"),
            ),
            _ => (detected, String::from(why)),
        };
        let meminfo = if features.is_some_and(|f| f.has(feature::HYP_MEMINFO)) {
            x0(abi::HYP_MEMINFO, [0; 3])
        } else {
            None
        };
        let mut hv = Hypervisor {
            psci_version,
            smccc_version_feature,
            smccc_version,
            uid,
            discovery,
            profile,
            detected,
            reason,
            meminfo,
            granule: None,
            guard_problem: None,
            enroll: None,
        };
        if profile.has_guard() {
            match meminfo {
                Some(g) if granule_ok(g) => hv.granule = Some(g),
                Some(g) => {
                    hv.guard_problem = Some(format!(
                        "HYP_MEMINFO gave {g:#x}, not a granule of 4..64 KiB"
                    ))
                }
                None => {
                    hv.guard_problem =
                        Some(String::from("HYP_MEMINFO not advertised or not answered"))
                }
            }
            if profile.has_enroll() && hv.guard_problem.is_none() {
                let r = smccc::status(abi::MMIO_GUARD_ENROLL, [0; 3], false);
                if r != Ok(Ret::Success) {
                    hv.guard_problem = Some(match &r {
                        Ok(ret) => format!("MMIO_GUARD_ENROLL answered {ret}"),
                        Err(f) => format!("MMIO_GUARD_ENROLL aborted: {f}"),
                    });
                }
                hv.enroll = Some(r);
            }
        }
        hv
    })
}
