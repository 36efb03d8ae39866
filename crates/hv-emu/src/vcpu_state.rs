//! The vCPU part of a snapshot on emu. The CPU's state comes from the
//! `x86` crate's accessors, the LAPIC's (APIC base, TPR, registers, TSC
//! deadline) from the LAPIC model, the MP state and pending NMIs from the
//! vCPU's run state: each owner saves and restores its own part.

use hv::snapshot::{mismatch, Tsc, VcpuEvents, VcpuState, Xcr};
use hv::state::msr_index::IA32_TSC_DEADLINE;
use hv::{HvError, MpState, Msr, Vcpu};

use crate::vcpu::{EmuVcpu, TSC_HZ};

impl EmuVcpu {
    pub(crate) fn save(&self) -> Result<VcpuState, HvError> {
        let now = self.vm.platform.now_ns();
        let mut msrs: Vec<Msr> = self
            .cpu
            .state_msr_indices()
            .into_iter()
            .chain([IA32_TSC_DEADLINE])
            .map(|index| Msr { index, data: 0 })
            .collect();
        self.get_msrs(&mut msrs)?;
        let (mp_state, sipi_vector) = self.shared.mp_snapshot();
        let mp_state = if mp_state == MpState::Runnable && self.cpu.is_halted() {
            MpState::Halted
        } else {
            mp_state
        };
        Ok(VcpuState {
            cpuid: self.cpu.cpuid_entries().to_vec(),
            regs: self.get_regs()?,
            sregs: self.get_sregs()?,
            xsave: self.cpu.xsave_area(),
            xcrs: vec![Xcr {
                index: 0,
                value: self.cpu.xcr0(),
            }],
            debug_regs: self.cpu.debug_regs(),
            msrs,
            lapic: hv::snapshot::LapicRegs {
                page: self.shared.lapic().register_page(now),
            },
            events: VcpuEvents {
                interrupt_shadow: u8::from(self.cpu.interrupt_shadow()),
                nmi_pending: self.shared.nmis_pending() as u8,
                nmi_masked: self.cpu.nmi_masked(),
                sipi_vector: sipi_vector.into(),
                ..VcpuEvents::default()
            },
            mp_state,
            tsc: Tsc {
                khz: (self.cpu.tsc_hz() / 1000) as u32,
                value: self.cpu.tsc(),
            },
        })
    }

    /// Checks what emu cannot represent before anything changes.
    fn check(state: &VcpuState) -> Result<(), HvError> {
        state.check_shape()?;
        if u64::from(state.tsc.khz) * 1000 != TSC_HZ {
            return Err(mismatch(format!(
                "a TSC of {} kHz (emu's runs at {} kHz)",
                state.tsc.khz,
                TSC_HZ / 1000
            )));
        }
        let e = &state.events;
        if let Some(x) = e.exception {
            // Emu delivers exceptions within the instruction that raised
            // them: none is ever half-way at an exit.
            return Err(mismatch(format!(
                "exception {} in flight (emu cannot resume an injection)",
                x.vector
            )));
        }
        if let Some(i) = e.interrupt {
            return Err(mismatch(format!(
                "interrupt {:#x} in flight (emu cannot resume an injection)",
                i.vector
            )));
        }
        if e.nmi_injected {
            return Err(mismatch("an NMI in flight"));
        }
        if e.smm != Default::default() {
            return Err(mismatch("system-management mode (emu has none)"));
        }
        if e.sipi_vector > 0xff {
            return Err(mismatch(format!("SIPI vector {:#x}", e.sipi_vector)));
        }
        Ok(())
    }

