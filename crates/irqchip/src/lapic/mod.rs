//! The local APIC of one vCPU (KVM's `lapic.c`): xAPIC MMIO registers,
//! x2APIC MSRs, interrupt acceptance and priority (IRR/ISR/TMR, TPR/PPR),
//! EOI, the APIC timer (one-shot, periodic, TSC-deadline), IPI generation
//! through the ICR and destination matching for the router.
//!
//! # How the accelerator uses it
//!
//! - Interrupt messages for this vCPU (fixed and lowest-priority, from the
//!   IOAPIC, MSIs or IPIs) go to [`Lapic::accept_interrupt`]. NMI, SMI,
//!   INIT, SIPI and ExtINT messages are the vCPU's business (mp-state,
//!   NMI injection, the PIC); [`Lapic::deliver_init`] resets the registers.
//! - Before entering the guest, [`Lapic::tick`] fires an expired timer, then
//!   [`Lapic::pending_vector`] says whether an interrupt can be injected;
//!   when the CPU takes it, [`Lapic::acknowledge`] moves it from IRR to ISR.
//! - A halted vCPU sleeps until [`Lapic::next_deadline_ns`] (or a kick).
//! - Register accesses return a [`LapicAction`]: an IPI to route, or the
//!   EOI of a level-triggered vector that the IOAPIC must see. After any
//!   access, pending interrupts and the timer deadline may have changed.
//! - Virtual wire mode: [`Lapic::accept_pic_interrupts`] says whether the
//!   PIC's INTR reaches this CPU (APIC hardware-disabled, or LINT0 unmasked
//!   in ExtINT mode); [`Lapic::lvt`] exposes LINT1 (normally NMI).
//!
//! # Time
//!
//! Every method that needs the time takes `now_ns`, monotonic nanoseconds.
//! The APIC timer counts at [`APIC_BUS_HZ`] (100 MHz) divided by the
//! divide configuration register. The guest TSC is `tsc_offset +
//! now_ns * tsc_hz / 1e9` (wrapping); `tsc_hz` is a constructor parameter
//! and the accelerator keeps `tsc_offset` in sync with its own TSC model
//! ([`Lapic::set_tsc_offset`]) so that `IA32_TSC_DEADLINE` fires on time.
//!
//! # Not modelled
//!
//! - Delivery status (ICR bit 12, LVT bit 12) always reads 0: IPIs are
//!   delivered instantly.
//! - Remote IRR of LINT0/LINT1 (level-triggered local interrupts), remote
//!   read (RRD), focus processor checking, directed EOI / EOI-broadcast
//!   suppression (the version register does not advertise it).
//! - Thermal and performance-counter LVTs are plain storage: nothing
//!   raises them. The version register says 6 LVT entries (max LVT 5), as
//!   Linux expects without CMCI, so the CMCI register (0x2F0) does not
//!   exist: it reads 0 and ignores writes (an illegal-register error) in
//!   xAPIC mode, and its MSR (0x82F) is #GP in x2APIC mode, as on KVM
//!   without MCG_CMCI_P.
//! - Lowest-priority arbitration is the router's job ([`Lapic::apr`] helps).
//! - APIC base relocation is only reported ([`Lapic::mmio_base`]); the caller
//!   maps the page.
//! - A periodic timer never fires more often than every
//!   [`MIN_PERIODIC_NS`] (KVM's `min_timer_period_us` is 200 µs): the
//!   current-count register stays consistent with the stretched period.

mod page;
mod regs;
#[cfg(test)]
mod tests;
mod timer;

use crate::DeliveryMode;

pub use page::{PageError, ESR_PENDING, PAGE_SIZE};
pub use timer::{TimerMode, APIC_BUS_HZ, MIN_PERIODIC_NS};

