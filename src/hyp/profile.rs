//! Hypervisor profiles (DESIGN.md): what a correct hypervisor of each ABI generation does,
//! how ioguard recognises it, and what each check must therefore expect.

use super::abi::{feature, Ret};
use core::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Not KVM (plain QEMU TCG, another hypervisor): no guard, control checks only.
    None,
    /// KVM without pKVM services (an ordinary VM, also under pKVM).
    Kvm,
    /// Upstream pKVM protected VM as it runs today: memory sharing, no guard.
    Pkvm,
    /// Android 13 pKVM: as android14 with its known bugs (32-bit MAP error, inverted UNMAP).
    Android13,
    /// Android 14 pKVM: INFO, ENROLL, MAP, UNMAP.
    Android14,
    /// Android 16 pKVM: plus range MAP/UNMAP; UNMAP is a no-op.
    Android16,
    /// The ABI upstream's guest driver speaks: MAP (func 7) only, no enroll, no unmap.
    Upstream,
}

pub const ALL: [Profile; 7] = [
    Profile::None,
    Profile::Kvm,
    Profile::Pkvm,
    Profile::Android13,
    Profile::Android14,
    Profile::Android16,
    Profile::Upstream,
];

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Kvm => "kvm",
            Self::Pkvm => "pkvm",
            Self::Android13 => "android13",
            Self::Android14 => "android14",
            Self::Android16 => "android16",
            Self::Upstream => "upstream",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ALL.into_iter().find(|p| p.name() == s)
    }

    /// MMIO_GUARD_MAP (func 7) is part of the ABI.
    pub fn has_guard(self) -> bool {
        matches!(
            self,
            Self::Android13 | Self::Android14 | Self::Android16 | Self::Upstream
        )
    }

    /// INFO, ENROLL and UNMAP exist (the Android generations).
    pub fn is_android(self) -> bool {
        matches!(self, Self::Android13 | Self::Android14 | Self::Android16)
    }

    pub fn has_enroll(self) -> bool {
        self.is_android()
    }

    pub fn has_unmap(self) -> bool {
        self.is_android()
    }

    /// UNMAP answers success but keeps the page forwarded (android16).
    pub fn unmap_is_noop(self) -> bool {
        self == Self::Android16
    }

    /// MMIO_RGUARD_MAP/UNMAP (func 10/11).
    pub fn has_range(self) -> bool {
        self == Self::Android16
    }

    /// android13's MAP returns its error 32 bits wide.
    pub fn map_error_is_narrow(self) -> bool {
        self == Self::Android13
    }

    /// android13's UNMAP returns NOT_SUPPORTED on success (b/277860860).
    pub fn unmap_inverted(self) -> bool {
        self == Self::Android13
    }
}

/// A deviation from the ABI that a profile is known to have: a check that meets it
/// reports KFAIL (visible, not a failure of the run), as kvm-unit-tests' `report_kfail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnownBug {
    /// android13's MMIO_GUARD_UNMAP answers NOT_SUPPORTED on success and SUCCESS on
    /// failure (b/277860860).
    UnmapInverted,
    /// Upstream pKVM answers MEM_SHARE of a device page with an abort injected at the HVC
    /// instead of INVALID_PARAMETER (pkvm-host.md).
    ShareMmioAborts,
}

/// What an access without a valid syndrome (`ldp`) to a registered device page must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoSyndrome {
    /// pKVM cannot emulate it: the injected abort, guard or not.
    Aborts,
    /// No hypervisor traps it: it reaches the device.
    Forwarded,
    /// An ordinary KVM VM: the VMM decides, and may stop the VM.
    VmmDecides,
}

impl Profile {
    /// Whether the profile is known to have `bug`.
    pub fn has_bug(self, bug: KnownBug) -> bool {
        match bug {
            KnownBug::UnmapInverted => self.unmap_inverted(),
            KnownBug::ShareMmioAborts => self == Self::Pkvm,
        }
    }

    /// UNMAP exists and takes effect: an unmapped page aborts again.
    pub fn unmap_takes_effect(self) -> bool {
        self.has_unmap() && !self.unmap_is_noop()
    }

    /// What UNMAP of a page never mapped answers (android16's UNMAP is a no-op).
    pub fn unmap_of_unmapped(self) -> Ret {
        if self.unmap_is_noop() {
            Ret::Success
        } else {
            Ret::InvalidParameter
        }
    }

