//! The syscall filters' flags (`--no-seccomp`, `--seccomp-filter FILE`,
//! the same on both front ends) and the main thread's filter.

use std::path::Path;

use sandbox::{Setting, ThreadKind};

/// The setting the flags ask for: the built-in filters unless told
/// otherwise.
pub fn setting(no_seccomp: bool, filter: Option<&Path>) -> Setting {
    match (no_seccomp, filter) {
        (true, _) => Setting::Off,
        (false, Some(path)) => Setting::File(path.to_path_buf()),
        (false, None) => Setting::Default,
    }
}

/// Sets the filters up; first thing, before any thread starts.
pub fn init(setting: Setting) -> Result<(), String> {
    sandbox::init(setting).map_err(|e| crate::error_line(&e))
}

/// The main thread takes the vmm filter once the VM runs (it then only
/// waits for the end, writes the last metrics and cleans up).
pub fn enter_main() -> Result<(), String> {
    sandbox::enter(ThreadKind::Vmm).map_err(|e| crate::error_line(&e))
}
