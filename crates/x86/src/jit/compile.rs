//! The compile driver: a block's ops → one Cranelift function
//! `f(exec, cpu) -> u64` (see [`super::status`]), finalized into
//! executable memory. Each op is emitted inline (`emit`) or as a call to
//! its handler through [`super::call_op`] followed by a check of the
//! status it returns. Addresses (ops, the trampoline) are constants in
//! the code: a block's ops never move while it is cached, and the code is
//! freed with them.

use std::cell::{Cell, RefCell};
use std::sync::OnceLock;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{
    types::I32, types::I64, types::I8, AbiParam, Block, BlockArg, Function, InstBuilder, SigRef,
    Signature, UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

use super::code::Code;
use super::emit_branch::{self, Known};
use super::regs::{Regs, Snap};
use super::{call_op, emit, emit_alu_mem, emit_ext, emit_shift, emit_simd, status};
use crate::block::OpsRef;
use crate::exec::Op;

/// The host ISA, built once; None when Cranelift does not support it.
pub(super) fn isa() -> Option<&'static dyn TargetIsa> {
    static ISA: OnceLock<Option<cranelift_codegen::isa::OwnedTargetIsa>> = OnceLock::new();
    ISA.get_or_init(|| {
        let mut flags = settings::builder();
        // `FERROVISOR_JIT_OPT=none` skips Cranelift's e-graph pass
        // (cheaper compiles, plainer code); `speed` by default.
        let opt = match std::env::var("FERROVISOR_JIT_OPT").as_deref() {
            Ok("none") => "none",
            _ => "speed",
        };
        flags.set("opt_level", opt).ok()?;
        // `FERROVISOR_JIT_REGALLOC=single_pass` (cheaper compiles, more
        // spills); `backtracking` by default.
        let regalloc = match std::env::var("FERROVISOR_JIT_REGALLOC").as_deref() {
            Ok("single_pass") => "single_pass",
            _ => "backtracking",
        };
        flags.set("regalloc_algorithm", regalloc).ok()?;
        // The IR comes from this module alone and is checked by its tests.
        flags.set("enable_verifier", "false").ok()?;
        // Blocks tail-call their successors (`chain`): Cranelift's x86-64
        // tail calls need frame pointers.
        flags.set("preserve_frame_pointers", "true").ok()?;
        // The running `Cpu` lives in the pinned register (r15), set by
        // `super::enter`: compiled code neither spills it nor saves it.
        flags.set("enable_pinned_reg", "true").ok()?;
        // `super::enter` sets the pinned register by hand: x86-64 only.
        if !cfg!(target_arch = "x86_64") {
            return None;
        }
        let builder = cranelift_native::builder().ok()?;
        builder.finish(settings::Flags::new(flags)).ok()
    })
    .as_deref()
}

thread_local! {
    /// Reused between compilations (allocations only).
    static CTX: RefCell<(Context, FunctionBuilderContext)> =
        RefCell::new((Context::new(), FunctionBuilderContext::new()));
}

/// One member of a compile unit: a copy of its ops (what the compiler
/// reads), the address of the ops the code will run (what it embeds:
/// the cached block's, or the region copy's) and of its exit record.
pub(crate) struct Member {
    ops: Vec<Op>,
    base: u64,
    exits: u64,
}

/// What compiling a block reads, owned, so that it can be compiled on
/// another thread ([`super::worker`]) while the block's CPU runs on: the
/// hot block then the other members of its region, and the address of
/// the compiling CPU's thread's chain stub. The addresses are only
/// written into the code, never followed, by the compiler.
pub(crate) struct Unit {
    members: Vec<Member>,
    stub: u64,
    /// Whether members go on to members (region edges, a block's jump
    /// to itself) inside the code.
    edges: bool,
}

// SAFETY: the ops are plain data (copies); the addresses in a unit are
// never dereferenced by the thread that compiles it.
unsafe impl Send for Unit {}

