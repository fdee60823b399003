//! The hypervisor's ABI and the profiles of its generations: pure logic, host-tested.

pub mod abi;
pub mod profile;
