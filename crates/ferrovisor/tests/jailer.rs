//! The jailer (`ferrovisor jail`, or the binary run as `jailer`), as root:
//! VMs boot inside the jail through the API socket in the chroot; the
//! jailed VMM cannot open host files outside it; it runs as the given
//! uid/gid with no capabilities, in the cgroups (v1 and v2) with the values
//! written, with the resource limits, in the network namespace given; a
//! failure names its step and leaves nothing that stops a retry.
//!
//! The test build of ferrovisor is dynamically linked: each test links its
//! shared libraries (as `ldd` lists them) into the chroot before starting
//! the jailer, as a user of a glibc build would (a static build,
//! scripts/build-static, needs none). Without root the tests are SKIPPED
//! (or fail with `FERROVISOR_REQUIRE_JAIL=1`).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::client::Client;
use common::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_ferrovisor");
const UID: u32 = 4321;
const GID: u32 = 4322;
const START: &str = r#"{"action_type": "InstanceStart"}"#;

/// True when the jailer can run here (root); else SKIPPED with the reason.
fn can_jail() -> bool {
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        conformance::skip_or_fail(
            "jail",
            "not root: the jailer needs CAP_SYS_ADMIN (namespaces, pivot_root, mknod, cgroups)",
        );
        return false;
    }
    true
}

/// The shared libraries the ferrovisor binary loads, as `ldd` lists them
/// (none for a static build).
fn shared_libraries() -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(BIN).output().expect("run ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)".
        .filter_map(|line| line.split_whitespace().rfind(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect()
}

/// `<base>/ferrovisor/<id>/root`, made with the binary's shared libraries
/// linked in.
fn chroot_with_libs(base: &Path, id: &str) -> PathBuf {
    let root = base.join("ferrovisor").join(id).join("root");
    std::fs::create_dir_all(&root).unwrap();
    for lib in shared_libraries() {
        link_into(&root, &lib, &lib);
    }
    root
}

/// Hard-links host file `from` into the chroot as `inside` (copies when
/// the link is refused).
fn link_into(root: &Path, from: &Path, inside: &Path) -> PathBuf {
    let target = root.join(inside.strip_prefix("/").unwrap_or(inside));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&target);
    let real = std::fs::canonicalize(from).unwrap();
    if std::fs::hard_link(&real, &target).is_err() {
        std::fs::copy(&real, &target).unwrap();
    }
    target
}

/// Output collected as it arrives.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<u8>>>);

impl Collected {
    fn from(mut pipe: impl Read + Send + 'static) -> Collected {
        let c = Collected::default();
        let sink = c.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.0.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        c
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).replace('\r', "")
    }
}

/// A jailer run: the jailer process (the VMM once it has exec'd).
struct Jailed {
    child: Child,
    out: Collected,
    err: Collected,
}

/// Runs `ferrovisor jail --id ID --exec-file BIN --uid --gid
/// --chroot-base-dir BASE JAIL-ARGS -- VMM-ARGS`.
fn jail(base: &Path, id: &str, jail_args: &[&str], vmm_args: &[&str]) -> Jailed {
    jail_as(&[BIN, "jail"], (UID, GID), base, id, jail_args, vmm_args)
}

