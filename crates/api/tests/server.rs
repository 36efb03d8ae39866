//! The HTTP server over a real Unix socket, with a backend that echoes what
//! it was asked: keep-alive, pipelining, `Expect: 100-continue`, payload
//! limits, malformed requests on a raw socket, many clients at once, the
//! connection limit and idle connections making room.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use api::client::Client;
use api::http::Limits;
use api::{ApiServer, Backend, Reply, Request, ServerConfig};

struct Echo {
    calls: AtomicUsize,
}

impl Backend for Echo {
    fn handle(&self, request: Request) -> Reply {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match request {
            Request::GetInstanceInfo => Reply::json(&serde_json::json!({"hello": "world"})),
            Request::Action(_) => panic!("the backend fails"),
            // A slow answer (a snapshot of a large guest).
            Request::GetMmds => {
                std::thread::sleep(Duration::from_millis(800));
                Reply::json(&"slow")
            }
            other => Reply::json(&format!("{other:?}")),
        }
    }
}

struct Socket(PathBuf);

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn start(name: &str, config: ServerConfig) -> (Socket, Arc<Echo>) {
    let (sock, echo, _) = serving(name, config);
    (sock, echo)
}

fn serving(name: &str, config: ServerConfig) -> (Socket, Arc<Echo>, api::server::Serving) {
    let path = std::env::temp_dir().join(format!("fv-api-{name}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let echo = Arc::new(Echo {
        calls: AtomicUsize::new(0),
    });
    let server = ApiServer::bind(&path, config).unwrap();
    let serving = server.serve(echo.clone()).unwrap();
    (Socket(path), echo, serving)
}

fn raw(path: &PathBuf, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A server that refuses the connection (the connection limit) may
    // answer and close before the request is written: the write then
    // fails with EPIPE, and the answer is still there to read.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    // The server may reset the connection once it has answered.
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn keep_alive_and_pipelining() {
    let (sock, echo) = start("keepalive", ServerConfig::default());
    let mut c = Client::connect(&sock.0).unwrap();
    for _ in 0..3 {
        let r = c.request("GET", "/", None).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, r#"{"hello":"world"}"#);
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    // Two requests in one write, answered in order.
    c.send_raw(b"GET /version HTTP/1.1\r\n\r\nGET /vm/config HTTP/1.1\r\n\r\n")
        .unwrap();
    assert!(c.read_response().unwrap().body.contains("GetVersion"));
    assert!(c.read_response().unwrap().body.contains("GetVmConfig"));
    // A body that arrives in pieces.
    c.send_raw(b"PUT /vsock HTTP/1.1\r\nContent-Length: 40\r\n\r\n{\"guest_cid\": 3,")
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.send_raw(b" \"uds_path\": \"/tmp/v.s\"}").unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("PutVsock"), "{}", r.body);
    assert_eq!(echo.calls.load(Ordering::Relaxed), 6);
}

#[test]
fn expect_continue_gets_an_interim_answer() {
    let (sock, _) = start("continue", ServerConfig::default());
    let mut s = UnixStream::connect(&sock.0).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = r#"{"action_type": "FlushMetrics"}"#;
    write!(
        s,
        "PUT /actions HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let n = s.read(&mut buf).unwrap();
    // The backend panics on actions: a 500, and the server goes on.
    assert!(buf[..n].starts_with(b"HTTP/1.1 500"), "{:?}", &buf[..n]);
    let mut c = Client::connect(&sock.0).unwrap();
    assert_eq!(c.request("GET", "/", None).unwrap().status, 200);
}

#[test]
fn malformed_requests_get_400_and_a_closed_connection() {
    let (sock, echo) = start("malformed", ServerConfig::default());
    for bad in [
        &b"HELLO\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"PUT /vsock HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"PUT /vsock HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"GET relative HTTP/1.1\r\n\r\n",
        b"\xff\xfe / HTTP/1.1\r\n\r\n",
    ] {
        let out = raw(&sock.0, bad);
        assert!(
            out.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{bad:?}: {out}"
        );
        assert!(out.contains("Connection: close"), "{out}");
        assert!(out.contains("\"fault_message\":"), "{out}");
    }
    // A request split in the middle of its head, then the client goes away:
    // nothing is answered, nothing breaks.
    let mut s = UnixStream::connect(&sock.0).unwrap();
    s.write_all(b"GET / HT").unwrap();
    drop(s);
    // Binary garbage without a line end, longer than any head.
    let out = raw(&sock.0, &[0x16u8; 9000]);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("longer than"), "{out}");
    // Routing errors keep the connection.
    let mut c = Client::connect(&sock.0).unwrap();
    let r = c.request("POST", "/actions", Some("{}")).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.fault_message().unwrap(),
        "invalid request method and/or path: POST /actions"
    );
    let r = c
        .request("PUT", "/vsock", Some("{\"guest_cid\": "))
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.fault_message().unwrap().contains("EOF"), "{}", r.body);
    let deep = "[".repeat(50_000);
    let r = c.request("PUT", "/vsock", Some(&deep)).unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.fault_message().unwrap().contains("not valid JSON"),
        "{}",
        r.body
    );
    assert_eq!(c.request("GET", "/", None).unwrap().status, 200);
    assert_eq!(echo.calls.load(Ordering::Relaxed), 1);
}

