//! The conformance suite on the emu accelerator (always available).

fn open_emu() -> Result<Box<dyn hv::Hypervisor>, String> {
    Ok(Box::new(hv_emu::EmuHypervisor::new()))
}

conformance::conformance_suite!("emu", open_emu);

// Interrupt-window precision the nested kvm_pvm of the development
// machines does not give (it delivers a self-IPI a few instructions late,
// so a one-instruction STI window can close first); KVM on VMX/SVM does.
#[test]
fn eoi_lets_the_next_pending_interrupt_in() {
    conformance::with_backend(
        "emu",
        open_emu,
        conformance::cases::eoi_lets_the_next_pending_interrupt_in,
    );
}

#[test]
fn nmi_blocked_in_its_handler_follows_the_iret() {
    conformance::with_backend(
        "emu",
        open_emu,
        conformance::cases::nmi_blocked_in_its_handler_follows_the_iret,
    );
}
