//! System instructions: control/debug registers, descriptor tables, MSRs,
//! CPUID, TSC, HLT, port I/O, SYSCALL/SYSRET, SYSENTER/SYSEXIT, SWAPGS,
//! XGETBV/XSETBV and friends.

use hv::ExitReason;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use tracepoints::VmxExit;

use super::Exec;
use crate::counters::TlbFlush;
use crate::exception::{gp, np, ud, R};
use crate::mem::canonical;
use crate::msr::{flat_seg, MsrError};
use crate::state::rflags::*;
use crate::state::{cr0, cr4, efer, xcr0, Mode, SegCache, CS, GS, RAX, RBX, RCX, RDX, RSI, SS};

impl Exec<'_> {
    fn require_cpl0(&self) -> R<()> {
        if self.c.state.cpl != 0 {
            return Err(gp(0));
        }
        Ok(())
    }

    fn umip_check(&self) -> R<()> {
        if self.c.state.cr4 & cr4::UMIP != 0 && self.c.state.cpl > 0 {
            return Err(gp(0));
        }
        Ok(())
    }

    pub(crate) fn mov_to_crdr(&mut self, insn: &Instruction) -> R<()> {
        self.require_cpl0()?;
        let r = insn.op0_register();
        let v = self.gpr(insn.op1_register());
        if r.is_dr() {
            return self.write_dr(r as usize - Register::DR0 as usize, v);
        }
        let n = r as usize - Register::CR0 as usize;
        self.vm_exit(
            ExitReason::CrAccess,
            VmxExit::CrAccess,
            VmxExit::cr_qualification(n as u32, true),
        );
        tracepoints::kvm_cr(true, n as u32, v);
        self.write_cr(n, v)
    }

    /// MOV to CRn with the architectural checks.
    pub(crate) fn write_cr(&mut self, n: usize, v: u64) -> R<()> {
        let st = &mut self.c.state;
        match n {
            0 => {
                if v >> 32 != 0 {
                    return Err(gp(0));
                }
                let v = v | cr0::ET;
                if (v & cr0::PG != 0 && v & cr0::PE == 0) || (v & cr0::NW != 0 && v & cr0::CD == 0)
                {
                    return Err(gp(0));
                }
                let old = st.cr0;
                let pg_on = v & cr0::PG != 0 && old & cr0::PG == 0;
                let pg_off = v & cr0::PG == 0 && old & cr0::PG != 0;
                if pg_off && st.cr4 & cr4::PCIDE != 0 {
                    return Err(gp(0));
                }
                if pg_on && st.efer & efer::LME != 0 {
                    if st.cr4 & cr4::PAE == 0 {
                        return Err(gp(0));
                    }
                    st.efer |= efer::LMA;
                }
                if pg_off && st.efer & efer::LMA != 0 {
                    if st.mode == Mode::Long {
                        return Err(gp(0));
                    }
                    st.efer &= !efer::LMA;
                }
                st.cr0 = v;
                if (old ^ v) & (cr0::PG | cr0::WP | cr0::PE) != 0 {
                    self.c.tlb.flush_guest_all(TlbFlush::PagingControl);
                }
                self.c.state.update_mode();
            }
            2 => st.cr2 = v,
            3 => {
                // With CR4.PCIDE, bits 11:0 are the PCID and bit 63 keeps
                // the PCID's cached translations (it is not stored).
                let pcide = st.cr4 & cr4::PCIDE != 0;
                let keep = pcide && v & (1 << 63) != 0;
                let v = if pcide {
                    v & !(1 << 63)
                } else if st.long_mode_active() {
                    v
                } else {
                    v & 0xffff_ffff
                };
                if v >> self.c.phys_bits != 0 {
                    return Err(gp(0));
                }
                st.cr3 = v;
                let pcid = if pcide { (v & 0xfff) as u16 } else { 0 };
                self.c.tlb.switch_context(pcid, keep, TlbFlush::Cr3);
            }
            4 => {
                if v & !self.c.feat.cr4_valid() != 0 {
                    return Err(gp(0));
                }
                if st.long_mode_active() && v & cr4::PAE == 0 {
                    return Err(gp(0));
                }
                let old = st.cr4;
                if v & !old & cr4::PCIDE != 0 && (!st.long_mode_active() || st.cr3 & 0xfff != 0) {
                    return Err(gp(0));
                }
                st.cr4 = v;
                // The TLB caches permissions decided under these bits.
                let rights = cr4::PGE
                    | cr4::PAE
                    | cr4::PSE
                    | cr4::PCIDE
                    | cr4::SMEP
                    | cr4::SMAP
                    | cr4::PKE
                    | cr4::PKS;
                if (old ^ v) & rights != 0 {
                    self.c.tlb.flush_guest_all(TlbFlush::PagingControl);
                }
                if old & !v & cr4::PCIDE != 0 {
                    self.c.tlb.switch_context(0, false, TlbFlush::PagingControl);
                }
            }
            8 => {
                if v > 15 {
                    return Err(gp(0));
                }
                // The local APIC's TPR, where there is one.
                if !self.bus.write_cr8(v) {
                    st.cr8 = v;
                }
            }
            _ => return Err(ud()),
        }
        self.c.block_exit = true;
        Ok(())
    }

    pub(crate) fn mov_from_crdr(&mut self, insn: &Instruction) -> R<()> {
        self.require_cpl0()?;
        let r = insn.op1_register();
        let v = if r.is_dr() {
            self.read_dr(r as usize - Register::DR0 as usize)?
        } else {
            let n = r as usize - Register::CR0 as usize;
            self.vm_exit(
                ExitReason::CrAccess,
                VmxExit::CrAccess,
                VmxExit::cr_qualification(n as u32, false),
            );
            let st = &self.c.state;
            let v = match n {
                0 => st.cr0,
                2 => st.cr2,
                3 => st.cr3,
                4 => st.cr4,
                8 => match self.bus.read_cr8() {
                    Some(v) => v,
                    None => self.c.state.cr8,
                },
                _ => return Err(ud()),
            };
            tracepoints::kvm_cr(false, n as u32, v);
            v
        };
        self.set_gpr(insn.op0_register(), v);
        Ok(())
    }

    /// IOPL / TSS I/O-bitmap permission for `size` ports at `port`.
    pub(crate) fn io_allowed(&mut self, port: u16, size: u32) -> R<()> {
        let st = &self.c.state;
        let check_bitmap = match st.mode {
            Mode::Real => false,
            Mode::Virtual8086 => true,
            _ => st.cpl > st.iopl(),
        };
        if !check_bitmap {
            return Ok(());
        }
        let tr = st.tr;
        // Only a 32/64-bit TSS has a bitmap.
        if tr.unusable() || tr.typ() & 0x7 != 0x3 && tr.typ() & 0x7 != 0x1 || tr.typ() & 8 == 0 {
            return Err(gp(0));
        }
        if tr.limit < 0x67 {
            return Err(gp(0));
        }
        let iobase = self.read_sys(tr.base + 0x66, 2)?;
        let byte = iobase + port as u64 / 8;
        if byte + 1 > tr.limit as u64 {
            return Err(gp(0));
        }
        let bits = self.read_sys(tr.base + byte, 2)?;
        let mask = ((1u64 << size) - 1) << (port % 8);
        if bits & mask != 0 {
            return Err(gp(0));
        }
        Ok(())
    }

    /// Counts an exit of `reason` and emits `kvm_exit` for it (at the RIP
    /// the CPU state holds: on emu, the instruction's end for the
    /// instructions that exit, the block's start for MMIO).
    pub(crate) fn vm_exit(&mut self, reason: ExitReason, vmx: VmxExit, info1: u64) {
        self.c.counters.inc(reason);
        tracepoints::kvm_exit(vmx, self.c.state.rip, info1, 0);
    }

    pub(crate) fn port_in(&mut self, port: u16, size: u32) -> u64 {
        self.io_breakpoints(port, size);
        let qual = VmxExit::io_qualification(port, size, true, false, false);
        self.vm_exit(ExitReason::Io, VmxExit::IoInstruction, qual);
        let mut buf = [0u8; 4];
        self.bus.pio_read(port, &mut buf[..size as usize]);
        let v = u32::from_le_bytes(buf);
        tracepoints::kvm_pio(false, port, size, 1, v);
        v as u64
    }

    pub(crate) fn port_out(&mut self, port: u16, size: u32, v: u64) {
        self.io_breakpoints(port, size);
        let qual = VmxExit::io_qualification(port, size, false, false, false);
        self.vm_exit(ExitReason::Io, VmxExit::IoInstruction, qual);
        tracepoints::kvm_pio(true, port, size, 1, v as u32);
        let buf = (v as u32).to_le_bytes();
        self.bus.pio_write(port, &buf[..size as usize]);
    }

    fn cpuid(&mut self) {
        self.vm_exit(ExitReason::Cpuid, VmxExit::Cpuid, 0);
        let leaf = self.c.state.gpr[RAX] as u32;
        let sub = self.c.state.gpr[RCX] as u32;
        let e = self
            .c
            .cpuid
            .iter()
            .find(|e| e.function == leaf && (!e.significant_index || e.index == sub))
            .copied();
        let found = e.is_some();
        let e = e.unwrap_or_default();
        let (eax, mut ebx, mut ecx, mut edx) = (e.eax, e.ebx, e.ecx, e.edx);
        if leaf == 0xd && e.function == 0xd {
            match sub {
                // EBX: the XSAVE area size for the components XCR0 enables.
                0 => ebx = self.xsave_size(),
                // EBX: the compacted size for XCR0 (IA32_XSS is 0), when
                // XSAVEC or XSAVES exists (Linux sizes its buffers with it).
                1 if eax & 0b1010 != 0 => ebx = self.xsave_compacted_size(),
                _ => {}
            }
        }
        if leaf == 1 {
            ecx &= !(1 << 27);
            if self.c.state.cr4 & cr4::OSXSAVE != 0 && e.ecx & (1 << 26) != 0 {
                ecx |= 1 << 27;
            }
            // The APIC bit follows IA32_APIC_BASE's global enable, which
            // the local APIC (behind the bus) owns.
            let apic_base = self.bus.rdmsr(hv::state::msr_index::IA32_APIC_BASE);
            if apic_base.is_some_and(|v| v & (1 << 11) == 0) {
                edx &= !(1 << 9);
            }
        }
        if leaf == 7 && sub == 0 {
            // OSPKE mirrors CR4.PKE.
            ecx &= !(1 << 4);
            if self.c.state.cr4 & cr4::PKE != 0 && e.ecx & (1 << 3) != 0 {
                ecx |= 1 << 4;
            }
        }
        tracepoints::kvm_cpuid(
            leaf,
            sub,
            eax.into(),
            ebx.into(),
            ecx.into(),
            edx.into(),
            found,
        );
        let g = &mut self.c.state.gpr;
        g[RAX] = eax as u64;
        g[3] = ebx as u64;
        g[RCX] = ecx as u64;
        g[RDX] = edx as u64;
    }

    /// The standard-format XSAVE area size for the current XCR0: the end
    /// of the furthest enabled component (CPUID 0xD sub-leaf i gives its
    /// size and offset), at least the legacy region and header.
    fn xsave_size(&self) -> u32 {
        let xcr0 = self.c.state.xcr0;
        self.c
            .cpuid
            .iter()
            .filter(|e| e.function == 0xd && (2..63).contains(&e.index))
            .filter(|e| xcr0 & (1 << e.index) != 0)
            .map(|e| e.ebx.saturating_add(e.eax))
            .fold(576, u32::max)
    }

    /// The compacted-format XSAVE area size for the current XCR0: the
    /// legacy region and header, then each enabled component from 2 on,
    /// 64-byte aligned when its sub-leaf's ECX bit 1 says so.
    fn xsave_compacted_size(&self) -> u32 {
        let xcr0 = self.c.state.xcr0;
        let mut size = 576u32;
        for i in 2..63u32 {
            if xcr0 & (1 << i) == 0 {
                continue;
            }
            let Some(e) = self
                .c
                .cpuid
                .iter()
                .find(|e| e.function == 0xd && e.index == i)
            else {
                continue;
            };
            if e.ecx & 2 != 0 {
                size = size.saturating_add(63) & !63;
            }
            size = size.saturating_add(e.eax);
        }
        size
    }

    pub(super) fn system(&mut self, insn: &Instruction) -> R<()> {
        use Mnemonic::*;
        match insn.mnemonic() {
            Hlt => {
                self.require_cpl0()?;
                self.vm_exit(ExitReason::Hlt, VmxExit::Hlt, 0);
                self.c.state.halted = true;
                self.c.block_exit = true;
            }
            Cpuid => self.cpuid(),
            Vmcall | Vmmcall => {
                self.vm_exit(ExitReason::Hypercall, VmxExit::Vmcall, 0);
                let st = &self.c.state;
                let g = |r: usize| st.gpr[r];
                let call = crate::Hypercall {
                    nr: g(RAX),
                    args: [g(RBX), g(RCX), g(RDX), g(RSI)],
                    cpl: st.cpl,
                    long_mode: st.mode == Mode::Long,
                };
                let ret = self.bus.hypercall(&call).ok_or_else(ud)?;
                self.c.state.gpr[RAX] = ret;
                // A hypercall may have sent interrupts.
                self.c.block_exit = true;
            }
            Rdtsc | Rdtscp => {
                if insn.mnemonic() == Rdtscp && !self.c.feat.rdtscp {
                    return Err(ud());
                }
                if self.c.state.cr4 & cr4::TSD != 0 && self.c.state.cpl != 0 {
                    return Err(gp(0));
                }
                let t = self.c.tsc();
                self.set_gpr_sized(RAX, 4, t & 0xffff_ffff);
                self.set_gpr_sized(RDX, 4, t >> 32);
                if insn.mnemonic() == Rdtscp {
                    let aux = self.c.state.msr.tsc_aux;
                    self.set_gpr_sized(RCX, 4, aux);
                }
            }
            Rdpid => {
                if !self.c.feat.rdpid {
                    return Err(ud());
                }
                let aux = self.c.state.msr.tsc_aux;
                self.set_gpr(insn.op0_register(), aux);
            }
            Rdmsr => {
                self.require_cpl0()?;
                self.vm_exit(ExitReason::MsrAccess, VmxExit::MsrRead, 0);
                let idx = self.c.state.gpr[RCX] as u32;
                let v = match self.c.read_msr(idx) {
                    Some(v) => v,
                    None => self.bus.rdmsr(idx).ok_or_else(|| {
                        tracing::debug!(msr = idx, "rdmsr of an unknown MSR: #GP");
                        tracepoints::kvm_msr(false, idx, 0, true);
                        gp(0)
                    })?,
                };
                tracepoints::kvm_msr(false, idx, v, false);
                self.set_gpr_sized(RAX, 4, v & 0xffff_ffff);
                self.set_gpr_sized(RDX, 4, v >> 32);
            }
            Wrmsr => {
                self.require_cpl0()?;
                self.vm_exit(ExitReason::MsrAccess, VmxExit::MsrWrite, 0);
                let idx = self.c.state.gpr[RCX] as u32;
                let v = (self.c.state.gpr[RAX] & 0xffff_ffff) | (self.c.state.gpr[RDX] << 32);
                let ok = match self.c.write_msr(idx, v) {
                    Ok(()) => true,
                    Err(MsrError::Invalid) => false,
                    Err(MsrError::Unknown) => {
                        let ok = self.bus.wrmsr(idx, v);
                        if !ok {
                            tracing::debug!(msr = idx, "wrmsr of an unknown MSR: #GP");
                        }
                        ok
                    }
                };
                tracepoints::kvm_msr(true, idx, v, !ok);
                if !ok {
                    return Err(gp(0));
                }
                self.c.block_exit = true;
            }
            In => {
                let size = insn.op0_register().size() as u32;
                let port = if insn.op1_kind() == OpKind::Register {
                    self.gpr_sized(RDX, 2) as u16
                } else {
                    insn.immediate8() as u16
                };
                self.io_allowed(port, size)?;
                let v = self.port_in(port, size);
                self.set_gpr(insn.op0_register(), v);
            }
            Out => {
                let size = insn.op1_register().size() as u32;
                let port = if insn.op0_kind() == OpKind::Register {
                    self.gpr_sized(RDX, 2) as u16
                } else {
                    insn.immediate8() as u16
                };
                self.io_allowed(port, size)?;
                let v = self.gpr(insn.op1_register());
                self.port_out(port, size, v);
            }
            Lgdt | Lidt => {
                self.require_cpl0()?;
                let seg = Self::mem_seg(insn);
                let off = self.ea(insn);
                let limit = self.read(seg, off, 2)? as u16;
                let mut base = if self.c.state.mode == Mode::Long {
                    self.read(seg, off.wrapping_add(2), 8)?
                } else {
                    self.read(seg, off.wrapping_add(2), 4)?
                };
                if self.c.state.mode == Mode::Long {
                    if !canonical(base) {
                        return Err(gp(0));
                    }
                } else if insn.code() == iced_x86::Code::Lgdt_m1632_16
                    || insn.code() == iced_x86::Code::Lidt_m1632_16
                {
                    base &= 0xff_ffff;
                }
                let t = crate::state::TableReg { base, limit };
                if insn.mnemonic() == Lgdt {
                    self.c.state.gdtr = t;
                } else {
                    self.c.state.idtr = t;
                }
            }
            Sgdt | Sidt => {
                self.umip_check()?;
                let t = if insn.mnemonic() == Sgdt {
                    self.c.state.gdtr
                } else {
                    self.c.state.idtr
                };
                let seg = Self::mem_seg(insn);
                let off = self.ea(insn);
                let bsize = if self.c.state.mode == Mode::Long {
                    8
                } else {
                    4
                };
                self.seg_lin(seg, off, 2 + bsize, true)?;
                self.write(seg, off, 2, t.limit as u64)?;
                self.write(seg, off.wrapping_add(2), bsize, t.base)?;
            }
            Lldt | Ltr => {
                self.require_cpl0()?;
                if self.c.state.mode == Mode::Real {
                    return Err(ud());
                }
                let sel = self.read_op(insn, 0, 2)? as u16;
                self.load_system_seg(insn.mnemonic() == Ltr, sel)?;
            }
            Sldt | Str => {
                self.umip_check()?;
                if self.c.state.mode == Mode::Real {
                    return Err(ud());
                }
                let v = if insn.mnemonic() == Sldt {
                    self.c.state.ldtr.selector
                } else {
                    self.c.state.tr.selector
                } as u64;
                let size = Self::op_size(insn, 0);
                self.write_op(insn, 0, size.min(8), v)?;
            }
            Smsw => {
                self.umip_check()?;
                let size = Self::op_size(insn, 0);
                let v = self.c.state.cr0 & if size == 2 { 0xffff } else { u64::MAX };
                self.write_op(insn, 0, size, v)?;
            }
            Lmsw => {
                self.require_cpl0()?;
                let v = self.read_op(insn, 0, 2)?;
                let cur = self.c.state.cr0;
                // PE can be set but not cleared.
                let new = (cur & !0xe) | (v & 0xf) | (cur & cr0::PE);
                self.vm_exit(
                    ExitReason::CrAccess,
                    VmxExit::CrAccess,
                    VmxExit::cr_qualification(0, true),
                );
                tracepoints::kvm_cr(true, 0, new);
                self.write_cr(0, new)?;
            }
            Clts => {
                self.require_cpl0()?;
                self.c.state.cr0 &= !cr0::TS;
            }
            Invlpg => {
                self.require_cpl0()?;
                let off = self.ea(insn);
                let seg = Self::mem_seg(insn);
                let st = &self.c.state;
                let base = if st.mode == Mode::Long && seg < 4 {
                    0
                } else {
                    st.seg[seg.min(5)].base
                };
                let lin = base.wrapping_add(off);
                let lin = if st.long_mode_active() {
                    lin
                } else {
                    lin & 0xffff_ffff
                };
                self.c.tlb.flush_page(lin, TlbFlush::Invlpg);
                self.c.block_exit = true;
            }
            Invpcid => self.invpcid(insn)?,
            Stac | Clac => {
                if !self.c.feat.smap || self.c.state.cpl > 0 {
                    return Err(ud());
                }
                self.c.state.flags.set_bit(AC, insn.mnemonic() == Stac);
                self.c.block_exit = true;
            }
            Rdpkru => {
                if self.c.state.cr4 & cr4::PKE == 0 {
                    return Err(ud());
                }
                if self.c.state.gpr[RCX] as u32 != 0 {
                    return Err(gp(0));
                }
                let v = self.c.state.pkru as u64;
                self.set_gpr_sized(RAX, 4, v);
                self.set_gpr_sized(RDX, 4, 0);
            }
            Wrpkru => {
                if self.c.state.cr4 & cr4::PKE == 0 {
                    return Err(ud());
                }
                let g = &self.c.state.gpr;
                if g[RCX] as u32 != 0 || g[RDX] as u32 != 0 {
                    return Err(gp(0));
                }
                let v = g[RAX] as u32;
                self.c.set_pkru(v);
            }
            Wbinvd | Invd => self.require_cpl0()?,
            Swapgs => {
                if self.c.state.mode != Mode::Long {
                    return Err(ud());
                }
                self.require_cpl0()?;
                let st = &mut self.c.state;
                std::mem::swap(&mut st.seg[GS].base, &mut st.msr.kernel_gs_base);
            }
            Rdfsbase | Rdgsbase | Wrfsbase | Wrgsbase => {
                if self.c.state.mode != Mode::Long || self.c.state.cr4 & cr4::FSGSBASE == 0 {
                    return Err(ud());
                }
                let s = if matches!(insn.mnemonic(), Rdfsbase | Wrfsbase) {
                    crate::state::FS
                } else {
                    GS
                };
                let r = insn.op0_register();
                if matches!(insn.mnemonic(), Rdfsbase | Rdgsbase) {
                    let v = self.c.state.seg[s].base;
                    self.set_gpr(r, v);
                } else {
                    let v = self.gpr(r);
                    if !canonical(v) {
                        return Err(gp(0));
                    }
                    self.c.state.seg[s].base = v;
                }
            }
            Xgetbv => {
                if self.c.state.cr4 & cr4::OSXSAVE == 0 {
                    return Err(ud());
                }
                if self.c.state.gpr[RCX] as u32 != 0 {
                    return Err(gp(0));
                }
                let v = self.c.state.xcr0;
                self.set_gpr_sized(RAX, 4, v & 0xffff_ffff);
                self.set_gpr_sized(RDX, 4, v >> 32);
            }
            Xsetbv => {
                if self.c.state.cr4 & cr4::OSXSAVE == 0 {
                    return Err(ud());
                }
                self.require_cpl0()?;
                let v = (self.c.state.gpr[RAX] & 0xffff_ffff) | (self.c.state.gpr[RDX] << 32);
                // Only XCR0; x87 state always on; no unsupported bit;
                // AVX state only together with SSE state.
                if self.c.state.gpr[RCX] as u32 != 0
                    || v & xcr0::X87 == 0
                    || v & !self.c.xcr0_supported != 0
                    || (v & xcr0::AVX != 0 && v & xcr0::SSE == 0)
                {
                    return Err(gp(0));
                }
                self.c.state.xcr0 = v;
            }
            Syscall => self.syscall()?,
            Sysret | Sysretq => self.sysret(insn.mnemonic() == Sysretq)?,
            Sysenter => self.sysenter()?,
            Sysexit | Sysexitq => self.sysexit(insn.mnemonic() == Sysexitq)?,
            Lar | Lsl | Verr | Verw => self.descriptor_query(insn)?,
            Rdpmc => return Err(gp(0)),
            _ => return self.unimplemented(insn),
        }
        Ok(())
    }

    /// INVPCID: drops the translations the descriptor's PCID and address
    /// select, by type (0 one address, 1 one PCID, 2 everything, 3
    /// everything but global pages).
    fn invpcid(&mut self, insn: &Instruction) -> R<()> {
        if !self.c.feat.invpcid {
            return Err(ud());
        }
        if self.c.state.mode == Mode::Virtual8086 {
            return Err(gp(0));
        }
        self.require_cpl0()?;
        let ty = self.gpr(insn.op0_register());
        if ty > 3 {
            return Err(gp(0));
        }
        let seg = Self::mem_seg(insn);
        let off = self.ea(insn);
        let lo = self.read(seg, off, 8)?;
        let addr = self.read(seg, off.wrapping_add(8), 8)?;
        if lo >> 12 != 0 {
            return Err(gp(0));
        }
        let pcid = (lo & 0xfff) as u16;
        let pcide = self.c.state.cr4 & cr4::PCIDE != 0;
        if ty <= 1 && pcid != 0 && !pcide {
            return Err(gp(0));
        }
        match ty {
            0 => {
                if !canonical(addr) {
                    return Err(gp(0));
                }
                // Over-invalidates (every PCID), which is always allowed.
                self.c.tlb.flush_page(addr, TlbFlush::Invpcid);
            }
            1 => self.c.tlb.flush_pcid(pcid),
            2 => self.c.tlb.flush_guest_all(TlbFlush::Invpcid),
            _ => self.c.tlb.flush_all_nonglobal(),
        }
        self.c.block_exit = true;
        Ok(())
    }

    /// LLDT / LTR.
    fn load_system_seg(&mut self, tr: bool, sel: u16) -> R<()> {
        let code = sel as u32 & 0xfffc;
        if code == 0 {
            if tr {
                return Err(gp(0));
            }
            self.c.state.ldtr = SegCache {
                selector: sel,
                base: 0,
                limit: 0,
                attr: SegCache::UNUSABLE,
            };
            return Ok(());
        }
        if sel & 4 != 0 {
            return Err(gp(code));
        }
        let (raw, lin) = self.read_descriptor(sel)?;
        let mut d = SegCache::from_descriptor(sel, raw);
        let long = self.c.state.long_mode_active();
        let ok_type = if tr {
            d.typ() == 0x9 || (!long && d.typ() == 0x1)
        } else {
            d.typ() == 0x2
        };
        if d.s() || !ok_type {
            return Err(gp(code));
        }
        if !d.present() {
            return Err(np(code));
        }
        if long {
            let hi = self.read_descriptor(sel.wrapping_add(8))?.0;
            d.base |= (hi & 0xffff_ffff) << 32;
            // A 64-bit TSS or LDT must have a canonical base (KVM's
            // emulator: #GP(selector); kvm-unit-tests la57).
            if !canonical(d.base) {
                return Err(gp(code));
            }
        }
        if tr {
            // Mark the TSS busy.
            let b = ((raw >> 40) as u8) | 2;
            self.write_sys(lin + 5, 1, b as u64)?;
            d.attr |= 2;
            self.c.state.tr = d;
        } else {
            self.c.state.ldtr = d;
        }
        Ok(())
    }

    fn descriptor_query(&mut self, insn: &Instruction) -> R<()> {
        let m = insn.mnemonic();
        if matches!(self.c.state.mode, Mode::Real | Mode::Virtual8086) {
            return Err(ud());
        }
        let src_n = if matches!(m, Mnemonic::Verr | Mnemonic::Verw) {
            0
        } else {
            1
        };
        let sel = self.read_op(insn, src_n, 2)? as u16;
        let cpl = self.c.state.cpl;
        let rpl = (sel & 3) as u8;
        let mut result = None;
        if sel & 0xfffc != 0 {
            if let Some((raw, _)) = self.descriptor(sel)? {
                let d = SegCache::from_descriptor(sel, raw);
                let conforming = d.is_code() && d.typ() & 4 != 0;
                let priv_ok = conforming || (d.dpl() >= cpl && d.dpl() >= rpl);
                let type_ok = match m {
                    Mnemonic::Verr => d.s() && (!d.is_code() || d.typ() & 2 != 0),
                    Mnemonic::Verw => d.s() && !d.is_code() && d.typ() & 2 != 0,
                    Mnemonic::Lsl => d.s() || matches!(d.typ(), 1 | 2 | 3 | 9 | 0xb),
                    _ => d.s() || matches!(d.typ(), 1..=5 | 9 | 0xb | 0xc),
                };
                if type_ok && priv_ok {
                    result = Some(match m {
                        Mnemonic::Lar => (raw >> 32) & 0x00f0_ff00,
                        Mnemonic::Lsl => d.limit as u64,
                        _ => 0,
                    });
                }
            }
        }
        match result {
            Some(v) => {
                if matches!(m, Mnemonic::Lar | Mnemonic::Lsl) {
                    self.set_gpr(insn.op0_register(), v);
                }
                self.c.state.flags.set_arith(ZF, ZF);
            }
            None => self.c.state.flags.set_arith(ZF, 0),
        }
        Ok(())
    }

    fn syscall(&mut self) -> R<()> {
        let st = &self.c.state;
        if st.efer & efer::SCE == 0 || st.mode == Mode::Real || st.mode == Mode::Virtual8086 {
            return Err(ud());
        }
        let sel = ((st.msr.star >> 32) & 0xfffc) as u16;
        let long = st.long_mode_active();
        let fl = st.rflags();
        let next = st.rip;
        if long {
            let target = if st.mode == Mode::Long {
                st.msr.lstar
            } else {
                st.msr.cstar
            };
            let fmask = st.msr.fmask;
            self.c.state.gpr[RCX] = next;
            self.c.state.gpr[11] = fl & !RF;
            self.c.state.flags.set((fl & !fmask & !RF) | FIXED1);
            self.c.state.seg[CS] = flat_seg(sel, true, true, 0);
            self.c.state.seg[SS] = flat_seg(sel.wrapping_add(8), false, false, 0);
            self.c.state.rip = target;
        } else {
            let target = st.msr.star & 0xffff_ffff;
            self.c.state.gpr[RCX] = next & 0xffff_ffff;
            self.c.state.flags.set((fl & !(VM | IF | RF)) | FIXED1);
            self.c.state.seg[CS] = flat_seg(sel, true, false, 0);
            self.c.state.seg[SS] = flat_seg(sel.wrapping_add(8), false, false, 0);
            self.c.state.rip = target;
        }
        self.c.state.update_mode();
        self.single_step_by_tf_at_end();
        self.c.block_exit = true;
        Ok(())
    }

    fn sysret(&mut self, to64: bool) -> R<()> {
        let st = &self.c.state;
        if st.efer & efer::SCE == 0 || !matches!(st.mode, Mode::Long | Mode::Protected) {
            return Err(ud());
        }
        self.require_cpl0()?;
        let base = ((self.c.state.msr.star >> 48) & 0xffff) as u16;
        let long = self.c.state.long_mode_active();
        let rcx = self.c.state.gpr[RCX];
        if to64 && !canonical(rcx) {
            return Err(gp(0));
        }
        let (cs_sel, rip) = if to64 {
            (base.wrapping_add(16) | 3, rcx)
        } else {
            (base | 3, rcx & 0xffff_ffff)
        };
        self.c.state.seg[CS] = flat_seg(cs_sel, true, to64, 3);
        self.c.state.seg[SS] = flat_seg(base.wrapping_add(8) | 3, false, false, 3);
        if long {
            let r11 = self.c.state.gpr[11];
            self.c
                .state
                .flags
                .set((r11 & WRITABLE & !(RF | VM)) | FIXED1);
        } else {
            self.c.state.flags.set_bit(IF, true);
        }
        self.c.state.rip = rip;
        self.c.state.update_mode();
        self.single_step_by_tf_at_end();
        self.c.block_exit = true;
        Ok(())
    }

    fn sysenter(&mut self) -> R<()> {
        let st = &self.c.state;
        if st.mode == Mode::Real {
            return Err(gp(0));
        }
        let sel = (st.msr.sysenter_cs & 0xfffc) as u16;
        if sel == 0 {
            return Err(gp(0));
        }
        let long = st.long_mode_active();
        let (rip, rsp) = (st.msr.sysenter_eip, st.msr.sysenter_esp);
        let fl = st.rflags();
        self.c.state.flags.set((fl & !(VM | IF | RF)) | FIXED1);
        self.c.state.seg[CS] = flat_seg(sel, true, long, 0);
        self.c.state.seg[SS] = flat_seg(sel.wrapping_add(8), false, false, 0);
        self.c.state.rip = if long { rip } else { rip & 0xffff_ffff };
        self.c.state.gpr[4] = if long { rsp } else { rsp & 0xffff_ffff };
        self.c.state.update_mode();
        self.c.block_exit = true;
        Ok(())
    }

    fn sysexit(&mut self, to64: bool) -> R<()> {
        let st = &self.c.state;
        if st.mode == Mode::Real {
            return Err(gp(0));
        }
        self.require_cpl0()?;
        let base = (self.c.state.msr.sysenter_cs & 0xfffc) as u16;
        if base == 0 {
            return Err(gp(0));
        }
        let (cs_sel, ss_sel) = if to64 {
            (base.wrapping_add(32) | 3, base.wrapping_add(40) | 3)
        } else {
            (base.wrapping_add(16) | 3, base.wrapping_add(24) | 3)
        };
        let (rip, rsp) = (self.c.state.gpr[RDX], self.c.state.gpr[RCX]);
        self.c.state.seg[CS] = flat_seg(cs_sel, true, to64, 3);
        self.c.state.seg[SS] = flat_seg(ss_sel, false, false, 3);
        self.c.state.rip = if to64 { rip } else { rip & 0xffff_ffff };
        self.c.state.gpr[4] = if to64 { rsp } else { rsp & 0xffff_ffff };
        self.c.state.update_mode();
        self.c.block_exit = true;
        Ok(())
    }
}
