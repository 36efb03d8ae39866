//! Inline memory forms: MOV between a register (8, 16, 32 or 64 bits)
//! and memory, MOV of an immediate to memory, PUSH/POP of a 64-bit
//! register, in 64-bit code. The access goes
//! through an inlined soft-TLB lookup (what `Tlb::host` does: the entry
//! of the data bank, tag = page | salt, the bytes inside the page); on a
//! miss the op's interpreter handler runs instead (page walk, fault,
//! MMIO), through the same call as any other op.

use cranelift_codegen::ir::{
    condcodes::IntCC, types::I64, BlockArg, InstBuilder, MemFlagsData, Value,
};
use cranelift_frontend::FunctionBuilder;
use iced_x86::{Code, CodeSize, Mnemonic, OpKind};

use super::compile::Cx;
use crate::exec::op::NOREG;
use crate::exec::{Exec, Op};
use crate::mmu::Tlb;
use crate::state::{CpuState, SegCache, FS, GS};
use crate::Cpu;

pub(super) use super::regs::gpr_off;

/// CPU structure fields: trusted (aligned, never trapping).
pub(super) fn cpu_mem() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// Guest memory through a host pointer: may be unaligned.
pub(super) fn guest_mem() -> MemFlagsData {
    MemFlagsData::new()
}

enum Shape {
    /// MOV reg, [mem]
    Load,
    /// MOV [mem], reg
    Store,
    /// MOV [mem], imm
    StoreImm,
    Push,
    Pop,
}

fn classify(op: &Op) -> Option<(Shape, u32)> {
    let insn = &op.insn;
    if op.sets_rip || insn.code_size() != CodeSize::Code64 || insn.has_lock_prefix() {
        return None;
    }
    let mem_ok = (op.base == NOREG || op.base < 16) && (op.index == NOREG || op.index < 16);
    match insn.code() {
        Code::Push_r64 if op.r0 < 16 => return Some((Shape::Push, 8)),
        Code::Pop_r64 if op.r0 < 16 => return Some((Shape::Pop, 8)),
        _ => {}
    }
    if insn.mnemonic() != Mnemonic::Mov || insn.op_count() != 2 || !mem_ok {
        return None;
    }
    // 1 and 2 bytes: a GPR's low byte or word (AH..BH are 16..19).
    let size = Exec::op_size(insn, 0);
    if !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    match (insn.op0_kind(), insn.op1_kind()) {
        (OpKind::Register, OpKind::Memory) if op.r0 < 16 => Some((Shape::Load, size)),
        (OpKind::Memory, OpKind::Register) if op.r1 < 16 => Some((Shape::Store, size)),
        (OpKind::Memory, k) if k != OpKind::Register && k != OpKind::Memory => {
            Some((Shape::StoreImm, size))
        }
        _ => None,
    }
}

/// The linear address of the op's memory operand (`Exec::op_ea` plus
/// the FS/GS base of `op_lin64`), its registers read from `Cpu` (for
/// the SIMD emitters, which run with nothing cached).
pub(super) fn linear(b: &mut FunctionBuilder<'_>, cpu: Value, op: &Op) -> Value {
    linear_with(b, cpu, op, |b, r| {
        b.ins().load(I64, cpu_mem(), cpu, gpr_off(r))
    })
}

/// [`linear`] with the registers from the block's cache: call it on the
/// main line.
pub(super) fn linear_cached(b: &mut FunctionBuilder<'_>, cx: &Cx, op: &Op) -> Value {
    let cpu = cx.cpu(b);
    linear_with(b, cpu, op, |b, r| cx.gpr(b, r))
}

