//! Device tree -> `Platform`: everything ioguard needs to know about the machine it boots
//! on. No device address is compiled into ioguard; all of them come from here.
//!
//! Nothing in a device tree is trusted: every malformed or missing piece becomes a
//! `PlatformError` with a message that names the node, never a panic.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use dtoolkit::fdt::{Fdt, FdtNode};
use dtoolkit::standard::{NodeStandard, Status};
use dtoolkit::{Node, Property};

/// A physical address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub size: u64,
}

impl Region {
    pub const fn new(base: u64, size: u64) -> Self {
        Self { base, size }
    }
    /// One past the last byte; saturates instead of wrapping.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr < self.end()
    }
    pub fn overlaps(&self, other: &Region) -> bool {
        self.base < other.end() && other.base < self.end()
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.base, self.end())
    }
}

/// The SMCCC/PSCI conduit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Hvc,
    Smc,
}

impl fmt::Display for Conduit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hvc => "hvc",
            Self::Smc => "smc",
        })
    }
}

/// The UART models ioguard drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PL011 (QEMU `virt`).
    Pl011,
    /// 8250/16550 (crosvm, kvmtool): register `n` at `base + (n << reg_shift)`, accessed
    /// `io_width` bytes wide.
    Ns16550 { reg_shift: u32, io_width: u32 },
}

impl UartKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pl011 => "pl011",
            Self::Ns16550 { .. } => "ns16550a",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Console {
    /// The node the console came from.
    pub path: String,
    pub kind: UartKind,
    pub region: Region,
}

/// Any node with a `reg` in the CPU's address space: the candidates for stray-access probes
/// and for "nothing is mapped before ioremap".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub path: String,
    /// First entry of `compatible`, or "" when there is none.
    pub compatible: String,
    pub regs: Vec<Region>,
    /// `arm,primecell-periphid`: how a PrimeCell whose only compatible is
    /// `arm,primecell` says what it is (crosvm's PL030 does).
    pub periphid: Option<u32>,
}

/// A PCI host bridge: its configuration window and the windows of its `ranges`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciHost {
    pub path: String,
    /// true for ECAM (`pci-host-ecam-generic`), false for CAM (`pci-host-cam-generic`).
    pub ecam: bool,
    pub config: Region,
    /// The bridge's `ranges` that parse (entries that do not are left out).
    pub windows: Vec<PciWindow>,
    /// `memory-region`: the phandle of the DMA pool its devices use (crosvm's tree).
    pub memory_region: Option<u32>,
}

/// The address space of a PCI window (bits 24-25 of the first cell of a PCI address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciSpace {
    Config,
    Io,
    Mem32,
    Mem64,
}

/// One entry of a PCI bridge's `ranges`: PCI addresses `[pci, pci + size)` of `space` are
/// CPU addresses from `cpu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciWindow {
    pub space: PciSpace,
    pub prefetchable: bool,
    pub pci: u64,
    pub cpu: u64,
    pub size: u64,
}

/// A `restricted-dma-pool` node: DMA memory for devices, placed by the VMM (`reg`) or by
/// the guest (`size` only, as crosvm's tree has it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaPool {
    pub path: String,
    pub phandle: Option<u32>,
    pub reg: Option<Region>,
    /// None when the node has neither `reg` nor a `size` that parses.
    pub size: Option<u64>,
}

/// How the console was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleSource {
    /// `/chosen/stdout-path` (possibly through an alias).
    StdoutPath,
    /// No `stdout-path`: the first UART node of the tree.
    FirstUart,
}

impl fmt::Display for ConsoleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::StdoutPath => "stdout-path",
            Self::FirstUart => "first UART node",
        })
    }
}

