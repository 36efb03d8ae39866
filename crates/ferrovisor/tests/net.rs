//! End to end: the Debian test guest (scripts/build-test-guest) on the emu
//! accelerator talks to the host through virtio-net on a TAP device.
//!
//! Every test makes its own network namespace with a TAP (10.0.2.1/24) in
//! it and runs ferrovisor there (`ip netns exec`), so that the traffic
//! never leaves the namespace; the namespace is deleted when the test ends,
//! passed or not. Without `ip netns` or /dev/net/tun the tests are SKIPPED
//! (or fail with `FERROVISOR_REQUIRE_NET=1`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{guest, spawn_via, Guest};

const HOST_IP: &str = "10.0.2.1";
const GUEST_IP: &str = "10.0.2.15";
const TAP: &str = "fvtap0";

/// A network namespace with a configured TAP, deleted on drop.
struct Netns {
    name: String,
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

impl Netns {
    /// A namespace with the TAP `TAP` at HOST_IP/24, up; None (SKIPPED)
    /// when this host cannot make one.
    fn new(label: &str) -> Option<Netns> {
        if !Path::new("/dev/net/tun").exists() {
            conformance::skip_or_fail("net", "no /dev/net/tun");
            return None;
        }
        let name = format!("fv-test-{}-{label}", std::process::id());
        let out = run("ip", &["netns", "add", &name]);
        if !out.status.success() {
            conformance::skip_or_fail(
                "net",
                &format!(
                    "ip netns add failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            );
            return None;
        }
        let ns = Netns { name };
        for args in [
            &["link", "set", "lo", "up"][..],
            &["tuntap", "add", "dev", TAP, "mode", "tap"],
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", TAP],
            &["link", "set", TAP, "up"],
        ] {
            let out = ns.exec("ip", args);
            if !out.status.success() {
                conformance::skip_or_fail(
                    "net",
                    &format!(
                        "ip {} failed in the namespace: {}",
                        args.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                );
                return None;
            }
        }
        Some(ns)
    }

    /// Runs `program args` in the namespace.
    fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn wrapper(&self) -> [&str; 3] {
        ["netns", "exec", &self.name]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Starts the guest with `script` inside the namespace, with `--net`.
fn spawn_in(ns: &Netns, guest: &Guest, script: &str, net: &str) -> common::Running {
    let mut wrapper = vec!["ip"];
    wrapper.extend_from_slice(&ns.wrapper());
    spawn_via(&wrapper, guest, 1, script, &["--net", net])
}

/// A directory removed on drop.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A ping for the host side: the host's, or the busybox of the test
/// guest's initramfs (in a directory that goes with the TempDir).
fn host_ping(guest: &Guest) -> Option<(Vec<String>, TempDir)> {
    if Command::new("ping")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return Some((vec!["ping".into()], TempDir(None)));
    }
    let dir = std::env::temp_dir().join(format!("ferrovisor-net-{}", std::process::id()));
    let busybox = dir.join("busybox");
    let guard = TempDir(Some(dir.clone()));
    {
        std::fs::create_dir_all(&dir).ok()?;
        let initrd = std::fs::File::open(&guest.initrd).ok()?;
        let out = Command::new("cpio")
            .args(["-i", "--quiet", "--to-stdout", "bin/busybox"])
            .stdin(initrd)
            .output()
            .ok()?;
        if !out.status.success() || out.stdout.is_empty() {
            return None;
        }
        let tmp = dir.join("busybox.tmp");
        std::fs::write(&tmp, &out.stdout).ok()?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).ok()?;
        std::fs::rename(&tmp, &busybox).ok()?;
    }
    Some((vec![path(&busybox), "ping".into()], guard))
}

fn path(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}

#[test]
fn linux_pings_the_host_over_virtio_net() {
    let Some(guest) = guest() else { return };
    let Some(ns) = Netns::new("ping") else { return };
    let b = spawn_in(
        &ns,
        &guest,
        &format!(
            "echo mac=$(cat /sys/class/net/eth0/address); \
             ip link set eth0 up && ip addr add {GUEST_IP}/24 dev eth0 && \
             ping -c 3 -W 5 {HOST_IP}"
        ),
        &format!("tap={TAP}"),
    )
    .wait();
    b.expect("mac=06:00:00:00:00:01");
    b.expect("3 packets transmitted, 3 packets received, 0% packet loss");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(b.status, Some(0), "exit status; tail:\n{}", b.tail());
}

#[test]
fn the_host_pings_linux_and_talks_tcp_to_it() {
    let Some(guest) = guest() else { return };
    let Some(ns) = Netns::new("pong") else { return };
    let Some((ping, _busybox_dir)) = host_ping(&guest) else {
        conformance::skip_or_fail("net", "no ping on the host and no busybox to use");
        return;
    };
    // The guest comes up, then waits for the host's message on TCP port
    // 5000 and prints it.
    let running = spawn_in(
        &ns,
        &guest,
        &format!(
            "echo mac=$(cat /sys/class/net/eth0/address); \
             ip link set eth0 up && ip addr add {GUEST_IP}/24 dev eth0 && \
             echo said=$(nc -l -p 5000)"
        ),
        &format!("tap={TAP},mac=52:54:00:12:34:56"),
    );
    let ping_args = |count: &str, wait: &str| {
        let mut args: Vec<String> = ping[1..].to_vec();
        args.extend(["-c", count, "-W", wait, GUEST_IP].map(String::from));
        args
    };
    // Wait for the guest's network to come up (the boot on emu takes
    // seconds; more on a loaded host).
    let deadline = Instant::now() + common::BOOT_TIMEOUT;
    let mut up = false;
    while !up && Instant::now() < deadline {
        let args = ping_args("1", "1");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        up = ns.exec(&ping[0], &args).status.success();
        if !up {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // (Dropping `running` on a panic ends the VM.)
    assert!(up, "the guest never answered a ping");
    let args = ping_args("3", "5");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ns.exec(&ping[0], &args);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    // Tell the guest to finish (its nc may need a moment to listen).
    let mut told = false;
    for _ in 0..60 {
        let script = format!("echo hello-from-host >/dev/tcp/{GUEST_IP}/5000");
        if ns.exec("bash", &["-c", &script]).status.success() {
            told = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let b = running.wait();
    assert!(
        report.contains("3 packets transmitted, 3 packets received")
            || report.contains("3 packets transmitted, 3 received"),
        "host ping: {report}\nguest console tail:\n{}",
        b.tail()
    );
    assert!(
        told,
        "the guest's TCP port never accepted; tail:\n{}",
        b.tail()
    );
    b.expect("mac=52:54:00:12:34:56");
    b.expect("said=hello-from-host");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(b.status, Some(0), "exit status; tail:\n{}", b.tail());
}