/// The default physical address of the xAPIC MMIO page.
pub const APIC_DEFAULT_BASE: u64 = 0xFEE0_0000;
/// Size of the xAPIC MMIO page.
pub const APIC_MMIO_SIZE: u64 = 0x1000;
/// `IA32_APIC_BASE`.
pub const MSR_IA32_APIC_BASE: u32 = 0x1b;
/// `IA32_TSC_DEADLINE`.
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// First x2APIC MSR (register offset 0 >> 4).
pub const MSR_X2APIC_FIRST: u32 = 0x800;
/// Last x2APIC MSR.
pub const MSR_X2APIC_LAST: u32 = 0x8ff;
/// The version register: version 0x14 (integrated APIC), max LVT entry 5.
pub const APIC_VERSION: u32 = 0x0005_0014;

/// `IA32_APIC_BASE` bit 8: this is the bootstrap processor (read-only).
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// `IA32_APIC_BASE` bit 10: x2APIC mode.
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// `IA32_APIC_BASE` bit 11: APIC globally enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// `IA32_APIC_BASE` bits 51:12: the MMIO page.
pub const APIC_BASE_ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Register offsets in the xAPIC page (the x2APIC MSR is `0x800 + offset / 16`).
pub mod reg {
    pub const ID: u32 = 0x20;
    pub const VERSION: u32 = 0x30;
    pub const TPR: u32 = 0x80;
    pub const APR: u32 = 0x90;
    pub const PPR: u32 = 0xa0;
    pub const EOI: u32 = 0xb0;
    pub const RRD: u32 = 0xc0;
    pub const LDR: u32 = 0xd0;
    pub const DFR: u32 = 0xe0;
    pub const SVR: u32 = 0xf0;
    pub const ISR: u32 = 0x100;
    pub const TMR: u32 = 0x180;
    pub const IRR: u32 = 0x200;
    pub const ESR: u32 = 0x280;
    pub const LVT_CMCI: u32 = 0x2f0;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_THERMAL: u32 = 0x330;
    pub const LVT_PERF: u32 = 0x340;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3e0;
    /// x2APIC only (MSR 0x83f).
    pub const SELF_IPI: u32 = 0x3f0;
}

/// SVR bit 8: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;
/// LVT bit 16: masked.
pub const LVT_MASKED: u32 = 1 << 16;

/// ESR bit 5: send illegal vector.
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR bit 6: receive illegal vector.
const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
/// ESR bit 7: illegal register address.
const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// The local vector table entries, in the order of [`LapicState::lvt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lvt {
    Cmci = 0,
    Timer = 1,
    Thermal = 2,
    Perf = 3,
    Lint0 = 4,
    Lint1 = 5,
    Error = 6,
}

impl Lvt {
    /// All entries, in state order.
    pub const ALL: [Lvt; 7] = [
        Lvt::Cmci,
        Lvt::Timer,
        Lvt::Thermal,
        Lvt::Perf,
        Lvt::Lint0,
        Lvt::Lint1,
        Lvt::Error,
    ];

    fn from_offset(offset: u32) -> Option<Lvt> {
        Some(match offset {
            // Max LVT 5: no CMCI register (see the module documentation).
            reg::LVT_TIMER => Lvt::Timer,
            reg::LVT_THERMAL => Lvt::Thermal,
            reg::LVT_PERF => Lvt::Perf,
            reg::LVT_LINT0 => Lvt::Lint0,
            reg::LVT_LINT1 => Lvt::Lint1,
            reg::LVT_ERROR => Lvt::Error,
            _ => return None,
        })
    }

    /// Bits software can write (delivery status and remote IRR are
    /// read-only; the timer has a mode instead of a delivery mode).
    fn writable_mask(self) -> u32 {
        match self {
            Lvt::Timer => 0x0007_00ff,
            Lvt::Lint0 | Lvt::Lint1 => 0x0001_a7ff,
            Lvt::Error => 0x0001_00ff,
            Lvt::Cmci | Lvt::Thermal | Lvt::Perf => 0x0001_07ff,
        }
    }
}

/// A decoded LVT entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LvtEntry {
    pub raw: u32,
    pub vector: u8,
    /// Fixed for the timer and error entries, which have no such field.
    pub delivery_mode: DeliveryMode,
    pub masked: bool,
    /// LINT0/LINT1 only (bit 15).
    pub level_triggered: bool,
    /// LINT0/LINT1 only (bit 13).
    pub active_low: bool,
}

