//! Inline emitters for the common integer forms: MOV, LEA and the ALU
//! operations (register/register and register/immediate, 8-, 16-, 32-
//! and 64-bit operands (LEA 32 and 64), 64-bit code). Each produces exactly what its interpreter
//! handler in `exec/fast.rs` does: the same register write (32-bit
//! results zero-extended) and, when the op's flags are live, the same
//! lazy-flags record (`LazyFlags::record`: operation, size mask, both
//! operands, result, aux). Registers and the record go through the
//! block's cache (`regs`): stored when something may read them.
//! Everything else is a call to the handler.

use cranelift_codegen::ir::{types::I32, types::I64, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use iced_x86::{CodeSize, Mnemonic, OpKind};

use super::compile::Cx;
use super::emit_branch::Known;
use crate::exec::op::NOREG;
use crate::exec::{Exec, Op};
use crate::flags::{size_mask, FlagOp};

/// The operation of an inlinable ALU instruction, and its lazy-flags kind.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Alu {
    Add,
    Sub,
    And,
    Or,
    Xor,
    Cmp,
    Test,
    /// ADC and SBB: the result takes CF in (the known flags', or the
    /// lazy flags' in memory through `lazy_cond`).
    Adc,
    Sbb,
}

impl Alu {
    pub(super) fn of(m: Mnemonic) -> Option<Alu> {
        Some(match m {
            Mnemonic::Add => Alu::Add,
            Mnemonic::Sub => Alu::Sub,
            Mnemonic::And => Alu::And,
            Mnemonic::Or => Alu::Or,
            Mnemonic::Xor => Alu::Xor,
            Mnemonic::Cmp => Alu::Cmp,
            Mnemonic::Test => Alu::Test,
            Mnemonic::Adc => Alu::Adc,
            Mnemonic::Sbb => Alu::Sbb,
            _ => return None,
        })
    }

    pub(super) fn flag_op(self) -> FlagOp {
        match self {
            Alu::Add => FlagOp::Add,
            Alu::Sub | Alu::Cmp => FlagOp::Sub,
            Alu::Adc => FlagOp::Adc,
            Alu::Sbb => FlagOp::Sbb,
            _ => FlagOp::Logic,
        }
    }

    /// Reads CF (ADC, SBB).
    pub(super) fn carries(self) -> bool {
        matches!(self, Alu::Adc | Alu::Sbb)
    }

    /// The unmasked result of `a` op `bv` (`sem::alu`), with `carry` (I64
    /// 0/1; None: 0) added by ADC or subtracted by SBB.
    pub(super) fn emit(
        self,
        b: &mut FunctionBuilder<'_>,
        a: Value,
        bv: Value,
        carry: Option<Value>,
    ) -> Value {
        let r = match self {
            Alu::Add | Alu::Adc => b.ins().iadd(a, bv),
            Alu::Sub | Alu::Cmp | Alu::Sbb => b.ins().isub(a, bv),
            Alu::And | Alu::Test => b.ins().band(a, bv),
            Alu::Or => b.ins().bor(a, bv),
            Alu::Xor => b.ins().bxor(a, bv),
        };
        match (self, carry) {
            (Alu::Adc, Some(c)) => b.ins().iadd(r, c),
            (Alu::Sbb, Some(c)) => b.ins().isub(r, c),
            _ => r,
        }
    }

    pub(super) fn writes(self) -> bool {
        !matches!(self, Alu::Cmp | Alu::Test)
    }
}

/// The shape of an op the emitters handle.
enum Inline {
    MovRR,
    MovRI,
    Lea,
    AluRR(Alu),
    AluRI(Alu),
    /// INC (true) or DEC of a register.
    IncDec(bool),
    /// NEG of a register (flags of 0 - a, `sem::unary`).
    Neg,
    /// NOT of a register (no flags).
    Not,
    /// BSWAP of a 32- or 64-bit register (no flags).
    Bswap,
    /// CDQE (false: RAX = EAX sign-extended) or CDQ/CQO (true: RDX = the
    /// sign of EAX/RAX), `fast::convert`.
    Convert(bool),
}

