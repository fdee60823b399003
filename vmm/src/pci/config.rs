//! A type-0 PCI configuration space (PCI Local Bus 3.0 §6.1): 256 bytes, per-byte write
//! masks, a capability list, and a BAR0 the VMM placed and the guest cannot move.

use std::fmt;

pub const VENDOR_ID: usize = 0x00;
pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const REVISION: usize = 0x08;
pub const HEADER_TYPE: usize = 0x0e;
pub const BAR0: usize = 0x10;
pub const SUBSYSTEM_VENDOR: usize = 0x2c;
pub const CAPABILITIES: usize = 0x34;
pub const INTERRUPT_LINE: usize = 0x3c;
pub const INTERRUPT_PIN: usize = 0x3d;
/// Where the capability list starts: right after the type-0 header.
pub const FIRST_CAPABILITY: usize = 0x40;
pub const SIZE: usize = 256;

pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const STATUS_CAPABILITIES: u16 = 1 << 4;

/// The identity a function's header carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    /// Base class, subclass, programming interface.
    pub class: (u8, u8, u8),
    pub subsystem_vendor: u16,
    pub subsystem: u16,
    /// INTA# = 1 .. INTD# = 4, 0 for none.
    pub interrupt_pin: u8,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CapError {
    /// The capability does not fit in what is left of the 256 bytes.
    NoRoom { id: u8, len: usize },
}

impl fmt::Display for CapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRoom { id, len } => write!(
                f,
                "capability {id:#x} of {len} bytes does not fit in configuration space"
            ),
        }
    }
}

/// A 32-bit, non-prefetchable memory BAR at a fixed address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedBar {
    pub base: u32,
    /// A power of two, at least 16.
    pub size: u32,
}

pub struct ConfigSpace {
    bytes: [u8; SIZE],
    writable: [u8; SIZE],
    bar0: Option<FixedBar>,
    /// The driver wrote all ones to BAR0 to size it: reads say the size until the next
    /// write.
    sizing: bool,
    /// The last capability's offset, to link the next one.
    last_cap: Option<usize>,
    next_free: usize,
}

impl ConfigSpace {
    pub fn new(h: &Header) -> Self {
        let mut c = Self {
            bytes: [0; SIZE],
            writable: [0; SIZE],
            bar0: None,
            sizing: false,
            last_cap: None,
            next_free: FIRST_CAPABILITY,
        };
        c.put16(VENDOR_ID, h.vendor);
        c.put16(VENDOR_ID + 2, h.device);
        c.bytes[REVISION] = h.revision;
        c.bytes[REVISION + 1] = h.class.2;
        c.bytes[REVISION + 2] = h.class.1;
        c.bytes[REVISION + 3] = h.class.0;
        // Header type 0, single function (bit 7 clear).
        c.bytes[HEADER_TYPE] = 0;
        c.put16(SUBSYSTEM_VENDOR, h.subsystem_vendor);
        c.put16(SUBSYSTEM_VENDOR + 2, h.subsystem);
        c.bytes[INTERRUPT_PIN] = h.interrupt_pin;
        // Memory decoding, bus mastering and INTx masking are what the driver may set;
        // there is no I/O BAR, so I/O decoding stays off.
        let cmd = COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
        c.writable[COMMAND..COMMAND + 2].copy_from_slice(&cmd.to_le_bytes());
        // The interrupt line is a scratch byte for the OS.
        c.writable[INTERRUPT_LINE] = 0xff;
        c
    }

    fn put16(&mut self, at: usize, v: u16) {
        self.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    pub fn bar0(&self) -> Option<FixedBar> {
        self.bar0
    }

    /// Places BAR0 and, as crosvm when it assigns a memory BAR (pci_configuration.rs
    /// `add_pci_bar`), turns memory decoding on: the BAR answers before any driver ran.
    pub fn set_bar0(&mut self, bar: FixedBar) {
        self.bar0 = Some(bar);
        let cmd = self.command() | COMMAND_MEMORY;
        self.put16(COMMAND, cmd);
    }

    pub fn command(&self) -> u16 {
        u16::from_le_bytes([self.bytes[COMMAND], self.bytes[COMMAND + 1]])
    }

    pub fn memory_enabled(&self) -> bool {
        self.command() & COMMAND_MEMORY != 0
    }

    /// Appends a capability: `body` is everything after its ID and next-pointer bytes,
    /// `writable` the write masks of those bytes (shorter: the rest read-only). Returns
    /// its offset.
    pub fn add_capability(
        &mut self,
        id: u8,
        body: &[u8],
        writable: &[u8],
    ) -> Result<usize, CapError> {
        let len = 2 + body.len();
        let at = self.next_free;
        if at + len > SIZE {
            return Err(CapError::NoRoom { id, len });
        }
        self.bytes[at] = id;
        self.bytes[at + 1] = 0;
        self.bytes[at + 2..at + len].copy_from_slice(body);
        for (m, w) in self.writable[at + 2..at + len].iter_mut().zip(writable) {
            *m = *w;
        }
        match self.last_cap {
            Some(prev) => self.bytes[prev + 1] = at as u8,
            None => {
                self.bytes[CAPABILITIES] = at as u8;
                let status = u16::from_le_bytes([self.bytes[STATUS], self.bytes[STATUS + 1]])
                    | STATUS_CAPABILITIES;
                self.put16(STATUS, status);
            }
        }
        self.last_cap = Some(at);
        // Capabilities start on dword boundaries.
        self.next_free = (at + len).next_multiple_of(4);
        Ok(at)
    }

    /// BAR0 as the driver reads it: its address, or while sizing the mask of its size.
    /// Type bits 0 (memory, 32-bit, not prefetchable).
    fn bar0_value(&self) -> u32 {
        match self.bar0 {
            Some(b) if self.sizing => !(b.size - 1) & !0xf,
            Some(b) => b.base,
            None => 0,
        }
    }

    pub fn byte(&self, at: usize) -> u8 {
        match at {
            BAR0..=0x13 => self.bar0_value().to_le_bytes()[at - BAR0],
            _ => self.bytes.get(at).copied().unwrap_or(0),
        }
    }

    /// A read of `data.len()` bytes at `at`; past the end reads as ones, as no register.
    pub fn read(&self, at: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = if at + i < SIZE {
                self.byte(at + i)
            } else {
                0xff
            };
        }
    }

