//! ioguard-vmm: a small VMM on the rust-vmm crates that boots an arm64 Image (ioguard) as a
//! protected or an ordinary KVM VM on an aarch64 Linux host, pKVM included.
//!
//! Everything that does not touch KVM (options, layouts, the device tree, the Image
//! header, devices, virtio, statistics) builds everywhere and is unit-tested on the host;
//! the KVM side (`kvm`) is built for aarch64 only.
// Every unsafe block says why it is sound, and an unsafe fn's body is not one unsafe block.
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]
// Off aarch64 only the pure modules build (for their tests); the KVM side that uses them
// does not, so their items look unused there.
#![cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]

mod devices;
mod fdt;
mod image;
#[cfg(target_arch = "aarch64")]
mod kvm;
mod layout;
mod nisv;
mod options;
mod pci;
mod proof;
mod stats;
mod virtio;

/// Exit statuses (also in `--help` and the README).
pub mod status {
    pub const POWERED_OFF: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const RESET: i32 = 3;
    pub const NOT_PRIVATE: i32 = 4;
    /// The guest made an access the VMM cannot emulate (no valid syndrome) and
    /// `--nisv stop` (the default) stopped the VM, as crosvm does.
    pub const UNEMULATED: i32 = 5;
}

fn main() {
    let opts = match options::parse(std::env::args().skip(1)) {
        Ok(options::Parsed::Run(o)) => o,
        Ok(options::Parsed::Help) => {
            println!("{}", options::USAGE);
            std::process::exit(status::POWERED_OFF);
        }
        Err(e) => {
            eprintln!("ioguard-vmm: {e}\n\n{}", options::USAGE);
            std::process::exit(status::USAGE);
        }
    };
    let code = run(opts);
    // process::exit skips destructors: a last guest line without its newline would be lost.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code);
}

#[cfg(target_arch = "aarch64")]
fn run(opts: options::Options) -> i32 {
    kvm::run(opts)
}

#[cfg(not(target_arch = "aarch64"))]
fn run(_: options::Options) -> i32 {
    eprintln!("ioguard-vmm: runs on aarch64 Linux hosts with KVM only");
    status::USAGE
}
