//! Virtio functions behind a PCI bridge from the tree (`pci-host-ecam-generic`,
//! `pci-host-cam-generic`). Configuration space is reached a page at a time, each page
//! ioremapped (registered) before its first access; BARs are assigned from the bridge's
//! `ranges` unless the tree says `linux,pci-probe-only` (crosvm), and each memory BAR is
//! ioremapped before the transport is built. Every virtio capability must lie inside a BAR
//! ioguard registered, or the function is refused before virtio-drivers touches it.

use super::hal::{self, GuestHal};
use super::transport::Guarded;
use super::Location;
use crate::bars::BarAllocator;
use crate::fault::Fault;
use crate::kernel::mm::ioremap::{self, IoMapping, IoremapError};
use crate::kernel::probe::{self, Width};
use crate::platform::{PciHost, PciSpace, Region};
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;
use virtio_drivers::transport::pci::bus::{
    BarInfo, Cam, Command, ConfigurationAccess, DeviceFunction, MemoryBarType, PciRoot,
};
use virtio_drivers::transport::pci::{PciTransport, VirtioPciError};
use virtio_drivers::transport::SomeTransport;

const PAGE: u64 = 4096;
const VIRTIO_VENDOR: u16 = 0x1af4;
/// The word holding the header type (bits 16-23), whose bit 7 says multi-function.
const HEADER_TYPE: u8 = 0x0c;
const MULTI_FUNCTION: u32 = 0x80;
const CAP_ID_VENDOR: u8 = 0x09;
/// Offsets in a virtio PCI capability (virtio 1.x, 4.1.4).
const CAP_BAR: u8 = 4;
const CAP_OFFSET: u8 = 8;
const CAP_LENGTH: u8 = 12;
const CAP_COMMON: u8 = 1;

#[derive(Debug)]
pub enum PciError {
    /// A configuration page could not be registered.
    Config(IoremapError),
    Bars(virtio_drivers::transport::pci::bus::PciError),
    /// No window in the bridge's `ranges` has room for a BAR of this size.
    NoRoom {
        bar: u8,
        size: u64,
    },
    /// A BAR that is not assigned where probe-only says BARs are assigned.
    Unassigned {
        bar: u8,
    },
    Ioremap {
        bar: u8,
        error: IoremapError,
    },
    /// An access to a registered configuration page or BAR aborted.
    Refused {
        what: &'static str,
        fault: Fault,
    },
    /// A virtio capability points outside every BAR ioguard registered.
    CapOutsideBar {
        bar: u8,
        offset: u32,
        length: u32,
    },
    Transport(VirtioPciError),
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "configuration page: {e}"),
            Self::Bars(e) => write!(f, "BARs: {e}"),
            Self::NoRoom { bar, size } => {
                write!(
                    f,
                    "no room in the bridge's ranges for BAR{bar} of {size:#x} bytes"
                )
            }
            Self::Unassigned { bar } => {
                write!(
                    f,
                    "BAR{bar} is unassigned, and the tree says BARs are pre-assigned"
                )
            }
            Self::Ioremap { bar, error } => write!(f, "BAR{bar}: ioremap: {error}"),
            Self::Refused { what, fault } => {
                write!(f, "an access to the registered {what} aborted: {fault}")
            }
            Self::CapOutsideBar {
                bar,
                offset,
                length,
            } => write!(
                f,
                "a virtio capability points at BAR{bar} + {offset:#x} ({length:#x} bytes), \
                 outside every BAR ioguard registered"
            ),
            Self::Transport(e) => write!(f, "{e}"),
        }
    }
}

/// Configuration space through registered pages only.
struct GuardedConfig {
    base: u64,
    cam: Cam,
    pages: Rc<RefCell<Pages>>,
}

#[derive(Default)]
struct Pages {
    mapped: BTreeMap<u64, IoMapping>,
    error: Option<IoremapError>,
    /// The first configuration access that aborted.
    fault: Option<Fault>,
}

impl GuardedConfig {
    /// The address of `offset` in `df`'s configuration space, its page registered first;
    /// None when the page cannot be registered.
    fn reg(&self, df: DeviceFunction, offset: u8) -> Option<u64> {
        let addr = self.base + u64::from(self.cam.cam_offset(df, offset));
        let page = addr & !(PAGE - 1);
        let mut pages = self.pages.borrow_mut();
        if let alloc::collections::btree_map::Entry::Vacant(slot) = pages.mapped.entry(page) {
            match ioremap::ioremap(page, PAGE) {
                Ok(m) => {
                    slot.insert(m);
                }
                Err(e) => {
                    pages.error.get_or_insert(e);
                    return None;
                }
            }
        }
        Some(addr)
    }
}

