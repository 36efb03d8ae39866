//! The signal thread (SIGTERM, SIGINT, SIGHUP: waits on an eventfd, asks
//! the controller to stop, flushes and exits) and the periodic metrics
//! writer (a line to the metrics file or FIFO every minute).

use crate::rules::Rules;

pub fn rules() -> Rules {
    let mut r = Rules::default();
    r.allow(&[libc::SYS_read, libc::SYS_writev]);
    r
}

pub fn metrics() -> Rules {
    let mut r = Rules::default();
    // pread64: sampling the vCPUs' counters (kvm: their binary stats fd).
    r.allow(&[
        libc::SYS_writev,
        libc::SYS_lseek,
        libc::SYS_fsync,
        libc::SYS_pread64,
    ]);
    r
}
