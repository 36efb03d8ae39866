//! `perf` symbols for compiled code: with `FERROVISOR_JIT_PERFMAP=1`
//! every compiled block (and the trampoline and chain stubs) is named in
//! `/tmp/perf-<pid>.map`, the file `perf report` reads for anonymous
//! executable memory, as `guest_<rip>` (QEMU's `-perfmap` does the same
//! for TCG). Off by default: the file only grows, and so does the
//! process: freed code is not unmapped while the map is on, so that no
//! address is named twice.
//!
//! The file is opened once per process by [`open`], which the VMM calls
//! before its threads are sandboxed (vCPU threads may write, not open);
//! where it could not be opened, nothing is written.

use std::fs::File;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

static MAP: OnceLock<Option<Mutex<File>>> = OnceLock::new();

/// Opens the map when `FERROVISOR_JIT_PERFMAP` is set (once per
/// process; later calls do nothing).
pub fn open() {
    MAP.get_or_init(|| {
        std::env::var_os("FERROVISOR_JIT_PERFMAP")?;
        let path = format!("/tmp/perf-{}.map", std::process::id());
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => Some(Mutex::new(f)),
            Err(e) => {
                tracing::warn!("FERROVISOR_JIT_PERFMAP: cannot open {path}: {e}");
                None
            }
        }
    });
}

/// Names `len` bytes of code at `addr`.
pub(super) fn note(addr: *const u8, len: usize, name: std::fmt::Arguments<'_>) {
    let Some(Some(f)) = MAP.get() else { return };
    let line = format!("{:x} {:x} {}\n", addr as usize, len, name);
    if let Ok(mut f) = f.lock() {
        // A lost line only loses a symbol.
        let _ = f.write_all(line.as_bytes());
    }
}

/// Whether the map is being written.
pub(super) fn enabled() -> bool {
    matches!(MAP.get(), Some(Some(_)))
}
