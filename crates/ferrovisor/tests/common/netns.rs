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
