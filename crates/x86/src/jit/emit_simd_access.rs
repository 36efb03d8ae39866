//! Operand access of the inline SIMD forms (`emit_simd`): the vector
//! registers in `Cpu`, the #UD/#NM guard, memory operands through the
//! inline TLB lookup, and the destination write of each encoding.

use std::mem::offset_of;

use cranelift_codegen::ir::{types::I64, Block, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

use super::emit_mem::{cpu_mem, guest_mem, linear, tlb};
use super::emit_simd::{Form, Src};
use crate::exec::Op;
use crate::state::{cr0, cr4, xcr0, CpuState, FpuState};
use crate::Cpu;

/// Byte offset of a `CpuState` field in `Cpu`.
pub(super) fn state_off(f: usize) -> i32 {
    (offset_of!(Cpu, state) + f) as i32
}

/// Byte offset of bits 127:0 of vector register `i`.
pub(super) fn lo_off(i: usize) -> i32 {
    state_off(offset_of!(CpuState, fpu) + offset_of!(FpuState, xmm) + 16 * i)
}

/// Byte offset of bits 255:128 of vector register `i`.
pub(super) fn hi_off(i: usize) -> i32 {
    state_off(offset_of!(CpuState, fpu) + offset_of!(FpuState, ymm_hi) + 16 * i)
}

/// Vector registers in `Cpu`: never trapping, and not claimed aligned
/// (nothing for Cranelift to rely on when it folds a load into an SSE
/// instruction).
fn vec_mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Branches to `slow` when the form would raise #UD or #NM (the checks
/// of `Exec::fpu_check` / `Exec::vex`); continues in a new block.
pub(super) fn guard(b: &mut FunctionBuilder<'_>, cpu: Value, f: &Form, slow: Block) {
    let reg =
        |b: &mut FunctionBuilder<'_>, off: usize| b.ins().load(I64, cpu_mem(), cpu, state_off(off));
    // Nonzero when bits `m` of `v` are not all set.
    let missing = |b: &mut FunctionBuilder<'_>, v: Value, m: u64| {
        let x = b.ins().band_imm_u(v, m as i64);
        b.ins().bxor_imm_u(x, m as i64)
    };
    let c0 = reg(b, offset_of!(CpuState, cr0));
    let c4 = reg(b, offset_of!(CpuState, cr4));
    let mut bad = if f.vex {
        let ts = b.ins().band_imm_u(c0, cr0::TS as i64);
        let os = missing(b, c4, cr4::OSXSAVE);
        let xc = reg(b, offset_of!(CpuState, xcr0));
        let xc = missing(b, xc, xcr0::SSE | xcr0::AVX);
        let x = b.ins().bor(ts, os);
        b.ins().bor(x, xc)
    } else {
        let emts = b.ins().band_imm_u(c0, (cr0::EM | cr0::TS) as i64);
        let fx = missing(b, c4, cr4::OSFXSR);
        b.ins().bor(emts, fx)
    };
    for &off in &f.feats {
        let have = b.ins().uload8(I64, cpu_mem(), cpu, off);
        let no = b.ins().bxor_imm_u(have, 1);
        bad = b.ins().bor(bad, no);
    }
    branch_unless(b, bad, slow);
}

/// Continues in a new block when `bad` is zero, else goes to `slow`.
fn branch_unless(b: &mut FunctionBuilder<'_>, bad: Value, slow: Block) {
    let ok = b.create_block();
    b.ins().brif(bad, slow, &[], ok, &[]);
    b.switch_to_block(ok);
    b.seal_block(ok);
}

/// The host address of the op's `size`-byte memory operand, through the
/// inline TLB lookup; `align`: #GP (the handler) unless aligned to `size`.
pub(super) fn host(
    b: &mut FunctionBuilder<'_>,
    cpu: Value,
    op: &Op,
    size: u32,
    write: bool,
    align: bool,
    slow: Block,
) -> Value {
    let lin = linear(b, cpu, op);
    if align {
        let low = b.ins().band_imm_u(lin, (size - 1) as i64);
        branch_unless(b, low, slow);
    }
    tlb(b, cpu, lin, size, write, slow)
}

/// A vector register as lanes of type `ty`: bits 127:0, and 255:128 when
/// `wide`.
pub(super) fn get(
    b: &mut FunctionBuilder<'_>,
    cpu: Value,
    i: usize,
    wide: bool,
    ty: Type,
) -> [Option<Value>; 2] {
    let lo = b.ins().load(ty, vec_mem(), cpu, lo_off(i));
    let hi = wide.then(|| b.ins().load(ty, vec_mem(), cpu, hi_off(i)));
    [Some(lo), hi]
}

/// Writes destination register `d`: bits 127:0, then 255:128 for a VEX
/// form (zero for VEX.128); a legacy form keeps them.
pub(super) fn put(
    b: &mut FunctionBuilder<'_>,
    cpu: Value,
    d: usize,
    v: [Option<Value>; 2],
    vex: bool,
) {
    if let Some(lo) = v[0] {
        b.ins().store(vec_mem(), lo, cpu, lo_off(d));
    }
    if !vex {
        return;
    }
    match v[1] {
        Some(hi) => {
            b.ins().store(vec_mem(), hi, cpu, hi_off(d));
        }
        None => {
            let z = b.ins().iconst(I64, 0);
            b.ins().store(cpu_mem(), z, cpu, hi_off(d));
            b.ins().store(cpu_mem(), z, cpu, hi_off(d) + 8);
        }
    }
}

/// The op's operand `s` as lanes of `ty` (memory: `16 << wide` bytes).
#[allow(clippy::too_many_arguments)]
pub(super) fn operand(
    b: &mut FunctionBuilder<'_>,
    cpu: Value,
    op: &Op,
    s: Src,
    f: &Form,
    ty: Type,
    align: bool,
    slow: Block,
) -> [Option<Value>; 2] {
    match s {
        Src::Reg(i) => get(b, cpu, i, f.wide, ty),
        Src::Mem => {
            let p = host(b, cpu, op, 16 << f.wide as u32, false, align, slow);
            let lo = b.ins().load(ty, guest_mem(), p, 0);
            let hi = f.wide.then(|| b.ins().load(ty, guest_mem(), p, 16));
            [Some(lo), hi]
        }
    }
}
