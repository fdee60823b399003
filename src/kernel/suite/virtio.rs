//! `virtio:` devices through registered windows, DMA through shared memory. Each check
//! builds the device set on first use (so it gives the same verdict alone), and
//! `pool-unshared`, last, drops it.

use super::Ctx;
use crate::kernel::arch::sysreg;
use crate::kernel::mm::ioremap;
use crate::kernel::virtio::devices::{self, Net};
use crate::kernel::virtio::{self, Bus};
use crate::report::Outcome;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use virtio_drivers::transport::DeviceType;

checks!("virtio": discovered, registered, blk_rw, console, rng, net, no_stray, dma_shared, pool_unshared);

/// Sectors per blk request (4 KiB).
const RUN: u64 = 8;
/// What the runner writes at the start of the disk it attaches.
const BLK_HEADER: &[u8] = b"IOGUARD-BLK sectors=";
const ETHERTYPE_LOCAL: [u8; 2] = [0x88, 0xb5];

/// Runs `f` on the device set, built on first use. If the check is abandoned meanwhile,
/// every device is reset and the pool taken back before anything else runs.
pub(super) fn with_bus(ctx: &Ctx, f: impl FnOnce(&mut Bus) -> Outcome) -> Outcome {
    ctx.on_abandon(virtio::abandon);
    let mut lock = virtio::bus(ctx.platform, ctx.hv.mem_sharer());
    match lock.as_mut() {
        Some(bus) => f(bus),
        None => Outcome::fail("the virtio device set could not be built"),
    }
}

fn kind_name(k: Option<DeviceType>) -> String {
    match k {
        Some(DeviceType::Block) => "blk".into(),
        Some(DeviceType::EntropySource) => "rng".into(),
        Some(DeviceType::Console) => "console".into(),
        Some(DeviceType::Network) => "net".into(),
        Some(other) => format!("{other:?}"),
        None => "unknown".into(),
    }
}

/// Why there is no `what` device to check: a FAIL when some device in the tree could not be
/// set up (it may be that one), a SKIP when the tree simply has none.
fn missing(bus: &Bus, what: &str) -> Outcome {
    let broken = bus
        .found
        .iter()
        .find_map(|f| f.result.as_ref().err().map(|e| (f.at, e)));
    match (broken, &bus.pool) {
        (_, Some(Err(e))) => Outcome::fail(format_args!("no {what} driven: the DMA pool: {e}")),
        (Some((at, e)), _) if !matches!(e, virtio::ProbeError::NotDriven(_)) => {
            Outcome::fail(format_args!("no {what} driven: {at}: {e}"))
        }
        _ => Outcome::skip(format_args!("no {what} device")),
    }
}

/// A seed that differs between runs: the patterns must be what this run wrote.
fn nonce() -> u64 {
    sysreg::counter()
}

/// Every virtio-mmio node and virtio PCI function in the tree is probed; INFO lists them.
pub fn discovered(ctx: &Ctx) -> Outcome {
    with_bus(ctx, |bus| {
        for f in &bus.found {
            match &f.result {
                Ok(()) => ctx.info(format_args!("{}: {} driven", f.at, kind_name(f.kind))),
                Err(e) => ctx.info(format_args!("{}: {}: {e}", f.at, kind_name(f.kind))),
            }
        }
        let p = &bus.pool_wanted;
        match &bus.pool {
            None => {}
            Some(Ok(info)) => ctx.info(format_args!(
                "DMA pool {} ({:#x} bytes {}){}",
                info.region,
                p.0,
                p.1,
                match info.granule {
                    Some(g) => format!(", shared in granules of {g:#x}"),
                    None => String::from(", not shared (no memory sharing)"),
                }
            )),
            Some(Err(e)) => ctx.info(format_args!("DMA pool: {e}")),
        }
        let mut bad: Vec<String> = Vec::new();
        if let Some(why) = virtio::take_setup_failure() {
            bad.push(format!("{}: {why}", virtio::SETUP));
        }
        if let Some(Err(e)) = &bus.pool {
            bad.push(format!("DMA pool: {e}"));
        }
        bad.extend(bus.found.iter().filter_map(|f| match &f.result {
            Err(virtio::ProbeError::NotDriven(_)) | Ok(()) => None,
            Err(e) => Some(format!("{}: {e}", f.at)),
        }));
        bad.extend(bus.pci_errors.iter().map(|(p, e)| format!("{p}: {e}")));
        if !bad.is_empty() {
            return Outcome::fail(bad.join("; "));
        }
        if bus.found.is_empty() {
            return Outcome::skip(format_args!(
                "no virtio device attached ({} virtio-mmio windows, {} PCI bridges, all empty)",
                ctx.platform.virtio_mmio.len(),
                ctx.platform.pci.len()
            ));
        }
        let count = |t| bus.found.iter().filter(|f| f.kind == Some(t)).count();
        Outcome::pass(format_args!(
            "{} devices (blk {}, rng {}, console {}, net {}); {} empty virtio-mmio windows",
            bus.found.len(),
            count(DeviceType::Block),
            count(DeviceType::EntropySource),
            count(DeviceType::Console),
            count(DeviceType::Network),
            bus.empty_mmio
        ))
    })
}

