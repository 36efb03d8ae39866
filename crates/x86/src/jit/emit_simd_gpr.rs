//! The inline SIMD forms that move data between vector and general
//! registers or memory (see `emit_simd` for the rules they share):
//! (V)MOVD/(V)MOVQ, (V)PMOVMSKB, and PCMPISTRI, whose comparison is the
//! interpreter's own function called directly (`strings::pcmpstr`, with
//! its operands fetched inline: no handler, no dispatch).

use cranelift_codegen::ir::{
    types::{I32, I64, I8X16},
    AbiParam, Block, InstBuilder, Signature, Value,
};
use cranelift_frontend::FunctionBuilder;

use super::compile::Cx;
use super::emit_mem::{cpu_mem, gpr_off, load, store};
use super::emit_simd::{Form, Side};
use super::emit_simd_access::{get, hi_off, host, lo_off};
use crate::exec::simd::strings::{pcmpstr, Lengths};
use crate::exec::Op;
use crate::Cpu;

/// (V)MOVD/(V)MOVQ: the low `size` bytes of `src` to `dst`, zero-extended
/// (a vector destination: to 128 bits, and bits 255:128 zeroed by a VEX
/// form, kept by a legacy one; a GPR: to 64 bits).
#[allow(clippy::too_many_arguments)]
pub(super) fn movd(
    b: &mut FunctionBuilder<'_>,
    cpu: Value,
    op: &Op,
    f: &Form,
    dst: Side,
    src: Side,
    size: u32,
    slow: Block,
) {
    let v = match src {
        Side::Gpr(r) => b.ins().load(I64, cpu_mem(), cpu, gpr_off(r)),
        Side::Vec(s) => b.ins().load(I64, cpu_mem(), cpu, lo_off(s)),
        Side::Mem => {
            let p = host(b, cpu, op, size, false, false, slow);
            load(b, p, size)
        }
    };
    let v = if size == 4 {
        b.ins().band_imm_u(v, 0xffff_ffff)
    } else {
        v
    };
    match dst {
        Side::Gpr(r) => {
            b.ins().store(cpu_mem(), v, cpu, gpr_off(r));
        }
        Side::Vec(d) => {
            let z = b.ins().iconst(I64, 0);
            b.ins().store(cpu_mem(), v, cpu, lo_off(d));
            b.ins().store(cpu_mem(), z, cpu, lo_off(d) + 8);
            if f.vex {
                b.ins().store(cpu_mem(), z, cpu, hi_off(d));
                b.ins().store(cpu_mem(), z, cpu, hi_off(d) + 8);
            }
        }
        Side::Mem => {
            let p = host(b, cpu, op, size, true, false, slow);
            store(b, p, size, v);
        }
    }
}

/// (V)PMOVMSKB: GPR `r` = the sign bits of the bytes of register `s`
/// (a 32- or 64-bit destination: zero-extended either way).
pub(super) fn movmsk(b: &mut FunctionBuilder<'_>, cpu: Value, f: &Form, r: u8, s: usize) {
    let v = get(b, cpu, s, f.wide, I8X16);
    let mut m = b.ins().iconst(I64, 0);
    for (k, x) in v.into_iter().flatten().enumerate() {
        let bits = b.ins().vhigh_bits(I32, x);
        let bits = b.ins().uextend(I64, bits);
        let bits = b.ins().ishl_imm_u(bits, 16 * k as i64);
        m = b.ins().bor(m, bits);
    }
    b.ins().store(cpu_mem(), m, cpu, gpr_off(r));
}

/// PCMPISTRI `xmm a, xmm/m128, imm8`: the second operand's address (the
/// register in `Cpu`, or guest memory through the TLB, unaligned), then
/// a call to [`pcmpistri`]. It writes ECX and the flags: the flags the
/// block knew are no longer current.
#[allow(clippy::too_many_arguments)]
pub(super) fn pcmpistri_call(
    b: &mut FunctionBuilder<'_>,
    cx: &Cx,
    op: &Op,
    a: usize,
    src: Side,
    imm: u8,
    slow: Block,
) {
    let cpu = cx.cpu(b);
    let p = match src {
        Side::Vec(s) => b.ins().iadd_imm_s(cpu, lo_off(s) as i64),
        _ => host(b, cpu, op, 16, false, false, slow),
    };
    let Some(isa) = super::compile::isa() else {
        unreachable!("a block is compiled only with an ISA")
    };
    let mut sig = Signature::new(isa.default_call_conv());
    for t in [I64, I32, I64, I32] {
        sig.params.push(AbiParam::new(t));
    }
    let sig = b.import_signature(sig);
    let fp = b.ins().iconst(I64, pcmpistri as *const () as i64);
    let ai = b.ins().iconst(I32, a as i64);
    let iv = b.ins().iconst(I32, imm as i64);
    b.ins().call_indirect(sig, fp, &[cpu, ai, p, iv]);
    cx.known.set(None);
}

/// PCMPISTRI for compiled code: `strings::pcmpstr` of XMM`a` and the 16
/// bytes at `b` under `imm`, written back as the interpreter does.
///
/// # Safety
///
/// `cpu` is the running CPU; `b` points to 16 readable bytes (a vector
/// register of `cpu` or guest RAM through a TLB hit).
unsafe extern "C" fn pcmpistri(cpu: *mut u8, a: u32, b: *const u8, imm: u32) {
    // SAFETY: the caller's contract; `b` may be unaligned, and is read
    // before the CPU is borrowed (it may point into it).
    let bv = unsafe { std::ptr::read_unaligned(b as *const [u8; 16]) };
    // SAFETY: the caller's contract.
    let cpu = unsafe { &mut *(cpu as *mut Cpu) };
    let av = cpu.state.fpu.xmm[a as usize & 15];
    let r = pcmpstr(av, u128::from_le_bytes(bv), imm as u8, Lengths::Implicit);
    r.write(&mut cpu.state, true);
}
