//! The complete state of a vCPU and of a VM's in-"kernel" devices, for
//! snapshots, fork and migration.
//!
//! The layouts are architectural (the xAPIC register page, the standard
//! XSAVE format, the i8259/i8254/IOAPIC registers), which is also how KVM
//! exchanges them; backends convert their models to and from these. Times
//! are relative to the VM clock at the moment of the save (remaining
//! counts, ticks elapsed), never host timestamps, so that a state restores
//! in another process or on another host. Fields that only one backend
//! models are documented as such; the other backend saves their neutral
//! value and refuses a state where they are not neutral.
//!
//! Restore order: [`crate::Vm::restore_state`] first (the VM clock and
//! the irqchip), then every vCPU's [`crate::Vcpu::restore_state`].
//! Versioning is the caller's (the snapshot file format).

use serde::{Deserialize, Serialize};

use crate::{CpuidEntry, MpState, Msr, Regs, SRegs};

/// Size of the local APIC register page ([`LapicRegs::page`]).
pub const LAPIC_PAGE_SIZE: usize = 1024;
/// Size of the standard-format XSAVE area every backend accepts at least.
pub const XSAVE_MIN_SIZE: usize = 4096;
/// Pins of the IOAPIC.
pub const IOAPIC_PINS: usize = 24;

/// Everything about one vCPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuState {
    /// The CPUID table the vCPU was given (restored first: MSRs and XSAVE
    /// components are checked against it).
    pub cpuid: Vec<CpuidEntry>,
    pub regs: Regs,
    /// Includes EFER, APIC_BASE and CR8 (the LAPIC's TPR).
    pub sregs: SRegs,
    pub xsave: Xsave,
    /// Extended control registers (XCR0).
    pub xcrs: Vec<Xcr>,
    pub debug_regs: DebugRegs,
    /// Every MSR the guest can use, as the backend lists them
    /// (IA32_TSC excluded: see [`VcpuState::tsc`]; IA32_TSC_DEADLINE
    /// included, restored after the LAPIC).
    pub msrs: Vec<Msr>,
    pub lapic: LapicRegs,
    pub events: VcpuEvents,
    pub mp_state: MpState,
    pub tsc: Tsc,
}

/// The standard-format XSAVE area: the FXSAVE legacy region (x87, SSE),
/// the XSAVE header at byte 512 (XSTATE_BV), AVX at 576, PKRU at 2688...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xsave {
    /// At least [`XSAVE_MIN_SIZE`] bytes.
    pub region: Vec<u8>,
}

/// An extended control register (XSETBV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xcr {
    pub index: u32,
    pub value: u64,
}

/// DR0-DR3, DR6 and DR7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DebugRegs {
    pub db: [u64; 4],
    pub dr6: u64,
    pub dr7: u64,
}

/// The local APIC's registers: the xAPIC page (KVM_GET_LAPIC's layout).
/// The timer's current-count register (0x390) holds the count remaining
/// at the save; a restore restarts the timer from it. In x2APIC mode the
/// ID register is the backend's (emu: the 32-bit x2APIC ID; KVM without
/// KVM_X2APIC_API_USE_32BIT_IDS: the ID in bits 31:24), so a page moves
/// only between VMs of one backend; emu keeps the ESR bits not yet
/// latched in the reserved register at 0x290.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LapicRegs {
    /// [`LAPIC_PAGE_SIZE`] bytes.
    pub page: Vec<u8>,
}

