//! The conformance suite on the emu accelerator (always available).

fn open_emu() -> Result<Box<dyn hv::Hypervisor>, String> {
    Ok(Box::new(hv_emu::EmuHypervisor::new()))
}

conformance::conformance_suite!("emu", open_emu);

// Cases outside the common list, because the nested, software-backed KVM
// of the development machines (kvm_pvm) differs from KVM on VMX/SVM: it
// does not reset the bootstrap processor on INIT (the guest runs on past
// the ICR write), and it delivers a self-IPI or a self-NMI a few
// instructions late (so a one-instruction STI window can close first).
conformance::conformance_suite!("emu", open_emu;
    init_resets_the_bsp_to_the_reset_vector,
    eoi_lets_the_next_pending_interrupt_in,
    nmi_blocked_in_its_handler_follows_the_iret,
);
