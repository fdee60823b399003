//! The MMIO guard as a capability (vmbase's `MmioGuardedHypervisor` is the model): the
//! granule, ENROLL, and MAP/UNMAP of a run of granules. Every ABI generation's quirks
//! live here and nowhere else, so the ioremap layer above calls `map`/`unmap` and never
//! asks which generation it runs on:
//! - android13: MAP returns its error 32 bits wide (0x00000000fffffffd for -3), and UNMAP
//!   answers NOT_SUPPORTED on success and SUCCESS on failure (b/277860860).
//! - android14: INFO, ENROLL, MAP, UNMAP, one granule per call.
//! - android16: also MMIO_RGUARD_MAP/UNMAP (func 10/11) over a run of granules; UNMAP
//!   answers success but the page stays forwarded (which is the checks' business).
//! - upstream: MAP (func 7) only; registration needs no ENROLL and cannot be undone.
//!
//! Each call is reported to an observer, if one is installed, so that the code that
//! needs to know which pages may be registered (the suite's probe bookkeeping) learns it
//! without this layer knowing that code.

use crate::fault::Fault;
use crate::hyp::abi::{self, Ret};
use core::fmt;
use spin::Once;

use super::{conduit, judged_call, Reading};

/// Which ABI generation of the guard the hypervisor speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    Android13,
    Android14,
    Android16,
    Upstream,
}

/// The guard of a hypervisor that offers one, with a usable granule.
#[derive(Debug)]
pub struct MmioGuard {
    generation: Generation,
    granule: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardOp {
    Map,
    Unmap,
}

/// One guard hypercall and its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardCall {
    pub op: GuardOp,
    /// The first granule and how many the call covered.
    pub base: u64,
    pub count: u64,
    /// The guard granule.
    pub granule: u64,
    pub answer: Result<Ret, Fault>,
    /// Whether the answer means success in this generation's ABI.
    pub succeeded: bool,
}

/// A guard call that did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardError {
    pub op: GuardOp,
    pub granule: u64,
    /// Granules the call was asked for: more than one only for a range call.
    pub count: Option<u64>,
    pub answer: Result<Ret, Fault>,
}

impl fmt::Display for GuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = match (self.op, self.count) {
            (GuardOp::Map, None) => "MMIO_GUARD_MAP",
            (GuardOp::Unmap, None) => "MMIO_GUARD_UNMAP",
            (GuardOp::Map, Some(_)) => "MMIO_RGUARD_MAP",
            (GuardOp::Unmap, Some(_)) => "MMIO_RGUARD_UNMAP",
        };
        let args = match self.count {
            Some(n) => alloc::format!("{:#x}, {n}", self.granule),
            None => alloc::format!("{:#x}", self.granule),
        };
        match self.answer {
            Ok(r) => write!(f, "{call}({args}) answered {r}",),
            Err(fault) => write!(f, "{call}({args}) aborted: {fault}"),
        }
    }
}

static OBSERVER: Once<fn(&GuardCall)> = Once::new();

/// Installs the one observer of guard calls.
pub fn observe(f: fn(&GuardCall)) {
    OBSERVER.call_once(|| f);
}

fn report(call: GuardCall) -> GuardCall {
    if let Some(f) = OBSERVER.get() {
        f(&call);
    }
    call
}

impl MmioGuard {
    /// The guard of `generation` with `granule`, which discovery checked.
    pub(super) fn new(generation: Generation, granule: u64) -> Self {
        Self {
            generation,
            granule,
        }
    }