    pub(crate) fn restore(&mut self, state: &VcpuState) -> Result<(), HvError> {
        Self::check(state)?;
        let now = self.vm.platform.now_ns();
        self.set_cpuid(&state.cpuid)?;
        // APIC base and TPR go to the LAPIC, the rest to the CPU.
        self.set_sregs(&state.sregs).map_err(mismatch)?;
        self.set_regs(&state.regs)?;
        self.cpu.set_xsave_area(&state.xsave).map_err(mismatch)?;
        for xcr in &state.xcrs {
            self.cpu.set_xcr(xcr.index, xcr.value).map_err(mismatch)?;
        }
        self.cpu
            .set_debug_regs(&state.debug_regs)
            .map_err(mismatch)?;
        self.shared
            .lapic()
            .load_register_page(&state.lapic.page, now)
            .map_err(mismatch)?;
        // After the LAPIC (the TSC deadline needs its mode); the TSC last,
        // since a TSC_ADJUST write moves it.
        self.set_msrs(&state.msrs)
            .map_err(|e| mismatch(e.to_string()))?;
        self.cpu.set_tsc_value(state.tsc.value);
        let e = &state.events;
        self.cpu.set_interrupt_shadow(e.interrupt_shadow != 0);
        self.cpu.set_nmi_masked(e.nmi_masked);
        self.shared.set_nmis_pending(e.nmi_pending.into());
        let halted = state.mp_state == MpState::Halted;
        self.cpu.set_halted(halted);
        let mp = if halted {
            MpState::Runnable
        } else {
            state.mp_state
        };
        self.shared.restore_mp(mp, e.sipi_vector as u8);
        self.cpu.state_changed();
        self.shared.notify_event();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use hv::snapshot::PendingException;
    use hv::{Vm, VmConfig};

    use super::*;
    use crate::vm::EmuVm;

    /// A vCPU of a fresh VM whose clock stands still, set up as a 64-bit
    /// guest would leave it: SSE/AVX registers, MSRs, a running LAPIC
    /// timer, pending interrupts and an NMI, halted.
    fn busy_vcpu() -> (EmuVm, EmuVcpu) {
        let (vm, mut vcpu) = fresh();
        let cpuid = arch::cpuid::template(&vm.supported_cpuid().unwrap(), 0, 1);
        vcpu.set_cpuid(&cpuid).unwrap();
        let mut sregs = arch::mode::long_mode_sregs();
        sregs.cr4 |= 1 << 18; // OSXSAVE
        vcpu.set_sregs(&sregs).unwrap();
        let mut regs = arch::mode::long_mode_regs(0x10_0000, 0, 0x8000);
        regs.r13 = 0x1313;
        vcpu.set_regs(&regs).unwrap();
        let mut fpu = hv::Fpu::default();
        fpu.xmm[7] = [0x77; 16];
        fpu.mxcsr = 0x1fc0;
        vcpu.set_fpu(&fpu).unwrap();
        vcpu.set_msrs(&[
            Msr {
                index: hv::state::msr_index::IA32_LSTAR,
                data: 0xffff_ffff_8100_0000,
            },
            Msr {
                index: hv::state::msr_index::IA32_PAT,
                data: 0x0007_0406_0007_0401,
            },
            Msr {
                index: 0x4b56_4d01,
                data: 0x5001,
            }, // kvmclock: plain storage
        ])
        .unwrap();
        let emu = &mut vcpu;
        emu.cpu.set_xcr(0, 0b111).unwrap();
        emu.cpu.state.fpu.ymm_hi[3] = 0xabcd;
        emu.cpu
            .set_debug_regs(&hv::snapshot::DebugRegs {
                db: [0x1000, 0, 0, 0],
                dr6: 0xffff_0ff0,
                dr7: 0x401,
            })
            .unwrap();
        {
            let mut lapic = emu.shared.lapic();
            let now = emu.vm.platform.now_ns();
            lapic.write(0xf0, &0x1ffu32.to_le_bytes(), now);
            lapic.write(0x3e0, &0xbu32.to_le_bytes(), now);
            lapic.write(0x320, &0x2_0040u32.to_le_bytes(), now); // periodic
            lapic.write(0x380, &3_000_000u32.to_le_bytes(), now);
            assert!(lapic.accept_interrupt(0x55, false));
        }
        emu.shared.raise_nmi();
        emu.cpu.set_nmi_masked(true);
        emu.cpu.set_halted(true);
        (vm, vcpu)
    }

    fn fresh() -> (EmuVm, EmuVcpu) {
        let vm = EmuVm::new(VmConfig::new(1));
        vm.pause_clock().unwrap();
        let vcpu = vm.test_vcpu(0);
        (vm, vcpu)
    }

    #[test]
    fn vcpu_state_round_trips_through_json() {
        let (vm, vcpu) = busy_vcpu();
        let vm_state = vm.save_state().unwrap();
        let saved = vcpu.save_state().unwrap();
        assert_eq!(saved.mp_state, MpState::Halted);
        assert_eq!(saved.events.nmi_pending, 1);
        assert!(saved
            .msrs
            .iter()
            .any(|m| m.index == 0x4b56_4d01 && m.data == 0x5001));
        let json = serde_json::to_vec(&saved).unwrap();
        let parsed: VcpuState = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed, saved);

        let (vm2, mut vcpu2) = fresh();
        vm2.restore_state(&vm_state).unwrap();
        vcpu2.restore_state(&parsed).unwrap();
        let mut again = vcpu2.save_state().unwrap();
        // The TSC ran on meanwhile (it follows the host, not the VM clock).
        assert!(again.tsc.value >= saved.tsc.value);
        assert!(again.tsc.value - saved.tsc.value < 5_000_000_000);
        again.tsc.value = saved.tsc.value;
        assert_eq!(again, saved);
        assert_eq!(vm2.save_state().unwrap(), vm_state);
        // The restored LAPIC has the interrupt to deliver.
        assert_eq!(vcpu2.shared.lapic().pending_vector(), Some(0x55));
    }

    #[test]
    fn corrupted_vcpu_states_are_refused() {
        let (_vm, vcpu) = busy_vcpu();
        let saved = vcpu.save_state().unwrap();
        type Corruption = Box<dyn Fn(&mut VcpuState)>;
        let cases: Vec<(&str, Corruption)> = vec![
            ("short LAPIC page", Box::new(|s| s.lapic.page.truncate(512))),
            ("short XSAVE", Box::new(|s| s.xsave.region.truncate(100))),
            ("AVX-512 state", Box::new(|s| s.xsave.region[512] |= 0xe0)),
            ("TSC rate", Box::new(|s| s.tsc.khz = 2_100_000)),
            ("XCR0", Box::new(|s| s.xcrs[0].value = 0xe7)),
            (
                "exception",
                Box::new(|s| {
                    s.events.exception = Some(PendingException {
                        vector: 14,
                        error_code: Some(2),
                        injected: true,
                        payload: None,
                    })
                }),
            ),
            ("SMM", Box::new(|s| s.events.smm.smm = true)),
            ("NMIs", Box::new(|s| s.events.nmi_pending = 9)),
            (
                "PAT",
                Box::new(|s| {
                    for m in &mut s.msrs {
                        if m.index == hv::state::msr_index::IA32_PAT {
                            m.data = 0x0202_0202_0202_0202;
                        }
                    }
                }),
            ),
            ("APIC base", Box::new(|s| s.sregs.apic_base = 1 << 63)),
        ];
        for (what, corrupt) in cases {
            let mut bad = saved.clone();
            corrupt(&mut bad);
            let (_vm2, mut vcpu2) = fresh();
            match vcpu2.restore_state(&bad) {
                Err(HvError::StateMismatch(_)) => {}
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}
