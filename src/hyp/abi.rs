//! The SMCCC and pKVM function IDs and return codes ioguard calls, written from
//! the pKVM guest ABI (docs/DESIGN.md). hypmodel has its own copy on purpose: a wrong value
//! on one side is then caught by the other instead of being agreed on by both.

/// Arm architecture calls (owner 0, fast, SMC32).
pub const SMCCC_VERSION: u32 = 0x8000_0000;
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;

/// PSCI (owner 4).
pub const PSCI_VERSION: u32 = 0x8400_0000;
pub const PSCI_FEATURES: u32 = 0x8400_000a;
pub const PSCI_CPU_OFF: u32 = 0x8400_0002;
pub const PSCI_CPU_ON_64: u32 = 0xc400_0003;
pub const PSCI_AFFINITY_INFO_64: u32 = 0xc400_0004;
pub const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;

/// Vendor-specific hypervisor service (owner 6). CALL_UID and FEATURES are SMC32/HVC32.
pub const VENDOR_HYP_CALL_UID: u32 = 0x8600_ff01;
pub const KVM_FEATURES: u32 = 0x8600_0000;

/// The pKVM guest calls are HVC64 (0xC6000000 | function number).
pub const HYP_MEMINFO: u32 = 0xc600_0002;
pub const MEM_SHARE: u32 = 0xc600_0003;
pub const MEM_UNSHARE: u32 = 0xc600_0004;
pub const MMIO_GUARD_INFO: u32 = 0xc600_0005;
pub const MMIO_GUARD_ENROLL: u32 = 0xc600_0006;
pub const MMIO_GUARD_MAP: u32 = 0xc600_0007;
pub const MMIO_GUARD_UNMAP: u32 = 0xc600_0008;
pub const MEM_RELINQUISH: u32 = 0xc600_0009;
pub const MMIO_RGUARD_MAP: u32 = 0xc600_000a;
pub const MMIO_RGUARD_UNMAP: u32 = 0xc600_000b;

/// KVM_FEATURES bit numbers (the function numbers above).
pub mod feature {
    pub const FEATURES: u32 = 0;
    pub const HYP_MEMINFO: u32 = 2;
    pub const MEM_SHARE: u32 = 3;
    pub const MEM_UNSHARE: u32 = 4;
    pub const MMIO_GUARD_INFO: u32 = 5;
    pub const MMIO_GUARD_ENROLL: u32 = 6;
    pub const MMIO_GUARD_MAP: u32 = 7;
    pub const MMIO_GUARD_UNMAP: u32 = 8;
    pub const MEM_RELINQUISH: u32 = 9;
    pub const MMIO_RGUARD_MAP: u32 = 10;
    pub const MMIO_RGUARD_UNMAP: u32 = 11;
}

/// SMCCC return codes (as signed values; KVM writes them 64 bits wide).
pub const SUCCESS: i64 = 0;
pub const NOT_SUPPORTED: i64 = -1;
pub const INVALID_PARAMETER: i64 = -3;

/// KVM's vendor UID 28b46fb6-2ec5-11e9-a9ca-4b564d003a74 as CALL_UID returns it in
/// w0..w3 (byte 0 of the UUID in the low byte of w0).
pub const KVM_UID: [u32; 4] = [0xb66f_b428, 0xe911_c52e, 0x564b_caa9, 0x743a_004d];

/// KVM's vendor UID as the UUID string it stands for.
pub const KVM_UUID: &str = "28b46fb6-2ec5-11e9-a9ca-4b564d003a74";

