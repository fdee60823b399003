//! The guest's model of what the hypervisor holds (which granules are registered, which
//! pages are shared) and the judgement of every answer and every access against it and
//! against what the ABI documents for the profile (pkvm-abi.md §3, §10.1; `hyp::abi`).

use super::gen::{Op, IPA_MAX_BITS, IPA_MIN_BITS};
use crate::esr::PKVM_INJECTED_DABT;
use crate::fault::Fault;
use crate::hyp::abi::{self, Ret};
use crate::hyp::profile::{KnownBug, NoSyndrome, Profile};
use crate::platform::Region;
use crate::refusal::{judge_stray, Observed, StrayAccess};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The promise a step broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invariant {
    /// x0 is not what the ABI documents for this call, these arguments and this state.
    Answer,
    /// x1 (pages done, range support) is not the documented value.
    Progress,
    /// The call aborted where the ABI has it answer.
    CallAbort,
    /// An access to a page the model says is not registered was not refused exactly as
    /// pKVM refuses it (forwarded, dropped, or the wrong abort).
    Refusal,
    /// An access to a registered page aborted.
    Forwarding,
    /// A forwarded read did not return the device's value.
    Value,
    /// The canary or a page of the sharing pool lost its pattern.
    Memory,
    /// The console's registered page aborted, or the console had an incident.
    Console,
    /// A device reached a page the host must not reach, or did not reach one it must.
    Dma,
    /// The step itself could not be run (another CPU did not answer in time).
    Step,
}

impl Invariant {
    pub fn name(self) -> &'static str {
        match self {
            Self::Answer => "answer",
            Self::Progress => "progress",
            Self::CallAbort => "call-abort",
            Self::Refusal => "refusal",
            Self::Forwarding => "forwarding",
            Self::Value => "value",
            Self::Memory => "memory",
            Self::Console => "console",
            Self::Dma => "dma",
            Self::Step => "step",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    pub detail: String,
}

impl Violation {
    pub fn new(invariant: Invariant, detail: impl fmt::Display) -> Self {
        Self {
            invariant,
            detail: format!("{detail}"),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant '{}': {}", self.invariant.name(), self.detail)
    }
}

/// A step that kept the ABI, or met a deviation the profile is known to have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    Kept,
    Known(KnownBug),
}

/// What a call's answer means for the caller: resume a range call that stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judged {
    pub note: Note,
    /// x1..x3 of the call that resumes the range.
    pub resume: Option<[u64; 3]>,
}

const KEPT: Judged = Judged {
    note: Note::Kept,
    resume: None,
};

/// Whether an IPA may be registered: certainly, certainly not, or either (the IPA size
/// the hypervisor gives is not fixed by the ABI between 40 and 52 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Can {
    Yes,
    No,
    Either,
}

pub struct Model {
    pub profile: Profile,
    pub granule: u64,
    /// The VM's memory is private unless shared (a protected VM): the host's devices reach
    /// only the pages the guest shared.
    pub private_memory: bool,
    ram: Vec<Region>,
    registered: BTreeSet<u64>,
    shared: BTreeSet<u64>,
    /// The first answer of each call whose answer never changes.
    stable: BTreeMap<u32, Result<[u64; 4], u64>>,
    pub known: u64,
}

fn answer_text(a: &Result<[u64; 4], Fault>) -> String {
    match a {
        Ok([x0, x1, ..]) => format!("x0={x0:#x} x1={x1:#x}"),
        Err(f) => format!("an abort ({f})"),
    }
}

impl Model {
    /// `registered`: the granules the guest registered before the run.
    pub fn new(
        profile: Profile,
        granule: u64,
        ram: Vec<Region>,
        registered: BTreeSet<u64>,
    ) -> Self {
        Self {
            profile,
            granule,
            private_memory: false,
            ram,
            registered,
            shared: BTreeSet::new(),
            stable: BTreeMap::new(),
            known: 0,
        }
    }

    fn granule_of(&self, a: u64) -> u64 {
        a & !(self.granule - 1)
    }

    pub fn is_registered(&self, a: u64) -> bool {
        self.registered.contains(&self.granule_of(a))
    }

