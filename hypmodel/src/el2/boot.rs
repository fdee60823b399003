//! The boot CPU, from QEMU's tree to the guest's first instruction: read the platform, place
//! the guest's Image and tree, build stage 2 and the VM, print the configuration, enter.

use super::asm;
use super::console::{self, hyp_line};
use super::{setup_el2, sysreg, take_once, Stage2Regs, STAGE2, TRACE, VM};
use core::fmt::Write;
use core::sync::atomic::Ordering;
use hypmodel::dma::Dma;
use hypmodel::fdt::{self, Edits, Fdt};
use hypmodel::image::{self, ImageHeader};
use hypmodel::layout::*;
use hypmodel::memshare::{self, ShareMap};
use hypmodel::options::{self, Options};
use hypmodel::pci::PciHost;
use hypmodel::stage2::{self, Table};
use hypmodel::vm::{Layout, Vm, MAX_CPUS, MAX_RAM_RANGES};
use spin::Mutex;

/// hypmodel's own memory: cut out of every RAM range the guest sees, never in stage 2.
const HYP: (u64, u64) = (HYP_BASE, HYP_SIZE);
/// QEMU `virt`'s high memory map (high PCIe MMIO up to 1 TiB) needs 40 bits of IPA.
const MIN_IPA_BITS: u32 = 40;
/// ID_AA64MMFR0_EL1.PARange, bits [3:0].
const PARANGE_MASK: u64 = 0xf;
/// VTTBR_EL2.VMID (bits 63:48) of the one VM.
const VTTBR_VMID: u64 = 1 << 48;
/// RAM hypmodel can track the share state of, at one bit per 4 KiB frame.
const SHARE_MAX_RAM: u64 = 8 << 30;

// The boot CPU's buffers. Each is taken once (`take_once`) and then owned for the rest of
// the run: the stage-2 tables by the MMU, the share bitmap by the VM.
const S2_TABLES: usize = 32;
/// Aligned for the largest concatenated root (`stage2::MAX_ROOT_TABLES` tables).
#[repr(C, align(32768))]
struct S2Pool([Table; S2_TABLES]);
static S2_POOL: Mutex<S2Pool> = Mutex::new(S2Pool([[0; stage2::ENTRIES]; S2_TABLES]));
static SHARE_BITS: Mutex<[u64; memshare::words_for(SHARE_MAX_RAM / memshare::FRAME)]> =
    Mutex::new([0; memshare::words_for(SHARE_MAX_RAM / memshare::FRAME)]);
/// The guest's tree, built here and copied to `GUEST_DTB`.
static DTB_OUT: Mutex<[u8; 0x10000]> = Mutex::new([0; 0x10000]);
/// The guest's command line, copied out of QEMU's tree before the guest's tree replaces it.
static GUEST_ARGS: Mutex<[u8; 2048]> = Mutex::new([0; 2048]);

/// What QEMU's tree and the boot CPU's ID registers say about the machine.
struct Platform {
    ram: [(u64, u64); MAX_RAM_RANGES],
    nram: usize,
    /// End of the RAM range hypmodel lies in: the staged and the moved Image end below it.
    ram_end: u64,
    /// MPIDRs from `/cpus`, the boot CPU first (it is vCPU 0).
    cpus: [u64; MAX_CPUS],
    ncpus: usize,
    /// The stage-2 walk for this CPU's PA size (IPA bits, PS, first level).
    geo: stage2::Geometry,
}

impl Platform {
    fn ram(&self) -> &[(u64, u64)] {
        &self.ram[..self.nram]
    }
}

/// Guest RAM: the RAM ranges with hypmodel's memory cut out (at most two pieces each).
struct GuestRam {
    ranges: [(u64, u64); 2 * MAX_RAM_RANGES],
    n: usize,
}

impl GuestRam {
    fn of(plat: &Platform) -> GuestRam {
        let mut g = GuestRam {
            ranges: [(0, 0); 2 * MAX_RAM_RANGES],
            n: 0,
        };
        for &(base, size) in plat.ram() {
            for piece in fdt::subtract(base, size, HYP).into_iter().flatten() {
                g.ranges[g.n] = piece;
                g.n += 1;
            }
        }
        g
    }

    fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges[..self.n]
    }
}

