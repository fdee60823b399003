//! Hand-written assembly: the Image header and entry, the exception vectors, and the
//! expected-fault probe sites. These are assembly because they run before relocation,
//! own the exception frame, or must be single, known instructions at known addresses.
//! `sysreg` reads the system registers.

pub mod sysreg;

core::arch::global_asm!(include_str!("head.S"));
core::arch::global_asm!(include_str!("vectors.S"));
core::arch::global_asm!(include_str!("probes.S"));
core::arch::global_asm!(
    include_str!("secondary.S"),
    STACK_SIZE = const crate::cpus::STACK_SIZE,
    MAX_CPUS = const crate::cpus::MAX_CPUS,
);

/// Symbols defined by linker.ld and the assembly.
pub mod symbols {
    extern "C" {
        pub static __image_start: u8;
        pub static __image_end: u8;
        pub static __load_end: u8;
        pub static __stacks_start: u8;
        pub static __stacks_end: u8;
        pub static __heap_start: u8;
        pub static __heap_end: u8;
        pub static __dma_pool_start: u8;
        pub static __dma_pool_end: u8;
        pub static ioguard_vectors: u8;
        pub static ioguard_secondary_entry: u8;
        pub static ioguard_probe_sites: u64;
        pub static ioguard_probe_sites_end: u64;
    }

    /// The runtime address of a linker symbol (valid once head.S has relocated the image,
    /// which is before any Rust code runs).
    #[macro_export]
    macro_rules! sym_addr {
        ($s:ident) => {
            core::ptr::addr_of!($crate::kernel::arch::symbols::$s) as u64
        };
    }
}