impl LvtEntry {
    fn decode(which: Lvt, raw: u32) -> LvtEntry {
        let lint = matches!(which, Lvt::Lint0 | Lvt::Lint1);
        let has_mode = !matches!(which, Lvt::Timer | Lvt::Error);
        LvtEntry {
            raw,
            vector: raw as u8,
            delivery_mode: if has_mode {
                DeliveryMode::from_bits(raw >> 8)
            } else {
                DeliveryMode::Fixed
            },
            masked: raw & LVT_MASKED != 0,
            level_triggered: lint && raw & (1 << 15) != 0,
            active_low: lint && raw & (1 << 13) != 0,
        }
    }
}

/// ICR bit 11.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DestMode {
    #[default]
    Physical,
    Logical,
}

/// ICR bits 19:18.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DestShorthand {
    /// The destination field says who.
    #[default]
    None,
    SelfOnly,
    AllIncludingSelf,
    AllExcludingSelf,
}

/// ICR bit 15.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TriggerMode {
    #[default]
    Edge,
    Level,
}

/// An inter-processor interrupt requested by a write to the ICR, for the
/// router. Targets are the local APICs for which [`Lapic::matches_ipi`]
/// is true. For [`DeliveryMode::StartUp`] the vector is the SIPI vector
/// (start at `vector << 12`); an INIT with `level == false` and a level
/// trigger is the obsolete "INIT level de-assert" and should be dropped
/// ([`Ipi::is_init_deassert`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Ipi {
    pub vector: u8,
    pub delivery_mode: DeliveryMode,
    pub dest_mode: DestMode,
    /// ICR bit 14: assert (true) or de-assert.
    pub level: bool,
    pub trigger: TriggerMode,
    pub dest_shorthand: DestShorthand,
    /// ICR bits 63:56 in xAPIC mode, 63:32 in x2APIC mode.
    pub destination: u32,
    /// The sender was in x2APIC mode: `destination` is a 32-bit x2APIC
    /// destination (broadcast 0xffff_ffff) rather than an 8-bit one.
    pub x2apic_format: bool,
}

impl Ipi {
    /// The obsolete INIT level de-assert message, which targets nobody.
    pub fn is_init_deassert(&self) -> bool {
        self.delivery_mode == DeliveryMode::Init
            && !self.level
            && self.trigger == TriggerMode::Level
    }

    fn from_icr(icr: u64, x2apic: bool) -> Ipi {
        let low = icr as u32;
        Ipi {
            vector: low as u8,
            delivery_mode: DeliveryMode::from_bits(low >> 8),
            dest_mode: if low & (1 << 11) != 0 {
                DestMode::Logical
            } else {
                DestMode::Physical
            },
            level: low & (1 << 14) != 0,
            trigger: if low & (1 << 15) != 0 {
                TriggerMode::Level
            } else {
                TriggerMode::Edge
            },
            dest_shorthand: match (low >> 18) & 3 {
                0 => DestShorthand::None,
                1 => DestShorthand::SelfOnly,
                2 => DestShorthand::AllIncludingSelf,
                _ => DestShorthand::AllExcludingSelf,
            },
            destination: if x2apic {
                (icr >> 32) as u32
            } else {
                (icr >> 56) as u32
            },
            x2apic_format: x2apic,
        }
    }
}

/// What a register access asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LapicAction {
    #[default]
    None,
    /// Route this IPI.
    SendIpi(Ipi),
    /// A level-triggered vector was EOI'd: tell the IOAPIC
    /// ([`crate::ioapic::IoApic::eoi`]).
    Eoi(u8),
}

