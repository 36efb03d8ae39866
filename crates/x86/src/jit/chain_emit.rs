//! The chain step in compiled code (issue 11, phase 4): the end of a
//! block that ran whole. The common case — a link of the last op naming
//! the successor's code under the current key, the chain not at its
//! bound, nothing pending, the successor fitting whole in the instruction
//! budget — is made in compiled code and tail-calls the successor;
//! everything else calls [`super::chain::next`], the reference, which
//! makes the same checks and more (the jump cache, relinking) and may
//! still chain.
//!
//! The step is one function per thread, the chain stub ([`stub`]),
//! which every block tail-calls with its last op, that op's next RIP and
//! its [`meta`] as constants: one copy of the checks stays in the
//! instruction cache for all blocks (the loop of the shell benchmark
//! runs ~3 000 distinct blocks; a copy in each block was ~200 bytes of
//! code more to fetch per block).
//!
//! What the stub checks is exactly what `next` checks, read from the
//! same places: the chain bound (`Exec::jit_chain_left`), the CPU's
//! pending signals and its interrupt/NMI window requests, the code
//! epochs other CPUs bump against the ones this CPU has seen, the chain
//! key ([`super::chain::Watch`]) against the link's, the link's RIP
//! against the successor's and its instruction count against the budget
//! (`Exec::jit_limit`). The epilogue before it (RIP, the retired count)
//! is `next`'s too, so running both is idempotent.

use std::mem::offset_of;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{
    condcodes::IntCC, types::I32, types::I64, types::I8, AbiParam, BlockArg, Function, InstBuilder,
    MemFlagsData, SigRef, Signature, UserFuncName, Value,
};
use cranelift_codegen::isa::CallConv;
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

use super::chain::Watch;
use super::code::Code;
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

/// The stub's meta argument: `chain::meta` of the last op (its `end`
/// in bits 0..8, `sets_rip` in bit 8) and the block's op count from
/// bit 16 (what the block returns when it does not chain).
fn meta(last: &Op, n: usize) -> u64 {
    super::chain::meta(last) | (n as u64) << 16
}

/// Emits the end of a block whose last op is `last` and that has `n`
/// ops: a tail call to this thread's chain stub.
pub(super) fn tail(b: &mut FunctionBuilder<'_>, cx: &Cx, last: &Op, n: usize, ssig: SigRef) {
    // `compile` built the stub before the block.
    let f = b.ins().iconst(I64, stub().map_or(0, |p| p as i64));
    let lo = b.ins().iconst(I64, last as *const Op as i64);
    let nrip = b.ins().iconst(I64, last.next as i64);
    let m = b.ins().iconst(I64, meta(last, n) as i64);
    b.ins()
        .return_call_indirect(ssig, f, &[cx.ex, cx.cpu, lo, nrip, m]);
}

/// The stub's signature: `(exec, cpu, last op, next RIP, meta) ->
/// result`, in the `tail` convention (blocks tail-call it, it tail-calls
/// the successor).
pub(super) fn stub_sig() -> Signature {
    let mut sig = Signature::new(CallConv::Tail);
    for _ in 0..5 {
        sig.params.push(AbiParam::new(I64));
    }
    sig.returns.push(AbiParam::new(I64));
    sig
}

/// This thread's chain stub, compiled at its first use and never freed
/// (as the entry trampoline: code runs on the thread that compiled it).
pub(super) fn stub() -> Option<*const u8> {
    thread_local! {
        static S: std::cell::OnceCell<Option<Code>> = const { std::cell::OnceCell::new() };
    }
    S.with(|s| s.get_or_init(build_stub).as_ref().map(|c| c.ptr()))
}

fn build_stub() -> Option<Code> {
    let isa = super::compile::isa()?;
    let mut ctx = Context::new();
    let mut fctx = FunctionBuilderContext::new();
    ctx.func = Function::with_name_signature(UserFuncName::default(), stub_sig());
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let p = b.block_params(entry).to_vec();
        let cc = isa.default_call_conv();
        let mut nsig = Signature::new(cc);
        for _ in 0..4 {
            nsig.params.push(AbiParam::new(I64));
        }
        nsig.returns.push(AbiParam::new(I64));
        let nsig = b.import_signature(nsig);
        let bsig = b.import_signature(super::compile::block_sig());
        step(&mut b, [p[0], p[1], p[2], p[3], p[4]], nsig, bsig);
        b.finalize(isa.frontend_config());
    }
    let compiled = ctx.compile(isa, &mut ControlPlane::default()).ok()?;
    if !compiled.buffer.relocs().is_empty() {
        return None;
    }
    Code::new(compiled.code_buffer())
}

/// The stub's body over its arguments.
fn step(b: &mut FunctionBuilder<'_>, args: [Value; 5], nsig: SigRef, bsig: SigRef) {
    let [ex, cpu, last, nrip, meta] = args;
    let rip_off = cpu_off(offset_of!(Cpu, state) + offset_of!(CpuState, rip));
    // The block's epilogue (`chain::next`'s, `Exec::finish_block`'s): RIP
    // unless the last op set it, the retired count.
    let sets = b.ins().band_imm_u(meta, 0x100);
    let old = b.ins().load(I64, cpu_mem(), cpu, rip_off);
    let rip = b.ins().select(sets, old, nrip);
    b.ins().store(cpu_mem(), rip, cpu, rip_off);
    let end = b.ins().band_imm_u(meta, 0xff);
    let icount0 = b.ins().load(
        I64,
        cpu_mem(),
        ex,
        ex_off(offset_of!(Exec<'static>, icount0)),
    );
    let icount = b.ins().iadd(icount0, end);
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

    // The budget.
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
    for (i, cell) in [offset_of!(Op, link), offset_of!(Op, link2)]
        .into_iter()
        .enumerate()
    {
        // `Cell<Link>` is a `Link`.
        let at = b.ins().iadd_imm_s(last, cell as i64);
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
    let call = b.ins().call_indirect(nsig, f, &[ex, last, nrip, meta]);
    let next = b.inst_results(call)[0];
    let chain = b.create_block();
    let back = b.create_block();
    b.ins().brif(next, chain, &[], back, &[]);
    b.switch_to_block(chain);
    b.seal_block(chain);
    b.ins().return_call_indirect(bsig, next, &[ex, cpu]);
    b.switch_to_block(back);
    b.seal_block(back);
    let all = b.ins().ushr_imm_u(meta, 16);
    b.ins().return_(&[all]);
}