    /// The pages the model says are shared now.
    pub fn shared(&self) -> impl Iterator<Item = u64> + '_ {
        self.shared.iter().copied()
    }

    /// Whether the host (its devices) may reach the granule holding `addr`.
    pub fn host_reaches(&self, addr: u64) -> bool {
        !self.private_memory || self.shared.contains(&self.granule_of(addr))
    }

    fn is_ram(&self, base: u64) -> bool {
        let end = base.saturating_add(self.granule);
        self.ram.iter().any(|r| base < r.end() && r.base < end)
    }

    /// Whether a MAP of the granule at `ipa` may succeed.
    fn mappable(&self, ipa: u64) -> Can {
        let g = self.granule;
        let Some(end) = ipa.checked_add(g) else {
            return Can::No;
        };
        if !ipa.is_multiple_of(g) || end > 1 << IPA_MAX_BITS || self.is_ram(ipa) {
            Can::No
        } else if end > 1 << IPA_MIN_BITS {
            Can::Either
        } else {
            Can::Yes
        }
    }

    fn offered(&self, fid: u32) -> bool {
        let p = self.profile;
        match fid {
            abi::HYP_MEMINFO | abi::MEM_SHARE | abi::MEM_UNSHARE => {
                !matches!(p, Profile::None | Profile::Kvm)
            }
            abi::MMIO_GUARD_INFO | abi::MMIO_GUARD_ENROLL | abi::MMIO_GUARD_UNMAP => p.is_android(),
            abi::MMIO_GUARD_MAP => p.has_guard(),
            abi::MMIO_RGUARD_MAP | abi::MMIO_RGUARD_UNMAP => p.has_range(),
            // The SMC32 forms of the pKVM calls are no calls at all.
            0x8600_0002..=0x8600_000b => false,
            _ => true,
        }
    }

    /// Judges one call's answer and updates the model from it.
    pub fn call(
        &mut self,
        fid: u32,
        args: [u64; 3],
        answer: Result<[u64; 4], Fault>,
    ) -> Result<Judged, Violation> {
        let shown = || {
            format!(
                "{}({:#x}, {:#x}, {:#x}) answered {}",
                abi::name(fid),
                args[0],
                args[1],
                args[2],
                answer_text(&answer)
            )
        };
        if !self.offered(fid) {
            return match answer {
                Ok(r) if r[0] as i64 == abi::NOT_SUPPORTED => Ok(KEPT),
                Ok(_) => Err(Violation::new(
                    Invariant::Answer,
                    format_args!(
                        "{} (not offered by profile {}: expected NOT_SUPPORTED)",
                        shown(),
                        self.profile
                    ),
                )),
                Err(_) => Err(Violation::new(
                    Invariant::CallAbort,
                    format_args!("{} (expected NOT_SUPPORTED)", shown()),
                )),
            };
        }
        if let Some(j) = self.share_abort(fid, args, &answer) {
            return Ok(j);
        }
        let r = match answer {
            Ok(r) => r,
            Err(_) if self.stable_call(fid) => [u64::MAX; 4],
            Err(_) => return Err(Violation::new(Invariant::CallAbort, shown())),
        };
        let narrow = fid == abi::MMIO_GUARD_MAP && self.profile.map_error_is_narrow();
        let ret = Ret::decode(r[0], narrow);
        let out = match fid {
            abi::HYP_MEMINFO | abi::MMIO_GUARD_INFO => self.info(args, ret, r),
            abi::MEM_SHARE | abi::MEM_UNSHARE => self.share(fid == abi::MEM_SHARE, args, ret, r[1]),
            abi::MMIO_GUARD_ENROLL => {
                expect(ret == Ret::Success, Invariant::Answer, "expected SUCCESS").map(|_| KEPT)
            }
            abi::MMIO_GUARD_MAP => self.map(args[0], ret, r[1]),
            abi::MMIO_GUARD_UNMAP => self.unmap(args[0], ret, r[1]),
            abi::MMIO_RGUARD_MAP => self.rmap(args, ret, r[1]),
            abi::MMIO_RGUARD_UNMAP => self.runmap(args, ret, r[1]),
            _ => self.stable_answer(fid, answer),
        };
        out.map_err(|(inv, why)| Violation::new(inv, format_args!("{}: {why}", shown())))
    }

    fn stable_call(&self, fid: u32) -> bool {
        !matches!(
            fid,
            abi::HYP_MEMINFO
                | abi::MMIO_GUARD_INFO
                | abi::MEM_SHARE
                | abi::MEM_UNSHARE
                | abi::MMIO_GUARD_ENROLL
                | abi::MMIO_GUARD_MAP
                | abi::MMIO_GUARD_UNMAP
                | abi::MMIO_RGUARD_MAP
                | abi::MMIO_RGUARD_UNMAP
        )
    }

    /// Upstream pKVM's known answer to MEM_SHARE of a device IPA: an abort at the HVC.
    fn share_abort(
        &mut self,
        fid: u32,
        args: [u64; 3],
        answer: &Result<[u64; 4], Fault>,
    ) -> Option<Judged> {
        let bug = KnownBug::ShareMmioAborts;
        let aborted = matches!(answer, Err(f) if f.esr.0 == PKVM_INJECTED_DABT);
        let device =
            args[0].is_multiple_of(self.granule) && !self.is_ram(args[0]) && args[1] | args[2] == 0;
        (fid == abi::MEM_SHARE && aborted && device && self.profile.has_bug(bug)).then(|| {
            self.known += 1;
            Judged {
                note: Note::Known(bug),
                resume: None,
            }
        })
    }

    /// SMCCC_VERSION, PSCI_VERSION, KVM_FEATURES, CALL_UID: the same answer every time.
    fn stable_answer(
        &mut self,
        fid: u32,
        answer: Result<[u64; 4], Fault>,
    ) -> Result<Judged, (Invariant, String)> {
        let words = if fid == abi::SMCCC_VERSION || fid == abi::PSCI_VERSION {
            1
        } else {
            4
        };
        let seen = answer.map(|r| {
            let mut w = [0; 4];
            w[..words].copy_from_slice(&r[..words]);
            w
        });
        let seen = seen.map_err(|f| f.esr.0);
        let first = *self.stable.entry(fid).or_insert(seen);
        expect(
            first == seen,
            Invariant::Answer,
            &format!("the first answer was {first:x?}, a fixed value"),
        )
        .map(|_| KEPT)
    }

    fn info(&self, args: [u64; 3], ret: Ret, r: [u64; 4]) -> Result<Judged, (Invariant, String)> {
        if args != [0; 3] {
            return expect(
                ret == Ret::InvalidParameter,
                Invariant::Answer,
                "reserved arguments non-zero: expected INVALID_PARAMETER",
            )
            .map(|_| KEPT);
        }
        expect(
            r[0] == self.granule,
            Invariant::Answer,
            &format!(
                "expected the granule {:#x} (HYP_MEMINFO at boot)",
                self.granule
            ),
        )?;
        if self.profile == Profile::Android16 {
            expect(
                r[1] == 1,
                Invariant::Progress,
                "android16 answers x1 = 1 (range calls supported)",
            )?;
        }
        Ok(KEPT)
    }

    fn map(&mut self, ipa: u64, ret: Ret, x1: u64) -> Result<Judged, (Invariant, String)> {
        let a16 = self.profile == Profile::Android16;
        match (self.mappable(ipa), ret) {
            (Can::Yes | Can::Either, Ret::Success) => {
                expect(
                    !a16 || x1 == 1,
                    Invariant::Progress,
                    "android16 answers x1 = 1 granule guarded",
                )?;
                self.registered.insert(ipa);
                Ok(KEPT)
            }
            (Can::No | Can::Either, Ret::InvalidParameter) => {
                expect(
                    !a16 || x1 == 0,
                    Invariant::Progress,
                    "x1 = 0 granules guarded with an error",
                )?;
                Ok(KEPT)
            }
            (Can::Yes, _) => Err((
                Invariant::Answer,
                String::from("an aligned device IPA inside the IPA space: expected SUCCESS"),
            )),
            (_, _) => Err((
                Invariant::Answer,
                format!("{}: expected INVALID_PARAMETER", self.why_not(ipa)),
            )),
        }
    }

    fn why_not(&self, ipa: u64) -> &'static str {
        if !ipa.is_multiple_of(self.granule) {
            "misaligned"
        } else if self.is_ram(ipa) {
            "RAM"
        } else {
            "beyond the IPA space"
        }
    }

    fn unmap(&mut self, ipa: u64, ret: Ret, x1: u64) -> Result<Judged, (Invariant, String)> {
        let g = self.granule_of(ipa);
        if self.profile.unmap_is_noop() {
            expect(
                ret == Ret::Success,
                Invariant::Answer,
                "android16's UNMAP answers SUCCESS (a no-op)",
            )?;
            return expect(x1 == 1, Invariant::Progress, "android16 answers x1 = 1").map(|_| KEPT);
        }
        let ok = ipa == g && self.registered.contains(&g);
        if self.profile.unmap_inverted() {
            let want = if ok { Ret::NotSupported } else { Ret::Success };
            expect(
                ret == want,
                Invariant::Answer,
                &format!("android13's inverted UNMAP answers {want} here"),
            )?;
            if ok {
                self.registered.remove(&g);
            }
            self.known += 1;
            return Ok(Judged {
                note: Note::Known(KnownBug::UnmapInverted),
                resume: None,
            });
        }
        if ok {
            expect(
                ret == Ret::Success,
                Invariant::Answer,
                "a registered granule: expected SUCCESS",
            )?;
            self.registered.remove(&g);
        } else {
            let why = if ipa != g {
                "misaligned"
            } else {
                "not registered"
            };
            expect(
                ret == Ret::InvalidParameter,
                Invariant::Answer,
                &format!("{why}: expected INVALID_PARAMETER"),
            )?;
        }
        Ok(KEPT)
    }

    /// RGUARD_MAP of `n` granules: SUCCESS with 1 <= x1 <= the granules that can be
    /// registered before the first that cannot, or INVALID_PARAMETER with x1 = 0 when
    /// the first cannot.
    fn rmap(&mut self, args: [u64; 3], ret: Ret, x1: u64) -> Result<Judged, (Invariant, String)> {
        let [base, n, x3] = args;
        if x3 != 0 || n == 0 {
            expect(
                ret == Ret::InvalidParameter,
                Invariant::Answer,
                "x3 != 0 or a count of 0: expected INVALID_PARAMETER",
            )?;
            return expect(x1 == 0, Invariant::Progress, "x1 = 0 with an error").map(|_| KEPT);
        }
        let g = self.granule;
        let mut most = 0u64;
        while most < n.min(1 << 16) {
            match base.checked_add(most * g).map(|a| self.mappable(a)) {
                Some(Can::Yes | Can::Either) => most += 1,
                _ => break,
            }
        }
        let first = self.mappable(base);
        match ret {
            Ret::Success if first != Can::No => {
                expect(
                    (1..=most.min(n)).contains(&x1),
                    Invariant::Progress,
                    &format!(
                        "SUCCESS needs 1 <= x1 <= {} (the granules that can be registered)",
                        most.min(n)
                    ),
                )?;
                for i in 0..x1 {
                    self.registered.insert(base + i * g);
                }
                let resume = (x1 < n).then(|| [base + x1 * g, n - x1, 0]);
                Ok(Judged {
                    note: Note::Kept,
                    resume,
                })
            }
            Ret::InvalidParameter if first != Can::Yes => {
                expect(x1 == 0, Invariant::Progress, "x1 = 0 with an error").map(|_| KEPT)
            }
            _ if first == Can::Yes => Err((
                Invariant::Answer,
                String::from("its first granule can be registered: expected SUCCESS"),
            )),
            _ => Err((
                Invariant::Answer,
                format!("{}: expected INVALID_PARAMETER", self.why_not(base)),
            )),
        }
    }

    /// RGUARD_UNMAP (android16): a no-op answering SUCCESS with x1 = the granules done.
    fn runmap(&self, args: [u64; 3], ret: Ret, x1: u64) -> Result<Judged, (Invariant, String)> {
        let [_, n, x3] = args;
        if x3 != 0 {
            expect(
                ret == Ret::InvalidParameter,
                Invariant::Answer,
                "x3 != 0: expected INVALID_PARAMETER",
            )?;
            return Ok(KEPT);
        }
        expect(
            ret == Ret::Success,
            Invariant::Answer,
            "android16's RGUARD_UNMAP answers SUCCESS (a no-op)",
        )?;
        let ok = if n == 0 {
            x1 == 0
        } else {
            (1..=n).contains(&x1)
        };
        expect(ok, Invariant::Progress, "x1 = the granules done, 1..=count").map(|_| KEPT)
    }

    /// MEM_SHARE (`share`) or MEM_UNSHARE: the pages from x1 that can be (un)shared, in a
    /// row, are done; SUCCESS when at least one was (android16: x1 = how many, at most
    /// the count asked), INVALID_PARAMETER otherwise.
    fn share(
        &mut self,
        share: bool,
        args: [u64; 3],
        ret: Ret,
        x1: u64,
    ) -> Result<Judged, (Invariant, String)> {
        let a16 = self.profile == Profile::Android16;
        let [ipa, x2, x3] = args;
        let n = match (a16, x2, x3) {
            (_, _, 1..) | (false, 1.., _) => 0,
            (true, _, _) => x2.max(1),
            (false, 0, 0) => 1,
        };
        let g = self.granule;
        let mut can = 0u64;
        while can < n && ipa % g == 0 {
            let Some(page) = ipa.checked_add(can * g) else {
                break;
            };
            if !self.is_ram(page) || self.shared.contains(&page) == share {
                break;
            }
            can += 1;
        }
        if can == 0 {
            let why = match (n, ipa % g, self.is_ram(ipa), share) {
                (0, ..) => "reserved arguments non-zero",
                (_, 1.., ..) => "misaligned",
                (_, _, false, _) => "not RAM",
                (_, _, _, true) => "already shared",
                _ => "not shared",
            };
            return expect(
                ret == Ret::InvalidParameter,
                Invariant::Answer,
                &format!("{why}: expected INVALID_PARAMETER"),
            )
            .map(|_| KEPT);
        }
        expect(
            ret == Ret::Success,
            Invariant::Answer,
            &format!("{can} page(s) can be done: expected SUCCESS"),
        )?;
        let done = if a16 {
            expect(
                (1..=can).contains(&x1),
                Invariant::Progress,
                &format!("x1 = the pages done, 1..={can}"),
            )?;
            x1
        } else {
            1
        };
        for i in 0..done {
            if share {
                self.shared.insert(ipa + i * g);
            } else {
                self.shared.remove(&(ipa + i * g));
            }
        }
        Ok(KEPT)
    }

    /// Judges what an access did. `site` is the instruction that made it.
    pub fn access(&self, op: &Op, site: u64, seen: Observed) -> Result<Note, Violation> {
        let guard = self.profile.has_guard();
        let (addr, size, device, hole) = match *op {
            Op::Read {
                addr,
                width,
                device,
                hole,
                ..
            } => (addr, width.bytes(), device, hole),
            Op::Write { addr, .. } => (addr, 4, None, false),
            Op::Pair { addr } => return self.pair(addr, site, seen),
            Op::Call { .. } | Op::Dma { .. } | Op::Console | Op::Canary => return Ok(Note::Kept),
        };
        let forwarded = !guard || (self.is_registered(addr) && self.is_registered(addr + size - 1));
        if !forwarded {
            let access = StrayAccess {
                addr,
                site,
                device_answer: device,
            };
            return judge_stray(&access, seen).map(|_| Note::Kept).map_err(|d| {
                Violation::new(
                    Invariant::Refusal,
                    format_args!(
                        "access at {addr:#x}, granule {:#x} not registered: {d}",
                        self.granule_of(addr)
                    ),
                )
            });
        }
        let reg = if guard { "registered " } else { "" };
        match seen {
            _ if hole => Ok(Note::Kept),
            Observed::Loaded(v) if device.is_none_or(|d| d == v) => Ok(Note::Kept),
            Observed::Loaded(v) => Err(Violation::new(
                Invariant::Value,
                format_args!(
                    "read of {reg}{addr:#x} returned {v:#x}, the device answers {:#x}",
                    device.unwrap_or(0)
                ),
            )),
            Observed::Stored => Ok(Note::Kept),
            Observed::LoadFaulted { fault, .. } | Observed::StoreFaulted(fault) => {
                Err(Violation::new(
                    Invariant::Forwarding,
                    format_args!("access to {reg}{addr:#x} aborted: {fault}"),
                ))
            }
        }
    }

    fn pair(&self, addr: u64, site: u64, seen: Observed) -> Result<Note, Violation> {
        match (self.profile.no_syndrome(), seen) {
            (NoSyndrome::VmmDecides, _) => Ok(Note::Kept),
            (NoSyndrome::Forwarded, Observed::Loaded(_)) => Ok(Note::Kept),
            (NoSyndrome::Forwarded, s) => Err(Violation::new(
                Invariant::Forwarding,
                format_args!("ldp at {addr:#x} did not complete: {s:?}"),
            )),
            (NoSyndrome::Aborts, s) => {
                let access = StrayAccess {
                    addr,
                    site,
                    device_answer: None,
                };
                judge_stray(&access, s)
                    .map(|_| Note::Kept)
                    .map_err(|d| Violation::new(Invariant::Refusal, format_args!("ldp at {addr:#x} (no valid syndrome, refused even when registered): {d}")))
            }
        }
    }
}

