//! The DMA pool: a run of granules reserved in the image (`.dma_pool`, linker.ld) that is
//! MEM_SHAREd with the host once, when the devices are set up, and MEM_UNSHAREd when they
//! are dropped. Queues are allocated from it; with memory sharing every driver buffer is
//! bounced through it (copied in for the device to read, copied out for the driver to
//! read), so a device never sees a private page, not even one on the stack. Without memory
//! sharing buffers pass through unchanged. Everything given to a device is recorded in the
//! DMA ledger (`crate::dma`).
//!
//! The pool's allocator is linked_list_allocator's `Heap` over the pool's memory: first
//! fit is plenty for a handful of queues and one request in flight per device.

use crate::dma::{Given, Ledger, Tally, Violation};
use crate::kernel::hyp::mem_sharer::{MemSharer, ShareError};
use crate::platform::Region;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use linked_list_allocator::Heap;
use spin::Mutex;

/// Queue memory per device: two queues (net, console) of two pages each (the ring areas
/// virtio-drivers allocates for a queue, legacy or modern layout).
const PER_DEVICE: u64 = 4 * PAGE as u64;
/// Room for bounce buffers: one request in flight per device, the largest a 4 KiB blk
/// transfer or a 2 KiB frame, and indirect descriptor tables (each granule is a MEM_SHARE
/// and a MEM_UNSHARE, so no more than that).
const BOUNCE_ROOM: u64 = 0x4000;

/// The pool size `devices` devices need.
pub fn size_for(devices: usize) -> u64 {
    BOUNCE_ROOM + PER_DEVICE * devices as u64
}
/// Alignment of queue memory (virtio-drivers' page).
const PAGE: usize = 4096;
/// Alignment of a bounce buffer.
const BOUNCE_ALIGN: usize = 16;

pub struct Pool {
    region: Region,
    heap: Heap,
    sharer: Option<&'static MemSharer>,
    granule: u64,
    ledger: Ledger,
}

/// Which pool: the devices' (set up with them, taken back when they are dropped) or the
/// output console's (set up with it at boot, kept until power-off, so that the suite's last
/// lines still go through virtio-console). The devices' pool starts at the section's start,
/// the output's ends at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Devices,
    Output,
}

static POOLS: [Mutex<Option<Pool>>; 2] = [Mutex::new(None), Mutex::new(None)];

fn slot(w: Which) -> &'static Mutex<Option<Pool>> {
    &POOLS[w as usize]
}
/// `selftest: dma-private`: the next buffer goes to the device as it is, unbounced.
static UNBOUNCED_NEXT: AtomicBool = AtomicBool::new(false);

/// Makes the next `bounce_in` hand the device the driver's own (private) buffer: only for
/// the self-test that shows the hypervisor keeps private memory from devices.
pub fn give_next_unbounced() {
    UNBOUNCED_NEXT.store(true, Ordering::Relaxed);
}

/// Takes back a `give_next_unbounced` no buffer used (the request failed before it).
pub fn bounce_next() {
    UNBOUNCED_NEXT.store(false, Ordering::Relaxed);
}

#[derive(Debug)]
pub enum PoolError {
    /// The pool is already set up.
    Busy,
    /// The image's `.dma_pool` section is smaller than one granule, or misaligned.
    Section { region: Region, granule: u64 },
    /// MEM_SHARE of a pool granule did not succeed; the granules before it were taken back.
    Share(ShareError),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy => write!(f, "the DMA pool is already set up"),
            Self::Section { region, granule } => write!(
                f,
                "the image's DMA pool section {region} cannot hold a granule of {granule:#x}"
            ),
            Self::Share(e) => write!(f, "sharing the DMA pool: {e}"),
        }
    }
}

/// What setting up the pool did.
#[derive(Clone, Copy, Debug)]
pub struct PoolInfo {
    pub region: Region,
    /// The sharing granule; None without memory sharing.
    pub granule: Option<u64>,
    /// The size asked for was more than the image reserves.
    pub capped_from: Option<u64>,
}

/// What taking the pool back did.
#[derive(Debug)]
pub struct Teardown {
    pub unshared: u64,
    pub failures: Vec<ShareError>,
    pub still_shared: usize,
    pub tally: Tally,
    pub violations: Vec<Violation>,
}

