//! Conversions between kvm-bindings structs and `hv`'s neutral x86 state.

use hv::{CpuidEntry, DescriptorTable, Fpu, Msr, Regs, SRegs, Segment};
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_dtable, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs,
    KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
};

pub(crate) fn regs_from_kvm(r: &kvm_regs) -> Regs {
    Regs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

pub(crate) fn regs_to_kvm(r: &Regs) -> kvm_regs {
    kvm_regs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

pub(crate) fn segment_from_kvm(s: &kvm_segment) -> Segment {
    Segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_ & 0xf,
        present: s.present != 0,
        dpl: s.dpl & 0x3,
        db: s.db != 0,
        s: s.s != 0,
        l: s.l != 0,
        g: s.g != 0,
        avl: s.avl != 0,
        unusable: s.unusable != 0,
    }
}

pub(crate) fn segment_to_kvm(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_ & 0xf,
        present: u8::from(s.present),
        dpl: s.dpl & 0x3,
        db: u8::from(s.db),
        s: u8::from(s.s),
        l: u8::from(s.l),
        g: u8::from(s.g),
        avl: u8::from(s.avl),
        unusable: u8::from(s.unusable),
        padding: 0,
    }
}

fn dtable_from_kvm(t: &kvm_dtable) -> DescriptorTable {
    DescriptorTable {
        base: t.base,
        limit: t.limit,
    }
}

fn dtable_to_kvm(t: &DescriptorTable) -> kvm_dtable {
    kvm_dtable {
        base: t.base,
        limit: t.limit,
        padding: [0; 3],
    }
}

