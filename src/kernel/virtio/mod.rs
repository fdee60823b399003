//! Virtio devices through registered windows only. Devices come from the tree (virtio-mmio
//! nodes; virtio functions behind a PCI bridge), every window, configuration page and BAR
//! is ioremapped (so registered with the guard) before its first access, DMA memory comes
//! from a pool shared with the host (`pool`), and requests are polled (`devices`).
//!
//! The set of devices (`Bus`) is built on first use and lives until `drop_bus`, which
//! resets the devices, unregisters their windows and takes the pool back.

pub mod devices;
pub mod hal;
mod mmio;
pub mod output;
mod pci;
pub mod pool;
mod transport;

pub use transport::notifies;

use crate::dma::Violation;
use crate::kernel::exceptions;
use crate::kernel::hyp::mem_sharer::MemSharer;
use crate::kernel::mm::ioremap::IoremapError;
use crate::platform::Platform;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use devices::{Blk, Console, DeviceError, Net, Rng};
use hal::OutputHal;
use spin::{Mutex, MutexGuard};
use transport::Guarded;
use virtio_drivers::transport::mmio::MmioError;
use virtio_drivers::transport::{DeviceType, Transport};

/// Where a transport is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    Mmio { base: u64, version: u32 },
    Pci { bus: u8, device: u8, function: u8 },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Mmio { base, version } => match version {
                1 => write!(f, "virtio-mmio@{base:#x} (legacy)"),
                2 => write!(f, "virtio-mmio@{base:#x} (modern)"),
                _ => write!(f, "virtio-mmio@{base:#x}"),
            },
            Self::Pci {
                bus,
                device,
                function,
            } => write!(f, "virtio-pci {bus:02x}:{device:02x}.{function}"),
        }
    }
}

#[derive(Debug)]
pub enum ProbeError {
    Ioremap(IoremapError),
    Mmio(MmioError),
    Pci(pci::PciError),
    Null,
    /// The first access to the registered window aborted.
    Refused(crate::fault::Fault),
    Device(DeviceError),
    /// A device ioguard does not drive (it is still counted as discovered).
    NotDriven(DeviceType),
    /// The DMA pool could not be set up: no queue can be built.
    NoPool,
    /// The output console's own pool could not be set up.
    OutputPool(pool::PoolError),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ioremap(e) => write!(f, "ioremap: {e}"),
            Self::Mmio(e) => write!(f, "{e}"),
            Self::Pci(e) => write!(f, "{e}"),
            Self::Null => write!(f, "window at address 0"),
            Self::Refused(fault) => {
                write!(
                    f,
                    "the first access to the registered window aborted: {fault}"
                )
            }
            Self::Device(e) => write!(f, "set-up: {e}"),
            Self::NotDriven(t) => write!(f, "{t:?} devices are not driven by ioguard"),
            Self::NoPool => write!(f, "no DMA pool"),
            Self::OutputPool(e) => write!(f, "the output console's pool: {e}"),
        }
    }
}

/// One transport found in the tree.
#[derive(Debug)]
pub struct Found {
    pub at: Location,
    pub kind: Option<DeviceType>,
    pub result: Result<(), ProbeError>,
    /// The windows it was reached through, registered before the first access: (base, size).
    pub windows: Vec<(u64, u64)>,
}

pub struct Bus {
    pub found: Vec<Found>,
    /// virtio-mmio windows with no device behind them (device ID 0).
    pub empty_mmio: usize,
    /// PCI bridges in the tree, and what went wrong with one (it is then skipped).
    pub pci_errors: Vec<(String, pci::PciError)>,
    /// None when no device needed one.
    pub pool: Option<Result<pool::PoolInfo, pool::PoolError>>,
    /// The size asked of the pool, and where it came from.
    pub pool_wanted: (u64, String),
    pub blk: Vec<Blk>,
    pub rng: Vec<Rng>,
    pub console: Vec<Console>,
    pub net: Vec<Net>,
    /// Notifies when the bus was set up.
    pub notifies_at_setup: u64,
    /// PCI configuration pages registered for the scan (given back after it).
    pub config_pages: usize,
    /// The console set up to carry the suite's lines (over its own pool), until
    /// `output::install` takes it.
    pub output: Option<(Location, Console<OutputHal>)>,
}

static BUS: Mutex<Option<Bus>> = Mutex::new(None);
/// Whether a PCI scan placed BARs: later builds read them where they are.
static BARS_PLACED: AtomicBool = AtomicBool::new(false);

/// What the boot-time set-up is called in messages.
pub const SETUP: &str = "virtio set-up at boot";
/// Why the boot-time set-up was abandoned, and whether a check reported it.
static SETUP_FAILURE: Mutex<Option<(String, bool)>> = Mutex::new(None);

pub fn note_setup_failure(why: String) {
    *SETUP_FAILURE.lock() = Some((why, false));
}

/// Why the boot-time set-up was abandoned, if it was; marks it reported.
pub fn take_setup_failure() -> Option<String> {
    SETUP_FAILURE.lock().as_mut().map(|(why, reported)| {
        *reported = true;
        why.clone()
    })
}

