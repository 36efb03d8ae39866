//! The jailer's one error type: each variant names the step that failed.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("the exec file {path}")]
    ExecFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the exec file {0} is not a regular file")]
    ExecFileKind(PathBuf),
    #[error("the exec file {0} is named jailer: exec the VMM under another name (ferrovisor, firecracker)")]
    ExecFileName(PathBuf),
    #[error("closing inherited file descriptors")]
    CloseFds(#[source] io::Error),
    #[error("creating the chroot directory {path}")]
    ChrootDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("putting the exec file into the chroot as {path}")]
    LinkExecFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("setting resource limit {name}={value}")]
    Rlimit {
        name: &'static str,
        value: u64,
        #[source]
        source: io::Error,
    },
    #[error("cgroup: {0}")]
    Cgroup(String),
    #[error("cgroup: {what} {path}")]
    CgroupIo {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("joining the network namespace {path}")]
    Netns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening /dev/null (for --daemonize)")]
    DevNull(#[source] io::Error),
    #[error("the host's {path} (to make the jail's device node)")]
    HostDevice {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("entering the jail: {step}")]
    Pivot {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("making the device node {path} in the jail")]
    DeviceNode {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("making /run in the jail (for the API socket)")]
    RunDir(#[source] io::Error),
    #[error("giving {path} to the jailed uid/gid")]
    Chown {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("daemonizing: {step}")]
    Daemonize {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("new pid namespace: {step}")]
    PidNs {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("dropping privileges: {step}")]
    Privileges {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "executing {path} in the jail: it is dynamically linked and its loader is not in the \
         chroot: use a statically linked VMM (scripts/build-static) or link its shared \
         libraries into the chroot"
    )]
    ExecLoader { path: String },
    #[error("executing {path} in the jail")]
    Exec {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The error and its causes on one line.
pub fn error_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}
