//! Opening `/dev/kvm` and checking that it can run Ferrovisor's VMs.

use std::ffi::CStr;
use std::sync::Arc;

use hv::{HvError, Hypervisor, Vm, VmConfig};
use kvm_ioctls::{Cap, Kvm};

use crate::error::{os, unavailable};
use crate::stats::BinaryStats;
use crate::vm::KvmVm;

/// Guest-physical address of the three pages KVM uses for the real-mode TSS
/// on Intel hosts (KVM_SET_TSS_ADDR). Just below the 4 GiB boundary, under
/// the BIOS area, the same as Firecracker and Cloud Hypervisor.
pub const TSS_ADDRESS: u64 = 0xfffb_d000;

/// Guest-physical address of the EPT identity-map page KVM uses for real
/// mode on Intel hosts (KVM_SET_IDENTITY_MAP_ADDR): the page just below the
/// TSS.
pub const IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// The path of the KVM device.
const KVM_PATH: &CStr = c"/dev/kvm";

/// Capabilities without which a Ferrovisor VM cannot be built.
const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "KVM_CAP_IRQCHIP (in-kernel LAPIC/IOAPIC/PIC)"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY (memory slots)"),
    (
        Cap::ImmediateExit,
        "KVM_CAP_IMMEDIATE_EXIT (race-free vCPU kicks)",
    ),
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    (Cap::SetIdentityMapAddr, "KVM_CAP_SET_IDENTITY_MAP_ADDR"),
    (Cap::Pit2, "KVM_CAP_PIT2 (in-kernel PIT)"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID (KVM_GET_SUPPORTED_CPUID)"),
];

/// `KVM_CAP_BINARY_STATS_FD`: vCPU statistics through KVM_GET_STATS_FD.
const CAP_BINARY_STATS_FD: libc::c_ulong = kvm_bindings::KVM_CAP_BINARY_STATS_FD as libc::c_ulong;

/// What the VM and vCPU code needs to know about the host's KVM.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostCaps {
    /// KVM_CAP_MAX_VCPUS (or the recommended count when that is missing).
    pub max_vcpus: u32,
    /// KVM_CAP_NR_MEMSLOTS.
    pub nr_memslots: u32,
    /// KVM_CAP_READONLY_MEM.
    pub readonly_mem: bool,
    /// KVM_CAP_SIGNAL_MSI.
    pub signal_msi: bool,
    /// KVM_CAP_BINARY_STATS_FD.
    pub binary_stats: bool,
    /// KVM_CAP_XSAVE: x87/SSE state through KVM_GET/SET_XSAVE.
    pub xsave: bool,
    /// KVM_CAP_IOEVENTFD and KVM_CAP_IOEVENTFD_NO_LENGTH (an ioeventfd
    /// without datamatch matches writes of any size).
    pub ioeventfd: bool,
    /// KVM_CAP_IRQFD.
    pub irqfd: bool,
    /// KVM_CAP_IRQ_ROUTING (KVM_SET_GSI_ROUTING, for MSI routes).
    pub irq_routing: bool,
}

/// The host's `/dev/kvm`, checked to be usable.
///
/// Creating it opens the device and checks the API version and every
/// capability a Ferrovisor VM needs; any failure is
/// [`HvError::Unavailable`] with a reason a person can act on.
#[derive(Debug)]
pub struct KvmHypervisor {
    kvm: Arc<Kvm>,
    caps: HostCaps,
}

impl KvmHypervisor {
    /// Opens and checks `/dev/kvm`.
    pub fn new() -> Result<KvmHypervisor, HvError> {
        Self::with_device(KVM_PATH)
    }

