//! The EL2 layer: boot, per-vCPU set-up, traps. Decisions come from `hypmodel::vm`.

mod asm;
mod console;
mod sysreg;

use asm::{Frame, MmioResult};
use console::{hyp_line, raw_line};
use core::fmt::Write;
use core::panic::PanicInfo;
use hypmodel::abi::*;
use hypmodel::fdt::{self, Edits, Fdt};
use hypmodel::layout::*;
use hypmodel::memshare::ShareMap;
use hypmodel::options;
use hypmodel::stage2::{self, Table};
use hypmodel::syndrome::{self, decode_dabt, decode_esr, DataAbort, PairMode};
use hypmodel::vm::{Access, Call, Hvc, Layout, Vm, MAX_CPUS, MAX_RAM_RANGES};
use spin::Mutex;

static VM: Mutex<Option<Vm>> = Mutex::new(None);
/// Set once at boot, read on every trap.
static mut TRACE: bool = false;
static mut STAGE2: (u64, u64) = (0, 0); // (VTTBR_EL2, VTCR_EL2)

const S2_TABLES: usize = 32;
#[repr(C, align(4096))]
struct S2Pool([Table; S2_TABLES]);
static mut S2_POOL: S2Pool = S2Pool([[0; stage2::ENTRIES]; S2_TABLES]);
/// Share state of up to 8 GiB of RAM, one bit per 4 KiB frame.
static mut SHARE_BITS: [u64; 32768] = [0; 32768];
static mut DTB_OUT: [u8; 0x10000] = [0; 0x10000];
static mut GUEST_ARGS: [u8; 2048] = [0; 2048];

fn trace_on() -> bool {
    // SAFETY: TRACE is written once by the boot CPU before any other vCPU or trap exists.
    unsafe { core::ptr::addr_of!(TRACE).read() }
}

fn cpu_index() -> usize {
    sysreg::read_tpidr_el2() as usize
}

/// Ends the run: QEMU's PSCI SYSTEM_OFF (QEMU exits with status 0).
fn power_off() -> ! {
    loop {
        psci_smc([u64::from(PSCI_SYSTEM_OFF), 0, 0, 0]);
    }
}

macro_rules! fatal {
    ($($a:tt)*) => {{
        hyp_line(format_args!("hypmodel: FATAL: {}", format_args!($($a)*)));
        console::flush();
        power_off()
    }};
}

/// A PSCI call to QEMU's firmware (smc from EL2; QEMU answers it itself).
fn psci_smc(a: [u64; 4]) -> u64 {
    let r: u64;
    // SAFETY: SMC with a PSCI function ID reaches QEMU's built-in PSCI (no EL3 firmware);
    // it reads x0..x3 and writes x0. x4..x17 are declared clobbered per SMCCC.
    unsafe {
        core::arch::asm!("smc #0",
            inout("x0") a[0] => r, inout("x1") a[1] => _, inout("x2") a[2] => _, inout("x3") a[3] => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
            out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _, options(nostack));
    }
    r
}

#[no_mangle]
extern "C" fn hm_rust_entry(idx: u64, boot: u64) -> ! {
    if boot != 0 {
        boot_main()
    } else {
        secondary_main(idx as usize)
    }
}

