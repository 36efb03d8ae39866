//! Panics on a filtered thread. std's panic message is fine under any
//! filter (a write to standard error), but with `RUST_BACKTRACE` set its
//! backtrace printer asks for the working directory and the executable's
//! path (getcwd, readlink), which no filter allows: a panic would end as
//! a seccomp kill (status 148) instead of a panic. On a filtered thread
//! the hook installed here prints the message alone, never panicking
//! itself (standard error may be a closed pipe); other threads keep std's
//! hook.

use std::io::Write;
use std::panic::PanicHookInfo;

use crate::trap::current_kind;

/// Installs the hook (process-wide), in front of the one already there.
pub(crate) fn install_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| match current_kind() {
        Some(kind) => {
            let _ = std::io::stderr()
                .lock()
                .write_all(message(kind.name(), info).as_bytes());
        }
        None => previous(info),
    }));
}

fn message(kind: &str, info: &PanicHookInfo<'_>) -> String {
    let payload = info
        .payload()
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
        .unwrap_or("Box<dyn Any>");
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let place = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default();
    format!(
        "thread '{name}' ({kind} filter) panicked at {place}:\n{payload}\n\
         note: no backtrace under the seccomp filter (--no-seccomp to get one)\n"
    )
}
