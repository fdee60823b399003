//! `fuzz: run`, the seeded hypercall fuzzer (`fuzz=SEED[,COUNT][,only=N]`): performs the
//! steps `crate::fuzz::gen` makes and hands what each did to `crate::fuzz::model`, which
//! judges it. This file only builds the pool, performs steps (on CPU 1 through `smp` when
//! a step asks), and prints the reproduction of the first broken invariant.

use super::pages::{all_targets, observed_load, tainted_granules};
use super::Ctx;
use crate::fuzz::gen::{Op, Pool, PoolTarget, Step, Width};
use crate::fuzz::model::{self, Invariant, Model, Note, Violation};
use crate::fuzz::{pattern, FuzzSpec};
use crate::kernel::hyp::conduit;
use crate::kernel::mm::mmu;
use crate::kernel::probe::{self, Width as PWidth};
use crate::kernel::{console, smp};
use crate::platform::Region;
use crate::refusal::Observed;
use crate::report::Outcome;
use crate::targets::{TargetKind, PAGE};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::UnsafeCell;

checks!(explicit "fuzz": run);

/// The sharing pool: this many granules (of up to 64 KiB), then one never shared.
const POOL_GRANULES: usize = 8;
const MAX_GRANULE: usize = 0x1_0000;
/// The canary: RAM no step names, checked every `CANARY_EVERY` steps and at the end.
const CANARY_BYTES: usize = 4 * 0x1000;
/// The most calls one range step makes (each resumes where the last stopped).
const MAX_RESUMES: usize = 64;
/// The most step lines a reproduction prints.
const MAX_LINES: usize = 400;
const OTHER_SLOT: usize = 1;
/// Console status reads per Console step.
const CONSOLE_PINGS: usize = 16;

#[repr(C, align(65536))]
struct Ram<const N: usize>(UnsafeCell<[u8; N]>);
// SAFETY: only the boot CPU's fuzz check touches these, one step at a time.
unsafe impl<const N: usize> Sync for Ram<N> {}

static SHARE_POOL: Ram<{ (POOL_GRANULES + 1) * MAX_GRANULE }> =
    Ram(UnsafeCell::new([0; (POOL_GRANULES + 1) * MAX_GRANULE]));
static CANARY: Ram<CANARY_BYTES> = Ram(UnsafeCell::new([0; CANARY_BYTES]));

fn base<const N: usize>(r: &Ram<N>) -> u64 {
    r.0.get() as u64
}

/// Fills `len` bytes from `at` with the run's pattern.
fn fill(seed: u64, at: u64, len: u64) {
    for a in (at..at + len).step_by(8) {
        // SAFETY: `a` is an aligned word of the fuzzer's own statics (the pool, the
        // canary), which nothing else references.
        unsafe { core::ptr::write_volatile(a as *mut u64, pattern(seed, a)) };
    }
}

/// The first word from `at` that lost its pattern: (address, value, pattern).
fn check(seed: u64, at: u64, len: u64) -> Option<(u64, u64, u64)> {
    (at..at + len).step_by(8).find_map(|a| {
        // SAFETY: as in `fill`: an aligned word of the fuzzer's statics.
        let v = unsafe { core::ptr::read_volatile(a as *const u64) };
        (v != pattern(seed, a)).then_some((a, v, pattern(seed, a)))
    })
}

