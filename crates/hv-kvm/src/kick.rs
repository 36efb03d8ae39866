//! Kicking a vCPU out of `KVM_RUN`, race-free.
//!
//! # Design
//!
//! A kick must make a `run` that is inside `KVM_RUN` return
//! [`hv::VcpuExit::Interrupted`], and a kick that arrives at any earlier
//! moment (before the first `run`, between two `run`s, while `run` handles
//! an I/O exit, or in the instant before the thread enters the ioctl) must
//! make the *next* `KVM_RUN` return at once. Three pieces do that:
//!
//! 1. `KickState::pending`, an `AtomicBool` the kicker sets *first*. It is
//!    the source of truth: `run` returns `Interrupted` only when it can clear
//!    a set flag, and checks it before every `KVM_RUN`, setting
//!    `kvm_run.immediate_exit = 1` itself when it is set. With
//!    `immediate_exit`, KVM completes a pending I/O or MMIO instruction and
//!    returns `EINTR` without running the guest.
//! 2. The vCPU thread's `pthread_t`, recorded in `KickState::thread` (a
//!    mutex) for the duration of `run` by a [`RunGuard`]. After setting the
//!    flag the kicker takes the mutex and, if a thread is recorded, sends it
//!    the kick signal with `pthread_kill`. Holding the mutex across
//!    `pthread_kill` guarantees the thread is still inside `run` (the guard
//!    clears the record under the same mutex before `run` returns), so the
//!    `pthread_t` is never stale.
//! 3. The kick signal's handler (`SIGRTMIN() + KICK_SIGNAL_OFFSET`, installed
//!    once per process with `SA_RESTART`) does one thing: a volatile write of
//!    1 to `immediate_exit` of the `kvm_run` the *current thread* is running,
//!    found through a thread-local pointer that [`RunGuard`] sets. A signal
//!    that lands inside `KVM_RUN` makes it return `EINTR`; one that lands
//!    just before the ioctl leaves `immediate_exit = 1`, so the ioctl returns
//!    `EINTR` at once. That closes the check-then-enter window.
//!
//! Why no kick is lost: `run` publishes its thread (under the mutex) before
//! it first reads `pending`, and the kicker writes `pending` before it reads
//! the thread (under the same mutex). Either the kicker sees the thread and
//! signals it, or `run` sees the flag. Why none is spurious: a signal can
//! reach a thread late (after `run` returned, or while the thread runs
//! another vCPU); the handler then finds a null or foreign pointer, and a
//! foreign vCPU whose `KVM_RUN` returns `EINTR` without its own flag set
//! clears `immediate_exit` and re-enters the guest.
//!
//! # Safety invariants
//!
//! - The thread-local pointer is non-null only between [`RunGuard::enter`]
//!   and the guard's drop, and during that time it points to the
//!   `immediate_exit` byte of a `kvm_run` mapping owned by a `VcpuFd` that
//!   the running `run` borrows mutably, so the mapping outlives the guard.
//! - The handler is async-signal-safe: it reads a `const`-initialised
//!   thread-local `Cell` (no lazy initialisation, no destructor) and does one
//!   volatile byte store. It allocates nothing, takes no lock, and keeps
//!   `errno` untouched.
//! - The byte is also written by the `run` loop and read by the kernel; a
//!   single-byte store cannot tear and KVM's API documents setting
//!   `immediate_exit` from a signal handler as the intended use.

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use hv::HvError;
use libc::{c_int, c_void, siginfo_t};

/// Offset of the kick signal from `SIGRTMIN()`. Other crates that install
/// real-time signal handlers must stay off [`kick_signal`].
pub const KICK_SIGNAL_OFFSET: c_int = 0;

/// The signal number used to kick vCPU threads.
pub fn kick_signal() -> c_int {
    vmm_sys_util::signal::SIGRTMIN() + KICK_SIGNAL_OFFSET
}

thread_local! {
    /// `immediate_exit` of the `kvm_run` this thread is running, or null.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
    /// Whether this thread has unblocked the kick signal.
    static UNBLOCKED: Cell<bool> = const { Cell::new(false) };
}

extern "C" fn handle_kick(_signum: c_int, _info: *mut siginfo_t, _ctx: *mut c_void) {
    // `try_with` cannot fail for a const-initialised Cell without a
    // destructor; it is used so the handler can never panic.
    let _ = IMMEDIATE_EXIT.try_with(|cell| {
        let immediate_exit = cell.get();
        if !immediate_exit.is_null() {
            // SAFETY: non-null only while a RunGuard of this thread is alive,
            // during which it points into the live kvm_run mapping of the
            // vCPU being run (see the module's safety invariants).
            unsafe { ptr::write_volatile(immediate_exit, 1) };
        }
    });
}

/// Installs the kick signal handler (once per process) and unblocks the
/// signal on the calling thread (once per thread).
pub(crate) fn prepare_thread() -> Result<(), HvError> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(install_handler)
        .clone()
        .map_err(|reason| HvError::Os {
            op: "installing the vCPU kick signal handler",
            source: std::io::Error::other(reason),
        })?;
    if !UNBLOCKED.get() {
        vmm_sys_util::signal::unblock_signal(kick_signal()).map_err(|e| HvError::Os {
            op: "unblocking the vCPU kick signal",
            source: std::io::Error::other(e.to_string()),
        })?;
        UNBLOCKED.set(true);
    }
    Ok(())
}

