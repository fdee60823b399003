//! The EL2 layer: boot, per-vCPU set-up, traps. Decisions come from `hypmodel::vm`.

mod asm;
mod console;
mod sysreg;

use asm::{Frame, MmioResult};
use console::{hyp_line, raw_line};
use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};
use hypmodel::abi::*;
use hypmodel::layout::PAGE_SIZE;
use hypmodel::syndrome::{self, decode_dabt, decode_esr, DataAbort, PairMode};
use hypmodel::vm::{Access, Call, Hvc, InjectQuirks, Refusal, Vm};
use spin::Mutex;

macro_rules! fatal {
    ($($a:tt)*) => {{
        $crate::el2::console::hyp_line(format_args!("hypmodel: FATAL: {}", format_args!($($a)*)));
        $crate::el2::fail_exit($crate::el2::EXIT_FATAL)
    }};
}

// After `fatal!`, which it uses.
mod boot;

// Shared state. Every vCPU reaches the VM through its lock; the rest is written once by the
// boot CPU before it enters the guest, so before any trap or CPU_ON can read it.
static VM: Mutex<Option<Vm>> = Mutex::new(None);
static TRACE: AtomicBool = AtomicBool::new(false);
static STAGE2: Mutex<Option<Stage2Regs>> = Mutex::new(None);

/// The VM's one stage 2, as every vCPU loads it.
#[derive(Clone, Copy)]
struct Stage2Regs {
    vttbr: u64,
    vtcr: u64,
}

/// Hands out one of the boot CPU's buffers for the rest of the run. Its lock is never
/// released (the guard is leaked), so no second reference to it can exist; a second take
/// would be a hypmodel bug and stops the run.
fn take_once<T>(buf: &'static Mutex<T>) -> &'static mut T {
    match buf.try_lock() {
        Some(g) => spin::MutexGuard::leak(g),
        None => fatal!("a boot buffer taken twice"),
    }
}

fn trace_on() -> bool {
    TRACE.load(Ordering::Relaxed)
}

fn cpu_index() -> usize {
    sysreg::read_tpidr_el2() as usize
}

/// Whether QEMU answers PSCI calls from here: at EL2 it does (conduit SMC); at EL3
/// (`secure=on`) it expects firmware and has none.
static PSCI_OK: AtomicBool = AtomicBool::new(true);
/// Set once hypmodel tried a semihosting exit: an exception at EL2 after that is QEMU
/// refusing the `hlt` (semihosting off), not a hypmodel bug.
static SEMIHOSTING_TRIED: AtomicBool = AtomicBool::new(false);
/// Exit statuses of a run hypmodel ends itself (the guest's convention: 1 a failure seen,
/// 2 the run could not go on).
const EXIT_FAIL: u64 = 1;
const EXIT_FATAL: u64 = 2;
/// Semihosting SYS_EXIT and its reason "application exit" (the code follows it).
const SYS_EXIT: u64 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

/// Ends the run: QEMU's PSCI SYSTEM_OFF (QEMU exits with status 0); without PSCI, stops.
fn power_off() -> ! {
    if PSCI_OK.load(Ordering::Relaxed) {
        loop {
            psci_smc([u64::from(PSCI_SYSTEM_OFF), 0, 0, 0]);
        }
    }
    loop {
        sysreg::wfe();
    }
}

/// Ends a run that failed with `code`: a semihosting exit where QEMU has semihosting on
/// (QEMU then exits with `code`), otherwise as `power_off`.
fn fail_exit(code: u64) -> ! {
    console::flush();
    SEMIHOSTING_TRIED.store(true, Ordering::Relaxed);
    let block = [ADP_STOPPED_APPLICATION_EXIT, code];
    // SAFETY: semihosting SYS_EXIT reads the two words at x1 and ends QEMU; with
    // semihosting off, `hlt` is an undefined instruction at EL2, which `el2_panic` turns
    // into `power_off` (SEMIHOSTING_TRIED is set).
    unsafe {
        core::arch::asm!("hlt #0xf000", inout("x0") SYS_EXIT => _, in("x1") block.as_ptr(),
            options(nostack));
    }
    power_off()
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
        boot::boot_main()
    } else {
        secondary_main(idx as usize)
    }
}

