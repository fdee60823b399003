//! The trace stream (`trace` on the command line): a line per hypercall and per fault.
//! The low layers (the conduit, the exception handler) emit lines here and know nothing
//! of where they go; the boot code installs the sink once the console exists. Lines
//! emitted before that are held back and printed when the sink arrives, so discovery and
//! the console's own MAP are traced too.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::{Mutex, Once};

static ENABLED: AtomicBool = AtomicBool::new(false);
static SINK: Once<fn(fmt::Arguments)> = Once::new();
static PENDING: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Emits one trace line (without its newline), if tracing is on.
pub fn line(args: fmt::Arguments) {
    if !enabled() {
        return;
    }
    match SINK.get() {
        Some(sink) => sink(format_args!("{args}\n")),
        // try_lock: an exception taken while this CPU held the list loses its line rather
        // than deadlock.
        None => {
            if let Some(mut p) = PENDING.try_lock() {
                p.push(alloc::format!("{args}"));
            }
        }
    }
}

/// Installs where trace lines go, and prints the ones held back until now.
pub fn install_sink(sink: fn(fmt::Arguments)) {
    SINK.call_once(|| sink);
    let pending = core::mem::take(&mut *PENDING.lock());
    for l in pending {
        sink(format_args!("{l}\n"));
    }
}