/// A set-up failure no check reported.
pub fn unreported_setup_failure() -> Option<String> {
    SETUP_FAILURE
        .lock()
        .as_ref()
        .filter(|(_, reported)| !reported)
        .map(|(why, _)| why.clone())
}
/// Virtio checks abandoned by an unexpected exception or a panic.
static ABANDONED: AtomicU64 = AtomicU64::new(0);

pub fn abandoned() -> u64 {
    ABANDONED.load(Ordering::Relaxed)
}

/// The pool size for `devices` devices: what their queues need and room to bounce
/// buffers, within what the tree's `restricted-dma-pool` allows where it has one (the
/// guest shares no more than it uses: each granule is a hypercall): (bytes, why).
fn pool_size(p: &Platform, devices: usize) -> (u64, String) {
    let needed = pool::size_for(devices);
    let bridge = p.pci.iter().find_map(|h| h.memory_region);
    let node = bridge
        .and_then(|ph| p.dma_pools.iter().find(|d| d.phandle == Some(ph)))
        .or(p.dma_pools.first());
    match node.and_then(|d| d.size.map(|s| (s, d))) {
        Some((s, d)) if s < needed => (s, alloc::format!("all of {}", d.path)),
        Some((s, d)) => (
            needed,
            alloc::format!("for {devices} devices, within {}'s {s:#x}", d.path),
        ),
        None => (needed, alloc::format!("for {devices} devices")),
    }
}

fn drive(bus: &mut Bus, t: Guarded) -> Result<(), ProbeError> {
    let kind = t.device_type();
    match kind {
        DeviceType::Block => bus.blk.push(Blk::new(t).map_err(ProbeError::Device)?),
        DeviceType::EntropySource => bus.rng.push(Rng::new(t).map_err(ProbeError::Device)?),
        DeviceType::Console => bus
            .console
            .push(Console::new(t).map_err(ProbeError::Device)?),
        DeviceType::Network => bus.net.push(Net::new(t).map_err(ProbeError::Device)?),
        other => return Err(ProbeError::NotDriven(other)),
    }
    Ok(())
}

fn failed(at: Location, e: ProbeError) -> Found {
    Found {
        at,
        kind: None,
        result: Err(e),
        windows: Vec::new(),
    }
}

/// The output console's entry: it was set up at boot and is not probed again.
fn carrying_output(at: Location, windows: Vec<(u64, u64)>) -> Found {
    Found {
        at,
        kind: Some(DeviceType::Console),
        result: Ok(()),
        windows,
    }
}

/// Every transport in the tree (the DMA pool is not needed yet: no queue exists), but the
/// one carrying the suite's lines, which is only listed.
fn transports(p: &Platform, bus: &mut Bus) -> Vec<(Location, Guarded)> {
    let mut out = Vec::new();
    let mut empty = Vec::new();
    let busy = output::location();
    for &r in &p.virtio_mmio {
        if let Some((at @ Location::Mmio { base, .. }, windows)) = &busy {
            if *base == r.base {
                bus.found.push(carrying_output(*at, windows.clone()));
                continue;
            }
        }
        match mmio::probe(r) {
            Ok(mmio::Slot::Device(t, version)) => {
                let at = Location::Mmio {
                    base: r.base,
                    version,
                };
                out.push((at, t));
            }
            Ok(mmio::Slot::Empty(window)) => empty.push(window),
            Err(e) => bus.found.push(failed(
                Location::Mmio {
                    base: r.base,
                    version: 0,
                },
                e,
            )),
        }
    }
    bus.empty_mmio = empty.len();
    drop(empty);
    for host in &p.pci {
        // BARs placed by an earlier build stay where they are: a live device (the output
        // console) may be using them.
        let assigned = p.pci_probe_only || BARS_PLACED.load(Ordering::Relaxed);
        let skip = busy.as_ref().map(|(at, _)| *at);
        match pci::probe(host, assigned, skip) {
            Ok((fns, pages)) => {
                BARS_PLACED.store(true, Ordering::Relaxed);
                bus.config_pages += pages;
                for (at, t) in fns {
                    match t {
                        Ok(t) => out.push((at, t)),
                        Err(e) => bus.found.push(failed(at, ProbeError::Pci(e))),
                    }
                }
                if let Some((at @ Location::Pci { .. }, windows)) = &busy {
                    bus.found.push(carrying_output(*at, windows.clone()));
                }
            }
            Err(e) => bus.pci_errors.push((host.path.clone(), e)),
        }
    }
    out
}

/// The output pool: the console's two queues (two pages each) and room to bounce a line.
const OUTPUT_POOL: u64 = 5 * 4096;