/// What the device tree tells ioguard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub model: String,
    pub memory: Vec<Region>,
    pub console: Console,
    /// Where the console choice came from.
    pub console_source: ConsoleSource,
    pub psci: Conduit,
    pub bootargs: String,
    /// MPIDR of each CPU node.
    pub cpus: Vec<u64>,
    pub virtio_mmio: Vec<Region>,
    pub pci: Vec<PciHost>,
    /// `/chosen/linux,pci-probe-only`: BARs are assigned already and must not move.
    pub pci_probe_only: bool,
    pub dma_pools: Vec<DmaPool>,
    pub devices: Vec<Device>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// The blob is not a well-formed flattened device tree.
    NotATree(String),
    NoMemory,
    BadReg {
        node: String,
        why: String,
    },
    BadProperty {
        node: String,
        property: &'static str,
        why: String,
    },
    ConsoleNotFound {
        path: String,
    },
    ConsoleUnsupported {
        path: String,
        compatible: String,
    },
    NoConsole,
    NoPsci,
    BadPsciMethod(String),
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotATree(why) => write!(f, "not a valid device tree: {why}"),
            Self::NoMemory => write!(f, "no /memory node with a usable reg"),
            Self::BadReg { node, why } => write!(f, "{node}: bad reg: {why}"),
            Self::BadProperty {
                node,
                property,
                why,
            } => write!(f, "{node}: bad {property}: {why}"),
            Self::ConsoleNotFound { path } => {
                write!(
                    f,
                    "/chosen/stdout-path names '{path}', which is not in the tree"
                )
            }
            Self::ConsoleUnsupported { path, compatible } => write!(
                f,
                "console {path} is '{compatible}': only arm,pl011 and ns16550a are supported"
            ),
            Self::NoConsole => write!(f, "no console: no /chosen/stdout-path and no UART node"),
            Self::NoPsci => write!(f, "no /psci node: cannot power off"),
            Self::BadPsciMethod(m) => write!(f, "/psci method '{m}' is neither hvc nor smc"),
        }
    }
}

/// Nodes are not nested deeper than this; a deeper tree is refused rather than risk the
/// stack on a hostile blob.
const MAX_DEPTH: usize = 16;

fn prop_str<'a>(
    node: &FdtNode<'a>,
    name: &'static str,
    path: &str,
) -> Result<Option<&'a str>, PlatformError> {
    match node.property(name) {
        None => Ok(None),
        Some(p) => {
            let v: &'a [u8] = p
                .value_as::<&'a [u8]>()
                .map_err(|e| PlatformError::BadProperty {
                    node: path.to_string(),
                    property: name,
                    why: e.to_string(),
                })?;
            let v = v.strip_suffix(&[0]).unwrap_or(v);
            let v = v.split(|b| *b == 0).next().unwrap_or(&[]);
            core::str::from_utf8(v)
                .map(Some)
                .map_err(|_| PlatformError::BadProperty {
                    node: path.to_string(),
                    property: name,
                    why: "not UTF-8".to_string(),
                })
        }
    }
}

fn prop_u32(
    node: &FdtNode<'_>,
    name: &'static str,
    path: &str,
) -> Result<Option<u32>, PlatformError> {
    match node.property(name) {
        None => Ok(None),
        Some(p) => p
            .value_as::<u32>()
            .map(Some)
            .map_err(|e| PlatformError::BadProperty {
                node: path.to_string(),
                property: name,
                why: e.to_string(),
            }),
    }
}

fn first_compatible(node: &FdtNode<'_>) -> String {
    node.compatible()
        .and_then(|mut c| c.next())
        .unwrap_or("")
        .to_string()
}

fn is_compatible(node: &FdtNode<'_>, wanted: &[&str]) -> bool {
    node.compatible()
        .map(|mut c| c.any(|s| wanted.contains(&s)))
        .unwrap_or(false)
}

fn is_enabled(node: &FdtNode<'_>) -> bool {
    // A status that does not parse counts as enabled, as in Linux.
    !matches!(node.status(), Ok(Status::Disabled) | Ok(Status::Fail))
}

/// Address translation from a node's bus to the CPU's: a list of (child, parent, len).
#[derive(Clone, Debug, Default)]
struct Translation {
    /// None means identity (root, or every ancestor had an empty `ranges`).
    windows: Option<Vec<(u64, u64, u64)>>,
}

impl Translation {
    fn to_cpu(&self, addr: u64) -> Option<u64> {
        match &self.windows {
            None => Some(addr),
            Some(ws) => ws.iter().find_map(|&(child, parent, len)| {
                (addr >= child && addr - child < len).then(|| parent + (addr - child))
            }),
        }
    }

    /// The translation for the children of `node`, or None when they are not in the CPU's
    /// address space (no `ranges`, or a `ranges` that does not fit in 64 bits, as on PCI).
    fn for_children(&self, node: &FdtNode<'_>) -> Option<Translation> {
        node.property("ranges")?;
        let ranges = node.ranges().ok()??;
        let mut windows = Vec::new();
        for r in ranges {
            let child = r.child_bus_address::<u64>().ok()?;
            let parent = self.to_cpu(r.parent_bus_address::<u64>().ok()?)?;
            let len = r.length::<u64>().ok()?;
            windows.push((child, parent, len));
        }
        if windows.is_empty() {
            Some(self.clone())
        } else {
            Some(Translation {
                windows: Some(windows),
            })
        }
    }
}

