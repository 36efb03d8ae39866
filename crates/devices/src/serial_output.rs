//! Console output that never blocks the guest: the UART (or the virtio
//! console) writes into a bounded buffer, and a writer thread of its own
//! drains it into the host's output (standard output, a file).
//!
//! A vCPU that transmits a byte therefore never waits for the host: when
//! nobody reads the pipe behind standard output, the writer thread blocks,
//! not the vCPU holding the UART, and the VMM can still end the VM.
//!
//! When the buffer is full, new bytes are **refused** (the oldest are
//! kept, so what reaches the host is a prefix of each burst, never a
//! splice): the write fails with `WouldBlock`, which the UART counts as
//! lost (`missed_write_count`), and [`OutputStats::lost_bytes`] counts
//! every refused byte. A write error of the host's output (a closed pipe)
//! discards what was buffered, counted as lost too; after a broken pipe
//! (the reader went away) nothing more is written.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::ratelimit::RateLimiter;

/// The default bound of the buffer: far more than a Linux boot prints, a
/// bounded cost when nobody reads.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// Most bytes the writer thread hands the host's output at once.
const WRITE_CHUNK: usize = 64 << 10;

/// What the output did, readable while it runs.
#[derive(Debug, Default)]
pub struct OutputStats {
    written: AtomicU64,
    lost: AtomicU64,
}

