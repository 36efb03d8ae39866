//! The console's threads. The standard-input reader reads standard input
//! and hands it to the UART or the virtio console (which may raise an
//! interrupt); the output writer drains their buffered output (`write`
//! and the condition variable's futex are in the base set).

use hv::HostCalls;

use crate::rules::Rules;

pub fn rules(calls: &HostCalls) -> Rules {
    let mut r = Rules::default();
    r.allow(&[
        libc::SYS_read,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_tgkill,
    ]);
    r.allow_ioctls(&calls.vm_ioctls);
    r
}

pub fn console_out() -> Rules {
    let mut r = Rules::default();
    r.allow(&[libc::SYS_writev]);
    r
}