pub(super) fn boot_main() -> ! {
    let tree = qemu_tree();
    let console_base = start_console(&tree);
    let (opts, guest_args) = parse_options(&tree);
    // Relaxed: written before this CPU takes a trap or starts another (CPU_ON orders it).
    TRACE.store(opts.trace, Ordering::Relaxed);
    let plat = platform(&tree);
    let (dma, pci) = virtio_transports(&tree);
    let img = staged_image(plat.ram_end);
    let load = guest_load_address(img.text_offset);
    // QEMU's tree (`tree`, and the options read from it) is overwritten here: not used after.
    let dtb_size = write_guest_tree(&tree, guest_args);
    move_guest_image(load, img.image_size);
    let gram = GuestRam::of(&plat);
    build_stage2(&plat, &gram);
    create_vm(opts, &plat, console_base, dma, pci);
    print_config(&opts, &plat, &img, load, dtb_size, &gram);
    setup_el2();
    // SAFETY: the guest image is in place, stage 2 maps it, EL2 is set up; x0 = its tree.
    unsafe { asm::hm_enter_guest(load, GUEST_DTB) }
}

/// The tree QEMU wrote at RAM base for an ELF kernel. Its memory becomes the guest's tree
/// in `write_guest_tree`: nothing borrowed from it may be used after that.
fn qemu_tree() -> Fdt<'static> {
    // SAFETY: QEMU's tree occupies [QEMU_DTB, QEMU_DTB + DTB_MAX), RAM that nothing else uses
    // until the rewritten tree is copied back; the header comes first, to bound the rest.
    let hdr = unsafe { core::slice::from_raw_parts(QEMU_DTB as *const u8, fdt::HEADER_SIZE) };
    let size = match fdt::total_size(hdr) {
        Ok(s) if s as u64 <= DTB_MAX => s,
        Ok(s) => {
            console::set_uart(DEFAULT_UART);
            fatal!(
                "the device tree at {QEMU_DTB:#x} is {s:#x} bytes, more than the {DTB_MAX:#x} \
                 below hypmodel (a -dtb file is limited to that size)"
            )
        }
        Err(e) => {
            console::set_uart(DEFAULT_UART);
            fatal!(
                "{e} at {QEMU_DTB:#x}: QEMU puts the tree there for an ELF given with -kernel, \
                 and leaves it out without a word when a -dtb file is over {DTB_FILE_MAX} bytes \
                 (it needs twice the file's size plus 20000 below hypmodel)"
            )
        }
    };
    // SAFETY: as above; `size` is the header's own total size, at most DTB_MAX.
    let dtb = unsafe { core::slice::from_raw_parts(QEMU_DTB as *const u8, size) };
    match Fdt::new(dtb) {
        Ok(t) => t,
        Err(e) => {
            console::set_uart(DEFAULT_UART);
            fatal!("device tree: {e}")
        }
    }
}

/// Output goes to the tree's console from here on; hypmodel must run at EL2.
fn start_console(tree: &Fdt<'_>) -> u64 {
    let base = find_uart(tree).unwrap_or(DEFAULT_UART);
    console::set_uart(base);
    hyp_line(format_args!(
        "hypmodel {}: EL{} reference hypervisor (pKVM MMIO guard model)",
        env!("CARGO_PKG_VERSION"),
        sysreg::current_el()
    ));
    match sysreg::current_el() {
        2 => {}
        3 => {
            // QEMU has no PSCI of its own when it emulates EL3 (it expects firmware there).
            super::PSCI_OK.store(false, Ordering::Relaxed);
            fatal!(
                "started at EL3, not EL2: QEMU runs firmware at EL3 with -M virt,secure=on and \
                 then offers no PSCI; use -M virt,virtualization=on without secure=on"
            )
        }
        el => fatal!("started at EL{el}, not EL2 (QEMU needs -M virt,virtualization=on)"),
    }
    if tree.prop("/psci", "compatible").is_none() {
        fatal!(
            "the device tree has no /psci node: the guest could neither start CPUs nor power off"
        );
    }
    base
}

