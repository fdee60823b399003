//! The private-memory proof of a protected VM, as a judgement over page reads: one page
//! the VMM used for DMA must still read, the image's first page (never shared) must fault.

/// What one load from a guest page did: `Ok(())` it completed, `Err(name)` it raised the
/// named signal; None when the address is not guest RAM.
pub type ReadResult = Option<Result<(), &'static str>>;

/// At most this many DMA pages are tried, newest first, for one that is still shared.
const TRIES: usize = 64;

/// Returns the lines to print and whether the proof held.
pub fn judge(
    dma_pages_recent_first: &[u64],
    private_page: u64,
    read: impl Fn(u64) -> ReadResult,
) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let shared_ok = match dma_pages_recent_first.first() {
        None => {
            lines.push(
                "vmm: no page was shared with the VMM: nothing to prove readable".to_string(),
            );
            false
        }
        Some(&newest) => {
            // The guest may have unshared the newest page since; an older one may remain.
            let still = dma_pages_recent_first
                .iter()
                .take(TRIES)
                .find(|&&p| read(p) == Some(Ok(())));
            match still {
                Some(p) => {
                    lines.push(format!("vmm: shared page {p:#x}: read ok"));
                    true
                }
                None => {
                    let sig = match read(newest) {
                        Some(Err(s)) => s,
                        _ => "SIGSEGV",
                    };
                    lines.push(format!(
                        "vmm: shared page {newest:#x}: read faulted ({sig})"
                    ));
                    false
                }
            }
        }
    };
    let private_ok = match read(private_page) {
        Some(Err(sig)) => {
            lines.push(format!(
                "vmm: private page {private_page:#x}: read faulted ({sig})"
            ));
            true
        }
        Some(Ok(())) => {
            lines.push(format!(
                "vmm: private page {private_page:#x}: read ok (NOT private)"
            ));
            false
        }
        None => {
            lines.push(format!(
                "vmm: private page {private_page:#x}: not guest RAM"
            ));
            false
        }
    };
    (lines, shared_ok && private_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(readable: &'static [u64]) -> impl Fn(u64) -> ReadResult {
        move |p| {
            Some(if readable.contains(&p) {
                Ok(())
            } else {
                Err("SIGSEGV")
            })
        }
    }

    #[test]
    fn holds_when_a_shared_page_reads_and_the_image_faults() {
        let (lines, ok) = judge(
            &[0x403ce000, 0x402d0000],
            0x4000_0000,
            mem(&[0x402d0000, 0x403ce000]),
        );
        assert!(ok);
        assert_eq!(
            lines,
            [
                "vmm: shared page 0x403ce000: read ok",
                "vmm: private page 0x40000000: read faulted (SIGSEGV)"
            ]
        );
    }

    #[test]
    fn an_unshared_newest_page_falls_back_to_an_older_one() {
        let (lines, ok) = judge(&[0x3000, 0x2000], 0x1000, mem(&[0x2000]));
        assert!(ok);
        assert_eq!(lines[0], "vmm: shared page 0x2000: read ok");
    }

    #[test]
    fn fails_when_the_private_page_reads() {
        let (lines, ok) = judge(&[0x2000], 0x1000, mem(&[0x1000, 0x2000]));
        assert!(!ok);
        assert_eq!(lines[1], "vmm: private page 0x1000: read ok (NOT private)");
    }

    #[test]
    fn fails_when_no_shared_page_reads_or_none_was_shared() {
        let (lines, ok) = judge(&[0x2000], 0x1000, mem(&[]));
        assert!(!ok);
        assert_eq!(lines[0], "vmm: shared page 0x2000: read faulted (SIGSEGV)");
        let (lines, ok) = judge(&[], 0x1000, mem(&[]));
        assert!(!ok);
        assert_eq!(
            lines[0],
            "vmm: no page was shared with the VMM: nothing to prove readable"
        );
        assert_eq!(lines[1], "vmm: private page 0x1000: read faulted (SIGSEGV)");
    }
}
