//! From the first Rust instruction to the suite: heap, device tree, page tables,
//! discovery and enrolment, console, command line. Anything wrong on the way ends the run
//! with a clear message on whatever console is reachable and a failure status, never a
//! hang.

use crate::cmdline::{self, CmdlineError};
use crate::devices::{DeviceKind, Devices};
use crate::fault::Fault;
use crate::platform::{self, Platform, Region};
use crate::report;
use alloc::format;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use super::arch::sysreg;
use super::console::{self, Uart};
use super::hyp::{self, conduit, discovery, Hypervisor};
use super::mm::{heap, ioremap, mmu};
use super::probe::{self, Width};
use super::suite::{self, BootInfo};
use super::{power, semihosting, trace};
use crate::println;

const FDT_MAGIC: u32 = 0xd00d_feed;
/// Larger trees are refused: QEMU's is 1 MiB (mostly free space), crosvm's far smaller.
const FDT_MAX_SIZE: u32 = 16 << 20;
const FDT_HEADER_SIZE: u32 = 40;

/// Ends a run that cannot run its checks. Before the console exists, the message goes to
/// the semihosting console where there is one.
pub fn fatal(msg: &str) -> ! {
    let line = format!(
        "ioguard: fatal: {msg}\n{}\n",
        report::exit_line(report::code::FATAL)
    );
    if console::is_installed() {
        console::write_fmt(format_args!("{line}"));
    } else {
        semihosting::write(&line);
    }
    power::exit(report::code::FATAL)
}

/// Why boot cannot go on.
#[derive(Debug)]
enum BootError {
    NoTree,
    Misaligned(u64),
    Unreadable { at: u64, fault: Fault },
    BadMagic { at: u64, magic: u32 },
    BadSize { at: u64, size: u32 },
    EndUnreadable { at: u64, size: u32, fault: Fault },
    ImageOutsideRam(Region),
    TreeOverlapsImage { tree: Region, image: Region },
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoTree => write!(
                f,
                "no device tree: x0 = 0 (boot ioguard as a Linux Image, not as an ELF)"
            ),
            Self::Misaligned(at) => {
                write!(f, "device tree address x0={at:#x} is not 8-byte aligned")
            }
            Self::Unreadable { at, fault } => {
                write!(f, "device tree at x0={at:#x} is not readable: {fault}")
            }
            Self::BadMagic { at, magic } => write!(
                f,
                "no device tree at x0={at:#x}: magic {magic:#010x}, expected {FDT_MAGIC:#010x}"
            ),
            Self::BadSize { at, size } => {
                write!(f, "device tree at {at:#x} claims {size} bytes")
            }
            Self::EndUnreadable { at, size, fault } => write!(
                f,
                "device tree at {at:#x} claims {size} bytes, but its end is not readable: {fault}"
            ),
            Self::ImageOutsideRam(image) => write!(
                f,
                "the image at {image} is not inside the memory the device tree describes"
            ),
            Self::TreeOverlapsImage { tree, image } => {
                write!(f, "the device tree at {tree} overlaps the image at {image}")
            }
        }
    }
}

/// Reads a big-endian u32 of the tree through the probe API: x0 comes from whoever booted
/// us and may point anywhere.
fn read_be32(addr: u64) -> Result<u32, BootError> {
    // SAFETY: a read of the location the boot protocol says holds the device tree; a fault
    // is caught and reported.
    match unsafe { probe::read(addr, Width::W32) } {
        Ok(v) => Ok(u32::from_be(v as u32)),
        Err(l) => Err(BootError::Unreadable {
            at: addr,
            fault: l.fault,
        }),
    }
}

/// Finds the device tree blob x0 points at.
fn device_tree_blob(dtb: u64) -> Result<&'static [u8], BootError> {
    if dtb == 0 {
        return Err(BootError::NoTree);
    }
    if !dtb.is_multiple_of(8) {
        return Err(BootError::Misaligned(dtb));
    }
    let magic = read_be32(dtb)?;
    if magic != FDT_MAGIC {
        return Err(BootError::BadMagic { at: dtb, magic });
    }
    let size = read_be32(dtb + 4)?;
    if !(FDT_HEADER_SIZE..=FDT_MAX_SIZE).contains(&size) {
        return Err(BootError::BadSize { at: dtb, size });
    }
    // The last byte must be readable too before a slice may cover it.
    // SAFETY: as in read_be32.
    if let Err(l) = unsafe { probe::read(dtb + u64::from(size) - 1, Width::W8) } {
        return Err(BootError::EndUnreadable {
            at: dtb,
            size,
            fault: l.fault,
        });
    }
    // SAFETY: [dtb, dtb + size) was just shown readable (first and last byte; RAM in
    // between), and nothing writes the tree for the rest of the run.
    Ok(unsafe { core::slice::from_raw_parts(dtb as *const u8, size as usize) })
}

