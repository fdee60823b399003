//! The console: the UART named by the device tree, reached only through its ioremapped
//! window; and the `log` backend on top of it.

use crate::cmdline::LogLevel;
use crate::platform::UartKind;
use core::fmt::{self, Write};
use spin::Mutex;

use crate::fault::Fault;
use core::sync::atomic::{AtomicBool, Ordering};

use super::probe::{self, Slot, Width};
use super::semihosting;

/// Bounded wait for transmit space: a UART that never drains (or a hypervisor that
/// returns garbage for its status register) loses characters instead of hanging the run.
const TX_SPIN_LIMIT: u32 = 100_000;

pub struct Uart {
    base: u64,
    kind: UartKind,
}

/// The UART stopped answering: an access to its registered window aborted (a hypervisor
/// that refuses the console's registered page, for instance). From then on output goes to
/// the semihosting console, and the run cannot end with status 0.
static BROKEN: Mutex<Option<Fault>> = Mutex::new(None);

/// The fault that broke the console, if one did.
pub fn broken() -> Option<Fault> {
    BROKEN.try_lock().and_then(|b| *b)
}

impl Uart {
    /// # Safety
    /// `base` must be the virtual address of a mapped window over the UART's registers,
    /// valid for as long as the `Uart` is used.
    pub const unsafe fn new(base: u64, kind: UartKind) -> Self {
        Self { base, kind }
    }

    fn width(&self) -> Width {
        match self.kind {
            UartKind::Pl011 => Width::W32,
            UartKind::Ns16550 { io_width: 4, .. } => Width::W32,
            UartKind::Ns16550 { .. } => Width::W8,
        }
    }

    /// The data and status registers' offsets, and whether a status value says the
    /// transmitter takes a byte.
    fn layout(&self) -> (u64, u64, fn(u64) -> bool) {
        match self.kind {
            // PL011: DR at 0x00; FR at 0x18, TXFF (bit 5) set while the FIFO is full.
            UartKind::Pl011 => (0x00, 0x18, |fr| fr & (1 << 5) == 0),
            // 16550: THR is register 0; LSR register 5, THRE (bit 5) set when it may be
            // written; register n at base + (n << reg_shift).
            UartKind::Ns16550 { reg_shift, .. } => (0, 5 << reg_shift, |lsr| lsr & (1 << 5) != 0),
        }
    }

    /// Reads the status register (no side effect on either UART).
    fn status(&self) -> Result<u64, Fault> {
        let (_, status, _) = self.layout();
        // SAFETY: a status register inside the mapped window (the caller of `new` vouched
        // for it); reading it has no side effect, and a fault is caught. The console's own
        // probe slot keeps a check's pending probe result intact.
        unsafe { probe::read_in(Slot::Console, self.base + status, self.width()) }
            .map_err(|l| l.fault)
    }

    fn put(&mut self, b: u8) -> Result<(), Fault> {
        let (data, _, ready) = self.layout();
        for _ in 0..TX_SPIN_LIMIT {
            if ready(self.status()?) {
                break;
            }
        }
        // SAFETY: the transmit register inside the mapped window.
        unsafe { probe::write_in(Slot::Console, self.base + data, self.width(), u64::from(b)) }
    }
}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            let r = if b == b'\n' {
                self.put(b'\r').and_then(|()| self.put(b))
            } else {
                self.put(b)
            };
            if let Err(f) = r {
                if let Some(mut slot) = BROKEN.try_lock() {
                    *slot = Some(f);
                }
                return Err(fmt::Error);
            }
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Option<Uart>> = Mutex::new(None);

/// Installs the console. Until then output goes nowhere (the fatal path has its own).
pub fn install(uart: Uart) {
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

pub fn write_fmt(args: fmt::Arguments) {
    let mut console = CONSOLE.lock();
    let Some(uart) = console.as_mut() else { return };
    if broken().is_none() && uart.write_fmt(args).is_ok() {
        return;
    }
    drop(console);
    // The UART aborted (now or before): say so once, then keep reporting through
    // semihosting, where there is one.
    static TOLD: AtomicBool = AtomicBool::new(false);
    if !TOLD.swap(true, Ordering::Relaxed) {
        if let Some(f) = broken() {
            semihosting::write(&alloc::format!(
                "ioguard: the console's registered window aborted ({f}); continuing on the semihosting console\n"
            ));
        }
    }
    semihosting::write(&alloc::format!("{args}"));
}

/// Output from exception and panic context: if the interrupted code held the console,
/// take it anyway rather than deadlock (a garbled line beats a hang).
pub fn write_fmt_emergency(args: fmt::Arguments) {
    if CONSOLE.is_locked() {
        // SAFETY: the holder is the code this exception interrupted on this CPU (no other
        // CPU prints while a check runs); it will not resume the write it was in the middle
        // of before we return, or never (the check is abandoned).
        unsafe { CONSOLE.force_unlock() };
    }
    write_fmt(args);
}

#[macro_export]
macro_rules! println {
    () => { $crate::kernel::console::write_fmt(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::kernel::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
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
