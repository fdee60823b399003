//! The step generator: what the fuzzer does at step N of a run, chosen from a pool of
//! addresses that hurt (probe targets, their neighbours, holes, RAM, the last granules
//! below RAM, the top of the IPA space and beyond) and arguments that hurt (misaligned
//! IPAs, reserved arguments non-zero, range counts of 0, 1 and huge).

use super::Rng;
use crate::hyp::abi;
use crate::hyp::profile::{NoSyndrome, Profile};
pub use crate::width::Width;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::fmt;

/// A device page with a known answer, as the fuzzer probes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolTarget {
    /// The ID register's address and the 32-bit value a forwarded read returns (None:
    /// any answer, PCI configuration space).
    pub id_addr: u64,
    pub id: Option<u32>,
    /// A PrimeCell: its ID block at page + 0xfe0 is known well enough for 64-bit and
    /// sign-extending loads (PeriphID1 0x10, CellID1 0xf0).
    pub primecell: bool,
    /// A register whose writes are harmless (PL031's match register).
    pub rw_addr: Option<u64>,
}

impl PoolTarget {
    pub fn page(&self) -> u64 {
        self.id_addr & !0xfff
    }
}

/// Everything a step may name, fixed for the whole run (and for its replays).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub profile: Profile,
    /// The protection granule (4 KiB when the hypervisor reports none).
    pub granule: u64,
    pub targets: Vec<PoolTarget>,
    /// Pages where neither RAM nor a device is (a forwarded access there is the bus's).
    pub holes: Vec<u64>,
    /// Granule-aligned RAM the fuzzer owns for MEM_SHARE, followed by one more granule
    /// it never shares (so a huge MEM_UNSHARE count stops there).
    pub share_pool: Vec<u64>,
    /// The lowest RAM address: a huge range from a few granules below it stops at RAM.
    pub ram_base: u64,
    /// Two or more CPUs: steps may run on CPU 1.
    pub smp: bool,
    /// A device the fuzzer can hand buffers to (virtio-rng): DMA steps.
    pub dma: bool,
}

/// What a step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A hypercall through the conduit.
    Call { fid: u32, args: [u64; 3] },
    /// One load (`signed`: sign-extending) through a stage-1 window that is not
    /// registered; `device` is what a forwarded load returns, `hole` a page with no device.
    Read {
        addr: u64,
        width: Width,
        signed: bool,
        device: Option<u64>,
        hole: bool,
    },
    /// A load pair (no valid syndrome).
    Pair { addr: u64 },
    /// One 32-bit store.
    Write { addr: u64, value: u32 },
    /// The entropy device is handed `DMA_BYTES` at `addr` (in the sharing pool) as they
    /// are, unbounced: it fills them if and only if the host can reach the page.
    Dma { addr: u64 },
    /// The console's page still answers, and it had no incident.
    Console,
    /// The canary and the sharing pool still hold their pattern.
    Canary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub index: u64,
    /// 0: the boot CPU; 1: the job runs on another CPU.
    pub cpu: u8,
    pub op: Op,
    /// What the boot CPU does at the same time as CPU 1 does `op` (only then): a call or
    /// an access more than a granule away from `op`'s, so that either order is the same.
    pub beside: Option<Op>,
}

/// Every this many steps the canary is checked (and the console pinged half-way).
pub const CANARY_EVERY: u64 = 50;
/// Where in each `CANARY_EVERY` steps a DMA step is, when the pool has a device for it.
/// Fixed places rather than a share of the mix: a run without a device makes the same
/// steps everywhere else.
pub const DMA_AT: [u64; 2] = [12, 37];
/// The bytes a DMA step asks the device to write.
pub const DMA_BYTES: u64 = 32;

/// Beyond any IPA space (52 bits is the architecture's largest).
pub const IPA_MAX_BITS: u32 = 52;
/// Every IPA space is at least this large (pKVM gives a protected VM 40 bits).
pub const IPA_MIN_BITS: u32 = 40;

/// What the generator of a step's `beside` op is seeded with, besides the step's seed.
const BESIDE: u64 = 0x6265_7369_6465;

/// A count far past anything mappable: 4 GiB of 4 KiB granules. Not larger: a hypervisor
/// that wrongly keeps going (a range loop that never fails) must still come back, or its
/// lock would stop every vCPU and nothing could report it.
pub const HUGE: u64 = 1 << 20;

impl Pool {
    fn align(&self, a: u64) -> u64 {
        a & !(self.granule - 1)
    }

    /// An IPA for a guard call: mostly target granules, and each kind of wrong one.
    fn guard_ipa(&self, r: &mut Rng) -> u64 {
        let g = self.granule;
        let t = r.pick(&self.targets).map(|t| self.align(t.id_addr));
        match r.below(20) {
            0..=8 => t.unwrap_or(self.ram_base - g),
            9 => t.map_or(0x10, |a| a + 8 * (1 + r.below(g / 8 - 1))),
            10 | 11 => t.map_or(self.ram_base - g, |a| a + g),
            12 | 13 => r
                .pick(&self.holes)
                .map_or(self.ram_base - 2 * g, |h| self.align(h)),
            14 => r.pick(&self.share_pool).unwrap_or(self.ram_base),
            15 => self.ram_base - g * (1 + r.below(3)),
            16 => 1 << IPA_MAX_BITS,
            17 => !(g - 1),
            18 => (1 << 48) - g,
            _ => self.ram_base,
        }
    }

    /// An IPA for MEM_SHARE/UNSHARE: mostly the fuzzer's own pages.
    fn share_ipa(&self, r: &mut Rng) -> u64 {
        let p = r.pick(&self.share_pool).unwrap_or(self.ram_base);
        match r.below(20) {
            0..=13 => p,
            14 => p + 8 * (1 + r.below(self.granule / 8 - 1)),
            15 | 16 => r
                .pick(&self.targets)
                .map_or(1 << IPA_MAX_BITS, |t| self.align(t.id_addr)),
            17 => r.pick(&self.holes).map_or(p, |h| self.align(h)),
            18 => 1 << IPA_MAX_BITS,
            _ => !(self.granule - 1),
        }
    }

