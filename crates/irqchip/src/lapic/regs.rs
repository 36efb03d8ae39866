//! Register access: the xAPIC MMIO page and the x2APIC MSRs (plus
//! `IA32_APIC_BASE` and `IA32_TSC_DEADLINE`).
//!
//! MMIO follows KVM: reads of 1 to 4 bytes inside the first 4 bytes of a
//! 16-byte register slot return those bytes of the register; other reads
//! return zeros. Writes must be 4 bytes at a 16-byte aligned offset; others
//! are ignored. Reserved and read-only registers read 0 / ignore writes
//! (writes to unknown offsets set "illegal register address" in ESR).

use super::*;

/// ICR bits software can write (vector, delivery mode, destination mode,
/// level, trigger, shorthand); delivery status reads 0.
const ICR_LOW_MASK: u32 = 0x000c_cfff;

/// Index of an 8-register bank (ISR/TMR/IRR) holding `offset`.
fn bank_index(offset: u32, base: u32) -> Option<usize> {
    (base..base + 0x80)
        .contains(&offset)
        .then(|| ((offset - base) >> 4) as usize)
}

impl Lapic {
    /// Does the LAPIC handle this MSR (`IA32_APIC_BASE`,
    /// `IA32_TSC_DEADLINE`, the x2APIC range)?
    pub fn handles_msr(msr: u32) -> bool {
        msr == MSR_IA32_APIC_BASE
            || msr == MSR_IA32_TSC_DEADLINE
            || (MSR_X2APIC_FIRST..=MSR_X2APIC_LAST).contains(&msr)
    }

    /// The 32-bit register at a 16-byte aligned `offset`.
    fn read_reg(&self, offset: u32, now_ns: u64) -> u32 {
        let s = &self.s;
        if let Some(i) = bank_index(offset, reg::ISR) {
            return s.isr[i];
        }
        if let Some(i) = bank_index(offset, reg::TMR) {
            return s.tmr[i];
        }
        if let Some(i) = bank_index(offset, reg::IRR) {
            return s.irr[i];
        }
        if let Some(lvt) = Lvt::from_offset(offset) {
            return s.lvt[lvt as usize];
        }
        match offset {
            reg::ID if self.is_x2apic() => s.id,
            reg::ID => s.id << 24,
            reg::VERSION => APIC_VERSION,
            reg::TPR => s.tpr,
            reg::APR => u32::from(self.apr()),
            reg::PPR => u32::from(self.ppr()),
            reg::LDR => s.ldr,
            reg::DFR => s.dfr,
            reg::SVR => s.svr,
            reg::ESR => s.esr,
            reg::ICR_LOW => s.icr as u32,
            reg::ICR_HIGH => (s.icr >> 32) as u32,
            reg::TIMER_INITIAL => s.timer_initial,
            reg::TIMER_CURRENT => self.timer_current_count(now_ns),
            reg::TIMER_DIVIDE => s.timer_divide,
            _ => 0,
        }
    }

    /// A guest read of the xAPIC page at `offset` (0..0x1000).
    pub fn read(&self, offset: u64, data: &mut [u8], now_ns: u64) {
        data.fill(0);
        if !self.xapic_mmio_enabled() || offset >= APIC_MMIO_SIZE {
            return;
        }
        let align = (offset & 0xf) as usize;
        if align + data.len() > 4 {
            tracing::trace!(offset, len = data.len(), "lapic: odd MMIO read");
            return;
        }
        let value = self.read_reg((offset & !0xf) as u32, now_ns).to_le_bytes();
        data.copy_from_slice(&value[align..align + data.len()]);
    }

    /// A guest write to the xAPIC page at `offset` (0..0x1000).
    pub fn write(&mut self, offset: u64, data: &[u8], now_ns: u64) -> LapicAction {
        if !self.xapic_mmio_enabled() || offset >= APIC_MMIO_SIZE {
            return LapicAction::None;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            tracing::trace!(offset, len = data.len(), "lapic: odd MMIO write ignored");
            return LapicAction::None;
        };
        if offset & 0xf != 0 {
            tracing::trace!(offset, "lapic: unaligned MMIO write ignored");
            return LapicAction::None;
        }
        self.tick(now_ns);
        let value = u32::from_le_bytes(bytes);
        let offset = offset as u32;
        match offset {
            reg::ID => {
                self.s.id = value >> 24;
                LapicAction::None
            }
            reg::LDR => {
                self.s.ldr = value & 0xff00_0000;
                LapicAction::None
            }
            reg::DFR => {
                self.s.dfr = (value & 0xf000_0000) | 0x0fff_ffff;
                LapicAction::None
            }
            reg::ICR_LOW => {
                self.s.icr = (self.s.icr & 0xffff_ffff_0000_0000) | u64::from(value & ICR_LOW_MASK);
                self.send_ipi()
            }
            reg::ICR_HIGH => {
                self.s.icr = (self.s.icr & 0xffff_ffff) | (u64::from(value & 0xff00_0000) << 32);
                LapicAction::None
            }
            reg::VERSION
            | reg::APR
            | reg::PPR
            | reg::RRD
            | reg::TIMER_CURRENT
            | reg::ISR..=0x270 => LapicAction::None,
            _ => self.write_common(offset, value, now_ns).unwrap_or_else(|| {
                self.report_error(ESR_ILLEGAL_REGISTER);
                LapicAction::None
            }),
        }
    }

