//! Stage 1: an identity map with RAM as normal write-back memory and nothing else, and
//! device windows (Device-nGnRE, execute-never) mapped on request, refcounted per page.
//! No hypervisor is involved here: `ioremap` layers the guard's registration on top.

use crate::platform::Region;
use aarch64_paging::descriptor::El1Attributes;
use aarch64_paging::idmap::IdMap;
use aarch64_paging::paging::{El1And0, MemoryRegion};
use aarch64_paging::MapError;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

use crate::kernel::arch::sysreg;

pub const PAGE_SIZE: u64 = 4096;

/// MAIR_EL1 attribute indices.
const MAIR_DEVICE_NGNRE: u64 = 0x04; // index 0
const MAIR_NORMAL_WB: u64 = 0xff; // index 1: inner/outer write-back, read/write-allocate
pub const ATTR_DEVICE: u8 = MAIR_DEVICE_NGNRE as u8;
pub const ATTR_NORMAL: u8 = MAIR_NORMAL_WB as u8;

const NORMAL: El1Attributes = El1Attributes::ATTRIBUTE_INDEX_1
    .union(El1Attributes::INNER_SHAREABLE)
    .union(El1Attributes::VALID)
    .union(El1Attributes::ACCESSED);
const DEVICE: El1Attributes = El1Attributes::ATTRIBUTE_INDEX_0
    .union(El1Attributes::VALID)
    .union(El1Attributes::ACCESSED)
    .union(El1Attributes::UXN)
    .union(El1Attributes::PXN);

/// Root level 0 with 4 KiB pages: a 48-bit VA space, enough for every IPA a VMM hands out.
const ROOT_LEVEL: usize = 0;
const T0SZ: u64 = 16;
/// TCR_EL1.IPS is capped at 48 bits: 52 needs LPA2 descriptors.
const PARANGE_48_BITS: u64 = 5;
const ASID: usize = 1;

struct State {
    idmap: IdMap<El1And0>,
    /// Users of each device page mapped by ioremap.
    device_pages: BTreeMap<u64, u32>,
    ram: Vec<Region>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// The boot CPU's MAIR_EL1, TCR_EL1, TTBR0_EL1 and SCTLR_EL1 once `enable` has turned its
/// MMU on (all 0 before), so that secondary.S turns every other CPU's MMU on with the same
/// tables and attributes. secondary.S loads them with its MMU and caches off, so `enable`
/// cleans this line to the point of coherency; the alignment keeps it alone on its line.
#[repr(C, align(64))]
pub struct MmuConfig([AtomicU64; 4]);

#[export_name = "ioguard_mmu_config"]
static MMU_CONFIG: MmuConfig = MmuConfig([const { AtomicU64::new(0) }; 4]);

// secondary.S reads MAIR, TCR, TTBR0 and SCTLR at offsets 0, 8, 16 and 24, and cleans
// one 64-byte line.
const _: () = assert!(core::mem::size_of::<MmuConfig>() == 64);
const _: () = assert!(core::mem::align_of::<MmuConfig>() == 64);

/// Whether secondary CPUs can turn their MMU on (the boot CPU's set-up is recorded).
pub fn config_recorded() -> bool {
    MMU_CONFIG.0[3].load(Ordering::Acquire) != 0
}

fn record_config(mair: u64, tcr: u64) {
    let config = [mair, tcr, sysreg::ttbr0_el1(), sysreg::sctlr_el1()];
    for (slot, v) in MMU_CONFIG.0.iter().zip(config) {
        slot.store(v, Ordering::Release);
    }
    let start = MMU_CONFIG.0.as_ptr() as u64;
    sysreg::dcache_clean_inval_poc(start, start + 32);
}

#[derive(Debug)]
pub enum MmuError {
    NotInitialised,
    Map(MapError),
    /// A device window that overlaps RAM would alias normal memory with device attributes.
    OverlapsRam(Region),
    Empty,
}

impl fmt::Display for MmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInitialised => write!(f, "page tables not set up"),
            Self::Map(e) => write!(f, "{e}"),
            Self::OverlapsRam(r) => write!(f, "device window {r} overlaps RAM"),
            Self::Empty => write!(f, "empty window"),
        }
    }
}

fn page_range(base: u64, size: u64) -> (u64, u64) {
    let start = base & !(PAGE_SIZE - 1);
    let end = base.saturating_add(size).saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    (start, end)
}

fn region(start: u64, end: u64) -> MemoryRegion {
    MemoryRegion::new(start as usize, end as usize)
}

/// Builds the identity map of `ram` (MMU still off).
pub fn init(ram: &[Region]) -> Result<(), MmuError> {
    let mut idmap = IdMap::with_asid(ASID, ROOT_LEVEL, El1And0);
    for r in ram {
        let (start, end) = page_range(r.base, r.size);
        idmap
            .map_range(&region(start, end), NORMAL)
            .map_err(MmuError::Map)?;
    }
    *STATE.lock() = Some(State {
        idmap,
        device_pages: BTreeMap::new(),
        ram: ram.to_vec(),
    });
    Ok(())
}

