//! The hypervisor below: the SMCCC conduit, discovery, and the capabilities it offers,
//! each present or absent (`mmio_guard()`, `mem_sharer()`), so that code that needs one
//! asks for it and an absent one turns its checks into SKIP lines that say why.

pub mod conduit;
pub mod discovery;
pub mod mem_sharer;
pub mod mmio_guard;

use crate::fault::Fault;
use crate::hyp::abi::Ret;
use crate::hyp::profile::{Discovery, Features, Profile};
use core::fmt;
use spin::Once;

pub use mem_sharer::MemSharer;
pub use mmio_guard::MmioGuard;

/// A guard or memshare call answered with something its ABI does not document for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Undocumented {
    pub fid: u32,
    pub args: [u64; 3],
    /// x0 and x1 as returned, or the abort the call raised.
    pub answer: Result<[u64; 2], Fault>,
}

impl fmt::Display for Undocumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [x1, x2, x3] = self.args;
        let name = crate::hyp::abi::name(self.fid);
        write!(f, "{name}({x1:#x}, {x2:#x}, {x3:#x}) ")?;
        match self.answer {
            Ok([x0, x1]) => write!(f, "answered x0={x0:#x} x1={x1:#x}"),
            Err(fault) => write!(f, "aborted ({fault})"),
        }
    }
}

/// The answers of the capabilities' calls: how many, and the undocumented ones (the
/// first few kept; they may be recorded from any CPU).
struct AnswerLog {
    calls: u64,
    kept: [Option<Undocumented>; 8],
    undocumented: usize,
}

static ANSWERS: spin::Mutex<AnswerLog> = spin::Mutex::new(AnswerLog {
    calls: 0,
    kept: [None; 8],
    undocumented: 0,
});

/// Counts one call of a capability and keeps its answer if it was not `documented`.
fn judged(fid: u32, args: [u64; 3], answer: Result<[u64; 2], Fault>, documented: bool) {
    let mut log = ANSWERS.lock();
    log.calls += 1;
    if !documented {
        let n = log.undocumented;
        if let Some(slot) = log.kept.get_mut(n) {
            *slot = Some(Undocumented { fid, args, answer });
        }
        log.undocumented += 1;
    }
}

/// How a generation writes a call's answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reading {
    /// x0 may be a 32-bit status (android13's MAP).
    pub narrow: bool,
    /// UNMAP answers -1 on success (android13).
    pub inverted_unmap: bool,
    /// A range call over this many granules: x1 is the progress.
    pub range: Option<u64>,
}

/// One call of a capability: the status and x1, judged against what the ABI documents
/// for it (`abi::documented_status`, `abi::documented_progress`) and counted, so that
/// `guard: returns` can name any undocumented answer.
pub(crate) fn judged_call(fid: u32, args: [u64; 3], how: Reading) -> Result<(Ret, u64), Fault> {
    use crate::hyp::abi;
    let answer = conduit::call(fid, args);
    let documented = match answer {
        Ok(r) => {
            let ret = Ret::decode(r[0], how.narrow);
            abi::documented_status(fid, ret, how.inverted_unmap)
                && how
                    .range
                    .is_none_or(|n| abi::documented_progress(ret, r[1], n))
        }
        Err(_) => false,
    };
    judged(fid, args, answer.map(|r| [r[0], r[1]]), documented);
    answer.map(|r| (Ret::decode(r[0], how.narrow), r[1]))
}

/// The capabilities' calls so far, the undocumented answers kept, and how many there
/// were in all.
pub fn answers() -> (u64, alloc::vec::Vec<Undocumented>, usize) {
    let log = ANSWERS.lock();
    (
        log.calls,
        log.kept.iter().flatten().copied().collect(),
        log.undocumented,
    )
}

/// Why the profile was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Detected(&'static str),
    /// `ioguard.profile=` chose another profile than the one detected.
    Forced {
        forced: Profile,
        detected: Profile,
        why: &'static str,
    },
}

/// Why a profile that has a guard cannot use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardUnusable {
    BadGranule(u64),
    NoMeminfo,
    Enroll(Result<Ret, Fault>),
}

