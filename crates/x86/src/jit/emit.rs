//! Inline emitters for the common integer forms: MOV, LEA and the ALU
//! operations (register/register and register/immediate, 8-, 16-, 32-
//! and 64-bit operands (LEA 32 and 64), 64-bit code). Each produces exactly what its interpreter
//! handler in `exec/fast.rs` does: the same register write (32-bit
//! results zero-extended) and, when the op's flags are live, the same
//! lazy-flags record (`LazyFlags::record`: operation, size mask, both
//! operands, result, aux). Everything else is a call to the handler.

use cranelift_codegen::ir::{types::I64, types::I8, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;
use iced_x86::{CodeSize, Mnemonic, OpKind};

use super::compile::Cx;
use super::emit_branch::Known;
use crate::exec::op::NOREG;
use crate::exec::{Exec, Op};
use crate::flags::{size_mask, FlagOp, LazyFlags};
use crate::Cpu;

/// Byte offset of GPR `r` in `Cpu`.
fn gpr_off(r: u8) -> i32 {
    (std::mem::offset_of!(Cpu, state)
        + std::mem::offset_of!(crate::state::CpuState, gpr)
        + 8 * r as usize) as i32
}

/// Byte offset of the lazy flags in `Cpu`.
fn flags_off() -> usize {
    std::mem::offset_of!(Cpu, state) + std::mem::offset_of!(crate::state::CpuState, flags)
}

fn mem() -> MemFlagsData {
    MemFlagsData::trusted()
}

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
            _ => return None,
        })
    }

    pub(super) fn flag_op(self) -> FlagOp {
        match self {
            Alu::Add => FlagOp::Add,
            Alu::Sub | Alu::Cmp => FlagOp::Sub,
            _ => FlagOp::Logic,
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
    if insn.op_count() == 1 {
        let size = Exec::op_size(insn, 0);
        let inc = match insn.mnemonic() {
            Mnemonic::Inc => true,
            Mnemonic::Dec => false,
            _ => return None,
        };
        let ok = insn.op0_kind() == OpKind::Register && op.r0 < 16 && matches!(size, 1 | 2 | 4 | 8);
        return ok.then_some((Inline::IncDec(inc), size));
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
    let cpu = cx.cpu;
    // The interpreter records flags unless the block's liveness pass gave
    // the op its flag-less handler.
    let record = std::ptr::fn_addr_eq(op.h, op.hf);
    // INC/DEC keep CF: from the known flags, or the lazy flags in memory.
    let kept_cf = match (&shape, record) {
        (Inline::IncDec(_), true) => {
            // Condition code 2 ("below") is CF.
            let c = cx.cond(b, 2);
            Some(b.ins().uextend(I64, c))
        }
        _ => None,
    };
    let m = size_mask(size);
    let get = |b: &mut FunctionBuilder<'_>, r: u8| {
        let v = b.ins().load(I64, mem(), cpu, gpr_off(r));
        if size < 8 {
            b.ins().band_imm_u(v, m as i64)
        } else {
            v
        }
    };
    let set = |b: &mut FunctionBuilder<'_>, r: u8, v: Value| set_gpr(b, cpu, r, size, v);
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
                let base = b.ins().load(I64, mem(), cpu, gpr_off(op.base));
                a = b.ins().iadd(a, base);
            }
            if op.index != NOREG {
                let idx = b.ins().load(I64, mem(), cpu, gpr_off(op.index));
                let idx = b.ins().ishl_imm_u(idx, op.scale as i64);
                a = b.ins().iadd(a, idx);
            }
            if op.amask != u64::MAX {
                a = b.ins().band_imm_u(a, op.amask as i64);
            }
            set(b, op.r0, a);
        }
        Inline::IncDec(inc) => {
            // fast::unary: a +/- 1 masked; record(Inc/Dec, a, 1, r, CF).
            let a = get(b, op.r0);
            let r = if inc {
                b.ins().iadd_imm_s(a, 1)
            } else {
                b.ins().iadd_imm_s(a, -1)
            };
            let r = if size < 8 {
                b.ins().band_imm_u(r, m as i64)
            } else {
                r
            };
            let one = b.ins().iconst(I64, 1);
            let kind = if inc { FlagOp::Inc } else { FlagOp::Dec };
            let k = Known {
                kind,
                size,
                a,
                b: one,
                r,
                cf: kept_cf,
            };
            if record {
                record_flags(b, cpu, &k);
            }
            set(b, op.r0, r);
            cx.known.set(Some(k));
        }
        Inline::AluRR(alu) | Inline::AluRI(alu) => {
            let a = get(b, op.r0);
            let bv = match shape {
                Inline::AluRR(_) => get(b, op.r1),
                _ => b.ins().iconst(I64, op.imm as i64),
            };
            let r = match alu {
                Alu::Add => b.ins().iadd(a, bv),
                Alu::Sub | Alu::Cmp => b.ins().isub(a, bv),
                Alu::And | Alu::Test => b.ins().band(a, bv),
                Alu::Or => b.ins().bor(a, bv),
                Alu::Xor => b.ins().bxor(a, bv),
            };
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
                cf: None,
            };
            if record {
                record_flags(b, cpu, &k);
            }
            cx.known.set(Some(k));
            if alu.writes() {
                set(b, op.r0, r);
            }
        }
    }
    true
}

/// `Exec::rset` of GPR `r` (< 16) for `size` bytes: 8 stores the value,
/// 4 its low half zero-extended, 1 and 2 merge it into the register's
/// low byte or word.
pub(super) fn set_gpr(b: &mut FunctionBuilder<'_>, cpu: Value, r: u8, size: u32, v: Value) {
    let m = size_mask(size);
    let v = match size {
        8 => v,
        4 => b.ins().band_imm_u(v, m as i64),
        _ => {
            let old = b.ins().load(I64, mem(), cpu, gpr_off(r));
            let keep = b.ins().band_imm_u(old, !m as i64);
            let low = b.ins().band_imm_u(v, m as i64);
            b.ins().bor(keep, low)
        }
    };
    b.ins().store(mem(), v, cpu, gpr_off(r));
}

/// `LazyFlags::record(kind, size, a, b, res, aux)` in IR (aux: the kept
/// carry of INC/DEC, else 0).
pub(super) fn record_flags(b: &mut FunctionBuilder<'_>, cpu: Value, k: &Known) {
    let (fop, mask, a, bv, r, aux) = (k.kind, size_mask(k.size), k.a, k.b, k.r, k.cf);
    let l = LazyFlags::LAYOUT;
    let base = flags_off();
    let off = |f: usize| (base + f) as i32;
    let k = b.ins().iconst(I8, fop as u8 as i64);
    b.ins().store(mem(), k, cpu, off(l.op));
    let mv = b.ins().iconst(I64, mask as i64);
    b.ins().store(mem(), mv, cpu, off(l.mask));
    b.ins().store(mem(), a, cpu, off(l.a));
    b.ins().store(mem(), bv, cpu, off(l.b));
    b.ins().store(mem(), r, cpu, off(l.res));
    let aux = match aux {
        Some(v) => v,
        None => b.ins().iconst(I64, 0),
    };
    b.ins().store(mem(), aux, cpu, off(l.aux));
}
