//! Link settings for the guest image. The host build (unit tests) links normally.
fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=src/kernel/arch/head.S");
    println!("cargo:rerun-if-changed=src/kernel/arch/vectors.S");
    println!("cargo:rerun-if-changed=src/kernel/arch/probes.S");
    if std::env::var("TARGET").as_deref() == Ok("aarch64-unknown-none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        // A position-independent executable with no dynamic linker: the image applies its
        // own R_AARCH64_RELATIVE relocations at entry.
        println!("cargo:rustc-link-arg-bins=-pie");
        println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
        println!("cargo:rustc-link-arg-bins=-znotext");
        println!("cargo:rustc-link-arg-bins=--hash-style=sysv");
        // Relative relocations packed as RELR: a bitmap format ~60x smaller than RELA.
        println!("cargo:rustc-link-arg-bins=--pack-dyn-relocs=relr");
    }
}
