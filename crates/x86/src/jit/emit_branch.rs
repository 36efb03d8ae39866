//! Inline branches and the flag consumers that follow an inline flag
//! producer: the fused CMP/TEST + Jcc (as `fast::cmp_jcc`), JMP rel and
//! Jcc rel in 64-bit code.
//!
//! A Jcc (or SETcc, CMOVcc, the carry INC/DEC keep) whose flags were set
//! by an inline op earlier in the same block with nothing in between that
//! may change them ([`Known`]) computes its condition from that op's
//! operands and result, as the fused handler and `LazyFlags` do;
//! otherwise it reads the lazy flags in memory (which the producer
//! recorded, since they were live: `Cx::cond` stores the pending record
//! first) through `Cx::cond`'s call.

use cranelift_codegen::ir::{
    condcodes::IntCC, types::I64, types::I8, InstBuilder, MemFlagsData, Value,
};
use cranelift_frontend::FunctionBuilder;
use iced_x86::{Code, CodeSize, Mnemonic, OpKind};

use super::compile::{Branch, Cx};
use crate::exec::{Exec, Op};
use crate::flags::{size_mask, FlagOp};
use crate::Cpu;

/// The flags an inline op just produced, as IR values (operands and
/// result masked to the size, as `LazyFlags::record` receives them).
#[derive(Clone, Copy)]
pub(super) struct Known {
    pub kind: FlagOp,
    pub size: u32,
    pub a: Value,
    pub b: Value,
    pub r: Value,
    /// The record's `aux`, I64 0/1: the carry INC/DEC kept, the carry
    /// ADC/SBB took in.
    pub cf: Option<Value>,
}

pub(super) fn rip_off() -> i32 {
    (std::mem::offset_of!(Cpu, state) + std::mem::offset_of!(crate::state::CpuState, rip)) as i32
}

/// Condition code `cc` (0..15, the Jcc encoding order) over known flags,
/// as an I8 0/1; None when it cannot be computed here.
pub(super) fn cond(b: &mut FunctionBuilder<'_>, k: Known, cc: u8) -> Option<Value> {
    let sign = 1u64 << (k.size * 8 - 1);
    let sub = matches!(k.kind, FlagOp::Sub | FlagOp::Sbb);
    let logic = k.kind == FlagOp::Logic;
    let add = matches!(k.kind, FlagOp::Add | FlagOp::Adc);
    let inc = k.kind == FlagOp::Inc;
    let dec = k.kind == FlagOp::Dec;
    // ADC/SBB: the carry in (`aux`) decides CF when the operands leave
    // it open.
    let carry_in = match k.kind {
        FlagOp::Adc | FlagOp::Sbb => Some(k.cf?),
        _ => None,
    };
    if !(sub || logic || add || inc || dec) {
        return None;
    }
    if (inc || dec) && matches!(cc >> 1, 1 | 3) && k.cf.is_none() {
        return None;
    }
    let zero = |b: &mut FunctionBuilder<'_>| b.ins().icmp_imm_u(IntCC::Equal, k.r, 0);
    let sf = |b: &mut FunctionBuilder<'_>| {
        let s = b.ins().band_imm_u(k.r, sign as i64);
        b.ins().icmp_imm_u(IntCC::NotEqual, s, 0)
    };
    // LazyFlags::of: Sub (a^b)&(a^r); Add (a^r)&(b^r); Logic 0;
    // INC r = top; DEC r = top - 1.
    let of = |b: &mut FunctionBuilder<'_>| {
        if logic {
            return b.ins().iconst(I8, 0);
        }
        if inc {
            return b.ins().icmp_imm_u(IntCC::Equal, k.r, sign as i64);
        }
        if dec {
            return b.ins().icmp_imm_u(IntCC::Equal, k.r, (sign - 1) as i64);
        }
        let x = if sub {
            let ab = b.ins().bxor(k.a, k.b);
            let ar = b.ins().bxor(k.a, k.r);
            b.ins().band(ab, ar)
        } else {
            let ar = b.ins().bxor(k.a, k.r);
            let br = b.ins().bxor(k.b, k.r);
            b.ins().band(ar, br)
        };
        let s = b.ins().band_imm_u(x, sign as i64);
        b.ins().icmp_imm_u(IntCC::NotEqual, s, 0)
    };
    // LazyFlags::cf: Sub a<b; Add r<a; Logic 0; INC/DEC the kept carry;
    // with a carry in, SBB a<=b and ADC r<=a.
    let cf = |b: &mut FunctionBuilder<'_>| {
        if let (true, Some(c)) = (inc || dec, k.cf) {
            return b.ins().icmp_imm_u(IntCC::NotEqual, c, 0);
        }
        let (x, y) = if sub { (k.a, k.b) } else { (k.r, k.a) };
        if logic {
            b.ins().iconst(I8, 0)
        } else if let Some(c) = carry_in {
            let below = b.ins().icmp(IntCC::UnsignedLessThan, x, y);
            let equal = b.ins().icmp(IntCC::Equal, x, y);
            let c = b.ins().ireduce(I8, c);
            let equal = b.ins().band(equal, c);
            b.ins().bor(below, equal)
        } else {
            b.ins().icmp(IntCC::UnsignedLessThan, x, y)
        }
    };
    let t = match cc >> 1 {
        0 => of(b),
        1 => cf(b),
        2 => zero(b),
        3 => {
            let c = cf(b);
            let z = zero(b);
            b.ins().bor(c, z)
        }
        4 => sf(b),
        5 => {
            let low = b.ins().band_imm_u(k.r, 0xff);
            let n = b.ins().popcnt(low);
            let odd = b.ins().band_imm_u(n, 1);
            b.ins().icmp_imm_u(IntCC::Equal, odd, 0)
        }
        6 => {
            let s = sf(b);
            let o = of(b);
            b.ins().bxor(s, o)
        }
        _ => {
            let s = sf(b);
            let o = of(b);
            let l = b.ins().bxor(s, o);
            let z = zero(b);
            b.ins().bor(l, z)
        }
    };
    Some(if cc & 1 != 0 {
        b.ins().bxor_imm_u(t, 1)
    } else {
        t
    })
}

