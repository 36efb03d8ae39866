//! The API server's connection slots: at most
//! [`ServerConfig::max_connections`](crate::server::ServerConfig) clients
//! served at once, and what happens when they are all taken.
//!
//! A full house of clients that connect and then say nothing (a leaked
//! connection pool, a hostile local user) would otherwise lock every other
//! client out of the VM's control socket. So when every slot is taken, the
//! connection that has been idle longest — no byte read or written for at
//! least [`ServerConfig::evict_idle_after`](crate::server::ServerConfig) —
//! is shut down to make room: its client reads an end of file, as after a
//! server-side keep-alive timeout, which HTTP clients (Go's net/http,
//! urllib3, hyper) handle by opening a new connection. Connections in use
//! are never evicted, and without pressure nothing times out.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The slots of one server.
pub(crate) struct Slots {
    max: usize,
    evict_idle_after: Duration,
    epoch: Instant,
    taken: Mutex<Taken>,
}

#[derive(Default)]
struct Taken {
    next_id: u64,
    slots: Vec<Slot>,
}

struct Slot {
    id: u64,
    /// A second handle on the connection, to shut it down from outside.
    stream: UnixStream,
    activity: Arc<Activity>,
}

/// When a connection last moved a byte, in milliseconds since the
/// server's epoch (`u64::MAX` while a request is being answered). Updated
/// by its thread, read by the accept loop.
pub(crate) struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    /// A byte moved: idle from now.
    pub(crate) fn touch(&self) {
        self.last_ms.store(ms_since(self.epoch), Ordering::Relaxed);
    }

    /// A request is being answered (a snapshot of a large guest can take
    /// seconds): never idle until [`Activity::touch`] after the answer.
    pub(crate) fn busy(&self) {
        self.last_ms.store(u64::MAX, Ordering::Relaxed);
    }

    fn idle(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A taken slot; dropping it frees the slot.
pub(crate) struct SlotGuard {
    slots: Arc<Slots>,
    id: u64,
    pub(crate) activity: Arc<Activity>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.lock().slots.retain(|s| s.id != self.id);
    }
}

/// Why a connection got no slot.
pub(crate) enum Refused {
    /// Every slot is taken by a connection in use.
    Full,
    /// The connection could not be duplicated (out of descriptors).
    Io(std::io::Error),
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Slots {
    pub(crate) fn new(max: usize, evict_idle_after: Duration) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            evict_idle_after,
            epoch: Instant::now(),
            taken: Mutex::new(Taken::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Taken> {
        // A slot list stays consistent whatever panicked while holding it.
        self.taken.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for `stream`, evicting the longest-idle connection if
    /// every slot is taken and one has been idle long enough.
    pub(crate) fn take(self: &Arc<Self>, stream: &UnixStream) -> Result<SlotGuard, Refused> {
        let handle = stream.try_clone().map_err(Refused::Io)?;
        let mut taken = self.lock();
        if taken.slots.len() >= self.max {
            let now = ms_since(self.epoch);
            let idlest = taken
                .slots
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.activity.idle(now), s.id))
                .filter(|(_, idle, _)| *idle >= self.evict_idle_after)
                // Idle longest; of equals (millisecond clock), the oldest.
                .max_by_key(|(_, idle, id)| (*idle, std::cmp::Reverse(*id)));
            let Some((i, idle, _)) = idlest else {
                return Err(Refused::Full);
            };
            let evicted = taken.slots.swap_remove(i);
            tracing::info!(
                idle_ms = idle.as_millis() as u64,
                "API connection slots full: closing the connection idle longest"
            );
            // Its thread's read returns end of file and the thread ends.
            let _ = evicted.stream.shutdown(std::net::Shutdown::Both);
        }
        let id = taken.next_id;
        taken.next_id += 1;
        let activity = Arc::new(Activity {
            epoch: self.epoch,
            last_ms: AtomicU64::new(ms_since(self.epoch)),
        });
        taken.slots.push(Slot {
            id,
            stream: handle,
            activity: activity.clone(),
        });
        Ok(SlotGuard {
            slots: self.clone(),
            id,
            activity,
        })
    }
}
