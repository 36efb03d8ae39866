//! The interpreter: the run loop, block fetch/decode, operand access and
//! instruction dispatch. Instruction classes live in the submodules.

mod alu;
mod avx;
mod control;
mod fast;
mod mmx;
pub(crate) mod op;
mod pause;
mod seg;
mod sem;
pub(crate) mod simd;
mod sse;
mod sse4;
mod ssefp;
mod string;
mod system;
mod x87;
mod xsave;

#[cfg(test)]
pub(crate) mod x87_conv {
    pub use super::x87::{f64_to_f80, f80_to_f64};
}

use hv::ExitReason;
use iced_x86::{
    Decoder, DecoderError, DecoderOptions, EncodingKind, FlowControl, Instruction, Mnemonic,
    OpKind, Register,
};

use crate::block::{Block, OpsRef, MAX_BLOCK_INSNS};
use crate::counters::BlockDrop;
use crate::exception::{gp, ud, R};
use crate::mmu::AccessKind;
use crate::state::{Mode, CS};
use crate::{Bus, Cpu, CpuExit, CpuSignals};
pub use op::Op;
pub(crate) use pause::PauseLoop;
#[cfg(test)]
pub(crate) use pause::PLE_WINDOW;

/// The execution context: the CPU and the bus it runs against.
pub(crate) struct Exec<'a> {
    pub c: &'a mut Cpu,
    pub bus: &'a mut dyn Bus,
    /// `c.icount` when the running block started (the count is stored
    /// back when the block ends; the generic handler syncs it first).
    pub icount0: u64,
    /// The exception an op raised inside a compiled block.
    pub jit_err: Option<crate::exception::Exc>,
    /// The ops of the compiled block running (or that ran last), which a
    /// chain of compiled blocks moves along (`jit::chain`).
    pub jit_cur: OpsRef,
    /// The retired count the running compiled chain may not pass, and
    /// the blocks it may still run.
    pub jit_limit: u64,
    pub jit_chain_left: u32,
    /// Internal edges of regions taken by the running chain
    /// (`jit::region`).
    pub jit_local: u64,
    /// What the inline chain step of compiled code watches.
    pub jit_watch: crate::jit::chain::Watch,
}

/// A destination operand resolved once for read-modify-write.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dst {
    Reg(Register),
    /// Linear address (segmentation already checked for writing).
    Mem(u64),
}

#[inline]
pub(crate) fn ip_mask(bits: u32) -> u64 {
    match bits {
        64 => u64::MAX,
        32 => 0xffff_ffff,
        _ => 0xffff,
    }
}

impl<'a> Exec<'a> {
    pub(crate) fn new(c: &'a mut Cpu, bus: &'a mut dyn Bus) -> Exec<'a> {
        let icount0 = c.icount;
        Exec {
            c,
            bus,
            icount0,
            jit_err: None,
            jit_cur: OpsRef::EMPTY,
            jit_limit: 0,
            jit_chain_left: 0,
            jit_local: 0,
            jit_watch: crate::jit::chain::Watch::NONE,
        }
    }
}