/// Errors of MSR accesses and `IA32_APIC_BASE` writes. Each one is a #GP
/// for the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LapicError {
    #[error("x2APIC MSR {0:#x} accessed while the APIC is not in x2APIC mode")]
    NotX2Apic(u32),
    #[error("MSR {0:#x} is not a local APIC register")]
    UnknownMsr(u32),
    #[error("MSR {0:#x} is read-only")]
    ReadOnly(u32),
    #[error("MSR {0:#x} is write-only")]
    WriteOnly(u32),
    #[error("reserved bits set writing {value:#x} to MSR {msr:#x}")]
    ReservedBits { msr: u32, value: u64 },
    #[error("invalid IA32_APIC_BASE change from {from:#x} to {to:#x}")]
    InvalidApicBase { from: u64, to: u64 },
}

/// The complete state of a local APIC. Registers hold their architectural
/// values; the timer fields are in nanoseconds on the caller's clock.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LapicState {
    /// `IA32_APIC_BASE`.
    pub apic_base: u64,
    /// The APIC ID given at creation (the x2APIC ID).
    pub initial_id: u32,
    /// The current APIC ID (xAPIC: writable, bits 31:24 of the register).
    pub id: u32,
    pub tpr: u32,
    pub ldr: u32,
    pub dfr: u32,
    pub svr: u32,
    pub isr: [u32; 8],
    pub tmr: [u32; 8],
    pub irr: [u32; 8],
    /// ESR as software reads it.
    pub esr: u32,
    /// Errors collected since the last ESR write.
    pub esr_pending: u32,
    /// Indexed by [`Lvt`].
    pub lvt: [u32; 7],
    pub icr: u64,
    pub timer_initial: u32,
    pub timer_divide: u32,
    /// Length of one count from initial to 0; 0 when the timer is stopped.
    pub timer_period_ns: u64,
    /// Next one-shot/periodic expiry not yet fired (the current count is
    /// computed back from it).
    pub timer_next_ns: Option<u64>,
    /// `IA32_TSC_DEADLINE` (0 = disarmed).
    pub tsc_deadline: u64,
    pub tsc_hz: u64,
    pub tsc_offset: u64,
    /// The CPU model offers x2APIC (CPUID.1:ECX bit 21): without it,
    /// IA32_APIC_BASE.EXTD cannot be set (#GP), as on KVM.
    pub x2apic_capable: bool,
    /// The CPU's physical-address width (CPUID.8000_0008:EAX[7:0]): base
    /// address bits above it are reserved in IA32_APIC_BASE. 0 = 52.
    pub phys_addr_bits: u8,
}

/// Mode of the APIC as `IA32_APIC_BASE` selects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ApicMode {
    Disabled,
    XApic,
    X2Apic,
    Invalid,
}

fn apic_mode(base: u64) -> ApicMode {
    match (base & APIC_BASE_ENABLE != 0, base & APIC_BASE_EXTD != 0) {
        (false, false) => ApicMode::Disabled,
        (true, false) => ApicMode::XApic,
        (true, true) => ApicMode::X2Apic,
        (false, true) => ApicMode::Invalid,
    }
}

/// The x2APIC logical ID derived from the x2APIC ID (cluster in 31:16,
/// one bit of 16 in 15:0).
pub fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xf))
}

fn bit_test(bits: &[u32; 8], vector: u8) -> bool {
    bits[usize::from(vector >> 5)] & (1 << (vector & 31)) != 0
}

fn bit_set(bits: &mut [u32; 8], vector: u8) {
    bits[usize::from(vector >> 5)] |= 1 << (vector & 31);
}

fn bit_clear(bits: &mut [u32; 8], vector: u8) {
    bits[usize::from(vector >> 5)] &= !(1 << (vector & 31));
}

/// Highest set vector.
fn highest(bits: &[u32; 8]) -> Option<u8> {
    (0..8usize)
        .rev()
        .find(|&i| bits[i] != 0)
        .map(|i| (i as u8) * 32 + (31 - bits[i].leading_zeros() as u8))
}

/// A local APIC.
#[derive(Clone, Debug)]
pub struct Lapic {
    s: LapicState,
    /// [`Lapic::timer_periods_stretched`] (a counter, not guest state).
    periods_stretched: u64,
}

