//! Walking a split queue's descriptor chains with every range checked by the [`Gate`].
//!
//! virtio-queue keeps the ring state (available index, next used slot); the chains are
//! walked here rather than with its `DescriptorChain` iterator because that iterator
//! follows indirect tables and reads descriptors before anything could check that their
//! pages are the host's to read, which on a protected VM would fault the VMM.

use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::dma::Gate;
use super::VirtioError;

const DESC_SIZE: u64 = 16;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
/// Most bytes one chain may describe: the devices copy a chain's readable part into a
/// buffer of the VMM's, and 256 descriptors of all of RAM each must not exhaust the host.
pub const MAX_CHAIN_BYTES: u64 = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    /// Device-writable (VIRTQ_DESC_F_WRITE).
    pub write: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub bufs: Vec<Buf>,
}

impl Chain {
    pub fn readable(&self) -> impl Iterator<Item = &Buf> {
        self.bufs.iter().filter(|b| !b.write)
    }
    pub fn writable(&self) -> impl Iterator<Item = &Buf> {
        self.bufs.iter().filter(|b| b.write)
    }
    pub fn writable_len(&self) -> u64 {
        self.writable().map(|b| u64::from(b.len)).sum()
    }
}

/// Guest memory as a device sees it: through the gate.
pub struct Dma {
    pub mem: Arc<GuestMemoryMmap>,
    pub gate: Arc<Gate>,
}

impl Dma {
    fn check(&self, addr: u64, len: u64) -> Result<(), VirtioError> {
        Ok(self.gate.check(&self.mem, addr, len)?)
    }

    /// Checks the queue's three areas, before virtio-queue reads or writes them.
    fn check_rings(&self, q: &Queue) -> Result<(), VirtioError> {
        if !q.ready() {
            return Err(VirtioError::Queue(virtio_queue::Error::QueueNotReady));
        }
        let n = u64::from(q.size());
        self.check(q.desc_table(), DESC_SIZE * n)?;
        self.check(q.avail_ring(), 6 + 2 * n)?;
        self.check(q.used_ring(), 6 + 8 * n)?;
        Ok(())
    }

    fn descriptor(&self, table: u64, index: u16) -> Result<(u64, u32, u16, u16), VirtioError> {
        let at = table + DESC_SIZE * u64::from(index);
        self.check(at, DESC_SIZE)?;
        let mut d = [0u8; 16];
        self.mem
            .read_slice(&mut d, GuestAddress(at))
            .map_err(|_| VirtioError::Chain("descriptor outside RAM"))?;
        let le64 = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        let le32 = u32::from_le_bytes([d[8], d[9], d[10], d[11]]);
        Ok((
            le64,
            le32,
            u16::from_le_bytes([d[12], d[13]]),
            u16::from_le_bytes([d[14], d[15]]),
        ))
    }

    /// The next available chain of `q`, its buffers checked; None when the driver has
    /// made nothing more available.
    pub fn pop(&self, q: &mut Queue) -> Result<Option<Chain>, VirtioError> {
        self.check_rings(q)?;
        let head = {
            let mut it = q.iter(&*self.mem)?;
            match it.next() {
                Some(c) => c.head_index(),
                None => return Ok(None),
            }
        };
        let size = q.size();
        let mut bufs = Vec::new();
        let mut index = head;
        let mut total = 0u64;
        loop {
            if index >= size {
                return Err(VirtioError::Chain("descriptor index beyond the queue"));
            }
            if bufs.len() >= usize::from(size) {
                return Err(VirtioError::Chain("longer than the queue (a loop?)"));
            }
            let (addr, len, flags, next) = self.descriptor(q.desc_table(), index)?;
            if flags & F_INDIRECT != 0 {
                return Err(VirtioError::Chain("indirect descriptor (not offered)"));
            }
            total += u64::from(len);
            if total > MAX_CHAIN_BYTES {
                return Err(VirtioError::Chain("more than 16 MiB of buffers"));
            }
            self.check(addr, u64::from(len))?;
            bufs.push(Buf {
                addr,
                len,
                write: flags & F_WRITE != 0,
            });
            if flags & F_NEXT == 0 {
                break;
            }
            index = next;
        }
        Ok(Some(Chain { head, bufs }))
    }

    /// Every byte of the chain's readable buffers, in order.
    pub fn read_all(&self, c: &Chain) -> Result<Vec<u8>, VirtioError> {
        let mut out = Vec::new();
        for b in c.readable() {
            let start = out.len();
            out.resize(start + b.len as usize, 0);
            self.mem
                .read_slice(&mut out[start..], GuestAddress(b.addr))
                .map_err(|_| VirtioError::Chain("buffer outside RAM"))?;
        }
        Ok(out)
    }