    /// A write: each byte through its write mask. BAR0 keeps its address whatever is
    /// written (the VMM pre-assigned it, `linux,pci-probe-only`), but a write of all ones
    /// makes it answer with its size, as PCI's BAR sizing expects.
    pub fn write(&mut self, at: usize, data: &[u8]) {
        let mut bar_written = None;
        for (i, &v) in data.iter().enumerate() {
            let a = at + i;
            if a >= SIZE {
                break;
            }
            if (BAR0..BAR0 + 4).contains(&a) {
                let mut shown = bar_written.unwrap_or_else(|| self.bar0_value().to_le_bytes());
                shown[a - BAR0] = v;
                bar_written = Some(shown);
                continue;
            }
            let m = self.writable[a];
            self.bytes[a] = (self.bytes[a] & !m) | (v & m);
        }
        if let Some(shown) = bar_written {
            self.sizing = u32::from_le_bytes(shown) & !0xf == !0xf;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            vendor: 0x1af4,
            device: 0x1042,
            revision: 1,
            class: (0x00, 0xff, 0x00),
            subsystem_vendor: 0x1af4,
            subsystem: 0x1042,
            interrupt_pin: 1,
        }
    }

    fn word(c: &ConfigSpace, at: usize) -> u32 {
        let mut d = [0u8; 4];
        c.read(at, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn identity_and_read_only_fields() {
        let mut c = ConfigSpace::new(&header());
        assert_eq!(word(&c, 0), 0x1042_1af4);
        assert_eq!(word(&c, 8), 0x00ff_0001, "class 00/ff/00, revision 1");
        assert_eq!(word(&c, 0x2c), 0x1042_1af4);
        assert_eq!(word(&c, 0x3c), 0x0000_0100, "INTA#");
        c.write(0, &[0; 4]);
        assert_eq!(word(&c, 0), 0x1042_1af4, "IDs are read-only");
        c.write(0x3c, &[0x2a, 9]);
        assert_eq!(
            word(&c, 0x3c),
            0x0000_012a,
            "the line is writable, the pin is not"
        );
        let mut past = [0u8; 2];
        c.read(0xff, &mut past);
        assert_eq!(past, [0, 0xff]);
    }

    #[test]
    fn command_takes_memory_enable_and_bus_master_only() {
        let mut c = ConfigSpace::new(&header());
        assert!(!c.memory_enabled());
        c.set_bar0(FixedBar {
            base: 0x0200_0000,
            size: 0x8000,
        });
        assert!(c.memory_enabled(), "on with the BAR, as crosvm");
        c.write(COMMAND, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.command(), 0x0406);
        assert!(c.memory_enabled());
        assert_eq!(word(&c, COMMAND) >> 16, 0, "status bits are not written");
        c.write(COMMAND, &[0]);
        assert!(!c.memory_enabled());
    }

    #[test]
    fn bar_sizing_answers_the_size_and_the_bar_never_moves() {
        let mut c = ConfigSpace::new(&header());
        c.set_bar0(FixedBar {
            base: 0x0200_8000,
            size: 0x8000,
        });
        assert_eq!(word(&c, BAR0), 0x0200_8000);
        c.write(BAR0, &u32::MAX.to_le_bytes());
        assert_eq!(word(&c, BAR0), 0xffff_8000);
        c.write(BAR0, &0x0200_8000u32.to_le_bytes());
        assert_eq!(word(&c, BAR0), 0x0200_8000);
        c.write(BAR0, &0x0300_0000u32.to_le_bytes());
        assert_eq!(
            word(&c, BAR0),
            0x0200_8000,
            "fixed: a new address is ignored"
        );
        // Unimplemented BARs and the expansion ROM size as 0: absent.
        for bar in (0x14..=0x24).step_by(4).chain([0x30]) {
            c.write(bar, &u32::MAX.to_le_bytes());
            assert_eq!(word(&c, bar), 0, "{bar:#x}");
        }
    }

    #[test]
    fn capabilities_are_linked_and_dword_aligned() {
        let mut c = ConfigSpace::new(&header());
        assert_eq!(word(&c, COMMAND) >> 16 & 0x10, 0);
        let a = c.add_capability(0x09, &[14, 1, 0], &[]).unwrap();
        let b = c.add_capability(0x11, &[0; 10], &[0, 0xc0]).unwrap();
        assert_eq!((a, b), (0x40, 0x48), "5 bytes, then the next dword");
        assert_eq!(word(&c, COMMAND) >> 16 & 0x10, 0x10, "capability list bit");
        assert_eq!(c.byte(CAPABILITIES), 0x40);
        assert_eq!(c.byte(0x41), 0x48);
        assert_eq!(c.byte(0x49), 0, "end of the list");
        c.write(0x42, &[0xff, 0xff]);
        c.write(0x4a, &[0xff, 0xff]);
        assert_eq!((c.byte(0x42), c.byte(0x4a), c.byte(0x4b)), (14, 0, 0xc0));
        assert!(matches!(
            c.add_capability(0x09, &[0; 200], &[]),
            Err(CapError::NoRoom { id: 9, .. })
        ));
    }
}
