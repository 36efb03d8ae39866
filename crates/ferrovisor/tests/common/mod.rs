//! What the end-to-end tests share: finding the Linux test guest
//! (scripts/build-test-guest; SKIPPED without one unless
//! `FERROVISOR_REQUIRE_GUEST=1`) and booting it under `ferrovisor run` with
//! a script as its command (the `ferrovisor.cmd=` protocol of guest/init).
#![allow(dead_code)] // each test binary uses a part

pub mod firecracker;
pub mod measure;
pub mod migration;
pub mod netns;
pub mod ticker;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A boot that takes longer than this has hung.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

pub struct Guest {
    pub kernel: PathBuf,
    /// The same kernel uncompressed (ELF with the PVH note).
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
}

/// The test guests' cache: `FERROVISOR_CACHE`, else ~/.cache/ferrovisor.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("FERROVISOR_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ferrovisor")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"))
}

pub fn guest() -> Option<Guest> {
    let dir = match std::env::var_os("FERROVISOR_GUEST_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => cache_dir().join("guest"),
    };
    let guest = Guest {
        kernel: dir.join("vmlinuz"),
        vmlinux: dir.join("vmlinux"),
        initrd: dir.join("initramfs.cpio"),
    };
    if guest.kernel.is_file() && guest.vmlinux.is_file() && guest.initrd.is_file() {
        return Some(guest);
    }
    conformance::skip_or_fail(
        "guest",
        &format!(
            "no test guest in {} (run scripts/build-test-guest)",
            dir.display()
        ),
    );
    None
}

pub struct Boot {
    pub status: Option<i32>,
    pub console: String,
    /// ferrovisor's own messages (standard error).
    pub stderr: String,
}

impl Boot {
    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Panics with the console tail unless `text` was printed.
    pub fn expect(&self, text: &str) {
        assert!(
            self.console.contains(text),
            "the console lacks {text:?}; its tail:\n{}",
            self.tail()
        );
    }
}

/// A guest running under `ferrovisor run`; its console is collected.
pub struct Running {
    child: std::process::Child,
    console: mpsc::Receiver<Vec<u8>>,
    stderr: mpsc::Receiver<Vec<u8>>,
    /// ferrovisor's standard input, with [`spawn_with`]'s `stdin_piped`.
    pub stdin: Option<std::process::ChildStdin>,
}

/// The kernel command line before `ferrovisor.cmd=` in [`spawn`].
pub const CMDLINE: &str = "console=ttyS0 quiet panic=-1";

/// Starts the guest with `script` as its command, on `cpus` vCPUs, with
/// `extra` arguments for `ferrovisor run`.
pub fn spawn(guest: &Guest, cpus: u32, script: &str, extra: &[&str]) -> Running {
    spawn_with(guest, cpus, CMDLINE, script, extra, false)
}

/// [`spawn`] with the command line starting with `cmdline` (then
/// `ferrovisor.cmd=...`) and, with `stdin_piped`, a pipe to ferrovisor's
/// standard input in [`Running::stdin`] (else /dev/null).
pub fn spawn_with(
    guest: &Guest,
    cpus: u32,
    cmdline: &str,
    script: &str,
    extra: &[&str],
    stdin_piped: bool,
) -> Running {
    spawn_full(&[], guest, cpus, cmdline, script, extra, stdin_piped)
}

/// [`spawn`], with ferrovisor started by the command `wrapper` (its
/// program and arguments, e.g. `ip netns exec NS`).
pub fn spawn_via(
    wrapper: &[&str],
    guest: &Guest,
    cpus: u32,
    script: &str,
    extra: &[&str],
) -> Running {
    spawn_full(wrapper, guest, cpus, CMDLINE, script, extra, false)
}

/// What [`spawn_with`] and [`spawn_via`] do: ferrovisor (under `wrapper`
/// when not empty) with the command line `cmdline` + `ferrovisor.cmd=`.
fn spawn_full(
    wrapper: &[&str],
    guest: &Guest,
    cpus: u32,
    cmdline: &str,
    script: &str,
    extra: &[&str],
    stdin_piped: bool,
) -> Running {
    let encoded = base64(script.as_bytes());
    let cmdline = format!("{cmdline} ferrovisor.cmd={encoded}");
    let binary = env!("CARGO_BIN_EXE_ferrovisor");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    command
        .args(["run", "--accel", "emu", "--memory", "256M"])
        .args(["--cpus", &cpus.to_string()])
        .arg("--kernel")
        .arg(&guest.kernel)
        .arg("--initrd")
        .arg(&guest.initrd)
        .args(["--cmdline", &cmdline])
        .args(extra);
    spawn_command(command, stdin_piped)
}

