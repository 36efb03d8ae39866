//! The API server: accepts connections on its Unix socket, reads requests
//! and writes answers; before the boot it may open the logger's and the
//! metrics' files (PUT /logger, PUT /metrics).

use crate::rules::Rules;

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
    ]);
    r.allow_ioctls(&[libc::FIONBIO]);
    r
}