impl ConfigurationAccess for GuardedConfig {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        match self.reg(df, offset) {
            // SAFETY: `a` is an aligned word in a configuration page ioremapped above and
            // held in `pages` for as long as this bus is probed; a read of configuration
            // space has no side effect, and the probe API catches an abort.
            Some(a) => match unsafe { probe::read(a, Width::W32) } {
                Ok(v) => v as u32,
                Err(l) => {
                    self.pages.borrow_mut().fault.get_or_insert(l.fault);
                    u32::MAX
                }
            },
            // What an absent function answers: the probe moves on.
            None => u32::MAX,
        }
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        if let Some(a) = self.reg(df, offset) {
            // SAFETY: as for `read_word`; configuration space is not memory Rust uses.
            if let Err(fault) = unsafe { probe::write(a, Width::W32, u64::from(data)) } {
                self.pages.borrow_mut().fault.get_or_insert(fault);
            }
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        Self {
            base: self.base,
            cam: self.cam,
            pages: self.pages.clone(),
        }
    }
}

/// A memory BAR as ioguard knows it: where the CPU sees it.
#[derive(Clone, Copy, Debug)]
struct Bar {
    index: u8,
    cpu: Region,
}

fn cpu_of(host: &PciHost, pci: u64) -> u64 {
    host.windows
        .iter()
        .find(|w| {
            matches!(w.space, PciSpace::Mem32 | PciSpace::Mem64)
                && pci >= w.pci
                && pci - w.pci < w.size
        })
        .map_or(pci, |w| w.cpu + (pci - w.pci))
}

/// Assigns (or, probe-only, reads) the memory BARs of `df`.
fn memory_bars(
    root: &mut PciRoot<GuardedConfig>,
    df: DeviceFunction,
    host: &PciHost,
    probe_only: bool,
    alloc: &mut [BarAllocator],
) -> Result<Vec<Bar>, PciError> {
    let infos = root.bars(df).map_err(PciError::Bars)?;
    let mut bars = Vec::new();
    for (i, info) in infos.iter().enumerate() {
        let index = i as u8;
        let Some(BarInfo::Memory {
            address_type,
            address,
            size,
            ..
        }) = *info
        else {
            // I/O BARs stay off: ioguard enables memory decoding only.
            continue;
        };
        if size == 0 {
            continue;
        }
        let wide = address_type == MemoryBarType::Width64;
        let pci = if probe_only {
            if address == 0 {
                return Err(PciError::Unassigned { bar: index });
            }
            address
        } else {
            let placed = alloc
                .iter_mut()
                .find_map(|a| a.place(size, !wide))
                .ok_or(PciError::NoRoom { bar: index, size })?;
            if wide {
                root.set_bar_64(df, index, placed.pci);
            } else {
                root.set_bar_32(df, index, placed.pci as u32);
            }
            placed.pci
        };
        bars.push(Bar {
            index,
            cpu: Region::new(cpu_of(host, pci), size),
        });
    }
    Ok(bars)
}

/// Refuses the function unless each virtio capability lies inside one of `bars`; returns
/// where the common configuration is.
fn capabilities_inside(
    root: &PciRoot<GuardedConfig>,
    config: &GuardedConfig,
    df: DeviceFunction,
    bars: &[Bar],
) -> Result<Option<u64>, PciError> {
    let mut common = None;
    for cap in root.capabilities(df) {
        // Only the structures virtio-drivers maps: common, notify, ISR and device
        // configuration (the PCI-configuration-access capability's BAR fields are the
        // driver's to fill, and stay 0).
        let cfg_type = (cap.private_header >> 8) as u8;
        if cap.id != CAP_ID_VENDOR || !(1..=4).contains(&cfg_type) {
            continue;
        }
        let bar = config.read_word(df, cap.offset + CAP_BAR) as u8;
        let offset = config.read_word(df, cap.offset + CAP_OFFSET);
        let length = config.read_word(df, cap.offset + CAP_LENGTH);
        let inside = bars
            .iter()
            .find(|b| b.index == bar && u64::from(offset) + u64::from(length) <= b.cpu.size);
        if cfg_type == CAP_COMMON {
            common = inside.map(|b| b.cpu.base + u64::from(offset));
        }
        if inside.is_none() {
            return Err(PciError::CapOutsideBar {
                bar,
                offset,
                length,
            });
        }
    }
    Ok(common)
}

