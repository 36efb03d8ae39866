//! Inline SHL/SAL/SHR/SAR of a 32- or 64-bit register by an immediate
//! (`fast::shift_ri`, 64-bit code): the count is a constant of the code,
//! so CF and OF are a few shifts; the record is the handler's (`Szp`,
//! aux = CF | OF << 1). Consumers of these flags read them from memory.
//! ROL/ROR by an immediate only where the block's liveness pass found
//! their CF and OF dead (`fast::rotate_ri` without flags: the hashes and
//! ciphers of a Linux boot rotate, then add or xor): one rotate. All five
//! by CL where their flags are dead (`shift_rc`/`rotate_rc` without
//! flags): one shift or rotate by CL.

use cranelift_codegen::ir::{types::I64, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use iced_x86::{CodeSize, Mnemonic, OpKind};

use super::compile::Cx;
use super::emit_branch::Known;
use crate::exec::{Exec, Op};
use crate::flags::FlagOp;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Shl,
    Shr,
    Sar,
    Rol,
    Ror,
}

/// How many bits an inline form shifts by.
#[derive(Clone, Copy)]
enum Count {
    /// An immediate, masked, not zero.
    Imm(u32),
    /// CL (the form is inline only when its flags are dead).
    Cl,
}

/// A shift or rotate of a 32- or 64-bit register by an immediate, or by
/// CL with dead flags (the rotates by an immediate too: they keep SF ZF
/// AF PF, which a record would have to merge).
fn classify(op: &Op) -> Option<(Kind, u32, Count)> {
    let insn = &op.insn;
    if op.sets_rip
        || op.end != op.idx + 1
        || insn.code_size() != CodeSize::Code64
        || insn.op_count() != 2
        || insn.op0_kind() != OpKind::Register
        || op.r0 >= 16
    {
        return None;
    }
    let size = Exec::op_size(insn, 0);
    if size != 4 && size != 8 {
        return None;
    }
    let by_cl = match insn.op1_kind() {
        OpKind::Immediate8 => false,
        OpKind::Register if insn.op1_register() == iced_x86::Register::CL => true,
        _ => return None,
    };
    let kind = match insn.mnemonic() {
        Mnemonic::Shl | Mnemonic::Sal => Kind::Shl,
        Mnemonic::Shr => Kind::Shr,
        Mnemonic::Sar => Kind::Sar,
        Mnemonic::Rol => Kind::Rol,
        Mnemonic::Ror => Kind::Ror,
        _ => return None,
    };
    let rotate = matches!(kind, Kind::Rol | Kind::Ror);
    if (by_cl || rotate) && records(op) {
        return None;
    }
    if by_cl {
        return Some((kind, size, Count::Cl));
    }
    let count = insn.immediate8() as u32 & if size == 8 { 0x3f } else { 0x1f };
    (count != 0).then_some((kind, size, Count::Imm(count)))
}

/// Whether the interpreter records the op's flags (the liveness pass
/// gives an op whose flags are dead its flag-less handler).
fn records(op: &Op) -> bool {
    std::ptr::fn_addr_eq(op.h, op.hf)
}

/// `fast::shift_rc` / `rotate_rc` without flags: the count is CL masked
/// to 5 (6) bits, and a zero count leaves the value (a 32-bit register
/// still zero-extended), which is what a shift or rotate by 0 gives.
fn by_cl(b: &mut FunctionBuilder<'_>, cx: &Cx, op: &Op, kind: Kind, size: u32) {
    let cl = cx.gpr(b, 1);
    let a = cx.gpr(b, op.r0);
    let (a, n) = if size == 4 {
        (b32(b, a), b32(b, cl))
    } else {
        (a, cl)
    };
    // Cranelift masks the amount to the type's width, as the
    // instruction does.
    let r = match kind {
        Kind::Shl => b.ins().ishl(a, n),
        Kind::Shr => b.ins().ushr(a, n),
        Kind::Sar => b.ins().sshr(a, n),
        Kind::Rol => b.ins().rotl(a, n),
        Kind::Ror => b.ins().rotr(a, n),
    };
    let r = if size == 4 {
        b.ins().uextend(I64, r)
    } else {
        r
    };
    cx.set_gpr(b, op.r0, 8, r);
}

/// Emits `op` inline; false when it is not one of these forms.
pub(super) fn inline(b: &mut FunctionBuilder<'_>, cx: &Cx, op: &Op) -> bool {
    let Some((kind, size, count)) = classify(op) else {
        return false;
    };
    let c = match count {
        Count::Imm(c) => c,
        Count::Cl => {
            by_cl(b, cx, op, kind, size);
            return true;
        }
    };
    let bits = (size * 8) as i64;
    let c = c as i64;
    let mask32 = |b: &mut FunctionBuilder<'_>, v: Value| {
        if size == 4 {
            b.ins().band_imm_u(v, 0xffff_ffff)
        } else {
            v
        }
    };
    let a = cx.gpr_sized(b, op.r0, size);
    // The operand sign-extended to 64 bits (SAR).
    let s = if size == 4 {
        let h = b.ins().ishl_imm_u(a, 32);
        b.ins().sshr_imm_u(h, 32)
    } else {
        a
    };
    let (r, cf, of) = match kind {
        Kind::Rol | Kind::Ror => {
            // No record: the flags stay the earlier producer's, as the
            // flag-less handler leaves them.
            let left = kind == Kind::Rol;
            let r = if size == 4 {
                let v = b32(b, a);
                let r = if left {
                    b.ins().rotl_imm_u(v, c)
                } else {
                    b.ins().rotr_imm_u(v, c)
                };
                b.ins().uextend(I64, r)
            } else if left {
                b.ins().rotl_imm_u(a, c)
            } else {
                b.ins().rotr_imm_u(a, c)
            };
            cx.set_gpr(b, op.r0, 8, r);
            return true;
        }
        Kind::Shl => {
            let r = b.ins().ishl_imm_u(a, c);
            let r = mask32(b, r);
            let cf = b.ins().ushr_imm_u(a, bits - c);
            let cf = b.ins().band_imm_u(cf, 1);
            let top = b.ins().ushr_imm_u(r, bits - 1);
            let of = b.ins().bxor(top, cf);
            (r, cf, Some(of))
        }
        Kind::Shr => {
            let r = b.ins().ushr_imm_u(a, c);
            let cf = b.ins().ushr_imm_u(a, c - 1);
            let cf = b.ins().band_imm_u(cf, 1);
            let of = b.ins().ushr_imm_u(a, bits - 1);
            (r, cf, Some(of))
        }
        Kind::Sar => {
            let r = b.ins().sshr_imm_u(s, c);
            let r = mask32(b, r);
            let cf = b.ins().sshr_imm_u(s, c - 1);
            let cf = b.ins().band_imm_u(cf, 1);
            (r, cf, None)
        }
    };
    if records(op) {
        let aux = match of {
            Some(of) => {
                let o = b.ins().ishl_imm_u(of, 1);
                b.ins().bor(cf, o)
            }
            None => cf,
        };
        let count = b.ins().iconst(I64, c);
        let k = Known {
            kind: FlagOp::Szp,
            size,
            a,
            b: count,
            r,
            cf: Some(aux),
        };
        cx.set_flags(k);
    }
    cx.set_gpr(b, op.r0, 8, r);
    cx.known.set(None);
    true
}

/// The low 32 bits of `v` as an I32 (a 32-bit rotate).
fn b32(b: &mut FunctionBuilder<'_>, v: Value) -> Value {
    b.ins().ireduce(cranelift_codegen::ir::types::I32, v)
}
