//! Host-side runner for ioguard: build the guest, boot it on QEMU `virt`, read its lines.
//!
//! `./qemu-run.sh` runs the `ioguard-run` binary of this crate; integration tests call the
//! library directly. The pure parts (option parsing, QEMU command construction, output
//! parsing, TAP13/JUnit rendering) are unit-tested on the host; [`run`] is the only
//! function with side effects that matter (it builds, spawns QEMU, enforces the timeout).
//!
//! # Layout
//!
//! A run ([`exec`]) asks the [`Launcher`] that `--hyp` names ([`launcher_for`], in
//! [`launch`]: plain QEMU, QEMU with hypmodel at EL2, a pKVM host that is not available
//! yet) for a command, spawns it, and hands the process to [`stream()`], which knows nothing
//! of QEMU: it reads the lines, enforces the timeout and decides the status. [`qemu`] is
//! the QEMU command line (with the default virtio devices of `--virtio-transport`), [`temp`]
//! the files made for one boot (the default virtio-blk images) and their removal on every
//! way out, [`build`] the cargo and objcopy steps, [`output`] and [`render`]
//! the guest's lines and the TAP13/JUnit reports. hypmodel's own QEMU tests boot through
//! [`Hypmodel::with_bootargs`] and [`boot_with`], so its command line exists once.
//!
//! # Booting the guest from a test
//!
//! ```no_run
//! use ioguard_runner::{boot, run, Kind, Options};
//!
//! // With the same words as ./qemu-run.sh (quiet: nothing is printed).
//! let out = boot(&["--smp", "4", "--append", "only=guard:*"]).expect("QEMU ran");
//! assert_eq!(out.status, 0, "{}", out.transcript());
//! assert_eq!(out.report.header.as_ref().unwrap().get("cpus"), Some("4"));
//! assert!(out.report.count(Kind::Fail) == 0);
//! assert_eq!(out.result("guard: stray-read").unwrap().kind, Kind::Pass);
//!
//! // Or with fields; extra QEMU arguments go last, unchanged.
//! let opts = Options {
//!     echo: false,
//!     timeout: Some(std::time::Duration::from_secs(20)),
//!     ..Options::default()
//! }
//! .with_qemu_args(["-dtb", "/tmp/wrong.dtb"]);
//! let out = run(&opts).expect("QEMU ran");
//! assert_ne!(out.status, 0);
//! assert!(!out.timed_out);
//! ```
//!
//! [`dump_dtb`] writes the device tree QEMU would pass for some options (to modify it, or
//! to boot one machine's tree on another); [`scripted_image`] makes a stand-in guest that
//! prints given lines and powers off (for testing the runner itself).
//!
//! [`build_image`] builds the Image once per process (tests in parallel share it);
//! [`run`] calls it unless `Options::image` is set. The guest is built with
//! `cargo build --release --target aarch64-unknown-none -p ioguard` in the workspace
//! target directory ([`target_dir`]) and converted to `ioguard.bin` with llvm-objcopy.
//!
//! # Status
//!
//! [`Outcome::status`] is the runner's exit status: the code decoded from the guest's
//! `EXIT: STATUS=` line (0 all passed, 1 a check failed, 2 fatal boot error); 3 when the
//! launcher failed (QEMU refused its arguments or died on its own); 4 when the guest went
//! silent or powered off without a valid EXIT line; 124 on timeout ([`decide`]). A
//! [`RunError`] means the run could not happen: [`RunError::exit_status`] is 2 for a usage
//! error, 3 for a failed build, a missing QEMU or a file that is not an arm64 Image. The
//! binary exits 128+N when it gets signal N ([`signals`]), after stopping QEMU.

#![forbid(unsafe_code)]
// Belt and braces should unsafe code ever be allowed here: each block says why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod bench;
pub mod build;
pub mod cpio;
pub mod exec;
pub mod floor;
pub mod html;
pub mod hyp;
pub mod image;
pub mod ktap;
pub mod launch;
pub mod matrix;
pub mod options;
pub mod output;
pub mod pkvm;
pub mod qemu;
pub mod render;
pub mod setup;
pub mod signals;
pub mod stream;
pub mod sweep;
pub mod temp;

pub use build::{
    build_bin_image, build_hypmodel, build_image, build_image_now, guest_elf_path,
    hypmodel_elf_path, image_path, repo_root, runner_dir, target_dir,
};
pub use exec::{
    boot, boot_image, boot_with, check_report_paths, locate_stall, resolve_image, run, run_with,
    Outcome, RunError,
};
pub use floor::{floor_image, scripted_image, write_floor_image, FLOOR_LINE};
pub use image::{check_image, image_problem};
pub use ktap::{check_name, ktap_name, render_ktap};
pub use launch::{
    blk_images, default_blk_files, drives, dump_dtb, launcher_for, Hypmodel, Launch, Launcher,
    PkvmHost, PlainQemu,
};
pub use options::{parse_args, Command, Hyp, Options, UsageError, VirtioTransport, HELP};
pub use output::{
    decide, decode_exit_status, CheckResult, Ending, Exit, Header, Kind, Report, Stall, Stop,
    Summary, Totals, Verdict, STATUS_FAIL, STATUS_LAUNCH, STATUS_NO_EXIT, STATUS_PASS,
    STATUS_TIMEOUT, STATUS_USAGE,
};
pub use qemu::{qemu_argv, shell_line, shell_quote, virtio_args, Boot, Drives};
pub use render::{render_junit, render_tap, xml_escape};
pub use setup::{ensure_guest_target, ensure_qemu, QEMU_INSTALL};
pub use stream::{stream, stream_expecting, stream_limited, Limits, Stream, Streamed};
