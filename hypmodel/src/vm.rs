//! The VM as pKVM sees it: configuration, enrolment, guard registry, page share states,
//! vCPU power states, counters; the answer to every hypercall and the decision for every
//! trapped access. No registers here: the EL2 layer passes values in and carries out the
//! returned decision.

use crate::abi::*;
use crate::chaos::{self, CallChaos, Chaos};
use crate::dma::{Dma, DmaEnv, Notify};
use crate::guard::{GuardError, Registry};
use crate::layout::PAGE_SIZE;
use crate::memshare::{ShareError, ShareMap};
use crate::options::{Mutant, Options, Profile};
use crate::pci::{ConfigSpace, PciHost};
use crate::profile;
use crate::syndrome::{load_result, DataAbort};
use crate::virtq::{GuestView, WalkBugs};
use core::fmt::{self, Write};

pub const MAX_CPUS: usize = 8;
/// Identical injected aborts in a row (same ESR, FAR and PC, nothing else trapped on that
/// vCPU in between) after which the guest is looping and the run ends.
pub const REPEAT_LIMIT: u32 = 8;
pub const MAX_RAM_RANGES: usize = 8;
/// `granule-mismatch`: the granule hypmodel reports, and the page it really registers.
const MISMATCH_REPORTED: u64 = 16384;
const MISMATCH_PAGE: u64 = 4096;
/// `info-host-page`: what MMIO_GUARD_INFO reports (a 64 KiB host's PAGE_SIZE).
const HOST_PAGE: u64 = 65536;
/// `console-dropped`: forwarded console accesses after which its registration is lost.
pub const CONSOLE_DROP_AFTER: u64 = 1000;
/// ESR ISS bits of a data abort that describe the access: ISV, SAS, SSE, SRT, SF, AR.
const ISS_SYNDROME: u32 = 0x01ff_c000;
/// ESR ISS WnR (bit 6): the access was a write.
const ISS_WNR: u32 = 1 << 6;
/// `forward-wrong-page`: the IPA bit the emulation path gets wrong when it performs a
/// forwarded access (an IPA-to-PA slip of one 4 KiB page).
pub const WRONG_PAGE_BIT: u64 = 0x1000;

/// Physical memory as the device tree gave it, hypmodel's own part of it, the IPA size.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub ram: [(u64, u64); MAX_RAM_RANGES],
    pub nram: usize,
    pub hyp: (u64, u64),
    pub ipa_bits: u32,
    /// Page base of the console UART (its forwarded accesses are counted apart).
    pub console_page: u64,
}

fn overlaps(a: u64, len: u64, r: (u64, u64)) -> bool {
    a < r.0.saturating_add(r.1) && r.0 < a.saturating_add(len)
}

impl Layout {
    pub fn ram(&self) -> &[(u64, u64)] {
        &self.ram[..self.nram]
    }
    /// Does `[a, a + len)` touch any memory, guest RAM or hypmodel's?
    pub fn touches_memory(&self, a: u64, len: u64) -> bool {
        self.ram().iter().any(|&r| overlaps(a, len, r)) || overlaps(a, len, self.hyp)
    }
    pub fn touches_hyp(&self, a: u64, len: u64) -> bool {
        overlaps(a, len, self.hyp)
    }
    /// Is `[a, a + len)` entirely guest RAM?
    pub fn is_guest_ram(&self, a: u64, len: u64) -> bool {
        let Some(end) = a.checked_add(len) else {
            return false;
        };
        !self.touches_hyp(a, len) && self.ram().iter().any(|&(b, s)| a >= b && end <= b + s)
    }
    pub fn ipa_limit(&self) -> u64 {
        1u64 << self.ipa_bits
    }
    /// Is `ipa` on the console UART's page?
    pub fn on_console_page(&self, ipa: u64) -> bool {
        ipa & !(PAGE_SIZE - 1) == self.console_page
    }
}

/// Hypercalls by function, for the counters and the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    SmcccVersion,
    ArchFeatures,
    CallUid,
    KvmFeatures,
    HypMeminfo,
    MemShare,
    MemUnshare,
    GuardInfo,
    GuardEnroll,
    GuardMap,
    GuardUnmap,
    RguardMap,
    RguardUnmap,
    PsciVersion,
    PsciFeatures,
    PsciCpuOn,
    PsciCpuOff,
    PsciAffinityInfo,
    PsciSystemOff,
    PsciSystemReset,
    PsciOther,
    VendorOther,
    Unknown,
}

pub const NCALLS: usize = 23;

impl Call {
    pub const ALL: [Call; NCALLS] = [
        Call::SmcccVersion,
        Call::ArchFeatures,
        Call::CallUid,
        Call::KvmFeatures,
        Call::HypMeminfo,
        Call::MemShare,
        Call::MemUnshare,
        Call::GuardInfo,
        Call::GuardEnroll,
        Call::GuardMap,
        Call::GuardUnmap,
        Call::RguardMap,
        Call::RguardUnmap,
        Call::PsciVersion,
        Call::PsciFeatures,
        Call::PsciCpuOn,
        Call::PsciCpuOff,
        Call::PsciAffinityInfo,
        Call::PsciSystemOff,
        Call::PsciSystemReset,
        Call::PsciOther,
        Call::VendorOther,
        Call::Unknown,
    ];

    pub fn of(fid: u32) -> Call {
        match fid {
            SMCCC_VERSION => Call::SmcccVersion,
            SMCCC_ARCH_FEATURES => Call::ArchFeatures,
            VENDOR_HYP_CALL_UID => Call::CallUid,
            VENDOR_HYP_KVM_FEATURES => Call::KvmFeatures,
            PSCI_VERSION => Call::PsciVersion,
            PSCI_FEATURES => Call::PsciFeatures,
            PSCI_CPU_ON | PSCI_CPU_ON_64 => Call::PsciCpuOn,
            PSCI_CPU_OFF => Call::PsciCpuOff,
            PSCI_AFFINITY_INFO | PSCI_AFFINITY_INFO_64 => Call::PsciAffinityInfo,
            PSCI_SYSTEM_OFF => Call::PsciSystemOff,
            PSCI_SYSTEM_RESET => Call::PsciSystemReset,
            f if f & PSCI_FID_MASK == PSCI_FID_BASE => Call::PsciOther,
            f if f & !FUNC_MASK == VENDOR_HYP_SMC64_BASE => match f & FUNC_MASK {
                FUNC_HYP_MEMINFO => Call::HypMeminfo,
                FUNC_MEM_SHARE => Call::MemShare,
                FUNC_MEM_UNSHARE => Call::MemUnshare,
                FUNC_MMIO_GUARD_INFO => Call::GuardInfo,
                FUNC_MMIO_GUARD_ENROLL => Call::GuardEnroll,
                FUNC_MMIO_GUARD_MAP => Call::GuardMap,
                FUNC_MMIO_GUARD_UNMAP => Call::GuardUnmap,
                FUNC_MMIO_RGUARD_MAP => Call::RguardMap,
                FUNC_MMIO_RGUARD_UNMAP => Call::RguardUnmap,
                _ => Call::VendorOther,
            },
            f if f & OWNER_MASK == VENDOR_HYP_SMC32_BASE => Call::VendorOther,
            _ => Call::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Call::SmcccVersion => "SMCCC_VERSION",
            Call::ArchFeatures => "SMCCC_ARCH_FEATURES",
            Call::CallUid => "VENDOR_HYP_CALL_UID",
            Call::KvmFeatures => "VENDOR_HYP_KVM_FEATURES",
            Call::HypMeminfo => "HYP_MEMINFO",
            Call::MemShare => "MEM_SHARE",
            Call::MemUnshare => "MEM_UNSHARE",
            Call::GuardInfo => "MMIO_GUARD_INFO",
            Call::GuardEnroll => "MMIO_GUARD_ENROLL",
            Call::GuardMap => "MMIO_GUARD_MAP",
            Call::GuardUnmap => "MMIO_GUARD_UNMAP",
            Call::RguardMap => "MMIO_RGUARD_MAP",
            Call::RguardUnmap => "MMIO_RGUARD_UNMAP",
            Call::PsciVersion => "PSCI_VERSION",
            Call::PsciFeatures => "PSCI_FEATURES",
            Call::PsciCpuOn => "PSCI_CPU_ON",
            Call::PsciCpuOff => "PSCI_CPU_OFF",
            Call::PsciAffinityInfo => "PSCI_AFFINITY_INFO",
            Call::PsciSystemOff => "PSCI_SYSTEM_OFF",
            Call::PsciSystemReset => "PSCI_SYSTEM_RESET",
            Call::PsciOther => "PSCI_OTHER",
            Call::VendorOther => "VENDOR_HYP_OTHER",
            Call::Unknown => "UNKNOWN",
        }
    }

    fn index(self) -> usize {
        Call::ALL
            .iter()
            .position(|&c| c == self)
            .unwrap_or(NCALLS - 1)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub calls: [u64; NCALLS],
    /// Accesses the guard let through and hypmodel performed.
    pub forwarded: u64,
    /// Of those, to the console UART's page.
    pub console: u64,
    /// Of those, the ones the bus answered with an abort (passed on to the guest).
    pub bus_errors: u64,
    /// Accesses refused with an injected abort (all reasons).
    pub refused: u64,
    /// Of those, without a valid syndrome.
    pub no_syndrome: u64,
    /// Of those, to hypmodel's own memory.
    pub refused_hypmem: u64,
    /// Stray accesses skipped without an abort (`silent-drop`).
    pub dropped: u64,
    /// Accesses without syndrome emulated from the instruction (`no-syndrome-forward`).
    pub emulated: u64,
    /// Cache maintenance on a device page, skipped as KVM does.
    pub cm_skipped: u64,
    pub map_ok: u64,
    pub map_failed: u64,
    pub unmap_ok: u64,
    pub unmap_failed: u64,
    pub share_ok: u64,
    pub share_failed: u64,
    pub unshare_ok: u64,
    pub unshare_failed: u64,
    /// Other exceptions from the guest that hypmodel answered with an injected one.
    pub other_exceptions: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuPower {
    Off,
    Pending,
    On,
}

/// What the EL2 layer must do to finish a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hvc {
    /// Return x0..x3 to the guest.
    Ret([u64; 4]),
    /// Issue this PSCI call to QEMU (`smc` from EL2) and return its x0.
    Forward([u64; 4]),
    /// PSCI CPU_ON to QEMU for `mpidr` with hypmodel's secondary entry and context `idx`;
    /// then report the result with `cpu_on_result`.
    CpuOn {
        idx: usize,
        mpidr: u64,
    },
    /// PSCI CPU_OFF to QEMU.
    CpuOff,
    /// No return value: a synchronous external abort injected at the call instruction
    /// (ESR 0x96000010, FAR 0), as upstream pKVM answers MEM_SHARE of a device IPA.
    AbortAtCall,
    /// Print the counters, then SYSTEM_OFF / SYSTEM_RESET to QEMU.
    SystemOff,
    SystemReset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoSyndrome,
    Unregistered,
    HypMemory,
    NotTranslationFault,
    TableWalk,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::NoSyndrome => "no-syndrome",
            Refusal::Unregistered => "unregistered",
            Refusal::HypMemory => "hypmodel-memory",
            Refusal::NotTranslationFault => "not-a-translation-fault",
            Refusal::TableWalk => "stage-1-walk",
        }
    }
}

/// Why a MAP (or one page of an RGUARD_MAP) is refused. The guest sees only the error code;
/// the reason is for whoever reads hypmodel's code or tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    NotEnrolled,
    Misaligned,
    BeyondIpa,
    /// Guest RAM or hypmodel's own memory.
    Memory,
    Registry(GuardError),
    /// `map-twice-einval`: the page is registered already.
    AlreadyMapped,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::NotEnrolled => f.write_str("not enrolled"),
            MapError::Misaligned => f.write_str("not aligned to the granule"),
            MapError::BeyondIpa => f.write_str("beyond the IPA size"),
            MapError::Memory => f.write_str("memory, not a device"),
            MapError::Registry(e) => write!(f, "{e}"),
            MapError::AlreadyMapped => f.write_str("already registered"),
        }
    }
}

/// How an injected abort differs from pKVM's beyond its DFSC and FAR (all zero in the
/// correct model, pkvm-abi.md section 3(b)): ESR bits added, how far ELR_EL1 is past the
/// access, what a refused load's destination register gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectQuirks {
    pub esr_bits: u32,
    pub elr_skip: u64,
    pub clobber: Option<u64>,
}

/// The decision for a trapped data access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Perform it at EL2 from the syndrome, write the result back, step over.
    Forward,
    /// `no-syndrome-forward`: decode the instruction and perform it.
    Emulate,
    /// Inject a synchronous data abort into EL1.
    Inject { dfsc: u32, far: u64, why: Refusal },
    /// `silent-drop`: step over; a load gives 0.
    Drop,
    /// Step over (cache maintenance by VA on a device page).
    Skip,
}

pub struct Vm {
    pub opts: Options,
    pub layout: Layout,
    pub enrolled: bool,
    pub guard: Registry,
    pub share: ShareMap,
    pub stats: Stats,
    pub cpus: [u64; MAX_CPUS],
    pub ncpus: usize,
    pub power: [CpuPower; MAX_CPUS],
    /// Guest entry and context for a vCPU being started.
    pub boot: [(u64, u64); MAX_CPUS],
    /// Per vCPU: the last abort injected (ESR, FAR, PC) and how often in a row.
    last_abort: [(u32, u64, u64, u32); MAX_CPUS],
    /// `hypmodel.chaos=SEED`: the random misbehaviour, if asked for.
    pub chaos: Option<Chaos>,
    /// Forwarded accesses to the console's page so far (`console-dropped`).
    console_seen: u64,
    /// `range-x1-overcount`: where the last range call stopped early (the IPA it would
    /// resume at) and the granules of that run so far.
    range_resume: Option<(u64, u64)>,
    /// The virtio transports and what their queues are told (`dma.rs`).
    pub dma: Dma,
}

