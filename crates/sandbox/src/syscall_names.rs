//! The x86-64 syscall names, for the fault line. Generated from the
//! kernel's `asm/unistd_64.h` (linux-libc-dev): line N of [`NAMES`] is
//! syscall N's name (empty where the number is unused): every `#define
//! __NR_<name> <number>` in number order; regenerate it the same way when
//! the kernel adds syscalls.

/// One name a line, in syscall-number order.
#[rustfmt::skip]
pub(crate) const NAMES: &str = "\
read\nwrite\nopen\nclose\nstat\nfstat\nlstat\npoll\nlseek\nmmap\nmprotect\nmunmap\n\
brk\nrt_sigaction\nrt_sigprocmask\nrt_sigreturn\nioctl\npread64\npwrite64\nreadv\n\
writev\naccess\npipe\nselect\nsched_yield\nmremap\nmsync\nmincore\nmadvise\nshmget\n\
shmat\nshmctl\ndup\ndup2\npause\nnanosleep\ngetitimer\nalarm\nsetitimer\ngetpid\n\
sendfile\nsocket\nconnect\naccept\nsendto\nrecvfrom\nsendmsg\nrecvmsg\nshutdown\n\
bind\nlisten\ngetsockname\ngetpeername\nsocketpair\nsetsockopt\ngetsockopt\nclone\n\
fork\nvfork\nexecve\nexit\nwait4\nkill\nuname\nsemget\nsemop\nsemctl\nshmdt\n\
msgget\nmsgsnd\nmsgrcv\nmsgctl\nfcntl\nflock\nfsync\nfdatasync\ntruncate\n\
ftruncate\ngetdents\ngetcwd\nchdir\nfchdir\nrename\nmkdir\nrmdir\ncreat\nlink\n\
unlink\nsymlink\nreadlink\nchmod\nfchmod\nchown\nfchown\nlchown\numask\n\
gettimeofday\ngetrlimit\ngetrusage\nsysinfo\ntimes\nptrace\ngetuid\nsyslog\ngetgid\n\
setuid\nsetgid\ngeteuid\ngetegid\nsetpgid\ngetppid\ngetpgrp\nsetsid\nsetreuid\n\
setregid\ngetgroups\nsetgroups\nsetresuid\ngetresuid\nsetresgid\ngetresgid\n\
getpgid\nsetfsuid\nsetfsgid\ngetsid\ncapget\ncapset\nrt_sigpending\n\
rt_sigtimedwait\nrt_sigqueueinfo\nrt_sigsuspend\nsigaltstack\nutime\nmknod\nuselib\n\
personality\nustat\nstatfs\nfstatfs\nsysfs\ngetpriority\nsetpriority\n\
sched_setparam\nsched_getparam\nsched_setscheduler\nsched_getscheduler\n\
sched_get_priority_max\nsched_get_priority_min\nsched_rr_get_interval\nmlock\n\
munlock\nmlockall\nmunlockall\nvhangup\nmodify_ldt\npivot_root\n_sysctl\nprctl\n\
arch_prctl\nadjtimex\nsetrlimit\nchroot\nsync\nacct\nsettimeofday\nmount\numount2\n\
swapon\nswapoff\nreboot\nsethostname\nsetdomainname\niopl\nioperm\ncreate_module\n\
init_module\ndelete_module\nget_kernel_syms\nquery_module\nquotactl\nnfsservctl\n\
getpmsg\nputpmsg\nafs_syscall\ntuxcall\nsecurity\ngettid\nreadahead\nsetxattr\n\
lsetxattr\nfsetxattr\ngetxattr\nlgetxattr\nfgetxattr\nlistxattr\nllistxattr\n\
flistxattr\nremovexattr\nlremovexattr\nfremovexattr\ntkill\ntime\nfutex\n\
sched_setaffinity\nsched_getaffinity\nset_thread_area\nio_setup\nio_destroy\n\
io_getevents\nio_submit\nio_cancel\nget_thread_area\nlookup_dcookie\nepoll_create\n\
epoll_ctl_old\nepoll_wait_old\nremap_file_pages\ngetdents64\nset_tid_address\n\
restart_syscall\nsemtimedop\nfadvise64\ntimer_create\ntimer_settime\ntimer_gettime\n\
timer_getoverrun\ntimer_delete\nclock_settime\nclock_gettime\nclock_getres\n\
clock_nanosleep\nexit_group\nepoll_wait\nepoll_ctl\ntgkill\nutimes\nvserver\nmbind\n\
set_mempolicy\nget_mempolicy\nmq_open\nmq_unlink\nmq_timedsend\nmq_timedreceive\n\
mq_notify\nmq_getsetattr\nkexec_load\nwaitid\nadd_key\nrequest_key\nkeyctl\n\
ioprio_set\nioprio_get\ninotify_init\ninotify_add_watch\ninotify_rm_watch\n\
migrate_pages\nopenat\nmkdirat\nmknodat\nfchownat\nfutimesat\nnewfstatat\nunlinkat\n\
renameat\nlinkat\nsymlinkat\nreadlinkat\nfchmodat\nfaccessat\npselect6\nppoll\n\
unshare\nset_robust_list\nget_robust_list\nsplice\ntee\nsync_file_range\nvmsplice\n\
move_pages\nutimensat\nepoll_pwait\nsignalfd\ntimerfd_create\neventfd\nfallocate\n\
timerfd_settime\ntimerfd_gettime\naccept4\nsignalfd4\neventfd2\nepoll_create1\n\
dup3\npipe2\ninotify_init1\npreadv\npwritev\nrt_tgsigqueueinfo\nperf_event_open\n\
recvmmsg\nfanotify_init\nfanotify_mark\nprlimit64\nname_to_handle_at\n\
open_by_handle_at\nclock_adjtime\nsyncfs\nsendmmsg\nsetns\ngetcpu\n\
process_vm_readv\nprocess_vm_writev\nkcmp\nfinit_module\nsched_setattr\n\
sched_getattr\nrenameat2\nseccomp\ngetrandom\nmemfd_create\nkexec_file_load\nbpf\n\
execveat\nuserfaultfd\nmembarrier\nmlock2\ncopy_file_range\npreadv2\npwritev2\n\
pkey_mprotect\npkey_alloc\npkey_free\nstatx\nio_pgetevents\nrseq\n\n\n\n\n\n\n\n\n\n\
\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\
\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\
pidfd_send_signal\nio_uring_setup\nio_uring_enter\nio_uring_register\nopen_tree\n\
move_mount\nfsopen\nfsconfig\nfsmount\nfspick\npidfd_open\nclone3\nclose_range\n\
openat2\npidfd_getfd\nfaccessat2\nprocess_madvise\nepoll_pwait2\nmount_setattr\n\
quotactl_fd\nlandlock_create_ruleset\nlandlock_add_rule\nlandlock_restrict_self\n\
memfd_secret\nprocess_mrelease\nfutex_waitv\nset_mempolicy_home_node\n";

/// The name of syscall `nr`, when it has one.
pub(crate) fn name(nr: i64) -> Option<&'static str> {
    let nr = usize::try_from(nr).ok()?;
    NAMES.split('\n').nth(nr).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_name_their_syscalls() {
        assert_eq!(super::name(libc::SYS_read), Some("read"));
        assert_eq!(super::name(libc::SYS_getppid), Some("getppid"));
        assert_eq!(super::name(libc::SYS_getcwd), Some("getcwd"));
        assert_eq!(super::name(libc::SYS_clone3), Some("clone3"));
        assert_eq!(super::name(libc::SYS_futex_waitv), Some("futex_waitv"));
        assert_eq!(super::name(336), None, "unused number");
        assert_eq!(super::name(-1), None);
        assert_eq!(super::name(100_000), None);
    }
}
