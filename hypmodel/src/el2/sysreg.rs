//! The system registers hypmodel uses, one small helper each.

macro_rules! read {
    ($name:ident, $reg:literal) => {
        pub fn $name() -> u64 {
            let v: u64;
            // SAFETY: reading this system register at EL2 has no side effect.
            unsafe { core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nomem, nostack)) };
            v
        }
    };
}

macro_rules! write {
    ($name:ident, $reg:literal) => {
        /// # Safety
        /// The caller knows what the new value does to the guest or to EL2.
        pub unsafe fn $name(v: u64) {
            // SAFETY: the caller's contract.
            unsafe { core::arch::asm!(concat!("msr ", $reg, ", {}"), in(reg) v, options(nostack)) };
        }
    };
}

read!(read_esr_el2, "esr_el2");
read!(read_far_el2, "far_el2");
read!(read_hpfar_el2, "hpfar_el2");
read!(read_tpidr_el2, "tpidr_el2");
read!(read_mpidr, "mpidr_el1");
read!(read_midr, "midr_el1");
read!(read_id_aa64mmfr0, "id_aa64mmfr0_el1");
read!(read_id_aa64pfr0, "id_aa64pfr0_el1");
read!(read_vbar_el1, "vbar_el1");
read!(read_sctlr_el1, "sctlr_el1");
read!(read_sp_el1, "sp_el1");
read!(read_sp_el0, "sp_el0");
read!(read_par_el1, "par_el1");
read!(read_current_el, "currentel");
write!(write_esr_el1, "esr_el1");
write!(write_far_el1, "far_el1");
write!(write_elr_el1, "elr_el1");
write!(write_spsr_el1, "spsr_el1");
write!(write_sp_el1, "sp_el1");
write!(write_sp_el0, "sp_el0");
write!(write_par_el1, "par_el1");
write!(write_hcr_el2, "hcr_el2");
write!(write_vtcr_el2, "vtcr_el2");
write!(write_vttbr_el2, "vttbr_el2");
write!(write_cnthctl_el2, "cnthctl_el2");
write!(write_cntvoff_el2, "cntvoff_el2");
write!(write_vpidr_el2, "vpidr_el2");
write!(write_vmpidr_el2, "vmpidr_el2");
write!(write_sctlr_el1, "sctlr_el1");
write!(write_hstr_el2, "hstr_el2");
write!(write_icc_sre_el2, "S3_4_C12_C9_5");

pub fn current_el() -> u64 {
    (read_current_el() >> 2) & 3
}

pub fn wfe() {
    // SAFETY: waits for an event; no state changes.
    unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
}

/// HCR_EL2: VM, SWIO, TSC (guest SMCs trap), RW (EL1 is AArch64), APK and API (pointer
/// authentication does not trap). IMO/FMO/AMO = 0: interrupts go straight to EL1.
const HCR: u64 = (1 << 0) | (1 << 1) | (1 << 19) | (1 << 31) | (1 << 40) | (1 << 41);
/// CNTHCTL_EL2: EL1PCTEN and EL1PCEN, so the guest reads the physical counter and uses the
/// physical timer without trapping.
const CNTHCTL: u64 = 0b11;
/// ICC_SRE_EL2: SRE, DFB, DIB and Enable (lower ELs may use the GICv3 system registers).
const ICC_SRE: u64 = 0xf;
/// SCTLR_EL1 as out of reset with its RES1 bits (MMU, caches off): the guest starts from a
/// known state whatever QEMU left there.
const SCTLR_EL1_RESET: u64 = 0x30d0_0800;
/// ID_AA64PFR0_EL1.GIC, bits [27:24]: non-zero when the GIC system registers exist.
const PFR0_GIC_SHIFT: u32 = 24;

/// Per-vCPU EL2 set-up before the first entry into the guest.
///
/// # Safety
/// `vttbr` must point at valid stage-2 tables that map only guest RAM.
pub unsafe fn setup_el2(vttbr: u64, vtcr: u64) {
    // SAFETY: the caller's contract for the tables; the other values are the documented
    // non-VHE configuration, which QEMU TCG accepts from an EL2 program.
    unsafe {
        write_vtcr_el2(vtcr);
        write_vttbr_el2(vttbr);
        write_hcr_el2(HCR);
        write_hstr_el2(0);
        write_cnthctl_el2(CNTHCTL);
        write_cntvoff_el2(0);
        write_vpidr_el2(read_midr());
        write_vmpidr_el2(read_mpidr());
        if (read_id_aa64pfr0() >> PFR0_GIC_SHIFT) & 0xf != 0 {
            write_icc_sre_el2(ICC_SRE);
        }
        write_sctlr_el1(SCTLR_EL1_RESET);
        core::arch::asm!("isb", "tlbi vmalls12e1", "dsb ish", "isb", options(nostack));
    }
}

/// PAR_EL1.PA, bits [47:12], of a successful translation.
const PAR_PA: u64 = 0x0000_FFFF_FFFF_F000;

/// Stage 1+2 translation of a guest VA for a read, as the guest's EL1 sees it.
pub fn translate_el1_read(va: u64) -> Option<u64> {
    let saved = read_par_el1();
    // SAFETY: AT only writes PAR_EL1, which is restored right after.
    let par = unsafe {
        core::arch::asm!("at s12e1r, {}", "isb", in(reg) va, options(nostack));
        let p = read_par_el1();
        write_par_el1(saved);
        p
    };
    if par & 1 != 0 {
        return None;
    }
    Some((par & PAR_PA) | (va & 0xfff))
}
