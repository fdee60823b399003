//! The console: the UART named by the device tree, reached only through its ioremapped
//! window; and the `log` backend on top of it.

use crate::cmdline::LogLevel;
use crate::fault::Fault;
use crate::hyp::abi::Ret;
use crate::platform::UartKind;
use core::fmt;
use spin::{Mutex, Once};

use core::sync::atomic::{AtomicBool, Ordering};

use super::probe::{self, Slot, Width};
use super::semihosting;

/// Bounded wait for transmit space: a UART that never drains (or a hypervisor that
/// returns garbage for its status register) is given up, not spun on.
const TX_SPIN_LIMIT: u32 = 100_000;

pub struct Uart {
    base: u64,
    kind: UartKind,
    /// Bytes the transmitter takes after one status read that says it is empty: the FIFO
    /// depth once the FIFO is known to be on (`enable_fifo`), else 1.
    depth: u32,
    /// Bytes that may still be written before the next status read.
    room: u32,
}

/// A test of the status register's value.
type StatusTest = fn(u64) -> bool;

/// The transmit FIFO of a PL011 (r1p4 and earlier; r1p5 has 32) and of a 16550A.
const FIFO_DEPTH: u32 = 16;

/// What went wrong with the UART.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trouble {
    /// An access to its window aborted (a hypervisor that dropped or refused the
    /// console's registration, for instance).
    Aborted(Fault),
    /// The transmitter never became ready: the status register read this every time.
    Stuck { status: u64 },
    /// The window could not be registered at boot: MAP answered this.
    NotRegistered(Result<Ret, Fault>),
    /// What answers at the window is not the UART the tree names (flash, an empty bus):
    /// its identification read this.
    NotAUart { id: u64 },
    /// The virtio-console carrying the suite's lines aborted (its registration dropped,
    /// say): the lines went back to the UART.
    OutputAborted(Fault),
    /// The virtio-console carrying the suite's lines did not take a line: it did not
    /// answer within `ms` (Some), or refused the request (None).
    OutputGivenUp { ms: Option<u64> },
}

impl fmt::Display for Trouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Aborted(fault) => write!(f, "an access to the console's window aborted ({fault})"),
            Self::Stuck { status } => write!(
                f,
                "the UART never became ready to transmit (status {status:#x} for {TX_SPIN_LIMIT} reads)"
            ),
            Self::NotRegistered(Ok(r)) => {
                write!(f, "registering the console's window at boot: MAP answered {r}")
            }
            Self::NotRegistered(Err(fault)) => {
                write!(f, "registering the console's window at boot: MAP aborted ({fault})")
            }
            Self::NotAUart { id } => write!(
                f,
                "the console's window does not answer as the UART the device tree names (identification {id:#x})"
            ),
            Self::OutputAborted(fault) => write!(
                f,
                "an access to the virtio-console carrying the suite's lines aborted ({fault})"
            ),
            Self::OutputGivenUp { ms: Some(ms) } => write!(
                f,
                "the virtio-console carrying the suite's lines did not answer within {ms} ms"
            ),
            Self::OutputGivenUp { ms: None } => write!(
                f,
                "the virtio-console carrying the suite's lines refused a request"
            ),
        }
    }
}

/// What re-registering the console's window did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    /// MAP answered 0 again.
    Registered,
    /// There is no guard to register with.
    NoGuard,
    Refused(Result<Ret, Fault>),
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Registered => write!(f, "re-registered (MAP answered 0)"),
            Self::NoGuard => write!(f, "no guard to re-register with"),
            Self::Refused(Ok(r)) => write!(f, "re-registering failed (MAP answered {r})"),
            Self::Refused(Err(fault)) => write!(f, "re-registering failed (MAP aborted: {fault})"),
        }
    }
}

/// Something that happened to the console during the run: the trouble, the one repair
/// tried, and whether output then went through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incident {
    pub trouble: Trouble,
    pub repair: Option<Repair>,
    pub recovered: bool,
}

impl fmt::Display for Incident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.trouble)?;
        if let Some(r) = self.repair {
            write!(f, "; {r}")?;
        }
        if let Trouble::NotRegistered(_) = self.trouble {
            write!(f, "; the UART is used through a stage-1 mapping alone")
        } else if let Trouble::OutputAborted(_) | Trouble::OutputGivenUp { .. } = self.trouble {
            write!(f, "; the lines went back to the UART")
        } else if self.recovered {
            write!(f, "; output went on through the UART")
        } else {
            write!(f, "; output moved to the semihosting console")
        }
    }
}

