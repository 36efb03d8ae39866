//! Guest registers and the lazy-flags record kept in SSA values within a
//! compiled block (issue 11, phase 6), as TCG's "globals".
//!
//! Each GPR is Uncached (its value is in `Cpu`), Clean (a Cranelift
//! `Variable` holds the value `Cpu` holds) or Dirty (the variable holds
//! it, `Cpu` an older one). The flags record the interpreter would have
//! stored last, when an inline op produced it, is *pending*: its values
//! are kept and stored only when something may read `Cpu`. A record
//! overwritten by a later inline producer with no reader in between is
//! never stored.
//!
//! Rules the emitters follow (so that every use of a variable is defined
//! on every path to it, and `Cpu` is exact wherever Rust may read it):
//! - registers are brought into the cache on the main line of the block,
//!   before any conditional arm ([`Regs`] is a compile-time state: an
//!   arm that cached a register would leave it undefined on the other
//!   path; `slow_handler` reloads, defensively, any register the fast arm
//!   cached);
//! - before a handler call on the main line ([`super::compile::Cx::call_handler`])
//!   everything is stored, and afterwards every register is Uncached;
//! - the cold arm of an inline memory access ([`super::compile::Cx::slow_handler`])
//!   stores the state *of the branch point* (a snapshot), runs the
//!   handler, and reloads the registers it may have written: both arms
//!   then agree with the fast arm's state at the join (storing a Clean
//!   value again later is harmless);
//! - `lazy_cond` reads the flags: the pending record is stored first;
//!   the cold arm of an inline memory access stores it with the
//!   snapshot (so that the main line stores a record only where it is
//!   still live: most are overwritten by the next producer);
//! - an INC/DEC record keeps CF: from the known flags inline, else from
//!   the record in memory, read when the INC/DEC record is stored (the
//!   one before it is then still there: [`super::compile::Cx::kept_carry`]);
//! - the block's end stores everything before the chain stub; a region
//!   member's end ([`Regs::settle`]) keeps the registers the region
//!   carries Clean in their variables across the edge (loaded once at
//!   the entry), as every member's head expects them ([`Regs::at_head`]).
//!
//! So a fault inside op i sees exactly the state after op i-1.

use cranelift_codegen::ir::{
    condcodes::IntCC, types::I64, types::I8, BlockArg, InstBuilder, MemFlagsData, SigRef, Value,
};
use cranelift_frontend::{FunctionBuilder, Variable};

use super::emit_branch::Known;
use crate::flags::{size_mask, FlagOp, LazyFlags};
use crate::Cpu;

/// Byte offset of GPR `r` in `Cpu`.
pub(super) fn gpr_off(r: u8) -> i32 {
    (std::mem::offset_of!(Cpu, state)
        + std::mem::offset_of!(crate::state::CpuState, gpr)
        + 8 * r as usize) as i32
}

/// Byte offset of the lazy flags in `Cpu`.
pub(super) fn flags_off() -> usize {
    std::mem::offset_of!(Cpu, state) + std::mem::offset_of!(crate::state::CpuState, flags)
}

