use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::panic::PanicInfo;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use hypmodel::fdt::{self, Fdt};
use hypmodel::pci::PciHost;

// QEMU virt devices (hw/arm/virt.c).
const UART: u64 = 0x0900_0000; // PL011: data register at 0
const UART_FR: u64 = 0x18;
/// UART_FR.TXFF: the transmit FIFO is full.
const UART_FR_TXFF: u64 = 1 << 5;
const RTC: u64 = 0x0901_0000; // PL031
/// PL031 registers: the match register (read/write), PeriphID0 (reads 0x31), PCellID3 (0xb1).
const PL031_MR: u64 = 0x004;
const PL031_PERIPH_ID0: u64 = 0xfe0;
const PL031_PCELL_ID3: u64 = 0xffc;
const GPIO: u64 = 0x0903_0000; // PL061
const VIRTIO: u64 = 0x0a00_0000; // 32 virtio-mmio slots; magic "virt" at offset 0
const VIRTIO_SLOT: u64 = 0x200;
const VIRTIO_SLOTS: u64 = 32;
/// virtio-mmio registers (legacy layout, QEMU's default) and values.
const VIRTIO_MAGIC: u64 = 0x7472_6976;
const VIRTIO_ID_RNG: u64 = 4;
const VM_VERSION: u64 = 0x004;
const VM_DEVICE_ID: u64 = 0x008;
const VM_GUEST_FEATURES: u64 = 0x020;
const VM_GUEST_PAGE_SIZE: u64 = 0x028;
const VM_QUEUE_SEL: u64 = 0x030;
const VM_QUEUE_NUM_MAX: u64 = 0x034;
const VM_QUEUE_NUM: u64 = 0x038;
const VM_QUEUE_ALIGN: u64 = 0x03c;
const VM_QUEUE_PFN: u64 = 0x040;
const VM_QUEUE_NOTIFY: u64 = 0x050;
const VM_STATUS: u64 = 0x070;
/// Status: ACKNOWLEDGE | DRIVER, then DRIVER_OK.
const VM_STATUS_DRIVER: u64 = 1 | 2;
const VM_STATUS_DRIVER_OK: u64 = 4;
/// Descriptor flag: the device writes the buffer.
const VRING_DESC_F_WRITE: u16 = 2;
/// Entries in the test guest's queue.
const VQ_SIZE: u64 = 8;

// ABI numbers, written here once more for the test guest.
const KVM_FEATURES: u32 = 0x8600_0000;
const CALL_UID: u32 = 0x8600_ff01;
const SMCCC_VERSION: u32 = 0x8000_0000;
const PKVM: u32 = 0xc600_0000;
const MEMINFO: u32 = PKVM | 2;
const SHARE: u32 = PKVM | 3;
const UNSHARE: u32 = PKVM | 4;
const GUARD_INFO: u32 = PKVM | 5;
const ENROLL: u32 = PKVM | 6;
const MAP: u32 = PKVM | 7;
const UNMAP: u32 = PKVM | 8;
const RMAP: u32 = PKVM | 10;
const CPU_ON: u32 = 0xc400_0003;
const CPU_OFF: u32 = 0x8400_0002;
const AFFINITY_INFO: u32 = 0xc400_0004;
const SYSTEM_OFF: u32 = 0x8400_0008;

const SENTINEL: u64 = 0xdead_beef_dead_beef;
const MAX_CPUS: usize = 8;
/// One 16 KiB stack per CPU (linker.ld reserves `MAX_CPUS` of them); the boot CPU uses the
/// first, a secondary with context id i the one at `(i % MAX_CPUS) + 1`.
const STACK_SHIFT: u32 = 14;
/// CPACR_EL1.FPEN = 0b11: FP/SIMD does not trap (Rust code uses the registers for copies).
const CPACR_FPEN: u64 = 3 << 20;

/// The last exception a CPU took, written by `tg_exc` (offsets there) and read here.
#[repr(C)]
#[derive(Clone, Copy)]
struct FaultRecord {
    esr: u64,
    far: u64,
    elr: u64,
    /// Vector slot (0..16).
    slot: u64,
    /// Exceptions taken so far: a probe faulted when this moved.
    count: u64,
    _pad: [u64; 3],
}
/// `tg_exc` indexes the records with MPIDR_EL1.Aff0 & 0xf.
const FAULT_RECORDS: usize = 16;
// `tg_exc` finds a CPU's record at `index << 6` and its fields at 0, 8, 16, 24, 32.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<FaultRecord>() == 1 << 6);
    assert!(offset_of!(FaultRecord, esr) == 0);
    assert!(offset_of!(FaultRecord, far) == 8);
    assert!(offset_of!(FaultRecord, elr) == 16);
    assert!(offset_of!(FaultRecord, slot) == 24);
    assert!(offset_of!(FaultRecord, count) == 32);
};

/// Written by the vector code only (assembly), so it stays a `static mut`: Rust reads it
/// with volatile loads of the current CPU's own record.
#[no_mangle]
static mut TG_FAULTS: [FaultRecord; FAULT_RECORDS] = [FaultRecord {
    esr: 0,
    far: 0,
    elr: 0,
    slot: 0,
    count: 0,
    _pad: [0; 3],
}; FAULT_RECORDS];

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b tg_entry
    .long 0
    .quad 0                 // text_offset
    .quad __image_size      // image_size
    .quad 0x2               // flags: little-endian, 4 KiB pages
    .quad 0, 0, 0
    .ascii "ARM\x64"
    .long 0