    /// Writes `data` at byte `offset` of the chain's writable buffers taken as one area;
    /// returns how many bytes fit.
    pub fn write_at(
        &self,
        c: &Chain,
        mut offset: u64,
        mut data: &[u8],
    ) -> Result<usize, VirtioError> {
        let mut written = 0;
        for b in c.writable() {
            if data.is_empty() {
                break;
            }
            let len = u64::from(b.len);
            if offset >= len {
                offset -= len;
                continue;
            }
            let n = ((len - offset) as usize).min(data.len());
            self.mem
                .write_slice(&data[..n], GuestAddress(b.addr + offset))
                .map_err(|_| VirtioError::Chain("buffer outside RAM"))?;
            written += n;
            data = &data[n..];
            offset = 0;
        }
        Ok(written)
    }

    /// Hands the chain back to the driver with `len` bytes written.
    pub fn complete(&self, q: &mut Queue, c: &Chain, len: u32) -> Result<(), VirtioError> {
        Ok(q.add_used(&*self.mem, c.head, len)?)
    }
}

/// A driver's side of a split queue, for the devices' tests: lays out rings and chains in
/// guest memory as virtio-drivers would.
#[cfg(test)]
pub mod driver {
    use super::*;
    use vm_memory::Address;

    /// A device for the transports' tests: uses every chain with the length of its
    /// writable part and records each chain's head.
    pub struct Sink {
        pub id: u32,
        pub features: u64,
        pub heads: std::sync::Arc<std::sync::Mutex<Vec<u16>>>,
    }