/// Guest memory as the host sees it, for the DMA walk: `read` reads guest RAM (the EL2
/// layer's raw access, called only for ranges checked to be guest RAM), the share record
/// says which pages the host can reach.
struct HostView<'a> {
    share: &'a ShareMap,
    layout: &'a Layout,
    granule: u64,
    read: &'a dyn Fn(u64, &mut [u8]) -> bool,
}

/// The PCI host bridge's config space, for the scan: aligned words of its ECAM only.
struct EcamView<'a> {
    host: Option<PciHost>,
    read: &'a dyn Fn(u64) -> Option<u32>,
}

impl ConfigSpace for EcamView<'_> {
    fn read32(&self, addr: u64) -> Option<u32> {
        let h = self.host?;
        if !h.in_ecam(addr) || !h.in_ecam(addr + 3) || !addr.is_multiple_of(4) {
            return None;
        }
        (self.read)(addr)
    }
}

impl GuestView for HostView<'_> {
    fn read(&self, ipa: u64, buf: &mut [u8]) -> bool {
        self.layout.is_guest_ram(ipa, buf.len() as u64) && (self.read)(ipa, buf)
    }

    fn first_private(&self, ipa: u64, len: u64) -> Option<u64> {
        self.share
            .first_inaccessible(ipa, len)
            .map(|frame| frame & !(self.granule - 1))
    }
}

fn ret1(x0: u64) -> Hvc {
    Hvc::Ret([x0, 0, 0, 0])
}

/// Runs `op` on `n` consecutive pages from `start` until it fails (or the next address would
/// overflow); returns how many pages it did. The range calls (MEM_SHARE/UNSHARE on android16,
/// RGUARD_MAP) answer with that count, and fail only when it is 0.
fn for_pages(start: u64, n: u64, page: u64, mut op: impl FnMut(u64) -> bool) -> u64 {
    let mut done = 0u64;
    while done < n {
        let Some(ipa) = done.checked_mul(page).and_then(|o| start.checked_add(o)) else {
            break;
        };
        if !op(ipa) {
            break;
        }
        done += 1;
    }
    done
}

/// The pages a MEM_SHARE/UNSHARE asks for, or `None` for arguments that must be 0 and are
/// not: android16 takes a count in x2 (0 means 1) with x3 = 0, the others one page with
/// x2 = x3 = 0.
fn share_page_count(a16: bool, x: [u64; 4]) -> Option<u64> {
    if a16 {
        (x[3] == 0).then_some(x[2].max(1))
    } else {
        (x[2] | x[3] == 0).then_some(1)
    }
}

/// One granule of a MEM_SHARE (`share`) or MEM_UNSHARE; true when done. The memshare
/// mutants accept what pKVM refuses: a second share, a device page, a misaligned IPA
/// (aligned down, or for an unshare not at all), an unshare of a private page; one refuses
/// what pKVM accepts: the unshare of a shared page; one answers a share it never gives
/// the host.
fn share_page(
    map: &mut ShareMap,
    layout: &Layout,
    m: Option<Mutant>,
    share: bool,
    ipa: u64,
    page: u64,
) -> bool {
    let op = |map: &mut ShareMap, ipa: u64| {
        let ram = layout.is_guest_ram(ipa, page);
        if share && m == Some(Mutant::ShareIgnored) {
            // `share-ignored`: the guest's state says shared, the host never gets the page.
            map.share_state_only(ipa, page, ram)
        } else if share {
            map.share(ipa, page, ram)
        } else {
            map.unshare(ipa, page, ram)
        }
    };
    // `unshare-refused`: the shared page stays shared and the call fails.
    if !share && m == Some(Mutant::UnshareRefused) && map.is_shared(ipa) {
        return false;
    }
    match (op(map, ipa), m) {
        (Ok(()), _) => true,
        (Err(ShareError::AlreadyShared), Some(Mutant::ShareTwiceOk)) => true,
        (Err(ShareError::NotRam), Some(Mutant::ShareMmioOk)) => share,
        (Err(ShareError::NotShared), Some(Mutant::UnsharePrivateOk)) => !share,
        (Err(ShareError::Misaligned), Some(Mutant::ShareMisalignedOk)) => {
            op(map, ipa & !(page - 1)).is_ok()
        }
        // `unshare-misaligned-ok`: the unshare path's alignment check leaves its error
        // code at 0: nothing is unshared, and the call succeeds.
        (Err(ShareError::Misaligned), Some(Mutant::UnshareMisalignedOk)) => !share,
        (Err(_), _) => false,
    }
}

impl Vm {
    pub fn new(opts: Options, layout: Layout, share: ShareMap, cpus: &[u64]) -> Vm {
        let mut c = [u64::MAX; MAX_CPUS];
        let ncpus = cpus.len().min(MAX_CPUS);
        c[..ncpus].copy_from_slice(&cpus[..ncpus]);
        let mut power = [CpuPower::Off; MAX_CPUS];
        power[0] = CpuPower::On;
        Vm {
            enrolled: opts.enrolled_at_boot || profile::enrolled_from_boot(opts.profile),
            opts,
            layout,
            guard: Registry::new(),
            share,
            stats: Stats::default(),
            cpus: c,
            ncpus,
            power,
            boot: [(0, 0); MAX_CPUS],
            last_abort: [(0, 0, 0, 0); MAX_CPUS],
            chaos: opts.chaos.map(Chaos::new),
            console_seen: 0,
            range_resume: None,
            dma: Dma::new(),
        }
    }

    /// Does hypmodel judge DMA? Only where memory is private unless shared: under a
    /// profile with memory sharing (a protected VM).
    pub fn judges_dma(&self) -> bool {
        profile::implements(self.opts.profile, FUNC_MEM_SHARE)
    }

    /// A forwarded write to a device, before hypmodel performs it: a virtio register
    /// write is followed (`dma.rs`); a notify is walked, and `Some(n)` with `!n.forward()`
    /// means do not perform it. `read` reads guest RAM, `cfg` a 32-bit word of the PCI
    /// host bridge's ECAM (the EL2 layer's raw accesses; called only for guest RAM and for
    /// the ECAM).
    pub fn device_write(
        &mut self,
        ipa: u64,
        size: u8,
        value: u64,
        read: &dyn Fn(u64, &mut [u8]) -> bool,
        cfg: &dyn Fn(u64) -> Option<u32>,
    ) -> Option<Notify> {
        let view = HostView {
            share: &self.share,
            layout: &self.layout,
            granule: self.page(),
            read,
        };
        let ecam = EcamView {
            host: self.dma.pci_host().copied(),
            read: cfg,
        };
        let a = DmaEnv {
            judge: self.judges_dma(),
            view: &view,
            cfg: &ecam,
            bugs: WalkBugs {
                skips_last: self.mutant(Mutant::DmaPrivateThrough),
            },
        };
        self.dma.on_write(ipa, size, value, &a)
    }

    /// Follows the virtio-pci functions behind `h`: false (and not followed) if its ECAM
    /// overlaps memory, which hypmodel must never read as config space.
    pub fn set_pci_host(&mut self, h: PciHost) -> bool {
        if self.layout.touches_memory(h.ecam, h.ecam_size) {
            return false;
        }
        self.dma.set_pci_host(h);
        true
    }

    /// A forwarded read from a device, with what the bus answered.
    pub fn device_read(&mut self, ipa: u64, size: u8, value: u64) {
        self.dma.on_read(ipa, size, value);
    }

    /// Notifies hypmodel refused: the guest handed a device private memory (or a queue
    /// no device could follow). Any fails the run at power-off.
    pub fn dma_refused(&self) -> u64 {
        self.dma.refused()
    }

    /// hypmodel injects an abort (`esr`, `far`) into `cpu` at `pc`: true when it is the
    /// `REPEAT_LIMIT`-th identical one in a row, i.e. the guest will never get past it.
    pub fn injected(&mut self, cpu: usize, esr: u32, far: u64, pc: u64) -> bool {
        let Some(last) = self.last_abort.get_mut(cpu) else {
            return false;
        };
        if (last.0, last.1, last.2) == (esr, far, pc) {
            last.3 += 1;
        } else {
            *last = (esr, far, pc, 1);
        }
        last.3 >= REPEAT_LIMIT
    }

    /// `cpu` trapped for something else than an injected abort: it is not stuck.
    fn progressed(&mut self, cpu: usize) {
        if let Some(last) = self.last_abort.get_mut(cpu) {
            *last = (0, 0, 0, 0);
        }
    }

    fn mutant(&self, m: Mutant) -> bool {
        self.opts.mutant == Some(m)
    }

    /// The hypervisor's real page size: what one MAP registers and one share moves.
    pub fn page(&self) -> u64 {
        if self.mutant(Mutant::GranuleMismatch) {
            MISMATCH_PAGE
        } else {
            self.opts.granule
        }
    }

    /// What HYP_MEMINFO and MMIO_GUARD_INFO report.
    pub fn reported_granule(&self) -> u64 {
        if self.mutant(Mutant::GranuleMismatch) {
            MISMATCH_REPORTED
        } else {
            self.opts.granule
        }
    }

    fn per_cpu(&self) -> bool {
        self.mutant(Mutant::PerCpuGuard)
    }

    fn einval(&self) -> u64 {
        // Android 13's MAP used a u32 return value.
        if self.opts.profile == Profile::Android13 {
            INVALID_PARAMETER_32
        } else {
            INVALID_PARAMETER
        }
    }

    pub fn hvc(&mut self, cpu: usize, x: [u64; 4]) -> Hvc {
        self.progressed(cpu);
        let fid = x[0] as u32;
        let call = Call::of(fid);
        self.stats.calls[call.index()] += 1;
        let p = self.opts.profile;
        match call {
            Call::SmcccVersion => ret1(profile::smccc_version(p)),
            // As KVM: none of the queried functions (workarounds, TRNG, PV time) is offered.
            Call::ArchFeatures => ret1(NOT_SUPPORTED),
            Call::CallUid => Hvc::Ret(KVM_UID.map(u64::from)),
            Call::KvmFeatures => ret1(profile::kvm_features(p)),
            Call::VendorOther | Call::Unknown | Call::PsciOther => ret1(NOT_SUPPORTED),
            Call::PsciVersion | Call::PsciAffinityInfo => Hvc::Forward(x),
            Call::PsciFeatures => {
                let q = x[1] as u32;
                if q == SMCCC_VERSION {
                    ret1(SUCCESS)
                } else if matches!(
                    Call::of(q),
                    Call::PsciVersion
                        | Call::PsciFeatures
                        | Call::PsciCpuOn
                        | Call::PsciCpuOff
                        | Call::PsciAffinityInfo
                        | Call::PsciSystemOff
                        | Call::PsciSystemReset
                ) {
                    Hvc::Forward(x)
                } else {
                    ret1(NOT_SUPPORTED)
                }
            }
            Call::PsciCpuOn => self.cpu_on(fid, x),
            Call::PsciCpuOff => {
                if cpu < MAX_CPUS {
                    self.power[cpu] = CpuPower::Off;
                }
                Hvc::CpuOff
            }
            Call::PsciSystemOff => Hvc::SystemOff,
            Call::PsciSystemReset => Hvc::SystemReset,
            _ => {
                let func = fid & FUNC_MASK;
                if !profile::implements(p, func) {
                    return ret1(NOT_SUPPORTED);
                }
                let out = self.pkvm(cpu, call, x);
                self.garble(out)
            }
        }
    }

    fn cpu_on(&mut self, fid: u32, x: [u64; 4]) -> Hvc {
        let (mut target, mut entry, mut ctx) = (x[1], x[2], x[3]);
        if fid == PSCI_CPU_ON {
            (target, entry, ctx) = (target & 0xffff_ffff, entry & 0xffff_ffff, ctx & 0xffff_ffff);
        }
        let Some(idx) = self.cpus[..self.ncpus]
            .iter()
            .position(|&m| m == target & MPIDR_AFFINITY_MASK)
        else {
            return ret1(PSCI_INVALID_PARAMETERS);
        };
        if !self.layout.is_guest_ram(entry, 4) {
            return ret1(PSCI_INVALID_ADDRESS);
        }
        match self.power[idx] {
            CpuPower::On => ret1(PSCI_ALREADY_ON),
            CpuPower::Pending => ret1(PSCI_ON_PENDING),
            CpuPower::Off => {
                self.power[idx] = CpuPower::Pending;
                self.boot[idx] = (entry, ctx);
                Hvc::CpuOn {
                    idx,
                    mpidr: self.cpus[idx],
                }
            }
        }
    }

    /// QEMU's answer to a CPU_ON that `hvc` asked for.
    pub fn cpu_on_result(&mut self, idx: usize, ret: u64) {
        if ret != SUCCESS && idx < MAX_CPUS && self.power[idx] == CpuPower::Pending {
            self.power[idx] = CpuPower::Off;
        }
    }

    /// A secondary vCPU came up at EL2: where its guest starts.
    pub fn secondary_started(&mut self, idx: usize) -> Option<(u64, u64)> {
        if idx >= MAX_CPUS || self.power[idx] != CpuPower::Pending {
            return None;
        }
        self.power[idx] = CpuPower::On;
        Some(self.boot[idx])
    }

    /// Chaos: maybe replace a pKVM call's answer with garbage.
    fn garble(&mut self, out: Hvc) -> Hvc {
        let (Some(c), Hvc::Ret(r)) = (self.chaos.as_mut(), out) else {
            return out;
        };
        match c.call() {
            None => out,
            Some(CallChaos::Random(x)) => Hvc::Ret(x),
            Some(CallChaos::Truncated) => Hvc::Ret([r[0] & 0xffff_ffff, r[1], r[2], r[3]]),
            Some(CallChaos::Abort) => Hvc::AbortAtCall,
            Some(CallChaos::Code(code)) => Hvc::Ret([code, r[1], r[2], r[3]]),
        }
    }