impl Unit {
    /// The unit of `blk` and its region's copies, on the thread that will
    /// run the code: makes its trampoline, chain stub and the members'
    /// exit records. None when the host cannot run compiled code.
    ///
    /// # Safety
    ///
    /// `blk` is a live cached block (see `OpsRef::ops`), `region` blocks
    /// that live as long as the code will.
    pub(crate) unsafe fn new(blk: OpsRef, region: &[OpsRef], edges: bool) -> Option<Unit> {
        isa()?;
        // SAFETY: the caller's contract.
        let ops = unsafe { blk.ops() };
        if ops.is_empty() || ops.len() > u32::MAX as usize {
            return None;
        }
        // Blocks are entered through it (`super::enter`) and end in the
        // chain stub.
        trampoline()?;
        let stub = super::chain_emit::stub()? as u64;
        let members = std::iter::once(blk)
            .chain(region.iter().copied())
            .map(|m| {
                // SAFETY: the caller's contract: every member is alive.
                let (ops, rt) = unsafe { (m.ops(), m.rt()) };
                Member {
                    ops: ops.to_vec(),
                    base: m.addr(),
                    exits: rt.jit.exits(m) as *const super::exit::Exits as u64,
                }
            })
            .collect();
        Some(Unit {
            members,
            stub,
            edges,
        })
    }

    /// The hot block's first RIP and op count, and the region's size
    /// (the code's name in a perf map).
    pub(crate) fn name(&self) -> (u64, usize, usize) {
        let head = &self.members[0].ops;
        (head[0].ip, head.len(), self.members.len() - 1)
    }

    /// Ops compiled, the region's copies included.
    pub(crate) fn ops(&self) -> usize {
        self.members.iter().map(|m| m.ops.len()).sum()
    }
}

/// A compiled unit's machine code (position independent) and how many of
/// its ops call their handler (not inlined). Any thread; None when
/// Cranelift fails or the code would need relocations: the block then
/// stays with the interpreter.
pub(crate) fn machine_code(unit: &Unit) -> Option<(Vec<u8>, usize)> {
    let isa = isa()?;
    CTX.with(|cell| {
        let (ctx, fctx) = &mut *cell.borrow_mut();
        ctx.clear();
        let cc = isa.default_call_conv();
        ctx.func = Function::with_name_signature(UserFuncName::default(), block_sig());
        let called = build(&mut ctx.func, fctx, unit, cc, isa.frontend_config());
        let compiled = ctx.compile(isa, &mut ControlPlane::default()).ok()?;
        if !compiled.buffer.relocs().is_empty() {
            return None;
        }
        Some((compiled.code_buffer().to_vec(), called))
    })
}

/// Copies the machine code of each unit into executable memory at once
/// (`Code::many`), on the thread that runs it (see `code`), named in the
/// perf map. None for those the host refused.
pub(crate) fn install(all: &[(&Unit, &[u8])]) -> Vec<Option<Code>> {
    let bytes: Vec<&[u8]> = all.iter().map(|(_, b)| *b).collect();
    let codes = Code::many(&bytes);
    for ((unit, _), code) in all.iter().zip(&codes) {
        if let Some(code) = code {
            let (rip, n, more) = unit.name();
            super::perfmap::note(
                code.ptr(),
                code.bytes(),
                format_args!("guest_{rip:x}_{n}ops_{more}more"),
            );
        }
    }
    codes
}

/// What the emitters of one block share: the function's arguments, the
/// trampoline's signature and the early-exit block.
pub(super) struct Cx {
    pub ex: Value,
    /// Where the ops of the member being emitted live (the address
    /// `call_op` gets for op `i` is `base + i` ops).
    base: Cell<u64>,
    /// The running thread's chain stub.
    pub stub: u64,
    tsig: SigRef,
    /// `lazy_cond`'s signature.
    csig: SigRef,
    /// Where the running member of the region leaves early.
    early: Cell<Block>,
    /// The flags the last flag-writing op produced, when it was inline.
    pub known: Cell<Option<Known>>,
    /// Guest registers and the flags record cached in SSA values (`regs`).
    regs: RefCell<Regs>,
    /// Where the op just emitted sends RIP when it is an inline branch
    /// (`emit_branch`): a region's edges branch on it directly.
    pub branch: Cell<Option<Branch>>,
}

/// An inline branch's outcome: RIP becomes `yes` when `taken` (I8 0/1;
/// None: always) is set, else `no`.
#[derive(Clone, Copy)]
pub(super) struct Branch {
    pub taken: Option<Value>,
    pub yes: u64,
    pub no: u64,
}

impl Cx {
    /// The running `Cpu`: the pinned register (r15 on x86-64), which
    /// `super::enter` sets and no compiled code writes, read where it is
    /// used (a value kept across calls would take a callee-saved register
    /// or a stack slot).
    pub(super) fn cpu(&self, b: &mut FunctionBuilder<'_>) -> Value {
        b.ins().get_pinned_reg(I64)
    }

