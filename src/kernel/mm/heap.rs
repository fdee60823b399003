//! The heap: linked_list_allocator over a NOLOAD region of the image.
//!
//! The heap is first used with the MMU off (to build the page tables), where memory is
//! Device-nGnRnE and load/store-exclusive is not architecturally guaranteed to work. So
//! the lock uses exclusives only once the MMU is on; before that exactly one CPU runs and
//! no exception handler allocates, so plain access is exclusive by construction.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use linked_list_allocator::Heap;

pub struct GuestHeap {
    heap: UnsafeCell<Heap>,
    locked: AtomicBool,
    smp_safe: AtomicBool,
}

// SAFETY: all access to `heap` goes through `with`, which serialises it (see module doc).
unsafe impl Sync for GuestHeap {}

impl GuestHeap {
    const fn new() -> Self {
        Self {
            heap: UnsafeCell::new(Heap::empty()),
            locked: AtomicBool::new(false),
            smp_safe: AtomicBool::new(false),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Heap) -> R) -> R {
        let smp = self.smp_safe.load(Ordering::Relaxed);
        if smp {
            while self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                core::hint::spin_loop();
            }
        }
        // SAFETY: either the lock is held, or (MMU off) only one CPU runs and nothing
        // re-enters the allocator, so this is the only reference.
        let r = f(unsafe { &mut *self.heap.get() });
        if smp {
            self.locked.store(false, Ordering::Release);
        }
        r
    }
}

// SAFETY: allocation and deallocation are delegated to linked_list_allocator under `with`.
unsafe impl GlobalAlloc for GuestHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.with(|h| {
            h.allocate_first_fit(layout)
                .map_or(core::ptr::null_mut(), |p| p.as_ptr())
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: the caller passes a pointer this allocator returned, with its layout.
            self.with(|h| unsafe { h.deallocate(p, layout) })
        }
    }
}

#[global_allocator]
pub static HEAP: GuestHeap = GuestHeap::new();

/// Hands the heap region to the allocator. Called once, first thing at boot.
pub fn init() {
    let start = crate::sym_addr!(__heap_start);
    let end = crate::sym_addr!(__heap_end);
    // SAFETY: the region is reserved for the heap by linker.ld, is RAM, and nothing else
    // uses it; init runs once, before any allocation.
    HEAP.with(|h| unsafe { h.init(start as *mut u8, (end - start) as usize) });
}

/// Called once the MMU (and with it normal cacheable memory) is on.
pub fn enable_smp_lock() {
    HEAP.smp_safe.store(true, Ordering::Release);
}
