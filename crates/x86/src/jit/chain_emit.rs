//! The chain stub (issue 11, phases 4 and 5): the step from a compiled
//! block that ran whole to its successor's code. Every block ends with a
//! tail call to its thread's stub ([`stub`]) with its exit record
//! (`exit`), its last op's next RIP and its [`meta`] as constants: one
//! copy of the checks stays in the instruction cache for all blocks (a
//! copy in each block measured slower twice: phase 4's inline step, and
//! phase 5's per-block exit code, ~190 bytes more a block, ~15 % slower
//! on the shell loop).
//!
//! The stub's common case makes no call (so it saves no registers):
//! the epilogue (RIP, the retired count), then
//! - the chain bound (`Exec::jit_chain_left`);
//! - the budget: the retired count below `Watch::fast_end`, the budget
//!   less the largest block, so that any successor fits whole (0 when an
//!   interrupt or NMI window is wanted, which cannot change while a chain
//!   runs, or when the code epochs were not caught up with);
//! - one word for everything asynchronous: the CPU's signal bits (a
//!   kick, a flush request, and the code bit `CodeShare` sets after
//!   another CPU or a device bumped a code epoch);
//! - an entry of the exit record naming this RIP under the current chain
//!   key ([`super::chain::Watch`]);
//!
//! then the commit and the tail call to the successor. Anything else
//! tail-calls the slow stub, which calls [`super::chain::next`], the
//! reference: it makes every check `Exec::run_chain` makes between two
//! blocks (windows, both epochs, the exact budget), relinks from the jump
//! cache and fills the record, and may still chain. The epilogue is
//! `next`'s too, so running both is idempotent.

use std::mem::offset_of;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{
    condcodes::IntCC, types::I32, types::I64, AbiParam, Block, BlockArg, Function, InstBuilder,
    MemFlagsData, Signature, UserFuncName, Value,
};
use cranelift_codegen::isa::CallConv;
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

use super::chain::Watch;
use super::code::Code;
use super::compile::Cx;
use crate::exec::{Exec, Op};
use crate::Cpu;

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

/// Emits the end of a block whose last op is `last`, that has `n` ops
/// and whose exit record is at `rec`: a tail call to the chain stub of
/// the thread that will run the code (`Cx::stub`).
pub(super) fn tail(b: &mut FunctionBuilder<'_>, cx: &Cx, last: &Op, n: usize, rec: i64) {
    let ssig = b.import_signature(stub_sig());
    let f = b.ins().iconst(I64, cx.stub as i64);
    let rec = b.ins().iconst(I64, rec);
    let nrip = b.ins().iconst(I64, last.next as i64);
    let m = b.ins().iconst(I64, meta(last, n) as i64);
    let cpu = cx.cpu(b);
    b.ins()
        .return_call_indirect(ssig, f, &[cx.ex, cpu, rec, nrip, m]);
}

/// The stubs' signature: `(exec, cpu, exit record, next RIP, meta) ->
/// result`, in the `tail` convention (blocks tail-call the stub, which
/// tail-calls the successor or the slow stub).
pub(super) fn stub_sig() -> Signature {
    let mut sig = Signature::new(CallConv::Tail);
    for _ in 0..5 {
        sig.params.push(AbiParam::new(I64));
    }
    sig.returns.push(AbiParam::new(I64));
    sig
}

thread_local! {
    static STUBS: std::cell::OnceCell<Option<(Code, Code)>> =
        const { std::cell::OnceCell::new() };
}

/// This thread's chain stub, compiled at its first use and never freed
/// (as the entry trampoline: code runs on the thread that compiled it).
pub(super) fn stub() -> Option<*const u8> {
    STUBS.with(|s| s.get_or_init(build_stubs).as_ref().map(|c| c.0.ptr()))
}

fn build_stubs() -> Option<(Code, Code)> {
    // The slow stub first: the stub's code holds its address.
    let slow = build(|b, p, _| slow_step(b, p))?;
    let at = slow.ptr() as i64;
    let fast = build(|b, p, _| step(b, p, at))?;
    for (c, name) in [(&fast, "jit_chain_stub"), (&slow, "jit_chain_stub_slow")] {
        super::perfmap::note(c.ptr(), c.bytes(), format_args!("{name}"));
    }
    Some((fast, slow))
}

