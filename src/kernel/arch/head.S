// Image header and primary entry.
//
// ioguard is linked at address 0 as a position-independent executable and relocates
// itself here, before any compiled code runs, so one file runs wherever a VMM loads it
// (QEMU: RAM base + 2 MiB; crosvm: 0x8000_0000). The header is the arm64 Linux Image
// header (Documentation/arch/arm64/booting.rst), so every VMM that boots Linux boots it.

.section .text.head, "ax"
.global _start
_start:
    b       ioguard_primary         // code0
    .long   0                       // code1
    .quad   0                       // text_offset
    .quad   __image_size            // image_size, .bss, stacks and heap included
    .quad   0xa                     // flags: little endian, 4K pages, any placement
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

.section .text.boot, "ax"
ioguard_primary:
    mov     x19, x0                 // the device tree, per the boot protocol
    adr     x20, _start             // load address == load offset (linked at 0)

    mrs     x1, CurrentEL
    lsr     x23, x1, #2             // the EL we were entered at, for the report
    bl      ioguard_leave_el2
    // FP/SIMD on before any compiled code: Rust uses the q registers for copies.
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb

    // Apply the R_AARCH64_RELATIVE relocations: *(base + offset) = base + addend.
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
    mov     x21, #0                 // relocations applied
    mov     x22, #0                 // relocations of any other type (reported by Rust)
2:  cmp     x1, x2
    b.hs    3f
    ldp     x3, x4, [x1], #16       // r_offset, r_info
    ldr     x5, [x1], #8            // r_addend
    cmp     x4, #1027               // R_AARCH64_RELATIVE, no symbol
    b.ne    4f
    add     x5, x5, x20
    str     x5, [x20, x3]
    add     x21, x21, #1
    b       2b
4:  add     x22, x22, #1
    b       2b
3:
    // The relative relocations themselves come packed (lld --pack-dyn-relocs=relr, ~60
    // times smaller than RELA): an even word is the offset of one pointer to relocate
    // and sets the cursor just after it; an odd word is a bitmap of which of the next 63
    // words after the cursor to relocate. Addends are in place: *p += base.
    adrp    x1, __relr_start
    add     x1, x1, :lo12:__relr_start
    adrp    x2, __relr_end
    add     x2, x2, :lo12:__relr_end
    mov     x4, x20                 // cursor
10: cmp     x1, x2
    b.hs    14f
    ldr     x3, [x1], #8
    tbnz    x3, #0, 11f
    add     x4, x20, x3             // an address: relocate it, cursor after it
    ldr     x5, [x4]
    add     x5, x5, x20
    str     x5, [x4], #8
    add     x21, x21, #1
    b       10b
11: mov     x6, x4                  // a bitmap of the 63 words from the cursor
    lsr     x3, x3, #1
12: cbz     x3, 13f
    tbz     x3, #0, 15f
    ldr     x5, [x6]
    add     x5, x5, x20
    str     x5, [x6]
    add     x21, x21, #1
15: lsr     x3, x3, #1
    add     x6, x6, #8
    b       12b
13: add     x4, x4, #(63 * 8)
    b       10b
14:
    // Zero .bss (stacks and heap are NOLOAD and need no zeroing).
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
5:  cmp     x1, x2
    b.hs    6f
    stp     xzr, xzr, [x1], #16
    b       5b
6:
    adrp    x1, __boot_stack_top
    add     x1, x1, :lo12:__boot_stack_top
    mov     sp, x1
    msr     tpidr_el1, xzr          // CPU index 0
    adrp    x1, ioguard_vectors
    add     x1, x1, :lo12:ioguard_vectors
    msr     vbar_el1, x1
    isb

    mov     x0, x19
    mov     x1, x20
    mov     x2, x21
    mov     x3, x22
    mov     x4, x23
    bl      ioguard_main
7:  wfe
    b       7b

// Linux may be entered at EL2 (QEMU virtualization=on without a hypervisor): do what a
// kernel without a hypervisor does and continue at EL1 with nothing trapped. Called with
// `bl` by the primary and the secondary entries, before either has a stack; returns at
// EL1 to x30. Clobbers x1 only.
.global ioguard_leave_el2
ioguard_leave_el2:
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    1f
    mov     x1, #(1 << 31)          // HCR_EL2.RW: EL1 is AArch64; no other trap or routing
    msr     hcr_el2, x1
    mov     x1, #3                  // CNTHCTL_EL2: EL1 may use the physical timer/counter
    msr     cnthctl_el2, x1
    msr     cntvoff_el2, xzr
    mov     x1, #0x33ff             // CPTR_EL2: RES1 bits only, FP/SIMD not trapped
    msr     cptr_el2, x1
    msr     vttbr_el2, xzr
    mrs     x1, midr_el1
    msr     vpidr_el2, x1
    mrs     x1, mpidr_el1
    msr     vmpidr_el2, x1
    movz    x1, #0x30d0, lsl #16    // SCTLR_EL1 RES1 bits, MMU and caches off
    movk    x1, #0x0800
    msr     sctlr_el1, x1
    mov     x1, #0x3c5              // EL1h, D, A, I, F masked
    msr     spsr_el2, x1
    msr     elr_el2, x30
    eret
1:  ret