impl fmt::Display for GuardUnusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadGranule(g) => {
                write!(f, "HYP_MEMINFO gave {g:#x}, not a granule of 4..64 KiB")
            }
            Self::NoMeminfo => write!(f, "HYP_MEMINFO not advertised or not answered"),
            Self::Enroll(Ok(r)) => write!(f, "MMIO_GUARD_ENROLL answered {r}"),
            Self::Enroll(Err(fault)) => write!(f, "MMIO_GUARD_ENROLL aborted: {fault}"),
        }
    }
}

#[derive(Debug)]
enum GuardState {
    Absent,
    Unusable(GuardUnusable),
    Usable {
        guard: MmioGuard,
        /// ENROLL's answer at boot, where the ABI has ENROLL.
        enrolled: Option<Result<Ret, Fault>>,
    },
}

/// What discovery saw, call by call, and the capabilities it found.
#[derive(Debug)]
pub struct Hypervisor {
    pub psci_version: Option<u32>,
    /// PSCI_FEATURES(SMCCC_VERSION), when PSCI >= 1.0.
    pub smccc_version_feature: Option<u64>,
    pub smccc_version: Option<u32>,
    /// CALL_UID's w0..w3, or the fault it raised.
    pub uid: Result<[u32; 4], Fault>,
    pub discovery: Discovery,
    pub profile: Profile,
    pub reason: Reason,
    /// HYP_MEMINFO's answer (x0) when feature 2 is advertised.
    pub meminfo: Option<u64>,
    guard: GuardState,
    sharer: Option<MemSharer>,
}

impl Hypervisor {
    pub fn features(&self) -> Features {
        self.discovery.features.unwrap_or_default()
    }

    /// The MMIO guard, when the hypervisor offers one that can be used.
    pub fn mmio_guard(&self) -> Option<&MmioGuard> {
        match &self.guard {
            GuardState::Usable { guard, .. } => Some(guard),
            _ => None,
        }
    }

    /// Why the profile's guard cannot be used, when it has one.
    pub fn guard_unusable(&self) -> Option<GuardUnusable> {
        match &self.guard {
            GuardState::Unusable(why) => Some(*why),
            _ => None,
        }
    }

    /// ENROLL's answer at boot.
    pub fn boot_enroll(&self) -> Option<Result<Ret, Fault>> {
        match &self.guard {
            GuardState::Usable { enrolled, .. } => *enrolled,
            GuardState::Unusable(GuardUnusable::Enroll(answer)) => Some(*answer),
            _ => None,
        }
    }

    /// Memory sharing, when MEM_SHARE and MEM_UNSHARE are advertised.
    pub fn mem_sharer(&self) -> Option<&MemSharer> {
        self.sharer.as_ref()
    }

    /// Enrolls in the guard, where its ABI asks for that: a refusal makes it unusable.
    /// A step of its own, after discovery: enrolling changes what the hypervisor does
    /// with every later device access.
    pub fn enroll_guard(&mut self) {
        let GuardState::Usable { guard, enrolled } = &mut self.guard else {
            return;
        };
        if !guard.has_enroll() {
            return;
        }
        let answer = guard.enroll();
        *enrolled = Some(answer);
        if answer != Ok(Ret::Success) {
            self.guard = GuardState::Unusable(GuardUnusable::Enroll(answer));
        }
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

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Detected(why) => f.write_str(why),
            Self::Forced {
                forced,
                detected,
                why,
            } => write!(f, "ioguard.profile={forced} (detected {detected}: {why})"),
        }
    }
}

static HYPERVISOR: Once<Hypervisor> = Once::new();

/// Keeps the hypervisor's description for the rest of the run (the guard must outlive
/// every mapping registered with it).
pub fn install(hv: Hypervisor) -> &'static Hypervisor {
    HYPERVISOR.call_once(|| hv)
}

/// The hypervisor's description, once installed.
pub fn get() -> Option<&'static Hypervisor> {
    HYPERVISOR.get()
}
