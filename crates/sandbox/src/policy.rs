//! The process's choice (filters on, off, or from a file) and installing
//! a kind's filter on the calling thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use hv::HostCalls;
use seccompiler::BpfProgram;

use crate::{filters, spawn, trap, SandboxError, ThreadKind};

/// Which filters the process runs under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setting {
    /// No filters (`--no-seccomp`).
    Off,
    /// Ferrovisor's own filters ([`crate::filters`]).
    Default,
    /// Filters compiled from a seccompiler JSON file (`--seccomp-filter`),
    /// one per thread kind name.
    File(PathBuf),
}

enum Mode {
    Off,
    Default,
    Custom(HashMap<String, BpfProgram>),
}

struct Policy {
    mode: Mode,
    /// What the accelerator's threads call (KVM ioctls), once known.
    calls: Mutex<HostCalls>,
    /// Test hook: the kind whose threads make a forbidden syscall right
    /// after installing their filter (`FERROVISOR_SECCOMP_TEST_FAULT`).
    fault_test: Option<ThreadKind>,
}

static POLICY: OnceLock<Policy> = OnceLock::new();

/// The environment variable of the test hook: a thread kind's name. Read
/// once by [`init`]; the threads of that kind make a forbidden syscall
/// (getppid) as soon as their filter is installed, which proves the
/// filter is there and the trap reports it. Only the user who starts the
/// process can set it; neither a guest nor an API client can.
pub const TEST_FAULT_ENV: &str = "FERROVISOR_SECCOMP_TEST_FAULT";

/// The syscall the test hook makes; no filter allows it.
pub const TEST_FAULT_SYSCALL: libc::c_long = libc::SYS_getppid;

/// Sets the process's filters up: call once, first thing, on the main
/// thread before it starts any thread. With filters on, installs the
/// SIGSYS handler and starts the launcher (under its filter). A second
/// call changes nothing.
pub fn init(setting: Setting) -> Result<(), SandboxError> {
    let mode = match setting {
        Setting::Off => Mode::Off,
        Setting::Default => Mode::Default,
        Setting::File(path) => Mode::Custom(load_file(&path)?),
    };
    let on = !matches!(mode, Mode::Off);
    let fault_test = std::env::var(TEST_FAULT_ENV)
        .ok()
        .and_then(|name| ThreadKind::from_name(&name));
    let policy = Policy {
        mode,
        calls: Mutex::new(HostCalls::default()),
        fault_test,
    };
    if POLICY.set(policy).is_err() || !on {
        return Ok(());
    }
    trap::install_handler().map_err(SandboxError::Handler)?;
    crate::panic::install_hook();
    spawn::start_launcher()
}

/// Whether filters are installed on the threads [`crate::spawn`] starts.
pub(crate) fn filtering() -> bool {
    POLICY.get().is_some_and(|p| !matches!(p.mode, Mode::Off))
}

/// Records what the accelerator's threads call (KVM ioctls); the filters
/// of threads started from now on allow it. Called when the accelerator
/// opens, before any vCPU runs.
pub fn set_accelerator(calls: HostCalls) {
    if let Some(policy) = POLICY.get() {
        let mut mine = policy.calls.lock().unwrap_or_else(|p| p.into_inner());
        mine.merge(&calls);
    }
}

/// Installs `kind`'s filter on the calling thread (the main thread calls
/// it for [`ThreadKind::Vmm`] once the VM runs; [`crate::spawn`] calls it
/// for the threads it starts). Without [`init`], or with filters off, it
/// does nothing.
pub fn enter(kind: ThreadKind) -> Result<(), SandboxError> {
    let Some(policy) = POLICY.get() else {
        return Ok(());
    };
    let programs = match &policy.mode {
        Mode::Off => return Ok(()),
        Mode::Default => {
            let calls = policy
                .calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            filters::rules(kind, &calls)
                .compile()
                .map_err(|source| SandboxError::Build {
                    kind: kind.name(),
                    source,
                })?
        }
        Mode::Custom(map) => vec![map.get(kind.name()).cloned().unwrap_or_default()],
    };
    // An empty filter in a --seccomp-filter file leaves the kind's threads
    // unfiltered, as in Firecracker.
    for program in programs.iter().filter(|p| !p.is_empty()) {
        seccompiler::apply_filter(program).map_err(|source| SandboxError::Install {
            kind: kind.name(),
            source,
        })?;
    }
    trap::set_current_kind(kind);
    tracing::debug!(kind = kind.name(), "seccomp filter installed");
    if policy.fault_test == Some(kind) {
        // SAFETY: getppid has no arguments and no side effect; the filter
        // traps it (that is the point of the test hook).
        unsafe { libc::syscall(TEST_FAULT_SYSCALL) };
    }
    Ok(())
}

fn all_names() -> String {
    ThreadKind::ALL
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compiles a seccompiler JSON file: one filter per thread kind name.
fn load_file(path: &std::path::Path) -> Result<HashMap<String, BpfProgram>, SandboxError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| SandboxError::Read {
        path: shown.clone(),
        source,
    })?;
    let map = seccompiler::compile_from_json(std::io::BufReader::new(file), crate::ARCH).map_err(
        |source| SandboxError::Json {
            path: shown.clone(),
            source,
        },
    )?;
    check_kinds(&shown, map)
}

fn check_kinds(
    path: &str,
    map: HashMap<String, BpfProgram>,
) -> Result<HashMap<String, BpfProgram>, SandboxError> {
    if let Some(name) = map.keys().find(|n| ThreadKind::from_name(n).is_none()) {
        return Err(SandboxError::UnknownKind {
            path: path.into(),
            name: name.clone(),
            all: all_names(),
        });
    }
    if let Some(kind) = ThreadKind::ALL
        .into_iter()
        .find(|k| !map.contains_key(k.name()))
    {
        return Err(SandboxError::MissingKind {
            path: path.into(),
            kind: kind.name(),
            all: all_names(),
        });
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_for(kinds: &[&str]) -> String {
        let filters: Vec<String> = kinds
            .iter()
            .map(|k| {
                format!(
                    r#""{k}": {{"default_action": "trap", "filter_action": "allow",
                       "filter": [{{"syscall": "read"}}]}}"#
                )
            })
            .collect();
        format!("{{{}}}", filters.join(","))
    }

    #[test]
    fn a_filter_file_needs_every_kind_and_only_kinds() {
        let dir = std::env::temp_dir().join(format!("sandbox-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.json");
        let all: Vec<&str> = ThreadKind::ALL.iter().map(|k| k.name()).collect();
        std::fs::write(&path, json_for(&all)).unwrap();
        let map = load_file(&path).unwrap();
        assert_eq!(map.len(), ThreadKind::ALL.len());
        assert!(map.values().all(|p| !p.is_empty()));

        std::fs::write(&path, json_for(&all[1..])).unwrap();
        let e = load_file(&path).unwrap_err().to_string();
        assert!(e.contains("\"vmm\""), "{e}");

        let mut more = all.clone();
        more.push("gpu");
        std::fs::write(&path, json_for(&more)).unwrap();
        let e = load_file(&path).unwrap_err().to_string();
        assert!(e.contains("\"gpu\" is not a thread kind"), "{e}");

        std::fs::write(&path, "{ not json").unwrap();
        assert!(matches!(load_file(&path), Err(SandboxError::Json { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