/// Runs `COUNT` seeded steps of hypercalls and accesses (or, with `only=N`, the steps
/// step N depends on), judging each against the profile's ABI and the guest's model of
/// registered granules and shared pages; FAILs at the first broken invariant with the
/// seed, the step and the steps that reproduce it.
pub fn run(ctx: &Ctx) -> Outcome {
    let Some(spec) = ctx.opts.fuzz else {
        return Outcome::skip("no fuzz=SEED[,COUNT] on the command line");
    };
    let hv = ctx.hv;
    if hv.profile.has_guard() && hv.mmio_guard().is_none() {
        return Outcome::fail(format_args!(
            "profile {} has a guard, but it is unusable: {:?}",
            hv.profile,
            hv.guard_unusable()
        ));
    }
    let pool = pool(ctx);
    let mpidr = crate::cpus::other_cpu(&ctx.platform.cpus, smp::this_mpidr());
    let ram: Vec<Region> = ctx.platform.memory.clone();
    let granule = pool.granule;
    let mut run = Run {
        spec,
        pool,
        model: Model::new(hv.profile, granule, ram, tainted_granules()),
        mpidr,
        // Every incident since boot counts: the console's page is registered for the run.
        incidents: 0,
        calls: 0,
        accesses: 0,
        remote: 0,
    };
    let g = granule;
    fill(spec.seed, base(&SHARE_POOL), (POOL_GRANULES as u64 + 1) * g);
    fill(spec.seed, base(&CANARY), CANARY_BYTES as u64);
    ctx.info(format_args!(
        "{spec}: profile {} granule {g:#x}, {} targets, {} holes, sharing pool {:#x}+{POOL_GRANULES}x{g:#x}, canary {:#x}, {}",
        hv.profile,
        run.pool.targets.len(),
        run.pool.holes.len(),
        base(&SHARE_POOL),
        base(&CANARY),
        if run.pool.smp { "steps on CPU 0 and 1" } else { "one CPU" }
    ));
    let steps: Vec<u64> = match spec.only {
        Some(n) => run.pool.slice(spec.seed, n),
        None => (0..spec.count).collect(),
    };
    let mut failed = None;
    let mut ran = 0;
    for &i in &steps {
        ran += 1;
        let step = run.pool.step(spec.seed, i);
        if let Err(v) = run.step(&step) {
            failed = Some((step, v));
            break;
        }
    }
    if failed.is_none() {
        let end = Step {
            index: spec.count,
            cpu: 0,
            op: Op::Canary,
        };
        failed = run.step(&end).err().map(|v| (end, v));
    }
    run.unshare_all();
    run.verdict(ctx, ran, &steps, failed)
}

/// The pool of addresses every step of this run chooses from.
fn pool(ctx: &Ctx) -> Pool {
    let hv = ctx.hv;
    let granule = hv
        .mmio_guard()
        .map(|g| g.granule())
        .or(hv.mem_sharer().map(|s| s.granule()))
        .unwrap_or(PAGE);
    let targets = all_targets(ctx)
        .iter()
        .map(|t| PoolTarget {
            id_addr: t.id_addr(),
            id: t.id_value,
            primecell: matches!(
                t.device,
                TargetKind::Pl031 | TargetKind::Pl061 | TargetKind::Pl030 | TargetKind::Pl011
            ) && t.id_offset == 0xfe0,
            rw_addr: t.rw_offset.map(|o| t.base + o),
        })
        .collect();
    let p = ctx.platform;
    let busy = |page: u64| {
        let r = Region::new(page & !(granule - 1), granule);
        p.memory
            .iter()
            .chain(&p.virtio_mmio)
            .any(|m| m.overlaps(&r))
            || p.devices
                .iter()
                .flat_map(|d| &d.regs)
                .any(|m| m.overlaps(&r))
            || p.pci.iter().any(|h| {
                h.config.overlaps(&r)
                    || h.windows
                        .iter()
                        .any(|w| Region::new(w.cpu, w.size).overlaps(&r))
            })
    };
    let holes = [0x0b00_0000u64, 0x0b10_0000, 0x0e80_0000]
        .into_iter()
        .filter(|&h| !busy(h))
        .collect();
    let pool_base = base(&SHARE_POOL);
    Pool {
        profile: hv.profile,
        granule,
        targets,
        holes,
        share_pool: (0..POOL_GRANULES as u64)
            .map(|i| pool_base + i * granule)
            .collect(),
        ram_base: p.first_ram().map_or(0x4000_0000, |r| r.base),
        smp: crate::cpus::other_cpu(&p.cpus, smp::this_mpidr()).is_some(),
    }
}