    fn range_count(&self, r: &mut Rng, base: u64) -> u64 {
        // A huge count only where the run stops soon: below RAM, at RAM, beyond the IPA.
        let bounded = base < self.ram_base && base >= self.ram_base - 4 * self.granule
            || base >= 1 << IPA_MAX_BITS
            || self.share_pool.contains(&base)
            || base == self.ram_base;
        match r.below(10) {
            0 => 0,
            1..=3 => 1,
            4..=7 => 2 + r.below(3),
            _ if bounded => HUGE + r.below(3),
            _ => 2,
        }
    }

    /// Reserved arguments: mostly 0, sometimes not.
    fn reserved(&self, r: &mut Rng) -> u64 {
        match r.below(10) {
            0 => 1,
            1 => r.next_u64(),
            _ => 0,
        }
    }

    fn read(&self, r: &mut Rng) -> Op {
        let guard = self.profile.has_guard();
        if guard && !self.holes.is_empty() && r.chance(10) {
            let h = r.pick(&self.holes).unwrap_or(0);
            return Op::Read {
                addr: h + 0xfe0,
                width: Width::W32,
                signed: false,
                device: None,
                hole: true,
            };
        }
        let Some(t) = r.pick(&self.targets) else {
            return Op::Canary;
        };
        let (addr, width, signed, device) = match r.below(4) {
            0 if t.primecell => (
                t.page() + 0xfe0,
                Width::W64,
                false,
                t.id.map(|v| u64::from(v) | 0x10 << 32),
            ),
            1 if t.primecell => (
                t.page() + 0xff4,
                Width::W8,
                true,
                Some(0xf0u8 as i8 as i64 as u64),
            ),
            _ => (t.id_addr, Width::W32, false, t.id.map(u64::from)),
        };
        Op::Read {
            addr,
            width,
            signed,
            device,
            hole: false,
        }
    }

    fn call(&self, r: &mut Rng) -> Op {
        use abi::*;
        let a16 = self.profile == Profile::Android16;
        let (fid, args) = match r.below(100) {
            0..=21 => {
                let ipa = self.guard_ipa(r);
                let (x2, x3) = if self.profile.is_android() {
                    (self.reserved(r), self.reserved(r))
                } else {
                    (0, 0)
                };
                (MMIO_GUARD_MAP, [ipa, x2, x3])
            }
            22..=33 => (MMIO_GUARD_UNMAP, [self.guard_ipa(r), 0, 0]),
            34..=45 => {
                let ipa = self.guard_ipa(r);
                let n = self.range_count(r, ipa);
                (MMIO_RGUARD_MAP, [ipa, n, self.reserved(r) & 1])
            }
            46..=50 => {
                let ipa = self.guard_ipa(r);
                let n = self.range_count(r, ipa);
                (MMIO_RGUARD_UNMAP, [ipa, n, self.reserved(r) & 1])
            }
            51..=68 => {
                let ipa = self.share_ipa(r);
                let x2 = if a16 {
                    self.share_count(r, ipa)
                } else {
                    self.reserved(r) & 1
                };
                (MEM_SHARE, [ipa, x2, self.reserved(r) & 1])
            }
            69..=84 => {
                let ipa = self.share_ipa(r);
                let x2 = if a16 {
                    self.share_count(r, ipa)
                        .max(if r.chance(10) { HUGE } else { 0 })
                } else {
                    self.reserved(r) & 1
                };
                (MEM_UNSHARE, [ipa, x2, self.reserved(r) & 1])
            }
            85..=88 => (MMIO_GUARD_ENROLL, [0, 0, 0]),
            89..=93 => {
                let fid = if r.chance(50) {
                    HYP_MEMINFO
                } else {
                    MMIO_GUARD_INFO
                };
                (fid, [self.reserved(r), self.reserved(r), self.reserved(r)])
            }
            _ => {
                let fid = r
                    .pick(&[
                        SMCCC_VERSION,
                        PSCI_VERSION,
                        KVM_FEATURES,
                        VENDOR_HYP_CALL_UID,
                        0x8600_0003,
                        0x8600_0007,
                        0x8600_0008,
                    ])
                    .unwrap_or(SMCCC_VERSION);
                (fid, [0, 0, 0])
            }
        };
        Op::Call { fid, args }
    }

    /// android16's MEM_SHARE page count: 0 (one page), 1, or up to the end of the pool.
    fn share_count(&self, r: &mut Rng, ipa: u64) -> u64 {
        let left = self
            .share_pool
            .iter()
            .position(|&p| p == ipa)
            .map_or(1, |i| (self.share_pool.len() - i) as u64);
        match r.below(4) {
            0 => 0,
            1 => 1,
            _ => 1 + r.below(left),
        }
    }

    /// A DMA buffer: in one of the sharing pool's granules, anywhere a whole buffer fits
    /// (8-byte aligned).
    fn dma_addr(&self, r: &mut Rng) -> Op {
        let base = r.pick(&self.share_pool).unwrap_or(self.ram_base);
        let slots = (self.granule - DMA_BYTES) / 8 + 1;
        Op::Dma {
            addr: base + 8 * r.below(slots),
        }
    }

    /// One op of the mix: reads, load pairs, writes and calls.
    fn draw(&self, r: &mut Rng) -> Op {
        let no_pair = self.profile.no_syndrome() == NoSyndrome::VmmDecides;
        match r.below(100) {
            0..=29 => self.read(r),
            30..=33 if !no_pair => match r.pick(&self.targets) {
                Some(t) => Op::Pair {
                    addr: t.page() + 0xfe0,
                },
                None => Op::Canary,
            },
            34..=37 => match self.targets.iter().find_map(|t| t.rw_addr) {
                Some(addr) => Op::Write {
                    addr,
                    value: r.next_u64() as u32,
                },
                None => self.read(r),
            },
            _ => self.call(r),
        }
    }

