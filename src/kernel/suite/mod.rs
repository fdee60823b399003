//! The suite: the checks, one file per group, and what runs them: one result line per
//! check, a summary, an exit status. The suite also owns the policy the lower layers
//! leave open: what an unexpected exception or a panic does (fail the running check and
//! go on), and which pages may still be registered with the guard (`pages`).

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

/// `checks!("group": f, g, ...)` declares the group's checks, in run order: each is the
/// function of that name in the same file, reported as `group: f` (with hyphens). The
/// doc comment of each function is its row in docs/CHECKS.md. `checks!(explicit ...)`
/// declares checks that run only when named exactly.
macro_rules! checks {
    ($group:literal: $($f:ident),+ $(,)?) => { checks!(@ true, $group: $($f),+); };
    (explicit $group:literal: $($f:ident),+ $(,)?) => { checks!(@ false, $group: $($f),+); };
    (@ $default:literal, $group:literal: $($f:ident),+) => {
        pub(super) const CHECKS: &[super::Check] = &[$(super::Check {
            name: $crate::check_name!($group, $f),
            default: $default,
            run: $f,
        }),+];
    };
}

mod bench;
mod boot;
mod control;
mod forms;
mod fuzz;
mod guard;
mod ioremap;
mod meminfo;
mod memshare;
mod pages;
mod psci;
mod run;
mod selftest;
mod smccc;
mod virtio;

pub use pages::watch_guard;
pub use run::{install_handlers, panicked, run};

use crate::cmdline::Options;
use crate::devices::Devices;
use crate::kernel::hyp::Hypervisor;
use crate::platform::Platform;
use crate::println;
use crate::report::Outcome;

/// The groups, in run order. Checks that need a page the hypervisor must refuse (guard)
/// come before those that may leave pages registered for good (control, ioremap), and the
/// self-tests and the benchmarks, which run only when named, last.
const GROUPS: &[&[Check]] = &[
    boot::CHECKS,
    smccc::CHECKS,
    meminfo::CHECKS,
    memshare::CHECKS,
    psci::CHECKS,
    guard::CHECKS,
    control::CHECKS,
    ioremap::CHECKS,
    virtio::CHECKS,
    selftest::CHECKS,
    bench::CHECKS,
    fuzz::CHECKS,
];

/// What ioguard learned while booting, for the checks to examine.
pub struct BootInfo {
    pub dtb: u64,
    pub dtb_size: u64,
    pub load_base: u64,
    pub relocations: u64,
}

/// What a check sees.
pub struct Ctx<'a> {
    pub name: &'static str,
    pub hv: &'static Hypervisor,
    pub platform: &'a Platform,
    pub opts: &'a Options,
    pub boot: &'a BootInfo,
    /// The windows drivers hold for the whole run: not the checks' to touch or count.
    pub devices: &'a Devices,
}

impl Ctx<'_> {
    /// An `INFO:` line attributed to the running check.
    pub fn info(&self, msg: core::fmt::Arguments) {
        println!("INFO: {}: {}", self.name, msg);
    }

    /// Runs `f` if this check is abandoned (an unexpected exception or a panic): stops
    /// whatever it started that must not outlive it (a device doing DMA into memory that
    /// is about to be reused). Dropped unrun when the check ends normally.
    pub fn on_abandon(&self, f: impl FnOnce() + Send + 'static) {
        run::on_abandon(alloc::boxed::Box::new(f));
    }
}

pub struct Check {
    pub name: &'static str,
    /// Run without being named by `only=` (false for self-tests of the reporting path).
    pub default: bool,
    pub run: fn(&Ctx) -> Outcome,
}

/// Every check, in run order.
fn all() -> impl Iterator<Item = &'static Check> {
    GROUPS.iter().flat_map(|g| g.iter())
}
