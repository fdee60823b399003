//! Creating the VM: its type, memory slot, vCPUs and in-kernel vGICv3.

use std::fmt;
use std::mem::offset_of;

use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, kvm_enable_cap,
    kvm_regs, kvm_userspace_memory_region, kvm_vcpu_init, user_pt_regs, KVM_ARM_VCPU_POWER_OFF,
    KVM_ARM_VCPU_PSCI_0_2, KVM_CAP_ARM_NISV_TO_USER, KVM_DEV_ARM_VGIC_CTRL_INIT,
    KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_REG_ARM64, KVM_REG_ARM_CORE,
    KVM_REG_SIZE_U64, KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::layout::Layout;
use crate::options::Options;

/// `KVM_VM_TYPE_ARM_PROTECTED` (Linux 7.2+): kvm-bindings 0.14 has no constant for it.
const VM_TYPE_ARM_PROTECTED: u64 = 1 << 31;
/// The IPA size asked for when the host allows it: room for every layout's RAM.
const IPA_BITS: u32 = 40;
/// EL1h with D, A, I and F masked: where the arm64 boot protocol enters a kernel.
const PSTATE_EL1H_DAIF: u64 = 0x3c5;

#[derive(Debug)]
pub enum VmError {
    OpenKvm(kvm_ioctls::Error),
    ProtectedUnsupported,
    CreateVm(kvm_ioctls::Error),
    Memory(kvm_ioctls::Error),
    Vcpu(u32, &'static str, kvm_ioctls::Error),
    Gic(&'static str, kvm_ioctls::Error),
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OpenKvm(e) => write!(f, "opening /dev/kvm: {e}"),
            Self::ProtectedUnsupported => write!(
                f,
                "KVM_CREATE_VM refused a protected VM (EINVAL): the host kernel did not initialise \
                 pKVM (it needs Linux 7.2 or later booted with kvm-arm.mode=protected; dmesg \
                 should say \"Protected ... mode initialized successfully\")"
            ),
            Self::CreateVm(e) => write!(f, "KVM_CREATE_VM: {e}"),
            Self::Memory(e) => write!(f, "KVM_SET_USER_MEMORY_REGION: {e}"),
            Self::Vcpu(id, what, e) => write!(f, "vCPU {id}: {what}: {e}"),
            Self::Gic(what, e) => write!(f, "vGICv3: {what}: {e}"),
        }
    }
}

/// Copies `data` into guest RAM at `addr`.
pub fn write(mem: &GuestMemoryMmap, addr: u64, data: &[u8]) -> Result<(), String> {
    mem.write_slice(data, GuestAddress(addr))
        .map_err(|e| format!("writing {} bytes at {addr:#x}: {e}", data.len()))
}

fn core_reg(offset: usize) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | u64::from(KVM_REG_ARM_CORE) | (offset / 4) as u64
}

/// The register ID of a vCPU's PC, for KVM_GET_ONE_REG.
pub fn pc_reg() -> u64 {
    core_reg(offset_of!(kvm_regs, regs) + offset_of!(user_pt_regs, pc))
}

pub struct Machine {
    _kvm: Kvm,
    vm: VmFd,
    cpus: u32,
    gic_dist: u64,
    gic_redist: u64,
    gic: Option<DeviceFd>,
}