/// Formats CALL_UID's w0..w3 as a UUID (byte 0 is the low byte of w0, SMCCC §7.2).
pub fn uuid(w: [u32; 4]) -> alloc::string::String {
    use core::fmt::Write;
    let mut b = [0u8; 16];
    for (chunk, word) in b.chunks_exact_mut(4).zip(w) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    let mut s = alloc::string::String::new();
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Whether CALL_UID's words form an RFC 4122 UUID, as SMCCC requires of a UID: the
/// variant bits (byte 8) are 10, and the version (high nibble of byte 6) is 1 to 5.
pub fn is_rfc4122(w: [u32; 4]) -> bool {
    let byte = |i: usize| (w[i / 4] >> ((i % 4) * 8)) as u8;
    byte(8) >> 6 == 0b10 && (1..=5).contains(&(byte(6) >> 4))
}

/// Whether `ret` is a status the ABI documents for call `fid` (pkvm-abi §3, §10.1):
/// ENROLL answers 0; MAP, the range calls and MEM_SHARE/UNSHARE 0 or -3; UNMAP 0 or -3,
/// or, where UNMAP is known to be inverted (android13), 0 or -1. Other calls: any.
pub fn documented_status(fid: u32, ret: Ret, inverted_unmap: bool) -> bool {
    use Ret::*;
    match fid {
        MMIO_GUARD_ENROLL => ret == Success,
        MMIO_GUARD_UNMAP if inverted_unmap => matches!(ret, Success | NotSupported),
        MMIO_GUARD_MAP | MMIO_GUARD_UNMAP | MMIO_RGUARD_MAP | MMIO_RGUARD_UNMAP | MEM_SHARE
        | MEM_UNSHARE => matches!(ret, Success | InvalidParameter),
        _ => true,
    }
}

/// Whether a range call over `count` granules that answered `ret` documents its progress
/// in `x1` as §10.1 says: on success 1..=count granules done (the caller resumes after
/// them), on an error at most `count`.
pub fn documented_progress(ret: Ret, x1: u64, count: u64) -> bool {
    match ret {
        Ret::Success => (1..=count).contains(&x1),
        _ => x1 <= count,
    }
}

/// A readable name for a function ID, for trace lines.
pub fn name(fid: u32) -> &'static str {
    match fid {
        SMCCC_VERSION => "SMCCC_VERSION",
        SMCCC_ARCH_FEATURES => "SMCCC_ARCH_FEATURES",
        PSCI_VERSION => "PSCI_VERSION",
        PSCI_FEATURES => "PSCI_FEATURES",
        PSCI_CPU_OFF => "PSCI_CPU_OFF",
        PSCI_CPU_ON_64 => "PSCI_CPU_ON",
        PSCI_AFFINITY_INFO_64 => "PSCI_AFFINITY_INFO",
        PSCI_SYSTEM_OFF => "PSCI_SYSTEM_OFF",
        VENDOR_HYP_CALL_UID => "VENDOR_HYP_CALL_UID",
        KVM_FEATURES => "KVM_FEATURES",
        HYP_MEMINFO => "HYP_MEMINFO",
        MEM_SHARE => "MEM_SHARE",
        MEM_UNSHARE => "MEM_UNSHARE",
        MMIO_GUARD_INFO => "MMIO_GUARD_INFO",
        MMIO_GUARD_ENROLL => "MMIO_GUARD_ENROLL",
        MMIO_GUARD_MAP => "MMIO_GUARD_MAP",
        MMIO_GUARD_UNMAP => "MMIO_GUARD_UNMAP",
        MEM_RELINQUISH => "MEM_RELINQUISH",
        MMIO_RGUARD_MAP => "MMIO_RGUARD_MAP",
        MMIO_RGUARD_UNMAP => "MMIO_RGUARD_UNMAP",
        _ => "?",
    }
}

/// How a return value reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Success,
    NotSupported,
    InvalidParameter,
    /// Any other value (a non-negative result where a status was expected, or an odd
    /// error code).
    Other(i64),
}

impl Ret {
    /// Reads x0 as the ABI says: a 64-bit signed status. `narrow` also accepts a status
    /// that was written 32 bits wide (android13's MMIO_GUARD_MAP returned
    /// 0x00000000fffffffd for -3), which is then reported as that status.
    pub fn decode(x0: u64, narrow: bool) -> Ret {
        let v = if narrow && x0 >> 32 == 0 {
            i64::from(x0 as u32 as i32)
        } else {
            x0 as i64
        };
        match v {
            SUCCESS => Ret::Success,
            NOT_SUPPORTED => Ret::NotSupported,
            INVALID_PARAMETER => Ret::InvalidParameter,
            other => Ret::Other(other),
        }
    }
}

