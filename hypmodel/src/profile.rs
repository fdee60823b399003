//! What each profile offers a guest: SMCCC version, KVM_FEATURES bits, and which pKVM
//! functions it answers. The behaviour of each function lives in `vm.rs`.

use crate::abi::*;
use crate::options::Profile;

/// pKVM functions (numbers) each profile implements.
pub fn implements(p: Profile, func: u32) -> bool {
    match p {
        // RELINQUISH (9) is not modelled, so it is neither advertised nor answered.
        Profile::Android13 | Profile::Android14 => (2..=8).contains(&func),
        Profile::Android16 => (2..=8).contains(&func) || func == 10 || func == 11,
        // What upstream Linux's guest driver speaks: MEMINFO, SHARE, UNSHARE, and func 7.
        Profile::Upstream => matches!(func, 2 | 3 | 4 | 7),
        Profile::Kvm => false,
        // Measured on upstream pKVM 7.3 (pkvm-host.md): features 0x1d.
        Profile::Pkvm => matches!(func, 2..=4),
    }
}

/// VENDOR_HYP_KVM_FEATURES x0: bit 0 (the call itself) plus every implemented function.
pub fn kvm_features(p: Profile) -> u64 {
    (1u64 << FUNC_FEATURES)
        | (1..32)
            .filter(|&f| implements(p, f))
            .fold(0, |a, f| a | 1 << f)
}

pub fn smccc_version(p: Profile) -> u64 {
    match p {
        Profile::Android16 => 0x1_0002,
        _ => 0x1_0001,
    }
}

/// Whether MMIO guard decides about accesses at all (kvm and upstream pKVM have none).
pub fn has_guard(p: Profile) -> bool {
    !matches!(p, Profile::Kvm | Profile::Pkvm)
}

/// Upstream pKVM answers MEM_SHARE of an IPA that is not RAM (below the maximum IPA size)
/// with a data abort at the HVC instead of a return value (pkvm-host.md, measured).
pub fn share_of_non_ram_aborts(p: Profile) -> bool {
    p == Profile::Pkvm
}

/// The `upstream` profile behaves as an enrolled guest from the first instruction: no
/// upstream hypervisor implements func 7 yet, so this is a modelling assumption that
/// follows upstream's guest driver (it never enrolls, and its commit d44679fb954f says a
/// guest booted without pvmfw is simply not protected, i.e. pvmfw boots are enrolled).
pub fn enrolled_from_boot(p: Profile) -> bool {
    p == Profile::Upstream
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_bits() {
        assert_eq!(kvm_features(Profile::Android14), 0x1fd, "bits 0, 2..8");
        assert_eq!(kvm_features(Profile::Android13), 0x1fd);
        assert_eq!(kvm_features(Profile::Android16), 0xdfd, "plus 10, 11");
        assert_eq!(kvm_features(Profile::Upstream), 0x9d, "bits 0, 2, 3, 4, 7");
        assert_eq!(kvm_features(Profile::Kvm), 0x1);
        assert_eq!(
            kvm_features(Profile::Pkvm),
            0x1d,
            "as measured on upstream pKVM 7.3"
        );
        assert!(!has_guard(Profile::Pkvm) && share_of_non_ram_aborts(Profile::Pkvm));
        assert!(!share_of_non_ram_aborts(Profile::Android14));
        // The guest's profile recognition (DESIGN.md): bit 7 with 5, 6, 8 = android; bit 7
        // alone = upstream.
        let up = kvm_features(Profile::Upstream);
        assert!(up & (1 << 7) != 0 && up & (1 << 5 | 1 << 6 | 1 << 8) == 0);
    }

    #[test]
    fn versions_and_guard() {
        assert_eq!(smccc_version(Profile::Android14), 0x10001);
        assert_eq!(smccc_version(Profile::Android16), 0x10002);
        assert!(!has_guard(Profile::Kvm) && has_guard(Profile::Upstream));
        assert!(enrolled_from_boot(Profile::Upstream) && !enrolled_from_boot(Profile::Android14));
        assert!(!implements(Profile::Upstream, FUNC_MMIO_GUARD_ENROLL));
        assert!(!implements(Profile::Android14, FUNC_MMIO_RGUARD_MAP));
        assert!(implements(Profile::Android16, FUNC_MMIO_RGUARD_UNMAP));
    }
}
