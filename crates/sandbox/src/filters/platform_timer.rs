//! The platform timer: sleeps until the next deadline of the VMM's timed
//! devices and raises their interrupts.

use hv::HostCalls;

use crate::rules::Rules;

pub fn rules(calls: &HostCalls) -> Rules {
    let mut r = Rules::default();
    r.allow(&[libc::SYS_read, libc::SYS_tgkill]);
    r.allow_ioctls(&calls.vm_ioctls);
    r
}
