//! `fuzz: run`, the seeded hypercall fuzzer (`fuzz=SEED[,COUNT][,only=N][,private-dma]`):
//! performs the steps `crate::fuzz::gen` makes and hands what each did to
//! `crate::fuzz::model`, which judges it. This file only builds the pool, performs steps
//! (on CPU 1 through `smp` when a step asks; DMA steps through the virtio-rng), and prints
//! the reproduction of the first broken invariant.

use super::pages::{all_targets, observed_load, tainted_granules};
use super::Ctx;
use crate::devices::{DeviceKind, Devices};
use crate::fuzz::gen::{Op, Pool, PoolTarget, Step, Width, DMA_BYTES};
use crate::fuzz::model::{self, DmaSeen, Invariant, Model, Note, Violation};
use crate::fuzz::{pattern, FuzzSpec};
use crate::kernel::hyp::conduit::{self, Answer};
use crate::kernel::hyp::Hypervisor;
use crate::kernel::mm::mmu;
use crate::kernel::probe;
use crate::kernel::time::Deadline;
use crate::kernel::virtio::devices::{DeviceError, ANSWER_MS};
use crate::kernel::virtio::{self, pool as dma_pool};
use crate::kernel::{console, exceptions, smp};
use crate::platform::{Platform, Region};
use crate::refusal::Observed;
use crate::report::Outcome;
use crate::targets::{TargetKind, PAGE};
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

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
/// A line at least this often during a run.
const PROGRESS_MS: u64 = 5000;

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

/// Runs `COUNT` seeded steps of hypercalls, accesses and DMA requests (or, with `only=N`,
/// the steps step N depends on), judging each against the profile's ABI and the guest's
/// model of registered granules and shared pages; FAILs at the first broken invariant with
/// the seed, the step and the steps that reproduce it.
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
    let built_here = !virtio::is_built();
    ctx.on_abandon(virtio::abandon);
    let mut run = Run::start(ctx, spec);
    let steps: Vec<u64> = match spec.only {
        Some(n) => run.pool.slice(spec.seed, n),
        None => (0..spec.count).collect(),
    };
    let (ran, failed) = run.steps(ctx, &steps);
    if built_here {
        // A hypervisor that dropped a device's registration makes its reset abort: that
        // abandons the clean-up only (the set leaks, registered), not the verdict.
        if !exceptions::run_abandonable(|| drop(virtio::drop_bus())) {
            let _ = exceptions::take_unexpected();
            virtio::abandon();
        }
    }
    run.unshare_all();
    run.verdict(ctx, ran, &steps, failed)
}