/// All `reg` entries of a node, in CPU addresses.
fn regs(node: &FdtNode<'_>, path: &str, tr: &Translation) -> Result<Vec<Region>, PlatformError> {
    let bad = |why: String| PlatformError::BadReg {
        node: path.to_string(),
        why,
    };
    let Some(entries) = node.reg().map_err(|e| bad(e.to_string()))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for r in entries {
        let base = r.address::<u64>().map_err(|e| bad(e.to_string()))?;
        let size = r.size::<u64>().map_err(|e| bad(e.to_string()))?;
        let cpu = tr
            .to_cpu(base)
            .ok_or_else(|| bad(format!("{base:#x} is outside the parent's ranges")))?;
        if cpu.checked_add(size).is_none() {
            return Err(bad(format!("{cpu:#x} + {size:#x} wraps around")));
        }
        out.push(Region::new(cpu, size));
    }
    Ok(out)
}

fn address_cells(node: &FdtNode<'_>) -> usize {
    node.property("#address-cells")
        .and_then(|p| p.value_as::<u32>().ok())
        .map_or(2, |c| c as usize)
}

/// Big-endian cells of a property, as a number of `n` cells (1 or 2).
fn cells(bytes: &[u8], n: usize) -> Option<u64> {
    if n == 0 || n > 2 || bytes.len() != 4 * n {
        return None;
    }
    Some(bytes.chunks(4).fold(0u64, |acc, c| {
        (acc << 32) | u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }))
}

/// A PCI bridge's `ranges` (3 PCI address cells, the parent's address cells, 2 size cells),
/// in CPU addresses. Entries that do not parse or translate are left out: the bridge is
/// then only as useful as the windows that remain.
fn pci_windows(node: &FdtNode<'_>, parent_cells: usize, tr: &Translation) -> Vec<PciWindow> {
    let Some(v) = node
        .property("ranges")
        .and_then(|p| p.value_as::<&[u8]>().ok())
    else {
        return Vec::new();
    };
    let entry = 4 * (3 + parent_cells + 2);
    if address_cells(node) != 3 || !(1..=2).contains(&parent_cells) || v.len() % entry != 0 {
        return Vec::new();
    }
    v.chunks(entry)
        .filter_map(|e| {
            let hi = cells(&e[0..4], 1)?;
            let pci = cells(&e[4..12], 2)?;
            let parent = cells(&e[12..12 + 4 * parent_cells], parent_cells)?;
            let size = cells(&e[12 + 4 * parent_cells..], 2)?;
            let space = match (hi >> 24) & 3 {
                0 => PciSpace::Config,
                1 => PciSpace::Io,
                2 => PciSpace::Mem32,
                _ => PciSpace::Mem64,
            };
            let cpu = tr.to_cpu(parent)?;
            cpu.checked_add(size)?;
            Some(PciWindow {
                space,
                prefetchable: hi & (1 << 30) != 0,
                pci,
                cpu,
                size,
            })
        })
        .collect()
}

/// A `restricted-dma-pool` node: `reg` where the VMM placed it, else `size` (one or two
/// cells). A pool without either is kept with no size: the virtio layer says so and uses
/// its own, rather than the boot failing over an optional node.
fn dma_pool(node: &FdtNode<'_>, path: &str, reg: Option<Region>) -> DmaPool {
    let size = match reg {
        Some(r) => Some(r.size),
        None => node
            .property("size")
            .and_then(|p| p.value_as::<&[u8]>().ok())
            .and_then(|b| cells(b, b.len() / 4)),
    };
    DmaPool {
        path: path.to_string(),
        phandle: prop_u32(node, "phandle", path).ok().flatten(),
        reg,
        size,
    }
}

fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

struct Walk {
    dma_pools: Vec<DmaPool>,
    devices: Vec<Device>,
    memory: Vec<Region>,
    virtio_mmio: Vec<Region>,
    pci: Vec<PciHost>,
    uarts: Vec<String>,
}

