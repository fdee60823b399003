//! Running the checks: each under a recovery point, so that an unexpected exception or a
//! panic inside one becomes its FAIL line and the run goes on; then the summary and the
//! exit status. Also the policy behind the exception layer's hooks.

use crate::cmdline::{Options, Output};
use crate::devices::{DeviceKind, Devices};
use crate::kernel::exceptions::{self, Handlers, Unexpected, Unrecoverable};
use crate::kernel::hyp::Hypervisor;
use crate::kernel::virtio;
use crate::kernel::{arch::sysreg, console, power, semihosting, smp};
use crate::platform::Platform;
use crate::platform::Region;
use crate::println;
use crate::report::{self, result_line, Outcome, Tally};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;

use super::{all, BootInfo, Check, Ctx};

static TALLY: Mutex<Tally> = Mutex::new(Tally {
    pass: 0,
    fail: 0,
    skip: 0,
    kfail: 0,
});
/// The check running on the boot CPU, for the report of an unexpected exception.
static CURRENT: Mutex<Option<&'static str>> = Mutex::new(None);
static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);
type Cleanup = Box<dyn FnOnce() + Send>;
/// What the running check asked to be done if it is abandoned.
static CLEANUPS: Mutex<Vec<Cleanup>> = Mutex::new(Vec::new());

pub(super) fn on_abandon(f: Cleanup) {
    CLEANUPS.lock().push(f);
}

/// The exception policy: installed first thing at boot.
pub fn install_handlers() {
    exceptions::install(Handlers {
        unexpected,
        unrecoverable,
    });
}

/// Only the boot CPU prints: a secondary's job hands its exception back as data (smp),
/// because its console page may be exactly what a buggy hypervisor refuses there.
fn unexpected(u: &Unexpected) {
    if u.cpu != 0 {
        return;
    }
    let check = CURRENT.try_lock().and_then(|c| *c).unwrap_or("(none)");
    console::write_fmt_emergency(format_args!(
        "UNEXPECTED EXCEPTION: {u} SPSR={:#x} in check '{check}'\n",
        u.spsr
    ));
}

fn unrecoverable(u: &Unexpected, why: Unrecoverable) -> ! {
    if u.cpu != 0 {
        // A secondary: nothing to resume; tell the boot CPU, power off.
        smp::secondary_failed();
    }
    if !console::is_installed() || why == Unrecoverable::Nested {
        // Reporting itself faulted (the console, most likely): semihosting only.
        semihosting::write(&format!("ioguard: fatal: {why}: {u}\n"));
        power::exit(report::code::FATAL)
    }
    if why != Unrecoverable::NoGuardedCall {
        if let Some(check) = CURRENT.try_lock().and_then(|c| *c) {
            let o = Outcome::fail(format_args!("{why}: {u}; the run cannot go on"));
            record(&o, check);
        }
    }
    abort_run(&format!("{why}"))
}

/// The panic policy: the running check fails, or the run ends if none is running.
pub fn panicked(msg: String, location: &str) -> ! {
    console::write_fmt_emergency(format_args!("PANIC: {msg}{location}\n"));
    if let Some(mut g) = PANIC_MESSAGE.try_lock() {
        *g = Some(msg);
    }
    exceptions::abandon_guarded_call();
    abort_run("panic outside any check")
}

fn record(o: &Outcome, name: &str) {
    println!("{}", result_line(o.verdict, name, &o.detail));
    TALLY.lock().record(o.verdict);
}

/// Runs one check; an unexpected exception or a panic inside it becomes its FAIL line,
/// after the clean-ups it registered have run.
fn run_guarded(check: &Check, ctx: &Ctx) -> Outcome {
    let mut outcome = None;
    let _ = exceptions::take_unexpected();
    *PANIC_MESSAGE.lock() = None;
    *CURRENT.lock() = Some(check.name);
    let finished = exceptions::run_abandonable(|| outcome = Some((check.run)(ctx)));
    *CURRENT.lock() = None;
    let cleanups = core::mem::take(&mut *CLEANUPS.lock());
    if let (true, Some(o)) = (finished, outcome) {
        return o;
    }
    // What abandoned the check, before the clean-ups run (one may fault in turn).
    let unexpected = exceptions::take_unexpected();
    for f in cleanups {
        f();
    }
    if let Some(msg) = PANIC_MESSAGE.lock().take() {
        return Outcome::fail(format_args!("panic: {msg}"));
    }
    match unexpected {
        Some(u) => Outcome::fail(format_args!(
            "unexpected exception: {} {}",
            u.fault.esr.ec_name(),
            u.fault
        )),
        None => Outcome::fail("check abandoned for an unknown reason"),
    }
}

/// Runs the selected checks and ends the run.
pub fn run(
    hv: &'static Hypervisor,
    platform: &Platform,
    opts: &Options,
    boot: &BootInfo,
    devices: &Devices,
) -> ! {
    let selected = || all().filter(|c| opts.selects(c.name, c.default));
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
    let devices = &virtio_output(hv, platform, opts, devices);
    preamble(hv, opts);
    for c in (0..opts.repeat).flat_map(|_| selected()) {
        let ctx = Ctx {
            name: c.name,
            hv,
            platform,
            opts,
            boot,
            devices,
        };
        let started = sysreg::counter();
        let outcome = run_guarded(c, &ctx);
        log::debug!("{} took {} us", c.name, sysreg::micros_since(started));
        record(&outcome, c.name);
    }
    finish(None)
}