    /// HYP_MEMINFO and MMIO_GUARD_INFO: the granule (x1 = 1 on android16: range calls).
    fn meminfo(&self, call: Call, x: [u64; 4]) -> Hvc {
        let ignores_args = call == Call::HypMeminfo && self.mutant(Mutant::MeminfoIgnoresArgs);
        if x[1] | x[2] | x[3] != 0 && !ignores_args {
            return ret1(INVALID_PARAMETER);
        }
        let granule = if call == Call::GuardInfo && self.mutant(Mutant::InfoHostPage) {
            HOST_PAGE
        } else {
            self.reported_granule()
        };
        let a16 = self.opts.profile == Profile::Android16;
        Hvc::Ret([granule, u64::from(a16), 0, 0])
    }

    fn pkvm(&mut self, cpu: usize, call: Call, x: [u64; 4]) -> Hvc {
        let a16 = self.opts.profile == Profile::Android16;
        match call {
            Call::HypMeminfo | Call::GuardInfo => self.meminfo(call, x),
            Call::MemShare | Call::MemUnshare => self.mem_share(call == Call::MemShare, x),
            Call::GuardEnroll => {
                // `enroll-twice-refused`: re-enrolment is taken for an error and changes
                // nothing (§10.1: ENROLL has no argument checks and answers 0).
                if self.enrolled && self.mutant(Mutant::EnrollTwiceRefused) {
                    return ret1(INVALID_PARAMETER);
                }
                if self.enrolled && self.mutant(Mutant::EnrollResets) {
                    self.guard.clear();
                }
                self.enrolled = true;
                ret1(SUCCESS)
            }
            Call::GuardMap => match self.map_one(cpu, x[1]) {
                Ok(()) => {
                    self.stats.map_ok += 1;
                    let x0 = if self.mutant(Mutant::MapReturnsOne) {
                        1
                    } else {
                        SUCCESS
                    };
                    Hvc::Ret([x0, u64::from(a16), 0, 0])
                }
                Err(_) => {
                    self.stats.map_failed += 1;
                    ret1(self.einval())
                }
            },
            Call::RguardMap => self.rguard_map(cpu, x),
            Call::GuardUnmap | Call::RguardUnmap => self.unmap(cpu, call, x),
            _ => ret1(NOT_SUPPORTED),
        }
    }

    /// MEM_SHARE (`share`) or MEM_UNSHARE of the pages from x1.
    fn mem_share(&mut self, share: bool, x: [u64; 4]) -> Hvc {
        let a16 = self.opts.profile == Profile::Android16;
        let Some(n) = share_page_count(a16, x) else {
            return ret1(self.share_failed(share));
        };
        let page = self.page();
        if share && self.share_aborts_at_call(x[1], page) {
            self.stats.share_failed += 1;
            self.stats.refused += 1;
            return Hvc::AbortAtCall;
        }
        let (layout, map, m) = (&self.layout, &mut self.share, self.opts.mutant);
        let done = for_pages(x[1], n, page, |ipa| {
            share_page(map, layout, m, share, ipa, page)
        });
        if done == 0 {
            return ret1(self.share_failed(share));
        }
        if share {
            self.stats.share_ok += 1;
        } else {
            self.stats.unshare_ok += 1;
        }
        // `share-x1-zero`: android16's count of pages done is lost (§10.1: x1 = pages done).
        let x1 = if !a16 || self.mutant(Mutant::ShareX1Zero) {
            0
        } else {
            done
        };
        Hvc::Ret([SUCCESS, x1, 0, 0])
    }

    /// Upstream pKVM does not answer a MEM_SHARE of an aligned device IPA: the host's
    /// stage 2 has no page there and the guest takes an abort at the HVC instead.
    fn share_aborts_at_call(&self, ipa: u64, page: u64) -> bool {
        profile::share_of_non_ram_aborts(self.opts.profile)
            && !self.layout.is_guest_ram(ipa, page)
            && ipa < self.layout.ipa_limit()
            && ipa.is_multiple_of(page)
    }

    /// How many of the `n` granules a range call asks for it does in one go: all of them,
    /// or at most `hypmodel.range-max` (§10.1: the hypervisor may stop early, x1 says where;
    /// the caller resumes at base + x1 * granule).
    fn range_pages(&self, n: u64) -> u64 {
        self.opts.range_max.map_or(n, |max| n.min(max))
    }

    /// MMIO_RGUARD_MAP (android16): x2 pages from x1, as many MAPs; x1 = pages done.
    fn rguard_map(&mut self, cpu: usize, x: [u64; 4]) -> Hvc {
        if x[3] != 0 || x[2] == 0 || !self.enrolled {
            self.stats.map_failed += 1;
            return ret1(INVALID_PARAMETER);
        }
        // `range-x1-zero`: a run of more than one granule answers success with x1 = 0 and
        // registers nothing (§10.1: x1 = 0 comes with an error in x0). A guest that takes
        // it as progress calls again forever; one that resumes only after 1 <= x1 <= the
        // rest of its run refuses it.
        if x[2] > 1 && self.mutant(Mutant::RangeX1Zero) {
            self.stats.map_ok += 1;
            return Hvc::Ret([SUCCESS, 0, 0, 0]);
        }
        let page = self.page();
        let first_only = self.mutant(Mutant::RguardFirstOnly);
        let n = self.range_pages(x[2]);
        let done = for_pages(x[1], n, page, |ipa| {
            (first_only && ipa != x[1]) || self.map_one(cpu, ipa).is_ok()
        });
        if done == 0 {
            self.stats.map_failed += 1;
            return ret1(INVALID_PARAMETER);
        }
        self.stats.map_ok += 1;
        let x1 = self.range_x1(x[1], x[2], done);
        Hvc::Ret([SUCCESS, x1, 0, 0])
    }

    /// x1 of a successful range call from `base` that did `done` of the `asked` granules:
    /// `done` (§10.1: the pages this call guarded; the caller resumes at base + x1 *
    /// granule). `range-x1-overcount` keeps a cursor where a call stopped early and, when
    /// the next call resumes there, answers the granules of the whole run so far (the
    /// earlier call's and this one's), more than this call was asked for.
    fn range_x1(&mut self, base: u64, asked: u64, done: u64) -> u64 {
        if !self.mutant(Mutant::RangeX1Overcount) {
            return done;
        }
        let before = match self.range_resume {
            Some((at, n)) if at == base => n,
            _ => 0,
        };
        let page = self.page();
        self.range_resume = if done < asked {
            done.checked_mul(page)
                .and_then(|o| base.checked_add(o))
                .map(|at| (at, before + done))
        } else {
            None
        };
        before + done
    }

    fn share_failed(&mut self, share: bool) -> u64 {
        if share {
            self.stats.share_failed += 1;
        } else {
            self.stats.unshare_failed += 1;
        }
        INVALID_PARAMETER
    }

    /// Registers one page at `ipa` (pkvm-abi.md section 3 semantics, plus the mutants).
    fn map_one(&mut self, cpu: usize, ipa: u64) -> Result<(), MapError> {
        let page = self.page();
        if !self.enrolled {
            return Err(MapError::NotEnrolled);
        }
        let base = ipa & !(page - 1);
        if base != ipa && !self.mutant(Mutant::MapAcceptsMisaligned) {
            return Err(MapError::Misaligned);
        }
        if base
            .checked_add(page)
            .is_none_or(|e| e > self.layout.ipa_limit())
            && !self.mutant(Mutant::MapBeyondIpa)
        {
            return Err(MapError::BeyondIpa);
        }
        if self.layout.touches_memory(base, page) {
            // Never register hypmodel's own memory, whatever the mutant: a forwarded access
            // there would let the guest read or write hypmodel.
            if self.mutant(Mutant::MapAcceptsRam) && !self.layout.touches_hyp(base, page) {
                return Ok(());
            }
            return Err(MapError::Memory);
        }
        if self.mutant(Mutant::MapNoop) {
            return Ok(());
        }
        if self.mutant(Mutant::MapTwiceEinval) && self.guard.is_registered(base) {
            return Err(MapError::AlreadyMapped);
        }
        self.guard
            .map(base, page, cpu)
            .map_err(MapError::Registry)?;
        if self.mutant(Mutant::MapNeighbour) {
            let next = base + page;
            if next + page <= self.layout.ipa_limit() && !self.layout.touches_memory(next, page) {
                let _ = self.guard.map(next, page, cpu);
            }
        }
        Ok(())
    }

    fn unmap(&mut self, cpu: usize, call: Call, x: [u64; 4]) -> Hvc {
        let p = self.opts.profile;
        if p == Profile::Android16 {
            // UNMAP is a no-op there (kept for pre-6.12 guests): 0 whenever enrolled.
            let n = if call == Call::RguardUnmap {
                self.range_pages(x[2])
            } else {
                1
            };
            if !self.enrolled || (call == Call::RguardUnmap && x[3] != 0) {
                self.stats.unmap_failed += 1;
                return ret1(INVALID_PARAMETER);
            }
            self.stats.unmap_ok += 1;
            let x1 = if call == Call::RguardUnmap {
                self.range_x1(x[1], x[2], n)
            } else {
                n
            };
            return Hvc::Ret([SUCCESS, x1, 0, 0]);
        }
        let page = self.page();
        let ok = if !self.enrolled || !x[1].is_multiple_of(page) {
            false
        } else if self.mutant(Mutant::UnmapNoop) {
            true
        } else {
            self.guard.unmap(x[1], cpu, self.per_cpu()) || self.mutant(Mutant::UnmapUnmappedOk)
        };
        if ok {
            self.stats.unmap_ok += 1;
        } else {
            self.stats.unmap_failed += 1;
        }
        // Android 13 (and the `unmap-inverted` mutant elsewhere) used the inner function's
        // int result as a boolean: NOT_SUPPORTED on success, SUCCESS on failure.
        let inverted = p == Profile::Android13 || self.mutant(Mutant::UnmapInverted);
        match (ok, inverted) {
            (true, false) => ret1(SUCCESS),
            (false, false) => ret1(INVALID_PARAMETER),
            (true, true) => ret1(NOT_SUPPORTED),
            (false, true) => ret1(SUCCESS),
        }
    }

    /// Decides a stage-2 data abort at `ipa` (guest VA `far`).
    pub fn data_abort(&mut self, cpu: usize, ipa: u64, far: u64, d: &DataAbort) -> Access {
        let a = self.decide_access(cpu, ipa, far, d);
        if !matches!(a, Access::Inject { .. }) {
            self.progressed(cpu);
        }
        a
    }

    fn decide_access(&mut self, cpu: usize, ipa: u64, far: u64, d: &DataAbort) -> Access {
        let size = if d.isv { u64::from(d.size) } else { 1 };
        let refuse = |vm: &mut Vm, why: Refusal| {
            vm.stats.refused += 1;
            match why {
                Refusal::NoSyndrome => vm.stats.no_syndrome += 1,
                Refusal::HypMemory => vm.stats.refused_hypmem += 1,
                _ => {}
            }
            let dfsc = if vm.mutant(Mutant::WrongDfsc) {
                DFSC_TRANSLATION_L3
            } else {
                DFSC_EXTABT
            };
            let far = if vm.mutant(Mutant::BadFar) {
                far & !(vm.reported_granule() - 1)
            } else {
                far
            };
            Access::Inject { dfsc, far, why }
        };
        if self.layout.touches_hyp(ipa, size) || self.layout.touches_memory(ipa, size) {
            return refuse(self, Refusal::HypMemory);
        }
        if d.s1ptw {
            return refuse(self, Refusal::TableWalk);
        }
        if !d.is_translation_fault() {
            return refuse(self, Refusal::NotTranslationFault);
        }
        if d.cm {
            self.stats.cm_skipped += 1;
            return Access::Skip;
        }
        let registered = self.allowed(cpu, ipa, size);
        if !d.isv {
            if self.mutant(Mutant::NoSyndromeForward) && registered {
                return Access::Emulate;
            }
            return refuse(self, Refusal::NoSyndrome);
        }
        if self.chaos_refuses() {
            return refuse(self, Refusal::Unregistered);
        }
        if registered || self.mutant(Mutant::GuardOff) {
            self.stats.forwarded += 1;
            if self.layout.on_console_page(ipa) {
                self.stats.console += 1;
                self.console_forwarded();
            }
            return Access::Forward;
        }
        if self.mutant(Mutant::SilentDrop) {
            self.stats.dropped += 1;
            return Access::Drop;
        }
        refuse(self, Refusal::Unregistered)
    }

    /// Does the guard let `cpu` access `size` bytes at `ipa`? pKVM checks the pages of the
    /// first and the last byte, for every vCPU alike (pkvm-abi.md section 3).
    fn allowed(&self, cpu: usize, ipa: u64, size: u64) -> bool {
        let guarded = profile::has_guard(self.opts.profile) && self.enrolled;
        if !guarded || (cpu != 0 && self.mutant(Mutant::SecondaryUnguarded)) {
            return true;
        }
        if self.mutant(Mutant::LastByteUnchecked) {
            return self.guard.covers(ipa, cpu, self.per_cpu());
        }
        self.guard.allows(ipa, size, cpu, self.per_cpu())
    }