/// Visits every node reachable in the CPU's address space.
fn walk(
    node: FdtNode<'_>,
    path: &str,
    tr: &Translation,
    depth: usize,
    w: &mut Walk,
) -> Result<(), PlatformError> {
    if depth > MAX_DEPTH {
        return Err(PlatformError::NotATree(format!(
            "nodes nested deeper than {MAX_DEPTH} at {path}"
        )));
    }
    for child in node.children() {
        let name = child.name();
        let cpath = child_path(path, name);
        if !is_enabled(&child) {
            continue;
        }
        let device_type = prop_str(&child, "device_type", &cpath)?;
        let is_memory = device_type == Some("memory");
        // CPUs' reg is an MPIDR, not an address: /cpus is read separately.
        if name == "cpus" || device_type == Some("cpu") {
            continue;
        }
        if is_memory {
            w.memory
                .extend(regs(&child, &cpath, tr)?.into_iter().filter(|r| r.size > 0));
            continue;
        }
        let is_pci = device_type == Some("pci");
        // Read `compatible` once per node: each property lookup is a linear scan.
        let compat: Vec<&str> = child.compatible().map(|c| c.collect()).unwrap_or_default();
        let is = |wanted: &[&str]| compat.iter().any(|c| wanted.contains(c));
        // A node whose reg does not fit ours is only fatal if we need that node; PCI
        // config nodes under a bridge, for instance, have 3-cell addresses.
        let rs = match regs(&child, &cpath, tr) {
            Ok(rs) => rs,
            Err(e) if is(&["arm,pl011", "ns16550a", "ns16550", "virtio,mmio"]) => return Err(e),
            Err(_) => Vec::new(),
        };
        if is(&["restricted-dma-pool"]) {
            w.dma_pools
                .push(dma_pool(&child, &cpath, rs.first().copied()));
        }
        if !rs.is_empty() {
            if is(&["virtio,mmio"]) {
                w.virtio_mmio.push(rs[0]);
            }
            let ecam = is(&["pci-host-ecam-generic"]);
            if ecam || is(&["pci-host-cam-generic"]) {
                w.pci.push(PciHost {
                    path: cpath.clone(),
                    ecam,
                    config: rs[0],
                    windows: pci_windows(&child, address_cells(&node), tr),
                    memory_region: prop_u32(&child, "memory-region", &cpath).ok().flatten(),
                });
            }
            if is(&["arm,pl011", "ns16550a", "ns16550"]) {
                w.uarts.push(cpath.clone());
            }
            w.devices.push(Device {
                path: cpath.clone(),
                compatible: compat.first().copied().unwrap_or("").to_string(),
                regs: rs,
                periphid: prop_u32(&child, "arm,primecell-periphid", &cpath)
                    .ok()
                    .flatten(),
            });
        }
        if !is_pci {
            if let Some(ctr) = tr.for_children(&child) {
                walk(child, &cpath, &ctr, depth + 1, w)?;
            }
        }
    }
    Ok(())
}

fn console_at(fdt: &Fdt<'_>, path: &str, tr: &Translation) -> Result<Console, PlatformError> {
    let node = fdt
        .find_node(path)
        .ok_or_else(|| PlatformError::ConsoleNotFound {
            path: path.to_string(),
        })?;
    let kind = if is_compatible(&node, &["arm,pl011"]) {
        UartKind::Pl011
    } else if is_compatible(&node, &["ns16550a", "ns16550"]) {
        let reg_shift = prop_u32(&node, "reg-shift", path)?.unwrap_or(0);
        let io_width = prop_u32(&node, "reg-io-width", path)?.unwrap_or(1);
        if reg_shift > 4 || !matches!(io_width, 1 | 4) {
            return Err(PlatformError::BadProperty {
                node: path.to_string(),
                property: "reg-shift/reg-io-width",
                why: format!("shift {reg_shift}, width {io_width}"),
            });
        }
        UartKind::Ns16550 {
            reg_shift,
            io_width,
        }
    } else {
        return Err(PlatformError::ConsoleUnsupported {
            path: path.to_string(),
            compatible: first_compatible(&node),
        });
    };
    // Consoles in QEMU, crosvm and kvmtool sit at the root; a console deeper down is read
    // with the root's translation, which is the identity.
    let region = regs(&node, path, tr)?
        .first()
        .copied()
        .filter(|r| r.size > 0)
        .ok_or_else(|| PlatformError::BadReg {
            node: path.to_string(),
            why: "no reg entry".to_string(),
        })?;
    Ok(Console {
        path: path.to_string(),
        kind,
        region,
    })
}

