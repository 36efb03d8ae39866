//! The vCPU part of a snapshot on KVM: KVM_GET/SET_CPUID2, REGS, SREGS,
//! XSAVE, XCRS, DEBUGREGS, MSRS (every MSR of KVM_GET_MSR_INDEX_LIST this
//! vCPU can read), LAPIC, VCPU_EVENTS, MP_STATE and TSC_KHZ.
//!
//! Restore order (as KVM wants it): CPUID first (MSRs and XSAVE
//! components are checked against it), the TSC rate, SREGS (APIC base)
//! before the LAPIC, the MSRs after the LAPIC, then IA32_TSC and after it
//! IA32_TSC_DEADLINE (the deadline is armed relative to the TSC), the
//! events and the MP state last.

use hv::snapshot::{
    cpu_vendor, mismatch, DebugRegs, InjectedInterrupt, LapicRegs, PendingException, SmmState, Tsc,
    VcpuEvents, VcpuState, Xcr, Xsave, LAPIC_PAGE_SIZE,
};
use hv::state::msr_index::{IA32_TSC, IA32_TSC_DEADLINE};
use hv::{HvError, Msr, Vcpu};
use kvm_bindings::{
    kvm_debugregs, kvm_lapic_state, kvm_vcpu_events, kvm_xcrs, KVM_MAX_CPUID_ENTRIES,
    KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_PAYLOAD, KVM_VCPUEVENT_VALID_SHADOW,
    KVM_VCPUEVENT_VALID_SIPI_VECTOR, KVM_VCPUEVENT_VALID_SMM,
};

use crate::convert::cpuid_from_kvm;
use crate::error::os;
use crate::vcpu::KvmVcpu;
use crate::vm_state::refused;
use crate::xsave::XsaveArea;

/// The x2APIC MSRs: the LAPIC page holds their state.
const X2APIC_MSRS: std::ops::RangeInclusive<u32> = 0x800..=0x8ff;

fn events_from_kvm(e: &kvm_vcpu_events) -> VcpuEvents {
    let x = &e.exception;
    VcpuEvents {
        exception: (x.injected != 0 || x.pending != 0).then(|| PendingException {
            vector: x.nr,
            error_code: (x.has_error_code != 0).then_some(x.error_code),
            injected: x.injected != 0,
            payload: (e.exception_has_payload != 0).then_some(e.exception_payload),
        }),
        interrupt: (e.interrupt.injected != 0).then_some(InjectedInterrupt {
            vector: e.interrupt.nr,
            soft: e.interrupt.soft != 0,
        }),
        interrupt_shadow: e.interrupt.shadow,
        nmi_injected: e.nmi.injected != 0,
        nmi_pending: e.nmi.pending,
        nmi_masked: e.nmi.masked != 0,
        sipi_vector: e.sipi_vector,
        smm: SmmState {
            smm: e.smi.smm != 0,
            pending: e.smi.pending != 0,
            smm_inside_nmi: e.smi.smm_inside_nmi != 0,
            latched_init: e.smi.latched_init,
        },
    }
}

fn events_to_kvm(v: &VcpuEvents) -> kvm_vcpu_events {
    let mut e = kvm_vcpu_events {
        flags: KVM_VCPUEVENT_VALID_NMI_PENDING
            | KVM_VCPUEVENT_VALID_SIPI_VECTOR
            | KVM_VCPUEVENT_VALID_SHADOW
            | KVM_VCPUEVENT_VALID_SMM,
        sipi_vector: v.sipi_vector,
        ..Default::default()
    };
    if let Some(x) = v.exception {
        e.exception.nr = x.vector;
        e.exception.injected = x.injected.into();
        e.exception.pending = (!x.injected).into();
        e.exception.has_error_code = x.error_code.is_some().into();
        e.exception.error_code = x.error_code.unwrap_or(0);
        if let Some(p) = x.payload {
            // Only taken where the VMM enabled KVM_CAP_EXCEPTION_PAYLOAD
            // (this backend does not): KVM refuses it otherwise.
            e.flags |= KVM_VCPUEVENT_VALID_PAYLOAD;
            e.exception_has_payload = 1;
            e.exception_payload = p;
        }
    }
    if let Some(i) = v.interrupt {
        e.interrupt.injected = 1;
        e.interrupt.nr = i.vector;
        e.interrupt.soft = i.soft.into();
    }
    e.interrupt.shadow = v.interrupt_shadow;
    e.nmi.injected = v.nmi_injected.into();
    e.nmi.pending = v.nmi_pending;
    e.nmi.masked = v.nmi_masked.into();
    e.smi.smm = v.smm.smm.into();
    e.smi.pending = v.smm.pending.into();
    e.smi.smm_inside_nmi = v.smm.smm_inside_nmi.into();
    e.smi.latched_init = v.smm.latched_init;
    e
}