pub(crate) fn sregs_from_kvm(s: &kvm_sregs) -> SRegs {
    SRegs {
        cs: segment_from_kvm(&s.cs),
        ds: segment_from_kvm(&s.ds),
        es: segment_from_kvm(&s.es),
        fs: segment_from_kvm(&s.fs),
        gs: segment_from_kvm(&s.gs),
        ss: segment_from_kvm(&s.ss),
        tr: segment_from_kvm(&s.tr),
        ldt: segment_from_kvm(&s.ldt),
        gdt: dtable_from_kvm(&s.gdt),
        idt: dtable_from_kvm(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
    }
}

/// The interrupt bitmap (pending external interrupt) is left zero: the
/// in-kernel irqchip owns interrupt state.
pub(crate) fn sregs_to_kvm(s: &SRegs) -> kvm_sregs {
    kvm_sregs {
        cs: segment_to_kvm(&s.cs),
        ds: segment_to_kvm(&s.ds),
        es: segment_to_kvm(&s.es),
        fs: segment_to_kvm(&s.fs),
        gs: segment_to_kvm(&s.gs),
        ss: segment_to_kvm(&s.ss),
        tr: segment_to_kvm(&s.tr),
        ldt: segment_to_kvm(&s.ldt),
        gdt: dtable_to_kvm(&s.gdt),
        idt: dtable_to_kvm(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
        interrupt_bitmap: [0; 4],
    }
}

pub(crate) fn fpu_from_kvm(f: &kvm_fpu) -> Fpu {
    Fpu {
        fpr: f.fpr,
        fcw: f.fcw,
        fsw: f.fsw,
        ftwx: f.ftwx,
        last_opcode: f.last_opcode,
        last_ip: f.last_ip,
        last_dp: f.last_dp,
        xmm: f.xmm,
        mxcsr: f.mxcsr,
    }
}

pub(crate) fn fpu_to_kvm(f: &Fpu) -> kvm_fpu {
    kvm_fpu {
        fpr: f.fpr,
        fcw: f.fcw,
        fsw: f.fsw,
        ftwx: f.ftwx,
        pad1: 0,
        last_opcode: f.last_opcode,
        last_ip: f.last_ip,
        last_dp: f.last_dp,
        xmm: f.xmm,
        mxcsr: f.mxcsr,
        pad2: 0,
    }
}

pub(crate) fn msr_to_kvm(m: &Msr) -> kvm_msr_entry {
    kvm_msr_entry {
        index: m.index,
        reserved: 0,
        data: m.data,
    }
}

pub(crate) fn cpuid_from_kvm(e: &kvm_cpuid_entry2) -> CpuidEntry {
    CpuidEntry {
        function: e.function,
        index: e.index,
        significant_index: e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
    }
}

pub(crate) fn cpuid_to_kvm(e: &CpuidEntry) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function: e.function,
        index: e.index,
        flags: if e.significant_index {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        },
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
        padding: [0; 3],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn odd_segment(seed: u8) -> Segment {
        Segment {
            base: 0x1234_5678_9abc_def0 ^ u64::from(seed),
            limit: 0xfff0_0000 | u32::from(seed),
            selector: 0x10 + u16::from(seed),
            type_: seed & 0xf,
            present: seed & 1 != 0,
            dpl: seed & 3,
            db: seed & 2 != 0,
            s: seed & 4 != 0,
            l: seed & 8 != 0,
            g: seed & 16 != 0,
            avl: seed & 32 != 0,
            unusable: seed & 64 != 0,
        }
    }

    #[test]
    fn segments_round_trip_every_flag() {
        for seed in 0..=127u8 {
            let seg = odd_segment(seed);
            assert_eq!(segment_from_kvm(&segment_to_kvm(&seg)), seg, "seed {seed}");
        }
        let unusable = Segment {
            unusable: true,
            ..Segment::default()
        };
        assert_eq!(segment_to_kvm(&unusable).unusable, 1);
    }

    #[test]
    fn sregs_round_trip_and_leave_interrupt_bitmap_zero() {
        let sregs = SRegs {
            cs: odd_segment(1),
            ds: odd_segment(2),
            es: odd_segment(3),
            fs: odd_segment(4),
            gs: odd_segment(5),
            ss: odd_segment(6),
            tr: odd_segment(7),
            ldt: odd_segment(8),
            gdt: DescriptorTable {
                base: 0x1000,
                limit: 0x27,
            },
            idt: DescriptorTable {
                base: 0x2000,
                limit: 0xfff,
            },
            cr0: 0x8000_0011,
            cr2: 0xdead,
            cr3: 0x9000,
            cr4: 0x20,
            cr8: 3,
            efer: 0x500,
            apic_base: 0xfee0_0900,
        };
        let k = sregs_to_kvm(&sregs);
        assert_eq!(k.interrupt_bitmap, [0; 4]);
        assert_eq!(sregs_from_kvm(&k), sregs);
    }

    #[test]
    fn fpu_round_trips() {
        let mut fpu = Fpu::default();
        fpu.fpr[3][0] = 0x42;
        fpu.xmm[15][15] = 0x99;
        fpu.fsw = 0x3800;
        fpu.ftwx = 0x80;
        fpu.last_opcode = 0x7ff;
        fpu.last_ip = 0x1234;
        fpu.last_dp = 0x5678;
        assert_eq!(fpu_from_kvm(&fpu_to_kvm(&fpu)), fpu);
    }

    #[test]
    fn cpuid_significant_index_maps_to_the_flag() {
        let e = CpuidEntry {
            function: 7,
            index: 1,
            significant_index: true,
            eax: 1,
            ebx: 2,
            ecx: 3,
            edx: 4,
        };
        let k = cpuid_to_kvm(&e);
        assert_eq!(k.flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        assert_eq!(cpuid_from_kvm(&k), e);
        let plain = CpuidEntry {
            significant_index: false,
            ..e
        };
        assert_eq!(cpuid_to_kvm(&plain).flags, 0);
    }

    #[test]
    fn regs_round_trip() {
        let regs = Regs {
            rax: 1,
            rbx: 2,
            rcx: 3,
            rdx: 4,
            rsi: 5,
            rdi: 6,
            rsp: 7,
            rbp: 8,
            r8: 9,
            r9: 10,
            r10: 11,
            r11: 12,
            r12: 13,
            r13: 14,
            r14: 15,
            r15: 16,
            rip: 17,
            rflags: 0x202,
        };
        assert_eq!(regs_from_kvm(&regs_to_kvm(&regs)), regs);
    }
}