impl Lapic {
    /// A local APIC after power-on, globally enabled in xAPIC mode at the
    /// default base, software-disabled. `tsc_hz` is the guest TSC rate
    /// (for `IA32_TSC_DEADLINE`).
    pub fn new(apic_id: u32, bsp: bool, tsc_hz: u64) -> Lapic {
        let mut lapic = Lapic {
            s: LapicState {
                apic_base: APIC_DEFAULT_BASE
                    | APIC_BASE_ENABLE
                    | if bsp { APIC_BASE_BSP } else { 0 },
                initial_id: apic_id,
                id: apic_id,
                tsc_hz,
                x2apic_capable: true,
                ..LapicState::default()
            },
            periods_stretched: 0,
        };
        lapic.reset_registers();
        if bsp {
            // As KVM does (and a BIOS leaves it): the bootstrap processor
            // starts in virtual-wire mode, LINT0 unmasked as ExtINT, so the
            // PIC's interrupts reach it.
            lapic.s.lvt[Lvt::Lint0 as usize] = DeliveryMode::ExtInt.bits() << 8;
        }
        lapic
    }

    /// The state, for a snapshot.
    pub fn state(&self) -> LapicState {
        self.s.clone()
    }

    /// A local APIC restored from a snapshot.
    pub fn from_state(state: LapicState) -> Lapic {
        Lapic {
            s: state,
            periods_stretched: 0,
        }
    }

    /// The power-on values of everything but the ID, the APIC base and
    /// the TSC configuration (SDM 11.4.7.1, "INIT reset").
    fn reset_registers(&mut self) {
        let s = &mut self.s;
        s.tpr = 0;
        s.isr = [0; 8];
        s.tmr = [0; 8];
        s.irr = [0; 8];
        s.esr = 0;
        s.esr_pending = 0;
        s.lvt = [LVT_MASKED; 7];
        s.icr = 0;
        s.timer_initial = 0;
        s.timer_divide = 0;
        s.timer_period_ns = 0;
        s.timer_next_ns = None;
        s.tsc_deadline = 0;
        s.svr = 0xff;
        s.dfr = 0xffff_ffff;
        s.ldr = if apic_mode(s.apic_base) == ApicMode::X2Apic {
            x2apic_ldr(s.id)
        } else {
            0
        };
    }

    /// An INIT signal: resets the registers to their power-on values
    /// except the APIC ID and `IA32_APIC_BASE` (the x2APIC mode is kept).
    /// The vCPU's mp-state (wait-for-SIPI) is the caller's job.
    pub fn deliver_init(&mut self) {
        tracing::trace!(id = self.s.id, "kvm_apic_init");
        self.reset_registers();
    }

    /// The current APIC ID (8 bits in xAPIC mode, 32 in x2APIC mode).
    pub fn id(&self) -> u32 {
        self.s.id
    }

    pub fn apic_base(&self) -> u64 {
        self.s.apic_base
    }

    /// Physical address of the xAPIC MMIO page.
    pub fn mmio_base(&self) -> u64 {
        self.s.apic_base & APIC_BASE_ADDR_MASK
    }

    /// `IA32_APIC_BASE` bit 11.
    pub fn is_hw_enabled(&self) -> bool {
        self.s.apic_base & APIC_BASE_ENABLE != 0
    }

    /// SVR bit 8.
    pub fn is_sw_enabled(&self) -> bool {
        self.s.svr & SVR_ENABLE != 0
    }

    /// Hardware- and software-enabled: fixed interrupts are accepted.
    pub fn is_enabled(&self) -> bool {
        self.is_hw_enabled() && self.is_sw_enabled()
    }

    pub fn is_x2apic(&self) -> bool {
        apic_mode(self.s.apic_base) == ApicMode::X2Apic
    }

    /// The MMIO page answers (enabled, xAPIC mode). Otherwise MMIO reads
    /// return 0 and writes are ignored, and the caller should let the
    /// accesses reach memory instead.
    pub fn xapic_mmio_enabled(&self) -> bool {
        apic_mode(self.s.apic_base) == ApicMode::XApic
    }