/// Each transport window, configuration space and BAR page was ioremapped (registered)
/// before its first access.
pub fn registered(ctx: &Ctx) -> Outcome {
    with_bus(ctx, |bus| {
        let windows: Vec<(u64, u64)> = bus
            .found
            .iter()
            .filter(|f| f.result.is_ok())
            .flat_map(|f| f.windows.iter().copied())
            .collect();
        if windows.is_empty() {
            return Outcome::skip("no virtio device driven");
        }
        let unregistered: Vec<String> = windows
            .iter()
            .filter(|(b, s)| ioremap::registered(*b, *s) == Some(false))
            .map(|(b, s)| format!("[{b:#x}, {:#x})", b + s))
            .collect();
        if !unregistered.is_empty() {
            return Outcome::fail(format_args!(
                "windows in use but not registered with the guard: {}",
                unregistered.join(", ")
            ));
        }
        let how = match ioremap::guard_granule() {
            Some(g) => format!("registered with the guard in granules of {g:#x}"),
            None => format!(
                "profile {} has no guard: mapped in stage 1 only",
                ctx.hv.profile
            ),
        };
        Outcome::pass(format_args!(
            "{} windows of {} transports went through ioremap before their first access, {how}; \
             {} PCI configuration pages likewise during the scan",
            windows.len(),
            bus.found.iter().filter(|f| f.result.is_ok()).count(),
            bus.config_pages
        ))
    })
}