/// What a DMA step saw: whether the device answered within `waited_ms` (and the length it
/// reported written), and whether the buffer changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaSeen {
    pub answered: Option<u32>,
    pub changed: bool,
    pub waited_ms: u64,
}

impl Model {
    /// Judges a request the entropy device was handed at `addr`, unbounced: the host fills
    /// a page it may reach (the device answers, the buffer changes) and never sees a
    /// request into one it may not (no answer, the buffer untouched).
    pub fn dma(&self, addr: u64, seen: DmaSeen) -> Result<Note, Violation> {
        let g = self.granule_of(addr);
        let page = if !self.private_memory {
            format!("page {g:#x} (no private memory: the host reaches every page)")
        } else if self.shared.contains(&g) {
            format!("shared page {g:#x}")
        } else {
            format!("private page {g:#x}")
        };
        let bad = |why: core::fmt::Arguments| {
            Err(Violation::new(
                Invariant::Dma,
                format_args!("a request into {page} at {addr:#x}: {why}"),
            ))
        };
        match (self.host_reaches(addr), seen.answered, seen.changed) {
            (true, Some(_), true) | (false, None, false) => Ok(Note::Kept),
            (true, None, _) => bad(format_args!(
                "the device never answered within {} ms: the host cannot reach it",
                seen.waited_ms
            )),
            (true, Some(n), false) => bad(format_args!(
                "the device answered ({n} bytes written) but the buffer is unchanged"
            )),
            (false, _, true) => bad(format_args!("the device wrote into it")),
            (false, Some(n), false) => bad(format_args!(
                "the device answered ({n} bytes written): the host saw the request"
            )),
        }
    }
}

