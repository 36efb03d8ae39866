//! A network namespace with a TAP in it, deleted on drop: the guest's
//! traffic never leaves the namespace. None (SKIPPED, or a failure with
//! `FERROVISOR_REQUIRE_NET=1`) when this host cannot make one.

use std::path::Path;
use std::process::{Command, Output, Stdio};

pub struct Netns {
    pub name: String,
    pub tap: String,
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

impl Netns {
    /// A namespace `fv-<label>-<pid>` with the TAP `tap` at `host_cidr`,
    /// up, IPv6 off (the host sends the guest nothing of its own).
    pub fn new(label: &str, tap: &str, host_cidr: &str) -> Option<Netns> {
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
                conformance::skip_or_fail("net", &format!("no 'ip' command: {e}"));
                return None;
            }
        }
        let ns = Netns {
            name,
            tap: tap.to_string(),
        };
        let disable_ipv6 = format!("net.ipv6.conf.{tap}.disable_ipv6=1");
        for (program, args) in [
            ("ip", &["tuntap", "add", "dev", tap, "mode", "tap"][..]),
            ("sysctl", &["-qw", &disable_ipv6]),
            ("ip", &["addr", "add", host_cidr, "dev", tap]),
            ("ip", &["link", "set", tap, "up"]),
        ] {
            let out = ns.exec(program, args);
            if !out.status.success() {
                let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                conformance::skip_or_fail("net", &format!("{program} {args:?}: {why}"));
                return None;
            }
        }
        Some(ns)
    }

    /// Runs `program` in the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// The prefix that runs a command in the namespace.
    pub fn wrapper(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// One of the TAP's counters as the host sees it (`rx_packets`:
    /// frames the guest sent).
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
