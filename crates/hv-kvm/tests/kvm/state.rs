//! VM and vCPU creation rules, register state, MSRs, CPUID, irq lines.

use hv::{Fpu, HvError, Hypervisor, MpState, MsiMessage, Msr, Segment, VmConfig};

use crate::common::*;

#[test]
fn vm_and_vcpu_counts_are_validated() {
    let Some(hv) = kvm_or_skip("vm_and_vcpu_counts_are_validated") else {
        return;
    };
    assert_eq!(hv.name(), "kvm");
    assert!(matches!(
        hv.create_vm(VmConfig::new(0)),
        Err(HvError::InvalidArgument(_))
    ));
    assert!(matches!(
        hv.create_vm(VmConfig::new(hv.max_vcpus() + 1)),
        Err(HvError::InvalidArgument(_))
    ));
    let vm = hv.create_vm(VmConfig::new(2)).unwrap();
    assert!(matches!(
        vm.create_vcpu(2),
        Err(HvError::InvalidArgument(_))
    ));
    let v1 = vm.create_vcpu(1).unwrap();
    assert_eq!(v1.id(), 1);
    assert!(matches!(
        vm.create_vcpu(1),
        Err(HvError::InvalidArgument(_))
    ));
    vm.create_vcpu(0).unwrap();
}

#[test]
fn registers_round_trip() {
    let Some(hv) = kvm_or_skip("registers_round_trip") else {
        return;
    };
    let mut g = Guest::new(&hv, &[0xf4]);
    let mut regs = g.vcpu.get_regs().unwrap();
    regs.rax = 0x1111_2222_3333_4444;
    regs.r15 = 0xfeed;
    regs.rflags = 0x246;
    g.vcpu.set_regs(&regs).unwrap();
    assert_eq!(g.vcpu.get_regs().unwrap(), regs);

    // Protected-mode flat segments, a TSS and an unusable LDT.
    let mut sregs = g.vcpu.get_sregs().unwrap();
    sregs.cs = Segment::flat(0x8, 0xb, false);
    sregs.ds = Segment::flat(0x10, 0x3, false);
    sregs.ss = sregs.ds;
    sregs.ldt = Segment {
        unusable: true,
        ..Segment::default()
    };
    sregs.gdt.base = 0x500;
    sregs.gdt.limit = 0x1f;
    sregs.cr0 |= 1;
    g.vcpu.set_sregs(&sregs).unwrap();
    let back = g.vcpu.get_sregs().unwrap();
    assert_eq!(back.cs, sregs.cs);
    assert_eq!(back.ds, sregs.ds);
    assert_eq!(back.gdt, sregs.gdt);
    assert!(back.ldt.unusable);
    assert_eq!(back.cr0 & 1, 1);

    let mut fpu = Fpu {
        mxcsr: 0x1fa0,
        fcw: 0x27f,
        ..Fpu::default()
    };
    fpu.xmm[3] = [0xab; 16];
    g.vcpu.set_fpu(&fpu).unwrap();
    let back = g.vcpu.get_fpu().unwrap();
    assert_eq!(back.xmm[3], [0xab; 16]);
    assert_eq!(back.mxcsr, 0x1fa0);
    assert_eq!(back.fcw, 0x27f);
}

#[test]
fn msrs_round_trip_and_unknown_msrs_are_errors() {
    let Some(hv) = kvm_or_skip("msrs_round_trip_and_unknown_msrs_are_errors") else {
        return;
    };
    use hv::state::msr_index::*;
    let mut g = Guest::new(&hv, &[0xf4]);
    // Values both vendors keep whole: AMD CPUs hold only 32 bits of the
    // SYSENTER MSRs (KVM on AMD sign-extends bit 31), so a 64-bit value
    // goes to LSTAR.
    let set = [
        Msr {
            index: IA32_SYSENTER_CS,
            data: 0x10,
        },
        Msr {
            index: IA32_SYSENTER_EIP,
            data: 0x1234_5678,
        },
        Msr {
            index: IA32_LSTAR,
            data: 0xffff_ffff_8123_4000,
        },
    ];
    g.vcpu.set_msrs(&set).unwrap();
    let mut get = [
        Msr {
            index: IA32_SYSENTER_CS,
            data: 0,
        },
        Msr {
            index: IA32_SYSENTER_EIP,
            data: 0,
        },
        Msr {
            index: IA32_LSTAR,
            data: 0,
        },
    ];
    g.vcpu.get_msrs(&mut get).unwrap();
    assert_eq!(get, set);
    let bogus = Msr {
        index: 0x4b56_ffff,
        data: 1,
    };
    let err = g.vcpu.set_msrs(&[set[0], bogus]).unwrap_err();
    assert!(err.to_string().contains("0x4b56ffff"), "{err}");
    let mut read = [bogus];
    assert!(g.vcpu.get_msrs(&mut read).is_err());
}