/// Compiles a stub whose body `body` emits over its arguments.
fn build(body: impl FnOnce(&mut FunctionBuilder<'_>, [Value; 5], CallConv)) -> Option<Code> {
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
        body(
            &mut b,
            [p[0], p[1], p[2], p[3], p[4]],
            isa.default_call_conv(),
        );
        b.finalize(isa.frontend_config());
    }
    let compiled = ctx.compile(isa, &mut ControlPlane::default()).ok()?;
    if !compiled.buffer.relocs().is_empty() {
        return None;
    }
    Code::new(compiled.code_buffer())
}

/// The stub's body: the epilogue, the checks, a hit in the exit record,
/// the commit and the tail call to the successor; anything else
/// tail-calls the slow stub at `slow_at` with the same arguments. No
/// call, and few values live at once (the running `Cpu` from the pinned
/// register, the chain bound and the retired count read again where
/// they are used, an entry's successor loaded once it matched): the
/// stub needs no callee-saved register, so it saves none.
fn step(b: &mut FunctionBuilder<'_>, args: [Value; 5], slow_at: i64) {
    let [ex, _, rec, nrip, meta] = args;
    // The pinned register at each use: a copy kept live would take a
    // register across the lookup.
    let pinned = |b: &mut FunctionBuilder<'_>| b.ins().get_pinned_reg(I64);
    let cpu = pinned(b);
    let rip_off = super::emit_branch::rip_off();
    let icount_off = cpu_off(offset_of!(Cpu, icount));
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
    let cpu = pinned(b);
    b.ins().store(cpu_mem(), icount, cpu, icount_off);

    let slow = b.create_block();
    b.set_cold_block(slow);
    guards(b, ex, icount, slow);
    // Any entry of the record: its RIP this one, its key the current
    // one; its successor's address loaded once it matched.
    let key = b
        .ins()
        .load(I64, cpu_mem(), ex, watch_off(offset_of!(Watch, key)));
    let (rip_at, key_at, entry_at) = super::exit::offsets();
    let go = b.create_block();
    b.append_block_param(go, I64);
    for i in 0..super::exit::WAYS {
        let off = (i * super::exit::STRIDE) as i32;
        let r = b.ins().load(I64, cpu_mem(), rec, off + rip_at);
        let k = b.ins().load(I64, cpu_mem(), rec, off + key_at);
        let r = b.ins().bxor(r, rip);
        let k = b.ins().bxor(k, key);
        let differ = b.ins().bor(r, k);
        let last = i + 1 == super::exit::WAYS;
        let miss = if last { slow } else { b.create_block() };
        let hit = b.create_block();
        b.ins().brif(differ, miss, &[], hit, &[]);
        b.switch_to_block(hit);
        b.seal_block(hit);
        let e = b.ins().load(I64, cpu_mem(), rec, off + entry_at);
        b.ins().jump(go, &[BlockArg::Value(e)]);
        if !last {
            b.switch_to_block(miss);
            b.seal_block(miss);
        }
    }
    b.switch_to_block(go);
    b.seal_block(go);
    let entry = b.block_params(go)[0];
    let left = b.ins().load(I32, cpu_mem(), ex, left_off());
    let cpu = pinned(b);
    let icount = b.ins().load(I64, cpu_mem(), cpu, icount_off);
    commit(b, ex, left, icount);
    let bsig = b.import_signature(super::compile::block_sig());
    let cpu = pinned(b);
    b.ins().return_call_indirect(bsig, entry, &[ex, cpu]);

    b.switch_to_block(slow);
    b.seal_block(slow);
    let cpu = pinned(b);
    let ssig = b.import_signature(stub_sig());
    let f = b.ins().iconst(I64, slow_at);
    b.ins()
        .return_call_indirect(ssig, f, &[ex, cpu, rec, nrip, meta]);
}

/// The checks of a chain step's common case, which every step makes
/// before it goes on (the stub's, a region's edges): the chain bound,
/// the budget (any block fits below `Watch::fast_end`, 0 when a window is
/// wanted), and one word for everything asynchronous (a kick, a flush
/// request, another CPU's code change); each failure branches to `fail`.
fn guards(b: &mut FunctionBuilder<'_>, ex: Value, icount: Value, fail: Block) {
    let left = b.ins().load(I32, cpu_mem(), ex, left_off());
    let ok = b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, left, 1);
    check(b, ok, fail);
    budget(b, ex, icount, fail);
}

/// Goes on in a new block when `go_on`, else to `fail`.
fn check(b: &mut FunctionBuilder<'_>, go_on: Value, fail: Block) {
    let go = b.create_block();
    b.ins().brif(go_on, go, &[], fail, &[]);
    b.switch_to_block(go);
    b.seal_block(go);
}

