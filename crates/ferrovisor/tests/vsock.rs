//! End to end: virtio-vsock between the Debian test guest (its own
//! vmw_vsock_virtio_transport driver, the guest's /bin/vsock tool from
//! guest/tools/vsock.c) and programs on the host, over the Unix sockets of
//! `--vsock cid=N,socket=PATH` (Firecracker's convention).
//!
//! The boot helpers are in common/ (guest lookup, SKIPPED without a guest
//! unless `FERROVISOR_REQUIRE_GUEST=1`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{guest, spawn};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ferrovisor-vsock-e2e-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Connects to the guest's `port` through the device's socket: retried
/// until the guest listens (a refusal closes the client) or `deadline`.
fn connect_to_guest(socket: &PathBuf, port: u32, deadline: Instant) -> (UnixStream, String) {
    loop {
        assert!(
            Instant::now() < deadline,
            "the guest never accepted on port {port}"
        );
        let Ok(mut stream) = UnixStream::connect(socket) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        if stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .is_err()
        {
            continue;
        }
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 && line.ends_with('\n') => return (stream, line),
            // Refused (the guest does not listen yet): closed.
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

#[test]
fn a_host_program_connects_to_a_guest_port_and_gets_its_echo() {
    let Some(guest) = guest() else { return };
    let dir = temp_dir("h2g");
    let socket = dir.join("v.sock");
    let vsock_arg = format!("cid=3,socket={}", socket.display());
    let running = spawn(
        &guest,
        1,
        "vsock listen 5000; echo listen-exit=$?",
        &["--vsock", &vsock_arg],
    );
    let deadline = Instant::now() + common::BOOT_TIMEOUT;
    let (mut stream, ok) = connect_to_guest(&socket, 5000, deadline);
    let host_port: u32 = ok
        .strip_prefix("OK ")
        .and_then(|p| p.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("handshake answer {ok:?}"));
    assert!(host_port >= 1024, "{ok:?}");

    // A message larger than one packet, a credit window and the device's
    // read-ahead: the echo exercises credit updates both ways.
    let message: Vec<u8> = (0..600_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let message = message.clone();
        std::thread::spawn(move || {
            stream.write_all(b"hello-vsock\n").unwrap();
            stream.write_all(&message).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut echo = Vec::new();
    stream.read_to_end(&mut echo).expect("read the echo");
    writer.join().unwrap();
    assert_eq!(&echo[..12], b"hello-vsock\n");
    assert!(
        echo[12..] == message[..],
        "{} bytes came back of {}",
        echo.len() - 12,
        message.len()
    );

    let b = running.wait();
    b.expect("listen-exit=0");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(b.status, Some(0), "exit status; tail:\n{}", b.tail());
    assert!(!socket.exists(), "the socket is removed at exit");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_guest_program_connects_to_a_host_socket() {
    guest_connects_to_a_host_socket("mmio");
}

/// The same over virtio-pci, with MSI-X.
#[test]
fn a_guest_program_connects_to_a_host_socket_over_pci() {
    guest_connects_to_a_host_socket("pci");
}

fn guest_connects_to_a_host_socket(transport: &str) {
    let Some(guest) = guest() else { return };
    let dir = temp_dir(&format!("g2h-{transport}"));
    let socket = dir.join("v.sock");
    // Guest connections to host port 6000 go to PATH_6000.
    let server = UnixListener::bind(dir.join("v.sock_6000")).unwrap();
    let host = std::thread::spawn(move || {
        let (mut peer, _) = server.accept().expect("accept");
        let mut got = Vec::new();
        peer.read_to_end(&mut got).expect("read from the guest");
        peer.write_all(b"pong:").unwrap();
        peer.write_all(&got).unwrap();
        got
    });
    let vsock_arg = format!("cid=42,socket={}", socket.display());
    let b = spawn(
        &guest,
        1,
        "echo ping-from-guest | vsock connect 2 6000; echo connect-exit=$?; \
         vsock connect 2 6001 </dev/null; echo refused-exit=$?; \
         echo msi-lines=$(grep -c 'PCI-MSI.*virtio' /proc/interrupts)",
        &["--vsock", &vsock_arg, "--transport", transport],
    )
    .wait();
    let got = host.join().unwrap();
    assert_eq!(got, b"ping-from-guest\n");
    b.expect("pong:ping-from-guest");
    b.expect("connect-exit=0");
    // Nobody at PATH_6001: the guest's connect is refused at once.
    b.expect("refused-exit=1");
    // virtio-pci: the three vsock queues and the configuration have MSI-X
    // vectors; virtio-mmio has none.
    b.expect(if transport == "pci" {
        "msi-lines=4"
    } else {
        "msi-lines=0"
    });
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(b.status, Some(0), "exit status; tail:\n{}", b.tail());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vsock_errors_are_one_line() {
    let Some(guest) = guest() else { return };
    let dir = temp_dir("errors");
    let run = |extra: &[&str]| common::refused(&guest, extra);
    let err = run(&["--vsock", "cid=2,socket=/tmp/x.sock"]);
    assert!(err.contains("cid=2 is reserved"), "{err}");
    let err = run(&["--vsock", "cid=3"]);
    assert!(err.contains("socket=PATH is missing"), "{err}");
    let err = run(&["--vsock", "cid=3,socket=/nonexistent/dir/v.sock"]);
    assert!(
        err.contains("cannot listen on the vsock socket /nonexistent/dir/v.sock"),
        "{err}"
    );
    // A path held by a regular file is not replaced.
    let file = dir.join("file");
    std::fs::write(&file, b"keep").unwrap();
    let arg = format!("cid=3,socket={}", file.display());
    let err = run(&["--vsock", &arg]);
    assert!(err.contains("cannot listen"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    let _ = std::fs::remove_dir_all(&dir);
}
