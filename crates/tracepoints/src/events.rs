//! The events, one function each, with Linux's fields and `TP_printk`
//! formats. Calling one costs a load and a branch while the event is off;
//! the formatting runs in a cold function only when it is on.

use std::fmt::Write;

use crate::line::{current_vcpu, format, Context};
use crate::vmx::{kvm_exit_reason_name, VmxExit};
use crate::{enabled, write_line, Event};

pub use crate::line::set_vcpu;
pub use crate::vmx::kvm_exit;

#[cold]
#[inline(never)]
fn emit(event: Event, fields: &dyn Fn(&mut String)) {
    write_line(&format(&Context::now(), event, fields));
}

/// Defines `pub fn $name(args)`, which emits the event when it is on, and
/// `$fields(w, args)`, which formats its fields (tested on its own).
macro_rules! tracepoint {
    ($(#[$doc:meta])* $name:ident, $fields:ident, $event:ident,
     ($($arg:ident: $ty:ty),* $(,)?), |$w:ident| $body:expr) => {
        $(#[$doc])*
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        pub fn $name($($arg: $ty),*) {
            if enabled(Event::$event) {
                emit(Event::$event, &|w: &mut String| $fields(w, $($arg),*));
            }
        }

        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $fields($w: &mut String, $($arg: $ty),*) {
            let _ = $body;
        }
    };
}

fn rw(write: bool) -> &'static str {
    if write {
        "write"
    } else {
        "read"
    }
}

/// The delivery modes of `kvm_deliver_mode`.
fn delivery_mode(mode: u32) -> &'static str {
    [
        "Fixed", "LowPrio", "SMI", "Res3", "NMI", "INIT", "SIPI", "ExtINT",
    ][(mode & 7) as usize]
}

fn trigger(level: bool) -> &'static str {
    if level {
        "level"
    } else {
        "edge"
    }
}

tracepoint!(
    /// Guest mode entry of the calling thread's vCPU at `rip`.
    kvm_entry, kvm_entry_fields, KvmEntry,
    (rip: u64),
    |w| write!(w, "vcpu {}, rip 0x{rip:x}", current_vcpu())
);

tracepoint!(
    /// A VM exit for `reason` at `rip`, with the exit qualification (`info1`)
    /// and the second information field (`info2`).
    kvm_exit, kvm_exit_fields, KvmExit,
    (reason: VmxExit, rip: u64, info1: u64, info2: u64),
    |w| write!(
        w,
        "vcpu {} reason {} rip 0x{rip:x} info1 0x{info1:016x} info2 0x{info2:016x} intr_info 0x{:08x} error_code 0x{:08x}",
        current_vcpu(),
        reason.name(),
        0,
        0
    )
);

tracepoint!(
    /// Port I/O: `count` accesses of `size` bytes at `port`; `val` is the
    /// first one's value.
    kvm_pio, kvm_pio_fields, KvmPio,
    (write: bool, port: u16, size: u32, count: u32, val: u32),
    |w| write!(
        w,
        "pio_{} at 0x{port:x} size {size} count {count} val 0x{val:x} {}",
        rw(write),
        if count > 1 { "(...)" } else { "" }
    )
);

tracepoint!(
    /// An MMIO access of `len` bytes at `gpa` (for a read, with the value
    /// the device returned).
    kvm_mmio, kvm_mmio_fields, KvmMmio,
    (write: bool, len: u32, gpa: u64, val: u64),
    |w| write!(w, "mmio {} len {len} gpa 0x{gpa:x} val 0x{val:x}", rw(write))
);

tracepoint!(
    /// RDMSR/WRMSR of `ecx`; `exception` when it raised #GP.
    kvm_msr, kvm_msr_fields, KvmMsr,
    (write: bool, ecx: u32, data: u64, exception: bool),
    |w| write!(
        w,
        "msr_{} {ecx:x} = 0x{data:x}{}",
        rw(write),
        if exception { " (#GP)" } else { "" }
    )
);

tracepoint!(
    /// CPUID of leaf `function`, subleaf `index`, with its result.
    kvm_cpuid, kvm_cpuid_fields, KvmCpuid,
    (function: u32, index: u32, rax: u64, rbx: u64, rcx: u64, rdx: u64, found: bool),
    |w| write!(
        w,
        "func {function:x} idx {index:x} rax {rax:x} rbx {rbx:x} rcx {rcx:x} rdx {rdx:x}, cpuid entry {}",
        if found { "found" } else { "not found" }
    )
);