    /// A write to `IA32_APIC_BASE` (MSR 0x1b), with the SDM's checks:
    /// reserved bits, EXTD without EN, x2APIC → xAPIC and disabled →
    /// x2APIC are #GP, and so are EXTD on a CPU model without x2APIC and
    /// address bits beyond the physical-address width. The BSP bit is read-only. Disabling the APIC resets
    /// its registers; entering x2APIC mode makes the ID the initial APIC ID
    /// and derives the logical ID from it.
    pub fn set_apic_base(&mut self, value: u64) -> Result<(), LapicError> {
        let old = self.s.apic_base;
        let value = (value & !APIC_BASE_BSP) | (old & APIC_BASE_BSP);
        let bits = match self.s.phys_addr_bits {
            0 => 52,
            b => u32::from(b.min(52)),
        };
        let addr_mask = APIC_BASE_ADDR_MASK & ((1u64 << bits) - 1);
        let reserved = !(APIC_BASE_BSP | APIC_BASE_EXTD | APIC_BASE_ENABLE | addr_mask);
        let invalid = LapicError::InvalidApicBase {
            from: old,
            to: value,
        };
        if value & reserved != 0 {
            return Err(invalid);
        }
        let (from, to) = (apic_mode(old), apic_mode(value));
        match (from, to) {
            (_, ApicMode::Invalid)
            | (ApicMode::X2Apic, ApicMode::XApic)
            | (ApicMode::Disabled, ApicMode::X2Apic) => return Err(invalid),
            (_, ApicMode::X2Apic) if !self.s.x2apic_capable => return Err(invalid),
            _ => {}
        }
        self.s.apic_base = value;
        if from != to {
            tracing::debug!(id = self.s.id, from = ?from, to = ?to, "kvm_apic_base");
            match to {
                ApicMode::Disabled => {
                    self.s.id = self.s.initial_id;
                    self.reset_registers();
                }
                ApicMode::X2Apic => {
                    self.s.id = self.s.initial_id;
                    self.s.ldr = x2apic_ldr(self.s.id);
                }
                ApicMode::XApic | ApicMode::Invalid => {}
            }
        }
        Ok(())
    }

    /// Whether the CPU model offers x2APIC mode (CPUID.1:ECX.x2APIC): a
    /// LAPIC already in x2APIC mode stays there.
    pub fn set_x2apic_capable(&mut self, capable: bool) {
        self.s.x2apic_capable = capable;
    }

    /// The CPU's physical-address width: IA32_APIC_BASE bits at and above
    /// it are reserved (#GP).
    pub fn set_phys_addr_bits(&mut self, bits: u8) {
        self.s.phys_addr_bits = bits;
    }

    /// The task priority (8 bits).
    pub fn tpr(&self) -> u8 {
        self.s.tpr as u8
    }

    /// Sets the task priority (what a CR8 write does: `cr8 << 4`).
    pub fn set_tpr(&mut self, tpr: u8) {
        self.s.tpr = u32::from(tpr);
    }

    /// CR8 as the CPU reads it: TPR bits 7:4.
    pub fn cr8(&self) -> u64 {
        u64::from(self.s.tpr >> 4)
    }

    /// A CR8 write (bits 3:0 become TPR bits 7:4).
    pub fn set_cr8(&mut self, cr8: u64) {
        self.s.tpr = ((cr8 & 0xf) << 4) as u32;
    }

    /// The processor priority: max(TPR, class of the highest in-service
    /// vector).
    pub fn ppr(&self) -> u8 {
        let tpr = self.s.tpr as u8;
        let isrv = highest(&self.s.isr).unwrap_or(0);
        if tpr >> 4 >= isrv >> 4 {
            tpr
        } else {
            isrv & 0xf0
        }
    }

