//! Conversions between the CPU's state and the neutral `hv` state types.

use hv::{DescriptorTable, Fpu, Msr, Regs, SRegs, Segment};

use crate::state::{SegCache, TableReg, CS, DS, ES, FS, GS, SS};
use crate::{Cpu, CpuError};

impl From<&Segment> for SegCache {
    fn from(s: &Segment) -> SegCache {
        let mut attr = (s.type_ as u32 & 0xf)
            | ((s.s as u32) << 4)
            | ((s.dpl as u32 & 3) << 5)
            | ((s.present as u32) << 7)
            | ((s.avl as u32) << 12)
            | ((s.l as u32) << 13)
            | ((s.db as u32) << 14)
            | ((s.g as u32) << 15);
        if s.unusable {
            attr |= SegCache::UNUSABLE;
        }
        SegCache {
            selector: s.selector,
            base: s.base,
            limit: s.limit,
            attr,
        }
    }
}

impl From<&SegCache> for Segment {
    fn from(c: &SegCache) -> Segment {
        Segment {
            base: c.base,
            limit: c.limit,
            selector: c.selector,
            type_: c.typ(),
            present: c.present(),
            dpl: c.dpl(),
            db: c.db(),
            s: c.s(),
            l: c.l(),
            g: c.g(),
            avl: c.attr & (1 << 12) != 0,
            unusable: c.unusable(),
        }
    }
}

fn table(t: &TableReg) -> DescriptorTable {
    DescriptorTable {
        base: t.base,
        limit: t.limit,
    }
}

fn table_reg(t: &DescriptorTable) -> TableReg {
    TableReg {
        base: t.base,
        limit: t.limit,
    }
}

impl Cpu {
    pub fn get_regs(&self) -> Regs {
        let g = &self.state.gpr;
        Regs {
            rax: g[0],
            rcx: g[1],
            rdx: g[2],
            rbx: g[3],
            rsp: g[4],
            rbp: g[5],
            rsi: g[6],
            rdi: g[7],
            r8: g[8],
            r9: g[9],
            r10: g[10],
            r11: g[11],
            r12: g[12],
            r13: g[13],
            r14: g[14],
            r15: g[15],
            rip: self.state.rip,
            rflags: self.state.rflags(),
        }
    }

    pub fn set_regs(&mut self, r: &Regs) {
        self.state.gpr = [
            r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ];
        self.state.rip = r.rip;
        self.state.set_rflags(r.rflags);
        self.block_exit = true;
    }

    pub fn get_sregs(&self) -> SRegs {
        let s = &self.state;
        SRegs {
            cs: (&s.seg[CS]).into(),
            ds: (&s.seg[DS]).into(),
            es: (&s.seg[ES]).into(),
            fs: (&s.seg[FS]).into(),
            gs: (&s.seg[GS]).into(),
            ss: (&s.seg[SS]).into(),
            tr: (&s.tr).into(),
            ldt: (&s.ldtr).into(),
            gdt: table(&s.gdtr),
            idt: table(&s.idtr),
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: s.cr8,
            efer: s.efer,
            // The local APIC owns IA32_APIC_BASE: the accelerator fills it in.
            apic_base: 0,
        }
    }

    /// Sets segment, table and control registers as given (no checks, as
    /// KVM_SET_SREGS), then recomputes the mode and flushes the TLB.
    /// `apic_base` is ignored: the accelerator's local APIC owns it.
    pub fn set_sregs(&mut self, r: &SRegs) {
        let s = &mut self.state;
        s.seg[CS] = (&r.cs).into();
        s.seg[DS] = (&r.ds).into();
        s.seg[ES] = (&r.es).into();
        s.seg[FS] = (&r.fs).into();
        s.seg[GS] = (&r.gs).into();
        s.seg[SS] = (&r.ss).into();
        s.tr = (&r.tr).into();
        s.ldtr = (&r.ldt).into();
        s.gdtr = table_reg(&r.gdt);
        s.idtr = table_reg(&r.idt);
        s.cr0 = r.cr0;
        s.cr2 = r.cr2;
        s.cr3 = r.cr3;
        s.cr4 = r.cr4;
        s.cr8 = r.cr8;
        s.efer = r.efer;
        self.state_changed();
    }

    pub fn get_fpu(&self) -> Fpu {
        let f = &self.state.fpu;
        let mut fpr = [[0u8; 16]; 8];
        for (d, s) in fpr.iter_mut().zip(f.st.iter()) {
            d[..10].copy_from_slice(s);
        }
        let mut xmm = [[0u8; 16]; 16];
        for (d, s) in xmm.iter_mut().zip(f.xmm.iter()) {
            *d = s.to_le_bytes();
        }
        Fpu {
            fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftw,
            last_opcode: f.fop,
            last_ip: f.fip,
            last_dp: f.fdp,
            xmm,
            mxcsr: f.mxcsr,
        }
    }

    pub fn set_fpu(&mut self, v: &Fpu) {
        let f = &mut self.state.fpu;
        for (d, s) in f.st.iter_mut().zip(v.fpr.iter()) {
            d.copy_from_slice(&s[..10]);
        }
        for (d, s) in f.xmm.iter_mut().zip(v.xmm.iter()) {
            *d = u128::from_le_bytes(*s);
        }
        f.fcw = v.fcw;
        f.fsw = v.fsw;
        f.ftw = v.ftwx;
        f.fop = v.last_opcode;
        f.fip = v.last_ip;
        f.fdp = v.last_dp;
        f.mxcsr = v.mxcsr;
    }

    /// Reads the MSRs named by `msrs[i].index`.
    pub fn get_msrs(&self, msrs: &mut [Msr]) -> Result<(), CpuError> {
        for m in msrs.iter_mut() {
            m.data = self
                .read_msr(m.index)
                .ok_or(CpuError::UnknownMsr(m.index))?;
        }
        Ok(())
    }

    /// Writes MSRs. MSRs the CPU does not model become plain storage the
    /// guest can read and write; invalid values for modelled MSRs fail.
    pub fn set_msrs(&mut self, msrs: &[Msr]) -> Result<(), CpuError> {
        for m in msrs {
            if m.index == hv::state::msr_index::IA32_EFER {
                // Host-side writes may set LMA directly, as KVM allows.
                self.state.efer = m.data;
                self.state_changed();
                continue;
            }
            if m.index == hv::state::msr_index::IA32_TSC {
                // A host write sets the TSC without touching TSC_ADJUST
                // (that register counts the guest's own changes).
                self.set_tsc(m.data);
                continue;
            }
            self.define_msr(m.index, m.data)
                .map_err(|_| CpuError::InvalidMsrValue(m.index, m.data))?;
        }
        Ok(())
    }
}
