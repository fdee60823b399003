//! A transport that owns its registrations: the virtio-drivers transport and the ioremap
//! windows it reaches its device through, in that order, so that the transport is always
//! dropped before the windows are unregistered. Nothing outside this module can reach the
//! windows, so a transport cannot outlive its registration.

use super::hal;
use crate::kernel::mm::ioremap::IoMapping;
use crate::platform::Region;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use virtio_drivers::transport::{
    DeviceStatus, DeviceType, InterruptStatus, SomeTransport, Transport,
};
use virtio_drivers::{PhysAddr, Result};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Queue notifications sent by every transport (each is one MMIO write, so one trap under a
/// hypervisor), for the checks and the benchmark.
static NOTIFIES: AtomicU64 = AtomicU64::new(0);

pub fn notifies() -> u64 {
    NOTIFIES.load(Ordering::Relaxed)
}

pub struct Guarded {
    // Declared first: dropped before `windows` (fields drop in declaration order).
    inner: SomeTransport<'static>,
    windows: Vec<IoMapping>,
    /// BARs `mmio_phys_to_virt` was allowed to hand out for this transport.
    bars: Vec<Region>,
}

impl Guarded {
    /// `inner` reaches its device only through `windows` (and `bars`, which lie in them).
    pub(super) fn new(
        inner: SomeTransport<'static>,
        windows: Vec<IoMapping>,
        bars: Vec<Region>,
    ) -> Self {
        Self {
            inner,
            windows,
            bars,
        }
    }

    /// The registered windows, for the checks: (address, size).
    pub fn windows(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.windows.iter().map(|w| (w.addr(), w.size()))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // Reset the device so that it stops using the queues before their memory goes.
        self.inner.set_status(DeviceStatus::empty());
        for b in &self.bars {
            hal::forbid_window(*b);
        }
    }
}

impl Transport for Guarded {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        self.inner.read_device_features()
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.inner.write_driver_features(driver_features)
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        NOTIFIES.fetch_add(1, Ordering::Relaxed);
        self.inner.notify(queue)
    }
    fn get_status(&self) -> DeviceStatus {
        self.inner.get_status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status)
    }
    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.inner.set_guest_page_size(guest_page_size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.inner.requires_legacy_layout()
    }
    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.inner
            .queue_set(queue, size, descriptors, driver_area, device_area)
    }
    fn queue_unset(&mut self, queue: u16) {
        self.inner.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.inner.read_config_generation()
    }
    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> Result<T> {
        self.inner.read_config_space(offset)
    }
    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> Result<()> {
        self.inner.write_config_space(offset, value)
    }
}