    /// Opens and checks a KVM device at another path (containers that
    /// expose it elsewhere; tests).
    pub fn with_device(path: &CStr) -> Result<KvmHypervisor, HvError> {
        let shown = path.to_string_lossy();
        let kvm =
            Kvm::new_with_path(path).map_err(|e| unavailable(open_failure_reason(&shown, e)))?;
        let version = kvm.get_api_version();
        if version < 0 {
            return Err(unavailable(format!(
                "{shown} is not a KVM device (KVM_GET_API_VERSION failed: {})",
                std::io::Error::last_os_error()
            )));
        }
        if version != kvm_bindings::KVM_API_VERSION as i32 {
            return Err(unavailable(format!(
                "{shown} speaks KVM API version {version}, Ferrovisor needs version {}",
                kvm_bindings::KVM_API_VERSION
            )));
        }
        let missing: Vec<&str> = REQUIRED_CAPS
            .iter()
            .filter(|(cap, _)| !kvm.check_extension(*cap))
            .map(|(_, name)| *name)
            .collect();
        if !missing.is_empty() {
            return Err(unavailable(format!(
                "the host's KVM lacks {}",
                missing.join(", ")
            )));
        }
        let caps = HostCaps {
            max_vcpus: u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX),
            nr_memslots: u32::try_from(kvm.get_nr_memslots()).unwrap_or(u32::MAX),
            readonly_mem: kvm.check_extension(Cap::ReadonlyMem),
            signal_msi: kvm.check_extension(Cap::SignalMsi),
            binary_stats: kvm.check_extension_raw(CAP_BINARY_STATS_FD) > 0,
            xsave: kvm.check_extension(Cap::Xsave),
            ioeventfd: kvm.check_extension(Cap::Ioeventfd)
                && kvm.check_extension(Cap::IoeventfdNoLength),
            irqfd: kvm.check_extension(Cap::Irqfd),
            irq_routing: kvm.check_extension(Cap::IrqRouting),
        };
        Ok(KvmHypervisor {
            kvm: Arc::new(kvm),
            caps,
        })
    }

    /// The largest number of vCPUs a VM may have on this host.
    pub fn max_vcpus(&self) -> u32 {
        self.caps.max_vcpus
    }

    /// Whether the host's KVM offers per-vCPU binary statistics
    /// (KVM_CAP_BINARY_STATS_FD), which make more exit reasons observable in
    /// [`hv::Vcpu::exit_stats`].
    pub fn has_binary_stats(&self) -> bool {
        self.caps.binary_stats
    }

    /// Whether read-only memory slots (KVM_MEM_READONLY) are available.
    pub fn has_readonly_memory(&self) -> bool {
        self.caps.readonly_mem
    }

    /// Names of the per-vCPU statistics this host's KVM offers through
    /// KVM_GET_STATS_FD (empty without KVM_CAP_BINARY_STATS_FD), for
    /// diagnostics. Creates and drops a throw-away VM with one vCPU.
    pub fn vcpu_stat_names(&self) -> Result<Vec<String>, HvError> {
        if !self.caps.binary_stats {
            return Ok(Vec::new());
        }
        let vm = self.kvm.create_vm().map_err(os("KVM_CREATE_VM"))?;
        let vcpu = vm.create_vcpu(0).map_err(os("KVM_CREATE_VCPU"))?;
        let stats = BinaryStats::open(&vcpu).map_err(|e| HvError::Os {
            op: "KVM_GET_STATS_FD",
            source: std::io::Error::other(error_chain(&e)),
        })?;
        Ok(stats.names().map(str::to_string).collect())
    }
}

/// Says whether kvm can run a VM on this host, and if not, why.
///
/// Stronger than [`KvmHypervisor::new`]: it also creates a throw-away VM with
/// one vCPU, which catches hosts whose `/dev/kvm` opens but cannot run
/// guests.
pub fn probe() -> Result<(), String> {
    let hv = KvmHypervisor::new().map_err(|e| reason_of(&e))?;
    let vm = hv
        .create_vm(VmConfig::new(1))
        .map_err(|e| format!("cannot create a VM: {}", error_chain(&e)))?;
    vm.create_vcpu(0)
        .map_err(|e| format!("cannot create a vCPU: {}", error_chain(&e)))?;
    Ok(())
}

/// The reason inside an `Unavailable` error, or the whole error chain.
fn reason_of(err: &HvError) -> String {
    match err {
        HvError::Unavailable { reason, .. } => reason.clone(),
        other => error_chain(other),
    }
}

/// An error and its sources on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A human reason for a failure to open the KVM device at `path`.
fn open_failure_reason(path: &str, err: kvm_ioctls::Error) -> String {
    match err.errno() {
        libc::ENOENT => format!(
            "{path} does not exist (the kvm module is not loaded, or the host has no \
             hardware virtualization)"
        ),
        libc::EACCES | libc::EPERM => format!(
            "permission denied opening {path} (add the user to the group that owns it, \
             usually 'kvm')"
        ),
        libc::ENODEV | libc::ENXIO => format!("{path} exists but no KVM module is behind it"),
        errno => format!(
            "cannot open {path}: {}",
            std::io::Error::from_raw_os_error(errno)
        ),
    }
}

impl Hypervisor for KvmHypervisor {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn create_vm(&self, config: VmConfig) -> Result<Box<dyn Vm>, HvError> {
        Ok(Box::new(KvmVm::new(
            Arc::clone(&self.kvm),
            self.caps,
            config,
        )?))
    }

    fn has_kvm_capability(&self, cap: u32) -> Option<bool> {
        Some(self.kvm.check_extension_raw(libc::c_ulong::from(cap)) > 0)
    }

    fn host_calls(&self) -> hv::HostCalls {
        crate::host_calls::host_calls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_failures_have_actionable_reasons() {
        let missing = open_failure_reason("/dev/kvm", kvm_ioctls::Error::new(libc::ENOENT));
        assert!(missing.contains("does not exist"), "{missing}");
        let denied = open_failure_reason("/dev/kvm", kvm_ioctls::Error::new(libc::EACCES));
        assert!(denied.contains("permission denied"), "{denied}");
        let other = open_failure_reason("/dev/kvm", kvm_ioctls::Error::new(libc::EIO));
        assert!(other.starts_with("cannot open /dev/kvm"), "{other}");
    }

    #[test]
    fn error_chain_joins_sources() {
        let err = HvError::Os {
            op: "KVM_CREATE_VM",
            source: std::io::Error::from_raw_os_error(libc::ENOMEM),
        };
        let text = error_chain(&err);
        assert!(text.starts_with("KVM_CREATE_VM failed: "), "{text}");
    }
}
