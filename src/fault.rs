//! A synchronous exception as the guest saw it: syndrome, fault address and the address
//! of the instruction that took it. Pure data, shared by the exception layer (which
//! records it) and the judgements (which compare it with what pKVM must inject).

use crate::esr::Esr;
use core::fmt;

/// A fault the exception handler recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub esr: Esr,
    pub far: u64,
    pub elr: u64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} FAR={:#x} ELR={:#x}", self.esr, self.far, self.elr)
    }
}
