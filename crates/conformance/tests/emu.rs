//! The conformance suite on the emu accelerator (always available).

fn open_emu() -> Result<Box<dyn hv::Hypervisor>, String> {
    Ok(Box::new(hv_emu::EmuHypervisor::new()))
}

conformance::conformance_suite!("emu", open_emu);

// Cases outside the common list. The nested, software-backed KVM of the
// development machines (kvm_pvm) does not reset the bootstrap processor on
// INIT (the guest runs on past the ICR write), nor return from a guest's
// VMCALL, so these cases run on emu.
conformance::conformance_suite!("emu", open_emu; init_resets_the_bsp_to_the_reset_vector, hypercalls_follow_kvm, nmis_ping_pong_on_one_host_cpu);

/// Save a running guest, restore it in another process (this test binary
/// run again), and get the uninterrupted run's output.
#[test]
fn snapshot_restores_in_another_process() {
    conformance::with_backend("emu", open_emu, |hv| {
        conformance::snapshot::save_restore_in_another_process(
            hv,
            "snapshot_restores_in_another_process",
        )
    });
}
