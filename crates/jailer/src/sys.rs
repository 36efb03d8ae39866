//! The system calls the jailer makes, as safe functions returning
//! `io::Result`. The only module with `unsafe`.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

fn cstr(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_long(ret: libc::c_long) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// mount(2) with no data; `source` and `fstype` may be absent.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> io::Result<()> {
    let source = source.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype
        .map(|f| CString::new(f).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
        .transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that lives
    // across the call; the data argument is null.
    check(unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            std::ptr::null(),
        )
    })
}

/// umount2(2).
pub fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstr(target)?;
    // SAFETY: `target` is a NUL-terminated string alive across the call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })
}

/// pivot_root(2) (no libc wrapper: the raw system call).
pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let new_root = cstr(new_root)?;
    let put_old = cstr(put_old)?;
    // SAFETY: both arguments are NUL-terminated strings alive across the
    // call; pivot_root takes exactly these two pointers.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
}

/// chroot(2).
pub fn chroot(path: &Path) -> io::Result<()> {
    let path = cstr(path)?;
    // SAFETY: `path` is a NUL-terminated string alive across the call.
    check(unsafe { libc::chroot(path.as_ptr()) })
}

/// mknod(2) of a character device.
pub fn mknod_char(path: &Path, mode: libc::mode_t, major: u32, minor: u32) -> io::Result<()> {
    let path = cstr(path)?;
    // SAFETY: `path` is a NUL-terminated string alive across the call.
    check(unsafe {
        libc::mknod(
            path.as_ptr(),
            libc::S_IFCHR | mode,
            libc::makedev(major, minor),
        )
    })
}

/// The major and minor numbers of a device number.
pub fn major_minor(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
}

/// unshare(2).
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes flags only.
    check(unsafe { libc::unshare(flags) })
}

/// setns(2) on an open namespace file.
pub fn setns(fd: RawFd, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: setns takes a descriptor and flags; a bad descriptor is an
    // error (EBADF), not undefined behaviour.
    check(unsafe { libc::setns(fd, nstype) })
}

/// Who we are after [`fork`].
pub enum Forked {
    Parent { child: libc::pid_t },
    Child,
}

/// fork(2). The jailer is single-threaded when it calls this (it runs
/// before the VMM starts any thread), and so is `ferrovisor fork`
/// ([`crate::process::fork_with_output`] checks), so the child may do
/// anything.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the process has one thread (the jailer starts none and runs
    // before ferrovisor starts any; `process` checks it), so the child's
    // state is consistent.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        child => Ok(Forked::Parent { child }),
    }
}

/// kill(2).
pub fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: a pid and a signal number; bad ones are errors.
    check(unsafe { libc::kill(pid, signal) })
}

/// waitpid(2) for `pid` (-1: any child), retried on EINTR: the pid that
/// ended (0 when `nohang` and none did) and its wait status.
pub fn waitpid(pid: libc::pid_t, nohang: bool) -> io::Result<(libc::pid_t, libc::c_int)> {
    let mut status = 0;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: `status` is a valid int written during the call.
        let ended = unsafe { libc::waitpid(pid, &mut status, flags) };
        if ended != -1 {
            return Ok((ended, status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// setsid(2).
pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments.
    check(unsafe { libc::setsid() })
}

/// dup2(2).
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: descriptors only; bad ones are EBADF.
    check(unsafe { libc::dup2(from, to) })
}

/// setrlimit(2) with the soft and hard limits both `value`.
pub fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit read during the call.
    check(unsafe { libc::setrlimit(resource, &limit) })
}

/// close_range(2): closes descriptors `first` to `last`.
pub fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: closes descriptors only; the jailer holds none in that range
    // that it uses afterwards (it opens its own after this call).
    check_long(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) })
}

/// setgroups(2).
pub fn setgroups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `groups`.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })
}

/// setresgid(2) with all three ids `gid`.
pub fn setresgid(gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: ids only.
    check(unsafe { libc::setresgid(gid, gid, gid) })
}

/// setresuid(2) with all three ids `uid`.
pub fn setresuid(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: ids only.
    check(unsafe { libc::setresuid(uid, uid, uid) })
}

/// prctl(2) with one argument.
pub fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options used here (PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS,
    // PR_SET_KEEPCAPS) take integers only.
    check(unsafe { libc::prctl(option, arg, 0, 0, 0) })
}

/// The process's CPU time so far (all its threads), in microseconds.
pub fn cpu_time_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec written by the call.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// The monotonic clock, in microseconds (Firecracker's start-time base).
pub fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec written by the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// execve(2): replaces the process; returns only on failure.
pub fn execve(path: &CStr, argv: &[CString], env: &[CString]) -> io::Error {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    // SAFETY: `path` and every string are NUL-terminated and alive across
    // the call; both arrays end with a null pointer.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// _exit(2): ends the process without running anything else (the parent
/// half of a fork must not unwind or flush what the child owns too).
pub fn exit_now(status: libc::c_int) -> ! {
    // SAFETY: ends the process.
    unsafe { libc::_exit(status) }
}

/// capget/capset's header (linux/capability.h).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// One of capget/capset's two 32-bit halves.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Empties the calling thread's inheritable capability set (the rest
/// stays as it is).
pub fn clear_inheritable_caps() -> io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `header` and the two-element `data` array are what capget
    // reads and writes for version 3.
    check_long(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    for half in &mut data {
        half.inheritable = 0;
    }
    // SAFETY: as above; capset only reads them.
    check_long(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })
}
