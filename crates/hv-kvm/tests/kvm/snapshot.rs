//! Vcpu/Vm save_state and restore_state on /dev/kvm: save → restore into
//! a new VM → save gives the same state, and states that do not fit are
//! refused.

use hv::snapshot::PendingException;
use hv::{Fpu, HvError, Hypervisor, MpState, Msr, VcpuState, VmConfig};

use crate::common::*;

/// A guest with state in the places a snapshot must carry.
fn busy_guest(hv: &hv_kvm::KvmHypervisor) -> Guest {
    let mut g = Guest::new(hv, &[0xf4]);
    let cpuid = g.vm.supported_cpuid().unwrap();
    g.vcpu.set_cpuid(&cpuid).unwrap();
    let mut regs = g.vcpu.get_regs().unwrap();
    regs.rbx = 0x1234_5678;
    g.vcpu.set_regs(&regs).unwrap();
    let mut fpu = Fpu {
        mxcsr: 0x1fa0,
        ..Fpu::default()
    };
    fpu.xmm[5] = [0x5a; 16];
    g.vcpu.set_fpu(&fpu).unwrap();
    g.vcpu
        .set_msrs(&[
            Msr {
                index: hv::state::msr_index::IA32_SYSENTER_EIP,
                data: 0xdead_b000,
            },
            Msr {
                index: hv::state::msr_index::IA32_PAT,
                data: 0x0007_0406_0007_0401,
            },
        ])
        .unwrap();
    g.vcpu.set_mp_state(MpState::Halted).unwrap();
    g
}

/// The state with the TSC value cleared (it runs on between two saves).
fn without_tsc(mut s: VcpuState) -> VcpuState {
    s.tsc.value = 0;
    s
}

#[test]
fn vcpu_and_vm_state_round_trip_into_a_new_vm() {
    let Some(hv) = kvm_or_skip("vcpu_and_vm_state_round_trip_into_a_new_vm") else {
        return;
    };
    let g = busy_guest(&hv);
    g.vm.set_irq_line(4, true).unwrap();
    let vm_state = g.vm.save_state().unwrap();
    let saved = g.vcpu.save_state().unwrap();
    assert_eq!(saved.mp_state, MpState::Halted);
    assert!(saved
        .msrs
        .iter()
        .any(|m| m.index == hv::state::msr_index::IA32_SYSENTER_EIP && m.data == 0xdead_b000));
    assert!(saved.msrs.len() > 10, "{} MSRs", saved.msrs.len());
    assert!(saved.tsc.khz > 0);
    let json = serde_json::to_vec(&saved).unwrap();
    let parsed: VcpuState = serde_json::from_slice(&json).unwrap();

    let mut h = Guest::new(&hv, &[0xf4]);
    h.vm.restore_state(&vm_state).unwrap();
    h.vcpu.restore_state(&parsed).unwrap();
    let again = h.vcpu.save_state().unwrap();
    assert!(again.tsc.value >= saved.tsc.value);
    assert_eq!(without_tsc(again), without_tsc(saved));
    let mut vm_again = h.vm.save_state().unwrap();
    assert!(vm_again.clock_ns >= vm_state.clock_ns);
    vm_again.clock_ns = vm_state.clock_ns;
    // The PIT restarts its counting sequence on KVM_SET_PIT2: only the
    // elapsed ticks may differ.
    for (a, b) in vm_again
        .pit
        .as_mut()
        .unwrap()
        .channels
        .iter_mut()
        .zip(vm_state.pit.as_ref().unwrap().channels)
    {
        a.elapsed_ticks = b.elapsed_ticks;
    }
    assert_eq!(vm_again, vm_state);
}

#[test]
fn states_that_do_not_fit_are_refused() {
    let Some(hv) = kvm_or_skip("states_that_do_not_fit_are_refused") else {
        return;
    };
    let g = busy_guest(&hv);
    let saved = g.vcpu.save_state().unwrap();
    let vm_state = g.vm.save_state().unwrap();
    let mut other_vendor = saved.clone();
    assert!(other_vendor.cpuid.iter().any(|e| e.function == 0));
    for e in other_vendor.cpuid.iter_mut().filter(|e| e.function == 0) {
        // Neither GenuineIntel nor AuthenticAMD.
        e.ebx = u32::from_le_bytes(*b"Fake");
    }
    let mut short_lapic = saved.clone();
    short_lapic.lapic.page.truncate(10);
    let mut huge_xsave = saved.clone();
    huge_xsave.xsave.region.resize(1 << 20, 0);
    let mut bad_msr = saved.clone();
    bad_msr.msrs.push(Msr {
        index: 0x4000_ffff,
        data: 1,
    });
    let mut payload = saved.clone();
    payload.events.exception = Some(PendingException {
        vector: 14,
        error_code: Some(0),
        injected: false,
        payload: Some(0x1000),
    });
    for (what, bad) in [
        ("vendor", other_vendor),
        ("LAPIC size", short_lapic),
        ("XSAVE size", huge_xsave),
        ("unknown MSR", bad_msr),
        ("exception payload", payload),
    ] {
        let mut h = Guest::new(&hv, &[0xf4]);
        match h.vcpu.restore_state(&bad) {
            Err(HvError::StateMismatch(_)) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    let no_pit = hv
        .create_vm(VmConfig {
            pit: false,
            ..VmConfig::new(1)
        })
        .unwrap();
    assert!(matches!(
        no_pit.restore_state(&vm_state),
        Err(HvError::StateMismatch(_))
    ));
}
