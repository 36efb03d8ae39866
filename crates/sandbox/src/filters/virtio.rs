//! The virtio device workers and the emu irqfd thread. Every worker waits
//! on its epoll set (queue eventfds, backend descriptors, the throttle's
//! timerfd, stop and pause), reads and writes eventfds, and raises
//! interrupts (an irqfd write, or the accelerator's VM ioctls); each
//! device adds its backend's calls.

use hv::HostCalls;

use crate::rules::{arg_eq, Rules};

/// TUNSETIFF: `_IOW('T', 202, int)`.
pub const TUNSETIFF: u64 = 0x4004_54ca;
/// TUNSETOFFLOAD: `_IOW('T', 208, unsigned int)`.
pub const TUNSETOFFLOAD: u64 = 0x4004_54d0;
/// TUNSETVNETHDRSZ: `_IOW('T', 216, int)`.
pub const TUNSETVNETHDRSZ: u64 = 0x4004_54d8;

fn worker(calls: &HostCalls) -> Rules {
    let mut r = Rules::default();
    r.allow(&[
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_ctl,
        libc::SYS_read,
        libc::SYS_timerfd_settime,
        libc::SYS_timerfd_gettime,
    ]);
    r.allow_ioctls(&calls.vm_ioctls);
    r
}

/// virtio-blk: the disk image (reads, writes, flush, discard and write
/// zeroes, its size after a drive swap).
pub fn blk(calls: &HostCalls) -> Rules {
    let mut r = worker(calls);
    r.allow(&[
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_preadv2,
        libc::SYS_pwritev2,
        libc::SYS_lseek,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_fallocate,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
    ]);
    r
}

/// virtio-net: frames to and from the TAP.
pub fn net(calls: &HostCalls) -> Rules {
    let mut r = worker(calls);
    r.allow(&[libc::SYS_readv, libc::SYS_writev]);
    r.allow_ioctls(&[TUNSETOFFLOAD]);
    r
}

/// virtio-vsock: the host side's Unix sockets (listening socket accepts,
/// `<socket>_<port>` connects).
pub fn vsock(calls: &HostCalls) -> Rules {
    let mut r = worker(calls);
    r.allow_if(libc::SYS_socket, vec![arg_eq(0, libc::AF_UNIX as u64)]);
    r.allow(&[
        libc::SYS_connect,
        libc::SYS_accept4,
        libc::SYS_recvfrom,
        libc::SYS_recvmsg,
        libc::SYS_sendto,
        libc::SYS_sendmsg,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_shutdown,
        libc::SYS_getsockopt,
        libc::SYS_setsockopt,
        libc::SYS_fcntl,
    ]);
    r.allow_ioctls(&[libc::FIONBIO]);
    r
}

/// virtio-rng: reads the host's entropy source (an open descriptor).
pub fn rng(calls: &HostCalls) -> Rules {
    worker(calls)
}

/// virtio-console: writes the guest's output to standard output.
pub fn console(calls: &HostCalls) -> Rules {
    let mut r = worker(calls);
    r.allow(&[libc::SYS_writev, libc::SYS_poll, libc::SYS_ppoll]);
    r
}

/// The emu accelerator's irqfd thread: eventfds to guest interrupts.
pub fn irqfd(calls: &HostCalls) -> Rules {
    let mut r = worker(calls);
    r.allow(&[libc::SYS_tgkill]);
    r
}
