//! KVM's hypercall ABI for VMCALL/VMMCALL (Documentation/virt/kvm/
//! x86/hypercalls.rst): the number in RAX, arguments in RBX, RCX, RDX, RSI,
//! the result in RAX; outside 64-bit mode only the low 32 bits count.
//!
//! As KVM: a hypercall from CPL > 0 returns `-KVM_EPERM`; an unknown number
//! `-KVM_ENOSYS`. Both VMCALL and VMMCALL are accepted whatever the vendor
//! (KVM patches the other vendor's instruction).
//!
//! | number | name | here |
//! |---|---|---|
//! | 1 | KVM_HC_VAPIC_POLL_IRQ | returns 0 (nothing to poll: interrupts are checked at every block boundary) |
//! | 10 | KVM_HC_SEND_IPI | RBX/RCX: bitmaps of APIC IDs from RDX (RCX from RDX + 64, or + 32 outside 64-bit mode); RSI: the ICR (vector and delivery mode; fixed or NMI; a destination mode or shorthand is `-KVM_EINVAL`). Returns how many vCPUs took it. |
//! | 11 | KVM_HC_SCHED_YIELD | returns 0 (the target's vCPU thread runs on its own) |
//!
//! The CPUID hypervisor leaves do not advertise these (there are no KVM
//! feature leaves); they exist for guests that assume KVM, as
//! kvm-unit-tests do.

use x86::Hypercall;

use crate::platform::Router;

pub const KVM_HC_VAPIC_POLL_IRQ: u64 = 1;
pub const KVM_HC_SEND_IPI: u64 = 10;
pub const KVM_HC_SCHED_YIELD: u64 = 11;

pub const KVM_ENOSYS: i64 = 1000;
pub const KVM_EPERM: i64 = 1;
pub const KVM_EINVAL: i64 = 22;

/// ICR: delivery mode (bits 8..11), destination mode (11), shorthand
/// (18..20).
const ICR_MODE_MASK: u64 = 0x700;
const ICR_MODE_NMI: u64 = 0x400;
const ICR_DEST_LOGICAL: u64 = 0x800;
const ICR_SHORTHAND_MASK: u64 = 0xc_0000;

/// Handles `call`, made by a vCPU of the VM `router` reaches.
pub(crate) fn handle(router: &Router<'_>, call: &Hypercall) -> u64 {
    let width = |v: u64| if call.long_mode { v } else { v & 0xffff_ffff };
    let result: i64 = if call.cpl != 0 {
        -KVM_EPERM
    } else {
        match width(call.nr) {
            KVM_HC_VAPIC_POLL_IRQ | KVM_HC_SCHED_YIELD => 0,
            KVM_HC_SEND_IPI => send_ipi(router, call, width),
            _ => -KVM_ENOSYS,
        }
    };
    width(result as u64)
}

fn send_ipi(router: &Router<'_>, call: &Hypercall, width: impl Fn(u64) -> u64) -> i64 {
    let [low, high, min, icr] = call.args.map(&width);
    if icr & (ICR_DEST_LOGICAL | ICR_SHORTHAND_MASK) != 0 {
        return -KVM_EINVAL;
    }
    let nmi = match icr & ICR_MODE_MASK {
        0 | 0x100 => false,
        ICR_MODE_NMI => true,
        _ => return -KVM_EINVAL,
    };
    let vector = icr as u8;
    let cluster: u64 = if call.long_mode { 64 } else { 32 };
    let min = min & 0xffff_ffff;
    let mut count = 0;
    for (base, bitmap) in [(min, low), (min + cluster, high)] {
        for bit in (0..cluster).filter(|b| bitmap >> b & 1 != 0) {
            let id = base + bit;
            if let Ok(id) = u32::try_from(id) {
                count += i64::from(router.send_to(id, vector, nmi));
            }
        }
    }
    count
}
