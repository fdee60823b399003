//! ABI numbers, written from the pKVM guest ABI (docs/DESIGN.md) on this side only: the
//! guest has its own copy, so that a wrong value on one side is caught by the other.

// SMCCC architecture calls (fast, SMC32, owner 0).
pub const SMCCC_VERSION: u32 = 0x8000_0000;
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;

// Vendor-specific hypervisor service (owner 6).
pub const VENDOR_HYP_CALL_UID: u32 = 0x8600_FF01;
pub const VENDOR_HYP_KVM_FEATURES: u32 = 0x8600_0000;
/// Fast SMC32 vendor-hyp calls: 0x8600_0000 | func.
pub const VENDOR_HYP_SMC32_BASE: u32 = 0x8600_0000;
/// Fast SMC64 vendor-hyp calls (all pKVM memory and MMIO calls): 0xC600_0000 | func.
pub const VENDOR_HYP_SMC64_BASE: u32 = 0xC600_0000;

// pKVM function numbers (bits of KVM_FEATURES, low 16 bits of the function ID).
pub const FUNC_FEATURES: u32 = 0;
pub const FUNC_HYP_MEMINFO: u32 = 2;
pub const FUNC_MEM_SHARE: u32 = 3;
pub const FUNC_MEM_UNSHARE: u32 = 4;
pub const FUNC_MMIO_GUARD_INFO: u32 = 5;
pub const FUNC_MMIO_GUARD_ENROLL: u32 = 6;
pub const FUNC_MMIO_GUARD_MAP: u32 = 7;
pub const FUNC_MMIO_GUARD_UNMAP: u32 = 8;
pub const FUNC_MMIO_RGUARD_MAP: u32 = 10;
pub const FUNC_MMIO_RGUARD_UNMAP: u32 = 11;
/// The function number in a function ID (its low 16 bits).
pub const FUNC_MASK: u32 = 0xffff;
/// Owner and calling convention of a function ID (bit 30, SMC64, and the function number
/// cleared): the vendor-hyp calls of both widths are `VENDOR_HYP_SMC32_BASE` here.
pub const OWNER_MASK: u32 = 0xbfff_0000;

/// KVM's vendor-hyp UID 28b46fb6-2ec5-11e9-a9ca-4b564d003a74 as w0..w3.
pub const KVM_UID: [u32; 4] = [0xb66f_b428, 0xe911_c52e, 0x564b_caa9, 0x743a_004d];

// PSCI (standard service, owner 4). 64-bit forms are 0xC4.. for calls taking addresses.
pub const PSCI_VERSION: u32 = 0x8400_0000;
pub const PSCI_CPU_SUSPEND: u32 = 0x8400_0001;
pub const PSCI_CPU_OFF: u32 = 0x8400_0002;
pub const PSCI_CPU_ON: u32 = 0x8400_0003;
pub const PSCI_CPU_ON_64: u32 = 0xC400_0003;
pub const PSCI_AFFINITY_INFO: u32 = 0x8400_0004;
pub const PSCI_AFFINITY_INFO_64: u32 = 0xC400_0004;
pub const PSCI_MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
pub const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;
pub const PSCI_SYSTEM_RESET: u32 = 0x8400_0009;
pub const PSCI_FEATURES: u32 = 0x8400_000A;
/// Every PSCI function ID, either width: 0x8400_0000..=0x8400_001F, bit 30 ignored.
pub const PSCI_FID_MASK: u32 = 0xbfff_ffe0;
pub const PSCI_FID_BASE: u32 = 0x8400_0000;
/// MPIDR_EL1's affinity fields, Aff3 (bits 39:32) and Aff2..Aff0 (23:0): what names a CPU in
/// `/cpus` and in CPU_ON (the other bits are flags).
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

// Return codes (SMCCC and PSCI), as 64-bit values.
pub const SUCCESS: u64 = 0;
pub const NOT_SUPPORTED: u64 = -1i64 as u64;
pub const INVALID_PARAMETER: u64 = -3i64 as u64;
/// PSCI INVALID_PARAMETERS.
pub const PSCI_INVALID_PARAMETERS: u64 = -2i64 as u64;
pub const PSCI_ALREADY_ON: u64 = -4i64 as u64;
pub const PSCI_ON_PENDING: u64 = -5i64 as u64;
pub const PSCI_INVALID_ADDRESS: u64 = -9i64 as u64;
/// Android 13's MMIO_GUARD_MAP handed back a 32-bit error: -3 as a u32 in x0.
pub const INVALID_PARAMETER_32: u64 = 0xFFFF_FFFD;

// Exception syndromes.
pub const EC_UNKNOWN: u32 = 0x00;
pub const EC_HVC64: u32 = 0x16;
pub const EC_SMC64: u32 = 0x17;
pub const EC_SYSREG: u32 = 0x18;
pub const EC_IABT_LOW: u32 = 0x20;
pub const EC_IABT_CUR: u32 = 0x21;
pub const EC_DABT_LOW: u32 = 0x24;
pub const EC_DABT_CUR: u32 = 0x25;
/// DFSC of a synchronous external abort, what pKVM injects.
pub const DFSC_EXTABT: u32 = 0x10;
/// DFSC of a level-3 translation fault (the `wrong-dfsc` mutant's choice).
pub const DFSC_TRANSLATION_L3: u32 = 0x07;
pub const ESR_IL: u32 = 1 << 25;
/// ESR.EC, bits [31:26].
pub const ESR_EC_SHIFT: u32 = 26;
/// The abort pKVM injects for a refused access from EL1: EC 0x25, IL, DFSC 0x10.
pub const ESR_EL1_REFUSED: u32 = (EC_DABT_CUR << ESR_EC_SHIFT) | ESR_IL | DFSC_EXTABT;
const _: () = assert!(ESR_EL1_REFUSED == 0x9600_0010);
