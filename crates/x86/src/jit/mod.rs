//! A Cranelift JIT for hot blocks (issue 11, phase 1).
//!
//! A block that has run [`HOT`] times whole is compiled into one host
//! function behind the existing block interface: it takes the `Exec` and
//! the `Cpu` and returns how the block ended ([`ran`]). Guest state stays
//! in the CPU structure in memory (nothing is cached in host registers
//! across instructions), so every instruction boundary is an exact guest
//! state:
//! - the common integer forms are emitted inline (`emit`), with the
//!   interpreter's lazy-flags representation;
//! - the SSE/AVX integer forms glibc's string functions run are emitted
//!   inline with Cranelift's vector types (`emit_simd`);
//! - every other op calls its interpreter handler (`Op::h`) through
//!   [`call_op`]; on an exception the function returns at once with the
//!   op's index, and the interpreter's block epilogue raises it with RIP
//!   and the retired count exact.
//!
//! A block that runs to its end chains to its successor's code when the
//! run loop would run it next ([`chain`], phase 3): a tail call, without
//! returning to the run loop; the common case of that step is made by
//! the chain stub (`chain_emit`, phases 4 and 5) over the block's exit
//! record (`exit`, phase 5), the rest by `chain::next`.
//!
//! Compiled code lives in the block's first op ([`Slot`]): it is freed
//! with the block's ops (self-modifying code, another CPU's write,
//! eviction, flush: the block cache's graveyard), and its host bytes count
//! in the code cache bound. Blocks cut short by the instruction budget,
//! debug stepping and the uncached (scratch) block run in the interpreter.

pub(crate) mod chain;
mod chain_emit;
mod code;
mod compile;
mod dispatch;
mod emit;
mod emit_alu_mem;
mod emit_branch;
mod emit_ext;
mod emit_mem;
mod emit_shift;
mod emit_simd;
mod emit_simd_access;
mod emit_simd_gpr;
pub(crate) mod emit_simd_ops;
mod exit;
pub mod perfmap;
pub(crate) mod region;
mod regs;
pub mod worker;

use std::cell::{Cell, OnceCell};
use std::sync::OnceLock;

use crate::exec::{Exec, Op};

pub(crate) use dispatch::Pending;
#[cfg(test)]
pub(crate) use exit::Exits as ExitRecord;
pub use worker::Compiler;

/// Runs of a block (whole, by the interpreter) before it is compiled.
/// Measured on the test guest (docs/PERFORMANCE.md, "The JIT, phase
/// 4"): at 32 the boot compiled ~50 000 blocks and took twice the
/// interpreter's time (Cranelift half of its samples); 2048 boots faster
/// than the interpreter and runs the shell loop fastest of 32, 512, 2048
/// and 8192.
pub(crate) const HOT: u32 = 2048;

/// The compile threshold: `FERROVISOR_JIT_HOT` (runs, at least 1) when
/// set, else [`HOT`]; read once per process.
pub(crate) fn hot() -> u32 {
    static N: OnceLock<u32> = OnceLock::new();
    *N.get_or_init(|| knob("FERROVISOR_JIT_HOT", HOT))
}

/// A positive tuning knob: the environment variable `name` as a number
/// (at least 1) when set and valid, else `default`.
pub(crate) fn knob<T: std::str::FromStr + Ord + From<u8>>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<T>().ok())
        .map_or(default, |n| n.max(T::from(1)))
}

/// Which engine runs guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// The interpreter alone.
    Interp,
    /// Hot blocks compiled with Cranelift; the interpreter for the rest.
    #[default]
    Jit,
}

impl Engine {
    /// The engine `FERROVISOR_EMU_ENGINE` (`interp` or `jit`) asks for,
    /// read once per process; the JIT when unset (the interpreter where
    /// Cranelift has no backend for the host), the interpreter when
    /// unknown.
    pub fn from_env() -> Engine {
        static ENGINE: OnceLock<Engine> = OnceLock::new();
        *ENGINE.get_or_init(|| match std::env::var("FERROVISOR_EMU_ENGINE").as_deref() {
            Ok("jit") | Err(_) if Engine::jit_available() => Engine::Jit,
            Ok("interp") | Ok("jit") | Err(_) => Engine::Interp,
            Ok(other) => {
                tracing::warn!("FERROVISOR_EMU_ENGINE={other}: not interp or jit; using interp");
                Engine::Interp
            }
        })
    }

    /// Whether the JIT can run on this host (Cranelift has a backend for it).
    pub fn jit_available() -> bool {
        compile::isa().is_some()
    }
}

/// A compiled block's code: `f(exec, cpu) -> result` in Cranelift's
/// `tail` convention, run with [`enter`].
#[derive(Clone, Copy)]
pub(crate) struct Entry(*const u8);

impl Entry {
    pub(crate) fn addr(self) -> u64 {
        self.0 as u64
    }

    /// The entry at `addr` (from [`Entry::addr`]).
    pub(crate) fn at(addr: u64) -> Entry {
        Entry(addr as *const u8)
    }
}