fn pattern(seed: u64, sector: u64, buf: &mut [u8]) {
    let mut x = seed ^ sector.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in buf.iter_mut() {
        // xorshift: cheap, and no two sectors or runs alike.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// The capacity the runner wrote in the disk's first sector, if it did.
fn header_sectors(first: &[u8]) -> Option<u64> {
    let rest = first.strip_prefix(BLK_HEADER)?;
    let digits: &[u8] = rest.split(|b| !b.is_ascii_digit()).next()?;
    core::str::from_utf8(digits).ok()?.parse().ok()
}

/// Write a pattern to sectors spread over the disk, read back, compare; capacity matches.
pub fn blk_rw(ctx: &Ctx) -> Outcome {
    with_bus(ctx, |bus| {
        let Some(blk) = bus.blk.first_mut() else {
            return missing(bus, "virtio-blk");
        };
        let cap = blk.capacity();
        if cap < 2 * RUN {
            return Outcome::fail(format_args!("capacity {cap} sectors: too small to test"));
        }
        let mut first = vec![0u8; 512];
        if let Err(e) = blk.read(0, &mut first) {
            return Outcome::fail(format_args!("reading sector 0: {e}"));
        }
        let capacity = match header_sectors(&first) {
            Some(n) if n == cap => format!("capacity {cap} sectors, as the host wrote"),
            Some(n) => {
                return Outcome::fail(format_args!(
                    "capacity {cap} sectors, but the host wrote {n} in sector 0"
                ))
            }
            None => format!("capacity {cap} sectors (no host header to compare with)"),
        };
        let last = (cap - RUN) & !(RUN - 1);
        let sectors = [
            RUN,
            (cap / 3) & !(RUN - 1),
            (2 * cap / 3) & !(RUN - 1),
            last,
        ];
        let seed = nonce();
        let len = (RUN * 512) as usize;
        for &s in &sectors {
            let mut out = vec![0u8; len];
            pattern(seed, s, &mut out);
            if let Err(e) = blk.write(s, &mut out) {
                return Outcome::fail(format_args!("writing sectors {s}..{}: {e}", s + RUN));
            }
        }
        for &s in &sectors {
            let mut want = vec![0u8; len];
            pattern(seed, s, &mut want);
            let mut got = vec![0u8; len];
            if let Err(e) = blk.read(s, &mut got) {
                return Outcome::fail(format_args!("reading sectors {s}..{}: {e}", s + RUN));
            }
            if let Some(i) = want.iter().zip(&got).position(|(a, b)| a != b) {
                return Outcome::fail(format_args!(
                    "sector {}: byte {} read back {:#04x}, written {:#04x}",
                    s + i as u64 / 512,
                    i % 512,
                    got[i],
                    want[i]
                ));
            }
        }
        Outcome::pass(format_args!(
            "{} KiB written and read back intact at sectors {sectors:?} ({} requests); {capacity}",
            sectors.len() * len / 1024,
            1 + 2 * sectors.len()
        ))
    })
}

/// A line written through virtio-console arrives on the host side.
pub fn console(ctx: &Ctx) -> Outcome {
    with_bus(ctx, |bus| {
        let line = format!(
            "ioguard: virtio-console: a line from the guest, nonce {:#x}\n",
            nonce()
        );
        // The device carrying the suite's lines, if one does; else the first one.
        let written = match virtio::output::write(&line) {
            Some(r) => r,
            None if virtio::output::location().is_some() => {
                return Outcome::fail(
                    "the virtio-console carrying the suite's lines was given up (guard: console says why)",
                )
            }
            None => match bus.console.first_mut() {
                Some(con) => con.write(line.as_bytes()),
                None => return missing(bus, "virtio-console"),
            },
        };
        match written {
            Ok(()) => Outcome::pass(format_args!(
                "the device took the line '{}' ({} bytes, one request)",
                line.trim_end(),
                line.len()
            )),
            Err(e) => Outcome::fail(format_args!("writing a line: {e}")),
        }
    })
}

/// Entropy arrives, and two requests differ.
pub fn rng(ctx: &Ctx) -> Outcome {
    with_bus(ctx, |bus| {
        let Some(rng) = bus.rng.first_mut() else {
            return missing(bus, "virtio-rng");
        };
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        for buf in [&mut a, &mut b] {
            match rng.fill(buf) {
                Ok(32) => {}
                Ok(n) => return Outcome::fail(format_args!("asked for 32 bytes, got {n}")),
                Err(e) => return Outcome::fail(format_args!("requesting entropy: {e}")),
            }
        }
        if a == [0; 32] || b == [0; 32] {
            return Outcome::fail("the device answered 32 zero bytes");
        }
        if a == b {
            return Outcome::fail("two requests returned the same 32 bytes");
        }
        Outcome::pass(format_args!(
            "two requests of 32 bytes, different: {:02x}{:02x}{:02x}{:02x}.. and {:02x}{:02x}{:02x}{:02x}..",
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]
        ))
    })
}

fn frame(from: &Net, to: &Net, header: usize, seed: u64) -> Vec<u8> {
    let mut f = vec![0u8; header];
    f.extend_from_slice(&to.mac());
    f.extend_from_slice(&from.mac());
    f.extend_from_slice(&ETHERTYPE_LOCAL);
    let mut payload = vec![0u8; 64];
    pattern(seed, 0, &mut payload);
    f.extend_from_slice(&payload);
    f
}

/// Two NICs on one QEMU hub: a frame sent on one arrives intact on the other.
pub fn net(ctx: &Ctx) -> Outcome {
    with_bus(ctx, |bus| {
        let n = bus.net.len();
        if n < 2 {
            return match missing(bus, "second virtio-net") {
                skip if skip.verdict == crate::report::Verdict::Skip => Outcome::skip(
                    format_args!("{n} virtio-net devices: the check needs two on one hub"),
                ),
                fail => fail,
            };
        }
        let [a, b, ..] = bus.net.as_mut_slice() else {
            return Outcome::fail("two virtio-net devices counted, not found");
        };
        let header = match a.header_len() {
            Ok(h) => h,
            Err(e) => return Outcome::fail(format_args!("NIC header: {e}")),
        };
        let mut sent = frame(a, b, header, nonce());
        if let Err(e) = a.fill_header(&mut sent) {
            return Outcome::fail(format_args!("NIC header: {e}"));
        }
        let mut buf = vec![0u8; 2048];
        let (hdr, len) = match devices::exchange(a, b, &sent, &mut buf) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::fail(format_args!("sending a frame from NIC 0 to NIC 1: {e}"))
            }
        };
        let got = buf.get(hdr..hdr + len).unwrap_or(&[]);
        let want = &sent[header..];
        if got.get(..want.len()) != Some(want) {
            return Outcome::fail(format_args!(
                "NIC 1 received {len} bytes that are not the {} bytes NIC 0 sent",
                want.len()
            ));
        }
        Outcome::pass(format_args!(
            "a {}-byte frame from {} arrived intact at {}",
            want.len(),
            mac(&a.mac()),
            mac(&b.mac())
        ))
    })
}

fn mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// One request on every device that takes one without side effects: blk reads its first
/// sector, rng gives 16 bytes. Returns how many requests were made, or the first error.
fn exercise(bus: &mut Bus) -> Result<usize, String> {
    let mut n = 0;
    for blk in &mut bus.blk {
        let mut s = vec![0u8; 512];
        blk.read(0, &mut s).map_err(|e| format!("blk read: {e}"))?;
        n += 1;
    }
    for rng in &mut bus.rng {
        let mut b = [0u8; 16];
        rng.fill(&mut b).map_err(|e| format!("rng: {e}"))?;
        n += 1;
    }
    Ok(n)
}