    /// Condition code `cc` as an I8 0/1: computed inline from the known
    /// flags of an inline producer, else read from the lazy flags in
    /// memory by a call to [`lazy_cond`] (no handler, no status check).
    pub(super) fn cond(&self, b: &mut FunctionBuilder<'_>, cc: u8) -> Value {
        if let Some(t) = self.known.get().and_then(|k| emit_branch::cond(b, k, cc)) {
            return t;
        }
        let cpu = self.cpu(b);
        self.regs.borrow_mut().flush_flags(b, cpu);
        let r = call_lazy_cond(b, self.csig, cpu, cc);
        b.ins().ireduce(I8, r)
    }

    /// GPR `r` (< 16), all 64 bits, from the block's cache (loaded from
    /// `Cpu` at its first read). Call it on the main line, not in an arm.
    pub(super) fn gpr(&self, b: &mut FunctionBuilder<'_>, r: u8) -> Value {
        let cpu = self.cpu(b);
        self.regs.borrow_mut().get(b, cpu, r)
    }

    /// GPR `r` (< 16), masked to `size` bytes (< 8) or whole.
    pub(super) fn gpr_sized(&self, b: &mut FunctionBuilder<'_>, r: u8, size: u32) -> Value {
        let v = self.gpr(b, r);
        if size < 8 {
            b.ins().band_imm_u(v, crate::flags::size_mask(size) as i64)
        } else {
            v
        }
    }

    /// `Exec::rset` of GPR `r` (< 16) for `size` bytes, in the cache.
    pub(super) fn set_gpr(&self, b: &mut FunctionBuilder<'_>, r: u8, size: u32, v: Value) {
        let cpu = self.cpu(b);
        self.regs.borrow_mut().set(b, cpu, r, size, v)
    }

    /// The op just emitted recorded `k` in the lazy flags (pending).
    pub(super) fn set_flags(&self, k: Known) {
        self.regs.borrow_mut().now.pending = Some(k);
    }

    /// The state a cold arm branching from here must store (the dirty
    /// registers and the pending flags record: stored in the cold arm, so
    /// that the main line stores a record only where it is still live).
    pub(super) fn snapshot(&self) -> Snap {
        self.regs.borrow().now
    }

    /// CF as it stands, for INC/DEC to keep in their record: I64 0/1
    /// when the known flags give it inline; else None, the record in
    /// memory made current (the pending one stored), from which
    /// `regs::record_flags` reads it when the INC/DEC record is stored.
    pub(super) fn kept_carry(&self, b: &mut FunctionBuilder<'_>) -> Option<Value> {
        if let Some(t) = self.known.get().and_then(|k| emit_branch::cond(b, k, 2)) {
            return Some(b.ins().uextend(I64, t));
        }
        let cpu = self.cpu(b);
        self.regs.borrow_mut().flush_flags(b, cpu);
        None
    }

    /// Stores every cached register and the pending flags, and forgets
    /// them: for code that reads `Cpu` directly (the SIMD emitters).
    pub(super) fn sync(&self, b: &mut FunctionBuilder<'_>) {
        let cpu = self.cpu(b);
        let mut r = self.regs.borrow_mut();
        r.flush(b, cpu);
        r.forget();
    }

    /// The end of a region member that may go on to a member's head:
    /// stores every cached register and the pending flags, then leaves
    /// the cache as every head expects it ([`Regs::at_head`]: `carried`
    /// registers Clean, loaded where a call-out forgot them, the others
    /// Uncached).
    fn settle(&self, b: &mut FunctionBuilder<'_>, carried: &[bool; 16]) {
        let cpu = self.cpu(b);
        let mut r = self.regs.borrow_mut();
        r.flush(b, cpu);
        r.settle(b, cpu, carried);
    }

    /// Stores the cached state, then emits a call to op `i`'s interpreter
    /// handler, leaving the function when it reports an exception or a
    /// block exit; continues in a new block with nothing cached.
    pub(super) fn call_handler(&self, b: &mut FunctionBuilder<'_>, i: usize) {
        self.sync(b);
        self.call_checked(b, i);
    }

