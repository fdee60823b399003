//! The checks and the code that runs them: one registration table, one result line per
//! check, a summary and an exit status.

/// `need!(precondition)`: the value of an `Ok`, or return the `Outcome` an `Err` carries
/// (the SKIP or FAIL that replaces the check when a precondition does not hold).
macro_rules! need {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(outcome) => return outcome,
        }
    };
}

mod boot;
mod guard;
mod memshare;
mod selftest;
mod smccc;
mod smp;

use crate::cmdline::Options;
use crate::kernel::hypervisor::Hypervisor;
use crate::platform::Platform;
use crate::report::{self, result_line, Tally, Verdict};
use alloc::format;
use alloc::string::String;
use spin::Mutex;

use super::exceptions::{self, Fault};
use super::power;
use crate::println;

/// What ioguard learned while booting, for the checks to examine.
pub struct BootInfo {
    pub dtb: u64,
    pub dtb_size: u64,
    pub load_base: u64,
    pub relocations: u64,
    /// The console's stage-1 window (ioremapped at boot).
    pub console_window: u64,
}

/// What a check sees.
pub struct Ctx<'a> {
    pub name: &'static str,
    pub hv: &'a Hypervisor,
    pub platform: &'a Platform,
    pub opts: &'a Options,
    pub boot: &'a BootInfo,
}

impl Ctx<'_> {
    /// An `INFO:` line attributed to the running check.
    pub fn info(&self, msg: core::fmt::Arguments) {
        println!("INFO: {}: {}", self.name, msg);
    }
}

/// A check's conclusion, with the detail for its line.
pub enum Outcome {
    Pass(String),
    Fail(String),
    Skip(String),
    KFail(String),
}

pub struct Check {
    pub name: &'static str,
    /// Run without being named by `only=` (false for self-tests of the reporting path).
    pub default: bool,
    pub run: fn(&Ctx) -> Outcome,
}

/// Every check, in run order.
pub const CHECKS: &[Check] = &[
    Check {
        name: "boot: device-tree",
        default: true,
        run: boot::device_tree,
    },
    Check {
        name: "boot: relocated",
        default: true,
        run: boot::relocated,
    },
    Check {
        name: "boot: mmu",
        default: true,
        run: boot::mmu,
    },
    Check {
        name: "boot: vectors",
        default: true,
        run: boot::vectors,
    },
    Check {
        name: "boot: probe-fault",
        default: true,
        run: boot::probe_fault,
    },
    Check {
        name: "smccc: version",
        default: true,
        run: smccc::smccc_version,
    },
    Check {
        name: "smccc: vendor-uid",
        default: true,
        run: smccc::vendor_uid,
    },
    Check {
        name: "smccc: kvm-features",
        default: true,
        run: smccc::kvm_features,
    },
    Check {
        name: "smccc: profile",
        default: true,
        run: smccc::profile,
    },
    Check {
        name: "meminfo: granule",
        default: true,
        run: smccc::meminfo_granule,
    },
    Check {
        name: "memshare: share-unshare",
        default: true,
        run: memshare::share_unshare,
    },
    Check {
        name: "memshare: share-twice",
        default: true,
        run: memshare::share_twice,
    },
    Check {
        name: "memshare: unshare-private",
        default: true,
        run: memshare::unshare_private,
    },
    Check {
        name: "memshare: share-mmio",
        default: true,
        run: memshare::share_mmio,
    },
    Check {
        name: "memshare: misaligned",
        default: true,
        run: memshare::misaligned,
    },
    Check {
        name: "memshare: reserved-args",
        default: true,
        run: memshare::reserved_args,
    },
    // Checks that need a page the hypervisor must refuse come before those that leave
    // pages registered (under profiles whose UNMAP has no effect, registration is forever).
    Check {
        name: "psci: cpu-on",
        default: true,
        run: smp::cpu_on,
    },
    Check {
        name: "guard: info",
        default: true,
        run: guard::info,
    },
    Check {
        name: "guard: enroll",
        default: true,
        run: guard::enroll,
    },
    Check {
        name: "guard: stray-read",
        default: true,
        run: guard::stray_read_check,
    },
    Check {
        name: "guard: stray-write",
        default: true,
        run: guard::stray_write,
    },
    Check {
        name: "guard: map-misaligned",
        default: true,
        run: guard::map_misaligned,
    },
    Check {
        name: "guard: map-ram",
        default: true,
        run: guard::map_ram,
    },
    Check {
        name: "guard: map-outside-ipa",
        default: true,
        run: guard::map_outside_ipa,
    },
    Check {
        name: "guard: unmap-unmapped",
        default: true,
        run: guard::unmap_unmapped,
    },
    Check {
        name: "guard: neighbour",
        default: true,
        run: guard::neighbour,
    },
    Check {
        name: "guard: after-unmap",
        default: true,
        run: guard::after_unmap,
    },
    Check {
        name: "guard: refcount",
        default: true,
        run: guard::refcount,
    },
    Check {
        name: "guard: other-cpu",
        default: true,
        run: smp::other_cpu_check,
    },
    Check {
        name: "guard: map-twice",
        default: true,
        run: guard::map_twice,
    },
    Check {
        name: "guard: unmap-return",
        default: true,
        run: guard::unmap_return,
    },
    Check {
        name: "guard: granule-16k",
        default: true,
        run: guard::granule_16k,
    },
    Check {
        name: "guard: registered-read",
        default: true,
        run: guard::registered_read,
    },
    Check {
        name: "guard: registered-write",
        default: true,
        run: guard::registered_write,
    },
    Check {
        name: "guard: widths",
        default: true,
        run: guard::widths,
    },
    Check {
        name: "guard: no-syndrome",
        default: true,
        run: guard::no_syndrome,
    },
    Check {
        name: "control: stray-forwarded",
        default: true,
        run: guard::stray_forwarded,
    },
    Check {
        name: "ioremap: windows",
        default: true,
        run: boot::ioremap,
    },
    Check {
        name: "selftest: unexpected-exception",
        default: false,
        run: selftest::unexpected_exception,
    },
    Check {
        name: "selftest: panic",
        default: false,
        run: selftest::panic,
    },
];