    pub fn granule(&self) -> u64 {
        self.granule
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// ENROLL exists (the Android generations); upstream's guard needs none.
    pub fn has_enroll(&self) -> bool {
        self.generation != Generation::Upstream
    }

    /// UNMAP exists (the Android generations).
    pub fn has_unmap(&self) -> bool {
        self.generation != Generation::Upstream
    }

    /// One call registers a run of granules (android16's range calls).
    pub fn has_range(&self) -> bool {
        self.generation == Generation::Android16
    }

    /// How this generation writes a guard call's answer.
    fn reading(&self, range: Option<u64>) -> Reading {
        Reading {
            narrow: self.generation == Generation::Android13,
            inverted_unmap: self.generation == Generation::Android13,
            range,
        }
    }

    /// MMIO_GUARD_ENROLL, as answered.
    pub fn enroll(&self) -> Result<Ret, Fault> {
        judged_call(abi::MMIO_GUARD_ENROLL, [0; 3], self.reading(None)).map(|(r, _)| r)
    }

    /// MMIO_GUARD_INFO's x0 (the Android generations).
    pub fn info(&self) -> Result<u64, Fault> {
        conduit::call(abi::MMIO_GUARD_INFO, [0; 3]).map(|r| r[0])
    }

    /// One MMIO_GUARD_MAP (func 7) of `ipa` with x2, x3 as given (android16 ignores them),
    /// as answered (read as android13 writes it there): for checks that judge the answer.
    pub fn map_call(&self, ipa: u64, x2: u64, x3: u64) -> Result<(Ret, u64), Fault> {
        let answer = judged_call(abi::MMIO_GUARD_MAP, [ipa, x2, x3], self.reading(None));
        let status = answer.map(|(r, _)| r);
        report(GuardCall {
            op: GuardOp::Map,
            base: ipa,
            count: 1,
            granule: self.granule,
            answer: status,
            succeeded: status == Ok(Ret::Success),
        });
        answer
    }

    /// One MMIO_GUARD_MAP (func 7) of `ipa`, as answered.
    pub fn map_granule(&self, ipa: u64) -> Result<Ret, Fault> {
        self.map_call(ipa, 0, 0).map(|(r, _)| r)
    }

    /// One MMIO_GUARD_UNMAP (func 8) of `ipa`, as answered (android13's inverted answer
    /// is the caller's to judge).
    pub fn unmap_granule(&self, ipa: u64) -> Result<Ret, Fault> {
        let mut how = self.reading(None);
        how.narrow = false;
        let answer = judged_call(abi::MMIO_GUARD_UNMAP, [ipa, 0, 0], how).map(|(r, _)| r);
        report(GuardCall {
            op: GuardOp::Unmap,
            base: ipa,
            count: 1,
            granule: self.granule,
            answer,
            succeeded: self.unmap_succeeded(answer),
        })
        .answer
    }

    fn unmap_succeeded(&self, answer: Result<Ret, Fault>) -> bool {
        let success = if self.generation == Generation::Android13 {
            Ret::NotSupported
        } else {
            Ret::Success
        };
        answer == Ok(success)
    }

    /// One range call (MMIO_RGUARD_MAP or _UNMAP) over `count` granules from `base`, with
    /// x3 as given (it must be 0): the status and how many granules it did (x1), as
    /// answered. Reported to the observer for the granules it says it did.
    pub fn range_call(
        &self,
        op: GuardOp,
        base: u64,
        count: u64,
        x3: u64,
    ) -> Result<(Ret, u64), Fault> {
        let fid = match op {
            GuardOp::Map => abi::MMIO_RGUARD_MAP,
            GuardOp::Unmap => abi::MMIO_RGUARD_UNMAP,
        };
        let mut how = self.reading(Some(count));
        how.narrow = false;
        let answer = judged_call(fid, [base, count, x3], how);
        let status = answer.map(|(r, _)| r);
        let done = answer.map_or(0, |(_, x1)| x1.min(count));
        report(GuardCall {
            op,
            base,
            // A failed call may still have registered something: count all it was asked.
            count: if status == Ok(Ret::Success) {
                done
            } else {
                count
            },
            granule: self.granule,
            answer: status,
            succeeded: status == Ok(Ret::Success),
        });
        answer
    }

    /// A run through range calls, resuming after the granules each call says it did
    /// (§10.1: the hypervisor may stop early; x1 = 0 comes with an error).
    fn range(&self, op: GuardOp, base: u64, count: u64) -> Result<(), GuardError> {
        let mut done = 0;
        while done < count {
            let at = base + done * self.granule;
            let answer = self.range_call(op, at, count - done, 0);
            match answer {
                Ok((Ret::Success, x1)) if (1..=count - done).contains(&x1) => done += x1,
                other => {
                    return Err(GuardError {
                        op,
                        granule: at,
                        count: Some(count - done),
                        answer: other.map(|(r, _)| r),
                    })
                }
            }
        }
        Ok(())
    }

    /// Registers `count` granules from `base`: range calls where the ABI has them, else
    /// one MAP per granule. On a refusal the granules this call registered are
    /// unregistered again, so the run is registered as a whole or not at all.
    pub fn map(&self, base: u64, count: u64) -> Result<(), GuardError> {
        if self.has_range() {
            return self.range(GuardOp::Map, base, count);
        }
        for i in 0..count {
            let ipa = base + i * self.granule;
            let answer = self.map_granule(ipa);
            if answer != Ok(Ret::Success) {
                let _ = self.unmap(base, i);
                return Err(GuardError {
                    op: GuardOp::Map,
                    granule: ipa,
                    count: None,
                    answer,
                });
            }
        }
        Ok(())
    }

    /// Unregisters `count` granules from `base` (nothing to do where the ABI has no
    /// UNMAP). Every granule is tried; the first refusal is returned.
    pub fn unmap(&self, base: u64, count: u64) -> Result<(), GuardError> {
        if !self.has_unmap() || count == 0 {
            return Ok(());
        }
        if self.has_range() {
            return self.range(GuardOp::Unmap, base, count);
        }
        let mut first = Ok(());
        for i in 0..count {
            let ipa = base + i * self.granule;
            let answer = self.unmap_granule(ipa);
            if !self.unmap_succeeded(answer) && first.is_ok() {
                first = Err(GuardError {
                    op: GuardOp::Unmap,
                    granule: ipa,
                    count: None,
                    answer,
                });
            }
        }
        first
    }
}
