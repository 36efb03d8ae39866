//! The muxer between packets as the guest would send them and real Unix
//! sockets on the host.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use vmm_sys_util::epoll::EventSet;

use super::conn::BUF_ALLOC;
use super::packet::{Header, Op, HOST_CID, SHUTDOWN_SEND, TYPE_STREAM};
use super::unix::{self, Muxer, Poller, VsockCounters, MAX_STRAY_RSTS};
use super::{Vsock, VsockError};

const GUEST: u64 = 3;

/// Records registrations; tests deliver the events themselves.
#[derive(Default)]
struct FakePoll {
    fds: RefCell<BTreeMap<u64, (RawFd, EventSet)>>,
}

impl Poller for FakePoll {
    fn add(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()> {
        self.fds.borrow_mut().insert(token, (fd, events));
        Ok(())
    }
    fn modify(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()> {
        self.add(fd, token, events)
    }
    fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.fds.borrow_mut().retain(|_, (f, _)| *f != fd);
        Ok(())
    }
}

struct Rig {
    dir: PathBuf,
    path: PathBuf,
    mux: Muxer,
    poll: FakePoll,
    counters: Arc<VsockCounters>,
}

impl Rig {
    fn new(name: &str) -> Rig {
        let dir =
            std::env::temp_dir().join(format!("ferrovisor-vsock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.sock");
        let listener = Arc::new(unix::bind(&path).unwrap());
        let counters = Arc::new(VsockCounters::default());
        let mut mux = Muxer::new(GUEST, path.clone(), listener, 1 << 32, counters.clone());
        let poll = FakePoll::default();
        mux.start(&poll).unwrap();
        Rig {
            dir,
            path,
            mux,
            poll,
            counters,
        }
    }

    fn send(&mut self, h: Header, payload: &[u8]) {
        let mut b = Header {
            len: payload.len() as u32,
            ..h
        }
        .encode()
        .to_vec();
        b.extend_from_slice(payload);
        let _ = self.mux.guest_packet(&b);
        self.mux.sync(&self.poll);
    }

    /// Delivers every registered fd's events (as a level-triggered epoll
    /// would, the sockets being ready or not) a few times.
    fn host(&mut self) {
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(5));
            let regs: Vec<(u64, EventSet)> = self
                .poll
                .fds
                .borrow()
                .iter()
                .map(|(t, (_, e))| (*t, *e))
                .collect();
            for (token, events) in regs {
                self.mux.host_event(&self.poll, token, events);
            }
            self.mux.sync(&self.poll);
        }
    }

    /// What the guest receives: (header, payload).
    fn recv(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((h, p)) = self.mux.next_for_guest(4096) {
            out.push((Header::decode(&h).unwrap(), p));
            self.mux.sync(&self.poll);
        }
        out
    }

