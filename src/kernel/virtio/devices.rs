//! The devices ioguard drives, polling only: a request is added to its queue, the device is
//! notified (one MMIO write), and the used ring is polled in memory until a deadline. A
//! device that does not answer in time is reset, so that it cannot write into buffers that
//! are about to be reused, and is not used again.
//!
//! Block and network use virtio-drivers' non-blocking calls; entropy and console are a few
//! lines on virtio-drivers' `VirtQueue`, because its `VirtIORng` and `VirtIOConsole` only
//! offer calls that spin until the device answers, which a broken host could make forever.

use super::hal::GuestHal;
use super::transport::Guarded;
use core::fmt;
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::device::common::Feature;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceStatus, Transport};
use virtio_drivers::Hal;

use crate::kernel::time::Deadline;

/// How long a device may take to answer one request.
pub const ANSWER_MS: u64 = 500;
const NET_QUEUE: usize = 16;
const RNG_QUEUE: usize = 4;
const CONSOLE_QUEUE: usize = 4;
/// virtio-console: port 0's transmit queue (its receive queue is 0).
const CONSOLE_TX: u16 = 1;

#[derive(Debug)]
pub enum DeviceError {
    Virtio(virtio_drivers::Error),
    /// The device did not answer within `ms`; it was reset.
    NoAnswer {
        ms: u64,
    },
    /// An earlier request was not answered: the device was reset and is not used again.
    GivenUp,
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Virtio(e) => write!(f, "{e}"),
            Self::NoAnswer { ms } => write!(
                f,
                "the device did not answer within {ms} ms (reset, given up)"
            ),
            Self::GivenUp => write!(f, "the device was given up after an earlier request"),
        }
    }
}

impl From<virtio_drivers::Error> for DeviceError {
    fn from(e: virtio_drivers::Error) -> Self {
        Self::Virtio(e)
    }
}

/// Polls `ready` until it holds or the deadline passes.
fn wait(mut ready: impl FnMut() -> bool) -> Result<(), DeviceError> {
    let deadline = Deadline::after_ms(ANSWER_MS);
    loop {
        if ready() {
            return Ok(());
        }
        if deadline.passed() {
            return Err(DeviceError::NoAnswer { ms: ANSWER_MS });
        }
        core::hint::spin_loop();
    }
}

/// One request on a queue of ours: add, notify, wait, pop. On no answer the device is
/// reset before the buffers go back to the caller.
fn request<'a, H: Hal, const N: usize>(
    q: &mut VirtQueue<H, N>,
    t: &mut Guarded,
    idx: u16,
    inputs: &'a [&'a [u8]],
    outputs: &'a mut [&'a mut [u8]],
) -> Result<u32, DeviceError> {
    // SAFETY: the buffers are borrowed for this whole function, which either pops the
    // request (the device is done with them) or resets the device (it stops using them).
    let token = unsafe { q.add(inputs, outputs)? };
    if q.should_notify() {
        t.notify(idx);
    }
    if let Err(e) = wait(|| q.can_pop()) {
        t.set_status(DeviceStatus::empty());
        return Err(e);
    }
    // SAFETY: the same buffers as were added with `token`.
    Ok(unsafe { q.pop_used(token, inputs, outputs)? })
}

pub struct Blk {
    /// None once given up (dropping the driver resets the device).
    dev: Option<VirtIOBlk<GuestHal, Guarded>>,
    capacity: u64,
}

impl Blk {
    pub fn new(t: Guarded) -> Result<Self, DeviceError> {
        let dev = VirtIOBlk::new(t)?;
        Ok(Self {
            capacity: dev.capacity(),
            dev: Some(dev),
        })
    }

    /// In sectors of 512 bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.io(sector, buf, false)
    }

    pub fn write(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.io(sector, buf, true)
    }

    fn io(&mut self, sector: u64, buf: &mut [u8], write: bool) -> Result<(), DeviceError> {
        let invalid = DeviceError::Virtio(virtio_drivers::Error::InvalidParam);
        let dev = self.dev.as_mut().ok_or(DeviceError::GivenUp)?;
        if buf.is_empty() || !buf.len().is_multiple_of(SECTOR_SIZE) {
            return Err(invalid);
        }
        let block = usize::try_from(sector).map_err(|_| invalid)?;
        let mut req = BlkReq::default();
        let mut resp = BlkResp::default();
        // SAFETY: `req`, `buf` and `resp` are not touched until the request completes below
        // or the device is reset (by dropping the driver).
        let token = unsafe {
            if write {
                dev.write_blocks_nb(block, &mut req, buf, &mut resp)?
            } else {
                dev.read_blocks_nb(block, &mut req, buf, &mut resp)?
            }
        };
        if let Err(e) = wait(|| dev.peek_used() == Some(token)) {
            self.dev = None;
            return Err(e);
        }
        // SAFETY: the same buffers as passed to the `_nb` call that returned `token`.
        unsafe {
            if write {
                dev.complete_write_blocks(token, &req, buf, &mut resp)?
            } else {
                dev.complete_read_blocks(token, &req, buf, &mut resp)?
            }
        };
        Ok(())
    }
}

/// Queues of ours on a transport: device set-up without features beyond VERSION_1.
fn set_up(t: &mut Guarded) -> Feature {
    t.begin_init(Feature::VERSION_1)
}

