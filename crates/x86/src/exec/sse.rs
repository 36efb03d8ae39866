//! x87 control instructions, FXSAVE/FXRSTOR, MXCSR, and the SSE/SSE2
//! integer and move subset baseline x86-64 code uses (memcpy, strlen...).
//! x87 arithmetic and SSE floating point are not implemented (#UD).

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::Exec;
use crate::exception::{gp, ud, Exc, NM, R};
use crate::state::{cr0, cr4, Mode};

pub(super) const MXCSR_MASK: u32 = 0xffff;

pub(super) fn xmm_index(r: Register) -> Option<usize> {
    let i = (r as usize).wrapping_sub(Register::XMM0 as usize);
    (i < 16).then_some(i)
}

pub(super) fn nm() -> Exc {
    Exc {
        vector: NM,
        code: None,
    }
}

/// Applies `f` to each of the 16/size lanes of two 128-bit values.
pub(super) fn lanes(a: u128, b: u128, size: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let bits = size * 8;
    let mask: u128 = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    let mut r = 0u128;
    for i in 0..(128 / bits) {
        let sh = i * bits;
        let x = ((a >> sh) & mask) as u64;
        let y = ((b >> sh) & mask) as u64;
        r |= ((f(x, y) as u128) & mask) << sh;
    }
    r
}

