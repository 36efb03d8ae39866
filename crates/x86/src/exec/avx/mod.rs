//! The VEX layer: AVX, AVX2, FMA and F16C instructions (every instruction
//! iced-x86 decodes with `EncodingKind::VEX` that is not a BMI1/BMI2
//! general-register one).
//!
//! Common rules, checked in [`Exec::vex`]: #UD in real and virtual-8086
//! mode, unless CR4.OSXSAVE = 1 and XCR0 enables SSE and AVX state, and
//! when the instruction's CPUID feature (AVX, AVX2, FMA, F16C) is not in
//! the CPU's CPUID table; then #NM when CR0.TS = 1. CR0.EM and
//! CR4.OSFXSR do not matter for VEX forms. VEX.vvvv is a non-destructive
//! source; a VEX.128 form zeroes bits 255:128 of its destination
//! register; memory operands need no alignment except for VMOVAPS/APD/DQA
//! and the non-temporal moves (#GP(0)).
//!
//! Operations that exist as SSE instructions take their semantics from the
//! shared lane table (`simd::lane_op`): a VEX.128 form is the operation on
//! (VEX.vvvv, xmm/m) with the upper half zeroed; a VEX.256 form of an
//! in-lane operation is the operation on each 128-bit lane; widening and
//! narrowing conversions are composed from the 128-bit ones here. The
//! families only AVX has live in the submodules:
//!
//! - `mov`: moves, broadcasts, 128-bit lane inserts/extracts/permutes,
//!   masked moves, VZEROUPPER/VZEROALL, MXCSR.
//! - `perm`: in-register permutes, variable shifts, blends of dwords,
//!   VTESTPS/PD, VPTEST.
//! - `fma`: fused multiply-add (VEX.W selects double precision).
//! - `f16c`: half-precision conversions.
//! - `gather`: VGATHER*/VPGATHER*.
//! - `scalar`: compares into flags, conversions to and from general
//!   registers, element inserts/extracts, mask extraction.

mod f16c;
mod fma;
mod gather;
mod mov;
mod perm;
mod scalar;

use iced_x86::{CpuidFeature, Instruction, OpKind, Register};

use super::simd::{self, LaneIn, LaneOp};
use super::sse::nm;
use super::Exec;
use crate::exception::{gp, ud, R};
use crate::state::{cr0, cr4, xcr0, Mode};

/// A 256-bit value as its low and high 128-bit lanes.
pub(crate) type Y = [u128; 2];

/// The number (0-15) of an XMM or YMM register, and whether it is a YMM.
pub(super) fn vreg(r: Register) -> Option<(usize, bool)> {
    if r.is_xmm() {
        let i = r as usize - Register::XMM0 as usize;
        return (i < 16).then_some((i, false));
    }
    if r.is_ymm() {
        let i = r as usize - Register::YMM0 as usize;
        return (i < 16).then_some((i, true));
    }
    None
}

/// 32 little-endian bytes as a 256-bit value.
fn bytes_to_y(b: &[u8; 32]) -> Y {
    let mut lo = [0u8; 16];
    let mut hi = [0u8; 16];
    lo.copy_from_slice(&b[..16]);
    hi.copy_from_slice(&b[16..]);
    [u128::from_le_bytes(lo), u128::from_le_bytes(hi)]
}

fn y_to_bytes(v: Y) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&v[0].to_le_bytes());
    b[16..].copy_from_slice(&v[1].to_le_bytes());
    b
}