fn boot_main() -> ! {
    // The tree QEMU wrote at RAM base for an ELF kernel.
    // SAFETY: QEMU's tree occupies [QEMU_DTB, QEMU_DTB + 1 MiB), RAM that nothing else uses
    // until the rewritten tree is copied back below; the header is read first to bound it.
    let dtb: &[u8] = unsafe {
        let hdr = core::slice::from_raw_parts(QEMU_DTB as *const u8, 40);
        let size = match fdt::total_size(hdr) {
            Ok(s) if s as u64 <= DTB_MAX => s,
            _ => {
                console::set_uart(0x0900_0000);
                fatal!("no device tree at {QEMU_DTB:#x} (is hypmodel given with -kernel?)")
            }
        };
        core::slice::from_raw_parts(QEMU_DTB as *const u8, size)
    };
    let tree = match Fdt::new(dtb) {
        Ok(t) => t,
        Err(e) => {
            console::set_uart(0x0900_0000);
            fatal!("device tree: {e}")
        }
    };
    let console_base = find_uart(&tree).unwrap_or(0x0900_0000);
    console::set_uart(console_base);
    hyp_line(format_args!(
        "hypmodel {}: EL{} reference hypervisor (pKVM MMIO guard model)",
        env!("CARGO_PKG_VERSION"),
        sysreg::current_el()
    ));
    if sysreg::current_el() != 2 {
        fatal!("not started at EL2 (QEMU needs -M virt,virtualization=on)");
    }

    // Options and the guest's command line (copied out: the old tree is overwritten below).
    let bootargs = tree.prop_str("/chosen", "bootargs").unwrap_or("");
    // SAFETY: GUEST_ARGS is used by the boot CPU only, before any other vCPU runs.
    let args_buf = unsafe { &mut *core::ptr::addr_of_mut!(GUEST_ARGS) };
    let (opts, args_len) = match options::parse(bootargs, args_buf) {
        Ok(v) => v,
        Err(e) => fatal!("{e}"),
    };
    // SAFETY: written once, before any trap can read it.
    unsafe { core::ptr::addr_of_mut!(TRACE).write(opts.trace) };

    // Memory, CPUs, IPA size.
    let mut ram = [(0u64, 0u64); MAX_RAM_RANGES];
    let mut nram = 0;
    let mut too_many = false;
    let r = tree.for_each_memory(|b, s| {
        if nram < MAX_RAM_RANGES {
            ram[nram] = (b, s);
            nram += 1;
        } else {
            too_many = true;
        }
    });
    if r.is_err() || nram == 0 || too_many {
        fatal!("cannot read the memory nodes of the device tree");
    }
    let hyp = (HYP_BASE, HYP_SIZE);
    let Some(&(ram0, ram0_size)) = ram[..nram]
        .iter()
        .find(|&&(b, s)| b <= HYP_BASE && HYP_BASE + HYP_SIZE <= b + s)
    else {
        fatal!("hypmodel's memory {HYP_BASE:#x}+{HYP_SIZE:#x} is not inside RAM")
    };
    let ram_end = ram0 + ram0_size;
    let mut cpus = [0u64; MAX_CPUS];
    let mut ncpus = 0;
    let _ = tree.for_each_cpu(|m| {
        if ncpus < MAX_CPUS {
            cpus[ncpus] = m;
            ncpus += 1;
        }
    });
    let me = sysreg::read_mpidr() & 0xff_00ff_ffff;
    match cpus[..ncpus].iter().position(|&m| m == me) {
        Some(0) => {}
        Some(i) => cpus.swap(0, i), // the boot CPU is vCPU index 0
        None => fatal!("boot CPU MPIDR {me:#x} not in /cpus"),
    }
    let (ipa_bits, ps) = stage2::parange_bits(sysreg::read_id_aa64mmfr0() & 0xf);
    if ipa_bits < 40 {
        fatal!("physical address size of {ipa_bits} bits is too small");
    }

    // The guest Image, staged by `-device loader` at GUEST_STAGING.
    if GUEST_STAGING + 64 > ram_end {
        fatal!("RAM too small: the guest is staged at {GUEST_STAGING:#x}");
    }
    // SAFETY: [GUEST_STAGING, +64) is RAM (checked above) that only the loader wrote.
    let hdr: [u8; 64] = unsafe { core::ptr::read_volatile(GUEST_STAGING as *const [u8; 64]) };
    let img = match hypmodel::image::parse(&hdr) {
        Ok(h) => h,
        Err(e) => fatal!("guest image at {GUEST_STAGING:#x}: {e} (load it with -device loader,file=Image,addr={GUEST_STAGING:#x},force-raw=on)"),
    };
    let load = guest_load_address(img.text_offset);
    let img_end = load.checked_add(img.image_size);
    let stage_end = GUEST_STAGING.checked_add(img.image_size);
    if img.text_offset % 4096 != 0
        || img_end.is_none_or(|e| e > ram_end)
        || stage_end.is_none_or(|e| e > ram_end)
    {
        fatal!(
            "guest image ({:#x} bytes, text_offset {:#x}) does not fit in RAM",
            img.image_size,
            img.text_offset
        );
    }

    // The guest's tree: psci via hvc, its own command line, hypmodel's memory removed.
    // SAFETY: DTB_OUT is used by the boot CPU only, here.
    let out = unsafe { &mut *core::ptr::addr_of_mut!(DTB_OUT) };
    let reserve = [(GUEST_DTB, out.len() as u64)];
    let edits = Edits {
        bootargs: &args_buf[..args_len],
        psci_method: b"hvc",
        hole: hyp,
        reserve: &reserve,
    };
    let n = match fdt::rewrite(&tree, &edits, out) {
        Ok(n) => n,
        Err(e) => fatal!("rewriting the device tree: {e}"),
    };
    let reserve_fixed = [(GUEST_DTB, n as u64)];
    // Redo with the exact size in the reservation (the size does not change).
    let edits = Edits {
        reserve: &reserve_fixed,
        ..edits
    };
    let n2 = fdt::rewrite(&tree, &edits, out).unwrap_or(0);
    if n2 != n {
        fatal!("device tree size changed between passes");
    }
    // `tree` and `bootargs` point into the old tree: not used after this copy.
    // SAFETY: [GUEST_DTB, GUEST_DTB + n) lies in QEMU's old tree area (n <= 64 KiB < 1 MiB),
    // RAM below hypmodel; `out` is hypmodel's own buffer, so the ranges do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(out.as_ptr(), GUEST_DTB as *mut u8, n) };
    // SAFETY: both ranges are inside RAM (checked above) and outside hypmodel; `copy` is a
    // memmove, correct for the overlap of staging and load ranges.
    unsafe {
        core::ptr::copy(
            GUEST_STAGING as *const u8,
            load as *mut u8,
            img.image_size as usize,
        )
    };

    // Stage 2: guest RAM only.
    // SAFETY: S2_POOL is used by the boot CPU only, here; the tables stay in place for the
    // whole run and the MMU walks them through their physical address (MMU off at EL2).
    let pool = unsafe { &mut (*core::ptr::addr_of_mut!(S2_POOL)).0 };
    let pool_pa = pool.as_ptr() as u64;
    let mut b = match stage2::Builder::new(pool, pool_pa) {
        Ok(b) => b,
        Err(_) => fatal!("no stage-2 tables"),
    };
    let mut gram = [(0u64, 0u64); 2 * MAX_RAM_RANGES];
    let mut ng = 0;
    for &(base, size) in &ram[..nram] {
        for (gb, gs) in fdt::subtract(base, size, hyp).into_iter().flatten() {
            if b.map_ram(gb, gs).is_err() {
                fatal!("cannot map guest RAM {gb:#x}+{gs:#x} in stage 2");
            }
            gram[ng] = (gb, gs);
            ng += 1;
        }
    }
    let vttbr = b.root_pa() | (1 << 48);
    let vtcr = stage2::vtcr(ipa_bits, ps);
    // SAFETY: written once before any secondary starts.
    unsafe { core::ptr::addr_of_mut!(STAGE2).write((vttbr, vtcr)) };

    let layout = Layout {
        ram,
        nram,
        hyp,
        ipa_bits,
        console_page: console_base & !0xfff,
    };
    let span = ram[..nram]
        .iter()
        .map(|&(b, s)| b + s)
        .max()
        .unwrap_or(ram_end)
        - RAM_BASE;
    // SAFETY: SHARE_BITS is handed out once, here, and then owned by the VM.
    let bits: &'static mut [u64] = unsafe { &mut *core::ptr::addr_of_mut!(SHARE_BITS) };
    let share = ShareMap::new(RAM_BASE, span / 4096, bits);
    *VM.lock() = Some(Vm::new(opts, layout, share, &cpus[..ncpus]));

    let mut line = console::Line::new();
    let _ = write!(
        line,
        "hypmodel: profile={} granule={} mutant={} enrolled={} trace={} ipa_bits={} cpus={} guest={:#x}+{:#x} dtb={:#x}+{:#x} ram=",
        opts.profile.name(),
        opts.granule,
        opts.mutant.map_or("none", |m| m.name()),
        if opts.enrolled_at_boot || hypmodel::profile::enrolled_from_boot(opts.profile) { "boot" } else { "guest" },
        if opts.trace { "on" } else { "off" },
        ipa_bits,
        ncpus,
        load,
        img.image_size,
        GUEST_DTB,
        n
    );
    for (i, &(gb, gs)) in gram[..ng].iter().enumerate() {
        let _ = write!(line, "{}{gb:#x}+{gs:#x}", if i > 0 { "," } else { "" });
    }
    line.emit();

    setup_el2();
    // SAFETY: the guest image is in place, stage 2 maps it, EL2 is set up; x0 = its tree.
    unsafe { asm::hm_enter_guest(load, GUEST_DTB) }
}