/// `/chosen/stdout-path` (a path or an alias, maybe with ":options") to its first `reg`.
fn find_uart(t: &Fdt<'_>) -> Option<u64> {
    let sp = t.prop_str("/chosen", "stdout-path")?;
    let sp = sp.split(':').next()?;
    let path = if sp.starts_with('/') {
        sp
    } else {
        t.prop_str("/aliases", sp)?
    };
    let reg = t.prop(path, "reg")?;
    let ac = t
        .prop("/", "#address-cells")
        .map_or(2, |v| v.get(3).copied().unwrap_or(2));
    let w = |i: usize| {
        reg.get(i * 4..i * 4 + 4)
            .map(|b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
    };
    if ac == 2 {
        Some((w(0)? << 32) | w(1)?)
    } else {
        w(0)
    }
}

/// hypmodel's options and the guest's command line, both from `/chosen/bootargs`.
fn parse_options(tree: &Fdt<'_>) -> (Options, &'static [u8]) {
    let bootargs = tree.prop_str("/chosen", "bootargs").unwrap_or("");
    let buf = take_once(&GUEST_ARGS);
    let parsed = options::parse(bootargs, buf);
    match parsed {
        Ok((opts, len)) => {
            let args: &'static [u8] = buf;
            (opts, &args[..len])
        }
        Err(e) => fatal!("{e}"),
    }
}

fn platform(tree: &Fdt<'_>) -> Platform {
    let (ram, nram) = memory(tree);
    let ram_end = hyp_range_end(&ram[..nram]);
    let (cpus, ncpus) = cpus_boot_first(tree);
    let geo = stage2::Geometry::of_parange(sysreg::read_id_aa64mmfr0() & PARANGE_MASK);
    if geo.ipa_bits < MIN_IPA_BITS {
        fatal!(
            "physical address size of {} bits is too small",
            geo.ipa_bits
        );
    }
    Platform {
        ram,
        nram,
        ram_end,
        cpus,
        ncpus,
        geo,
    }
}

fn memory(tree: &Fdt<'_>) -> ([(u64, u64); MAX_RAM_RANGES], usize) {
    let mut ram = [(0u64, 0u64); MAX_RAM_RANGES];
    let mut nram = 0;
    let mut too_many = false;
    let r = tree.for_each_memory(|b, s| {
        if nram < MAX_RAM_RANGES {
            ram[nram] = (b, s);
            nram += 1;
        } else {
            too_many = true;
        }
    });
    if r.is_err() || nram == 0 || too_many {
        fatal!("cannot read the memory nodes of the device tree");
    }
    (ram, nram)
}

/// The virtio-mmio windows of the tree (`compatible = "virtio,mmio"`) and its first PCI
/// host bridge (`pci-host-ecam-generic`): hypmodel follows what the guest tells the
/// virtio devices behind them about DMA memory.
fn virtio_transports(tree: &Fdt<'_>) -> (Dma, Option<PciHost>) {
    let mut dma = Dma::new();
    let mut lost = 0usize;
    let r = tree.for_each_compatible("virtio,mmio", |n| {
        if let Some((base, size)) = n.reg(0) {
            if !dma.add_mmio_window(base, size) {
                lost += 1;
            }
        }
    });
    if r.is_err() {
        fatal!("cannot read the virtio-mmio nodes of the device tree");
    }
    if lost > 0 {
        hyp_line(format_args!(
            "hypmodel: {lost} virtio-mmio windows beyond the first {} are not followed",
            hypmodel::dma::MAX_MMIO_WINDOWS
        ));
    }
    let mut pci = None;
    let _ = tree.for_each_compatible("pci-host-ecam-generic", |n| {
        pci = pci.or_else(|| PciHost::from_node(n));
    });
    (dma, pci)
}

/// The end of the RAM range that holds hypmodel.
fn hyp_range_end(ram: &[(u64, u64)]) -> u64 {
    let Some(&(base, size)) = ram
        .iter()
        .find(|&&(b, s)| b <= HYP_BASE && HYP_BASE + HYP_SIZE <= b + s)
    else {
        fatal!("hypmodel's memory {HYP_BASE:#x}+{HYP_SIZE:#x} is not inside RAM")
    };
    base + size
}

/// `/cpus` in tree order but with the boot CPU (this one) moved to index 0.
fn cpus_boot_first(tree: &Fdt<'_>) -> ([u64; MAX_CPUS], usize) {
    let mut cpus = [0u64; MAX_CPUS];
    let mut ncpus = 0;
    let _ = tree.for_each_cpu(|m| {
        if ncpus < MAX_CPUS {
            cpus[ncpus] = m;
            ncpus += 1;
        }
    });
    let me = sysreg::read_mpidr() & hypmodel::abi::MPIDR_AFFINITY_MASK;
    match cpus[..ncpus].iter().position(|&m| m == me) {
        Some(0) => {}
        Some(i) => cpus.swap(0, i),
        None => fatal!("boot CPU MPIDR {me:#x} not in /cpus"),
    }
    (cpus, ncpus)
}

/// The header of the guest Image staged by `-device loader` at GUEST_STAGING, checked to
/// fit in RAM both where it is staged and where it goes.
fn staged_image(ram_end: u64) -> ImageHeader {
    if GUEST_STAGING + image::HEADER_SIZE as u64 > ram_end {
        fatal!("RAM too small: the guest is staged at {GUEST_STAGING:#x}");
    }
    // SAFETY: [GUEST_STAGING, +HEADER_SIZE) is RAM (checked above) that only the loader wrote.
    let hdr: [u8; image::HEADER_SIZE] =
        unsafe { core::ptr::read_volatile(GUEST_STAGING as *const [u8; image::HEADER_SIZE]) };
    let img = match image::parse(&hdr) {
        Ok(h) => h,
        Err(e) => fatal!("guest image at {GUEST_STAGING:#x}: {e} (load it with -device loader,file=Image,addr={GUEST_STAGING:#x},force-raw=on)"),
    };
    let img_end = guest_load_address(img.text_offset).checked_add(img.image_size);
    let stage_end = GUEST_STAGING.checked_add(img.image_size);
    if !img.text_offset.is_multiple_of(PAGE_SIZE)
        || img_end.is_none_or(|e| e > ram_end)
        || stage_end.is_none_or(|e| e > ram_end)
    {
        fatal!(
            "guest image ({:#x} bytes, text_offset {:#x}) does not fit in RAM",
            img.image_size,
            img.text_offset
        );
    }
    img
}

/// The guest's tree (psci via hvc, its own command line, hypmodel's memory removed), written
/// over QEMU's at GUEST_DTB; returns its size.
fn write_guest_tree(tree: &Fdt<'_>, guest_args: &[u8]) -> usize {
    let out = take_once(&DTB_OUT);
    // The tree reserves its own memory, and its size is known only once it is written:
    // write it reserving the whole buffer, then again with its exact size (which does not
    // change the size).
    let reserve = [(GUEST_DTB, out.len() as u64)];
    let edits = Edits {
        bootargs: guest_args,
        psci_method: b"hvc",
        hole: HYP,
        reserve: &reserve,
    };
    let n = match fdt::rewrite(tree, &edits, out) {
        Ok(n) => n,
        Err(e) => fatal!("rewriting the device tree: {e}"),
    };
    let reserve_fixed = [(GUEST_DTB, n as u64)];
    let edits = Edits {
        reserve: &reserve_fixed,
        ..edits
    };
    if fdt::rewrite(tree, &edits, out).unwrap_or(0) != n {
        fatal!("device tree size changed between passes");
    }
    // SAFETY: [GUEST_DTB, GUEST_DTB + n) lies in QEMU's old tree area (n <= 64 KiB < DTB_MAX),
    // RAM below hypmodel; `out` is hypmodel's own buffer, so the ranges do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(out.as_ptr(), GUEST_DTB as *mut u8, n) };
    n
}

/// Moves the guest Image from its staging address to where it runs.
fn move_guest_image(load: u64, size: u64) {
    // SAFETY: both ranges are inside RAM (`staged_image` checked them) and outside hypmodel;
    // `copy` is a memmove, correct for the overlap of staging and load ranges.
    unsafe { core::ptr::copy(GUEST_STAGING as *const u8, load as *mut u8, size as usize) };
}

/// Stage 2 maps guest RAM only; every vCPU loads it from STAGE2.
fn build_stage2(plat: &Platform, gram: &GuestRam) {
    // The tables stay in place for the whole run: the MMU walks them through their physical
    // address (EL2 runs with its MMU off, so that is their address here).
    let pool = &mut take_once(&S2_POOL).0;
    let pool_pa = pool.as_ptr() as u64;
    let mut b = match stage2::Builder::new(pool, pool_pa, plat.geo) {
        Ok(b) => b,
        Err(e) => fatal!("no stage-2 tables: {e}"),
    };
    for &(gb, gs) in gram.ranges() {
        if let Err(e) = b.map_ram(gb, gs) {
            fatal!("cannot map guest RAM {gb:#x}+{gs:#x} in stage 2: {e}");
        }
    }
    *STAGE2.lock() = Some(Stage2Regs {
        vttbr: b.root_pa() | VTTBR_VMID,
        vtcr: plat.geo.vtcr(),
    });
}

fn create_vm(opts: Options, plat: &Platform, console_base: u64, dma: Dma, pci: Option<PciHost>) {
    let layout = Layout {
        ram: plat.ram,
        nram: plat.nram,
        hyp: HYP,
        ipa_bits: plat.geo.ipa_bits,
        console_page: console_base & !(PAGE_SIZE - 1),
    };
    let span = plat
        .ram()
        .iter()
        .map(|&(b, s)| b + s)
        .max()
        .unwrap_or(plat.ram_end)
        - RAM_BASE;
    let bits = take_once(&SHARE_BITS);
    let share = ShareMap::new(RAM_BASE, span / memshare::FRAME, &mut bits[..]);
    let mut vm = VM.lock();
    let vm = vm.insert(Vm::new(opts, layout, share, &plat.cpus[..plat.ncpus]));
    vm.dma = dma;
    if let Some(h) = pci {
        if !vm.set_pci_host(h) {
            hyp_line(format_args!(
                "hypmodel: the PCI host bridge's ECAM {:#x}+{:#x} overlaps memory: its virtio functions are not followed",
                h.ecam, h.ecam_size
            ));
        }
    }
}

/// The configuration line the tests and the runner read.
fn print_config(
    opts: &Options,
    plat: &Platform,
    img: &ImageHeader,
    load: u64,
    dtb_size: usize,
    gram: &GuestRam,
) {
    let enrolled_at_boot =
        opts.enrolled_at_boot || hypmodel::profile::enrolled_from_boot(opts.profile);
    let mut line = console::Line::new();
    let _ = write!(
        line,
        "hypmodel: profile={} granule={} mutant={} enrolled={} trace={} ipa_bits={} cpus={} guest={:#x}+{:#x} dtb={:#x}+{:#x} ram=",
        opts.profile.name(),
        opts.granule,
        opts.mutant.map_or("none", |m| m.name()),
        if enrolled_at_boot { "boot" } else { "guest" },
        if opts.trace { "on" } else { "off" },
        plat.geo.ipa_bits,
        plat.ncpus,
        load,
        img.image_size,
        GUEST_DTB,
        dtb_size
    );
    for (i, &(gb, gs)) in gram.ranges().iter().enumerate() {
        let _ = write!(line, "{}{gb:#x}+{gs:#x}", if i > 0 { "," } else { "" });
    }
    if let Some(n) = opts.range_max {
        let _ = write!(line, " range_max={n}");
    }
    line.emit();
    let (windows, judge, ecam) = super::with_vm(|vm| {
        (
            vm.dma.mmio_windows().len(),
            vm.judges_dma(),
            vm.dma.pci_host().map(|h| (h.ecam, h.ecam_size)),
        )
    });
    let mut line = console::Line::new();
    let _ = write!(
        line,
        "hypmodel: dma virtio-mmio windows={windows} virtio-pci "
    );
    let _ = match ecam {
        Some((e, size)) => write!(line, "ecam={e:#x}+{size:#x}"),
        None => write!(line, "none"),
    };
    let _ = write!(
        line,
        " judge={}",
        if judge {
            "on (memory is private unless shared)"
        } else {
            "off (no memory sharing in this profile)"
        }
    );
    line.emit();
    if let Some(seed) = opts.chaos {
        hyp_line(format_args!(
            "hypmodel: chaos seed={seed}: one pKVM call in {} and one access in {} misbehave",
            hypmodel::chaos::CALL_ONE_IN,
            hypmodel::chaos::ACCESS_ONE_IN
        ));
    }
}

const _: () =
    assert!(core::mem::align_of::<S2Pool>() as u64 >= stage2::MAX_ROOT_TABLES as u64 * 4096);