    /// The physical address hypmodel performs a forwarded access of `size` bytes at `ipa`
    /// at: `ipa` itself (device pages are mapped 1:1, as pKVM's host sees them).
    /// `forward-wrong-page`: the IPA with bit 12 flipped, the guard's decision unchanged
    /// (it was taken on `ipa`); not for the console's page, nor onto it, so the guest's
    /// UART lines still come out, and never onto memory (hypmodel's or the guest's RAM).
    pub fn forward_address(&self, ipa: u64, size: u64) -> u64 {
        if !self.mutant(Mutant::ForwardWrongPage) {
            return ipa;
        }
        let pa = ipa ^ WRONG_PAGE_BIT;
        let l = &self.layout;
        if l.on_console_page(ipa) || l.on_console_page(pa) || l.touches_memory(pa, size.max(1)) {
            return ipa;
        }
        pa
    }

    /// A forwarded access performed at `pa` (for the guest's `ipa`) that the bus answered
    /// with an abort: true when the guest gets that abort, as it does for a hole it
    /// registered itself. Under `forward-wrong-page`, when the slip took the access to
    /// another page (`pa != ipa`), false: the host's emulation answers an address where it
    /// has no device as a VMM does (crosvm, QEMU under KVM): a read gives 0, a write is
    /// ignored, and the guest sees a wrong value instead of an abort.
    pub fn bus_abort_passed_on(&self, ipa: u64, pa: u64) -> bool {
        pa == ipa || !self.mutant(Mutant::ForwardWrongPage)
    }

    /// `console-dropped`: the console's registration is lost after some accesses.
    fn console_forwarded(&mut self) {
        self.console_seen += 1;
        if self.console_seen == CONSOLE_DROP_AFTER && self.mutant(Mutant::ConsoleDropped) {
            let page = self.layout.console_page & !(self.page() - 1);
            self.guard.unmap(page, 0, false);
        }
    }

    /// Chaos, at a trapped access with a valid syndrome: maybe drop a registration, maybe
    /// refuse the access whatever the guard says.
    fn chaos_refuses(&mut self) -> bool {
        let Some(c) = self.chaos.as_mut() else {
            return false;
        };
        if c.one_in(chaos::ACCESS_ONE_IN) && !self.guard.is_empty() {
            c.stats.drops += 1;
            let i = (c.next_u64() % self.guard.len() as u64) as usize;
            if let Some(base) = self.guard.base_at(i) {
                self.guard.unmap(base, 0, false);
            }
        }
        let refuse = c.one_in(chaos::ACCESS_ONE_IN);
        c.stats.aborts += u64::from(refuse);
        refuse
    }

    /// The value a forwarded load writes into its register, from what the bus answered:
    /// as the syndrome says (size, sign extension, register width), unless a mutant or
    /// chaos says otherwise.
    pub fn loaded(&mut self, d: &DataAbort, raw: u64) -> u64 {
        let mut d = *d;
        if self.mutant(Mutant::NoSignExtend) {
            d.sign_extend = false;
        }
        let mut v = load_result(raw, &d);
        if self.mutant(Mutant::Load64As32) && d.size == 8 {
            v &= 0xffff_ffff;
        }
        if let Some(c) = self.chaos.as_mut() {
            if c.one_in(chaos::ACCESS_ONE_IN) {
                c.stats.reads += 1;
                v = c.next_u64() & if d.sixty_four { u64::MAX } else { 0xffff_ffff };
            }
        }
        v
    }

    /// How the abort injected for a refused access (ESR_EL2's ISS `iss`) differs from
    /// pKVM's: not at all, but for the mutants that get ESR, ELR or the register wrong.
    pub fn inject_quirks(&self, iss: u32, d: &DataAbort) -> InjectQuirks {
        let mut q = InjectQuirks::default();
        match self.opts.mutant {
            Some(Mutant::WnrLeak) => q.esr_bits = iss & ISS_WNR,
            Some(Mutant::IsvLeak) => q.esr_bits = iss & ISS_SYNDROME,
            Some(Mutant::ElrAdvanced) => q.elr_skip = 4,
            Some(Mutant::DestClobbered) if d.isv && !d.write => q.clobber = Some(0),
            _ => {}
        }
        q
    }

    /// The EL2 layer emulated an access without syndrome (`Access::Emulate`), or could not.
    pub fn emulated(&mut self, ok: bool, far: u64) -> Access {
        if ok {
            self.stats.emulated += 1;
            self.stats.forwarded += 1;
            return Access::Forward;
        }
        self.stats.refused += 1;
        self.stats.no_syndrome += 1;
        Access::Inject {
            dfsc: DFSC_EXTABT,
            far,
            why: Refusal::NoSyndrome,
        }
    }

    /// A forwarded access that the bus answered with an abort.
    pub fn bus_error(&mut self) {
        self.stats.bus_errors += 1;
    }

    pub fn other_exception(&mut self) {
        self.stats.other_exceptions += 1;
    }

