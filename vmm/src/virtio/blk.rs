//! virtio-blk (virtio 1.x §5.2): one request queue, IN, OUT, FLUSH and GET_ID.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use virtio_queue::Queue;

use super::queue::{Chain, Dma};
use super::{VirtioDevice, VirtioError, ID_BLOCK};

pub const SECTOR: u64 = 512;
/// The default disk: 8 MiB in memory, as the runner's default blk file.
pub const DEFAULT_DISK: u64 = 8 << 20;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
const HEADER: usize = 16;
const ID_LEN: usize = 20;

/// The first bytes of the default disk: the capacity the guest's `virtio: blk-rw`
/// compares the device's with (the runner writes the same line into its blk files).
pub fn header(bytes: u64) -> String {
    format!("IOGUARD-BLK sectors={}\n", bytes / SECTOR)
}

pub trait Disk: Send {
    fn len(&self) -> u64;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

pub struct MemDisk(pub Vec<u8>);

impl MemDisk {
    /// Zeros but for [`header`] at the start.
    pub fn with_header(bytes: u64) -> Self {
        let mut v = vec![0u8; bytes as usize];
        let h = header(bytes);
        v[..h.len()].copy_from_slice(h.as_bytes());
        Self(v)
    }
}

impl Disk for MemDisk {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let s = self.0.get(offset as usize..offset as usize + buf.len());
        buf.copy_from_slice(s.ok_or(io::ErrorKind::UnexpectedEof)?);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let s = self
            .0
            .get_mut(offset as usize..offset as usize + data.len());
        s.ok_or(io::ErrorKind::UnexpectedEof)?.copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct FileDisk {
    file: File,
    len: u64,
}

impl FileDisk {
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        let file = File::options().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }
}

impl Disk for FileDisk {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

pub struct Blk {
    disk: Box<dyn Disk>,
}

impl Blk {
    pub fn new(disk: Box<dyn Disk>) -> Self {
        Self { disk }
    }

    fn capacity(&self) -> u64 {
        self.disk.len() / SECTOR
    }

