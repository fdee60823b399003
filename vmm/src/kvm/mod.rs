//! The KVM side: the VM, its memory and vGIC, the vCPU threads and the end of the run.

mod private;
mod vcpu;
mod vm;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::devices::bus::{Bus, DeviceKind};
use crate::devices::pl011::Pl011;
use crate::devices::pl030::{self, Pl030};
use crate::devices::superio::{Pl031, Uart16550};
use crate::devices::MmioDevice;
use crate::fdt::{self, TreeSpec};
use crate::image::Header;
use crate::layout::{Layout, LayoutKind, RtcKind, UartKind, MIB};
use crate::options::Options;
use crate::pci::{BarWindow, CamWindow, HostBridge, PciBus, SharedBus};
use crate::proof;
use crate::stats::Stats;
use crate::status;
use crate::virtio::blk::{Blk, Disk, FileDisk, MemDisk, DEFAULT_DISK};
use crate::virtio::console::Console;
use crate::virtio::dma::{Gate, Probe, PAGE};
use crate::virtio::mmio::MmioTransport;
use crate::virtio::pci::VirtioPci;
use crate::virtio::rng::{host_entropy, Rng};
use crate::virtio::{Dma, Empty, VirtioDevice};

/// QEMU `virt` has 32 virtio-mmio slots (hw/arm/virt.c NUM_VIRTIO_TRANSPORTS); those no
/// device takes answer as empty (device ID 0), which ioguard's `ioremap: windows` uses.
const VIRTIO_MMIO_SLOTS: usize = 32;
/// blk, rng, console.
const VIRTIO_DEVICES: usize = 3;

/// Why a vCPU thread stopped.
pub enum Stop {
    PoweredOff,
    Reset,
    Failed(String),
    /// An access the VMM cannot emulate, under `--nisv stop`: the report.
    Unemulated(String),
}

/// The state the vCPU threads share.
pub struct Shared {
    pub bus: Mutex<Bus>,
    pub stats: Mutex<Stats>,
}

fn usage_error(msg: String) -> i32 {
    eprintln!("ioguard-vmm: {msg}");
    status::USAGE
}

