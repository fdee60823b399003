//! `ioguard-run`: the command behind `./qemu-run.sh` (see `--help`).

#![forbid(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

use ioguard_runner::{bench::bench, parse_args, run, signals::wait_if_stopping, Command, HELP};
use std::process::exit;

fn main() {
    // qemu-run.sh changes to the repository root (for rust-toolchain.toml) and passes the
    // caller's directory here, so relative --image/--tap/--junit/-dtb paths mean what the
    // caller meant. The guest build itself always runs in the repository root.
    if let Some(dir) = std::env::var_os("IOGUARD_RUN_CWD").filter(|d| !d.is_empty()) {
        if let Err(e) = std::env::set_current_dir(&dir) {
            eprintln!(
                "ioguard-run: error: cannot enter {}: {e}",
                dir.to_string_lossy()
            );
            exit(2);
        }
    }
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{HELP}");
            exit(0);
        }
        Ok(Command::Run(o)) => o,
        Err(e) => {
            eprintln!("ioguard-run: error: {e}");
            eprintln!("Try './qemu-run.sh --help'.");
            exit(2);
        }
    };
    // From here on QEMU may run: a signal to the runner stops it first.
    if let Err(e) = ioguard_runner::signals::install() {
        eprintln!("ioguard-run: warning: cannot handle SIGTERM/SIGHUP/SIGINT: {e}");
    }
    if opts.matrix.is_some() {
        let result = ioguard_runner::sweep::sweep(&opts);
        wait_if_stopping();
        match result {
            Ok(m) => {
                let dir = opts.matrix.as_deref().unwrap_or(std::path::Path::new("."));
                println!(
                    "matrix: {} checks x {} columns: {}/matrix.md, {}/matrix.html; status {}",
                    m.rows.len(),
                    m.columns.len(),
                    dir.display(),
                    dir.display(),
                    m.exit_status()
                );
                exit(m.exit_status());
            }
            Err(e) => {
                eprintln!("ioguard-run: error: {e}");
                exit(e.exit_status());
            }
        }
    }
    if opts.bench.is_some() {
        let result = bench(&opts);
        wait_if_stopping();
        match result {
            Ok(r) => {
                print!("{r}");
                exit(if r.broken.is_empty() { 0 } else { 1 });
            }
            Err(e) => {
                eprintln!("ioguard-run: error: {e}");
                exit(e.exit_status());
            }
        }
    }
    let result = run(&opts);
    wait_if_stopping();
    match result {
        Ok(outcome) => exit(outcome.status),
        Err(e) => {
            eprintln!("ioguard-run: error: {e}");
            exit(e.exit_status());
        }
    }
}