    /// Writes that mean the same in both modes; None for an offset that
    /// is not one of them.
    fn write_common(&mut self, offset: u32, value: u32, now_ns: u64) -> Option<LapicAction> {
        if let Some(lvt) = Lvt::from_offset(offset) {
            self.write_lvt(lvt, value);
            return Some(LapicAction::None);
        }
        match offset {
            reg::TPR => self.s.tpr = value & 0xff,
            reg::EOI => {
                return Some(self.eoi().map_or(LapicAction::None, LapicAction::Eoi));
            }
            reg::SVR => self.write_svr(value),
            reg::ESR => {
                self.s.esr = self.s.esr_pending;
                self.s.esr_pending = 0;
            }
            reg::TIMER_INITIAL => self.write_timer_initial(value, now_ns),
            reg::TIMER_DIVIDE => self.write_timer_divide(value, now_ns),
            _ => return None,
        }
        Some(LapicAction::None)
    }

    /// `RDMSR` of a LAPIC MSR (see [`Lapic::handles_msr`]). Errors are #GP.
    pub fn rdmsr(&self, msr: u32, now_ns: u64) -> Result<u64, LapicError> {
        match msr {
            MSR_IA32_APIC_BASE => return Ok(self.s.apic_base),
            MSR_IA32_TSC_DEADLINE => return Ok(self.tsc_deadline()),
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST => {}
            _ => return Err(LapicError::UnknownMsr(msr)),
        }
        if !self.is_x2apic() {
            return Err(LapicError::NotX2Apic(msr));
        }
        let offset = (msr - MSR_X2APIC_FIRST) << 4;
        if Lvt::from_offset(offset).is_some()
            || bank_index(offset, reg::ISR).is_some()
            || bank_index(offset, reg::TMR).is_some()
            || bank_index(offset, reg::IRR).is_some()
        {
            return Ok(u64::from(self.read_reg(offset, now_ns)));
        }
        match offset {
            reg::ICR_LOW => Ok(self.s.icr),
            reg::ID
            | reg::VERSION
            | reg::TPR
            | reg::PPR
            | reg::LDR
            | reg::SVR
            | reg::ESR
            | reg::TIMER_INITIAL
            | reg::TIMER_CURRENT
            | reg::TIMER_DIVIDE => Ok(u64::from(self.read_reg(offset, now_ns))),
            reg::EOI | reg::SELF_IPI => Err(LapicError::WriteOnly(msr)),
            _ => Err(LapicError::UnknownMsr(msr)),
        }
    }

    /// `WRMSR` of a LAPIC MSR (see [`Lapic::handles_msr`]). Errors are #GP.
    /// `SELF_IPI` (0x83f) is delivered to this APIC directly; an ICR write
    /// (0x830, all 64 bits at once) returns the IPI.
    pub fn wrmsr(&mut self, msr: u32, value: u64, now_ns: u64) -> Result<LapicAction, LapicError> {
        match msr {
            MSR_IA32_APIC_BASE => return self.set_apic_base(value).map(|()| LapicAction::None),
            MSR_IA32_TSC_DEADLINE => {
                self.tick(now_ns);
                self.write_tsc_deadline(value);
                // A deadline already passed fires at once.
                self.tick(now_ns);
                return Ok(LapicAction::None);
            }
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST => {}
            _ => return Err(LapicError::UnknownMsr(msr)),
        }
        if !self.is_x2apic() {
            return Err(LapicError::NotX2Apic(msr));
        }
        let offset = (msr - MSR_X2APIC_FIRST) << 4;
        let reserved = LapicError::ReservedBits { msr, value };
        if offset != reg::ICR_LOW && value >> 32 != 0 {
            return Err(reserved);
        }
        self.tick(now_ns);
        let low = value as u32;
        match offset {
            reg::ICR_LOW => {
                self.s.icr = value & (0xffff_ffff_0000_0000 | u64::from(ICR_LOW_MASK));
                Ok(self.send_ipi())
            }
            reg::SELF_IPI => {
                if low > 0xff {
                    return Err(reserved);
                }
                self.accept_interrupt(low as u8, false);
                Ok(LapicAction::None)
            }
            reg::EOI | reg::ESR if low != 0 => Err(reserved),
            reg::ID
            | reg::VERSION
            | reg::PPR
            | reg::LDR
            | reg::TIMER_CURRENT
            | reg::ISR..=0x270 => Err(LapicError::ReadOnly(msr)),
            _ => self
                .write_common(offset, low, now_ns)
                .ok_or(LapicError::UnknownMsr(msr)),
        }
    }
}
