//! virtio-mmio transports from the tree's `virtio,mmio` nodes: each window is ioremapped
//! (registered with the guard) before its first access, and given back when no device is
//! behind it.

use super::transport::Guarded;
use super::ProbeError;
use crate::kernel::mm::ioremap;
use crate::kernel::probe::{self, Width};
use crate::platform::Region;
use alloc::vec;
use core::ptr::NonNull;
use virtio_drivers::transport::mmio::{MmioError, MmioTransport, VirtIOHeader};
use virtio_drivers::transport::SomeTransport;

/// The transport behind the window `r`, or None when no device is there (device ID 0).
pub fn probe(r: Region) -> Result<Option<(Guarded, u32)>, ProbeError> {
    let window = ioremap::ioremap(r.base, r.size).map_err(ProbeError::Ioremap)?;
    // The first access through the probe API, so that a hypervisor that refuses the
    // registered window costs this transport, not the run: the window is released here.
    // SAFETY: the magic register of the window just mapped; reading it has no effect.
    if let Err(l) = unsafe { probe::read(window.addr(), Width::W32) } {
        return Err(ProbeError::Refused(l.fault));
    }
    let header = NonNull::new(window.addr() as *mut VirtIOHeader).ok_or(ProbeError::Null)?;
    // SAFETY: `window` maps (and registers) `r.size` bytes of device memory at `header`, an
    // address the tree gave for a virtio-mmio transport; it lives as long as the transport
    // because both are moved into the same `Guarded`, which drops the transport first.
    match unsafe { MmioTransport::new(header, r.size as usize) } {
        Ok(t) => {
            let version = t.version() as u32;
            Ok(Some((
                Guarded::new(SomeTransport::from(t), vec![window], vec![]),
                version,
            )))
        }
        Err(MmioError::InvalidDeviceID(_)) => Ok(None),
        Err(e) => Err(ProbeError::Mmio(e)),
    }
}