fn is_imm(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

/// The inline shape of `op` and its operand size, if it has one. Only
/// ops the interpreter runs with a specialised handler (not the generic
/// one, not a fused compare-and-branch) in 64-bit code qualify.
fn classify(op: &Op) -> Option<(Inline, u32)> {
    let insn = &op.insn;
    if op.sets_rip
        || op.end != op.idx + 1
        || insn.code_size() != CodeSize::Code64
        || insn.has_lock_prefix()
    {
        return None;
    }
    match insn.mnemonic() {
        Mnemonic::Cdqe => return Some((Inline::Convert(false), 8)),
        Mnemonic::Cdq => return Some((Inline::Convert(true), 4)),
        Mnemonic::Cqo => return Some((Inline::Convert(true), 8)),
        _ => {}
    }
    if insn.op_count() == 1 {
        let size = Exec::op_size(insn, 0);
        let shape = match insn.mnemonic() {
            Mnemonic::Inc => Inline::IncDec(true),
            Mnemonic::Dec => Inline::IncDec(false),
            Mnemonic::Neg => Inline::Neg,
            Mnemonic::Not => Inline::Not,
            Mnemonic::Bswap if matches!(size, 4 | 8) => Inline::Bswap,
            _ => return None,
        };
        let ok = insn.op0_kind() == OpKind::Register && op.r0 < 16 && matches!(size, 1 | 2 | 4 | 8);
        return ok.then_some((shape, size));
    }
    if insn.op_count() != 2 {
        return None;
    }
    // 1 and 2 bytes: the low byte or word of a GPR (r < 16; AH..BH are
    // 16..19), merged into the register as `rset`.
    let size = Exec::op_size(insn, 0);
    if !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    let gpr = |r: u8| r < 16;
    let k0 = insn.op0_kind();
    let k1 = insn.op1_kind();
    let m = insn.mnemonic();
    let shape = match (m, k0, k1) {
        (Mnemonic::Mov, OpKind::Register, OpKind::Register) if gpr(op.r0) && gpr(op.r1) => {
            Inline::MovRR
        }
        (Mnemonic::Mov, OpKind::Register, k) if gpr(op.r0) && is_imm(k) => Inline::MovRI,
        (Mnemonic::Lea, OpKind::Register, OpKind::Memory)
            if gpr(op.r0)
                && size >= 4
                && (op.base == NOREG || gpr(op.base))
                && (op.index == NOREG || gpr(op.index)) =>
        {
            Inline::Lea
        }
        (_, OpKind::Register, OpKind::Register) if gpr(op.r0) && gpr(op.r1) => {
            Inline::AluRR(Alu::of(m)?)
        }
        (_, OpKind::Register, k) if gpr(op.r0) && is_imm(k) => Inline::AluRI(Alu::of(m)?),
        _ => return None,
    };
    Some((shape, size))
}

/// Emits `op` inline against the CPU at `cpu`; false when it has no
/// inline form (the caller emits a handler call).
pub(super) fn inline(b: &mut FunctionBuilder<'_>, cx: &Cx, op: &Op, i: usize) -> bool {
    let Some((shape, size)) = classify(op) else {
        return super::emit_mem::inline(b, cx, op, i);
    };
    // The interpreter records flags unless the block's liveness pass gave
    // the op its flag-less handler.
    let record = std::ptr::fn_addr_eq(op.h, op.hf);
    // CF as it stands (the known flags', or the lazy flags' in memory),
    // I64 0/1 (condition code 2, "below"): what INC/DEC keep when they
    // record, what ADC/SBB take in.
    let carry = match (&shape, record) {
        (Inline::IncDec(_), true) => cx.kept_carry(b),
        (Inline::AluRR(alu) | Inline::AluRI(alu), _) if alu.carries() => {
            let c = cx.cond(b, 2);
            Some(b.ins().uextend(I64, c))
        }
        _ => None,
    };
    let m = size_mask(size);
    let get = |b: &mut FunctionBuilder<'_>, r: u8| cx.gpr_sized(b, r, size);
    let set = |b: &mut FunctionBuilder<'_>, r: u8, v: Value| cx.set_gpr(b, r, size, v);
    match shape {
        Inline::MovRR => {
            let v = get(b, op.r1);
            set(b, op.r0, v);
        }
        Inline::MovRI => {
            let v = b.ins().iconst(I64, op.imm as i64);
            set(b, op.r0, v);
        }
        Inline::Lea => {
            // Exec::op_ea: disp + base + (index << scale), masked.
            let mut a = b.ins().iconst(I64, op.disp as i64);
            if op.base != NOREG {
                let base = cx.gpr(b, op.base);
                a = b.ins().iadd(a, base);
            }
            if op.index != NOREG {
                let idx = cx.gpr(b, op.index);
                let idx = b.ins().ishl_imm_u(idx, op.scale as i64);
                a = b.ins().iadd(a, idx);
            }
            if op.amask != u64::MAX {
                a = b.ins().band_imm_u(a, op.amask as i64);
            }
            set(b, op.r0, a);
        }
        Inline::IncDec(_) | Inline::Neg => {
            // sem::unary: INC/DEC a +/- 1, recorded (Inc/Dec, a, 1, r,
            // the kept CF); NEG 0 - a, recorded (Sub, 0, a, r).
            let a = get(b, op.r0);
            let (kind, x, y) = match shape {
                Inline::IncDec(true) => (FlagOp::Inc, a, b.ins().iconst(I64, 1)),
                Inline::IncDec(false) => (FlagOp::Dec, a, b.ins().iconst(I64, 1)),
                _ => (FlagOp::Sub, b.ins().iconst(I64, 0), a),
            };
            let r = match kind {
                FlagOp::Inc => b.ins().iadd(x, y),
                _ => b.ins().isub(x, y),
            };
            let r = if size < 8 {
                b.ins().band_imm_u(r, m as i64)
            } else {
                r
            };
            let k = Known {
                kind,
                size,
                a: x,
                b: y,
                r,
                cf: carry,
            };
            if record {
                cx.set_flags(k);
            }
            set(b, op.r0, r);
            cx.known.set(Some(k));
        }
        Inline::Not => {
            let a = get(b, op.r0);
            let r = b.ins().bnot(a);
            let r = if size < 8 {
                b.ins().band_imm_u(r, m as i64)
            } else {
                r
            };
            set(b, op.r0, r);
        }
        Inline::Bswap => {
            let a = cx.gpr(b, op.r0);
            let r = if size == 4 {
                let low = b.ins().ireduce(I32, a);
                let r = b.ins().bswap(low);
                b.ins().uextend(I64, r)
            } else {
                b.ins().bswap(a)
            };
            cx.set_gpr(b, op.r0, 8, r);
        }
        Inline::Convert(sign) => {
            let a = cx.gpr(b, 0);
            if sign {
                // RDX (EDX) = all ones when the sign bit is set.
                let v = if size == 8 {
                    b.ins().sshr_imm_u(a, 63)
                } else {
                    let low = b.ins().ireduce(I32, a);
                    let s = b.ins().sshr_imm_u(low, 31);
                    b.ins().uextend(I64, s)
                };
                cx.set_gpr(b, 2, 8, v);
            } else {
                let low = b.ins().ireduce(I32, a);
                let v = b.ins().sextend(I64, low);
                cx.set_gpr(b, 0, 8, v);
            }
        }
        Inline::AluRR(alu) | Inline::AluRI(alu) => {
            // sem::alu: ADC/SBB add or subtract CF too and record it
            // (`aux`).
            let a = get(b, op.r0);
            let bv = match shape {
                Inline::AluRR(_) => get(b, op.r1),
                _ => b.ins().iconst(I64, op.imm as i64),
            };
            let r = alu.emit(b, a, bv, carry);
            let r = if size < 8 {
                b.ins().band_imm_u(r, m as i64)
            } else {
                r
            };
            let k = Known {
                kind: alu.flag_op(),
                size,
                a,
                b: bv,
                r,
                cf: carry,
            };
            if record {
                cx.set_flags(k);
            }
            cx.known.set(Some(k));
            if alu.writes() {
                set(b, op.r0, r);
            }
        }
    }
    true
}