fn mem() -> MemFlagsData {
    MemFlagsData::trusted()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Slot {
    Uncached,
    Clean,
    Dirty,
}

/// What must reach `Cpu` at a point of the block: the dirty registers
/// and the pending flags record.
#[derive(Clone, Copy)]
pub(super) struct Snap {
    pub slot: [Slot; 16],
    pub pending: Option<Known>,
}

/// The compile-time cache state of a block being built.
pub(super) struct Regs {
    pub now: Snap,
    var: [Option<Variable>; 16],
    /// `lazy_cond`'s signature (an INC/DEC record's kept carry).
    csig: SigRef,
}

impl Regs {
    pub(super) fn new(csig: SigRef) -> Regs {
        Regs {
            csig,
            now: Snap {
                slot: [Slot::Uncached; 16],
                pending: None,
            },
            var: [None; 16],
        }
    }

    /// GPR `r`'s variable, declared at its first use.
    pub(super) fn var(&mut self, b: &mut FunctionBuilder<'_>, r: u8) -> Variable {
        *self.var[r as usize].get_or_insert_with(|| b.declare_var(I64))
    }

    /// GPR `r` (< 16), all 64 bits: cached from `Cpu` at its first read.
    pub(super) fn get(&mut self, b: &mut FunctionBuilder<'_>, cpu: Value, r: u8) -> Value {
        let v = self.var(b, r);
        if self.now.slot[r as usize] == Slot::Uncached {
            let x = b.ins().load(I64, mem(), cpu, gpr_off(r));
            b.def_var(v, x);
            self.now.slot[r as usize] = Slot::Clean;
        }
        b.use_var(v)
    }

    /// `Exec::rset` of GPR `r` (< 16) for `size` bytes: 8 sets the value,
    /// 4 its low half zero-extended, 1 and 2 merge it into the register's
    /// low byte or word (which must be cached already when this runs in
    /// an arm).
    pub(super) fn set(
        &mut self,
        b: &mut FunctionBuilder<'_>,
        cpu: Value,
        r: u8,
        size: u32,
        v: Value,
    ) {
        let m = size_mask(size);
        let v = match size {
            8 => v,
            4 => b.ins().band_imm_u(v, m as i64),
            _ => {
                let old = self.get(b, cpu, r);
                let keep = b.ins().band_imm_u(old, !m as i64);
                let low = b.ins().band_imm_u(v, m as i64);
                b.ins().bor(keep, low)
            }
        };
        let var = self.var(b, r);
        b.def_var(var, v);
        self.now.slot[r as usize] = Slot::Dirty;
    }

    /// Stores what `s` says must reach `Cpu`, with the variables' values
    /// where this code is; changes no state.
    pub(super) fn store(&mut self, b: &mut FunctionBuilder<'_>, cpu: Value, s: &Snap) {
        for r in 0..16u8 {
            if s.slot[r as usize] == Slot::Dirty {
                let var = self.var(b, r);
                let v = b.use_var(var);
                b.ins().store(mem(), v, cpu, gpr_off(r));
            }
        }
        if let Some(k) = &s.pending {
            record_flags(b, cpu, k, self.csig);
        }
    }

    /// Stores everything: afterwards `Cpu` is exact and the cache clean.
    pub(super) fn flush(&mut self, b: &mut FunctionBuilder<'_>, cpu: Value) {
        let s = self.now;
        self.store(b, cpu, &s);
        for x in &mut self.now.slot {
            if *x == Slot::Dirty {
                *x = Slot::Clean;
            }
        }
        self.now.pending = None;
    }

    /// Stores the pending flags record alone (before `lazy_cond`).
    pub(super) fn flush_flags(&mut self, b: &mut FunctionBuilder<'_>, cpu: Value) {
        if let Some(k) = self.now.pending.take() {
            record_flags(b, cpu, &k, self.csig);
        }
    }

    /// After Rust code ran that may have written any register or the
    /// flags (everything was stored before it): nothing is cached.
    pub(super) fn forget(&mut self) {
        self.now.slot = [Slot::Uncached; 16];
        self.now.pending = None;
    }

    /// Leaves the cache as a region's heads expect it: the `carried`
    /// registers Clean (loaded when Uncached), the others Uncached.
    /// Nothing may be Dirty or pending (stored first: `flush`).
    pub(super) fn settle(&mut self, b: &mut FunctionBuilder<'_>, cpu: Value, carried: &[bool; 16]) {
        debug_assert!(self.now.pending.is_none());
        for r in 0..16u8 {
            debug_assert!(self.now.slot[r as usize] != Slot::Dirty);
            if carried[r as usize] {
                self.get(b, cpu, r);
            } else {
                self.now.slot[r as usize] = Slot::Uncached;
            }
        }
    }

    /// The cache state at a region member's head (what `settle` left on
    /// every path to it).
    pub(super) fn at_head(&mut self, carried: &[bool; 16]) {
        for (slot, &c) in self.now.slot.iter_mut().zip(carried) {
            *slot = if c { Slot::Clean } else { Slot::Uncached };
        }
        self.now.pending = None;
    }

    /// In a cold arm after a handler ran (from the state `before`, which
    /// was stored): reloads the registers in `writes` and those the fast
    /// arm (whose state is `self.now`) cached after the branch, so that
    /// the variables hold `Cpu`'s values at the join.
    pub(super) fn reload(
        &mut self,
        b: &mut FunctionBuilder<'_>,
        cpu: Value,
        before: &Snap,
        writes: &[u8],
    ) {
        for r in 0..16u8 {
            let cached = self.now.slot[r as usize] != Slot::Uncached;
            let fresh = before.slot[r as usize] == Slot::Uncached;
            if cached && (fresh || writes.contains(&r)) {
                let var = self.var(b, r);
                let x = b.ins().load(I64, mem(), cpu, gpr_off(r));
                b.def_var(var, x);
            }
        }
    }
}

/// `LazyFlags::record(kind, size, a, b, res, aux)` in IR (aux: the kept
/// carry of INC/DEC, the CF/OF bits of a `Szp` record, else 0). An
/// INC/DEC record without its carry (`Cx::kept_carry`) takes CF from the
/// record in memory, the one before it, through `lazy_cond` (`csig`).
pub(super) fn record_flags(b: &mut FunctionBuilder<'_>, cpu: Value, k: &Known, csig: SigRef) {
    let kept = match (k.kind, k.cf) {
        (FlagOp::Inc | FlagOp::Dec, None) => Some(carry_in_memory(b, cpu, csig)),
        (_, cf) => cf,
    };
    let (fop, mask, a, bv, r, aux) = (k.kind, size_mask(k.size), k.a, k.b, k.r, kept);
    let l = LazyFlags::LAYOUT;
    let base = flags_off();
    let off = |f: usize| (base + f) as i32;
    let k = b.ins().iconst(I8, fop as u8 as i64);
    b.ins().store(mem(), k, cpu, off(l.op));
    let mv = b.ins().iconst(I64, mask as i64);
    b.ins().store(mem(), mv, cpu, off(l.mask));
    b.ins().store(mem(), a, cpu, off(l.a));
    b.ins().store(mem(), bv, cpu, off(l.b));
    b.ins().store(mem(), r, cpu, off(l.res));
    let aux = match aux {
        Some(v) => v,
        None => b.ins().iconst(I64, 0),
    };
    b.ins().store(mem(), aux, cpu, off(l.aux));
}

/// `LazyFlags::cf` of the record in memory, I64 0/1: inline for the
/// records a kept carry mostly follows (SUB/CMP: a < b; ADD: res < a;
/// AND/OR/XOR/TEST: 0; INC/DEC: the carry they kept), through
/// `lazy_cond` (`csig`) for the others.
fn carry_in_memory(b: &mut FunctionBuilder<'_>, cpu: Value, csig: SigRef) -> Value {
    let l = LazyFlags::LAYOUT;
    let off = |f: usize| (flags_off() + f) as i32;
    let join = b.create_block();
    b.append_block_param(join, I64);
    let kind = b.ins().uload8(I64, mem(), cpu, off(l.op));
    // Goes to a new block computing `cf` when the kind is `k`, else on.
    let case = |b: &mut FunctionBuilder<'_>,
                k: &[FlagOp],
                cf: &dyn Fn(&mut FunctionBuilder<'_>) -> Value| {
        let (this, other) = (b.create_block(), b.create_block());
        let mut is = b.ins().iconst(I8, 0);
        for &k in k {
            let e = b.ins().icmp_imm_u(IntCC::Equal, kind, k as u8 as i64);
            is = b.ins().bor(is, e);
        }
        b.ins().brif(is, this, &[], other, &[]);
        b.switch_to_block(this);
        b.seal_block(this);
        let v = cf(b);
        b.ins().jump(join, &[BlockArg::Value(v)]);
        b.switch_to_block(other);
        b.seal_block(other);
    };
    // x < y over the record's operands masked to its size.
    let below = |b: &mut FunctionBuilder<'_>, x: usize, y: usize| {
        let m = b.ins().load(I64, mem(), cpu, off(l.mask));
        let x = b.ins().load(I64, mem(), cpu, off(x));
        let y = b.ins().load(I64, mem(), cpu, off(y));
        let x = b.ins().band(x, m);
        let y = b.ins().band(y, m);
        let c = b.ins().icmp(IntCC::UnsignedLessThan, x, y);
        b.ins().uextend(I64, c)
    };
    case(b, &[FlagOp::Sub], &|b| below(b, l.a, l.b));
    case(b, &[FlagOp::Add], &|b| below(b, l.res, l.a));
    case(b, &[FlagOp::Logic], &|b| b.ins().iconst(I64, 0));
    case(b, &[FlagOp::Inc, FlagOp::Dec], &|b| {
        let aux = b.ins().load(I64, mem(), cpu, off(l.aux));
        let c = b.ins().icmp_imm_u(IntCC::NotEqual, aux, 0);
        b.ins().uextend(I64, c)
    });
    // The current block is cold: the other kinds.
    let cur = b.current_block().expect("in a block");
    b.set_cold_block(cur);
    let c = super::compile::call_lazy_cond(b, csig, cpu, 2);
    let c = b.ins().uextend(I64, c);
    b.ins().jump(join, &[BlockArg::Value(c)]);
    b.switch_to_block(join);
    b.seal_block(join);
    b.block_params(join)[0]
}
