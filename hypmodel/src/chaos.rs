//! `hypmodel.chaos=SEED`: a hypervisor that misbehaves at random, to show that the guest
//! ends every run with a verdict whatever it is told. Each event happens with a small
//! probability: a pKVM call answered with garbage (random values, a 32-bit form of the
//! right answer, an abort at the HVC), a registration dropped, an abort injected on a
//! registered page, a forwarded read returning garbage. The same seed gives the same
//! stream of decisions.
//!
//! The generator is a hand-written xorshift64* (Vigna 2016) seeded through splitmix64:
//! a dozen lines, `no_std`, no dependency. The `rand` crates would bring features (OS
//! entropy, distributions) hypmodel cannot use at EL2 and an API far larger than one
//! stream of numbers, and hypmodel keeps its dependencies to the spin lock.

/// One pKVM call in this many is answered with garbage.
pub const CALL_ONE_IN: u64 = 24;
/// One trapped access in this many drops a registration, one in this many forwarded
/// accesses is refused instead, one in this many forwarded reads returns garbage.
pub const ACCESS_ONE_IN: u64 = 2048;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChaosStats {
    pub calls: u64,
    pub drops: u64,
    pub aborts: u64,
    pub reads: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Chaos {
    pub seed: u64,
    state: u64,
    pub stats: ChaosStats,
}

/// splitmix64: spreads any seed (0 included) over the state space.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What becomes of a pKVM call's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallChaos {
    /// Random x0..x3.
    Random([u64; 4]),
    /// The right answer with x0 cut to 32 bits (as Android 13's MAP error).
    Truncated,
    /// A synchronous external abort at the HVC instead of an answer.
    Abort,
    /// A plausible but wrong return code in x0.
    Code(u64),
}

impl Chaos {
    pub fn new(seed: u64) -> Chaos {
        Chaos {
            seed,
            state: splitmix64(seed) | 1,
            stats: ChaosStats::default(),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next_u64().is_multiple_of(n)
    }

    /// Whether (and how) to garble one pKVM call's answer.
    pub fn call(&mut self) -> Option<CallChaos> {
        if !self.one_in(CALL_ONE_IN) {
            return None;
        }
        self.stats.calls += 1;
        const CODES: [u64; 5] = [0, 1, -1i64 as u64, -2i64 as u64, -3i64 as u64];
        Some(match self.next_u64() % 4 {
            0 => CallChaos::Random([
                self.next_u64(),
                self.next_u64(),
                self.next_u64(),
                self.next_u64(),
            ]),
            1 => CallChaos::Truncated,
            2 => CallChaos::Abort,
            _ => CallChaos::Code(CODES[(self.next_u64() % CODES.len() as u64) as usize]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_per_seed_and_seeds_differ() {
        let run = |seed| {
            let mut c = Chaos::new(seed);
            (0..1000).map(|_| c.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert_ne!(run(0)[0], 0, "seed 0 works too");
    }

    #[test]
    fn rates_are_about_right() {
        let mut c = Chaos::new(1);
        let n = (0..240_000).filter(|_| c.call().is_some()).count();
        assert!((8_000..12_000).contains(&n), "{n} of 240000 at 1/24");
        assert_eq!(c.stats.calls, n as u64);
        let kinds: std::collections::HashSet<_> = (0..10_000)
            .filter_map(|_| c.call())
            .map(|k| core::mem::discriminant(&k))
            .collect();
        assert_eq!(kinds.len(), 4, "every kind of garbage occurs");
    }
}