pub struct Rng {
    t: Guarded,
    q: Option<VirtQueue<GuestHal, RNG_QUEUE>>,
}

impl Rng {
    pub fn new(mut t: Guarded) -> Result<Self, DeviceError> {
        set_up(&mut t);
        let q = VirtQueue::new(&mut t, 0, false, false)?;
        t.finish_init();
        Ok(Self { t, q: Some(q) })
    }

    /// The windows its transport reaches it through: (address, size).
    pub fn windows(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.t.windows()
    }

    /// Sets the device up again after a request it never answered (it was reset then):
    /// for the fuzzer, whose requests into private memory must go unanswered, and which
    /// goes on.
    pub fn revive(&mut self) -> Result<(), DeviceError> {
        if self.q.is_some() {
            return Ok(());
        }
        self.t.set_status(DeviceStatus::empty());
        set_up(&mut self.t);
        let q = VirtQueue::new(&mut self.t, 0, false, false)?;
        self.t.finish_init();
        self.q = Some(q);
        Ok(())
    }

    /// Fills `buf` with entropy; returns how many bytes the device wrote.
    pub fn fill(&mut self, buf: &mut [u8]) -> Result<usize, DeviceError> {
        let q = self.q.as_mut().ok_or(DeviceError::GivenUp)?;
        match request(q, &mut self.t, 0, &[], &mut [buf]) {
            Ok(n) => Ok(n as usize),
            Err(e) => {
                self.q = None;
                Err(e)
            }
        }
    }
}

pub struct Console<H: Hal = GuestHal> {
    t: Guarded,
    /// Port 0's receive queue is set up (the device expects both) and never filled.
    _rx: VirtQueue<H, CONSOLE_QUEUE>,
    tx: Option<VirtQueue<H, CONSOLE_QUEUE>>,
}

impl<H: Hal> Console<H> {
    pub fn new(mut t: Guarded) -> Result<Self, DeviceError> {
        set_up(&mut t);
        let rx = VirtQueue::new(&mut t, 0, false, false)?;
        let tx = VirtQueue::new(&mut t, CONSOLE_TX, false, false)?;
        t.finish_init();
        Ok(Self {
            t,
            _rx: rx,
            tx: Some(tx),
        })
    }

    /// Writes `bytes` as one request: one notify.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), DeviceError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let q = self.tx.as_mut().ok_or(DeviceError::GivenUp)?;
        match request(q, &mut self.t, CONSOLE_TX, &[bytes], &mut []) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.tx = None;
                Err(e)
            }
        }
    }
}

pub struct Net {
    dev: Option<VirtIONetRaw<GuestHal, Guarded, NET_QUEUE>>,
    mac: [u8; 6],
}

impl Net {
    pub fn new(t: Guarded) -> Result<Self, DeviceError> {
        let dev = VirtIONetRaw::new(t)?;
        Ok(Self {
            mac: dev.mac_address(),
            dev: Some(dev),
        })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Room for the device's header before a frame.
    pub fn header_len(&self) -> Result<usize, DeviceError> {
        let dev = self.dev.as_ref().ok_or(DeviceError::GivenUp)?;
        let mut probe = [0u8; 64];
        Ok(dev.fill_buffer_header(&mut probe)?)
    }

    /// Writes the device's header at the start of `frame`.
    pub fn fill_header(&self, frame: &mut [u8]) -> Result<usize, DeviceError> {
        let dev = self.dev.as_ref().ok_or(DeviceError::GivenUp)?;
        Ok(dev.fill_buffer_header(frame)?)
    }

    /// Sends `frame` (the device's header first, as `header_len` says).
    pub fn send(&mut self, frame: &[u8]) -> Result<(), DeviceError> {
        let dev = self.dev.as_mut().ok_or(DeviceError::GivenUp)?;
        // SAFETY: `frame` is borrowed until the request completes or the device is reset.
        let token = unsafe { dev.transmit_begin(frame)? };
        if let Err(e) = wait(|| dev.poll_transmit() == Some(token)) {
            self.dev = None;
            return Err(e);
        }
        // SAFETY: the buffer passed to the `transmit_begin` that returned `token`.
        unsafe { dev.transmit_complete(token, frame)? };
        Ok(())
    }
}

/// Sends `frame` from `tx` and waits for it on `rx`, whose buffer `buf` is posted first:
/// returns (header length, frame length) as `rx` received it into `buf`.
pub fn exchange(
    tx: &mut Net,
    rx: &mut Net,
    frame: &[u8],
    buf: &mut [u8],
) -> Result<(usize, usize), DeviceError> {
    let dev = rx.dev.as_mut().ok_or(DeviceError::GivenUp)?;
    // SAFETY: `buf` is borrowed until the frame arrives or the device is reset.
    let token = unsafe { dev.receive_begin(buf)? };
    let sent = tx.send(frame);
    let dev = rx.dev.as_mut().ok_or(DeviceError::GivenUp)?;
    if let Err(e) = wait(|| dev.poll_receive() == Some(token)) {
        // Reset the receiver: `buf` must not be written once this returns.
        rx.dev = None;
        sent?;
        return Err(e);
    }
    sent?;
    // SAFETY: the buffer passed to the `receive_begin` that returned `token`.
    Ok(unsafe { dev.receive_complete(token, buf)? })
}