/// Incidents kept for the `guard: console` check (a fixed array: they may be recorded
/// from exception context, where allocating could deadlock on the heap's lock).
const KEPT: usize = 4;
static INCIDENTS: Mutex<([Option<Incident>; KEPT], usize)> = Mutex::new(([None; KEPT], 0));

fn note(i: Incident) {
    if let Some(mut log) = INCIDENTS.try_lock() {
        let (kept, n) = &mut *log;
        if let Some(slot) = kept.get_mut(*n) {
            *slot = Some(i);
        }
        *n += 1;
    }
}

/// Whether an incident already says output moved to semihosting.
fn any_unrecovered() -> bool {
    INCIDENTS
        .try_lock()
        .is_some_and(|log| log.0.iter().flatten().any(|i| !i.recovered))
}

/// The incidents so far, and how many there were in all.
pub fn incidents() -> (alloc::vec::Vec<Incident>, usize) {
    let log = INCIDENTS.lock();
    (log.0.iter().flatten().copied().collect(), log.1)
}

/// The UART was given up: output goes to the semihosting console from then on, and the
/// run cannot end with status 0.
static BROKEN: Mutex<Option<Trouble>> = Mutex::new(None);

/// What made the console give the UART up, if anything did.
pub fn broken() -> Option<Trouble> {
    BROKEN.try_lock().and_then(|b| *b)
}

/// The one re-registration the console may try (installed by the boot code, which owns
/// the guard), and whether it was tried.
static REPAIR: Once<fn() -> Repair> = Once::new();
static REPAIRED: AtomicBool = AtomicBool::new(false);

pub fn set_repair(f: fn() -> Repair) {
    REPAIR.call_once(|| f);
}

/// Records that the output sink above gave up after an abort (the text went to the UART).
pub fn output_aborted(fault: Fault) {
    note(Incident {
        trouble: Trouble::OutputAborted(fault),
        repair: None,
        recovered: true,
    });
}

/// Records that the output sink above gave up on a device that did not take a line.
pub fn output_given_up(ms: Option<u64>) {
    note(Incident {
        trouble: Trouble::OutputGivenUp { ms },
        repair: None,
        recovered: true,
    });
}

/// Records that the window could not be registered at boot (the UART is used anyway: if
/// the hypervisor refuses its accesses, output moves to semihosting).
pub fn not_registered(answer: Result<Ret, Fault>) {
    note(Incident {
        trouble: Trouble::NotRegistered(answer),
        repair: None,
        recovered: false,
    });
}

impl Uart {
    /// # Safety
    /// `base` must be the virtual address of a mapped window over the UART's registers,
    /// valid for as long as the `Uart` is used.
    pub const unsafe fn new(base: u64, kind: UartKind) -> Self {
        Self {
            base,
            kind,
            depth: 1,
            room: 0,
        }
    }

    fn width(&self) -> Width {
        match self.kind {
            UartKind::Pl011 => Width::W32,
            UartKind::Ns16550 { io_width: 4, .. } => Width::W32,
            UartKind::Ns16550 { .. } => Width::W8,
        }
    }

    /// The data and status registers' offsets, whether a status value says the
    /// transmitter takes a byte, and whether it says the transmitter is empty.
    fn layout(&self) -> (u64, u64, StatusTest, StatusTest) {
        match self.kind {
            // PL011: DR at 0x00; FR at 0x18, TXFF (bit 5) set while the FIFO is full, TXFE
            // (bit 7) set when it is empty.
            UartKind::Pl011 => (0x00, 0x18, |fr| fr & (1 << 5) == 0, |fr| fr & (1 << 7) != 0),
            // 16550: THR is register 0; LSR register 5, THRE (bit 5) set when it may be
            // written (with the FIFO on: when the FIFO is empty); register n at
            // base + (n << reg_shift).
            UartKind::Ns16550 { reg_shift, .. } => (
                0,
                5 << reg_shift,
                |lsr| lsr & (1 << 5) != 0,
                |lsr| lsr & (1 << 5) != 0,
            ),
        }
    }

    fn read_reg(&self, offset: u64) -> Result<u64, Fault> {
        // SAFETY: a register inside the mapped window (the caller of `new` vouched for
        // it), read without side effects that matter here; a fault is caught.
        unsafe { probe::read_in(Slot::Console, self.base + offset, self.width()) }
            .map_err(|l| l.fault)
    }

    fn write_reg(&self, offset: u64, v: u64) -> Result<(), Fault> {
        // SAFETY: a control register inside the mapped window.
        unsafe { probe::write_in(Slot::Console, self.base + offset, self.width(), v) }
    }