tg_entry:
    mov x19, x0
    mov x1, #{cpacr}
    msr cpacr_el1, x1
    adrp x1, tg_vectors
    add x1, x1, :lo12:tg_vectors
    msr vbar_el1, x1
    isb
    adrp x1, __bss_start
    add x1, x1, :lo12:__bss_start
    adrp x2, __bss_end
    add x2, x2, :lo12:__bss_end
1:  cmp x1, x2
    b.hs 2f
    stp xzr, xzr, [x1], #16
    b 1b
2:  adrp x1, __stacks_start
    add x1, x1, :lo12:__stacks_start
    add x1, x1, #(1 << {stack_shift})
    mov sp, x1
    mov x0, x19
    bl tg_main
3:  b 3b

    .global tg_secondary
tg_secondary:
    mov x19, x0
    mov x1, #{cpacr}
    msr cpacr_el1, x1
    adrp x1, tg_vectors
    add x1, x1, :lo12:tg_vectors
    msr vbar_el1, x1
    isb
    and x2, x0, #({max_cpus} - 1)
    add x2, x2, #1
    adrp x1, __stacks_start
    add x1, x1, :lo12:__stacks_start
    add x1, x1, x2, lsl #{stack_shift}
    mov sp, x1
    mov x0, x19
    bl tg_secondary_main
