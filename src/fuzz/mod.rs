//! The seeded hypercall fuzzer's pure half (`fuzz=SEED[,COUNT][,only=N]`): the PRNG, the
//! step generator, the guest's model of what the hypervisor holds, and the judgement of
//! every answer against what the ABI documents for the detected profile. The executor
//! (`kernel/suite/fuzz.rs`) only performs steps and hands back what it saw.
//!
//! Every step is a function of (seed, step index, pool) alone, never of the model or of
//! earlier answers, so any subset of a run's steps can be replayed exactly: that is what
//! `only=N` does with the slice of steps the failing step depends on (`gen::slice`).

pub mod gen;
pub mod model;

use core::fmt;

/// What `fuzz=` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuzzSpec {
    pub seed: u64,
    /// Steps 0..count.
    pub count: u64,
    /// Replay only the slice of steps 0..=N that step N depends on.
    pub only: Option<u64>,
    /// DMA steps into private pages too (`private-dma`): only for a hypervisor that keeps
    /// them from the host without harm to it. hypmodel refuses each such notify and fails
    /// the run for it, as it fails any guest that offers a device private memory; on pKVM
    /// the VMM's read of the page faults, and a VMM that does not catch that dies.
    pub private_dma: bool,
}

/// COUNT when `fuzz=SEED` gives none.
pub const DEFAULT_COUNT: u64 = 1000;
/// The most steps one run may ask for.
pub const MAX_COUNT: u64 = 1_000_000;

impl FuzzSpec {
    /// Parses the value of `fuzz=`: `SEED[,COUNT][,only=N][,private-dma]` (SEED and COUNT
    /// decimal or 0x-hex; N < COUNT).
    pub fn parse(v: &str) -> Option<Self> {
        let mut parts = v.split(',');
        let seed = number(parts.next()?)?;
        let mut spec = Self {
            seed,
            count: DEFAULT_COUNT,
            only: None,
            private_dma: false,
        };
        let mut counted = false;
        for p in parts {
            if spec.private_dma {
                return None;
            }
            if p == PRIVATE_DMA {
                spec.private_dma = true;
                continue;
            }
            match p.strip_prefix("only=") {
                Some(n) if spec.only.is_none() => spec.only = Some(number(n)?),
                None if !counted && spec.only.is_none() => {
                    spec.count = number(p)?;
                    counted = true;
                }
                _ => return None,
            }
        }
        let in_range = (1..=MAX_COUNT).contains(&spec.count);
        (in_range && spec.only.is_none_or(|n| n < spec.count)).then_some(spec)
    }

    /// The same run with `count` steps and `only`.
    pub fn with(self, count: u64, only: Option<u64>) -> Self {
        Self {
            count,
            only,
            ..self
        }
    }
}

/// The flag of `fuzz=` that allows DMA steps into private pages.
pub const PRIVATE_DMA: &str = "private-dma";

