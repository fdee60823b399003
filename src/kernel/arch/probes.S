// Expected-fault sites. Each probe is a function whose faulting instruction carries a
// global label listed in ioguard_probe_sites; the exception handler recognises a fault at
// exactly such a label, records it and resumes at the next instruction. A load's
// destination is preloaded with the caller's poison value, so a faulting load returns the
// poison: proof that the fault left the destination register untouched.
//
// Every access is one plain ldr/str without writeback: pKVM can only emulate accesses
// that carry a valid syndrome (ISV = 1).

.section .text.probes, "ax"

.macro PROBE_LOAD name, insn
.global ioguard_probe_\name
ioguard_probe_\name:
    mov     x9, x1
.global ioguard_probe_\name\()_site
ioguard_probe_\name\()_site:
    \insn
    mov     x0, x9
    ret
.endm

.macro PROBE_STORE name, insn
.global ioguard_probe_\name
ioguard_probe_\name:
.global ioguard_probe_\name\()_site
ioguard_probe_\name\()_site:
    \insn
    ret
.endm

// u64 ioguard_probe_ldN(u64 addr, u64 poison)
PROBE_LOAD ld8,  "ldrb w9, [x0]"
PROBE_LOAD ld16, "ldrh w9, [x0]"
PROBE_LOAD ld32, "ldr w9, [x0]"
PROBE_LOAD ld64, "ldr x9, [x0]"
// Sign-extending loads: the emulating hypervisor must honour the syndrome's SSE bit.
PROBE_LOAD lds8,  "ldrsb x9, [x0]"
PROBE_LOAD lds16, "ldrsh x9, [x0]"
PROBE_LOAD lds32, "ldrsw x9, [x0]"
// void ioguard_probe_stN(u64 addr, u64 value)
PROBE_STORE st8,  "strb w1, [x0]"
PROBE_STORE st16, "strh w1, [x0]"
PROBE_STORE st32, "str w1, [x0]"
PROBE_STORE st64, "str x1, [x0]"

// u64 ioguard_probe_ldp(u64 addr, u64 poison, u64 *second): a load pair, which carries no
// valid syndrome. Returns the first register, stores the second through x2.
.global ioguard_probe_ldp
ioguard_probe_ldp:
    mov     x9, x1
    mov     x10, x1
.global ioguard_probe_ldp_site
ioguard_probe_ldp_site:
    ldp     x9, x10, [x0]
    str     x10, [x2]
    mov     x0, x9
    ret

// void ioguard_probe_stp(u64 addr, u64 first, u64 second): a store pair, which carries no
// valid syndrome either.
PROBE_STORE stp, "stp x1, x2, [x0]"

// void ioguard_probe_brk(void)
PROBE_STORE brk, "brk #0x10a"
// void ioguard_probe_udf(void)
PROBE_STORE udf, "udf #0x10b"

// u64 ioguard_probe_semihost(u64 op, u64 param): an A64 semihosting call. Where
// semihosting is off, HLT is an undefined instruction and x0 comes back unchanged.
PROBE_STORE semihost, "hlt #0xf000"

// u64 ioguard_probe_hvc(u64 fid) / ioguard_probe_smc(u64 fid): a bare conduit call for
// paths where the conduit is unknown (no usable device tree); UNDEF where absent.
PROBE_STORE hvc, "hvc #0"
PROBE_STORE smc, "smc #0"

// void ioguard_hvc_call(u64 regs[4]) / ioguard_smc_call(u64 regs[4]): an SMCCC call with
// x0..x3 taken from regs and written back to it. A hypervisor may answer a call with an
// abort at the instruction instead of a return value (upstream pKVM does, for MEM_SHARE
// of a device page): the armed handler steps over it and regs keep the arguments.
.macro CONDUIT_CALL name, insn
.global ioguard_\name\()_call
ioguard_\name\()_call:
    str     x0, [sp, #-16]!
    mov     x9, x0
    ldp     x0, x1, [x9]
    ldp     x2, x3, [x9, #16]
.global ioguard_\name\()_call_site
ioguard_\name\()_call_site:
    \insn
    ldr     x9, [sp], #16
    stp     x0, x1, [x9]
    stp     x2, x3, [x9, #16]
    ret
.endm

CONDUIT_CALL hvc, "hvc #0"
CONDUIT_CALL smc, "smc #0"

.section .data.rel.ro.probe_sites, "aw"
.balign 8
.global ioguard_probe_sites
ioguard_probe_sites:
    .quad ioguard_probe_ld8_site
    .quad ioguard_probe_ld16_site
    .quad ioguard_probe_ld32_site
    .quad ioguard_probe_ld64_site
    .quad ioguard_probe_lds8_site
    .quad ioguard_probe_lds16_site
    .quad ioguard_probe_lds32_site
    .quad ioguard_probe_st8_site
    .quad ioguard_probe_st16_site
    .quad ioguard_probe_st32_site
    .quad ioguard_probe_st64_site
    .quad ioguard_probe_ldp_site
    .quad ioguard_probe_stp_site
    .quad ioguard_probe_brk_site
    .quad ioguard_probe_udf_site
    .quad ioguard_probe_semihost_site
    .quad ioguard_probe_hvc_site
    .quad ioguard_probe_smc_site
    .quad ioguard_hvc_call_site
    .quad ioguard_smc_call_site
.global ioguard_probe_sites_end
ioguard_probe_sites_end:

// u64 ioguard_guarded_call(void (*f)(void *), void *arg, JmpBuf *buf)
// Calls f(arg) and returns 0; if the exception handler or the panic handler abandons the
// call, ioguard_recover returns 1 from here instead, with the callee-saved state of this
// call restored (Rust destructors of the abandoned frames do not run: their memory leaks).
.section .text.guard, "ax"
.global ioguard_guarded_call
ioguard_guarded_call:
    stp     x19, x20, [x2, #0]
    stp     x21, x22, [x2, #16]
    stp     x23, x24, [x2, #32]
    stp     x25, x26, [x2, #48]
    stp     x27, x28, [x2, #64]
    stp     x29, x30, [x2, #80]
    mov     x9, sp
    str     x9, [x2, #96]
    stp     d8, d9, [x2, #104]
    stp     d10, d11, [x2, #120]
    stp     d12, d13, [x2, #136]
    stp     d14, d15, [x2, #152]
    mov     x19, x2
    mov     x9, x0
    mov     x0, x1
    blr     x9
    mov     x2, x19
    ldp     x19, x20, [x2, #0]
    ldp     x29, x30, [x2, #80]
    mov     x0, #0
    ret

// Entered with x0 = the JmpBuf of the abandoned call (by eret or by a branch).
.global ioguard_recover
ioguard_recover:
    ldp     x19, x20, [x0, #0]
    ldp     x21, x22, [x0, #16]
    ldp     x23, x24, [x0, #32]
    ldp     x25, x26, [x0, #48]
    ldp     x27, x28, [x0, #64]
    ldp     x29, x30, [x0, #80]
    ldr     x9, [x0, #96]
    mov     sp, x9
    ldp     d8, d9, [x0, #104]
    ldp     d10, d11, [x0, #120]
    ldp     d12, d13, [x0, #136]
    ldp     d14, d15, [x0, #152]
    mov     x0, #1
    ret