/// Also maps `r` as normal memory (the device tree, if a VMM put it outside `/memory`).
pub fn map_normal(r: Region) -> Result<(), MmuError> {
    let mut guard = STATE.lock();
    let st = guard.as_mut().ok_or(MmuError::NotInitialised)?;
    let (start, end) = page_range(r.base, r.size);
    st.idmap
        .map_range(&region(start, end), NORMAL)
        .map_err(MmuError::Map)
}

/// Turns the MMU and caches on with the tables built by `init`.
pub fn enable() -> Result<(), MmuError> {
    let mut guard = STATE.lock();
    let st = guard.as_mut().ok_or(MmuError::NotInitialised)?;
    let mair = MAIR_DEVICE_NGNRE | (MAIR_NORMAL_WB << 8);
    // IPS: the CPU's physical range.
    let ips = sysreg::pa_range().min(PARANGE_48_BITS);
    let tcr = T0SZ
        | (1 << 8)   // IRGN0: write-back
        | (1 << 10)  // ORGN0: write-back
        | (3 << 12)  // SH0: inner shareable
        | (1 << 23)  // EPD1: no walks through TTBR1
        | (ips << 32);
    // Everything written with the MMU off went straight to memory; make sure no stale
    // cache line over the image (tables, stacks, heap) survives into the cached world.
    sysreg::dcache_clean_inval_poc(
        crate::sym_addr!(__image_start),
        crate::sym_addr!(__image_end),
    );
    // SAFETY: MAIR and TCR are programmed before the MMU is on, so no live translation
    // depends on them; the TLB is invalidated before first use.
    unsafe {
        asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            mair = in(reg) mair,
            tcr = in(reg) tcr,
            options(nostack, preserves_flags),
        );
    }
    // SAFETY: the identity map covers all RAM, which holds the image, its stacks, heap and
    // the device tree; `STATE` keeps the tables alive for the rest of the run.
    unsafe { st.idmap.activate() };
    // SAFETY: turning on M, C and I with a valid TTBR0 and identity-mapped code keeps the
    // next instruction fetch at the same address.
    unsafe {
        asm!(
            "mrs {t}, sctlr_el1",
            "orr {t}, {t}, #(1 << 0)",   // M
            "orr {t}, {t}, #(1 << 2)",   // C
            "orr {t}, {t}, #(1 << 12)",  // I
            "msr sctlr_el1, {t}",
            "isb",
            t = out(reg) _,
            options(nostack),
        );
    }
    record_config(mair, tcr);
    Ok(())
}

fn tlb_flush_all() {
    // SAFETY: TLB maintenance does not change memory contents.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// A device window mapped in stage 1 (no hypervisor involved: see `ioremap`). Dropping it
/// unmaps the pages it was the last user of.
#[derive(Debug)]
pub struct DeviceMapping {
    base: u64,
    size: u64,
}

impl DeviceMapping {
    /// The virtual address of the window (identity: equal to the physical one).
    pub fn addr(&self) -> u64 {
        self.base
    }
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The pages `[base, base + size)` covers.
pub fn pages_of(base: u64, size: u64) -> impl Iterator<Item = u64> {
    let (start, end) = page_range(base, size);
    (start..end).step_by(PAGE_SIZE as usize)
}

/// Maps `[base, base + size)` as device memory in stage 1.
pub fn map_device(base: u64, size: u64) -> Result<DeviceMapping, MmuError> {
    if size == 0 {
        return Err(MmuError::Empty);
    }
    let (start, end) = page_range(base, size);
    let window = Region::new(start, end - start);
    let mut guard = STATE.lock();
    let st = guard.as_mut().ok_or(MmuError::NotInitialised)?;
    if let Some(r) = st.ram.iter().find(|r| r.overlaps(&window)) {
        return Err(MmuError::OverlapsRam(*r));
    }
    let mut page = start;
    while page < end {
        if !st.device_pages.contains_key(&page) {
            st.idmap
                .map_range(&region(page, page + PAGE_SIZE), DEVICE)
                .map_err(MmuError::Map)?;
        }
        *st.device_pages.entry(page).or_insert(0) += 1;
        page += PAGE_SIZE;
    }
    Ok(DeviceMapping { base, size })
}

impl Drop for DeviceMapping {
    fn drop(&mut self) {
        let (start, end) = page_range(self.base, self.size);
        let mut guard = STATE.lock();
        let Some(st) = guard.as_mut() else { return };
        let mut page = start;
        let mut unmapped = false;
        while page < end {
            if let Some(n) = st.device_pages.get_mut(&page) {
                *n -= 1;
                if *n == 0 {
                    st.device_pages.remove(&page);
                    // Unmapping a page we mapped cannot fail on range or flags.
                    let _ = st
                        .idmap
                        .map_range(&region(page, page + PAGE_SIZE), El1Attributes::empty());
                    unmapped = true;
                }
            }
            page += PAGE_SIZE;
        }
        if unmapped {
            tlb_flush_all();
        }
    }
}

/// Device pages currently mapped.
pub fn device_pages() -> usize {
    STATE.lock().as_ref().map_or(0, |s| s.device_pages.len())
}
