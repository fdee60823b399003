//! Entry points, exception vectors and the register frame.

use core::arch::global_asm;

/// Saved guest (or EL2) context. The layout is fixed by the assembly below.
#[repr(C, align(16))]
pub struct Frame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub fpsr: u64,
    pub fpcr: u64,
    _pad: u64,
    pub q: [u128; 32],
}

pub const FRAME_SIZE: usize = 800;
// The offsets `hm_trap` saves to and restores from: a field moved here without the assembly
// (or the reverse) would hand the guest another register's value.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Frame>() == FRAME_SIZE);
    assert!(offset_of!(Frame, x) == 0);
    assert!(offset_of!(Frame, elr) == 248);
    assert!(offset_of!(Frame, spsr) == 256);
    assert!(offset_of!(Frame, fpsr) == 264);
    assert!(offset_of!(Frame, fpcr) == 272);
    assert!(offset_of!(Frame, q) == 288);
};
/// One EL2 stack per vCPU; linker.ld reserves `MAX_CPUS * STACK_SIZE` (8 * 0x10000).
pub const STACK_SIZE: u64 = 0x10000;
/// CPTR_EL2 with TFP = 0 (FP/SIMD not trapped) and the RES1 bits (0x32ff) set: Rust code uses
/// FP/SIMD registers for copies, so this comes before any of it runs.
const CPTR_EL2_NO_TRAPS: u64 = 0x32ff;
/// SPSR_EL2 for the first entry into the guest: EL1h (M = 0b0101) with D, A, I, F masked.
const SPSR_EL1H_DAIF_MASKED: u64 = 0x3c5;

impl Frame {
    /// Register `r` as an instruction sees it (31 = XZR).
    pub fn reg(&self, r: u8) -> u64 {
        if r >= 31 {
            0
        } else {
            self.x[r as usize]
        }
    }
    pub fn set_reg(&mut self, r: u8, v: u64) {
        if r < 31 {
            self.x[r as usize] = v;
        }
    }
}

/// What the `hm_mmio_*` helpers return in x0 (value) and x1 (fault): AAPCS64 returns a
/// 16-byte composite in x0/x1, so the struct must stay exactly two u64s in this order.
#[repr(C)]
pub struct MmioResult {
    pub value: u64,
    /// Non-zero when the bus answered with an abort.
    pub fault: u64,
}
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<MmioResult>() == 16);
    assert!(offset_of!(MmioResult, value) == 0);
    assert!(offset_of!(MmioResult, fault) == 8);
};

extern "C" {
    pub fn hm_secondary_entry();
    pub fn hm_enter_guest(entry: u64, x0: u64) -> !;
    pub fn hm_mmio_read8(addr: u64) -> MmioResult;
    pub fn hm_mmio_read16(addr: u64) -> MmioResult;
    pub fn hm_mmio_read32(addr: u64) -> MmioResult;
    pub fn hm_mmio_read64(addr: u64) -> MmioResult;
    pub fn hm_mmio_write8(addr: u64, unused: u64, value: u64) -> MmioResult;
    pub fn hm_mmio_write16(addr: u64, unused: u64, value: u64) -> MmioResult;
    pub fn hm_mmio_write32(addr: u64, unused: u64, value: u64) -> MmioResult;
    pub fn hm_mmio_write64(addr: u64, unused: u64, value: u64) -> MmioResult;
}

// Boot CPU: QEMU starts the ELF entry at EL2h with the MMU off and no x0.
// Secondaries: started by QEMU's PSCI CPU_ON at `hm_secondary_entry`, x0 = vCPU index.
// CPTR_EL2 (FP/SIMD not trapped) is set before any Rust code runs. A secondary with an index
// beyond the stacks parks.
global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    msr daifset, #0xf
    mov x0, #{cptr}
    msr cptr_el2, x0
    isb
    adrp x1, __bss_start
    add x1, x1, :lo12:__bss_start
    adrp x2, __bss_end
    add x2, x2, :lo12:__bss_end
1:  cmp x1, x2
    b.hs 2f
    stp xzr, xzr, [x1], #16
    b 1b
2:  mov x0, #0
    mov x1, #1
    b hm_common_entry

    .global hm_secondary_entry
hm_secondary_entry:
    msr daifset, #0xf
    mov x1, #{cptr}
    msr cptr_el2, x1
    isb
    cmp x0, #{max_cpus}
    b.hs 9f
    mov x1, #0
    b hm_common_entry
9:  wfe
    b 9b

hm_common_entry:
    msr spsel, #1
    msr tpidr_el2, x0
    adrp x2, __stacks_start
    add x2, x2, :lo12:__stacks_start
    add x3, x0, #1
    mov x4, #{stack}
    madd x2, x3, x4, x2
    mov sp, x2
    adrp x2, hm_vectors
    add x2, x2, :lo12:hm_vectors
    msr vbar_el2, x2
    isb
    bl hm_rust_entry
3:  wfe
    b 3b

    .global hm_enter_guest
hm_enter_guest:
    msr elr_el2, x0
    mov x2, #{spsr}
    msr spsr_el2, x2
    mov x0, x1
    .irp n,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30
    mov x\n, #0
    .endr
    eret
"#,
    stack = const STACK_SIZE,
    cptr = const CPTR_EL2_NO_TRAPS,
    max_cpus = const hypmodel::vm::MAX_CPUS,
    spsr = const SPSR_EL1H_DAIF_MASKED,
);