    fn recv_ops(&mut self) -> Vec<Op> {
        self.recv()
            .iter()
            .map(|(h, _)| Op::from_u16(h.op).unwrap())
            .collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn from_guest(op: Op, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        kind: TYPE_STREAM,
        op: op as u16,
        flags: 0,
        buf_alloc: 64 << 10,
        fwd_cnt: 0,
    }
}

fn read_timeout(s: &mut UnixStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            // Closed with bytes of ours unread.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    buf.truncate(got);
    buf
}

#[test]
fn guest_connects_to_a_host_port_and_bytes_flow_both_ways() {
    let mut rig = Rig::new("g2h");
    let server = UnixListener::bind(unix::port_path(&rig.path, 6000)).unwrap();
    rig.send(from_guest(Op::Request, 1025, 6000), &[]);
    let resp = rig.recv();
    assert_eq!(resp.len(), 1);
    let (h, _) = &resp[0];
    assert_eq!(Op::from_u16(h.op), Some(Op::Response));
    assert_eq!(
        (h.src_cid, h.dst_cid, h.src_port, h.dst_port),
        (2, GUEST, 6000, 1025)
    );
    assert_eq!(h.buf_alloc, BUF_ALLOC);
    let (mut peer, _) = server.accept().unwrap();

    rig.send(from_guest(Op::Rw, 1025, 6000), b"ping-from-guest\n");
    assert_eq!(read_timeout(&mut peer, 16), b"ping-from-guest\n");
    // The written bytes come back as credit.
    let credit = rig.recv();
    assert_eq!(Op::from_u16(credit[0].0.op), Some(Op::CreditUpdate));
    assert_eq!(credit[0].0.fwd_cnt, 16);

    peer.write_all(b"pong").unwrap();
    rig.host();
    let data = rig.recv();
    assert_eq!(Op::from_u16(data[0].0.op), Some(Op::Rw));
    assert_eq!(data[0].1, b"pong");

    // The guest half-closes: the host reads EOF, answers, closes.
    rig.send(
        Header {
            flags: SHUTDOWN_SEND,
            ..from_guest(Op::Shutdown, 1025, 6000)
        },
        &[],
    );
    assert_eq!(
        read_timeout(&mut peer, 10),
        b"",
        "EOF after the guest's SHUTDOWN SEND"
    );
    peer.write_all(b"bye").unwrap();
    drop(peer);
    rig.host();
    let out = rig.recv();
    let ops: Vec<Op> = out
        .iter()
        .map(|(h, _)| Op::from_u16(h.op).unwrap())
        .collect();
    assert_eq!(ops, vec![Op::Rw, Op::Shutdown, Op::Rst], "{out:?}");
    assert_eq!(out[0].1, b"bye");
    assert_eq!(out[1].0.flags, SHUTDOWN_SEND);
    assert_eq!(rig.mux.connection_count(), 0);
    assert_eq!(rig.counters.connections.load(Ordering::Relaxed), 1);
    assert_eq!(
        rig.counters.resets.load(Ordering::Relaxed),
        0,
        "a clean close"
    );
}

#[test]
fn host_client_connects_to_a_guest_port_with_the_connect_handshake() {
    let mut rig = Rig::new("h2g");
    let mut client = UnixStream::connect(&rig.path).unwrap();
    client.write_all(b"CONNECT 5000\nearly").unwrap();
    rig.host();
    let req = rig.recv();
    assert_eq!(req.len(), 1, "{req:?}");
    let (h, _) = req[0];
    assert_eq!(Op::from_u16(h.op), Some(Op::Request));
    assert_eq!((h.dst_cid, h.dst_port), (GUEST, 5000));
    let local = h.src_port;
    rig.send(from_guest(Op::Response, 5000, local), &[]);
    let ok = format!("OK {local}\n");
    assert_eq!(read_timeout(&mut client, ok.len()), ok.as_bytes());
    assert_eq!(rig.counters.connections.load(Ordering::Relaxed), 1);
    // The bytes after the CONNECT line were not lost.
    rig.host();
    let data = rig.recv();
    assert_eq!(data[0].1, b"early");
    rig.send(from_guest(Op::Rw, 5000, local), b"echo");
    assert_eq!(read_timeout(&mut client, 4), b"echo");
    // The guest resets: the client sees the end.
    rig.send(from_guest(Op::Rst, 5000, local), &[]);
    assert_eq!(rig.mux.connection_count(), 0);
    assert_eq!(read_timeout(&mut client, 1), b"");
    assert!(rig.recv().is_empty(), "no RST for a RST");
}

#[test]
fn a_refused_request_closes_the_host_client() {
    let mut rig = Rig::new("refused");
    let mut client = UnixStream::connect(&rig.path).unwrap();
    client.write_all(b"CONNECT 7\n").unwrap();
    rig.host();
    let (h, _) = rig.recv()[0];
    rig.send(from_guest(Op::Rst, 7, h.src_port), &[]);
    assert_eq!(read_timeout(&mut client, 1), b"");
    assert_eq!(rig.mux.connection_count(), 0);
}

#[test]
fn bad_handshakes_close_the_client() {
    let mut rig = Rig::new("badhs");
    for line in [
        &b"HELLO 5\n"[..],
        b"CONNECT\n",
        b"CONNECT -1\n",
        b"CONNECT 99999999999\n",
        &[b'A'; 40],
    ] {
        let mut client = UnixStream::connect(&rig.path).unwrap();
        client.write_all(line).unwrap();
        rig.host();
        assert_eq!(read_timeout(&mut client, 1), b"", "{line:?}");
    }
    assert!(rig.recv().is_empty());
    assert_eq!(rig.counters.bad_handshakes.load(Ordering::Relaxed), 5);
    assert_eq!(unix::parse_connect(b"CONNECT 52\r"), Some(52));
}

#[test]
fn requests_nobody_accepts_get_a_rst() {
    let mut rig = Rig::new("nobody");
    rig.send(from_guest(Op::Request, 1, 4444), &[]);
    let out = rig.recv();
    assert_eq!(out.len(), 1);
    assert_eq!(Op::from_u16(out[0].0.op), Some(Op::Rst));
    assert_eq!((out[0].0.src_port, out[0].0.dst_port), (4444, 1));
    assert_eq!(rig.counters.refused.load(Ordering::Relaxed), 1);
}

#[test]
fn hostile_packets_are_dropped_or_reset() {
    let mut rig = Rig::new("hostile");
    // Spoofed source: dropped silently.
    rig.send(
        Header {
            src_cid: 9,
            ..from_guest(Op::Request, 1, 2)
        },
        &[],
    );
    assert!(rig.recv().is_empty());
    // Unknown op, seqpacket, data for no connection: RST.
    rig.send(
        Header {
            op: 42,
            ..from_guest(Op::Rw, 1, 2)
        },
        &[],
    );
    rig.send(
        Header {
            kind: 2,
            ..from_guest(Op::Request, 1, 2)
        },
        &[],
    );
    rig.send(from_guest(Op::Rw, 1, 2), b"nobody");
    rig.send(
        Header {
            dst_cid: 7,
            ..from_guest(Op::Request, 1, 2)
        },
        &[],
    );
    assert_eq!(rig.recv_ops(), vec![Op::Rst; 4]);
    // A RST for nothing: nothing.
    rig.send(from_guest(Op::Rst, 1, 2), &[]);
    // A header that claims more payload than there is.
    let mut b = Header {
        len: 100,
        ..from_guest(Op::Rw, 1, 2)
    }
    .encode()
    .to_vec();
    b.extend_from_slice(b"short");
    assert!(rig.mux.guest_packet(&b).is_err());
    assert!(rig.mux.guest_packet(&b[..10]).is_err());
    assert_eq!(rig.recv_ops(), vec![Op::Rst]);
    assert_eq!(rig.counters.bad_packets.load(Ordering::Relaxed), 6);
}

#[test]
fn stray_rsts_are_bounded_and_stall_the_transmit_side() {
    let mut rig = Rig::new("flood");
    for i in 0..MAX_STRAY_RSTS + 10 {
        rig.send(from_guest(Op::Rw, i as u32, 1), b"x");
    }
    assert!(rig.mux.backlogged());
    assert_eq!(rig.recv().len(), MAX_STRAY_RSTS);
    assert!(!rig.mux.backlogged());
}

#[test]
fn the_device_checks_its_cid_and_socket() {
    let dir = std::env::temp_dir().join(format!("ferrovisor-vsock-{}-dev", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("v.sock");
    for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 40] {
        assert!(
            matches!(Vsock::new(cid, &path), Err(VsockError::Cid(_))),
            "{cid}"
        );
    }
    let dev = Vsock::new(3, &path).unwrap();
    let mut cfg = [0u8; 8];
    crate::VirtioDevice::read_config(&dev, 0, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg), 3);
    // In use by a live device: refused.
    assert!(matches!(Vsock::new(4, &path), Err(VsockError::Bind { .. })));
    drop(dev);
    assert!(!path.exists(), "the socket is removed with the device");
    // A stale socket file (nobody listening) is replaced.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let dev = Vsock::new(3, &path).unwrap();
    drop(dev);
    // Not a socket: refused.
    std::fs::write(&path, b"file").unwrap();
    assert!(matches!(Vsock::new(3, &path), Err(VsockError::Bind { .. })));
    assert!(matches!(
        Vsock::new(3, &dir.join("no/such/dir/v.sock")),
        Err(VsockError::Bind { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

mod device {
    //! The whole device behind the virtio-mmio transport.

    use super::*;
    use crate::test_driver::MultiDriver;
    use vm_memory::GuestAddress;

    const RX: usize = 0;
    const TX: usize = 1;

    struct Dev {
        d: MultiDriver,
        path: PathBuf,
        dir: PathBuf,
    }

    impl Dev {
        fn new(name: &str) -> Dev {
            let dir = std::env::temp_dir()
                .join(format!("ferrovisor-vsockdev-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("v.sock");
            let dev = Vsock::new(GUEST, &path).unwrap();
            let d = MultiDriver::running(Box::new(dev), 3);
            Dev { d, path, dir }
        }

        /// Sends one packet on the transmit queue and waits for it to be
        /// used.
        fn send(&mut self, h: Header, payload: &[u8]) {
            let mut bytes = Header {
                len: payload.len() as u32,
                ..h
            }
            .encode()
            .to_vec();
            bytes.extend_from_slice(payload);
            let buf = self.d.buffer(bytes.len() as u32);
            self.d.write_bytes(buf, &bytes);
            self.d.offer(TX, &[(buf, bytes.len() as u32, false)]);
            self.d.wait_used(TX, 1);
        }

        /// Gives one receive buffer and waits for a packet in it.
        fn recv(&mut self) -> (Header, Vec<u8>) {
            let buf: GuestAddress = self.d.buffer(4096 + 44);
            self.d.offer(RX, &[(buf, 4096 + 44, true)]);
            let (_, len) = self.d.wait_used(RX, 1)[0];
            let bytes = self.d.read_bytes(buf, len as usize);
            (Header::decode(&bytes).unwrap(), bytes[44..].to_vec())
        }
    }

    impl Drop for Dev {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn config_space_is_the_guest_cid() {
        let mut dev = Dev::new("config");
        assert_eq!(dev.d.read(crate::mmio::reg::DEVICE_ID), crate::TYPE_VSOCK);
        assert_eq!(dev.d.read(crate::mmio::reg::CONFIG), GUEST as u32);
        assert_eq!(dev.d.read(crate::mmio::reg::CONFIG + 4), 0);
    }

    #[test]
    fn a_host_client_reaches_the_guest_and_a_driver_reset_closes_it() {
        let mut dev = Dev::new("reset");
        let mut client = UnixStream::connect(&dev.path).unwrap();
        client.write_all(b"CONNECT 5000\n").unwrap();
        let (h, _) = dev.recv();
        assert_eq!(Op::from_u16(h.op), Some(Op::Request));
        assert_eq!((h.src_cid, h.dst_cid, h.dst_port), (HOST_CID, GUEST, 5000));
        dev.send(from_guest(Op::Response, 5000, h.src_port), &[]);
        let ok = format!("OK {}\n", h.src_port);
        assert_eq!(read_timeout(&mut client, ok.len()), ok.as_bytes());
        client.write_all(b"to the guest").unwrap();
        let (data, payload) = dev.recv();
        assert_eq!(Op::from_u16(data.op), Some(Op::Rw));
        assert_eq!(payload, b"to the guest");
        // The guest goes away (driver reset): the client sees the end.
        dev.d.write(crate::mmio::reg::STATUS, 0);
        assert_eq!(read_timeout(&mut client, 1), b"");
        assert!(!dev.d.needs_reset());
    }

    #[test]
    fn the_device_times_out_a_request_the_guest_ignores() {
        let mut dev = Dev::new("timeout");
        let mut client = UnixStream::connect(&dev.path).unwrap();
        client.write_all(b"CONNECT 5000\n").unwrap();
        let started = std::time::Instant::now();
        let (h, _) = dev.recv();
        assert_eq!(Op::from_u16(h.op), Some(Op::Request));
        let (rst, _) = dev.recv();
        assert_eq!(Op::from_u16(rst.op), Some(Op::Rst));
        assert_eq!(rst.src_port, h.src_port);
        assert!(started.elapsed() >= unix::CONNECT_TIMEOUT);
        assert_eq!(read_timeout(&mut client, 1), b"");
    }

    #[test]
    fn hostile_packets_do_not_stop_the_device() {
        let mut dev = Dev::new("hostile");
        // Too short for a header, a lying length, a foreign source CID.
        let short = dev.d.buffer(10);
        dev.d.offer(TX, &[(short, 10, false)]);
        dev.d.wait_used(TX, 1);
        dev.send(
            Header {
                src_cid: 77,
                ..from_guest(Op::Request, 1, 2)
            },
            &[],
        );
        let mut lying = Header {
            len: 4000,
            ..from_guest(Op::Rw, 1, 2)
        }
        .encode()
        .to_vec();
        lying.extend_from_slice(b"abc");
        let buf = dev.d.buffer(lying.len() as u32);
        dev.d.write_bytes(buf, &lying);
        dev.d.offer(TX, &[(buf, lying.len() as u32, false)]);
        dev.d.wait_used(TX, 1);
        // The lying one named a connection: it gets a RST.
        let (h, _) = dev.recv();
        assert_eq!(Op::from_u16(h.op), Some(Op::Rst));
        assert_eq!((h.src_port, h.dst_port), (2, 1));
        assert!(!dev.d.needs_reset());
        // And the device still works.
        let server = UnixListener::bind(unix::port_path(&dev.path, 6000)).unwrap();
        dev.send(from_guest(Op::Request, 9, 6000), &[]);
        let (h, _) = dev.recv();
        assert_eq!(Op::from_u16(h.op), Some(Op::Response));
        let (mut peer, _) = server.accept().unwrap();
        dev.send(from_guest(Op::Rw, 9, 6000), b"still here");
        assert_eq!(read_timeout(&mut peer, 10), b"still here");
    }

    #[test]
    fn a_receive_buffer_too_small_for_a_header_is_a_device_error() {
        let mut dev = Dev::new("small");
        dev.send(from_guest(Op::Rw, 1, 2), b"x"); // a RST is due
        let buf = dev.d.buffer(16);
        dev.d.offer(RX, &[(buf, 16, true)]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !dev.d.needs_reset() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(dev.d.needs_reset());
    }
}

#[test]
fn a_host_client_the_guest_never_answers_times_out() {
    let mut rig = Rig::new("timeout");
    let mut client = UnixStream::connect(&rig.path).unwrap();
    client.write_all(b"CONNECT 5000\n").unwrap();
    rig.host();
    assert_eq!(rig.recv_ops(), vec![Op::Request]);
    assert!(rig.mux.connecting());
    rig.mux.expire(std::time::Instant::now());
    assert!(rig.recv().is_empty(), "not yet");
    rig.mux
        .expire(std::time::Instant::now() + unix::CONNECT_TIMEOUT);
    rig.mux.sync(&rig.poll);
    assert_eq!(rig.recv_ops(), vec![Op::Rst]);
    assert!(!rig.mux.connecting());
    assert_eq!(rig.mux.connection_count(), 0);
    assert_eq!(read_timeout(&mut client, 1), b"");
}

#[test]
fn clients_past_the_handshake_limit_are_closed() {
    let mut rig = Rig::new("many");
    let clients: Vec<UnixStream> = (0..unix::MAX_HANDSHAKES + 6)
        .map(|_| UnixStream::connect(&rig.path).unwrap())
        .collect();
    rig.host();
    let mut closed = 0;
    for mut c in clients {
        c.set_nonblocking(true).unwrap();
        match c.read(&mut [0u8; 1]) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(closed, 6);
}

/// Out of file descriptors, `accept` fails while the client stays in the
/// backlog and the listener readable: each failure is counted and the
/// worker pauses instead of spinning (and flooding the log) until
/// descriptors come back, when the client is accepted.
#[test]
// getrlimit/setrlimit/dup/close on plain integers and a local struct: the
// crate has no safe wrapper for them, and they cannot touch Rust memory.
#[allow(unsafe_code)]
fn accept_failures_are_counted_and_paced() {
    // The descriptor limit is the process's: only where each test has a
    // process of its own (nextest, as scripts/test runs the suite).
    if std::env::var_os("NEXTEST").is_none() {
        eprintln!("needs nextest's process per test; run with cargo nextest");
        return;
    }
    let mut rig = Rig::new("emfile");
    let _client = UnixStream::connect(&rig.path).unwrap();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    // The lowest free descriptor: nothing new can be opened below it.
    let lowest_free = unsafe { libc::dup(0) };
    assert!(lowest_free > 0);
    unsafe { libc::close(lowest_free) };
    let tight = libc::rlimit {
        rlim_cur: lowest_free as libc::rlim_t,
        ..limit
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &tight) }, 0);
    let started = std::time::Instant::now();
    for _ in 0..20 {
        rig.mux.host_event(&rig.poll, 1 << 32, EventSet::IN);
    }
    let elapsed = started.elapsed();
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    assert_eq!(rig.counters.accept_failures.load(Ordering::Relaxed), 20);
    assert!(
        elapsed >= Duration::from_millis(20 * 10),
        "each failure pauses the worker: {elapsed:?}"
    );
    // Descriptors are back: the waiting client is taken.
    rig.mux.host_event(&rig.poll, 1 << 32, EventSet::IN);
    assert_eq!(rig.counters.accept_failures.load(Ordering::Relaxed), 20);
    assert_eq!(rig.poll.fds.borrow().len(), 2, "listener and handshake");
    let _ = std::fs::remove_dir_all(&rig.dir);
}