impl Exec<'_> {
    // ------------------------------------------------------------ run loop

    pub(crate) fn run(&mut self, max: u64) -> CpuExit {
        let limit = self.c.icount.saturating_add(max);
        // Rounds of this loop that retired nothing (an event delivered: a
        // fault whose handler faults at once can go on forever, in real
        // mode where the stack wraps) count toward the budget too, so a
        // run always ends (the caller then sees the guest stuck at the
        // same RIP, as on hardware).
        let (mut last, mut stalled) = (self.c.icount, 0u64);
        loop {
            if self.c.icount == last {
                stalled += 1;
            }
            last = self.c.icount;
            // No block runs here: free the ops of dropped blocks.
            self.c.blocks.collect_garbage();
            if let Some(e) = self.c.pending_exit.take() {
                return e;
            }
            if self.c.state.halted {
                return CpuExit::Halt;
            }
            if self.c.signals.pending() {
                let bits = self.c.signals.take();
                if bits & CpuSignals::FLUSH != 0 {
                    let causes = self.c.signals.take_causes();
                    self.c.flush_for(causes);
                }
                // A kick is counted by whoever asked for it (the
                // accelerator knows a VMM kick from its own wake-ups).
                if bits & CpuSignals::KICK != 0 {
                    return CpuExit::Interrupted;
                }
            }
            self.sync_code_share();
            if self.c.jit_inbox.ready() {
                self.jit_install();
            }
            if (self.c.want_interrupt_window && self.c.can_inject_interrupt())
                || (self.c.want_nmi_window && self.c.can_inject_nmi())
            {
                self.vm_exit(
                    ExitReason::InterruptWindow,
                    tracepoints::VmxExit::InterruptWindow,
                    0,
                );
                return CpuExit::InterruptWindow;
            }
            if self.c.icount >= limit || stalled > max {
                return CpuExit::InstructionLimit;
            }
            // What changes the data bank (CPL, EFLAGS.AC, CR4.SMAP) sets
            // `block_exit`, which brings the run back here: the bank holds
            // until then.
            self.c.dbank = self.data_bank(self.c.state.cpl == 3);
            // Likewise for what turns debugging on (TF, RF, DR7).
            if self.debug_active() {
                if self.c.debugger.active {
                    self.step_debugger();
                } else {
                    self.step_debug();
                }
                continue;
            }
            // Inside an interrupt shadow with a window requested: one
            // instruction at a time, so the window is seen as soon as it opens.
            let shadow = self.c.shadow_icount == self.c.icount;
            if shadow
                && ((self.c.want_interrupt_window && self.c.state.if_set())
                    || (self.c.want_nmi_window && !self.c.state.nmi_blocked))
            {
                self.run_block(self.c.icount + 1);
                continue;
            }
            self.run_chain(limit);
        }
    }

    /// Catches up with code writes and new code pages of the other CPUs.
    #[inline]
    fn sync_code_share(&mut self) {
        let share = &self.c.code_share;
        let e = share.epoch();
        if e != self.c.seen_code_epoch {
            match share.since(self.c.seen_code_epoch) {
                crate::smc::CatchUp::Pages(pages) => {
                    for p in pages {
                        self.c.blocks.invalidate_page(p, BlockDrop::RemoteWrite);
                    }
                }
                crate::smc::CatchUp::All => self.c.blocks.clear(),
            }
            self.c.seen_code_epoch = e;
        }
        let r = self.c.code_share.revoke_epoch();
        if r != self.c.seen_revoke {
            self.c.tlb.revoke_all_writes();
            self.c.seen_revoke = r;
        }
    }

    /// Runs one block (used inside an interrupt shadow, and with a budget
    /// of one instruction by the debug stepper).
    pub(crate) fn run_block(&mut self, limit: u64) {
        match self.get_block() {
            // SAFETY: the block cache frees op buffers only in
            // collect_garbage, which `run` calls between blocks.
            Ok(ops) => _ = unsafe { self.exec_ops(ops, limit) },
            Err(e) => self.raise(e),
        }
    }

    /// Runs block after block while nothing needs a look from `run`: no
    /// exit or mode change asked for by an instruction, no signal, no code
    /// written by another CPU, budget left. A block's successor is found
    /// through the link in its last op when the chain key still matches,
    /// else through the jump cache (and the link is updated).
    fn run_chain(&mut self, limit: u64) {
        let mut ops = match self.get_block() {
            Ok(ops) => ops,
            Err(e) => return self.raise(e),
        };
        loop {
            // SAFETY: the block cache frees op buffers only in
            // collect_garbage, which `run` calls between blocks, never
            // while this loop runs (a block may drop its own block:
            // self-modifying code; its ops stay valid and `block_exit` is
            // set).
            let Some(last) = (unsafe { self.exec_ops(ops, limit) }) else {
                return;
            };
            if self.c.icount >= limit
                || self.c.signals.pending()
                || self.c.want_interrupt_window
                || self.c.want_nmi_window
                || self.c.code_share.epoch() != self.c.seen_code_epoch
                || self.c.code_share.revoke_epoch() != self.c.seen_revoke
            {
                return;
            }
            let rip = self.c.state.rip;
            let key = self.chain_key();
            // SAFETY: as above; `last` is the block that just ran.
            let rt = unsafe { last.rt() };
            let link = rt.link.get();
            if link.rip == rip && link.key == key && key != crate::block::NO_KEY {
                debug_assert!(self.c.blocks.is_live(link.ops), "link to a dropped block");
                ops = link.ops;
                continue;
            }
            ops = match self.get_block() {
                Ok(ops) => ops,
                Err(e) => return self.raise(e),
            };
            // Decoding may have dropped blocks: the key after it.
            let key = self.chain_key();
            if key != crate::block::NO_KEY && !self.c.blocks.is_scratch(ops) {
                rt.link.set(op::Link::to(rip, key, ops));
            }
        }
    }

    /// The key links between blocks are valid under: in 64-bit mode, the
    /// TLB generation plus the blocks dropped (both only grow, so the sum
    /// changes when either does) and the privilege.
    #[inline]
    pub(crate) fn chain_key(&self) -> u64 {
        if self.c.state.mode == Mode::Long {
            ((self.c.tlb.gen + self.c.blocks.kills) << 1) | self.user() as u64
        } else {
            crate::block::NO_KEY
        }
    }

    /// Runs the ops of a block. Returns the block when it ran to its end
    /// (no exception, no `block_exit`, not cut short). A compiled block
    /// may chain to others (`jit::chain`): the block returned is then the
    /// last one that ran.
    ///
    /// # Safety
    ///
    /// `blk` is live (see [`OpsRef::ops`]).
    #[inline(always)]
    unsafe fn exec_ops(&mut self, blk: OpsRef, limit: u64) -> Option<OpsRef> {
        // SAFETY: the caller's contract.
        let ops = unsafe { blk.ops() };
        self.c.block_exit = false;
        self.c.cache_counters.blocks_run.inc();
        let icount0 = self.c.icount;
        self.icount0 = icount0;
        let budget = limit.saturating_sub(icount0);
        // Instructions in the block (a fused op holds two).
        let insns = ops.last().map_or(0, |op| op.end as u64);
        let full = insns <= budget;
        if let Some(f) = self.jit_entry(blk, full) {
            return self.exec_compiled(f, blk, limit);
        }
        // A block cut short by the budget runs with handlers that keep the
        // flags exact after every instruction.
        let n = if full { ops.len() } else { budget as usize };
        let mut done = 0;
        let mut fault = None;
        for op in &ops[..n] {
            let h = if full { op.h } else { op.hf };
            if let Err(e) = h(self, op) {
                fault = Some(e);
                break;
            }
            done += 1;
            if self.c.block_exit {
                break;
            }
        }
        self.finish_block(ops, icount0, full, done, fault)
            .then_some(blk)
    }

    /// Runs a block's compiled code (and the compiled blocks it chains
    /// to), then the epilogue of the block that ran last.
    #[inline(always)]
    fn exec_compiled(&mut self, f: crate::jit::Entry, blk: OpsRef, limit: u64) -> Option<OpsRef> {
        self.jit_cur = blk;
        self.jit_limit = limit;
        self.jit_chain_left = self.c.jit_chain;
        // The bank's entries, for the code's inline lookups.
        self.c.dtlb = self.c.tlb.bank_base(self.c.dbank);
        self.jit_watch_start(limit);
        // SAFETY: `f` was compiled from `ops`, which stay alive (with the
        // code) until the next collect_garbage, as do the blocks it
        // chains to; `self` and its CPU are the running context.
        let r = unsafe {
            crate::jit::enter(
                f,
                self as *mut Exec<'_> as *mut u8,
                &mut *self.c as *mut crate::Cpu as *mut u8,
            )
        };
        // The blocks entered from a block (`jit::chain`, and the edges
        // inside regions, `jit_local`), then this one.
        let local = std::mem::take(&mut self.jit_local);
        let chained = u64::from(self.c.jit_chain.saturating_sub(self.jit_chain_left)) + local;
        self.c.cache_counters.jit_local_jumps.add(local);
        let k = &self.c.cache_counters;
        k.blocks_run.add(chained);
        k.jit_chained.add(chained);
        k.jit_block_runs.add(chained + 1);
        let (done, st) = crate::jit::ran(r);
        let fault = if st == crate::jit::status::FAULT {
            self.jit_err.take()
        } else {
            None
        };
        // SAFETY: the last block of the chain (see above); compiled
        // blocks only ever run whole.
        let ops = unsafe { self.jit_cur.ops() };
        self.finish_block(ops, self.icount0, true, done, fault)
            .then_some(self.jit_cur)
    }

    /// A block's epilogue: `done` ops ran (a fused op counts two
    /// instructions when it runs whole), then `fault` if any. True when
    /// the block ran to its end.
    #[inline(always)]
    fn finish_block(
        &mut self,
        ops: &[Op],
        icount0: u64,
        full: bool,
        done: usize,
        fault: Option<crate::exception::Exc>,
    ) -> bool {
        let retired = match done {
            0 => 0,
            _ if full => ops[done - 1].end as u64,
            _ => done as u64,
        };
        if let Some(e) = fault {
            self.c.icount = icount0 + retired;
            self.c.state.rip = ops[done].ip;
            self.raise(e);
            return false;
        }
        let Some(last) = ops[..done].last() else {
            return false;
        };
        if !last.sets_rip {
            self.c.state.rip = last.next;
        }
        self.c.icount = icount0 + retired;
        done == ops.len() && !self.c.block_exit
    }

    /// The compiled code of a block about to run whole, compiling it when
    /// it has just turned hot; None to interpret it.
    #[inline(always)]
    fn jit_entry(&mut self, blk: OpsRef, full: bool) -> Option<crate::jit::Entry> {
        if self.c.engine != crate::jit::Engine::Jit || !full || blk.is_empty() {
            return None;
        }
        // SAFETY: a live block (exec_ops' contract), not EMPTY.
        let slot = unsafe { &blk.rt().jit };
        if let Some(f) = slot.entry() {
            return Some(f);
        }
        if !slot.bump(self.c.jit_hot) || self.c.blocks.is_scratch(blk) {
            return None;
        }
        self.jit_compile(blk)
    }

    /// The jump-cache key for the current state: in 64-bit mode, the TLB
    /// generation and the privilege; elsewhere none (the physical address
    /// is compared instead).
    #[inline]
    pub(crate) fn jump_key(&self) -> u64 {
        if self.c.state.mode == Mode::Long {
            (self.c.tlb.gen << 1) | self.user() as u64
        } else {
            crate::block::NO_KEY
        }
    }

    /// Finds or decodes the block at CS:RIP.
    #[inline]
    fn get_block(&mut self) -> R<OpsRef> {
        let rip = self.c.state.rip;
        let key = self.jump_key();
        if let Some(b) = self.c.blocks.get_fast(rip, key) {
            debug_assert!(self.c.blocks.is_live(b), "jump to a dropped block");
            return Ok(b);
        }
        self.get_block_slow(rip, key)
    }

    #[inline(never)]
    fn get_block_slow(&mut self, rip: u64, key: u64) -> R<OpsRef> {
        self.c.cache_counters.block_lookups_slow.inc();
        let bits = self.c.state.code_bits;
        let lin = self.code_lin(rip)?;
        let user = self.user();
        let gpa = match self.c.tlb.code_gpa(crate::mmu::code_bank(user), lin) {
            Some(gpa) => gpa,
            None => self.translate_fill(lin, AccessKind::Exec, user)?,
        };
        // The walk may have flushed (a code page's A bit): recompute the key.
        let key = if key == crate::block::NO_KEY {
            key
        } else {
            self.jump_key()
        };
        // Whatever associates `rip` with a block from here on (jump cache,
        // links) is keyed by this generation: an INVLPG of `lin` must end it.
        self.c.tlb.note_code_page(lin);
        if let Some(b) = self.c.blocks.get(rip, gpa, bits, key) {
            return Ok(b);
        }
        self.decode_block(rip, lin, gpa, bits, key)
    }

    /// CS:RIP → linear, with the CS limit check outside 64-bit mode.
    pub(crate) fn code_lin(&self, rip: u64) -> R<u64> {
        let st = &self.c.state;
        if st.mode == Mode::Long {
            return Ok(rip);
        }
        let cs = &st.seg[CS];
        if rip > cs.limit as u64 {
            return Err(gp(0));
        }
        Ok((cs.base + rip) & 0xffff_ffff)
    }

    #[inline(never)]
    fn decode_block(&mut self, rip: u64, lin: u64, gpa: u64, bits: u32, key: u64) -> R<OpsRef> {
        // A block never needs more than MAX_BLOCK_INSNS * 15 bytes.
        let avail = ((4096 - (gpa & 0xfff)) as usize).min(MAX_BLOCK_INSNS * 15);
        let mut buf = [0u8; MAX_BLOCK_INSNS * 15];
        let cacheable = match self.bus.ram(gpa, false) {
            Some(r) if r.len >= avail => {
                // SAFETY: the Bus contract makes r.host readable for r.len >= avail bytes.
                unsafe { std::ptr::copy_nonoverlapping(r.host, buf.as_mut_ptr(), avail) };
                true
            }
            _ => {
                // Code outside RAM (ROM behind MMIO): decode one instruction.
                let n = avail.min(15);
                self.phys_read(gpa, &mut buf[..n]);
                false
            }
        };
        let n = if cacheable { avail } else { avail.min(15) };
        let mut decoder = Decoder::with_ip(bits, &buf[..n], rip, DecoderOptions::NONE);
        let mut insns = Vec::with_capacity(8);
        let mut insn = Instruction::default();
        while decoder.can_decode() {
            decoder.decode_out(&mut insn);
            if decoder.last_error() == DecoderError::NoMoreBytes {
                if insns.is_empty() {
                    return self.decode_straddling(rip, lin, gpa, bits);
                }
                break;
            }
            insns.push(insn);
            if insn.flow_control() != FlowControl::Next
                || insns.len() >= MAX_BLOCK_INSNS
                || insn.is_invalid()
                || ends_block(insn.mnemonic())
            {
                break;
            }
        }
        let block = Block {
            rip,
            gpa,
            bits,
            ops: crate::opbuf::OpBuf::new(op::compile(&insns, bits)),
            live: false,
        };
        if !cacheable {
            return Ok(self.c.blocks.set_scratch(block));
        }
        let page = gpa & !0xfff;
        // A page that already holds blocks has no fast write access left.
        let new_code_page = !self.c.blocks.is_code_page(page);
        if let Some(r) = self.c.code_share.mark(page) {
            // This CPU's own new code page needs no global revoke here.
            if r == self.c.seen_revoke + 1 {
                self.c.seen_revoke = r;
            }
        }
        if new_code_page {
            self.c.tlb.revoke_write(page);
        }
        Ok(self.c.blocks.insert(block, key))
    }

    /// An instruction crossing into the next page: fetch up to 15 bytes
    /// through both translations and decode it alone (not cached).
    #[inline(never)]
    fn decode_straddling(&mut self, rip: u64, lin: u64, gpa: u64, bits: u32) -> R<OpsRef> {
        let first = (4096 - (lin & 0xfff)) as usize;
        let mut buf = [0u8; 15];
        let first = first.min(15);
        self.phys_read(gpa, &mut buf[..first]);
        let next_lin = (lin & !0xfff).wrapping_add(4096);
        let next_lin = if self.c.state.long_mode_active() {
            next_lin
        } else {
            next_lin & 0xffff_ffff
        };
        let user = self.user();
        // The second page is walked once, then found in the fetch bank.
        let gpa2 = match self.c.tlb.code_gpa(crate::mmu::code_bank(user), next_lin) {
            Some(gpa) => gpa,
            None => self.translate_fill(next_lin, AccessKind::Exec, user)?,
        };
        self.phys_read(gpa2, &mut buf[first..]);
        let mut decoder = Decoder::with_ip(bits, &buf, rip, DecoderOptions::NONE);
        let insn = decoder.decode();
        Ok(self.c.blocks.set_scratch(Block {
            rip,
            gpa,
            bits,
            ops: crate::opbuf::OpBuf::new(op::compile(&[insn], bits)),
            live: false,
        }))
    }

    // ------------------------------------------------------------ registers

    #[inline]
    pub(crate) fn gpr(&self, r: Register) -> u64 {
        op::gpr_code(r).map_or(0, |(c, size)| sem::gpr_read(&self.c.state.gpr, c, size))
    }

    #[inline]
    pub(crate) fn set_gpr(&mut self, r: Register, v: u64) {
        if let Some((c, size)) = op::gpr_code(r) {
            sem::gpr_write(&mut self.c.state.gpr, c, size, v);
        }
    }

    /// Writes GPR `idx` with an operand of `size` bytes (1 = low byte).
    #[inline]
    pub(crate) fn set_gpr_sized(&mut self, idx: usize, size: u32, v: u64) {
        sem::gpr_write(&mut self.c.state.gpr, (idx & 15) as u8, size, v);
    }

    #[inline]
    pub(crate) fn gpr_sized(&self, idx: usize, size: u32) -> u64 {
        sem::gpr_read(&self.c.state.gpr, (idx & 15) as u8, size)
    }

    // ------------------------------------------------------------- operands

    /// The effective address (offset within the segment) of the memory operand.
    #[inline]
    pub(crate) fn ea(&self, insn: &Instruction) -> u64 {
        let m = op::MemRef::of(insn);
        if m.index == op::NOREG ^ 1 {
            // XLAT's index is AL, zero-extended: not a GPR code MemRef holds.
            let al = self.gpr(insn.memory_index()) << m.scale;
            let disp = m.disp.wrapping_add(al);
            return sem::ea(&self.c.state.gpr, disp, m.base, op::NOREG, 0, m.amask);
        }
        sem::ea(&self.c.state.gpr, m.disp, m.base, m.index, m.scale, m.amask)
    }

    /// Segment register index of the memory operand.
    #[inline]
    pub(crate) fn mem_seg(insn: &Instruction) -> usize {
        (insn.memory_segment() as usize).wrapping_sub(Register::ES as usize) & 7
    }

    /// Size in bytes of operand `n`.
    #[inline]
    pub(crate) fn op_size(insn: &Instruction, n: u32) -> u32 {
        match insn.op_kind(n) {
            OpKind::Register => insn.op_register(n).size() as u32,
            OpKind::Memory => insn.memory_size().size() as u32,
            OpKind::Immediate8 | OpKind::Immediate8_2nd => 1,
            OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
            OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
            _ => 8,
        }
    }

    /// Reads operand `n` (register, immediate or memory) of `size` bytes.
    #[inline]
    pub(crate) fn read_op(&mut self, insn: &Instruction, n: u32, size: u32) -> R<u64> {
        match insn.op_kind(n) {
            // Segment registers are read by MOV and PUSH themselves.
            OpKind::Register => Ok(self.gpr(insn.op_register(n))),
            OpKind::Memory => {
                let off = self.ea(insn);
                self.read(Self::mem_seg(insn), off, size)
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
            | OpKind::Immediate8_2nd => Ok(insn.immediate(n) & crate::flags::size_mask(size)),
            _ => Err(ud()),
        }
    }

    /// Writes operand `n` (a GPR or memory).
    #[inline]
    pub(crate) fn write_op(&mut self, insn: &Instruction, n: u32, size: u32, v: u64) -> R<()> {
        match insn.op_kind(n) {
            OpKind::Register => {
                self.set_gpr(insn.op_register(n), v);
                Ok(())
            }
            OpKind::Memory => {
                let off = self.ea(insn);
                self.write(Self::mem_seg(insn), off, size, v)
            }
            _ => Err(ud()),
        }
    }

    /// Resolves operand 0 for a read-modify-write.
    #[inline]
    pub(crate) fn dst(&mut self, insn: &Instruction, size: u32) -> R<Dst> {
        match insn.op0_kind() {
            OpKind::Register => Ok(Dst::Reg(insn.op0_register())),
            OpKind::Memory => {
                let off = self.ea(insn);
                Ok(Dst::Mem(self.seg_lin(
                    Self::mem_seg(insn),
                    off,
                    size,
                    true,
                )?))
            }
            _ => Err(ud()),
        }
    }

    /// Reads a resolved destination; memory is translated for writing so a
    /// page fault reports a write.
    #[inline]
    pub(crate) fn read_dst(&mut self, d: Dst, size: u32) -> R<u64> {
        match d {
            Dst::Reg(r) => Ok(self.gpr(r)),
            Dst::Mem(lin) => {
                let user = self.user();
                let vpn = lin >> 12;
                if !self.c.tlb.hit(self.data_bank(user), lin, true) {
                    let last = lin.wrapping_add(size as u64 - 1);
                    self.translate_fill(lin, AccessKind::Write, user)?;
                    if last >> 12 != vpn {
                        self.translate_fill(last, AccessKind::Write, user)?;
                    }
                }
                self.read_lin(lin, size, user)
            }
        }
    }

    #[inline]
    pub(crate) fn write_dst(&mut self, d: Dst, size: u32, v: u64) -> R<()> {
        match d {
            Dst::Reg(r) => {
                self.set_gpr(r, v);
                Ok(())
            }
            Dst::Mem(lin) => {
                let user = self.user();
                self.write_lin(lin, size, v, user)
            }
        }
    }

    // ------------------------------------------------------------ dispatch

    pub(crate) fn step(&mut self, insn: &Instruction) -> R<()> {
        use Mnemonic::*;
        match insn.mnemonic() {
            Add | Or | Adc | Sbb | And | Sub | Xor | Cmp | Test => self.alu2(insn),
            Inc | Dec | Neg | Not => self.alu1(insn),
            Rol | Ror | Rcl | Rcr | Shl | Sal | Shr | Sar => self.shift(insn),
            Shld | Shrd => self.shift_double(insn),
            Mul | Imul | Div | Idiv => self.muldiv(insn),
            Bt | Bts | Btr | Btc => self.bit_test(insn),
            Bsf | Bsr | Tzcnt | Lzcnt | Popcnt => self.bit_scan(insn),
            Bswap => self.bswap(insn),
            Andn | Bextr | Blsi | Blsmsk | Blsr => self.bmi1(insn),
            Bzhi | Mulx | Pdep | Pext | Rorx | Sarx | Shlx | Shrx => self.bmi2(insn),
            Movbe => self.movbe(insn),
            Mov => self.mov(insn),
            Movzx | Movsx | Movsxd => self.movx(insn),
            Lea => self.lea(insn),
            Xchg => self.xchg(insn),
            Xadd => self.xadd(insn),
            Cmpxchg => self.cmpxchg(insn),
            Cmpxchg8b | Cmpxchg16b => self.cmpxchg_wide(insn),
            Crc32 => self.crc32(insn),
            Cbw | Cwde | Cdqe | Cwd | Cdq | Cqo => self.convert(insn),
            Lahf | Sahf | Clc | Stc | Cmc | Cld | Std | Cli | Sti => self.flag_op(insn),
            Cmovo | Cmovno | Cmovb | Cmovae | Cmove | Cmovne | Cmovbe | Cmova | Cmovs | Cmovns
            | Cmovp | Cmovnp | Cmovl | Cmovge | Cmovle | Cmovg => self.cmov(insn),
            Seto | Setno | Setb | Setae | Sete | Setne | Setbe | Seta | Sets | Setns | Setp
            | Setnp | Setl | Setge | Setle | Setg => self.setcc(insn),
            Xlatb => self.xlat(insn),
            Aaa | Aas | Daa | Das | Aam | Aad => self.bcd(insn),
            Salc => {
                let v = if self.c.state.flags.cf() { 0xff } else { 0 };
                self.set_gpr(Register::AL, v);
                Ok(())
            }
            Push => self.push_op(insn),
            Pop => self.pop_op(insn),
            Pushf | Pushfd | Pushfq => self.pushf(insn),
            Popf | Popfd | Popfq => self.popf(insn),
            Pusha | Pushad => self.pusha(insn),
            Popa | Popad => self.popa(insn),
            Enter => self.enter(insn),
            Leave => self.leave(insn),
            Jmp => self.jmp(insn),
            Jo | Jno | Jb | Jae | Je | Jne | Jbe | Ja | Js | Jns | Jp | Jnp | Jl | Jge | Jle
            | Jg => self.jcc(insn),
            Jcxz | Jecxz | Jrcxz | Loop | Loope | Loopne => self.loop_op(insn),
            Call => self.call(insn),
            Ret => self.ret(insn),
            Retf => self.retf(insn),
            Iret | Iretd | Iretq => self.iret(insn),
            Int | Int3 | Into | Int1 => self.int_op(insn),
            Movsb | Movsw | Movsd | Movsq | Stosb | Stosw | Stosd | Stosq | Lodsb | Lodsw
            | Lodsd | Lodsq | Cmpsb | Cmpsw | Cmpsd | Cmpsq | Scasb | Scasw | Scasd | Scasq
            | Insb | Insw | Insd | Outsb | Outsw | Outsd
                if insn.is_string_instruction() =>
            {
                self.string(insn)
            }
            Lgdt | Lidt | Sgdt | Sidt | Lldt | Sldt | Ltr | Str | Lmsw | Smsw | Clts | Invlpg
            | Rdmsr | Wrmsr | Cpuid | Rdtsc | Rdtscp | Rdpid | Hlt | In | Out | Syscall
            | Sysret | Sysretq | Swapgs | Xgetbv | Xsetbv | Wbinvd | Invd | Lar | Lsl | Verr
            | Verw | Rdpmc | Sysenter | Sysexit | Rdfsbase | Rdgsbase | Wrfsbase | Wrgsbase
            | Invpcid | Monitor | Mwait | Stac | Clac | Rdpkru | Wrpkru | Vmcall | Vmmcall => {
                self.system(insn)
            }
            Lds | Les | Lfs | Lgs | Lss => self.load_far_pointer(insn),
            Xsave | Xsave64 | Xsaveopt | Xsaveopt64 | Xsavec | Xsavec64 | Xrstor | Xrstor64 => {
                self.xsave_family(insn)
            }
            Clflush | Clflushopt | Clwb => {
                // Checked as a one-byte load (segment, paging) that reads
                // nothing: there is no cache to write back.
                let off = self.ea(insn);
                let lin = self.seg_lin(Self::mem_seg(insn), off, 1, false)?;
                let user = self.user();
                self.translate_fill(lin, AccessKind::Read, user)?;
                Ok(())
            }
            Pause => {
                self.pause();
                Ok(())
            }
            Nop | Lfence | Sfence | Mfence | Prefetch | Prefetchnta | Prefetcht0 | Prefetcht1
            | Prefetcht2 | Prefetchw | Endbr32 | Endbr64 => {
                if matches!(insn.mnemonic(), Mfence) {
                    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
                }
                Ok(())
            }
            Ud0 | Ud1 | Ud2 => Err(ud()),
            _ if insn.encoding() == EncodingKind::VEX => self.vex(insn),
            Movd | Movq if mmx::uses_mmx(insn) => self.mmx(insn),
            _ if sse::is_fpu_sse(insn) => self.fpu_sse(insn),
            _ => self.unimplemented(insn),
        }
    }

    pub(crate) fn unimplemented(&mut self, insn: &Instruction) -> R<()> {
        if insn.is_invalid() {
            // Not an instruction at all: #UD without counting it as missing.
            return Err(ud());
        }
        self.c.unimplemented += 1;
        tracing::debug!(rip = insn.ip(), code = ?insn.code(), "unimplemented instruction: #UD");
        Err(ud())
    }
}

/// Instructions after which a block ends even though control flow continues
/// (they may change the mode, paging or interrupt state).
fn ends_block(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Hlt | Cli
            | Sti
            | Popf
            | Popfd
            | Popfq
            | Stac
            | Clac
            | Lgdt
            | Lidt
            | Lldt
            | Ltr
            | Lmsw
            | Clts
            | Invlpg
            | Wrmsr
            | Xsetbv
            | Cpuid
            | Lss
            | Swapgs
            | Out
            | Outsb
            | Outsw
            | Outsd
    )
}