    /// The counters printed at power-off, as `hypmodel:` lines.
    pub fn report(&self, w: &mut dyn Write) -> fmt::Result {
        let o = &self.opts;
        let s = &self.stats;
        writeln!(
            w,
            "hypmodel: report profile={} granule={} mutant={} enrolled={} cpus={}",
            o.profile.name(),
            self.reported_granule(),
            o.mutant.map_or("none", |m| m.name()),
            if self.enrolled { "yes" } else { "no" },
            self.ncpus
        )?;
        if let Some(n) = o.range_max {
            writeln!(w, "hypmodel: range_max={n}")?;
        }
        for c in Call::ALL {
            let n = s.calls[c.index()];
            if n > 0 {
                writeln!(w, "hypmodel: calls {}={}", c.name(), n)?;
            }
        }
        writeln!(
            w,
            "hypmodel: accesses forwarded={} console={} refused={} no_syndrome={} refused_hypmem={} \
             bus_errors={} dropped={} emulated={} cm_skipped={} other_exceptions={}",
            s.forwarded, s.console, s.refused, s.no_syndrome, s.refused_hypmem, s.bus_errors, s.dropped,
            s.emulated, s.cm_skipped, s.other_exceptions
        )?;
        writeln!(
            w,
            "hypmodel: guard registered={} map_ok={} map_failed={} unmap_ok={} unmap_failed={}",
            self.guard.len(),
            s.map_ok,
            s.map_failed,
            s.unmap_ok,
            s.unmap_failed
        )?;
        writeln!(
            w,
            "hypmodel: memshare shared_pages={} shared_bytes={} share_ok={} share_failed={} unshare_ok={} \
             unshare_failed={}",
            self.share.shared_bytes() / self.page(),
            self.share.shared_bytes(),
            s.share_ok, s.share_failed, s.unshare_ok, s.unshare_failed
        )?;
        writeln!(w, "hypmodel: {}", self.dma.report_line())?;
        if let Some(c) = &self.chaos {
            let k = &c.stats;
            writeln!(
                w,
                "hypmodel: chaos seed={} calls={} drops={} aborts={} reads={}",
                c.seed, k.calls, k.drops, k.aborts, k.reads
            )?;
        }
        let d = &self.dma.stats;
        if self.dma_refused() > 0 {
            writeln!(
                w,
                "hypmodel: FAIL: dma: {} notifies refused ({} private, {} malformed), see the \
                 'hypmodel: FAIL dma:' lines; the run fails",
                self.dma_refused(),
                d.private,
                d.malformed
            )?;
        }
        writeln!(w, "hypmodel: end")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syndrome::decode_dabt;

    const UART: u64 = 0x0900_0000;
    const RTC: u64 = 0x0901_0000;

    fn layout() -> Layout {
        let mut ram = [(0, 0); MAX_RAM_RANGES];
        ram[0] = (0x4000_0000, 0x2000_0000);
        Layout {
            ram,
            nram: 1,
            hyp: (0x4020_0000, 0x40_0000),
            ipa_bits: 48,
            console_page: UART,
        }
    }

    fn vm_with(opts: Options) -> Vm {
        let l = layout();
        let frames = 0x2000_0000 / 4096;
        let bits =
            Box::leak(vec![0u64; crate::memshare::words_for(frames as u64)].into_boxed_slice());
        Vm::new(
            opts,
            l,
            ShareMap::new(0x4000_0000, frames as u64, bits),
            &[0, 1, 2, 3],
        )
    }

    fn vm(p: Profile, m: Option<Mutant>) -> Vm {
        vm_with(Options {
            profile: p,
            mutant: m,
            ..Options::default()
        })
    }

    fn call(v: &mut Vm, cpu: usize, fid: u32, a: u64, b: u64, c: u64) -> [u64; 4] {
        match v.hvc(cpu, [u64::from(fid), a, b, c]) {
            Hvc::Ret(r) => r,
            o => panic!("not a return: {o:?}"),
        }
    }

    fn pk(f: u32) -> u32 {
        VENDOR_HYP_SMC64_BASE | f
    }

    fn ldr(reg: u32) -> DataAbort {
        decode_dabt((1 << 24) | (2 << 22) | (reg << 16) | 0x07)
    }

    fn ldp() -> DataAbort {
        decode_dabt(0x07)
    }

    const EINVAL: u64 = INVALID_PARAMETER;

    fn enrolled(m: Mutant) -> Vm {
        enrolled_in(Profile::Android14, m)
    }

    fn enrolled_in(p: Profile, m: Mutant) -> Vm {
        let mut v = vm(p, Some(m));
        assert_eq!(call(&mut v, 0, pk(6), 0, 0, 0)[0], SUCCESS);
        v
    }

    fn st(reg: u32) -> DataAbort {
        decode_dabt((1 << 24) | (2 << 22) | (reg << 16) | (1 << 6) | 0x07)
    }

    #[test]
    fn new_mutants_injected_abort() {
        let iss_st = (1 << 24) | (2 << 22) | (3 << 16) | (1 << 6) | 0x07;
        let iss_ld = (1 << 24) | (2 << 22) | (3 << 16) | 0x07;
        let q = |m| vm(Profile::Android14, Some(m)).inject_quirks(iss_st, &st(3));
        assert_eq!(q(Mutant::WnrLeak).esr_bits, 1 << 6);
        assert_eq!(
            q(Mutant::IsvLeak).esr_bits,
            (1 << 24) | (2 << 22) | (3 << 16)
        );
        assert_eq!(q(Mutant::ElrAdvanced).elr_skip, 4);
        assert_eq!(
            q(Mutant::DestClobbered).clobber,
            None,
            "a store has no destination"
        );
        let v = vm(Profile::Android14, Some(Mutant::DestClobbered));
        assert_eq!(v.inject_quirks(iss_ld, &ldr(3)).clobber, Some(0));
        let v = vm(Profile::Android14, None);
        assert_eq!(v.inject_quirks(iss_st, &st(3)), InjectQuirks::default());
    }

    #[test]
    fn new_mutants_calls() {
        let mut v = enrolled(Mutant::InfoHostPage);
        assert_eq!(call(&mut v, 0, pk(5), 0, 0, 0)[0], 0x10000);
        assert_eq!(call(&mut v, 0, pk(2), 0, 0, 0)[0], 4096);
        let mut v = enrolled(Mutant::MeminfoIgnoresArgs);
        assert_eq!(call(&mut v, 0, pk(2), 1, 2, 3)[0], 4096);
        assert_eq!(
            call(&mut v, 0, pk(5), 1, 0, 0)[0],
            EINVAL,
            "INFO still checks"
        );
        let mut v = enrolled(Mutant::EnrollResets);
        assert_eq!(call(&mut v, 0, pk(7), RTC, 0, 0)[0], SUCCESS);
        call(&mut v, 0, pk(6), 0, 0, 0);
        assert!(
            v.guard.is_empty(),
            "a second ENROLL dropped the registration"
        );
        let mut v = enrolled(Mutant::MapTwiceEinval);
        assert_eq!(call(&mut v, 0, pk(7), RTC, 0, 0)[0], SUCCESS);
        assert_eq!(call(&mut v, 0, pk(7), RTC, 0, 0)[0], EINVAL);
        let mut v = enrolled(Mutant::UnmapUnmappedOk);
        assert_eq!(call(&mut v, 0, pk(8), RTC, 0, 0)[0], SUCCESS);
        assert_eq!(
            call(&mut v, 0, pk(8), RTC + 1, 0, 0)[0],
            EINVAL,
            "misaligned"
        );
        let mut v = enrolled(Mutant::MapBeyondIpa);
        assert_eq!(call(&mut v, 0, pk(7), 1 << 48, 0, 0)[0], SUCCESS);
        let mut v = enrolled(Mutant::MapReturnsOne);
        assert_eq!(call(&mut v, 0, pk(7), RTC, 0, 0)[0], 1);
        assert!(v.guard.is_registered(RTC));
        let mut v = enrolled_in(Profile::Android16, Mutant::RguardFirstOnly);
        assert_eq!(call(&mut v, 0, pk(10), RTC, 3, 0), [SUCCESS, 3, 0, 0]);
        assert!(v.guard.is_registered(RTC) && !v.guard.is_registered(RTC + 0x1000));
    }

    #[test]
    fn new_mutants_memshare() {
        let p = 0x4100_0000;
        let mut v = enrolled(Mutant::ShareTwiceOk);
        assert_eq!(call(&mut v, 0, pk(3), p, 0, 0)[0], SUCCESS);
        assert_eq!(call(&mut v, 0, pk(3), p, 0, 0)[0], SUCCESS);
        let mut v = enrolled(Mutant::ShareMmioOk);
        assert_eq!(call(&mut v, 0, pk(3), RTC, 0, 0)[0], SUCCESS);
        assert_eq!(
            call(&mut v, 0, pk(4), RTC, 0, 0)[0],
            EINVAL,
            "UNSHARE still checks"
        );
        let mut v = enrolled(Mutant::ShareMisalignedOk);
        assert_eq!(call(&mut v, 0, pk(3), p + 0x10, 0, 0)[0], SUCCESS);
        assert!(v.share.is_shared(p), "aligned down");
        let mut v = enrolled(Mutant::UnsharePrivateOk);
        assert_eq!(call(&mut v, 0, pk(4), p, 0, 0)[0], SUCCESS);
        // share-x1-zero (android16): the share is done, but x1 does not say so.
        let mut v = enrolled_in(Profile::Android16, Mutant::ShareX1Zero);
        let r = call(&mut v, 0, pk(3), p, 1, 0);
        assert_eq!((r[0], r[1]), (SUCCESS, 0));
        let mut v = enrolled_in(Profile::Android16, Mutant::ShareTwiceOk);
        let r = call(&mut v, 0, pk(3), p, 1, 0);
        assert_eq!((r[0], r[1]), (SUCCESS, 1), "only its own rule");
        // unshare-refused: the unshare of a shared page fails, and the page stays shared.
        let mut v = enrolled(Mutant::UnshareRefused);
        assert_eq!(call(&mut v, 0, pk(3), p, 0, 0)[0], SUCCESS);
        assert_eq!(call(&mut v, 0, pk(4), p, 0, 0)[0], EINVAL);
        assert_eq!(call(&mut v, 0, pk(3), p, 0, 0)[0], EINVAL, "still shared");
        let mut v = enrolled(Mutant::ShareTwiceOk);
        assert_eq!(
            call(&mut v, 0, pk(4), p, 0, 0)[0],
            EINVAL,
            "only its own rule"
        );
    }

    #[test]
    fn new_mutants_accesses() {
        let sx8 = decode_dabt((1 << 24) | (1 << 21) | (3 << 16) | (1 << 15) | 0x07);
        let mut v = vm(Profile::Android14, Some(Mutant::NoSignExtend));
        assert_eq!(v.loaded(&sx8, 0xf0), 0xf0);
        assert_eq!(
            vm(Profile::Android14, None).loaded(&sx8, 0xf0),
            u64::MAX - 0xf
        );
        let ld64 = decode_dabt((1 << 24) | (3 << 22) | (3 << 16) | (1 << 15) | 0x07);
        let mut v = vm(Profile::Android14, Some(Mutant::Load64As32));
        assert_eq!(v.loaded(&ld64, 0x10_0000_0031), 0x31);
        let mut v = enrolled(Mutant::SecondaryUnguarded);
        assert!(matches!(
            v.data_abort(0, RTC, RTC, &ldr(0)),
            Access::Inject { .. }
        ));
        assert_eq!(v.data_abort(1, RTC, RTC, &ldr(0)), Access::Forward);
        // An 8-byte access whose last byte is in the next, unregistered page.
        let mut v = enrolled(Mutant::LastByteUnchecked);
        call(&mut v, 0, pk(7), RTC, 0, 0);
        let ld = decode_dabt((1 << 24) | (3 << 22) | (1 << 15) | 0x07);
        assert_eq!(
            v.data_abort(0, RTC + 0xffc, RTC + 0xffc, &ld),
            Access::Forward
        );
        let mut g = enrolled_in(Profile::Android14, Mutant::LastByteUnchecked);
        g.opts.mutant = None;
        call(&mut g, 0, pk(7), RTC, 0, 0);
        assert!(matches!(
            g.data_abort(0, RTC + 0xffc, RTC + 0xffc, &ld),
            Access::Inject { .. }
        ));
        let mut v = enrolled(Mutant::ConsoleDropped);
        call(&mut v, 0, pk(7), UART, 0, 0);
        for _ in 0..CONSOLE_DROP_AFTER {
            assert_eq!(v.data_abort(0, UART, UART, &st(0)), Access::Forward);
        }
        assert!(matches!(
            v.data_abort(0, UART, UART, &st(0)),
            Access::Inject { .. }
        ));
    }

    #[test]
    fn enroll_twice_refused_answers_minus_3_and_changes_nothing() {
        // The correct model: ENROLL answers 0 however often it is made.
        let mut g = vm(Profile::Android14, None);
        for _ in 0..3 {
            assert_eq!(call(&mut g, 0, pk(6), 0, 0, 0), [SUCCESS, 0, 0, 0]);
        }
        let mut v = vm(Profile::Android14, Some(Mutant::EnrollTwiceRefused));
        assert!(!v.enrolled);
        assert_eq!(
            call(&mut v, 0, pk(6), 0, 0, 0),
            [SUCCESS, 0, 0, 0],
            "the first ENROLL"
        );
        assert!(v.enrolled);
        assert_eq!(call(&mut v, 0, pk(7), RTC, 0, 0)[0], SUCCESS);
        assert_eq!(call(&mut v, 0, pk(6), 0, 0, 0), [EINVAL, 0, 0, 0]);
        assert_eq!(call(&mut v, 1, pk(6), 0, 0, 0)[0], EINVAL, "from any vCPU");
        // Nothing changed: still enrolled, the registration holds, the guard still refuses.
        assert!(v.enrolled && v.guard.is_registered(RTC));
        assert_eq!(
            v.data_abort(0, RTC + 0xfe0, RTC + 0xfe0, &ldr(0)),
            Access::Forward
        );
        assert!(matches!(
            v.data_abort(0, 0x0903_0fe0, 0x0903_0fe0, &ldr(0)),
            Access::Inject { .. }
        ));
        assert_eq!(v.stats.calls[Call::GuardEnroll.index()], 3);
        // Enrolled before the guest's first instruction: its first ENROLL is a second one.
        let mut b = vm_with(Options {
            mutant: Some(Mutant::EnrollTwiceRefused),
            enrolled_at_boot: true,
            ..Options::default()
        });
        assert_eq!(call(&mut b, 0, pk(6), 0, 0, 0)[0], EINVAL);
        // Other profiles with ENROLL: the same -3 (64-bit, not MAP's 32-bit android13 form).
        for p in [Profile::Android13, Profile::Android16] {
            let mut v = enrolled_in(p, Mutant::EnrollTwiceRefused);
            assert_eq!(call(&mut v, 0, pk(6), 0, 0, 0)[0], EINVAL, "{p:?}");
        }
    }

    #[test]
    fn forward_wrong_page_performs_registered_accesses_one_page_off() {
        // The correct model performs every forwarded access at its IPA.
        let g = vm(Profile::Android14, None);
        for ipa in [RTC + 0xfe0, UART + 0x18, 0x0a00_0000, 0x0a00_3e00] {
            assert_eq!(g.forward_address(ipa, 4), ipa);
        }
        let mut v = enrolled(Mutant::ForwardWrongPage);
        assert_eq!(call(&mut v, 0, pk(7), RTC, 0, 0)[0], SUCCESS);
        // The guard's decision is the correct model's: taken on the IPA.
        assert_eq!(
            v.data_abort(0, RTC + 0xfe0, RTC + 0xfe0, &ldr(0)),
            Access::Forward
        );
        assert!(matches!(
            v.data_abort(0, RTC + 0x1fe0, RTC + 0x1fe0, &ldr(0)),
            Access::Inject { .. }
        ));
        // Performed one page off, reads and writes alike: bit 12 flipped, either way.
        assert_eq!(v.forward_address(RTC + 0xfe0, 4), RTC + 0x1fe0);
        assert_eq!(v.forward_address(RTC + 0xfe0, 1), RTC + 0x1fe0);
        assert_eq!(v.forward_address(0x0a00_1e00, 8), 0x0a00_0e00);
        assert_eq!(v.forward_address(0x0a00_3e50, 4), 0x0a00_2e50);
        // Not the console's page, nor onto it: the guest's UART lines still come out.
        assert_eq!(v.forward_address(UART + 0x18, 4), UART + 0x18);
        assert_eq!(v.forward_address(UART, 4), UART);
        assert_eq!(v.forward_address(UART + 0x1000, 4), UART + 0x1000);
        // Never onto memory: with RAM starting at an odd page, the device page below it
        // stays where it is.
        v.layout.ram[0] = (0x4000_1000, 0x1fff_f000);
        assert_eq!(v.forward_address(0x4000_0ff8, 8), 0x4000_0ff8);
        assert_eq!(v.forward_address(0x3fff_eff8, 8), 0x3fff_fff8);
        // A slip onto a page with no device reads 0 (a write is ignored) instead of the
        // bus's abort; an abort at the access's own address is passed on as ever.
        assert!(!v.bus_abort_passed_on(RTC + 0xfe0, RTC + 0x1fe0));
        assert!(v.bus_abort_passed_on(UART + 0x18, UART + 0x18));
        assert!(g.bus_abort_passed_on(RTC + 0xfe0, RTC + 0xfe0));
        // The injected abort of a refused access is untouched.
        assert_eq!(v.inject_quirks(0, &ldr(0)), InjectQuirks::default());
    }

    #[test]
    fn chaos_is_reproducible_and_garbles_some_calls() {
        let run = |seed| {
            let mut v = vm_with(Options {
                chaos: Some(seed),
                ..Options::default()
            });
            call(&mut v, 0, pk(6), 0, 0, 0);
            let answers: Vec<Hvc> = (0..200)
                .map(|_| v.hvc(0, [u64::from(pk(2)), 0, 0, 0]))
                .collect();
            (answers, v.chaos.map(|c| c.stats))
        };
        let (a, stats) = run(5);
        assert_eq!((a.clone(), stats), run(5));
        let garbled = a
            .iter()
            .filter(|&&r| r != Hvc::Ret([4096, 0, 0, 0]))
            .count();
        assert!(garbled > 0 && garbled < 40, "{garbled} of 200");
        // A 32-bit form of 4096 is 4096 again: not every garbled call shows.
        assert!(stats.is_some_and(|s| s.calls >= garbled as u64));
    }

    #[test]
    fn the_same_abort_eight_times_in_a_row_is_a_loop() {
        let mut v = vm(Profile::Android14, None);
        for i in 1..REPEAT_LIMIT {
            assert!(!v.injected(0, 0x8600_0010, 0x200, 0x200), "{i}");
        }
        assert!(
            !v.injected(1, 0x8600_0010, 0x200, 0x200),
            "counted per vCPU"
        );
        assert!(v.injected(0, 0x8600_0010, 0x200, 0x200));
        // Anything else trapped in between (a hypercall, a forwarded access) starts again.
        let mut v = vm(Profile::Android14, None);
        for _ in 1..REPEAT_LIMIT {
            v.injected(0, 0x9600_0010, 0x9010fe0, 0x4060_1000);
        }
        call(&mut v, 0, SMCCC_VERSION, 0, 0, 0);
        assert!(!v.injected(0, 0x9600_0010, 0x9010fe0, 0x4060_1000));
        for _ in 2..REPEAT_LIMIT {
            v.injected(0, 0x9600_0010, 0x9010fe0, 0x4060_1000);
        }
        assert!(
            !v.injected(0, 0x9600_0010, 0x9010fe4, 0x4060_1000),
            "another FAR"
        );
        assert!(!v.injected(7, 1, 1, 1) && !v.injected(99, 1, 1, 1));
    }

    #[test]
    fn discovery_answers() {
        let mut v = vm(Profile::Android14, None);
        assert_eq!(call(&mut v, 0, SMCCC_VERSION, 0, 0, 0)[0], 0x10001);
        assert_eq!(
            call(&mut v, 0, VENDOR_HYP_CALL_UID, 0, 0, 0),
            [0xb66fb428, 0xe911c52e, 0x564bcaa9, 0x743a004d]
        );
        assert_eq!(call(&mut v, 0, VENDOR_HYP_KVM_FEATURES, 0, 0, 0)[0], 0x1fd);
        assert_eq!(call(&mut v, 0, pk(2), 0, 0, 0), [4096, 0, 0, 0]);
        assert_eq!(call(&mut v, 0, pk(2), 1, 0, 0)[0], EINVAL);
        assert_eq!(call(&mut v, 0, pk(5), 0, 0, 1)[0], EINVAL);
        assert_eq!(
            call(&mut v, 0, pk(9), 0, 0, 0)[0],
            NOT_SUPPORTED,
            "RELINQUISH not modelled"
        );
        assert_eq!(
            call(&mut v, 0, pk(10), 0, 0, 0)[0],
            NOT_SUPPORTED,
            "no range calls on android14"
        );
        assert_eq!(
            call(&mut v, 0, 0x8600_0002, 0, 0, 0)[0],
            NOT_SUPPORTED,
            "SMC32 forms"
        );
        assert_eq!(
            call(&mut v, 0, SMCCC_ARCH_FEATURES, SMCCC_VERSION as u64, 0, 0)[0],
            NOT_SUPPORTED
        );
        assert_eq!(
            call(&mut v, 0, PSCI_FEATURES, SMCCC_VERSION as u64, 0, 0)[0],
            SUCCESS
        );
        assert_eq!(
            v.hvc(0, [PSCI_FEATURES as u64, PSCI_CPU_ON_64 as u64, 0, 0]),
            Hvc::Forward([PSCI_FEATURES as u64, PSCI_CPU_ON_64 as u64, 0, 0])
        );
        assert_eq!(
            call(&mut v, 0, PSCI_FEATURES, PSCI_CPU_SUSPEND as u64, 0, 0)[0],
            NOT_SUPPORTED
        );
        assert_eq!(call(&mut v, 0, 0x1234_5678, 0, 0, 0)[0], NOT_SUPPORTED);
        // Upper half of x0 ignored for the function ID.
        assert_eq!(
            v.hvc(0, [0xffff_ffff_0000_0000 | SMCCC_VERSION as u64, 0, 0, 0]),
            Hvc::Ret([0x10001, 0, 0, 0])
        );
        let mut a16 = vm(Profile::Android16, None);
        assert_eq!(call(&mut a16, 0, pk(2), 0, 0, 0), [4096, 1, 0, 0]);
        assert_eq!(call(&mut a16, 0, SMCCC_VERSION, 0, 0, 0)[0], 0x10002);
        let mut k = vm(Profile::Kvm, None);
        assert_eq!(call(&mut k, 0, VENDOR_HYP_CALL_UID, 0, 0, 0)[0], 0xb66fb428);
        for f in [2, 3, 4, 5, 6, 7, 8] {
            assert_eq!(call(&mut k, 0, pk(f), 0, 0, 0)[0], NOT_SUPPORTED);
        }
    }

    #[test]
    fn android14_guard_lifecycle() {
        let mut v = vm(Profile::Android14, None);
        let rd = ldr(9);
        // Before ENROLL every valid-syndrome device access is forwarded.
        assert_eq!(
            v.data_abort(0, RTC + 0xfe0, RTC + 0xfe0, &rd),
            Access::Forward
        );
        assert_eq!(
            call(&mut v, 0, pk(7), RTC, 0, 0)[0],
            EINVAL,
            "MAP before ENROLL"
        );
        assert!(matches!(
            v.data_abort(0, RTC, RTC, &ldp()),
            Access::Inject {
                why: Refusal::NoSyndrome,
                ..
            }
        ));
        assert_eq!(call(&mut v, 0, pk(6), 0, 0, 0)[0], 0);
        assert_eq!(
            v.data_abort(0, RTC + 0xfe0, RTC + 0xfe0, &rd),
            Access::Inject {
                dfsc: 0x10,
                far: RTC + 0xfe0,
                why: Refusal::Unregistered
            }
        );
        assert_eq!(call(&mut v, 0, pk(7), RTC, 0, 0)[0], 0);
        assert_eq!(call(&mut v, 0, pk(7), RTC, 0, 0)[0], 0, "MAP twice is fine");
        assert_eq!(
            v.data_abort(1, RTC + 0xfe0, RTC + 0xfe0, &rd),
            Access::Forward,
            "other vCPU"
        );
        assert!(
            matches!(
                v.data_abort(0, RTC + 0x1000, RTC + 0x1000, &rd),
                Access::Inject { .. }
            ),
            "neighbour"
        );
        assert!(matches!(
            v.data_abort(0, RTC, RTC, &ldp()),
            Access::Inject {
                why: Refusal::NoSyndrome,
                ..
            }
        ));
        assert_eq!(call(&mut v, 0, pk(6), 0, 0, 0)[0], 0, "second ENROLL");
        assert_eq!(
            v.data_abort(0, RTC, RTC, &rd),
            Access::Forward,
            "registration survives ENROLL"
        );
        assert_eq!(
            call(&mut v, 0, pk(7), RTC + 8, 0, 0)[0],
            EINVAL,
            "misaligned"
        );
        assert_eq!(call(&mut v, 0, pk(7), 0x4000_0000, 0, 0)[0], EINVAL, "RAM");
        assert_eq!(
            call(&mut v, 0, pk(7), 0x4020_0000, 0, 0)[0],
            EINVAL,
            "hypmodel memory"
        );
        assert_eq!(
            call(&mut v, 0, pk(7), 1 << 48, 0, 0)[0],
            EINVAL,
            "outside the IPA space"
        );
        assert_eq!(call(&mut v, 0, pk(8), RTC, 0, 0)[0], 0);
        assert!(
            matches!(v.data_abort(0, RTC, RTC, &rd), Access::Inject { .. }),
            "after UNMAP"
        );
        assert_eq!(
            call(&mut v, 0, pk(8), RTC, 0, 0)[0],
            EINVAL,
            "UNMAP of an unmapped page"
        );
        assert_eq!(
            (v.stats.forwarded, v.stats.refused, v.stats.no_syndrome),
            (3, 5, 2)
        );
        assert_eq!(
            (
                v.stats.map_ok,
                v.stats.map_failed,
                v.stats.unmap_ok,
                v.stats.unmap_failed
            ),
            (2, 5, 1, 1)
        );
    }

    #[test]
    fn hypmodel_memory_always_aborts() {
        for p in Profile::ALL {
            let mut v = vm(p, Some(Mutant::GuardOff));
            let a = v.data_abort(0, 0x4020_0100, 0x4020_0100, &ldr(1));
            assert_eq!(
                a,
                Access::Inject {
                    dfsc: 0x10,
                    far: 0x4020_0100,
                    why: Refusal::HypMemory
                },
                "{p:?}"
            );
            assert_eq!(v.stats.refused_hypmem, 1);
        }
        let mut v = vm(Profile::Android14, Some(Mutant::MapAcceptsRam));
        call(&mut v, 0, pk(6), 0, 0, 0);
        assert_eq!(call(&mut v, 0, pk(7), 0x4020_0000, 0, 0)[0], EINVAL);
        assert!(v.guard.is_empty());
    }

    #[test]
    fn android13_return_values() {
        let mut v = vm(Profile::Android13, None);
        call(&mut v, 0, pk(6), 0, 0, 0);
        assert_eq!(call(&mut v, 0, pk(7), RTC + 4, 0, 0)[0], 0xffff_fffd);
        assert_eq!(call(&mut v, 0, pk(7), RTC, 0, 0)[0], 0);
        assert_eq!(
            call(&mut v, 0, pk(8), RTC, 0, 0)[0],
            NOT_SUPPORTED,
            "-1 on success"
        );
        assert_eq!(call(&mut v, 0, pk(8), RTC, 0, 0)[0], 0, "0 on failure");
        assert!(v.guard.is_empty());
    }

    #[test]
    fn android16_range_calls_and_noop_unmap() {
        let mut v = vm(Profile::Android16, None);
        assert_eq!(call(&mut v, 0, pk(8), RTC, 0, 0)[0], EINVAL, "not enrolled");
        call(&mut v, 0, pk(6), 0, 0, 0);
        assert_eq!(
            call(&mut v, 0, pk(7), RTC, 5, 5),
            [0, 1, 0, 0],
            "func 7 ignores x2/x3"
        );
        assert_eq!(call(&mut v, 0, pk(10), 0x0a00_0000, 4, 0), [0, 4, 0, 0]);
        assert_eq!(call(&mut v, 0, pk(10), 0x0a00_0000, 4, 1)[0], EINVAL);
        assert_eq!(
            v.data_abort(0, 0x0a00_3e00, 0x0a00_3e00, &ldr(0)),
            Access::Forward
        );
        // A range running into RAM stops there: partial success.
        assert_eq!(call(&mut v, 0, pk(10), 0x3fff_e000, 4, 0), [0, 2, 0, 0]);
        assert_eq!(call(&mut v, 0, pk(8), RTC, 0, 0), [0, 1, 0, 0]);
        assert_eq!(call(&mut v, 0, pk(11), 0x0a00_0000, 4, 0), [0, 4, 0, 0]);
        assert_eq!(
            call(&mut v, 0, pk(8), 0x0b00_0000, 0, 0)[0],
            0,
            "no-op even when never mapped"
        );
        assert_eq!(
            v.data_abort(0, RTC, RTC, &ldr(0)),
            Access::Forward,
            "still forwarded after UNMAP"
        );
        // MEM_SHARE with a page count.
        assert_eq!(call(&mut v, 0, pk(3), 0x4100_0000, 3, 0), [0, 3, 0, 0]);
        assert_eq!(
            call(&mut v, 0, pk(3), 0x4100_2000, 0, 0)[0],
            EINVAL,
            "already shared"
        );
        assert_eq!(
            call(&mut v, 0, pk(4), 0x4100_0000, 0, 0),
            [0, 1, 0, 0],
            "0 pages means 1"
        );
        assert_eq!(v.share.shared_bytes(), 0x2000);
    }

    /// `hypmodel.range-max=N`: a range call does at most N granules and says so in x1; the
    /// caller resumes at base + x1 * granule until its run is done. Everything else (func 7,
    /// the argument checks, MEM_SHARE's count) is as without it.
    #[test]
    fn range_max_stops_each_range_call_early_and_the_caller_resumes() {
        let base = 0x0a00_0000;
        let mut v = vm_with(Options {
            profile: Profile::Android16,
            range_max: Some(1),
            ..Options::default()
        });
        call(&mut v, 0, pk(6), 0, 0, 0);
        assert_eq!(call(&mut v, 0, pk(10), base, 3, 0), [0, 1, 0, 0]);
        assert!(v.guard.is_registered(base) && !v.guard.is_registered(base + 0x1000));
        // Resume as §10.1 says, until the run of 3 is done: one call per granule.
        let (mut done, mut calls) = (0, 0);
        while done < 3 {
            let r = call(&mut v, 0, pk(10), base + done * 0x1000, 3 - done, 0);
            assert_eq!(r, [0, 1, 0, 0], "at granule {done}");
            done += r[1];
            calls += 1;
        }
        assert_eq!(calls, 3);
        for i in 0..3 {
            assert!(v.guard.is_registered(base + i * 0x1000), "granule {i}");
        }
        assert!(
            !v.guard.is_registered(base + 0x3000),
            "nothing past the run"
        );
        assert_eq!(v.stats.calls[Call::RguardMap.index()], 4);
        let mut report = String::new();
        v.report(&mut report).unwrap();
        assert!(
            report.contains("hypmodel: calls MMIO_RGUARD_MAP=4\n")
                && report.contains("hypmodel: range_max=1\n"),
            "{report}"
        );
        // RGUARD_UNMAP (a no-op on android16) stops early too; its checks are unchanged.
        assert_eq!(call(&mut v, 0, pk(11), base, 3, 0), [0, 1, 0, 0]);
        assert_eq!(call(&mut v, 0, pk(11), base, 3, 1)[0], EINVAL);
        assert_eq!(call(&mut v, 0, pk(10), base, 3, 1)[0], EINVAL);
        assert_eq!(call(&mut v, 0, pk(10), base, 0, 0)[0], EINVAL);
        // Not the other calls: func 7 does its one granule, MEM_SHARE its whole count.
        assert_eq!(call(&mut v, 0, pk(7), RTC, 5, 5), [0, 1, 0, 0]);
        assert_eq!(call(&mut v, 0, pk(3), 0x4100_0000, 3, 0), [0, 3, 0, 0]);

        // range-max=2: a run of 3 is 2 then 1; a run shorter than the limit is done whole.
        let mut v = vm_with(Options {
            profile: Profile::Android16,
            range_max: Some(2),
            ..Options::default()
        });
        call(&mut v, 0, pk(6), 0, 0, 0);
        assert_eq!(call(&mut v, 0, pk(10), base, 3, 0), [0, 2, 0, 0]);
        assert_eq!(call(&mut v, 0, pk(10), base + 0x2000, 1, 0), [0, 1, 0, 0]);
        assert_eq!(call(&mut v, 0, pk(11), base, 3, 0), [0, 2, 0, 0]);
        // A run stopped by RAM before the limit still says where it stopped.
        assert_eq!(call(&mut v, 0, pk(10), 0x3fff_f000, 2, 0), [0, 1, 0, 0]);
        // Without the option a range call does its whole run (the default).
        let mut v = vm(Profile::Android16, None);
        call(&mut v, 0, pk(6), 0, 0, 0);
        assert_eq!(v.opts.range_max, None);
        assert_eq!(call(&mut v, 0, pk(10), base, 300, 0), [0, 300, 0, 0]);
    }

    /// `range-x1-zero`: RGUARD_MAP of more than one granule answers success with x1 = 0
    /// and registers nothing; one granule, func 7 and the argument checks are unchanged.
    #[test]
    fn range_x1_zero_answers_success_without_progress() {
        let base = 0x0a00_0000;
        let mut v = enrolled_in(Profile::Android16, Mutant::RangeX1Zero);
        assert_eq!(call(&mut v, 0, pk(10), base, 2, 0), [SUCCESS, 0, 0, 0]);
        assert!(v.guard.is_empty(), "nothing registered");
        assert!(matches!(
            v.data_abort(0, base + 0xe00, base + 0xe00, &ldr(0)),
            Access::Inject { .. }
        ));
        // Called again it answers the same: a caller that took x1 = 0 as progress loops.
        assert_eq!(call(&mut v, 0, pk(10), base, 2, 0), [SUCCESS, 0, 0, 0]);
        assert_eq!(
            call(&mut v, 0, pk(10), base, 2, 1)[0],
            EINVAL,
            "x3 still checked"
        );
        assert_eq!(call(&mut v, 0, pk(10), base, 1, 0), [SUCCESS, 1, 0, 0]);
        assert!(v.guard.is_registered(base) && v.guard.len() == 1);
        assert_eq!(call(&mut v, 0, pk(7), RTC, 0, 0), [SUCCESS, 1, 0, 0]);
        assert_eq!(call(&mut v, 0, pk(11), base, 2, 0), [SUCCESS, 2, 0, 0]);
        // Not enrolled: refused as in the correct model.
        let mut v = vm(Profile::Android16, Some(Mutant::RangeX1Zero));
        assert_eq!(call(&mut v, 0, pk(10), base, 2, 0)[0], EINVAL);
        // The correct model answers the run.
        let mut v = vm(Profile::Android16, None);
        call(&mut v, 0, pk(6), 0, 0, 0);
        assert_eq!(call(&mut v, 0, pk(10), base, 2, 0), [SUCCESS, 2, 0, 0]);
    }

    /// `range-x1-overcount`: a call that resumes a run where the last one stopped early
    /// answers the granules of the whole run so far, more than it was asked for; calls
    /// that start a run, and every call without an early stop, answer as the correct model.
    #[test]
    fn range_x1_overcount_answers_the_runs_progress_on_a_resumed_call() {
        let base = 0x0a00_0000;
        let opts = |m| Options {
            profile: Profile::Android16,
            mutant: m,
            range_max: Some(1),
            ..Options::default()
        };
        let mut v = vm_with(opts(Some(Mutant::RangeX1Overcount)));
        call(&mut v, 0, pk(6), 0, 0, 0);
        // The first call of a run of 2 stops after one granule and says so.
        assert_eq!(call(&mut v, 0, pk(10), base, 2, 0), [SUCCESS, 1, 0, 0]);
        // The call that resumes there, asked for 1, answers 2.
        assert_eq!(
            call(&mut v, 0, pk(10), base + 0x1000, 1, 0),
            [SUCCESS, 2, 0, 0]
        );
        assert!(v.guard.is_registered(base) && v.guard.is_registered(base + 0x1000));
        assert_eq!(v.guard.len(), 2, "nothing registered beyond the run");
        // A run of one granule, and a call that does not resume, answer right.
        assert_eq!(
            call(&mut v, 0, pk(10), 0x0a00_4000, 1, 0),
            [SUCCESS, 1, 0, 0]
        );
        assert_eq!(call(&mut v, 0, pk(10), base, 2, 0), [SUCCESS, 1, 0, 0]);
        assert_eq!(
            call(&mut v, 0, pk(10), 0x0a00_8000, 1, 0),
            [SUCCESS, 1, 0, 0]
        );
        // RGUARD_UNMAP (a no-op) the same way; func 7 is unchanged.
        assert_eq!(call(&mut v, 0, pk(11), base, 2, 0), [SUCCESS, 1, 0, 0]);
        assert_eq!(
            call(&mut v, 0, pk(11), base + 0x1000, 1, 0),
            [SUCCESS, 2, 0, 0]
        );
        assert_eq!(call(&mut v, 0, pk(7), RTC, 0, 0), [SUCCESS, 1, 0, 0]);
        // The correct model answers each call's own progress.
        let mut v = vm_with(opts(None));
        call(&mut v, 0, pk(6), 0, 0, 0);
        assert_eq!(call(&mut v, 0, pk(10), base, 2, 0), [SUCCESS, 1, 0, 0]);
        assert_eq!(
            call(&mut v, 0, pk(10), base + 0x1000, 1, 0),
            [SUCCESS, 1, 0, 0]
        );
        assert_eq!(call(&mut v, 0, pk(11), base, 2, 0), [SUCCESS, 1, 0, 0]);
        assert_eq!(
            call(&mut v, 0, pk(11), base + 0x1000, 1, 0),
            [SUCCESS, 1, 0, 0]
        );
    }

    #[test]
    fn upstream_and_kvm() {
        let mut v = vm(Profile::Upstream, None);
        assert!(v.enrolled, "upstream is enrolled from boot");
        assert!(matches!(
            v.data_abort(0, UART, UART, &ldr(0)),
            Access::Inject { .. }
        ));
        for f in [5, 6, 8] {
            assert_eq!(call(&mut v, 0, pk(f), 0, 0, 0)[0], NOT_SUPPORTED);
        }
        assert_eq!(call(&mut v, 0, pk(7), UART, 0, 0)[0], 0);
        assert_eq!(v.data_abort(0, UART, UART, &ldr(0)), Access::Forward);
        assert_eq!(v.stats.console, 1);
        let mut k = vm(Profile::Kvm, None);
        assert_eq!(k.data_abort(0, RTC, RTC, &ldr(0)), Access::Forward);
        assert!(matches!(
            k.data_abort(0, RTC, RTC, &ldp()),
            Access::Inject {
                why: Refusal::NoSyndrome,
                ..
            }
        ));
        let mut b = vm_with(Options {
            enrolled_at_boot: true,
            ..Options::default()
        });
        assert!(
            matches!(b.data_abort(0, RTC, RTC, &ldr(0)), Access::Inject { .. }),
            "enrolled=boot"
        );
    }

    #[test]
    fn granule_16k() {
        let mut v = vm_with(Options {
            granule: 16384,
            ..Options::default()
        });
        call(&mut v, 0, pk(6), 0, 0, 0);
        assert_eq!(call(&mut v, 0, pk(2), 0, 0, 0)[0], 16384);
        assert_eq!(
            call(&mut v, 0, pk(7), 0x0a00_1000, 0, 0)[0],
            EINVAL,
            "4K-aligned is not enough"
        );
        assert_eq!(call(&mut v, 0, pk(7), 0x0a00_0000, 0, 0)[0], 0);
        assert_eq!(
            v.data_abort(0, 0x0a00_3e00, 0x0a00_3e00, &ldr(0)),
            Access::Forward,
            "whole granule"
        );
        assert!(matches!(
            v.data_abort(0, 0x0a00_4000, 0x0a00_4000, &ldr(0)),
            Access::Inject { .. }
        ));
        assert_eq!(call(&mut v, 0, pk(3), 0x4100_1000, 0, 0)[0], EINVAL);
        assert_eq!(call(&mut v, 0, pk(3), 0x4100_4000, 0, 0)[0], 0);
        assert_eq!(v.share.shared_bytes(), 16384);
    }

    #[test]
    fn memshare() {
        let mut v = vm(Profile::Android14, None);
        let p = 0x4100_0000;
        assert_eq!(
            call(&mut v, 0, pk(4), p, 0, 0)[0],
            EINVAL,
            "unshare private"
        );
        assert_eq!(call(&mut v, 0, pk(3), p, 0, 0)[0], 0);
        assert_eq!(call(&mut v, 0, pk(3), p, 0, 0)[0], EINVAL, "share twice");
        assert_eq!(call(&mut v, 0, pk(4), p, 0, 0)[0], 0);
        assert_eq!(call(&mut v, 0, pk(3), RTC, 0, 0)[0], EINVAL, "MMIO");
        assert_eq!(
            call(&mut v, 0, pk(3), 0x4020_0000, 0, 0)[0],
            EINVAL,
            "hypmodel memory"
        );
        assert_eq!(call(&mut v, 0, pk(3), p + 8, 0, 0)[0], EINVAL, "misaligned");
        assert_eq!(call(&mut v, 0, pk(3), p, 1, 0)[0], EINVAL, "x2 reserved");
        assert_eq!(call(&mut v, 0, pk(3), p, 0, 1)[0], EINVAL, "x3 reserved");
        assert_eq!(v.share.shared_bytes(), 0);
        assert_eq!(
            (
                v.stats.share_ok,
                v.stats.share_failed,
                v.stats.unshare_ok,
                v.stats.unshare_failed
            ),
            (1, 6, 1, 1)
        );
    }

    #[test]
    fn unshare_misaligned_ok() {
        let p = 0x4100_0000;
        for (m, unshare) in [(None, EINVAL), (Some(Mutant::UnshareMisalignedOk), SUCCESS)] {
            let mut v = vm(Profile::Android14, m);
            // What the guest's `memshare: misaligned` does: share, unshare, aligned unshare.
            assert_eq!(call(&mut v, 0, pk(3), p + 0x10, 0, 0)[0], EINVAL, "{m:?}");
            assert_eq!(call(&mut v, 0, pk(4), p + 0x10, 0, 0)[0], unshare, "{m:?}");
            assert_eq!(
                call(&mut v, 0, pk(4), p, 0, 0)[0],
                EINVAL,
                "{m:?}: never shared"
            );
            // A misaligned unshare of a shared page unshares nothing either.
            assert_eq!(call(&mut v, 0, pk(3), p, 0, 0)[0], SUCCESS);
            assert_eq!(call(&mut v, 0, pk(4), p + 0x10, 0, 0)[0], unshare);
            assert!(v.share.is_shared(p) && v.share.host_can_access(p));
            assert_eq!(call(&mut v, 0, pk(4), p, 0, 0)[0], SUCCESS);
            let s = &v.stats;
            let ok = u64::from(m.is_some());
            assert_eq!((s.unshare_ok, s.unshare_failed), (1 + 2 * ok, 3 - 2 * ok));
        }
        // android16 with a page count: x1 = the pages "done".
        let mut v = vm(Profile::Android16, Some(Mutant::UnshareMisalignedOk));
        assert_eq!(call(&mut v, 0, pk(3), p + 8, 2, 0)[0], EINVAL);
        assert_eq!(call(&mut v, 0, pk(4), p + 8, 2, 0), [SUCCESS, 2, 0, 0]);
        assert_eq!(v.share.shared_bytes(), 0);
    }

    mod dma {
        use super::*;
        use crate::dma::{Judged, NO_SHARING};
        use crate::virtq::tests::{publish, FakeMem, BASE, PAGE};
        use crate::virtq::{Area, Problem, Reach, Ring, DESC_F_NEXT, DESC_F_WRITE};

        const WIN: u64 = 0x0a00_3e00;

        /// Guest RAM from BASE: a legacy queue of 8 (descriptors and avail ring in page
        /// 0, used ring in page 1), buffers from page 4. Nothing shared yet.
        fn mem() -> (FakeMem, Ring) {
            (
                FakeMem::new(16),
                Ring::legacy(BASE, 8, 4096, false).unwrap(),
            )
        }

        fn read(m: &FakeMem) -> impl Fn(u64, &mut [u8]) -> bool + '_ {
            |ipa, buf| m.read(ipa, buf)
        }

        fn no_pci(_: u64) -> Option<u32> {
            None
        }

        /// A legacy virtio device in WIN with its queue 0 at BASE, as Linux sets it up.
        fn set_up(v: &mut Vm, m: &FakeMem) {
            assert!(v.dma.add_mmio_window(WIN, 0x200));
            for (off, val) in [
                (0x70, 0),
                (0x28, 4096),
                (0x30, 0),
                (0x38, 8),
                (0x3c, 4096),
                (0x40, BASE >> 12),
                (0x70, 0xf),
            ] {
                assert_eq!(v.device_write(WIN + off, 4, val, &read(m), &no_pci), None);
            }
        }

        fn notify(v: &mut Vm, m: &FakeMem) -> Notify {
            v.device_write(WIN + 0x50, 4, 0, &read(m), &no_pci)
                .expect("a notify")
        }

        fn share(v: &mut Vm, pages: &[u64]) {
            for &p in pages {
                assert_eq!(call(v, 0, pk(3), p, 0, 0)[0], SUCCESS);
            }
        }

        #[test]
        fn shared_rings_and_buffers_are_forwarded_private_ones_refused() {
            let mut v = vm(Profile::Android14, None);
            let (mut m, r) = mem();
            set_up(&mut v, &m);
            m.put_desc(BASE, BASE + 4 * PAGE, 64, DESC_F_WRITE, 0);
            publish(&mut m, &r, 0, &[0]);
            // Nothing shared: the descriptor table is the first thing the device reads.
            let n = notify(&mut v, &m);
            assert_eq!(
                n.refused(),
                Some(Problem::Private {
                    what: Reach::Ring(Area::DescTable),
                    addr: BASE,
                    len: 128,
                    page: BASE
                })
            );
            share(&mut v, &[BASE, BASE + PAGE, BASE + 4 * PAGE]);
            assert!(notify(&mut v, &m).forward());
            // The buffer given back: unshared, then used again.
            assert_eq!(call(&mut v, 0, pk(4), BASE + 4 * PAGE, 0, 0)[0], SUCCESS);
            publish(&mut m, &r, 1, &[0]);
            let n = notify(&mut v, &m);
            assert!(!n.forward());
            assert_eq!(v.dma_refused(), 2);
            let mut s = String::new();
            v.report(&mut s).unwrap();
            assert!(
                s.contains(
                    "hypmodel: dma notifies=3 walked=3 descriptors=2 private=2 malformed=0\n"
                ),
                "{s}"
            );
            assert!(s.contains(
                "hypmodel: FAIL: dma: 2 notifies refused (2 private, 0 malformed), see the \
                 'hypmodel: FAIL dma:' lines; the run fails\nhypmodel: end\n"
            ));
        }

        #[test]
        fn the_private_page_is_named_by_its_granule() {
            let mut v = vm_with(Options {
                granule: 16384,
                ..Options::default()
            });
            let (mut m, r) = mem();
            set_up(&mut v, &m);
            share(&mut v, &[BASE]);
            m.put_desc(BASE, BASE + 5 * PAGE, 64, 0, 0);
            publish(&mut m, &r, 0, &[0]);
            let n = notify(&mut v, &m);
            assert!(matches!(
                n.refused(),
                Some(Problem::Private { page, .. }) if page == BASE + 4 * PAGE
            ));
        }

        #[test]
        fn share_ignored_answers_right_and_refuses_the_first_request() {
            for (mutant, forwarded) in [(None, true), (Some(Mutant::ShareIgnored), false)] {
                let mut v = vm(Profile::Android14, mutant);
                let (mut m, r) = mem();
                set_up(&mut v, &m);
                // Every memshare answer is pKVM's: the guest's memshare checks pass.
                share(&mut v, &[BASE, BASE + PAGE, BASE + 4 * PAGE]);
                assert_eq!(call(&mut v, 0, pk(3), BASE, 0, 0)[0], EINVAL, "{mutant:?}");
                assert_eq!(v.share.shared_bytes(), 3 * PAGE);
                m.put_desc(BASE, BASE + 4 * PAGE, 64, DESC_F_WRITE, 0);
                publish(&mut m, &r, 0, &[0]);
                let n = notify(&mut v, &m);
                assert_eq!(n.forward(), forwarded, "{mutant:?}");
                if !forwarded {
                    assert_eq!(
                        n.fail_line().unwrap().to_string(),
                        "FAIL dma: descriptor table: queue 0 of virtio-mmio@0xa003e00: \
                         descriptor table [0x41000000, 0x41000080) in private page 0x41000000"
                    );
                }
                assert_eq!(call(&mut v, 0, pk(4), BASE, 0, 0)[0], SUCCESS, "{mutant:?}");
            }
        }

        #[test]
        fn dma_private_through_lets_the_last_descriptor_through() {
            for (mutant, forwarded) in [(None, false), (Some(Mutant::DmaPrivateThrough), true)] {
                let mut v = vm(Profile::Android14, mutant);
                let (mut m, r) = mem();
                set_up(&mut v, &m);
                share(&mut v, &[BASE, BASE + PAGE, BASE + 4 * PAGE]);
                // A block request: header, data, and a status byte in a private page.
                m.put_desc(BASE, BASE + 4 * PAGE, 16, DESC_F_NEXT, 1);
                m.put_desc(
                    BASE + 16,
                    BASE + 4 * PAGE + 512,
                    512,
                    DESC_F_NEXT | DESC_F_WRITE,
                    2,
                );
                m.put_desc(BASE + 32, BASE + 6 * PAGE, 1, DESC_F_WRITE, 0);
                publish(&mut m, &r, 0, &[0]);
                assert_eq!(notify(&mut v, &m).forward(), forwarded, "{mutant:?}");
                // The guest's self-test: one private buffer, a one-descriptor chain.
                m.put_desc(BASE + 48, BASE + 7 * PAGE, 64, DESC_F_WRITE, 0);
                publish(&mut m, &r, u16::from(forwarded), &[3]);
                assert_eq!(notify(&mut v, &m).forward(), forwarded, "{mutant:?}");
            }
        }

        #[test]
        fn only_profiles_with_memory_sharing_judge() {
            for p in Profile::ALL {
                let v = vm(p, None);
                assert_eq!(v.judges_dma(), p != Profile::Kvm, "{p:?}");
            }
            let mut v = vm(Profile::Kvm, None);
            let (mut m, r) = mem();
            set_up(&mut v, &m);
            publish(&mut m, &r, 0, &[0]);
            let n = notify(&mut v, &m);
            assert_eq!(n.judged, Judged::NotJudged(NO_SHARING));
            assert!(n.forward());
            let mut s = String::new();
            v.report(&mut s).unwrap();
            assert!(s.contains(
                "hypmodel: dma notifies=1 walked=0 descriptors=0 private=0 malformed=0\n"
            ));
            assert!(!s.contains("FAIL"));
        }

        #[test]
        fn the_pci_scan_reads_only_the_ecam_of_a_host_clear_of_memory() {
            use crate::pci::tests::{qemu_host, ECAM, MEM32};
            let mut v = vm(Profile::Android14, None);
            let h = qemu_host();
            let over_ram = PciHost {
                ecam: 0x3ff0_0000,
                ecam_size: 0x20_0000,
                ..h
            };
            assert!(!v.set_pci_host(over_ram));
            assert!(v.dma.pci_host().is_none());
            assert!(v.set_pci_host(h));
            let seen = std::cell::RefCell::new(Vec::new());
            let cfg = |a: u64| {
                seen.borrow_mut().push(a);
                Some(0xffff_ffff)
            };
            let m = FakeMem::new(1);
            // A write in the bridge's memory: the first one scans bus 0.
            assert_eq!(v.device_write(MEM32 + 0x10, 4, 0, &read(&m), &cfg), None);
            let seen = seen.into_inner();
            assert_eq!(seen.len(), 32, "one word per device of bus 0");
            assert!(seen.iter().all(|&a| (ECAM..ECAM + (1 << 20)).contains(&a)));
            // The view refuses anything but aligned ECAM words.
            let view = EcamView {
                host: Some(h),
                read: &|_| Some(7),
            };
            assert_eq!(view.read32(ECAM + 4), Some(7));
            assert_eq!(view.read32(ECAM + 2), None);
            assert_eq!(view.read32(ECAM - 4), None);
            assert_eq!(view.read32(ECAM + h.ecam_size - 2), None);
            assert_eq!(view.read32(0x4100_0000), None);
        }

        #[test]
        fn the_walk_reads_only_guest_ram() {
            let v = vm(Profile::Android14, None);
            let read_any = |_: u64, _: &mut [u8]| true;
            let view = HostView {
                share: &v.share,
                layout: &v.layout,
                granule: 4096,
                read: &read_any,
            };
            let mut b = [0u8; 16];
            assert!(view.read(0x4100_0000, &mut b));
            assert!(!view.read(0x4020_0000, &mut b), "hypmodel's memory");
            assert!(!view.read(0x0900_0000, &mut b), "a device");
            assert!(!view.read(0x5fff_fff8, &mut b), "past the end of RAM");
        }
    }