fn expect(ok: bool, inv: Invariant, why: &str) -> Result<(), (Invariant, String)> {
    if ok {
        Ok(())
    } else {
        Err((inv, String::from(why)))
    }
}

/// The canary or a sharing-pool page: the first word that lost its pattern.
pub fn memory(first_bad: Option<(u64, u64, u64)>) -> Result<(), Violation> {
    match first_bad {
        None => Ok(()),
        Some((addr, got, want)) => Err(Violation::new(
            Invariant::Memory,
            format_args!("the word at {addr:#x} reads {got:#x}, its pattern is {want:#x}"),
        )),
    }
}

/// The console: its page answers a ping, and it had no new incident.
pub fn console(ping: Option<Result<u64, Fault>>, incidents: &[String]) -> Result<(), Violation> {
    if let Some(first) = incidents.first() {
        return Err(Violation::new(
            Invariant::Console,
            format_args!("the console had an incident: {first}"),
        ));
    }
    match ping {
        Some(Err(f)) => Err(Violation::new(
            Invariant::Console,
            format_args!("the console's registered page aborts: {f}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esr::Esr;
    use crate::fuzz::gen::{Width, HUGE};

    const G: u64 = 0x1000;
    const DEV: u64 = 0x901_0000;
    const RAM: u64 = 0x4000_0000;
    const INVAL: u64 = -3i64 as u64;
    const NOSUP: u64 = u64::MAX;

    fn model(p: Profile) -> Model {
        Model::new(
            p,
            G,
            alloc::vec![Region::new(RAM, 0x1000_0000)],
            BTreeSet::new(),
        )
    }
    fn ok(x0: u64, x1: u64) -> Result<[u64; 4], Fault> {
        Ok([x0, x1, 0, 0])
    }
    fn abort() -> Result<[u64; 4], Fault> {
        Err(Fault {
            esr: Esr(PKVM_INJECTED_DABT),
            far: 0,
            elr: 0,
        })
    }
    fn inv(r: Result<Judged, Violation>) -> Option<Invariant> {
        r.err().map(|v| v.invariant)
    }

    #[test]
    fn map_and_unmap_per_generation() {
        let mut m = model(Profile::Android14);
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [DEV, 0, 0], ok(0, 0))),
            None
        );
        assert!(m.is_registered(DEV + 0xfe0));
        // A second MAP succeeds too; RAM, misaligned, beyond 52 bits are refused.
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [DEV, 0, 0], ok(INVAL, 0))),
            Some(Invariant::Answer)
        );
        for bad in [RAM, DEV + 8, 1 << 52, !0xfff] {
            assert_eq!(
                inv(m.call(abi::MMIO_GUARD_MAP, [bad, 0, 0], ok(0, 0))),
                Some(Invariant::Answer),
                "{bad:#x}"
            );
            assert_eq!(
                inv(m.call(abi::MMIO_GUARD_MAP, [bad, 0, 0], ok(INVAL, 0))),
                None
            );
        }
        // Between 40 and 52 bits either answer; SUCCESS registers.
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [1 << 45, 0, 0], ok(INVAL, 0))),
            None
        );
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [1 << 45, 0, 0], ok(0, 0))),
            None
        );
        assert!(m.is_registered(1 << 45));
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [DEV, 0, 0], ok(1, 0))),
            Some(Invariant::Answer)
        );
        // UNMAP: registered 0 and gone; again -3; misaligned -3.
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_UNMAP, [DEV + 8, 0, 0], ok(0, 0))),
            Some(Invariant::Answer)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_UNMAP, [DEV, 0, 0], ok(0, 0))),
            None
        );
        assert!(!m.is_registered(DEV));
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_UNMAP, [DEV, 0, 0], ok(0, 0))),
            Some(Invariant::Answer)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_UNMAP, [DEV, 0, 0], ok(INVAL, 0))),
            None
        );
        assert_eq!(m.known, 0);
        // The call aborting is its own invariant.
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [DEV, 0, 0], abort())),
            Some(Invariant::CallAbort)
        );
    }

    #[test]
    fn android13_known_bugs() {
        let mut m = model(Profile::Android13);
        // MAP's error 32 bits wide is documented for android13 only.
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [RAM, 0, 0], ok(0xffff_fffd, 0))),
            None
        );
        assert_eq!(
            inv(model(Profile::Android14).call(
                abi::MMIO_GUARD_MAP,
                [RAM, 0, 0],
                ok(0xffff_fffd, 0)
            )),
            Some(Invariant::Answer)
        );
        m.call(abi::MMIO_GUARD_MAP, [DEV, 0, 0], ok(0, 0)).unwrap();
        let j = m
            .call(abi::MMIO_GUARD_UNMAP, [DEV, 0, 0], ok(NOSUP, 0))
            .unwrap();
        assert_eq!(j.note, Note::Known(KnownBug::UnmapInverted));
        assert!(!m.is_registered(DEV));
        assert_eq!(
            m.call(abi::MMIO_GUARD_UNMAP, [DEV, 0, 0], ok(0, 0))
                .unwrap()
                .note,
            Note::Known(KnownBug::UnmapInverted)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_UNMAP, [DEV, 0, 0], ok(INVAL, 0))),
            Some(Invariant::Answer)
        );
        assert_eq!(m.known, 2);
        // A misaligned UNMAP fails (SUCCESS, inverted) and leaves the registration.
        m.call(abi::MMIO_GUARD_MAP, [DEV, 0, 0], ok(0, 0)).unwrap();
        m.call(abi::MMIO_GUARD_UNMAP, [DEV + 8, 0, 0], ok(0, 0))
            .unwrap();
        assert!(m.is_registered(DEV));
    }

    #[test]
    fn android16_unmap_is_a_noop_and_ranges_count() {
        let mut m = model(Profile::Android16);
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [DEV, 5, 5], ok(0, 0))),
            Some(Invariant::Progress)
        );
        m.call(abi::MMIO_GUARD_MAP, [DEV, 5, 5], ok(0, 1)).unwrap();
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [RAM, 0, 0], ok(INVAL, 1))),
            Some(Invariant::Progress)
        );
        m.call(abi::MMIO_GUARD_UNMAP, [DEV, 0, 0], ok(0, 1))
            .unwrap();
        assert!(m.is_registered(DEV));
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_UNMAP, [DEV, 0, 0], ok(INVAL, 0))),
            Some(Invariant::Answer)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_UNMAP, [DEV, 0, 0], ok(0, 0))),
            Some(Invariant::Progress)
        );
        // RGUARD_MAP: count 0 or x3 refused; a run, an early stop resumed, x1 bounds.
        let r = 0x900_0000;
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_MAP, [r, 0, 0], ok(INVAL, 0))),
            None
        );
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_MAP, [r, 2, 1], ok(0, 2))),
            Some(Invariant::Answer)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_MAP, [r, 2, 0], ok(0, 0))),
            Some(Invariant::Progress)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_MAP, [r, 2, 0], ok(0, 3))),
            Some(Invariant::Progress)
        );
        let j = m.call(abi::MMIO_RGUARD_MAP, [r, 3, 0], ok(0, 1)).unwrap();
        assert_eq!(j.resume, Some([r + G, 2, 0]));
        assert!(m.is_registered(r) && !m.is_registered(r + G));
        assert_eq!(
            m.call(abi::MMIO_RGUARD_MAP, [r + G, 2, 0], ok(0, 2))
                .unwrap()
                .resume,
            None
        );
        assert!(m.is_registered(r + 2 * G));
        // A huge run below RAM stops at RAM: at most 2 granules, then -3.
        let below = RAM - 2 * G;
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_MAP, [below, HUGE, 0], ok(0, 3))),
            Some(Invariant::Progress)
        );
        assert_eq!(
            m.call(abi::MMIO_RGUARD_MAP, [below, HUGE, 0], ok(0, 2))
                .unwrap()
                .resume,
            Some([RAM, HUGE - 2, 0])
        );
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_MAP, [RAM, 5, 0], ok(0, 1))),
            Some(Invariant::Answer)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_MAP, [RAM, 5, 0], ok(INVAL, 1))),
            Some(Invariant::Progress)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_MAP, [r, 1, 0], ok(INVAL, 0))),
            Some(Invariant::Answer)
        );
        // RGUARD_UNMAP: SUCCESS, x1 in 1..=count.
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_UNMAP, [r, 4, 0], ok(0, 4))),
            None
        );
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_UNMAP, [r, 0, 0], ok(0, 0))),
            None
        );
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_UNMAP, [r, 4, 0], ok(0, 5))),
            Some(Invariant::Progress)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_UNMAP, [r, 4, 0], ok(0, 0))),
            Some(Invariant::Progress)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_UNMAP, [r, 4, 1], ok(0, 4))),
            Some(Invariant::Answer)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_RGUARD_UNMAP, [r, 4, 1], ok(INVAL, 0))),
            None
        );
        assert!(m.is_registered(r));
    }

    #[test]
    fn calls_a_profile_does_not_offer_answer_not_supported() {
        let mut up = model(Profile::Upstream);
        for fid in [
            abi::MMIO_GUARD_UNMAP,
            abi::MMIO_GUARD_ENROLL,
            abi::MMIO_GUARD_INFO,
            abi::MMIO_RGUARD_MAP,
            0x8600_0003,
        ] {
            assert_eq!(inv(up.call(fid, [DEV, 0, 0], ok(NOSUP, 0))), None);
            assert_eq!(
                inv(up.call(fid, [DEV, 0, 0], ok(0, 0))),
                Some(Invariant::Answer)
            );
            assert_eq!(
                inv(up.call(fid, [DEV, 0, 0], abort())),
                Some(Invariant::CallAbort)
            );
        }
        let mut kvm = model(Profile::Kvm);
        for fid in [abi::HYP_MEMINFO, abi::MEM_SHARE, abi::MMIO_GUARD_MAP] {
            assert_eq!(inv(kvm.call(fid, [0; 3], ok(NOSUP, 0))), None);
            assert_eq!(
                inv(kvm.call(fid, [0; 3], ok(0, 0))),
                Some(Invariant::Answer)
            );
        }
    }

    #[test]
    fn info_and_stable_calls() {
        let mut m = model(Profile::Android16);
        assert_eq!(inv(m.call(abi::HYP_MEMINFO, [0; 3], ok(G, 1))), None);
        assert_eq!(
            inv(m.call(abi::HYP_MEMINFO, [0; 3], ok(G, 0))),
            Some(Invariant::Progress)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_INFO, [0; 3], ok(0x10000, 1))),
            Some(Invariant::Answer)
        );
        assert_eq!(
            inv(m.call(abi::HYP_MEMINFO, [1, 0, 0], ok(G, 1))),
            Some(Invariant::Answer)
        );
        assert_eq!(inv(m.call(abi::HYP_MEMINFO, [0, 0, 1], ok(INVAL, 0))), None);
        assert_eq!(
            inv(model(Profile::Android14).call(abi::HYP_MEMINFO, [0; 3], ok(G, 0))),
            None
        );
        assert_eq!(inv(m.call(abi::MMIO_GUARD_ENROLL, [0; 3], ok(0, 0))), None);
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_ENROLL, [0; 3], ok(INVAL, 0))),
            Some(Invariant::Answer)
        );
        // The first answer of SMCCC_VERSION (x0 only) and KVM_FEATURES (x0..x3) holds.
        assert_eq!(
            inv(m.call(abi::SMCCC_VERSION, [0; 3], Ok([0x10002, 7, 0, 0]))),
            None
        );
        assert_eq!(
            inv(m.call(abi::SMCCC_VERSION, [0; 3], Ok([0x10002, 9, 0, 0]))),
            None
        );
        assert_eq!(
            inv(m.call(abi::SMCCC_VERSION, [0; 3], ok(0x10001, 0))),
            Some(Invariant::Answer)
        );
        assert_eq!(
            inv(m.call(abi::KVM_FEATURES, [0; 3], Ok([0xdfd, 0, 0, 0]))),
            None
        );
        assert_eq!(
            inv(m.call(abi::KVM_FEATURES, [0; 3], Ok([0xdfd, 0, 0, 1]))),
            Some(Invariant::Answer)
        );
        assert_eq!(inv(m.call(abi::PSCI_VERSION, [0; 3], abort())), None);
        assert_eq!(inv(m.call(abi::PSCI_VERSION, [0; 3], abort())), None);
        assert_eq!(
            inv(m.call(abi::PSCI_VERSION, [0; 3], ok(0x10001, 0))),
            Some(Invariant::Answer)
        );
    }

    #[test]
    fn sharing() {
        let mut m = model(Profile::Android14);
        let p = RAM + 0x10_0000;
        assert_eq!(
            inv(m.call(abi::MEM_UNSHARE, [p, 0, 0], ok(0, 0))),
            Some(Invariant::Answer)
        );
        assert_eq!(inv(m.call(abi::MEM_SHARE, [p, 0, 0], ok(0, 0))), None);
        assert_eq!(m.shared().collect::<Vec<_>>(), [p]);
        assert_eq!(
            inv(m.call(abi::MEM_SHARE, [p, 0, 0], ok(0, 0))),
            Some(Invariant::Answer)
        );
        assert_eq!(inv(m.call(abi::MEM_SHARE, [p, 0, 0], ok(INVAL, 0))), None);
        for bad in [[p + G + 8, 0, 0], [p + G, 1, 0], [p + G, 0, 1], [DEV, 0, 0]] {
            assert_eq!(
                inv(m.call(abi::MEM_SHARE, bad, ok(0, 0))),
                Some(Invariant::Answer),
                "{bad:x?}"
            );
            assert_eq!(inv(m.call(abi::MEM_SHARE, bad, ok(INVAL, 0))), None);
        }
        assert_eq!(
            inv(m.call(abi::MEM_UNSHARE, [p + 8, 0, 0], ok(0, 0))),
            Some(Invariant::Answer)
        );
        assert_eq!(
            inv(m.call(abi::MEM_UNSHARE, [p, 0, 0], ok(INVAL, 0))),
            Some(Invariant::Answer)
        );
        assert_eq!(inv(m.call(abi::MEM_UNSHARE, [p, 0, 0], ok(0, 0))), None);
        assert_eq!(m.shared().count(), 0);
        // Only pkvm's abort at the HVC for a device page is a known bug.
        assert_eq!(
            inv(m.call(abi::MEM_SHARE, [DEV, 0, 0], abort())),
            Some(Invariant::CallAbort)
        );
        let mut pk = model(Profile::Pkvm);
        assert_eq!(
            pk.call(abi::MEM_SHARE, [DEV, 0, 0], abort()).unwrap().note,
            Note::Known(KnownBug::ShareMmioAborts)
        );
        assert_eq!(
            inv(pk.call(abi::MEM_SHARE, [DEV, 0, 0], ok(INVAL, 0))),
            None
        );
        assert_eq!(
            inv(pk.call(abi::MEM_SHARE, [p, 0, 0], abort())),
            Some(Invariant::CallAbort)
        );
        assert_eq!(
            inv(pk.call(abi::MEM_SHARE, [DEV, 1, 0], abort())),
            Some(Invariant::CallAbort)
        );
        assert_eq!(pk.known, 1);
    }

    #[test]
    fn android16_share_counts() {
        let mut m = model(Profile::Android16);
        let p = RAM + 0x10_0000;
        assert_eq!(
            inv(m.call(abi::MEM_SHARE, [p, 0, 0], ok(0, 0))),
            Some(Invariant::Progress)
        );
        assert_eq!(inv(m.call(abi::MEM_SHARE, [p, 0, 0], ok(0, 1))), None);
        // p is shared: a run of 3 from p + G shares 3; from p none.
        assert_eq!(inv(m.call(abi::MEM_SHARE, [p, 3, 0], ok(INVAL, 0))), None);
        assert_eq!(
            inv(m.call(abi::MEM_SHARE, [p + G, 3, 0], ok(0, 4))),
            Some(Invariant::Progress)
        );
        assert_eq!(inv(m.call(abi::MEM_SHARE, [p + G, 3, 0], ok(0, 3))), None);
        assert_eq!(m.shared().count(), 4);
        assert_eq!(
            inv(m.call(abi::MEM_SHARE, [p + G, 3, 1], ok(INVAL, 0))),
            None
        );
        // A huge UNSHARE stops at the first private page.
        assert_eq!(
            inv(m.call(abi::MEM_UNSHARE, [p + G, HUGE, 0], ok(0, 4))),
            Some(Invariant::Progress)
        );
        assert_eq!(
            inv(m.call(abi::MEM_UNSHARE, [p + G, HUGE, 0], ok(0, 3))),
            None
        );
        assert_eq!(m.shared().collect::<Vec<_>>(), [p]);
    }

    fn read(addr: u64, device: Option<u64>) -> Op {
        Op::Read {
            addr,
            width: Width::W32,
            signed: false,
            device,
            hole: false,
        }
    }
    fn refused(addr: u64, site: u64) -> Observed {
        Observed::LoadFaulted {
            fault: Fault {
                esr: Esr(PKVM_INJECTED_DABT),
                far: addr,
                elr: site,
            },
            dest: 0,
            untouched: true,
        }
    }
    fn acc(m: &Model, op: Op, seen: Observed) -> Option<Invariant> {
        m.access(&op, 0x100, seen).err().map(|v| v.invariant)
    }

    #[test]
    fn accesses_forwarded_iff_registered() {
        let mut m = model(Profile::Android14);
        let a = DEV + 0xfe0;
        assert_eq!(acc(&m, read(a, Some(0x31)), refused(a, 0x100)), None);
        assert_eq!(
            acc(&m, read(a, Some(0x31)), Observed::Loaded(0x31)),
            Some(Invariant::Refusal)
        );
        assert_eq!(
            acc(&m, read(a, Some(0x31)), refused(DEV, 0x100)),
            Some(Invariant::Refusal)
        );
        m.call(abi::MMIO_GUARD_MAP, [DEV, 0, 0], ok(0, 0)).unwrap();
        assert_eq!(acc(&m, read(a, Some(0x31)), Observed::Loaded(0x31)), None);
        assert_eq!(
            acc(&m, read(a, Some(0x31)), Observed::Loaded(0)),
            Some(Invariant::Value)
        );
        assert_eq!(acc(&m, read(a, None), Observed::Loaded(0)), None);
        assert_eq!(
            acc(&m, read(a, Some(0x31)), refused(a, 0x100)),
            Some(Invariant::Forwarding)
        );
        // The last byte's granule counts too.
        let wide = Op::Read {
            addr: DEV + 0xffc,
            width: Width::W64,
            signed: false,
            device: None,
            hole: false,
        };
        assert_eq!(acc(&m, wide, Observed::Loaded(0)), Some(Invariant::Refusal));
        // Writes; a registered hole may answer anything.
        let w = Op::Write {
            addr: DEV + 4,
            value: 1,
        };
        assert_eq!(acc(&m, w, Observed::Stored), None);
        assert_eq!(
            acc(
                &m,
                w,
                Observed::StoreFaulted(Fault {
                    esr: Esr(PKVM_INJECTED_DABT),
                    far: 0,
                    elr: 0
                })
            ),
            Some(Invariant::Forwarding)
        );
        let w2 = Op::Write {
            addr: 0x903_0004,
            value: 1,
        };
        assert_eq!(acc(&m, w2, Observed::Stored), Some(Invariant::Refusal));
        let hole = Op::Read {
            addr: DEV + 0xfe0,
            width: Width::W32,
            signed: false,
            device: None,
            hole: true,
        };
        assert_eq!(acc(&m, hole, refused(0, 0)), None);
        // No guard: everything is forwarded.
        let none = model(Profile::Pkvm);
        assert_eq!(
            acc(&none, read(a, Some(0x31)), Observed::Loaded(0x31)),
            None
        );
        assert_eq!(
            acc(&none, read(a, Some(0x31)), refused(a, 0x100)),
            Some(Invariant::Forwarding)
        );
        assert_eq!(acc(&none, Op::Console, Observed::Stored), None);
    }

    #[test]
    fn load_pairs_per_profile() {
        let m = model(Profile::Android14);
        let p = Op::Pair { addr: DEV };
        assert_eq!(acc(&m, p, refused(DEV, 0x100)), None);
        assert_eq!(acc(&m, p, Observed::Loaded(5)), Some(Invariant::Refusal));
        assert_eq!(acc(&model(Profile::None), p, Observed::Loaded(5)), None);
        assert_eq!(
            acc(&model(Profile::None), p, refused(DEV, 0x100)),
            Some(Invariant::Forwarding)
        );
        assert_eq!(acc(&model(Profile::Kvm), p, refused(DEV, 0x100)), None);
    }

    #[test]
    fn memory_console_and_names() {
        assert_eq!(memory(None), Ok(()));
        assert_eq!(
            memory(Some((1, 2, 3))).unwrap_err().invariant,
            Invariant::Memory
        );
        assert_eq!(console(Some(Ok(0)), &[]), Ok(()));
        assert_eq!(console(None, &[]), Ok(()));
        assert_eq!(
            console(Some(Ok(0)), &[String::from("x")])
                .unwrap_err()
                .invariant,
            Invariant::Console
        );
        let f = Fault {
            esr: Esr(PKVM_INJECTED_DABT),
            far: 0,
            elr: 0,
        };
        assert_eq!(
            console(Some(Err(f)), &[]).unwrap_err().invariant,
            Invariant::Console
        );
        let names: BTreeSet<&str> = [
            Invariant::Answer,
            Invariant::Progress,
            Invariant::CallAbort,
            Invariant::Refusal,
            Invariant::Forwarding,
            Invariant::Value,
            Invariant::Memory,
            Invariant::Console,
            Invariant::Dma,
            Invariant::Step,
        ]
        .iter()
        .map(|i| i.name())
        .collect();
        assert_eq!(names.len(), 10);
        assert_eq!(
            format!("{}", Violation::new(Invariant::Value, "x")),
            "invariant 'value': x"
        );
    }

    /// DMA: a protected VM's device reaches exactly the pages it shared; an ordinary VM's
    /// reaches every page.
    #[test]
    fn dma_reaches_shared_pages_only_when_memory_is_private() {
        let seen = |answered: Option<u32>, changed: bool| DmaSeen {
            answered,
            changed,
            waited_ms: 500,
        };
        let filled = seen(Some(32), true);
        let silent = seen(None, false);
        let judge = |m: &Model, addr: u64, s: DmaSeen| m.dma(addr, s).err().map(|v| v.invariant);
        let mut m = model(Profile::Android14);
        m.private_memory = true;
        let page = RAM + 0x10_0000;
        assert_eq!(inv(m.call(abi::MEM_SHARE, [page, 0, 0], ok(0, 0))), None);
        // Shared: filled, at any offset of the granule.
        assert!(m.host_reaches(page + 0x100) && !m.host_reaches(page + G));
        assert_eq!(judge(&m, page + 0x100, filled), None);
        for wrong in [silent, seen(Some(32), false), seen(None, true)] {
            assert_eq!(
                judge(&m, page + 0x100, wrong),
                Some(Invariant::Dma),
                "{wrong:?}"
            );
        }
        // Private: never answered, never written.
        assert_eq!(judge(&m, page + G, silent), None);
        for wrong in [filled, seen(Some(0), false), seen(None, true)] {
            assert_eq!(
                judge(&m, page + G, wrong),
                Some(Invariant::Dma),
                "{wrong:?}"
            );
        }
        let d = m.dma(page + G + 8, filled).unwrap_err().detail;
        assert!(
            d.contains(&format!(
                "private page {:#x} at {:#x}",
                page + G,
                page + G + 8
            )),
            "{d}"
        );
        let d = m.dma(page, silent).unwrap_err().detail;
        assert!(d.contains("shared page") && d.contains("500 ms"), "{d}");
        // Unshared again: private again.
        assert_eq!(inv(m.call(abi::MEM_UNSHARE, [page, 0, 0], ok(0, 0))), None);
        assert!(!m.host_reaches(page));
        assert_eq!(judge(&m, page, filled), Some(Invariant::Dma));
        // Without private memory every page is the host's, shared or not.
        let open = model(Profile::Kvm);
        assert!(open.host_reaches(page + G));
        assert_eq!(judge(&open, page + G, filled), None);
        assert_eq!(judge(&open, page + G, silent), Some(Invariant::Dma));
        let d = open.dma(page, silent).unwrap_err().detail;
        assert!(d.contains("no private memory"), "{d}");
    }

    #[test]
    fn the_granule_at_the_end_of_ram_is_not_ram() {
        // RAM is [RAM, RAM + 0x1000_0000): the granule that starts at its end is a device
        // IPA like any other, and MAP of it must succeed.
        let end = RAM + 0x1000_0000;
        let mut m = model(Profile::Android14);
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [end, 0, 0], ok(INVAL, 0))),
            Some(Invariant::Answer)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [end, 0, 0], ok(0, 0))),
            None
        );
        assert!(m.is_registered(end));
        // The last granule of RAM is RAM.
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [end - G, 0, 0], ok(0, 0))),
            Some(Invariant::Answer)
        );
    }

    #[test]
    fn the_last_granule_below_2_pow_52_may_be_registered() {
        // The IPA space is 40 to 52 bits: the granule that ends at 2^52 may be registered
        // or refused; the one that starts there may only be refused.
        let last = (1u64 << 52) - G;
        let mut m = model(Profile::Android14);
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [last, 0, 0], ok(INVAL, 0))),
            None
        );
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [last, 0, 0], ok(0, 0))),
            None
        );
        assert!(m.is_registered(last));
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [last + G, 0, 0], ok(0, 0))),
            Some(Invariant::Answer)
        );
    }

    #[test]
    fn the_last_granule_below_2_pow_40_must_be_registered() {
        // Every IPA space is at least 40 bits: the granule that ends at 2^40 is inside it,
        // so refusing its MAP breaks the ABI; the one that starts at 2^40 may be refused.
        let last = (1u64 << 40) - G;
        let mut m = model(Profile::Android14);
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [last, 0, 0], ok(INVAL, 0))),
            Some(Invariant::Answer)
        );
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [last, 0, 0], ok(0, 0))),
            None
        );
        assert_eq!(
            inv(m.call(abi::MMIO_GUARD_MAP, [last + G, 0, 0], ok(INVAL, 0))),
            None
        );
    }

    #[test]
    fn enroll_must_succeed_the_first_time_too() {
        // ENROLL answers SUCCESS, every time: a first ENROLL that is refused or not
        // supported is an answer the ABI does not document, not a value to keep.
        for x0 in [INVAL, NOSUP] {
            let mut m = model(Profile::Android14);
            assert_eq!(
                inv(m.call(abi::MMIO_GUARD_ENROLL, [0; 3], ok(x0, 0))),
                Some(Invariant::Answer),
                "{x0:#x}"
            );
            assert_eq!(inv(m.call(abi::MMIO_GUARD_ENROLL, [0; 3], ok(0, 0))), None);
        }
    }

    #[test]
    fn pkvm_share_abort_is_known_only_with_zero_reserved_arguments() {
        // pKVM refuses MEM_SHARE with x2 or x3 non-zero before it looks at the IPA, so an
        // abort there is not the known device-page bug, even when x2 == x3.
        let mut pk = model(Profile::Pkvm);
        for args in [[DEV, 1, 1], [DEV, 2, 2], [DEV, 1, 2]] {
            assert_eq!(
                inv(pk.call(abi::MEM_SHARE, args, abort())),
                Some(Invariant::CallAbort),
                "{args:x?}"
            );
        }
        assert_eq!(pk.known, 0);
        assert_eq!(
            pk.call(abi::MEM_SHARE, [DEV, 0, 0], abort()).unwrap().note,
            Note::Known(KnownBug::ShareMmioAborts)
        );
        assert_eq!(pk.known, 1);
    }

    #[test]
    fn a_refused_map_answers_x1_0_on_android16_and_x1_is_free_before() {
        // android16 documents x1 = 0 granules guarded with MAP's error; the earlier
        // generations document x0 alone.
        let mut a16 = model(Profile::Android16);
        assert_eq!(
            inv(a16.call(abi::MMIO_GUARD_MAP, [RAM, 0, 0], ok(INVAL, 0))),
            None
        );
        assert_eq!(
            inv(a16.call(abi::MMIO_GUARD_MAP, [DEV + 8, 0, 0], ok(INVAL, 0))),
            None
        );
        let mut a14 = model(Profile::Android14);
        assert_eq!(
            inv(a14.call(abi::MMIO_GUARD_MAP, [RAM, 0, 0], ok(INVAL, 7))),
            None
        );
    }

    #[test]
    fn an_access_ending_at_a_registered_granules_end_is_forwarded() {
        // The last byte decides, not the byte after it: a read or write that ends exactly
        // at the end of a registered granule reaches the device even though the next
        // granule is not registered.
        let mut m = model(Profile::Android14);
        m.call(abi::MMIO_GUARD_MAP, [DEV, 0, 0], ok(0, 0)).unwrap();
        assert!(!m.is_registered(DEV + G));
        for (addr, width) in [(DEV + 0xffc, Width::W32), (DEV + 0xff8, Width::W64)] {
            let r = Op::Read {
                addr,
                width,
                signed: false,
                device: Some(0x31),
                hole: false,
            };
            assert_eq!(acc(&m, r, Observed::Loaded(0x31)), None, "{addr:#x}");
            assert_eq!(
                acc(&m, r, refused(addr, 0x100)),
                Some(Invariant::Forwarding),
                "{addr:#x}"
            );
        }
        let w = Op::Write {
            addr: DEV + 0xffc,
            value: 1,
        };
        assert_eq!(acc(&m, w, Observed::Stored), None);
    }
}
