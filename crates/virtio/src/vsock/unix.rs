//! The host side of virtio-vsock over Unix sockets, with Firecracker's
//! conventions:
//!
//! - host to guest: a client connects to the socket at `PATH` and writes
//!   `CONNECT <port>\n`; the guest gets a REQUEST for `<port>`, and once it
//!   accepts (RESPONSE) the client reads `OK <host_port>\n`, then the bytes
//!   flow both ways. A refused connection (RST) closes the client.
//! - guest to host: a REQUEST for host port `P` connects to the Unix socket
//!   `PATH_P`; a refused or missing one answers the guest with a RST.
//!
//! The [`Muxer`] owns the listener, the clients in their handshake and the
//! connections ([`super::conn`]) with their host sockets; it turns the
//! guest's packets and the sockets' readiness into packets for the guest.
//! Everything is nonblocking, on the device's worker thread.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EventSet;

use super::conn::{rst_for, Connection};
use super::packet::{self, Header, Op, HEADER_LEN};

/// Most connections at once; more REQUESTs get a RST.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most clients in their handshake; more are closed at once.
pub const MAX_HANDSHAKES: usize = 64;
/// Longest handshake line (`CONNECT 4294967295\n` is 19 bytes).
const MAX_HANDSHAKE_LINE: usize = 32;
/// Most RSTs for stray packets waiting for receive buffers: past this the
/// device stops reading the guest's transmit queue until they are out.
pub const MAX_STRAY_RSTS: usize = 1024;
/// The first host port given to host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// How long the guest has to answer a host client's REQUEST.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Registering file descriptors with the worker's epoll (a trait so that
/// tests can use their own).
pub trait Poller {
    fn add(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()>;
    fn modify(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()>;
    fn remove(&self, fd: RawFd) -> io::Result<()>;
}

impl Poller for crate::worker::WorkerCtl {
    fn add(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()> {
        crate::worker::WorkerCtl::add(self, fd, token, events)
    }
    fn modify(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()> {
        crate::worker::WorkerCtl::modify(self, fd, token, events)
    }
    fn remove(&self, fd: RawFd) -> io::Result<()> {
        crate::worker::WorkerCtl::remove(self, fd)
    }
}

/// What happened, for tests and statistics.
#[derive(Debug, Default)]
pub struct VsockCounters {
    /// Packets from the guest that failed [`packet::parse`].
    pub bad_packets: AtomicU64,
    /// Connections established (both directions).
    pub connections: AtomicU64,
    /// Connections reset (RST either way, host failures).
    pub resets: AtomicU64,
    /// Host clients whose handshake line was not `CONNECT <port>`.
    pub bad_handshakes: AtomicU64,
    /// Guest REQUESTs no host socket accepted.
    pub refused: AtomicU64,
    /// Host connections the listener could not accept (out of file
    /// descriptors, say).
    pub accept_failures: AtomicU64,
    /// Transport reset events sent to the driver (after a restore).
    pub transport_resets: AtomicU64,
}

/// How long the worker waits after a failed `accept`: the client stays in
/// the backlog and the listener readable, so without a pause a lasting
/// failure (EMFILE) would spin the worker and flood the log.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(10);

/// Binds the device's Unix socket at `path`. A socket file left by a
/// process that is gone (nobody accepts on it) is replaced; anything else
/// at `path` is an error.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            use std::os::unix::fs::FileTypeExt;
            let is_socket = std::fs::symlink_metadata(path)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            let stale = is_socket
                && matches!(UnixStream::connect(path), Err(e) if e.kind() == ErrorKind::ConnectionRefused);
            if !stale {
                return Err(e);
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
    .and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    })
}

/// The Unix socket a guest connection to host port `port` goes to.
pub fn port_path(base: &Path, port: u32) -> PathBuf {
    let mut p = base.as_os_str().to_owned();
    p.push(format!("_{port}"));
    PathBuf::from(p)
}

/// A connection's key: (host port, guest port).
type Key = (u32, u32);

struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

struct Entry {
    conn: Connection,
    stream: UnixStream,
    token: u64,
    /// The events the stream is registered for (None: not registered).
    registered: Option<EventSet>,
    /// When the connection was made (for the REQUEST's timeout).
    since: Instant,
    in_ready: bool,
}

/// The connections of one device and their host sockets.
pub struct Muxer {
    guest_cid: u64,
    path: PathBuf,
    listener: Arc<UnixListener>,
    listener_token: u64,
    next_token: u64,
    next_local_port: u32,
    handshakes: HashMap<u64, Handshake>,
    conns: HashMap<Key, Entry>,
    tokens: HashMap<u64, Key>,
    /// Connections that may have a packet for the guest, in turn.
    ready: VecDeque<Key>,
    /// Connections whose host side needs a look (I/O, registration).
    dirty: Vec<Key>,
    /// RSTs for packets that named no connection.
    stray: VecDeque<Header>,
    counters: Arc<VsockCounters>,
    log_limit: devices::ratelimit::RateLimiter,
}

impl Muxer {
    /// A muxer for the guest `guest_cid` on `listener` (bound at `path`);
    /// its fds use tokens from `first_token` up.
    pub fn new(
        guest_cid: u64,
        path: PathBuf,
        listener: Arc<UnixListener>,
        first_token: u64,
        counters: Arc<VsockCounters>,
    ) -> Muxer {
        Muxer {
            guest_cid,
            path,
            listener,
            listener_token: first_token,
            next_token: first_token + 1,
            next_local_port: FIRST_LOCAL_PORT,
            handshakes: HashMap::new(),
            conns: HashMap::new(),
            tokens: HashMap::new(),
            ready: VecDeque::new(),
            dirty: Vec::new(),
            stray: VecDeque::new(),
            counters,
            log_limit: devices::ratelimit::RateLimiter::default(),
        }
    }

    /// Registers the listener.
    pub fn start(&mut self, poll: &dyn Poller) -> io::Result<()> {
        poll.add(self.listener.as_raw_fd(), self.listener_token, EventSet::IN)
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether the guest's transmit queue should wait for the receive
    /// queue (too many RSTs are waiting to go out).
    pub fn backlogged(&self) -> bool {
        self.stray.len() >= MAX_STRAY_RSTS
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    // -----------------------------------------------------------------
    // From the guest

    /// One packet from the guest's transmit queue (header and payload).
    /// Returns the parse error of a refused packet.
    pub fn guest_packet(&mut self, bytes: &[u8]) -> Result<(), packet::PacketError> {
        let packet = match packet::parse(bytes, self.guest_cid) {
            Ok(packet) => packet,
            Err(e) => {
                Self::bump(&self.counters.bad_packets);
                if let Some(header) = Header::decode(bytes) {
                    if e.answer_with_rst(&header) {
                        self.push_stray(rst_for(&header));
                    }
                }
                return Err(e);
            }
        };
        let key = (packet.dst_port, packet.src_port);
        if let Some(entry) = self.conns.get_mut(&key) {
            let connecting = entry.conn.state == super::conn::State::Connecting;
            entry.conn.on_packet(&packet);
            if connecting && entry.conn.state == super::conn::State::Established {
                Self::bump(&self.counters.connections);
            }
            self.dirty.push(key);
            return Ok(());
        }
        let header = Header::decode(bytes).unwrap_or_default();
        match packet.op {
            Op::Request => self.guest_connect(&packet, &header),
            Op::Rst => {}
            _ => self.push_stray(rst_for(&header)),
        }
        Ok(())
    }

    fn push_stray(&mut self, rst: Header) {
        if self.stray.len() < MAX_STRAY_RSTS {
            self.stray.push_back(rst);
        }
    }

    /// The guest connects to host port `packet.dst_port`: `PATH_<port>`.
    fn guest_connect(&mut self, packet: &packet::Packet, header: &Header) {
        if self.conns.len() >= MAX_CONNECTIONS {
            Self::bump(&self.counters.refused);
            self.push_stray(rst_for(header));
            return;
        }
        let path = port_path(&self.path, packet.dst_port);
        let stream = match UnixStream::connect(&path).and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "vsock: guest connection refused");
                Self::bump(&self.counters.refused);
                self.push_stray(rst_for(header));
                return;
            }
        };
        Self::bump(&self.counters.connections);
        let conn = Connection::incoming(self.guest_cid, packet);
        self.insert(conn, stream);
    }

    fn insert(&mut self, conn: Connection, stream: UnixStream) {
        let key = (conn.local_port, conn.peer_port);
        let token = self.next_token;
        self.next_token += 1;
        self.tokens.insert(token, key);
        self.conns.insert(
            key,
            Entry {
                conn,
                stream,
                token,
                registered: None,
                since: Instant::now(),
                in_ready: false,
            },
        );
        self.dirty.push(key);
    }

    // -----------------------------------------------------------------
    // From the host

    /// A registered fd is ready.
    pub fn host_event(&mut self, poll: &dyn Poller, token: u64, events: EventSet) {
        if token == self.listener_token {
            self.accept(poll);
        } else if self.handshakes.contains_key(&token) {
            self.handshake(poll, token);
        } else if let Some(&key) = self.tokens.get(&token) {
            if let Some(entry) = self.conns.get_mut(&key) {
                if events.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
                    read_host(entry);
                }
            }
            self.dirty.push(key);
        }
    }