/// Resolves `/chosen/stdout-path` ("serial0:115200n8" or "/pl011@9000000") to a node path.
fn stdout_node(fdt: &Fdt<'_>) -> Result<Option<String>, PlatformError> {
    let Some(chosen) = fdt.find_node("/chosen") else {
        return Ok(None);
    };
    let Some(raw) = prop_str(&chosen, "stdout-path", "/chosen")? else {
        return Ok(None);
    };
    let path = raw.split(':').next().unwrap_or("");
    if path.starts_with('/') {
        return Ok(Some(path.to_string()));
    }
    let aliased = fdt
        .find_node("/aliases")
        .and_then(|a| a.property(path).and_then(|p| p.value_as::<&str>().ok()));
    Ok(Some(aliased.unwrap_or(path).to_string()))
}

fn cpus(fdt: &Fdt<'_>) -> Result<Vec<u64>, PlatformError> {
    let mut out = Vec::new();
    let Some(node) = fdt.find_node("/cpus") else {
        return Ok(out);
    };
    for cpu in node.children() {
        let path = child_path("/cpus", cpu.name());
        if prop_str(&cpu, "device_type", &path)? != Some("cpu") || !is_enabled(&cpu) {
            continue;
        }
        if let Some(first) = regs(&cpu, &path, &Translation::default())?.first() {
            out.push(first.base);
        }
    }
    Ok(out)
}

/// Interprets a device tree blob.
pub fn parse(blob: &[u8]) -> Result<Platform, PlatformError> {
    let fdt = Fdt::new(blob).map_err(|e| PlatformError::NotATree(e.to_string()))?;
    from_fdt(&fdt)
}

pub fn from_fdt(fdt: &Fdt<'_>) -> Result<Platform, PlatformError> {
    let root = fdt.root();
    let model = prop_str(&root, "model", "/")?.unwrap_or("").to_string();
    let identity = Translation::default();
    let mut w = Walk {
        dma_pools: Vec::new(),
        devices: Vec::new(),
        memory: Vec::new(),
        virtio_mmio: Vec::new(),
        pci: Vec::new(),
        uarts: Vec::new(),
    };
    walk(root, "/", &identity, 0, &mut w)?;
    w.memory.sort_unstable_by_key(|r| r.base);
    if w.memory.is_empty() {
        return Err(PlatformError::NoMemory);
    }
    // Virtio-mmio transports are probed in address order, so a run's INFO lines are stable.
    w.virtio_mmio.sort_unstable_by_key(|r| r.base);

    let (console, console_source) = match stdout_node(fdt)? {
        Some(path) => (
            console_at(fdt, &path, &identity)?,
            ConsoleSource::StdoutPath,
        ),
        None => match w.uarts.first() {
            Some(path) => (console_at(fdt, path, &identity)?, ConsoleSource::FirstUart),
            None => return Err(PlatformError::NoConsole),
        },
    };

    let psci_node = fdt.find_node("/psci").ok_or(PlatformError::NoPsci)?;
    let psci = match prop_str(&psci_node, "method", "/psci")? {
        Some("hvc") => Conduit::Hvc,
        Some("smc") => Conduit::Smc,
        Some(other) => return Err(PlatformError::BadPsciMethod(other.to_string())),
        None => return Err(PlatformError::BadPsciMethod(String::new())),
    };

    let chosen = fdt.find_node("/chosen");
    let bootargs = match &chosen {
        Some(c) => prop_str(c, "bootargs", "/chosen")?
            .unwrap_or("")
            .to_string(),
        None => String::new(),
    };
    // Linux reads the property's presence and a non-zero value alike; crosvm writes <1>.
    let pci_probe_only = chosen.as_ref().is_some_and(|c| {
        c.property("linux,pci-probe-only")
            .is_some_and(|p| p.value_as::<u32>().ok().is_none_or(|v| v != 0))
    });

    Ok(Platform {
        model,
        memory: w.memory,
        console,
        console_source,
        psci,
        bootargs,
        cpus: cpus(fdt)?,
        virtio_mmio: w.virtio_mmio,
        pci: w.pci,
        pci_probe_only,
        dma_pools: w.dma_pools,
        devices: w.devices,
    })
}

impl Platform {
    /// The RAM region that contains `addr`.
    pub fn ram_containing(&self, addr: u64) -> Option<Region> {
        self.memory.iter().copied().find(|r| r.contains(addr))
    }

    /// The first RAM region (the tree has at least one: `parse` refuses a tree without).
    pub fn first_ram(&self) -> Option<Region> {
        self.memory.first().copied()
    }
}

#[cfg(test)]
mod tests;
