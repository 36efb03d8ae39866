//! What a forbidden syscall does: the filter traps (SIGSYS), this handler
//! writes one line naming the thread kind and the syscall, counts the fault
//! and ends the process with Firecracker's status for a bad syscall (148).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ThreadKind;

/// Firecracker's exit status when seccomp stopped a syscall
/// (`FcExitCode::BadSyscall`).
pub const BAD_SYSCALL_STATUS: i32 = 148;

static FAULTS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's kind, once its filter is installed (`u8::MAX`: none).
    static KIND: Cell<u8> = const { Cell::new(u8::MAX) };
}

/// How many forbidden syscalls were caught (`seccomp.num_faults`).
pub fn faults() -> u64 {
    FAULTS.load(Ordering::Relaxed)
}

pub(crate) fn set_current_kind(kind: ThreadKind) {
    KIND.with(|k| k.set(kind.index()));
}

/// The kind of the calling thread, when it has a filter.
pub fn current_kind() -> Option<ThreadKind> {
    KIND.try_with(|k| ThreadKind::from_index(k.get()))
        .ok()
        .flatten()
}

/// Installs the SIGSYS handler (process-wide).
pub(crate) fn install_handler() -> std::io::Result<()> {
    // SAFETY: sigaction is plain old data; all zeroes is a valid value.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = on_sigsys as *const () as libc::sighandler_t;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `act` is initialized, the handler has the SA_SIGINFO
    // signature and only makes async-signal-safe calls.
    if unsafe { libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The message, built without allocating (we are in a signal handler).
struct Line {
    buf: [u8; 128],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_number(&mut self, value: i64) {
        if value < 0 {
            self.push(b"-");
        }
        let mut digits = [0u8; 20];
        let mut v = value.unsigned_abs();
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

fn fault_line(kind: Option<ThreadKind>, syscall: i64) -> Line {
    let mut line = Line {
        buf: [0; 128],
        len: 0,
    };
    line.push(b"seccomp: thread ");
    line.push(kind.map_or("unknown", ThreadKind::name).as_bytes());
    line.push(b" made forbidden syscall ");
    line.push_number(syscall);
    line.push(b"\n");
    line
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // The kernel's siginfo for SIGSYS: three ints and padding (16 bytes),
    // then `_sigsys { void *_call_addr; int _syscall; unsigned _arch; }`.
    const SYSCALL_OFFSET: usize = 16 + std::mem::size_of::<*const libc::c_void>();
    let syscall = if info.is_null() {
        -1
    } else {
        // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO
        // handler; for SIGSYS the syscall number is the int at this offset
        // (include/uapi/asm-generic/siginfo.h), inside the 128-byte struct.
        i64::from(unsafe {
            std::ptr::read_unaligned((info as *const u8).add(SYSCALL_OFFSET).cast::<i32>())
        })
    };
    FAULTS.fetch_add(1, Ordering::Relaxed);
    let line = fault_line(current_kind(), syscall);
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer
    // outlives the call. Both are allowed by every filter.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        libc::_exit(BAD_SYSCALL_STATUS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_kind_and_the_syscall() {
        let line = fault_line(Some(ThreadKind::VirtioNet), 41);
        assert_eq!(
            &line.buf[..line.len],
            b"seccomp: thread virtio-net made forbidden syscall 41\n"
        );
        let line = fault_line(None, 0);
        assert_eq!(
            &line.buf[..line.len],
            b"seccomp: thread unknown made forbidden syscall 0\n"
        );
    }
}