struct Run {
    spec: FuzzSpec,
    pool: Pool,
    model: Model,
    mpidr: Option<u64>,
    /// Console incidents not to count.
    incidents: usize,
    calls: u64,
    accesses: u64,
    remote: u64,
}

fn pwidth(w: Width) -> PWidth {
    match w {
        Width::W8 => PWidth::W8,
        Width::W32 => PWidth::W32,
        Width::W64 => PWidth::W64,
    }
}

/// Performs one access (on whichever CPU runs this) and says what came back and where.
fn perform(op: Op) -> (u64, Observed) {
    match op {
        Op::Read {
            addr,
            width,
            signed,
            ..
        } => {
            let w = pwidth(width);
            // SAFETY: a load from a probe target's ID block or a hole, through a
            // device mapping: no read side effects; a fault is expected and caught.
            let r = unsafe {
                if signed {
                    probe::read_signed(addr, w)
                } else {
                    probe::read(addr, w)
                }
            };
            let site = if signed {
                probe::signed_load_site(w)
            } else {
                probe::load_site(w)
            };
            (site, observed_load(r))
        }
        Op::Pair { addr } => {
            // SAFETY: as for a read: a load pair from an ID block.
            let r = unsafe { probe::read_pair(addr) };
            (
                probe::ldp_site(),
                observed_load(r.map(|(a, _)| a).map_err(|(l, _)| l)),
            )
        }
        Op::Write { addr, value } => {
            // SAFETY: PL031's match register: a harmless register of a device no driver
            // holds, through a device mapping.
            let r = unsafe { probe::write(addr, PWidth::W32, u64::from(value)) };
            (
                probe::store_site(PWidth::W32),
                r.map_or_else(Observed::StoreFaulted, |_| Observed::Stored),
            )
        }
        Op::Call { .. } | Op::Console | Op::Canary => (0, Observed::Stored),
    }
}

impl Run {
    fn on_cpu<R: Send + 'static>(
        &mut self,
        step: &Step,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Violation> {
        match (step.cpu, self.mpidr) {
            (1, Some(mpidr)) => {
                self.remote += 1;
                smp::run_on(OTHER_SLOT, mpidr, f).map_err(|e| {
                    Violation::new(
                        Invariant::Step,
                        format_args!("the step could not run on CPU 1: {e}"),
                    )
                })
            }
            _ => Ok(f()),
        }
    }

    fn step(&mut self, step: &Step) -> Result<Note, Violation> {
        match step.op {
            Op::Call { fid, args } => self.call(step, fid, args),
            Op::Read { addr, .. } | Op::Pair { addr } | Op::Write { addr, .. } => {
                self.accesses += 1;
                let window = mmu::map_device(addr & !(PAGE - 1), PAGE).map_err(|e| {
                    Violation::new(
                        Invariant::Step,
                        format_args!("stage-1 map of {addr:#x}: {e}"),
                    )
                })?;
                let op = step.op;
                let (site, seen) = self.on_cpu(step, move || perform(op))?;
                drop(window);
                self.model.access(&step.op, site, seen)
            }
            Op::Console => {
                // Several pings: a registration that is lost after a number of accesses
                // shows within a run of a few thousand steps.
                let mut ping = None;
                for _ in 0..CONSOLE_PINGS {
                    ping = console::ping();
                    if !matches!(ping, Some(Ok(_))) {
                        break;
                    }
                }
                let (kept, total) = console::incidents();
                let new: Vec<String> = kept
                    .iter()
                    .skip(self.incidents)
                    .map(|i| format!("{i}"))
                    .collect();
                let new = if new.is_empty() && total > self.incidents {
                    alloc::vec![format!("{} incident(s)", total - self.incidents)]
                } else {
                    new
                };
                model::console(ping, &new).map(|_| Note::Kept)
            }
            Op::Canary => {
                let g = self.pool.granule;
                let bad = check(self.spec.seed, base(&CANARY), CANARY_BYTES as u64).or_else(|| {
                    check(
                        self.spec.seed,
                        base(&SHARE_POOL),
                        (POOL_GRANULES as u64 + 1) * g,
                    )
                });
                model::memory(bad).map(|_| Note::Kept)
            }
        }
    }

