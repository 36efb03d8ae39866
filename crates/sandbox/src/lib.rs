//! Ferrovisor's syscall filters (seccomp-bpf, built with seccompiler).
//!
//! Every thread of the process belongs to a [`ThreadKind`] and runs under
//! that kind's filter, installed by the thread itself before it does
//! anything else (a vCPU thread: before the first guest instruction).
//! A syscall the filter does not allow traps: the SIGSYS handler
//! ([`trap`]) counts the fault, writes `seccomp: thread <kind> made
//! forbidden syscall <nr> (<name>)` to standard error and the log file,
//! writes the count to the metrics file, and ends the process with status
//! 148, as Firecracker.
//!
//! Threads are started with [`spawn`], not `std::thread`: when the filters
//! are on, a launcher thread started by [`init`] (before any filter) starts
//! them, so that a thread never inherits its starter's filter (seccomp
//! filters are inherited and stack up): a virtio worker started while a
//! vCPU thread serves the guest's DRIVER_OK gets the worker's filter, not
//! the vCPU's and the worker's. The launcher's own filter is the union of
//! all kinds'.
//!
//! The filters live in [`filters`], one file per kind. The syscalls an
//! accelerator needs (KVM ioctls) come from the accelerator itself
//! ([`hv::Hypervisor::host_calls`], handed over with [`set_accelerator`]).
//!
//! The process-wide state here (the chosen [`Setting`], the launcher) is a
//! property of the process, like seccomp itself: it is set once by the
//! front end at start.

pub mod filters;
mod kind;
mod panic;
mod policy;
pub mod rules;
mod spawn;
#[cfg(target_arch = "x86_64")]
mod syscall_names;
pub mod trap;

pub use kind::ThreadKind;
pub use policy::{enter, init, set_accelerator, Setting};
pub use spawn::spawn;
pub use trap::{faults, report_faults_to, FaultReport, BAD_SYSCALL_STATUS};

/// The architecture the filters are built for.
#[cfg(target_arch = "x86_64")]
pub const ARCH: seccompiler::TargetArch = seccompiler::TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
pub const ARCH: seccompiler::TargetArch = seccompiler::TargetArch::aarch64;

/// Errors of setting up or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot build the seccomp filter of thread kind {kind}")]
    Build {
        kind: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("cannot install the seccomp filter of thread kind {kind}")]
    Install {
        kind: &'static str,
        #[source]
        source: seccompiler::Error,
    },
    #[error("cannot read the seccomp filter file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("seccomp filter file {path}")]
    Json {
        path: String,
        #[source]
        source: seccompiler::Error,
    },
    #[error("seccomp filter file {path}: no filter for thread kind {kind:?} (it needs one for each of: {all})")]
    MissingKind {
        path: String,
        kind: &'static str,
        all: String,
    },
    #[error("seccomp filter file {path}: {name:?} is not a thread kind (they are: {all})")]
    UnknownKind {
        path: String,
        name: String,
        all: String,
    },
    #[error("cannot install the SIGSYS handler")]
    Handler(#[source] std::io::Error),
    #[error("cannot start the thread launcher")]
    Launcher(#[source] std::io::Error),
}