impl KvmVcpu {
    /// The MSRs of KVM_GET_MSR_INDEX_LIST that this vCPU reads (KVM_GET_MSRS
    /// stops at the first one the vCPU's CPUID does not allow: it is left
    /// out and the read goes on after it), with their values. IA32_TSC is
    /// left out (see [`Tsc`]), and so are the x2APIC MSRs (the LAPIC page).
    fn readable_msrs(&self) -> Result<Vec<Msr>, HvError> {
        let list = self
            .vm
            .kvm
            .get_msr_index_list()
            .map_err(os("KVM_GET_MSR_INDEX_LIST"))?;
        let mut wanted: Vec<Msr> = list
            .as_slice()
            .iter()
            .filter(|&&i| i != IA32_TSC && !X2APIC_MSRS.contains(&i))
            .map(|&index| Msr { index, data: 0 })
            .collect();
        let mut out = Vec::with_capacity(wanted.len());
        let mut rest = &mut wanted[..];
        while !rest.is_empty() {
            let n = rest.len().min(kvm_bindings::KVM_MAX_MSR_ENTRIES);
            let done = self.read_msrs(&mut rest[..n])?;
            out.extend_from_slice(&rest[..done]);
            // The one at `done` is unreadable here: skip it.
            let skip = if done < n { done + 1 } else { done };
            rest = &mut rest[skip..];
        }
        Ok(out)
    }

    pub(crate) fn save(&self) -> Result<VcpuState, HvError> {
        let cpuid = self
            .fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(os("KVM_GET_CPUID2"))?;
        let xsave = XsaveArea::get(&self.fd, &self.vm.fd)?;
        let xcrs = self.fd.get_xcrs().map_err(os("KVM_GET_XCRS"))?;
        let dr = self.fd.get_debug_regs().map_err(os("KVM_GET_DEBUGREGS"))?;
        let lapic = self.fd.get_lapic().map_err(os("KVM_GET_LAPIC"))?;
        let events = self
            .fd
            .get_vcpu_events()
            .map_err(os("KVM_GET_VCPU_EVENTS"))?;
        let khz = self.fd.get_tsc_khz().map_err(os("KVM_GET_TSC_KHZ"))?;
        let mut tsc = [Msr {
            index: IA32_TSC,
            data: 0,
        }];
        self.get_msrs(&mut tsc)?;
        Ok(VcpuState {
            cpuid: cpuid.as_slice().iter().map(cpuid_from_kvm).collect(),
            regs: self.get_regs()?,
            sregs: self.get_sregs()?,
            xsave: Xsave {
                region: xsave.to_bytes(),
            },
            xcrs: xcrs.xcrs[..(xcrs.nr_xcrs as usize).min(xcrs.xcrs.len())]
                .iter()
                .map(|x| Xcr {
                    index: x.xcr,
                    value: x.value,
                })
                .collect(),
            debug_regs: DebugRegs {
                db: dr.db,
                dr6: dr.dr6,
                dr7: dr.dr7,
            },
            msrs: self.readable_msrs()?,
            lapic: LapicRegs {
                page: lapic.regs.iter().map(|&b| b as u8).collect(),
            },
            events: events_from_kvm(&events),
            mp_state: self.get_mp_state()?,
            tsc: Tsc {
                khz,
                value: tsc[0].data,
            },
        })
    }

