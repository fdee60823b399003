// Secondary CPU entry, started by PSCI CPU_ON (src/kernel/smp.rs) with x0 = the context
// id, which ioguard sets to the CPU's slot index (1..MAX_CPUS). It arrives at EL1, or at
// EL2 where there is no hypervisor (QEMU virtualization=on), with the MMU off. The image
// is already relocated and .bss is live: the boot CPU did both, so nothing here repeats
// them. It gets its own stack, TPIDR_EL1 = index (the per-CPU state of exceptions.rs),
// FP/SIMD and the vectors, then the boot CPU's exact MMU set-up, then Rust.
//
// STACK_SIZE and MAX_CPUS are operands from crate::smp (see arch/mod.rs).

.section .text.boot, "ax"
.global ioguard_secondary_entry
ioguard_secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0                 // slot index
    bl      ioguard_leave_el2

    // Slot 0 is the boot CPU's stack; anything past the last slot is not ours at all.
    cbz     x19, 9f
    cmp     x19, #{MAX_CPUS}
    b.hs    9f

    mov     x1, #(3 << 20)          // CPACR_EL1.FPEN: Rust uses the q registers
    msr     cpacr_el1, x1
    isb

    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x2, x19, #1
    mov     x3, #{STACK_SIZE}
    madd    x1, x2, x3, x1          // top of slot index's stack
    mov     sp, x1
    msr     tpidr_el1, x19
    adrp    x1, ioguard_vectors
    add     x1, x1, :lo12:ioguard_vectors
    msr     vbar_el1, x1

    // The MMU as the boot CPU left it (mmu::enable records the registers and cleans them
    // to the point of coherency, since this load runs with the MMU and caches off).
    adrp    x1, ioguard_mmu_config
    add     x1, x1, :lo12:ioguard_mmu_config
    ldp     x2, x3, [x1]            // MAIR_EL1, TCR_EL1
    ldp     x4, x5, [x1, #16]       // TTBR0_EL1, SCTLR_EL1
    cbz     x5, 9f                  // never recorded: the boot CPU has no MMU on
    msr     mair_el1, x2
    msr     tcr_el1, x3
    msr     ttbr0_el1, x4
    isb
    // Nothing this CPU cached before (an earlier life, or reset state) may translate.
    tlbi    vmalle1
    ic      iallu
    dsb     nsh
    isb
    msr     sctlr_el1, x5
    isb

    mov     x0, x19
    bl      ioguard_secondary       // never returns: it powers the CPU off
9:  wfe
    b       9b