fn check_placement(p: &Platform, tree: Region) -> Result<(), BootError> {
    let image = Region::new(
        crate::sym_addr!(__image_start),
        crate::sym_addr!(__image_end) - crate::sym_addr!(__image_start),
    );
    let ram = p
        .ram_containing(image.base)
        .filter(|r| r.end() >= image.end());
    if ram.is_none() {
        return Err(BootError::ImageOutsideRam(image));
    }
    if image.overlaps(&tree) {
        return Err(BootError::TreeOverlapsImage { tree, image });
    }
    Ok(())
}

/// Called by head.S: x0 = device tree, x1 = load address, x2 = relocations applied,
/// x3 = relocations of an unsupported type, x4 = the exception level we were entered at.
#[no_mangle]
extern "C" fn ioguard_main(
    dtb: u64,
    load_base: u64,
    relocations: u64,
    bad_relocations: u64,
    entry_el: u64,
) -> ! {
    suite::install_handlers();
    let entered = sysreg::counter();
    heap::init();
    if entry_el == 3 {
        // The vectors and every system register ioguard uses are EL1's: at EL3 nothing
        // would catch a fault. A firmware (or QEMU's secure=on without one) must hand over
        // at EL2 or EL1, as it does to Linux.
        fatal("entered at EL3: ioguard is a guest and must be entered at EL2 or EL1 (QEMU: drop secure=on, or boot through firmware that drops to EL2)");
    }
    if bad_relocations != 0 {
        fatal(&format!(
            "{bad_relocations} relocations of a type other than R_AARCH64_RELATIVE"
        ));
    }
    let blob = device_tree_blob(dtb).unwrap_or_else(|e| fatal(&format!("{e}")));
    let platform = platform::parse(blob).unwrap_or_else(|e| fatal(&format!("device tree: {e}")));
    conduit::set(platform.psci);
    let dtb_region = Region::new(dtb, blob.len() as u64);
    check_placement(&platform, dtb_region).unwrap_or_else(|e| fatal(&format!("{e}")));
    let opts = cmdline::parse(&platform.bootargs);
    if let Ok(o) = &opts {
        power::set_exit_method(o.exit);
        // Set early so that discovery's hypercalls are traced too.
        trace::enable(o.trace);
    }
    let tree_parsed = sysreg::counter();
    map_memory(&platform, dtb_region);
    // Who is below us, before any device is touched: under an enrolled guard even the
    // console's first access must come after its MAP.
    let hv = hypervisor(opts.as_ref().ok().and_then(|o| o.profile));
    let devices = console_up(&platform);
    mmu::enable().unwrap_or_else(|e| fatal(&format!("MMU: {e}")));
    heap::enable_smp_lock();
    let opts = opts.unwrap_or_else(|e: CmdlineError| fatal(&format!("command line: {e}")));
    console::init_log(opts.log);
    let us = |ticks: u64| ticks.saturating_mul(1_000_000) / sysreg::frequency().max(1);
    log::debug!(
        "boot took {} us: {} us to read the device tree, {} us for discovery, the console and the MMU",
        sysreg::micros_since(entered),
        us(tree_parsed - entered),
        sysreg::micros_since(tree_parsed),
    );
    trace::install_sink(console::write_fmt);
    let boot = BootInfo {
        dtb,
        dtb_size: blob.len() as u64,
        load_base,
        relocations,
    };
    announce(hv, &platform, &boot, entry_el);
    suite::run(hv, &platform, &opts, &boot, &devices)
}

/// The identity map of RAM, and of the device tree where a VMM put it outside RAM.
fn map_memory(platform: &Platform, dtb: Region) {
    mmu::init(&platform.memory).unwrap_or_else(|e| fatal(&format!("page tables: {e}")));
    if platform.ram_containing(dtb.base).is_none() {
        mmu::map_normal(dtb).unwrap_or_else(|e| fatal(&format!("mapping the device tree: {e}")));
    }
}

