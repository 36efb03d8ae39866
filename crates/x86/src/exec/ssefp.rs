//! The SSE/SSE2 instructions that are not lane operations (`simd`):
//! COMISS/UCOMISS/COMISD/UCOMISD (flags), conversions to and from general
//! registers, PINSRW/PEXTRW.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::simd::{self, scalar};
use super::sse::xmm_index;
use super::Exec;
use crate::exception::{ud, R};
use crate::state::rflags::*;

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
                let double = matches!(m, Comisd | Ucomisd);
                let b = self.scalar_src(insn, 1, if double { 8 } else { 4 })?;
                let f = scalar::comis(self.c.state.fpu.xmm[d], b, double);
                self.c.state.flags.set_arith(ARITH, f);
            }
            Cvtsi2ss | Cvtsi2sd => {
                let d = Self::xmm0_dst(insn)?;
                let size = Self::op_size(insn, 1);
                let v = self.read_op(insn, 1, size)?;
                let x = &mut self.c.state.fpu.xmm[d];
                *x = scalar::cvtsi2f(*x, v, size * 8, m == Cvtsi2sd);
            }
            Cvttss2si | Cvtss2si | Cvttsd2si | Cvtsd2si => {
                let r = insn.op0_register();
                let double = matches!(m, Cvttsd2si | Cvtsd2si);
                let b = self.scalar_src(insn, 1, if double { 8 } else { 4 })?;
                let truncate = matches!(m, Cvttss2si | Cvttsd2si);
                let mxcsr = self.c.state.fpu.mxcsr;
                let bits = r.size() as u32 * 8;
                self.set_gpr(r, scalar::cvtf2si(b, double, truncate, mxcsr, bits));
            }
            Pinsrw => {
                let d = Self::xmm0_dst(insn)?;
                let v = self.read_op(insn, 1, 2)?;
                let x = &mut self.c.state.fpu.xmm[d];
                *x = simd::insert(*x, 2, insn.immediate8(), v);
            }
            Pextrw => {
                let s = xmm_index(insn.op1_register()).ok_or_else(ud)?;
                let v = simd::extract(self.c.state.fpu.xmm[s], 2, insn.immediate8());
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
