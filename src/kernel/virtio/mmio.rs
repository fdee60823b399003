//! virtio-mmio transports from the tree's `virtio,mmio` nodes: each window is ioremapped
//! (registered with the guard) before its first access, and given back when no device is
//! behind it.

use super::transport::Guarded;
use super::ProbeError;
use crate::kernel::mm::ioremap::{self, IoMapping};
use crate::kernel::probe::{self, Width};
use crate::platform::Region;
use alloc::vec;
use core::ptr::NonNull;
use virtio_drivers::transport::mmio::{MmioError, MmioTransport, VirtIOHeader};
use virtio_drivers::transport::SomeTransport;

/// The DeviceID register of a virtio-mmio header.
const DEVICE_ID: u64 = 0x008;

/// What a virtio-mmio window holds.
pub enum Slot {
    /// A device, its transport (which owns the window) and the header version.
    Device(Guarded, u32),
    /// No device (device ID 0): the window, for the caller to release once every window
    /// is probed, so that windows sharing a granule cost one MAP and one UNMAP.
    Empty(IoMapping),
}

/// What is behind the window `r`.
pub fn probe(r: Region) -> Result<Slot, ProbeError> {
    let window = ioremap::ioremap(r.base, r.size).map_err(ProbeError::Ioremap)?;
    // The first access through the probe API, so that a hypervisor that refuses the
    // registered window costs this transport, not the run: the window is released here.
    // SAFETY: the magic register of the window just mapped; reading it has no effect.
    if let Err(l) = unsafe { probe::read(window.addr(), Width::W32) } {
        return Err(ProbeError::Refused(l.fault));
    }
    // Device ID 0: no device. Read here, so that an empty window costs two reads (each a
    // trap under a hypervisor), not the three of a transport set up only to be refused.
    // SAFETY: the device ID register of the same window; reading it has no effect.
    if let Ok(0) = unsafe { probe::read(window.addr() + DEVICE_ID, Width::W32) } {
        return Ok(Slot::Empty(window));
    }
    let header = NonNull::new(window.addr() as *mut VirtIOHeader).ok_or(ProbeError::Null)?;
    // SAFETY: `window` maps (and registers) `r.size` bytes of device memory at `header`, an
    // address the tree gave for a virtio-mmio transport; it lives as long as the transport
    // because both are moved into the same `Guarded`, which drops the transport first.
    match unsafe { MmioTransport::new(header, r.size as usize) } {
        Ok(t) => {
            let version = t.version() as u32;
            Ok(Slot::Device(
                Guarded::new(SomeTransport::from(t), vec![window], vec![]),
                version,
            ))
        }
        Err(MmioError::InvalidDeviceID(_)) => Ok(Slot::Empty(window)),
        Err(e) => Err(ProbeError::Mmio(e)),
    }
}