/// What the run should know before the first check (after the output is set up, so that
/// these lines go where the checks' go).
fn preamble(hv: &Hypervisor, opts: &Options) {
    println!("INFO: profile {}: {}", hv.profile, hv.reason);
    if let Some(why) = hv.guard_unusable() {
        println!(
            "INFO: the guard of profile {} is unusable: {why}",
            hv.profile
        );
    }
    if !opts.unknown.is_empty() {
        println!(
            "INFO: ignored command-line tokens: {}",
            opts.unknown.join(" ")
        );
    }
}

/// Unless `output=uart` (or `auto` under a guard whose UNMAP does not take effect), sets
/// the virtio devices up before the first check and sends the suite's lines to the first
/// virtio-console (one notify per line instead of one trap or two per byte). The devices'
/// windows are then held for the whole run. A set-up that a broken hypervisor makes fault
/// is abandoned, not the run: the lines stay on the UART, and `virtio: discovered` (or the
/// end of the run) reports it.
fn virtio_output(
    hv: &'static Hypervisor,
    platform: &Platform,
    opts: &Options,
    devices: &Devices,
) -> Devices {
    // Probing registers every virtio window (and PCI configuration page) for a moment;
    // where UNMAP does not take effect that registration stays, and takes those pages
    // from the guard checks. There `auto` keeps the UART (`virtio` still obeys).
    let leaves_registered = hv.mmio_guard().is_some() && !hv.profile.unmap_takes_effect();
    if opts.output == Output::Uart || (opts.output == Output::Auto && leaves_registered) {
        return devices.clone();
    }
    let mut held = None;
    let _ = exceptions::take_unexpected();
    *CURRENT.lock() = Some(virtio::SETUP);
    let finished =
        exceptions::run_abandonable(|| held = Some(set_up_virtio(hv, platform, opts, devices)));
    *CURRENT.lock() = None;
    match held {
        Some(h) if finished => h,
        _ => {
            virtio::abandon();
            let why = match (PANIC_MESSAGE.lock().take(), exceptions::take_unexpected()) {
                (Some(msg), _) => format!("panic: {msg}"),
                (None, Some(u)) => format!(
                    "unexpected exception: {} {}",
                    u.fault.esr.ec_name(),
                    u.fault
                ),
                (None, None) => String::from("abandoned for an unknown reason"),
            };
            println!(
                "INFO: {}: {why}; the suite's lines stay on the UART",
                virtio::SETUP
            );
            virtio::note_setup_failure(why);
            devices.clone()
        }
    }
}

fn set_up_virtio(
    hv: &'static Hypervisor,
    platform: &Platform,
    opts: &Options,
    devices: &Devices,
) -> Devices {
    let mut held = devices.clone();
    let mut lock = virtio::bus_with_output(platform, hv.mem_sharer(), true);
    let Some(bus) = lock.as_mut() else {
        return held;
    };
    for f in bus.found.iter().filter(|f| f.result.is_ok()) {
        for &(addr, size) in &f.windows {
            held.hold(DeviceKind::Virtio, Region::new(addr, size), addr);
        }
    }
    match bus.output.take() {
        Some((at, c)) => {
            let windows = bus
                .found
                .iter()
                .find(|f| f.at == at)
                .map(|f| f.windows.clone())
                .unwrap_or_default();
            drop(lock);
            println!("ioguard: output: virtio-console {at}");
            virtio::output::install(at, windows, c);
        }
        None if opts.output == Output::Virtio => {
            println!("INFO: output=virtio: no virtio-console was set up; the suite's lines stay on the UART");
        }
        None => {}
    }
    held
}

/// Prints the summary and the status and powers off. `force` overrides the code the
/// tally gives (for runs that could not run their checks).
pub fn finish(force: Option<u8>) -> ! {
    let t = *TALLY.lock();
    println!("{}", t.summary_line());
    println!("{}", t.totals_line());
    let mut code = force.unwrap_or(t.exit_code());
    let (_, undocumented, all) = crate::kernel::hyp::answers();
    let unreported = all.saturating_sub(super::guard::undocumented_reported());
    if unreported > 0 && super::guard::undocumented_reported() > 0 {
        let last = undocumented
            .last()
            .map(|u| format!(": {u}"))
            .unwrap_or_default();
        println!(
            "ioguard: {unreported} undocumented answer(s) after guard: returns ran{last}: failing the run"
        );
        code = code.max(report::code::CHECK_FAILED);
    }
    if let Some(why) = virtio::unreported_setup_failure() {
        println!(
            "ioguard: {}: {why}, and no check reported it: failing the run",
            virtio::SETUP
        );
        code = code.max(report::code::CHECK_FAILED);
    }
    let (incidents, total) = console::incidents();
    let unreported = total.saturating_sub(super::guard::console_incidents_reported());
    if unreported > 0 {
        // Output was lost or moved, and no check said so: the run cannot count as clean.
        let last = incidents
            .last()
            .map(|i| format!(": {i}"))
            .unwrap_or_default();
        println!(
            "ioguard: {unreported} console incident(s) no check reported{last}: failing the run"
        );
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