// Vector table. Each slot is 0x80 bytes: keep it to "make room, save two registers, record
// the kind, branch" (an oversize slot would silently shift every later slot).
// Kinds: 0-3 current EL SP0, 4-7 current EL SPx, 8-11 lower EL AArch64, 12-15 lower AArch32
// (sync, IRQ, FIQ, SError each).
global_asm!(
    r#"
    .macro HM_VEC kind
    .balign 0x80
    sub sp, sp, #{frame}
    stp x0, x1, [sp]
    mov x0, #\kind
    b hm_trap
    .endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global hm_vectors
hm_vectors:
    HM_VEC 0
    HM_VEC 1
    HM_VEC 2
    HM_VEC 3
    .balign 0x80
    b hm_cur_sync
    HM_VEC 5
    HM_VEC 6
    HM_VEC 7
    HM_VEC 8
    HM_VEC 9
    HM_VEC 10
    HM_VEC 11
    HM_VEC 12
    HM_VEC 13
    HM_VEC 14
    HM_VEC 15

    // A synchronous exception at EL2 inside one of the forwarded-access helpers is the bus
    // answering a forwarded access with an abort: resume at hm_mmio_fault, which returns
    // fault = 1 to the caller. Anything else at EL2 is a hypmodel bug (kind 4).
hm_cur_sync:
    stp x0, x1, [sp, #-16]!
    mrs x0, elr_el2
    adrp x1, hm_mmio_start
    add x1, x1, :lo12:hm_mmio_start
    cmp x0, x1
    b.lo 1f
    adrp x1, hm_mmio_end
    add x1, x1, :lo12:hm_mmio_end
    cmp x0, x1
    b.hs 1f
    adrp x0, hm_mmio_fault
    add x0, x0, :lo12:hm_mmio_fault
    msr elr_el2, x0
    ldp x0, x1, [sp], #16
    eret
1:  ldp x0, x1, [sp], #16
    sub sp, sp, #{frame}
    stp x0, x1, [sp]
    mov x0, #4
    b hm_trap

hm_trap:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    str x30, [sp, #240]
    mrs x1, elr_el2
    mrs x2, spsr_el2
    stp x1, x2, [sp, #248]
    mrs x1, fpsr
    mrs x2, fpcr
    stp x1, x2, [sp, #264]
    add x1, sp, #288
    stp q0, q1, [x1, #0]
    stp q2, q3, [x1, #32]
    stp q4, q5, [x1, #64]
    stp q6, q7, [x1, #96]
    stp q8, q9, [x1, #128]
    stp q10, q11, [x1, #160]
    stp q12, q13, [x1, #192]
    stp q14, q15, [x1, #224]
    stp q16, q17, [x1, #256]
    stp q18, q19, [x1, #288]
    stp q20, q21, [x1, #320]
    stp q22, q23, [x1, #352]
    stp q24, q25, [x1, #384]
    stp q26, q27, [x1, #416]
    stp q28, q29, [x1, #448]
    stp q30, q31, [x1, #480]
    mov x1, sp
    bl hm_exception
    add x1, sp, #288
    ldp q0, q1, [x1, #0]
    ldp q2, q3, [x1, #32]
    ldp q4, q5, [x1, #64]
    ldp q6, q7, [x1, #96]
    ldp q8, q9, [x1, #128]
    ldp q10, q11, [x1, #160]
    ldp q12, q13, [x1, #192]
    ldp q14, q15, [x1, #224]
    ldp q16, q17, [x1, #256]
    ldp q18, q19, [x1, #288]
    ldp q20, q21, [x1, #320]
    ldp q22, q23, [x1, #352]
    ldp q24, q25, [x1, #384]
    ldp q26, q27, [x1, #416]
    ldp q28, q29, [x1, #448]
    ldp q30, q31, [x1, #480]
    ldp x1, x2, [sp, #264]
    msr fpsr, x1
    msr fpcr, x2
    ldp x1, x2, [sp, #248]
    msr elr_el2, x1
    msr spsr_el2, x2
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x8, x9, [sp, #64]
    ldp x10, x11, [sp, #80]
    ldp x12, x13, [sp, #96]
    ldp x14, x15, [sp, #112]
    ldp x16, x17, [sp, #128]
    ldp x18, x19, [sp, #144]
    ldp x20, x21, [sp, #160]
    ldp x22, x23, [sp, #176]
    ldp x24, x25, [sp, #192]
    ldp x26, x27, [sp, #208]
    ldp x28, x29, [sp, #224]
    ldr x30, [sp, #240]
    ldp x0, x1, [sp]
    add sp, sp, #{frame}
    eret

    // Forwarded accesses: one load or store each, at EL2 (MMU off: Device-nGnRnE).
    // Result in x0 (value), x1 (fault). Only the access instructions lie between
    // hm_mmio_start and hm_mmio_end.
    .section .text.hm_mmio, "ax"
    .balign 4
    .global hm_mmio_read8, hm_mmio_read16, hm_mmio_read32, hm_mmio_read64
    .global hm_mmio_write8, hm_mmio_write16, hm_mmio_write32, hm_mmio_write64
hm_mmio_start:
hm_mmio_read8:
    mov x1, #0
    ldrb w0, [x0]
    ret
hm_mmio_read16:
    mov x1, #0
    ldrh w0, [x0]
    ret
hm_mmio_read32:
    mov x1, #0
    ldr w0, [x0]
    ret
hm_mmio_read64:
    mov x1, #0
    ldr x0, [x0]
    ret
hm_mmio_write8:
    mov x1, #0
    strb w2, [x0]
    ret
hm_mmio_write16:
    mov x1, #0
    strh w2, [x0]
    ret
hm_mmio_write32:
    mov x1, #0
    str w2, [x0]
    ret
hm_mmio_write64:
    mov x1, #0
    str x2, [x0]
    ret
hm_mmio_end:
    nop
hm_mmio_fault:
    mov x0, #0
    mov x1, #1
    ret
"#,
    frame = const FRAME_SIZE,
);
