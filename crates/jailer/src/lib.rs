//! Ferrovisor's jailer, with Firecracker's jailer options and semantics
//! (`ferrovisor jail ARGS -- VMM-ARGS`, or the binary run as `jailer`):
//! it builds `<base>/<exec file name>/<id>/root` with the exec file and
//! the device nodes the VMM needs, puts itself into the cgroups asked for,
//! joins the network namespace, pivots into the chroot in a mount
//! namespace of its own, optionally forks into a new pid namespace, drops
//! to the given uid/gid with no capabilities, and execs the VMM (which
//! then installs its seccomp filters as usual). See docs/SECURITY.md.
//!
//! It must run before the process has a second thread (fork, setns and
//! unshare of the mount namespace need a single-threaded caller).
#![deny(unsafe_code)]

pub mod args;
pub mod cgroup;
pub mod chroot;
pub mod error;
pub mod namespaces;
pub mod privileges;
pub mod process;
mod sys;

use std::convert::Infallible;
use std::ffi::CString;
use std::path::{Path, PathBuf};

pub use args::{parse, Invocation, JailArgs};
pub use error::{error_line, JailError};
/// The clocks Firecracker's start times are in (`--start-time-us`,
/// `--start-time-cpu-us`), which the boot timer counts from.
pub use sys::{cpu_time_us, monotonic_us};

/// When the jailer started (passed on as Firecracker's jailer does).
struct StartTime {
    wall_us: u64,
    cpu_us: u64,
}

/// Runs the jailer on `args` (what follows the program name, or `jail`).
/// Returns only when it fails (or for --help/--version): the exit status.
pub fn main(program: &str, args: &[String]) -> u8 {
    let start = StartTime {
        wall_us: sys::monotonic_us(),
        cpu_us: sys::cpu_time_us(),
    };
    let jail = match args::parse(args) {
        Ok(Invocation::Jail(jail)) => jail,
        Ok(Invocation::Help) => {
            println!("{}", args::USAGE);
            return 0;
        }
        Ok(Invocation::Version) => {
            println!("{program} {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Err(e) => {
            eprintln!("{program}: {e} (see '{program} --help')");
            return 2;
        }
    };
    match run(&jail, &start) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("{program}: {}", error_line(&e));
            1
        }
    }
}

/// The exec file's last path component.
fn exec_name(exec_file: &Path) -> Result<String, JailError> {
    let meta = std::fs::metadata(exec_file).map_err(|source| JailError::ExecFile {
        path: exec_file.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(JailError::ExecFileKind(exec_file.to_path_buf()));
    }
    let name = exec_file
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| JailError::ExecFileKind(exec_file.to_path_buf()))?;
    // Ferrovisor run under this name is the jailer: the jailed process
    // would try to jail itself again.
    if name == "jailer" {
        return Err(JailError::ExecFileName(exec_file.to_path_buf()));
    }
    Ok(name)
}

/// The steps, in order; each failure names its step. Everything read
/// from the host (the exec file, the netns handle, device numbers,
/// /dev/null) is checked or opened before anything is made.
fn run(jail: &JailArgs, start: &StartTime) -> Result<Infallible, JailError> {
    privileges::close_inherited()?;
    let exec_name = exec_name(&jail.exec_file)?;
    let netns = jail
        .netns
        .as_deref()
        .map(namespaces::open_netns)
        .transpose()?;
    let devices = chroot::host_devices()?;
    let dev_null = jail.daemonize.then(privileges::open_dev_null).transpose()?;

    let dir = chroot::chroot_dir(&jail.chroot_base, &exec_name, &jail.id);
    chroot::prepare(&dir, &jail.exec_file, &exec_name)?;
    privileges::set_limits(&jail.limits)?;
    let parent = jail
        .parent_cgroup
        .clone()
        .unwrap_or_else(|| PathBuf::from(&exec_name));
    cgroup::apply(
        &cgroup::CgroupRequest {
            version: jail.cgroup_version,
            settings: &jail.cgroups,
            parent: &parent,
            id: &jail.id,
        },
        std::process::id(),
    )?;
    if let (Some(handle), Some(path)) = (netns, jail.netns.as_deref()) {
        namespaces::join_netns(handle, path)?;
    }

    chroot::enter(&dir)?;
    chroot::populate(&devices, jail.uid, jail.gid)?;
    if let Some(dev_null) = dev_null {
        privileges::daemonize(dev_null)?;
    }
    if jail.new_pid_ns {
        namespaces::enter_new_pid_ns(&Path::new("/").join(format!("{exec_name}.pid")))?;
    }
    privileges::drop_to(jail.uid, jail.gid)?;
    Err(exec(jail, &exec_name, start))
}

/// Execs `/<exec name> --id=ID --start-time-us=.. --start-time-cpu-us=..
/// VMM-ARGS` with an empty environment.
fn exec(jail: &JailArgs, exec_name: &str, start: &StartTime) -> JailError {
    let path = format!("/{exec_name}");
    let error = |source| JailError::Exec {
        path: path.clone(),
        source,
    };
    let argv: Result<Vec<CString>, _> = [
        exec_name.to_string(),
        format!("--id={}", jail.id),
        format!("--start-time-us={}", start.wall_us),
        format!("--start-time-cpu-us={}", start.cpu_us),
    ]
    .into_iter()
    .chain(jail.vmm_args.iter().cloned())
    .map(CString::new)
    .collect();
    let (Ok(c_path), Ok(argv)) = (CString::new(path.clone()), argv) else {
        return error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a NUL byte in an argument",
        ));
    };
    let failure = sys::execve(&c_path, &argv, &[]);
    // ENOENT for a file that is there: its dynamic loader is not.
    if failure.kind() == std::io::ErrorKind::NotFound && Path::new(&path).is_file() {
        return JailError::ExecLoader { path };
    }
    error(failure)
}