/// Runs a compiled block (and the blocks it chains to) through this
/// thread's entry trampoline; returns the result of the last block
/// ([`ran`]), whose ops are `Exec::jit_cur`.
///
/// # Safety
///
/// `f` was compiled on this thread and is alive; `ex` is the running
/// `Exec` and `cpu` its CPU.
///
/// The trampoline is a System V function `(ex, cpu, f)`, called here with
/// the CPU in the pinned register (r15) too, where compiled code reads
/// it; r15 is callee-saved for the System V caller, but not in code
/// compiled with a pinned register: hence the call from assembly, which
/// declares it clobbered.
#[inline]
pub(crate) unsafe fn enter(f: Entry, ex: *mut u8, cpu: *mut u8) -> u64 {
    // A block is compiled only after the trampoline was (`compile`).
    let Some(t) = compile::trampoline() else {
        unreachable!("a compiled block without a trampoline")
    };
    #[cfg(target_arch = "x86_64")]
    {
        let r: u64;
        // SAFETY: the trampoline was compiled with this signature and
        // follows the C ABI but for r15 (clobbered, declared so); the
        // caller's contract covers the block.
        unsafe {
            std::arch::asm!(
                "call {t}",
                t = in(reg) t,
                in("rdi") ex,
                in("rsi") cpu,
                in("rdx") f.0,
                inout("r15") cpu => _,
                lateout("rax") r,
                clobber_abi("C"),
            );
        }
        r
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // `compile::isa` compiles nothing on other hosts.
        let _ = (f, ex, cpu, t);
        unreachable!("compiled code on a host without a pinned register")
    }
}

/// What a compiled block returns: the number of ops that ran in the low
/// 32 bits, the [`status`] of the last one in the high bits.
pub(crate) mod status {
    // 0: the block ran to its end.
    /// An op set `block_exit`: it ran and counts as done.
    pub const EXIT: u32 = 1;
    /// An op raised an exception (in `Exec::jit_err`): it did not run.
    pub const FAULT: u32 = 2;
}

/// Splits a compiled block's result into (ops done, status).
#[inline]
pub(crate) fn ran(r: u64) -> (usize, u32) {
    (r as u32 as usize, (r >> 32) as u32)
}

/// The JIT state of a block (in its `opbuf::BlockRt`).
#[derive(Default)]
pub(crate) struct Slot {
    /// Whole runs so far (saturates past [`HOT`]).
    runs: Cell<u32>,
    code: OnceCell<code::Code>,
    /// The successors the compiled code chains to ([`exit`]), made with
    /// the code (its address is a constant in it).
    exits: OnceCell<Box<exit::Exits>>,
    /// Copies of the other blocks of the code's region ([`region`]),
    /// which the code runs (their ops' addresses are constants in it).
    region: OnceCell<Box<[crate::opbuf::OpBuf]>>,
}

impl Clone for Slot {
    /// A copy of an op is not compiled.
    fn clone(&self) -> Slot {
        Slot::default()
    }
}

impl Slot {
    /// The compiled function, if any.
    #[inline]
    pub(crate) fn entry(&self) -> Option<Entry> {
        let c = self.code.get()?;
        // The code stays mapped while the slot (the block's ops) lives.
        Some(Entry(c.ptr()))
    }

    /// Whole runs so far (saturated at the compile threshold).
    pub(crate) fn runs(&self) -> u32 {
        self.runs.get()
    }

    /// Counts a whole run; true exactly once, when the block has run
    /// `hot` times.
    #[inline]
    pub(crate) fn bump(&self, hot: u32) -> bool {
        let n = self.runs.get();
        if n >= hot {
            return false;
        }
        self.runs.set(n + 1);
        n + 1 == hot
    }

    /// Host bytes of compiled code (with its exit records and its
    /// region's copies).
    pub(crate) fn code_bytes(&self) -> usize {
        let region = self.region.get().map_or(0, |r| {
            r.iter()
                .map(|b| b.bytes() + std::mem::size_of::<exit::Exits>())
                .sum()
        });
        self.code
            .get()
            .map_or(0, |c| c.bytes() + std::mem::size_of::<exit::Exits>())
            + region
    }

    /// Installs compiled code and the copies of its region's other
    /// blocks; returns their host bytes ([`Slot::code_bytes`]).
    pub(crate) fn set(&self, code: code::Code, region: Vec<crate::opbuf::OpBuf>) -> usize {
        if self.code.set(code).is_err() {
            return 0;
        }
        if !region.is_empty() {
            let _ = self.region.set(region.into_boxed_slice());
        }
        self.code_bytes()
    }

    /// The exit record of the block `blk` (whose slot this is), made at
    /// its first use (compiling).
    pub(super) fn exits(&self, blk: crate::block::OpsRef) -> &exit::Exits {
        self.exits.get_or_init(|| Box::new(exit::Exits::new(blk)))
    }

    /// The exit record, if the block was compiled.
    #[cfg(test)]
    pub(super) fn exits_made(&self) -> Option<&exit::Exits> {
        self.exits.get().map(|b| &**b)
    }
}

/// Calls an op's interpreter handler from compiled code: returns a
/// [`status`]; an exception is left in `Exec::jit_err`.
///
/// # Safety
///
/// `ex` is the running `Exec` and `op` an op of the running block.
pub(crate) unsafe extern "C" fn call_op(ex: *mut u8, op: *const Op) -> u32 {
    // SAFETY: the caller's contract; the compiled block holds no other
    // reference to either while the handler runs.
    let (ex, op) = unsafe { (&mut *(ex as *mut Exec<'static>), &*op) };
    let r = (op.h)(ex, op);
    // A handler may change the chain key (CR3, INVLPG, a code write, the
    // privilege): the chain stub reads it from here, and the block ends
    // after the op, so that compiled code never goes on (along a
    // region's edges, `region`) under a key it was not entered under.
    let key = ex.chain_key();
    if key != ex.jit_watch.key {
        ex.jit_watch.key = key;
        ex.c.block_exit = true;
    }
    match r {
        Ok(()) => ex.c.block_exit as u32,
        Err(e) => {
            ex.jit_err = Some(e);
            status::FAULT
        }
    }
}
