//! The legacy SSE4.1/SSE4.2 instructions that are not lane operations:
//! PEXTRB/D/Q and EXTRACTPS, PINSRB/D/Q, PTEST, MOVNTDQA, the PCMPxSTRx
//! string comparisons, and CRC32. Their semantics are the pure functions
//! of `simd`.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::simd::{self, strings};
use super::sse::xmm_index;
use super::Exec;
use crate::exception::{ud, R};
use crate::state::rflags::ARITH;

impl Exec<'_> {
    /// An XMM register operand.
    fn xmm_reg(&self, insn: &Instruction, n: u32) -> R<usize> {
        if insn.op_kind(n) != OpKind::Register {
            return Err(ud());
        }
        xmm_index(insn.op_register(n)).ok_or_else(ud)
    }

    /// Handles the instructions [`is_sse4_other`] accepts (the #UD/#NM
    /// checks are done).
    pub(super) fn sse4_other(&mut self, insn: &Instruction) -> R<()> {
        use Mnemonic::*;
        let m = insn.mnemonic();
        let imm = insn.immediate8();
        match m {
            Pextrb | Pextrd | Pextrq | Extractps => {
                let s = self.xmm_reg(insn, 1)?;
                let size = match m {
                    Pextrb => 1,
                    Pextrq => 8,
                    _ => 4,
                };
                let v = simd::extract(self.c.state.fpu.xmm[s], size, imm);
                match insn.op0_kind() {
                    // A register destination is written whole, zero-extended.
                    OpKind::Register => {
                        self.set_gpr(insn.op0_register(), v);
                        Ok(())
                    }
                    _ => self.write_op(insn, 0, size, v),
                }
            }
            Pinsrb | Pinsrd | Pinsrq => {
                let d = self.xmm_reg(insn, 0)?;
                let size = match m {
                    Pinsrb => 1,
                    Pinsrq => 8,
                    _ => 4,
                };
                let v = self.read_op(insn, 1, size)?;
                let x = &mut self.c.state.fpu.xmm[d];
                *x = simd::insert(*x, size, imm, v);
                Ok(())
            }
            Ptest => {
                let a = self.c.state.fpu.xmm[self.xmm_reg(insn, 0)?];
                let b = self.xmm_src(insn, 1, true)?;
                self.c.state.flags.set_arith(ARITH, simd::ptest(a, b));
                Ok(())
            }
            Movntdqa => {
                let d = self.xmm_reg(insn, 0)?;
                if insn.op1_kind() != OpKind::Memory {
                    return Err(ud());
                }
                self.c.state.fpu.xmm[d] = self.read_m128(insn, true)?;
                Ok(())
            }
            Pcmpestri | Pcmpestri64 | Pcmpestrm | Pcmpestrm64 | Pcmpistri | Pcmpistrm => {
                let a = self.c.state.fpu.xmm[self.xmm_reg(insn, 0)?];
                // The string instructions do not require an aligned m128.
                let b = self.xmm_src(insn, 1, false)?;
                let g = &self.c.state.gpr;
                let lengths = match m {
                    Pcmpestri | Pcmpestrm => {
                        strings::Lengths::Explicit(g[0] as i32 as i64, g[2] as i32 as i64)
                    }
                    Pcmpestri64 | Pcmpestrm64 => {
                        strings::Lengths::Explicit(g[0] as i64, g[2] as i64)
                    }
                    _ => strings::Lengths::Implicit,
                };
                let r = strings::pcmpstr(a, b, imm, lengths);
                let index = matches!(m, Pcmpestri | Pcmpestri64 | Pcmpistri);
                r.write(&mut self.c.state, index);
                Ok(())
            }
            _ => self.unimplemented(insn),
        }
    }

    /// CRC32 r32/r64, r/m8/16/32/64 (a general-purpose instruction: no
    /// SSE state checks).
    pub(super) fn crc32(&mut self, insn: &Instruction) -> R<()> {
        let dst = insn.op0_register();
        if !matches!(dst.size(), 4 | 8) {
            return Err(ud());
        }
        let size = Self::op_size(insn, 1);
        let data = self.read_op(insn, 1, size)?;
        let crc = self.gpr(dst) as u32;
        let r = strings::crc32(crc, data, size);
        // A 32- or 64-bit destination: the upper half is zeroed either way.
        self.set_gpr(dst, r as u64);
        Ok(())
    }
}

/// The mnemonics [`Exec::sse4_other`] handles.
pub(super) fn is_sse4_other(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Pextrb
            | Pextrd
            | Pextrq
            | Extractps
            | Pinsrb
            | Pinsrd
            | Pinsrq
            | Ptest
            | Movntdqa
            | Pcmpestri
            | Pcmpestri64
            | Pcmpestrm
            | Pcmpestrm64
            | Pcmpistri
            | Pcmpistrm
    )
}
