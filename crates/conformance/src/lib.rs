//! The backend conformance suite of ARCHITECTURE.md.
//!
//! Every case is a function over `&dyn hv::Hypervisor`: it assembles a tiny
//! guest with iced-x86, runs it, and checks what reached the buses, the
//! guest's memory, its registers and the exits. A backend's test file
//! instantiates all of them with [`conformance_suite!`], so every accelerator
//! runs the very same checks.
//!
//! A backend that cannot be opened on this host makes each case print a
//! loud `SKIPPED` line, unless `FERROVISOR_REQUIRE_<BACKEND>=1` is set, in
//! which case the case fails.

#![forbid(unsafe_code)]

pub mod boundary;
pub mod cases;
pub mod harness;
pub mod interrupts;
pub mod ioevent;
pub mod loops;
pub mod nmi;
pub mod platform;
pub mod snapshot;

use hv::Hypervisor;

/// Runs `case` on the backend `open` returns, or reports why it cannot.
pub fn with_backend(
    backend: &str,
    open: impl FnOnce() -> Result<Box<dyn Hypervisor>, String>,
    case: fn(&dyn Hypervisor),
) {
    match open() {
        Ok(hv) => case(&*hv),
        Err(reason) => skip_or_fail(backend, &reason),
    }
}

/// Reports that a test cannot run because `backend` is unavailable: loudly
/// on stderr and in the file `FERROVISOR_SKIP_LOG` names (the test script
/// prints it after the run), or as a failure when
/// `FERROVISOR_REQUIRE_<BACKEND>=1`.
pub fn skip_or_fail(backend: &str, reason: &str) {
    let var = format!("FERROVISOR_REQUIRE_{}", backend.to_ascii_uppercase());
    if std::env::var(&var).is_ok_and(|v| v == "1") {
        panic!("{backend} is required ({var}=1) but unavailable: {reason}");
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string();
    let line = format!("SKIPPED {test} ({backend} unavailable: {reason})");
    eprintln!("{line}");
    if let Ok(path) = std::env::var("FERROVISOR_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(log, "{line}");
        }
    }
}

/// Instantiates every conformance case as a `#[test]` for one backend.
///
/// `$backend` is the backend's name, `$open` an expression of type
/// `fn() -> Result<Box<dyn hv::Hypervisor>, String>`.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr, $open:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::with_backend($backend, $open, $crate::cases::$case);
            }
        )*
    };
    ($backend:expr, $open:expr) => {
        $crate::conformance_suite!($backend, $open;
            uart_output,
            pio_sizes_and_values,
            pit_off_ports_reach_the_vmm,
            string_pio,
            mmio_sizes_and_values,
            read_only_slot,
            hlt_waits_for_a_kick,
            kick_interrupts_a_spinning_guest,
            triple_fault_is_shutdown,
            dirty_log_names_written_pages,
            two_vcpus_write_their_ids,
            cpuid_template,
            debug_exit_status,
            machine_runs_bare_elf,
            lapic_timer_wakes_hlt,
            ioapic_routes_a_line,
            ipi_reaches_another_vcpu,
            init_sipi_starts_an_ap,
            multiboot_kernel_boots,
            acpi_poweroff_ends_the_machine,
            rtc_shows_the_host_date,
            rtc_periodic_interrupt_wakes_hlt,
            device_writes_to_code_are_seen,
            ioeventfd_takes_matching_writes,
            irqfd_pulses_an_ioapic_pin,
            irqfd_follows_msi_routes,
            x2apic_through_apic_base,
            cr8_is_the_lapic_tpr,
            exits_are_counted_once,
        );
    };
}
