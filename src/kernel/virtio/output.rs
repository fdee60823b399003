//! virtio-console as the suite's output: the console layer hands each line here (one
//! request, so one notify, per line) while a console device is installed; a line the
//! device does not take goes to the UART instead, and the device is not used again.

use super::devices::{Console, DeviceError};
use super::hal::OutputHal;
use super::Location;
use crate::kernel::{console, exceptions};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

static OUTPUT: Mutex<Option<Console<OutputHal>>> = Mutex::new(None);
/// Where the output console is, and its registered windows (it keeps them to the end).
static WHERE: Mutex<Option<Placed>> = Mutex::new(None);

/// Where a transport is and the windows it holds: (base, size).
pub type Placed = (Location, Vec<(u64, u64)>);
static LINES: AtomicU64 = AtomicU64::new(0);

/// Lines written through virtio-console so far.
pub fn lines() -> u64 {
    LINES.load(Ordering::Relaxed)
}

/// The console layer's sink. The write runs as an abandonable call: a hypervisor that
/// drops the device's registration makes the notify abort, and that must cost the output
/// device (the lines go back to the UART, and `guard: console` or the end of the run
/// says why), not the run.
fn sink(text: &str) -> bool {
    let mut taken = false;
    if exceptions::run_abandonable(|| taken = write_locked(text)) {
        return taken;
    }
    if OUTPUT.is_locked() {
        // SAFETY: the holder was the write just abandoned on this CPU, which never resumes.
        unsafe { OUTPUT.force_unlock() };
    }
    // Not dropped: resetting the device would touch the window that just aborted.
    if let Some(c) = OUTPUT.lock().take() {
        core::mem::forget(c);
    }
    console::set_sink(None);
    if let Some(u) = exceptions::take_unexpected() {
        console::output_aborted(u.fault);
    }
    false
}

fn write_locked(text: &str) -> bool {
    // Busy means this CPU is inside a write already (a log line from the driver, or an
    // exception in the middle of one): that text goes to the UART.
    let Some(mut out) = OUTPUT.try_lock() else {
        return false;
    };
    let Some(c) = out.as_mut() else {
        return false;
    };
    match c.write(text.as_bytes()) {
        Ok(()) => {
            LINES.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(e) => {
            // Given up: from now on the UART carries everything, and `guard: console` (or
            // the end of the run) says why.
            console::set_sink(None);
            console::output_given_up(match e {
                DeviceError::NoAnswer { ms } => Some(ms),
                _ => None,
            });
            false
        }
    }
}

/// Routes the suite's lines to `c` (at `at`, through `windows`) from now on.
pub fn install(at: Location, windows: Vec<(u64, u64)>, c: Console<OutputHal>) {
    *WHERE.lock() = Some((at, windows));
    *OUTPUT.lock() = Some(c);
    console::set_sink(Some(sink));
}

/// Where the console carrying the lines is, if one was installed (even if it was given
/// up since: its transport is not to be probed again).
pub fn location() -> Option<Placed> {
    WHERE.lock().clone()
}

/// Whether lines go to virtio-console.
pub fn installed() -> bool {
    OUTPUT.try_lock().is_some_and(|o| o.is_some())
}

/// Writes `text` through the output console itself (for `virtio: console`): None when
/// there is none.
pub fn write(text: &str) -> Option<Result<(), DeviceError>> {
    let mut out = OUTPUT.try_lock()?;
    let r = out.as_mut()?.write(text.as_bytes());
    if r.is_ok() {
        LINES.fetch_add(1, Ordering::Relaxed);
    }
    Some(r)
}
