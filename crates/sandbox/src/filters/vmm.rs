//! The main thread once the VM runs, and the machine's controller: waits
//! for the VM's end, pauses and resumes it (the VM clock), kicks vCPUs,
//! swaps drives (PATCH /drives), writes snapshots, runs live migrations,
//! restores the terminal, removes sockets, writes the last metrics. Also
//! the watcher of a lazy restore's page-fault handler
//! (`vmm::snapshot::uffd`): it polls the handler's connection and an
//! eventfd, reads, and ends the process (exit_group) when the handler is
//! gone. The userfaultfd itself, its ioctls and the connection are made
//! by the main thread while it builds the machine, before it takes this
//! filter: no filter allows `userfaultfd`.

use hv::HostCalls;

use super::virtio::{TUNSETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ};
use crate::rules::Rules;

pub fn rules(calls: &HostCalls) -> Rules {
    let mut r = Rules::default();
    r.allow(&[
        // Files: a new drive image, the metrics and log files.
        libc::SYS_openat,
        libc::SYS_read,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_lseek,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_fcntl,
        libc::SYS_flock,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_unlink,
        libc::SYS_unlinkat,
        // PUT /snapshot/create: the memory file's size, the state file
        // renamed into place.
        libc::SYS_ftruncate,
        libc::SYS_rename,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        // A live migration's connection (opened by the API thread).
        libc::SYS_sendto,
        libc::SYS_recvfrom,
        libc::SYS_setsockopt,
        libc::SYS_shutdown,
        // A live migration hands the TAPs over (an idle eventfd dup'ed
        // onto each TAP's descriptor) and, if it fails, attaches to them
        // again (/dev/net/tun, TUNSETIFF and the rest below).
        libc::SYS_dup3,
        // Events and waiting.
        libc::SYS_eventfd2,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_timerfd_create,
        libc::SYS_timerfd_settime,
        // Kicking vCPU threads (kvm: a signal), ending on a signal.
        libc::SYS_tgkill,
        libc::SYS_rt_sigaction,
    ]);
    r.allow_ioctls(&[
        libc::TCGETS,
        libc::TCSETS,
        libc::TCSETSW,
        libc::TIOCGWINSZ,
        libc::FIONBIO,
        TUNSETIFF,
        TUNSETVNETHDRSZ,
        TUNSETOFFLOAD,
    ]);
    r.allow_ioctls(&calls.vm_ioctls);
    r
}