impl LapicRegs {
    /// The 32-bit register at `offset` (a multiple of 16 below 0x400).
    pub fn reg(&self, offset: usize) -> u32 {
        let b = &self.page[offset..offset + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn set_reg(&mut self, offset: usize, value: u32) {
        self.page[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
}

/// Events in flight between two instructions (KVM_GET_VCPU_EVENTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VcpuEvents {
    /// An exception being delivered or waiting for delivery.
    pub exception: Option<PendingException>,
    /// An external or software interrupt being injected.
    pub interrupt: Option<InjectedInterrupt>,
    /// Interrupt shadow: bit 0 after STI, bit 1 after MOV/POP SS.
    pub interrupt_shadow: u8,
    /// An NMI being injected.
    pub nmi_injected: bool,
    /// NMIs received and not yet delivered (0, 1 or 2).
    pub nmi_pending: u8,
    /// NMIs blocked (an NMI handler runs until its IRET).
    pub nmi_masked: bool,
    /// The vector of the SIPI that started (or will start) the vCPU.
    pub sipi_vector: u32,
    pub smm: SmmState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PendingException {
    pub vector: u8,
    pub error_code: Option<u32>,
    /// Already being injected (else pending: not yet started).
    pub injected: bool,
    /// The exception payload (CR2 of a #PF, DR6 bits of a #DB) when the
    /// backend defers it.
    pub payload: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InjectedInterrupt {
    pub vector: u8,
    /// A software interrupt (INTn).
    pub soft: bool,
}

/// System-management mode (neither backend offers SMM to guests today;
/// saved so that a state from one that does is refused, not dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SmmState {
    pub smm: bool,
    pub pending: bool,
    pub smm_inside_nmi: bool,
    pub latched_init: u8,
}

/// The time-stamp counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tsc {
    /// Frequency in kHz the guest sees (KVM_GET_TSC_KHZ). A restore on a
    /// backend that cannot run the TSC at this rate fails.
    pub khz: u32,
    /// IA32_TSC at the save.
    pub value: u64,
}

/// Everything about a VM that is neither memory nor a vCPU nor a device of
/// the VMM: the in-"kernel" irqchip, PIT and clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmState {
    /// The VM clock (KVM_GET_CLOCK: kvmclock's nanoseconds; emu: the
    /// clock of its timers).
    pub clock_ns: u64,
    pub ioapic: IoapicState,
    /// Master, then slave.
    pub pic: [PicChipState; 2],
    /// `None` when the VM was created without a PIT.
    pub pit: Option<PitState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoapicState {
    /// The ID register.
    pub id: u32,
    pub ioregsel: u32,
    /// Level of each pin (bit n = pin n).
    pub irr: u32,
    /// Redirection entries, remote IRR and delivery status included.
    pub redirtbl: [u64; IOAPIC_PINS],
}

/// One i8259A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PicChipState {
    pub last_irr: u8,
    pub irr: u8,
    pub imr: u8,
    pub isr: u8,
    pub priority_add: u8,
    pub irq_base: u8,
    pub read_reg_select: bool,
    pub poll: bool,
    pub special_mask: bool,
    /// 0 operational; 1-3 waiting for ICW2-ICW4.
    pub init_state: u8,
    pub auto_eoi: bool,
    pub rotate_on_auto_eoi: bool,
    pub special_fully_nested_mode: bool,
    pub init4: bool,
    /// ICW1 SNGL (emu only; KVM ignores it).
    pub single_mode: bool,
    /// ICW1 LTIM (emu only; KVM ignores it).
    pub ltim: bool,
    pub elcr: u8,
    pub elcr_mask: u8,
}

/// The i8254.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PitState {
    pub channels: [PitChannelState; 3],
    /// KVM_PIT_FLAGS_HPET_LEGACY (kvm only).
    pub hpet_legacy: bool,
    /// Port 0x61 bit 1 (speaker data; emu only).
    pub speaker_data: bool,
    /// Port 0x61 bits 2-3 as last written (emu only).
    pub port61_other: u8,
}

/// One i8254 counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PitChannelState {
    /// The count loaded (0x10000 for a written 0).
    pub count: u32,
    pub latched_count: u16,
    pub count_latched: u8,
    pub status_latched: bool,
    pub status: u8,
    pub read_state: u8,
    pub write_state: u8,
    pub write_latch: u8,
    pub rw_mode: u8,
    pub mode: u8,
    pub bcd: bool,
    pub gate: bool,
    /// Input clocks (1.193182 MHz) counted since the count was loaded.
    pub elapsed_ticks: u64,
    /// The counter is counting (loaded, gate allows it).
    pub running: bool,
    /// A count was written but not loaded yet (emu only).
    pub null_count: bool,
    /// The counting sequence began (emu only).
    pub started: bool,
    /// Ticks up to which output edges were reported (emu only).
    pub reported_ticks: u64,
}

/// The error of a state that does not fit the VM or vCPU it is restored
/// into.
pub fn mismatch(what: impl std::fmt::Display) -> crate::HvError {
    crate::HvError::StateMismatch(what.to_string())
}

/// The CPU vendor string of a CPUID table (leaf 0: EBX, EDX, ECX).
pub fn cpu_vendor(cpuid: &[CpuidEntry]) -> Option<[u8; 12]> {
    let leaf = cpuid.iter().find(|e| e.function == 0)?;
    let mut v = [0u8; 12];
    v[0..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&leaf.edx.to_le_bytes());
    v[8..12].copy_from_slice(&leaf.ecx.to_le_bytes());
    Some(v)
}

impl VcpuState {
    /// Checks the sizes of the variable-length parts.
    pub fn check_shape(&self) -> Result<(), crate::HvError> {
        if self.lapic.page.len() != LAPIC_PAGE_SIZE {
            return Err(mismatch(format!(
                "LAPIC page of {} bytes (expected {LAPIC_PAGE_SIZE})",
                self.lapic.page.len()
            )));
        }
        if self.xsave.region.len() < XSAVE_MIN_SIZE {
            return Err(mismatch(format!(
                "XSAVE area of {} bytes (at least {XSAVE_MIN_SIZE} expected)",
                self.xsave.region.len()
            )));
        }
        if self.events.nmi_pending > 2 {
            return Err(mismatch(format!(
                "{} pending NMIs (at most 2)",
                self.events.nmi_pending
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_checks_refuse_wrong_sizes() {
        let mut s = VcpuState {
            cpuid: vec![],
            regs: Regs::default(),
            sregs: SRegs::default(),
            xsave: Xsave {
                region: vec![0; XSAVE_MIN_SIZE],
            },
            xcrs: vec![],
            debug_regs: DebugRegs::default(),
            msrs: vec![],
            lapic: LapicRegs {
                page: vec![0; LAPIC_PAGE_SIZE],
            },
            events: VcpuEvents::default(),
            mp_state: MpState::Runnable,
            tsc: Tsc { khz: 1, value: 0 },
        };
        s.check_shape().unwrap();
        s.lapic.page.pop();
        assert!(s.check_shape().is_err());
        s.lapic.page.push(0);
        s.xsave.region.truncate(512);
        assert!(s.check_shape().is_err());
        s.xsave.region.resize(XSAVE_MIN_SIZE, 0);
        s.events.nmi_pending = 3;
        assert!(s.check_shape().is_err());
    }

    #[test]
    fn vendor_reads_leaf_0() {
        let e = CpuidEntry {
            function: 0,
            ebx: u32::from_le_bytes(*b"Genu"),
            edx: u32::from_le_bytes(*b"ineI"),
            ecx: u32::from_le_bytes(*b"ntel"),
            ..Default::default()
        };
        assert_eq!(cpu_vendor(&[e]), Some(*b"GenuineIntel"));
        assert_eq!(cpu_vendor(&[]), None);
    }
}
