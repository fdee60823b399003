//! virtio-rng (virtio 1.x §5.4): fills each writable buffer with host entropy.

use std::io::Read;

use virtio_queue::Queue;

use super::queue::Dma;
use super::{VirtioDevice, VirtioError, ID_RNG};

/// Most bytes given per request: a driver asking for more gets this much (the used length
/// says so), which bounds the VMM's work per notify.
const MAX_REQUEST: u64 = 64 * 1024;

/// Host entropy: getrandom(2), else /dev/urandom.
pub fn host_entropy(buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`, which is
        // valid and exclusively borrowed for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n <= 0 {
            break;
        }
        done += n as usize;
    }
    done == buf.len()
        || std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(buf))
            .is_ok()
}

pub struct Rng {
    entropy: fn(&mut [u8]) -> bool,
}

impl Rng {
    pub fn new(entropy: fn(&mut [u8]) -> bool) -> Self {
        Self { entropy }
    }
}

impl VirtioDevice for Rng {
    fn device_id(&self) -> u32 {
        ID_RNG
    }
    fn name(&self) -> &'static str {
        "rng"
    }
    fn queue_count(&self) -> usize {
        1
    }
    fn process(&mut self, _: usize, q: &mut Queue, dma: &Dma) -> Result<bool, VirtioError> {
        let mut any = false;
        while let Some(c) = dma.pop(q)? {
            let mut buf = vec![0u8; c.writable_len().min(MAX_REQUEST) as usize];
            // No entropy: the request is used with length 0 rather than with zeros.
            let n = if (self.entropy)(&mut buf) {
                dma.write_at(&c, 0, &buf)?
            } else {
                0
            };
            dma.complete(q, &c, n as u32)?;
            any = true;
        }
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue::driver::*;
    use super::*;

    #[test]
    fn fills_the_buffer_with_entropy() {
        let d = dma(None);
        let mut q = queue(&d);
        let mut r = Rng::new(host_entropy);
        offer(&d, 0, &[(RAM + 0x8000, 64, true)]);
        assert!(r.process(0, &mut q, &d).unwrap());
        assert_eq!(used(&d), (1, vec![(0, 64)]));
        assert_ne!(bytes(&d, RAM + 0x8000, 64), [0u8; 64]);
    }

    #[test]
    fn no_entropy_means_nothing_written() {
        let d = dma(None);
        let mut q = queue(&d);
        let mut r = Rng::new(|_| false);
        offer(&d, 0, &[(RAM + 0x8000, 64, true)]);
        r.process(0, &mut q, &d).unwrap();
        assert_eq!(used(&d), (1, vec![(0, 0)]));
    }
}
