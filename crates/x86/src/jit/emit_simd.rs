//! Inline SSE/AVX integer forms (issue 11, points 3 and 5), in 64-bit
//! code: what glibc's string functions run in the busybox shell loop
//! (docs/PERFORMANCE.md, "The JIT: inline SIMD").
//!
//! - whole-register moves: (V)MOVDQA/DQU/APS/UPS/APD/UPD, (V)LDDQU and
//!   the non-temporal stores, register to register, loads and stores;
//! - the packed integer lane operations of `emit_simd_ops` (PCMPEQ*,
//!   PMINUB, POR/PAND/PXOR/PANDN, PADD*/PSUB*...), legacy
//!   `xmm, xmm/m128` and VEX `xmm/ymm, vvvv, xmm/ymm/m`;
//! - (V)PMOVMSKB to a general register, VPBROADCASTB, VZEROUPPER.
//!
//! Semantics are the interpreter's (`exec::sse`, `exec::avx`,
//! `exec::simd`): a legacy form keeps bits 255:128 of its destination, a
//! VEX.128 form zeroes them, a VEX.256 form is two 128-bit halves
//! (`xmm` and `ymm_hi`). Every other case runs the op's handler, through
//! the op's cold path: the #UD/#NM conditions (CR0.EM/TS, CR4.OSFXSR;
//! CR4.OSXSAVE, XCR0, the CPUID feature), a misaligned operand of an
//! aligned form (#GP), an access the inline TLB lookup of `emit_mem`
//! does not hit or that crosses a page (walk, #PF, MMIO). The handler
//! raises the exception with RIP and the retired count exact.

use std::mem::offset_of;

use cranelift_codegen::ir::{
    types::{I64, I64X2, I8, I8X16},
    InstBuilder,
};
use cranelift_frontend::FunctionBuilder;
use iced_x86::{CodeSize, CpuidFeature, EncodingKind, Mnemonic, OpKind, Register};

use super::compile::Cx;
use super::emit_mem::{cpu_mem, guest_mem};
use super::emit_simd_access::{get, guard, hi_off, host, lo_off, operand, put, state_off};
use super::emit_simd_gpr;
use super::emit_simd_ops::Lane;
use crate::exec::op::NOREG;
use crate::exec::Op;
use crate::state::CpuState;
use crate::{Cpu, Features};

/// A vector operand: register `n` or the memory operand.
#[derive(Clone, Copy)]
pub(super) enum Src {
    Reg(usize),
    Mem,
}

/// An operand of the forms that involve general registers: GPR number,
/// XMM register, or the memory operand.
#[derive(Clone, Copy)]
pub(super) enum Side {
    Gpr(u8),
    Vec(usize),
    Mem,
}

enum Shape {
    /// A whole-register move; `align`: the aligned forms (#GP otherwise).
    Mov { dst: Src, src: Src, align: bool },
    /// `d = lane(a, b)`; legacy: `a` is `d`.
    Bin {
        lane: Lane,
        d: usize,
        a: usize,
        b: Src,
    },
    /// GPR `r` = the sign bits of the bytes of register `s`.
    Movmsk { r: u8, s: usize },
    /// VPBROADCASTB: byte 0 of register `s` or an m8 in every byte of `d`.
    Bcast { d: usize, s: Src },
    /// VZEROUPPER (64-bit mode: 16 registers).
    Zeroupper,
    /// (V)MOVD/(V)MOVQ of `size` bytes.
    MovGpr { dst: Side, src: Side, size: u32 },
    /// PCMPISTRI with XMM `a`, `b` (XMM or memory) and imm8.
    Pcmpistri { a: usize, b: Side, imm: u8 },
}

pub(super) struct Form {
    shape: Shape,
    pub vex: bool,
    /// VEX.L = 1: 256-bit operands.
    pub wide: bool,
    /// Byte offsets in `Cpu` of the CPUID features the VEX form needs.
    pub feats: Vec<i32>,
}

/// Vector register number and whether it is a YMM.
fn vreg(r: Register) -> Option<(usize, bool)> {
    if r.is_xmm() {
        let i = r as usize - Register::XMM0 as usize;
        return (i < 16).then_some((i, false));
    }
    if r.is_ymm() {
        let i = r as usize - Register::YMM0 as usize;
        return (i < 16).then_some((i, true));
    }
    None
}

