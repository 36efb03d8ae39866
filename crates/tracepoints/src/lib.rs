//! KVM's tracepoints, as Linux names and prints them.
//!
//! Each event of [`Event`] is one of Linux's `kvm:*` trace events
//! (arch/x86/kvm/trace.h and include/trace/events/kvm.h) with the same
//! fields in the same `TP_printk` format, and a line in the format of
//! `/sys/kernel/tracing/trace`:
//!
//! ```text
//!           vcpu0-4242    [001] .....  1234.567890: kvm_pio: pio_write at 0x3f8 size 1 count 1 val 0x41
//! ```
//!
//! Events are chosen at run time by name pattern ([`enable`]:
//! `kvm_exit`, `kvm_*`, `kvm:kvm_apic*`, comma lists). A site costs one
//! relaxed atomic load and a predictable branch while its event is off: the
//! emitting functions of [`events`] are `#[inline(always)]` checks of one
//! global bitmask whose formatting body is a separate cold function.
//!
//! The tracepoints are process-wide, as the kernel's are: there is one
//! event mask and one output (standard error unless [`set_output`] gave a
//! file).

mod events;
mod line;
mod pattern;
mod vmx;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use events::*;
pub use pattern::{parse as parse_pattern, PatternError};
pub use vmx::VmxExit;

/// Linux's KVM trace events that Ferrovisor emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Event {
    KvmEntry,
    KvmExit,
    KvmPio,
    KvmMmio,
    KvmMsr,
    KvmCpuid,
    KvmCr,
    KvmPageFault,
    KvmInjVirq,
    KvmApicIpi,
    KvmApicAcceptIrq,
    KvmPicSetIrq,
    KvmIoapicSetIrq,
    KvmSetIrq,
    KvmUserspaceExit,
}

impl Event {
    pub const ALL: [Event; 15] = [
        Event::KvmEntry,
        Event::KvmExit,
        Event::KvmPio,
        Event::KvmMmio,
        Event::KvmMsr,
        Event::KvmCpuid,
        Event::KvmCr,
        Event::KvmPageFault,
        Event::KvmInjVirq,
        Event::KvmApicIpi,
        Event::KvmApicAcceptIrq,
        Event::KvmPicSetIrq,
        Event::KvmIoapicSetIrq,
        Event::KvmSetIrq,
        Event::KvmUserspaceExit,
    ];

    /// Linux's name of the event (without the `kvm:` system prefix).
    pub fn name(self) -> &'static str {
        match self {
            Event::KvmEntry => "kvm_entry",
            Event::KvmExit => "kvm_exit",
            Event::KvmPio => "kvm_pio",
            Event::KvmMmio => "kvm_mmio",
            Event::KvmMsr => "kvm_msr",
            Event::KvmCpuid => "kvm_cpuid",
            Event::KvmCr => "kvm_cr",
            Event::KvmPageFault => "kvm_page_fault",
            Event::KvmInjVirq => "kvm_inj_virq",
            Event::KvmApicIpi => "kvm_apic_ipi",
            Event::KvmApicAcceptIrq => "kvm_apic_accept_irq",
            Event::KvmPicSetIrq => "kvm_pic_set_irq",
            Event::KvmIoapicSetIrq => "kvm_ioapic_set_irq",
            Event::KvmSetIrq => "kvm_set_irq",
            Event::KvmUserspaceExit => "kvm_userspace_exit",
        }
    }

    const fn bit(self) -> u64 {
        1 << self as u8
    }
}

/// The events that are on, one bit per [`Event`].
static MASK: AtomicU64 = AtomicU64::new(0);

/// Where event lines go; `None` is standard error.
static OUTPUT: Mutex<Option<Box<dyn Write + Send>>> = Mutex::new(None);

/// Whether `event` is on: one relaxed load and a test.
#[inline(always)]
pub fn enabled(event: Event) -> bool {
    MASK.load(Ordering::Relaxed) & event.bit() != 0
}

/// Turns on exactly the events `pattern` names (see [`parse_pattern`]) and
/// returns their names. An empty pattern turns every event off.
pub fn enable(pattern: &str) -> Result<Vec<&'static str>, PatternError> {
    let mask = pattern::parse(pattern)?;
    MASK.store(mask, Ordering::Relaxed);
    Ok(names(mask))
}

/// The names of the events that are on.
pub fn enabled_names() -> Vec<&'static str> {
    names(MASK.load(Ordering::Relaxed))
}

fn names(mask: u64) -> Vec<&'static str> {
    Event::ALL
        .iter()
        .filter(|e| mask & e.bit() != 0)
        .map(|e| e.name())
        .collect()
}

/// Sends event lines to `out` instead of standard error.
pub fn set_output(out: Box<dyn Write + Send>) {
    *OUTPUT.lock().unwrap_or_else(|p| p.into_inner()) = Some(out);
}

/// Writes one event line. Each line is one `write` on the output, so lines
/// of different threads do not interleave.
fn write_line(line: &str) {
    let mut out = OUTPUT.lock().unwrap_or_else(|p| p.into_inner());
    let result = match out.as_mut() {
        Some(w) => w.write_all(line.as_bytes()),
        None => std::io::stderr().lock().write_all(line.as_bytes()),
    };
    // Tracing must never disturb the VM: a full disk loses lines.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_distinct_bits_and_linux_names() {
        let mut seen = 0u64;
        for e in Event::ALL {
            assert_eq!(seen & e.bit(), 0);
            seen |= e.bit();
            assert!(e.name().starts_with("kvm_"), "{}", e.name());
        }
        assert_eq!(seen.count_ones() as usize, Event::ALL.len());
    }
}