    /// The KVM_FEATURES bits a hypervisor must advertise to be run as this profile.
    pub fn required_features(self) -> &'static [u32] {
        use feature::*;
        match self {
            Self::None | Self::Kvm => &[],
            Self::Pkvm => &[HYP_MEMINFO, MEM_SHARE, MEM_UNSHARE],
            Self::Android13 | Self::Android14 => &[
                HYP_MEMINFO,
                MMIO_GUARD_INFO,
                MMIO_GUARD_ENROLL,
                MMIO_GUARD_MAP,
                MMIO_GUARD_UNMAP,
            ],
            Self::Android16 => &[
                HYP_MEMINFO,
                MMIO_GUARD_INFO,
                MMIO_GUARD_ENROLL,
                MMIO_GUARD_MAP,
                MMIO_GUARD_UNMAP,
                MMIO_RGUARD_MAP,
                MMIO_RGUARD_UNMAP,
            ],
            Self::Upstream => &[HYP_MEMINFO, MMIO_GUARD_MAP],
        }
    }

    /// What an `ldp` on a registered device page must do.
    pub fn no_syndrome(self) -> NoSyndrome {
        match self {
            Self::Kvm => NoSyndrome::VmmDecides,
            Self::None => NoSyndrome::Forwarded,
            _ => NoSyndrome::Aborts,
        }
    }

    /// The names of every profile, for error messages.
    pub fn known_names() -> impl Iterator<Item = &'static str> {
        ALL.into_iter().map(Self::name)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The 128-bit KVM_FEATURES bitmap (x0..x3, 32 bits each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features(pub [u32; 4]);

impl Features {
    pub fn has(&self, bit: u32) -> bool {
        bit < 128 && self.0[(bit / 32) as usize] & (1 << (bit % 32)) != 0
    }

    /// The function numbers set, for the INFO line.
    pub fn bits(&self) -> impl Iterator<Item = u32> + '_ {
        (0..128).filter(|b| self.has(*b))
    }
}

/// What discovery found, in the order pkvm-abi.md §7 asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// CALL_UID answered KVM's UID.
    pub kvm_uid: bool,
    /// KVM_FEATURES, when the UID is KVM's and the call succeeded.
    pub features: Option<Features>,
}

