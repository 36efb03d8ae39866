//! Exceptions and interrupt delivery: real-mode IVT, protected-mode and
//! long-mode IDT gates, stack switches through the TSS, #DF and triple fault.

use hv::ExitReason;

use crate::exec::Exec;
use crate::state::{rflags, Mode, SegCache, CS, SS};
use crate::CpuExit;

pub const DE: u8 = 0;
pub const DB: u8 = 1;
pub const BP: u8 = 3;
pub const OF: u8 = 4;
pub const BR: u8 = 5;
pub const UD: u8 = 6;
pub const NM: u8 = 7;
pub const DF: u8 = 8;
pub const TS: u8 = 10;
pub const NP: u8 = 11;
pub const SS_FAULT: u8 = 12;
pub const GP: u8 = 13;
pub const PF: u8 = 14;
pub const MF: u8 = 16;
pub const XM: u8 = 19;

/// A pending exception: vector and optional error code. (Error codes
/// fit in 16 bits; keeping `R<()>` this small lets it return in a
/// register from every instruction handler.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exc {
    pub vector: u8,
    pub code: Option<u16>,
}

pub type R<T> = Result<T, Exc>;

pub fn gp(code: u32) -> Exc {
    Exc {
        vector: GP,
        code: Some(code as u16),
    }
}
pub fn ss(code: u32) -> Exc {
    Exc {
        vector: SS_FAULT,
        code: Some(code as u16),
    }
}
pub fn np(code: u32) -> Exc {
    Exc {
        vector: NP,
        code: Some(code as u16),
    }
}
pub fn ts(code: u32) -> Exc {
    Exc {
        vector: TS,
        code: Some(code as u16),
    }
}
pub fn ud() -> Exc {
    Exc {
        vector: UD,
        code: None,
    }
}
pub fn de() -> Exc {
    Exc {
        vector: DE,
        code: None,
    }
}

/// What kind of event is being delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A fault or trap raised by an instruction.
    Exception,
    /// An external interrupt injected by the accelerator.
    External,
    Nmi,
    /// INT n / INT3 / INTO: gate DPL is checked, EXT is 0.
    Software,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Class {
    Benign,
    Contributory,
    PageFault,
}

fn class(vector: u8) -> Class {
    match vector {
        DE | TS | NP | SS_FAULT | GP => Class::Contributory,
        PF => Class::PageFault,
        _ => Class::Benign,
    }
}

