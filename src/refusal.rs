//! The judgement at the heart of the suite: is what came back from an access to a page
//! the hypervisor must refuse exactly the abort pKVM injects (pkvm-abi.md §3)?
//! ESR_EL1 = 0x96000010 (data abort from the current EL, synchronous external abort, no
//! syndrome, WnR = 0 for reads and writes alike), FAR_EL1 = the address, ELR_EL1 = the
//! access itself, and, for a load, the destination register untouched.

use crate::esr::{fsc, fsc_name, PKVM_INJECTED_DABT};
use crate::fault::Fault;
use core::fmt;

/// The access that was made, and what the device would have answered had it been
/// forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrayAccess {
    /// The address accessed.
    pub addr: u64,
    /// The address of the instruction that made the access (a probe site).
    pub site: u64,
    /// The value a forwarded read of `addr` returns, when it is known: a read that
    /// returns it was forwarded, any other value was dropped.
    pub device_answer: Option<u64>,
}

/// What came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// A load that completed with this value.
    Loaded(u64),
    /// A store that completed.
    Stored,
    /// A load that faulted; `dest` is what its destination register held afterwards,
    /// `untouched` whether that is the poison preloaded into it.
    LoadFaulted {
        fault: Fault,
        dest: u64,
        untouched: bool,
    },
    /// A store that faulted.
    StoreFaulted(Fault),
}

/// How an access that had to be refused was not refused the way pKVM refuses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deviation {
    /// The read reached the device: it returned the device's own answer.
    Forwarded {
        value: u64,
    },
    /// The read completed without an abort, but not with the device's answer: it was
    /// dropped (or answered by someone else), silently.
    Dropped {
        value: u64,
        device: Option<u64>,
    },
    /// The write completed without an abort.
    StoreCompleted,
    /// A data abort, but with another fault status code than 0x10.
    WrongDfsc {
        dfsc: u8,
        esr: u64,
    },
    /// Another exception than pKVM's injected data abort.
    WrongEsr {
        esr: u64,
    },
    WrongFar {
        far: u64,
        addr: u64,
    },
    WrongElr {
        elr: u64,
        site: u64,
    },
    /// The faulting load wrote its destination register.
    DestClobbered {
        dest: u64,
    },
}

impl fmt::Display for Deviation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Forwarded { value } => {
                write!(f, "was forwarded: read its ID {value:#x} without an abort")
            }
            Self::Dropped {
                value,
                device: Some(id),
            } => write!(
                f,
                "returned {value:#x} with no abort injected (dropped silently; the device reads {id:#x})"
            ),
            Self::Dropped { value, device: None } => {
                write!(f, "returned {value:#x} with no abort injected")
            }
            Self::StoreCompleted => write!(f, "raised no abort"),
            Self::WrongDfsc { dfsc, esr } => write!(
                f,
                "the injected abort has DFSC {dfsc:#x} ({}), not 0x10 (synchronous external abort): ESR={esr:#x}",
                fsc_name(dfsc)
            ),
            Self::WrongEsr { esr } => write!(
                f,
                "ESR={esr:#x}, not pKVM's 0x96000010 ({})",
                crate::esr::Esr(esr)
            ),
            Self::WrongFar { far, addr } => {
                write!(f, "FAR={far:#x} is not the faulting address {addr:#x}")
            }
            Self::WrongElr { elr, site } => {
                write!(f, "ELR={elr:#x} is not the access at {site:#x}")
            }
            Self::DestClobbered { dest } => {
                write!(f, "the destination register changed to {dest:#x}")
            }
        }
    }
}

