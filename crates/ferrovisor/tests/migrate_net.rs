//! Live migration of a Linux guest with a disk and a network interface (a
//! TAP in a namespace), both ferrovisor processes in the namespace: the
//! guest streams a counter over one TCP connection to a peer in the
//! namespace and writes each value to its disk; mid-run the VM moves to
//! the destination, which takes over the disk (the source hands its
//! locks over) and the TAP (the source detaches). The peer must see every
//! value once, in order, on the one connection, and the disk image must
//! hold every write. And a migration that fails after the handover (the
//! destination cannot restore) leaves the source with its TAP and disk:
//! the guest answers TCP from the namespace and writes its disk after it.
//! SKIPPED without the test guest or network namespaces (see
//! tests/net.rs).

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::firecracker::{serial, temp_dir, wait_line, Instance};
use common::migration::{free_port, migrate, migrate_body, Destination};
use common::netns::Netns;
use vmm::migration::protocol::Frame;

const HOST_IP: &str = "10.0.3.1";
const HOST_ADDR: &str = "10.0.3.1/24";
const GUEST_IP: &str = "10.0.3.15";
const TAP: &str = "fvtapmg0";
const PORT: u16 = 7000;
const COUNT: u32 = 40;

/// The peer: accepts one connection, and prints what arrives on it until
/// the last value (then closes it) or the end of the stream.
const PEER: &str = r#"
import socket, sys
host, port, last = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
data = b""
while not data.endswith(b"net=" + last + b"\n"):
    chunk = c.recv(4096)
    if not chunk:
        break
    data += chunk
c.close()
sys.stdout.write(data.decode(errors="replace"))
"#;

/// The peer's process, killed if the test ends early.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn script() -> String {
    format!(
        "ip link set eth0 up && ip addr add {GUEST_IP}/24 dev eth0; \
         (i=0; while [ $i -lt {COUNT} ]; do i=$((i+1)); echo net=$i; \
         echo tick$i | dd of=/dev/vda bs=512 seek=$i conv=fsync 2>/dev/null; \
         echo tick=$i >&2; sleep 0.3; done) | nc {HOST_IP} {PORT}; echo nc-exit=$?"
    )
}

/// A 1-vCPU, 256 MiB Linux guest running `script`, its serial in `out`,
/// with `disk` as a writable drive and the namespace's TAP.
fn configure(vm: &Instance, guest: &common::Guest, script: &str, out: &Path, disk: &Path) {
    configure_diskless(vm, guest, script, out);
    vm.ok(
        "PUT",
        "/drives/data",
        &format!(
            r#"{{"drive_id": "data", "path_on_host": "{}", "is_root_device": false, "is_read_only": false}}"#,
            disk.display()
        ),
    );
}