    impl crate::virtio::VirtioDevice for Sink {
        fn device_id(&self) -> u32 {
            self.id
        }
        fn name(&self) -> &'static str {
            "sink"
        }
        fn features(&self) -> u64 {
            self.features
        }
        fn queue_count(&self) -> usize {
            2
        }
        fn config(&self) -> Vec<u8> {
            vec![1, 2, 3, 4, 5]
        }
        fn process(
            &mut self,
            _: usize,
            q: &mut Queue,
            dma: &Dma,
        ) -> Result<bool, crate::virtio::VirtioError> {
            let mut any = false;
            while let Some(c) = dma.pop(q)? {
                self.heads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(c.head);
                dma.complete(q, &c, c.writable_len() as u32)?;
                any = true;
            }
            Ok(any)
        }
    }

    pub const RAM: u64 = 0x4000_0000;
    pub const DESC: u64 = RAM + 0x1000;
    pub const AVAIL: u64 = RAM + 0x2000;
    pub const USED: u64 = RAM + 0x3000;
    pub const SIZE: u16 = 8;
    pub const RAM_SIZE: u64 = 4 << 20;

    pub fn dma(probe: Option<super::super::dma::Probe>) -> Dma {
        Dma {
            mem: Arc::new(
                GuestMemoryMmap::from_ranges(&[(GuestAddress(RAM), RAM_SIZE as usize)]).unwrap(),
            ),
            gate: Arc::new(Gate::new(probe)),
        }
    }

    pub fn queue(dma: &Dma) -> Queue {
        let mut q = Queue::new(super::super::QUEUE_MAX).unwrap();
        q.try_set_size(SIZE).unwrap();
        q.try_set_desc_table_address(GuestAddress(DESC)).unwrap();
        q.try_set_avail_ring_address(GuestAddress(AVAIL)).unwrap();
        q.try_set_used_ring_address(GuestAddress(USED)).unwrap();
        q.set_ready(true);
        assert!(q.is_valid(&*dma.mem));
        q
    }

    /// Writes descriptors `first..` for `bufs` (addr, len, device-writable), chained, and
    /// makes the chain available; returns its head.
    pub fn offer(dma: &Dma, first: u16, bufs: &[(u64, u32, bool)]) -> u16 {
        let m = &dma.mem;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let idx = first + i as u16;
            let mut flags = if write { F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            let at = GuestAddress(DESC + 16 * u64::from(idx));
            m.write_obj(addr, at).unwrap();
            m.write_obj(len, at.unchecked_add(8)).unwrap();
            m.write_obj(flags, at.unchecked_add(12)).unwrap();
            m.write_obj(idx + 1, at.unchecked_add(14)).unwrap();
        }
        let avail_idx: u16 = m.read_obj(GuestAddress(AVAIL + 2)).unwrap();
        m.write_obj(
            first,
            GuestAddress(AVAIL + 4 + 2 * u64::from(avail_idx % SIZE)),
        )
        .unwrap();
        m.write_obj(avail_idx.wrapping_add(1), GuestAddress(AVAIL + 2))
            .unwrap();
        first
    }

    /// The used ring's index and its entries so far: (head, len).
    pub fn used(dma: &Dma) -> (u16, Vec<(u32, u32)>) {
        let m = &dma.mem;
        let idx: u16 = m.read_obj(GuestAddress(USED + 2)).unwrap();
        let entries = (0..idx)
            .map(|i| {
                let at = GuestAddress(USED + 4 + 8 * u64::from(i % SIZE));
                (
                    m.read_obj(at).unwrap(),
                    m.read_obj(at.unchecked_add(4)).unwrap(),
                )
            })
            .collect();
        (idx, entries)
    }

    pub fn bytes(dma: &Dma, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        dma.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    pub fn put(dma: &Dma, addr: u64, data: &[u8]) {
        dma.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::driver::*;
    use super::*;
    use vm_memory::Address;

    #[test]
    fn pops_a_chain_with_its_buffers() {
        let d = dma(None);
        let mut q = queue(&d);
        assert_eq!(d.pop(&mut q).unwrap(), None);
        offer(
            &d,
            0,
            &[(RAM + 0x8000, 16, false), (RAM + 0x9000, 512, true)],
        );
        let c = d.pop(&mut q).unwrap().unwrap();
        assert_eq!(c.head, 0);
        assert_eq!(
            c.bufs,
            [
                Buf {
                    addr: RAM + 0x8000,
                    len: 16,
                    write: false
                },
                Buf {
                    addr: RAM + 0x9000,
                    len: 512,
                    write: true
                }
            ]
        );
        assert_eq!(c.writable_len(), 512);
        d.complete(&mut q, &c, 512).unwrap();
        assert_eq!(used(&d), (1, vec![(0, 512)]));
        assert_eq!(d.pop(&mut q).unwrap(), None);
    }

    #[test]
    fn reads_and_writes_across_buffers() {
        let d = dma(None);
        let mut q = queue(&d);
        put(&d, RAM + 0x8000, b"abc");
        put(&d, RAM + 0x8100, b"de");
        offer(
            &d,
            0,
            &[
                (RAM + 0x8000, 3, false),
                (RAM + 0x8100, 2, false),
                (RAM + 0x9000, 2, true),
                (RAM + 0x9100, 4, true),
            ],
        );
        let c = d.pop(&mut q).unwrap().unwrap();
        assert_eq!(d.read_all(&c).unwrap(), b"abcde");
        assert_eq!(d.write_at(&c, 1, b"XYZ").unwrap(), 3);
        assert_eq!(bytes(&d, RAM + 0x9000, 2), [0, b'X']);
        assert_eq!(bytes(&d, RAM + 0x9100, 4), [b'Y', b'Z', 0, 0]);
        assert_eq!(
            d.write_at(&c, 5, b"12345").unwrap(),
            1,
            "only one byte left"
        );
    }

    #[test]
    fn refuses_bad_chains_without_touching_them() {
        let d = dma(None);
        let mut q = queue(&d);
        offer(&d, 0, &[(0x0900_0000, 16, false)]);
        assert!(matches!(
            d.pop(&mut q),
            Err(VirtioError::Dma(
                super::super::dma::DmaError::OutsideRam { .. }
            ))
        ));
        // A chain that loops on itself.
        let mut q = queue(&d);
        let m = &d.mem;
        let at = GuestAddress(DESC + 16 * 3);
        m.write_obj(RAM + 0x8000, at).unwrap();
        m.write_obj(4u32, at.unchecked_add(8)).unwrap();
        m.write_obj(F_NEXT, at.unchecked_add(12)).unwrap();
        m.write_obj(3u16, at.unchecked_add(14)).unwrap();
        m.write_obj(3u16, GuestAddress(AVAIL + 4)).unwrap();
        m.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
        assert!(matches!(d.pop(&mut q), Err(VirtioError::Chain(_))));
    }

    #[test]
    fn refuses_chains_too_long_to_copy() {
        let d = dma(None);
        let mut q = queue(&d);
        // Each buffer is all of RAM: four make 16 MiB, five more than one request may.
        offer(&d, 0, &[(RAM, RAM_SIZE as u32, false); 4]);
        assert_eq!(d.pop(&mut q).unwrap().unwrap().bufs.len(), 4);
        offer(&d, 0, &[(RAM, RAM_SIZE as u32, false); 5]);
        assert!(matches!(d.pop(&mut q), Err(VirtioError::Chain(_))));
    }

    #[test]
    fn refuses_indirect_descriptors() {
        let d = dma(None);
        let mut q = queue(&d);
        offer(&d, 0, &[(RAM + 0x8000, 16, false)]);
        d.mem
            .write_obj(F_INDIRECT, GuestAddress(DESC + 12))
            .unwrap();
        assert!(matches!(d.pop(&mut q), Err(VirtioError::Chain(_))));
    }

    #[test]
    fn a_private_buffer_is_an_error_not_a_fault() {
        let d = dma(Some(Box::new(|p| p != RAM + 0x9000)));
        let mut q = queue(&d);
        offer(&d, 0, &[(RAM + 0x9000, 16, false)]);
        assert!(matches!(
            d.pop(&mut q),
            Err(VirtioError::Dma(super::super::dma::DmaError::Private { page })) if page == RAM + 0x9000
        ));
        // The rings were fine, and are remembered as used by the VMM.
        assert!(d.gate.pages_recent_first().contains(&USED));
    }
}