    /// Turns the transmit FIFO on, as Linux's drivers do, so that one status read that
    /// says "empty" lets `FIFO_DEPTH` bytes out (a trap each under a hypervisor, instead of
    /// two per byte). The depth is used only when the UART confirms the FIFO is on.
    fn enable_fifo(&mut self) -> Result<(), Fault> {
        match self.kind {
            UartKind::Pl011 => {
                const LCR_H: u64 = 0x2c;
                const CR: u64 = 0x30;
                const FEN: u64 = 1 << 4;
                const UARTEN: u64 = 1;
                const BUSY: u64 = 1 << 3;
                let lcr = self.read_reg(LCR_H)?;
                if lcr & FEN == 0 {
                    // LCR_H may change only while the UART is disabled and idle.
                    for _ in 0..TX_SPIN_LIMIT {
                        if self.status()? & BUSY == 0 {
                            break;
                        }
                    }
                    let cr = self.read_reg(CR)?;
                    self.write_reg(CR, cr & !UARTEN)?;
                    self.write_reg(LCR_H, lcr | FEN)?;
                    self.write_reg(CR, cr)?;
                }
                if self.read_reg(LCR_H)? & FEN != 0 {
                    self.depth = FIFO_DEPTH;
                }
            }
            UartKind::Ns16550 { reg_shift, .. } => {
                // FCR (register 2, write): FIFO enable. IIR (register 2, read): bits 7:6
                // are 11 when the FIFOs are on (a 16550A; a 16450 has none).
                self.write_reg(2 << reg_shift, 1)?;
                if self.read_reg(2 << reg_shift)? & 0xc0 == 0xc0 {
                    self.depth = FIFO_DEPTH;
                }
            }
        }
        Ok(())
    }

    /// Whether a UART of the kind the tree names answers at the window: a PL011's
    /// PrimeCell ID (0xB105F00D at 0xff0..0xfff, one byte per word); a 16550 whose line
    /// status reads all ones is an empty bus. Err with what was read otherwise.
    fn identify(&self) -> Result<(), Trouble> {
        const PRIMECELL: u32 = 0xb105_f00d;
        match self.kind {
            UartKind::Pl011 => {
                let mut id = 0u32;
                for i in 0..4u64 {
                    // SAFETY: the PrimeCell ID registers of the window, read-only, no side
                    // effect; a fault is caught.
                    let b = unsafe {
                        probe::read_in(Slot::Console, self.base + 0xff0 + 4 * i, Width::W32)
                    }
                    .map_err(|l| Trouble::Aborted(l.fault))?;
                    id |= (b as u32 & 0xff) << (8 * i);
                }
                if id == PRIMECELL {
                    Ok(())
                } else {
                    Err(Trouble::NotAUart { id: u64::from(id) })
                }
            }
            UartKind::Ns16550 { .. } => match self.status().map_err(Trouble::Aborted)? {
                lsr if lsr & 0xff == 0xff => Err(Trouble::NotAUart { id: lsr }),
                _ => Ok(()),
            },
        }
    }

    /// Reads the status register (no side effect on either UART).
    fn status(&self) -> Result<u64, Fault> {
        let (_, status, _, _) = self.layout();
        // SAFETY: a status register inside the mapped window (the caller of `new` vouched
        // for it); reading it has no side effect, and a fault is caught. The console's own
        // probe slot keeps a check's pending probe result intact.
        unsafe { probe::read_in(Slot::Console, self.base + status, self.width()) }
            .map_err(|l| l.fault)
    }

    fn put(&mut self, b: u8) -> Result<(), Trouble> {
        let (data, _, ready, empty) = self.layout();
        if self.room == 0 {
            let mut status = 0;
            let mut ok = false;
            for _ in 0..TX_SPIN_LIMIT {
                status = self.status().map_err(Trouble::Aborted)?;
                if ready(status) {
                    ok = true;
                    break;
                }
            }
            if !ok {
                return Err(Trouble::Stuck { status });
            }
            self.room = if empty(status) { self.depth } else { 1 };
        }
        self.room -= 1;
        // SAFETY: the transmit register inside the mapped window.
        unsafe { probe::write_in(Slot::Console, self.base + data, self.width(), u64::from(b)) }
            .map_err(Trouble::Aborted)
    }

    /// `put`, and on an abort one re-registration of the window (once per run) and one
    /// retry: a hypervisor that dropped the registration loses one incident, not the run.
    fn put_repairing(&mut self, b: u8) -> Result<(), Trouble> {
        let trouble = match self.put(b) {
            Err(t @ Trouble::Aborted(_)) if !REPAIRED.swap(true, Ordering::AcqRel) => t,
            other => return other,
        };
        let repair = REPAIR.get().map_or(Repair::NoGuard, |f| f());
        let retry = self.put(b);
        note(Incident {
            trouble,
            repair: Some(repair),
            recovered: retry.is_ok(),
        });
        retry
    }
}