#[test]
fn supported_cpuid_is_unfiltered_and_settable() {
    let Some(hv) = kvm_or_skip("supported_cpuid_is_unfiltered_and_settable") else {
        return;
    };
    let mut g = Guest::new(&hv, &[0xf4]);
    let cpuid = g.vm.supported_cpuid().unwrap();
    assert!(cpuid.iter().any(|e| e.function == 0), "leaf 0");
    assert!(
        cpuid.iter().any(|e| e.function == 0x8000_0000),
        "extended leaves"
    );
    assert!(
        cpuid.iter().any(|e| e.function == 7 && e.significant_index),
        "leaf 7 is indexed"
    );
    g.vcpu.set_cpuid(&cpuid).unwrap();
}

#[test]
fn irq_lines_msis_and_mp_state() {
    let Some(hv) = kvm_or_skip("irq_lines_msis_and_mp_state") else {
        return;
    };
    let mut g = Guest::new(&hv, &[0xf4]);
    g.vm.set_irq_line(4, true).unwrap();
    g.vm.set_irq_line(4, false).unwrap();
    g.vm.signal_msi(MsiMessage {
        address: 0xfee0_0000,
        data: 0x30,
    })
    .unwrap();
    assert_eq!(g.vcpu.get_mp_state().unwrap(), MpState::Runnable);
    g.vcpu.set_mp_state(MpState::Halted).unwrap();
    assert_eq!(g.vcpu.get_mp_state().unwrap(), MpState::Halted);
}

#[test]
fn fpu_state_set_through_the_api_is_what_the_guest_sees() {
    let Some(hv) = kvm_or_skip("fpu_state_set_through_the_api_is_what_the_guest_sees") else {
        return;
    };
    use iced_x86::code_asm::*;
    // Only instructions the host's emulator handles in real mode on nested
    // kvm_pvm (FLDCW, STMXCSR, LDMXCSR and FXSAVE are not among them, so
    // MXCSR is checked through the API only).
    let code = asm16(|a| {
        a.fnstcw(word_ptr(0x2000))?;
        a.movups(xmmword_ptr(0x2010), xmm3)?;
        // Change the state from inside, for get_fpu to read back.
        a.movups(xmm5, xmmword_ptr(0x2010))?;
        a.out(DONE_PORT as i32, al)
    });
    let mut g = Guest::new(&hv, &code);
    let mut sregs = g.vcpu.get_sregs().unwrap();
    sregs.cr4 |= 0x200; // OSFXSR: SSE instructions allowed
    sregs.cr0 &= !0xc; // EM and TS off
    g.vcpu.set_sregs(&sregs).unwrap();
    let mut fpu = Fpu {
        fcw: 0x027f,
        mxcsr: 0x1fa0,
        ..Fpu::default()
    };
    fpu.xmm[3] = *b"0123456789abcdef";
    fpu.fpr[7][..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0x3f]);
    g.vcpu.set_fpu(&fpu).unwrap();
    let back = g.vcpu.get_fpu().unwrap();
    assert_eq!(
        back, fpu,
        "get_fpu returns what set_fpu set, MXCSR included"
    );

    let rec = Recorder::default();
    g.run_to_done(&rec, std::time::Duration::from_secs(10));
    let seen = read_region(&g.ram, 0x2000, 0x20);
    assert_eq!(
        u16::from_le_bytes([seen[0], seen[1]]),
        0x027f,
        "FCW in the guest"
    );
    assert_eq!(&seen[0x10..0x20], b"0123456789abcdef", "XMM3 in the guest");

    let after = g.vcpu.get_fpu().unwrap();
    assert_eq!(after.fcw, 0x027f);
    assert_eq!(&after.xmm[5], b"0123456789abcdef");
    assert_eq!(after.mxcsr, 0x1fa0, "MXCSR survived the run");
}
