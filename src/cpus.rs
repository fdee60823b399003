//! The pure half of secondary-CPU bring-up: the per-CPU stack layout, what PSCI answers
//! mean, the bounded wait, and which CPU to start. The kernel half (`kernel::smp`) only
//! moves these through registers and PSCI calls.

use core::fmt;

/// Bytes of stack per CPU and the number of CPU slots. linker.ld reserves
/// `STACK_SIZE * MAX_CPUS` bytes at `__stacks_start`; secondary.S takes these values from
/// here (a host test checks that linker.ld says the same).
pub const STACK_SIZE: u64 = 0x10000;
pub const MAX_CPUS: usize = 8;

/// `[bottom, top)` of CPU slot `index`'s stack; slot 0 is the boot CPU's. The stack grows
/// down from `top`, which is what secondary.S loads into SP.
pub fn stack_range(stacks_start: u64, index: usize) -> Option<(u64, u64)> {
    if index >= MAX_CPUS {
        return None;
    }
    let bottom = stacks_start.checked_add(STACK_SIZE.checked_mul(index as u64)?)?;
    Some((bottom, bottom.checked_add(STACK_SIZE)?))
}

/// The affinity fields of an MPIDR (Aff3, Aff2, Aff1, Aff0): what `/cpus` `reg` and PSCI
/// CPU_ON's target hold; MPIDR_EL1 also carries the U and MT bits and RES1 bit 31.
pub fn affinity(mpidr: u64) -> u64 {
    mpidr & 0xff_00ff_ffff
}

/// The first CPU of the device tree that is not the one running (`me`, an MPIDR_EL1).
pub fn other_cpu(cpus: &[u64], me: u64) -> Option<u64> {
    cpus.iter().copied().find(|&c| affinity(c) != affinity(me))
}

/// Counter ticks in `ms` milliseconds at `freq` Hz. A CNTFRQ_EL0 of 0 (firmware that never
/// set it) counts as 1 GHz: the wait becomes longer, but it stays bounded.
pub fn ticks(freq: u64, ms: u64) -> u64 {
    let freq = if freq == 0 { 1_000_000_000 } else { freq };
    (freq / 1000).max(1).saturating_mul(ms)
}

/// A PSCI error return (PSCI 1.1, table "Return error codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciError {
    NotSupported,
    InvalidParameters,
    Denied,
    AlreadyOn,
    OnPending,
    InternalFailure,
    NotPresent,
    Disabled,
    InvalidAddress,
    /// Any other value (an odd code, or a positive value where a status was expected).
    Other(i64),
}

impl PsciError {
    /// Reads a status in x0: Ok for 0 (SUCCESS), the error otherwise.
    pub fn status(x0: u64) -> Result<(), PsciError> {
        match x0 as i64 {
            0 => Ok(()),
            -1 => Err(Self::NotSupported),
            -2 => Err(Self::InvalidParameters),
            -3 => Err(Self::Denied),
            -4 => Err(Self::AlreadyOn),
            -5 => Err(Self::OnPending),
            -6 => Err(Self::InternalFailure),
            -7 => Err(Self::NotPresent),
            -8 => Err(Self::Disabled),
            -9 => Err(Self::InvalidAddress),
            v => Err(Self::Other(v)),
        }
    }

    fn code(self) -> i64 {
        match self {
            Self::NotSupported => -1,
            Self::InvalidParameters => -2,
            Self::Denied => -3,
            Self::AlreadyOn => -4,
            Self::OnPending => -5,
            Self::InternalFailure => -6,
            Self::NotPresent => -7,
            Self::Disabled => -8,
            Self::InvalidAddress => -9,
            Self::Other(v) => v,
        }
    }
}

