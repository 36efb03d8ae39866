//! The conformance suite on the kvm accelerator. Skipped loudly where
//! /dev/kvm is unusable; `FERROVISOR_REQUIRE_KVM=1` turns that into failure.

fn open_kvm() -> Result<Box<dyn hv::Hypervisor>, String> {
    hv_kvm::KvmHypervisor::new()
        .map(|kvm| Box::new(kvm) as Box<dyn hv::Hypervisor>)
        .map_err(|e| e.to_string())
}

conformance::conformance_suite!("kvm", open_kvm);
