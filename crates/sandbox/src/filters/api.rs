//! The API server: accepts connections on its Unix socket, reads requests
//! and writes answers; before the boot it may open the logger's and the
//! metrics' files (PUT /logger, PUT /metrics) and check a TAP's name.

use crate::rules::{arg_eq, Rules};

pub fn rules() -> Rules {
    let mut r = Rules::default();
    r.allow(&[
        libc::SYS_accept4,
        libc::SYS_read,
        libc::SYS_recvfrom,
        libc::SYS_recvmsg,
        libc::SYS_sendto,
        libc::SYS_sendmsg,
        libc::SYS_writev,
        libc::SYS_shutdown,
        libc::SYS_setsockopt,
        libc::SYS_getsockopt,
        libc::SYS_fcntl,
        libc::SYS_poll,
        libc::SYS_ppoll,
        // PUT /logger, PUT /metrics: the files they name.
        libc::SYS_openat,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_lseek,
        // FlushMetrics and GET /vm stats sample the vCPUs' counters (kvm:
        // each vCPU's binary stats fd).
        libc::SYS_pread64,
        // QMP's query-cpus-fast finds the vCPU threads' ids in
        // /proc/self/task.
        libc::SYS_getdents64,
        // PUT /logger, PUT /metrics: the SIGSYS handler's own copy of the
        // new file's descriptor (sandbox::report_faults_to).
        libc::SYS_dup3,
    ]);
    // PUT /network-interfaces checks that the TAP exists: glibc's
    // if_nametoindex asks a Unix datagram socket (SIOCGIFINDEX).
    r.allow_if(libc::SYS_socket, vec![arg_eq(0, libc::AF_UNIX as u64)]);
    // PUT /ferrovisor/migrate connects to the destination (TCP); the
    // controller thread then sends on the connection.
    r.allow_if(libc::SYS_socket, vec![arg_eq(0, libc::AF_INET as u64)]);
    r.allow_if(libc::SYS_socket, vec![arg_eq(0, libc::AF_INET6 as u64)]);
    r.allow(&[libc::SYS_connect]);
    // ... and opens it once (before the boot) to check it is usable.
    use super::virtio::{TUNSETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ};
    r.allow_ioctls(&[
        libc::FIONBIO,
        libc::SIOCGIFINDEX,
        TUNSETIFF,
        TUNSETVNETHDRSZ,
        TUNSETOFFLOAD,
    ]);
    r
}
