//! Live migration between two ferrovisor processes over TCP: the ticker
//! guest moved mid-run on emu and kvm goes on without a gap or a repeat
//! and the source exits; a Linux guest whose workload checks its own data
//! finishes correctly on the destination; a destination that refuses or
//! dies mid-migration leaves the source running and answering; one that
//! takes the whole state and never answers leaves it paused, resumable.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::firecracker::{serial, temp_dir, wait_line, Instance};
use common::migration::{free_port, migrate, migrate_body, Destination};
use common::ticker::{configure, wait_output, DONE_STATUS, START, TEXT};
use vmm::migration::protocol::Frame;

#[test]
fn a_tiny_guest_moves_mid_run_without_a_gap() {
    for accel in common::accels() {
        let files = temp_dir(&format!("migrate-tiny-{accel}"));
        let out = files.join("serial.out");
        let src = Instance::start(&format!("migrate-src-{accel}"), &["--accel", accel]);
        configure(&src, &files, accel, &out, false);
        let port = free_port();
        let dst = Destination::start(port, &[]);
        src.ok("PUT", "/actions", START);
        wait_output(&out, 5);
        let info = migrate(&src, port);
        let before = serial(&out).len();
        assert!(
            before < TEXT.len(),
            "{accel}: the guest finished before the migration"
        );
        let ended = src.wait(Duration::from_secs(30));
        assert_eq!(ended.status, Some(0), "{accel}: stderr:\n{}", ended.stderr);
        let (status, stderr) = dst.wait(Duration::from_secs(120));
        assert_eq!(status, Some(DONE_STATUS), "{accel}: stderr:\n{stderr}");
        assert_eq!(
            serial(&out),
            TEXT,
            "{accel}: the two processes' output is one uninterrupted run's"
        );
        eprintln!("{accel}: migrated after {before} characters: {info}");
        let _ = std::fs::remove_dir_all(&files);
    }
}

/// The ticker on emu through the API, started and printing: its files'
/// directory, serial output file and instance.
fn running_ticker(name: &str) -> (std::path::PathBuf, std::path::PathBuf, Instance) {
    let accel = "emu";
    let files = temp_dir(&format!("migrate-{name}"));
    let out = files.join("serial.out");
    let src = Instance::start(&format!("migrate-{name}-src"), &["--accel", accel]);
    configure(&src, &files, accel, &out, false);
    src.ok("PUT", "/actions", START);
    wait_output(&out, 3);
    (files, out, src)
}

/// A fake destination: takes the hello, says ready, reads `frames` more
/// frames and drops the connection (a destination that died).
fn dying_destination(frames: usize) -> (u16, std::thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let hello = Frame::read_from(&mut stream).unwrap();
        assert!(matches!(hello, Frame::Hello(_)), "{hello:?}");
        Frame::Ready.write_to(&mut stream).unwrap();
        let mut pages = 0;
        for _ in 0..frames {
            if let Ok(Frame::Pages { .. }) = Frame::read_from(&mut stream) {
                pages += 1;
            }
        }
        pages
    });
    (port, thread)
}

/// A fake destination that takes everything, the state included, answers
/// *prepared*, takes the source's *go* and then drops the connection
/// without answering (it died starting the VM, or started it and the
/// network broke: the source cannot tell). With `go: false` it drops the
/// connection instead of answering *prepared* (it died restoring).
fn silent_destination(go: bool) -> (u16, std::thread::JoinHandle<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let hello = Frame::read_from(&mut stream).unwrap();
        assert!(matches!(hello, Frame::Hello(_)), "{hello:?}");
        Frame::Ready.write_to(&mut stream).unwrap();
        loop {
            match Frame::read_from(&mut stream) {
                Ok(Frame::State { .. }) => break,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        if !go {
            return true;
        }
        Frame::Prepared.write_to(&mut stream).unwrap();
        matches!(Frame::read_from(&mut stream), Ok(Frame::Go))
    });
    (port, thread)
}

/// Issue 12 point 5: two running copies of one VM (two writers on one
/// disk) must never come out of a broken migration. A destination that
/// dies after taking the whole state but before the source's *go* cannot
/// have started the VM: the source runs on. Once the go has left, a lost
/// answer leaves the source paused, with a message that says why, until
/// it is resumed (which takes its disks and TAPs back) — then it goes on
/// as before.
#[test]
fn a_lost_answer_after_the_go_leaves_the_source_paused_until_resumed() {
    let (files, out, src) = running_ticker("lost");
    // Died restoring: the go never left, the source runs on.
    let (port, fake) = silent_destination(false);
    src.bad(
        "PUT",
        "/ferrovisor/migrate",
        Some(&migrate_body(port)),
        "the migration stream broke",
    );
    assert!(fake.join().unwrap(), "the destination got the state");
    assert_eq!(src.get("/")["state"], "Running");
    // Lost after the go: paused until someone who knows resumes it.
    let (port, fake) = silent_destination(true);
    src.bad(
        "PUT",
        "/ferrovisor/migrate",
        Some(&migrate_body(port)),
        "may be running the VM",
    );
    assert!(fake.join().unwrap(), "the destination got the go");
    assert_eq!(src.get("/")["state"], "Paused");
    let seen = serial(&out).len();
    assert!(seen < TEXT.len(), "the guest finished before the migration");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(serial(&out).len(), seen, "the paused source went on");
    src.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    let ended = src.wait(Duration::from_secs(120));
    assert_eq!(ended.status, Some(DONE_STATUS), "stderr:\n{}", ended.stderr);
    assert_eq!(serial(&out), TEXT);
    let _ = std::fs::remove_dir_all(&files);
}

