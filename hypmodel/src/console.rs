//! Keeps the guest's console lines whole. hypmodel and the guest share one UART: a trace
//! line printed while the guest is half-way through a line of its own would cut that line
//! in two (and break every tool that reads the guest's `PASS:`/`FAIL:` lines). So while
//! the guest is mid-line, hypmodel's lines wait in a buffer and go out after the guest's
//! next newline (or at power-off).

pub struct LineGate<const N: usize> {
    buf: [u8; N],
    len: usize,
    dropped: usize,
    guest_mid_line: bool,
}

impl<const N: usize> Default for LineGate<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineGate<N> {
    pub const fn new() -> Self {
        LineGate {
            buf: [0; N],
            len: 0,
            dropped: 0,
            guest_mid_line: false,
        }
    }

    /// A complete hypmodel line (with its newline): out now, or later.
    pub fn hyp_line(&mut self, line: &[u8], out: &mut dyn FnMut(&[u8])) {
        if !self.guest_mid_line {
            out(line);
        } else if self.len + line.len() <= N {
            self.buf[self.len..self.len + line.len()].copy_from_slice(line);
            self.len += line.len();
        } else {
            self.dropped += 1;
        }
    }

    /// The guest wrote `b` to the UART data register.
    pub fn guest_byte(&mut self, b: u8, out: &mut dyn FnMut(&[u8])) {
        self.guest_mid_line = b != b'\n';
        if !self.guest_mid_line {
            self.drain(out);
        }
    }

    fn drain(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.len > 0 {
            out(&self.buf[..self.len]);
            self.len = 0;
        }
        if self.dropped > 0 {
            let mut tmp = [0u8; 64];
            let n = fmt_dropped(self.dropped, &mut tmp);
            out(&tmp[..n]);
            self.dropped = 0;
        }
    }

    /// Power-off: end the guest's line if it left one open, then everything waiting.
    pub fn flush(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.guest_mid_line {
            out(b"\n");
            self.guest_mid_line = false;
        }
        self.drain(out);
    }
}

fn fmt_dropped(n: usize, buf: &mut [u8; 64]) -> usize {
    let pre = b"hypmodel: trace: ";
    let post = b" lines dropped (buffer full)\n";
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let d = &digits[i..];
    let mut p = 0;
    for part in [&pre[..], d, &post[..]] {
        buf[p..p + part.len()].copy_from_slice(part);
        p += part.len();
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_for_the_guests_newline() {
        let mut g = LineGate::<64>::new();
        let mut out = Vec::new();
        let mut o = |b: &[u8]| out.extend_from_slice(b);
        g.hyp_line(b"H1\n", &mut o);
        for &b in b"PA" {
            o(&[b]);
            g.guest_byte(b, &mut o);
        }
        g.hyp_line(b"H2\n", &mut o);
        for &b in b"SS\n" {
            o(&[b]);
            g.guest_byte(b, &mut o);
        }
        assert_eq!(out, b"H1\nPASS\nH2\n");
    }

    #[test]
    fn overflow_is_counted_and_flush_closes_the_line() {
        let mut g = LineGate::<8>::new();
        let mut out = Vec::new();
        let mut o = |b: &[u8]| out.extend_from_slice(b);
        o(b"x");
        g.guest_byte(b'x', &mut o);
        g.hyp_line(b"1234567\n", &mut o);
        g.hyp_line(b"abc\n", &mut o);
        g.hyp_line(b"def\n", &mut o);
        g.flush(&mut o);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "x\n1234567\nhypmodel: trace: 2 lines dropped (buffer full)\n"
        );
    }
}
