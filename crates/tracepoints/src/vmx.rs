//! The exit reasons `kvm_exit` prints: Intel's VMX basic exit reasons with
//! Linux's names (`VMX_EXIT_REASONS`), for the exits Ferrovisor reports.

/// A VMX basic exit reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum VmxExit {
    ExceptionNmi = 0,
    ExternalInterrupt = 1,
    TripleFault = 2,
    InterruptWindow = 7,
    NmiWindow = 8,
    Cpuid = 10,
    Hlt = 12,
    Vmcall = 18,
    CrAccess = 28,
    IoInstruction = 30,
    MsrRead = 31,
    MsrWrite = 32,
    PauseInstruction = 40,
    EptViolation = 48,
    EptMisconfig = 49,
}

impl VmxExit {
    /// Linux's name, as `kvm_exit` prints it.
    pub fn name(self) -> &'static str {
        match self {
            VmxExit::ExceptionNmi => "EXCEPTION_NMI",
            VmxExit::ExternalInterrupt => "EXTERNAL_INTERRUPT",
            VmxExit::TripleFault => "TRIPLE_FAULT",
            VmxExit::InterruptWindow => "INTERRUPT_WINDOW",
            VmxExit::NmiWindow => "NMI_WINDOW",
            VmxExit::Cpuid => "CPUID",
            VmxExit::Hlt => "HLT",
            VmxExit::Vmcall => "VMCALL",
            VmxExit::CrAccess => "CR_ACCESS",
            VmxExit::IoInstruction => "IO_INSTRUCTION",
            VmxExit::MsrRead => "MSR_READ",
            VmxExit::MsrWrite => "MSR_WRITE",
            VmxExit::PauseInstruction => "PAUSE_INSTRUCTION",
            VmxExit::EptViolation => "EPT_VIOLATION",
            VmxExit::EptMisconfig => "EPT_MISCONFIG",
        }
    }

    /// The exit qualification of an I/O instruction exit (SDM table 28-5):
    /// size - 1, direction (1 = IN), string, REP, port.
    pub fn io_qualification(port: u16, size: u32, input: bool, string: bool, rep: bool) -> u64 {
        u64::from(size.saturating_sub(1) & 7)
            | u64::from(input) << 3
            | u64::from(string) << 4
            | u64::from(rep) << 5
            | u64::from(port) << 16
    }

    /// The exit qualification of a control-register access (SDM table
    /// 28-3) for MOV to (access type 0) or from (1) CR`cr`.
    pub fn cr_qualification(cr: u32, write: bool) -> u64 {
        u64::from(cr & 0xf) | if write { 0 } else { 1 << 4 }
    }
}

/// KVM's userspace exit reasons (`KVM_EXIT_*`) and Linux's names of them.
pub fn kvm_exit_reason_name(reason: u32) -> &'static str {
    const NAMES: [&str; 25] = [
        "KVM_EXIT_UNKNOWN",
        "KVM_EXIT_EXCEPTION",
        "KVM_EXIT_IO",
        "KVM_EXIT_HYPERCALL",
        "KVM_EXIT_DEBUG",
        "KVM_EXIT_HLT",
        "KVM_EXIT_MMIO",
        "KVM_EXIT_IRQ_WINDOW_OPEN",
        "KVM_EXIT_SHUTDOWN",
        "KVM_EXIT_FAIL_ENTRY",
        "KVM_EXIT_INTR",
        "KVM_EXIT_SET_TPR",
        "KVM_EXIT_TPR_ACCESS",
        "KVM_EXIT_S390_SIEIC",
        "KVM_EXIT_S390_RESET",
        "KVM_EXIT_DCR",
        "KVM_EXIT_NMI",
        "KVM_EXIT_INTERNAL_ERROR",
        "KVM_EXIT_OSI",
        "KVM_EXIT_PAPR_HCALL",
        "KVM_EXIT_S390_UCONTROL",
        "KVM_EXIT_WATCHDOG",
        "KVM_EXIT_S390_TSCH",
        "KVM_EXIT_EPR",
        "KVM_EXIT_SYSTEM_EVENT",
    ];
    NAMES.get(reason as usize).copied().unwrap_or("UNKNOWN")
}

/// `KVM_EXIT_IO`, `KVM_EXIT_HLT`, ...: the numbers the accelerators pass
/// to `kvm_userspace_exit`.
pub mod kvm_exit {
    pub const IO: u32 = 2;
    pub const DEBUG: u32 = 4;
    pub const HLT: u32 = 5;
    pub const MMIO: u32 = 6;
    pub const SHUTDOWN: u32 = 8;
    pub const INTR: u32 = 10;
    pub const SYSTEM_EVENT: u32 = 24;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_qualification_packs_the_sdm_fields() {
        // OUT DX, AL to 0x3f8.
        assert_eq!(
            VmxExit::io_qualification(0x3f8, 1, false, false, false),
            0x3f8_0000
        );
        // IN EAX, DX from 0xcfc.
        assert_eq!(
            VmxExit::io_qualification(0xcfc, 4, true, false, false),
            0xcfc_000b
        );
        // REP OUTSW.
        assert_eq!(
            VmxExit::io_qualification(0x1f0, 2, false, true, true),
            0x1f0_0031
        );
    }

    #[test]
    fn kvm_exit_names_match_their_numbers() {
        assert_eq!(kvm_exit_reason_name(kvm_exit::IO), "KVM_EXIT_IO");
        assert_eq!(kvm_exit_reason_name(kvm_exit::HLT), "KVM_EXIT_HLT");
        assert_eq!(kvm_exit_reason_name(kvm_exit::MMIO), "KVM_EXIT_MMIO");
        assert_eq!(
            kvm_exit_reason_name(kvm_exit::SHUTDOWN),
            "KVM_EXIT_SHUTDOWN"
        );
        assert_eq!(kvm_exit_reason_name(kvm_exit::INTR), "KVM_EXIT_INTR");
        assert_eq!(
            kvm_exit_reason_name(kvm_exit::SYSTEM_EVENT),
            "KVM_EXIT_SYSTEM_EVENT"
        );
        assert_eq!(kvm_exit_reason_name(999), "UNKNOWN");
    }
}
