//! Guest debugging on KVM: the debugger's wishes as KVM_SET_GUEST_DEBUG's
//! `kvm_guest_debug` (DR0-DR3 and DR7 in `arch.debugreg`, owned by the
//! debugger while it is set; KVM keeps the guest's own apart), and a
//! KVM_EXIT_DEBUG's exception and DR6 back to a [`DebugCause`].

use hv::{DebugCause, GuestDebug, HwKind};
use kvm_bindings::{
    kvm_debug_exit_arch, kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP,
    KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
};

/// #DB and #BP.
const DB_VECTOR: u32 = 1;
const BP_VECTOR: u32 = 3;
/// DR6.BS: single step.
const DR6_BS: u64 = 1 << 14;

/// The `kvm_guest_debug` for `debug` (all zero: debugging off).
pub(crate) fn to_kvm(debug: &GuestDebug) -> kvm_guest_debug {
    let mut k = kvm_guest_debug::default();
    if !debug.is_enabled() {
        return k;
    }
    k.control = KVM_GUESTDBG_ENABLE;
    if debug.single_step {
        k.control |= KVM_GUESTDBG_SINGLESTEP;
    }
    if debug.sw_breakpoints {
        k.control |= KVM_GUESTDBG_USE_SW_BP;
    }
    let mut dr7 = 0u64;
    for (n, bp) in debug.hw.iter().enumerate() {
        let Some(bp) = bp else { continue };
        k.arch.debugreg[n] = bp.addr;
        let rw: u64 = match bp.kind {
            HwKind::Exec => 0,
            HwKind::Write => 1,
            HwKind::Access => 3,
        };
        let len: u64 = match bp.len {
            2 => 1,
            8 => 2,
            4 => 3,
            _ => 0,
        };
        // G<n>, then R/W<n> and LEN<n>.
        dr7 |= (2 << (2 * n)) | (rw << (16 + 4 * n)) | (len << (18 + 4 * n));
    }
    if dr7 != 0 {
        k.control |= KVM_GUESTDBG_USE_HW_BP;
        // GE, as QEMU sets it.
        k.arch.debugreg[7] = dr7 | (1 << 9);
    }
    k
}

/// Why KVM stopped the vCPU, from KVM_EXIT_DEBUG's arch data; `None` for
/// a #DB the debugger did not ask for.
pub(crate) fn cause(exit: &kvm_debug_exit_arch, debug: &GuestDebug) -> Option<DebugCause> {
    match exit.exception {
        BP_VECTOR => Some(DebugCause::SwBreakpoint),
        DB_VECTOR => {
            if let Some(slot) = (0..4).find(|n| exit.dr6 & (1 << n) != 0) {
                return Some(match debug.hw[slot].map(|bp| bp.kind) {
                    Some(HwKind::Exec) => DebugCause::HwBreakpoint { slot },
                    _ => DebugCause::Watchpoint { slot },
                });
            }
            (exit.dr6 & DR6_BS != 0 || debug.single_step).then_some(DebugCause::SingleStep)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hv::HwBreakpoint;

    #[test]
    fn hw_breakpoints_become_dr7() {
        let mut d = GuestDebug::default();
        assert_eq!(to_kvm(&d).control, 0);
        d.hw[1] = Some(HwBreakpoint {
            addr: 0x1000,
            kind: HwKind::Write,
            len: 4,
        });
        let k = to_kvm(&d);
        assert_eq!(k.control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP);
        assert_eq!(k.arch.debugreg[1], 0x1000);
        // G1, R/W1 = 01, LEN1 = 11, GE.
        assert_eq!(
            k.arch.debugreg[7],
            (2 << 2) | (1 << 20) | (3 << 22) | (1 << 9)
        );
        let exit = kvm_debug_exit_arch {
            exception: DB_VECTOR,
            dr6: 0xffff_0ff2,
            ..Default::default()
        };
        assert_eq!(cause(&exit, &d), Some(DebugCause::Watchpoint { slot: 1 }));
    }
}
