//! Between a vCPU's state (the hv API's neutral structs) and gdb's
//! register set ([`super::arch::Regs`]).

use gdbstub_arch::x86::reg::{X86SegmentRegs, X87FpuInternalRegs};
use hv::state::msr_index::IA32_KERNEL_GS_BASE;
use hv::{HvError, Msr, Vcpu};

use super::arch::Regs;

/// Reads every register gdb knows of `vcpu`.
pub fn read(vcpu: &mut dyn Vcpu) -> Result<Regs, HvError> {
    let r = vcpu.get_regs()?;
    let s = vcpu.get_sregs()?;
    let f = vcpu.get_fpu()?;
    let mut kgs = [Msr {
        index: IA32_KERNEL_GS_BASE,
        data: 0,
    }];
    vcpu.get_msrs(&mut kgs)?;
    let mut g = Regs::default();
    let c = &mut g.core;
    c.regs = [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ];
    c.rip = r.rip;
    c.eflags = r.rflags as u32;
    c.segments = X86SegmentRegs {
        cs: s.cs.selector.into(),
        ss: s.ss.selector.into(),
        ds: s.ds.selector.into(),
        es: s.es.selector.into(),
        fs: s.fs.selector.into(),
        gs: s.gs.selector.into(),
    };
    for (st, fpr) in c.st.iter_mut().zip(&f.fpr) {
        st.copy_from_slice(&fpr[..10]);
    }
    c.fpu = X87FpuInternalRegs {
        fctrl: f.fcw.into(),
        fstat: f.fsw.into(),
        ftag: full_tag(f.ftwx),
        fiseg: 0,
        fioff: f.last_ip as u32,
        foseg: 0,
        fooff: f.last_dp as u32,
        fop: f.last_opcode.into(),
    };
    for (x, b) in c.xmm.iter_mut().zip(&f.xmm) {
        *x = u128::from_le_bytes(*b);
    }
    c.mxcsr = f.mxcsr;
    g.sys = [
        s.fs.base,
        s.gs.base,
        kgs[0].data,
        s.cr0,
        s.cr2,
        s.cr3,
        s.cr4,
        s.cr8,
        s.efer,
    ];
    Ok(g)
}

/// Writes what gdb changed back to `vcpu`: the general registers, RIP
/// and RFLAGS, segment selectors (only the selector: the descriptor
/// cache stays), FS/GS bases, control registers, EFER, the x87 and SSE
/// state.
pub fn write(vcpu: &mut dyn Vcpu, g: &Regs) -> Result<(), HvError> {
    let c = &g.core;
    let mut r = vcpu.get_regs()?;
    [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ] = c.regs;
    r.rip = c.rip;
    r.rflags = (r.rflags & !0xffff_ffff) | u64::from(c.eflags);
    let mut s = vcpu.get_sregs()?;
    let old = s;
    for (seg, sel) in [
        (&mut s.cs, c.segments.cs),
        (&mut s.ss, c.segments.ss),
        (&mut s.ds, c.segments.ds),
        (&mut s.es, c.segments.es),
        (&mut s.fs, c.segments.fs),
        (&mut s.gs, c.segments.gs),
    ] {
        seg.selector = sel as u16;
    }
    [
        s.fs.base,
        s.gs.base,
        _,
        s.cr0,
        s.cr2,
        s.cr3,
        s.cr4,
        s.cr8,
        s.efer,
    ] = g.sys;
    let mut f = vcpu.get_fpu()?;
    let old_fpu = f;
    for (fpr, st) in f.fpr.iter_mut().zip(&c.st) {
        fpr[..10].copy_from_slice(st);
    }
    f.fcw = c.fpu.fctrl as u16;
    f.fsw = c.fpu.fstat as u16;
    f.ftwx = abridged_tag(c.fpu.ftag);
    f.last_opcode = c.fpu.fop as u16;
    for (b, x) in f.xmm.iter_mut().zip(&c.xmm) {
        *b = x.to_le_bytes();
    }
    f.mxcsr = c.mxcsr;
    vcpu.set_regs(&r)?;
    if s != old {
        vcpu.set_sregs(&s)?;
    }
    if f != old_fpu {
        vcpu.set_fpu(&f)?;
    }
    vcpu.set_msrs(&[Msr {
        index: IA32_KERNEL_GS_BASE,
        data: g.sys[2],
    }])
}

/// The full x87 tag word from FXSAVE's abridged one: an empty register is
/// 11, any other is reported valid (00).
fn full_tag(abridged: u8) -> u32 {
    (0..8)
        .filter(|i| abridged & (1 << i) == 0)
        .fold(0, |t, i| t | (3 << (2 * i)))
}

/// The abridged tag: 1 for each register whose full tag is not empty.
fn abridged_tag(full: u32) -> u8 {
    (0..8)
        .filter(|i| (full >> (2 * i)) & 3 != 3)
        .fold(0, |t, i| t | (1 << i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_words_convert_both_ways() {
        assert_eq!(full_tag(0), 0xffff);
        assert_eq!(full_tag(0xff), 0);
        assert_eq!(full_tag(0b10), 0xfff3);
        for t in [0u8, 1, 0x80, 0xa5, 0xff] {
            assert_eq!(abridged_tag(full_tag(t)), t);
        }
    }

    #[test]
    fn default_fpu_has_an_empty_stack() {
        assert_eq!(full_tag(hv::Fpu::default().ftwx), 0xffff);
    }
}