fn jail_as(
    program: &[&str],
    (uid, gid): (u32, u32),
    base: &Path,
    id: &str,
    jail_args: &[&str],
    vmm_args: &[&str],
) -> Jailed {
    let (uid, gid) = (uid.to_string(), gid.to_string());
    let mut child = Command::new(program[0])
        .args(&program[1..])
        .args(["--id", id, "--exec-file", BIN, "--uid", &uid, "--gid", &gid])
        .arg("--chroot-base-dir")
        .arg(base)
        .args(jail_args)
        .arg("--")
        .args(vmm_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the jailer");
    let out = Collected::from(child.stdout.take().unwrap());
    let err = Collected::from(child.stderr.take().unwrap());
    Jailed { child, out, err }
}

impl Jailed {
    /// Waits for the API socket inside the chroot.
    fn client(&mut self, root: &Path) -> Client {
        let sock = root.join("run/firecracker.socket");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(c) = Client::connect(&sock) {
                return c;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the jailer ended ({status}): {}", self.err.text());
            }
            assert!(Instant::now() < deadline, "no API socket at {sock:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until standard output contains `text`.
    fn wait_output(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.out.text().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{text:?} never came; stdout:\n{}\nstderr:\n{}",
                self.out.text(),
                self.err.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the end; the exit status.
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the readers drain.
                std::thread::sleep(Duration::from_millis(50));
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Jailed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request; asserts the status; the body.
fn request(client: &mut Client, method: &str, path: &str, body: &str, status: u16) -> String {
    let r = client
        .request(method, path, Some(body))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert_eq!(r.status, status, "{method} {path} {body}: {}", r.body);
    r.body
}

/// The cgroup directories a test made, removed on drop (the leaf first).
struct CgroupDirs(Vec<PathBuf>);

impl Drop for CgroupDirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            // The process may have just exited: the kernel frees the
            // cgroup a moment later.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A network namespace made with `ip netns add`, deleted on drop.
struct NetnsHandle(String);

impl Drop for NetnsHandle {
    fn drop(&mut self) {
        let _ = common::netns::run("ip", &["netns", "del", &self.0]);
    }
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The line of /proc/PID/status for `field`, its values only.
fn status_field(pid: u32, field: &str) -> String {
    read(format!("/proc/{pid}/status"))
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn v1_root(controller: &str) -> PathBuf {
    PathBuf::from("/sys/fs/cgroup").join(controller)
}

/// The kernel image of the echo guest (prints "echo ready", echoes COM1
/// until `q`).
fn echo_elf() -> Vec<u8> {
    let p = guests::echo().unwrap();
    arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr)
}

/// Configures and starts the echo guest at /echo.elf in the jail; waits
/// for its first line; checks that the VMM's threads are filtered.
fn start_echo(client: &mut Client, vmm: &mut Jailed) {
    let pid = vmm.child.id();
    request(
        client,
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path": "/echo.elf", "boot_args": ""}"#,
        204,
    );
    request(
        client,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 32}"#,
        204,
    );
    request(client, "PUT", "/actions", START, 204);
    vmm.wait_output("echo ready", Duration::from_secs(60));
    // The VMM installed its own seccomp filters in the jail: every
    // thread but the main one before the VM ran is filtered.
    let mut filtered = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = read(task.join("comm"));
        let seccomp = read(task.join("status"))
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim().to_string()))
            .unwrap();
        filtered.push((comm, seccomp));
    }
    assert!(
        filtered.iter().any(|(c, _)| c.starts_with("vcpu")),
        "{filtered:?}"
    );
    assert!(
        filtered
            .iter()
            .filter(|(c, _)| c.starts_with("vcpu") || c.starts_with("api"))
            .all(|(_, s)| s == "2"),
        "{filtered:?}"
    );
}

/// Sends the echo guest a line and `q`; checks what came back, the exit
/// status and that the API socket is gone.
fn finish_echo(vmm: &mut Jailed, root: &Path) {
    let stdin = vmm.child.stdin.as_mut().unwrap();
    stdin.write_all(b"jailed echo!q").unwrap();
    let status = vmm.wait(Duration::from_secs(60));
    assert_eq!(vmm.out.text(), "echo ready\njailed echo!");
    // The guest's debug-exit value 0 is status 1.
    assert_eq!(status, Some(1), "{}", vmm.err.text());
    assert!(
        !root.join("run/firecracker.socket").exists(),
        "the API socket outlived the process"
    );
}

#[test]
fn a_guest_runs_confined_in_the_jail() {
    if !can_jail() {
        return;
    }
    for c in ["cpu", "cpuset", "pids", "memory"] {
        if !v1_root(c).join("cgroup.procs").exists() {
            conformance::skip_or_fail("jail", &format!("no cgroup v1 {c} hierarchy"));
            return;
        }
    }
    let netns = format!("fvjail-{}", std::process::id());
    let out = common::netns::run("ip", &["netns", "add", &netns]);
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        conformance::skip_or_fail("jail", &format!("ip netns add: {why}"));
        return;
    }
    let _netns = NetnsHandle(netns.clone());
    let netns_path = ["/run/netns", "/var/run/netns"]
        .iter()
        .map(|d| Path::new(d).join(&netns))
        .find(|p| p.exists())
        .expect("the netns handle");

    let base = TempDir::new("jail-confined");
    let id = "confined-1";
    let root = chroot_with_libs(&base.0, id);
    let parent = format!("fvjail-confined-{}", std::process::id());
    let _cgroups = CgroupDirs(
        ["cpu", "cpuset", "pids", "memory"]
            .iter()
            .flat_map(|c| [v1_root(c).join(&parent).join(id), v1_root(c).join(&parent)])
            .collect(),
    );
    // The guest's kernel: inside the chroot. A disk image: outside it.
    let kernel = root.join("echo.elf");
    std::fs::write(&kernel, echo_elf()).unwrap();
    let outside = base.file("outside.img", &vec![7u8; 1 << 20]);

    // A descriptor the jailer inherits (no close-on-exec): it must not
    // reach the VMM.
    let marker = base.file("inherited-marker", b"x");
    let marker_c = std::ffi::CString::new(marker.to_str().unwrap()).unwrap();
    // SAFETY: open(2) of a NUL-terminated path; the descriptor is closed
    // below once the jailer has started.
    let inherited = unsafe { libc::open(marker_c.as_ptr(), libc::O_RDONLY) };
    assert!(inherited > 2);
    let mut vmm = jail(
        &base.0,
        id,
        &[
            "--cgroup",
            "cpu.shares=512",
            "--cgroup",
            "cpuset.cpus=0",
            "--cgroup",
            "pids.max=64",
            "--cgroup",
            "memory.limit_in_bytes=1073741824",
            "--parent-cgroup",
            &parent,
            "--resource-limit",
            "fsize=104857600",
            "--resource-limit",
            "no-file=256",
            "--netns",
            netns_path.to_str().unwrap(),
        ],
        &["--api-sock", "/run/firecracker.socket", "--accel", "emu"],
    );
    // SAFETY: closes the descriptor opened above, used by nothing else.
    unsafe { libc::close(inherited) };
    let mut client = vmm.client(&root);
    let pid = vmm.child.id();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let target = std::fs::read_link(fd.unwrap().path()).unwrap_or_default();
        assert!(
            !target.to_string_lossy().contains("inherited-marker"),
            "an inherited descriptor reached the VMM"
        );
    }
    // An empty environment.
    assert_eq!(std::fs::read(format!("/proc/{pid}/environ")).unwrap(), b"");

    // The host file is out of reach: the API's error, from the jail.
    let body = request(
        &mut client,
        "PUT",
        "/drives/outside",
        &format!(
            r#"{{"drive_id": "outside", "path_on_host": "{}", "is_root_device": false}}"#,
            outside.display()
        ),
        400,
    );
    assert!(body.contains("No such file or directory"), "{body}");
    // /proc/PID/root is the chroot, and it holds only what the jailer and
    // the test put there.
    let proc_root = std::fs::metadata(format!("/proc/{pid}/root")).unwrap();
    let chroot = std::fs::metadata(&root).unwrap();
    assert_eq!(
        (proc_root.dev(), proc_root.ino()),
        (chroot.dev(), chroot.ino())
    );
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = ["dev", "echo.elf", "ferrovisor", "run"]
        .map(String::from)
        .into_iter()
        .chain(shared_libraries().iter().filter_map(|lib| {
            let top = lib.components().nth(1)?;
            Some(top.as_os_str().to_string_lossy().into_owned())
        }))
        .collect();
    want.sort();
    want.dedup();
    assert_eq!(names, want);
    // Its mount namespace has one mount, the chroot, set-user-ID off:
    // the host's tree is detached, not just hidden.
    let mountinfo = read(format!("/proc/{pid}/mountinfo"));
    let mounts: Vec<Vec<&str>> = mountinfo
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(mounts.len(), 1, "{mountinfo}");
    assert_eq!(mounts[0][4], "/", "{mountinfo}");
    assert!(
        mounts[0][5].split(',').any(|o| o == "nosuid"),
        "{mountinfo}"
    );
    let mut devs: Vec<String> = std::fs::read_dir(root.join("dev"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    devs.sort();
    let want: &[&str] = if Path::new("/dev/kvm").exists() {
        &["kvm", "net", "urandom"]
    } else {
        &["net", "urandom"]
    };
    assert_eq!(devs, want);
    assert_eq!(
        std::fs::metadata(root.join("dev/net/tun")).unwrap().uid(),
        UID
    );

    // Who it is: the ids, no groups, no capabilities.
    assert_eq!(status_field(pid, "Uid"), format!("{UID} {UID} {UID} {UID}"));
    assert_eq!(status_field(pid, "Gid"), format!("{GID} {GID} {GID} {GID}"));
    assert_eq!(status_field(pid, "Groups"), "");
    for caps in ["CapPrm", "CapEff", "CapBnd", "CapAmb", "CapInh"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    // Its limits.
    let limits = read(format!("/proc/{pid}/limits"));
    let limit = |name: &str| -> Vec<String> {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {limits}"))[name.len()..]
            .split_whitespace()
            .take(2)
            .map(str::to_string)
            .collect()
    };
    assert_eq!(limit("Max file size"), ["104857600", "104857600"]);
    assert_eq!(limit("Max open files"), ["256", "256"]);
    // Its cgroups, with the values written.
    let cgroups = read(format!("/proc/{pid}/cgroup"));
    for c in ["cpu", "cpuset", "pids", "memory"] {
        let want = format!(":{c}:/{parent}/{id}");
        assert!(
            cgroups
                .lines()
                .any(|l| l.ends_with(&want) && l.contains(&format!(":{c}:"))),
            "{want} not in {cgroups}"
        );
    }
    let leaf = |c: &str, file: &str| read(v1_root(c).join(&parent).join(id).join(file));
    assert_eq!(leaf("cpu", "cpu.shares"), "512");
    assert_eq!(leaf("cpuset", "cpuset.cpus"), "0");
    assert_eq!(
        leaf("cpuset", "cpuset.mems"),
        read(v1_root("cpuset").join("cpuset.mems"))
    );
    assert_eq!(leaf("pids", "pids.max"), "64");
    assert_eq!(leaf("memory", "memory.limit_in_bytes"), "1073741824");
    // Its network namespace.
    let ns = std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(ns.ino(), std::fs::metadata(&netns_path).unwrap().ino());

    // And the guest runs: its console output arrives, its input goes in.
    start_echo(&mut client, &mut vmm);
    finish_echo(&mut vmm, &root);
}

#[test]
fn the_echo_guest_runs_on_kvm_in_the_jail() {
    if !can_jail() || !common::kvm_usable() {
        return;
    }
    let base = TempDir::new("jail-kvm");
    let id = "kvm-1";
    let root = chroot_with_libs(&base.0, id);
    std::fs::write(root.join("echo.elf"), echo_elf()).unwrap();
    let mut vmm = jail(
        &base.0,
        id,
        &[],
        &["--api-sock", "/run/firecracker.socket", "--accel", "kvm"],
    );
    let mut client = vmm.client(&root);
    // /dev/kvm in the jail is the jailer's node, owned by the jailed uid.
    let kvm = std::fs::metadata(root.join("dev/kvm")).unwrap();
    assert_eq!((kvm.uid(), kvm.gid()), (UID, GID));
    assert_eq!(kvm.rdev(), std::fs::metadata("/dev/kvm").unwrap().rdev());
    start_echo(&mut client, &mut vmm);
    finish_echo(&mut vmm, &root);
}

#[test]
fn the_linux_guest_boots_in_the_jail() {
    if !can_jail() {
        return;
    }
    let Some(guest) = common::guest() else { return };
    let base = TempDir::new("jail-linux");
    let id = "linux-1";
    let root = chroot_with_libs(&base.0, id);
    link_into(&root, &guest.kernel, Path::new("/vmlinuz"));
    link_into(&root, &guest.initrd, Path::new("/initrd.cpio"));
    let mut image = b"FERROVISOR-JAILED-DISK".to_vec();
    image.resize(1 << 20, 0);
    let disk = base.file("data.img", &image);
    let inside = link_into(&root, &disk, Path::new("/data.img"));
    std::os::unix::fs::chown(&inside, Some(UID), Some(GID)).unwrap();

    let mut vmm = jail(
        &base.0,
        id,
        &[],
        &["--api-sock", "/run/firecracker.socket", "--accel", "emu"],
    );
    let mut client = vmm.client(&root);
    let script =
        "echo head=$(head -c 22 /dev/vda); echo rng=$(cat /sys/class/misc/hw_random/rng_current)";
    let boot = serde_json::json!({
        "kernel_image_path": "/vmlinuz",
        "initrd_path": "/initrd.cpio",
        "boot_args": format!("{} ferrovisor.cmd={}", common::CMDLINE, common::base64(script.as_bytes())),
    });
    request(&mut client, "PUT", "/boot-source", &boot.to_string(), 204);
    request(
        &mut client,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
        204,
    );
    request(
        &mut client,
        "PUT",
        "/drives/data",
        r#"{"drive_id": "data", "path_on_host": "/data.img", "is_root_device": false}"#,
        204,
    );
    request(&mut client, "PUT", "/entropy", "{}", 204);
    request(&mut client, "PUT", "/actions", START, 204);
    let status = vmm.wait(common::BOOT_TIMEOUT);
    let console = vmm.out.text();
    for want in [
        "head=FERROVISOR-JAILED-DISK",
        "rng=virtio_rng",
        "FERROVISOR-CMD-EXIT=0",
    ] {
        assert!(
            console.contains(want),
            "{want:?} missing; console:\n{console}"
        );
    }
    assert_eq!(status, Some(0), "{}", vmm.err.text());
}

/// The cgroup2 hierarchy: the host's, or one mounted for the test
/// (unmounted on drop).
struct Cgroup2 {
    root: PathBuf,
    mounted: Option<TempDir>,
}

impl Cgroup2 {
    fn find_or_mount() -> Option<Cgroup2> {
        let mounts = read("/proc/mounts");
        if let Some(root) = jailer::cgroup::v2_mount(&mounts) {
            return Some(Cgroup2 {
                root,
                mounted: None,
            });
        }
        let dir = TempDir::new("cgroup2");
        let out = common::netns::run("mount", &["-t", "cgroup2", "none", dir.0.to_str().unwrap()]);
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            conformance::skip_or_fail("jail", &format!("cannot mount cgroup2: {why}"));
            return None;
        }
        Some(Cgroup2 {
            root: dir.0.clone(),
            mounted: Some(dir),
        })
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        if let Some(dir) = &self.mounted {
            let _ = common::netns::run("umount", &[dir.0.to_str().unwrap()]);
        }
    }
}

#[test]
fn cgroup_v2_values_are_written_and_the_vmm_joins() {
    if !can_jail() {
        return;
    }
    let Some(v2) = Cgroup2::find_or_mount() else {
        return;
    };
    let offered = read(v2.root.join("cgroup.controllers"));
    // Whatever controller the hierarchy offers (pids on a pure v2 host,
    // hugetlb where v1 holds the rest), plus a core file.
    let mut settings = vec!["cgroup.max.descendants=3".to_string()];
    let offers = |c: &str| offered.split_whitespace().any(|o| o == c);
    if offers("pids") {
        settings.push("pids.max=77".into());
    } else if offers("hugetlb") && Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists() {
        settings.push("hugetlb.2MB.max=4194304".into());
    }
    eprintln!(
        "cgroup2 at {} offers [{offered}]; setting {settings:?}",
        v2.root.display()
    );
    let base = TempDir::new("jail-v2");
    let id = "v2-1";
    let root = chroot_with_libs(&base.0, id);
    let parent = format!("fvjail-v2-{}", std::process::id());
    let leaf = v2.root.join(&parent).join(id);
    let _cgroups = CgroupDirs(vec![leaf.clone(), v2.root.join(&parent)]);
    let mut args = vec![
        "--cgroup-version".to_string(),
        "2".into(),
        "--parent-cgroup".into(),
        parent.clone(),
    ];
    for s in &settings {
        args.push("--cgroup".into());
        args.push(s.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vmm = jail(
        &base.0,
        id,
        &args,
        &["--api-sock", "/run/firecracker.socket", "--accel", "emu"],
    );
    let _client = vmm.client(&root);
    let pid = vmm.child.id();
    let procs = read(leaf.join("cgroup.procs"));
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "{pid} not in {procs}"
    );
    for s in &settings {
        let (file, value) = s.split_once('=').unwrap();
        assert_eq!(read(leaf.join(file)), value, "{file}");
    }
    drop(vmm);
}

#[test]
fn failures_name_their_step_and_a_retry_works() {
    if !can_jail() {
        return;
    }
    let base = TempDir::new("jail-retry");
    let id = "retry-1";
    let root = chroot_with_libs(&base.0, id);
    let parent = format!("fvjail-retry-{}", std::process::id());
    let _cgroups = CgroupDirs(vec![
        v1_root("pids").join(&parent).join(id),
        v1_root("pids").join(&parent),
    ]);
    let run = |jail_args: &[&str]| {
        let mut j = jail(&base.0, id, jail_args, &["--version"]);
        let status = j.wait(Duration::from_secs(30));
        (status, j.out.text(), j.err.text())
    };
    // A bad option: usage error, status 2, nothing made.
    let (status, _, err) = run(&["--resource-limit", "cpu=1"]);
    assert_eq!(status, Some(2), "{err}");
    assert!(err.contains("--resource-limit"), "{err}");
    // An unknown controller, then an unknown file: status 1, the step
    // named, no cgroup left behind.
    let (status, _, err) = run(&["--cgroup", "bogus.max=1", "--parent-cgroup", &parent]);
    assert_eq!(status, Some(1), "{err}");
    assert!(
        err.contains("cgroup: no cgroup v1 hierarchy has the controller \"bogus\""),
        "{err}"
    );
    let (status, _, err) = run(&["--cgroup", "pids.bogus=1", "--parent-cgroup", &parent]);
    assert_eq!(status, Some(1), "{err}");
    assert!(err.contains("has no file \"pids.bogus\""), "{err}");
    assert!(!v1_root("pids").join(&parent).exists(), "a cgroup was left");
    // A missing network namespace and exec file.
    let (status, _, err) = run(&["--netns", "/nonexistent/ns"]);
    assert_eq!(status, Some(1), "{err}");
    assert!(
        err.contains("joining the network namespace /nonexistent/ns"),
        "{err}"
    );
    // The same id works afterwards, twice (the device nodes and the exec
    // file are replaced), under the name `jailer` too.
    for _ in 0..2 {
        let (status, out, err) = run(&["--cgroup", "pids.max=10", "--parent-cgroup", &parent]);
        assert_eq!(status, Some(0), "{err}");
        assert!(out.starts_with("Firecracker v"), "{out}");
    }
    let jailer = base.0.join("jailer");
    std::os::unix::fs::symlink(BIN, &jailer).unwrap();
    let mut j = jail_as(
        &[jailer.to_str().unwrap()],
        (UID, GID),
        &base.0,
        id,
        &[],
        &["--version"],
    );
    assert_eq!(j.wait(Duration::from_secs(30)), Some(0), "{}", j.err.text());
    assert!(j.out.text().starts_with("Firecracker v"));
    assert!(root.join("dev/urandom").exists());
    // Without its shared libraries in the chroot, the dynamically linked
    // test build cannot start; the error says why (a static build would
    // just run).
    if !shared_libraries().is_empty() {
        let mut j = jail(&base.0, "no-libs", &[], &["--version"]);
        assert_eq!(j.wait(Duration::from_secs(30)), Some(1));
        let err = j.err.text();
        assert!(err.contains("use a statically linked VMM"), "{err}");
    }
    // An exec file named jailer would start the jailer again in the jail.
    let out = Command::new(BIN)
        .args(["jail", "--id", "x", "--exec-file", jailer.to_str().unwrap()])
        .args(["--uid", "1", "--gid", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is named jailer"), "{err}");
    // A missing exec file is named.
    let out = Command::new(BIN)
        .args([
            "jail",
            "--id",
            "x",
            "--exec-file",
            "/nonexistent/fv",
            "--uid",
            "1",
            "--gid",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the exec file /nonexistent/fv"), "{err}");
}

#[test]
fn new_pid_ns_and_daemonize() {
    if !can_jail() {
        return;
    }
    let base = TempDir::new("jail-pidns");
    let id = "pidns-1";
    let root = chroot_with_libs(&base.0, id);
    let mut jailer = jail(
        &base.0,
        id,
        &["--new-pid-ns", "--daemonize"],
        &["--api-sock", "/run/firecracker.socket", "--accel", "emu"],
    );
    // The jailer ends once the VMM is forked; the pid file names the VMM.
    assert_eq!(
        jailer.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        jailer.err.text()
    );
    let pid_file = root.join("ferrovisor.pid");
    let pid: i32 = read(&pid_file).parse().unwrap();
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) takes plain integers; the pid is the VMM
            // this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _kill = Kill(pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Client::connect(&root.join("run/firecracker.socket")).is_err() {
        assert!(Instant::now() < deadline, "no API socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = pid as u32;
    // Pid 1 of its own namespace, in a session of its own, stdio on
    // /dev/null, nothing from the test's pipes.
    let nspid = status_field(pid, "NSpid");
    assert_eq!(nspid, format!("{pid} 1"));
    for fd in 0..=2 {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(target, Path::new("/dev/null"), "fd {fd}");
    }
    let stat = read(format!("/proc/{pid}/stat"));
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // SAFETY: getsid(0) takes nothing and cannot fail for the caller.
    let my_session = unsafe { libc::getsid(0) };
    assert_ne!(
        fields[3],
        my_session.to_string(),
        "same session as the test"
    );
    assert!(jailer.out.text().is_empty() && jailer.err.text().is_empty());
}

#[test]
fn uid_0_in_the_jail_has_no_capabilities() {
    if !can_jail() {
        return;
    }
    let base = TempDir::new("jail-uid0");
    let id = "uid0-1";
    let root = chroot_with_libs(&base.0, id);
    let mut vmm = jail_as(
        &[BIN, "jail"],
        (0, 0),
        &base.0,
        id,
        &[],
        &["--api-sock", "/run/firecracker.socket", "--accel", "emu"],
    );
    let _client = vmm.client(&root);
    let pid = vmm.child.id();
    assert_eq!(status_field(pid, "Uid"), "0 0 0 0");
    // An exec as root gets the inheritable set and, of a file's
    // capabilities, what the bounding set allows: both are empty.
    for caps in ["CapPrm", "CapEff", "CapBnd", "CapAmb", "CapInh"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
}
