//! Inline forms of phase 2, in 64-bit code: MOVZX/MOVSX/MOVSXD (register
//! or memory source), SETcc of a register and CMOVcc between registers
//! over flags known in the block, two- and three-operand IMUL of
//! registers, near CALL rel32, CALL and JMP through a register, JMP
//! through memory, and RET. Each does what its handler does
//! (`exec/fast.rs`: `movzx_*`, `movsx_*`, `setcc_r`, `cmov_rr`, `imul_rr`,
//! `imul_rri`, `call64`, `call_r64`, `jmp_r64`, `ret64`; `control::jmp`);
//! memory goes through the inlined TLB lookup of `emit_mem`, and a miss
//! (or a branch to a non-canonical address) runs the handler, which
//! walks, faults or raises #GP with RIP and RSP untouched.

use cranelift_codegen::ir::{
    condcodes::IntCC, types::I16, types::I32, types::I64, types::I8, InstBuilder, Value,
};
use cranelift_frontend::FunctionBuilder;
use iced_x86::{Code, CodeSize, Mnemonic, OpKind};

use super::compile::Cx;
use super::emit_branch::Known;
use super::emit_mem::{cpu_mem, guest_mem, linear_cached, tlb};
use super::regs::Snap;
use crate::exec::op::NOREG;
use crate::exec::{Exec, Op};
use crate::flags::FlagOp;
use crate::Cpu;

fn rip_off() -> i32 {
    (std::mem::offset_of!(Cpu, state) + std::mem::offset_of!(crate::state::CpuState, rip)) as i32
}

enum Shape {
    /// MOVZX/MOVSX of `src` bytes into a 4- or 8-byte register.
    Ext {
        signed: bool,
        src: u32,
        mem: bool,
    },
    Setcc(u8),
    Cmov(u8),
    /// IMUL r, r (false) or IMUL r, r, imm (true).
    Imul(bool),
    Call,
    /// CALL r64.
    CallReg,
    /// JMP r64 (false) or JMP m64 (true).
    Jmp(bool),
    Ret,
}

