//! Memory sharing as a capability (vmbase's `MemSharingHypervisor` is the model): the
//! granule, and MEM_SHARE / MEM_UNSHARE of a granule of guest memory. Present when the
//! hypervisor is KVM and advertises both calls.

use crate::fault::Fault;
use crate::hyp::abi::{self, Ret};
use core::fmt;

#[derive(Debug)]
pub struct MemSharer {
    granule: u64,
}

/// A share or unshare that did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareError {
    pub call: &'static str,
    pub ipa: u64,
    pub answer: Result<Ret, Fault>,
}

impl fmt::Display for ShareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.answer {
            Ok(r) => write!(f, "{}({:#x}) answered {r}", self.call, self.ipa),
            Err(fault) => write!(f, "{}({:#x}) aborted: {fault}", self.call, self.ipa),
        }
    }
}

impl MemSharer {
    pub(super) fn new(granule: u64) -> Self {
        Self { granule }
    }

    /// The sharing granule (HYP_MEMINFO).
    pub fn granule(&self) -> u64 {
        self.granule
    }

    /// MEM_SHARE with x1..x3 as given, as answered: for checks that judge the answer.
    pub fn share_call(&self, ipa: u64, x2: u64, x3: u64) -> Result<Ret, Fault> {
        super::judged_call(abi::MEM_SHARE, [ipa, x2, x3], Default::default()).map(|(r, _)| r)
    }

    /// MEM_UNSHARE with x1..x3 as given, as answered.
    pub fn unshare_call(&self, ipa: u64, x2: u64, x3: u64) -> Result<Ret, Fault> {
        super::judged_call(abi::MEM_UNSHARE, [ipa, x2, x3], Default::default()).map(|(r, _)| r)
    }

    /// Shares the granule at `ipa` with the host.
    pub fn share(&self, ipa: u64) -> Result<(), ShareError> {
        judged("MEM_SHARE", ipa, self.share_call(ipa, 0, 0))
    }

    /// Takes the granule at `ipa` back from the host.
    pub fn unshare(&self, ipa: u64) -> Result<(), ShareError> {
        judged("MEM_UNSHARE", ipa, self.unshare_call(ipa, 0, 0))
    }
}

fn judged(call: &'static str, ipa: u64, answer: Result<Ret, Fault>) -> Result<(), ShareError> {
    match answer {
        Ok(Ret::Success) => Ok(()),
        answer => Err(ShareError { call, ipa, answer }),
    }
}
