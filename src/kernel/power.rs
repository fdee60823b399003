//! Ending the run: PSCI SYSTEM_OFF through the device tree's conduit, or semihosting
//! where it is enabled, with fallbacks for runs that never learned the conduit.

use crate::cmdline::ExitMethod;
use crate::hyp::abi;
use crate::platform::Conduit;
use core::sync::atomic::{AtomicBool, Ordering};

use super::hyp::conduit;
use super::{probe, semihosting};

static SEMIHOSTING_EXIT: AtomicBool = AtomicBool::new(false);

pub fn set_exit_method(m: ExitMethod) {
    SEMIHOSTING_EXIT.store(m == ExitMethod::Semihosting, Ordering::Relaxed);
}

/// SYSTEM_OFF through a conduit that may not exist (UNDEF is caught and ignored).
fn psci_off_blind(c: Conduit) {
    let _ = probe::conduit_call(c == Conduit::Smc, abi::PSCI_SYSTEM_OFF);
}

/// Powers the machine off with exit code `code` (already printed on the console as
/// `EXIT: STATUS=`). Never returns; if every way out fails it parks the CPU, and the
/// runner's timeout reports it.
///
/// Semihosting is tried first when `exit=semihosting` asked for it, and for fatal exits,
/// whose console may not exist: there it is the only way the code reaches the runner.
pub fn exit(code: u8) -> ! {
    if SEMIHOSTING_EXIT.load(Ordering::Relaxed) || code == crate::report::code::FATAL {
        semihosting::exit(code);
    }
    if conduit::known() {
        // Traced, and safe against a hypervisor that answers with an abort.
        let _ = conduit::call(abi::PSCI_SYSTEM_OFF, [0; 3]);
    } else {
        // No device tree told us the conduit: try both; each is UNDEF where absent.
        semihosting::exit(code);
        psci_off_blind(Conduit::Hvc);
        psci_off_blind(Conduit::Smc);
    }
    park()
}

pub fn park() -> ! {
    loop {
        aarch64_cpu::asm::wfe();
    }
}