    /// The arbitration priority, for lowest-priority delivery: the lowest
    /// APR wins.
    pub fn apr(&self) -> u8 {
        let tpr = self.s.tpr as u8;
        let isrv = highest(&self.s.isr).unwrap_or(0);
        let irrv = highest(&self.s.irr).unwrap_or(0);
        if tpr >> 4 >= irrv >> 4 && tpr >> 4 >= isrv >> 4 {
            tpr
        } else {
            (tpr & 0xf0).max(isrv & 0xf0).max(irrv & 0xf0)
        }
    }

    /// A decoded LVT entry.
    pub fn lvt(&self, which: Lvt) -> LvtEntry {
        LvtEntry::decode(which, self.s.lvt[which as usize])
    }

    /// Whether the i8259's INTR output reaches this CPU: the APIC is
    /// hardware-disabled, or LINT0 is unmasked in ExtINT mode (virtual
    /// wire). The caller then acknowledges the PIC for the vector and
    /// injects it directly, bypassing IRR/ISR, as KVM does.
    pub fn accept_pic_interrupts(&self) -> bool {
        if !self.is_hw_enabled() {
            return true;
        }
        let lint0 = self.lvt(Lvt::Lint0);
        !lint0.masked && lint0.delivery_mode == DeliveryMode::ExtInt
    }

    /// Is `vector` requested (IRR)?
    pub fn irr_test(&self, vector: u8) -> bool {
        bit_test(&self.s.irr, vector)
    }

    /// Is `vector` in service (ISR)?
    pub fn isr_test(&self, vector: u8) -> bool {
        bit_test(&self.s.isr, vector)
    }