/// [`configure`] without the disk.
fn configure_diskless(vm: &Instance, guest: &common::Guest, script: &str, out: &Path) {
    vm.put_linux_boot(guest, script);
    vm.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
    );
    vm.ok(
        "PUT",
        "/serial",
        &format!(r#"{{"serial_out_path": "{}"}}"#, out.display()),
    );
    vm.ok(
        "PUT",
        "/network-interfaces/eth0",
        &format!(r#"{{"iface_id": "eth0", "host_dev_name": "{TAP}"}}"#),
    );
}

fn tick(line: &str) -> u32 {
    line.trim()
        .strip_prefix("tick=")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_linux_guest_keeps_its_tcp_connection_and_disk_across_a_migration() {
    let Some(guest) = common::guest() else {
        return;
    };
    let Some(ns) = Netns::new("migrate-net", TAP, Some(HOST_ADDR)) else {
        return;
    };
    let dir = temp_dir("migrate-net");
    let out = dir.join("serial.out");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();

    let mut peer = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c", PEER, HOST_IP])
        .arg(PORT.to_string())
        .arg(COUNT.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Peer)
        .expect("python3 for the TCP peer");
    let mut peer_out = std::io::BufReader::new(peer.0.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut peer_out, &mut first).unwrap();
    assert_eq!(first.trim(), "listening");
    let (tx, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut peer_out, &mut rest);
        let _ = tx.send(rest);
    });

    let src = Instance::start_via("migrate-net-src", &ns.wrapper(), &["--accel", "emu"]);
    configure(&src, &guest, &script(), &out, &disk);
    let port = free_port();
    let dst = Destination::start_via(&ns.wrapper(), port, &[]);
    src.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    wait_line(&out, common::BOOT_TIMEOUT, |l| tick(l) >= 5);
    let info = migrate(&src, port);
    assert!(
        serial(&out).lines().all(|l| tick(l) < COUNT),
        "the workload ended before the migration"
    );
    let ended = src.wait(Duration::from_secs(30));
    assert_eq!(ended.status, Some(0), "source stderr:\n{}", ended.stderr);
    let (status, stderr) = dst.wait(common::BOOT_TIMEOUT);
    let console = serial(&out);
    assert_eq!(
        status,
        Some(0),
        "destination stderr:\n{stderr}\nserial:\n{console}"
    );

    let received = received
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("the peer did not end\nserial:\n{console}"));
    drop(peer);
    let want: String = (1..=COUNT).map(|i| format!("net={i}\n")).collect();
    assert_eq!(
        received, want,
        "the peer's one connection\nserial:\n{console}"
    );
    assert!(console.contains("nc-exit=0"), "{console}");
    let ticks: Vec<u32> = console.lines().map(tick).filter(|&t| t > 0).collect();
    assert_eq!(ticks, (1..=COUNT).collect::<Vec<_>>(), "{console}");
    let image = std::fs::read(&disk).unwrap();
    for i in 1..=COUNT as usize {
        let want = format!("tick{i}\n");
        assert_eq!(
            &image[i * 512..i * 512 + want.len()],
            want.as_bytes(),
            "sector {i} of the disk"
        );
    }
    eprintln!("linux with disk and TAP on emu: {info}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A destination in namespace `ns` (on its loopback) that takes the
/// pre-copy and the state, then answers that it could not restore.
fn failing_destination(ns: &str) -> (u16, std::thread::JoinHandle<bool>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = format!("/var/run/netns/{ns}");
    let thread = std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).unwrap();
        // SAFETY: setns on an open namespace file; it moves only this
        // thread into the namespace.
        let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(listener.local_addr().unwrap().port()).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        assert!(matches!(
            Frame::read_from(&mut stream).unwrap(),
            Frame::Hello(_)
        ));
        Frame::Ready.write_to(&mut stream).unwrap();
        loop {
            match Frame::read_from(&mut stream) {
                Ok(Frame::State { .. }) => break,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
        Frame::Failed("this test's destination restores nothing".into())
            .write_to(&mut stream)
            .unwrap();
        true
    });
    (rx.recv().unwrap(), thread)
}

