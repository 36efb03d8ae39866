//! What a forbidden syscall does: the filter traps (SIGSYS), this handler
//! counts the fault (`seccomp.num_faults`), writes one line naming the
//! thread kind and the syscall, and ends the process with Firecracker's
//! status for a bad syscall (148). Before it ends, the count and the line
//! reach where the front end sends its metrics and its log
//! ([`report_faults_to`]), as Firecracker's handler flushes its metrics.
//!
//! Everything here runs in the faulting thread, under that thread's
//! filter, at any point of its work (it may hold any lock): the handler
//! takes no lock, allocates nothing and makes only calls every filter
//! allows (write, clock_gettime, nanosleep, _exit). So it writes to
//! descriptors of its own, dup'ed from the front end's log and metrics
//! files when those are set up, and the metrics line it writes is a short
//! one of its own: `{"utc_timestamp_ms":T,"seccomp":{"num_faults":N}}`
//! (a counter, written as the change since the last line, as the
//! periodic lines do; no earlier line can have counted a fault, since the
//! first one ends the process).

use std::cell::Cell;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use crate::ThreadKind;

/// Firecracker's exit status when seccomp stopped a syscall
/// (`FcExitCode::BadSyscall`).
pub const BAD_SYSCALL_STATUS: i32 = 148;

static FAULTS: AtomicU64 = AtomicU64::new(0);
/// Set by the first fault: it reports; another thread's fault waits for
/// the process to end.
static REPORTING: AtomicBool = AtomicBool::new(false);

/// Where a fault is reported besides standard error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultReport {
    /// The log file: the fault line.
    Log,
    /// The metrics file: a metrics line with `seccomp.num_faults`.
    Metrics,
}

/// The handler's own descriptors for each [`FaultReport`] (-1: none).
static LOG_FD: AtomicI32 = AtomicI32::new(-1);
static METRICS_FD: AtomicI32 = AtomicI32::new(-1);

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

/// Reports faults to `file` too (the front end's log or metrics file,
/// each time it sets or changes one). The handler writes to a duplicate
/// of it, which stays open for the process's life: one descriptor per
/// [`FaultReport`], replaced in place (dup3) when the file changes, so
/// the handler never sees a closed or reused descriptor.
pub fn report_faults_to(report: FaultReport, file: BorrowedFd<'_>) -> std::io::Result<()> {
    let slot = match report {
        FaultReport::Log => &LOG_FD,
        FaultReport::Metrics => &METRICS_FD,
    };
    let current = slot.load(Ordering::Acquire);
    if current >= 0 {
        // SAFETY: dup3 on two open descriptors; `current` is ours (never
        // closed), and replacing it is atomic for a concurrent write.
        if unsafe { libc::dup3(file.as_raw_fd(), current, libc::O_CLOEXEC) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok(());
    }
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor for an open one.
    let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if slot
        .compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // Another thread set it first: replace that one instead.
        // SAFETY: `fd` is the descriptor made above and owned here.
        unsafe { libc::close(fd) };
        return report_faults_to(report, file);
    }
    Ok(())
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

/// A line, built without allocating (we are in a signal handler).
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 160],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> &mut Self {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        self
    }

    fn number(&mut self, value: i64) -> &mut Self {
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
        self.push(&digits[i..])
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn syscall_name(nr: i64) -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    return crate::syscall_names::name(nr);
    #[cfg(not(target_arch = "x86_64"))]
    return {
        let _ = nr;
        None
    };
}

fn fault_line(kind: Option<ThreadKind>, syscall: i64) -> Line {
    let mut line = Line::new();
    line.push(b"seccomp: thread ")
        .push(kind.map_or("unknown", ThreadKind::name).as_bytes())
        .push(b" made forbidden syscall ")
        .number(syscall);
    if let Some(name) = syscall_name(syscall) {
        line.push(b" (").push(name.as_bytes()).push(b")");
    }
    line.push(b"; ending with status ")
        .number(BAD_SYSCALL_STATUS.into())
        .push(b"\n");
    line
}

fn metrics_line(utc_timestamp_ms: i64, faults: u64) -> Line {
    let mut line = Line::new();
    line.push(b"{\"utc_timestamp_ms\":")
        .number(utc_timestamp_ms)
        .push(b",\"seccomp\":{\"num_faults\":")
        .number(faults as i64)
        .push(b"}}\n");
    line
}

/// Writes all of `bytes` to `fd` (-1: nowhere), giving up on an error.
fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while fd >= 0 && !bytes.is_empty() {
        // SAFETY: write(2) from a live buffer; async-signal-safe.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

fn now_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec; async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
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
    let faults = FAULTS.fetch_add(1, Ordering::Relaxed) + 1;
    let line = fault_line(current_kind(), syscall);
    if REPORTING.swap(true, Ordering::AcqRel) {
        // Another thread's fault is being reported; it ends the process.
        // Say what this thread did, and wait.
        write_all(2, line.bytes());
        loop {
            // SAFETY: nanosleep with a valid timespec; every filter
            // allows it.
            unsafe {
                libc::nanosleep(
                    &libc::timespec {
                        tv_sec: 1,
                        tv_nsec: 0,
                    },
                    std::ptr::null_mut(),
                )
            };
        }
    }
    // The files first: standard error may be a pipe nobody reads, where
    // the write could block.
    write_all(
        METRICS_FD.load(Ordering::Acquire),
        metrics_line(now_ms(), faults).bytes(),
    );
    write_all(LOG_FD.load(Ordering::Acquire), line.bytes());
    write_all(2, line.bytes());
    // SAFETY: _exit(2) is async-signal-safe and allowed by every filter.
    unsafe { libc::_exit(BAD_SYSCALL_STATUS) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_kind_and_the_syscall() {
        let line = fault_line(Some(ThreadKind::VirtioNet), 41);
        assert_eq!(
            line.bytes(),
            b"seccomp: thread virtio-net made forbidden syscall 41 (socket); ending with status 148\n"
        );
        let line = fault_line(None, 100_000);
        assert_eq!(
            line.bytes(),
            b"seccomp: thread unknown made forbidden syscall 100000; ending with status 148\n"
        );
    }

    #[test]
    fn the_metrics_line_is_json_with_the_count() {
        let line = metrics_line(1_765_000_000_123, 1);
        assert_eq!(
            line.bytes(),
            br#"{"utc_timestamp_ms":1765000000123,"seccomp":{"num_faults":1}}
"#
        );
    }

    #[test]
    fn a_report_descriptor_is_replaced_in_place() {
        use std::io::{Read, Seek};
        let dir = std::env::temp_dir().join(format!("sandbox-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = std::fs::File::create(dir.join("a")).unwrap();
        let b = std::fs::File::create(dir.join("b")).unwrap();
        use std::os::fd::AsFd;
        report_faults_to(FaultReport::Log, a.as_fd()).unwrap();
        let fd = LOG_FD.load(Ordering::Acquire);
        drop(a); // ours stays open
        write_all(fd, b"to a\n");
        report_faults_to(FaultReport::Log, b.as_fd()).unwrap();
        assert_eq!(LOG_FD.load(Ordering::Acquire), fd, "same descriptor");
        write_all(fd, b"to b\n");
        let read = |name: &str| {
            let mut f = std::fs::File::open(dir.join(name)).unwrap();
            f.rewind().unwrap();
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            s
        };
        assert_eq!(read("a"), "to a\n");
        assert_eq!(read("b"), "to b\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