/// Sets `t` up as the console carrying the suite's lines, over its own pool.
fn output_console(
    t: Guarded,
    sharer: Option<&'static MemSharer>,
) -> Result<Console<OutputHal>, ProbeError> {
    pool::init(pool::Which::Output, OUTPUT_POOL, sharer).map_err(ProbeError::OutputPool)?;
    match Console::<OutputHal>::new(t) {
        Ok(c) => Ok(c),
        Err(e) => {
            let _ = pool::teardown(pool::Which::Output);
            Err(ProbeError::Device(e))
        }
    }
}

fn build(p: &Platform, sharer: Option<&'static MemSharer>, want_output: bool) -> Bus {
    let mut bus = Bus {
        found: Vec::new(),
        empty_mmio: 0,
        pci_errors: Vec::new(),
        pool: None,
        pool_wanted: (0, String::new()),
        blk: Vec::new(),
        rng: Vec::new(),
        console: Vec::new(),
        net: Vec::new(),
        notifies_at_setup: 0,
        config_pages: 0,
        output: None,
    };
    let t0 = crate::kernel::arch::sysreg::counter();
    let mut found = transports(p, &mut bus);
    log::debug!(
        "virtio: transports found in {} us",
        crate::kernel::arch::sysreg::micros_since(t0)
    );
    if want_output && output::location().is_none() {
        if let Some(i) = found
            .iter()
            .position(|(_, t)| t.device_type() == DeviceType::Console)
        {
            let (at, t) = found.remove(i);
            let windows = t.windows().collect();
            let result = output_console(t, sharer).map(|c| bus.output = Some((at, c)));
            bus.found.push(Found {
                at,
                kind: Some(DeviceType::Console),
                result,
                windows,
            });
        }
    }
    // The pool is shared only when there is a device to give it to.
    if !found.is_empty() {
        bus.pool_wanted = pool_size(p, found.len());
        bus.pool = Some(pool::init(pool::Which::Devices, bus.pool_wanted.0, sharer));
    }
    for (at, t) in found {
        let kind = t.device_type();
        let windows = t.windows().collect();
        let result = match bus.pool {
            Some(Ok(_)) => drive(&mut bus, t),
            _ => Err(ProbeError::NoPool),
        };
        bus.found.push(Found {
            at,
            kind: Some(kind),
            result,
            windows,
        });
    }
    bus.notifies_at_setup = notifies();
    log::debug!(
        "virtio: set up in {} us",
        crate::kernel::arch::sysreg::micros_since(t0)
    );
    bus
}

/// The bus, built on first use. None when a check holding it was abandoned and the state
/// cannot be trusted (`abandon` drops it, so the next call builds it again).
pub fn bus(p: &Platform, sharer: Option<&'static MemSharer>) -> MutexGuard<'static, Option<Bus>> {
    bus_with_output(p, sharer, false)
}

/// `bus`, and where it is built now, the first console set up to carry the suite's lines
/// (`Bus::output`).
pub fn bus_with_output(
    p: &Platform,
    sharer: Option<&'static MemSharer>,
    want_output: bool,
) -> MutexGuard<'static, Option<Bus>> {
    let mut lock = BUS.lock();
    if lock.is_none() {
        *lock = Some(build(p, sharer, want_output));
    }
    lock
}

/// Whether the bus is built (and not dropped since).
pub fn is_built() -> bool {
    BUS.lock().is_some()
}

/// Drops every device (each is reset and its windows unregistered), then takes the pool
/// back. None when there was no bus.
/// The console carrying the suite's lines is not among them: it has its own pool and lives
/// until power-off.
pub fn drop_bus() -> Option<(Bus, Option<pool::Teardown>)> {
    let mut bus = BUS.lock().take()?;
    bus.blk.clear();
    bus.rng.clear();
    bus.console.clear();
    bus.net.clear();
    bus.output = None;
    Some((bus, pool::teardown(pool::Which::Devices)))
}

/// For a check abandoned while it used the bus: stop every device (they may be in the
/// middle of a request into memory about to be reused) and take the pool back.
pub fn abandon() {
    ABANDONED.fetch_add(1, Ordering::Relaxed);
    if BUS.is_locked() {
        // SAFETY: the only holder was the abandoned check, whose frame is gone: nothing
        // else runs on this CPU, and virtio is driven from the boot CPU only.
        unsafe { BUS.force_unlock() };
    }
    // Resetting a device whose window the hypervisor now refuses aborts again: that
    // abandons the clean-up (what is left of the set leaks, registered), not the run.
    if !exceptions::run_abandonable(|| drop(drop_bus())) {
        let _ = exceptions::take_unexpected();
        if BUS.is_locked() {
            // SAFETY: as above: the holder was the clean-up just abandoned.
            unsafe { BUS.force_unlock() };
        }
        if let Some(bus) = BUS.lock().take() {
            core::mem::forget(bus);
        }
    }
}

/// The devices' ledger so far (counts, first violations, whether buffers are bounced),
/// and the output console's.
pub fn ledgers() -> [Option<(crate::dma::Tally, Vec<Violation>, bool)>; 2] {
    [
        pool::ledger(pool::Which::Devices),
        pool::ledger(pool::Which::Output),
    ]
}
