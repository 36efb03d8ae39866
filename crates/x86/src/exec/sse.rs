//! x87 control instructions, FXSAVE/FXRSTOR, MXCSR, the SSE moves, and
//! the legacy SSE dispatch of the lane operations (`simd`).

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::simd::{self, LaneIn, LaneOp};
use super::Exec;
use crate::exception::{gp, ud, Exc, NM, R};
use crate::state::{cr0, cr4, Mode};

const MXCSR_MASK: u32 = 0xffff;

pub(super) fn xmm_index(r: Register) -> Option<usize> {
    let i = (r as usize).wrapping_sub(Register::XMM0 as usize);
    (i < 16).then_some(i)
}

fn nm() -> Exc {
    Exc {
        vector: NM,
        code: None,
    }
}

impl Exec<'_> {
    /// #UD / #NM rules for x87 (`sse` false) and SSE instructions.
    fn fpu_check(&self, sse: bool) -> R<()> {
        let st = &self.c.state;
        if sse && (st.cr0 & cr0::EM != 0 || st.cr4 & cr4::OSFXSR == 0) {
            return Err(ud());
        }
        if !sse && st.cr0 & cr0::EM != 0 {
            return Err(nm());
        }
        if st.cr0 & cr0::TS != 0 {
            return Err(nm());
        }
        Ok(())
    }

    pub(super) fn read_m128(&mut self, insn: &Instruction, aligned: bool) -> R<u128> {
        let seg = Self::mem_seg(insn);
        let off = self.ea(insn);
        let lin = self.seg_lin(seg, off, 16, false)?;
        if aligned && lin & 15 != 0 {
            return Err(gp(0));
        }
        let lo = self.read(seg, off, 8)?;
        let hi = self.read(seg, off.wrapping_add(8), 8)?;
        Ok(lo as u128 | ((hi as u128) << 64))
    }

    fn write_m128(&mut self, insn: &Instruction, aligned: bool, v: u128) -> R<()> {
        let seg = Self::mem_seg(insn);
        let off = self.ea(insn);
        let lin = self.seg_lin(seg, off, 16, true)?;
        if aligned && lin & 15 != 0 {
            return Err(gp(0));
        }
        let user = self.user();
        self.write_lin_bytes(lin, &v.to_le_bytes(), user)
    }

    /// Operand `n` as a 128-bit value (XMM register or m128).
    pub(super) fn xmm_src(&mut self, insn: &Instruction, n: u32, aligned: bool) -> R<u128> {
        match insn.op_kind(n) {
            OpKind::Register => match xmm_index(insn.op_register(n)) {
                Some(i) => Ok(self.c.state.fpu.xmm[i]),
                None => Err(ud()),
            },
            OpKind::Memory => self.read_m128(insn, aligned),
            _ => Err(ud()),
        }
    }

    fn xmm_dst(insn: &Instruction) -> R<usize> {
        if insn.op0_kind() != OpKind::Register {
            return Err(ud());
        }
        xmm_index(insn.op0_register()).ok_or_else(ud)
    }

    pub(super) fn fpu_sse(&mut self, insn: &Instruction) -> R<()> {
        use Mnemonic::*;
        // MMX forms share mnemonics: not implemented.
        for i in 0..insn.op_count() {
            if insn.op_kind(i) == OpKind::Register {
                let r = insn.op_register(i) as usize;
                if (Register::MM0 as usize..=Register::MM7 as usize).contains(&r) {
                    return self.unimplemented(insn);
                }
            }
        }
        let m = insn.mnemonic();
        match m {
            Fninit | Fnstsw | Fnstcw | Fldcw | Fnclex | Wait | Emms => {
                if m == Wait {
                    if self.c.state.cr0 & (cr0::TS | cr0::MP) == (cr0::TS | cr0::MP) {
                        return Err(nm());
                    }
                    return Ok(());
                }
                self.fpu_check(false)?;
                let f = &mut self.c.state.fpu;
                match m {
                    Fninit => {
                        f.fcw = 0x37f;
                        f.fsw = 0;
                        f.ftw = 0;
                        f.fop = 0;
                        f.fip = 0;
                        f.fdp = 0;
                    }
                    Fnclex => f.fsw &= 0x7f00,
                    Emms => f.ftw = 0,
                    Fnstsw => {
                        let v = f.fsw as u64;
                        if insn.op0_kind() == OpKind::Register {
                            self.set_gpr(Register::AX, v);
                        } else {
                            self.write_op(insn, 0, 2, v)?;
                        }
                    }
                    Fnstcw => {
                        let v = f.fcw as u64;
                        self.write_op(insn, 0, 2, v)?;
                    }
                    _ => {
                        let v = self.read_op(insn, 0, 2)?;
                        self.c.state.fpu.fcw = v as u16;
                    }
                }
                Ok(())
            }
            Fxsave | Fxsave64 | Fxrstor | Fxrstor64 => {
                if self.c.state.cr0 & (cr0::TS | cr0::EM) != 0 {
                    return Err(nm());
                }
                let seg = Self::mem_seg(insn);
                let off = self.ea(insn);
                let save = matches!(m, Fxsave | Fxsave64);
                let lin = self.seg_lin(seg, off, 512, save)?;
                if lin & 15 != 0 {
                    return Err(gp(0));
                }
                let wide = matches!(m, Fxsave64 | Fxrstor64);
                let nxmm = if self.c.state.mode == Mode::Long {
                    16
                } else {
                    8
                };
                let user = self.user();
                if save {
                    let img = self.fxsave_image(wide, nxmm);
                    self.write_lin_bytes(lin, &img, user)
                } else {
                    let mut img = [0u8; 512];
                    self.read_lin_bytes(lin, &mut img, user)?;
                    self.fxrstor_image(&img, wide, nxmm)
                }
            }
            Ldmxcsr | Stmxcsr => {
                self.fpu_check(true)?;
                if m == Ldmxcsr {
                    let v = self.read_op(insn, 0, 4)? as u32;
                    if v & !MXCSR_MASK != 0 {
                        return Err(gp(0));
                    }
                    self.c.state.fpu.mxcsr = v;
                    Ok(())
                } else {
                    let v = self.c.state.fpu.mxcsr as u64;
                    self.write_op(insn, 0, 4, v)
                }
            }
            _ if super::x87::is_x87(m) => {
                self.fpu_check(false)?;
                self.x87(insn)
            }
            _ => {
                self.fpu_check(true)?;
                self.sse_op(insn)
            }
        }
    }

    fn fxsave_image(&self, wide: bool, nxmm: usize) -> [u8; 512] {
        let f = &self.c.state.fpu;
        let mut b = [0u8; 512];
        b[0..2].copy_from_slice(&f.fcw.to_le_bytes());
        b[2..4].copy_from_slice(&f.fsw.to_le_bytes());
        b[4] = f.ftw;
        b[6..8].copy_from_slice(&f.fop.to_le_bytes());
        if wide {
            b[8..16].copy_from_slice(&f.fip.to_le_bytes());
            b[16..24].copy_from_slice(&f.fdp.to_le_bytes());
        } else {
            b[8..12].copy_from_slice(&(f.fip as u32).to_le_bytes());
            b[16..20].copy_from_slice(&(f.fdp as u32).to_le_bytes());
        }
        b[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
        b[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
        for (i, st) in f.st.iter().enumerate() {
            b[32 + i * 16..42 + i * 16].copy_from_slice(st);
        }
        for (i, x) in f.xmm.iter().take(nxmm).enumerate() {
            b[160 + i * 16..176 + i * 16].copy_from_slice(&x.to_le_bytes());
        }
        b
    }

    fn fxrstor_image(&mut self, b: &[u8; 512], wide: bool, nxmm: usize) -> R<()> {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u32_at(o) as u64 | ((u32_at(o + 4) as u64) << 32);
        let mxcsr = u32_at(24);
        if mxcsr & !MXCSR_MASK != 0 {
            return Err(gp(0));
        }
        let f = &mut self.c.state.fpu;
        f.fcw = u16_at(0);
        f.fsw = u16_at(2);
        f.ftw = b[4];
        f.fop = u16_at(6);
        if wide {
            f.fip = u64_at(8);
            f.fdp = u64_at(16);
        } else {
            f.fip = u32_at(8) as u64;
            f.fdp = u32_at(16) as u64;
        }
        f.mxcsr = mxcsr;
        for (i, st) in f.st.iter_mut().enumerate() {
            st.copy_from_slice(&b[32 + i * 16..42 + i * 16]);
        }
        for (i, x) in f.xmm.iter_mut().take(nxmm).enumerate() {
            let mut v = [0u8; 16];
            v.copy_from_slice(&b[160 + i * 16..176 + i * 16]);
            *x = u128::from_le_bytes(v);
        }
        Ok(())
    }

    fn sse_op(&mut self, insn: &Instruction) -> R<()> {
        use Mnemonic::*;
        let m = insn.mnemonic();
        match m {
            Movaps | Movapd | Movdqa | Movups | Movupd | Movdqu | Lddqu | Movntdq | Movntps
            | Movntpd => {
                let aligned = matches!(m, Movaps | Movapd | Movdqa | Movntdq | Movntps | Movntpd);
                if insn.op0_kind() == OpKind::Memory {
                    let v = self.xmm_src(insn, 1, false)?;
                    self.write_m128(insn, aligned, v)
                } else {
                    let d = Self::xmm_dst(insn)?;
                    let v = self.xmm_src(insn, 1, aligned)?;
                    self.c.state.fpu.xmm[d] = v;
                    Ok(())
                }
            }
            Movd | Movq => self.movd_movq(insn),
            Maskmovdqu => self.maskmovdqu(insn),
            Movnti => {
                let size = Self::op_size(insn, 0);
                let v = self.read_op(insn, 1, size)?;
                self.write_op(insn, 0, size, v)
            }
            Movss | Movsd => {
                let size: u32 = if m == Movss { 4 } else { 8 };
                let mask: u128 = if size == 4 {
                    0xffff_ffff
                } else {
                    u64::MAX as u128
                };
                if insn.op0_kind() == OpKind::Memory {
                    let s = xmm_index(insn.op1_register()).ok_or_else(ud)?;
                    let v = self.c.state.fpu.xmm[s] as u64;
                    return self.write_op(insn, 0, size, v);
                }
                let d = Self::xmm_dst(insn)?;
                if insn.op1_kind() == OpKind::Memory {
                    let v = self.read_op(insn, 1, size)? as u128;
                    self.c.state.fpu.xmm[d] = v;
                } else {
                    let s = xmm_index(insn.op1_register()).ok_or_else(ud)?;
                    let x = &mut self.c.state.fpu.xmm;
                    x[d] = (x[d] & !mask) | (x[s] & mask);
                }
                Ok(())
            }
            Movlps | Movlpd | Movhps | Movhpd | Movhlps | Movlhps => {
                let high = matches!(m, Movhps | Movhpd | Movlhps);
                if insn.op0_kind() == OpKind::Memory {
                    let s = xmm_index(insn.op1_register()).ok_or_else(ud)?;
                    let x = self.c.state.fpu.xmm[s];
                    let v = if high { (x >> 64) as u64 } else { x as u64 };
                    return self.write_op(insn, 0, 8, v);
                }
                let d = Self::xmm_dst(insn)?;
                let src = match insn.op1_kind() {
                    OpKind::Memory => self.read_op(insn, 1, 8)?,
                    _ => {
                        let s = xmm_index(insn.op1_register()).ok_or_else(ud)?;
                        let x = self.c.state.fpu.xmm[s];
                        if m == Movhlps {
                            (x >> 64) as u64
                        } else {
                            x as u64
                        }
                    }
                };
                let x = &mut self.c.state.fpu.xmm[d];
                *x = if high {
                    (*x & u64::MAX as u128) | ((src as u128) << 64)
                } else {
                    (*x & !(u64::MAX as u128)) | src as u128
                };
                Ok(())
            }
            Pmovmskb | Movmskps | Movmskpd => {
                let s = xmm_index(insn.op1_register()).ok_or_else(ud)?;
                let x = self.c.state.fpu.xmm[s];
                let size = match m {
                    Pmovmskb => 1,
                    Movmskps => 4,
                    _ => 8,
                };
                let mut r = 0u64;
                for i in 0..(16 / size) {
                    if (x >> ((i + 1) * size * 8 - 1)) & 1 != 0 {
                        r |= 1 << i;
                    }
                }
                self.set_gpr(insn.op0_register(), r);
                Ok(())
            }
            _ if super::sse4::is_sse4_other(m) => self.sse4_other(insn),
            _ => match simd::lane_op(m) {
                Some(op) => self.sse_lane(insn, op),
                None => match self.sse_fp(insn)? {
                    true => Ok(()),
                    false => self.unimplemented(insn),
                },
            },
        }
    }

    /// MASKMOVDQU: the bytes of the first register whose byte in the
    /// second has bit 7 set are stored to DS:rDI (segment overridable),
    /// one byte at a time.
    fn maskmovdqu(&mut self, insn: &Instruction) -> R<()> {
        let amask = match insn.op0_kind() {
            OpKind::MemorySegRDI => u64::MAX,
            OpKind::MemorySegEDI => 0xffff_ffff,
            OpKind::MemorySegDI => 0xffff,
            _ => return Err(ud()),
        };
        let v = self.c.state.fpu.xmm[xmm_index(insn.op1_register()).ok_or_else(ud)?];
        let sel = self.c.state.fpu.xmm[xmm_index(insn.op2_register()).ok_or_else(ud)?];
        let seg = Self::mem_seg(insn);
        let base = self.c.state.gpr[7];
        for j in 0..16u32 {
            if (sel >> (8 * j + 7)) & 1 != 0 {
                let off = base.wrapping_add(j as u64) & amask;
                self.write(seg, off, 1, (v >> (8 * j)) as u64 & 0xff)?;
            }
        }
        Ok(())
    }

    fn movd_movq(&mut self, insn: &Instruction) -> R<()> {
        let code = insn.code();
        // movq xmm, xmm/m64 and movq xmm/m64, xmm: 64-bit, upper cleared.
        let size = if insn.mnemonic() == Mnemonic::Movd {
            4
        } else {
            8
        };
        match insn.op0_kind() {
            OpKind::Register if xmm_index(insn.op0_register()).is_some() => {
                let d = xmm_index(insn.op0_register()).ok_or_else(ud)?;
                let v = match insn.op1_kind() {
                    OpKind::Register => {
                        let r = insn.op1_register();
                        match xmm_index(r) {
                            Some(s) => self.c.state.fpu.xmm[s] as u64,
                            None => self.gpr(r),
                        }
                    }
                    _ => self.read_op(insn, 1, size)?,
                };
                let mask = if size == 4 { 0xffff_ffff } else { u64::MAX };
                self.c.state.fpu.xmm[d] = (v & mask) as u128;
                Ok(())
            }
            _ => {
                let s = xmm_index(insn.op1_register()).ok_or_else(ud)?;
                let v = self.c.state.fpu.xmm[s] as u64;
                let v = if size == 4 { v & 0xffff_ffff } else { v };
                let _ = code;
                self.write_op(insn, 0, size, v)
            }
        }
    }

    /// A lane operation (`simd::lane_op`) in its legacy SSE form: the
    /// destination register is the first source, the second is an XMM
    /// register, memory (m128 aligned) or, for shifts by an immediate,
    /// the imm8; BLENDV's selector is XMM0.
    fn sse_lane(&mut self, insn: &Instruction, op: LaneOp) -> R<()> {
        let d = Self::xmm_dst(insn)?;
        let mut imm = 0u8;
        for n in 1..insn.op_count() {
            if insn.op_kind(n) == OpKind::Immediate8 {
                imm = insn.immediate8();
            }
        }
        if op.name == Mnemonic::Insertps && insn.op1_kind() == OpKind::Memory {
            // The m32 is the element: no source select.
            imm &= 0x3f;
        }
        let b = match insn.op1_kind() {
            OpKind::Register => {
                let s = xmm_index(insn.op1_register()).ok_or_else(ud)?;
                self.c.state.fpu.xmm[s]
            }
            OpKind::Memory if op.mem == 16 => self.read_m128(insn, true)?,
            OpKind::Memory => self.read_op(insn, 1, op.mem as u32)? as u128,
            OpKind::Immediate8 => imm as u128,
            _ => return Err(ud()),
        };
        let f = &mut self.c.state.fpu;
        let input = LaneIn {
            a: f.xmm[d],
            b,
            c: f.xmm[0],
            imm,
            mxcsr: f.mxcsr,
        };
        f.xmm[d] = op.run(&input);
        Ok(())
    }
}

/// Whether a mnemonic is handled by [`Exec::fpu_sse`] (legacy encodings
/// only: the VEX twins of the lane operations are not).
pub(super) fn is_fpu_sse(insn: &Instruction) -> bool {
    use Mnemonic::*;
    if insn.code() == Code::INVALID {
        return false;
    }
    let m = insn.mnemonic();
    if super::ssefp::is_sse_fp(m) || super::x87::is_x87(m) {
        return true;
    }
    if simd::lane_op(m).is_some_and(|op| op.name == m) || super::sse4::is_sse4_other(m) {
        return true;
    }
    matches!(
        m,
        Fninit
            | Fnstsw
            | Fnstcw
            | Fldcw
            | Fnclex
            | Wait
            | Emms
            | Fxsave
            | Fxsave64
            | Fxrstor
            | Fxrstor64
            | Ldmxcsr
            | Stmxcsr
            | Movaps
            | Movapd
            | Movdqa
            | Movups
            | Movupd
            | Movdqu
            | Lddqu
            | Movntdq
            | Movntps
            | Movntpd
            | Movnti
            | Movd
            | Movq
            | Movss
            | Movsd
            | Movlps
            | Movlpd
            | Movhps
            | Movhpd
            | Movhlps
            | Movlhps
            | Pmovmskb
            | Movmskps
            | Movmskpd
            | Maskmovdqu
    )
}

#[cfg(test)]
mod tests {
    use iced_x86::{Code, CpuidFeature, EncodingKind, Instruction, Mnemonic};

    /// Every legacy-encoded SSE..SSE4.2 instruction on XMM registers (MMX
    /// forms are not implemented) reaches an implementation: the SSE
    /// dispatch, or the general dispatch for the few without SSE state.
    #[test]
    fn every_legacy_sse_instruction_is_dispatched() {
        let mut missing = Vec::new();
        for code in Code::values() {
            if code.encoding() != EncodingKind::Legacy {
                continue;
            }
            let sse = code.cpuid_features().iter().any(|f| {
                matches!(
                    f,
                    CpuidFeature::SSE
                        | CpuidFeature::SSE2
                        | CpuidFeature::SSE3
                        | CpuidFeature::SSSE3
                        | CpuidFeature::SSE4_1
                        | CpuidFeature::SSE4_2
                )
            });
            let name = format!("{code:?}");
            let mmx = name.split('_').any(|p| p == "mm" || p.starts_with("mmm"));
            if !sse || mmx {
                continue;
            }
            use Mnemonic::*;
            let general = matches!(
                code.mnemonic(),
                Crc32
                    | Lfence
                    | Mfence
                    | Sfence
                    | Prefetchnta
                    | Prefetcht0
                    | Prefetcht1
                    | Prefetcht2
            );
            let mut i = Instruction::default();
            i.set_code(code);
            if !general && !super::is_fpu_sse(&i) {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "not dispatched: {missing:?}");
    }

    /// The VEX twins in the lane table name their legacy instruction.
    #[test]
    fn lane_table_maps_vex_twins_to_legacy_names() {
        use super::simd::lane_op;
        for (legacy, vex) in [
            (Mnemonic::Paddb, Mnemonic::Vpaddb),
            (Mnemonic::Pshufb, Mnemonic::Vpshufb),
            (Mnemonic::Roundps, Mnemonic::Vroundps),
            (Mnemonic::Pblendvb, Mnemonic::Vpblendvb),
            (Mnemonic::Cmpps, Mnemonic::Vcmpps),
        ] {
            let l = lane_op(legacy).expect("legacy in table");
            let v = lane_op(vex).expect("VEX twin in table");
            assert_eq!((l.name, v.name), (legacy, legacy));
            assert_eq!((l.mem, l.unary, l.per_lane), (v.mem, v.unary, v.per_lane));
        }
        assert!(lane_op(Mnemonic::Vpermq).is_none());
    }

    #[test]
    fn lane_imm_gives_the_high_lane_its_fields() {
        use super::simd::lane_imm;
        assert_eq!(lane_imm(Mnemonic::Vblendps, 0xa5, 1), 0x0a);
        assert_eq!(lane_imm(Mnemonic::Vblendpd, 0b1101, 1), 0b11);
        assert_eq!(lane_imm(Mnemonic::Vshufpd, 0b0110, 1), 0b01);
        assert_eq!(lane_imm(Mnemonic::Vmpsadbw, 0b10_1011, 1), 0b101);
        assert_eq!(lane_imm(Mnemonic::Vpshufd, 0x1b, 1), 0x1b);
        assert_eq!(lane_imm(Mnemonic::Vblendps, 0xa5, 0), 0xa5);
    }
}