    /// The cold arm of an inline access (branched to from the state
    /// `before`): stores that state, calls op `i`'s handler, then reloads
    /// `writes` (the registers the op may write) and whatever the fast
    /// arm cached, so that the join sees the fast arm's cache state.
    pub(super) fn slow_handler(
        &self,
        b: &mut FunctionBuilder<'_>,
        i: usize,
        before: &Snap,
        writes: &[u8],
    ) {
        let cpu = self.cpu(b);
        self.regs.borrow_mut().store(b, cpu, before);
        self.call_checked(b, i);
        let cpu = self.cpu(b);
        self.regs.borrow_mut().reload(b, cpu, before, writes);
    }

    /// Calls op `i` of the member being emitted: the op the code will
    /// run, at the member's base (the unit holds a copy of it).
    fn call_checked(&self, b: &mut FunctionBuilder<'_>, i: usize) {
        let f = b.ins().iconst(I64, call_op as *const () as i64);
        let at = self.base.get() + (i * std::mem::size_of::<Op>()) as u64;
        let p = b.ins().iconst(I64, at as i64);
        let call = b.ins().call_indirect(self.tsig, f, &[self.ex, p]);
        let st = b.inst_results(call)[0];
        let idx = b.ins().iconst(I64, i as i64);
        let next = b.create_block();
        b.ins().brif(
            st,
            self.early.get(),
            &[BlockArg::Value(st), BlockArg::Value(idx)],
            next,
            &[],
        );
        b.switch_to_block(next);
        b.seal_block(next);
    }
}

/// Emits a call of [`lazy_cond`] (signature `csig`) for condition `cc`
/// of the flags in memory: an I32 0/1.
pub(super) fn call_lazy_cond(
    b: &mut FunctionBuilder<'_>,
    csig: SigRef,
    cpu: Value,
    cc: u8,
) -> Value {
    let f = b.ins().iconst(I64, lazy_cond as *const () as i64);
    let c = b.ins().iconst(I32, cc as i64);
    let call = b.ins().call_indirect(csig, f, &[cpu, c]);
    b.inst_results(call)[0]
}

/// `LazyFlags::cond` of the CPU's flags, for compiled code.
///
/// # Safety
///
/// `cpu` is the running CPU.
unsafe extern "C" fn lazy_cond(cpu: *const u8, cc: u32) -> u32 {
    // SAFETY: the caller's contract; only read.
    let cpu = unsafe { &*(cpu as *const crate::Cpu) };
    cpu.state.flags.cond(cc as u8) as u32
}

/// A compiled block's signature: `(exec, cpu) -> result`, in the
/// `tail` convention so that a block can tail-call its successor (the
/// stack stays flat along a chain).
pub(super) fn block_sig() -> Signature {
    let mut sig = Signature::new(CallConv::Tail);
    sig.params.push(AbiParam::new(I64));
    sig.params.push(AbiParam::new(I64));
    sig.returns.push(AbiParam::new(I64));
    sig
}

/// The entry trampoline: `enter(exec, cpu, block) -> result` in the host's
/// C convention, calling a block (in the `tail` convention). One per
/// thread, compiled at its first use and never freed (see `code`: code
/// runs on the thread that compiled it).
pub(super) fn trampoline() -> Option<*const u8> {
    thread_local! {
        static T: std::cell::OnceCell<Option<Code>> = const { std::cell::OnceCell::new() };
    }
    T.with(|t| t.get_or_init(build_trampoline).as_ref().map(|c| c.ptr()))
}

fn build_trampoline() -> Option<Code> {
    let isa = isa()?;
    let mut sig = Signature::new(isa.default_call_conv());
    for _ in 0..3 {
        sig.params.push(AbiParam::new(I64));
    }
    sig.returns.push(AbiParam::new(I64));
    let mut ctx = Context::new();
    let mut fctx = FunctionBuilderContext::new();
    ctx.func = Function::with_name_signature(UserFuncName::default(), sig);
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let p = b.block_params(entry).to_vec();
        let bsig = b.import_signature(block_sig());
        let call = b.ins().call_indirect(bsig, p[2], &[p[0], p[1]]);
        let r = b.inst_results(call)[0];
        b.ins().return_(&[r]);
        b.finalize(isa.frontend_config());
    }
    let compiled = ctx.compile(isa, &mut ControlPlane::default()).ok()?;
    if !compiled.buffer.relocs().is_empty() {
        return None;
    }
    let code = Code::new(compiled.code_buffer())?;
    super::perfmap::note(code.ptr(), code.bytes(), format_args!("jit_trampoline"));
    Some(code)
}