    #[test]
    fn psci_cpu_on_state_machine() {
        let mut v = vm(Profile::Android14, None);
        assert_eq!(
            call(&mut v, 0, PSCI_CPU_ON_64, 7, 0x4100_0000, 0)[0],
            PSCI_INVALID_PARAMETERS
        );
        assert_eq!(
            call(&mut v, 0, PSCI_CPU_ON_64, 0, 0x4100_0000, 0)[0],
            PSCI_ALREADY_ON
        );
        assert_eq!(
            call(&mut v, 0, PSCI_CPU_ON_64, 1, 0x4020_0000, 0)[0],
            -9i64 as u64,
            "entry in hypmodel"
        );
        assert_eq!(
            v.hvc(0, [PSCI_CPU_ON_64 as u64, 1, 0x4100_0000, 42]),
            Hvc::CpuOn { idx: 1, mpidr: 1 }
        );
        assert_eq!(
            call(&mut v, 0, PSCI_CPU_ON_64, 1, 0x4100_0000, 0)[0],
            PSCI_ON_PENDING
        );
        assert_eq!(v.secondary_started(1), Some((0x4100_0000, 42)));
        assert_eq!(v.secondary_started(1), None);
        assert_eq!(
            call(&mut v, 0, PSCI_CPU_ON_64, 1, 0x4100_0000, 0)[0],
            PSCI_ALREADY_ON
        );
        assert_eq!(v.hvc(1, [PSCI_CPU_OFF as u64, 0, 0, 0]), Hvc::CpuOff);
        assert!(matches!(
            v.hvc(0, [PSCI_CPU_ON as u64, 1, 0x4100_0000, 0]),
            Hvc::CpuOn { idx: 1, .. }
        ));
        v.cpu_on_result(1, PSCI_INVALID_PARAMETERS);
        assert_eq!(v.power[1], CpuPower::Off);
        assert_eq!(v.hvc(0, [PSCI_SYSTEM_OFF as u64, 0, 0, 0]), Hvc::SystemOff);
        assert_eq!(v.stats.calls[Call::PsciCpuOn.index()], 7);
    }

