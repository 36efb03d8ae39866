//! A vCPU thread: runs the guest (the accelerator's vCPU ioctls on kvm,
//! none on emu) and serves its port and MMIO accesses: the UART writes to
//! standard output, device registers, interrupts (the accelerator's VM
//! ioctls), and a virtio device's activation on DRIVER_OK (queue
//! eventfds, the worker's epoll set and timers, the TAP's offloads).
//! No files are opened and no sockets made here.

use hv::HostCalls;

use crate::rules::Rules;

pub fn rules(calls: &HostCalls) -> Rules {
    let mut r = Rules::default();
    r.allow(&[
        libc::SYS_read,
        // kvm: the vCPU's binary statistics (its stats fd).
        libc::SYS_pread64,
        libc::SYS_readv,
        libc::SYS_writev,
        // A device's activation (virtio DRIVER_OK) and reset.
        libc::SYS_eventfd2,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_fcntl,
        libc::SYS_timerfd_create,
        libc::SYS_timerfd_settime,
        // Waking another vCPU (kvm: a signal); the kvm vCPU thread
        // installs the kick signal's handler when it starts running.
        libc::SYS_tgkill,
        libc::SYS_rt_sigaction,
    ]);
    r.allow_ioctls(&calls.vcpu_ioctls);
    r.allow_ioctls(&calls.vm_ioctls);
    // virtio-net's activation sets the TAP's offloads.
    r.allow_ioctls(&[crate::filters::virtio::TUNSETOFFLOAD]);
    if calls.vcpu_jit {
        allow_jit(&mut r);
    }
    r
}

/// The emu JIT makes its code pages read-execute once written (W^X:
/// never PROT_WRITE with PROT_EXEC).
pub fn allow_jit(r: &mut Rules) {
    r.allow_if(
        libc::SYS_mprotect,
        vec![crate::rules::arg_eq(
            2,
            (libc::PROT_READ | libc::PROT_EXEC) as u64,
        )],
    );
}