impl Machine {
    pub fn create(opts: &Options, layout: &Layout, mem: &GuestMemoryMmap) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let limit = kvm.get_host_ipa_limit();
        // 0: the host has no KVM_CAP_ARM_VM_IPA_SIZE and only the default 40 bits.
        let mut vm_type = if limit > 0 {
            u64::from(IPA_BITS.min(limit as u32))
        } else {
            0
        };
        if opts.protected {
            vm_type |= VM_TYPE_ARM_PROTECTED;
        }
        let vm = match kvm.create_vm_with_type(vm_type) {
            Ok(vm) => vm,
            Err(e) if opts.protected && e.errno() == libc::EINVAL => {
                return Err(VmError::ProtectedUnsupported)
            }
            Err(e) => return Err(VmError::CreateVm(e)),
        };
        // One line, starting "vmm: protected VM" or "vmm: ordinary VM", which the runner's
        // pKVM launcher and tests/pkvm.rs read (with the type on it).
        eprintln!(
            "vmm: {} VM (type {vm_type:#x}), {} layout, {} vCPU(s), {} MiB",
            if opts.protected {
                "protected"
            } else {
                "ordinary"
            },
            layout.kind.name(),
            opts.cpus,
            layout.ram_size >> 20
        );
        let host = mem
            .get_host_address(GuestAddress(layout.ram_base))
            .map_err(|_| VmError::Memory(kvm_ioctls::Error::new(libc::EFAULT)))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: layout.ram_base,
            memory_size: layout.ram_size,
            userspace_addr: host as u64,
        };
        // SAFETY: the region is `mem`'s single mapping of `ram_size` bytes, which the caller
        // keeps alive (an Arc held until the process exits) for as long as the VM exists.
        unsafe { vm.set_user_memory_region(region) }.map_err(VmError::Memory)?;
        if !opts.protected {
            // Accesses without a valid syndrome then come to the VMM as KVM_EXIT_ARM_NISV
            // with their address, for the report (crosvm leaves it off and sees ENOSYS;
            // the answer, src/kvm/vcpu.rs, is the same). Best effort: without it KVM_RUN
            // fails with ENOSYS, answered the same way. pKVM refuses it for protected VMs
            // (EINVAL), which never see such exits.
            let cap = kvm_enable_cap {
                cap: KVM_CAP_ARM_NISV_TO_USER,
                ..Default::default()
            };
            if let Err(e) = vm.enable_cap(&cap) {
                eprintln!("vmm: KVM_CAP_ARM_NISV_TO_USER not enabled ({e}); relying on ENOSYS");
            }
        }
        Ok(Self {
            _kvm: kvm,
            vm,
            cpus: opts.cpus,
            gic_dist: layout.gic_dist,
            gic_redist: layout.gic_redist,
            gic: None,
        })
    }

    /// Creates and initialises the vCPUs (vCPU 0 entering the image with x0 = the tree,
    /// the others powered off until PSCI CPU_ON), then the vGIC, which must come after
    /// every vCPU and before the first KVM_RUN.
    pub fn boot_vcpus(&mut self, entry: u64, fdt: u64) -> Result<Vec<VcpuFd>, VmError> {
        let mut kvi = kvm_vcpu_init::default();
        self.vm
            .get_preferred_target(&mut kvi)
            .map_err(|e| VmError::Vcpu(0, "KVM_ARM_PREFERRED_TARGET", e))?;
        kvi.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
        let mut vcpus = Vec::new();
        for id in 0..self.cpus {
            let fd = self
                .vm
                .create_vcpu(u64::from(id))
                .map_err(|e| VmError::Vcpu(id, "KVM_CREATE_VCPU", e))?;
            let mut init = kvi;
            if id > 0 {
                init.features[0] |= 1 << KVM_ARM_VCPU_POWER_OFF;
            }
            fd.vcpu_init(&init)
                .map_err(|e| VmError::Vcpu(id, "KVM_ARM_VCPU_INIT", e))?;
            vcpus.push(fd);
        }
        let regs = offset_of!(kvm_regs, regs);
        let set = |fd: &VcpuFd, what, offset: usize, v: u64| {
            fd.set_one_reg(core_reg(regs + offset), &v.to_le_bytes())
                .map(|_| ())
                .map_err(|e| VmError::Vcpu(0, what, e))
        };
        if let Some(boot) = vcpus.first() {
            set(
                boot,
                "setting PSTATE",
                offset_of!(user_pt_regs, pstate),
                PSTATE_EL1H_DAIF,
            )?;
            set(boot, "setting PC", offset_of!(user_pt_regs, pc), entry)?;
            set(boot, "setting X0", offset_of!(user_pt_regs, regs), fdt)?;
        }
        self.create_gic()?;
        Ok(vcpus)
    }

    fn create_gic(&mut self) -> Result<(), VmError> {
        let mut dev = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
            fd: 0,
            flags: 0,
        };
        let gic = self
            .vm
            .create_device(&mut dev)
            .map_err(|e| VmError::Gic("KVM_CREATE_DEVICE", e))?;
        for (what, kind, addr) in [
            (
                "distributor address",
                KVM_VGIC_V3_ADDR_TYPE_DIST,
                self.gic_dist,
            ),
            (
                "redistributor address",
                KVM_VGIC_V3_ADDR_TYPE_REDIST,
                self.gic_redist,
            ),
        ] {
            let attr = kvm_device_attr {
                group: KVM_DEV_ARM_VGIC_GRP_ADDR,
                attr: u64::from(kind),
                addr: &addr as *const u64 as u64,
                flags: 0,
            };
            gic.set_device_attr(&attr)
                .map_err(|e| VmError::Gic(what, e))?;
        }
        let init = kvm_device_attr {
            group: KVM_DEV_ARM_VGIC_GRP_CTRL,
            attr: u64::from(KVM_DEV_ARM_VGIC_CTRL_INIT),
            addr: 0,
            flags: 0,
        };
        gic.set_device_attr(&init)
            .map_err(|e| VmError::Gic("KVM_DEV_ARM_VGIC_CTRL_INIT", e))?;
        self.gic = Some(gic);
        Ok(())
    }
}