fn section() -> Region {
    let start = crate::sym_addr!(__dma_pool_start);
    let end = crate::sym_addr!(__dma_pool_end);
    Region::new(start, end - start)
}

fn granules(r: Region, g: u64) -> impl Iterator<Item = u64> {
    (0..r.size / g).map(move |i| r.base + i * g)
}

/// Sets pool `w` up: `size` bytes (rounded up to the granule, capped at what the image's
/// section has left beside the other pool), shared granule by granule when `sharer` is
/// given.
pub fn init(
    w: Which,
    size: u64,
    sharer: Option<&'static MemSharer>,
) -> Result<PoolInfo, PoolError> {
    let mut lock = slot(w).lock();
    if lock.is_some() {
        return Err(PoolError::Busy);
    }
    let other = match w {
        Which::Devices => region(Which::Output),
        Which::Output => region(Which::Devices),
    };
    let sec = section();
    // What the other pool leaves of the section.
    let free = match (w, other) {
        (Which::Devices, Some(o)) => Region::new(sec.base, o.base - sec.base),
        (Which::Output, Some(o)) => Region::new(o.end(), sec.end() - o.end()),
        (_, None) => sec,
    };
    let granule = sharer.map_or(PAGE as u64, |s| s.granule().max(PAGE as u64));
    let rounded = size.max(1).div_ceil(granule).saturating_mul(granule);
    let capped_from = (rounded > free.size).then_some(size);
    let len = rounded.min(free.size / granule * granule);
    let base = match w {
        Which::Devices => free.base,
        Which::Output => free.end() - len,
    };
    let region = Region::new(base, len);
    if region.size == 0 || !granule.is_power_of_two() || !region.base.is_multiple_of(granule) {
        return Err(PoolError::Section {
            region: free,
            granule,
        });
    }
    let mut ledger = Ledger::new(sharer.map(|_| (region, granule)));
    if let Some(s) = sharer {
        for (i, g) in granules(region, granule).enumerate() {
            if let Err(e) = s.share(g) {
                for back in granules(region, granule).take(i) {
                    let _ = s.unshare(back);
                }
                return Err(PoolError::Share(e));
            }
            ledger.shared(g);
        }
    }
    let mut heap = Heap::empty();
    // SAFETY: the section is reserved for the pool by linker.ld, is RAM inside the image,
    // and nothing else uses it; the pool is set up once at a time (checked above), and a
    // torn-down pool's memory is no longer referenced by any device (see `teardown`).
    unsafe { heap.init(region.base as *mut u8, region.size as usize) };
    *lock = Some(Pool {
        region,
        heap,
        sharer,
        granule,
        ledger,
    });
    Ok(PoolInfo {
        region,
        granule: sharer.map(|_| granule),
        capped_from,
    })
}

/// Takes every granule of pool `w` back from the host and forgets the pool. Its devices
/// must have been dropped (reset) first: they must not touch the pool again.
pub fn teardown(w: Which) -> Option<Teardown> {
    let mut pool = slot(w).lock().take()?;
    let mut unshared = 0;
    let mut failures = Vec::new();
    if let Some(s) = pool.sharer {
        for g in granules(pool.region, pool.granule) {
            match s.unshare(g) {
                Ok(()) => {
                    unshared += 1;
                    pool.ledger.unshared(g);
                }
                Err(e) => failures.push(e),
            }
        }
    }
    Some(Teardown {
        unshared,
        failures,
        still_shared: pool.ledger.still_shared(),
        tally: pool.ledger.tally(),
        violations: pool.ledger.violations().to_vec(),
    })
}

/// Pool `w`'s ledger: counts and first violations so far, and whether it bounces.
pub fn ledger(w: Which) -> Option<(Tally, Vec<Violation>, bool)> {
    let lock = slot(w).lock();
    let p = lock.as_ref()?;
    Some((
        p.ledger.tally(),
        p.ledger.violations().to_vec(),
        p.ledger.sharing(),
    ))
}

pub fn region(w: Which) -> Option<Region> {
    slot(w).lock().as_ref().map(|p| p.region)
}

/// Records MMIO asked for outside every registered window.
pub fn note_unknown_mmio(addr: u64, len: u64) {
    if let Some(p) = slot(Which::Devices).lock().as_mut() {
        p.ledger.unknown_mmio(addr, len);
    }
}

