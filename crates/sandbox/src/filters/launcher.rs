//! The launcher starts every thread, which inherits its filter: it allows
//! what any kind allows (whatever the accelerator: any ioctl), and what
//! starting a thread takes (clone, the new thread's robust list, rseq and
//! name, and the new thread's own filter: prctl(NO_NEW_PRIVS), seccomp).

use hv::HostCalls;

use crate::rules::Rules;
use crate::ThreadKind;

pub fn rules(calls: &HostCalls) -> Rules {
    let mut r = Rules::default();
    for kind in ThreadKind::ALL {
        if kind != ThreadKind::Launcher {
            r.merge(&super::rules(kind, calls));
        }
    }
    // The launcher's filter is made before the accelerator is known (and
    // every thread inherits it): it lets a JIT vCPU's call through; the
    // vCPU thread's own filter decides.
    super::vcpu::allow_jit(&mut r);
    r.allow(&[
        libc::SYS_ioctl,
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_prctl,
        // Each new thread installs its own filter.
        libc::SYS_seccomp,
    ]);
    r
}