impl Exec<'_> {
    /// Delivers a hardware event, escalating to #DF and to a triple fault
    /// (Shutdown) as the SDM's double-fault table says.
    pub(crate) fn deliver_event(&mut self, vector: u8, code: Option<u32>, kind: EventKind) {
        self.deliver_event_rf(vector, code, kind, false);
    }

    /// [`Exec::deliver_event`]; `rf` pushes RFLAGS.RF set, as the SDM says
    /// for every fault-class exception but an instruction-breakpoint #DB
    /// (so that IRET retries the instruction without re-checking its
    /// instruction breakpoints).
    fn deliver_event_rf(&mut self, vector: u8, code: Option<u32>, kind: EventKind, rf: bool) {
        self.c.block_exit = true;
        let (mut v, mut c, mut k, mut rf) = (vector, code, kind, rf);
        for _ in 0..4 {
            match self.deliver_once(v, c, k, rf) {
                Ok(()) => return,
                Err(e) => {
                    if v == DF && k == EventKind::Exception {
                        break;
                    }
                    let first = if k == EventKind::Exception {
                        class(v)
                    } else {
                        Class::Benign
                    };
                    let second = class(e.vector);
                    let double = match first {
                        Class::Contributory => second == Class::Contributory,
                        Class::PageFault => second != Class::Benign,
                        Class::Benign => false,
                    };
                    if double {
                        (v, c) = (DF, Some(0));
                    } else {
                        (v, c) = (e.vector, e.code.map(u32::from));
                    }
                    k = EventKind::Exception;
                    rf = true;
                }
            }
        }
        self.triple_fault();
    }

    pub(crate) fn triple_fault(&mut self) {
        tracing::debug!(rip = self.c.state.rip, "triple fault");
        self.vm_exit(ExitReason::Shutdown, tracepoints::VmxExit::TripleFault, 0);
        self.c.pending_exit = Some(CpuExit::Shutdown);
        self.c.block_exit = true;
    }

    /// Raises a fault from an instruction (RIP points at the faulting
    /// instruction). The only #DB that arrives here is the general-detect
    /// fault; trap-class #DBs and instruction breakpoints are delivered by
    /// the debug stepper.
    pub(crate) fn raise(&mut self, e: Exc) {
        if e.vector == UD {
            self.c.counters.inc(ExitReason::InsnEmulationFail);
        }
        self.deliver_event_rf(e.vector, e.code.map(u32::from), EventKind::Exception, true);
    }

    fn deliver_once(&mut self, vector: u8, code: Option<u32>, kind: EventKind, rf: bool) -> R<()> {
        match self.c.state.mode {
            Mode::Real => self.deliver_real(vector),
            Mode::Virtual8086 => Err(gp(0)),
            Mode::Protected | Mode::Long => self.deliver_protected(vector, code, kind, rf),
        }
    }

    fn deliver_real(&mut self, vector: u8) -> R<()> {
        let off = vector as u64 * 4;
        if off + 3 > self.c.state.idtr.limit as u64 {
            return Err(gp(vector as u32 * 8 + 2));
        }
        let entry = self.read_sys(self.c.state.idtr.base + off, 4)?;
        let flags = self.c.state.rflags();
        let ss_base = self.c.state.seg[SS].base;
        let mut sp = self.c.state.gpr[4] as u16;
        let cs = self.c.state.seg[CS].selector as u64;
        let ip = self.c.state.rip & 0xffff;
        for v in [flags & 0xffff, cs, ip] {
            sp = sp.wrapping_sub(2);
            self.write_lin((ss_base + sp as u64) & 0xffff_ffff, 2, v, false)?;
        }
        self.set_gpr_sized(4, 2, sp as u64);
        let f = &mut self.c.state.flags;
        f.set_bit(rflags::IF | rflags::TF | rflags::AC, false);
        let sel = (entry >> 16) as u16;
        let cs = &mut self.c.state.seg[CS];
        cs.selector = sel;
        cs.base = (sel as u64) << 4;
        self.c.state.rip = entry & 0xffff;
        Ok(())
    }

    fn deliver_protected(
        &mut self,
        vector: u8,
        code: Option<u32>,
        kind: EventKind,
        rf: bool,
    ) -> R<()> {
        let long = self.c.state.long_mode_active();
        let ext = u32::from(kind != EventKind::Software);
        let idt_code = vector as u32 * 8 + 2 + ext;
        let gate_size: u64 = if long { 16 } else { 8 };
        let off = vector as u64 * gate_size;
        if off + gate_size - 1 > self.c.state.idtr.limit as u64 {
            return Err(gp(idt_code));
        }
        let base = self.c.state.idtr.base + off;
        let lo = self.read_sys(base, 8)?;
        let hi = if long { self.read_sys(base + 8, 8)? } else { 0 };
        let typ = ((lo >> 40) & 0xf) as u8;
        let dpl = ((lo >> 45) & 3) as u8;
        let present = lo & (1 << 47) != 0;
        let gate_bits = match (long, typ) {
            (true, 0xe | 0xf) => 64,
            (false, 0xe | 0xf) => 32,
            (false, 0x6 | 0x7) => 16,
            _ => return Err(gp(idt_code)),
        };
        let cpl = self.c.state.cpl;
        if kind == EventKind::Software && dpl < cpl {
            return Err(gp(vector as u32 * 8 + 2));
        }
        if !present {
            return Err(np(idt_code));
        }
        let trap_gate = typ & 1 != 0;
        let sel = ((lo >> 16) & 0xffff) as u16;
        let mut target = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000);
        if long {
            target |= (hi & 0xffff_ffff) << 32;
        } else if gate_bits == 16 {
            target &= 0xffff;
        }
        let ist = if long { ((lo >> 32) & 7) as u32 } else { 0 };

        // The target code segment.
        if sel & 0xfffc == 0 {
            return Err(gp(ext));
        }
        let sel_code = (sel as u32 & 0xfffc) + ext;
        let (desc, _) = self.read_descriptor_or(sel, gp(sel_code))?;
        let mut new_cs = SegCache::from_descriptor(sel, desc);
        if !new_cs.is_code() || new_cs.dpl() > cpl {
            return Err(gp(sel_code));
        }
        if !new_cs.present() {
            return Err(np(sel_code));
        }
        if long && (!new_cs.l() || new_cs.db()) {
            return Err(gp(sel_code));
        }
        let conforming = new_cs.typ() & 4 != 0;
        let new_cpl = if conforming { cpl } else { new_cs.dpl() };
        new_cs.selector = (sel & 0xfffc) | new_cpl as u16;

        let old_flags = self.c.state.rflags() | if rf { rflags::RF } else { 0 };
        let old_cs = self.c.state.seg[CS].selector as u64;
        let old_ss = self.c.state.seg[SS].selector as u64;
        let old_rsp = self.c.state.gpr[4];
        let rip = self.c.state.rip;
        let user = new_cpl == 3;

        if long {
            let switch = new_cpl < cpl;
            let mut rsp = if ist != 0 {
                self.read_tss64(0x24 + (ist - 1) * 8)?
            } else if switch {
                self.read_tss64(4 + new_cpl as u32 * 8)?
            } else {
                old_rsp
            };
            rsp &= !0xf;
            let mut vals = [old_ss, old_rsp, old_flags, old_cs, rip, 0];
            let n = if let Some(c) = code {
                vals[5] = c as u64;
                6
            } else {
                5
            };
            for v in vals.iter().take(n) {
                rsp = rsp.wrapping_sub(8);
                if !crate::mem::canonical(rsp) {
                    return Err(ss(0));
                }
                self.write_lin(rsp, 8, *v, user)?;
            }
            if switch {
                self.c.state.seg[SS] = SegCache {
                    selector: new_cpl as u16,
                    base: 0,
                    limit: 0,
                    attr: SegCache::UNUSABLE | ((new_cpl as u32) << 5),
                };
            }
            self.c.state.gpr[4] = rsp;
        } else {
            let switch = new_cpl < cpl;
            let bytes: u32 = gate_bits / 8;
            let (ss_cache, mut esp) = if switch {
                let (ss_sel, esp) = self.read_tss32_stack(new_cpl)?;
                let ss_cache = self.check_tss_ss(ss_sel, new_cpl)?;
                (ss_cache, esp)
            } else {
                (self.c.state.seg[SS], old_rsp)
            };
            let stack_mask: u64 = if ss_cache.db() { 0xffff_ffff } else { 0xffff };
            let mut vals = [old_ss, old_rsp, old_flags, old_cs, rip, 0];
            let mut start = if switch { 0 } else { 2 };
            let mut end = 5;
            if let Some(c) = code {
                vals[5] = c as u64;
                end = 6;
            }
            while start < end {
                esp = esp.wrapping_sub(bytes as u64) & stack_mask | (esp & !stack_mask);
                let lin = (ss_cache.base + (esp & stack_mask)) & 0xffff_ffff;
                self.write_lin(lin, bytes, vals[start], user)?;
                start += 1;
            }
            if switch {
                self.c.state.seg[SS] = ss_cache;
                self.c.state.gpr[4] = esp & 0xffff_ffff;
            } else {
                let m = stack_mask;
                self.c.state.gpr[4] = (old_rsp & !m) | (esp & m);
            }
        }
        self.c.state.seg[CS] = new_cs;
        self.c.state.rip = target;
        let f = &mut self.c.state.flags;
        f.set_bit(rflags::TF | rflags::NT | rflags::RF | rflags::VM, false);
        if !trap_gate {
            f.set_bit(rflags::IF, false);
        }
        self.c.state.update_mode();
        Ok(())
    }

    fn read_tss64(&mut self, off: u32) -> R<u64> {
        let tr = self.c.state.tr;
        if off as u64 + 7 > tr.limit as u64 {
            return Err(ts(tr.selector as u32 & 0xfffc));
        }
        self.read_sys(tr.base + off as u64, 8)
    }

    /// SS:ESP for privilege level `cpl` from a 32-bit TSS.
    fn read_tss32_stack(&mut self, cpl: u8) -> R<(u16, u64)> {
        let tr = self.c.state.tr;
        let off = 4 + cpl as u64 * 8;
        if off + 5 > tr.limit as u64 {
            return Err(ts(tr.selector as u32 & 0xfffc));
        }
        let esp = self.read_sys(tr.base + off, 4)?;
        let ss = self.read_sys(tr.base + off + 4, 2)? as u16;
        Ok((ss, esp))
    }

    fn check_tss_ss(&mut self, sel: u16, cpl: u8) -> R<SegCache> {
        let code = sel as u32 & 0xfffc;
        if code == 0 {
            return Err(ts(0));
        }
        let (desc, _) = self.read_descriptor_or(sel, ts(code))?;
        let s = SegCache::from_descriptor(sel, desc);
        if (sel & 3) as u8 != cpl || s.dpl() != cpl || !s.s() || s.typ() & 0xa != 0x2 {
            return Err(ts(code));
        }
        if !s.present() {
            return Err(ss(code));
        }
        Ok(s)
    }
}

impl Exec<'_> {
    /// INT n / INT3 / INTO / INT1 (RIP already points after the instruction).
    /// A fault while delivering is returned to the caller as the
    /// instruction's fault.
    pub(crate) fn deliver_software(&mut self, vector: u8, kind: EventKind) -> R<()> {
        self.deliver_once(vector, None, kind, false)
    }
}