impl<'a> Run<'a> {
    /// Sets the run up: the devices first (their windows are registered before the model
    /// starts), the pool, the model, the patterns; says what it will do.
    fn start(ctx: &'a Ctx, spec: FuzzSpec) -> Self {
        let hv = ctx.hv;
        let g = granule(hv);
        let dma = dma_device(ctx, g);
        let ram: Vec<Region> = ctx.platform.memory.clone();
        let mut model = Model::new(hv.profile, g, ram, tainted_granules());
        model.private_memory = hv.mem_sharer().is_some();
        let mut held = ctx.devices.units(g);
        if let Ok(d) = &dma {
            held.extend(d.busy.iter().copied());
        }
        let run = Run {
            spec,
            pool: pool(ctx, g, &dma),
            model,
            mpidr: crate::cpus::other_cpu(&ctx.platform.cpus, smp::this_mpidr()),
            // Every incident since boot counts: the console's page is registered for the run.
            incidents: 0,
            calls: 0,
            accesses: 0,
            remote: 0,
            platform: ctx.platform,
            hv,
            dma: dma.as_ref().ok().cloned(),
            dma_count: DmaCount::default(),
            held,
            spared: 0,
            together: 0,
            alone: 0,
        };
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
        match &dma {
            Ok(d) => ctx.info(format_args!(
                "DMA steps: the entropy device (windows {}) fills buffers in the sharing pool, unbounced, {}",
                d.windows
                    .iter()
                    .map(|(b, s)| format!("{b:#x}+{s:#x}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if spec.private_dma { "private pages too" } else { "shared pages only" }
            )),
            Err(why) => ctx.info(format_args!("no DMA steps: {why}")),
        }
        run
    }

    /// Performs `steps` in order, then the final canary check, up to the first broken
    /// invariant: how many ran, and what broke.
    fn steps(&mut self, ctx: &Ctx, steps: &[u64]) -> (usize, Option<(Step, Violation)>) {
        let seed = self.spec.seed;
        let mut ran = 0;
        let mut progress = Deadline::after_ms(PROGRESS_MS);
        for &i in steps {
            if progress.passed() {
                // A long run is not a silent one (the runner stops a guest that prints
                // nothing).
                ctx.info(format_args!(
                    "step {i} of {}: every invariant held so far",
                    self.spec.count
                ));
                progress = Deadline::after_ms(PROGRESS_MS);
            }
            ran += 1;
            let step = self.pool.step(seed, i);
            if let Err(v) = self.step(&step) {
                return (ran, Some((step, v)));
            }
        }
        let end = Step {
            index: self.spec.count,
            cpu: 0,
            op: Op::Canary,
            beside: None,
        };
        (ran, self.step(&end).err().map(|v| (end, v)))
    }
}

/// The device DMA steps use.
#[derive(Clone, Debug)]
struct DmaDevice {
    windows: Vec<(u64, u64)>,
    /// Every driven device's granules: no step may name them (an UNMAP would cut a
    /// device off in the middle of the run).
    busy: BTreeSet<u64>,
}

/// The granules of size `g` that `windows` touch.
fn granules_of(windows: &[(u64, u64)], g: u64) -> BTreeSet<u64> {
    let mut d = Devices::default();
    for &(base, size) in windows {
        d.hold(DeviceKind::Virtio, Region::new(base, size), base);
    }
    d.units(g)
}

/// The entropy device, set up with the rest of the device set, or why there is none.
fn dma_device(ctx: &Ctx, g: u64) -> Result<DmaDevice, String> {
    let lock = virtio::bus(ctx.platform, ctx.hv.mem_sharer());
    let Some(bus) = lock.as_ref() else {
        return Err("the virtio device set could not be built".into());
    };
    let Some(rng) = bus.rng.first() else {
        return Err("no virtio-rng device driven".into());
    };
    Ok(DmaDevice {
        windows: rng.windows().collect(),
        busy: bus
            .found
            .iter()
            .filter(|f| f.result.is_ok())
            .flat_map(|f| granules_of(&f.windows, g))
            .collect(),
    })
}

/// The granule every step's addresses are aligned to and judged by: the guard's, else
/// memory sharing's, else a page.
fn granule(hv: &Hypervisor) -> u64 {
    hv.mmio_guard()
        .map(|g| g.granule())
        .or(hv.mem_sharer().map(|s| s.granule()))
        .unwrap_or(PAGE)
}

/// The pool of addresses every step of this run chooses from.
fn pool(ctx: &Ctx, granule: u64, dma: &Result<DmaDevice, String>) -> Pool {
    let hv = ctx.hv;
    let busy = dma.as_ref().map(|d| d.busy.clone()).unwrap_or_default();
    let targets = all_targets(ctx)
        .iter()
        .filter(|t| !busy.contains(&(t.base & !(granule - 1))))
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
        dma: dma.is_ok(),
    }
}

struct Run<'a> {
    spec: FuzzSpec,
    pool: Pool,
    model: Model,
    mpidr: Option<u64>,
    /// Console incidents not to count.
    incidents: usize,
    calls: u64,
    accesses: u64,
    remote: u64,
    platform: &'a Platform,
    hv: &'static Hypervisor,
    dma: Option<DmaDevice>,
    dma_count: DmaCount,
    /// Granules the drivers hold (the console, the virtio devices): no UNMAP step is
    /// made that would take one from under its driver.
    held: BTreeSet<u64>,
    /// UNMAP steps not made for that.
    spared: u64,
    /// Steps that made two ops at once, and of them those where CPU 1 was not ready in
    /// time (the boot CPU went first).
    together: u64,
    alone: u64,
}

/// What the DMA steps did.
#[derive(Clone, Copy, Debug, Default)]
struct DmaCount {
    /// Requests made into pages the host may reach, and into private ones.
    reachable: u64,
    private: u64,
    /// Not made: the page was private (no `private-dma`).
    private_skipped: u64,
}

/// What one op did: a call's answer, or an access's instruction and what came back.
enum Did {
    Answer(Answer),
    Access(u64, Observed),
}

/// Makes one op of a pair made at once, on whichever CPU runs this (`remote`: not the boot
/// CPU, which alone may print a trace line).
fn make(op: Op, remote: bool) -> Did {
    match op {
        Op::Call { fid, args } if remote => Did::Answer(conduit::call_untraced(fid, args)),
        Op::Call { fid, args } => Did::Answer(conduit::call(fid, args)),
        _ => {
            let (site, seen) = perform(op);
            Did::Access(site, seen)
        }
    }
}

