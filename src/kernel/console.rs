//! The console: the UART named by the device tree, reached only through its ioremapped
//! window; and the `log` backend on top of it.

use crate::cmdline::LogLevel;
use crate::platform::UartKind;
use core::fmt::{self, Write};
use spin::Mutex;

use super::mmio;

/// Bounded wait for transmit space: a UART that never drains (or a hypervisor that
/// returns garbage for its status register) loses characters instead of hanging the run.
const TX_SPIN_LIMIT: u32 = 100_000;

pub struct Uart {
    base: u64,
    kind: UartKind,
}

impl Uart {
    /// # Safety
    /// `base` must be the virtual address of a mapped window over the UART's registers,
    /// valid for as long as the `Uart` is used.
    pub const unsafe fn new(base: u64, kind: UartKind) -> Self {
        Self { base, kind }
    }

    fn put(&mut self, b: u8) {
        match self.kind {
            UartKind::Pl011 => {
                const DR: u64 = 0x00;
                const FR: u64 = 0x18;
                const FR_TXFF: u32 = 1 << 5;
                for _ in 0..TX_SPIN_LIMIT {
                    // SAFETY: FR is a readable PL011 register inside the mapped window.
                    if unsafe { mmio::read32(self.base + FR) } & FR_TXFF == 0 {
                        break;
                    }
                }
                // SAFETY: DR is a writable PL011 register inside the mapped window.
                unsafe { mmio::write32(self.base + DR, u32::from(b)) };
            }
            UartKind::Ns16550 {
                reg_shift,
                io_width,
            } => {
                const THR: u64 = 0;
                const LSR: u64 = 5;
                const LSR_THRE: u32 = 1 << 5;
                let reg = |n: u64| self.base + (n << reg_shift);
                for _ in 0..TX_SPIN_LIMIT {
                    // SAFETY: LSR is a readable 16550 register inside the mapped window,
                    // accessed with the width the device tree gives.
                    let lsr = unsafe {
                        if io_width == 4 {
                            mmio::read32(reg(LSR))
                        } else {
                            u32::from(mmio::read8(reg(LSR)))
                        }
                    };
                    if lsr & LSR_THRE != 0 {
                        break;
                    }
                }
                // SAFETY: THR is a writable 16550 register inside the mapped window.
                unsafe {
                    if io_width == 4 {
                        mmio::write32(reg(THR), u32::from(b))
                    } else {
                        mmio::write8(reg(THR), b)
                    }
                }
            }
        }
    }
}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
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

pub fn write_fmt(args: fmt::Arguments) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        let _ = uart.write_fmt(args);
    }
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