    #[test]
    fn mutants_decide_as_their_bug_says() {
        let setup = |m| {
            let mut v = vm(Profile::Android14, Some(m));
            call(&mut v, 0, pk(6), 0, 0, 0);
            v
        };
        let rd = ldr(9);
        let stray = RTC + 0xfe0;
        let mut v = setup(Mutant::GuardOff);
        assert_eq!(v.data_abort(0, stray, stray, &rd), Access::Forward);
        assert!(
            matches!(v.data_abort(0, stray, stray, &ldp()), Access::Inject { .. }),
            "only the guard is off"
        );
        let mut v = setup(Mutant::SilentDrop);
        assert_eq!(v.data_abort(0, stray, stray, &rd), Access::Drop);
        let mut v = setup(Mutant::WrongDfsc);
        assert!(
            matches!(v.data_abort(0, stray, stray, &rd), Access::Inject { dfsc: 0x07, far: f, .. } if f == stray)
        );
        let mut v = setup(Mutant::BadFar);
        assert!(matches!(
            v.data_abort(0, stray, stray, &rd),
            Access::Inject {
                dfsc: 0x10,
                far: RTC,
                ..
            }
        ));
        let mut v = setup(Mutant::MapNoop);
        assert_eq!(call(&mut v, 0, pk(7), RTC, 0, 0)[0], 0);
        assert!(matches!(
            v.data_abort(0, stray, stray, &rd),
            Access::Inject { .. }
        ));
        let mut v = setup(Mutant::MapNeighbour);
        assert_eq!(call(&mut v, 0, pk(7), RTC, 0, 0)[0], 0);
        assert_eq!(
            v.data_abort(0, RTC + 0x1000, RTC + 0x1000, &rd),
            Access::Forward
        );
        let mut v = setup(Mutant::MapAcceptsRam);
        assert_eq!(call(&mut v, 0, pk(7), 0x4100_0000, 0, 0)[0], 0);
        assert_eq!(call(&mut v, 0, pk(7), RTC + 4, 0, 0)[0], EINVAL);
        let mut v = setup(Mutant::MapAcceptsMisaligned);
        assert_eq!(call(&mut v, 0, pk(7), RTC + 4, 0, 0)[0], 0);
        assert_eq!(call(&mut v, 0, pk(7), 0x4100_0000, 0, 0)[0], EINVAL);
        let mut v = setup(Mutant::UnmapNoop);
        call(&mut v, 0, pk(7), RTC, 0, 0);
        assert_eq!(call(&mut v, 0, pk(8), RTC, 0, 0)[0], 0);
        assert_eq!(
            v.data_abort(0, stray, stray, &rd),
            Access::Forward,
            "still forwarded after UNMAP"
        );
        let mut v = setup(Mutant::UnmapInverted);
        call(&mut v, 0, pk(7), RTC, 0, 0);
        assert_eq!(call(&mut v, 0, pk(8), RTC, 0, 0)[0], NOT_SUPPORTED);
        assert!(
            matches!(v.data_abort(0, stray, stray, &rd), Access::Inject { .. }),
            "but it did unmap"
        );
        let mut v = setup(Mutant::PerCpuGuard);
        call(&mut v, 0, pk(7), RTC, 0, 0);
        assert_eq!(v.data_abort(0, stray, stray, &rd), Access::Forward);
        assert!(matches!(
            v.data_abort(1, stray, stray, &rd),
            Access::Inject { .. }
        ));
        let mut v = setup(Mutant::GranuleMismatch);
        assert_eq!(call(&mut v, 0, pk(2), 0, 0, 0)[0], 16384);
        assert_eq!(call(&mut v, 0, pk(5), 0, 0, 0)[0], 16384);
        assert_eq!(call(&mut v, 0, pk(7), 0x0a00_0000, 0, 0)[0], 0);
        assert_eq!(
            v.data_abort(0, 0x0a00_0e00, 0x0a00_0e00, &rd),
            Access::Forward
        );
        assert!(matches!(
            v.data_abort(0, 0x0a00_3e00, 0x0a00_3e00, &rd),
            Access::Inject { .. }
        ));
        let mut v = setup(Mutant::NoSyndromeForward);
        call(&mut v, 0, pk(7), RTC, 0, 0);
        assert_eq!(v.data_abort(0, stray, stray, &ldp()), Access::Emulate);
        assert!(
            matches!(
                v.data_abort(0, 0x0903_0000, 0x0903_0000, &ldp()),
                Access::Inject { .. }
            ),
            "unregistered"
        );
    }

