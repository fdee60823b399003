//! SIGINT, SIGTERM and SIGHUP to the runner stop QEMU before the runner exits (with
//! 128 + the signal's number). Without this, a runner killed by SIGTERM (CI cancelling a
//! job, `kill`, a closed terminal for SIGHUP) left QEMU running as an orphan.
//!
//! The crate forbids `unsafe`, so neither a raw `sigaction` handler nor
//! `PR_SET_PDEATHSIG` through `Command::pre_exec` (which is `unsafe`) is possible here.
//! signal-hook is the maintained, widely used crate for this: its [`Signals`] iterator
//! has a safe API (the async-signal-safe part, a self-pipe, is inside the crate), and it
//! delivers each signal to an ordinary thread, which may then lock, spawn `kill` and print.
//! SIGKILL cannot be caught: a runner killed with it still leaves QEMU behind.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The signals the runner turns into "stop QEMU, then exit 128 + N".
pub const HANDLED: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// The conventional name of one of [`HANDLED`].
pub fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// Install the handling for the `ioguard-run` process: on the first of [`HANDLED`], stop
/// every QEMU the runner is streaming ([`crate::stream::stop_children`]: SIGTERM, then
/// SIGKILL after a second), remove the runs' temporary files ([`crate::temp::remove_all`]:
/// the default virtio-blk images), say so on stderr and exit with 128 + the signal's
/// number.
pub fn install() -> std::io::Result<()> {
    let mut signals = Signals::new(HANDLED)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let pids = crate::stream::stop_children();
                // The boot may have removed its files already, as QEMU ended.
                crate::temp::remove_all();
                let what = if pids.is_empty() {
                    "no QEMU was running".to_string()
                } else {
                    format!("stopped QEMU (pid {pids:?})")
                };
                eprintln!("ioguard-run: {}: {what}; exiting", name(sig));
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}

/// Called by the binary before it exits with a run's status: if a signal is being handled,
/// what the run saw is QEMU being stopped, so wait for the handler to exit the process
/// with 128 + N instead.
pub fn wait_if_stopping() {
    while crate::stream::stopping() {
        std::thread::park_timeout(std::time::Duration::from_secs(1));
    }
}