impl Uart {
    /// Writes `s`; on trouble, the UART is given up and Err says how many bytes of `s`
    /// went out, so that the rest, and only the rest, goes to semihosting.
    fn write_all(&mut self, s: &str) -> Result<(), usize> {
        for (i, b) in s.bytes().enumerate() {
            let r = if b == b'\n' {
                self.put_repairing(b'\r')
                    .and_then(|()| self.put_repairing(b))
            } else {
                self.put_repairing(b)
            };
            if let Err(t) = r {
                if let Some(mut slot) = BROKEN.try_lock() {
                    *slot = Some(t);
                }
                return Err(i);
            }
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Option<Uart>> = Mutex::new(None);

/// Installs the console. Until then output goes nowhere (the fatal path has its own).
/// A window where no such UART answers is given up at once (output then goes to the
/// semihosting console), rather than written into and lost.
pub fn install(mut uart: Uart) {
    // An abort here is left to the first write, which tries the one repair.
    match uart.identify() {
        Err(t @ Trouble::NotAUart { .. }) => *BROKEN.lock() = Some(t),
        // Without the FIFO the UART still works, a byte per status read.
        Ok(()) => {
            let _ = uart.enable_fifo();
        }
        Err(_) => {}
    }
    *CONSOLE.lock() = Some(uart);
}

pub fn is_installed() -> bool {
    CONSOLE.lock().is_some()
}

/// Reads the UART's status register through its registered window: whether the
/// console's page still answers.
pub fn ping() -> Option<Result<u64, Fault>> {
    CONSOLE.lock().as_ref().map(Uart::status)
}

/// Where text goes instead of the UART while an upper layer offers it (virtio-console):
/// it answers false for text it did not take, which then goes to the UART.
pub type Sink = fn(&str) -> bool;
static SINK: Mutex<Option<Sink>> = Mutex::new(None);

pub fn set_sink(sink: Option<Sink>) {
    *SINK.lock() = sink;
}

pub fn write_fmt(args: fmt::Arguments) {
    let text = alloc::format!("{args}");
    let sink = SINK.try_lock().and_then(|s| *s);
    if sink.is_some_and(|f| f(&text)) {
        return;
    }
    write_uart(&text);
}

/// Writes `text` to the UART, or to semihosting once the UART is given up.
fn write_uart(text: &str) {
    let mut console = CONSOLE.lock();
    let Some(uart) = console.as_mut() else { return };
    let sent = if broken().is_some() {
        0
    } else {
        match uart.write_all(text) {
            Ok(()) => return,
            Err(sent) => sent,
        }
    };
    drop(console);
    // The UART was given up (now or before): the rest of this text, then everything
    // after it, goes through semihosting where there is one; the reason is said once.
    let rest = text.get(sent..).unwrap_or_default();
    semihosting::write(rest);
    static TOLD: AtomicBool = AtomicBool::new(false);
    if !TOLD.swap(true, Ordering::Relaxed) {
        if let Some(t) = broken().filter(|_| !any_unrecovered()) {
            note(Incident {
                trouble: t,
                repair: None,
                recovered: false,
            });
        }
        if let Some(t) = broken() {
            if !rest.ends_with('\n') {
                semihosting::write("\n");
            }
            semihosting::write(&alloc::format!(
                "ioguard: the console gave up its UART ({t}); continuing on the semihosting console\n"
            ));
        }
    }
}

/// Output from exception and panic context, always on the UART (whatever went wrong may
/// be the other output): if the interrupted code held the console, take it anyway rather
/// than deadlock (a garbled line beats a hang).
pub fn write_fmt_emergency(args: fmt::Arguments) {
    if CONSOLE.is_locked() {
        // SAFETY: the holder is the code this exception interrupted on this CPU (no other
        // CPU prints while a check runs); it will not resume the write it was in the middle
        // of before we return, or never (the check is abandoned).
        unsafe { CONSOLE.force_unlock() };
    }
    write_uart(&alloc::format!("{args}"));
}

#[macro_export]
macro_rules! println {
    () => { $crate::kernel::console::write_fmt(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::kernel::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // virtio-drivers reports every feature negotiation at info: only its warnings and
        // errors are ioguard's business at the default level.
        !m.target().starts_with("virtio_drivers")
            || m.level() <= log::Level::Warn
            || log::max_level() >= log::LevelFilter::Debug
    }
    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warn",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        write_fmt(format_args!("[{level}] {}\n", record.args()));
    }
    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

pub fn init_log(level: LogLevel) {
    let filter = match level {
        LogLevel::Off => log::LevelFilter::Off,
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    };
    // A second call (there is none) would only keep the first logger.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(filter);
}