#[test]
fn the_source_runs_on_when_the_destination_dies_or_refuses() {
    let (files, out, src) = running_ticker("fail");

    // Nobody listens.
    src.bad(
        "PUT",
        "/ferrovisor/migrate",
        Some(&migrate_body(free_port())),
        "cannot connect to tcp:127.0.0.1:",
    );
    // The destination dies after a few frames of memory.
    let (port, fake) = dying_destination(3);
    src.bad(
        "PUT",
        "/ferrovisor/migrate",
        Some(&migrate_body(port)),
        "the migration stream broke",
    );
    assert_eq!(fake.join().unwrap(), 3, "the source sent memory first");
    assert_eq!(src.get("/")["state"], "Running");
    // A real destination on another accelerator refuses.
    if common::accels().contains(&"kvm") {
        let port = free_port();
        let dst = Destination::start(port, &["--accel", "kvm"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let message = loop {
            let r = src.req("PUT", "/ferrovisor/migrate", Some(&migrate_body(port)));
            let m = r.fault_message().unwrap_or_default();
            if !m.contains("cannot connect") || Instant::now() > deadline {
                break m;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(message.contains("refused"), "{message}");
        assert!(message.contains("emu accelerator"), "{message}");
        let (status, _) = dst.wait(Duration::from_secs(20));
        assert_eq!(status, Some(1));
    }
    // Still running: the output grows, the guest ends as it would have.
    assert_eq!(src.get("/")["state"], "Running");
    let seen = serial(&out).len();
    wait_output(&out, (seen + 2).min(TEXT.len()));
    let ended = src.wait(Duration::from_secs(120));
    assert_eq!(ended.status, Some(DONE_STATUS), "stderr:\n{}", ended.stderr);
    assert_eq!(serial(&out), TEXT);
    let _ = std::fs::remove_dir_all(&files);
}

/// The workload: each round fills a tmpfs file with data derived from
/// the round, checksums it, copies it, and checks the copy and the file
/// against the checksum; `tick=N ok` or `tick=N BAD`.
const WORKLOAD: &str = "i=0; while [ $i -lt 60 ]; do i=$((i+1)); \
    seq $((i*1000)) $((i*1000+20000)) > /tmp/a; s=$(md5sum < /tmp/a); \
    cp /tmp/a /tmp/b; t=$(md5sum < /tmp/b); u=$(seq $((i*1000)) $((i*1000+20000)) | md5sum); \
    if [ \"$s\" = \"$t\" ] && [ \"$s\" = \"$u\" ]; then echo tick=$i ok; else echo tick=$i BAD; fi; \
    done; echo workload-done";

fn tick(line: &str) -> u32 {
    line.strip_prefix("tick=")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_linux_workload_finishes_correctly_on_the_destination() {
    let Some(guest) = common::guest() else {
        return;
    };
    let files = temp_dir("migrate-linux");
    let out = files.join("serial.out");
    let src = Instance::start("migrate-linux-src", &["--accel", "emu"]);
    src.put_linux_boot(&guest, WORKLOAD);
    src.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
    );
    src.ok(
        "PUT",
        "/serial",
        &format!(r#"{{"serial_out_path": "{}"}}"#, out.display()),
    );
    let port = free_port();
    let dst = Destination::start(port, &[]);
    src.ok("PUT", "/actions", START);
    wait_line(&out, common::BOOT_TIMEOUT, |l| tick(l) >= 3);
    let info = migrate(&src, port);
    assert!(
        !serial(&out).contains("workload-done"),
        "the workload ended before the migration"
    );
    let ended = src.wait(Duration::from_secs(30));
    assert_eq!(ended.status, Some(0), "stderr:\n{}", ended.stderr);
    let (status, stderr) = dst.wait(common::BOOT_TIMEOUT);
    assert_eq!(
        status,
        Some(0),
        "stderr:\n{stderr}\nserial:\n{}",
        serial(&out)
    );
    check_workload(&out);
    eprintln!("linux on emu: {info}");
    let _ = std::fs::remove_dir_all(&files);
}

/// Every round ran once, in order, and checked out.
fn check_workload(out: &Path) {
    let console = serial(out);
    let ticks: Vec<&str> = console.lines().filter(|l| l.starts_with("tick=")).collect();
    let numbers: Vec<u32> = ticks.iter().map(|l| tick(l)).collect();
    assert_eq!(numbers, (1..=60).collect::<Vec<_>>(), "{console}");
    assert!(ticks.iter().all(|l| l.ends_with(" ok")), "{console}");
    assert!(console.contains("workload-done"), "{console}");
}