    /// Step `index` of the run seeded `seed`.
    pub fn step(&self, seed: u64, index: u64) -> Step {
        let alone = |op| Step {
            index,
            cpu: 0,
            op,
            beside: None,
        };
        match index % CANARY_EVERY {
            i if i == CANARY_EVERY - 1 => alone(Op::Canary),
            i if i == CANARY_EVERY / 2 - 1 => alone(Op::Console),
            i if self.dma && DMA_AT.contains(&i) => {
                alone(self.dma_addr(&mut Rng::for_step(seed, index)))
            }
            _ => {
                let mut r = Rng::for_step(seed, index);
                let op = self.draw(&mut r);
                // A huge count runs on CPU 1 where there is one: a hypervisor that never
                // finishes it then costs that CPU's bounded wait, not the run.
                let huge = matches!(op, Op::Call { fid, args } if args[1] >= HUGE && is_range(fid));
                let cpu = u8::from(self.smp && on_any_cpu(&op) && (huge || r.chance(15)));
                let beside = if cpu == 1 && !huge {
                    self.beside(&mut Rng::for_step(seed ^ BESIDE, index), &op)
                } else {
                    None
                };
                Step {
                    index,
                    cpu,
                    op,
                    beside,
                }
            }
        }
    }

    /// Half the time, an op for the boot CPU to make while CPU 1 makes `op`: both of a
    /// kind that needs no resuming and no ordering, more than a granule apart.
    fn beside(&self, r: &mut Rng, op: &Op) -> Option<Op> {
        if !r.chance(50) || !self.at_once(op) {
            return None;
        }
        let other = self.draw(r);
        let (a, b) = (self.footprint(op)?, self.footprint(&other)?);
        let g = self.granule;
        let near = a.iter().any(|x| b.iter().any(|y| x.abs_diff(*y) <= g));
        (self.at_once(&other) && !near).then_some(other)
    }

    /// Ops that may run beside another: accesses, and the calls that name one granule and
    /// are never resumed (MAP, UNMAP, and MEM_SHARE/UNSHARE but on android16, where x2 is
    /// a count).
    fn at_once(&self, op: &Op) -> bool {
        match op {
            Op::Read { .. } | Op::Pair { .. } | Op::Write { .. } => true,
            Op::Call { fid, .. } => match *fid {
                abi::MMIO_GUARD_MAP | abi::MMIO_GUARD_UNMAP => true,
                abi::MEM_SHARE | abi::MEM_UNSHARE => self.profile != Profile::Android16,
                _ => false,
            },
            Op::Dma { .. } | Op::Console | Op::Canary => false,
        }
    }

    /// The guard granules a step names (for a range call, at most its first 64).
    pub fn footprint(&self, op: &Op) -> Option<BTreeSet<u64>> {
        let g = self.granule;
        let span = |base: u64, n: u64| -> BTreeSet<u64> {
            (0..n.clamp(1, 64))
                .filter_map(|i| self.align(base).checked_add(i * g))
                .collect()
        };
        Some(match *op {
            Op::Call { fid, args } => match fid {
                abi::MMIO_GUARD_MAP | abi::MMIO_GUARD_UNMAP => span(args[0], 1),
                abi::MMIO_RGUARD_MAP
                | abi::MMIO_RGUARD_UNMAP
                | abi::MEM_SHARE
                | abi::MEM_UNSHARE => span(args[0], args[1]),
                // ENROLL: everything may depend on it (a hypervisor that forgets).
                abi::MMIO_GUARD_ENROLL => return None,
                // The info and version calls name no granule.
                _ => BTreeSet::new(),
            },
            Op::Read { addr, width, .. } => span(addr, 1)
                .union(&span(addr + width.bytes() - 1, 1))
                .copied()
                .collect(),
            Op::Pair { addr } | Op::Write { addr, .. } | Op::Dma { addr } => span(addr, 1),
            Op::Console | Op::Canary => return None,
        })
    }

    /// The granules a step names, with its `beside` op's.
    pub fn step_footprint(&self, s: &Step) -> Option<BTreeSet<u64>> {
        let mut f = self.footprint(&s.op)?;
        if let Some(b) = &s.beside {
            f.extend(self.footprint(b)?);
        }
        Some(f)
    }

    /// The steps of 0..=`n` that step `n` depends on: those whose granules are within
    /// one granule of step `n`'s (a bug that reaches the next granule is the classic
    /// cross-granule one), and every step that names no granule (ENROLL, the info calls).
    /// A Console or Canary step depends on everything: its slice is the whole prefix.
    pub fn slice(&self, seed: u64, n: u64) -> Vec<u64> {
        let last = self.step(seed, n);
        let Some(fp) = self.step_footprint(&last) else {
            return (0..=n).collect();
        };
        let g = self.granule;
        let near = |other: &BTreeSet<u64>| {
            other.iter().any(|a| {
                fp.contains(a) || fp.contains(&a.wrapping_add(g)) || fp.contains(&a.wrapping_sub(g))
            })
        };
        (0..=n)
            .filter(|&i| {
                let s = self.step(seed, i);
                if matches!(s.op, Op::Console | Op::Canary) {
                    return false;
                }
                self.step_footprint(&s).is_none_or(|f| near(&f))
            })
            .chain(core::iter::once(n))
            .collect::<BTreeSet<u64>>()
            .into_iter()
            .collect()
    }
}

/// The calls whose x2 is a count.
pub fn is_range(fid: u32) -> bool {
    matches!(
        fid,
        abi::MMIO_RGUARD_MAP | abi::MMIO_RGUARD_UNMAP | abi::MEM_SHARE | abi::MEM_UNSHARE
    )
}

/// Steps that make sense on another CPU (the guard is per VM).
fn on_any_cpu(op: &Op) -> bool {
    match op {
        Op::Read { .. } | Op::Pair { .. } | Op::Write { .. } => true,
        Op::Call { fid, .. } => matches!(
            *fid,
            abi::MMIO_GUARD_MAP
                | abi::MMIO_GUARD_UNMAP
                | abi::MMIO_RGUARD_MAP
                | abi::MMIO_RGUARD_UNMAP
                | abi::MEM_SHARE
                | abi::MEM_UNSHARE
                | abi::MMIO_GUARD_ENROLL
        ),
        // The devices are driven from the boot CPU only.
        Op::Dma { .. } | Op::Console | Op::Canary => false,
    }
}

