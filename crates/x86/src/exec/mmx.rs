//! The MMX register file and its data movement: MOVD/MOVQ between MMX
//! registers, general registers and memory. MMn is the low 64 bits
//! (mantissa) of x87 physical register Rn; an MMX instruction empties the
//! stack top (TOP = 0) and tags every register valid, and a write sets the
//! register's exponent and sign bits to all ones (SDM vol. 1, 9.5). EMMS
//! lives with the x87 instructions. The MMX arithmetic is not implemented
//! (CPUID does not advertise MMX).

use iced_x86::{Code, Instruction, OpKind, Register};

use super::Exec;
use crate::exception::{ud, Exc, NM, R};
use crate::state::cr0;

/// Whether an operand of `insn` is an MMX register.
pub(super) fn uses_mmx(insn: &Instruction) -> bool {
    (0..insn.op_count())
        .any(|i| insn.op_kind(i) == OpKind::Register && uses_mmx_reg(insn.op_register(i)))
}

fn mm_index(r: Register) -> usize {
    (r as usize - Register::MM0 as usize) & 7
}

impl Exec<'_> {
    fn mmx_get(&self, r: Register) -> u64 {
        let st = &self.c.state.fpu.st[mm_index(r)];
        u64::from_le_bytes(st[..8].try_into().expect("8 bytes"))
    }

    fn mmx_set(&mut self, r: Register, v: u64) {
        let st = &mut self.c.state.fpu.st[mm_index(r)];
        st[..8].copy_from_slice(&v.to_le_bytes());
        st[8] = 0xff;
        st[9] = 0xff;
    }

    /// MOVD/MOVQ with an MMX operand.
    pub(super) fn mmx(&mut self, insn: &Instruction) -> R<()> {
        let cr0 = self.c.state.cr0;
        if cr0 & cr0::EM != 0 {
            return Err(ud());
        }
        if cr0 & cr0::TS != 0 {
            return Err(Exc {
                vector: NM,
                code: None,
            });
        }
        match insn.code() {
            Code::Movd_mm_rm32 | Code::Movq_mm_rm64 | Code::Movq_mm_mmm64 => {
                let size = Self::op_size(insn, 1);
                let v = match insn.op1_kind() {
                    OpKind::Register if size == 8 && uses_mmx_reg(insn.op1_register()) => {
                        self.mmx_get(insn.op1_register())
                    }
                    _ => self.read_op(insn, 1, size)?,
                };
                self.mmx_set(insn.op0_register(), v);
            }
            Code::Movd_rm32_mm | Code::Movq_rm64_mm | Code::Movq_mmm64_mm => {
                let v = self.mmx_get(insn.op1_register());
                let size = Self::op_size(insn, 0);
                match insn.op0_kind() {
                    OpKind::Register if uses_mmx_reg(insn.op0_register()) => {
                        self.mmx_set(insn.op0_register(), v)
                    }
                    OpKind::Register => self.set_gpr(insn.op0_register(), v & mask(size)),
                    _ => self.write_op(insn, 0, size, v & mask(size))?,
                }
            }
            _ => return self.unimplemented(insn),
        }
        // MMX state: TOP = 0, every register valid.
        let f = &mut self.c.state.fpu;
        f.fsw &= !(7 << 11);
        f.ftw = 0xff;
        Ok(())
    }
}

fn uses_mmx_reg(r: Register) -> bool {
    (Register::MM0..=Register::MM7).contains(&r)
}

fn mask(size: u32) -> u64 {
    crate::flags::size_mask(size)
}
