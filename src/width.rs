//! The width of one load or store, in bytes: what the probe API performs and what the
//! fuzzer's steps name (pure, so that both the kernel and the host-tested fuzzer use it).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    W8,
    W16,
    W32,
    W64,
}

impl Width {
    pub fn bytes(self) -> u64 {
        match self {
            Self::W8 => 1,
            Self::W16 => 2,
            Self::W32 => 4,
            Self::W64 => 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_width() {
        let all = [Width::W8, Width::W16, Width::W32, Width::W64];
        assert_eq!(all.map(Width::bytes), [1, 2, 4, 8]);
    }
}
