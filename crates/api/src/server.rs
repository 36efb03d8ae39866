//! The API server: a Unix socket listener, one thread per client
//! connection (a bounded number of them), each reading requests, routing
//! them and asking the [`Backend`] for the answer.
//!
//! A thread per connection keeps the answer path to one blocking `read`,
//! the parse, the backend call and one `write`: no event loop to wake, no
//! allocation beyond the connection's buffers. Clients of a VMM's control
//! socket are few; past [`ServerConfig::max_connections`] the connection
//! idle longest makes room ([`crate::slots`]), and when every connection is
//! in use a new client gets a 503 and is closed.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::http::{self, Head, Limits, Status};
use crate::routes::{route, Request};
use crate::schema::Fault;
use crate::slots::{Activity, Refused, Slots};

/// An answer: a status and an optional JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    pub body: Option<String>,
}

impl Reply {
    /// 204, no body.
    pub fn no_content() -> Reply {
        Reply {
            status: Status::NoContent,
            body: None,
        }
    }

    /// 200 with `value` as JSON.
    pub fn json<T: Serialize>(value: &T) -> Reply {
        match serde_json::to_string(value) {
            Ok(body) => Reply {
                status: Status::Ok,
                body: Some(body),
            },
            Err(e) => Reply::fault(
                Status::InternalServerError,
                &format!("cannot encode the answer: {e}"),
            ),
        }
    }

    /// `{"fault_message": ...}` with `status`.
    pub fn fault(status: Status, message: &str) -> Reply {
        let fault = Fault {
            fault_message: message.to_string(),
        };
        Reply {
            status,
            body: Some(serde_json::to_string(&fault).unwrap_or_else(|_| "{}".to_string())),
        }
    }

    /// A 400 with `message`.
    pub fn bad_request(message: &str) -> Reply {
        Reply::fault(Status::BadRequest, message)
    }
}

/// The VM side of the API.
pub trait Backend: Send + Sync + 'static {
    /// Answers one routed request. Called from several connection threads
    /// at once.
    fn handle(&self, request: Request) -> Reply;
}

#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    pub limits: Limits,
    /// Client connections served at once.
    pub max_connections: usize,
    /// With every slot taken, a connection idle (no byte either way) this
    /// long is closed to make room for a new client.
    pub evict_idle_after: std::time::Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            max_connections: 32,
            evict_idle_after: std::time::Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create the API socket {}: it already exists (remove it if no process serves it)", .0.display())]
    SocketExists(PathBuf),
    #[error("cannot create the API socket {}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the API server thread")]
    Thread(#[source] std::io::Error),
}

/// A bound API socket, not serving yet.
pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
    config: ServerConfig,
}

/// A serving API: the accept thread, and the count of requests read but
/// not yet answered, so that the process can let them be answered before
/// it ends (a client whose InstanceStart succeeded must not read EOF
/// because the guest it started ended at once).
pub struct Serving {
    pub thread: JoinHandle<()>,
    inflight: Arc<Inflight>,
}

impl Serving {
    /// Waits until every request read so far has been answered, or
    /// `limit` has passed (a backend call may block on what is ending).
    /// True when none is left.
    pub fn drain(&self, limit: Duration) -> bool {
        self.inflight.wait_idle(limit)
    }
}

/// Requests being answered, over every connection.
#[derive(Default)]
struct Inflight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Inflight {
    fn add(&self, n: usize) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += n;
    }

    fn done(&self, n: usize) {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_sub(n);
        if *count == 0 {
            self.idle.notify_all();
        }
    }

    fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            count = match self.idle.wait_timeout(count, left) {
                Ok((c, _)) => c,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

/// The requests of one connection whose answers are not written yet;
/// whatever way the connection ends, they stop counting.
struct Pending<'a> {
    inflight: &'a Inflight,
    count: usize,
}

impl Pending<'_> {
    fn add(&mut self) {
        self.inflight.add(1);
        self.count += 1;
    }

    fn written(&mut self) {
        self.inflight.done(self.count);
        self.count = 0;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.written();
    }
}

/// Stack of connection threads: routing and JSON decoding (nesting is
/// limited by serde_json to 128 levels) fit well within it.
const CONNECTION_STACK: usize = 256 << 10;

