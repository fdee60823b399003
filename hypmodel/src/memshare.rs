//! Per-page share state of guest RAM for MEM_SHARE / MEM_UNSHARE.
//!
//! Each page of guest RAM is private (the guest's alone) or shared (with the host). The
//! state is kept per 4 KiB frame; a share or unshare acts on one protection granule (the
//! hypervisor's page size that HYP_MEMINFO reports), so all its frames change together.
//! Sharing a shared page and unsharing a private one fail; so does anything outside guest
//! RAM (MMIO, hypmodel's own memory) and any misaligned IPA.
//!
//! Two bits per frame: the guest's state (what MEM_SHARE/MEM_UNSHARE answer from) and the
//! host's view (whether the host, and so a device it emulates, can read and write the frame).
//! They always agree in the correct model; `share-ignored` answers a share and records it
//! but never gives the host the page. The DMA walk (`virtq.rs`) asks the host's view.

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
    /// The guest's state: one bit per frame, set = shared.
    bits: &'static mut [u64],
    /// The host's view: one bit per frame, set = the host can access it.
    host: &'static mut [u64],
    shared_frames: u64,
}

/// The `u64` words a [`ShareMap`] of `frames` frames needs (both bitmaps).
pub const fn words_for(frames: u64) -> usize {
    2 * frames.div_ceil(64) as usize
}

