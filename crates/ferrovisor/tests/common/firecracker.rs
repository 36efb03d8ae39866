//! A ferrovisor started as Firecracker, with its API socket in a temporary
//! directory, for the API tests.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use api::client::{Client, Response};

/// A running `ferrovisor --api-sock ...`; killed when dropped.
pub struct Instance {
    pub child: Child,
    pub sock: PathBuf,
    pub dir: PathBuf,
    pub stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<Vec<u8>>,
    stderr: mpsc::Receiver<Vec<u8>>,
}

/// How an instance ended.
pub struct Ended {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        let _ = tx.send(all);
    });
    rx
}

/// A fresh temporary directory for `name`.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fv-fc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a tiny guest program as a bare ELF into `dir`.
pub fn elf(dir: &Path, name: &str, program: &guests::Program) -> PathBuf {
    let path = dir.join(name);
    let image =
        arch::elf_builder::build_elf64(&[(program.load_addr, &program.code)], program.load_addr);
    std::fs::write(&path, image).unwrap();
    path
}

/// Spawns ferrovisor with `args` (no socket option added), standard input
/// piped, output collected.
pub fn spawn(args: &[&str]) -> (Child, mpsc::Receiver<Vec<u8>>, mpsc::Receiver<Vec<u8>>) {
    spawn_via(&[], args)
}

/// [`spawn`] under the command `wrapper` (e.g. `ip netns exec NS`).
pub fn spawn_via(
    wrapper: &[&str],
    args: &[&str],
) -> (Child, mpsc::Receiver<Vec<u8>>, mpsc::Receiver<Vec<u8>>) {
    let binary = env!("CARGO_BIN_EXE_ferrovisor");
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferrovisor");
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    (child, out, err)
}

/// The serial output written to `path` so far (without carriage returns).
pub fn serial(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .replace('\r', "")
}

/// The lines of `text` that have their end: the last one may still be
/// being written by the guest.
pub fn complete_lines(text: &str) -> std::str::Lines<'_> {
    text[..text.rfind('\n').map_or(0, |end| end + 1)].lines()
}

/// Waits until the serial output in `path` has a complete line for which
/// `want` holds; returns that line.
pub fn wait_line(path: &Path, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(line) = complete_lines(&serial(path)).find(|l| want(l)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no such line; serial:\n{}",
            serial(path)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Instance {
    /// Starts `ferrovisor --api-sock DIR/api.sock ARGS` and waits until the
    /// socket accepts.
    pub fn start(name: &str, args: &[&str]) -> Instance {
        Instance::start_via(name, &[], args)
    }

    /// [`Instance::start`] under the command `wrapper`.
    pub fn start_via(name: &str, wrapper: &[&str], args: &[&str]) -> Instance {
        let dir = temp_dir(name);
        let sock = dir.join("api.sock");
        let mut all = vec!["--api-sock", sock.to_str().unwrap()];
        all.extend_from_slice(args);
        let (mut child, stdout, stderr) = spawn_via(wrapper, &all);
        let stdin = child.stdin.take();
        let instance = Instance {
            child,
            sock,
            dir,
            stdin,
            stdout,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Client::connect(&instance.sock).is_err() {
            assert!(Instant::now() < deadline, "the API socket never accepted");
            std::thread::sleep(Duration::from_millis(5));
        }
        instance
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.sock).expect("connect to the API socket")
    }

    /// One request on a connection of its own.
    pub fn req(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        self.client()
            .request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Asserts a 204.
    pub fn ok(&self, method: &str, path: &str, body: &str) {
        let r = self.req(method, path, Some(body));
        assert_eq!(r.status, 204, "{method} {path} {body}: {}", r.body);
        assert!(r.body.is_empty());
    }

    /// `PUT /snapshot/create` of a Full snapshot into `state` and `mem`.
    pub fn snapshot_full(&self, state: &Path, mem: &Path) {
        self.ok(
            "PUT",
            "/snapshot/create",
            &format!(
                r#"{{"snapshot_path": "{}", "mem_file_path": "{}", "snapshot_type": "Full"}}"#,
                state.display(),
                mem.display()
            ),
        );
    }

    /// `PUT /boot-source` of the Linux test guest, running `script` (the
    /// guest's init runs it and powers off).
    pub fn put_linux_boot(&self, guest: &super::Guest, script: &str) {
        let boot_args = format!(
            "{} ferrovisor.cmd={}",
            super::CMDLINE,
            super::base64(script.as_bytes())
        );
        let body = serde_json::json!({
            "kernel_image_path": guest.kernel,
            "initrd_path": guest.initrd,
            "boot_args": boot_args,
        });
        self.ok("PUT", "/boot-source", &body.to_string());
    }

    /// Asserts a 400 whose fault message contains `needle`; returns it.
    pub fn bad(&self, method: &str, path: &str, body: Option<&str>, needle: &str) -> String {
        let r = self.req(method, path, body);
        assert_eq!(r.status, 400, "{method} {path} {body:?}: {}", r.body);
        let message = r
            .fault_message()
            .unwrap_or_else(|| panic!("no fault_message in {}", r.body));
        assert!(
            message.contains(needle),
            "{method} {path}: {message:?} should contain {needle:?}"
        );
        message
    }

    /// `GET path` as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let r = self.req("GET", path, None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    /// Waits for the process to end by itself.
    pub fn wait(mut self, timeout: Duration) -> Ended {
        drop(self.stdin.take());
        Ended {
            status: wait_child(&mut self.child, timeout),
            stdout: take_output(&self.stdout),
            stderr: take_output(&self.stderr),
        }
    }
}

/// Waits up to `timeout` for `child` to end by itself (then kills it):
/// its exit status, None when killed or ended by a signal.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a reader thread of [`spawn`] collected (empty after 10 s).
pub fn take_output(rx: &mpsc::Receiver<Vec<u8>>) -> String {
    String::from_utf8_lossy(&rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default())
        .into_owned()
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
