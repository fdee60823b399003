//! hypmodel's output on the PL011 it shares with the guest.

use super::asm::MmioResult;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};
use hypmodel::console::LineGate;
use hypmodel::layout::DEFAULT_UART;
use spin::Mutex;

/// PL011 registers: data, and flags with TXFF (transmit FIFO full).
pub const UART_DR: u64 = 0x00;
const UART_FR: u64 = 0x18;
const UART_FR_TXFF: u32 = 1 << 5;

static UART: AtomicU64 = AtomicU64::new(DEFAULT_UART);
static GATE: Mutex<LineGate<16384>> = Mutex::new(LineGate::new());

pub fn set_uart(base: u64) {
    UART.store(base, Ordering::Relaxed);
}

fn putc(c: u8) {
    let base = UART.load(Ordering::Relaxed);
    // SAFETY: PL011 registers at the console base from the device tree. EL2's MMU is off,
    // so these are Device-nGnRnE accesses.
    unsafe {
        while core::ptr::read_volatile((base + UART_FR) as *const u32) & UART_FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        core::ptr::write_volatile((base + UART_DR) as *mut u32, u32::from(c));
    }
}

fn out(b: &[u8]) {
    b.iter().for_each(|&c| putc(c));
}

/// Writes a line straight to the UART, without the lock (panic path).
pub fn raw_line(b: &[u8]) {
    out(b);
    out(b"\n");
}

/// One output line, formatted on the stack (longer lines are cut).
pub struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    pub fn new() -> Line {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// Prints the line (with a newline) through the gate.
    pub fn emit(mut self) {
        if self.len == self.buf.len() {
            self.len -= 1;
        }
        self.buf[self.len] = b'\n';
        self.len += 1;
        GATE.lock().hyp_line(&self.buf[..self.len], &mut out);
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

pub fn hyp_line(args: fmt::Arguments<'_>) {
    let mut l = Line::new();
    let _ = l.write_fmt(args);
    l.emit();
}

/// The guest writes `byte` to the console data register through `write`.
pub fn guest_write(write: impl FnOnce() -> MmioResult, byte: u8) -> MmioResult {
    let mut g = GATE.lock();
    let r = write();
    if r.fault == 0 {
        g.guest_byte(byte, &mut out);
    }
    r
}

/// Ends a half-written guest line and prints what waited.
pub fn flush() {
    GATE.lock().flush(&mut out);
}

/// `fmt::Write` for the report: each completed line goes out through the gate.
pub struct Report;

impl Write for Report {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut g = GATE.lock();
        g.flush(&mut out);
        out(s.as_bytes());
        Ok(())
    }
}
