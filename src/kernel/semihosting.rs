//! Semihosting (Arm "Semihosting for AArch32 and AArch64"): the console of last resort
//! before the UART exists or after it broke, and a way to end QEMU TCG with a status.
//! Where semihosting is off, HLT is undefined: the probe steps over it and we say so.

use super::probe;

const SYS_WRITE0: u64 = 0x04;
const SYS_EXIT_EXTENDED: u64 = 0x20;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

/// Writes `s` to the semihosting console; false if semihosting is not available.
pub fn write(s: &str) -> bool {
    let mut buf = [0u8; 128];
    for chunk in s.as_bytes().chunks(buf.len() - 1) {
        buf[..chunk.len()].copy_from_slice(chunk);
        buf[chunk.len()] = 0;
        if probe::semihost(SYS_WRITE0, buf.as_ptr() as u64).is_err() {
            return false;
        }
    }
    true
}

/// Ends the program with `code`; returns only where semihosting is off.
pub fn exit(code: u8) {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    let _ = probe::semihost(SYS_EXIT_EXTENDED, block.as_ptr() as u64);
}
