//! The chroot: `<base>/<exec file name>/<id>/root`, holding the exec file
//! (a hard link, or a copy across filesystems), the device nodes the VMM
//! opens, and `/run` for its API socket; the jailer pivots into it in a
//! mount namespace of its own.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::JailError;
use crate::sys;

/// A device node the jail gets: the host's path (also the jail's) and
/// whether the jail can do without it.
struct DeviceSpec {
    path: &'static str,
    optional: bool,
}

/// What the VMM opens: /dev/kvm (only when the host has it: the emu
/// accelerator needs none), /dev/net/tun for TAP devices, /dev/urandom
/// for virtio-rng and MMDS tokens.
const DEVICES: &[DeviceSpec] = &[
    DeviceSpec {
        path: "/dev/kvm",
        optional: true,
    },
    DeviceSpec {
        path: "/dev/net/tun",
        optional: false,
    },
    DeviceSpec {
        path: "/dev/urandom",
        optional: false,
    },
];

/// A host character device to recreate in the jail.
#[derive(Debug, Clone, Copy)]
pub struct HostDevice {
    pub path: &'static str,
    pub major: u32,
    pub minor: u32,
}

/// The host's device numbers of the nodes the jail gets (read before the
/// host's /dev goes out of reach).
pub fn host_devices() -> Result<Vec<HostDevice>, JailError> {
    let mut out = Vec::new();
    for spec in DEVICES {
        let meta = match fs::metadata(spec.path) {
            Ok(m) => m,
            Err(e) if spec.optional && e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(JailError::HostDevice {
                    path: spec.path,
                    source,
                })
            }
        };
        if !meta.file_type().is_char_device() {
            return Err(JailError::HostDevice {
                path: spec.path,
                source: io::Error::other("not a character device"),
            });
        }
        let (major, minor) = sys::major_minor(meta.rdev());
        out.push(HostDevice {
            path: spec.path,
            major,
            minor,
        });
    }
    Ok(out)
}

/// `<base>/<exec name>/<id>/root`.
pub fn chroot_dir(base: &Path, exec_name: &str, id: &str) -> PathBuf {
    base.join(exec_name).join(id).join("root")
}

/// Makes the chroot directory (nothing happens to what is already there,
/// as with Firecracker's jailer: the user may have linked the kernel and
/// disks in first) and puts the exec file in as `/<exec name>`, replacing
/// a previous one.
pub fn prepare(dir: &Path, exec_file: &Path, exec_name: &str) -> Result<(), JailError> {
    fs::create_dir_all(dir).map_err(|source| JailError::ChrootDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let target = dir.join(exec_name);
    let link_error = |source| JailError::LinkExecFile {
        path: target.clone(),
        source,
    };
    match fs::remove_file(&target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(link_error(e)),
    }
    // A link to the file itself, not to a symbolic link naming a host path.
    let exec_file = fs::canonicalize(exec_file).map_err(link_error)?;
    match fs::hard_link(&exec_file, &target) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => fs::copy(&exec_file, &target)
            .map(|_| ())
            .map_err(link_error),
        Err(e) => Err(link_error(e)),
    }
}

fn pivot_error(step: &'static str) -> impl FnOnce(io::Error) -> JailError {
    move |source| JailError::Pivot { step, source }
}

/// Enters a new mount namespace whose root is `dir`: nothing of the
/// host's tree stays reachable (the old root is detached, not only
/// hidden by a chroot).
pub fn enter(dir: &Path) -> Result<(), JailError> {
    sys::unshare(libc::CLONE_NEWNS).map_err(pivot_error("unshare(CLONE_NEWNS)"))?;
    // Nothing done in this namespace may propagate back to the host's.
    sys::mount(None, Path::new("/"), None, libc::MS_PRIVATE | libc::MS_REC)
        .map_err(pivot_error("making / private"))?;
    // pivot_root wants the new root to be a mount point.
    sys::mount(Some(dir), dir, None, libc::MS_BIND)
        .map_err(pivot_error("bind-mounting the chroot onto itself"))?;
    // The jail's root: no set-user-ID programs; device nodes and the exec
    // file usable even when the base directory's filesystem is mounted
    // nodev or noexec (as /tmp often is).
    sys::mount(
        None,
        dir,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID,
    )
    .map_err(pivot_error("remounting the chroot nosuid"))?;
    std::env::set_current_dir(dir).map_err(pivot_error("chdir to the chroot"))?;
    match fs::create_dir("old_root") {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(pivot_error("mkdir old_root")(e)),
    }
    sys::pivot_root(Path::new("."), Path::new("old_root")).map_err(pivot_error("pivot_root"))?;
    sys::umount2(Path::new("old_root"), libc::MNT_DETACH)
        .map_err(pivot_error("unmounting the old root"))?;
    fs::remove_dir("old_root").map_err(pivot_error("rmdir old_root"))?;
    sys::chroot(Path::new(".")).map_err(pivot_error("chroot"))?;
    std::env::set_current_dir("/").map_err(pivot_error("chdir /"))
}

fn chown(path: &'static str, uid: u32, gid: u32) -> Result<(), JailError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|source| JailError::Chown { path, source })
}

/// Inside the jail: makes the device nodes (replacing any left by an
/// earlier run with the same id), `/run`, and gives them and `/` to the
/// jailed uid/gid.
pub fn populate(devices: &[HostDevice], uid: u32, gid: u32) -> Result<(), JailError> {
    for device in devices {
        let path = Path::new(device.path);
        let node_error = |source| JailError::DeviceNode {
            path: device.path,
            source,
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(node_error)?;
        }
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(node_error(e)),
        }
        sys::mknod_char(
            path,
            libc::S_IRUSR | libc::S_IWUSR,
            device.major,
            device.minor,
        )
        .map_err(node_error)?;
        chown(device.path, uid, gid)?;
    }
    match fs::create_dir("/run") {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(JailError::RunDir(source)),
    }
    chown("/run", uid, gid)?;
    chown("/", uid, gid)
}