fn linear_with(
    b: &mut FunctionBuilder<'_>,
    cpu: Value,
    op: &Op,
    mut reg: impl FnMut(&mut FunctionBuilder<'_>, u8) -> Value,
) -> Value {
    let mut a = b.ins().iconst(I64, op.disp as i64);
    if op.base != NOREG {
        let v = reg(b, op.base);
        a = b.ins().iadd(a, v);
    }
    if op.index != NOREG {
        let v = reg(b, op.index);
        let v = b.ins().ishl_imm_u(v, op.scale as i64);
        a = b.ins().iadd(a, v);
    }
    if op.amask != u64::MAX {
        a = b.ins().band_imm_u(a, op.amask as i64);
    }
    let seg = op.seg as usize;
    if seg == FS || seg == GS {
        let off = std::mem::offset_of!(Cpu, state)
            + std::mem::offset_of!(CpuState, seg)
            + seg * std::mem::size_of::<SegCache>()
            + std::mem::offset_of!(SegCache, base);
        let base = b.ins().load(I64, cpu_mem(), cpu, off as i32);
        a = b.ins().iadd(a, base);
    }
    a
}

/// Looks `size` bytes at `lin` up in the TLB for reading or writing:
/// branches to a new block with the host address on a hit (returned,
/// current), to `miss` otherwise.
pub(super) fn tlb(
    b: &mut FunctionBuilder<'_>,
    cpu: Value,
    lin: Value,
    size: u32,
    write: bool,
    miss: cranelift_codegen::ir::Block,
) -> Value {
    let l = Tlb::LAYOUT;
    let tlb = std::mem::offset_of!(Cpu, tlb);
    let vpn = b.ins().ushr_imm_u(lin, 12);
    let hi = b.ins().ushr_imm_u(vpn, 12);
    let mix = b.ins().bxor(vpn, hi);
    let idx = b.ins().band_imm_u(mix, (l.size - 1) as i64);
    let slot = b.ins().imul_imm_u(idx, l.entry_size as i64);
    // The running block's data bank (`Cpu::dtlb`, which holds while
    // compiled code runs: what changes the bank ends the block).
    let bank = b
        .ins()
        .load(I64, cpu_mem(), cpu, std::mem::offset_of!(Cpu, dtlb) as i32);
    let e = b.ins().iadd(bank, slot);
    let tag_off = if write { l.tag_w } else { l.tag_r };
    let tag = b.ins().load(I64, cpu_mem(), e, tag_off as i32);
    let salt = b.ins().load(I64, cpu_mem(), cpu, (tlb + l.salt) as i32);
    let want = b.ins().bor(vpn, salt);
    let hit = b.ins().icmp(IntCC::Equal, tag, want);
    let off = b.ins().band_imm_u(lin, 0xfff);
    // A byte never leaves its page.
    let ok = if size == 1 {
        hit
    } else {
        let inside = b
            .ins()
            .icmp_imm_u(IntCC::UnsignedLessThanOrEqual, off, 4096 - size as i64);
        b.ins().band(hit, inside)
    };
    let host = b.ins().load(I64, cpu_mem(), e, l.host as i32);
    let p = b.ins().iadd(host, off);
    let fast = b.create_block();
    b.append_block_param(fast, I64);
    b.ins().brif(ok, fast, &[BlockArg::Value(p)], miss, &[]);
    b.switch_to_block(fast);
    b.seal_block(fast);
    b.block_params(fast)[0]
}

/// Emits `op` with an inline TLB fast path; false when it is not one of
/// these forms.
pub(super) fn inline(b: &mut FunctionBuilder<'_>, cx: &Cx, op: &Op, i: usize) -> bool {
    let Some((shape, size)) = classify(op) else {
        return false;
    };
    let cpu = cx.cpu(b);
    let miss = b.create_block();
    let done = b.create_block();
    b.set_cold_block(miss);
    // Every register the op reads or writes is cached on the main line
    // (a partial load merges into the old value).
    let before;
    let writes: &[u8] = match shape {
        Shape::Load => {
            if size < 4 {
                cx.gpr(b, op.r0);
            }
            let lin = linear_cached(b, cx, op);
            before = cx.snapshot();
            let p = tlb(b, cpu, lin, size, false, miss);
            let v = load(b, p, size);
            cx.set_gpr(b, op.r0, size, v);
            &[op.r0]
        }
        Shape::Store | Shape::StoreImm => {
            // The value first, as mov_mr (the address registers may be
            // the source).
            let v = match shape {
                Shape::Store => cx.gpr(b, op.r1),
                _ => b.ins().iconst(I64, op.imm as i64),
            };
            let lin = linear_cached(b, cx, op);
            before = cx.snapshot();
            let p = tlb(b, cpu, lin, size, true, miss);
            store(b, p, size, v);
            &[]
        }
        Shape::Push => {
            let v = cx.gpr(b, op.r0);
            let sp = cx.gpr(b, 4);
            let sp = b.ins().iadd_imm_s(sp, -8);
            before = cx.snapshot();
            let p = tlb(b, cpu, sp, 8, true, miss);
            b.ins().store(guest_mem(), v, p, 0);
            cx.set_gpr(b, 4, 8, sp);
            &[4]
        }
        Shape::Pop => {
            let sp = cx.gpr(b, 4);
            before = cx.snapshot();
            let p = tlb(b, cpu, sp, 8, false, miss);
            let v = b.ins().load(I64, guest_mem(), p, 0);
            let sp = b.ins().iadd_imm_s(sp, 8);
            // RSP first, then the register (POP RSP loads the value).
            cx.set_gpr(b, 4, 8, sp);
            cx.set_gpr(b, op.r0, 8, v);
            &[4, op.r0]
        }
    };
    b.ins().jump(done, &[]);
    b.switch_to_block(miss);
    b.seal_block(miss);
    cx.slow_handler(b, i, &before, writes);
    b.ins().jump(done, &[]);
    b.switch_to_block(done);
    b.seal_block(done);
    true
}

/// `size` bytes of guest memory at host address `p`, zero-extended.
pub(super) fn load(b: &mut FunctionBuilder<'_>, p: Value, size: u32) -> Value {
    match size {
        1 => b.ins().uload8(I64, guest_mem(), p, 0),
        2 => b.ins().uload16(I64, guest_mem(), p, 0),
        4 => b.ins().uload32(guest_mem(), p, 0),
        _ => b.ins().load(I64, guest_mem(), p, 0),
    }
}

/// Stores the low `size` bytes of `v` at host address `p`.
pub(super) fn store(b: &mut FunctionBuilder<'_>, p: Value, size: u32, v: Value) {
    match size {
        1 => b.ins().istore8(guest_mem(), v, p, 0),
        2 => b.ins().istore16(guest_mem(), v, p, 0),
        4 => b.ins().istore32(guest_mem(), v, p, 0),
        _ => b.ins().store(guest_mem(), v, p, 0),
    };
}