/// The SIMD emitters read and write `Cpu` directly: the cache is
/// stored and forgotten first (no cost when the op is called out: the
/// handler call stores it anyway).
fn simd(b: &mut FunctionBuilder<'_>, cx: &Cx, op: &Op, i: usize) -> bool {
    cx.sync(b);
    emit_simd::inline(b, cx, op, i)
}

fn build(
    func: &mut Function,
    fctx: &mut FunctionBuilderContext,
    unit: &Unit,
    cc: cranelift_codegen::isa::CallConv,
    fcfg: cranelift_codegen::isa::TargetFrontendConfig,
) -> usize {
    let mut b = FunctionBuilder::new(func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let ex = b.block_params(entry)[0];

    let mut tsig = Signature::new(cc);
    tsig.params.push(AbiParam::new(I64));
    tsig.params.push(AbiParam::new(I64));
    tsig.returns.push(AbiParam::new(I32));
    let tsig = b.import_signature(tsig);
    let mut csig = Signature::new(cc);
    csig.params.push(AbiParam::new(I64));
    csig.params.push(AbiParam::new(I32));
    csig.returns.push(AbiParam::new(I32));
    let csig = b.import_signature(csig);

    // The hot block, then the other members of its region; each has its
    // head (where its ops start) and its early exit: (status, index of
    // the op) → the packed result.
    let members = &unit.members;
    let heads: Vec<Block> = members.iter().map(|_| b.create_block()).collect();
    let earlies: Vec<Block> = members
        .iter()
        .map(|_| {
            let e = b.create_block();
            b.append_block_param(e, I32);
            b.append_block_param(e, I64);
            b.set_cold_block(e);
            e
        })
        .collect();
    let starts: Vec<u64> = members
        .iter()
        .map(|m| m.ops.first().map_or(u64::MAX, |o| o.ip))
        .collect();
    // Each member's edges: the members its last op's target or
    // fall-through start.
    let targets: Vec<Vec<usize>> = members
        .iter()
        .map(|m| {
            let last = m.ops.last().filter(|_| unit.edges);
            let to = last.map_or([u64::MAX; 2], Op::successors);
            (0..members.len())
                .filter(|&s| to.contains(&starts[s]))
                .collect()
        })
        .collect();
    let cx = Cx {
        ex,
        base: Cell::new(0),
        stub: unit.stub,
        tsig,
        csig,
        early: Cell::new(earlies[0]),
        known: Cell::new(None),
        regs: RefCell::new(Regs::new(csig)),
        branch: Cell::new(None),
    };
    // The registers a region's members name stay in variables across its
    // edges (loaded once at the entry, Clean at every head); a unit
    // without edges carries none.
    let carried = if targets.iter().any(|t| !t.is_empty()) {
        named_gprs(members)
    } else {
        [false; 16]
    };
    {
        let cpu = cx.cpu(&mut b);
        cx.regs.borrow_mut().settle(&mut b, cpu, &carried);
    }
    b.ins().jump(heads[0], &[]);

    let mut called = 0;
    for (j, m) in members.iter().enumerate() {
        let ops = &m.ops[..];
        cx.base.set(m.base);
        b.switch_to_block(heads[j]);
        // At a head the carried registers are Clean, nothing else is
        // cached: the entry and every edge left it so (`Cx::settle`).
        cx.regs.borrow_mut().at_head(&carried);
        cx.early.set(earlies[j]);
        cx.known.set(None);
        super::exit::touch(&mut b, m.exits);
        for (i, op) in ops.iter().enumerate() {
            cx.branch.set(None);
            if !emit::inline(&mut b, &cx, op, i)
                && !emit_branch::inline(&mut b, &cx, op)
                && !emit_ext::inline(&mut b, &cx, op, i)
                && !emit_alu_mem::inline(&mut b, &cx, op, i)
                && !emit_shift::inline(&mut b, &cx, op)
                && !simd(&mut b, &cx, op, i)
            {
                cx.call_handler(&mut b, i);
                cx.known.set(None);
                called += 1;
                // What pays to inline next: `FERROVISOR_LOG=x86::jit=trace`.
                tracing::trace!(target: "x86::jit", code = ?op.insn.code(), "op called out");
            }
        }
        // Ran to its end: on to a member of the region when the next RIP
        // starts one, else chain to the successor's code when the run
        // loop would run it next (`chain_emit`, over the block's `exit`
        // record), else return to the run loop. `ops` is not empty
        // (`compile`, `region`).
        let last = &ops[ops.len() - 1];
        if targets[j].is_empty() {
            cx.sync(&mut b);
        } else {
            cx.settle(&mut b, &carried);
        }
        let member_at = |rip: u64| targets[j].iter().copied().find(|&s| starts[s] == rip);
        let branch = cx.branch.take();
        if let Some(br) = branch.filter(|_| !targets[j].is_empty()) {
            // An inline branch: straight to the member its outcome
            // starts (the edge stores RIP), or out through the stub with
            // RIP stored as a constant on the way.
            let leave = b.create_block();
            let arm = |b: &mut FunctionBuilder<'_>, rip: u64| {
                let e = b.create_block();
                (e, rip, member_at(rip))
            };
            let yes = arm(&mut b, br.yes);
            let no = match br.taken {
                Some(_) => arm(&mut b, br.no),
                None => yes,
            };
            match br.taken {
                Some(t) => {
                    b.ins().brif(t, yes.0, &[], no.0, &[]);
                }
                None => {
                    b.ins().jump(yes.0, &[]);
                }
            }
            let mut done = Vec::new();
            for (e, rip, s) in [yes, no] {
                if done.contains(&e) {
                    continue;
                }
                done.push(e);
                b.switch_to_block(e);
                match s {
                    Some(s) => super::chain_emit::edge(&mut b, &cx, last, rip, leave, heads[s]),
                    None => {
                        let cpu = cx.cpu(&mut b);
                        emit_branch::store_rip_const(&mut b, cpu, rip);
                        b.ins().jump(leave, &[]);
                    }
                }
            }
            b.switch_to_block(leave);
        } else if let Some(br) = branch {
            emit_branch::store_rip(&mut b, &cx, &br);
        } else if !targets[j].is_empty() {
            let leave = b.create_block();
            let nrip = if last.sets_rip {
                let cpu = cx.cpu(&mut b);
                b.ins().load(
                    I64,
                    cranelift_codegen::ir::MemFlagsData::trusted(),
                    cpu,
                    emit_branch::rip_off(),
                )
            } else {
                b.ins().iconst(I64, last.next as i64)
            };
            for &s in &targets[j] {
                let edge = b.create_block();
                let other = b.create_block();
                let hit = b.ins().icmp_imm_u(
                    cranelift_codegen::ir::condcodes::IntCC::Equal,
                    nrip,
                    starts[s] as i64,
                );
                b.ins().brif(hit, edge, &[], other, &[]);
                b.switch_to_block(edge);
                super::chain_emit::edge(&mut b, &cx, last, starts[s], leave, heads[s]);
                b.switch_to_block(other);
            }
            b.ins().jump(leave, &[]);
            b.switch_to_block(leave);
        }
        super::chain_emit::tail(&mut b, &cx, last, ops.len(), m.exits as i64);
    }

    for (j, &e) in earlies.iter().enumerate() {
        b.switch_to_block(e);
        // The run loop finishes the block that left the chain.
        super::exit::set_cur(&mut b, &cx, members[j].base, members[j].ops.len());
        let st = b.block_params(e)[0];
        let idx = b.block_params(e)[1];
        // EXIT: the op ran (done = idx + 1); FAULT: it did not (done = idx).
        let st64 = b.ins().uextend(I64, st);
        let ran = b.ins().icmp_imm_u(
            cranelift_codegen::ir::condcodes::IntCC::Equal,
            st64,
            status::EXIT as i64,
        );
        let ran = b.ins().uextend(I64, ran);
        let done = b.ins().iadd(idx, ran);
        let hi = b.ins().ishl_imm_u(st64, 32);
        let r = b.ins().bor(hi, done);
        b.ins().return_(&[r]);
    }
    b.seal_all_blocks();
    b.finalize(fcfg);
    called
}

/// The GPRs the ops of `members` name as operands, base or index (what a
/// region carries in variables across its edges).
fn named_gprs(members: &[Member]) -> [bool; 16] {
    let mut named = [false; 16];
    for op in members.iter().flat_map(|m| &m.ops) {
        for r in [op.r0, op.r1, op.base, op.index] {
            if let Some(x) = named.get_mut(r as usize) {
                *x = true;
            }
        }
    }
    named
}
