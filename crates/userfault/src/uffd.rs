//! A userfaultfd: created and handshaken by the VMM, registered over guest
//! RAM; the handler copies pages in and reads fault events from it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};

use crate::sys::*;

/// A userfaultfd (non-blocking, close-on-exec).
#[derive(Debug)]
pub struct Uffd {
    file: File,
}

/// What a read of the userfaultfd returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A thread touched a missing page at `address`.
    PageFault { address: u64, write: bool },
    /// An event of another kind (the number of `UFFD_EVENT_*`); only
    /// those registered for arrive, and lazy restore registers none.
    Other(u8),
}

/// Why UFFDIO_COPY did not fill the whole range.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The page is there already (another fault on it was served first).
    #[error("the page is already present")]
    Exists,
    /// The address space is changing; `copied` bytes were copied, retry
    /// the rest.
    #[error("the address space is changing ({copied} bytes copied); try again")]
    Again { copied: u64 },
    /// The faulting process has gone (its memory is no more).
    #[error("the process of the userfaultfd has exited")]
    Gone,
    #[error("UFFDIO_COPY")]
    Other(#[source] io::Error),
}

impl Uffd {
    /// A new userfaultfd with the API handshake done (no optional
    /// features). Faults from the kernel (KVM reading guest memory) are
    /// delivered too (no UFFD_USER_MODE_ONLY). The userfaultfd syscall
    /// first; where it is refused (an unprivileged user with
    /// vm.unprivileged_userfaultfd = 0), /dev/userfaultfd.
    pub fn create() -> io::Result<Uffd> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: userfaultfd(2) takes flags and returns a new descriptor
        // or -1; nothing of ours is touched.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        let file = if fd >= 0 {
            // SAFETY: a descriptor the kernel just gave us, owned by nobody
            // else.
            unsafe { File::from_raw_fd(fd as RawFd) }
        } else {
            let syscall_err = io::Error::last_os_error();
            Self::from_device(flags).map_err(|dev_err| {
                io::Error::new(
                    syscall_err.kind(),
                    format!("userfaultfd: {syscall_err}; /dev/userfaultfd: {dev_err}"),
                )
            })?
        };
        let uffd = Uffd { file };
        uffd.api()?;
        Ok(uffd)
    }

    fn from_device(flags: i32) -> io::Result<File> {
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/userfaultfd")?;
        // SAFETY: USERFAULTFD_IOC_NEW takes the flags by value and returns
        // a new descriptor or -1.
        let fd = unsafe { ioctl_with_val(&dev, USERFAULTFD_IOC_NEW(), flags as libc::c_ulong) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor the kernel just gave us.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn api(&self) -> io::Result<()> {
        let mut api = uffdio_api {
            api: UFFD_API,
            ..Default::default()
        };
        // SAFETY: UFFDIO_API reads and writes a uffdio_api we own.
        if unsafe { ioctl_with_mut_ref(&self.file, UFFDIO_API(), &mut api) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A userfaultfd received from the VMM (already handshaken).
    pub fn from_file(file: File) -> Uffd {
        Uffd { file }
    }

    /// Registers `[start, start + len)` (page-aligned, mapped anonymous
    /// private) for missing-page faults; UFFDIO_COPY must be usable on it.
    pub fn register_missing(&self, start: u64, len: u64) -> io::Result<()> {
        let mut reg = uffdio_register {
            range: uffdio_range { start, len },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes a uffdio_register we
        // own; it changes no memory of ours, only how faults on the range
        // are resolved.
        if unsafe { ioctl_with_mut_ref(&self.file, UFFDIO_REGISTER(), &mut reg) } < 0 {
            return Err(io::Error::last_os_error());
        }
        if reg.ioctls & UFFDIO_COPY_BIT == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "UFFDIO_COPY is not available on the registered range",
            ));
        }
        Ok(())
    }

    /// Fills the missing pages `[dst, dst + len)` of the registered
    /// process with `len` bytes from `src` in ours, and wakes the threads
    /// waiting on them. Returns the bytes copied.
    ///
    /// # Safety
    /// `src..src + len` must be readable memory of this process.
    pub unsafe fn copy(&self, dst: u64, src: *const u8, len: u64) -> Result<u64, CopyError> {
        let mut copy = uffdio_copy {
            dst,
            src: src as u64,
            len,
            mode: 0,
            copy: 0,
        };
        // SAFETY: UFFDIO_COPY reads `len` bytes at `src` (readable, the
        // caller's promise) and writes only into the other process's
        // registered range and into `copy`.
        let rc = unsafe { ioctl_with_mut_ref(&self.file, UFFDIO_COPY(), &mut copy) };
        if rc >= 0 {
            return Ok(copy.copy.max(0) as u64);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EEXIST) => Err(CopyError::Exists),
            Some(libc::EAGAIN) => Err(CopyError::Again {
                copied: copy.copy.max(0) as u64,
            }),
            Some(libc::ESRCH) | Some(libc::ENOENT) => Err(CopyError::Gone),
            _ => Err(CopyError::Other(err)),
        }
    }

    /// Wakes the threads waiting on faults in `[start, start + len)`
    /// (after a copy that found the page there already).
    pub fn wake(&self, start: u64, len: u64) -> io::Result<()> {
        let range = uffdio_range { start, len };
        // SAFETY: UFFDIO_WAKE reads a uffdio_range we own.
        if unsafe { ioctl_with_ref(&self.file, UFFDIO_WAKE(), &range) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next event, or `None` when none is pending.
    pub fn read_event(&self) -> io::Result<Option<Event>> {
        let mut msg = uffd_msg::default();
        let size = std::mem::size_of::<uffd_msg>();
        // SAFETY: read(2) writes at most `size` bytes into `msg`, which
        // is plain data of that size.
        let n = unsafe {
            libc::read(
                self.file.as_raw_fd(),
                (&mut msg as *mut uffd_msg).cast(),
                size,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                io::ErrorKind::Interrupted => Ok(None),
                _ => Err(err),
            };
        }
        if n as usize != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a userfaultfd message of {n} bytes"),
            ));
        }
        Ok(Some(match msg.event {
            UFFD_EVENT_PAGEFAULT => Event::PageFault {
                address: msg.arg[1],
                write: msg.arg[0] & UFFD_PAGEFAULT_FLAG_WRITE != 0,
            },
            other => Event::Other(other),
        }))
    }
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
