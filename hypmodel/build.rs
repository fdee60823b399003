//! Link scripts for the two bare-metal binaries (only when building for the bare target).
use std::env;

fn main() {
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=testguest/linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("TARGET").as_deref() == Ok("aarch64-unknown-none") {
        println!("cargo:rustc-link-arg-bin=hypmodel=-T{dir}/linker.ld");
        println!("cargo:rustc-link-arg-bin=testguest=-T{dir}/testguest/linker.ld");
    }
}