/// The whole virtio run caused no unexpected abort.
pub fn no_stray(ctx: &Ctx) -> Outcome {
    with_bus(ctx, |bus| {
        if bus.found.is_empty() {
            return Outcome::skip("no virtio device attached");
        }
        let requests = match exercise(bus) {
            Ok(n) => n,
            Err(e) => return Outcome::fail(e),
        };
        let abandoned = virtio::abandoned();
        if abandoned > 0 {
            return Outcome::fail(format_args!(
                "{abandoned} virtio checks were ended by an unexpected exception (see their FAIL lines)"
            ));
        }
        Outcome::pass(format_args!(
            "set-up and every virtio check so far, and {requests} more requests now, without an \
             unexpected abort; {} notifies since the devices were set up",
            virtio::notifies() - bus.notifies_at_setup
        ))
    })
}

/// Under a MEM_SHARE hypervisor every DMA buffer and queue the device saw lies in shared
/// memory, and no private page was ever shared.
pub fn dma_shared(ctx: &Ctx) -> Outcome {
    with_bus(ctx, |bus| {
        if bus.found.iter().all(|f| f.result.is_err()) {
            return Outcome::skip("no virtio device driven");
        }
        if let Err(e) = exercise(bus) {
            return Outcome::fail(e);
        }
        let [devices, output] = virtio::ledgers();
        let Some((mut tally, mut violations, sharing)) = devices else {
            return Outcome::fail("no DMA pool");
        };
        // The console carrying the suite's lines has its own pool, judged alike.
        if let Some((t, v, _)) = output {
            tally.queues += t.queues;
            tally.bounces += t.bounces;
            tally.direct += t.direct;
            tally.bytes += t.bytes;
            tally.shares += t.shares;
            tally.violations += t.violations;
            violations.extend(v);
        }
        if !sharing {
            return Outcome::skip(format_args!(
                "profile {} has no memory sharing: {} buffers passed to the devices unchanged",
                ctx.hv.profile, tally.direct
            ));
        }
        if !violations.is_empty() {
            let list: Vec<String> = violations.iter().map(|v| format!("{v}")).collect();
            return Outcome::fail(format_args!(
                "{} violations: {}",
                tally.violations,
                list.join("; ")
            ));
        }
        Outcome::pass(format_args!(
            "{} queue areas and {} bounce buffers ({} bytes) all in the {} granules the pools shared; \
             nothing shared outside them",
            tally.queues, tally.bounces, tally.bytes, tally.shares
        ))
    })
}

/// When the devices are dropped, every pool page is MEM_UNSHAREd again.
pub fn pool_unshared(ctx: &Ctx) -> Outcome {
    // Build the set if this check runs alone, so that there is a pool to take back.
    drop(virtio::bus(ctx.platform, ctx.hv.mem_sharer()));
    let Some((bus, teardown)) = virtio::drop_bus() else {
        return Outcome::fail("no virtio device set to drop");
    };
    let Some(t) = teardown else {
        return match bus.pool {
            None => Outcome::skip("no virtio device: no DMA pool was needed"),
            Some(Err(e)) => Outcome::fail(format_args!("no DMA pool: {e}")),
            Some(Ok(_)) => Outcome::fail("the DMA pool was gone before the devices were dropped"),
        };
    };
    if bus
        .pool
        .as_ref()
        .is_some_and(|p| p.as_ref().is_ok_and(|p| p.granule.is_none()))
    {
        return Outcome::skip(format_args!(
            "profile {} has no memory sharing: nothing to unshare",
            ctx.hv.profile
        ));
    }
    if !t.failures.is_empty() {
        let list: Vec<String> = t.failures.iter().map(|e| format!("{e}")).collect();
        return Outcome::fail(format_args!(
            "{} of {} granules not taken back: {}",
            t.failures.len(),
            t.tally.shares,
            list.join("; ")
        ));
    }
    if t.still_shared != 0 || t.unshared != t.tally.shares {
        return Outcome::fail(format_args!(
            "{} granules shared, {} unshared, {} still shared",
            t.tally.shares, t.unshared, t.still_shared
        ));
    }
    let kept = match crate::kernel::virtio::pool::region(crate::kernel::virtio::pool::Which::Output)
    {
        Some(r) => format!("; the console carrying the suite's lines keeps its own {r} to the end"),
        None => String::new(),
    };
    Outcome::pass(format_args!(
        "devices reset and their windows unregistered; all {} pool granules MEM_UNSHAREd{kept}",
        t.unshared
    ))
}