    #[test]
    fn report_lines() {
        let mut v = vm(Profile::Android14, None);
        call(&mut v, 0, pk(6), 0, 0, 0);
        call(&mut v, 0, pk(7), RTC, 0, 0);
        call(&mut v, 0, pk(3), 0x4100_0000, 0, 0);
        let mut s = String::new();
        v.report(&mut s).unwrap();
        assert!(s.contains(
            "hypmodel: report profile=android14 granule=4096 mutant=none enrolled=yes cpus=4\n"
        ));
        assert!(
            s.contains("hypmodel: calls MMIO_GUARD_ENROLL=1\nhypmodel: calls MMIO_GUARD_MAP=1\n")
        );
        assert!(
            !s.contains("SMCCC_VERSION"),
            "zero counters are not printed"
        );
        assert!(s.contains("hypmodel: guard registered=1 map_ok=1 map_failed=0"));
        assert!(s.contains("hypmodel: memshare shared_pages=1 shared_bytes=4096 share_ok=1"));
        assert!(s.ends_with("hypmodel: end\n"));
        assert!(!s.contains("range_max"), "only with hypmodel.range-max");
    }

    #[test]
    fn for_pages_steps_by_the_page_and_stops_at_the_first_failure() {
        let mut seen = Vec::new();
        let done = for_pages(0x9000_0000, 3, 0x4000, |ipa| {
            seen.push(ipa);
            true
        });
        assert_eq!(
            (done, seen),
            (3, vec![0x9000_0000, 0x9000_4000, 0x9000_8000])
        );
        assert_eq!(for_pages(0x1000, 5, 0x1000, |ipa| ipa < 0x3000), 2);
        assert_eq!(for_pages(0x1000, 5, 0x1000, |_| false), 0);
        assert_eq!(for_pages(0x1000, 0, 0x1000, |_| true), 0);
        // The page after the last one of the address space does not exist.
        assert_eq!(for_pages(u64::MAX - 0xfff, 3, 0x1000, |_| true), 1);
    }

    #[test]
    fn share_page_count_per_generation() {
        assert_eq!(share_page_count(false, [0, 0x4000_0000, 0, 0]), Some(1));
        assert_eq!(share_page_count(false, [0, 0x4000_0000, 2, 0]), None);
        assert_eq!(share_page_count(false, [0, 0x4000_0000, 0, 1]), None);
        assert_eq!(share_page_count(true, [0, 0x4000_0000, 0, 0]), Some(1));
        assert_eq!(share_page_count(true, [0, 0x4000_0000, 3, 0]), Some(3));
        assert_eq!(share_page_count(true, [0, 0x4000_0000, 3, 1]), None);
    }

    #[test]
    fn map_refusals_say_why() {
        let mut v = vm(Profile::Android14, None);
        assert_eq!(v.map_one(0, RTC), Err(MapError::NotEnrolled));
        v.enrolled = true;
        assert_eq!(v.map_one(0, RTC + 8), Err(MapError::Misaligned));
        assert_eq!(v.map_one(0, 1 << 48), Err(MapError::BeyondIpa));
        assert_eq!(v.map_one(0, 0x4000_0000), Err(MapError::Memory));
        assert_eq!(v.map_one(0, RTC), Ok(()));
        assert_eq!(
            MapError::Registry(GuardError::Full).to_string(),
            "the registry's 512 ranges are in use"
        );
    }
}
