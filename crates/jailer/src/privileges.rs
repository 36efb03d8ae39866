//! What the process keeps: no inherited descriptors, resource limits, a
//! session of its own with --daemonize, and finally the given uid/gid
//! with no capabilities and no way to gain any.

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::args::{ResourceLimit, DEFAULT_NO_FILE};
use crate::error::JailError;
use crate::sys;

/// Closes every descriptor above standard error.
pub fn close_inherited() -> Result<(), JailError> {
    match sys::close_range(3, u32::MAX) {
        Ok(()) => Ok(()),
        // Kernels before 5.9: close what /proc lists, one by one.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            let fds: Vec<u32> = std::fs::read_dir("/proc/self/fd")
                .map_err(JailError::CloseFds)?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd > 2)
                .collect();
            for fd in fds {
                // The listing's own descriptor is among them and already
                // closed: EBADF is expected there.
                let _ = sys::close_range(fd, fd);
            }
            Ok(())
        }
        Err(e) => Err(JailError::CloseFds(e)),
    }
}

/// Sets the limits (soft and hard); `no-file` is 2048 unless given.
pub fn set_limits(limits: &[ResourceLimit]) -> Result<(), JailError> {
    let mut all = limits.to_vec();
    if !all.iter().any(|l| matches!(l, ResourceLimit::NoFile(_))) {
        all.push(ResourceLimit::NoFile(DEFAULT_NO_FILE));
    }
    for limit in all {
        let (name, resource, value) = match limit {
            ResourceLimit::FileSize(v) => ("fsize", libc::RLIMIT_FSIZE, v),
            ResourceLimit::NoFile(v) => ("no-file", libc::RLIMIT_NOFILE, v),
        };
        sys::setrlimit(resource, value).map_err(|source| JailError::Rlimit {
            name,
            value,
            source,
        })?;
    }
    Ok(())
}

/// Opens /dev/null for [`daemonize`] (before the host's /dev is gone).
pub fn open_dev_null() -> Result<File, JailError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(JailError::DevNull)
}

/// A new session, standard input and output on /dev/null.
pub fn daemonize(dev_null: File) -> Result<(), JailError> {
    let error = |step| move |source| JailError::Daemonize { step, source };
    sys::setsid().map_err(error("setsid (is the jailer a process group leader?)"))?;
    for fd in 0..=2 {
        sys::dup2(dev_null.as_raw_fd(), fd).map_err(error("dup2 of /dev/null"))?;
    }
    Ok(())
}

/// Becomes `uid`/`gid` with no supplementary groups, an empty capability
/// bounding set, no ambient or inheritable capabilities and no_new_privs
/// (an exec cannot give any back). Setting a non-zero uid clears the permitted and
/// effective capabilities.
pub fn drop_to(uid: u32, gid: u32) -> Result<(), JailError> {
    let error = |step| move |source| JailError::Privileges { step, source };
    sys::setgroups(&[]).map_err(error("setgroups"))?;
    sys::setresgid(gid).map_err(error("setresgid"))?;
    sys::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )
    .map_err(error("clearing ambient capabilities"))?;
    // The bounding set ends at the first number the kernel does not know.
    for cap in 0.. {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && cap > 0 => break,
            Err(e) => return Err(error("dropping the capability bounding set")(e)),
        }
    }
    // With uid 0 kept, an exec would give back the inheritable set.
    sys::clear_inheritable_caps().map_err(error("clearing inheritable capabilities"))?;
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(error("no_new_privs"))?;
    sys::setresuid(uid).map_err(error("setresuid"))
}
