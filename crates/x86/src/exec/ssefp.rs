//! The SSE/SSE2 instructions that are not lane operations (`simd`):
//! COMISS/UCOMISS/COMISD/UCOMISD (flags), conversions to and from general
//! registers, PINSRW/PEXTRW.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::simd::fp::{round_rc, to_int};
use super::sse::xmm_index;
use super::Exec;
use crate::exception::{ud, R};
use crate::state::rflags::*;

fn f32_lane(x: u128) -> f32 {
    f32::from_bits(x as u32)
}
fn f64_lane(x: u128) -> f64 {
    f64::from_bits(x as u64)
}
fn set_f32(x: u128, v: f32) -> u128 {
    (x & !0xffff_ffffu128) | v.to_bits() as u128
}
fn set_f64(x: u128, v: f64) -> u128 {
    (x & !(u64::MAX as u128)) | v.to_bits() as u128
}

fn sx(v: u64, bits: u32) -> i64 {
    let sh = 64 - bits;
    ((v << sh) as i64) >> sh
}

impl Exec<'_> {
    /// A scalar source: low lane of an XMM register or m32/m64.
    fn scalar_src(&mut self, insn: &Instruction, n: u32, size: u32) -> R<u128> {
        match insn.op_kind(n) {
            OpKind::Memory => Ok(self.read_op(insn, n, size)? as u128),
            OpKind::Register => {
                let i = xmm_index(insn.op_register(n)).ok_or_else(ud)?;
                Ok(self.c.state.fpu.xmm[i])
            }
            _ => Err(ud()),
        }
    }

    fn xmm0_dst(insn: &Instruction) -> R<usize> {
        if insn.op0_kind() != OpKind::Register {
            return Err(ud());
        }
        xmm_index(insn.op0_register()).ok_or_else(ud)
    }

    /// Returns Ok(false) when the mnemonic is not handled here.
    pub(super) fn sse_fp(&mut self, insn: &Instruction) -> R<bool> {
        use Mnemonic::*;
        let m = insn.mnemonic();
        match m {
            Comiss | Ucomiss | Comisd | Ucomisd => {
                let d = Self::xmm0_dst(insn)?;
                let x = self.c.state.fpu.xmm[d];
                let (a, b) = if matches!(m, Comiss | Ucomiss) {
                    let b = self.scalar_src(insn, 1, 4)?;
                    (f32_lane(x) as f64, f32_lane(b) as f64)
                } else {
                    let b = self.scalar_src(insn, 1, 8)?;
                    (f64_lane(x), f64_lane(b))
                };
                let f = if a.is_nan() || b.is_nan() {
                    ZF | PF | CF
                } else if a < b {
                    CF
                } else if a == b {
                    ZF
                } else {
                    0
                };
                self.c.state.flags.set_arith(ARITH, f);
            }
            Cvtsi2ss | Cvtsi2sd => {
                let d = Self::xmm0_dst(insn)?;
                let size = Self::op_size(insn, 1);
                let v = self.read_op(insn, 1, size)?;
                let i = sx(v, size * 8);
                let x = self.c.state.fpu.xmm[d];
                self.c.state.fpu.xmm[d] = if m == Cvtsi2ss {
                    set_f32(x, i as f32)
                } else {
                    set_f64(x, i as f64)
                };
            }
            Cvttss2si | Cvtss2si | Cvttsd2si | Cvtsd2si => {
                let r = insn.op0_register();
                let bits = r.size() as u32 * 8;
                let v = if matches!(m, Cvttss2si | Cvtss2si) {
                    f32_lane(self.scalar_src(insn, 1, 4)?) as f64
                } else {
                    f64_lane(self.scalar_src(insn, 1, 8)?)
                };
                let rc = if matches!(m, Cvttss2si | Cvttsd2si) {
                    3
                } else {
                    (self.c.state.fpu.mxcsr >> 13) & 3
                };
                self.set_gpr(r, to_int(round_rc(v, rc), bits));
            }
            Pinsrw => {
                let d = Self::xmm0_dst(insn)?;
                let v = self.read_op(insn, 1, 2)? & 0xffff;
                let sel = (insn.immediate8() & 7) as u32;
                let x = &mut self.c.state.fpu.xmm[d];
                *x = (*x & !(0xffffu128 << (16 * sel))) | ((v as u128) << (16 * sel));
            }
            Pextrw => {
                let s = xmm_index(insn.op1_register()).ok_or_else(ud)?;
                let sel = (insn.immediate8() & 7) as u32;
                let v = (self.c.state.fpu.xmm[s] >> (16 * sel)) as u64 & 0xffff;
                if insn.op0_kind() == OpKind::Register {
                    self.set_gpr(insn.op0_register(), v);
                } else {
                    self.write_op(insn, 0, 2, v)?;
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Whether [`Exec::sse_fp`] handles this mnemonic.
pub(super) fn is_sse_fp(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Comiss
            | Ucomiss
            | Comisd
            | Ucomisd
            | Cvtsi2ss
            | Cvtsi2sd
            | Cvttss2si
            | Cvtss2si
            | Cvttsd2si
            | Cvtsd2si
            | Pinsrw
            | Pextrw
    )
}
