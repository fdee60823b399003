//! virtio-console (virtio 1.x §5.3), one port, no features: port 0's transmit queue goes
//! to the host's stdout; its receive queue is never filled.

use std::io::Write;

use virtio_queue::Queue;

use super::queue::Dma;
use super::{VirtioDevice, VirtioError, ID_CONSOLE};

const TRANSMIT: usize = 1;

pub struct Console<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> Console<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
    #[cfg(test)]
    pub fn out(&self) -> &W {
        &self.out
    }
}

impl<W: Write + Send> VirtioDevice for Console<W> {
    fn device_id(&self) -> u32 {
        ID_CONSOLE
    }
    fn name(&self) -> &'static str {
        "console"
    }
    fn queue_count(&self) -> usize {
        2
    }
    fn config(&self) -> Vec<u8> {
        // cols, rows, max_nr_ports, emerg_wr: meaningful only with features not offered.
        vec![0; 12]
    }
    fn process(&mut self, index: usize, q: &mut Queue, dma: &Dma) -> Result<bool, VirtioError> {
        if index != TRANSMIT {
            // Receive buffers stay with the device: there is never input.
            return Ok(false);
        }
        let mut any = false;
        while let Some(c) = dma.pop(q)? {
            let bytes = dma.read_all(&c)?;
            // Best effort: a closed stdout must not stall the guest.
            let _ = self.out.write_all(&bytes);
            let _ = self.out.flush();
            dma.complete(q, &c, 0)?;
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
    fn transmits_lines_and_keeps_receive_buffers() {
        let d = dma(None);
        let mut q = queue(&d);
        let mut c = Console::new(Vec::new());
        put(&d, RAM + 0x8000, b"PASS: x\n");
        offer(&d, 0, &[(RAM + 0x8000, 8, false)]);
        assert!(!c.process(0, &mut q, &d).unwrap(), "receive queue");
        assert_eq!(used(&d).0, 0);
        assert!(c.process(1, &mut q, &d).unwrap());
        assert_eq!(c.out(), b"PASS: x\n");
        assert_eq!(used(&d), (1, vec![(0, 0)]));
    }
}
