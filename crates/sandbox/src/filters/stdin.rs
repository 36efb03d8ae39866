//! The console's standard-input reader: reads standard input and hands it
//! to the UART or the virtio console (which may raise an interrupt).

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
