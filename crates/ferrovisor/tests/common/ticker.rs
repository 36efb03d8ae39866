//! The ticker guest behind Firecracker's API (snapshot and migration
//! tests): it prints [`TEXT`] one character at a time, keeping its
//! progress in guest memory, and ends with [`DONE_STATUS`]; a guest saved,
//! moved or restored part-way must finish the text without a gap or a
//! repeat.

use std::path::Path;
use std::time::{Duration, Instant};

use super::firecracker::{elf, serial, Instance};

pub const START: &str = r#"{"action_type": "InstanceStart"}"#;
pub const PAUSE: &str = r#"{"state": "Paused"}"#;
pub const RESUME: &str = r#"{"state": "Resumed"}"#;
/// What the ticker guest prints, one character at a time.
pub const TEXT: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\n";
/// The guest's debug-exit value when it is done, and the exit status.
pub const DONE: u32 = 0x2a;
pub const DONE_STATUS: i32 = ((DONE << 1) | 1) as i32;
/// Where the guest keeps its progress.
pub const PROGRESS: u64 = 0x30_0000;

/// The ticker guest (see [`guests::ticker`]).
pub fn ticker(delay: u32) -> guests::Program {
    guests::ticker(TEXT, delay, PROGRESS, DONE).unwrap()
}

/// Spin iterations between two characters: the whole text takes a few
/// seconds on emu and on this project's nested kvm (a few MIPS under
/// kvm_pvm); on a bare-metal kvm host it may end before the pause, which
/// the tests report rather than passing.
pub fn delay(accel: &str) -> u32 {
    if accel == "kvm" {
        150_000
    } else {
        1_500_000
    }
}

/// Configures the ticker guest with its serial output in `out`.
pub fn configure(vm: &Instance, files: &Path, accel: &str, out: &Path, track_dirty: bool) {
    let kernel = elf(files, "ticker.elf", &ticker(delay(accel)));
    vm.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path": "{}"}}"#, kernel.display()),
    );
    vm.ok(
        "PUT",
        "/machine-config",
        &format!(r#"{{"vcpu_count": 1, "mem_size_mib": 32, "track_dirty_pages": {track_dirty}}}"#),
    );
    vm.ok(
        "PUT",
        "/serial",
        &format!(r#"{{"serial_out_path": "{}"}}"#, out.display()),
    );
}

/// Waits until the guest printed `chars` characters.
pub fn wait_output(out: &Path, chars: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while serial(out).len() < chars {
        assert!(
            Instant::now() < deadline,
            "the guest printed {:?}",
            serial(out)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