#[test]
fn oversized_bodies_are_refused_before_they_are_read() {
    let config = ServerConfig {
        limits: Limits {
            max_body: 100,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let (sock, echo) = start("payload", config);
    let body = format!(r#"{{"uds_path": "{}", "guest_cid": 3}}"#, "x".repeat(100));
    let mut c = Client::connect(&sock.0).unwrap();
    let r = c.request("PUT", "/vsock", Some(&body)).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.fault_message().unwrap(),
        format!(
            "request payload of {} bytes is larger than the limit of 100 bytes",
            body.len()
        )
    );
    assert_eq!(echo.calls.load(Ordering::Relaxed), 0);
    // Exactly the limit is fine.
    let body = format!(r#"{{"uds_path": "{}", "guest_cid": 3}}"#, "x".repeat(68));
    assert_eq!(body.len(), 100);
    let mut c = Client::connect(&sock.0).unwrap();
    assert_eq!(c.request("PUT", "/vsock", Some(&body)).unwrap().status, 200);
}

#[test]
fn many_clients_at_once_and_a_limit() {
    let config = ServerConfig {
        max_connections: 8,
        ..ServerConfig::default()
    };
    let (sock, _) = start("many", config);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let path = sock.0.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&path).unwrap();
                for _ in 0..200 {
                    assert_eq!(c.request("GET", "/", None).unwrap().status, 200);
                }
                c
            })
        })
        .collect();
    let clients: Vec<Client> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // All 8 are still open: the 9th is turned away.
    let out = raw(&sock.0, b"GET / HTTP/1.1\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("too many open API connections"), "{out}");
    drop(clients);
    // Once they close, there is room again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = raw(&sock.0, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        if out.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Issue 13: clients that connect and go quiet cannot lock everyone else
/// out: with every slot taken, the connection idle longest is closed for a
/// newcomer; a connection waiting for a slow answer is not idle.
#[test]
fn idle_connections_make_room_and_busy_ones_keep_theirs() {
    let config = ServerConfig {
        max_connections: 4,
        evict_idle_after: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let (sock, _) = start("evict", config);
    let mut quiet: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = Client::connect(&sock.0).unwrap();
            assert_eq!(c.request("GET", "/", None).unwrap().status, 200);
            std::thread::sleep(Duration::from_millis(5));
            c
        })
        .collect();
    // The fourth slot: a client waiting for a slow answer.
    let slow_path = sock.0.clone();
    let slow = std::thread::spawn(move || {
        let mut c = Client::connect(&slow_path).unwrap();
        c.request("GET", "/mmds", None).unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    // All four taken, none idle long enough: turned away.
    let out = raw(&sock.0, b"GET / HTTP/1.1\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    // 400 ms later the quiet ones are idle (the slow one is busy).
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let out = raw(&sock.0, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    // The slow answer arrived whole.
    let answer = slow.join().unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, r#""slow""#));
    // The first newcomer took the slot of the client idle longest, the
    // first quiet one (later newcomers may have found a slot freed by the
    // one before them).
    let open: Vec<bool> = quiet
        .iter_mut()
        .map(|c| matches!(c.request("GET", "/", None), Ok(r) if r.status == 200))
        .collect();
    assert!(!open[0], "the idlest connection is still open: {open:?}");
}

#[test]
fn a_socket_that_exists_is_an_error() {
    let (sock, _) = start("exists", ServerConfig::default());
    let Err(e) = ApiServer::bind(&sock.0, ServerConfig::default()) else {
        panic!("bound twice")
    };
    assert!(e.to_string().contains("already exists"), "{e}");
}

/// The end of a process waits for the answers to the requests it has
/// read: once `drain` says none is left, the answer is in the client's
/// socket (a client whose InstanceStart succeeded must not read EOF
/// because the guest ended at once).
#[test]
fn drain_returns_once_every_answer_is_written() {
    let (sock, echo, serving) = serving("drain", ServerConfig::default());
    assert!(serving.drain(Duration::ZERO), "nothing asked yet");
    let mut s = UnixStream::connect(&sock.0).unwrap();
    s.write_all(b"GET /mmds HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let asked = std::time::Instant::now();
    while echo.calls.load(Ordering::Relaxed) == 0 {
        assert!(asked.elapsed() < Duration::from_secs(10), "never asked");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The backend takes 800 ms: a short drain gives up, a long one waits.
    assert!(!serving.drain(Duration::from_millis(50)));
    assert!(serving.drain(Duration::from_secs(10)));
    s.set_nonblocking(true).unwrap();
    let mut out = vec![0u8; 4096];
    let n = s
        .read(&mut out)
        .expect("the answer is written when drain returns");
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\"slow\""), "{text}");
}
