//! Namespaces besides the mount one (chroot.rs): the network namespace
//! `--netns` names and the new pid namespace of `--new-pid-ns`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::JailError;
use crate::sys;

/// Opens a network namespace handle (e.g. /var/run/netns/NAME) before the
/// host's tree goes out of reach.
pub fn open_netns(path: &Path) -> Result<File, JailError> {
    File::open(path).map_err(|source| JailError::Netns {
        path: path.to_path_buf(),
        source,
    })
}

/// Joins the network namespace (the handle is closed afterwards).
pub fn join_netns(handle: File, path: &Path) -> Result<(), JailError> {
    sys::setns(handle.as_raw_fd(), libc::CLONE_NEWNET).map_err(|source| JailError::Netns {
        path: path.to_path_buf(),
        source,
    })
}

/// Forks into a new pid namespace: the child (pid 1 there) returns and
/// goes on to exec the VMM; the parent writes the child's pid (as the
/// host sees it) to `pid_file` and ends with status 0, as Firecracker's
/// jailer does.
pub fn enter_new_pid_ns(pid_file: &Path) -> Result<(), JailError> {
    let error = |step| move |source| JailError::PidNs { step, source };
    sys::unshare(libc::CLONE_NEWPID).map_err(error("unshare(CLONE_NEWPID)"))?;
    match sys::fork().map_err(error("fork"))? {
        sys::Forked::Child => Ok(()),
        sys::Forked::Parent { child } => {
            let status = match std::fs::write(pid_file, format!("{child}\n")) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!(
                        "jailer: new pid namespace: writing {}: {e} (the VMM runs as pid {child})",
                        pid_file.display()
                    );
                    1
                }
            };
            sys::exit_now(status)
        }
    }
}
