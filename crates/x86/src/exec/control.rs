//! Control transfer and the stack: PUSH/POP, PUSHF/POPF, ENTER/LEAVE,
//! JMP/Jcc/LOOP, CALL/RET near and far, IRET, INT n.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::{ip_mask, Exec};
use crate::exception::{gp, EventKind, R};
use crate::state::rflags::*;
use crate::state::{Mode, CS, SS};

impl Exec<'_> {
    fn push_size(insn: &Instruction) -> u32 {
        (-insn.stack_pointer_increment()) as u32
    }

    pub(super) fn push_op(&mut self, insn: &Instruction) -> R<()> {
        let size = Self::push_size(insn);
        let v = match insn.op0_kind() {
            OpKind::Register => {
                let r = insn.op0_register();
                if r.is_segment_register() {
                    self.c.state.seg[r as usize - Register::ES as usize].selector as u64
                } else {
                    self.gpr(r)
                }
            }
            _ => self.read_op(insn, 0, size)?,
        };
        self.push(v, size)
    }

    pub(super) fn pop_op(&mut self, insn: &Instruction) -> R<()> {
        let size = insn.stack_pointer_increment() as u32;
        let old_sp = self.c.state.gpr[4];
        let v = self.pop(size)?;
        let r = match insn.op0_kind() {
            OpKind::Register => {
                let r = insn.op0_register();
                if r.is_segment_register() {
                    let res = self.load_seg(r as usize - Register::ES as usize, v as u16);
                    if res.is_err() {
                        self.c.state.gpr[4] = old_sp;
                    }
                    return res;
                }
                self.set_gpr(r, v);
                return Ok(());
            }
            _ => self.write_op(insn, 0, size, v),
        };
        if r.is_err() {
            self.c.state.gpr[4] = old_sp;
        }
        r
    }

    pub(super) fn pushf(&mut self, insn: &Instruction) -> R<()> {
        let size = Self::push_size(insn);
        if self.c.state.mode == Mode::Virtual8086 && self.c.state.iopl() < 3 {
            return Err(gp(0));
        }
        let v = self.c.state.rflags() & !(VM | RF);
        self.push(v, size)
    }

    pub(super) fn popf(&mut self, insn: &Instruction) -> R<()> {
        let size = insn.stack_pointer_increment() as u32;
        let st = &self.c.state;
        if st.mode == Mode::Virtual8086 && st.iopl() < 3 {
            return Err(gp(0));
        }
        let v = self.pop(size)?;
        let st = &self.c.state;
        let mut mask = ARITH | TF | DF | NT | AC | ID;
        if st.mode == Mode::Real || st.cpl == 0 {
            mask |= IOPL | IF;
        } else if st.cpl <= st.iopl() {
            mask |= IF;
        }
        if size == 2 {
            mask &= 0xffff;
        }
        let cur = st.rflags();
        let new = (cur & !mask) | (v & mask);
        self.c.state.set_rflags(new & !RF);
        self.c.block_exit = true;
        Ok(())
    }

    pub(super) fn pusha(&mut self, insn: &Instruction) -> R<()> {
        let size: u32 = if insn.mnemonic() == Mnemonic::Pushad {
            4
        } else {
            2
        };
        let sp = self.gpr_sized(4, size);
        let old = self.c.state.gpr[4];
        for i in 0..8 {
            let v = if i == 4 { sp } else { self.gpr_sized(i, size) };
            if let Err(e) = self.push(v, size) {
                self.c.state.gpr[4] = old;
                return Err(e);
            }
        }
        Ok(())
    }

    pub(super) fn popa(&mut self, insn: &Instruction) -> R<()> {
        let size: u32 = if insn.mnemonic() == Mnemonic::Popad {
            4
        } else {
            2
        };
        let old = self.c.state.gpr;
        for i in (0..8).rev() {
            match self.pop(size) {
                Ok(v) => {
                    if i != 4 {
                        self.set_gpr_sized(i, size, v);
                    }
                }
                Err(e) => {
                    self.c.state.gpr = old;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    pub(super) fn enter(&mut self, insn: &Instruction) -> R<()> {
        let size = match insn.code() {
            Code::Enterw_imm16_imm8 => 2,
            Code::Enterd_imm16_imm8 => 4,
            _ => 8,
        };
        let alloc = insn.immediate16() as u64;
        let level = (insn.immediate8_2nd() & 0x1f) as u64;
        let old = self.c.state.gpr;
        let res = (|| {
            let bp = self.gpr_sized(5, size);
            self.push(bp, size)?;
            let frame = self.gpr_sized(4, self.c.state.stack_size());
            if level > 0 {
                let mut b = bp;
                for _ in 1..level {
                    b = b.wrapping_sub(size as u64);
                    let v = self.read(SS, b & ip_mask(self.c.state.stack_size() * 8), size)?;
                    self.push(v, size)?;
                }
                self.push(frame, size)?;
            }
            self.set_gpr_sized(5, size, frame);
            let sp = self.c.state.gpr[4].wrapping_sub(alloc);
            self.set_sp(sp);
            // Touch the new stack top so a fault happens here.
            let top = self.c.state.gpr[4] & ip_mask(self.c.state.stack_size() * 8);
            self.seg_lin(SS, top, 1, true)?;
            Ok(())
        })();
        if res.is_err() {
            self.c.state.gpr = old;
        }
        res
    }

    pub(super) fn leave(&mut self, insn: &Instruction) -> R<()> {
        let size = match insn.code() {
            Code::Leavew => 2,
            Code::Leaved => 4,
            _ => 8,
        };
        let old = self.c.state.gpr;
        let ss = self.c.state.stack_size();
        let bp = self.gpr_sized(5, ss);
        self.set_sp(bp);
        match self.pop(size) {
            Ok(v) => {
                self.set_gpr_sized(5, size, v);
                Ok(())
            }
            Err(e) => {
                self.c.state.gpr = old;
                Err(e)
            }
        }
    }

    /// Near branch target check (CS limit outside 64-bit mode).
    #[inline]
    fn near_jump(&mut self, target: u64) -> R<()> {
        let st = &self.c.state;
        if st.mode == Mode::Long {
            if !crate::mem::canonical(target) {
                return Err(gp(0));
            }
        } else if target > st.seg[CS].limit as u64 {
            return Err(gp(0));
        }
        self.c.state.rip = target;
        Ok(())
    }

    /// Operand size of a near indirect or relative branch.
    fn branch_size(&self, insn: &Instruction) -> u32 {
        match insn.op0_kind() {
            OpKind::NearBranch16 => 2,
            OpKind::NearBranch32 => 4,
            OpKind::NearBranch64 => 8,
            _ => Self::op_size(insn, 0),
        }
    }

    pub(super) fn jmp(&mut self, insn: &Instruction) -> R<()> {
        match insn.op0_kind() {
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                self.near_jump(insn.near_branch_target())
            }
            OpKind::FarBranch16 | OpKind::FarBranch32 => {
                let off = if insn.op0_kind() == OpKind::FarBranch16 {
                    insn.far_branch16() as u64
                } else {
                    insn.far_branch32() as u64
                };
                self.far_jump(insn.far_branch_selector(), off)
            }
            OpKind::Memory if is_far(insn) => {
                let (sel, off) = self.read_far_ptr(insn)?;
                self.far_jump(sel, off)
            }
            _ => {
                let size = self.branch_size(insn);
                let t = self.read_op(insn, 0, size)?;
                self.near_jump(t)
            }
        }
    }

    fn read_far_ptr(&mut self, insn: &Instruction) -> R<(u16, u64)> {
        let size = insn.memory_size().size() as u32 - 2;
        let seg = Self::mem_seg(insn);
        let ea = self.ea(insn);
        let off = self.read(seg, ea, size)?;
        let sel = self.read(seg, ea.wrapping_add(size as u64), 2)? as u16;
        Ok((sel, off))
    }

    fn far_jump(&mut self, sel: u16, off: u64) -> R<()> {
        let cs = self.far_target_cs(sel)?;
        self.check_far_target(&cs, off)?;
        self.set_cs(cs);
        self.c.state.rip = off;
        Ok(())
    }

    fn check_far_target(&self, cs: &crate::state::SegCache, off: u64) -> R<()> {
        let long_target = self.c.state.long_mode_active() && cs.l();
        if long_target {
            if !crate::mem::canonical(off) {
                return Err(gp(0));
            }
        } else if off > cs.limit as u64 {
            return Err(gp(0));
        }
        Ok(())
    }

    pub(super) fn jcc(&mut self, insn: &Instruction) -> R<()> {
        let cc = insn.condition_code() as u8 - 1;
        if self.c.state.flags.cond(cc) {
            self.near_jump(insn.near_branch_target())?;
        }
        Ok(())
    }

    pub(super) fn loop_op(&mut self, insn: &Instruction) -> R<()> {
        let code = insn.code() as u32;
        let csize: u32 =
            if (Code::Loopne_rel8_16_CX as u32..=Code::Loop_rel8_64_RCX as u32).contains(&code) {
                [2, 2, 4, 4, 4, 8, 8][((code - Code::Loopne_rel8_16_CX as u32) % 7) as usize]
            } else {
                match insn.mnemonic() {
                    Mnemonic::Jcxz => 2,
                    Mnemonic::Jecxz => 4,
                    _ => 8,
                }
            };
        let cx = self.gpr_sized(1, csize);
        let take = match insn.mnemonic() {
            Mnemonic::Jcxz | Mnemonic::Jecxz | Mnemonic::Jrcxz => cx == 0,
            m => {
                let n = cx.wrapping_sub(1) & crate::flags::size_mask(csize);
                self.set_gpr_sized(1, csize, n);
                n != 0
                    && match m {
                        Mnemonic::Loope => self.c.state.flags.zf(),
                        Mnemonic::Loopne => !self.c.state.flags.zf(),
                        _ => true,
                    }
            }
        };
        if take {
            self.near_jump(insn.near_branch_target())?;
        }
        Ok(())
    }

    pub(super) fn call(&mut self, insn: &Instruction) -> R<()> {
        let ret = self.c.state.rip;
        match insn.op0_kind() {
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                let size = self.branch_size(insn);
                let t = insn.near_branch_target();
                self.push(ret, size)?;
                self.near_jump(t)
            }
            OpKind::FarBranch16 | OpKind::FarBranch32 => {
                let (off, size) = if insn.op0_kind() == OpKind::FarBranch16 {
                    (insn.far_branch16() as u64, 2)
                } else {
                    (insn.far_branch32() as u64, 4)
                };
                self.far_call(insn.far_branch_selector(), off, size)
            }
            OpKind::Memory if is_far(insn) => {
                let size = insn.memory_size().size() as u32 - 2;
                let (sel, off) = self.read_far_ptr(insn)?;
                self.far_call(sel, off, size)
            }
            _ => {
                let size = self.branch_size(insn);
                let t = self.read_op(insn, 0, size)?;
                let old = self.c.state.gpr[4];
                self.push(ret, size)?;
                let r = self.near_jump(t);
                if r.is_err() {
                    self.c.state.gpr[4] = old;
                }
                r
            }
        }
    }

    fn far_call(&mut self, sel: u16, off: u64, size: u32) -> R<()> {
        let cs = self.far_target_cs(sel)?;
        self.check_far_target(&cs, off)?;
        let old_sp = self.c.state.gpr[4];
        let old_cs = self.c.state.seg[CS].selector as u64;
        let ret = self.c.state.rip;
        let r = self.push(old_cs, size).and_then(|_| self.push(ret, size));
        if r.is_err() {
            self.c.state.gpr[4] = old_sp;
            return r;
        }
        self.set_cs(cs);
        self.c.state.rip = off;
        Ok(())
    }

    pub(super) fn ret(&mut self, insn: &Instruction) -> R<()> {
        let (size, imm) = match insn.code() {
            Code::Retnw_imm16 => (2, insn.immediate16()),
            Code::Retnd_imm16 => (4, insn.immediate16()),
            Code::Retnq_imm16 => (8, insn.immediate16()),
            Code::Retnw => (2, 0),
            Code::Retnd => (4, 0),
            _ => (8, 0),
        };
        let old = self.c.state.gpr[4];
        let t = self.pop(size)?;
        if let Err(e) = self.near_jump(t) {
            self.c.state.gpr[4] = old;
            return Err(e);
        }
        if imm != 0 {
            let sp = self.c.state.gpr[4].wrapping_add(imm as u64);
            self.set_sp(sp);
        }
        Ok(())
    }

    pub(super) fn retf(&mut self, insn: &Instruction) -> R<()> {
        let (size, imm): (u32, u64) = match insn.code() {
            Code::Retfw_imm16 => (2, insn.immediate16() as u64),
            Code::Retfd_imm16 => (4, insn.immediate16() as u64),
            Code::Retfq_imm16 => (8, insn.immediate16() as u64),
            Code::Retfw => (2, 0),
            Code::Retfd => (4, 0),
            _ => (8, 0),
        };
        let off = self.peek(0, size)?;
        let sel = self.peek(size as u64, size)? as u16;
        if matches!(self.c.state.mode, Mode::Real | Mode::Virtual8086) {
            let cs = self.far_target_cs(sel)?;
            self.set_sp(self.c.state.gpr[4].wrapping_add(2 * size as u64 + imm));
            self.set_cs(cs);
            self.c.state.rip = off & 0xffff_ffff;
            return Ok(());
        }
        let cs = self.return_cs(sel)?;
        let rpl = (sel & 3) as u8;
        let cpl = self.c.state.cpl;
        self.check_far_target(&cs, off)?;
        if rpl > cpl {
            let base = 2 * size as u64 + imm;
            let new_sp = self.peek(base, size)?;
            let new_ss_sel = self.peek(base + size as u64, size)? as u16;
            let ss = self.return_ss(new_ss_sel, rpl, cs.l())?;
            self.set_cs(cs);
            self.c.state.seg[SS] = ss;
            self.c.state.gpr[4] = new_sp;
            let sp = self.c.state.gpr[4].wrapping_add(imm);
            self.set_sp(sp);
            self.null_inaccessible_data_segs();
        } else {
            self.set_sp(self.c.state.gpr[4].wrapping_add(2 * size as u64 + imm));
            self.set_cs(cs);
        }
        self.c.state.rip = off;
        Ok(())
    }

    pub(super) fn iret(&mut self, insn: &Instruction) -> R<()> {
        let size: u32 = match insn.code() {
            Code::Iretw => 2,
            Code::Iretd => 4,
            _ => 8,
        };
        let mode = self.c.state.mode;
        self.c.block_exit = true;
        if mode == Mode::Real {
            let ip = self.peek(0, size)?;
            let sel = self.peek(size as u64, size)? as u16;
            let fl = self.peek(2 * size as u64, size)?;
            let cs = self.far_target_cs(sel)?;
            self.set_sp(self.c.state.gpr[4].wrapping_add(3 * size as u64));
            self.set_cs(cs);
            self.c.state.rip = ip;
            let mask = if size == 2 {
                0xffff
            } else {
                WRITABLE & !(VM | VIF | VIP)
            };
            let cur = self.c.state.rflags();
            self.c.state.set_rflags((cur & !mask) | (fl & mask));
            self.c.state.nmi_blocked = false;
            return Ok(());
        }
        if mode == Mode::Virtual8086 {
            return Err(gp(0));
        }
        if self.c.state.flags.raw_bits() & NT != 0 {
            if self.c.state.long_mode_active() {
                return Err(gp(0));
            }
            tracing::debug!("IRET with NT (task return) is not supported: #GP");
            return Err(gp(0));
        }
        let ip = self.peek(0, size)?;
        let sel = self.peek(size as u64, size)? as u16;
        let fl = self.peek(2 * size as u64, size)?;
        let long = mode == Mode::Long;
        let cpl = self.c.state.cpl;
        let rpl = (sel & 3) as u8;
        if fl & VM != 0 && cpl == 0 && !self.c.state.long_mode_active() {
            tracing::debug!("IRET to virtual-8086 mode is not supported: #GP");
            return Err(gp(0));
        }
        let cs = self.return_cs(sel)?;
        let to64 = self.c.state.long_mode_active() && cs.l();
        self.check_far_target(&cs, ip)?;
        let outer = rpl > cpl;
        let (new_ss, new_sp) = if outer || long {
            let sp = self.peek(3 * size as u64, size)?;
            let ss_sel = self.peek(4 * size as u64, size)? as u16;
            let ss = if outer || ss_sel & 0xfffc != 0 || !to64 {
                self.return_ss(ss_sel, rpl, to64)?
            } else {
                crate::state::SegCache {
                    selector: ss_sel,
                    base: 0,
                    limit: 0,
                    attr: crate::state::SegCache::UNUSABLE | ((rpl as u32) << 5),
                }
            };
            (Some(ss), sp)
        } else {
            (None, 0)
        };
        // Commit.
        let iopl_ok = cpl == 0;
        let if_ok = cpl <= self.c.state.iopl();
        let mut mask = ARITH | TF | DF | NT | AC | ID | RF;
        if iopl_ok {
            mask |= IOPL | VIF | VIP;
        }
        if if_ok {
            mask |= IF;
        }
        if size == 2 {
            mask &= 0xffff;
        }
        let cur = self.c.state.rflags();
        match new_ss {
            Some(ss) => {
                self.c.state.seg[SS] = ss;
                self.c.state.gpr[4] = if size == 2 {
                    (self.c.state.gpr[4] & !0xffff) | (new_sp & 0xffff)
                } else {
                    new_sp
                };
            }
            None => self.set_sp(self.c.state.gpr[4].wrapping_add(3 * size as u64)),
        }
        self.c.state.flags.set((cur & !mask) | (fl & mask) | FIXED1);
        self.set_cs(cs);
        self.c.state.rip = if to64 { ip } else { ip & 0xffff_ffff };
        if outer {
            self.null_inaccessible_data_segs();
        }
        self.c.state.nmi_blocked = false;
        Ok(())
    }

    pub(super) fn int_op(&mut self, insn: &Instruction) -> R<()> {
        let (vector, kind) = match insn.mnemonic() {
            Mnemonic::Int => (insn.immediate8(), EventKind::Software),
            Mnemonic::Int3 if self.intercept_int3(insn.ip()) => return Ok(()),
            Mnemonic::Int3 => (3, EventKind::Software),
            // ICEBP: a #DB without the gate DPL check, and without DR6
            // bits of its own.
            Mnemonic::Int1 => (1, EventKind::Exception),
            _ => {
                if !self.c.state.flags.of() {
                    return Ok(());
                }
                (4, EventKind::Software)
            }
        };
        self.c.block_exit = true;
        if kind == EventKind::Software {
            self.c.dbg.sw_int = true;
        } else {
            self.c.dbg.icebp = true;
        }
        self.deliver_software(vector, kind)
    }
}

/// A memory operand holding a far pointer (m16:16/32/64).
fn is_far(insn: &Instruction) -> bool {
    matches!(
        insn.memory_size(),
        iced_x86::MemorySize::SegPtr16
            | iced_x86::MemorySize::SegPtr32
            | iced_x86::MemorySize::SegPtr64
    )
}