fn setup_el2() {
    let Some(s2) = *STAGE2.lock() else {
        fatal!("EL2 set-up before stage 2 exists")
    };
    // SAFETY: configures this CPU's EL2 for the guest: nothing of hypmodel's own execution
    // depends on these registers (EL2 runs with its MMU off); STAGE2 maps only guest RAM.
    unsafe { sysreg::setup_el2(s2.vttbr, s2.vtcr) };
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
            let refused = with_vm(|vm| {
                let _ = vm.report(&mut rep);
                vm.dma_refused()
            });
            // The report said why (`hypmodel: FAIL: dma: ...`): the run fails as when
            // the guest loops on an abort.
            if refused > 0 {
                fail_exit(EXIT_FAIL);
            }
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
    inject_at(f, esr, far, 0);
}

/// Injects a synchronous exception whose ELR_EL1 is `elr_skip` bytes past the trapped
/// instruction (0 but for the `elr-advanced` mutant).
fn inject_at(f: &mut Frame, esr: u32, far: u64, elr_skip: u64) {
    let cpu = cpu_index();
    if with_vm(|vm| vm.injected(cpu, esr, far, f.elr)) {
        abort_loop(cpu, esr, far, f.elr);
    }
    let src = syndrome::source_of(f.spsr);
    // SAFETY: writing the guest's EL1 exception registers is what injecting an exception
    // means; the guest's own state is saved in them exactly as the hardware would.
    unsafe {
        sysreg::write_esr_el1(u64::from(esr));
        sysreg::write_far_el1(far);
        sysreg::write_elr_el1(f.elr + elr_skip);
        sysreg::write_spsr_el1(f.spsr);
    }
    f.elr = sysreg::read_vbar_el1() + syndrome::sync_vector_offset(src);
    f.spsr = syndrome::injected_spsr(f.spsr, sysreg::read_sctlr_el1());
}

/// The guest takes the same abort again and again (its handler faults, or returns to the
/// faulting instruction): end the run with a FAIL instead of spinning to the timeout.
fn abort_loop(cpu: usize, esr: u32, far: u64, pc: u64) -> ! {
    hyp_line(format_args!(
        "hypmodel: FAIL: the guest takes the same abort at pc={pc:#x} again and again \
         (ESR_EL1={esr:#x} FAR_EL1={far:#x}, {} times in a row on cpu{cpu}); stopping",
        hypmodel::vm::REPEAT_LIMIT
    ));
    console::flush();
    let mut rep = console::Report;
    with_vm(|vm| {
        let _ = vm.report(&mut rep);
    });
    fail_exit(EXIT_FAIL)
}

fn mmio_read(addr: u64, size: u8) -> MmioResult {
    // SAFETY: `addr` is a device address outside all RAM (the VM checked it: `data_abort`
    // for the IPA, `forward_address` for where it is performed), so the access
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

/// A trapped data access, with what its trace line says about it.
struct Dabt {
    cpu: usize,
    ipa: u64,
    /// The guest's VA (FAR_EL2).
    far: u64,
    pc: u64,
    d: DataAbort,
    /// The instruction's size (ESR_EL2.IL), to step over it.
    step: u64,
}

impl Dabt {
    fn dir(&self) -> &'static str {
        if self.d.write {
            "write"
        } else {
            "read"
        }
    }
}

fn data_abort(f: &mut Frame, iss: u32, il: bool) {
    let far = sysreg::read_far_el2();
    let t = Dabt {
        cpu: cpu_index(),
        ipa: syndrome::fault_ipa(sysreg::read_hpfar_el2(), far),
        far,
        pc: f.elr,
        d: decode_dabt(iss),
        step: if il { 4 } else { 2 },
    };
    let (action, is_console, quirks, pa) = with_vm(|vm| {
        (
            vm.data_abort(t.cpu, t.ipa, far, &t.d),
            vm.layout.on_console_page(t.ipa),
            vm.inject_quirks(iss, &t.d),
            vm.forward_address(t.ipa, u64::from(t.d.size)),
        )
    });
    match action {
        Access::Forward => forward(f, &t, is_console, pa),
        Access::Emulate => emulate(f, &t),
        Access::Inject { dfsc, far, why } => refuse(f, &t, (dfsc, far), why, quirks),
        Access::Drop => drop_access(f, &t),
        Access::Skip => {
            f.elr += t.step;
            if trace_on() {
                hyp_line(format_args!(
                    "hypmodel: trace cpu{} dabt cache-maintenance ipa={:#x} pc={:#x} -> skipped",
                    t.cpu, t.ipa, t.pc
                ));
            }
        }
    }
}