#[test]
fn a_migration_that_fails_after_the_handover_leaves_the_source_its_tap_and_disk() {
    let Some(guest) = common::guest() else {
        return;
    };
    let Some(ns) = Netns::new("migrate-fail-net", TAP, Some(HOST_ADDR)) else {
        return;
    };
    let dir = temp_dir("migrate-fail-net-files");
    let out = dir.join("serial.out");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let script = format!(
        "ip link set eth0 up && ip addr add {GUEST_IP}/24 dev eth0; echo ready; \
         nc -l -p 5000 >/tmp/go; echo go=$(cat /tmp/go); \
         echo after-failed-migration | dd of=/dev/vda bs=512 seek=3 conv=fsync 2>/dev/null; \
         echo disk-write=$?"
    );
    let vm = Instance::start_via("migrate-fail-net", &ns.wrapper(), &["--accel", "emu"]);
    configure(&vm, &guest, &script, &out, &disk);
    vm.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    wait_line(&out, common::BOOT_TIMEOUT, |l| l.trim() == "ready");
    std::thread::sleep(Duration::from_millis(500));

    let (port, destination) = failing_destination(&ns.name);
    let r = vm.req("PUT", "/ferrovisor/migrate", Some(&migrate_body(port)));
    assert_eq!(r.status, 400, "{}", r.body);
    let message = r.fault_message().unwrap_or_default();
    assert!(message.contains("could not restore"), "{message}");
    assert!(destination.join().unwrap(), "the state never arrived");
    // The VM runs on here, with its TAP (attached again, polled again)
    // and its disk.
    assert!(
        ns.send_tcp_when_accepted(GUEST_IP, 5000, "go", Duration::from_secs(60)),
        "the guest's TCP port never accepted after the failed migration:\n{}",
        serial(&out)
    );
    let ended = vm.wait(Duration::from_secs(120));
    let console = serial(&out);
    assert_eq!(ended.status, Some(0), "{}\n{console}", ended.stderr);
    for want in ["go=go", "disk-write=0"] {
        assert!(console.contains(want), "{want} in:\n{console}");
    }
    let image = std::fs::read(&disk).unwrap();
    assert_eq!(&image[3 * 512..3 * 512 + 22], b"after-failed-migration");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The MMDS moves with the VM: the guest takes a V2 session token on the
/// source and keeps reading the store with it on the destination, whose
/// API (`migrate-receive --api-sock`) serves the store the guest reads.
#[test]
fn the_mmds_store_and_its_sessions_move_with_the_vm() {
    let Some(guest) = common::guest() else {
        return;
    };
    let Some(ns) = Netns::new("migrate-mmds", TAP, None) else {
        return;
    };
    let dir = temp_dir("migrate-mmds-files");
    let out = dir.join("serial.out");
    let dst_sock = dir.join("dst.sock");
    let get = |t: &str, key: &str| {
        format!(
            "wget -q -O - --header \"X-metadata-token: {t}\" \
             http://169.254.169.254/latest/meta-data/{key}"
        )
    };
    let script = format!(
        "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6 2>/dev/null; \
         ip addr add 169.254.0.2/16 dev eth0 && ip link set eth0 up; \
         T=$(printf 'PUT /latest/api/token HTTP/1.0\\r\\nX-metadata-token-ttl-seconds: 600\\r\\n\\r\\n' \
             | nc 169.254.169.254 80 | tail -n 1); \
         i=0; while [ $i -lt 400 ]; do i=$((i+1)); w=$({}); echo where=$w; \
           [ \"$w\" = destination ] && break; sleep 0.3; done; \
         echo ami=$({}); {} >/dev/null 2>&1; echo without-token=$?",
        get("$T", "where"),
        get("$T", "ami-id"),
        get("x", "ami-id"),
    );
    let src = Instance::start_via(
        "migrate-mmds-src",
        &ns.wrapper(),
        &["--accel", "emu", "--mmds-size-limit", "4096"],
    );
    configure_diskless(&src, &guest, &script, &out);
    src.ok(
        "PUT",
        "/mmds/config",
        r#"{"network_interfaces": ["eth0"], "version": "V2"}"#,
    );
    src.ok(
        "PUT",
        "/mmds",
        r#"{"latest": {"meta-data": {"ami-id": "ami-12345678", "where": "source"}}}"#,
    );
    let port = free_port();
    let dst = Destination::start_via(
        &ns.wrapper(),
        port,
        &["--api-sock", dst_sock.to_str().unwrap()],
    );
    src.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    wait_line(&out, common::BOOT_TIMEOUT, |l| l == "where=source");
    migrate(&src, port);
    let ended = src.wait(Duration::from_secs(30));
    assert_eq!(ended.status, Some(0), "source stderr:\n{}", ended.stderr);

    // The destination's API serves the store the source had, and what it
    // changes reaches the guest, which still holds its token.
    // (Its socket is bound once the VM runs there: just after the
    // source's answer.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        match api::client::Client::connect(&dst_sock) {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() > deadline => panic!("the destination's API: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let r = client.request("GET", "/mmds", None).unwrap();
    let store: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(store["latest"]["meta-data"]["ami-id"], "ami-12345678");
    let r = client
        .request(
            "PATCH",
            "/mmds",
            Some(r#"{"latest": {"meta-data": {"where": "destination"}}}"#),
        )
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.body);
    let (status, stderr) = dst.wait(common::BOOT_TIMEOUT);
    let console = serial(&out);
    assert_eq!(
        status,
        Some(0),
        "destination stderr:\n{stderr}\nserial:\n{console}"
    );
    let reads: Vec<&str> = console
        .lines()
        .filter_map(|l| l.strip_prefix("where="))
        .collect();
    assert_eq!(reads.last(), Some(&"destination"), "{console}");
    assert!(
        reads.iter().all(|w| *w == "source" || *w == "destination"),
        "a read failed across the migration:\n{console}"
    );
    for want in ["ami=ami-12345678", "without-token=1"] {
        assert!(console.contains(want), "{want} in:\n{console}");
    }
    assert_eq!(ns.tap_stat("rx_packets"), 0, "MMDS frames reached the TAP");
    let _ = std::fs::remove_dir_all(&dir);
}