/// The profile a hypervisor's answers point to, and why.
pub fn detect(d: &Discovery) -> (Profile, &'static str) {
    if !d.kvm_uid {
        return (Profile::None, "vendor UID is not KVM's");
    }
    let Some(f) = d.features else {
        return (Profile::Kvm, "KVM UID, KVM_FEATURES unanswered");
    };
    let android = [
        feature::MMIO_GUARD_INFO,
        feature::MMIO_GUARD_ENROLL,
        feature::MMIO_GUARD_MAP,
        feature::MMIO_GUARD_UNMAP,
    ];
    if android.iter().all(|b| f.has(*b)) {
        if f.has(feature::MMIO_RGUARD_MAP) && f.has(feature::MMIO_RGUARD_UNMAP) {
            return (
                Profile::Android16,
                "KVM UID, features 5-8 and 10-11 (range guard calls)",
            );
        }
        return (
            Profile::Android14,
            "KVM UID, features 5-8 (INFO, ENROLL, MAP, UNMAP)",
        );
    }
    if f.has(feature::MMIO_GUARD_MAP) {
        return (Profile::Upstream, "KVM UID, feature 7 without 5, 6, 8");
    }
    let sharing = [
        feature::HYP_MEMINFO,
        feature::MEM_SHARE,
        feature::MEM_UNSHARE,
    ];
    if sharing.iter().all(|b| f.has(*b)) {
        return (
            Profile::Pkvm,
            "KVM UID, features 2-4 (memory sharing) without the guard",
        );
    }
    (Profile::Kvm, "KVM UID, no pKVM features")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kvm(bits: &[u32]) -> Discovery {
        let mut f = [0u32; 4];
        for b in bits {
            f[(*b / 32) as usize] |= 1 << (b % 32);
        }
        Discovery {
            kvm_uid: true,
            features: Some(Features(f)),
        }
    }

    #[test]
    fn detection_follows_the_feature_bits() {
        assert_eq!(
            detect(&Discovery {
                kvm_uid: false,
                features: None
            })
            .0,
            Profile::None
        );
        assert_eq!(
            detect(&Discovery {
                kvm_uid: true,
                features: None
            })
            .0,
            Profile::Kvm
        );
        // An ordinary VM under pKVM: bits 0, 1 (measured: 0x3).
        assert_eq!(detect(&kvm(&[0, 1])).0, Profile::Kvm);
        // Upstream pKVM protected VM: 0x1d (measured).
        assert_eq!(detect(&kvm(&[0, 2, 3, 4])).0, Profile::Pkvm);
        assert_eq!(
            detect(&kvm(&[0, 2, 3, 4, 5, 6, 7, 8, 9])).0,
            Profile::Android14
        );
        assert_eq!(
            detect(&kvm(&[0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])).0,
            Profile::Android16
        );
        assert_eq!(detect(&kvm(&[0, 2, 3, 4, 7])).0, Profile::Upstream);
        // One range call without the other is not android16.
        assert_eq!(detect(&kvm(&[0, 5, 6, 7, 8, 10])).0, Profile::Android14);
    }

    #[test]
    fn features_span_four_registers() {
        let f = Features([1, 0, 1 << 3, 1 << 31]);
        assert!(f.has(0) && f.has(67) && f.has(127));
        assert!(!f.has(1) && !f.has(128));
        assert_eq!(f.bits().collect::<alloc::vec::Vec<_>>(), [0, 67, 127]);
    }

    #[test]
    fn names_round_trip() {
        for p in ALL {
            assert_eq!(Profile::parse(p.name()), Some(p));
        }
        assert_eq!(Profile::parse("android15"), None);
    }

    #[test]
    fn expectations() {
        assert!(!Profile::Pkvm.has_guard());
        assert!(
            Profile::Upstream.has_guard()
                && !Profile::Upstream.has_enroll()
                && !Profile::Upstream.has_unmap()
        );
        assert!(Profile::Android16.unmap_is_noop() && Profile::Android16.has_range());
        assert!(Profile::Android13.unmap_inverted() && Profile::Android13.map_error_is_narrow());
        assert!(!Profile::Android14.unmap_inverted());
    }

    #[test]
    fn expectations_as_data() {
        assert!(Profile::Android13.has_bug(KnownBug::UnmapInverted));
        assert!(!Profile::Android14.has_bug(KnownBug::UnmapInverted));
        assert!(Profile::Pkvm.has_bug(KnownBug::ShareMmioAborts));
        assert!(!Profile::Android16.has_bug(KnownBug::ShareMmioAborts));
        assert!(Profile::Android14.unmap_takes_effect());
        assert!(
            !Profile::Android16.unmap_takes_effect() && !Profile::Upstream.unmap_takes_effect()
        );
        assert_eq!(Profile::Android16.unmap_of_unmapped(), Ret::Success);
        assert_eq!(
            Profile::Android14.unmap_of_unmapped(),
            Ret::InvalidParameter
        );
        assert_eq!(Profile::Pkvm.required_features(), &[2, 3, 4]);
        assert_eq!(
            Profile::Android16.required_features(),
            &[2, 5, 6, 7, 8, 10, 11]
        );
        assert_eq!(Profile::Upstream.required_features(), &[2, 7]);
        assert_eq!(Profile::Kvm.no_syndrome(), NoSyndrome::VmmDecides);
        assert_eq!(Profile::None.no_syndrome(), NoSyndrome::Forwarded);
        assert_eq!(Profile::Pkvm.no_syndrome(), NoSyndrome::Aborts);
        // Each detected profile advertises what it requires.
        for (bits, p) in [
            (&[0, 2, 3, 4][..], Profile::Pkvm),
            (&[0, 2, 3, 4, 5, 6, 7, 8, 9][..], Profile::Android14),
            (&[0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11][..], Profile::Android16),
            (&[0, 2, 3, 4, 7][..], Profile::Upstream),
        ] {
            let d = kvm(bits);
            assert_eq!(detect(&d).0, p);
            let f = d.features.unwrap();
            assert!(p.required_features().iter().all(|b| f.has(*b)), "{p}");
        }
    }

    #[test]
    fn abi_facts_per_profile() {
        for p in ALL {
            let android = matches!(
                p,
                Profile::Android13 | Profile::Android14 | Profile::Android16
            );
            assert_eq!(p.has_enroll(), android, "{p}");
            assert_eq!(p.has_range(), p == Profile::Android16, "{p}");
            assert_eq!(p.map_error_is_narrow(), p == Profile::Android13, "{p}");
            assert_eq!(alloc::format!("{p}"), p.name());
        }
    }
}
