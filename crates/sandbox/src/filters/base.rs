//! What every thread needs: memory (never executable), locks and
//! channels, time, signal returns, logging to an open descriptor, and
//! ending.

use crate::rules::{arg_eq, arg_masked, Rules};

pub fn rules() -> Rules {
    let mut r = Rules::default();
    r.allow(&[
        // Memory: the allocator and thread stacks.
        libc::SYS_brk,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        // Locks, channels, sleeping, time.
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_clock_gettime,
        libc::SYS_gettimeofday,
        // Signals (the SIGSYS handler, the kvm kick) and a thread's end.
        // A thread stopped (SIGSTOP, job control, a debugger) inside a
        // sleep or a timed wait resumes it through restart_syscall, which
        // only goes on with the call that was allowed.
        libc::SYS_rt_sigreturn,
        libc::SYS_restart_syscall,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_exit,
        libc::SYS_exit_group,
        // std and glibc: hash keys, thread ids, CPU count.
        libc::SYS_getrandom,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_sched_getaffinity,
        // Logging to standard error or the log file, dropping descriptors.
        libc::SYS_write,
        libc::SYS_close,
    ]);
    no_exec(&mut r, libc::SYS_mmap);
    no_exec(&mut r, libc::SYS_mprotect);
    // std checks that a descriptor is open before it closes it, in builds
    // with debug assertions (the test suite's): fcntl(fd, F_GETFD) only.
    r.allow_if(libc::SYS_fcntl, vec![arg_eq(1, libc::F_GETFD as u64)]);
    // glibc's malloc reads /sys/devices/system/cpu/online and
    // /proc/sys/vm/overcommit_memory once per process, from the first
    // thread that needs them; it copes with a refusal.
    r.refuse(&[libc::SYS_openat, libc::SYS_open]);
    r
}

/// `syscall` (mmap, mprotect) when its protection (argument 2) has no
/// PROT_EXEC.
pub fn no_exec(r: &mut Rules, syscall: libc::c_long) {
    r.allow_if(syscall, vec![arg_masked(2, libc::PROT_EXEC as u64, 0)]);
}
