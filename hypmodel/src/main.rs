//! hypmodel: the reference EL2 hypervisor (placeholder until it is built).
fn main() {}