/// Starts `command` (a ferrovisor command line of any front end) with its
/// standard output (the console) and error collected, and, with
/// `stdin_piped`, a pipe to its standard input (else /dev/null).
pub fn spawn_command(mut command: Command, stdin_piped: bool) -> Running {
    let mut child = command
        .stdin(if stdin_piped {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferrovisor");
    let console = collect(child.stdout.take().expect("stdout"));
    let stderr = collect(child.stderr.take().expect("stderr"));
    let stdin = child.stdin.take();
    Running {
        child,
        console,
        stderr,
        stdin,
    }
}

/// Reads `pipe` to its end on a thread of its own (so the child never
/// blocks on a full pipe); the receiver gets everything.
fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        let _ = tx.send(all);
    });
    rx
}

impl Running {
    /// Waits until the guest powers off (panics with the console tail after
    /// [`BOOT_TIMEOUT`]).
    pub fn wait(mut self) -> Boot {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status.code();
            }
            if started.elapsed() > BOOT_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let console = self
                    .console
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_default();
                let console = Boot {
                    status: None,
                    console: String::from_utf8_lossy(&console).replace('\r', ""),
                    stderr: String::new(),
                };
                panic!(
                    "the guest did not power off within {BOOT_TIMEOUT:?}; console tail:\n{}",
                    console.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let console = self
            .console
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default();
        let console = String::from_utf8_lossy(&console).replace('\r', "");
        let stderr = self
            .stderr
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        Boot {
            status,
            console,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that panicked must not leave a VM behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Boots the guest with `script` as its command, on `cpus` vCPUs, with
/// `extra` arguments for `ferrovisor run`, and waits until it powers off.
pub fn boot(guest: &Guest, cpus: u32, script: &str, extra: &[&str]) -> Boot {
    spawn(guest, cpus, script, extra).wait()
}

pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The sha256 of a host file, as `sha256sum` prints it.
pub fn host_sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Runs `ferrovisor run` on the guest's kernel with `extra` arguments that
/// must be refused: checks a non-zero status and a one-line error, and
/// returns the line.
pub fn refused(guest: &Guest, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["run", "--accel", "emu", "--kernel"])
        .arg(&guest.kernel)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run ferrovisor");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_ne!(out.status.code(), Some(0), "{extra:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
    err
}

/// Whether /dev/kvm can run guests here (else a SKIPPED line, or a failure
/// with `FERROVISOR_REQUIRE_KVM=1`).
pub fn kvm_usable() -> bool {
    match hv_kvm::KvmHypervisor::new() {
        Ok(_) => true,
        Err(e) => {
            conformance::skip_or_fail("kvm", &e.to_string());
            false
        }
    }
}

/// The accelerators to run guests on: emu always, kvm when usable.
pub fn accels() -> Vec<&'static str> {
    let mut accels = vec!["emu"];
    if kvm_usable() {
        accels.push("kvm");
    }
    accels
}

/// A guest script that runs `command` and prints `elapsed_cs=N`, its
/// duration in hundredths of a second by the guest's clock (read back with
/// [`Boot::elapsed_secs`]); `command-failed` when it fails.
pub fn timed(command: &str) -> String {
    format!(
        "cs() {{ t=$(cut -d' ' -f1 /proc/uptime); echo $(( ${{t%.*}} * 100 + 1${{t#*.}} - 100 )); }}; \
         a=$(cs); {command} || echo command-failed; b=$(cs); echo elapsed_cs=$((b - a))"
    )
}

impl Boot {
    /// The `elapsed_cs=` a [`timed`] script printed, in seconds; the
    /// script must have ended with status 0 and its command succeeded.
    pub fn elapsed_secs(&self) -> f64 {
        self.expect("FERROVISOR-CMD-EXIT=0");
        assert!(!self.console.contains("command-failed"), "{}", self.tail());
        let cs: u64 = self
            .console
            .split("elapsed_cs=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no elapsed_cs; tail:\n{}", self.tail()));
        cs as f64 / 100.0
    }
}

/// A directory of the test's files, removed when dropped, passed or not.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `ferrovisor-<label>-<pid>` in the system's temporary directory.
    pub fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ferrovisor-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `contents` to `name` in the directory.
    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// The bare guest `p` as a 64-bit ELF kernel file.
    pub fn elf(&self, name: &str, p: &guests::Program) -> PathBuf {
        self.file(
            name,
            &arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
        )
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends `sig` to the test's own child (it cannot hit another process).
pub fn signal(child: &std::process::Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) takes plain integers.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill -{sig} {pid}: {}",
        std::io::Error::last_os_error()
    );
}