/// Installs `handle_kick` for [`kick_signal`], refusing to replace a handler
/// someone else installed.
///
/// `sigaction` is used directly rather than
/// `vmm_sys_util::signal::register_signal_handler` because that helper does
/// not set `SA_RESTART`: a kick landing while the vCPU thread is inside a
/// device's blocking syscall (an `IoHandler` writing a file or socket) must
/// not turn into a spurious `EINTR` for the device. `KVM_RUN` itself returns
/// `EINTR` regardless of `SA_RESTART`.
fn install_handler() -> Result<(), String> {
    let signum = kick_signal();
    vmm_sys_util::signal::validate_signal_num(signum)
        .map_err(|e| format!("signal {signum} is not usable: {e}"))?;
    // SAFETY: sigaction is plain old data; all-zero is a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null `act` only queries; `old` is a valid out pointer.
    if unsafe { libc::sigaction(signum, ptr::null(), &mut old) } != 0 {
        return Err(format!(
            "sigaction({signum}) query: {}",
            std::io::Error::last_os_error()
        ));
    }
    let ours = handle_kick as *const () as libc::sighandler_t;
    if old.sa_sigaction != libc::SIG_DFL
        && old.sa_sigaction != libc::SIG_IGN
        && old.sa_sigaction != ours
    {
        return Err(format!(
            "signal {signum} (SIGRTMIN+{KICK_SIGNAL_OFFSET}) already has a handler \
             that is not hv-kvm's"
        ));
    }
    // SAFETY: as above.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = ours;
    act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `act.sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    // SAFETY: `act` is fully initialised and its handler is an
    // async-signal-safe `extern "C"` function with the SA_SIGINFO signature.
    if unsafe { libc::sigaction(signum, &act, ptr::null_mut()) } != 0 {
        return Err(format!(
            "sigaction({signum}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// What a vCPU and its kickers share.
#[derive(Debug, Default)]
pub(crate) struct KickState {
    /// Set by a kick, cleared when `run` returns `Interrupted`.
    pending: AtomicBool,
    /// The thread inside `run`, if any.
    thread: Mutex<Option<libc::pthread_t>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl KickState {
    /// The kicker's side: flag first, then signal the running thread.
    pub fn kick(&self) {
        self.pending.store(true, Ordering::SeqCst);
        let thread = lock(&self.thread);
        if let Some(thread) = *thread {
            // SAFETY: `thread` is recorded only while its owner is inside
            // `run` (RunGuard), and the record is cleared under this mutex
            // before `run` returns, so the thread is alive while we hold the
            // lock. The handler for the signal is installed (prepare_thread
            // runs before a thread is recorded).
            let rc = unsafe { libc::pthread_kill(thread, kick_signal()) };
            if rc != 0 {
                tracing::warn!(
                    error = %std::io::Error::from_raw_os_error(rc),
                    "pthread_kill of a vCPU thread failed; the kick stays pending"
                );
            }
        }
    }

    /// Whether a kick is pending (checked before each KVM_RUN).
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Consumes a pending kick; true if there was one.
    pub fn take(&self) -> bool {
        self.pending.swap(false, Ordering::SeqCst)
    }
}

/// Marks the current thread as running a vCPU for as long as it lives.
pub(crate) struct RunGuard<'a> {
    state: &'a KickState,
    previous: *mut u8,
}

impl<'a> RunGuard<'a> {
    /// Publishes the `immediate_exit` byte to this thread's signal handler,
    /// then this thread to the kickers (in that order: a signal may arrive
    /// as soon as the thread is published).
    ///
    /// # Safety
    ///
    /// `immediate_exit` must point to the `immediate_exit` field of a live
    /// `kvm_run` mapping that stays mapped until the guard is dropped, and
    /// [`prepare_thread`] must have succeeded on this thread.
    pub unsafe fn enter(state: &'a KickState, immediate_exit: *mut u8) -> RunGuard<'a> {
        let previous = IMMEDIATE_EXIT.replace(immediate_exit);
        // SAFETY: pthread_self has no preconditions.
        *lock(&state.thread) = Some(unsafe { libc::pthread_self() });
        RunGuard { state, previous }
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        // Unpublish the thread first: from here on no kicker signals it.
        // A signal already sent may still arrive; the handler then writes
        // through `previous` (null, or an enclosing run's own kvm_run).
        *lock(&self.state.thread) = None;
        IMMEDIATE_EXIT.set(self.previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_writes_only_the_published_byte() {
        prepare_thread().expect("prepare");
        let state = KickState::default();
        let mut byte = 0u8;
        {
            // SAFETY: `byte` outlives the guard.
            let _guard = unsafe { RunGuard::enter(&state, &mut byte) };
            state.kick();
            // The signal is delivered to this thread before pthread_kill
            // returns to it (a thread-directed signal to oneself is handled
            // on the way out of the syscall).
        }
        assert_eq!(byte, 1);
        assert!(state.take());
        assert!(!state.take());
        // Not running: the flag alone records the kick, no signal is sent.
        state.kick();
        assert!(state.pending());
        assert!(IMMEDIATE_EXIT.get().is_null());
    }

    #[test]
    fn kick_signal_is_a_realtime_signal() {
        let sig = kick_signal();
        assert!(sig >= vmm_sys_util::signal::SIGRTMIN());
        assert!(sig <= vmm_sys_util::signal::SIGRTMAX());
    }
}
