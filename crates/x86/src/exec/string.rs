//! String instructions (MOVS, STOS, LODS, CMPS, SCAS, INS, OUTS) with
//! REP/REPE/REPNE, and fast paths for REP MOVS / REP STOS on RAM.

use iced_x86::{Instruction, Mnemonic};

use super::Exec;
use crate::exception::R;
use crate::flags::size_mask;
use crate::state::{Mode, ES, RAX, RCX, RDI, RDX, RSI};

/// Iterations of a REP instruction done before returning to the run loop
/// (which polls kicks and the budget, then restarts the instruction).
const REP_ITERATIONS_PER_STEP: u32 = 4096;
/// Page-sized chunks a fast REP path does per step.
const REP_FAST_CHUNKS: u32 = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
    Ins,
    Outs,
}

impl Exec<'_> {
    pub(super) fn string(&mut self, insn: &Instruction) -> R<()> {
        use Mnemonic::*;
        let m = insn.mnemonic();
        let (op, esize) = match m {
            Movsb => (Op::Movs, 1),
            Movsw => (Op::Movs, 2),
            Movsd => (Op::Movs, 4),
            Movsq => (Op::Movs, 8),
            Stosb => (Op::Stos, 1),
            Stosw => (Op::Stos, 2),
            Stosd => (Op::Stos, 4),
            Stosq => (Op::Stos, 8),
            Lodsb => (Op::Lods, 1),
            Lodsw => (Op::Lods, 2),
            Lodsd => (Op::Lods, 4),
            Lodsq => (Op::Lods, 8),
            Cmpsb => (Op::Cmps, 1),
            Cmpsw => (Op::Cmps, 2),
            Cmpsd => (Op::Cmps, 4),
            Cmpsq => (Op::Cmps, 8),
            Scasb => (Op::Scas, 1),
            Scasw => (Op::Scas, 2),
            Scasd => (Op::Scas, 4),
            Scasq => (Op::Scas, 8),
            Insb => (Op::Ins, 1),
            Insw => (Op::Ins, 2),
            Insd => (Op::Ins, 4),
            Outsb => (Op::Outs, 1),
            Outsw => (Op::Outs, 2),
            _ => (Op::Outs, 4),
        };
        // Address size from the SI/DI operand kind.
        let mut asize = 8u32;
        for i in 0..insn.op_count() {
            let k = insn.op_kind(i) as u32;
            if (15..=23).contains(&k) {
                asize = [2, 4, 8][((k - 15) % 3) as usize];
            }
        }
        let si_seg = Self::mem_seg(insn);
        if matches!(op, Op::Ins | Op::Outs) {
            let port = self.gpr_sized(RDX, 2) as u16;
            self.io_allowed(port, esize)?;
        }
        let rep = insn.has_rep_prefix() || insn.has_repe_prefix() || insn.has_repne_prefix();
        if !rep {
            return self.string_once(op, esize, asize, si_seg);
        }
        let cond = match op {
            Op::Cmps | Op::Scas => {
                if insn.has_repne_prefix() {
                    Some(false)
                } else {
                    Some(true)
                }
            }
            _ => None,
        };
        if self.gpr_sized(RCX, asize) == 0 {
            return Ok(());
        }
        if matches!(op, Op::Movs | Op::Stos) && !self.c.state.flags.df() {
            self.rep_fast(op, esize, asize, si_seg)?;
            if self.gpr_sized(RCX, asize) == 0 {
                return Ok(());
            }
        }
        let mut iters = 0;
        loop {
            self.string_once(op, esize, asize, si_seg)?;
            let count = self.gpr_sized(RCX, asize).wrapping_sub(1) & size_mask(asize);
            self.set_gpr_sized(RCX, asize, count);
            if count == 0 {
                return Ok(());
            }
            if let Some(want_zf) = cond {
                if self.c.state.flags.zf() != want_zf {
                    return Ok(());
                }
            }
            iters += 1;
            if iters >= REP_ITERATIONS_PER_STEP {
                // Restart the instruction after the run loop had a look.
                self.c.state.rip = insn.ip();
                self.c.block_exit = true;
                return Ok(());
            }
        }
    }

    fn advance(&mut self, reg: usize, esize: u32, asize: u32) {
        let v = self.gpr_sized(reg, asize);
        let nv = if self.c.state.flags.df() {
            v.wrapping_sub(esize as u64)
        } else {
            v.wrapping_add(esize as u64)
        };
        self.set_gpr_sized(reg, asize, nv & size_mask(asize));
    }

    fn string_once(&mut self, op: Op, esize: u32, asize: u32, si_seg: usize) -> R<()> {
        let si = self.gpr_sized(RSI, asize);
        let di = self.gpr_sized(RDI, asize);
        match op {
            Op::Movs => {
                let v = self.read(si_seg, si, esize)?;
                self.write(ES, di, esize, v)?;
                self.advance(RSI, esize, asize);
                self.advance(RDI, esize, asize);
            }
            Op::Stos => {
                let v = self.gpr_sized(RAX, esize);
                self.write(ES, di, esize, v)?;
                self.advance(RDI, esize, asize);
            }
            Op::Lods => {
                let v = self.read(si_seg, si, esize)?;
                self.set_gpr_sized(RAX, esize, v);
                self.advance(RSI, esize, asize);
            }
            Op::Cmps => {
                let a = self.read(si_seg, si, esize)?;
                let b = self.read(ES, di, esize)?;
                self.alu_op(Mnemonic::Cmp, a, b, esize);
                self.advance(RSI, esize, asize);
                self.advance(RDI, esize, asize);
            }
            Op::Scas => {
                let a = self.gpr_sized(RAX, esize);
                let b = self.read(ES, di, esize)?;
                self.alu_op(Mnemonic::Cmp, a, b, esize);
                self.advance(RDI, esize, asize);
            }
            Op::Ins => {
                let port = self.gpr_sized(RDX, 2) as u16;
                // Check the destination before the port read has side effects.
                let lin = self.seg_lin(ES, di, esize, true)?;
                let user = self.user();
                self.translate_fill(lin, crate::mmu::AccessKind::Write, user)?;
                let v = self.port_in(port, esize);
                self.write(ES, di, esize, v)?;
                self.advance(RDI, esize, asize);
            }
            Op::Outs => {
                let port = self.gpr_sized(RDX, 2) as u16;
                let v = self.read(si_seg, si, esize)?;
                self.port_out(port, esize, v);
                self.advance(RSI, esize, asize);
            }
        }
        Ok(())
    }

    /// Whether a segment is flat enough for the page-chunk fast path.
    fn flat(&self, s: usize) -> bool {
        let st = &self.c.state;
        if st.mode == Mode::Long {
            return true;
        }
        let seg = &st.seg[s];
        seg.limit == 0xffff_ffff && !seg.unusable() && seg.typ() & 0xc != 0x4
    }

    /// REP MOVS / REP STOS with DF=0 on RAM, a page chunk at a time.
    fn rep_fast(&mut self, op: Op, esize: u32, asize: u32, si_seg: usize) -> R<()> {
        if !self.flat(ES) || (op == Op::Movs && !self.flat(si_seg)) {
            return Ok(());
        }
        let amask = size_mask(asize);
        let es = esize as u64;
        for _ in 0..REP_FAST_CHUNKS {
            let count = self.gpr_sized(RCX, asize);
            if count == 0 {
                return Ok(());
            }
            let di = self.gpr_sized(RDI, asize);
            let dst_lin = self.seg_lin(ES, di, esize, true)?;
            let mut n = count.min((4096 - (dst_lin & 0xfff)) / es);
            if n == 0 || di.wrapping_add(n * es - 1) > amask {
                return Ok(());
            }
            let mut src = None;
            if op == Op::Movs {
                let si = self.gpr_sized(RSI, asize);
                let src_lin = self.seg_lin(si_seg, si, esize, false)?;
                n = n.min((4096 - (src_lin & 0xfff)) / es);
                if n == 0 || si.wrapping_add(n * es - 1) > amask {
                    return Ok(());
                }
                let Some(sp) = self.host_page(src_lin, false)? else {
                    return Ok(());
                };
                src = Some((sp, si));
            }
            let Some(dp) = self.host_page(dst_lin, true)? else {
                return Ok(());
            };
            let bytes = (n * es) as usize;
            match src {
                Some((sp, si)) => {
                    let (s, d) = (sp as usize, dp as usize);
                    if d > s && d < s + bytes {
                        // Forward overlap: element order matters; slow path.
                        return Ok(());
                    }
                    // SAFETY: host_page returned pointers into RAM pages valid to
                    // their page ends (Bus contract, TLB not flushed meanwhile);
                    // both ranges were clipped to their pages; the destination
                    // page is writable and holds no decoded code. ptr::copy
                    // handles the remaining (backward) overlap like memmove,
                    // which equals a forward element copy in that case.
                    unsafe { std::ptr::copy(sp, dp, bytes) };
                    self.set_gpr_sized(RSI, asize, si + n * es);
                }
                None => {
                    let v = self.gpr_sized(RAX, esize);
                    if esize == 1 {
                        // SAFETY: dp is valid for `bytes` writes (clipped to the page).
                        unsafe { std::ptr::write_bytes(dp, v as u8, bytes) };
                    } else {
                        let b = v.to_le_bytes();
                        for i in 0..n as usize {
                            // SAFETY: as above; each element lies inside the clipped range.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    b.as_ptr(),
                                    dp.add(i * esize as usize),
                                    esize as usize,
                                )
                            };
                        }
                    }
                }
            }
            self.set_gpr_sized(RDI, asize, di + n * es);
            self.set_gpr_sized(RCX, asize, count - n);
        }
        Ok(())
    }
}
