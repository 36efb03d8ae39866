//! The filter of each thread kind, one file per kind. [`base`] is what
//! every thread needs (memory, locks, time, signals, ending); each kind
//! adds what its work needs, with argument conditions where the syscall
//! is broad (ioctl request numbers, socket families, no PROT_EXEC).
//!
//! The syscall sets were found by running the end-to-end guests (Linux
//! with every device on emu, tiny guests on kvm, the API, signals and
//! metrics) under `strace -f -ff`, then with the filters on (a missing
//! syscall shows as `seccomp: thread <kind> made forbidden syscall <nr>`).

mod api;
pub mod base;
mod launcher;
mod platform_timer;
mod signals;
mod stdin;
mod vcpu;
mod virtio;
mod vmm;

use hv::HostCalls;

use crate::rules::Rules;
use crate::ThreadKind;

/// The rules of `kind`, with the accelerator's `calls`.
pub fn rules(kind: ThreadKind, calls: &HostCalls) -> Rules {
    let mut rules = base::rules();
    let own = match kind {
        ThreadKind::Vmm => vmm::rules(calls),
        ThreadKind::Api => api::rules(),
        ThreadKind::Vcpu => vcpu::rules(calls),
        ThreadKind::VirtioBlk => virtio::blk(calls),
        ThreadKind::VirtioNet => virtio::net(calls),
        ThreadKind::VirtioVsock => virtio::vsock(calls),
        ThreadKind::VirtioRng => virtio::rng(calls),
        ThreadKind::VirtioConsole => virtio::console(calls),
        ThreadKind::Stdin => stdin::rules(calls),
        ThreadKind::ConsoleOut => stdin::console_out(),
        ThreadKind::PlatformTimer => platform_timer::rules(calls),
        ThreadKind::Irqfd => virtio::irqfd(calls),
        // Memory and locks (the base): it reads copies of guest code and
        // writes machine code into its own heap, never a file or a
        // mapping that executes.
        ThreadKind::JitCompiler => Rules::default(),
        ThreadKind::Signals => signals::rules(),
        ThreadKind::Metrics => signals::metrics(),
        ThreadKind::Launcher => launcher::rules(calls),
    };
    rules.merge(&own);
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kvm_like() -> HostCalls {
        HostCalls {
            vcpu_ioctls: vec![0xae80],
            vm_ioctls: vec![0x4008ae61],
            vcpu_jit: false,
        }
    }

    #[test]
    fn executable_pages_only_for_a_jit_vcpu_and_never_unconditionally() {
        let mut jit = kvm_like();
        jit.vcpu_jit = true;
        for kind in ThreadKind::ALL {
            let plain = rules(kind, &kvm_like());
            let with_jit = rules(kind, &jit);
            assert!(!plain.always(libc::SYS_mprotect), "{kind:?}");
            assert!(!with_jit.always(libc::SYS_mprotect), "{kind:?}");
            with_jit.compile().expect("the filter compiles");
        }
    }

    #[test]
    fn every_filter_compiles() {
        for kind in ThreadKind::ALL {
            for calls in [HostCalls::default(), kvm_like()] {
                let programs = rules(kind, &calls).compile().unwrap();
                assert!(programs.iter().all(|p| !p.is_empty()), "{kind:?}");
            }
        }
    }

    #[test]
    fn the_test_hook_syscall_is_forbidden_everywhere() {
        for kind in ThreadKind::ALL {
            assert!(
                !rules(kind, &kvm_like()).mentions(crate::policy::TEST_FAULT_SYSCALL),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn the_launcher_allows_all_that_any_kind_allows() {
        let launcher = rules(ThreadKind::Launcher, &HostCalls::default());
        for kind in ThreadKind::ALL {
            for nr in 0..460 {
                if rules(kind, &kvm_like()).mentions(nr) {
                    assert!(
                        launcher.mentions(nr),
                        "{kind:?} allows {nr}, the launcher not"
                    );
                }
                if rules(kind, &kvm_like()).always(nr) {
                    assert!(
                        launcher.always(nr),
                        "{kind:?} allows {nr} always, the launcher not"
                    );
                }
            }
        }
        // Whatever the accelerator, its ioctls pass the launcher's filter.
        assert!(launcher.always(libc::SYS_ioctl));
    }

    #[test]
    fn only_the_launcher_starts_threads() {
        for kind in ThreadKind::ALL {
            let r = rules(kind, &kvm_like());
            let starts = r.mentions(libc::SYS_clone) || r.mentions(libc::SYS_clone3);
            assert_eq!(starts, kind == ThreadKind::Launcher, "{kind:?}");
        }
    }

    #[test]
    fn the_uffd_watcher_runs_under_vmm_and_nobody_creates_a_userfaultfd() {
        let vmm = rules(ThreadKind::Vmm, &kvm_like());
        for nr in [
            libc::SYS_poll,
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_close,
            libc::SYS_futex,
            libc::SYS_exit_group,
        ] {
            assert!(vmm.always(nr), "the vmm filter lacks {nr}");
        }
        // The userfaultfd is made before any filter is on (the main
        // thread building a restored machine); a filtered thread that
        // tried would trap.
        for kind in ThreadKind::ALL {
            assert!(
                !rules(kind, &kvm_like()).mentions(libc::SYS_userfaultfd),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn sockets_are_unix_only_and_vcpus_have_no_files() {
        for kind in ThreadKind::ALL {
            let r = rules(kind, &kvm_like());
            assert!(!r.always(libc::SYS_socket), "{kind:?}");
        }
        let vcpu = rules(ThreadKind::Vcpu, &kvm_like());
        assert!(!vcpu.mentions(libc::SYS_openat));
        assert!(!vcpu.mentions(libc::SYS_socket));
        assert!(!vcpu.always(libc::SYS_ioctl));
        assert!(!vcpu.always(libc::SYS_mmap));
    }
}
