//! A network namespace with a TAP in it, for the tests whose guest talks
//! to the host (net.rs, mmds.rs): ferrovisor runs inside it through
//! `ip netns exec` ([`Netns::wrapper`]), so no frame leaves it, and it is
//! deleted on drop, passed or not. Without /dev/net/tun or `ip netns` the
//! tests are SKIPPED (or fail with `FERROVISOR_REQUIRE_NET=1`).

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `program args` to its end, standard input empty.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// A network namespace with a TAP that is up, deleted on drop.
pub struct Netns {
    pub name: String,
    pub tap: String,
}

impl Netns {
    /// The namespace `fv-<label>-<pid>` with `lo` up and the TAP `tap`,
    /// up, with the address `address` (e.g. `10.0.2.1/24`) if given; None
    /// (SKIPPED) when this host cannot make one.
    pub fn new(label: &str, tap: &str, address: Option<&str>) -> Option<Netns> {
        if !Path::new("/dev/net/tun").exists() {
            conformance::skip_or_fail("net", "no /dev/net/tun");
            return None;
        }
        let name = format!("fv-{label}-{}", std::process::id());
        match Command::new("ip").args(["netns", "add", &name]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                conformance::skip_or_fail("net", &format!("ip netns add failed: {why}"));
                return None;
            }
            Err(e) => {
                conformance::skip_or_fail("net", &format!("no 'ip' command (iproute2): {e}"));
                return None;
            }
        }
        let ns = Netns {
            name,
            tap: tap.to_string(),
        };
        let out = ns.exec("ip", &["link", "set", "lo", "up"]);
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            conformance::skip_or_fail("net", &format!("ip link set lo up: {why}"));
            return None;
        }
        if let Err(why) = ns.add_tap(tap, address) {
            conformance::skip_or_fail("net", &why);
            return None;
        }
        Some(ns)
    }

    /// Adds the TAP `tap`, with `address` if given, and sets it up.
    pub fn add_tap(&self, tap: &str, address: Option<&str>) -> Result<(), String> {
        let mut steps = vec![vec!["tuntap", "add", "dev", tap, "mode", "tap"]];
        if let Some(address) = address {
            steps.push(vec!["addr", "add", address, "dev", tap]);
        }
        steps.push(vec!["link", "set", tap, "up"]);
        for args in steps {
            let out = self.exec("ip", &args);
            if !out.status.success() {
                let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                return Err(format!(
                    "ip {} failed in the namespace: {why}",
                    args.join(" ")
                ));
            }
        }
        // The host sends the guest nothing of its own (no IPv6 router
        // solicitations or MLD reports), so frame counts are the tests'.
        let ipv6 = format!("net.ipv6.conf.{tap}.disable_ipv6=1");
        let _ = self.exec("sysctl", &["-qw", &ipv6]);
        Ok(())
    }

    /// Runs `program args` in the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Sends `text` over TCP to `ip:port` from the namespace, retrying
    /// until a connection is accepted (true) or `timeout` passes (false).
    pub fn send_tcp_when_accepted(
        &self,
        ip: &str,
        port: u16,
        text: &str,
        timeout: std::time::Duration,
    ) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let script = format!("echo {text} >/dev/tcp/{ip}/{port}");
        while !self.exec("bash", &["-c", &script]).status.success() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        true
    }

    /// The command that runs what follows it in the namespace.
    pub fn wrapper(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// The TAP's counter `name` (`rx_packets`: what the guest
    /// transmitted to the host, `tx_packets`: what the host sent it, ...);
    /// u64::MAX when unreadable.
    pub fn tap_stat(&self, name: &str) -> u64 {
        let path = format!("/sys/class/net/{}/statistics/{name}", self.tap);
        let out = self.exec("cat", &[&path]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(u64::MAX)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// The test guest's busybox (static), taken from its initramfs, for the
/// host side: ping and nc the same as in the guest, whatever the host has.
pub fn host_busybox(guest: &super::Guest, dir: &std::path::Path) -> Option<String> {
    let cpio = std::fs::read(&guest.initrd).ok()?;
    let data = newc_file(&cpio, "bin/busybox")?;
    let busybox = dir.join("busybox");
    std::fs::write(&busybox, data).ok()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&busybox, std::fs::Permissions::from_mode(0o755)).ok()?;
    busybox.to_str().map(String::from)
}

/// The contents of `name` in an uncompressed newc ("070701") cpio archive,
/// read here so that no host `cpio` tool is needed.
fn newc_file<'a>(cpio: &'a [u8], name: &str) -> Option<&'a [u8]> {
    const HEADER: usize = 110;
    let field = |h: &[u8], i: usize| -> Option<usize> {
        let text = std::str::from_utf8(h.get(6 + 8 * i..14 + 8 * i)?).ok()?;
        usize::from_str_radix(text, 16).ok()
    };
    let align4 = |n: usize| n.div_ceil(4) * 4;
    let mut at = 0;
    while let Some(h) = cpio.get(at..at + HEADER) {
        if &h[..6] != b"070701" {
            return None;
        }
        // Fields after the magic: ino mode uid gid nlink mtime filesize
        // devmajor devminor rdevmajor rdevminor namesize check.
        let (size, name_len) = (field(h, 6)?, field(h, 11)?);
        let entry = cpio.get(at + HEADER..at + HEADER + name_len)?;
        let entry = entry.strip_suffix(&[0]).unwrap_or(entry);
        let data_at = align4(at + HEADER + name_len);
        if entry == b"TRAILER!!!" {
            return None;
        }
        if entry == name.as_bytes() {
            return cpio.get(data_at..data_at + size);
        }
        at = align4(data_at + size);
    }
    None
}