/// Interleaves the low (or high) halves of two vectors by element size.
pub(super) fn unpack(a: u128, b: u128, size: u32, high: bool) -> u128 {
    let bits = size * 8;
    let mask: u128 = (1u128 << bits) - 1;
    let n = 64 / bits;
    let base = if high { n } else { 0 };
    let mut r = 0u128;
    for i in 0..n {
        let x = (a >> ((base + i) * bits)) & mask;
        let y = (b >> ((base + i) * bits)) & mask;
        r |= x << (2 * i * bits);
        r |= y << ((2 * i + 1) * bits);
    }
    r
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

    fn read_m128(&mut self, insn: &Instruction, aligned: bool) -> R<u128> {
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
    fn xmm_src(&mut self, insn: &Instruction, n: u32, aligned: bool) -> R<u128> {
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
            Pshufd => {
                let d = Self::xmm_dst(insn)?;
                let s = self.xmm_src(insn, 1, true)?;
                let imm = insn.immediate8() as u32;
                let mut r = 0u128;
                for i in 0..4 {
                    let sel = (imm >> (i * 2)) & 3;
                    r |= ((s >> (sel * 32)) & 0xffff_ffff) << (i * 32);
                }
                self.c.state.fpu.xmm[d] = r;
                Ok(())
            }
            Pslldq | Psrldq => {
                let d = Self::xmm_dst(insn)?;
                let n = (insn.immediate8() as u32).min(16) * 8;
                let x = &mut self.c.state.fpu.xmm[d];
                *x = match (m, n) {
                    (_, 128) => 0,
                    (Pslldq, n) => *x << n,
                    (_, n) => *x >> n,
                };
                Ok(())
            }
            Psllw | Pslld | Psllq | Psrlw | Psrld | Psrlq | Psraw | Psrad => {
                let d = Self::xmm_dst(insn)?;
                let count = if matches!(insn.op1_kind(), OpKind::Immediate8) {
                    insn.immediate8() as u64
                } else {
                    self.xmm_src(insn, 1, true)? as u64
                };
                let size = match m {
                    Psllw | Psrlw | Psraw => 2,
                    Pslld | Psrld | Psrad => 4,
                    _ => 8,
                };
                let bits = size as u64 * 8;
                let x = self.c.state.fpu.xmm[d];
                self.c.state.fpu.xmm[d] = lanes(x, 0, size, |a, _| match m {
                    Psllw | Pslld | Psllq => {
                        if count >= bits {
                            0
                        } else {
                            a << count
                        }
                    }
                    Psrlw | Psrld | Psrlq => {
                        if count >= bits {
                            0
                        } else {
                            a >> count
                        }
                    }
                    _ => {
                        let sh = 64 - bits;
                        (((a << sh) as i64) >> (sh + count.min(bits - 1))) as u64
                    }
                });
                Ok(())
            }
            _ => self.sse_binary(insn),
        }
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

    /// Two-operand packed integer and logic operations.
    fn sse_binary(&mut self, insn: &Instruction) -> R<()> {
        use Mnemonic::*;
        let m = insn.mnemonic();
        let known = matches!(
            m,
            Pxor | Xorps
                | Xorpd
                | Por
                | Orps
                | Orpd
                | Pand
                | Andps
                | Andpd
                | Pandn
                | Andnps
                | Andnpd
                | Pcmpeqb
                | Pcmpeqw
                | Pcmpeqd
                | Pcmpgtb
                | Pcmpgtw
                | Pcmpgtd
                | Paddb
                | Paddw
                | Paddd
                | Paddq
                | Psubb
                | Psubw
                | Psubd
                | Psubq
                | Pminub
                | Pmaxub
                | Punpcklbw
                | Punpcklwd
                | Punpckldq
                | Punpcklqdq
                | Punpckhbw
                | Punpckhwd
                | Punpckhdq
                | Punpckhqdq
                | Pavgb
                | Psubusb
                | Paddusb
        );
        if !known {
            if self.sse_fp(insn)? {
                return Ok(());
            }
            return self.unimplemented(insn);
        }
        let d = Self::xmm_dst(insn)?;
        let b = self.xmm_src(insn, 1, true)?;
        let a = self.c.state.fpu.xmm[d];
        let sx = |v: u64, size: u32| {
            let sh = 64 - size * 8;
            ((v << sh) as i64) >> sh
        };
        let all = |c: bool| if c { u64::MAX } else { 0 };
        let r = match m {
            Pxor | Xorps | Xorpd => a ^ b,
            Por | Orps | Orpd => a | b,
            Pand | Andps | Andpd => a & b,
            Pandn | Andnps | Andnpd => !a & b,
            Pcmpeqb => lanes(a, b, 1, |x, y| all(x == y)),
            Pcmpeqw => lanes(a, b, 2, |x, y| all(x == y)),
            Pcmpeqd => lanes(a, b, 4, |x, y| all(x == y)),
            Pcmpgtb => lanes(a, b, 1, |x, y| all(sx(x, 1) > sx(y, 1))),
            Pcmpgtw => lanes(a, b, 2, |x, y| all(sx(x, 2) > sx(y, 2))),
            Pcmpgtd => lanes(a, b, 4, |x, y| all(sx(x, 4) > sx(y, 4))),
            Paddb => lanes(a, b, 1, u64::wrapping_add),
            Paddw => lanes(a, b, 2, u64::wrapping_add),
            Paddd => lanes(a, b, 4, u64::wrapping_add),
            Paddq => lanes(a, b, 8, u64::wrapping_add),
            Psubb => lanes(a, b, 1, u64::wrapping_sub),
            Psubw => lanes(a, b, 2, u64::wrapping_sub),
            Psubd => lanes(a, b, 4, u64::wrapping_sub),
            Psubq => lanes(a, b, 8, u64::wrapping_sub),
            Pminub => lanes(a, b, 1, u64::min),
            Pmaxub => lanes(a, b, 1, u64::max),
            Pavgb => lanes(a, b, 1, |x, y| (x + y + 1) >> 1),
            Psubusb => lanes(a, b, 1, |x, y| x.saturating_sub(y)),
            Paddusb => lanes(a, b, 1, |x, y| (x + y).min(0xff)),
            Punpcklbw => unpack(a, b, 1, false),
            Punpcklwd => unpack(a, b, 2, false),
            Punpckldq => unpack(a, b, 4, false),
            Punpcklqdq => unpack(a, b, 8, false),
            Punpckhbw => unpack(a, b, 1, true),
            Punpckhwd => unpack(a, b, 2, true),
            Punpckhdq => unpack(a, b, 4, true),
            _ => unpack(a, b, 8, true),
        };
        self.c.state.fpu.xmm[d] = r;
        Ok(())
    }
}

/// Whether a mnemonic is handled by [`Exec::fpu_sse`].
pub(super) fn is_fpu_sse(insn: &Instruction) -> bool {
    use Mnemonic::*;
    if insn.code() == Code::INVALID {
        return false;
    }
    if super::ssefp::is_sse_fp(insn.mnemonic()) || super::x87::is_x87(insn.mnemonic()) {
        return true;
    }
    matches!(
        insn.mnemonic(),
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
            | Pshufd
            | Pslldq
            | Psrldq
            | Psllw
            | Pslld
            | Psllq
            | Psrlw
            | Psrld
            | Psrlq
            | Psraw
            | Psrad
            | Pxor
            | Xorps
            | Xorpd
            | Por
            | Orps
            | Orpd
            | Pand
            | Andps
            | Andpd
            | Pandn
            | Andnps
            | Andnpd
            | Pcmpeqb
            | Pcmpeqw
            | Pcmpeqd
            | Pcmpgtb
            | Pcmpgtw
            | Pcmpgtd
            | Paddb
            | Paddw
            | Paddd
            | Paddq
            | Psubb
            | Psubw
            | Psubd
            | Psubq
            | Pminub
            | Pmaxub
            | Punpcklbw
            | Punpcklwd
            | Punpckldq
            | Punpcklqdq
            | Punpckhbw
            | Punpckhwd
            | Punpckhdq
            | Punpckhqdq
            | Pavgb
            | Psubusb
            | Paddusb
    )
}
