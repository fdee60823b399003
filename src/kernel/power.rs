//! Ending the run: PSCI SYSTEM_OFF through the device tree's conduit, or semihosting
//! where it is enabled, with fallbacks for runs that never learned the conduit.

use crate::cmdline::ExitMethod;
use crate::platform::Conduit;
use core::sync::atomic::{AtomicU8, Ordering};

use super::probe;

const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;

/// Semihosting operations (Arm "Semihosting for AArch32 and AArch64").
const SYS_WRITE0: u64 = 0x04;
const SYS_EXIT_EXTENDED: u64 = 0x20;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

static CONDUIT: AtomicU8 = AtomicU8::new(0);
static METHOD: AtomicU8 = AtomicU8::new(0);

pub fn set_conduit(c: Conduit) {
    CONDUIT.store(if c == Conduit::Hvc { 1 } else { 2 }, Ordering::Relaxed);
}

pub fn conduit() -> Option<Conduit> {
    match CONDUIT.load(Ordering::Relaxed) {
        1 => Some(Conduit::Hvc),
        2 => Some(Conduit::Smc),
        _ => None,
    }
}

pub fn set_exit_method(m: ExitMethod) {
    METHOD.store(
        if m == ExitMethod::Semihosting { 1 } else { 0 },
        Ordering::Relaxed,
    );
}

/// Writes `s` to the semihosting console; false if semihosting is not available.
pub fn semihosting_write(s: &str) -> bool {
    let mut buf = [0u8; 128];
    for chunk in s.as_bytes().chunks(buf.len() - 1) {
        buf[..chunk.len()].copy_from_slice(chunk);
        buf[chunk.len()] = 0;
        if probe::semihost(SYS_WRITE0, buf.as_ptr() as u64).is_err() {
            return false;
        }
    }
    true
}

fn semihosting_exit(code: u8) {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    // Returns only where semihosting is off.
    let _ = probe::semihost(SYS_EXIT_EXTENDED, block.as_ptr() as u64);
}

/// SYSTEM_OFF through a conduit the device tree named.
fn psci_off(c: Conduit) {
    let _ = match c {
        Conduit::Hvc => smccc::psci::system_off::<smccc::Hvc>(),
        Conduit::Smc => smccc::psci::system_off::<smccc::Smc>(),
    };
}

/// SYSTEM_OFF through a conduit that may not exist (UNDEF is caught and ignored).
fn psci_off_blind(c: Conduit) {
    let _ = probe::conduit_call(c == Conduit::Smc, PSCI_SYSTEM_OFF);
}

/// Powers the machine off with exit code `code` (already printed on the console as
/// `EXIT: STATUS=`). Never returns; if every way out fails it parks the CPU, and the
/// runner's timeout reports it.
///
/// Semihosting is tried first when `exit=semihosting` asked for it, and for fatal exits,
/// whose console may not exist: there it is the only way the code reaches the runner.
pub fn exit(code: u8) -> ! {
    if METHOD.load(Ordering::Relaxed) == 1 || code == crate::report::code::FATAL {
        semihosting_exit(code);
    }
    match conduit() {
        Some(c) => psci_off(c),
        None => {
            // No device tree told us the conduit: try both; each is UNDEF where absent.
            semihosting_exit(code);
            psci_off_blind(Conduit::Hvc);
            psci_off_blind(Conduit::Smc);
        }
    }
    park()
}

pub fn park() -> ! {
    loop {
        aarch64_cpu::asm::wfe();
    }
}
