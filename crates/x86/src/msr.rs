//! The MSRs the CPU models, and the guest TSC.
//!
//! IA32_APIC_BASE and the x2APIC and TSC-deadline MSRs are not the CPU's:
//! they belong to the local APIC, which the accelerator models and reaches
//! through [`crate::Bus::rdmsr`] / [`crate::Bus::wrmsr`].

use std::sync::OnceLock;
use std::time::Instant;

use hv::state::msr_index::*;

use crate::counters::TlbFlush;
use crate::mem::canonical;
use crate::state::{efer, SegCache, FS, GS};
use crate::Cpu;

pub const IA32_TSC_ADJUST: u32 = 0x3b;
pub const IA32_BIOS_SIGN_ID: u32 = 0x8b;
pub const IA32_PLATFORM_ID: u32 = 0x17;
pub const IA32_MCG_CAP: u32 = 0x179;
pub const IA32_MCG_STATUS: u32 = 0x17a;
pub const IA32_ARCH_CAPABILITIES: u32 = 0x10a;
pub const IA32_PKRS: u32 = 0x6e1;

/// The legacy performance-counter MSRs (P6: PERFCTR0-1 and EVNTSEL0-1;
/// K7: EVNTSEL0-3 and PERFCTR0-3). With no PMU advertised (CPUID leaf
/// 0xA version 0, no PERFCTR_CORE) they read as 0 and take writes, as
/// KVM's do without a virtual PMU: software that resets counters before
/// it checks for them (kvm-unit-tests' library on an AMD model) goes on.
fn legacy_perf_msr(index: u32) -> bool {
    matches!(index, 0xc1..=0xc2 | 0x186..=0x187 | 0xc001_0000..=0xc001_0007)
}

/// IA32_ARCH_CAPABILITIES: the CPU executes nothing speculatively, so it
/// is immune to every transient-execution attack the MSR can declare:
/// RDCL_NO (Meltdown, L1TF), SSB_NO, MDS_NO, PSCHANGE_MC_NO, TAA_NO,
/// SBDR_SSDP_NO, FBSDP_NO, PSDP_NO, BHI_NO, PBRSB_NO, GDS_NO, RFDS_NO,
/// ITS_NO. Guests then
/// skip the costly mitigations (page-table isolation above all).
pub const ARCH_CAPABILITIES: u64 = 1 << 0
    | 1 << 4
    | 1 << 5
    | 1 << 6
    | 1 << 8
    | 1 << 13
    | 1 << 14
    | 1 << 15
    | 1 << 20
    | 1 << 24
    | 1 << 26
    | 1 << 27
    | 1 << 62;

/// Why a WRMSR was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrError {
    /// The MSR is not modelled by the CPU.
    Unknown,
    /// The value is invalid for the MSR (#GP).
    Invalid,
}

fn host_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

impl Cpu {
    /// The guest's time-stamp counter.
    pub fn tsc(&self) -> u64 {
        let ticks = (host_ns() as u128 * self.tsc_hz as u128 / 1_000_000_000) as u64;
        ticks.wrapping_add(self.state.msr.tsc_offset)
    }

    /// Sets the TSC frequency the guest sees (default 1 GHz).
    pub fn set_tsc_hz(&mut self, hz: u64) {
        let now = self.tsc();
        self.tsc_hz = hz.max(1);
        self.set_tsc(now);
    }

    pub(crate) fn set_tsc(&mut self, v: u64) {
        let ticks = (host_ns() as u128 * self.tsc_hz as u128 / 1_000_000_000) as u64;
        self.state.msr.tsc_offset = v.wrapping_sub(ticks);
    }

    /// Reads an MSR the CPU models (`None`: unknown to the CPU).
    pub fn read_msr(&self, index: u32) -> Option<u64> {
        let s = &self.state;
        let m = &s.msr;
        Some(match index {
            IA32_EFER => s.efer,
            IA32_STAR => m.star,
            IA32_LSTAR => m.lstar,
            IA32_CSTAR => m.cstar,
            IA32_FMASK => m.fmask,
            IA32_FS_BASE => s.seg[FS].base,
            IA32_GS_BASE => s.seg[GS].base,
            IA32_KERNEL_GS_BASE => m.kernel_gs_base,
            IA32_SYSENTER_CS => m.sysenter_cs,
            IA32_SYSENTER_ESP => m.sysenter_esp,
            IA32_SYSENTER_EIP => m.sysenter_eip,
            IA32_PAT => m.pat,
            IA32_TSC => self.tsc(),
            IA32_TSC_ADJUST => m.tsc_adjust,
            IA32_MISC_ENABLE => m.misc_enable,
            IA32_TSC_AUX => m.tsc_aux,
            IA32_BIOS_SIGN_ID | IA32_PLATFORM_ID | IA32_MCG_CAP | IA32_MCG_STATUS => 0,
            i if legacy_perf_msr(i) => 0,
            IA32_ARCH_CAPABILITIES => ARCH_CAPABILITIES,
            IA32_PKRS if self.feat.pks => m.pkrs,
            _ => return m.extra.get(&index).copied(),
        })
    }