    /// Carries out one request; returns the bytes for the writable part (data, then the
    /// status byte last) and where in it they go.
    fn request(&mut self, dma: &Dma, c: &Chain) -> Result<(u64, Vec<u8>), VirtioError> {
        let readable = dma.read_all(c)?;
        let writable = c.writable_len();
        if readable.len() < HEADER || writable == 0 {
            return Err(VirtioError::Chain(
                "blk request without header or status byte",
            ));
        }
        let kind = u32::from_le_bytes([readable[0], readable[1], readable[2], readable[3]]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&readable[8..16]);
        let sector = u64::from_le_bytes(s);
        let data_in = writable - 1;
        let within = |len: u64| {
            len.is_multiple_of(SECTOR)
                && sector
                    .checked_mul(SECTOR)
                    .and_then(|start| start.checked_add(len))
                    .is_some_and(|end| end <= self.capacity() * SECTOR)
        };
        let status_only = |st: u8| Ok((data_in, vec![st]));
        match kind {
            T_IN => {
                if !within(data_in) {
                    return status_only(S_IOERR);
                }
                let mut out = vec![0u8; data_in as usize + 1];
                let st = match self
                    .disk
                    .read_at(sector * SECTOR, &mut out[..data_in as usize])
                {
                    Ok(()) => S_OK,
                    Err(_) => S_IOERR,
                };
                out[data_in as usize] = st;
                Ok((0, out))
            }
            T_OUT => {
                let data = &readable[HEADER..];
                if !within(data.len() as u64) {
                    return status_only(S_IOERR);
                }
                match self.disk.write_at(sector * SECTOR, data) {
                    Ok(()) => status_only(S_OK),
                    Err(_) => status_only(S_IOERR),
                }
            }
            T_FLUSH => status_only(match self.disk.flush() {
                Ok(()) => S_OK,
                Err(_) => S_IOERR,
            }),
            T_GET_ID => {
                let mut id = [0u8; ID_LEN];
                let name = b"ioguard-vmm";
                id[..name.len()].copy_from_slice(name);
                let n = (data_in as usize).min(ID_LEN);
                let mut out = id[..n].to_vec();
                out.resize(data_in as usize, 0);
                out.push(S_OK);
                Ok((0, out))
            }
            _ => status_only(S_UNSUPP),
        }
    }
}

impl VirtioDevice for Blk {
    fn device_id(&self) -> u32 {
        ID_BLOCK
    }
    fn name(&self) -> &'static str {
        "blk"
    }
    fn queue_count(&self) -> usize {
        1
    }
    fn config(&self) -> Vec<u8> {
        // capacity (le64) is the only field: no feature offers the others.
        self.capacity().to_le_bytes().to_vec()
    }
    fn process(&mut self, _: usize, q: &mut Queue, dma: &Dma) -> Result<bool, VirtioError> {
        let mut any = false;
        while let Some(c) = dma.pop(q)? {
            let (at, bytes) = self.request(dma, &c)?;
            let n = dma.write_at(&c, at, &bytes)?;
            let used = if at == 0 { n } else { 1 };
            dma.complete(q, &c, used as u32)?;
            any = true;
        }
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue::driver::*;
    use super::*;

    const HDR: u64 = RAM + 0x8000;
    const DATA: u64 = RAM + 0x9000;
    const ST: u64 = RAM + 0xa000;

    fn req(d: &Dma, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        put(d, HDR, &h);
        put(d, ST, &[0xff]);
    }

    fn blk() -> Blk {
        Blk::new(Box::new(MemDisk::with_header(DEFAULT_DISK)))
    }

    #[test]
    fn capacity_and_header_agree() {
        let b = blk();
        assert_eq!(b.config(), 16384u64.to_le_bytes());
        assert_eq!(header(DEFAULT_DISK), "IOGUARD-BLK sectors=16384\n");
    }

    #[test]
    fn reads_sector_zero_with_its_header() {
        let d = dma(None);
        let mut q = queue(&d);
        let mut b = blk();
        req(&d, T_IN, 0);
        offer(&d, 0, &[(HDR, 16, false), (DATA, 512, true), (ST, 1, true)]);
        assert!(b.process(0, &mut q, &d).unwrap());
        assert!(bytes(&d, DATA, 512).starts_with(b"IOGUARD-BLK sectors=16384\n"));
        assert_eq!(bytes(&d, ST, 1), [S_OK]);
        assert_eq!(used(&d), (1, vec![(0, 513)]));
    }

    #[test]
    fn writes_then_reads_back() {
        let d = dma(None);
        let mut q = queue(&d);
        let mut b = blk();
        let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        put(&d, DATA, &pattern);
        req(&d, T_OUT, 16376);
        offer(
            &d,
            0,
            &[(HDR, 16, false), (DATA, 4096, false), (ST, 1, true)],
        );
        b.process(0, &mut q, &d).unwrap();
        assert_eq!(bytes(&d, ST, 1), [S_OK]);
        put(&d, DATA, &[0; 4096]);
        req(&d, T_IN, 16376);
        offer(
            &d,
            3,
            &[(HDR, 16, false), (DATA, 4096, true), (ST, 1, true)],
        );
        b.process(0, &mut q, &d).unwrap();
        assert_eq!(bytes(&d, DATA, 4096), pattern);
        assert_eq!(used(&d).1, vec![(0, 1), (3, 4097)]);
    }

    #[test]
    fn past_the_end_is_an_io_error_unknown_is_unsupported() {
        let d = dma(None);
        let mut q = queue(&d);
        let mut b = blk();
        req(&d, T_IN, 16383);
        offer(
            &d,
            0,
            &[(HDR, 16, false), (DATA, 1024, true), (ST, 1, true)],
        );
        b.process(0, &mut q, &d).unwrap();
        assert_eq!(bytes(&d, ST, 1), [S_IOERR]);
        req(&d, 99, 0);
        offer(&d, 3, &[(HDR, 16, false), (ST, 1, true)]);
        b.process(0, &mut q, &d).unwrap();
        assert_eq!(bytes(&d, ST, 1), [S_UNSUPP]);
        req(&d, T_IN, u64::MAX / 2);
        offer(&d, 5, &[(HDR, 16, false), (DATA, 512, true), (ST, 1, true)]);
        b.process(0, &mut q, &d).unwrap();
        assert_eq!(bytes(&d, ST, 1), [S_IOERR]);
    }

    #[test]
    fn get_id_and_flush() {
        let d = dma(None);
        let mut q = queue(&d);
        let mut b = blk();
        req(&d, T_GET_ID, 0);
        offer(&d, 0, &[(HDR, 16, false), (DATA, 20, true), (ST, 1, true)]);
        b.process(0, &mut q, &d).unwrap();
        assert!(bytes(&d, DATA, 20).starts_with(b"ioguard-vmm\0"));
        req(&d, T_FLUSH, 0);
        offer(&d, 3, &[(HDR, 16, false), (ST, 1, true)]);
        b.process(0, &mut q, &d).unwrap();
        assert_eq!(bytes(&d, ST, 1), [S_OK]);
    }

    #[test]
    fn a_request_without_status_is_a_device_error() {
        let d = dma(None);
        let mut q = queue(&d);
        let mut b = blk();
        req(&d, T_IN, 0);
        offer(&d, 0, &[(HDR, 16, false)]);
        assert!(matches!(
            b.process(0, &mut q, &d),
            Err(VirtioError::Chain(_))
        ));
    }

    #[test]
    fn file_disk_round_trip() {
        let path =
            std::env::temp_dir().join(format!("ioguard-vmm-test-{}.img", std::process::id()));
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let mut f = FileDisk::open(&path).unwrap();
        assert_eq!(f.len(), 4096);
        f.write_at(512, b"hello").unwrap();
        let mut back = [0u8; 5];
        f.read_at(512, &mut back).unwrap();
        assert_eq!(&back, b"hello");
        assert!(f.read_at(4095, &mut back).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
