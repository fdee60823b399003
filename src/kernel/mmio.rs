//! Device register accessors: each is exactly one `ldr`/`str` without writeback.
//!
//! pKVM (and hypmodel) can only emulate an access whose syndrome is valid, which a plain
//! volatile pointer access does not guarantee (the compiler may pick a post-indexed or pair
//! form). safe-mmio does the same for typed register blocks; ioguard's registers are
//! addressed at run time (UART `reg-shift` and `reg-io-width` come from the device tree),
//! so these four untyped accessors serve better here.

use core::arch::asm;

/// # Safety
/// `addr` must be a mapped device register that is safe to read with this width.
pub unsafe fn read8(addr: u64) -> u8 {
    let v: u32;
    // SAFETY: the caller guarantees the address is a mapped, readable register.
    unsafe {
        asm!("ldrb {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, preserves_flags))
    };
    v as u8
}

/// # Safety
/// `addr` must be a mapped device register that is safe to read with this width.
pub unsafe fn read32(addr: u64) -> u32 {
    let v: u32;
    // SAFETY: the caller guarantees the address is a mapped, readable register.
    unsafe {
        asm!("ldr {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, preserves_flags))
    };
    v
}

/// # Safety
/// `addr` must be a mapped device register that is safe to write with this width.
pub unsafe fn write8(addr: u64, v: u8) {
    // SAFETY: the caller guarantees the address is a mapped, writable register.
    unsafe {
        asm!("strb {v:w}, [{a}]", a = in(reg) addr, v = in(reg) u32::from(v), options(nostack, preserves_flags))
    };
}

/// # Safety
/// `addr` must be a mapped device register that is safe to write with this width.
pub unsafe fn write32(addr: u64, v: u32) {
    // SAFETY: the caller guarantees the address is a mapped, writable register.
    unsafe {
        asm!("str {v:w}, [{a}]", a = in(reg) addr, v = in(reg) v, options(nostack, preserves_flags))
    };
}