fn classify(op: &Op) -> Option<Form> {
    let insn = &op.insn;
    if op.end != op.idx + 1 || insn.code_size() != CodeSize::Code64 || insn.has_lock_prefix() {
        return None;
    }
    let vex = match insn.encoding() {
        EncodingKind::Legacy => false,
        EncodingKind::VEX => true,
        _ => return None,
    };
    let n = insn.op_count();
    let has_mem = (0..n).any(|k| insn.op_kind(k) == OpKind::Memory);
    let mem_ok = (op.base == NOREG || op.base < 16) && (op.index == NOREG || op.index < 16);
    if has_mem && !mem_ok {
        return None;
    }
    // Operand `k` as a vector register of the form's width, or memory.
    let width = |k: u32| match insn.op_kind(k) {
        OpKind::Register => vreg(insn.op_register(k)).map(|(_, w)| w),
        _ => None,
    };
    let wide = (0..n).filter_map(width).any(|w| w);
    if wide && !vex {
        return None;
    }
    let src = |k: u32| match insn.op_kind(k) {
        OpKind::Register => match vreg(insn.op_register(k)) {
            Some((i, w)) if w == wide => Some(Src::Reg(i)),
            _ => None,
        },
        OpKind::Memory => Some(Src::Mem),
        _ => None,
    };
    let reg = |k: u32| match src(k)? {
        Src::Reg(i) => Some(i),
        Src::Mem => None,
    };
    use Mnemonic::*;
    let m = insn.mnemonic();
    let shape = match m {
        Movdqa | Movdqu | Movaps | Movups | Movapd | Movupd | Lddqu | Movntdq | Movntps
        | Movntpd | Vmovdqa | Vmovdqu | Vmovaps | Vmovups | Vmovapd | Vmovupd | Vlddqu
        | Vmovntdq | Vmovntps | Vmovntpd
            if n == 2 =>
        {
            let (dst, src) = (src(0)?, src(1)?);
            if matches!((dst, src), (Src::Mem, Src::Mem)) {
                return None;
            }
            let align = matches!(
                m,
                Movdqa
                    | Movaps
                    | Movapd
                    | Movntdq
                    | Movntps
                    | Movntpd
                    | Vmovdqa
                    | Vmovaps
                    | Vmovapd
                    | Vmovntdq
                    | Vmovntps
                    | Vmovntpd
            );
            Shape::Mov { dst, src, align }
        }
        Pmovmskb | Vpmovmskb if n == 2 && op.r0 < 16 => Shape::Movmsk {
            r: op.r0,
            s: reg(1)?,
        },
        Vpbroadcastb if n == 2 => Shape::Bcast {
            d: reg(0)?,
            // The source is an XMM (or m8) for both widths.
            s: match insn.op_kind(1) {
                OpKind::Memory => Src::Mem,
                _ => Src::Reg(vreg(insn.op1_register()).filter(|&(_, w)| !w)?.0),
            },
        },
        Vzeroupper if n == 0 => Shape::Zeroupper,
        Movd | Movq | Vmovd | Vmovq if n == 2 => {
            let side = |k: u32| match insn.op_kind(k) {
                OpKind::Memory => Some(Side::Mem),
                OpKind::Register => match vreg(insn.op_register(k)) {
                    Some((i, false)) => Some(Side::Vec(i)),
                    Some(_) => None,
                    // A GPR (MMX registers are neither).
                    None => {
                        let r = if k == 0 { op.r0 } else { op.r1 };
                        (r < 16).then_some(Side::Gpr(r))
                    }
                },
                _ => None,
            };
            let (dst, src) = (side(0)?, side(1)?);
            if !matches!(dst, Side::Vec(_)) && !matches!(src, Side::Vec(_)) {
                return None;
            }
            let size = if matches!(m, Movd | Vmovd) { 4 } else { 8 };
            Shape::MovGpr { dst, src, size }
        }
        Pcmpistri if n == 3 && insn.op2_kind() == OpKind::Immediate8 => Shape::Pcmpistri {
            a: reg(0)?,
            b: match src(1)? {
                Src::Reg(i) => Side::Vec(i),
                Src::Mem => Side::Mem,
            },
            imm: insn.immediate8(),
        },
        _ => {
            let lane = Lane::of(m)?;
            match (vex, n) {
                (false, 2) => Shape::Bin {
                    lane,
                    d: reg(0)?,
                    a: reg(0)?,
                    b: src(1)?,
                },
                (true, 3) => Shape::Bin {
                    lane,
                    d: reg(0)?,
                    a: reg(1)?,
                    b: src(2)?,
                },
                _ => return None,
            }
        }
    };
    let mut feats = Vec::new();
    if vex {
        for f in insn.cpuid_features() {
            feats.push(
                match f {
                    CpuidFeature::AVX => offset_of!(Features, avx),
                    CpuidFeature::AVX2 => offset_of!(Features, avx2),
                    _ => return None,
                } as i32
                    + offset_of!(Cpu, feat) as i32,
            );
        }
    }
    Some(Form {
        shape,
        vex,
        wide,
        feats,
    })
}