    /// A fixed or lowest-priority interrupt arrives: sets its IRR bit and
    /// records the trigger mode in TMR. Returns false when it was dropped:
    /// the APIC is disabled (hardware or software) or the vector is below
    /// 16 (which sets "receive illegal vector" in ESR).
    pub fn accept_interrupt(&mut self, vector: u8, level_triggered: bool) -> bool {
        if !self.is_enabled() {
            tracing::trace!(id = self.s.id, vector, "kvm_apic_accept_irq: apic disabled");
            return false;
        }
        if vector < 16 {
            self.report_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        tracing::trace!(
            id = self.s.id,
            vector,
            level_triggered,
            "kvm_apic_accept_irq"
        );
        bit_set(&mut self.s.irr, vector);
        if level_triggered {
            bit_set(&mut self.s.tmr, vector);
        } else {
            bit_clear(&mut self.s.tmr, vector);
        }
        true
    }

    /// The vector the CPU would take now, if any: the highest requested
    /// vector whose priority class is above the PPR's. (Whether the CPU
    /// can take it — RFLAGS.IF, interrupt shadow — is the CPU's business.)
    pub fn pending_vector(&self) -> Option<u8> {
        if !self.is_hw_enabled() {
            return None;
        }
        let irrv = highest(&self.s.irr)?;
        (irrv & 0xf0 > self.ppr() & 0xf0).then_some(irrv)
    }

    /// The interrupt-acknowledge cycle: moves the pending vector from IRR
    /// to ISR and returns it. With nothing pending (the interrupt was
    /// masked by a TPR raise in the meantime) returns the spurious vector,
    /// which is not put in service.
    pub fn acknowledge(&mut self) -> u8 {
        match self.pending_vector() {
            Some(vector) => {
                bit_clear(&mut self.s.irr, vector);
                bit_set(&mut self.s.isr, vector);
                vector
            }
            None => self.s.svr as u8,
        }
    }

    /// End of interrupt: clears the highest in-service vector. Returns it
    /// when it was level-triggered (TMR set), for the IOAPIC.
    pub fn eoi(&mut self) -> Option<u8> {
        let vector = highest(&self.s.isr)?;
        bit_clear(&mut self.s.isr, vector);
        tracing::trace!(id = self.s.id, vector, "kvm_eoi");
        bit_test(&self.s.tmr, vector).then_some(vector)
    }

    fn report_error(&mut self, bit: u32) {
        self.s.esr_pending |= bit;
        let lvt = self.lvt(Lvt::Error);
        if !lvt.masked && lvt.vector >= 16 && self.is_enabled() {
            bit_set(&mut self.s.irr, lvt.vector);
            bit_clear(&mut self.s.tmr, lvt.vector);
        }
    }

    /// Does a message with this destination target this APIC?
    ///
    /// `dest_mode_logical` selects logical (LDR/DFR: flat or cluster model
    /// in xAPIC mode, cluster in x2APIC mode) or physical (APIC ID)
    /// matching. `x2apic_format` says the destination is a 32-bit x2APIC
    /// one (an IPI from an APIC in x2APIC mode); IOAPIC, MSI and xAPIC IPI
    /// destinations are 8-bit, and their broadcast 0xff also reaches APICs
    /// in x2APIC mode (as KVM does).
    pub fn matches_destination(
        &self,
        dest: u32,
        dest_mode_logical: bool,
        x2apic_format: bool,
    ) -> bool {
        if !self.is_hw_enabled() {
            return false;
        }
        if self.is_x2apic() {
            if dest == 0xffff_ffff || (!x2apic_format && dest == 0xff) {
                return true;
            }
            if !dest_mode_logical {
                return dest == self.s.id;
            }
            let (cluster, mask) = (dest >> 16, dest & 0xffff);
            return cluster == self.s.ldr >> 16 && mask & self.s.ldr & 0xffff != 0;
        }
        let dest = dest & 0xff;
        if dest == 0xff {
            return true;
        }
        if !dest_mode_logical {
            return dest == self.s.id & 0xff;
        }
        let ldr = self.s.ldr >> 24;
        if self.s.dfr >> 28 == 0xf {
            // Flat model: one bit per APIC.
            ldr & dest != 0
        } else {
            // Cluster model: cluster in 7:4 (15 = all clusters), mask in 3:0.
            let cluster = dest >> 4;
            (cluster == 0xf || cluster == ldr >> 4) && dest & ldr & 0xf != 0
        }
    }

    /// Does `ipi` target this APIC? `is_source` says this APIC sent it
    /// (for the self / all-excluding-self shorthands).
    pub fn matches_ipi(&self, ipi: &Ipi, is_source: bool) -> bool {
        if ipi.is_init_deassert() {
            return false;
        }
        match ipi.dest_shorthand {
            DestShorthand::None => self.matches_destination(
                ipi.destination,
                ipi.dest_mode == DestMode::Logical,
                ipi.x2apic_format,
            ),
            DestShorthand::SelfOnly => is_source,
            DestShorthand::AllIncludingSelf => self.is_hw_enabled(),
            DestShorthand::AllExcludingSelf => !is_source && self.is_hw_enabled(),
        }
    }

    /// Sends the IPI in the ICR: decodes it for the router. A fixed IPI
    /// with a vector below 16 is not sent ("send illegal vector").
    fn send_ipi(&mut self) -> LapicAction {
        let ipi = Ipi::from_icr(self.s.icr, self.is_x2apic());
        if matches!(
            ipi.delivery_mode,
            DeliveryMode::Fixed | DeliveryMode::LowestPriority
        ) && ipi.vector < 16
        {
            self.report_error(ESR_SEND_ILLEGAL_VECTOR);
            return LapicAction::None;
        }
        tracing::trace!(id = self.s.id, icr = self.s.icr, ?ipi, "kvm_apic_ipi");
        LapicAction::SendIpi(ipi)
    }

    fn write_svr(&mut self, value: u32) {
        self.s.svr = value & 0x3ff;
        if !self.is_sw_enabled() {
            for lvt in &mut self.s.lvt {
                *lvt |= LVT_MASKED;
            }
        }
    }

    fn write_lvt(&mut self, which: Lvt, value: u32) {
        let mut value = value & which.writable_mask();
        if !self.is_sw_enabled() {
            value |= LVT_MASKED;
        }
        let old = self.s.lvt[which as usize];
        self.s.lvt[which as usize] = value;
        if which == Lvt::Timer {
            self.timer_lvt_changed(old);
        }
    }
}
