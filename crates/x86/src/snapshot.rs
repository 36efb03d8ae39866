//! Narrow accessors for the parts of the CPU's state a snapshot needs
//! beyond registers, FPU and MSRs (`convert.rs`): the XSAVE image, XCR0,
//! the debug registers, the list of MSRs that hold state, and the
//! interrupt shadow / NMI blocking between two instructions.

use hv::snapshot::{DebugRegs, Xsave, XSAVE_MIN_SIZE};
use hv::state::msr_index::*;

use crate::msr::{IA32_PKRS, IA32_TSC_ADJUST};
use crate::state::{xcr0, FpuState};
use crate::Cpu;

/// Offsets of the standard XSAVE format.
const XSTATE_BV: usize = 512;
const XCOMP_BV: usize = 520;
const YMM: usize = 576;
const PKRU: usize = 2688;
/// XSTATE_BV bit of the PKRU component.
const XFEATURE_PKRU: u64 = 1 << 9;
/// MXCSR bits that may be set (DAZ included).
const MXCSR_VALID: u32 = 0xffff;

/// Why a snapshot part does not fit this CPU.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("XSAVE area of {0} bytes (at least {XSAVE_MIN_SIZE})")]
    XsaveSize(usize),
    #[error("XSAVE area in the compacted format")]
    Compacted,
    #[error("XSAVE state components {0:#x} are not implemented by this CPU")]
    Components(u64),
    #[error("MXCSR {0:#x} has reserved bits set")]
    Mxcsr(u32),
    #[error("XCR{0} does not exist")]
    XcrIndex(u32),
    #[error("XCR0 value {0:#x} is not valid for this CPU model")]
    Xcr0(u64),
    #[error("DR{0} value {1:#x} has bits 63:32 set")]
    DebugReg(u8, u64),
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(v)
}