static TALLY: Mutex<Tally> = Mutex::new(Tally {
    pass: 0,
    fail: 0,
    skip: 0,
    kfail: 0,
    xpass: 0,
});
static LAST_UNEXPECTED: Mutex<Option<Fault>> = Mutex::new(None);
static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

/// Called by the exception handler for an unexpected exception.
pub fn note_unexpected(f: Fault) {
    if let Some(mut g) = LAST_UNEXPECTED.try_lock() {
        *g = Some(f);
    }
}

/// Called by the panic handler before abandoning the check.
pub fn note_panic(msg: String) {
    if let Some(mut g) = PANIC_MESSAGE.try_lock() {
        *g = Some(msg);
    }
}

fn record(v: Verdict, name: &str, detail: &str) {
    println!("{}", result_line(v, name, detail));
    TALLY.lock().record(v);
}

/// Abandons the running check from the panic handler; returns if there is none.
pub fn abandon_check() {
    let jb = exceptions::jmpbuf();
    if jb != 0 {
        // SAFETY: jb is the JmpBuf of the guarded call in progress on this CPU, whose
        // frame is still live below us on this stack.
        unsafe { exceptions::ioguard_recover(jb) }
    }
}

/// Runs one check; an unexpected exception or a panic inside it becomes its FAIL line.
fn run_guarded(check: &Check, ctx: &Ctx) -> Outcome {
    let mut outcome = None;
    *LAST_UNEXPECTED.lock() = None;
    *PANIC_MESSAGE.lock() = None;
    exceptions::set_current_check(Some(check.name));
    let finished = exceptions::run_abandonable(|| outcome = Some((check.run)(ctx)));
    exceptions::set_current_check(None);
    if let (true, Some(o)) = (finished, outcome) {
        return o;
    }
    if let Some(msg) = PANIC_MESSAGE.lock().take() {
        return Outcome::Fail(format!("panic: {msg}"));
    }
    match LAST_UNEXPECTED.lock().take() {
        Some(f) => Outcome::Fail(format!("unexpected exception: {} {f}", f.esr.ec_name())),
        None => Outcome::Fail(String::from("check abandoned for an unknown reason")),
    }
}

/// Runs the selected checks and ends the run.
pub fn run(hv: &Hypervisor, platform: &Platform, opts: &Options, boot: &BootInfo) -> ! {
    let selected = || CHECKS.iter().filter(|c| opts.selects(c.name, c.default));
    if opts.list {
        for c in selected() {
            println!("LIST: {}", c.name);
        }
        finish(None);
    }
    if selected().next().is_none() {
        println!(
            "ioguard: fatal: only={} matches no check (see `list`)",
            opts.only.join(",")
        );
        finish(Some(report::code::FATAL));
    }
    for c in selected() {
        let ctx = Ctx {
            name: c.name,
            hv,
            platform,
            opts,
            boot,
        };
        let started = super::cpu::counter();
        let outcome = run_guarded(c, &ctx);
        log::debug!("{} took {} us", c.name, super::cpu::micros_since(started));
        let (v, detail) = match outcome {
            Outcome::Pass(d) => (Verdict::Pass, d),
            Outcome::Fail(d) => (Verdict::Fail, d),
            Outcome::Skip(d) => (Verdict::Skip, d),
            Outcome::KFail(d) => (Verdict::KFail, d),
        };
        record(v, c.name, &detail);
    }
    finish(None)
}

/// Prints the summary and the status and powers off. `force` overrides the code the
/// tally gives (for runs that could not run their checks).
pub fn finish(force: Option<u8>) -> ! {
    let t = *TALLY.lock();
    println!("{}", t.summary_line());
    println!("{}", t.totals_line());
    let mut code = force.unwrap_or(t.exit_code());
    if let Some(f) = super::console::broken() {
        // Output was lost or moved: the run cannot count as clean.
        println!("ioguard: the console aborted during the run ({f}): failing the run");
        code = code.max(report::code::CHECK_FAILED);
    }
    println!("{}", report::exit_line(code));
    power::exit(code)
}

/// Ends the run from a place where no check can be failed (an exception outside any
/// check, a panic during boot).
pub fn abort_run(reason: &str) -> ! {
    println!("ioguard: fatal: {reason}");
    finish(Some(report::code::FATAL))
}
