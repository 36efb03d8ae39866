//! Live migration in the end-to-end tests: a `ferrovisor migrate-receive`
//! destination, and `PUT /ferrovisor/migrate` on a source.

use std::net::TcpListener;
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::firecracker::{spawn_via, take_output, wait_child, Instance};

/// A free TCP port on 127.0.0.1 (bound and let go).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ferrovisor migrate-receive` on `port`.
pub struct Destination {
    child: Child,
    stderr: mpsc::Receiver<Vec<u8>>,
}

impl Destination {
    pub fn start(port: u16, extra: &[&str]) -> Destination {
        Destination::start_via(&[], port, extra)
    }

    /// [`Destination::start`] under the command `wrapper` (e.g. `ip
    /// netns exec NS`).
    pub fn start_via(wrapper: &[&str], port: u16, extra: &[&str]) -> Destination {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["migrate-receive", "--listen", &listen];
        args.extend_from_slice(extra);
        let (child, _stdout, stderr) = spawn_via(wrapper, &args);
        Destination { child, stderr }
    }

    pub fn wait(mut self, timeout: Duration) -> (Option<i32>, String) {
        let status = wait_child(&mut self.child, timeout);
        (status, take_output(&self.stderr))
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn migrate_body(port: u16) -> String {
    format!(r#"{{"destination_url": "tcp:127.0.0.1:{port}"}}"#)
}

/// `PUT /ferrovisor/migrate`, retried while the destination is not
/// listening yet (a refused connection leaves the source as it was).
pub fn migrate(vm: &Instance, port: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = vm.req("PUT", "/ferrovisor/migrate", Some(&migrate_body(port)));
        if r.status == 200 {
            return serde_json::from_str(&r.body).unwrap();
        }
        let message = r.fault_message().unwrap_or_default();
        assert!(
            message.contains("cannot connect") && Instant::now() < deadline,
            "{}: {message}",
            r.status
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