/// Where the branch sends RIP: `yes` when `taken` (always when None),
/// else `no`. A branch ends its block: the block's end stores RIP
/// ([`store_rip`], or a constant on each way out of a region member).
fn set_rip(cx: &Cx, taken: Option<Value>, yes: u64, no: u64) {
    cx.branch.set(Some(Branch { taken, yes, no }));
}

/// Stores the RIP an inline branch chose.
pub(super) fn store_rip(b: &mut FunctionBuilder<'_>, cx: &Cx, br: &Branch) {
    let y = b.ins().iconst(I64, br.yes as i64);
    let v = match br.taken {
        Some(t) => {
            let n = b.ins().iconst(I64, br.no as i64);
            b.ins().select(t, y, n)
        }
        None => y,
    };
    let cpu = cx.cpu(b);
    b.ins().store(MemFlagsData::trusted(), v, cpu, rip_off());
}

/// Stores `rip` into the RIP of the CPU at `cpu`.
pub(super) fn store_rip_const(b: &mut FunctionBuilder<'_>, cpu: Value, rip: u64) {
    let v = b.ins().iconst(I64, rip as i64);
    b.ins().store(MemFlagsData::trusted(), v, cpu, rip_off());
}

/// Emits a branch inline; false to call its handler.
pub(super) fn inline(b: &mut FunctionBuilder<'_>, cx: &Cx, op: &Op) -> bool {
    let insn = &op.insn;
    if insn.code_size() != CodeSize::Code64 || insn.has_lock_prefix() {
        return false;
    }
    if op.end == op.idx + 2 {
        return fused_cmp_jcc(b, cx, op);
    }
    if matches!(insn.code(), Code::Jmp_rel8_64 | Code::Jmp_rel32_64)
        && crate::mem::canonical(op.imm)
    {
        set_rip(cx, None, op.imm, op.imm);
        return true;
    }
    if insn.is_jcc_short_or_near() && crate::mem::canonical(op.imm) {
        let cc = insn.condition_code() as u8 - 1;
        let t = cx.cond(b, cc);
        set_rip(cx, Some(t), op.imm, op.next);
        return true;
    }
    false
}

/// CMP/TEST reg, reg|imm fused with the Jcc after it (`fast::cmp_jcc`):
/// the Jcc's target is in `disp`, the address after it in `amask`, its
/// condition code in `scale`.
fn fused_cmp_jcc(b: &mut FunctionBuilder<'_>, cx: &Cx, op: &Op) -> bool {
    let insn = &op.insn;
    let cmp = match insn.mnemonic() {
        Mnemonic::Cmp => true,
        Mnemonic::Test => false,
        _ => return false,
    };
    let size = Exec::op_size(insn, 0);
    if !matches!(size, 1 | 2 | 4 | 8) || op.r0 >= 16 || insn.op0_kind() != OpKind::Register {
        return false;
    }
    let ri = match insn.op1_kind() {
        OpKind::Register if op.r1 < 16 => false,
        OpKind::Register | OpKind::Memory => return false,
        _ => true,
    };
    let m = size_mask(size);
    let get = |b: &mut FunctionBuilder<'_>, r: u8| cx.gpr_sized(b, r, size);
    let a = get(b, op.r0);
    let bv = if ri {
        b.ins().iconst(I64, op.imm as i64)
    } else {
        get(b, op.r1)
    };
    let r = if cmp {
        let d = b.ins().isub(a, bv);
        if size < 8 {
            b.ins().band_imm_u(d, m as i64)
        } else {
            d
        }
    } else {
        b.ins().band(a, bv)
    };
    let kind = if cmp { FlagOp::Sub } else { FlagOp::Logic };
    let k = Known {
        kind,
        size,
        a,
        b: bv,
        r,
        cf: None,
    };
    cx.set_flags(k);
    cx.known.set(Some(k));
    let Some(t) = cond(b, k, op.scale) else {
        return false;
    };
    set_rip(cx, Some(t), op.disp, op.amask);
    true
}