    fn accept(&mut self, poll: &dyn Poller) {
        // A bounded batch: clients that keep coming cannot hold the thread
        // (the listener stays readable, so the rest come next time).
        for _ in 0..MAX_HANDSHAKES {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.counters
                        .accept_failures
                        .fetch_add(1, Ordering::Relaxed);
                    if self.log_limit.allow() {
                        tracing::warn!(error = %e, "vsock: accept failed");
                    }
                    std::thread::sleep(ACCEPT_BACKOFF);
                    return;
                }
            };
            if self.handshakes.len() >= MAX_HANDSHAKES || stream.set_nonblocking(true).is_err() {
                continue; // dropped: closed
            }
            let token = self.next_token;
            self.next_token += 1;
            if poll.add(stream.as_raw_fd(), token, EventSet::IN).is_ok() {
                self.handshakes.insert(
                    token,
                    Handshake {
                        stream,
                        line: Vec::new(),
                    },
                );
            }
        }
    }

    /// Reads the client's `CONNECT <port>\n`, a byte at a time so that no
    /// byte after it is taken from the stream.
    fn handshake(&mut self, poll: &dyn Poller, token: u64) {
        let Some(hs) = self.handshakes.get_mut(&token) else {
            return;
        };
        let done = loop {
            let mut byte = [0u8];
            match hs.stream.read(&mut byte) {
                Ok(0) => break Err(()),
                Ok(_) if byte[0] == b'\n' => break Ok(()),
                Ok(_) if hs.line.len() >= MAX_HANDSHAKE_LINE => break Err(()),
                Ok(_) => hs.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break Err(()),
            }
        };
        let Some(hs) = self.handshakes.remove(&token) else {
            return;
        };
        let _ = poll.remove(hs.stream.as_raw_fd());
        let port = done.ok().and_then(|()| parse_connect(&hs.line));
        let Some(port) = port else {
            Self::bump(&self.counters.bad_handshakes);
            return; // the client is closed
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            Self::bump(&self.counters.refused);
            return;
        }
        let local = self.free_local_port();
        self.insert(Connection::outgoing(self.guest_cid, local, port), hs.stream);
    }

    fn free_local_port(&mut self) -> u32 {
        loop {
            let port = self.next_local_port;
            self.next_local_port = match port.checked_add(1) {
                Some(next) => next,
                None => FIRST_LOCAL_PORT,
            };
            if !self.conns.keys().any(|&(local, _)| local == port) {
                return port;
            }
        }
    }

    // -----------------------------------------------------------------
    // Housekeeping and output

    /// Whether a host client waits for the guest's answer (the device then
    /// calls [`Muxer::expire`] now and then).
    pub fn connecting(&self) -> bool {
        self.conns
            .values()
            .any(|e| e.conn.state == super::conn::State::Connecting)
    }

    /// Resets the host clients' connections the guest left unanswered for
    /// [`CONNECT_TIMEOUT`] by `now`.
    pub fn expire(&mut self, now: Instant) {
        for (key, entry) in &mut self.conns {
            if entry.conn.state == super::conn::State::Connecting
                && now.duration_since(entry.since) >= CONNECT_TIMEOUT
            {
                entry.conn.connect_timed_out();
                self.dirty.push(*key);
            }
        }
    }

    /// Writes what the connections touched since the last call have for
    /// their host sockets, closes the finished ones and updates what their
    /// sockets are waited on for.
    pub fn sync(&mut self, poll: &dyn Poller) {
        while let Some(key) = self.dirty.pop() {
            let Some(entry) = self.conns.get_mut(&key) else {
                continue;
            };
            write_host(entry);
            if entry.conn.take_host_write_shutdown() {
                let _ = entry.stream.shutdown(Shutdown::Write);
            }
            if entry.conn.finished() {
                if let Some(entry) = self.conns.remove(&key) {
                    if entry.registered.is_some() {
                        let _ = poll.remove(entry.stream.as_raw_fd());
                    }
                    self.tokens.remove(&entry.token);
                    if entry.conn.reset_reason() != Some(super::conn::ResetReason::Done) {
                        Self::bump(&self.counters.resets);
                    }
                }
                continue;
            }
            let mut want = EventSet::empty();
            if entry.conn.host_room() > 0 {
                want |= EventSet::IN;
            }
            if entry.conn.has_host_bytes() {
                want |= EventSet::OUT;
            }
            let fd = entry.stream.as_raw_fd();
            let result = match (entry.registered, want.is_empty()) {
                (None, true) => Ok(()),
                (None, false) => poll.add(fd, entry.token, want),
                (Some(_), true) => poll.remove(fd),
                (Some(old), false) if old == want => Ok(()),
                (Some(_), false) => poll.modify(fd, entry.token, want),
            };
            match result {
                Ok(()) => entry.registered = (!want.is_empty()).then_some(want),
                Err(e) => {
                    tracing::warn!(error = %e, "vsock: cannot wait on a host socket");
                    entry.conn.host_failed();
                }
            }
            if entry.conn.has_output() && !entry.in_ready {
                entry.in_ready = true;
                self.ready.push_back(key);
            }
        }
    }

    /// Whether a packet may be waiting for the guest.
    pub fn has_output(&self) -> bool {
        !self.stray.is_empty() || !self.ready.is_empty()
    }

    /// The next packet for the guest in a receive buffer with `room`
    /// payload bytes: its header (encoded) and payload.
    pub fn next_for_guest(&mut self, room: usize) -> Option<([u8; HEADER_LEN], Vec<u8>)> {
        if let Some(rst) = self.stray.pop_front() {
            return Some((rst.encode(), Vec::new()));
        }
        while let Some(key) = self.ready.pop_front() {
            let Some(entry) = self.conns.get_mut(&key) else {
                continue;
            };
            let Some((header, payload)) = entry.conn.next_packet(room) else {
                entry.in_ready = false;
                continue;
            };
            if entry.conn.has_output() {
                self.ready.push_back(key);
            } else {
                entry.in_ready = false;
            }
            self.dirty.push(key);
            return Some((header.encode(), payload));
        }
        None
    }
}

/// Reads the host socket into the connection (as much as it has room for).
fn read_host(entry: &mut Entry) {
    let mut buf = [0u8; 16 << 10];
    loop {
        let room = entry.conn.host_room().min(buf.len());
        if room == 0 {
            return;
        }
        match entry.stream.read(&mut buf[..room]) {
            Ok(0) => {
                entry.conn.host_eof();
                return;
            }
            Ok(n) => entry.conn.push_host_data(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                entry.conn.host_failed();
                return;
            }
        }
    }
}

/// Writes the connection's bytes for the host until the socket is full.
fn write_host(entry: &mut Entry) {
    while entry.conn.has_host_bytes() {
        match entry.stream.write(entry.conn.host_bytes()) {
            Ok(0) => {
                entry.conn.host_failed();
                return;
            }
            Ok(n) => entry.conn.host_written(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                entry.conn.host_failed();
                return;
            }
        }
    }
}

/// The port of a `CONNECT <port>` line (a trailing '\r' is allowed).
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let port = line.strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}
