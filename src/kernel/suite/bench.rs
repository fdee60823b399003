//! `bench:` measurements for the benchmark scripts (`bench/virtio.sh`), run only when
//! named: they report figures, and fail only when the work itself fails.

use super::virtio::with_bus;
use super::Ctx;
use crate::kernel::arch::sysreg;
use crate::kernel::virtio;
use crate::report::Outcome;
use alloc::vec;
use virtio_drivers::transport::DeviceType;

checks!(explicit "bench": blk);

/// Bytes moved each way.
const TOTAL: u64 = 1 << 20;
/// Bytes per request.
const REQUEST: u64 = 4096;

fn kib_per_s(bytes: u64, us: u64) -> u64 {
    bytes / 1024 * 1_000_000 / us.max(1)
}

/// Throughput of the first virtio-blk device: 1 MiB written, then read, in 4 KiB requests
/// (each bounced through the shared pool where there is memory sharing).
pub fn blk(ctx: &Ctx) -> Outcome {
    with_bus(ctx, |bus| {
        let at = bus
            .found
            .iter()
            .find(|f| f.result.is_ok() && f.kind == Some(DeviceType::Block))
            .map(|f| f.at);
        let (Some(dev), Some(at)) = (bus.blk.first_mut(), at) else {
            return Outcome::skip("no virtio-blk device");
        };
        let sectors = REQUEST / 512;
        let span = dev.capacity().saturating_sub(8) / sectors * sectors;
        if span < sectors {
            return Outcome::skip("the disk is too small");
        }
        let mut buf = vec![0x5au8; REQUEST as usize];
        let notifies = virtio::notifies();
        let mut times = [0u64; 2];
        for (i, write) in [true, false].into_iter().enumerate() {
            let start = sysreg::counter();
            for n in 0..TOTAL / REQUEST {
                // From sector 8 on, leaving the runner's header in sector 0 alone.
                let sector = 8 + (n * sectors) % span;
                let r = if write {
                    dev.write(sector, &mut buf)
                } else {
                    dev.read(sector, &mut buf)
                };
                if let Err(e) = r {
                    return Outcome::fail(format_args!("request {n}: {e}"));
                }
            }
            times[i] = sysreg::micros_since(start);
        }
        let requests = 2 * TOTAL / REQUEST;
        Outcome::pass(format_args!(
            "{at}: write {} KiB/s, read {} KiB/s ({} requests of {REQUEST} bytes, {} notifies)",
            kib_per_s(TOTAL, times[0]),
            kib_per_s(TOTAL, times[1]),
            requests,
            virtio::notifies() - notifies
        ))
    })
}
