//! Messages for the user on standard error (and help texts on standard
//! output) that never end the process: `eprintln!` and `println!` panic
//! when the stream is a pipe its reader closed (`ferrovisor demo 2>&1 |
//! head -2`), which would replace the VM's exit status with a panic's, or,
//! under the syscall filters with `RUST_BACKTRACE` set, with a seccomp
//! kill (the backtrace printer calls getcwd). A message nobody reads is
//! dropped. Lines go through the [`say!`] macro.

use std::io::Write;

/// Writes `text` to standard error; a failure is ignored.
pub(crate) fn stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Writes `text` to standard output and flushes it; a failure is ignored.
pub(crate) fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
