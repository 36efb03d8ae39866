//! The conformance suite on the emu accelerator (always available).

fn open_emu() -> Result<Box<dyn hv::Hypervisor>, String> {
    Ok(Box::new(hv_emu::EmuHypervisor::new()))
}

conformance::conformance_suite!("emu", open_emu);