/// Discovery, then ENROLL where the guard's ABI has it, then the guard handed to ioremap.
fn hypervisor(forced: Option<crate::hyp::profile::Profile>) -> &'static Hypervisor {
    let mut hv = discovery::discover(forced);
    hv.enroll_guard();
    let hv = hyp::install(hv);
    suite::watch_guard(hv.profile);
    ioremap::init(hv.mmio_guard());
    hv
}

/// The console's window: its base, for `repair_console`.
static CONSOLE_BASE: AtomicU64 = AtomicU64::new(0);

/// The console's window, registered before its first byte, and the UART behind it. A
/// refused registration is tried once more; if it is refused again the UART is used from
/// a stage-1 mapping alone (the refusal is recorded for `guard: console`, and if the
/// hypervisor then refuses the UART's accesses, output moves to semihosting).
fn console_up(platform: &Platform) -> Devices {
    let c = &platform.console;
    let window = match ioremap::ioremap(c.region.base, c.region.size) {
        Ok(w) => w,
        Err(first) => {
            let refused = |e: &ioremap::IoremapError| match e {
                ioremap::IoremapError::Map(g) => Some(g.answer),
                ioremap::IoremapError::Mmu(_) => None,
            };
            let Some(answer) = refused(&first) else {
                fatal(&format!("console {}: {first}", c.path))
            };
            console::not_registered(answer);
            match ioremap::ioremap(c.region.base, c.region.size) {
                Ok(w) => w,
                Err(_) => return console_unregistered(platform),
            }
        }
    };
    CONSOLE_BASE.store(c.region.base, Ordering::Relaxed);
    console::set_repair(repair_console);
    // SAFETY: the window covers the UART's registers, is mapped as device memory (live
    // once the MMU is on), and stays mapped: `window` is leaked for the run.
    console::install(unsafe { Uart::new(window.addr(), c.kind) });
    let mut devices = Devices::default();
    devices.hold(DeviceKind::Console, c.region, window.addr());
    core::mem::forget(window);
    devices
}

/// The console mapped in stage 1 only, after the hypervisor refused to register it.
fn console_unregistered(platform: &Platform) -> Devices {
    let c = &platform.console;
    let window = mmu::map_device(c.region.base, c.region.size)
        .unwrap_or_else(|e| fatal(&format!("console {}: {e}", c.path)));
    // SAFETY: as in console_up; `window` is leaked for the run.
    console::install(unsafe { Uart::new(window.addr(), c.kind) });
    let mut devices = Devices::default();
    devices.hold(DeviceKind::Console, c.region, window.addr());
    core::mem::forget(window);
    devices
}

/// Registers the console's granule again (the console tries this once, when its window
/// starts to abort).
fn repair_console() -> console::Repair {
    let Some(guard) = hyp::get().and_then(|hv| hv.mmio_guard()) else {
        return console::Repair::NoGuard;
    };
    let granule = CONSOLE_BASE.load(Ordering::Relaxed) & !(guard.granule() - 1);
    match guard.map_granule(granule) {
        Ok(crate::hyp::abi::Ret::Success) => console::Repair::Registered,
        other => console::Repair::Refused(other),
    }
}

/// The header line and what the reader needs to know before the first check.
fn announce(hv: &Hypervisor, platform: &Platform, boot: &BootInfo, entry_el: u64) {
    let c = &platform.console;
    println!(
        "ioguard {}: hypervisor={} profile={} granule={} entered-el={} cpus={} midr={:#x} memory={}MiB console={}@{:#x} psci={} load={:#x}",
        env!("CARGO_PKG_VERSION"),
        hv.name(),
        hv.profile,
        hv.mmio_guard().map_or(0, |g| g.granule()),
        entry_el,
        platform.cpus.len(),
        sysreg::midr(),
        platform.memory.iter().map(|r| r.size).sum::<u64>() >> 20,
        c.kind.name(),
        c.region.base,
        platform.psci,
        boot.load_base,
    );
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let msg = format!("{}", info.message());
    let location = info
        .location()
        .map(|l| format!(" at {}:{}", l.file(), l.line()))
        .unwrap_or_default();
    if !console::is_installed() {
        semihosting::write(&format!("ioguard: PANIC: {msg}{location}\n"));
        fatal("panic before the console was up")
    }
    suite::panicked(msg, &location)
}
