//! The chain step in compiled code (issue 11, phase 4): the end of a
//! block that ran whole. The common case — a link of the last op naming
//! the successor's code under the current key, the chain not at its
//! bound, nothing pending, the successor fitting whole in the instruction
//! budget — is made inline and tail-calls the successor; everything else
//! calls [`super::chain::next`], the reference, which makes the same
//! checks and more (the jump cache, relinking) and may still chain.
//!
//! What the inline step checks is exactly what `next` checks, read from
//! the same places: the chain bound (`Exec::jit_chain_left`), the CPU's
//! pending signals and its interrupt/NMI window requests, the code
//! epochs other CPUs bump against the ones this CPU has seen, the chain
//! key ([`super::chain::Watch`]) against the link's, the link's RIP
//! against the successor's and its instruction count against the budget
//! (`Exec::jit_limit`). The epilogue before it (RIP, the retired count)
//! is `next`'s too, so running both is idempotent.

use std::mem::offset_of;

use cranelift_codegen::ir::{
    condcodes::IntCC, types::I32, types::I64, types::I8, BlockArg, InstBuilder, MemFlagsData,
    SigRef, Value,
};
use cranelift_frontend::FunctionBuilder;

use super::chain::Watch;
use super::compile::Cx;
use crate::block::{OpsRef, NO_KEY};
use crate::exec::op::Link;
use crate::exec::{Exec, Op};
use crate::state::CpuState;
use crate::Cpu;

// `jit_cur` is copied from a link as two words.
const _: () = assert!(std::mem::size_of::<OpsRef>() == 16);

fn cpu_mem() -> MemFlagsData {
    MemFlagsData::trusted()
}

fn ex_off(f: usize) -> i32 {
    f as i32
}