/// `/chosen/stdout-path` (a path or an alias, maybe with ":options") to its first `reg`.
fn find_uart(t: &Fdt<'_>) -> Option<u64> {
    let sp = t.prop_str("/chosen", "stdout-path")?;
    let sp = sp.split(':').next()?;
    let path = if sp.starts_with('/') {
        sp
    } else {
        t.prop_str("/aliases", sp)?
    };
    let reg = t.prop(path, "reg")?;
    let ac = t
        .prop("/", "#address-cells")
        .map_or(2, |v| v.get(3).copied().unwrap_or(2));
    let w = |i: usize| {
        reg.get(i * 4..i * 4 + 4)
            .map(|b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
    };
    if ac == 2 {
        Some((w(0)? << 32) | w(1)?)
    } else {
        w(0)
    }
}

fn setup_el2() {
    // SAFETY: STAGE2 was written by the boot CPU before this vCPU could start.
    let (vttbr, vtcr) = unsafe { core::ptr::addr_of!(STAGE2).read() };
    // SAFETY: configures this CPU's EL2 for the guest: nothing of hypmodel's own execution
    // depends on these registers (EL2 runs with its MMU off).
    unsafe { sysreg::setup_el2(vttbr, vtcr) };
}

fn secondary_main(idx: usize) -> ! {
    let start = VM.lock().as_mut().and_then(|vm| vm.secondary_started(idx));
    let Some((entry, ctx)) = start else {
        hyp_line(format_args!(
            "hypmodel: vCPU {idx} started without a CPU_ON; parked"
        ));
        loop {
            sysreg::wfe();
        }
    };
    setup_el2();
    if trace_on() {
        hyp_line(format_args!(
            "hypmodel: trace cpu{idx} up at EL2, entering guest at {entry:#x} x0={ctx:#x}"
        ));
    }
    // SAFETY: the entry was checked to be guest RAM by the CPU_ON handler; EL2 is set up.
    unsafe { asm::hm_enter_guest(entry, ctx) }
}

#[no_mangle]
extern "C" fn hm_exception(kind: u64, f: &mut Frame) {
    match kind {
        8 => lower_sync(f),
        12 => {
            // AArch32 EL0: not modelled; undefined instruction.
            inject(f, syndrome::injected_undef_esr(), 0);
            with_vm(|vm| vm.other_exception());
        }
        9..=11 | 13..=15 => {
            // IRQ/FIQ/SError are routed to EL1 (HCR_EL2.IMO/FMO/AMO = 0): not expected.
            hyp_line(format_args!(
                "hypmodel: unexpected exception kind {kind} from the guest, ignored"
            ));
        }
        _ => el2_panic(kind, f),
    }
}

fn with_vm<R>(f: impl FnOnce(&mut Vm) -> R) -> R {
    let mut g = VM.lock();
    match g.as_mut() {
        Some(vm) => f(vm),
        None => {
            drop(g);
            fatal!("trap before the VM exists")
        }
    }
}

fn lower_sync(f: &mut Frame) {
    let esr = sysreg::read_esr_el2();
    let e = decode_esr(esr);
    match e.ec {
        EC_HVC64 => hypercall(f, "hvc"),
        EC_SMC64 => {
            // The preferred return address of a trapped SMC is the SMC itself.
            f.elr += 4;
            hypercall(f, "smc");
        }
        EC_DABT_LOW => data_abort(f, e.iss, e.il),
        EC_IABT_LOW => {
            let far = sysreg::read_far_el2();
            let esr1 = syndrome::injected_iabt_esr(syndrome::source_of(f.spsr));
            if trace_on() {
                hyp_line(format_args!(
                    "hypmodel: trace cpu{} iabt pc={:#x} -> injected ESR_EL1={esr1:#x} FAR_EL1={far:#x}",
                    cpu_index(), f.elr
                ));
            }
            with_vm(|vm| vm.other_exception());
            inject(f, esr1, far);
        }
        _ => {
            if trace_on() {
                hyp_line(format_args!(
                    "hypmodel: trace cpu{} unexpected EC {:#x} ESR_EL2={esr:#x} pc={:#x} -> undefined instruction",
                    cpu_index(), e.ec, f.elr
                ));
            }
            with_vm(|vm| vm.other_exception());
            inject(f, syndrome::injected_undef_esr(), 0);
        }
    }
}

fn hypercall(f: &mut Frame, how: &str) {
    let cpu = cpu_index();
    let x = [f.x[0], f.x[1], f.x[2], f.x[3]];
    let call = Call::of(x[0] as u32);
    let out = with_vm(|vm| vm.hvc(cpu, x));
    let trace = |r: &[u64; 4]| {
        if trace_on() {
            hyp_line(format_args!(
                "hypmodel: trace cpu{cpu} {how} {}({:#x}, {:#x}, {:#x}) fid={:#x} -> x0={:#x} x1={:#x}",
                call.name(), x[1], x[2], x[3], x[0] as u32, r[0], r[1]
            ));
        }
    };
    if out == Hvc::AbortAtCall {
        if trace_on() {
            hyp_line(format_args!(
                "hypmodel: trace cpu{cpu} {how} {}({:#x}, {:#x}, {:#x}) fid={:#x} -> abort at the call",
                call.name(), x[1], x[2], x[3], x[0] as u32
            ));
        }
        // Both conduits arrive here with ELR past the instruction: the abort is taken on
        // the call itself, x0..x3 untouched.
        f.elr -= 4;
        let src = syndrome::source_of(f.spsr);
        inject(f, syndrome::injected_dabt_esr(src, DFSC_EXTABT), 0);
        return;
    }
    let ret = match out {
        Hvc::Ret(r) => r,
        Hvc::Forward(a) => [psci_smc(a), 0, 0, 0],
        Hvc::CpuOn { idx, mpidr } => {
            let r = psci_smc([
                u64::from(PSCI_CPU_ON_64),
                mpidr,
                asm::hm_secondary_entry as *const () as u64,
                idx as u64,
            ]);
            with_vm(|vm| vm.cpu_on_result(idx, r));
            [r, 0, 0, 0]
        }
        Hvc::CpuOff => {
            trace(&[0; 4]);
            let r = psci_smc([u64::from(PSCI_CPU_OFF), 0, 0, 0]);
            [r, 0, 0, 0]
        }
        // Answered above.
        Hvc::AbortAtCall => return,
        Hvc::SystemOff | Hvc::SystemReset => {
            trace(&[0; 4]);
            console::flush();
            let mut rep = console::Report;
            with_vm(|vm| {
                let _ = vm.report(&mut rep);
            });
            let fid = if out == Hvc::SystemOff {
                PSCI_SYSTEM_OFF
            } else {
                PSCI_SYSTEM_RESET
            };
            let r = psci_smc([u64::from(fid), 0, 0, 0]);
            [r, 0, 0, 0]
        }
    };
    if !matches!(out, Hvc::CpuOff | Hvc::SystemOff | Hvc::SystemReset) {
        trace(&ret);
    }
    f.x[..4].copy_from_slice(&ret);
}

fn inject(f: &mut Frame, esr: u32, far: u64) {
    let src = syndrome::source_of(f.spsr);
    // SAFETY: writing the guest's EL1 exception registers is what injecting an exception
    // means; the guest's own state is saved in them exactly as the hardware would.
    unsafe {
        sysreg::write_esr_el1(u64::from(esr));
        sysreg::write_far_el1(far);
        sysreg::write_elr_el1(f.elr);
        sysreg::write_spsr_el1(f.spsr);
    }
    f.elr = sysreg::read_vbar_el1() + syndrome::sync_vector_offset(src);
    f.spsr = syndrome::injected_spsr(f.spsr, sysreg::read_sctlr_el1());
}

fn mmio_read(addr: u64, size: u8) -> MmioResult {
    // SAFETY: `addr` is a device address outside all RAM (the VM checked it), so the access
    // cannot touch hypmodel's memory; a bus abort is caught by the fixup in hm_cur_sync.
    unsafe {
        match size {
            1 => asm::hm_mmio_read8(addr),
            2 => asm::hm_mmio_read16(addr),
            4 => asm::hm_mmio_read32(addr),
            _ => asm::hm_mmio_read64(addr),
        }
    }
}

fn mmio_write(addr: u64, size: u8, v: u64) -> MmioResult {
    // SAFETY: as for mmio_read.
    unsafe {
        match size {
            1 => asm::hm_mmio_write8(addr, 0, v),
            2 => asm::hm_mmio_write16(addr, 0, v),
            4 => asm::hm_mmio_write32(addr, 0, v),
            _ => asm::hm_mmio_write64(addr, 0, v),
        }
    }
}

fn data_abort(f: &mut Frame, iss: u32, il: bool) {
    let cpu = cpu_index();
    let far = sysreg::read_far_el2();
    let ipa = syndrome::fault_ipa(sysreg::read_hpfar_el2(), far);
    let d = decode_dabt(iss);
    let (action, console_page) =
        with_vm(|vm| (vm.data_abort(cpu, ipa, far, &d), vm.layout.console_page));
    let step = if il { 4 } else { 2 };
    let dir = if d.write { "write" } else { "read" };
    let pc = f.elr;
    let is_console = ipa & !0xfff == console_page;
    match action {
        Access::Forward => {
            let r = if d.write {
                let v = syndrome::store_value(f.reg(d.reg), d.size);
                if is_console && ipa & 0xfff == 0 {
                    // The guest's console output: keep hypmodel's lines out of its lines.
                    console::guest_write(|| mmio_write(ipa, d.size, v), v as u8)
                } else {
                    mmio_write(ipa, d.size, v)
                }
            } else {
                mmio_read(ipa, d.size)
            };
            if r.fault != 0 {
                with_vm(|vm| vm.bus_error());
                let esr = syndrome::injected_dabt_esr(syndrome::source_of(f.spsr), DFSC_EXTABT);
                if trace_on() {
                    hyp_line(format_args!(
                        "hypmodel: trace cpu{cpu} dabt {dir} {}B ipa={ipa:#x} pc={pc:#x} -> forwarded, bus error: injected ESR_EL1={esr:#x} FAR_EL1={far:#x}",
                        d.size
                    ));
                }
                inject(f, esr, far);
                return;
            }
            let val = if d.write {
                syndrome::store_value(f.reg(d.reg), d.size)
            } else {
                syndrome::load_result(r.value, &d)
            };
            if !d.write {
                f.set_reg(d.reg, val);
            }
            f.elr += step;
            if trace_on() && !is_console {
                hyp_line(format_args!(
                    "hypmodel: trace cpu{cpu} dabt {dir} {}B ipa={ipa:#x} x{} pc={pc:#x} -> forwarded {val:#x}",
                    d.size, d.reg
                ));
            }
        }
        Access::Emulate => {
            let ok = emulate_pair(f, ipa, far);
            let a = with_vm(|vm| vm.emulated(ok, far));
            if trace_on() {
                hyp_line(format_args!(
                    "hypmodel: trace cpu{cpu} dabt no-syndrome ipa={ipa:#x} pc={pc:#x} -> {}",
                    if ok {
                        "emulated from the instruction (mutant no-syndrome-forward)"
                    } else {
                        "not decodable: refused"
                    }
                ));
            }
            if let Access::Inject { dfsc, far, .. } = a {
                inject(
                    f,
                    syndrome::injected_dabt_esr(syndrome::source_of(f.spsr), dfsc),
                    far,
                );
            }
        }
        Access::Inject {
            dfsc,
            far: far1,
            why,
        } => {
            let esr = syndrome::injected_dabt_esr(syndrome::source_of(f.spsr), dfsc);
            if trace_on() {
                hyp_line(format_args!(
                    "hypmodel: trace cpu{cpu} dabt {} {}B ipa={ipa:#x} pc={pc:#x} -> refused ({}): injected ESR_EL1={esr:#x} FAR_EL1={far1:#x}",
                    if d.isv { dir } else { "no-syndrome" }, if d.isv { d.size } else { 0 }, why.name()
                ));
            }
            inject(f, esr, far1);
        }
        Access::Drop => {
            if !d.write {
                f.set_reg(d.reg, 0);
            }
            f.elr += step;
            if trace_on() {
                hyp_line(format_args!(
                    "hypmodel: trace cpu{cpu} dabt {dir} {}B ipa={ipa:#x} pc={pc:#x} -> dropped, reads 0 (mutant silent-drop)",
                    d.size
                ));
            }
        }
        Access::Skip => {
            f.elr += step;
            if trace_on() {
                hyp_line(format_args!("hypmodel: trace cpu{cpu} dabt cache-maintenance ipa={ipa:#x} pc={pc:#x} -> skipped"));
            }
        }
    }
}

/// `no-syndrome-forward`: decode an LDP/STP at the guest's PC and perform it. Returns false
/// (and changes nothing) when the instruction is not one it knows.
fn emulate_pair(f: &mut Frame, ipa: u64, far: u64) -> bool {
    let Some(pc_pa) = sysreg::translate_el1_read(f.elr) else {
        return false;
    };
    let in_ram = with_vm(|vm| vm.layout.is_guest_ram(pc_pa, 4));
    if !in_ram {
        return false;
    }
    // SAFETY: pc_pa is guest RAM (checked), readable by EL2 with its MMU off.
    let insn = unsafe { core::ptr::read_volatile(pc_pa as *const u32) };
    let Some(p) = syndrome::decode_pair(insn) else {
        return false;
    };
    let el1h = syndrome::source_of(f.spsr) == syndrome::Source::El1h;
    let base = if p.rn == 31 {
        if el1h {
            sysreg::read_sp_el1()
        } else {
            sysreg::read_sp_el0()
        }
    } else {
        f.x[p.rn as usize]
    };
    let va = if p.mode == PairMode::PostIndex {
        base
    } else {
        base.wrapping_add(p.offset as u64)
    };
    let size = u64::from(p.size);
    if va != far || (ipa & 0xfff) + 2 * size > 0x1000 {
        return false;
    }
    let dab = DataAbort {
        isv: true,
        size: p.size,
        sign_extend: false,
        reg: 0,
        sixty_four: p.size == 8,
        ..decode_dabt(0)
    };
    if p.load {
        let a = mmio_read(ipa, p.size);
        let b = mmio_read(ipa + size, p.size);
        if a.fault != 0 || b.fault != 0 {
            return false;
        }
        f.set_reg(p.rt, syndrome::load_result(a.value, &dab));
        f.set_reg(p.rt2, syndrome::load_result(b.value, &dab));
    } else {
        let (va0, vb0) = (f.reg(p.rt), f.reg(p.rt2));
        if mmio_write(ipa, p.size, syndrome::store_value(va0, p.size)).fault != 0
            || mmio_write(ipa + size, p.size, syndrome::store_value(vb0, p.size)).fault != 0
        {
            return false;
        }
    }
    if p.mode != PairMode::Offset {
        let nb = base.wrapping_add(p.offset as u64);
        if p.rn == 31 {
            // SAFETY: updating the guest's stack pointer as the instruction's writeback does.
            unsafe {
                if el1h {
                    sysreg::write_sp_el1(nb)
                } else {
                    sysreg::write_sp_el0(nb)
                }
            }
        } else {
            f.x[p.rn as usize] = nb;
        }
    }
    f.elr += 4;
    true
}

fn el2_panic(kind: u64, f: &Frame) -> ! {
    let mut l = console::Line::new();
    let _ = write!(
        l,
        "hypmodel: PANIC: exception kind {kind} at EL2: ESR_EL2={:#x} FAR_EL2={:#x} ELR_EL2={:#x} cpu{}",
        sysreg::read_esr_el2(), sysreg::read_far_el2(), f.elr, cpu_index()
    );
    raw_line(l.as_bytes());
    power_off()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let mut l = console::Line::new();
    let _ = write!(l, "hypmodel: PANIC: {info}");
    raw_line(l.as_bytes());
    power_off()
}