impl Cpu {
    /// The x87, SSE, AVX and PKRU state as a standard-format XSAVE area
    /// (every implemented component written and marked in XSTATE_BV).
    pub fn xsave_area(&self) -> Xsave {
        let f = &self.state.fpu;
        let mut b = vec![0u8; XSAVE_MIN_SIZE];
        b[0..2].copy_from_slice(&f.fcw.to_le_bytes());
        b[2..4].copy_from_slice(&f.fsw.to_le_bytes());
        b[4] = f.ftw;
        b[6..8].copy_from_slice(&f.fop.to_le_bytes());
        b[8..16].copy_from_slice(&f.fip.to_le_bytes());
        b[16..24].copy_from_slice(&f.fdp.to_le_bytes());
        b[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
        b[28..32].copy_from_slice(&MXCSR_VALID.to_le_bytes());
        for (i, st) in f.st.iter().enumerate() {
            b[32 + 16 * i..42 + 16 * i].copy_from_slice(st);
        }
        for (i, x) in f.xmm.iter().enumerate() {
            b[160 + 16 * i..176 + 16 * i].copy_from_slice(&x.to_le_bytes());
        }
        for (i, y) in f.ymm_hi.iter().enumerate() {
            b[YMM + 16 * i..YMM + 16 + 16 * i].copy_from_slice(&y.to_le_bytes());
        }
        b[PKRU..PKRU + 4].copy_from_slice(&self.state.pkru.to_le_bytes());
        let bv = xcr0::SUPPORTED | XFEATURE_PKRU;
        b[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
        Xsave { region: b }
    }

    /// Loads a standard-format XSAVE area: components XSTATE_BV marks are
    /// read, the others get their initial values. Refused (and nothing
    /// changed) for a component this CPU lacks that is not in its initial
    /// state, a compacted area, or a bad MXCSR.
    pub fn set_xsave_area(&mut self, area: &Xsave) -> Result<(), SnapshotError> {
        let b = &area.region;
        if b.len() < XSAVE_MIN_SIZE {
            return Err(SnapshotError::XsaveSize(b.len()));
        }
        if u64_at(b, XCOMP_BV) & (1 << 63) != 0 {
            return Err(SnapshotError::Compacted);
        }
        let bv = u64_at(b, XSTATE_BV);
        let unknown = bv & !(xcr0::SUPPORTED | XFEATURE_PKRU);
        if unknown != 0 {
            return Err(SnapshotError::Components(unknown));
        }
        let mxcsr = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
        if bv & xcr0::SSE != 0 && mxcsr & !MXCSR_VALID != 0 {
            return Err(SnapshotError::Mxcsr(mxcsr));
        }
        let mut f = FpuState::default();
        if bv & xcr0::X87 != 0 {
            f.fcw = u16::from_le_bytes([b[0], b[1]]);
            f.fsw = u16::from_le_bytes([b[2], b[3]]);
            f.ftw = b[4];
            f.fop = u16::from_le_bytes([b[6], b[7]]);
            f.fip = u64_at(b, 8);
            f.fdp = u64_at(b, 16);
            for (i, st) in f.st.iter_mut().enumerate() {
                st.copy_from_slice(&b[32 + 16 * i..42 + 16 * i]);
            }
        }
        // MXCSR is saved with either of x87 or SSE (XSAVE writes it when
        // RFBM has SSE or AVX); an area from KVM may mark only one.
        if bv & (xcr0::SSE | xcr0::AVX) != 0 {
            f.mxcsr = mxcsr;
        }
        if bv & xcr0::SSE != 0 {
            for (i, x) in f.xmm.iter_mut().enumerate() {
                let mut v = [0u8; 16];
                v.copy_from_slice(&b[160 + 16 * i..176 + 16 * i]);
                *x = u128::from_le_bytes(v);
            }
        }
        if bv & xcr0::AVX != 0 {
            for (i, y) in f.ymm_hi.iter_mut().enumerate() {
                let mut v = [0u8; 16];
                v.copy_from_slice(&b[YMM + 16 * i..YMM + 16 + 16 * i]);
                *y = u128::from_le_bytes(v);
            }
        }
        let pkru = if bv & XFEATURE_PKRU != 0 {
            u32::from_le_bytes([b[PKRU], b[PKRU + 1], b[PKRU + 2], b[PKRU + 3]])
        } else {
            0
        };
        self.state.fpu = f;
        self.set_pkru(pkru);
        Ok(())
    }

    /// XCR0.
    pub fn xcr0(&self) -> u64 {
        self.state.xcr0
    }

    /// Sets XCR`index` as XSETBV would check it against the CPU model.
    pub fn set_xcr(&mut self, index: u32, value: u64) -> Result<(), SnapshotError> {
        if index != 0 {
            return Err(SnapshotError::XcrIndex(index));
        }
        let valid = value & xcr0::X87 != 0
            && value & !self.xcr0_supported == 0
            && (value & xcr0::AVX == 0 || value & xcr0::SSE != 0);
        if !valid {
            return Err(SnapshotError::Xcr0(value));
        }
        self.state.xcr0 = value;
        self.block_exit = true;
        Ok(())
    }

    pub fn debug_regs(&self) -> DebugRegs {
        let dr = &self.state.dr;
        DebugRegs {
            db: [dr[0], dr[1], dr[2], dr[3]],
            dr6: dr[6],
            dr7: dr[7],
        }
    }

    /// Sets DR0-DR3, DR6 and DR7 (as MOV DRn would store DR6/DR7).
    pub fn set_debug_regs(&mut self, d: &DebugRegs) -> Result<(), SnapshotError> {
        for (n, v) in [(6u8, d.dr6), (7, d.dr7)] {
            if v >> 32 != 0 {
                return Err(SnapshotError::DebugReg(n, v));
            }
        }
        let dr = &mut self.state.dr;
        dr[..4].copy_from_slice(&d.db);
        dr[6] = d.dr6;
        dr[7] = d.dr7;
        self.debug_regs_changed();
        self.block_exit = true;
        Ok(())
    }

    /// The MSRs that hold state of their own, for a snapshot: those the
    /// CPU models (EFER, FS/GS base and the TSC excepted: they are in the
    /// segment registers and the TSC value) and those defined as plain
    /// storage. The local APIC's MSRs are not the CPU's.
    pub fn state_msr_indices(&self) -> Vec<u32> {
        let mut v = vec![
            IA32_STAR,
            IA32_LSTAR,
            IA32_CSTAR,
            IA32_FMASK,
            IA32_KERNEL_GS_BASE,
            IA32_SYSENTER_CS,
            IA32_SYSENTER_ESP,
            IA32_SYSENTER_EIP,
            IA32_PAT,
            IA32_MISC_ENABLE,
            IA32_TSC_AUX,
            IA32_TSC_ADJUST,
        ];
        if self.feat.pks {
            v.push(IA32_PKRS);
        }
        v.extend(self.state.msr.extra.keys().copied());
        v
    }

    /// The interrupt shadow of STI or MOV SS is active: no interrupt (or
    /// NMI) before the next instruction.
    pub fn interrupt_shadow(&self) -> bool {
        self.shadow_icount == self.icount
    }

    /// Sets or clears the interrupt shadow.
    pub fn set_interrupt_shadow(&mut self, on: bool) {
        self.shadow_icount = if on { self.icount } else { u64::MAX };
    }

    /// NMIs are blocked (an NMI handler has not executed IRET yet).
    pub fn nmi_masked(&self) -> bool {
        self.state.nmi_blocked
    }

    pub fn set_nmi_masked(&mut self, masked: bool) {
        self.state.nmi_blocked = masked;
    }

    /// Halted by HLT (for a restored MP state).
    pub fn set_halted(&mut self, halted: bool) {
        self.state.halted = halted;
    }

    /// The TSC frequency the guest sees.
    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// Sets IA32_TSC from the host side (TSC_ADJUST is not touched).
    pub fn set_tsc_value(&mut self, value: u64) {
        self.set_tsc(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xsave_area_round_trips() {
        let mut cpu = Cpu::default();
        cpu.state.fpu.xmm[3] = 0x1234_5678_9abc_def0_1122_3344_5566_7788;
        cpu.state.fpu.ymm_hi[15] = 42;
        cpu.state.fpu.mxcsr = 0x1fa0;
        cpu.state.fpu.st[2] = [9; 10];
        cpu.state.fpu.fcw = 0x27f;
        cpu.state.pkru = 0x5555_0000;
        let area = cpu.xsave_area();
        let mut other = Cpu::default();
        other.set_xsave_area(&area).unwrap();
        assert_eq!(other.state.fpu, cpu.state.fpu);
        assert_eq!(other.state.pkru, cpu.state.pkru);
        assert_eq!(other.xsave_area(), area);
    }

    #[test]
    fn xsave_area_refuses_what_it_cannot_hold() {
        let mut cpu = Cpu::default();
        let mut area = cpu.xsave_area();
        area.region[XSTATE_BV] |= 1 << 5; // AVX-512 opmask
        assert!(matches!(
            cpu.set_xsave_area(&area),
            Err(SnapshotError::Components(0x20))
        ));
        let mut area = cpu.xsave_area();
        area.region[26] = 0xff; // MXCSR bits 23:16
        assert!(matches!(
            cpu.set_xsave_area(&area),
            Err(SnapshotError::Mxcsr(_))
        ));
        let mut area = cpu.xsave_area();
        area.region.truncate(1000);
        assert!(cpu.set_xsave_area(&area).is_err());
        // Nothing changed.
        assert_eq!(cpu.state.fpu, FpuState::default());
    }

    #[test]
    fn an_area_without_sse_gives_initial_registers() {
        let mut cpu = Cpu::default();
        cpu.state.fpu.xmm[0] = 7;
        let mut area = cpu.xsave_area();
        area.region[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&1u64.to_le_bytes());
        cpu.set_xsave_area(&area).unwrap();
        assert_eq!(cpu.state.fpu.xmm[0], 0);
    }

    #[test]
    fn xcr0_and_debug_registers_are_checked() {
        let mut cpu = Cpu::default();
        cpu.set_xcr(0, 0b111).unwrap();
        assert_eq!(cpu.xcr0(), 0b111);
        assert!(cpu.set_xcr(0, 0b110).is_err(), "x87 is mandatory");
        assert!(cpu.set_xcr(0, 0b101).is_err(), "AVX needs SSE");
        assert!(cpu.set_xcr(1, 1).is_err());
        let d = DebugRegs {
            db: [1, 2, 3, 4],
            dr6: 0xffff_0ff0,
            dr7: 0x403,
        };
        cpu.set_debug_regs(&d).unwrap();
        assert_eq!(cpu.debug_regs(), d);
        assert!(cpu
            .set_debug_regs(&DebugRegs { dr7: 1 << 40, ..d })
            .is_err());
    }
}