impl fmt::Display for Step {
    /// One line per step, in the trace's words (`hvc NAME(fid) x1=.. x2=.. x3=..`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} cpu{}: {}", self.index, self.cpu, self.op)?;
        match &self.beside {
            Some(b) => write!(f, ", at once with cpu0: {b}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Call {
                fid,
                args: [x1, x2, x3],
            } => {
                write!(
                    f,
                    "hvc {}({fid:#x}) x1={x1:#x} x2={x2:#x} x3={x3:#x}",
                    abi::name(fid)
                )
            }
            Op::Read {
                addr,
                width,
                signed,
                hole,
                ..
            } => write!(
                f,
                "{} {}B at {addr:#x}{}",
                if signed { "read signed" } else { "read" },
                width.bytes(),
                if hole { " (no device)" } else { "" }
            ),
            Op::Pair { addr } => write!(f, "ldp 16B at {addr:#x}"),
            Op::Write { addr, value } => write!(f, "write 4B at {addr:#x} = {value:#x}"),
            Op::Dma { addr } => {
                write!(f, "dma: the entropy device fills {DMA_BYTES}B at {addr:#x}")
            }
            Op::Console => write!(f, "console ping"),
            Op::Canary => write!(f, "canary check"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn pool(profile: Profile, smp: bool) -> Pool {
        Pool {
            profile,
            granule: 0x1000,
            targets: alloc::vec![
                PoolTarget {
                    id_addr: 0x901_0fe0,
                    id: Some(0x31),
                    primecell: true,
                    rw_addr: Some(0x901_0004)
                },
                PoolTarget {
                    id_addr: 0x903_0fe0,
                    id: Some(0x61),
                    primecell: true,
                    rw_addr: None
                },
                PoolTarget {
                    id_addr: 0xa00_0000,
                    id: Some(0x7472_6976),
                    primecell: false,
                    rw_addr: None
                },
                PoolTarget {
                    id_addr: 0xa00_1000,
                    id: Some(0x7472_6976),
                    primecell: false,
                    rw_addr: None
                },
                PoolTarget {
                    id_addr: 0x40_1000_0000,
                    id: None,
                    primecell: false,
                    rw_addr: None
                },
            ],
            holes: alloc::vec![0xc00_0000],
            share_pool: (0..4).map(|i| 0x4100_0000 + i * 0x1000).collect(),
            ram_base: 0x4000_0000,
            smp,
            dma: false,
        }
    }

    /// Every kind of IPA the guard calls are meant to get, and nothing else: a census of
    /// many draws, each put in exactly one class.
    #[test]
    fn guard_ipas_cover_every_class_and_only_those() {
        let p = pool(Profile::Android16, true);
        let g = p.granule;
        let target_granules: Vec<u64> = p.targets.iter().map(|t| p.align(t.id_addr)).collect();
        let mut seen = alloc::collections::BTreeMap::new();
        let mut r = Rng::new(5);
        for _ in 0..20_000 {
            let a = p.guard_ipa(&mut r);
            let class = if target_granules.contains(&a) {
                "target"
            } else if target_granules.iter().any(|t| a > *t && a < t + g) {
                assert_eq!(a % 8, 0, "{a:#x}");
                "inside a target granule"
            } else if target_granules.contains(&(a - g)) {
                "the granule after a target's"
            } else if p.holes.contains(&a) {
                "hole"
            } else if p.share_pool.contains(&a) {
                "share pool"
            } else if a < p.ram_base && a >= p.ram_base - 3 * g {
                "below RAM"
            } else if a == 1 << IPA_MAX_BITS {
                "beyond 52 bits"
            } else if a == !(g - 1) {
                "top granule"
            } else if a == (1 << 48) - g {
                "below 48 bits"
            } else if a == p.ram_base {
                "RAM"
            } else {
                panic!("an IPA of no class: {a:#x}")
            };
            *seen.entry(class).or_insert(0u32) += 1;
        }
        assert_eq!(seen.len(), 10, "{seen:?}");
        // Mostly target granules, as the generator intends (9 draws in 20).
        assert!(seen["target"] > 8_000, "{seen:?}");
        // 1 to 3 granules below RAM, each of them.
        let mut r = Rng::new(6);
        let below: alloc::collections::BTreeSet<u64> = (0..20_000)
            .map(|_| p.guard_ipa(&mut r))
            .filter(|a| *a < p.ram_base && *a >= p.ram_base - 3 * g)
            .collect();
        assert_eq!(below.len(), 3, "{below:x?}");
    }

    /// Range counts: 0, 1, a few, and huge only where the run stops soon.
    #[test]
    fn range_counts_are_huge_only_where_a_run_stops_soon() {
        let p = pool(Profile::Android16, true);
        let g = p.granule;
        let mut r = Rng::new(9);
        let counts = |base: u64, r: &mut Rng| -> alloc::collections::BTreeSet<u64> {
            (0..2000).map(|_| p.range_count(r, base)).collect()
        };
        let at_target = counts(0x901_0000, &mut r);
        assert_eq!(
            at_target.into_iter().collect::<Vec<_>>(),
            [0, 1, 2, 3, 4],
            "a target: never huge"
        );
        for bounded in [
            p.ram_base - g,
            p.ram_base - 4 * g,
            p.ram_base,
            1 << IPA_MAX_BITS,
            p.share_pool[1],
        ] {
            let c = counts(bounded, &mut r);
            assert!(
                c.contains(&0) && c.contains(&1) && c.contains(&4),
                "{bounded:#x}"
            );
            assert!(
                (HUGE..HUGE + 3).all(|h| c.contains(&h)) && c.iter().all(|n| *n <= 4 || *n >= HUGE),
                "{bounded:#x}: {c:?}"
            );
        }
        for unbounded in [p.ram_base - 5 * g, p.ram_base + g, (1 << IPA_MAX_BITS) - g] {
            let c = counts(unbounded, &mut r);
            assert!(c.iter().all(|n| *n <= 4), "{unbounded:#x}: {c:?}");
        }
    }

    #[test]
    fn steps_are_reproducible_and_varied() {
        let p = pool(Profile::Android16, true);
        let steps: Vec<Step> = (0..2000).map(|i| p.step(11, i)).collect();
        assert_eq!(steps, (0..2000).map(|i| p.step(11, i)).collect::<Vec<_>>());
        assert_ne!(steps, (0..2000).map(|i| p.step(12, i)).collect::<Vec<_>>());
        let count = |f: &dyn Fn(&Step) -> bool| steps.iter().filter(|s| f(s)).count();
        let call = |want: u32| move |s: &Step| matches!(s.op, Op::Call { fid, .. } if fid == want);
        for fid in [
            abi::MMIO_GUARD_MAP,
            abi::MMIO_GUARD_UNMAP,
            abi::MMIO_RGUARD_MAP,
            abi::MMIO_RGUARD_UNMAP,
            abi::MEM_SHARE,
            abi::MEM_UNSHARE,
            abi::MMIO_GUARD_ENROLL,
            abi::HYP_MEMINFO,
            abi::MMIO_GUARD_INFO,
            abi::KVM_FEATURES,
        ] {
            assert!(count(&call(fid)) > 3, "{}", abi::name(fid));
        }
        assert!(count(&|s| s.cpu == 1) > 50);
        assert!(count(&|s| matches!(s.op, Op::Read { hole: true, .. })) > 5);
        assert!(count(&|s| matches!(s.op, Op::Read { signed: true, .. })) > 5);
        assert!(
            count(&|s| matches!(
                s.op,
                Op::Read {
                    width: Width::W64,
                    ..
                }
            )) > 5
        );
        assert!(count(&|s| matches!(s.op, Op::Pair { .. })) > 5);
        assert!(count(&|s| matches!(s.op, Op::Write { .. })) > 5);
        assert_eq!(count(&|s| s.op == Op::Canary), 40);
        assert_eq!(count(&|s| s.op == Op::Console), 40);
        assert!(p.step(11, 49).op == Op::Canary && p.step(11, 24).op == Op::Console);
        // Counts of 0, 1 and huge, misaligned and beyond-IPA addresses, reserved args.
        let args = |s: &Step| match s.op {
            Op::Call { fid, args } => Some((fid, args)),
            _ => None,
        };
        let all: Vec<(u32, [u64; 3])> = steps.iter().filter_map(args).collect();
        assert!(all
            .iter()
            .any(|(f, a)| *f == abi::MMIO_RGUARD_MAP && a[1] == 0));
        assert!(all
            .iter()
            .any(|(f, a)| *f == abi::MMIO_RGUARD_MAP && a[1] == 1));
        assert!(all
            .iter()
            .any(|(f, a)| *f == abi::MMIO_RGUARD_MAP && a[1] >= HUGE));
        assert!(all
            .iter()
            .any(|(f, a)| *f == abi::MEM_UNSHARE && a[1] >= HUGE));
        assert!(all
            .iter()
            .any(|(f, a)| *f == abi::MMIO_GUARD_MAP && a[0] % 0x1000 != 0));
        assert!(all
            .iter()
            .any(|(f, a)| *f == abi::MMIO_GUARD_MAP && a[0] >= 1 << IPA_MAX_BITS));
        assert!(all
            .iter()
            .any(|(f, a)| *f == abi::MMIO_GUARD_MAP && a[1] != 0));
        assert!(all.iter().any(|(f, a)| *f == abi::MEM_SHARE && a[2] != 0));
        assert!(all.iter().any(|(f, a)| *f == abi::HYP_MEMINFO && a[0] != 0));
        // Huge counts run on CPU 1.
        assert!(steps.iter().all(
            |s| !matches!(s.op, Op::Call { fid, args } if args[1] >= HUGE && is_range(fid))
                || s.cpu == 1
        ));
        // A huge range starts only where the run ends soon.
        for (f, a) in &all {
            if a[1] >= HUGE && *f == abi::MMIO_RGUARD_MAP {
                assert!(
                    a[0] >= 0x4000_0000 - 0x4000 || a[0] >= 1 << IPA_MAX_BITS,
                    "{a:x?}"
                );
            }
        }
    }

    #[test]
    fn profile_shapes_the_steps() {
        let one = pool(Profile::Kvm, false);
        let steps: Vec<Step> = (0..2000).map(|i| one.step(3, i)).collect();
        assert!(steps.iter().all(|s| s.cpu == 0));
        // kvm: an ldp is the VMM's business; no holes without a guard.
        assert!(!steps
            .iter()
            .any(|s| matches!(s.op, Op::Pair { .. } | Op::Read { hole: true, .. })));
        // Reserved MAP args only where the ABI ignores them (android).
        let up = pool(Profile::Upstream, false);
        assert!((0..2000).map(|i| up.step(3, i)).all(|s| !matches!(s.op, Op::Call { fid: abi::MMIO_GUARD_MAP, args } if args[1] | args[2] != 0)));
        // MEM_SHARE counts only on android16.
        let a14 = pool(Profile::Android14, false);
        assert!((0..2000)
            .map(|i| a14.step(3, i))
            .all(|s| !matches!(s.op, Op::Call { fid: abi::MEM_SHARE, args } if args[1] > 1)));
    }

    #[test]
    fn reads_expect_the_devices_answers() {
        let p = pool(Profile::Android14, false);
        let reads: Vec<Op> = (0..3000)
            .map(|i| p.step(5, i).op)
            .filter(|o| matches!(o, Op::Read { .. }))
            .collect();
        assert!(reads.contains(&Op::Read {
            addr: 0x901_0fe0,
            width: Width::W64,
            signed: false,
            device: Some(0x10_0000_0031),
            hole: false
        }));
        assert!(reads.contains(&Op::Read {
            addr: 0x903_0ff4,
            width: Width::W8,
            signed: true,
            device: Some(u64::MAX - 0xf),
            hole: false
        }));
        assert!(reads.contains(&Op::Read {
            addr: 0xa00_0000,
            width: Width::W32,
            signed: false,
            device: Some(0x7472_6976),
            hole: false
        }));
        assert!(reads.contains(&Op::Read {
            addr: 0xc00_0fe0,
            width: Width::W32,
            signed: false,
            device: None,
            hole: true
        }));
        // No wide or signed load where the ID block is unknown.
        assert!(!reads.iter().any(|o| matches!(o, Op::Read { addr, width: Width::W64 | Width::W8, .. } if *addr >= 0xa00_0000)));
    }

    #[test]
    fn footprints_and_slices() {
        let p = pool(Profile::Android14, false);
        let fp = |op: Op| {
            p.footprint(&op)
                .map(|s| s.into_iter().collect::<Vec<u64>>())
        };
        assert_eq!(
            fp(Op::Call {
                fid: abi::MMIO_GUARD_MAP,
                args: [0x901_0010, 0, 0]
            }),
            Some(alloc::vec![0x901_0000])
        );
        assert_eq!(
            fp(Op::Call {
                fid: abi::MMIO_RGUARD_MAP,
                args: [0x901_0000, 2, 0]
            }),
            Some(alloc::vec![0x901_0000, 0x901_1000])
        );
        assert_eq!(
            fp(Op::Call {
                fid: abi::MEM_UNSHARE,
                args: [0x4100_0000, 0, 0]
            }),
            Some(alloc::vec![0x4100_0000])
        );
        assert_eq!(
            fp(Op::Call {
                fid: abi::MMIO_RGUARD_MAP,
                args: [0, HUGE, 0]
            })
            .map(|v| v.len()),
            Some(64)
        );
        assert_eq!(
            fp(Op::Read {
                addr: 0xa00_0ffc,
                width: Width::W64,
                signed: false,
                device: None,
                hole: false
            }),
            Some(alloc::vec![0xa00_0000, 0xa00_1000])
        );
        // Its last byte decides: a read that ends at the granule's end stays in it.
        assert_eq!(
            fp(Op::Read {
                addr: 0xa00_0ffc,
                width: Width::W32,
                signed: false,
                device: None,
                hole: false
            }),
            Some(alloc::vec![0xa00_0000])
        );
        assert_eq!(
            fp(Op::Write {
                addr: 0x901_0004,
                value: 0
            }),
            Some(alloc::vec![0x901_0000])
        );
        assert_eq!(
            fp(Op::Pair { addr: 0x903_0fe0 }),
            Some(alloc::vec![0x903_0000])
        );
        assert_eq!(
            fp(Op::Call {
                fid: abi::MMIO_GUARD_ENROLL,
                args: [0; 3]
            }),
            None
        );
        assert_eq!(fp(Op::Canary), None);
        assert_eq!(fp(Op::Console), None);
        for n in [30u64, 100, 333] {
            let s = p.slice(9, n);
            assert_eq!(*s.last().unwrap(), n);
            assert!(s.windows(2).all(|w| w[0] < w[1]));
            let last = p.footprint(&p.step(9, n).op);
            for &i in &s[..s.len() - 1] {
                let op = p.step(9, i).op;
                assert!(!matches!(op, Op::Canary | Op::Console));
                if let (Some(l), Some(f)) = (&last, p.footprint(&op)) {
                    assert!(f.iter().any(|a| l.contains(a)
                        || l.contains(&(a + 0x1000))
                        || l.contains(&(a.wrapping_sub(0x1000)))));
                }
            }
            // Steps near the failing one are never left out.
            for i in 0..n {
                let op = p.step(9, i).op;
                if let (Some(l), Some(f)) = (&last, p.footprint(&op)) {
                    if f.iter().any(|a| l.contains(a)) {
                        assert!(s.contains(&i), "{i}");
                    }
                }
            }
            assert!(s.len() < n as usize);
        }
        // A Canary step depends on everything.
        assert_eq!(p.slice(9, 49), (0..=49).collect::<Vec<u64>>());
    }

    #[test]
    fn step_lines() {
        let s = |op| {
            format!(
                "{}",
                Step {
                    index: 7,
                    cpu: 1,
                    op,
                    beside: None
                }
            )
        };
        assert_eq!(
            s(Op::Call {
                fid: abi::MMIO_GUARD_MAP,
                args: [0x9010000, 0, 1]
            }),
            "step 7 cpu1: hvc MMIO_GUARD_MAP(0xc6000007) x1=0x9010000 x2=0x0 x3=0x1"
        );
        assert_eq!(
            s(Op::Read {
                addr: 0x10,
                width: Width::W8,
                signed: true,
                device: None,
                hole: false
            }),
            "step 7 cpu1: read signed 1B at 0x10"
        );
        assert_eq!(
            s(Op::Read {
                addr: 0x10,
                width: Width::W32,
                signed: false,
                device: None,
                hole: true
            }),
            "step 7 cpu1: read 4B at 0x10 (no device)"
        );
        assert_eq!(s(Op::Pair { addr: 0x20 }), "step 7 cpu1: ldp 16B at 0x20");
        assert_eq!(
            s(Op::Write {
                addr: 0x20,
                value: 5
            }),
            "step 7 cpu1: write 4B at 0x20 = 0x5"
        );
        assert_eq!(
            s(Op::Dma { addr: 0x4100_0108 }),
            "step 7 cpu1: dma: the entropy device fills 32B at 0x41000108"
        );
        assert_eq!(s(Op::Console), "step 7 cpu1: console ping");
        let both = Step {
            index: 7,
            cpu: 1,
            op: Op::Pair { addr: 0x20 },
            beside: Some(Op::Write {
                addr: 0x9000,
                value: 1,
            }),
        };
        assert_eq!(
            format!("{both}"),
            "step 7 cpu1: ldp 16B at 0x20, at once with cpu0: write 4B at 0x9000 = 0x1"
        );
        assert_eq!(s(Op::Canary), "step 7 cpu1: canary check");
    }

    /// With a device, DMA steps take the same two places in every 50 and nothing else
    /// changes; without one there are none.
    #[test]
    fn dma_steps_only_with_a_device_and_only_in_their_places() {
        let without = pool(Profile::Android14, true);
        let with = Pool {
            dma: true,
            ..without.clone()
        };
        for i in 0..2000 {
            let (a, b) = (without.step(4, i), with.step(4, i));
            assert!(!matches!(a.op, Op::Dma { .. }), "{a}");
            if DMA_AT.contains(&(i % CANARY_EVERY)) {
                let Op::Dma { addr } = b.op else {
                    panic!("{b}")
                };
                assert_eq!(b.cpu, 0, "{b}");
                let g = with.align(addr);
                assert!(with.share_pool.contains(&g), "{b}");
                assert!(addr % 8 == 0 && addr + DMA_BYTES <= g + with.granule, "{b}");
                assert_eq!(with.footprint(&b.op), Some(BTreeSet::from([g])));
            } else {
                assert_eq!(a, b);
            }
        }
    }

    /// DMA buffers: every granule of the sharing pool, from its first byte to its last
    /// whole buffer, 8-byte aligned, never beyond.
    #[test]
    fn dma_buffers_cover_the_pool_granules_and_stay_inside() {
        let p = Pool {
            dma: true,
            ..pool(Profile::Android14, false)
        };
        let g = p.granule;
        let mut r = Rng::new(3);
        let mut granules = BTreeSet::new();
        let mut offsets = BTreeSet::new();
        for _ in 0..40_000 {
            let Op::Dma { addr } = p.dma_addr(&mut r) else {
                panic!("not a DMA step")
            };
            let base = p.align(addr);
            assert!(p.share_pool.contains(&base), "{addr:#x}");
            assert!(addr % 8 == 0 && addr - base + DMA_BYTES <= g, "{addr:#x}");
            granules.insert(base);
            offsets.insert(addr - base);
        }
        assert_eq!(granules.len(), p.share_pool.len());
        assert!(
            offsets.contains(&0) && offsets.contains(&(g - DMA_BYTES)),
            "{offsets:?}"
        );
    }

    /// Every kind of IPA MEM_SHARE/UNSHARE are meant to get, and nothing else.
    #[test]
    fn share_ipas_cover_every_class_and_only_those() {
        let p = pool(Profile::Android16, true);
        let g = p.granule;
        let targets: Vec<u64> = p.targets.iter().map(|t| p.align(t.id_addr)).collect();
        let mut seen = alloc::collections::BTreeMap::new();
        let mut r = Rng::new(8);
        let n = 20_000;
        for _ in 0..n {
            let a = p.share_ipa(&mut r);
            let class = if p.share_pool.contains(&a) {
                "pool page"
            } else if p.share_pool.contains(&p.align(a)) {
                assert!(a.is_multiple_of(8) && !a.is_multiple_of(g), "{a:#x}");
                "inside a pool page"
            } else if targets.contains(&a) {
                "target"
            } else if p.holes.contains(&a) {
                "hole"
            } else if a == 1 << IPA_MAX_BITS {
                "beyond 52 bits"
            } else if a == !(g - 1) {
                "top granule"
            } else {
                panic!("an IPA of no class: {a:#x}")
            };
            *seen.entry(class).or_insert(0u32) += 1;
        }
        // In twentieths, as the generator draws them.
        for (class, twentieths) in [
            ("pool page", 14),
            ("inside a pool page", 1),
            ("target", 2),
            ("hole", 1),
            ("beyond 52 bits", 1),
            ("top granule", 1),
        ] {
            let want = n * twentieths / 20;
            let got = seen.get(class).copied().unwrap_or(0);
            assert!(
                got.abs_diff(want) < n / 100,
                "{class}: {got} of {n}, want about {want}"
            );
        }
    }

    /// The mix of steps, as designed: in every 100 ops, 30 reads, 4 load pairs, 4 writes
    /// and 62 calls (of those, in every 100: 22 MAP, 12 UNMAP, 12 RGUARD_MAP,
    /// 5 RGUARD_UNMAP, 18 MEM_SHARE, 16 MEM_UNSHARE, 4 ENROLL, 5 info, 6 others).
    #[test]
    fn the_op_mix_is_as_designed() {
        let p = pool(Profile::Android14, true);
        let mut seen = alloc::collections::BTreeMap::new();
        let mut total = 0u32;
        for i in (0..60_000).filter(|i| {
            let k = i % CANARY_EVERY;
            k != CANARY_EVERY - 1 && k != CANARY_EVERY / 2 - 1
        }) {
            let class = match p.step(21, i).op {
                Op::Read { .. } => "read",
                Op::Pair { .. } => "ldp",
                Op::Write { .. } => "write",
                Op::Call { fid, .. } => match fid {
                    abi::HYP_MEMINFO | abi::MMIO_GUARD_INFO => "info",
                    abi::SMCCC_VERSION
                    | abi::PSCI_VERSION
                    | abi::KVM_FEATURES
                    | abi::VENDOR_HYP_CALL_UID
                    | 0x8600_0003
                    | 0x8600_0007
                    | 0x8600_0008 => "other",
                    _ => abi::name(fid),
                },
                other => panic!("{other:?}"),
            };
            *seen.entry(class).or_insert(0u32) += 1;
            total += 1;
        }
        let calls = |per_100: u32| 62 * per_100;
        for (class, per_10000) in [
            ("read", 3000),
            ("ldp", 400),
            ("write", 400),
            ("MMIO_GUARD_MAP", calls(22)),
            ("MMIO_GUARD_UNMAP", calls(12)),
            ("MMIO_RGUARD_MAP", calls(12)),
            ("MMIO_RGUARD_UNMAP", calls(5)),
            ("MEM_SHARE", calls(18)),
            ("MEM_UNSHARE", calls(16)),
            ("MMIO_GUARD_ENROLL", calls(4)),
            ("info", calls(5)),
            ("other", calls(6)),
        ] {
            let want = u64::from(total) * per_10000 as u64 / 10_000;
            let got = u64::from(seen.get(class).copied().unwrap_or(0));
            // 0.4% of all steps: about five standard deviations for these counts.
            assert!(
                got.abs_diff(want) < u64::from(total) / 250,
                "{class}: {got} of {total}, want about {want}"
            );
        }
        assert_eq!(seen.len(), 12, "{seen:?}");
    }

    /// Reserved bits of the range and (before android16) MEM_SHARE calls: 0 mostly, 1
    /// sometimes, never more (x3 is the range calls' only reserved argument the ABI
    /// rejects when odd); info calls get anything; ldp always at the ID block; calls that
    /// change no state stay on CPU 0.
    #[test]
    fn call_arguments_and_places() {
        let p = pool(Profile::Android14, true);
        let mut bits = alloc::collections::BTreeMap::new();
        let mut info_args = BTreeSet::new();
        for i in 0..40_000 {
            let s = p.step(17, i);
            match s.op {
                Op::Call { fid, args } => {
                    let x = match fid {
                        abi::MMIO_RGUARD_MAP | abi::MMIO_RGUARD_UNMAP => Some(args[2]),
                        abi::MEM_SHARE | abi::MEM_UNSHARE => {
                            *bits.entry(args[1]).or_insert(0u32) += 1;
                            Some(args[2])
                        }
                        abi::HYP_MEMINFO | abi::MMIO_GUARD_INFO => {
                            info_args.insert(args[0]);
                            None
                        }
                        _ => None,
                    };
                    if let Some(x) = x {
                        *bits.entry(x).or_insert(0u32) += 1;
                    }
                    if !on_any_cpu(&s.op) {
                        assert_eq!(s.cpu, 0, "{s}");
                    }
                }
                Op::Pair { addr } => {
                    assert!(p.targets.iter().any(|t| t.page() + 0xfe0 == addr), "{s}")
                }
                _ => {}
            }
        }
        let total: u32 = bits.values().sum();
        assert_eq!(
            bits.keys().copied().collect::<Vec<u64>>(),
            [0, 1],
            "{bits:?}"
        );
        // 0 in 8 of 10 draws (and the even half of the random ones), 1 in the rest.
        assert!(
            bits[&0] > total * 3 / 4 && bits[&1] > total / 10,
            "{bits:?}"
        );
        assert!(
            info_args.len() > 10,
            "reserved info arguments: {info_args:?}"
        );
        // Info and version calls never run on CPU 1.
        assert!(!on_any_cpu(&Op::Call {
            fid: abi::HYP_MEMINFO,
            args: [0; 3]
        }));
        assert!(!on_any_cpu(&Op::Call {
            fid: abi::SMCCC_VERSION,
            args: [0; 3]
        }));
    }

    /// A pool without targets or holes: MEM_SHARE's device IPAs fall back to beyond the
    /// IPA space, its hole IPAs to a pool page; misaligned IPAs stay inside their page.
    #[test]
    fn share_ipas_without_targets_or_holes() {
        let p = Pool {
            targets: Vec::new(),
            holes: Vec::new(),
            ..pool(Profile::Android14, false)
        };
        let g = p.granule;
        let mut r = Rng::new(12);
        let n = 200_000u32;
        let (mut beyond, mut pool_page) = (0u32, 0u32);
        let mut offsets = BTreeSet::new();
        for _ in 0..n {
            let a = p.share_ipa(&mut r);
            if a == 1 << IPA_MAX_BITS {
                beyond += 1;
            } else if p.share_pool.contains(&a) {
                pool_page += 1;
            } else if a != !(g - 1) {
                assert!(p.share_pool.contains(&p.align(a)), "{a:#x}");
                offsets.insert(a % g);
            }
        }
        // Beyond: draws 15, 16 and 18 of 20; a pool page: 0..=13 and 17.
        assert!(beyond.abs_diff(n * 3 / 20) < n / 100, "{beyond}");
        assert!(pool_page.abs_diff(n * 15 / 20) < n / 100, "{pool_page}");
        assert_eq!(offsets.first(), Some(&8));
        assert_eq!(offsets.last(), Some(&(g - 8)));
        assert!(offsets.iter().all(|o| o % 8 == 0));
    }

    /// Two ops at once: only on CPU 1's steps, about half of those that may, never beside
    /// a call that must be resumed or ordered, always more than a granule apart; the step's
    /// own op is the one a run without them makes.
    #[test]
    fn ops_at_once_are_apart_and_need_no_order() {
        for profile in [Profile::Android14, Profile::Android16] {
            let p = pool(profile, true);
            let alone = Pool {
                smp: false,
                ..p.clone()
            };
            let g = p.granule;
            let mut pairs = 0;
            let mut kinds = BTreeSet::new();
            for i in 0..20_000 {
                let s = p.step(31, i);
                assert_eq!(s.op, alone.step(31, i).op, "{s}");
                let Some(b) = s.beside else { continue };
                pairs += 1;
                assert_eq!(s.cpu, 1, "{s}");
                assert!(p.at_once(&s.op) && p.at_once(&b), "{s}");
                let (x, y) = (p.footprint(&s.op).unwrap(), p.footprint(&b).unwrap());
                assert!(
                    x.iter().all(|a| y.iter().all(|c| a.abs_diff(*c) > g)),
                    "{s}"
                );
                for op in [s.op, b] {
                    if let Op::Call { fid, args } = op {
                        assert!(!is_range(fid) || profile != Profile::Android16 || args[1] <= 1);
                        kinds.insert(fid);
                    }
                }
                assert_eq!(p.step_footprint(&s), Some(x.union(&y).copied().collect()));
            }
            let remote = (0..20_000).filter(|&i| p.step(31, i).cpu == 1).count();
            assert!(
                // Half of those that may, the other op of a kind and apart too.
                pairs > remote / 10 && pairs < remote / 2,
                "{pairs} of {remote}"
            );
            assert!(kinds.contains(&abi::MMIO_GUARD_MAP) && kinds.contains(&abi::MMIO_GUARD_UNMAP));
            assert_eq!(
                kinds.contains(&abi::MEM_SHARE),
                profile != Profile::Android16,
                "{kinds:?}"
            );
            assert!(
                !kinds.contains(&abi::MMIO_RGUARD_MAP) && !kinds.contains(&abi::MMIO_GUARD_ENROLL)
            );
        }
    }
}