/// Zeroed, page-aligned queue memory, or None when the pool is full or not set up.
pub fn alloc_pages(w: Which, pages: usize) -> Option<NonNull<u8>> {
    let mut lock = slot(w).lock();
    let p = lock.as_mut()?;
    let layout = Layout::from_size_align(pages.checked_mul(PAGE)?, PAGE).ok()?;
    let Ok(ptr) = p.heap.allocate_first_fit(layout) else {
        p.ledger.exhausted(layout.size() as u64);
        return None;
    };
    // SAFETY: the allocator just handed out `layout.size()` bytes at `ptr`, inside the pool.
    unsafe { ptr.as_ptr().write_bytes(0, layout.size()) };
    p.ledger
        .given(Given::Queue, ptr.as_ptr() as u64, layout.size() as u64);
    Some(ptr)
}

/// Gives back what `alloc_pages(pages)` returned.
///
/// # Safety
/// `ptr` came from `alloc_pages(w, pages)` and the device no longer uses it.
pub unsafe fn free_pages(w: Which, ptr: NonNull<u8>, pages: usize) {
    let Some(layout) = pages
        .checked_mul(PAGE)
        .and_then(|s| Layout::from_size_align(s, PAGE).ok())
    else {
        return;
    };
    if let Some(p) = slot(w).lock().as_mut() {
        // SAFETY: the caller passes memory this pool's heap allocated with this layout.
        unsafe { p.heap.deallocate(ptr, layout) };
    }
}

/// The address the device is to use for `buffer`: a copy in the pool when sharing (copied
/// in unless the device only writes it), the buffer itself otherwise.
///
/// # Safety
/// `buffer` is valid for reads and writes of its length for the duration of the call.
pub unsafe fn bounce_in(w: Which, buffer: NonNull<[u8]>, device_reads: bool) -> u64 {
    let len = buffer.len();
    let addr = buffer.cast::<u8>().as_ptr() as u64;
    let mut lock = slot(w).lock();
    let Some(p) = lock.as_mut() else {
        return addr;
    };
    if p.sharer.is_none() || UNBOUNCED_NEXT.swap(false, Ordering::Relaxed) {
        p.ledger.given(Given::Direct, addr, len as u64);
        return addr;
    }
    let layout = Layout::from_size_align(len.max(1), BOUNCE_ALIGN);
    let Some(bounce) = layout.ok().and_then(|l| p.heap.allocate_first_fit(l).ok()) else {
        // No room: the device gets the private buffer, and the ledger says so.
        p.ledger.exhausted(len as u64);
        p.ledger.given(Given::Bounce, addr, len as u64);
        return addr;
    };
    if device_reads {
        // SAFETY: `buffer` is readable for `len` bytes (caller), `bounce` was just allocated
        // with `len` bytes, and the two do not overlap (the pool is not the caller's memory).
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, bounce.as_ptr(), len) };
    }
    let b = bounce.as_ptr() as u64;
    p.ledger.given(Given::Bounce, b, len as u64);
    b
}

/// The device is done with `paddr` (what `bounce_in` returned for `buffer`): copies the
/// device's writes back unless it only read, and frees the bounce buffer.
///
/// # Safety
/// `paddr` is what `bounce_in(w, buffer, ..)` returned, the device no longer uses it, and
/// `buffer` is valid for writes of its length for the duration of the call.
pub unsafe fn bounce_out(w: Which, paddr: u64, buffer: NonNull<[u8]>, device_writes: bool) {
    let len = buffer.len();
    let addr = buffer.cast::<u8>().as_ptr() as u64;
    if paddr == addr {
        return;
    }
    let mut lock = slot(w).lock();
    let Some(p) = lock.as_mut() else {
        return;
    };
    if !p.region.contains(paddr) {
        return;
    }
    if device_writes {
        // SAFETY: `paddr` is a live bounce buffer of `len` bytes in the pool (caller), and
        // `buffer` is writable for `len` bytes and does not overlap it.
        unsafe { core::ptr::copy_nonoverlapping(paddr as *const u8, addr as *mut u8, len) };
    }
    if let (Ok(layout), Some(ptr)) = (
        Layout::from_size_align(len.max(1), BOUNCE_ALIGN),
        NonNull::new(paddr as *mut u8),
    ) {
        // SAFETY: `paddr` was allocated by this heap with this layout in `bounce_in`.
        unsafe { p.heap.deallocate(ptr, layout) };
    }
}