impl fmt::Display for FuzzSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fuzz={},{}", self.seed, self.count)?;
        if let Some(n) = self.only {
            write!(f, ",only={n}")?;
        }
        if self.private_dma {
            write!(f, ",{PRIVATE_DMA}")?;
        }
        Ok(())
    }
}

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state, one add and a mix per output.
/// Written here rather than taken from a crate: eight lines, no_std, and its exact
/// output is part of what a seed means, so it must never change under a dependency update.
#[derive(Clone, Debug)]
pub struct Rng(u64);

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The generator of step `index` of the run seeded `seed`: independent of every other
    /// step's, so that a step can be made without making the ones before it.
    pub fn for_step(seed: u64, index: u64) -> Self {
        let mut r = Self(seed ^ mix(index.wrapping_add(1).wrapping_mul(GOLDEN)));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// A value in 0..n (0 when n is 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    /// One of `xs` (None when empty).
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> Option<T> {
        xs.get(self.below(xs.len() as u64) as usize).copied()
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The word the canary and the sharing pool hold at `addr` for a run seeded `seed`.
pub fn pattern(seed: u64, addr: u64) -> u64 {
    mix(seed ^ addr.wrapping_mul(GOLDEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // The reference implementation's first outputs for seed 1234567.
        let mut r = Rng::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn steps_have_independent_reproducible_generators() {
        assert_eq!(
            Rng::for_step(7, 3).next_u64(),
            Rng::for_step(7, 3).next_u64()
        );
        assert_ne!(
            Rng::for_step(7, 3).next_u64(),
            Rng::for_step(7, 4).next_u64()
        );
        assert_ne!(
            Rng::for_step(7, 3).next_u64(),
            Rng::for_step(8, 3).next_u64()
        );
        let mut r = Rng::new(5);
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(Rng::new(1).pick::<u8>(&[]), None);
        let mut r = Rng::new(9);
        let hits = (0..10_000).filter(|_| r.chance(30)).count();
        assert!((2500..3500).contains(&hits), "{hits}");
        let mut r = Rng::new(9);
        let picks: alloc::collections::BTreeSet<u8> =
            (0..100).filter_map(|_| r.pick(&[1, 2, 3])).collect();
        assert_eq!(picks.len(), 3);
    }

    /// What a seed means never changes: step 3 of seed 7 and two patterns, computed by
    /// hand from SplitMix64's definition.
    #[test]
    fn a_seeds_steps_and_patterns_are_fixed() {
        assert_eq!(Rng::for_step(7, 3).next_u64(), 10431677065334306719);
        assert_eq!(pattern(1, 0x1000), 0x835f_8eb0_ed79_842c);
        assert_eq!(
            pattern(0x1234_5678_9abc_def0, 0x4000_1008),
            0x6515_07d0_0031_9d0e
        );
    }

    #[test]
    fn chance_0_never_and_100_always() {
        let mut r = Rng::new(4);
        assert!((0..10_000).all(|_| !r.chance(0) && r.chance(100)));
    }

    #[test]
    fn pattern_differs_by_address_and_seed() {
        assert_ne!(pattern(1, 0x1000), pattern(1, 0x1008));
        assert_ne!(pattern(1, 0x1000), pattern(2, 0x1000));
        assert_eq!(pattern(3, 0x40), pattern(3, 0x40));
    }

    #[test]
    fn spec_parsing() {
        let s = |seed, count, only| {
            Some(FuzzSpec {
                seed,
                count,
                only,
                private_dma: false,
            })
        };
        assert_eq!(FuzzSpec::parse("42"), s(42, DEFAULT_COUNT, None));
        assert_eq!(FuzzSpec::parse("0x10,5"), s(16, 5, None));
        assert_eq!(FuzzSpec::parse("1,100,only=7"), s(1, 100, Some(7)));
        assert_eq!(FuzzSpec::parse("1,only=7"), s(1, DEFAULT_COUNT, Some(7)));
        for bad in [
            "",
            "x",
            "1,0",
            "1,100,only=100",
            "1,2,3",
            "1,only=1,only=2",
            "1,only=3,9",
            "1,1000001",
            "1,only=",
            "1,private-dma,5",
            "1,private-dma,private-dma",
            "1,private",
        ] {
            assert_eq!(FuzzSpec::parse(bad), None, "{bad}");
        }
        assert_eq!(
            FuzzSpec::parse("1,1000000").map(|s| s.count),
            Some(MAX_COUNT)
        );
        assert_eq!(
            format!("{}", FuzzSpec::parse("3,9,only=2").unwrap()),
            "fuzz=3,9,only=2"
        );
        assert_eq!(format!("{}", FuzzSpec::parse("3").unwrap()), "fuzz=3,1000");
        let private = |v| {
            FuzzSpec::parse(v)
                .filter(|s| s.private_dma)
                .map(|s| format!("{s}"))
        };
        assert_eq!(
            private("3,private-dma").as_deref(),
            Some("fuzz=3,1000,private-dma")
        );
        assert_eq!(
            private("3,9,only=2,private-dma").as_deref(),
            Some("fuzz=3,9,only=2,private-dma")
        );
        let spec = FuzzSpec::parse("3,9,private-dma").unwrap();
        assert_eq!(
            format!("{}", spec.with(4, Some(1))),
            "fuzz=3,4,only=1,private-dma"
        );
        assert_eq!(format!("{}", spec.with(4, None)), "fuzz=3,4,private-dma");
    }
}