/// The budget and the signal word of [`guards`] (what a region's edges
/// check: they leave the chain bound alone).
fn budget(b: &mut FunctionBuilder<'_>, ex: Value, icount: Value, fail: Block) {
    let check = |b: &mut FunctionBuilder<'_>, go_on: Value| check(b, go_on, fail);
    let fast_end = b
        .ins()
        .load(I64, cpu_mem(), ex, watch_off(offset_of!(Watch, fast_end)));
    let fits = b.ins().icmp(IntCC::UnsignedLessThan, icount, fast_end);
    check(b, fits);
    let p = b
        .ins()
        .load(I64, cpu_mem(), ex, watch_off(offset_of!(Watch, signals)));
    let bits = b.ins().load(I32, cpu_mem(), p, 0);
    let quiet = b.ins().icmp_imm_u(IntCC::Equal, bits, 0);
    check(b, quiet);
}

/// `next`'s commit of a chain step: one block less (`left`, the chain
/// bound's count), the successor's count base `icount` (`block_exit` is
/// clear: a block that set it left early; `jit_cur` is stored by the
/// block that leaves the chain).
fn commit(b: &mut FunctionBuilder<'_>, ex: Value, left: Value, icount: Value) {
    let left = b.ins().iadd_imm_s(left, -1);
    b.ins().store(cpu_mem(), left, ex, left_off());
    b.ins().store(
        cpu_mem(),
        icount,
        ex,
        ex_off(offset_of!(Exec<'static>, icount0)),
    );
}

fn left_off() -> i32 {
    ex_off(offset_of!(Exec<'static>, jit_chain_left))
}

/// The slow stub's body: [`super::chain::next`], the reference, then a
/// tail call to the successor it returns, or the return to the run loop
/// (`next` stored the block's ops as `Exec::jit_cur`).
fn slow_step(b: &mut FunctionBuilder<'_>, args: [Value; 5]) {
    let [ex, cpu, rec, nrip, meta] = args;
    let isa_cc = super::compile::isa().map_or(CallConv::SystemV, |i| i.default_call_conv());
    let mut nsig = Signature::new(isa_cc);
    for _ in 0..4 {
        nsig.params.push(AbiParam::new(I64));
    }
    nsig.returns.push(AbiParam::new(I64));
    let nsig = b.import_signature(nsig);
    let bsig = b.import_signature(super::compile::block_sig());
    let f = b.ins().iconst(I64, super::chain::next as *const () as i64);
    let call = b.ins().call_indirect(nsig, f, &[ex, rec, nrip, meta]);
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

/// An edge inside a region (`region`), from a member whose last op is
/// `last` (everything stored) to the member at `to`, whose ops start at
/// `head`: the checks of the stub's common case but the key and the
/// chain bound (the budget below `Watch::fast_end`, the signal word:
/// the budget bounds how long the run loop goes unvisited), else on to
/// `leave` (the member's way out through the stub, which makes the
/// rest of the epilogue itself, with RIP stored first); then the block
/// epilogue (the retired count, the successor's count base) and a
/// jump. Counted in `Exec::jit_local` (not in the
/// chain bound's count). The chain key
/// is the one the code was entered under: an op that moves it ends the
/// block (`super::call_op`).
pub(super) fn edge(
    b: &mut FunctionBuilder<'_>,
    cx: &Cx,
    last: &Op,
    to: u64,
    leave: Block,
    head: Block,
) {
    let (ex, cpu) = (cx.ex, cx.cpu(b));
    let icount0 = b.ins().load(
        I64,
        cpu_mem(),
        ex,
        ex_off(offset_of!(Exec<'static>, icount0)),
    );
    let icount = b.ins().iadd_imm_s(icount0, last.end as i64);
    // RIP first: `leave` reads it (an op that set RIP set it to `to`).
    super::emit_branch::store_rip_const(b, cpu, to);
    budget(b, ex, icount, leave);
    b.ins()
        .store(cpu_mem(), icount, cpu, cpu_off(offset_of!(Cpu, icount)));
    b.ins().store(
        cpu_mem(),
        icount,
        ex,
        ex_off(offset_of!(Exec<'static>, icount0)),
    );
    let local_off = ex_off(offset_of!(Exec<'static>, jit_local));
    let n = b.ins().load(I64, cpu_mem(), ex, local_off);
    let n = b.ins().iadd_imm_s(n, 1);
    b.ins().store(cpu_mem(), n, ex, local_off);
    b.ins().jump(head, &[]);
}