    /// Writes an MSR the CPU models.
    pub fn write_msr(&mut self, index: u32, v: u64) -> Result<(), MsrError> {
        match index {
            IA32_EFER => {
                if v & !efer::SUPPORTED != 0 {
                    return Err(MsrError::Invalid);
                }
                let s = &mut self.state;
                // LME cannot change while paging is on; LMA is read-only.
                if s.paging() && (v ^ s.efer) & efer::LME != 0 {
                    return Err(MsrError::Invalid);
                }
                let new = (v & !efer::LMA) | (s.efer & efer::LMA);
                if (new ^ s.efer) & efer::NXE != 0 {
                    self.tlb.flush_guest_all(TlbFlush::Efer);
                }
                self.state.efer = new;
                self.state.update_mode();
                self.block_exit = true;
            }
            IA32_STAR => self.state.msr.star = v,
            IA32_LSTAR | IA32_CSTAR | IA32_FS_BASE | IA32_GS_BASE | IA32_KERNEL_GS_BASE
            | IA32_SYSENTER_ESP | IA32_SYSENTER_EIP => {
                if !canonical(v) {
                    return Err(MsrError::Invalid);
                }
                let s = &mut self.state;
                match index {
                    IA32_LSTAR => s.msr.lstar = v,
                    IA32_CSTAR => s.msr.cstar = v,
                    IA32_FS_BASE => s.seg[FS].base = v,
                    IA32_GS_BASE => s.seg[GS].base = v,
                    IA32_KERNEL_GS_BASE => s.msr.kernel_gs_base = v,
                    IA32_SYSENTER_ESP => s.msr.sysenter_esp = v,
                    _ => s.msr.sysenter_eip = v,
                }
            }
            IA32_FMASK => self.state.msr.fmask = v & 0xffff_ffff,
            IA32_SYSENTER_CS => self.state.msr.sysenter_cs = v & 0xffff,
            IA32_PAT => {
                // Each entry must be a valid memory type (0,1,4,5,6,7).
                if (0..8).any(|i| matches!((v >> (i * 8)) & 0xff, 2 | 3 | 8..)) {
                    return Err(MsrError::Invalid);
                }
                self.state.msr.pat = v;
            }
            IA32_TSC => {
                // SDM 17.17.3: a TSC write moves TSC_ADJUST by the same step.
                let step = v.wrapping_sub(self.tsc());
                self.state.msr.tsc_adjust = self.state.msr.tsc_adjust.wrapping_add(step);
                self.set_tsc(v);
            }
            IA32_TSC_ADJUST => {
                // ... and a TSC_ADJUST write moves the TSC.
                let step = v.wrapping_sub(self.state.msr.tsc_adjust);
                self.state.msr.tsc_offset = self.state.msr.tsc_offset.wrapping_add(step);
                self.state.msr.tsc_adjust = v;
            }
            IA32_MISC_ENABLE => self.state.msr.misc_enable = v,
            IA32_TSC_AUX => {
                if v >> 32 != 0 {
                    return Err(MsrError::Invalid);
                }
                self.state.msr.tsc_aux = v;
            }
            IA32_BIOS_SIGN_ID | IA32_MCG_STATUS => {}
            i if legacy_perf_msr(i) => {}
            // Read-only.
            IA32_ARCH_CAPABILITIES => return Err(MsrError::Invalid),
            IA32_PKRS if self.feat.pks => {
                if v >> 32 != 0 {
                    return Err(MsrError::Invalid);
                }
                if v != self.state.msr.pkrs {
                    // The TLB caches decisions made under the old rights.
                    self.tlb.flush_guest_all(TlbFlush::Rights);
                }
                self.state.msr.pkrs = v;
            }
            _ => match self.state.msr.extra.get_mut(&index) {
                Some(slot) => *slot = v,
                None => return Err(MsrError::Unknown),
            },
        }
        Ok(())
    }

    /// Sets PKRU (WRPKRU, XRSTOR of the PKRU state component).
    pub(crate) fn set_pkru(&mut self, v: u32) {
        if v != self.state.pkru {
            // The TLB caches decisions made under the old rights.
            self.tlb.flush_guest_all(TlbFlush::Rights);
        }
        self.state.pkru = v;
    }

    /// Defines (or sets) an MSR: modelled ones are written, unknown ones
    /// become plain storage the guest can read and write.
    pub fn define_msr(&mut self, index: u32, v: u64) -> Result<(), MsrError> {
        match self.write_msr(index, v) {
            Err(MsrError::Unknown) => {
                self.state.msr.extra.insert(index, v);
                Ok(())
            }
            r => r,
        }
    }
}

/// A flat 64-bit or 32-bit code / data segment for SYSCALL/SYSRET/SYSENTER.
pub(crate) fn flat_seg(selector: u16, code: bool, long: bool, dpl: u8) -> SegCache {
    let mut attr: u32 = if code { 0x9b } else { 0x93 } | ((dpl as u32) << 5) | (1 << 15);
    if code && long {
        attr |= 1 << 13;
    } else {
        attr |= 1 << 14;
    }
    SegCache {
        selector,
        base: 0,
        limit: 0xffff_ffff,
        attr,
    }
}
