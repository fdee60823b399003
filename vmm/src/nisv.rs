//! Accesses KVM cannot emulate: a data abort on an address with no memory whose syndrome
//! is not valid (ISV = 0: `ldp`/`stp`, writeback forms), which KVM reports as
//! KVM_EXIT_ARM_NISV or, unless the VMM asked for that exit, as KVM_RUN failing with
//! ENOSYS. The guest stays at the instruction: re-running it faults again, for ever.
//!
//! crosvm never enables KVM_CAP_ARM_NISV_TO_USER, and its vCPU loop
//! (src/crosvm/sys/linux/vcpu.rs `vcpu_loop`) treats KVM_RUN's ENOSYS as an error that
//! ends the VM; this VMM does the same by default (`--nisv stop`). `--nisv inject` answers
//! with a synchronous external data abort instead (KVM_SET_VCPU_EVENTS), which is what the
//! KVM API documents for KVM_EXIT_ARM_NISV and what pKVM itself does for a protected VM,
//! so a guest that probes such accesses on purpose can go on. Protected VMs never come
//! here: pKVM injects the abort itself.

use std::fmt;

/// What the VMM answers such an access with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Report it and stop the VM (exit status 5), as crosvm.
    Stop,
    /// Report it and inject a synchronous external data abort.
    Inject,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stop" => Some(Self::Stop),
            "inject" => Some(Self::Inject),
            _ => None,
        }
    }
}

/// One such access, as much as the VMM knows of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub vcpu: usize,
    /// The faulting IPA: known from KVM_EXIT_ARM_NISV, not from ENOSYS.
    pub addr: Option<u64>,
    /// The guest's PC (the instruction), if the vCPU's registers could be read.
    pub pc: Option<u64>,
}

impl Access {
    /// The access without the vCPU, for lines that name it already.
    pub fn what(&self) -> String {
        let at = match self.addr {
            Some(a) => format!(" at {a:#x}"),
            None => " (address unknown)".into(),
        };
        let pc = match self.pc {
            Some(pc) => format!("PC {pc:#x}"),
            None => "PC unreadable".into(),
        };
        format!("access without a valid syndrome{at}, {pc}")
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vCPU {}: {}", self.vcpu, self.what())
    }
}

/// Why the VM stopped under `Policy::Stop`, for the VMM's last line.
pub fn stopped(a: &Access) -> String {
    format!(
        "{a}: the VMM cannot emulate it; VM stopped, as crosvm does \
         (exit status 5; --nisv inject answers with an external data abort instead)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(Policy::parse("stop"), Some(Policy::Stop));
        assert_eq!(Policy::parse("inject"), Some(Policy::Inject));
        assert_eq!(Policy::parse("abort"), None);
    }

    #[test]
    fn reports_what_is_known() {
        let a = Access {
            vcpu: 1,
            addr: Some(0x901_0fe0),
            pc: Some(0x4000_10d0),
        };
        assert_eq!(
            a.to_string(),
            "vCPU 1: access without a valid syndrome at 0x9010fe0, PC 0x400010d0"
        );
        let b = Access {
            vcpu: 0,
            addr: None,
            pc: None,
        };
        assert_eq!(
            b.what(),
            "access without a valid syndrome (address unknown), PC unreadable"
        );
        assert_eq!(
            b.to_string(),
            "vCPU 0: access without a valid syndrome (address unknown), PC unreadable"
        );
        assert_eq!(
            stopped(&a),
            "vCPU 1: access without a valid syndrome at 0x9010fe0, PC 0x400010d0: the VMM \
             cannot emulate it; VM stopped, as crosvm does (exit status 5; --nisv inject \
             answers with an external data abort instead)"
        );
    }
}