impl Exec<'_> {
    /// A VEX-encoded instruction.
    pub(super) fn vex(&mut self, insn: &Instruction) -> R<()> {
        let st = &self.c.state;
        let enabled = xcr0::SSE | xcr0::AVX;
        if matches!(st.mode, Mode::Real | Mode::Virtual8086)
            || st.cr4 & cr4::OSXSAVE == 0
            || st.xcr0 & enabled != enabled
        {
            return Err(ud());
        }
        for f in insn.cpuid_features() {
            let have = match f {
                CpuidFeature::AVX => self.c.feat.avx,
                CpuidFeature::AVX2 => self.c.feat.avx2,
                CpuidFeature::FMA => self.c.feat.fma,
                CpuidFeature::F16C => self.c.feat.f16c,
                _ => return self.unimplemented(insn),
            };
            if !have {
                return Err(ud());
            }
        }
        if self.c.state.cr0 & cr0::TS != 0 {
            return Err(nm());
        }
        let m = insn.mnemonic();
        if let Some(r) = self.vex_mov(insn, m) {
            return r;
        }
        if let Some(r) = self.vex_perm(insn, m) {
            return r;
        }
        if let Some(r) = self.vex_scalar(insn, m) {
            return r;
        }
        if let Some(r) = self.vex_fma(insn, m) {
            return r;
        }
        if let Some(r) = self.vex_f16c(insn, m) {
            return r;
        }
        if let Some(r) = self.vex_gather(insn, m) {
            return r;
        }
        match simd::lane_op(m) {
            Some(op) => self.vex_lane(insn, op),
            None => self.unimplemented(insn),
        }
    }

    // ------------------------------------------------------------ registers

    /// YMM register `i`.
    #[inline]
    pub(super) fn ymm(&self, i: usize) -> Y {
        let f = &self.c.state.fpu;
        [f.xmm[i & 15], f.ymm_hi[i & 15]]
    }

    /// Writes a destination register: all 256 bits of a YMM, or an XMM
    /// with bits 255:128 zeroed (VEX.128).
    #[inline]
    pub(super) fn set_vreg(&mut self, i: usize, wide: bool, v: Y) {
        let f = &mut self.c.state.fpu;
        f.xmm[i & 15] = v[0];
        f.ymm_hi[i & 15] = if wide { v[1] } else { 0 };
    }

    /// Writes the register operand 0.
    pub(super) fn vdst(&mut self, insn: &Instruction, v: Y) -> R<()> {
        let (d, wide) = vreg(insn.op0_register()).ok_or_else(ud)?;
        self.set_vreg(d, wide, v);
        Ok(())
    }

    /// The register operand `n` (XMM: its upper half reads as zero).
    pub(super) fn vreg_op(&self, insn: &Instruction, n: u32) -> R<Y> {
        let (i, wide) = vreg(insn.op_register(n)).ok_or_else(ud)?;
        let v = self.ymm(i);
        Ok(if wide { v } else { [v[0], 0] })
    }

    // --------------------------------------------------------------- memory

    /// The linear address of the memory operand for `size` bytes, with the
    /// segment checks and, when `align`, #GP(0) unless aligned to `size`.
    pub(super) fn vmem_lin(
        &mut self,
        insn: &Instruction,
        size: usize,
        write: bool,
        align: bool,
    ) -> R<u64> {
        let size = size.clamp(1, 32);
        let seg = Self::mem_seg(insn);
        let off = self.ea(insn);
        let lin = self.seg_lin(seg, off, size as u32, write)?;
        if align && lin & (size as u64 - 1) != 0 {
            return Err(gp(0));
        }
        Ok(lin)
    }

    /// Reads `size` (at most 32) bytes of the memory operand, zero-extended.
    pub(super) fn vmem_read(&mut self, insn: &Instruction, size: usize, align: bool) -> R<Y> {
        let size = size.min(32);
        let lin = self.vmem_lin(insn, size, false, align)?;
        let mut b = [0u8; 32];
        let user = self.user();
        self.read_lin_bytes(lin, &mut b[..size], user)?;
        Ok(bytes_to_y(&b))
    }

    /// Writes the low `size` bytes of `v` to the memory operand.
    pub(super) fn vmem_write(
        &mut self,
        insn: &Instruction,
        size: usize,
        align: bool,
        v: Y,
    ) -> R<()> {
        let size = size.min(32);
        let lin = self.vmem_lin(insn, size, true, align)?;
        let user = self.user();
        self.write_lin_bytes(lin, &y_to_bytes(v)[..size], user)
    }

    /// Operand `n`: an XMM/YMM register, or memory of the size iced-x86
    /// gives the operand (unaligned).
    pub(super) fn vsrc(&mut self, insn: &Instruction, n: u32) -> R<Y> {
        match insn.op_kind(n) {
            OpKind::Register => self.vreg_op(insn, n),
            OpKind::Memory => {
                let size = insn.memory_size().size();
                self.vmem_read(insn, size, false)
            }
            _ => Err(ud()),
        }
    }

    /// The imm8 of the instruction (its last operand), or 0.
    pub(super) fn imm8(insn: &Instruction) -> u8 {
        let n = insn.op_count();
        match n.checked_sub(1).map(|i| insn.op_kind(i)) {
            Some(OpKind::Immediate8) => insn.immediate8(),
            _ => 0,
        }
    }

    /// Whether operand `n` is 128 bits wide (an XMM register or m128).
    fn is_128(insn: &Instruction, n: u32) -> bool {
        match insn.op_kind(n) {
            OpKind::Register => insn.op_register(n).is_xmm(),
            _ => insn.memory_size().size() <= 16,
        }
    }

    // --------------------------------------------------------- lane table

    /// An operation of the shared lane table in its VEX form.
    fn vex_lane(&mut self, insn: &Instruction, op: LaneOp) -> R<()> {
        let (d, wide) = vreg(insn.op0_register()).ok_or_else(ud)?;
        let mut imm = Self::imm8(insn);
        // VINSERTPS from memory: the m32 is the element (no source select).
        if op.name == iced_x86::Mnemonic::Insertps && insn.op2_kind() == OpKind::Memory {
            imm &= 0x3f;
        }
        let mxcsr = self.c.state.fpu.mxcsr;
        let count = insn.op_count();
        // Shapes: unary `d, src[, imm]`; shift by an immediate `d, src,
        // imm` (the shifted register is `a`, the imm8 `b`); binary `d,
        // vvvv, src[, imm]`; BLENDV `d, vvvv, src, sel`.
        let (a, b, b_n) = if op.unary {
            ([0, 0], self.vsrc(insn, 1)?, 1)
        } else if count == 3 && insn.op_kind(2) == OpKind::Immediate8 {
            let v = self.vsrc(insn, 1)?;
            (v, [imm as u128; 2], 2)
        } else {
            (self.vsrc(insn, 1)?, self.vsrc(insn, 2)?, 2)
        };
        let c = if count >= 4 && insn.op_kind(3) == OpKind::Register {
            self.vreg_op(insn, 3)?
        } else {
            [0, 0]
        };
        let input = |lane: usize, a: u128, b: u128| LaneIn {
            a,
            b,
            c: c[lane],
            imm: simd::lane_imm(op.name, imm, lane),
            mxcsr,
        };
        let b_is_128 = insn.op_kind(b_n) != OpKind::Immediate8 && Self::is_128(insn, b_n);
        let r = if op.per_lane {
            let lo = op.run(&input(0, a[0], b[0]));
            let hi = if wide {
                // A 128-bit source of a 256-bit in-lane operation (the
                // shift count) serves both lanes.
                let b1 = if b_is_128 { b[0] } else { b[1] };
                op.run(&input(1, a[1], b1))
            } else {
                0
            };
            [lo, hi]
        } else if !op.unary {
            // Scalar: the VEX.vvvv register with its low element replaced.
            if wide {
                return self.unimplemented(insn);
            }
            [op.run(&input(0, a[0], b[0])), 0]
        } else if wide && b_is_128 {
            // Widening to 256 bits: the high lane comes from the source
            // bytes after those the 128-bit form consumes.
            let shift = op.mem as u32 * 8;
            let lo = op.run(&input(0, 0, b[0]));
            let hi = op.run(&input(1, 0, b[0] >> shift.min(127)));
            [lo, hi]
        } else if !wide && !b_is_128 {
            // Narrowing from 256 bits: each lane gives 64 bits.
            let lo = op.run(&input(0, 0, b[0])) as u64 as u128;
            let hi = op.run(&input(1, 0, b[1])) as u64 as u128;
            [lo | hi << 64, 0]
        } else if wide {
            // A 256-bit form of an operation that works within lanes
            // (MOVDDUP): each lane.
            [op.run(&input(0, 0, b[0])), op.run(&input(1, 0, b[1]))]
        } else {
            [op.run(&input(0, 0, b[0])), 0]
        };
        self.set_vreg(d, wide, r);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use iced_x86::{Code, CpuidFeature, EncodingKind, Instruction};

    use crate::exec::Exec;
    use crate::state::{cr4, xcr0};
    use crate::tests::Guest;

    /// Every VEX instruction of AVX, AVX2, FMA and F16C reaches a handler:
    /// run on a skeleton instruction (its code, no operands) it may fault
    /// on the missing operands, but is never counted as unimplemented (nor
    /// panics).
    #[test]
    fn every_avx_avx2_fma_f16c_instruction_is_dispatched() {
        let mut g = Guest::long64();
        g.cpu.state.cr4 |= cr4::OSXSAVE;
        g.cpu.state.xcr0 = xcr0::SUPPORTED;
        let mut missing = Vec::new();
        let mut count = 0;
        for code in Code::values() {
            if code.encoding() != EncodingKind::VEX {
                continue;
            }
            let ours = code.cpuid_features().iter().all(|f| {
                matches!(
                    f,
                    CpuidFeature::AVX | CpuidFeature::AVX2 | CpuidFeature::FMA | CpuidFeature::F16C
                )
            });
            if !ours {
                continue;
            }
            count += 1;
            let mut i = Instruction::default();
            i.set_code(code);
            let before = g.cpu.unimplemented_count();
            let mut ex = Exec::new(&mut g.cpu, &mut g.bus);
            let _ = ex.vex(&i);
            if g.cpu.unimplemented_count() != before {
                missing.push(format!("{code:?}"));
            }
        }
        assert!(count > 500, "only {count} codes");
        assert!(missing.is_empty(), "not dispatched: {missing:?}");
    }
}
