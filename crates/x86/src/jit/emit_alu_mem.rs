//! Inline ALU forms with a memory operand in 64-bit code (`fast::alu_rm`,
//! `alu_mr`, `alu_mi`): ADD/SUB/AND/OR/XOR/CMP/TEST between memory and a
//! register or an immediate, of 1, 2, 4 or 8 bytes (a register
//! destination of 4 or 8), and the NOP family (`fast::nop`: nothing to
//! emit). The access goes through the inlined TLB lookup (the write tag
//! for a read-modify-write, as `Exec::mrmw`); a miss runs the handler.
//! Flags are recorded and made known as the register forms do.

use cranelift_codegen::ir::{types::I64, BlockArg, InstBuilder};
use cranelift_frontend::FunctionBuilder;
use iced_x86::{CodeSize, Mnemonic, OpKind};

use super::compile::Cx;
use super::emit::Alu;
use super::emit_branch::Known;
use super::emit_mem::{cpu_mem, linear_cached, load, store, tlb};
use crate::exec::op::NOREG;
use crate::exec::{Exec, Op};
use crate::flags::{size_mask, LazyFlags};

enum Form {
    /// reg op= [mem]
    Rm,
    /// [mem] op= reg
    Mr,
    /// [mem] op= imm
    Mi,
}

fn is_nop(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Nop | Endbr32
            | Endbr64
            | Lfence
            | Sfence
            | Prefetch
            | Prefetchnta
            | Prefetcht0
            | Prefetcht1
            | Prefetcht2
            | Prefetchw
    )
}

fn classify(op: &Op) -> Option<(Alu, Form, u32)> {
    let insn = &op.insn;
    if op.sets_rip
        || op.end != op.idx + 1
        || insn.code_size() != CodeSize::Code64
        || insn.has_lock_prefix()
        || insn.op_count() != 2
    {
        return None;
    }
    let alu = Alu::of(insn.mnemonic())?;
    if alu.carries() {
        return None;
    }
    let mem_ok = (op.base == NOREG || op.base < 16) && (op.index == NOREG || op.index < 16);
    if !mem_ok {
        return None;
    }
    let size = Exec::op_size(insn, 0);
    if !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    let form = match (insn.op0_kind(), insn.op1_kind()) {
        (OpKind::Register, OpKind::Memory) if op.r0 < 16 && (size >= 4 || !alu.writes()) => {
            Form::Rm
        }
        (OpKind::Memory, OpKind::Register) if op.r1 < 16 => Form::Mr,
        (OpKind::Memory, k) if k != OpKind::Register && k != OpKind::Memory => Form::Mi,
        _ => return None,
    };
    Some((alu, form, size))
}

/// Emits `op` inline; false when it is not one of these forms.
pub(super) fn inline(b: &mut FunctionBuilder<'_>, cx: &Cx, op: &Op, i: usize) -> bool {
    if is_nop(op.insn.mnemonic()) && !op.sets_rip && op.end == op.idx + 1 {
        return true;
    }
    let Some((alu, form, size)) = classify(op) else {
        return false;
    };
    let cpu = cx.cpu(b);
    let m = size_mask(size);
    let record = std::ptr::fn_addr_eq(op.h, op.hf);
    let miss = b.create_block();
    let done = b.create_block();
    for _ in 0..3 {
        b.append_block_param(done, I64);
    }
    b.set_cold_block(miss);
    let reg = |b: &mut FunctionBuilder<'_>, r: u8| cx.gpr_sized(b, r, size);
    // The register or immediate operand first (as the handlers).
    let other = match form {
        Form::Rm => reg(b, op.r0),
        Form::Mr => reg(b, op.r1),
        Form::Mi => b.ins().iconst(I64, op.imm as i64),
    };
    let rmw = alu.writes() && !matches!(form, Form::Rm);
    let lin = linear_cached(b, cx, op);
    let before = cx.snapshot();
    let p = tlb(b, cpu, lin, size, rmw, miss);
    let mem = load(b, p, size);
    let (a, bv) = match form {
        Form::Rm => (other, mem),
        _ => (mem, other),
    };
    let r = alu.emit(b, a, bv, None);
    let r = if size == 8 {
        r
    } else {
        b.ins().band_imm_u(r, m as i64)
    };
    // The flags record is made at the join (below), from both arms.
    let dst = alu.writes() && matches!(form, Form::Rm);
    if alu.writes() {
        match form {
            // 4 or 8 bytes, `r` masked: the whole register.
            Form::Rm => cx.set_gpr(b, op.r0, 8, r),
            _ => store(b, p, size, r),
        }
    }
    b.ins().jump(
        done,
        &[BlockArg::Value(a), BlockArg::Value(bv), BlockArg::Value(r)],
    );
    b.switch_to_block(miss);
    b.seal_block(miss);
    let writes: &[u8] = if dst { &[op.r0] } else { &[] };
    cx.slow_handler(b, i, &before, writes);
    // The handler recorded the same operands and result in the lazy
    // flags (when they are live: else nothing reads them).
    let l = LazyFlags::LAYOUT;
    let f = flags_off();
    let ma = b.ins().load(I64, cpu_mem(), cpu, (f + l.a) as i32);
    let mb = b.ins().load(I64, cpu_mem(), cpu, (f + l.b) as i32);
    let mr = b.ins().load(I64, cpu_mem(), cpu, (f + l.res) as i32);
    b.ins().jump(
        done,
        &[
            BlockArg::Value(ma),
            BlockArg::Value(mb),
            BlockArg::Value(mr),
        ],
    );
    b.switch_to_block(done);
    b.seal_block(done);
    let ps = b.block_params(done);
    let k = Known {
        kind: alu.flag_op(),
        size,
        a: ps[0],
        b: ps[1],
        r: ps[2],
        cf: None,
    };
    // Flags not recorded (dead): the miss path's loads are stale. Else
    // the record is pending (the miss path's handler stored the same).
    if record {
        cx.set_flags(k);
    }
    cx.known.set(record.then_some(k));
    true
}

fn flags_off() -> usize {
    std::mem::offset_of!(crate::Cpu, state) + std::mem::offset_of!(crate::state::CpuState, flags)
}
