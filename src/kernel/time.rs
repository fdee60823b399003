//! Deadlines on the generic counter: every wait on something outside ioguard (a CPU
//! coming up, a device answering) is bounded by one.

use super::arch::sysreg::{counter, frequency};
use crate::cpus::ticks;

/// A point on the generic counter.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(u64);

impl Deadline {
    pub fn after_ms(ms: u64) -> Self {
        Self(counter().saturating_add(ticks(frequency(), ms)))
    }

    pub fn after_us(us: u64) -> Self {
        Self(counter().saturating_add(ticks(frequency(), 1).saturating_mul(us) / 1000))
    }

    pub fn passed(&self) -> bool {
        counter() >= self.0
    }
}
