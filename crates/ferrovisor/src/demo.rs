//! `ferrovisor demo`: boots the bundled demo guest (a bare 64-bit ELF
//! assembled at run time) on the best available accelerator.

use std::process::ExitCode;

use vmm::{Accel, MachineConfig};

pub fn run(accel: Accel) -> ExitCode {
    let program = match guests::demo::program() {
        Ok(p) => p,
        Err(e) => return crate::fail(&format!("cannot assemble the demo guest: {e}"), 1),
    };
    let elf =
        arch::elf_builder::build_elf64(&[(program.load_addr, &program.code)], program.load_addr);
    let path = std::env::temp_dir().join(format!("ferrovisor-demo-{}.elf", std::process::id()));
    if let Err(e) = std::fs::write(&path, elf) {
        return crate::fail(&format!("cannot write {}: {e}", path.display()), 1);
    }
    eprintln!(
        "ferrovisor demo: booting the bundled demo guest ({} bytes of x86-64 code) with --accel {accel}",
        program.code.len()
    );
    let config = MachineConfig {
        accel,
        memory: 64 << 20,
        ..MachineConfig::new(&path)
    };
    let status = crate::run(&config, true);
    let _ = std::fs::remove_file(&path);
    status
}