impl fmt::Display for PsciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::NotSupported => "NOT_SUPPORTED",
            Self::InvalidParameters => "INVALID_PARAMETERS (no such CPU?)",
            Self::Denied => "DENIED",
            Self::AlreadyOn => "ALREADY_ON",
            Self::OnPending => "ON_PENDING",
            Self::InternalFailure => "INTERNAL_FAILURE",
            Self::NotPresent => "NOT_PRESENT",
            Self::Disabled => "DISABLED",
            Self::InvalidAddress => "INVALID_ADDRESS",
            Self::Other(_) => "an unknown status",
        };
        write!(f, "{name} ({})", self.code())
    }
}

/// What AFFINITY_INFO says about a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    On,
    Off,
    OnPending,
}

impl Power {
    pub fn decode(x0: u64) -> Result<Power, PsciError> {
        match x0 as i64 {
            0 => Ok(Self::On),
            1 => Ok(Self::Off),
            2 => Ok(Self::OnPending),
            _ => Err(PsciError::status(x0).err().unwrap_or(PsciError::Other(0))),
        }
    }
}

impl fmt::Display for Power {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "ON",
            Self::Off => "OFF",
            Self::OnPending => "ON_PENDING",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_are_consecutive_and_bounded() {
        let base = 0x4030_0000;
        assert_eq!(stack_range(base, 0), Some((base, base + 0x10000)));
        assert_eq!(stack_range(base, 1), Some((base + 0x10000, base + 0x20000)));
        assert_eq!(stack_range(base, 7), Some((base + 0x70000, base + 0x80000)));
        assert_eq!(stack_range(base, 8), None);
        assert_eq!(stack_range(u64::MAX - 0x100, 1), None);
    }

    #[test]
    fn linker_script_agrees() {
        // secondary.S computes stacks from these constants; linker.ld reserves them.
        let ld = include_str!("../linker.ld");
        let value = |name: &str| -> u64 {
            let line = ld
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{name} =")))
                .unwrap_or_else(|| panic!("no {name} in linker.ld"));
            let v = line
                .split('=')
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim();
            match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).unwrap(),
                None => v.parse().unwrap(),
            }
        };
        assert_eq!(value("STACK_SIZE"), STACK_SIZE);
        assert_eq!(value("MAX_CPUS"), MAX_CPUS as u64);
    }

    #[test]
    fn other_cpu_skips_the_running_one() {
        // MPIDR_EL1 has RES1 bit 31 (and maybe MT/U); the tree holds bare affinities.
        assert_eq!(other_cpu(&[0, 1, 2], 0x8000_0000), Some(1));
        assert_eq!(other_cpu(&[0, 1], 0x8000_0001), Some(0));
        assert_eq!(other_cpu(&[0x100, 0x101], 0x8100_0100), Some(0x101));
        assert_eq!(other_cpu(&[0], 0x8000_0000), None);
        assert_eq!(other_cpu(&[], 0), None);
    }

    #[test]
    fn deadline_ticks() {
        assert_eq!(ticks(62_500_000, 2000), 125_000_000);
        assert_eq!(ticks(0, 1), 1_000_000);
        assert_eq!(ticks(500, 10), 10);
        assert_eq!(ticks(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn psci_answers() {
        assert_eq!(PsciError::status(0), Ok(()));
        assert_eq!(
            PsciError::status(-2i64 as u64),
            Err(PsciError::InvalidParameters)
        );
        assert_eq!(PsciError::status(-4i64 as u64), Err(PsciError::AlreadyOn));
        assert_eq!(PsciError::status(7), Err(PsciError::Other(7)));
        assert_eq!(PsciError::AlreadyOn.to_string(), "ALREADY_ON (-4)");
        assert_eq!(PsciError::Other(7).to_string(), "an unknown status (7)");
        assert_eq!(Power::decode(1), Ok(Power::Off));
        assert_eq!(Power::decode(2), Ok(Power::OnPending));
        assert_eq!(
            Power::decode(-2i64 as u64),
            Err(PsciError::InvalidParameters)
        );
        assert_eq!(Power::decode(3), Err(PsciError::Other(3)));
    }
}