tracepoint!(
    /// MOV to/from CR`cr`.
    kvm_cr, kvm_cr_fields, KvmCr,
    (write: bool, cr: u32, val: u64),
    |w| write!(w, "cr_{} {cr:x} = 0x{val:x}", rw(write))
);

tracepoint!(
    /// A guest page fault at `address` taken at `rip`.
    kvm_page_fault, kvm_page_fault_fields, KvmPageFault,
    (rip: u64, address: u64, error_code: u64),
    |w| write!(
        w,
        "vcpu {} rip 0x{rip:x} address 0x{address:016x} error_code 0x{error_code:x}",
        current_vcpu()
    )
);

tracepoint!(
    /// An interrupt (`soft`: INTn) injected into the guest.
    kvm_inj_virq, kvm_inj_virq_fields, KvmInjVirq,
    (vector: u32, soft: bool, reinjected: bool),
    |w| write!(
        w,
        "{} 0x{vector:x}{}",
        if soft { "Soft/INTn" } else { "IRQ" },
        if reinjected { " [reinjected]" } else { "" }
    )
);

tracepoint!(
    /// An IPI sent by writing the ICR (`icr_low`) for destination `dest_id`.
    kvm_apic_ipi, kvm_apic_ipi_fields, KvmApicIpi,
    (icr_low: u32, dest_id: u32),
    |w| write!(
        w,
        "dst {dest_id:x} vec {} ({}|{}|{}|{}|{})",
        icr_low as u8,
        delivery_mode(icr_low >> 8),
        if icr_low & (1 << 11) != 0 { "logical" } else { "physical" },
        if icr_low & (1 << 14) != 0 { "assert" } else { "de-assert" },
        trigger(icr_low & (1 << 15) != 0),
        ["dst", "self", "all", "all-but-self"][(icr_low >> 18 & 3) as usize]
    )
);

tracepoint!(
    /// A local APIC accepted interrupt `vec` (`dm`: the delivery mode,
    /// 0–7; `level`: level-triggered).
    kvm_apic_accept_irq, kvm_apic_accept_irq_fields, KvmApicAcceptIrq,
    (apicid: u32, dm: u32, level: bool, vec: u8),
    |w| write!(
        w,
        "apicid {apicid:x} vec {vec} ({}|{})",
        delivery_mode(dm),
        trigger(level)
    )
);

tracepoint!(
    /// A PIC input changed: `chip` 0 (master) or 1 (slave), `pin` 0–7, with
    /// the chip's ELCR and IMR.
    kvm_pic_set_irq, kvm_pic_set_irq_fields, KvmPicSetIrq,
    (chip: u8, pin: u8, elcr: u8, imr: u8, coalesced: bool),
    |w| write!(
        w,
        "chip {chip} pin {pin} ({}{}){}",
        trigger(elcr & (1 << (pin & 7)) != 0),
        if imr & (1 << (pin & 7)) != 0 { "|masked" } else { "" },
        if coalesced { " (coalesced)" } else { "" }
    )
);

tracepoint!(
    /// An IOAPIC pin fired with redirection entry `e`.
    kvm_ioapic_set_irq, kvm_ioapic_set_irq_fields, KvmIoapicSetIrq,
    (e: u64, pin: u32, coalesced: bool),
    |w| write!(
        w,
        "pin {pin} dst {:x} vec {} ({}|{}|{}{}){}",
        (e >> 56) as u8,
        e as u8,
        delivery_mode((e >> 8) as u32),
        if e & (1 << 11) != 0 { "logical" } else { "physical" },
        trigger(e & (1 << 15) != 0),
        if e & (1 << 16) != 0 { "|masked" } else { "" },
        if coalesced { " (coalesced)" } else { "" }
    )
);

tracepoint!(
    /// The VMM set GSI `gsi` to `level` (KVM_IRQ_LINE; source 0 is the
    /// userspace source).
    kvm_set_irq, kvm_set_irq_fields, KvmSetIrq,
    (gsi: u32, level: i32, source: i32),
    |w| write!(w, "gsi {gsi} level {level} source {source}")
);

