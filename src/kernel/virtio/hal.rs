//! virtio-drivers' `Hal` for ioguard: DMA memory and bounce buffers from the shared pool
//! (vmbase's bounce-buffer Hal is the model), and MMIO only inside windows ioguard
//! registered with the guard.

use super::pool;
use crate::platform::Region;
use alloc::vec::Vec;
use core::ptr::NonNull;
use spin::Mutex;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// The windows `mmio_phys_to_virt` may hand out: BARs ioguard ioremapped (registered) for a
/// PCI transport that is being built or is alive.
static WINDOWS: Mutex<Vec<Region>> = Mutex::new(Vec::new());

/// An address no stage-1 table ioguard builds ever maps (the top of the 48-bit range):
/// what `mmio_phys_to_virt` answers for MMIO outside every known window, so that the first
/// access through it is a translation fault (the check fails with it) rather than an access
/// to a page the guard was never told about.
const UNMAPPED: usize = 0x0000_ffff_ffff_0000;

/// Lets `mmio_phys_to_virt` hand out addresses inside `r` (a registered BAR).
pub fn allow_window(r: Region) {
    WINDOWS.lock().push(r);
}

/// Forgets `r`: called before its registration is dropped.
pub fn forbid_window(r: Region) {
    let mut w = WINDOWS.lock();
    if let Some(i) = w.iter().position(|x| *x == r) {
        w.swap_remove(i);
    }
}

fn known(addr: u64, len: u64) -> bool {
    let Some(last) = addr.checked_add(len.max(1) - 1) else {
        return false;
    };
    WINDOWS
        .lock()
        .iter()
        .any(|w| w.contains(addr) && w.contains(last))
}

/// The Hal over one of the two pools (`pool::Which`): `GuestHal` for the devices,
/// `OutputHal` for the virtio-console that carries the suite's lines to the end.
pub struct PoolHal<const OUTPUT: bool>;
pub type GuestHal = PoolHal<false>;
pub type OutputHal = PoolHal<true>;

const fn which(output: bool) -> pool::Which {
    if output {
        pool::Which::Output
    } else {
        pool::Which::Devices
    }
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned pool memory that nothing else uses until
// `dma_dealloc`; `mmio_phys_to_virt` returns identity-mapped addresses of registered device
// windows only (anything else gets an address that is never mapped, so it cannot alias);
// `share` returns the address of a pool copy that lives until `unshare`, or (without
// sharing) of the buffer itself, which the caller keeps valid.
unsafe impl<const OUTPUT: bool> Hal for PoolHal<OUTPUT> {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match pool::alloc_pages(which(OUTPUT), pages) {
            // RAM is identity-mapped: the virtual address is the physical one.
            Some(p) => (p.as_ptr() as PhysAddr, p),
            // virtio-drivers turns a zero address into `Error::DmaError`.
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: virtio-drivers passes back what `dma_alloc(pages)` returned, once the
        // queue it was for is gone.
        unsafe { pool::free_pages(which(OUTPUT), vaddr, pages) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        let (addr, len) = (paddr, size as u64);
        if known(addr, len) {
            // Device windows are identity-mapped by ioremap.
            if let Some(p) = NonNull::new(paddr as *mut u8) {
                return p;
            }
        }
        pool::note_unknown_mmio(addr, len);
        NonNull::new(UNMAPPED as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let device_reads = !matches!(direction, BufferDirection::DeviceToDriver);
        // SAFETY: virtio-drivers passes a buffer valid for the duration of the call.
        unsafe { pool::bounce_in(which(OUTPUT), buffer, device_reads) }
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let device_writes = !matches!(direction, BufferDirection::DriverToDevice);
        // SAFETY: virtio-drivers passes the address `share` returned for this buffer, once the
        // device has used it, and the buffer is valid for the duration of the call.
        unsafe { pool::bounce_out(which(OUTPUT), paddr, buffer, device_writes) };
    }
}
