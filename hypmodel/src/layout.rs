//! Where things are in physical memory on QEMU `virt` (RAM from 0x4000_0000). The same
//! numbers are in README.md; the QEMU command line depends on `GUEST_STAGING`.
//!
//! ```text
//! 0x4000_0000  QEMU's device tree for hypmodel (up to 6 MiB), later the guest's rewritten tree
//! 0x4060_0000  hypmodel: code, data, stacks, stage-2 tables (HYP_SIZE, never mapped for the guest)
//! 0x40a0_0000  guest Image, moved here from the staging address (2 MiB aligned + text_offset)
//! 0x4100_0000  staging address of the guest Image (`-device loader,...,addr=0x41000000`)
//! ```
//! Guest RAM is all of RAM but `[HYP_BASE, HYP_BASE + HYP_SIZE)`: the guest's tree has
//! its memory `reg` split around it. The staging copy is guest RAM again after the move.

pub const RAM_BASE: u64 = 0x4000_0000;
/// QEMU `virt`'s first PL011: the console until the tree names one (and for the fatal
/// messages about a missing or broken tree).
pub const DEFAULT_UART: u64 = 0x0900_0000;
/// The 4 KiB page: stage 2's granule, the console's page, the guest Image's alignment.
pub const PAGE_SIZE: u64 = 0x1000;
/// Where QEMU puts its tree for an ELF kernel linked above RAM base + 2 MiB.
pub const QEMU_DTB: u64 = RAM_BASE;
/// The largest tree hypmodel reads: everything below hypmodel. QEMU's own tree claims
/// 1 MiB. A file given with `-dtb` grows to (size + 10000) * 2 bytes (QEMU's
/// `load_device_tree` makes room for its edits), and QEMU drops the tree silently when
/// that does not fit below the ELF: 6 MiB takes a `-dtb` file of up to 2 MiB, such as the
/// 1 MiB tree `-machine dumpdtb=` writes.
pub const DTB_MAX: u64 = HYP_BASE - RAM_BASE;
/// The largest `-dtb` file that fits (for the messages).
pub const DTB_FILE_MAX: u64 = DTB_MAX / 2 - 10000;
pub const HYP_BASE: u64 = 0x4060_0000;
pub const HYP_SIZE: u64 = 0x40_0000;
pub const GUEST_BASE: u64 = 0x40a0_0000;
pub const GUEST_STAGING: u64 = 0x4100_0000;
/// Where the guest's tree goes (x0 at entry).
pub const GUEST_DTB: u64 = RAM_BASE;

/// Where the guest Image goes: the 2 MiB-aligned base plus its text_offset.
pub fn guest_load_address(text_offset: u64) -> u64 {
    GUEST_BASE + text_offset
}

#[cfg(test)]
mod tests {
    use super::*;

    const _: () = assert!(QEMU_DTB + DTB_MAX <= HYP_BASE);
    // A 2 MiB -dtb file fits once QEMU has doubled it.
    const _: () = assert!(DTB_FILE_MAX >= 2 << 20);
    // -m 128M: RAM ends at 0x4800_0000; the staged image may be up to 112 MiB.
    const _: () = assert!(GUEST_STAGING + 0x700_0000 <= RAM_BASE + 0x800_0000);

    #[test]
    fn layout_is_consistent() {
        assert_eq!(HYP_BASE + HYP_SIZE, GUEST_BASE);
        assert_eq!(GUEST_BASE % 0x20_0000, 0);
        assert!(GUEST_STAGING > GUEST_BASE && GUEST_STAGING.is_multiple_of(0x20_0000));
        assert_eq!(guest_load_address(0x8_0000), 0x40a8_0000);
    }
}