tracepoint!(
    /// `Vcpu::run` returns to the VMM with KVM exit `reason`, or with
    /// `errno` < 0 (-EINTR: "restart").
    kvm_userspace_exit, kvm_userspace_exit_fields, KvmUserspaceExit,
    (reason: u32, errno: i32),
    |w| {
        if errno < 0 {
            let what = if errno == -libc::EINTR { "restart" } else { "error" };
            write!(w, "reason {what} ({})", -errno)
        } else {
            write!(w, "reason {} ({reason})", kvm_exit_reason_name(reason))
        }
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(f: impl Fn(&mut String)) -> String {
        let mut s = String::new();
        f(&mut s);
        s
    }

    #[test]
    fn formats_follow_linux() {
        set_vcpu(1);
        assert_eq!(
            fields(|w| kvm_entry_fields(w, 0xfff0)),
            "vcpu 1, rip 0xfff0"
        );
        assert_eq!(
            fields(|w| kvm_exit_fields(w, VmxExit::IoInstruction, 0x1000, 0x3f8_0000, 0)),
            "vcpu 1 reason IO_INSTRUCTION rip 0x1000 info1 0x0000000003f80000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000"
        );
        assert_eq!(
            fields(|w| kvm_pio_fields(w, true, 0x3f8, 1, 1, 0x41)),
            "pio_write at 0x3f8 size 1 count 1 val 0x41 "
        );
        assert_eq!(
            fields(|w| kvm_pio_fields(w, false, 0x1f0, 2, 256, 0xbeef)),
            "pio_read at 0x1f0 size 2 count 256 val 0xbeef (...)"
        );
        assert_eq!(
            fields(|w| kvm_mmio_fields(w, false, 4, 0xd000_0000, 0x7472_6976)),
            "mmio read len 4 gpa 0xd0000000 val 0x74726976"
        );
        assert_eq!(
            fields(|w| kvm_msr_fields(w, true, 0x1b, 0xfee0_0900, false)),
            "msr_write 1b = 0xfee00900"
        );
        assert_eq!(
            fields(|w| kvm_msr_fields(w, false, 0x1234, 0, true)),
            "msr_read 1234 = 0x0 (#GP)"
        );
        assert_eq!(
            fields(|w| kvm_cpuid_fields(w, 0x4000_0000, 0, 0x4000_0001, 0x1, 0x2, 0x3, true)),
            "func 40000000 idx 0 rax 40000001 rbx 1 rcx 2 rdx 3, cpuid entry found"
        );
        assert_eq!(
            fields(|w| kvm_cr_fields(w, true, 0, 0x8000_0011)),
            "cr_write 0 = 0x80000011"
        );
        assert_eq!(
            fields(|w| kvm_page_fault_fields(w, 0x400000, 0xdead_b000, 2)),
            "vcpu 1 rip 0x400000 address 0x00000000deadb000 error_code 0x2"
        );
        assert_eq!(
            fields(|w| kvm_inj_virq_fields(w, 0x30, false, false)),
            "IRQ 0x30"
        );
        assert_eq!(
            fields(|w| kvm_apic_ipi_fields(w, 0x000c_4500, 0)),
            "dst 0 vec 0 (INIT|physical|assert|edge|all-but-self)"
        );
        assert_eq!(
            fields(|w| kvm_apic_accept_irq_fields(w, 0, 0, false, 0xec)),
            "apicid 0 vec 236 (Fixed|edge)"
        );
        assert_eq!(
            fields(|w| kvm_pic_set_irq_fields(w, 0, 4, 0, 0xef, false)),
            "chip 0 pin 4 (edge)"
        );
        assert_eq!(
            fields(|w| kvm_pic_set_irq_fields(w, 1, 6, 0x40, 0x40, true)),
            "chip 1 pin 6 (level|masked) (coalesced)"
        );
        assert_eq!(
            fields(|w| kvm_ioapic_set_irq_fields(w, 0x0100_0000_0000_8031, 4, false)),
            "pin 4 dst 1 vec 49 (Fixed|physical|level)"
        );
        assert_eq!(
            fields(|w| kvm_set_irq_fields(w, 4, 1, 0)),
            "gsi 4 level 1 source 0"
        );
        assert_eq!(
            fields(|w| kvm_userspace_exit_fields(w, kvm_exit::IO, 0)),
            "reason KVM_EXIT_IO (2)"
        );
        assert_eq!(
            fields(|w| kvm_userspace_exit_fields(w, 0, -libc::EINTR)),
            "reason restart (4)"
        );
    }
}