fn watch_off(f: usize) -> i32 {
    (offset_of!(Exec<'static>, jit_watch) + f) as i32
}

fn cpu_off(f: usize) -> i32 {
    f as i32
}

/// Emits the end of a block whose last op is `last` and that has `n`
/// ops: the inline chain step, else the call to `chain::next`, a tail
/// call to what it returns or a return to the run loop.
pub(super) fn tail(
    b: &mut FunctionBuilder<'_>,
    cx: &Cx,
    last: &Op,
    n: usize,
    nsig: SigRef,
    bsig: SigRef,
) {
    let (ex, cpu) = (cx.ex, cx.cpu);
    let rip_off = cpu_off(offset_of!(Cpu, state) + offset_of!(CpuState, rip));
    // The block's epilogue (`chain::next`'s, `Exec::finish_block`'s).
    if !last.sets_rip {
        let v = b.ins().iconst(I64, last.next as i64);
        b.ins().store(cpu_mem(), v, cpu, rip_off);
    }
    let icount0 = b.ins().load(
        I64,
        cpu_mem(),
        ex,
        ex_off(offset_of!(Exec<'static>, icount0)),
    );
    let icount = b.ins().iadd_imm_s(icount0, last.end as i64);
    b.ins()
        .store(cpu_mem(), icount, cpu, cpu_off(offset_of!(Cpu, icount)));

    let slow = b.create_block();
    b.set_cold_block(slow);
    // Each check continues in a new block or goes to `slow`.
    let check = |b: &mut FunctionBuilder<'_>, ok: Value| {
        let go = b.create_block();
        b.ins().brif(ok, go, &[], slow, &[]);
        b.switch_to_block(go);
        b.seal_block(go);
    };
    let left_off = ex_off(offset_of!(Exec<'static>, jit_chain_left));
    let left = b.ins().load(I32, cpu_mem(), ex, left_off);
    let ok = b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, left, 1);
    check(b, ok);
    // Nothing pending: signals, window requests, other CPUs' code writes.
    let p = b
        .ins()
        .load(I64, cpu_mem(), ex, watch_off(offset_of!(Watch, signals)));
    let bits = b.ins().load(I32, cpu_mem(), p, 0);
    let w1 = b.ins().load(
        I8,
        cpu_mem(),
        cpu,
        cpu_off(offset_of!(Cpu, want_interrupt_window)),
    );
    let w2 = b.ins().load(
        I8,
        cpu_mem(),
        cpu,
        cpu_off(offset_of!(Cpu, want_nmi_window)),
    );
    let w = b.ins().bor(w1, w2);
    let w = b.ins().uextend(I32, w);
    let any = b.ins().bor(bits, w);
    let ok = b.ins().icmp_imm_u(IntCC::Equal, any, 0);
    check(b, ok);
    let epoch_same = |b: &mut FunctionBuilder<'_>, ptr: usize, seen: usize| {
        let p = b.ins().load(I64, cpu_mem(), ex, watch_off(ptr));
        let now = b.ins().load(I64, cpu_mem(), p, 0);
        let seen = b.ins().load(I64, cpu_mem(), cpu, cpu_off(seen));
        b.ins().icmp(IntCC::Equal, now, seen)
    };
    let e1 = epoch_same(
        b,
        offset_of!(Watch, epoch),
        offset_of!(Cpu, seen_code_epoch),
    );
    let e2 = epoch_same(b, offset_of!(Watch, revoke), offset_of!(Cpu, seen_revoke));
    let ok = b.ins().band(e1, e2);
    check(b, ok);
    let key = b
        .ins()
        .load(I64, cpu_mem(), ex, watch_off(offset_of!(Watch, key)));
    let ok = b.ins().icmp_imm_u(IntCC::NotEqual, key, NO_KEY as i64);
    check(b, ok);

    // The successor's RIP, the budget.
    let rip = if last.sets_rip {
        b.ins().load(I64, cpu_mem(), cpu, rip_off)
    } else {
        b.ins().iconst(I64, last.next as i64)
    };
    let limit = b.ins().load(
        I64,
        cpu_mem(),
        ex,
        ex_off(offset_of!(Exec<'static>, jit_limit)),
    );
    // Either link: (its address, the successor's code).
    let go = b.create_block();
    b.append_block_param(go, I64);
    b.append_block_param(go, I64);
    for (i, cell) in [&last.link, &last.link2].into_iter().enumerate() {
        let at = b.ins().iconst(I64, cell.as_ptr() as i64);
        let field =
            |b: &mut FunctionBuilder<'_>, f: usize| b.ins().load(I64, cpu_mem(), at, f as i32);
        let lrip = field(b, offset_of!(Link, rip));
        let lkey = field(b, offset_of!(Link, key));
        let entry = field(b, offset_of!(Link, entry));
        let insns = field(b, offset_of!(Link, insns));
        let r = b.ins().icmp(IntCC::Equal, lrip, rip);
        let k = b.ins().icmp(IntCC::Equal, lkey, key);
        let e = b.ins().icmp_imm_u(IntCC::NotEqual, entry, 0);
        let end = b.ins().iadd(icount, insns);
        let fits = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, end, limit);
        let rk = b.ins().band(r, k);
        let ef = b.ins().band(e, fits);
        let hit = b.ins().band(rk, ef);
        let miss = if i == 0 { b.create_block() } else { slow };
        b.ins().brif(
            hit,
            go,
            &[BlockArg::Value(at), BlockArg::Value(entry)],
            miss,
            &[],
        );
        if i == 0 {
            b.switch_to_block(miss);
            b.seal_block(miss);
        }
    }
    b.switch_to_block(go);
    b.seal_block(go);
    let at = b.block_params(go)[0];
    let entry = b.block_params(go)[1];
    // `next`'s commit: one block less, the successor's ops and count base
    // (`block_exit` is clear: a block that set it left early).
    let left = b.ins().iadd_imm_s(left, -1);
    b.ins().store(cpu_mem(), left, ex, left_off);
    let ops = offset_of!(Link, ops) as i32;
    let cur = ex_off(offset_of!(Exec<'static>, jit_cur));
    let w0 = b.ins().load(I64, cpu_mem(), at, ops);
    let w1 = b.ins().load(I64, cpu_mem(), at, ops + 8);
    b.ins().store(cpu_mem(), w0, ex, cur);
    b.ins().store(cpu_mem(), w1, ex, cur + 8);
    b.ins().store(
        cpu_mem(),
        icount,
        ex,
        ex_off(offset_of!(Exec<'static>, icount0)),
    );
    b.ins().return_call_indirect(bsig, entry, &[ex, cpu]);

    // The reference: `chain::next`.
    b.switch_to_block(slow);
    b.seal_block(slow);
    let f = b.ins().iconst(I64, super::chain::next as *const () as i64);
    let lo = b.ins().iconst(I64, last as *const Op as i64);
    let nrip = b.ins().iconst(I64, last.next as i64);
    let meta = b.ins().iconst(I64, super::chain::meta(last) as i64);
    let call = b.ins().call_indirect(nsig, f, &[ex, lo, nrip, meta]);
    let next = b.inst_results(call)[0];
    let chain = b.create_block();
    let back = b.create_block();
    b.ins().brif(next, chain, &[], back, &[]);
    b.switch_to_block(chain);
    b.seal_block(chain);
    b.ins().return_call_indirect(bsig, next, &[ex, cpu]);
    b.switch_to_block(back);
    b.seal_block(back);
    let all = b.ins().iconst(I64, n as i64);
    b.ins().return_(&[all]);
}
