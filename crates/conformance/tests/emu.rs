//! The conformance suite on the emu accelerator (always available).

fn open_emu() -> Result<Box<dyn hv::Hypervisor>, String> {
    Ok(Box::new(hv_emu::EmuHypervisor::new()))
}

conformance::conformance_suite!("emu", open_emu);

/// Emu only: see [`conformance::cases::hypercalls_follow_kvm`].
#[test]
fn hypercalls_follow_kvm() {
    conformance::with_backend("emu", open_emu, conformance::cases::hypercalls_follow_kvm);
}