impl ApiServer {
    /// Creates and listens on the socket `path`, which must not exist.
    pub fn bind(path: &Path, config: ServerConfig) -> Result<ApiServer, ServerError> {
        let listener = UnixListener::bind(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                ServerError::SocketExists(path.to_path_buf())
            } else {
                ServerError::Bind {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Ok(ApiServer {
            listener,
            path: path.to_path_buf(),
            config,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves clients on a thread of its own until the process ends.
    pub fn serve(self, backend: Arc<dyn Backend>) -> Result<Serving, ServerError> {
        let builder = std::thread::Builder::new()
            .name("api".into())
            .stack_size(CONNECTION_STACK);
        let inflight = Arc::new(Inflight::default());
        let counted = inflight.clone();
        let thread = sandbox::spawn(sandbox::ThreadKind::Api, builder, move || {
            self.accept_loop(backend, counted)
        })
        .map_err(ServerError::Thread)?;
        Ok(Serving { thread, inflight })
    }

    fn accept_loop(self, backend: Arc<dyn Backend>, inflight: Arc<Inflight>) {
        let slots = Slots::new(self.config.max_connections, self.config.evict_idle_after);
        for stream in self.listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an API connection");
                    // EMFILE and the like: do not spin.
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            };
            let slot = match slots.take(&stream) {
                Ok(slot) => slot,
                Err(Refused::Io(e)) => {
                    tracing::warn!(error = %e, "cannot take an API connection");
                    continue;
                }
                Err(Refused::Full) => {
                    refuse(stream, self.config.max_connections);
                    continue;
                }
            };
            let backend = backend.clone();
            let inflight = inflight.clone();
            let limits = self.config.limits;
            let builder = std::thread::Builder::new()
                .name("api-conn".into())
                .stack_size(CONNECTION_STACK);
            let spawned = sandbox::spawn(sandbox::ThreadKind::Api, builder, move || {
                serve_connection(stream, &*backend, &limits, &slot.activity, &inflight);
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start an API connection thread");
            }
        }
    }
}

/// Answers a client for whom no slot is free with a 503 and closes.
fn refuse(mut stream: UnixStream, max_connections: usize) {
    let mut out = Vec::new();
    let reply = Reply::fault(
        Status::ServiceUnavailable,
        &format!("too many open API connections (at most {max_connections})"),
    );
    http::write_response(&mut out, reply.status, reply.body.as_deref(), false);
    let _ = stream.write_all(&out);
    // Take what the client already sent, so that closing does not reset
    // the connection before it reads the answer.
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    }
}

/// Routes a request and asks the backend; a panic in the backend is a 500,
/// not the end of the server.
pub fn dispatch(backend: &dyn Backend, head: &Head, body: &[u8]) -> Reply {
    let request = match route(&head.method, &head.path, body) {
        Ok(r) => r,
        Err(e) => return Reply::bad_request(&e.to_string()),
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend.handle(request)))
        .unwrap_or_else(|_| {
            Reply::fault(
                Status::InternalServerError,
                "internal error while handling the request",
            )
        })
}

/// Serves one client until it closes, asks to close, or sends something
/// that is not HTTP.
fn serve_connection(
    mut stream: UnixStream,
    backend: &dyn Backend,
    limits: &Limits,
    activity: &Activity,
    inflight: &Inflight,
) {
    let mut pending = Pending { inflight, count: 0 };
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut out: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let mut sent_continue = false;
    loop {
        let mut close = false;
        loop {
            let head = match http::parse_head(&buf, limits) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    let reply = Reply::bad_request(&e.to_string());
                    http::write_response(&mut out, reply.status, reply.body.as_deref(), false);
                    close = true;
                    break;
                }
            };
            let total = head.len + head.content_length;
            if buf.len() < total {
                if head.expect_continue && !sent_continue {
                    out.extend_from_slice(http::CONTINUE);
                    sent_continue = true;
                }
                break;
            }
            activity.busy();
            pending.add();
            let reply = dispatch(backend, &head, &buf[head.len..total]);
            tracing::debug!(
                method = head.method.as_str(),
                path = %head.path,
                status = reply.status.code(),
                "API request"
            );
            http::write_response(
                &mut out,
                reply.status,
                reply.body.as_deref(),
                head.keep_alive,
            );
            buf.drain(..total);
            sent_continue = false;
            if !head.keep_alive {
                close = true;
                break;
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            pending.written();
            out.clear();
            activity.touch();
        }
        if close {
            linger(stream);
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                activity.touch();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Closes a connection whose client may still be sending (a body that was
/// refused, the rest of a malformed request): stops writing, then reads and
/// drops what comes for a short while, so that the client reads the answer
/// rather than a reset.
fn linger(mut stream: UnixStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if stream
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .is_err()
    {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut budget: usize = 1 << 20;
    while budget > 0 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => budget = budget.saturating_sub(n),
            _ => return,
        }
    }
}