/// Ok with the fault when `observed` is exactly pKVM's refusal of `access`; otherwise the
/// first way in which it is not, in the order a reader would check them.
pub fn judge_stray(access: &StrayAccess, observed: Observed) -> Result<Fault, Deviation> {
    let (fault, dest) = match observed {
        Observed::Loaded(value) if access.device_answer == Some(value) => {
            return Err(Deviation::Forwarded { value })
        }
        Observed::Loaded(value) => {
            return Err(Deviation::Dropped {
                value,
                device: access.device_answer,
            })
        }
        Observed::Stored => return Err(Deviation::StoreCompleted),
        Observed::LoadFaulted {
            fault,
            dest,
            untouched,
        } => (fault, (!untouched).then_some(dest)),
        Observed::StoreFaulted(fault) => (fault, None),
    };
    let esr = fault.esr;
    if esr.0 != PKVM_INJECTED_DABT {
        return Err(if esr.is_data_abort() && esr.fsc() != fsc::SYNC_EXTERNAL {
            Deviation::WrongDfsc {
                dfsc: esr.fsc(),
                esr: esr.0,
            }
        } else {
            Deviation::WrongEsr { esr: esr.0 }
        });
    }
    if fault.far != access.addr {
        return Err(Deviation::WrongFar {
            far: fault.far,
            addr: access.addr,
        });
    }
    if fault.elr != access.site {
        return Err(Deviation::WrongElr {
            elr: fault.elr,
            site: access.site,
        });
    }
    match dest {
        Some(dest) => Err(Deviation::DestClobbered { dest }),
        None => Ok(fault),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esr::Esr;

    const ADDR: u64 = 0x901_0fe0;
    const SITE: u64 = 0x4020_1000;

    fn access() -> StrayAccess {
        StrayAccess {
            addr: ADDR,
            site: SITE,
            device_answer: Some(0x31),
        }
    }

    fn fault(esr: u64, far: u64, elr: u64) -> Fault {
        Fault {
            esr: Esr(esr),
            far,
            elr,
        }
    }

    fn load_fault(f: Fault) -> Observed {
        Observed::LoadFaulted {
            fault: f,
            dest: 0,
            untouched: true,
        }
    }

    #[test]
    fn exactly_pkvms_abort_is_a_refusal() {
        let f = fault(PKVM_INJECTED_DABT, ADDR, SITE);
        assert_eq!(judge_stray(&access(), load_fault(f)), Ok(f));
        assert_eq!(judge_stray(&access(), Observed::StoreFaulted(f)), Ok(f));
    }

    #[test]
    fn a_completed_access_is_forwarded_or_dropped() {
        assert_eq!(
            judge_stray(&access(), Observed::Loaded(0x31)),
            Err(Deviation::Forwarded { value: 0x31 })
        );
        assert_eq!(
            judge_stray(&access(), Observed::Loaded(0)),
            Err(Deviation::Dropped {
                value: 0,
                device: Some(0x31)
            })
        );
        let unknown = StrayAccess {
            device_answer: None,
            ..access()
        };
        assert_eq!(
            judge_stray(&unknown, Observed::Loaded(u64::MAX)),
            Err(Deviation::Dropped {
                value: u64::MAX,
                device: None
            })
        );
        assert_eq!(
            judge_stray(&access(), Observed::Stored),
            Err(Deviation::StoreCompleted)
        );
    }

    #[test]
    fn every_field_of_the_abort_is_judged() {
        // A translation fault (DFSC 0x07) instead of an external abort.
        let dfsc = fault(0x9600_0007, ADDR, SITE);
        assert_eq!(
            judge_stray(&access(), load_fault(dfsc)),
            Err(Deviation::WrongDfsc {
                dfsc: 0x07,
                esr: 0x9600_0007
            })
        );
        // An abort with a valid syndrome (ISV) is not the injected one either.
        let isv = fault(0x9700_0010, ADDR, SITE);
        assert_eq!(
            judge_stray(&access(), load_fault(isv)),
            Err(Deviation::WrongEsr { esr: 0x9700_0010 })
        );
        let undef = fault(0x0200_0000, ADDR, SITE);
        assert_eq!(
            judge_stray(&access(), load_fault(undef)),
            Err(Deviation::WrongEsr { esr: 0x0200_0000 })
        );
        let far = fault(PKVM_INJECTED_DABT, ADDR & !0xfff, SITE);
        assert_eq!(
            judge_stray(&access(), load_fault(far)),
            Err(Deviation::WrongFar {
                far: ADDR & !0xfff,
                addr: ADDR
            })
        );
        let elr = fault(PKVM_INJECTED_DABT, ADDR, SITE + 4);
        assert_eq!(
            judge_stray(&access(), load_fault(elr)),
            Err(Deviation::WrongElr {
                elr: SITE + 4,
                site: SITE
            })
        );
        let clobbered = Observed::LoadFaulted {
            fault: fault(PKVM_INJECTED_DABT, ADDR, SITE),
            dest: 7,
            untouched: false,
        };
        assert_eq!(
            judge_stray(&access(), clobbered),
            Err(Deviation::DestClobbered { dest: 7 })
        );
    }

    #[test]
    fn deviations_read_as_sentences() {
        let s = alloc::format!(
            "{}",
            Deviation::WrongDfsc {
                dfsc: 7,
                esr: 0x9600_0007
            }
        );
        assert!(s.contains("DFSC 0x7") && s.contains("not 0x10"), "{s}");
        let s = alloc::format!("{}", Deviation::WrongFar { far: 1, addr: 2 });
        assert_eq!(s, "FAR=0x1 is not the faulting address 0x2");
    }
}