/// Emits `op` inline with a cold path to its handler; false when it is
/// not one of the forms above.
pub(super) fn inline(b: &mut FunctionBuilder<'_>, cx: &Cx, op: &Op, i: usize) -> bool {
    let Some(f) = classify(op) else {
        return false;
    };
    let cpu = cx.cpu(b);
    let slow = b.create_block();
    let done = b.create_block();
    b.set_cold_block(slow);
    guard(b, cpu, &f, slow);
    let bytes = 16u32 << f.wide as u32;
    match f.shape {
        Shape::Mov { dst, src, align } => match (dst, src) {
            (Src::Mem, Src::Reg(s)) => {
                let v = get(b, cpu, s, f.wide, I64X2);
                let p = host(b, cpu, op, bytes, true, align, slow);
                for (k, x) in v.into_iter().flatten().enumerate() {
                    b.ins().store(guest_mem(), x, p, 16 * k as i32);
                }
            }
            (Src::Reg(d), s) => {
                let v = operand(b, cpu, op, s, &f, I64X2, align, slow);
                put(b, cpu, d, v, f.vex);
            }
            (Src::Mem, Src::Mem) => unreachable!("classify rejects memory to memory"),
        },
        Shape::Bin { lane, d, a, b: s } => {
            let ty = lane.ty;
            let x = get(b, cpu, a, f.wide, ty);
            // Legacy m128 operands must be aligned; VEX ones need not.
            let y = operand(b, cpu, op, s, &f, ty, !f.vex, slow);
            let mut r = [None, None];
            for k in 0..2 {
                if let (Some(x), Some(y)) = (x[k], y[k]) {
                    r[k] = Some(lane.emit(b, x, y));
                }
            }
            put(b, cpu, d, r, f.vex);
        }
        Shape::Movmsk { r, s } => emit_simd_gpr::movmsk(b, cpu, &f, r, s),
        Shape::MovGpr { dst, src, size } => {
            emit_simd_gpr::movd(b, cpu, op, &f, dst, src, size, slow)
        }
        Shape::Pcmpistri { a, b: s, imm } => {
            emit_simd_gpr::pcmpistri_call(b, cx, op, a, s, imm, slow)
        }
        Shape::Bcast { d, s } => {
            let byte = match s {
                Src::Reg(s) => b.ins().load(I8, cpu_mem(), cpu, lo_off(s)),
                Src::Mem => {
                    let p = host(b, cpu, op, 1, false, false, slow);
                    b.ins().load(I8, guest_mem(), p, 0)
                }
            };
            let v = b.ins().splat(I8X16, byte);
            put(b, cpu, d, [Some(v), f.wide.then_some(v)], true);
        }
        Shape::Zeroupper => {
            let z = b.ins().iconst(I64, 0);
            for r in 0..16 {
                b.ins().store(cpu_mem(), z, cpu, hi_off(r));
                b.ins().store(cpu_mem(), z, cpu, hi_off(r) + 8);
            }
        }
    }
    // The generic handler sets RIP before it runs: the block's epilogue
    // (and its chain step) take it from there when this op is its last.
    if op.sets_rip {
        let next = b.ins().iconst(I64, op.next as i64);
        b.ins()
            .store(cpu_mem(), next, cpu, state_off(offset_of!(CpuState, rip)));
    }
    b.ins().jump(done, &[]);
    b.switch_to_block(slow);
    b.seal_block(slow);
    cx.call_handler(b, i);
    b.ins().jump(done, &[]);
    b.switch_to_block(done);
    b.seal_block(done);
    true
}