fn classify(op: &Op) -> Option<(Shape, u32)> {
    let insn = &op.insn;
    if op.end != op.idx + 1 || insn.code_size() != CodeSize::Code64 || insn.has_lock_prefix() {
        return None;
    }
    let gpr = |r: u8| r < 16;
    match insn.code() {
        Code::Call_rel32_64 if crate::mem::canonical(op.imm) => return Some((Shape::Call, 8)),
        Code::Retnq => return Some((Shape::Ret, 8)),
        Code::Call_rm64 if insn.op0_kind() == OpKind::Register && gpr(op.r0) => {
            return Some((Shape::CallReg, 8))
        }
        Code::Jmp_rm64 => {
            return match insn.op0_kind() {
                OpKind::Register if gpr(op.r0) => Some((Shape::Jmp(false), 8)),
                OpKind::Memory
                    if (op.base == NOREG || gpr(op.base))
                        && (op.index == NOREG || gpr(op.index)) =>
                {
                    Some((Shape::Jmp(true), 8))
                }
                _ => None,
            }
        }
        _ => {}
    }
    // Everything below has a specialised handler when it does not set RIP.
    if op.sets_rip || insn.op0_kind() != OpKind::Register || !gpr(op.r0) {
        return None;
    }
    let m = insn.mnemonic();
    let size = Exec::op_size(insn, 0);
    match m {
        Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd => {
            let src = Exec::op_size(insn, 1);
            if (size != 4 && size != 8) || src >= size {
                return None;
            }
            let mem = match insn.op1_kind() {
                OpKind::Register if gpr(op.r1) => false,
                OpKind::Memory
                    if (op.base == NOREG || gpr(op.base))
                        && (op.index == NOREG || gpr(op.index)) =>
                {
                    true
                }
                _ => return None,
            };
            let signed = m != Mnemonic::Movzx;
            Some((Shape::Ext { signed, src, mem }, size))
        }
        _ if insn.op_count() == 1 && size == 1 && is_setcc(m) => {
            Some((Shape::Setcc(insn.condition_code() as u8 - 1), 1))
        }
        _ if is_cmov(m)
            && (size == 4 || size == 8)
            && insn.op1_kind() == OpKind::Register
            && gpr(op.r1) =>
        {
            Some((Shape::Cmov(insn.condition_code() as u8 - 1), size))
        }
        Mnemonic::Imul
            if (size == 4 || size == 8)
                && insn.op_count() >= 2
                && insn.op1_kind() == OpKind::Register
                && gpr(op.r1) =>
        {
            match insn.op_count() {
                2 => Some((Shape::Imul(false), size)),
                3 if insn.op2_kind() != OpKind::Register && insn.op2_kind() != OpKind::Memory => {
                    Some((Shape::Imul(true), size))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn is_setcc(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Seto | Setno
            | Setb
            | Setae
            | Sete
            | Setne
            | Setbe
            | Seta
            | Sets
            | Setns
            | Setp
            | Setnp
            | Setl
            | Setge
            | Setle
            | Setg
    )
}

fn is_cmov(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Cmovo
            | Cmovno
            | Cmovb
            | Cmovae
            | Cmove
            | Cmovne
            | Cmovbe
            | Cmova
            | Cmovs
            | Cmovns
            | Cmovp
            | Cmovnp
            | Cmovl
            | Cmovge
            | Cmovle
            | Cmovg
    )
}

/// Emits `op` inline; false when it is not one of these forms (or its
/// flags are not known here): the caller emits a handler call.
pub(super) fn inline(b: &mut FunctionBuilder<'_>, cx: &Cx, op: &Op, i: usize) -> bool {
    let Some((shape, size)) = classify(op) else {
        return false;
    };
    let cpu = cx.cpu(b);
    let mask32 = |b: &mut FunctionBuilder<'_>, v: Value| {
        if size == 4 {
            b.ins().band_imm_u(v, 0xffff_ffff)
        } else {
            v
        }
    };
    match shape {
        Shape::Ext {
            mem: false,
            signed,
            src,
        } => {
            let v = cx.gpr(b, op.r1);
            let v = extend(b, v, src, signed);
            let v = mask32(b, v);
            cx.set_gpr(b, op.r0, 8, v);
        }
        Shape::Setcc(cc) => {
            let t = cx.cond(b, cc);
            let t = b.ins().uextend(I64, t);
            cx.set_gpr(b, op.r0, 1, t);
        }
        Shape::Cmov(cc) => {
            let t = cx.cond(b, cc);
            let src = cx.gpr(b, op.r1);
            let dst = cx.gpr(b, op.r0);
            let v = b.ins().select(t, src, dst);
            let v = mask32(b, v);
            cx.set_gpr(b, op.r0, 8, v);
        }
        Shape::Imul(imm) => imul(b, cx, op, size, imm),
        Shape::Ext {
            mem: true,
            signed,
            src,
        } => {
            with_miss(b, cx, i, &[op.r0], |b, miss| {
                let lin = linear_cached(b, cx, op);
                let before = cx.snapshot();
                let p = tlb(b, cpu, lin, src, false, miss);
                let v = match (src, signed) {
                    (1, false) => b.ins().uload8(I64, guest_mem(), p, 0),
                    (1, true) => b.ins().sload8(I64, guest_mem(), p, 0),
                    (2, false) => b.ins().uload16(I64, guest_mem(), p, 0),
                    (2, true) => b.ins().sload16(I64, guest_mem(), p, 0),
                    (_, false) => b.ins().uload32(guest_mem(), p, 0),
                    (_, true) => b.ins().sload32(guest_mem(), p, 0),
                };
                let v = mask32(b, v);
                cx.set_gpr(b, op.r0, 8, v);
                before
            });
        }
        Shape::Call => with_miss(b, cx, i, &[4], |b, miss| {
            let sp = cx.gpr(b, 4);
            let sp = b.ins().iadd_imm_s(sp, -8);
            let before = cx.snapshot();
            let p = tlb(b, cpu, sp, 8, true, miss);
            let ret = b.ins().iconst(I64, op.next as i64);
            b.ins().store(guest_mem(), ret, p, 0);
            cx.set_gpr(b, 4, 8, sp);
            let t = b.ins().iconst(I64, op.imm as i64);
            b.ins().store(cpu_mem(), t, cpu, rip_off());
            before
        }),
        Shape::CallReg => with_miss(b, cx, i, &[4], |b, miss| {
            let t = cx.gpr(b, op.r0);
            let sp = cx.gpr(b, 4);
            let sp = b.ins().iadd_imm_s(sp, -8);
            let before = cx.snapshot();
            // call_r64: #GP for a non-canonical target before the push.
            unless_canonical(b, t, miss);
            let p = tlb(b, cpu, sp, 8, true, miss);
            let ret = b.ins().iconst(I64, op.next as i64);
            b.ins().store(guest_mem(), ret, p, 0);
            cx.set_gpr(b, 4, 8, sp);
            b.ins().store(cpu_mem(), t, cpu, rip_off());
            before
        }),
        Shape::Jmp(mem) => with_miss(b, cx, i, &[], |b, miss| {
            let (t, before) = if mem {
                let lin = linear_cached(b, cx, op);
                let before = cx.snapshot();
                let p = tlb(b, cpu, lin, 8, false, miss);
                (b.ins().load(I64, guest_mem(), p, 0), before)
            } else {
                let t = cx.gpr(b, op.r0);
                (t, cx.snapshot())
            };
            unless_canonical(b, t, miss);
            b.ins().store(cpu_mem(), t, cpu, rip_off());
            before
        }),
        Shape::Ret => with_miss(b, cx, i, &[4], |b, miss| {
            let sp = cx.gpr(b, 4);
            let before = cx.snapshot();
            let p = tlb(b, cpu, sp, 8, false, miss);
            let t = b.ins().load(I64, guest_mem(), p, 0);
            unless_canonical(b, t, miss);
            let sp = b.ins().iadd_imm_s(sp, 8);
            cx.set_gpr(b, 4, 8, sp);
            b.ins().store(cpu_mem(), t, cpu, rip_off());
            before
        }),
    }
    true
}

/// Goes on in a new block when `t` is a canonical address, else to
/// `miss` (the handler raises #GP).
fn unless_canonical(b: &mut FunctionBuilder<'_>, t: Value, miss: cranelift_codegen::ir::Block) {
    let hi = b.ins().ishl_imm_u(t, 16);
    let back = b.ins().sshr_imm_u(hi, 16);
    let ok = b.ins().icmp(IntCC::Equal, back, t);
    let go = b.create_block();
    b.ins().brif(ok, go, &[], miss, &[]);
    b.switch_to_block(go);
    b.seal_block(go);
}

/// `v` (a register's 64 bits) cut to `src` bytes, zero- or sign-extended
/// back to 64 bits.
fn extend(b: &mut FunctionBuilder<'_>, v: Value, src: u32, signed: bool) -> Value {
    let ty = match src {
        1 => I8,
        2 => I16,
        _ => I32,
    };
    let narrow = b.ins().ireduce(ty, v);
    if signed {
        b.ins().sextend(I64, narrow)
    } else {
        b.ins().uextend(I64, narrow)
    }
}

/// Emits a fast path built by `fast` (which branches to the block it is
/// given on a TLB miss, and returns the cache state where it branches)
/// and, cold, the op's handler for the miss (which may write `writes`).
fn with_miss(
    b: &mut FunctionBuilder<'_>,
    cx: &Cx,
    i: usize,
    writes: &[u8],
    fast: impl FnOnce(&mut FunctionBuilder<'_>, cranelift_codegen::ir::Block) -> Snap,
) {
    let miss = b.create_block();
    let done = b.create_block();
    b.set_cold_block(miss);
    let before = fast(b, miss);
    b.ins().jump(done, &[]);
    b.switch_to_block(miss);
    b.seal_block(miss);
    cx.slow_handler(b, i, &before, writes);
    b.ins().jump(done, &[]);
    b.switch_to_block(done);
    b.seal_block(done);
}

/// `fast::imul2`: the product truncated to the size, and OF = CF = the
/// signed overflow, recorded as `Szp` with aux 3 (both set) or 0.
fn imul(b: &mut FunctionBuilder<'_>, cx: &Cx, op: &Op, size: u32, imm: bool) {
    let get = |b: &mut FunctionBuilder<'_>, r: u8| cx.gpr_sized(b, r, size);
    // imul_rr: r0 * r1; imul_rri: r1 * imm.
    let (a, bv) = if imm {
        let a = get(b, op.r1);
        (a, b.ins().iconst(I64, op.imm as i64))
    } else {
        let a = get(b, op.r0);
        (a, get(b, op.r1))
    };
    let (r, ov) = if size == 8 {
        let r = b.ins().imul(a, bv);
        let hi = b.ins().smulhi(a, bv);
        let sign = b.ins().sshr_imm_u(r, 63);
        (r, b.ins().icmp(IntCC::NotEqual, hi, sign))
    } else {
        let sa = extend(b, a, 4, true);
        let sb = extend(b, bv, 4, true);
        let full = b.ins().imul(sa, sb);
        let r = b.ins().band_imm_u(full, 0xffff_ffff);
        let back = extend(b, full, 4, true);
        (r, b.ins().icmp(IntCC::NotEqual, full, back))
    };
    if std::ptr::fn_addr_eq(op.h, op.hf) {
        let ov = b.ins().uextend(I64, ov);
        let aux = b.ins().imul_imm_u(ov, 3);
        let k = Known {
            kind: FlagOp::Szp,
            size,
            a,
            b: bv,
            r,
            cf: Some(aux),
        };
        cx.set_flags(k);
    }
    cx.set_gpr(b, op.r0, 8, r);
    // `cond` does not read Szp records: later consumers use the handler.
    cx.known.set(None);
}