pub fn run(opts: Options) -> i32 {
    let start = Instant::now();
    let file = match std::fs::read(&opts.image) {
        Ok(f) => f,
        Err(e) => return usage_error(format!("{}: {e}", opts.image.display())),
    };
    let header = match Header::parse(&file) {
        Ok(h) => h,
        Err(e) => return usage_error(format!("{}: {e}", opts.image.display())),
    };
    let disk: Option<Box<dyn Disk>> = match (&opts.blk, opts.virtio) {
        (_, false) => None,
        (Some(p), true) => match FileDisk::open(p) {
            Ok(d) => Some(Box::new(d)),
            Err(e) => return usage_error(format!("--blk {}: {e}", p.display())),
        },
        (None, true) => Some(Box::new(MemDisk::with_header(DEFAULT_DISK))),
    };
    // blk, rng, console, then any empty slots.
    let virtio_count = match (opts.virtio, opts.layout) {
        (false, _) => 0,
        (true, LayoutKind::Qemu) => VIRTIO_MMIO_SLOTS,
        (true, LayoutKind::Crosvm) => VIRTIO_DEVICES,
    };
    let layout = Layout::new(opts.layout, opts.cpus, opts.mem_mib * MIB, virtio_count);
    let fdt_addr = layout.fdt_addr();
    let load = match header.place(layout.ram_base, file.len() as u64, fdt_addr) {
        Ok(a) => a,
        Err(e) => return usage_error(format!("{}: {e}", opts.image.display())),
    };
    let dtb = match fdt::build(&TreeSpec {
        layout: &layout,
        cpus: opts.cpus,
        bootargs: &opts.cmdline,
        // As crosvm, whose --swiotlb pool defaults to 64 MiB in every protected mode
        // and is absent otherwise.
        dma_pool: opts.protected,
    }) {
        Ok(d) => d,
        Err(e) => return fail(e.to_string()),
    };

    let mem = match GuestMemoryMmap::from_ranges(&[(
        GuestAddress(layout.ram_base),
        layout.ram_size as usize,
    )]) {
        Ok(m) => Arc::new(m),
        Err(e) => return fail(format!("allocating guest RAM: {e}")),
    };
    if let Err(e) = vm::write(&mem, load, &file).and_then(|_| vm::write(&mem, fdt_addr, &dtb)) {
        return fail(e);
    }

    if opts.protected {
        if let Err(e) = private::install() {
            return fail(e.to_string());
        }
    }
    let mut machine = match vm::Machine::create(&opts, &layout, &mem) {
        Ok(m) => m,
        Err(e) => return fail(e.to_string()),
    };

    let probe: Option<Probe> = opts.protected.then(|| {
        let m = mem.clone();
        Box::new(
            move |page: u64| match m.get_host_address(GuestAddress(page)) {
                Ok(host) => private::read_faults(host).is_none(),
                Err(_) => false,
            },
        ) as Probe
    });
    let gate = Arc::new(Gate::new(probe));
    let bus = match build_bus(&layout, &mem, &gate, opts.protected, disk) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let shared = Arc::new(Shared {
        bus: Mutex::new(bus),
        stats: Mutex::new(Stats::default()),
    });

    let (tx, rx) = mpsc::channel();
    let vcpus = match machine.boot_vcpus(load, fdt_addr) {
        Ok(v) => v,
        Err(e) => return fail(e.to_string()),
    };
    for (id, fd) in vcpus.into_iter().enumerate() {
        let tx = tx.clone();
        let shared = shared.clone();
        let policy = opts.nisv;
        let spawned = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                let stop = vcpu::run_loop(id, fd, &shared, policy);
                // The receiver outlives every vCPU thread unless main already exited.
                let _ = tx.send((id, stop));
            });
        if let Err(e) = spawned {
            return fail(format!("starting the thread of vCPU {id}: {e}"));
        }
    }
    drop(tx);

    let (id, stop) = rx
        .recv()
        .unwrap_or((0, Stop::Failed("every vCPU thread ended".into())));
    let took = start.elapsed().as_millis();
    let mut code = match &stop {
        Stop::PoweredOff => {
            eprintln!("vmm: guest powered off");
            status::POWERED_OFF
        }
        Stop::Reset => {
            eprintln!("vmm: guest reset");
            status::RESET
        }
        Stop::Failed(why) => {
            eprintln!("vmm: vCPU {id}: {why}");
            status::FAILED
        }
        Stop::Unemulated(why) => {
            eprintln!("vmm: {why}");
            status::UNEMULATED
        }
    };
    {
        let stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!("{stats}");
        if let Some(l) = stats.unclaimed_line() {
            eprintln!("{l}");
        }
        if let Some(l) = stats.nisv_line() {
            eprintln!("{l}");
        }
    }
    eprintln!("vmm: run took {took} ms");
    if opts.protected {
        let proof = prove_private(&mem, &gate, load);
        if code == status::POWERED_OFF && !proof {
            code = status::NOT_PRIVATE;
        } else if !proof {
            eprintln!("vmm: the private-memory proof failed too (exit status {code} kept)");
        }
    }
    // The VM (and the vCPU threads blocked in KVM_RUN) end with the process.
    drop(machine);
    code
}

fn fail(why: String) -> i32 {
    eprintln!("ioguard-vmm: {why}");
    status::FAILED
}