impl OutputStats {
    /// Bytes that reached the host's output.
    pub fn written_bytes(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Bytes refused because the buffer was full, or discarded because
    /// the host's output failed.
    pub fn lost_bytes(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct State {
    bytes: VecDeque<u8>,
    /// The writer thread is writing bytes it took out of `bytes`.
    writing: bool,
    /// Every [`BufferedOutput`] was dropped: the thread ends once empty.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Bytes arrived or the output closed (the writer thread waits).
    filled: Condvar,
    /// The buffer became empty (a drain waits).
    emptied: Condvar,
    capacity: usize,
    stats: Arc<OutputStats>,
    log_limit: RateLimiter,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writing end, given to the devices (clone it for each). Dropping
/// the last one lets the writer thread end once the buffer is empty.
pub struct BufferedOutput {
    shared: Arc<Shared>,
    /// Counts the live writers; the last one closes the buffer.
    _writers: Arc<WriterToken>,
}

struct WriterToken(Arc<Shared>);

impl Drop for WriterToken {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.filled.notify_all();
    }
}

impl Clone for BufferedOutput {
    fn clone(&self) -> Self {
        BufferedOutput {
            shared: self.shared.clone(),
            _writers: self._writers.clone(),
        }
    }
}

impl Write for BufferedOutput {
    /// Takes what fits; refuses (`WouldBlock`) when nothing does.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut state = self.shared.lock();
        let room = self.shared.capacity - state.bytes.len();
        let taken = room.min(buf.len());
        state.bytes.extend(&buf[..taken]);
        drop(state);
        if taken > 0 {
            self.shared.filled.notify_one();
            return Ok(taken);
        }
        self.shared
            .stats
            .lost
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        Err(ErrorKind::WouldBlock.into())
    }

    /// The writer thread flushes; the guest never waits for the host.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits for the buffer to reach the host's output.
#[derive(Clone)]
pub struct OutputDrain {
    shared: Arc<Shared>,
}

impl OutputDrain {
    /// Waits until everything buffered was written, or `timeout` passed
    /// (the host's output is blocked); true when all was written.
    pub fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !state.bytes.is_empty() || state.writing {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .emptied
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    pub fn stats(&self) -> Arc<OutputStats> {
        self.shared.stats.clone()
    }
}

/// Starts the writer thread (named `name`) draining a buffer of
/// `capacity` bytes into `out`.
pub fn spawn(
    name: &str,
    mut out: Box<dyn Write + Send>,
    capacity: usize,
) -> std::io::Result<(BufferedOutput, OutputDrain)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        filled: Condvar::new(),
        emptied: Condvar::new(),
        capacity: capacity.max(1),
        stats: Arc::default(),
        log_limit: RateLimiter::default(),
    });
    let thread_shared = shared.clone();
    sandbox::spawn(
        sandbox::ThreadKind::ConsoleOut,
        std::thread::Builder::new().name(name.into()),
        move || write_loop(&thread_shared, &mut *out),
    )?;
    Ok((
        BufferedOutput {
            shared: shared.clone(),
            _writers: Arc::new(WriterToken(shared.clone())),
        },
        OutputDrain { shared },
    ))
}

/// The writer thread: takes what is buffered and writes it, until the
/// buffer is closed and empty.
fn write_loop(shared: &Shared, out: &mut dyn Write) {
    let mut chunk = Vec::with_capacity(WRITE_CHUNK);
    // The reader of the pipe behind the output went away (`| head`): a
    // closed pipe never reopens, so later output is dropped unwritten.
    let mut reader_gone = false;
    loop {
        let mut state = shared.lock();
        state.writing = false;
        while state.bytes.is_empty() {
            shared.emptied.notify_all();
            if state.closed {
                return;
            }
            state = shared.filled.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        let n = state.bytes.len().min(WRITE_CHUNK);
        chunk.clear();
        chunk.extend(state.bytes.drain(..n));
        state.writing = true;
        drop(state);
        if reader_gone {
            shared.stats.lost.fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        match out.write_all(&chunk).and_then(|()| out.flush()) {
            Ok(()) => {
                shared.stats.written.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                shared.stats.lost.fetch_add(n as u64, Ordering::Relaxed);
                reader_gone = true;
                tracing::warn!(
                    "console output: its reader closed the pipe; later output is dropped"
                );
            }
            Err(e) => {
                // The host's output is gone (closed pipe, full disk):
                // this chunk is lost; later bytes get their own try.
                shared.stats.lost.fetch_add(n as u64, Ordering::Relaxed);
                if shared.log_limit.allow() {
                    tracing::warn!(error = %e, bytes = n, "console output failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Open yet, and what was written.
    type GateState = Mutex<(bool, Vec<u8>)>;

    /// A host output that blocks until released, then records.
    #[derive(Clone, Default)]
    struct Gate(Arc<(GateState, Condvar)>);

    impl Gate {
        fn open(&self) {
            self.0 .0.lock().unwrap().0 = true;
            self.0 .1.notify_all();
        }
        fn written(&self) -> Vec<u8> {
            self.0 .0.lock().unwrap().1.clone()
        }
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut g = self.0 .0.lock().unwrap();
            while !g.0 {
                g = self.0 .1.wait(g).unwrap();
            }
            g.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_output_never_blocks_the_writer_and_counts_what_it_refuses() {
        let gate = Gate::default();
        let (mut w, drain) = spawn("test-out", Box::new(gate.clone()), 16).unwrap();
        let start = Instant::now();
        // The thread may hold a first chunk while blocked; the buffer
        // then fills and refuses the rest, without ever waiting.
        let mut accepted = 0;
        for _ in 0..1000 {
            if w.write_all(b"0123456789").is_ok() {
                accepted += 10;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(2));
        let stats = drain.stats();
        assert!(
            stats.lost_bytes() >= 10_000 - 16 - 16 - 10,
            "{}",
            stats.lost_bytes()
        );
        assert!(
            !drain.drain(Duration::from_millis(50)),
            "the output is blocked"
        );
        gate.open();
        assert!(drain.drain(Duration::from_secs(5)));
        let written = gate.written();
        assert_eq!(stats.written_bytes(), written.len() as u64);
        assert_eq!(stats.written_bytes() + stats.lost_bytes(), 10_000);
        assert!(written.len() >= accepted);
        // What arrived is whole bursts, in order (refused bytes are the
        // newest).
        assert!(written.starts_with(b"0123456789"));
    }

    #[test]
    fn everything_arrives_in_order_when_the_output_keeps_up() {
        let gate = Gate::default();
        gate.open();
        let (mut w, drain) = spawn("test-out", Box::new(gate.clone()), DEFAULT_CAPACITY).unwrap();
        let mut expected = Vec::new();
        for i in 0..2000u32 {
            let line = format!("line {i}\n");
            w.write_all(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        assert!(drain.drain(Duration::from_secs(5)));
        assert_eq!(gate.written(), expected);
        assert_eq!(drain.stats().lost_bytes(), 0);
    }

    /// A pipe whose reader is gone: every write fails, and is counted.
    #[derive(Clone, Default)]
    struct ClosedPipe(Arc<AtomicU64>);

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn after_a_broken_pipe_nothing_more_is_written() {
        let pipe = ClosedPipe::default();
        let (mut w, drain) = spawn("test-out", Box::new(pipe.clone()), 64).unwrap();
        for _ in 0..20 {
            w.write_all(b"line\n").unwrap();
            assert!(drain.drain(Duration::from_secs(5)));
        }
        assert_eq!(pipe.0.load(Ordering::Relaxed), 1, "one try, then none");
        assert_eq!(drain.stats().lost_bytes(), 100);
        assert_eq!(drain.stats().written_bytes(), 0);
    }

    #[test]
    fn the_thread_ends_when_the_last_writer_goes() {
        let gate = Gate::default();
        gate.open();
        let (w, drain) = spawn("test-out", Box::new(gate.clone()), 64).unwrap();
        let mut w2 = w.clone();
        drop(w);
        w2.write_all(b"last words").unwrap();
        drop(w2);
        assert!(drain.drain(Duration::from_secs(5)));
        assert_eq!(gate.written(), b"last words");
        // The thread saw the close: its `Shared` is only ours now.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&drain.shared) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(Arc::strong_count(&drain.shared), 1);
    }
}
