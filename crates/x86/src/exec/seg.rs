//! Segment register loads with the protected-mode descriptor checks.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::Exec;
use crate::exception::{gp, np, ss, ud, R};
use crate::state::{Mode, SegCache, CS, DS, ES, FS, GS, SS};

impl Exec<'_> {
    /// MOV/POP to a data or stack segment register (not CS).
    pub(crate) fn load_seg(&mut self, s: usize, sel: u16) -> R<()> {
        let mode = self.c.state.mode;
        if s == SS {
            // MOV SS / POP SS: interrupts are blocked until the next
            // instruction retires, and debug traps held until then.
            self.c.shadow_icount = self.c.icount + 1;
            self.c.dbg.movss = true;
        }
        if matches!(mode, Mode::Real | Mode::Virtual8086) {
            let seg = &mut self.c.state.seg[s];
            seg.selector = sel;
            seg.base = (sel as u64) << 4;
            if mode == Mode::Virtual8086 {
                seg.limit = 0xffff;
                seg.attr = 0xf3;
            }
            return Ok(());
        }
        let cpl = self.c.state.cpl;
        let rpl = (sel & 3) as u8;
        let code = sel as u32 & 0xfffc;
        if code == 0 {
            if s == SS {
                if mode == Mode::Long && cpl != 3 && rpl == cpl {
                    self.c.state.seg[SS] = SegCache {
                        selector: sel,
                        base: 0,
                        limit: 0,
                        attr: SegCache::UNUSABLE | ((cpl as u32) << 5),
                    };
                    return Ok(());
                }
                return Err(gp(0));
            }
            let keep_base = mode == Mode::Long && s >= FS;
            let seg = &mut self.c.state.seg[s];
            *seg = SegCache {
                selector: sel,
                base: if keep_base { seg.base } else { 0 },
                limit: 0,
                attr: SegCache::UNUSABLE,
            };
            return Ok(());
        }
        let (raw, lin) = self.read_descriptor(sel)?;
        let mut d = SegCache::from_descriptor(sel, raw);
        if s == SS {
            if rpl != cpl || !d.s() || d.typ() & 0xa != 0x2 || d.dpl() != cpl {
                return Err(gp(code));
            }
            if !d.present() {
                return Err(ss(code));
            }
        } else {
            let code_seg = d.is_code();
            if !d.s() || (code_seg && d.typ() & 2 == 0) {
                return Err(gp(code));
            }
            let conforming = code_seg && d.typ() & 4 != 0;
            if !conforming && (rpl > d.dpl() || cpl > d.dpl()) {
                return Err(gp(code));
            }
            if !d.present() {
                return Err(np(code));
            }
        }
        self.set_descriptor_accessed(raw, lin)?;
        d.attr |= 1;
        self.c.state.seg[s] = d;
        Ok(())
    }

    /// LDS/LES/LFS/LGS/LSS: a far pointer from memory.
    pub(super) fn load_far_pointer(&mut self, insn: &Instruction) -> R<()> {
        if insn.op1_kind() != OpKind::Memory {
            return Err(ud());
        }
        let reg = insn.op0_register();
        let size = reg.size() as u32;
        let seg_idx = Self::mem_seg(insn);
        let off = self.ea(insn);
        let v = self.read(seg_idx, off, size)?;
        let sel = self.read(seg_idx, off.wrapping_add(size as u64), 2)? as u16;
        let s = match insn.mnemonic() {
            Mnemonic::Lds => DS,
            Mnemonic::Les => ES,
            Mnemonic::Lfs => FS,
            Mnemonic::Lgs => GS,
            _ => SS,
        };
        self.load_seg(s, sel)?;
        self.set_gpr(reg, v);
        Ok(())
    }

    /// The CS cache for a far JMP/CALL to `sel` (direct code segments only;
    /// gates raise #GP). Nothing is committed.
    pub(crate) fn far_target_cs(&mut self, sel: u16) -> R<SegCache> {
        let mode = self.c.state.mode;
        if matches!(mode, Mode::Real | Mode::Virtual8086) {
            let mut cs = self.c.state.seg[CS];
            cs.selector = sel;
            cs.base = (sel as u64) << 4;
            return Ok(cs);
        }
        let cpl = self.c.state.cpl;
        let code = sel as u32 & 0xfffc;
        if code == 0 {
            return Err(gp(0));
        }
        let (raw, lin) = self.read_descriptor(sel)?;
        let mut d = SegCache::from_descriptor(sel, raw);
        if !d.is_code() {
            tracing::debug!(
                sel,
                "far transfer through a gate or to a non-code segment: #GP"
            );
            return Err(gp(code));
        }
        let conforming = d.typ() & 4 != 0;
        let rpl = (sel & 3) as u8;
        if conforming {
            if d.dpl() > cpl {
                return Err(gp(code));
            }
        } else if rpl > cpl || d.dpl() != cpl {
            return Err(gp(code));
        }
        if !d.present() {
            return Err(np(code));
        }
        if self.c.state.long_mode_active() && d.l() && d.db() {
            return Err(gp(code));
        }
        self.set_descriptor_accessed(raw, lin)?;
        d.attr |= 1;
        d.selector = (sel & 0xfffc) | cpl as u16;
        Ok(d)
    }

    /// The CS cache for a far RET / IRET to `sel` (RPL = the new CPL).
    pub(crate) fn return_cs(&mut self, sel: u16) -> R<SegCache> {
        let cpl = self.c.state.cpl;
        let code = sel as u32 & 0xfffc;
        if code == 0 {
            return Err(gp(0));
        }
        let rpl = (sel & 3) as u8;
        if rpl < cpl {
            return Err(gp(code));
        }
        let (raw, lin) = self.read_descriptor(sel)?;
        let mut d = SegCache::from_descriptor(sel, raw);
        if !d.is_code() {
            return Err(gp(code));
        }
        let conforming = d.typ() & 4 != 0;
        if (conforming && d.dpl() > rpl) || (!conforming && d.dpl() != rpl) {
            return Err(gp(code));
        }
        if !d.present() {
            return Err(np(code));
        }
        if self.c.state.long_mode_active() && d.l() && d.db() {
            return Err(gp(code));
        }
        self.set_descriptor_accessed(raw, lin)?;
        d.attr |= 1;
        Ok(d)
    }

    /// The SS cache for a return to outer privilege level `rpl`.
    pub(crate) fn return_ss(&mut self, sel: u16, rpl: u8, to_64bit: bool) -> R<SegCache> {
        let code = sel as u32 & 0xfffc;
        if code == 0 {
            if self.c.state.long_mode_active() && to_64bit && rpl != 3 {
                return Ok(SegCache {
                    selector: sel,
                    base: 0,
                    limit: 0,
                    attr: SegCache::UNUSABLE | ((rpl as u32) << 5),
                });
            }
            return Err(gp(0));
        }
        let (raw, lin) = self.read_descriptor(sel)?;
        let mut d = SegCache::from_descriptor(sel, raw);
        if (sel & 3) as u8 != rpl || !d.s() || d.typ() & 0xa != 0x2 || d.dpl() != rpl {
            return Err(gp(code));
        }
        if !d.present() {
            return Err(ss(code));
        }
        self.set_descriptor_accessed(raw, lin)?;
        d.attr |= 1;
        Ok(d)
    }

    /// Commits a new CS (and the mode it implies).
    pub(crate) fn set_cs(&mut self, cs: SegCache) {
        self.c.state.seg[CS] = cs;
        self.c.state.update_mode();
        self.c.block_exit = true;
    }

    /// After a return to an outer privilege level: data segment registers
    /// the new CPL may not use become null.
    pub(crate) fn null_inaccessible_data_segs(&mut self) {
        let cpl = self.c.state.cpl;
        for s in [ES, DS, FS, GS] {
            let seg = &mut self.c.state.seg[s];
            let conforming_code = seg.is_code() && seg.typ() & 4 != 0;
            if !seg.unusable() && !conforming_code && seg.dpl() < cpl {
                seg.selector = 0;
                seg.attr = SegCache::UNUSABLE;
            }
        }
    }
}