/// Performs the access at EL2 as the syndrome describes it and writes a load's result back.
/// Accesses to the console's page are counted, not traced (one line per character). `pa`
/// is where the access is performed: the IPA, but for `forward-wrong-page`; the device
/// there is the one that sees it (and the DMA walk follows that one).
fn forward(f: &mut Frame, t: &Dabt, is_console: bool, pa: u64) {
    let (d, ipa) = (&t.d, t.ipa);
    let stored = d.write.then(|| syndrome::store_value(f.reg(d.reg), d.size));
    if let Some(v) = stored.filter(|_| !is_console) {
        if !dma_allows(t.cpu, pa, d.size, v) {
            f.elr += t.step;
            if trace_on() {
                hyp_line(format_args!(
                    "hypmodel: trace cpu{} dabt write {}B ipa={ipa:#x} x{} pc={:#x} -> not performed (dma refused) {v:#x}",
                    t.cpu, d.size, d.reg, t.pc
                ));
            }
            return;
        }
    }
    let mut r = match stored {
        // The guest's console output: keep hypmodel's lines out of its lines.
        Some(v) if is_console && ipa & (PAGE_SIZE - 1) == console::UART_DR => {
            console::guest_write(|| mmio_write(pa, d.size, v), v as u8)
        }
        Some(v) => mmio_write(pa, d.size, v),
        None => mmio_read(pa, d.size),
    };
    if r.fault != 0 {
        if with_vm(|vm| vm.bus_abort_passed_on(ipa, pa)) {
            return bus_error(f, t);
        }
        // `forward-wrong-page` slipped onto a page with no device: read 0, write ignored.
        r = MmioResult { value: 0, fault: 0 };
    }
    let val = match stored {
        Some(v) => v,
        None => {
            let v = with_vm(|vm| {
                vm.device_read(pa, d.size, r.value);
                vm.loaded(d, r.value)
            });
            f.set_reg(d.reg, v);
            v
        }
    };
    f.elr += t.step;
    if trace_on() && !is_console {
        let (cpu, dir, size, reg, pc) = (t.cpu, t.dir(), d.size, d.reg, t.pc);
        if pa == ipa {
            hyp_line(format_args!(
                "hypmodel: trace cpu{cpu} dabt {dir} {size}B ipa={ipa:#x} x{reg} pc={pc:#x} -> forwarded {val:#x}"
            ));
        } else {
            hyp_line(format_args!(
                "hypmodel: trace cpu{cpu} dabt {dir} {size}B ipa={ipa:#x} x{reg} pc={pc:#x} -> forwarded {val:#x} at {pa:#x} (mutant forward-wrong-page)"
            ));
        }
    }
}

/// Reads guest RAM for the DMA walk. The VM calls it only for ranges it checked to be
/// guest RAM; bytes one by one, since EL2 (MMU off) sees RAM as Device memory, where an
/// unaligned access would fault and a guest's addresses may be unaligned.
fn read_guest_ram(ipa: u64, buf: &mut [u8]) -> bool {
    for (a, b) in (ipa..).zip(buf.iter_mut()) {
        // SAFETY: `[ipa, ipa + buf.len())` is guest RAM (the VM checked it: not hypmodel's
        // memory, not a device), which EL2 reads at its IPA (stage 2 is the identity).
        *b = unsafe { core::ptr::read_volatile(a as *const u8) };
    }
    true
}

/// Reads a word of the PCI host bridge's config space for the virtio-pci scan (the VM
/// passes only aligned ECAM addresses); `None` if the bus aborts.
fn read_ecam32(addr: u64) -> Option<u32> {
    let r = mmio_read(addr, 4);
    (r.fault == 0).then_some(r.value as u32)
}

/// A write hypmodel is about to perform for the guest: the VM follows virtio queue set-ups
/// and walks a notified queue. False when the notify is refused: the device must not see
/// it (the FAIL line says why).
fn dma_allows(cpu: usize, ipa: u64, size: u8, v: u64) -> bool {
    let Some(n) = with_vm(|vm| vm.device_write(ipa, size, v, &read_guest_ram, &read_ecam32)) else {
        return true;
    };
    if let Some(l) = n.fail_line() {
        hyp_line(format_args!("hypmodel: {l}"));
    }
    if trace_on() {
        hyp_line(format_args!("hypmodel: trace cpu{cpu} {}", n.trace_line()));
    }
    n.forward()
}