fn build_bus(
    layout: &Layout,
    mem: &Arc<GuestMemoryMmap>,
    gate: &Arc<Gate>,
    protected: bool,
    disk: Option<Box<dyn Disk>>,
) -> Result<Bus, String> {
    let mut bus = Bus::default();
    let uart: Box<dyn MmioDevice> = match layout.uart_kind {
        UartKind::Pl011 => Box::new(Pl011::new(std::io::stdout())),
        UartKind::Ns16550a => Box::new(Uart16550::new(std::io::stdout())),
    };
    let rtc: Box<dyn MmioDevice> = match layout.rtc_kind {
        RtcKind::Pl031 => Box::new(Pl031::new()),
        RtcKind::Pl030 => Box::new(Pl030::new(pl030::host_seconds)),
    };
    let overlap =
        |o: crate::devices::bus::Overlap| format!("device windows overlap at {:#x}", o.base);
    bus.add(layout.uart.base, layout.uart.size, DeviceKind::Uart, uart)
        .map_err(overlap)?;
    bus.add(layout.rtc.base, layout.rtc.size, DeviceKind::Rtc, rtc)
        .map_err(overlap)?;
    let Some(disk) = disk else {
        return Ok(bus);
    };
    let devices: [Box<dyn VirtioDevice>; 3] = [
        Box::new(Blk::new(disk)),
        Box::new(Rng::new(host_entropy)),
        Box::new(Console::new(std::io::stdout())),
    ];
    let dma = || Dma {
        mem: mem.clone(),
        gate: gate.clone(),
    };
    if let Some(pci) = &layout.pci {
        let mut b = PciBus::default();
        b.add(0, Box::new(HostBridge::new()));
        for (dev, slot) in devices.into_iter().zip(&pci.functions) {
            let bar0 = u32::try_from(slot.bar0.base)
                .map_err(|_| format!("BAR0 {:#x} is not below 4 GiB", slot.bar0.base))?;
            let f = VirtioPci::new(dev, dma(), slot.device, bar0, protected)
                .map_err(|e| e.to_string())?;
            if !b.add(slot.device, Box::new(f)) {
                return Err(format!("PCI device {} taken twice", slot.device));
            }
        }
        // Each BAR's window where its function says it is.
        let bars: Vec<(u8, (u64, u64))> = pci
            .functions
            .iter()
            .filter_map(|s| Some((s.device, b.bar0(s.device)?)))
            .collect();
        let shared: SharedBus = Arc::new(Mutex::new(b));
        bus.add(
            pci.cam_base,
            pci.cam_size,
            DeviceKind::PciConfig,
            Box::new(CamWindow(shared.clone())),
        )
        .map_err(overlap)?;
        for (device, (base, size)) in bars {
            let w = BarWindow {
                bus: shared.clone(),
                device,
            };
            bus.add(base, size, DeviceKind::Virtio, Box::new(w))
                .map_err(overlap)?;
        }
        return Ok(bus);
    }
    // QEMU maps `-device` options in command-line order to decreasing slot addresses
    // (hw/arm/virt.c `create_virtio_devices`: qbus_realize() prepends each new bus), so its
    // first device sits in the last slot: blk in slot 31, rng in 30, console in 29.
    let empty = std::iter::repeat_with(|| Box::new(Empty) as Box<dyn VirtioDevice>);
    for (dev, w) in devices
        .into_iter()
        .chain(empty)
        .zip(layout.virtio.iter().rev())
    {
        let t = MmioTransport::new(dev, dma(), w.base, protected);
        bus.add(w.base, w.size, DeviceKind::Virtio, Box::new(t))
            .map_err(overlap)?;
    }
    Ok(bus)
}

/// After a protected guest stopped: one page it shared must be readable, one it never
/// shared (the image's first page) must not. Returns whether both held.
fn prove_private(mem: &GuestMemoryMmap, gate: &Gate, load: u64) -> bool {
    let read = |ipa: u64| {
        let host = mem.get_host_address(GuestAddress(ipa)).ok()?;
        Some(match private::read_faults(host) {
            None => Ok(()),
            Some(sig) => Err(private::signal_name(sig)),
        })
    };
    let (lines, ok) = proof::judge(&gate.pages_recent_first(), load & !(PAGE - 1), read);
    for l in lines {
        eprintln!("{l}");
    }
    ok
}