4:  b 4b

    .macro TG_VEC slot
    .balign 0x80
    stp x0, x1, [sp, #-16]!
    mov x0, #\slot
    b tg_exc
    .endm

    .text
    .balign 0x800
tg_vectors:
    .irp s,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    TG_VEC \s
    .endr

    // Record the exception and step over the instruction.
tg_exc:
    stp x2, x3, [sp, #-16]!
    mrs x1, mpidr_el1
    and x1, x1, #0xf
    adrp x2, TG_FAULTS
    add x2, x2, :lo12:TG_FAULTS
    add x2, x2, x1, lsl #6
    mrs x3, esr_el1
    str x3, [x2]
    mrs x3, far_el1
    str x3, [x2, #8]
    mrs x3, elr_el1
    str x3, [x2, #16]
    str x0, [x2, #24]
    ldr x3, [x2, #32]
    add x3, x3, #1
    str x3, [x2, #32]
    mrs x3, elr_el1
    add x3, x3, #4
    msr elr_el1, x3
    ldp x2, x3, [sp], #16
    ldp x0, x1, [sp], #16
    eret

    // Probes: each access instruction has a label; the destination starts as a sentinel.
    .global tg_read32, tg_read32_insn, tg_read8, tg_read8_insn, tg_read_sx8, tg_read_sx8_insn
    .global tg_read64, tg_read64_insn, tg_write32, tg_write32_insn, tg_ldp, tg_ldp_insn
    .global tg_read16, tg_read16_insn, tg_write16, tg_write16_insn, tg_write8, tg_write8_insn
    .macro SENT r
    movz \r, #0xbeef
    movk \r, #0xdead, lsl #16
    movk \r, #0xbeef, lsl #32
    movk \r, #0xdead, lsl #48
    .endm
tg_read32:
    SENT x9
tg_read32_insn:
    ldr w9, [x0]
    mov x0, x9
    ret
tg_read8:
    SENT x9
tg_read8_insn:
    ldrb w9, [x0]
    mov x0, x9
    ret
tg_read_sx8:
    SENT x9
tg_read_sx8_insn:
    ldrsb x9, [x0]
    mov x0, x9
    ret
tg_read64:
    SENT x9
tg_read64_insn:
    ldr x9, [x0]
    mov x0, x9
    ret
tg_write32:
tg_write32_insn:
    str w1, [x0]
    ret
tg_read16:
    SENT x9
tg_read16_insn:
    ldrh w9, [x0]
    mov x0, x9
    ret
tg_write16:
tg_write16_insn:
    strh w1, [x0]
    ret
tg_write8:
tg_write8_insn:
    strb w1, [x0]
    ret
tg_ldp:
    SENT x9
    SENT x10
tg_ldp_insn:
    ldp w9, w10, [x0]
    mov x0, x9
    mov x1, x10
    ret
"#,
    cpacr = const CPACR_FPEN,
    stack_shift = const STACK_SHIFT,
    max_cpus = const MAX_CPUS,
);

/// `tg_ldp` returns the two loaded words in x0/x1: AAPCS64's 16-byte composite return.
#[repr(C)]
struct Pair(u64, u64);
const _: () = assert!(core::mem::size_of::<Pair>() == 16);

extern "C" {
    fn tg_secondary();
    fn tg_read32(a: u64) -> u64;
    fn tg_read8(a: u64) -> u64;
    fn tg_read_sx8(a: u64) -> u64;
    fn tg_read64(a: u64) -> u64;
    fn tg_write32(a: u64, v: u64);
    fn tg_read16(a: u64) -> u64;
    fn tg_write16(a: u64, v: u64);
    fn tg_write8(a: u64, v: u64);
    fn tg_ldp(a: u64) -> Pair;
    static tg_read32_insn: u8;
    static tg_read8_insn: u8;
    static tg_read_sx8_insn: u8;
    static tg_read64_insn: u8;
    static tg_write32_insn: u8;
    static tg_read16_insn: u8;
    static tg_write16_insn: u8;
    static tg_write8_insn: u8;
    static tg_ldp_insn: u8;
}

fn cpu() -> usize {
    let m: u64;
    // SAFETY: reading MPIDR_EL1 has no side effect.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) m, options(nomem, nostack)) };
    (m & 0xf) as usize
}

fn fault_record(c: usize) -> FaultRecord {
    // SAFETY: the record is written by this CPU's exception vector only.
    unsafe { read_volatile(addr_of!(TG_FAULTS[c])) }
}

#[derive(Clone, Copy)]
struct Probe {
    value: u64,
    value2: u64,
    fault: bool,
    esr: u64,
    far: u64,
    /// ELR pointed at the access instruction.
    elr_ok: bool,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fault {
            write!(
                f,
                "fault=1 esr={:#x} far={:#x} elr_ok={} dest_kept={}",
                self.esr,
                self.far,
                u8::from(self.elr_ok),
                u8::from(self.value == SENTINEL)
            )
        } else {
            write!(f, "fault=0 value={:#x}", self.value)
        }
    }
}

/// Accesses made (not counting the console's), per CPU: [ok, faulted].
static mut ACCESSES: [[u64; 2]; MAX_CPUS] = [[0; 2]; MAX_CPUS];

fn probe(insn: *const u8, f: impl FnOnce() -> (u64, u64), count: bool) -> Probe {
    let c = cpu();
    let before = fault_record(c).count;
    let (value, value2) = f();
    let r = fault_record(c);
    let fault = r.count != before;
    if count {
        // SAFETY: each CPU writes only its own row.
        unsafe {
            let a = &mut (*addr_of_mut!(ACCESSES))[c % MAX_CPUS];
            a[usize::from(fault)] += 1;
        }
    }
    Probe {
        value,
        value2,
        fault,
        esr: r.esr,
        far: r.far,
        elr_ok: r.elr == insn as u64,
    }
}

fn read32(a: u64) -> Probe {
    probe(
        addr_of!(tg_read32_insn),
        || {
            // SAFETY: a single aligned load; an abort is taken by tg_exc and stepped over.
            (unsafe { tg_read32(a) }, 0)
        },
        true,
    )
}
fn read8(a: u64) -> Probe {
    probe(
        addr_of!(tg_read8_insn),
        || {
            // SAFETY: as read32.
            (unsafe { tg_read8(a) }, 0)
        },
        true,
    )
}
fn read_sx8(a: u64) -> Probe {
    probe(
        addr_of!(tg_read_sx8_insn),
        || {
            // SAFETY: as read32.
            (unsafe { tg_read_sx8(a) }, 0)
        },
        true,
    )
}
fn read64(a: u64) -> Probe {
    probe(
        addr_of!(tg_read64_insn),
        || {
            // SAFETY: as read32.
            (unsafe { tg_read64(a) }, 0)
        },
        true,
    )
}
fn write32(a: u64, v: u64) -> Probe {
    probe(
        addr_of!(tg_write32_insn),
        || {
            // SAFETY: as read32, for a store.
            unsafe { tg_write32(a, v) };
            (SENTINEL, 0)
        },
        true,
    )
}
fn read16(a: u64) -> Probe {
    probe(
        addr_of!(tg_read16_insn),
        || {
            // SAFETY: as read32, for a halfword.
            (unsafe { tg_read16(a) }, 0)
        },
        true,
    )
}
fn write16(a: u64, v: u64) -> Probe {
    probe(
        addr_of!(tg_write16_insn),
        || {
            // SAFETY: as write32, for a halfword.
            unsafe { tg_write16(a, v) };
            (SENTINEL, 0)
        },
        true,
    )
}
fn write8(a: u64, v: u64) -> Probe {
    probe(
        addr_of!(tg_write8_insn),
        || {
            // SAFETY: as write32, for a byte.
            unsafe { tg_write8(a, v) };
            (SENTINEL, 0)
        },
        true,
    )
}
fn ldp(a: u64) -> Probe {
    probe(
        addr_of!(tg_ldp_insn),
        || {
            // SAFETY: as read32, for a load pair (no valid syndrome).
            let p = unsafe { tg_ldp(a) };
            (p.0, p.1)
        },
        true,
    )
}

// ---- console ----

fn putc(c: u8) {
    for _ in 0..100_000 {
        let fr = probe(
            addr_of!(tg_read32_insn),
            || {
                // SAFETY: a single aligned load of the PL011 flag register, probed.
                (unsafe { tg_read32(UART + UART_FR) }, 0)
            },
            false,
        );
        if fr.fault {
            return;
        }
        if fr.value & UART_FR_TXFF == 0 {
            break;
        }
    }
    probe(
        addr_of!(tg_write32_insn),
        || {
            // SAFETY: as above, for the data register.
            unsafe { tg_write32(UART, u64::from(c)) };
            (0, 0)
        },
        false,
    );
}

struct Console;
impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(putc);
        Ok(())
    }
}

macro_rules! say {
    ($($a:tt)*) => {{ let _ = writeln!(Console, $($a)*); }};
}

// ---- hypercalls ----

static mut CALLS: [u64; 16] = [0; 16];

fn hvc(fid: u32, a1: u64, a2: u64, a3: u64) -> [u64; 4] {
    if fid & 0xffff_0000 == PKVM {
        // SAFETY: boot CPU only makes vendor calls.
        unsafe { (*addr_of_mut!(CALLS))[(fid & 0xf) as usize] += 1 };
    }
    let mut r = [u64::from(fid), a1, a2, a3];
    // SAFETY: SMCCC call through the conduit the tree names (hvc); x4..x17 may be clobbered.
    unsafe {
        asm!("hvc #0",
            inout("x0") r[0], inout("x1") r[1], inout("x2") r[2], inout("x3") r[3],
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
            out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _, options(nostack));
    }
    r
}

fn calls(func: u32) -> u64 {
    // SAFETY: read on the boot CPU, which alone writes it.
    unsafe { (*addr_of!(CALLS))[func as usize] }
}

fn counter() -> (u64, u64) {
    let (c, f): (u64, u64);
    // SAFETY: reading the generic timer (CNTHCTL_EL2 lets EL1 do so).
    unsafe {
        asm!("mrs {}, cntpct_el0", out(reg) c, options(nomem, nostack));
        asm!("mrs {}, cntfrq_el0", out(reg) f, options(nomem, nostack));
    }
    (c, f.max(1))
}

// ---- secondaries ----

#[derive(Clone, Copy)]
struct CpuResult {
    rtc: Probe,
    stray: Probe,
}

static mut RESULTS: [Option<CpuResult>; MAX_CPUS] = [None; MAX_CPUS];
/// Set by a secondary after its result is complete (a barrier orders the two).
static mut DONE: [u64; MAX_CPUS] = [0; MAX_CPUS];

#[no_mangle]
extern "C" fn tg_secondary_main(idx: u64) -> ! {
    let i = (idx as usize) % MAX_CPUS;
    let rtc = read32(RTC + PL031_PERIPH_ID0);
    let stray = read32(GPIO);
    // SAFETY: each secondary writes only its own slot; the boot CPU reads it after `done`.
    unsafe {
        write_volatile(addr_of_mut!(RESULTS[i]), Some(CpuResult { rtc, stray }));
        asm!("dmb ish", options(nostack));
        write_volatile(addr_of_mut!(DONE[i]), 1);
    }
    hvc(CPU_OFF, 0, 0, 0);
    loop {
        core::hint::spin_loop();
    }
}

#[repr(C, align(65536))]
struct SharePage([u8; 65536]);
static mut SHARE_PAGE: SharePage = SharePage([0; 65536]);

fn ret(v: u64) -> i64 {
    v as i64
}

#[no_mangle]
extern "C" fn tg_main(dtb: u64) -> ! {
    let granule = discover(dtb);
    let Some(t) = read_tree(dtb) else {
        say!("TG: dt bad");
        finish()
    };
    if t.virtio {
        virtio_rng(granule);
        finish()
    }
    if t.virtio_pci {
        match t.pci {
            Some(h) => virtio_rng_pci(granule, &h),
            None => say!("TG: virtio-pci no-host"),
        }
        finish()
    }
    stray_then_registered();
    let ram_page = addr_of!(SHARE_PAGE) as u64;
    map_edges(granule, ram_page, t.hole);
    other_cpus(&t);
    unmap();
    memshare(granule, ram_page, t.hole);
    finish()
}

/// Discovery, one probe before enrolling, enrolment and the console's MAP come before any
/// output (so that the console is registered when the first line goes out); then their
/// results. Returns the granule (4 KiB when HYP_MEMINFO's answer is not one).
fn discover(dtb: u64) -> u64 {
    let feats = hvc(KVM_FEATURES, 0, 0, 0);
    let uid = hvc(CALL_UID, 0, 0, 0);
    let pre = read32(RTC + PL031_PERIPH_ID0);
    let enroll = hvc(ENROLL, 0, 0, 0)[0];
    let meminfo = hvc(MEMINFO, 0, 0, 0);
    let granule = if (4096..=65536).contains(&meminfo[0]) && meminfo[0].is_power_of_two() {
        meminfo[0]
    } else {
        4096
    };
    let uart_map = hvc(MAP, UART & !(granule - 1), 0, 0)[0];

    let el: u64;
    // SAFETY: reading CurrentEL has no side effect.
    unsafe { asm!("mrs {}, currentel", out(reg) el, options(nomem, nostack)) };
    say!("TG: start el={} dtb={:#x}", (el >> 2) & 3, dtb);
    say!(
        "TG: features={:#x} uid={:#x},{:#x},{:#x},{:#x} smccc_version={:#x}",
        feats[0],
        uid[0],
        uid[1],
        uid[2],
        uid[3],
        hvc(SMCCC_VERSION, 0, 0, 0)[0]
    );
    say!(
        "TG: meminfo={:#x} x1={} info={:#x} granule={}",
        meminfo[0],
        meminfo[1],
        hvc(GUARD_INFO, 0, 0, 0)[0],
        granule
    );
    say!("TG: pre-enroll-read {}", pre);
    say!("TG: enroll={} uart-map={}", ret(enroll), ret(uart_map));
    say!("TG: meminfo-args={}", ret(hvc(MEMINFO, 1, 0, 0)[0]));
    granule
}

/// What the tree hypmodel gave says.
struct GuestTree {
    mpidrs: [u64; MAX_CPUS],
    ncpus: usize,
    /// hypmodel's memory: the gap between the first two memory ranges ((0, 0) if none).
    hole: (u64, u64),
    /// The command line has the word `virtio` (`virtio-pci`): drive a virtio-rng on
    /// virtio-mmio (virtio-pci) instead of the sequence.
    virtio: bool,
    virtio_pci: bool,
    /// The PCI host bridge, for `virtio-pci`.
    pci: Option<PciHost>,
}

fn has_word(tree: &Fdt<'_>, w: &str) -> bool {
    tree.prop_str("/chosen", "bootargs")
        .is_some_and(|a| a.split_ascii_whitespace().any(|x| x == w))
}

/// Reads (and prints) the tree at `dtb`.
fn read_tree(dtb: u64) -> Option<GuestTree> {
    // SAFETY: x0 at entry is the tree's address, in our RAM; the header bounds it.
    let tree = unsafe {
        let hdr = core::slice::from_raw_parts(dtb as *const u8, fdt::HEADER_SIZE);
        let n = fdt::total_size(hdr).unwrap_or(fdt::HEADER_SIZE);
        Fdt::new(core::slice::from_raw_parts(dtb as *const u8, n))
    };
    let tree = tree.ok()?;
    let mut ranges = [(0u64, 0u64); 8];
    let mut n = 0;
    let _ = tree.for_each_memory(|b, s| {
        if n < ranges.len() {
            ranges[n] = (b, s);
            n += 1;
        }
    });
    let mut t = GuestTree {
        mpidrs: [0; MAX_CPUS],
        ncpus: 0,
        hole: (0, 0),
        virtio: has_word(&tree, "virtio"),
        virtio_pci: has_word(&tree, "virtio-pci"),
        pci: None,
    };
    let _ = tree.for_each_compatible("pci-host-ecam-generic", |n| {
        t.pci = t.pci.or_else(|| PciHost::from_node(n));
    });
    let _ = tree.for_each_cpu(|m| {
        if t.ncpus < MAX_CPUS {
            t.mpidrs[t.ncpus] = m;
            t.ncpus += 1;
        }
    });
    let _ = write!(
        Console,
        "TG: dt psci-method={} bootargs=[{}] cpus={} memory=",
        tree.prop_str("/psci", "method").unwrap_or("?"),
        tree.prop_str("/chosen", "bootargs").unwrap_or("?"),
        t.ncpus
    );
    for (i, (b, s)) in ranges[..n].iter().enumerate() {
        let _ = write!(Console, "{}{b:#x}+{s:#x}", if i > 0 { "," } else { "" });
    }
    say!("");
    if n >= 2 {
        let end0 = ranges[0].0 + ranges[0].1;
        t.hole = (end0, ranges[1].0 - end0);
    }
    Some(t)
}

/// The PL031 unregistered (refused), then registered: forwarded, every access size.
fn stray_then_registered() {
    say!("TG: stray-read {}", read32(RTC + PL031_PERIPH_ID0));
    say!("TG: stray-write {}", write32(RTC + PL031_MR, 0x1234));
    say!("TG: map-rtc={}", ret(hvc(MAP, RTC, 0, 0)[0]));
    say!("TG: registered-read {}", read32(RTC + PL031_PERIPH_ID0));
    let mr = read32(RTC + PL031_MR);
    say!(
        "TG: stray-write-arrived={} ({})",
        u8::from(!mr.fault && mr.value == 0x1234),
        mr
    );
    let w = write32(RTC + PL031_MR, 0x5678);
    say!(
        "TG: registered-write {} readback {}",
        w,
        read32(RTC + PL031_MR)
    );
    say!("TG: read8 {}", read8(RTC + PL031_PERIPH_ID0));
    say!("TG: read-sx8 {}", read_sx8(RTC + PL031_PCELL_ID3));
    say!("TG: read64 {}", read64(RTC + PL031_PERIPH_ID0));
    let p = ldp(RTC + PL031_PERIPH_ID0);
    say!("TG: ldp {} value2={:#x}", p, p.value2);
}

/// Where one MAP's registration ends, and what MAP refuses: a misaligned address, RAM, an
/// IPA beyond the IPA size, hypmodel's memory; then a second ENROLL keeps what was mapped.
fn map_edges(granule: u64, ram_page: u64, hole: (u64, u64)) {
    // The granule: its last virtio slot is forwarded, the next granule is not.
    say!("TG: map-virtio={}", ret(hvc(MAP, VIRTIO, 0, 0)[0]));
    let last = VIRTIO + granule.min(0x4000) - VIRTIO_SLOT;
    say!("TG: granule-last {:#x} {}", last, read32(last));
    say!(
        "TG: neighbour {:#x} {}",
        VIRTIO + granule,
        read32(VIRTIO + granule)
    );
    say!(
        "TG: map-misaligned={} then {}",
        ret(hvc(MAP, GPIO + 0x100, 0, 0)[0]),
        read32(GPIO)
    );
    say!("TG: map-ram={}", ret(hvc(MAP, ram_page, 0, 0)[0]));
    say!("TG: map-outside-ipa={}", ret(hvc(MAP, 1 << 52, 0, 0)[0]));
    say!("TG: hole {:#x}+{:#x}", hole.0, hole.1);
    if hole.1 > 0 {
        say!("TG: map-hypmem={}", ret(hvc(MAP, hole.0, 0, 0)[0]));
        say!("TG: hypmem-read {}", read32(hole.0));
        say!("TG: hypmem-read-end {}", read64(hole.0 + hole.1 - 8));
        say!("TG: hypmem-write {}", write32(hole.0 + 0x100, 0));
    }
    say!(
        "TG: enroll-again={} then {}",
        ret(hvc(ENROLL, 0, 0, 0)[0]),
        read32(RTC + PL031_PERIPH_ID0)
    );
}

/// Every other CPU: the registered page is forwarded there too, a stray access aborts there.
/// Then a CPU_ON of an MPIDR that is not in the tree.
fn other_cpus(t: &GuestTree) {
    for (i, &mpidr) in t.mpidrs.iter().enumerate().take(t.ncpus).skip(1) {
        let r = hvc(CPU_ON, mpidr, tg_secondary as *const () as u64, i as u64)[0];
        let (res, off) = if r == 0 {
            await_secondary(i, mpidr)
        } else {
            (None, 0)
        };
        match res {
            Some(c) => say!(
                "TG: cpu{} on={} rtc {} stray {} off={}",
                i,
                ret(r),
                c.rtc,
                c.stray,
                off
            ),
            None => say!("TG: cpu{} on={} no-result", i, ret(r)),
        }
    }
    say!(
        "TG: cpu-on-bad={}",
        ret(hvc(CPU_ON, 0xff, tg_secondary as *const () as u64, 0)[0])
    );
}

/// Waits (2 s) for CPU `i`'s result, then (until 4 s) for AFFINITY_INFO to say it is off.
fn await_secondary(i: usize, mpidr: u64) -> (Option<CpuResult>, u64) {
    let (t0, f) = counter();
    let mut res = None;
    while counter().0 - t0 < 2 * f {
        // SAFETY: written by CPU i once, before DONE[i]; read here after it.
        if unsafe { read_volatile(addr_of!(DONE[i])) } != 0 {
            // SAFETY: as above; the barrier orders the result before the flag.
            res = unsafe {
                asm!("dmb ish", options(nostack));
                read_volatile(addr_of!(RESULTS[i]))
            };
            break;
        }
    }
    let mut off = 0;
    while counter().0 - t0 < 4 * f {
        off = hvc(AFFINITY_INFO, mpidr, 0, 0)[0];
        if off == 1 {
            break;
        }
    }
    (res, off)
}

/// UNMAP: the page is refused again (android14), stays forwarded (android16); then the
/// range MAP (android16 only).
fn unmap() {
    let u1 = hvc(UNMAP, RTC, 0, 0)[0];
    let after = read32(RTC + PL031_PERIPH_ID0);
    let u2 = hvc(UNMAP, RTC, 0, 0)[0];
    say!(
        "TG: unmap={} after-unmap {} unmap-again={}",
        ret(u1),
        after,
        ret(u2)
    );
    let r = hvc(RMAP, GPIO, 2, 0);
    say!("TG: rguard-map={} pages={}", ret(r[0]), r[1]);
}

/// MEM_SHARE/UNSHARE: the state machine of one page, what is refused, the count argument.
fn memshare(granule: u64, ram_page: u64, hole: (u64, u64)) {
    let s = [
        hvc(SHARE, ram_page, 0, 0)[0],
        hvc(SHARE, ram_page, 0, 0)[0],
        hvc(UNSHARE, ram_page, 0, 0)[0],
        hvc(UNSHARE, ram_page, 0, 0)[0],
        hvc(SHARE, RTC, 0, 0)[0],
        hvc(SHARE, ram_page + 8, 0, 0)[0],
        hvc(SHARE, hole.0, 0, 0)[0],
    ];
    say!("TG: memshare share={} share-twice={} unshare={} unshare-twice={} share-mmio={} misaligned={} hypmem={}",
         ret(s[0]), ret(s[1]), ret(s[2]), ret(s[3]), ret(s[4]), ret(s[5]), ret(s[6]));
    let r = hvc(SHARE, ram_page + granule, 1, 0);
    if r[0] == 0 {
        hvc(UNSHARE, ram_page + granule, 0, 0);
    }
    say!("TG: memshare x2=1 -> {} x1={}", ret(r[0]), r[1]);
    say!("TG: memshare final={}", ret(hvc(SHARE, ram_page, 0, 0)[0]));
}

/// The queue (descriptors and avail ring in its first page, used ring in its second),
/// a buffer the guest shares, and one it keeps private: each in its own 64 KiB, so that
/// every granule size keeps them apart.
#[repr(C, align(65536))]
struct VirtioArea([u8; 3 * 65536]);
static mut VIRTIO_AREA: VirtioArea = VirtioArea([0; 3 * 65536]);

/// A legacy virtio-rng (`-device virtio-rng-device`), driven as a protected guest must:
/// the queue and the first buffer shared (MEM_SHARE), then two requests of 16 bytes, one
/// into the shared buffer, one into a private buffer (which hypmodel must refuse).
fn virtio_rng(granule: u64) {
    let end = VIRTIO + VIRTIO_SLOTS * VIRTIO_SLOT;
    for g in (VIRTIO..end).step_by(granule as usize) {
        hvc(MAP, g & !(granule - 1), 0, 0);
    }
    let rng = (0..VIRTIO_SLOTS)
        .map(|i| VIRTIO + i * VIRTIO_SLOT)
        .find(|&b| {
            read32(b).value == VIRTIO_MAGIC && read32(b + VM_DEVICE_ID).value == VIRTIO_ID_RNG
        });
    let Some(dev) = rng else {
        say!("TG: virtio no-rng");
        return;
    };
    let version = read32(dev + VM_VERSION).value;
    say!("TG: virtio rng={dev:#x} version={version}");
    if version != 1 {
        return;
    }
    let (ring, shares) = share_queue(granule);
    let num = read32(dev + VM_QUEUE_NUM_MAX).value.min(VQ_SIZE);
    for (reg, v) in [
        (VM_STATUS, 0),
        (VM_STATUS, VM_STATUS_DRIVER),
        (VM_GUEST_FEATURES, 0),
        (VM_GUEST_PAGE_SIZE, 4096),
        (VM_QUEUE_SEL, 0),
        (VM_QUEUE_NUM, num),
        (VM_QUEUE_ALIGN, 4096),
        (VM_QUEUE_PFN, ring >> 12),
        (VM_STATUS, VM_STATUS_DRIVER | VM_STATUS_DRIVER_OK),
    ] {
        write32(dev + reg, v);
    }
    say!("TG: virtio shares={shares} num={num}");
    two_requests("virtio", ring, num, || write32(dev + VM_QUEUE_NOTIFY, 0));
}

/// The queue area: the queue's two pages and the shared buffer shared, granule by granule.
/// Returns the queue's address and the successful MEM_SHAREs.
fn share_queue(granule: u64) -> (u64, u64) {
    let ring = addr_of_mut!(VIRTIO_AREA) as u64;
    let mut shares = 0;
    for a in (ring..ring + 0x2000).step_by(granule as usize) {
        shares += u64::from(hvc(SHARE, a, 0, 0)[0] == 0);
    }
    shares += u64::from(hvc(SHARE, ring + 0x1_0000, 0, 0)[0] == 0);
    (ring, shares)
}

/// Two requests of 16 bytes on the queue at `ring` (descriptors and avail ring in its
/// first page, used ring in its second): into the shared buffer, then into the private
/// one; `notify` tells the device. Prints what came back of each.
fn two_requests(tag: &str, ring: u64, num: u64, notify: impl Fn() -> Probe) {
    let used = ring + 0x1000;
    let bufs = [("shared", ring + 0x1_0000), ("private", ring + 0x2_0000)];
    for (k, (what, buf)) in bufs.into_iter().enumerate() {
        let k = k as u64;
        let desc = ring + 16 * k;
        let avail = ring + 16 * num;
        // SAFETY: the queue is this guest's own static memory (MMU off: every access
        // aligned, Device memory); the device reads it only after the notify below.
        unsafe {
            write_volatile(desc as *mut u64, buf);
            write_volatile((desc + 8) as *mut u32, 16);
            write_volatile((desc + 12) as *mut u16, VRING_DESC_F_WRITE);
            write_volatile((desc + 14) as *mut u16, 0);
            write_volatile((avail + 4 + 2 * (k % num)) as *mut u16, k as u16);
            asm!("dsb sy", options(nostack));
            write_volatile((avail + 2) as *mut u16, k as u16 + 1);
            asm!("dsb sy", options(nostack));
        }
        let n = notify();
        let (t0, f) = counter();
        let mut idx = 0;
        while counter().0 - t0 < f / 2 {
            // SAFETY: the used ring's idx, written by the device.
            idx = unsafe { read_volatile((used + 2) as *const u16) };
            if u64::from(idx) > k {
                break;
            }
        }
        // SAFETY: the used ring's entry k: {id u32, len u32}.
        let len = unsafe { read_volatile((used + 4 + 8 * k + 4) as *const u32) };
        say!(
            "TG: {tag} {what} buffer={buf:#x} notify-fault={} used={idx} len={len}",
            u8::from(n.fault)
        );
    }
}

/// virtio-pci's capability types and common configuration (virtio 1.x 4.1.4).
const PCI_VENDOR_VIRTIO: u64 = 0x1af4;
const PCI_CAP_COMMON: u64 = 1;
const PCI_CAP_NOTIFY: u64 = 2;
const VPCI_DRIVER_FEATURE_SELECT: u64 = 0x08;
const VPCI_DRIVER_FEATURE: u64 = 0x0c;
const VPCI_DEVICE_STATUS: u64 = 0x14;
const VPCI_QUEUE_SELECT: u64 = 0x16;
const VPCI_QUEUE_SIZE: u64 = 0x18;
const VPCI_QUEUE_ENABLE: u64 = 0x1c;
const VPCI_QUEUE_NOTIFY_OFF: u64 = 0x1e;
const VPCI_QUEUE_DESC: u64 = 0x20;
const VPCI_QUEUE_DRIVER: u64 = 0x28;
const VPCI_QUEUE_DEVICE: u64 = 0x30;
/// FEATURES_OK in the device status.
const VIRTIO_STATUS_FEATURES_OK: u64 = 8;
/// Where the test guest puts the function's BAR 4: 1 MiB into the bridge's first range.
const PCI_BAR_OFFSET: u64 = 0x10_0000;
const PCI_BAR_SIZE: u64 = 0x4000;

/// A modern virtio-rng on PCI (`-device virtio-rng-pci`, QEMU's layout: its structures in
/// BAR 4): the test guest finds it on bus 0, places BAR 4, finds the common configuration
/// and the notification structure, then drives it like the virtio-mmio one.
fn virtio_rng_pci(granule: u64, h: &PciHost) {
    let mut found = None;
    for dev in 0..32u16 {
        let a = h.cfg(dev << 3, 0);
        hvc(MAP, a & !(granule - 1), 0, 0);
        let id = read32(a).value;
        if id & 0xffff == PCI_VENDOR_VIRTIO && matches!(id >> 16, 0x1005 | 0x1044) {
            found = Some(dev << 3);
            break;
        }
    }
    let (Some(bdf), Some(r)) = (found, h.ranges().first()) else {
        say!("TG: virtio-pci no-rng");
        return;
    };
    let cfg = |off: u64| read32(h.cfg(bdf, off)).value;
    let (bar_pci, bar) = (r.pci + PCI_BAR_OFFSET, r.cpu + PCI_BAR_OFFSET);
    write32(h.cfg(bdf, 0x20), bar_pci & 0xffff_fff0);
    write32(h.cfg(bdf, 0x24), bar_pci >> 32);
    // Memory decoding and bus mastering (its DMA).
    write32(h.cfg(bdf, 0x04), (cfg(0x04) & 0xffff) | 0x6);
    let (mut common, mut notify, mut mult) = (None, None, 0);
    let mut at = cfg(0x34) & 0xfc;
    for _ in 0..48 {
        if at < 0x40 {
            break;
        }
        let w = cfg(at);
        if w & 0xff == 0x09 && cfg(at + 4) & 0xff == 4 {
            let off = bar + cfg(at + 8);
            match (w >> 24) & 0xff {
                PCI_CAP_COMMON if common.is_none() => common = Some(off),
                PCI_CAP_NOTIFY if notify.is_none() => {
                    notify = Some(off);
                    mult = cfg(at + 16);
                }
                _ => {}
            }
        }
        at = (w >> 8) & 0xfc;
    }
    let (Some(common), Some(notify)) = (common, notify) else {
        say!("TG: virtio-pci no-structures");
        return;
    };
    for g in (bar..bar + PCI_BAR_SIZE).step_by(granule as usize) {
        hvc(MAP, g & !(granule - 1), 0, 0);
    }
    say!(
        "TG: virtio-pci rng={:02x}:{:02x}.{} id={:#x} bar4={bar:#x}",
        bdf >> 8,
        (bdf >> 3) & 0x1f,
        bdf & 7,
        cfg(0) >> 16
    );
    modern_rng(granule, common, notify, mult);
}

/// The modern initialisation (virtio 1.x 3.1.1) of the function whose common
/// configuration is at `common`, then the two requests.
fn modern_rng(granule: u64, common: u64, notify: u64, mult: u64) {
    write8(common + VPCI_DEVICE_STATUS, 0);
    write8(common + VPCI_DEVICE_STATUS, VM_STATUS_DRIVER);
    // VIRTIO_F_VERSION_1 (bit 32) and nothing else.
    write32(common + VPCI_DRIVER_FEATURE_SELECT, 1);
    write32(common + VPCI_DRIVER_FEATURE, 1);
    write32(common + VPCI_DRIVER_FEATURE_SELECT, 0);
    write32(common + VPCI_DRIVER_FEATURE, 0);
    write8(
        common + VPCI_DEVICE_STATUS,
        VM_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK,
    );
    let (ring, shares) = share_queue(granule);
    write16(common + VPCI_QUEUE_SELECT, 0);
    let num = read16(common + VPCI_QUEUE_SIZE).value.min(VQ_SIZE);
    write16(common + VPCI_QUEUE_SIZE, num);
    for (field, a) in [
        (VPCI_QUEUE_DESC, ring),
        (VPCI_QUEUE_DRIVER, ring + 16 * num),
        (VPCI_QUEUE_DEVICE, ring + 0x1000),
    ] {
        write32(common + field, a & 0xffff_ffff);
        write32(common + field + 4, a >> 32);
    }
    let off = read16(common + VPCI_QUEUE_NOTIFY_OFF).value;
    write16(common + VPCI_QUEUE_ENABLE, 1);
    write8(
        common + VPCI_DEVICE_STATUS,
        VM_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK | VM_STATUS_DRIVER_OK,
    );
    say!(
        "TG: virtio-pci shares={shares} num={num} status={:#x}",
        read32(common + VPCI_DEVICE_STATUS).value & 0xff
    );
    two_requests("virtio-pci", ring, num, || write16(notify + off * mult, 0));
}

fn finish() -> ! {
    // SAFETY: the secondaries are off (or never ran); their rows are final.
    let (ok, faulted) = unsafe {
        (*addr_of!(ACCESSES))
            .iter()
            .fold((0, 0), |a, r| (a.0 + r[0], a.1 + r[1]))
    };
    say!(
        "TG: calls MEMINFO={} SHARE={} UNSHARE={} INFO={} ENROLL={} MAP={} UNMAP={} RMAP={}",
        calls(2),
        calls(3),
        calls(4),
        calls(5),
        calls(6),
        calls(7),
        calls(8),
        calls(10)
    );
    say!("TG: accesses ok={} faulted={}", ok, faulted);
    say!("TG: done");
    hvc(SYSTEM_OFF, 0, 0, 0);
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    say!("TG: panic {}", info);
    hvc(SYSTEM_OFF, 0, 0, 0);
    loop {
        core::hint::spin_loop();
    }
}