/// The bus answered a forwarded access with an abort: the guest gets the same abort.
fn bus_error(f: &mut Frame, t: &Dabt) {
    with_vm(|vm| vm.bus_error());
    let esr = syndrome::injected_dabt_esr(syndrome::source_of(f.spsr), DFSC_EXTABT);
    if trace_on() {
        hyp_line(format_args!(
            "hypmodel: trace cpu{} dabt {} {}B ipa={:#x} pc={:#x} -> forwarded, bus error: injected ESR_EL1={esr:#x} FAR_EL1={:#x}",
            t.cpu, t.dir(), t.d.size, t.ipa, t.pc, t.far
        ));
    }
    inject(f, esr, t.far);
}

/// `no-syndrome-forward`: performs the access from the instruction, or refuses it.
fn emulate(f: &mut Frame, t: &Dabt) {
    let ok = emulate_pair(f, t.ipa, t.far);
    let a = with_vm(|vm| vm.emulated(ok, t.far));
    if trace_on() {
        hyp_line(format_args!(
            "hypmodel: trace cpu{} dabt no-syndrome ipa={:#x} pc={:#x} -> {}",
            t.cpu,
            t.ipa,
            t.pc,
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

/// Injects the abort the VM decided on (`far1` is what FAR_EL1 gets, mutants included; the
/// quirks are the mutants' ESR bits, ELR and destination register).
fn refuse(f: &mut Frame, t: &Dabt, (dfsc, far1): (u32, u64), why: Refusal, q: InjectQuirks) {
    let esr = syndrome::injected_dabt_esr(syndrome::source_of(f.spsr), dfsc) | q.esr_bits;
    if let Some(v) = q.clobber {
        f.set_reg(t.d.reg, v);
    }
    if trace_on() {
        let (what, size) = if t.d.isv {
            (t.dir(), t.d.size)
        } else {
            ("no-syndrome", 0)
        };
        hyp_line(format_args!(
            "hypmodel: trace cpu{} dabt {what} {size}B ipa={:#x} pc={:#x} -> refused ({}): injected ESR_EL1={esr:#x} FAR_EL1={far1:#x}",
            t.cpu, t.ipa, t.pc, why.name()
        ));
    }
    inject_at(f, esr, far1, q.elr_skip);
}

/// `silent-drop`: the access is skipped and a load reads 0.
fn drop_access(f: &mut Frame, t: &Dabt) {
    if !t.d.write {
        f.set_reg(t.d.reg, 0);
    }
    f.elr += t.step;
    if trace_on() {
        hyp_line(format_args!(
            "hypmodel: trace cpu{} dabt {} {}B ipa={:#x} pc={:#x} -> dropped, reads 0 (mutant silent-drop)",
            t.cpu, t.dir(), t.d.size, t.ipa, t.pc
        ));
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
    // Both accesses must be on the trapped page (the other one may not be a device).
    if va != far || (ipa & (PAGE_SIZE - 1)) + 2 * size > PAGE_SIZE {
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
        let cpu = cpu_index();
        for (a, v) in [(ipa, va0), (ipa + size, vb0)] {
            let v = syndrome::store_value(v, p.size);
            if dma_allows(cpu, a, p.size, v) && mmio_write(a, p.size, v).fault != 0 {
                return false;
            }
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
    if SEMIHOSTING_TRIED.load(Ordering::Relaxed) {
        power_off();
    }
    let mut l = console::Line::new();
    let _ = write!(
        l,
        "hypmodel: PANIC: exception kind {kind} at EL2: ESR_EL2={:#x} FAR_EL2={:#x} ELR_EL2={:#x} cpu{}",
        sysreg::read_esr_el2(), sysreg::read_far_el2(), f.elr, cpu_index()
    );
    raw_line(l.as_bytes());
    fail_exit(EXIT_FATAL)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let mut l = console::Line::new();
    let _ = write!(l, "hypmodel: PANIC: {info}");
    raw_line(l.as_bytes());
    fail_exit(EXIT_FATAL)
}
