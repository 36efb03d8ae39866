//! The local APIC as a register page, for snapshots: the 1 KiB xAPIC
//! layout KVM_GET_LAPIC uses (registers at their MMIO offsets), with the
//! timer's current-count register holding the count left at the save.
//!
//! In x2APIC mode the ID register holds the 32-bit x2APIC ID. One byte
//! range that is reserved on hardware carries what the page has no
//! register for: the errors collected since the last ESR write
//! ([`ESR_PENDING`]). Everything else the model keeps is derived from the
//! page (the timer's next expiry from the current count, PPR) or set
//! elsewhere (IA32_APIC_BASE through the segment registers, the TSC
//! deadline through its MSR, the CPU model's x2APIC and address width
//! through CPUID).

use super::*;

/// Size of the register page.
pub const PAGE_SIZE: usize = 1024;
/// Reserved offset holding the ESR bits collected since the last ESR
/// write (a hardware LAPIC keeps them internally).
pub const ESR_PENDING: usize = 0x290;

fn put(page: &mut [u8], offset: u32, value: u32) {
    let o = offset as usize;
    page[o..o + 4].copy_from_slice(&value.to_le_bytes());
}

fn get(page: &[u8], offset: u32) -> u32 {
    let o = offset as usize;
    u32::from_le_bytes([page[o], page[o + 1], page[o + 2], page[o + 3]])
}

/// Why a register page does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("LAPIC register page of {0} bytes (expected {PAGE_SIZE})")]
    Size(usize),
}

impl Lapic {
    /// The register page at `now_ns`.
    pub fn register_page(&self, now_ns: u64) -> Vec<u8> {
        let mut page = vec![0u8; PAGE_SIZE];
        let s = &self.s;
        put(
            &mut page,
            reg::ID,
            if self.is_x2apic() { s.id } else { s.id << 24 },
        );
        put(&mut page, reg::VERSION, APIC_VERSION);
        put(&mut page, reg::TPR, s.tpr);
        put(&mut page, reg::APR, u32::from(self.apr()));
        put(&mut page, reg::PPR, u32::from(self.ppr()));
        put(&mut page, reg::LDR, s.ldr);
        put(&mut page, reg::DFR, s.dfr);
        put(&mut page, reg::SVR, s.svr);
        for i in 0..8u32 {
            put(&mut page, reg::ISR + 16 * i, s.isr[i as usize]);
            put(&mut page, reg::TMR + 16 * i, s.tmr[i as usize]);
            put(&mut page, reg::IRR + 16 * i, s.irr[i as usize]);
        }
        put(&mut page, reg::ESR, s.esr);
        put(&mut page, ESR_PENDING as u32, s.esr_pending);
        put(&mut page, reg::LVT_CMCI, s.lvt[Lvt::Cmci as usize]);
        put(&mut page, reg::ICR_LOW, s.icr as u32);
        put(&mut page, reg::ICR_HIGH, (s.icr >> 32) as u32);
        for (off, lvt) in [
            (reg::LVT_TIMER, Lvt::Timer),
            (reg::LVT_THERMAL, Lvt::Thermal),
            (reg::LVT_PERF, Lvt::Perf),
            (reg::LVT_LINT0, Lvt::Lint0),
            (reg::LVT_LINT1, Lvt::Lint1),
            (reg::LVT_ERROR, Lvt::Error),
        ] {
            put(&mut page, off, s.lvt[lvt as usize]);
        }
        put(&mut page, reg::TIMER_INITIAL, s.timer_initial);
        put(
            &mut page,
            reg::TIMER_CURRENT,
            self.timer_current_count(now_ns),
        );
        put(&mut page, reg::TIMER_DIVIDE, s.timer_divide);
        page
    }

    /// Loads a register page at `now_ns`. IA32_APIC_BASE must be set
    /// first (it decides how the ID register reads); the TSC deadline
    /// after (it is only taken in TSC-deadline mode).
    pub fn load_register_page(&mut self, page: &[u8], now_ns: u64) -> Result<(), PageError> {
        if page.len() != PAGE_SIZE {
            return Err(PageError::Size(page.len()));
        }
        let id = get(page, reg::ID);
        let x2apic = self.is_x2apic();
        let s = &mut self.s;
        s.id = if x2apic { id } else { id >> 24 };
        s.tpr = get(page, reg::TPR) & 0xff;
        s.ldr = get(page, reg::LDR);
        s.dfr = get(page, reg::DFR);
        s.svr = get(page, reg::SVR);
        for i in 0..8u32 {
            s.isr[i as usize] = get(page, reg::ISR + 16 * i);
            s.tmr[i as usize] = get(page, reg::TMR + 16 * i);
            s.irr[i as usize] = get(page, reg::IRR + 16 * i);
        }
        s.esr = get(page, reg::ESR);
        s.esr_pending = get(page, ESR_PENDING as u32);
        s.lvt[Lvt::Cmci as usize] = get(page, reg::LVT_CMCI);
        s.icr = u64::from(get(page, reg::ICR_LOW)) | u64::from(get(page, reg::ICR_HIGH)) << 32;
        for (off, lvt) in [
            (reg::LVT_TIMER, Lvt::Timer),
            (reg::LVT_THERMAL, Lvt::Thermal),
            (reg::LVT_PERF, Lvt::Perf),
            (reg::LVT_LINT0, Lvt::Lint0),
            (reg::LVT_LINT1, Lvt::Lint1),
            (reg::LVT_ERROR, Lvt::Error),
        ] {
            s.lvt[lvt as usize] = get(page, off);
        }
        s.timer_initial = get(page, reg::TIMER_INITIAL);
        s.timer_divide = get(page, reg::TIMER_DIVIDE) & 0xb;
        s.tsc_deadline = 0;
        self.restore_timer(get(page, reg::TIMER_CURRENT), now_ns);
        Ok(())
    }
}