fn function(
    root: &mut PciRoot<GuardedConfig>,
    config: &GuardedConfig,
    df: DeviceFunction,
    host: &PciHost,
    probe_only: bool,
    alloc: &mut [BarAllocator],
) -> Result<Guarded, PciError> {
    let bars = memory_bars(root, df, host, probe_only, alloc)?;
    let mut windows = Vec::new();
    for b in &bars {
        let m = ioremap::ioremap(b.cpu.base, b.cpu.size).map_err(|error| PciError::Ioremap {
            bar: b.index,
            error,
        })?;
        windows.push(m);
    }
    let (_, command) = root.get_status_command(df);
    root.set_command(
        df,
        (command | Command::MEMORY_SPACE | Command::BUS_MASTER) - Command::IO_SPACE,
    );
    let common = capabilities_inside(root, config, df, &bars)?;
    if let Some(fault) = config.pages.borrow_mut().fault.take() {
        return Err(PciError::Refused {
            what: "configuration space",
            fault,
        });
    }
    if let Some(addr) = common {
        // The first access to the BARs through the probe API (device_feature_select: no
        // side effect), so that a refused BAR costs this function, not the run.
        // SAFETY: a register inside a BAR ioremapped above.
        if let Err(l) = unsafe { probe::read(addr, Width::W32) } {
            return Err(PciError::Refused {
                what: "BAR",
                fault: l.fault,
            });
        }
    }
    let regions: Vec<Region> = bars.iter().map(|b| b.cpu).collect();
    for r in &regions {
        hal::allow_window(*r);
    }
    match PciTransport::new::<GuestHal, _>(root, df) {
        Ok(t) => Ok(Guarded::new(SomeTransport::from(t), windows, regions)),
        Err(e) => {
            for r in &regions {
                hal::forbid_window(*r);
            }
            Err(PciError::Transport(e))
        }
    }
}

/// The virtio functions on bus 0: function 0 of each device, and the others only of a
/// multi-function device. (virtio-drivers' `enumerate_bus` reads all 256 functions, which
/// would register 256 configuration pages on ECAM, each a hypercall.)
fn virtio_functions(config: &GuardedConfig) -> Vec<DeviceFunction> {
    let mut out = Vec::new();
    for device in 0..32 {
        for function in 0..8 {
            let df = DeviceFunction {
                bus: 0,
                device,
                function,
            };
            let id = config.read_word(df, 0);
            if id & 0xffff == 0xffff {
                if function == 0 {
                    break;
                }
                continue;
            }
            let (vendor, device_id) = (id as u16, (id >> 16) as u16);
            if vendor == VIRTIO_VENDOR && (0x1000..=0x107f).contains(&device_id) {
                out.push(df);
            }
            let multi = config.read_word(df, HEADER_TYPE) >> 16 & MULTI_FUNCTION != 0;
            if function == 0 && !multi {
                break;
            }
        }
    }
    out
}

/// Every virtio function on bus 0 of `host`, with its transport or why there is none.
/// The configuration pages registered for the scan are given back at the end; each
/// transport keeps its BARs.
/// What a bridge's scan found: each virtio function with its transport or why there is
/// none, and how many configuration pages the scan registered.
pub type Scan = (Vec<(Location, Result<Guarded, PciError>)>, usize);

/// `skip`: a function already driven (the output console), left alone.
pub fn probe(host: &PciHost, probe_only: bool, skip: Option<Location>) -> Result<Scan, PciError> {
    let pages = Rc::new(RefCell::new(Pages::default()));
    let config = GuardedConfig {
        base: host.config.base,
        cam: if host.ecam { Cam::Ecam } else { Cam::MmioCam },
        pages: pages.clone(),
    };
    // SAFETY: the clone only reads capabilities, which nothing writes meanwhile.
    let reader = unsafe { config.unsafe_clone() };
    let mut root = PciRoot::new(config);
    let mut alloc: Vec<BarAllocator> = host
        .windows
        .iter()
        .filter(|w| matches!(w.space, PciSpace::Mem32 | PciSpace::Mem64))
        .map(|w| BarAllocator::new(*w))
        .collect();
    // 32-bit windows first: a 64-bit BAR falls back to them, a 32-bit one cannot go higher.
    alloc.sort_by_key(|a| a.is_64());
    let found = virtio_functions(&reader);
    let mut out = Vec::new();
    for df in found {
        let at = Location::Pci {
            bus: df.bus,
            device: df.device,
            function: df.function,
        };
        if skip == Some(at) {
            continue;
        }
        out.push((
            at,
            function(&mut root, &reader, df, host, probe_only, &mut alloc),
        ));
    }
    let mut p = pages.borrow_mut();
    if let Some(e) = p.error.take() {
        if out.is_empty() {
            return Err(PciError::Config(e));
        }
    }
    Ok((out, p.mapped.len()))
}