impl core::fmt::Display for Ret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Ret::Success => write!(f, "SUCCESS"),
            Ret::NotSupported => write!(f, "NOT_SUPPORTED"),
            Ret::InvalidParameter => write!(f, "INVALID_PARAMETER"),
            Ret::Other(v) => write!(f, "{v:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_ids_have_the_documented_layout() {
        // Fast call, SMC64, owner 6 (vendor hypervisor), function number.
        for (fid, n) in [
            (HYP_MEMINFO, 2),
            (MEM_SHARE, 3),
            (MMIO_GUARD_MAP, 7),
            (MMIO_RGUARD_UNMAP, 11),
        ] {
            assert_eq!(fid >> 31, 1);
            assert_eq!((fid >> 30) & 1, 1, "{fid:#x} is SMC64");
            assert_eq!((fid >> 24) & 0x3f, 6);
            assert_eq!(fid & 0xffff, n);
        }
        // CALL_UID and FEATURES are SMC32 (0xC600FF01 would be wrong).
        assert_eq!((VENDOR_HYP_CALL_UID >> 30) & 1, 0);
        assert_eq!((KVM_FEATURES >> 30) & 1, 0);
        assert_eq!(VENDOR_HYP_CALL_UID & 0xffff, 0xff01);
    }

    #[test]
    fn return_codes() {
        assert_eq!(Ret::decode(0, false), Ret::Success);
        assert_eq!(Ret::decode(u64::MAX, false), Ret::NotSupported);
        assert_eq!(Ret::decode(-3i64 as u64, false), Ret::InvalidParameter);
        // A 32-bit -3 is not -3 unless the caller accepts narrow statuses.
        assert_eq!(Ret::decode(0xffff_fffd, false), Ret::Other(0xffff_fffd));
        assert_eq!(Ret::decode(0xffff_fffd, true), Ret::InvalidParameter);
        assert_eq!(Ret::decode(0x1000, true), Ret::Other(0x1000));
    }

    #[test]
    fn uuid_formats_the_words_bytewise() {
        assert_eq!(uuid(KVM_UID), KVM_UUID);
        assert_eq!(
            uuid([0x0302_0100, 0x0706_0504, 0x0b0a_0908, 0x0f0e_0d0c]),
            "00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
    }

    #[test]
    fn kvm_uid_is_a_well_formed_uuid() {
        assert!(is_rfc4122(KVM_UID));
        // A NOT_SUPPORTED answer, or words with a wrong variant, are not UUIDs.
        assert!(!is_rfc4122([u32::MAX; 4]));
        assert!(!is_rfc4122([0; 4]));
        let mut w = KVM_UID;
        w[2] &= !0xc0; // variant 00
        assert!(!is_rfc4122(w));
    }

    #[test]
    fn documented_answers() {
        use Ret::*;
        for fid in [MMIO_GUARD_MAP, MMIO_RGUARD_MAP, MEM_SHARE, MEM_UNSHARE] {
            assert!(documented_status(fid, Success, false));
            assert!(documented_status(fid, InvalidParameter, false));
            assert!(!documented_status(fid, NotSupported, false));
            assert!(!documented_status(fid, Other(1), false));
        }
        assert!(documented_status(MMIO_GUARD_ENROLL, Success, false));
        assert!(!documented_status(
            MMIO_GUARD_ENROLL,
            InvalidParameter,
            false
        ));
        assert!(documented_status(MMIO_GUARD_UNMAP, InvalidParameter, false));
        assert!(!documented_status(MMIO_GUARD_UNMAP, NotSupported, false));
        assert!(documented_status(MMIO_GUARD_UNMAP, NotSupported, true));
        assert!(!documented_status(MMIO_GUARD_UNMAP, InvalidParameter, true));
        assert!(documented_status(HYP_MEMINFO, Other(0x1000), false));
        assert!(documented_progress(Success, 3, 3) && documented_progress(Success, 1, 3));
        assert!(!documented_progress(Success, 0, 3) && !documented_progress(Success, 4, 3));
        assert!(documented_progress(InvalidParameter, 0, 3));
        assert!(!documented_progress(InvalidParameter, 4, 3));
    }

    #[test]
    fn kvm_uid_bytes() {
        // Byte 0 of 28b46fb6-... is 0x28, in the low byte of w0.
        assert_eq!(KVM_UID[0] & 0xff, 0x28);
        assert_eq!(KVM_UID[3] >> 24, 0x74);
    }

    #[test]
    fn names_of_the_calls_for_trace_lines() {
        for (fid, n) in [
            (SMCCC_VERSION, "SMCCC_VERSION"),
            (SMCCC_ARCH_FEATURES, "SMCCC_ARCH_FEATURES"),
            (PSCI_VERSION, "PSCI_VERSION"),
            (PSCI_FEATURES, "PSCI_FEATURES"),
            (PSCI_CPU_OFF, "PSCI_CPU_OFF"),
            (PSCI_CPU_ON_64, "PSCI_CPU_ON"),
            (PSCI_AFFINITY_INFO_64, "PSCI_AFFINITY_INFO"),
            (PSCI_SYSTEM_OFF, "PSCI_SYSTEM_OFF"),
            (VENDOR_HYP_CALL_UID, "VENDOR_HYP_CALL_UID"),
            (KVM_FEATURES, "KVM_FEATURES"),
            (HYP_MEMINFO, "HYP_MEMINFO"),
            (MEM_SHARE, "MEM_SHARE"),
            (MEM_UNSHARE, "MEM_UNSHARE"),
            (MMIO_GUARD_INFO, "MMIO_GUARD_INFO"),
            (MMIO_GUARD_ENROLL, "MMIO_GUARD_ENROLL"),
            (MMIO_GUARD_MAP, "MMIO_GUARD_MAP"),
            (MMIO_GUARD_UNMAP, "MMIO_GUARD_UNMAP"),
            (MEM_RELINQUISH, "MEM_RELINQUISH"),
            (MMIO_RGUARD_MAP, "MMIO_RGUARD_MAP"),
            (MMIO_RGUARD_UNMAP, "MMIO_RGUARD_UNMAP"),
            (0x8600_0042, "?"),
        ] {
            assert_eq!(name(fid), n);
        }
        let shown: alloc::vec::Vec<alloc::string::String> = [
            Ret::Success,
            Ret::NotSupported,
            Ret::InvalidParameter,
            Ret::Other(0x10),
        ]
        .iter()
        .map(|r| alloc::format!("{r}"))
        .collect();
        assert_eq!(
            shown,
            ["SUCCESS", "NOT_SUPPORTED", "INVALID_PARAMETER", "0x10"]
        );
    }

    #[test]
    fn the_uuid_version_is_read_from_byte_6() {
        // Version nibble 1 in byte 4, 0 in byte 6: not a UUID.
        let mut w = KVM_UID;
        w[1] = 0x0000_0010;
        assert!(!is_rfc4122(w));
    }
}