impl ShareMap {
    /// Tracks frames `[base, base + frames * 4 KiB)`; `bits` holds both bitmaps, so it must
    /// have [`words_for`]`(frames)` words (a shorter buffer tracks fewer frames).
    pub fn new(base: u64, frames: u64, bits: &'static mut [u64]) -> ShareMap {
        bits.iter_mut().for_each(|w| *w = 0);
        let half = bits.len() / 2;
        let (bits, host) = bits.split_at_mut(half);
        let frames = frames.min(half as u64 * 64);
        ShareMap {
            base,
            frames,
            bits,
            host,
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

    fn set(&mut self, f: usize, v: bool, host: bool) {
        let (w, b) = (f / 64, 1u64 << (f % 64));
        if v {
            self.bits[w] |= b;
        } else {
            self.bits[w] &= !b;
        }
        if v && host {
            self.host[w] |= b;
        } else {
            self.host[w] &= !b;
        }
    }

    /// Has the guest shared the frame at `ipa` (the state MEM_SHARE/UNSHARE answer from)?
    pub fn is_shared(&self, ipa: u64) -> bool {
        self.index(ipa).is_some_and(|f| self.get(f))
    }

    /// Can the host access the frame at `ipa`?
    pub fn host_can_access(&self, ipa: u64) -> bool {
        self.index(ipa)
            .is_some_and(|f| self.host[f / 64] & (1 << (f % 64)) != 0)
    }

    /// The first frame of `[ipa, ipa + len)` the host cannot access (outside the map
    /// counts as such), or `None` when it can access all of it. `len` 0 is an empty range;
    /// a range past the end of the address space is not accessible from where it wraps.
    /// Skips 64 accessible frames at a time, so a long shared range costs little.
    pub fn first_inaccessible(&self, ipa: u64, len: u64) -> Option<u64> {
        if len == 0 {
            return None;
        }
        let first = ipa & !(FRAME - 1);
        let Some(last) = ipa.checked_add(len - 1) else {
            // Wraps: the frames from `ipa` to the top, then frame 0.
            return self.first_inaccessible(ipa, u64::MAX - ipa + 1).or(Some(0));
        };
        let last = last & !(FRAME - 1);
        let mut a = first;
        loop {
            let Some(f) = self.index(a) else {
                return Some(a);
            };
            let (w, b) = (f / 64, f % 64);
            // The accessible frames from `f` to the end of its word.
            let run = (!(self.host[w] >> b)).trailing_zeros() as u64;
            let run = run.min(64 - b as u64);
            if run == 0 {
                return Some(a);
            }
            match a.checked_add(run * FRAME) {
                Some(next) if next <= last => a = next,
                _ => return None,
            }
        }
    }

    pub fn shared_bytes(&self) -> u64 {
        self.shared_frames * FRAME
    }

    /// Changes the granule at `ipa` from `from` to `!from`. `is_ram` says whether a
    /// granule-sized range is guest RAM (the caller knows the layout); `host` whether a
    /// share also gives the host the pages.
    fn flip(
        &mut self,
        ipa: u64,
        granule: u64,
        from: bool,
        is_ram: bool,
        host: bool,
    ) -> Result<(), ShareError> {
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
            self.set(f, !from, host);
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
        self.flip(ipa, granule, false, is_ram, true)
    }

    /// `share-ignored`: a share the guest's state records (so a second share fails and an
    /// unshare succeeds) but that never gives the host the pages.
    pub fn share_state_only(
        &mut self,
        ipa: u64,
        granule: u64,
        is_ram: bool,
    ) -> Result<(), ShareError> {
        self.flip(ipa, granule, false, is_ram, false)
    }

    pub fn unshare(&mut self, ipa: u64, granule: u64, is_ram: bool) -> Result<(), ShareError> {
        self.flip(ipa, granule, true, is_ram, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(frames: u64) -> ShareMap {
        let bits = Box::leak(vec![u64::MAX; words_for(frames)].into_boxed_slice());
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

    #[test]
    fn the_host_sees_what_is_shared() {
        let mut m = map(1024);
        let p = 0x4000_5000;
        assert!(!m.host_can_access(p));
        m.share(p, FRAME, true).unwrap();
        assert!(m.host_can_access(p) && !m.host_can_access(p + FRAME));
        m.unshare(p, FRAME, true).unwrap();
        assert!(!m.host_can_access(p), "an unshare takes the page back");
    }

    #[test]
    fn a_share_of_the_state_only_leaves_the_host_out() {
        let mut m = map(1024);
        let p = 0x4000_5000;
        assert_eq!(m.share_state_only(p, FRAME, true), Ok(()));
        // The guest's state says shared: the answers stay right...
        assert!(m.is_shared(p));
        assert_eq!(m.share(p, FRAME, true), Err(ShareError::AlreadyShared));
        assert_eq!(m.shared_bytes(), 4096);
        // ...but the host cannot reach the page.
        assert!(!m.host_can_access(p));
        assert_eq!(m.first_inaccessible(p, 16), Some(p));
        assert_eq!(m.unshare(p, FRAME, true), Ok(()));
        assert_eq!(
            m.share_state_only(p + 1, FRAME, true),
            Err(ShareError::Misaligned)
        );
    }

    #[test]
    fn first_inaccessible_frame_of_a_range() {
        let mut m = map(1024);
        let base = 0x4000_0000;
        // Frames 60..=70 shared: they straddle the first and second bitmap words.
        for f in 60..=70 {
            m.share(base + f * FRAME, FRAME, true).unwrap();
        }
        let at = |f: u64| base + f * FRAME;
        assert_eq!(m.first_inaccessible(at(60), 11 * FRAME), None);
        assert_eq!(m.first_inaccessible(at(60) + 0x10, 11 * FRAME - 0x10), None);
        assert_eq!(m.first_inaccessible(at(60), 11 * FRAME + 1), Some(at(71)));
        assert_eq!(m.first_inaccessible(at(59) + 0xfff, 2), Some(at(59)));
        assert_eq!(m.first_inaccessible(at(70) + 0xfff, 1), None, "last byte");
        assert_eq!(m.first_inaccessible(at(70) + 0xfff, 2), Some(at(71)));
        assert_eq!(m.first_inaccessible(at(65), 0), None, "empty");
        assert_eq!(
            m.first_inaccessible(at(59), 0),
            None,
            "empty, even on a private page"
        );
        // A hole in the middle.
        m.unshare(at(64), FRAME, true).unwrap();
        assert_eq!(m.first_inaccessible(at(60), 11 * FRAME), Some(at(64)));
        // Outside the map: below, above, and a range running off its end.
        assert_eq!(m.first_inaccessible(0x3fff_f000, 8), Some(0x3fff_f000));
        assert_eq!(m.first_inaccessible(at(1024), 8), Some(at(1024)));
        for f in 1020..1024 {
            m.share(at(f), FRAME, true).unwrap();
        }
        assert_eq!(m.first_inaccessible(at(1020), 4 * FRAME), None);
        assert_eq!(
            m.first_inaccessible(at(1020), 4 * FRAME + 1),
            Some(at(1024))
        );
        // A range that wraps around the end of the address space.
        assert_eq!(
            m.first_inaccessible(u64::MAX - 0xf, 0x20),
            Some(u64::MAX - 0xfff)
        );
        assert_eq!(m.first_inaccessible(at(1023), u64::MAX), Some(at(1024)));
    }

    #[test]
    fn a_short_buffer_tracks_fewer_frames() {
        let bits = Box::leak(vec![0u64; 2].into_boxed_slice());
        let mut m = ShareMap::new(0x4000_0000, 1024, bits);
        assert_eq!(m.share(0x4000_0000 + 63 * FRAME, FRAME, true), Ok(()));
        assert_eq!(
            m.share(0x4000_0000 + 64 * FRAME, FRAME, true),
            Err(ShareError::NotRam)
        );
    }
}
