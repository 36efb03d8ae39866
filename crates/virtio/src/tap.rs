//! A host TAP device as the backend of a virtio-net device.
//!
//! [`Tap::open`] attaches to an existing TAP interface (it never creates
//! one: `ip tuntap add dev NAME mode tap` does) through /dev/net/tun with
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, nonblocking. Every frame read or
//! written starts with a 12-byte `virtio_net_hdr_v1` (TUNSETVNETHDRSZ), the
//! header a VERSION_1 virtio-net driver uses, so frames go between the
//! guest's buffers and the TAP without translation. The offloads the host
//! kernel may hand us (TUNSETOFFLOAD) start at none.
//!
//! A live migration to another process on this host hands the interface
//! over ([`TapHandle::release`]: one process at a time may attach to a
//! single-queue TAP) and, if the migration fails, takes it back
//! ([`TapHandle::retake`]) on the same descriptor number, so the device's
//! worker goes on with it (it registers the descriptor again when the VM
//! resumes).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// The virtio_net_hdr_v1 the TAP puts before (and expects before) each
/// frame.
pub const VNET_HDR_LEN: usize = 12;

/// Why a TAP device could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("TAP device name {0:?} is empty or longer than 15 bytes")]
    BadName(String),
    #[error("TAP device {0:?} does not exist (create it with 'ip tuntap add dev {0} mode tap')")]
    Missing(String),
    #[error("cannot open /dev/net/tun for TAP device {name:?}")]
    OpenTun {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("TAP device {0:?} is in use by another process")]
    Busy(String),
    #[error("{0:?} is not a (single-queue) TAP device")]
    NotTap(String),
    #[error("permission denied attaching to TAP device {0:?}")]
    Permission(String),
    #[error("cannot attach to TAP device {name:?} ({what})")]
    Ioctl {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// `struct ifreq` with the flags member of its union (40 bytes).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An attached TAP interface (detached when dropped).
#[derive(Debug)]
pub struct Tap {
    file: Arc<File>,
    name: String,
    /// The offloads last set (a retaken interface gets them again).
    offload: Arc<AtomicU32>,
}

impl Tap {
    /// Attaches to the existing TAP interface `name`.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', '\0']) {
            return Err(TapError::BadName(name.to_string()));
        }
        // TUNSETIFF would create a missing interface (with CAP_NET_ADMIN):
        // a transient TAP nobody configured is never what was meant.
        let cname = CString::new(name).map_err(|_| TapError::BadName(name.to_string()))?;
        // SAFETY: `cname` is a valid NUL-terminated string that outlives the
        // call; if_nametoindex only reads it.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(TapError::Missing(name.to_string()));
        }
        Tap::attach(name)
    }

    /// Attaches to `name` (checked by the caller), as [`Tap::open`].
    fn attach(name: &str) -> Result<Tap, TapError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|source| TapError::OpenTun {
                name: name.to_string(),
                source,
            })?;
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` has its
        // layout and size (40 bytes) and lives across the call; the fd is
        // the open /dev/net/tun.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if ret < 0 {
            let error = io::Error::last_os_error();
            return Err(match error.raw_os_error() {
                Some(libc::EBUSY) => TapError::Busy(name.to_string()),
                Some(libc::EINVAL) => TapError::NotTap(name.to_string()),
                Some(libc::EPERM) | Some(libc::EACCES) => TapError::Permission(name.to_string()),
                _ => TapError::Ioctl {
                    name: name.to_string(),
                    what: "TUNSETIFF",
                    source: error,
                },
            });
        }
        let tap = Tap {
            file: Arc::new(file),
            name: name.to_string(),
            offload: Arc::default(),
        };
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which
        // points at `hdr_len`, alive across the call.
        let ret = unsafe { libc::ioctl(tap.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        tap.check(ret, "TUNSETVNETHDRSZ")?;
        tap.set_offload(0)?;
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The handle that hands the interface over and takes it back.
    pub fn handle(&self) -> TapHandle {
        TapHandle {
            file: self.file.clone(),
            name: self.name.clone(),
            offload: self.offload.clone(),
        }
    }

    /// Which offloads (TUN_F_*) the kernel may use in frames it hands us.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        self.offload.store(flags, Ordering::Relaxed);
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is
        // passed.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        self.check(ret, "TUNSETOFFLOAD")
    }

    fn check(&self, ret: libc::c_int, what: &'static str) -> Result<(), TapError> {
        if ret < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// Hands a device's TAP interface to another process and takes it back
/// (see the module doc). Only while the device's worker is parked.
#[derive(Debug, Clone)]
pub struct TapHandle {
    file: Arc<File>,
    name: String,
    offload: Arc<AtomicU32>,
}

impl TapHandle {
    /// Detaches from the interface: the device's descriptor now refers to
    /// an idle eventfd (never readable; nothing is sent while parked).
    pub fn release(&self) -> io::Result<()> {
        let idle = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK)?;
        self.replace_with(idle.as_raw_fd())
    }

    /// Attaches to the interface again after [`TapHandle::release`], with
    /// the offloads it had.
    pub fn retake(&self) -> Result<(), TapError> {
        let tap = Tap::attach(&self.name)?;
        tap.set_offload(self.offload.load(Ordering::Relaxed))?;
        self.replace_with(tap.file.as_raw_fd())
            .map_err(|source| TapError::Ioctl {
                name: self.name.clone(),
                what: "dup3",
                source,
            })
    }

    /// Makes the device's descriptor number refer to what `fd` refers to
    /// (the previous file is closed).
    fn replace_with(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: both descriptors are open (`fd` borrowed from the caller,
        // the target owned by `self.file`, which keeps its number); dup3
        // only changes what the target number refers to.
        let r = unsafe { libc::dup3(fd, self.file.as_raw_fd(), libc::O_CLOEXEC) };
        match r {
            -1 => Err(io::Error::last_os_error()),
            _ => Ok(()),
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl crate::net::Backend for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.file).read(buf)
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        (&*self.file).write(frame)
    }
    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        Tap::set_offload(self, flags).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_and_missing_names_are_clear_errors() {
        for bad in ["", "a-name-that-is-too-long", "a/b"] {
            let err = Tap::open(bad).unwrap_err();
            assert!(matches!(err, TapError::BadName(_)), "{bad}: {err}");
        }
        let err = Tap::open("fvnosuchtap0").unwrap_err();
        assert!(matches!(err, TapError::Missing(_)), "{err}");
        assert!(err.to_string().contains("fvnosuchtap0"));
        // The loopback interface exists but is no TAP.
        if std::path::Path::new("/dev/net/tun").exists() {
            let err = Tap::open("lo").unwrap_err();
            assert!(
                matches!(
                    err,
                    TapError::NotTap(_) | TapError::Permission(_) | TapError::OpenTun { .. }
                ),
                "{err}"
            );
        }
    }
}
