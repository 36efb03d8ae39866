//! The conformance suite on the kvm accelerator. Skipped loudly where
//! /dev/kvm is unusable; `FERROVISOR_REQUIRE_KVM=1` turns that into failure.

fn open_kvm() -> Result<Box<dyn hv::Hypervisor>, String> {
    hv_kvm::KvmHypervisor::new()
        .map(|kvm| Box::new(kvm) as Box<dyn hv::Hypervisor>)
        .map_err(|e| e.to_string())
}

conformance::conformance_suite!("kvm", open_kvm);

/// Save a running guest, restore it in another process (this test binary
/// run again), and get the uninterrupted run's output.
#[test]
fn snapshot_restores_in_another_process() {
    conformance::with_backend("kvm", open_kvm, |hv| {
        conformance::snapshot::save_restore_in_another_process(
            hv,
            "snapshot_restores_in_another_process",
        )
    });
}