/// The two CPUs of a pair made at once: each says it is ready, and goes when the other is.
static READY: AtomicBool = AtomicBool::new(false);
static GO: AtomicBool = AtomicBool::new(false);
/// The longest a CPU waits for the other before it goes alone.
const MEET_US: u64 = 50_000;

/// Waits for `flag`, a bounded while: whether it came.
fn meet(flag: &AtomicBool) -> bool {
    let d = Deadline::after_us(MEET_US);
    loop {
        if flag.load(Ordering::Acquire) {
            return true;
        }
        if d.passed() {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// The stage-1 window an access needs (none for anything else).
fn window(op: &Op) -> Result<Option<mmu::DeviceMapping>, Violation> {
    match *op {
        Op::Read { addr, .. } | Op::Pair { addr } | Op::Write { addr, .. } => {
            mmu::map_device(addr & !(PAGE - 1), PAGE)
                .map(Some)
                .map_err(|e| {
                    Violation::new(
                        Invariant::Step,
                        format_args!("stage-1 map of {addr:#x}: {e}"),
                    )
                })
        }
        _ => Ok(None),
    }
}

/// Performs one access (on whichever CPU runs this) and says what came back and where.
fn perform(op: Op) -> (u64, Observed) {
    match op {
        Op::Read {
            addr,
            width: w,
            signed,
            ..
        } => {
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
            let r = unsafe { probe::write(addr, Width::W32, u64::from(value)) };
            (
                probe::store_site(Width::W32),
                r.map_or_else(Observed::StoreFaulted, |_| Observed::Stored),
            )
        }
        Op::Call { .. } | Op::Dma { .. } | Op::Console | Op::Canary => (0, Observed::Stored),
    }
}

impl Run<'_> {
    fn on_cpu<R: Send + 'static>(
        &mut self,
        cpu: u8,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Violation> {
        match (cpu, self.mpidr) {
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
        if let (Some(b), 1, Some(mpidr)) = (step.beside, step.cpu, self.mpidr) {
            if !self.takes_held(&step.op) && !self.takes_held(&b) {
                return self.at_once(step.op, b, mpidr);
            }
        }
        match step.op {
            Op::Call { .. } if self.takes_held(&step.op) => {
                self.spared += 1;
                Ok(Note::Kept)
            }
            Op::Call { fid, args } => self.call(step.cpu, fid, args, None),
            Op::Read { .. } | Op::Pair { .. } | Op::Write { .. } => {
                let window = window(&step.op)?;
                let op = step.op;
                let (site, seen) = self.on_cpu(step.cpu, move || perform(op))?;
                drop(window);
                self.judge(op, Did::Access(site, seen))
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
            Op::Dma { addr } => self.dma(addr),
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

    /// Steps that make two ops at once: CPU 1 makes `there` while the boot CPU makes
    /// `here`, each waiting (a bounded while) for the other to be ready first; both are
    /// judged after, in either order the same (their granules are apart).
    fn at_once(&mut self, there: Op, here: Op, mpidr: u64) -> Result<Note, Violation> {
        let windows = (window(&there)?, window(&here)?);
        READY.store(false, Ordering::Release);
        GO.store(false, Ordering::Release);
        self.remote += 1;
        self.together += 1;
        let (far, near) = smp::run_on_beside(
            OTHER_SLOT,
            mpidr,
            move || {
                READY.store(true, Ordering::Release);
                meet(&GO);
                make(there, true)
            },
            || {
                let met = meet(&READY);
                GO.store(true, Ordering::Release);
                (met, make(here, false))
            },
        );
        let (met, near) = near;
        if !met {
            self.alone += 1;
        }
        drop(windows);
        let far = far.map_err(|e| {
            Violation::new(
                Invariant::Step,
                format_args!("the step could not run on CPU 1: {e}"),
            )
        })?;
        let a = self.judge(there, far)?;
        let b = self.judge(here, near)?;
        Ok(if a == Note::Kept { b } else { a })
    }

    /// Judges what one op did; a range call that stops early is resumed on the boot CPU.
    fn judge(&mut self, op: Op, did: Did) -> Result<Note, Violation> {
        match (op, did) {
            (Op::Call { fid, args }, Did::Answer(a)) => self.call(0, fid, args, Some(a)),
            (op, Did::Access(site, seen)) => {
                self.accesses += 1;
                self.model.access(&op, site, seen)
            }
            (op, Did::Answer(_)) => Err(Violation::new(
                Invariant::Step,
                format_args!("{op} answered as a call"),
            )),
        }
    }

    /// One call step (`first`: its first answer, when it was already made): a range call
    /// that stops early is resumed where it stopped.
    fn call(
        &mut self,
        cpu: u8,
        fid: u32,
        mut args: [u64; 3],
        mut first: Option<Answer>,
    ) -> Result<Note, Violation> {
        let mut note = Note::Kept;
        for _ in 0..MAX_RESUMES {
            self.calls += 1;
            let answer = match first.take() {
                Some(a) => a,
                None if cpu == 1 => self.on_cpu(cpu, move || conduit::call_untraced(fid, args))?,
                None => conduit::call(fid, args),
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

    /// Whether an op is an UNMAP of a granule a driver holds.
    fn takes_held(&self, op: &Op) -> bool {
        let unmap = matches!(
            op,
            Op::Call {
                fid: crate::hyp::abi::MMIO_GUARD_UNMAP | crate::hyp::abi::MMIO_RGUARD_UNMAP,
                ..
            }
        );
        unmap
            && self.model.profile.has_guard()
            && self
                .pool
                .footprint(op)
                .is_some_and(|f| f.iter().any(|g| self.held.contains(g)))
    }

    /// One DMA step: the entropy device is handed `DMA_BYTES` at `addr`, unbounced. A page
    /// the model says is private is handed over only with `private-dma`.
    fn dma(&mut self, addr: u64) -> Result<Note, Violation> {
        let reach = self.model.host_reaches(addr);
        if !reach && !self.spec.private_dma {
            self.dma_count.private_skipped += 1;
            return Ok(Note::Kept);
        }
        // The device's window stays registered: no UNMAP of a driver's granule is made.
        if reach {
            self.dma_count.reachable += 1;
        } else {
            self.dma_count.private += 1;
        }
        let seed = self.spec.seed;
        let answered = {
            let mut lock = virtio::bus(self.platform, self.hv.mem_sharer());
            let Some(rng) = lock.as_mut().and_then(|b| b.rng.first_mut()) else {
                return Err(Violation::new(
                    Invariant::Step,
                    "the entropy device is gone",
                ));
            };
            dma_pool::give_next_unbounced();
            let len = DMA_BYTES as usize;
            // The generator puts a DMA buffer inside the sharing pool, a static only this
            // check touches, one step at a time, through raw pointers.
            // SAFETY: nothing else refers to these bytes while the device may write them,
            // and `fill` resets the device before it returns without an answer.
            let buf = unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len) };
            let r = rng.fill(buf);
            dma_pool::bounce_next();
            let answered = match r {
                Ok(n) => Some(n as u32),
                Err(DeviceError::NoAnswer { .. }) => None,
                Err(e) => {
                    return Err(Violation::new(
                        Invariant::Step,
                        format_args!("the request into {addr:#x} could not be made: {e}"),
                    ))
                }
            };
            if answered.is_none() {
                rng.revive().map_err(|e| {
                    Violation::new(
                        Invariant::Step,
                        format_args!("the entropy device could not be set up again: {e}"),
                    )
                })?;
            }
            answered
        };
        let changed = check(seed, addr, DMA_BYTES).is_some();
        fill(seed, addr, DMA_BYTES);
        self.model.dma(
            addr,
            DmaSeen {
                answered,
                changed,
                waited_ms: ANSWER_MS,
            },
        )
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
        let d = self.dma_count;
        let dma = if self.dma.is_some() {
            format!(
                ", {} DMA requests ({} into private pages; {} into private pages not made)",
                d.reachable + d.private,
                d.private,
                d.private_skipped
            )
        } else {
            String::new()
        };
        let spared = if self.spared > 0 {
            format!(", {} UNMAPs of a driver's granule not made", self.spared)
        } else {
            String::new()
        };
        let what = format!(
            "{ran} steps ({} calls, {} accesses, {} on CPU 1 ({} of them two ops at once, {} with CPU 1 late){dma}{spared})",
            self.calls, self.accesses, self.remote, self.together, self.alone
        );
        let Some((step, v)) = failed else {
            return match spec.only {
                Some(n) => Outcome::pass(format_args!("seed {}: the slice of step {n} ran clean: {what}; its failure needs more than its slice: replay the prefix {}", spec.seed, spec.with(n + 1, None))),
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
            None if step.index >= spec.count => (format!("{spec}"), Vec::new()),
            None => (
                format!("{}", spec.with(spec.count, Some(step.index))),
                self.pool.slice(spec.seed, step.index),
            ),
        };
        ctx.info(format_args!(
            "reproduce: {replay} replays these {} steps (or the whole prefix: {}):",
            slice.len(),
            spec.with(step.index + 1, None)
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
