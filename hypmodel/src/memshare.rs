//! Per-page share state of guest RAM for MEM_SHARE / MEM_UNSHARE.
//!
//! Each page of guest RAM is private (the guest's alone) or shared (with the host). The
//! state is kept per 4 KiB frame; a share or unshare acts on one protection granule (the
//! hypervisor's page size that HYP_MEMINFO reports), so all its frames change together.
//! Sharing a shared page and unsharing a private one fail; so does anything outside guest
//! RAM (MMIO, hypmodel's own memory) and any misaligned IPA.

pub const FRAME: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareError {
    Misaligned,
    NotRam,
    AlreadyShared,
    NotShared,
}

impl core::fmt::Display for ShareError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ShareError::Misaligned => "not aligned to the granule",
            ShareError::NotRam => "not guest RAM",
            ShareError::AlreadyShared => "already shared",
            ShareError::NotShared => "not shared",
        })
    }
}

pub struct ShareMap {
    base: u64,
    frames: u64,
    bits: &'static mut [u64],
    shared_frames: u64,
}

impl ShareMap {
    /// Tracks frames `[base, base + frames * 4 KiB)`; `bits` must hold `frames` bits.
    pub fn new(base: u64, frames: u64, bits: &'static mut [u64]) -> ShareMap {
        let frames = frames.min(bits.len() as u64 * 64);
        bits.iter_mut().for_each(|w| *w = 0);
        ShareMap {
            base,
            frames,
            bits,
            shared_frames: 0,
        }
    }

    fn index(&self, ipa: u64) -> Option<usize> {
        let off = ipa.checked_sub(self.base)?;
        let f = off / FRAME;
        (f < self.frames).then_some(f as usize)
    }

    fn get(&self, f: usize) -> bool {
        self.bits[f / 64] & (1 << (f % 64)) != 0
    }

    fn set(&mut self, f: usize, v: bool) {
        if v {
            self.bits[f / 64] |= 1 << (f % 64);
        } else {
            self.bits[f / 64] &= !(1 << (f % 64));
        }
    }

    pub fn is_shared(&self, ipa: u64) -> bool {
        self.index(ipa).is_some_and(|f| self.get(f))
    }

    pub fn shared_bytes(&self) -> u64 {
        self.shared_frames * FRAME
    }

    /// Changes the granule at `ipa` from `from` to `!from`. `is_ram` says whether a
    /// granule-sized range is guest RAM (the caller knows the layout).
    fn flip(&mut self, ipa: u64, granule: u64, from: bool, is_ram: bool) -> Result<(), ShareError> {
        if !ipa.is_multiple_of(granule) {
            return Err(ShareError::Misaligned);
        }
        if !is_ram {
            return Err(ShareError::NotRam);
        }
        let (Some(first), Some(last)) = (self.index(ipa), self.index(ipa + granule - 1)) else {
            return Err(ShareError::NotRam);
        };
        if (first..=last).any(|f| self.get(f) != from) {
            return Err(if from {
                ShareError::NotShared
            } else {
                ShareError::AlreadyShared
            });
        }
        for f in first..=last {
            self.set(f, !from);
        }
        let n = (last - first + 1) as u64;
        if from {
            self.shared_frames -= n;
        } else {
            self.shared_frames += n;
        }
        Ok(())
    }

    pub fn share(&mut self, ipa: u64, granule: u64, is_ram: bool) -> Result<(), ShareError> {
        self.flip(ipa, granule, false, is_ram)
    }

    pub fn unshare(&mut self, ipa: u64, granule: u64, is_ram: bool) -> Result<(), ShareError> {
        self.flip(ipa, granule, true, is_ram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(frames: u64) -> ShareMap {
        let bits = Box::leak(vec![u64::MAX; frames.div_ceil(64) as usize].into_boxed_slice());
        ShareMap::new(0x4000_0000, frames, bits)
    }

    #[test]
    fn state_machine() {
        let mut m = map(1024);
        let p = 0x4000_5000;
        assert!(!m.is_shared(p), "new map starts all private");
        assert_eq!(m.unshare(p, FRAME, true), Err(ShareError::NotShared));
        assert_eq!(m.share(p, FRAME, true), Ok(()));
        assert!(m.is_shared(p) && !m.is_shared(p + FRAME));
        assert_eq!(m.share(p, FRAME, true), Err(ShareError::AlreadyShared));
        assert_eq!(m.shared_bytes(), 4096);
        assert_eq!(m.unshare(p, FRAME, true), Ok(()));
        assert_eq!(m.unshare(p, FRAME, true), Err(ShareError::NotShared));
        assert_eq!(m.shared_bytes(), 0);
    }

    #[test]
    fn refusals() {
        let mut m = map(1024);
        assert_eq!(
            m.share(0x4000_5008, FRAME, true),
            Err(ShareError::Misaligned)
        );
        assert_eq!(m.share(0x0901_0000, FRAME, false), Err(ShareError::NotRam));
        assert_eq!(
            m.share(0x3fff_f000, FRAME, true),
            Err(ShareError::NotRam),
            "below the map"
        );
        assert_eq!(
            m.share(0x4000_0000 + 1024 * FRAME, FRAME, true),
            Err(ShareError::NotRam)
        );
        assert_eq!(m.shared_bytes(), 0, "nothing shared by a refused call");
    }

    #[test]
    fn granule_16k_moves_four_frames() {
        let mut m = map(1024);
        assert_eq!(
            m.share(0x4000_1000, 0x4000, true),
            Err(ShareError::Misaligned)
        );
        assert_eq!(m.share(0x4000_4000, 0x4000, true), Ok(()));
        assert!((0..4).all(|i| m.is_shared(0x4000_4000 + i * FRAME)));
        assert_eq!(m.shared_bytes(), 0x4000);
        assert_eq!(m.unshare(0x4000_4000, 0x4000, true), Ok(()));
        assert_eq!(m.shared_bytes(), 0);
    }
}
