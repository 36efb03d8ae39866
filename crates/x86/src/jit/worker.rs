//! Compiling off the vCPU thread: a hot block's unit ([`Unit`], copies of
//! its ops and the addresses its code embeds) goes to a compiler thread
//! shared by the VM's CPUs, and the CPU interprets the block meanwhile.
//! The machine code comes back to the CPU's [`Inbox`]; the CPU installs it
//! between blocks (`Exec::jit_install`), on its own thread (executable
//! memory is written by the thread that runs it, `code`), if the block is
//! still cached: a block dropped while its unit compiled (a code write,
//! eviction, a flush) is unpinned by the cache and the code is discarded.
//! The CPU hears of its units when the queue runs dry or a batch of them
//! waits ([`serve`]), and copies the batch into executable memory at once.
//!
//! Cranelift takes ~250 µs for a median block on these hosts: on the vCPU
//! thread that was a fifth of a Linux boot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::compile::{machine_code, Unit};
use crate::CpuSignals;

/// Starts a thread that runs its argument (the VMM's, which sandboxes it).
pub type Spawn = dyn Fn(Box<dyn FnOnce() + Send>) -> std::io::Result<()> + Send + Sync;

/// The compiler thread of a VM, started at the first job.
pub struct Compiler {
    spawn: Box<Spawn>,
    jobs: Mutex<Option<Sender<Job>>>,
}

pub(crate) struct Job {
    pub id: u64,
    pub unit: Unit,
    pub to: Arc<Inbox>,
}

/// A unit compiled: its machine code and how many ops call their
/// handler (None: Cranelift failed), and the host time it took.
pub(crate) struct Done {
    pub id: u64,
    pub unit: Unit,
    pub code: Option<(Vec<u8>, usize)>,
    pub us: u64,
}

/// Where one CPU's compiled units wait for it.
pub(crate) struct Inbox {
    done: Mutex<Vec<Done>>,
    ready: AtomicBool,
    signals: Arc<CpuSignals>,
}

impl Inbox {
    pub(crate) fn new(signals: Arc<CpuSignals>) -> Inbox {
        Inbox {
            done: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
            signals,
        }
    }

    /// Whether compiled units are waiting (one load: checked between
    /// blocks while jobs are out).
    #[inline]
    pub(crate) fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The compiled units waiting.
    pub(crate) fn take(&self) -> Vec<Done> {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        self.ready.store(false, Ordering::Release);
        std::mem::take(&mut *done)
    }

    /// Adds a compiled unit, unannounced (see [`serve`]); the number
    /// waiting.
    fn put(&self, d: Done) -> usize {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        done.push(d);
        done.len()
    }

    /// Announces the units waiting: the run loop installs them between
    /// blocks.
    fn tell(&self) {
        self.ready.store(true, Ordering::Release);
        // Ends a chain of compiled blocks, so that the run loop installs
        // the code soon.
        self.signals.jit_ready();
    }
}

impl Compiler {
    /// Whether a VM should compile on a thread of its own:
    /// `FERROVISOR_JIT_ASYNC=0` keeps compiling on the vCPU threads (to
    /// measure one against the other); on by default.
    pub fn wanted() -> bool {
        std::env::var("FERROVISOR_JIT_ASYNC").as_deref() != Ok("0")
    }

    /// A compiler whose thread `spawn` starts at the first job.
    pub fn new(spawn: Box<Spawn>) -> Arc<Compiler> {
        Arc::new(Compiler {
            spawn,
            jobs: Mutex::new(None),
        })
    }

    /// Queues `job`; gives it back when no compiler thread can run.
    pub(crate) fn send(&self, job: Job) -> Result<(), Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let tx = match &mut *jobs {
            Some(tx) => tx,
            none => {
                let (tx, rx) = channel();
                if (self.spawn)(Box::new(move || serve(rx))).is_err() {
                    return Err(job);
                }
                none.insert(tx)
            }
        };
        tx.send(job).map_err(|e| {
            // The thread ended (it does not, but for a panic outside
            // Cranelift): the next job starts another.
            *jobs = None;
            e.0
        })
    }
}

/// Units a CPU may have waiting unannounced while more jobs are queued:
/// it installs them in one copy (one pair of protection changes, whose
/// TLB shootdowns interrupt the compiler's core: ~15 us each on these
/// nested hosts), at most this many compiles (~0.4 ms each) late.
const BATCH: usize = 8;

/// The compiler thread: compiles jobs in order until every CPU and the
/// VM dropped their handles. A CPU is told its units are ready when the
/// queue runs dry or [`BATCH`] of them wait, so that a burst of hot
/// blocks (a new program, a module load) is installed in a few copies.
fn serve(rx: Receiver<Job>) {
    // CPUs with units waiting unannounced.
    let mut quiet: Vec<Arc<Inbox>> = Vec::new();
    let mut next = rx.recv().ok();
    while let Some(job) = next {
        let started = Instant::now();
        // A Cranelift panic fails this unit only (the block stays with
        // the interpreter).
        let code =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| machine_code(&job.unit)))
                .ok()
                .flatten();
        let done = Done {
            id: job.id,
            unit: job.unit,
            code,
            us: started.elapsed().as_micros() as u64,
        };
        next = rx.try_recv().ok();
        let dry = next.is_none();
        if job.to.put(done) >= BATCH || dry {
            job.to.tell();
        } else if !quiet.iter().any(|q| Arc::ptr_eq(q, &job.to)) {
            quiet.push(job.to.clone());
        }
        if dry {
            for q in quiet.drain(..) {
                q.tell();
            }
            next = rx.recv().ok();
        }
    }
}