    /// What can be checked before the first ioctl.
    fn check(&self, state: &VcpuState) -> Result<(), HvError> {
        state.check_shape()?;
        let host = self.vm.supported_cpuid()?;
        if let (Some(saved), Some(here)) = (cpu_vendor(&state.cpuid), cpu_vendor(&host)) {
            if saved != here {
                return Err(mismatch(format!(
                    "a {} CPU's state on a {} host",
                    String::from_utf8_lossy(&saved),
                    String::from_utf8_lossy(&here)
                )));
            }
        }
        if state.xcrs.len() > 16 {
            return Err(mismatch(format!(
                "{} XCRs (KVM takes 16)",
                state.xcrs.len()
            )));
        }
        Ok(())
    }

    pub(crate) fn restore(&mut self, state: &VcpuState) -> Result<(), HvError> {
        self.check(state)?;
        self.set_cpuid(&state.cpuid)?;
        let khz = self.fd.get_tsc_khz().map_err(os("KVM_GET_TSC_KHZ"))?;
        if khz != state.tsc.khz {
            self.fd.set_tsc_khz(state.tsc.khz).map_err(|e| {
                mismatch(format!(
                    "a TSC of {} kHz on a host at {khz} kHz without TSC scaling ({e})",
                    state.tsc.khz
                ))
            })?;
        }
        self.set_sregs(&state.sregs).map_err(mismatch)?;
        self.set_regs(&state.regs)?;
        let mut xsave = XsaveArea::get(&self.fd, &self.vm.fd)?;
        xsave.load_bytes(&state.xsave.region)?;
        xsave.set(&self.fd).map_err(mismatch)?;
        let mut xcrs = kvm_xcrs {
            nr_xcrs: state.xcrs.len() as u32,
            ..Default::default()
        };
        for (d, s) in xcrs.xcrs.iter_mut().zip(&state.xcrs) {
            d.xcr = s.index;
            d.value = s.value;
        }
        self.fd.set_xcrs(&xcrs).map_err(refused("KVM_SET_XCRS"))?;
        let dr = kvm_debugregs {
            db: state.debug_regs.db,
            dr6: state.debug_regs.dr6,
            dr7: state.debug_regs.dr7,
            ..Default::default()
        };
        self.fd
            .set_debug_regs(&dr)
            .map_err(refused("KVM_SET_DEBUGREGS"))?;
        let mut lapic = kvm_lapic_state::default();
        for (d, &s) in lapic
            .regs
            .iter_mut()
            .zip(&state.lapic.page[..LAPIC_PAGE_SIZE])
        {
            *d = s as _;
        }
        self.fd
            .set_lapic(&lapic)
            .map_err(refused("KVM_SET_LAPIC"))?;
        let (deadline, msrs): (Vec<Msr>, Vec<Msr>) = state
            .msrs
            .iter()
            .partition(|m| m.index == IA32_TSC_DEADLINE);
        self.set_msrs(&msrs).map_err(mismatch)?;
        self.set_msrs(&[Msr {
            index: IA32_TSC,
            data: state.tsc.value,
        }])
        .map_err(mismatch)?;
        self.set_msrs(&deadline).map_err(mismatch)?;
        self.fd
            .set_vcpu_events(&events_to_kvm(&state.events))
            .map_err(refused("KVM_SET_VCPU_EVENTS"))?;
        self.set_mp_state(state.mp_state).map_err(mismatch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let v = VcpuEvents {
            exception: Some(PendingException {
                vector: 14,
                error_code: Some(2),
                injected: true,
                payload: None,
            }),
            interrupt: Some(InjectedInterrupt {
                vector: 0x30,
                soft: false,
            }),
            interrupt_shadow: 1,
            nmi_injected: false,
            nmi_pending: 1,
            nmi_masked: true,
            sipi_vector: 0x9a,
            smm: SmmState::default(),
        };
        assert_eq!(events_from_kvm(&events_to_kvm(&v)), v);
        assert_eq!(
            events_from_kvm(&events_to_kvm(&VcpuEvents::default())),
            VcpuEvents::default()
        );
    }
}