    /// One call step: a range call that stops early is resumed where it stopped.
    fn call(&mut self, step: &Step, fid: u32, mut args: [u64; 3]) -> Result<Note, Violation> {
        let mut note = Note::Kept;
        for _ in 0..MAX_RESUMES {
            self.calls += 1;
            let answer = if step.cpu == 1 {
                self.on_cpu(step, move || conduit::call_untraced(fid, args))?
            } else {
                conduit::call(fid, args)
            };
            let j = self.model.call(fid, args, answer)?;
            if j.note != Note::Kept {
                note = j.note;
            }
            match j.resume {
                Some(next) => args = next,
                None => return Ok(note),
            }
        }
        Err(Violation::new(
            Invariant::Progress,
            format_args!(
                "the range call was still not done after {MAX_RESUMES} calls (last {args:#x?})"
            ),
        ))
    }

    /// Takes back what the run left shared (the pool is the image's memory).
    fn unshare_all(&mut self) {
        let pages: Vec<u64> = self.model.shared().collect();
        for p in pages {
            let _ = conduit::call(crate::hyp::abi::MEM_UNSHARE, [p, 0, 0]);
        }
    }

    fn verdict(
        &self,
        ctx: &Ctx,
        ran: usize,
        steps: &[u64],
        failed: Option<(Step, Violation)>,
    ) -> Outcome {
        let spec = self.spec;
        let what = format!(
            "{ran} steps ({} calls, {} accesses, {} on CPU 1)",
            self.calls, self.accesses, self.remote
        );
        let Some((step, v)) = failed else {
            return match spec.only {
                Some(n) => Outcome::pass(format_args!("seed {}: the slice of step {n} ran clean: {what}; its failure needs more than its slice: replay the prefix fuzz={},{}", spec.seed, spec.seed, n + 1)),
                None if self.model.known > 0 => Outcome::kfail(true, false, format_args!("seed {}: {what}; every invariant held, {} answers were profile {}'s known bug", spec.seed, self.model.known, self.model.profile)),
                None => Outcome::pass(format_args!("seed {}: {what}; every invariant held", spec.seed)),
            };
        };
        ctx.info(format_args!("seed {} step {}: {v}", spec.seed, step.index));
        ctx.info(format_args!("failing step: {step}"));
        let (replay, slice) = match spec.only {
            Some(_) => (
                format!("{spec}"),
                steps
                    .iter()
                    .copied()
                    .take_while(|&i| i <= step.index)
                    .collect::<Vec<u64>>(),
            ),
            None if step.index >= spec.count => {
                (format!("fuzz={},{}", spec.seed, spec.count), Vec::new())
            }
            None => (
                format!("fuzz={},{},only={}", spec.seed, spec.count, step.index),
                self.pool.slice(spec.seed, step.index),
            ),
        };
        ctx.info(format_args!(
            "reproduce: {replay} replays these {} steps (or the whole prefix: fuzz={},{}):",
            slice.len(),
            spec.seed,
            step.index + 1
        ));
        for &i in slice.iter().take(MAX_LINES) {
            ctx.info(format_args!("  {}", self.pool.step(spec.seed, i)));
        }
        if slice.len() > MAX_LINES {
            ctx.info(format_args!("  ... and {} more", slice.len() - MAX_LINES));
        }
        Outcome::fail(format_args!(
            "seed {} step {}: {v} (after {what}; replay: {replay})",
            spec.seed, step.index
        ))
    }
}
