//! One vCPU's thread: KVM_RUN and the answer to each exit.

use kvm_bindings::{
    kvm_vcpu_events, KVM_EXIT_ARM_NISV, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::{vm, Shared, Stop};
use crate::nisv::{self, Access, Policy};

/// What to do once the exit's borrow of the vCPU has ended.
enum Next {
    Run,
    Stop(Stop),
    /// An access without a valid syndrome (its address, if any, is in kvm_run).
    NoSyndrome,
}

fn show(line: Option<String>) {
    if let Some(l) = line {
        eprintln!("{l}");
    }
}

pub fn run_loop(id: usize, mut fd: VcpuFd, shared: &Shared, policy: Policy) -> Stop {
    // Locks are only poisoned by a panicking vCPU thread; the data stays usable.
    let stats = || shared.stats.lock().unwrap_or_else(|e| e.into_inner());
    let bus = || shared.bus.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let next = match fd.run() {
            Ok(VcpuExit::MmioRead(addr, data)) => {
                let kind = bus().read(addr, data);
                show(stats().mmio(kind, addr, data.len(), false));
                Next::Run
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                let kind = bus().write(addr, data);
                show(stats().mmio(kind, addr, data.len(), true));
                Next::Run
            }
            Ok(VcpuExit::SystemEvent(kind, data)) => {
                stats().system_event += 1;
                Next::Stop(match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => Stop::PoweredOff,
                    KVM_SYSTEM_EVENT_RESET => Stop::Reset,
                    other => Stop::Failed(format!("system event {other} ({data:x?})")),
                })
            }
            Ok(VcpuExit::Unsupported(KVM_EXIT_ARM_NISV)) => Next::NoSyndrome,
            Ok(VcpuExit::Intr) => {
                stats().other += 1;
                Next::Run
            }
            Ok(other) => {
                stats().other += 1;
                Next::Stop(Stop::Failed(format!("unexpected exit {other:?}")))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Next::Run,
            // KVM's answer to an access it cannot emulate (no valid syndrome) when the VMM
            // did not ask for KVM_EXIT_ARM_NISV: the vCPU stays at the instruction.
            Err(e) if e.errno() == libc::ENOSYS => Next::NoSyndrome,
            Err(e) => Next::Stop(Stop::Failed(format!("KVM_RUN: {e}"))),
        };
        match next {
            Next::Run => {}
            Next::Stop(s) => return s,
            Next::NoSyndrome => {
                let access = Access {
                    vcpu: id,
                    addr: nisv_address(&mut fd),
                    pc: pc(&fd),
                };
                if policy == Policy::Stop {
                    // Counted for the summary; the last line says the rest.
                    let _ = stats().nisv(&access, "stopping the VM");
                    return Stop::Unemulated(nisv::stopped(&access));
                }
                if let Err(why) = inject_abort(&fd) {
                    show(stats().nisv(&access, "could not inject an abort"));
                    return Stop::Failed(format!(
                        "{}: injecting an external data abort failed ({why}); stopping \
                         rather than re-running it forever",
                        access.what()
                    ));
                }
                show(stats().nisv(&access, "external data abort injected"));
            }
        }
    }
}

/// The vCPU's PC, if KVM lets the VMM read it (a protected VM's registers are not the
/// VMM's to read).
fn pc(fd: &VcpuFd) -> Option<u64> {
    let mut b = [0u8; 8];
    fd.get_one_reg(vm::pc_reg(), &mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// The faulting IPA of a KVM_EXIT_ARM_NISV exit (None after an ENOSYS, which has none).
fn nisv_address(fd: &mut VcpuFd) -> Option<u64> {
    let run = fd.get_kvm_run();
    if run.exit_reason != KVM_EXIT_ARM_NISV {
        return None;
    }
    // SAFETY: the exit reason says the arm_nisv member of the union is the valid one.
    Some(unsafe { run.__bindgen_anon_1.arm_nisv.fault_ipa })
}

/// `--nisv inject`: answers an access KVM could not emulate with a synchronous external
/// abort, so the guest sees a fault instead of re-running the instruction for ever.
///
/// crosvm does not do this (see `crate::nisv`): its vCPU loop (src/crosvm/sys/linux/
/// vcpu.rs, `vcpu_loop`, `Err(e) => match e.errno()`) treats KVM_RUN's ENOSYS as an
/// unknown error and crashes the VM, which is this VMM's default. The injection is what
/// the KVM API documents for KVM_EXIT_ARM_NISV. pKVM refuses it for a protected VM
/// (EPERM): there the hypervisor itself answers such accesses, and the VMM never sees
/// them.
fn inject_abort(fd: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    let mut ev = kvm_vcpu_events::default();
    ev.exception.ext_dabt_pending = 1;
    fd.set_vcpu_events(&ev)
}
