//! Firecracker's command line: `--name value` options and `--name` flags,
//! each at most once; `--help`/`-h` and `--version` anywhere win over the
//! rest; arguments after `--` are ignored. Ferrovisor adds `--accel` and
//! also takes `--name=value`.

use std::path::PathBuf;

use api::schema::LogLevel;
use vmm::Accel;

/// Where the API socket goes by default, as Firecracker's does.
pub const DEFAULT_API_SOCK: &str = "/run/firecracker.socket";
/// The instance id by default.
pub const DEFAULT_ID: &str = "anonymous-instance";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Invocation {
    Help,
    Version,
    Run(Box<FcArgs>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FcArgs {
    pub api_sock: PathBuf,
    pub id: String,
    pub config_file: Option<PathBuf>,
    pub no_api: bool,
    pub log_path: Option<PathBuf>,
    pub level: Option<LogLevel>,
    pub module: Option<String>,
    pub show_level: bool,
    pub show_log_origin: bool,
    pub metrics_path: Option<PathBuf>,
    pub boot_timer: bool,
    pub http_api_max_payload_size: usize,
    pub mmds_size_limit: Option<usize>,
    pub accel: Accel,
    pub enable_pci: bool,
    /// `--enable-fork` (Ferrovisor's): start the fork helper of
    /// `PUT /ferrovisor/fork`.
    pub enable_fork: bool,
    pub no_seccomp: bool,
    /// `--seccomp-filter FILE`: seccompiler JSON filters, one per thread kind.
    pub seccomp_filter: Option<PathBuf>,
    /// The process start time the jailer passes: where `--boot-timer` counts from.
    pub start_time_us: Option<u64>,
    pub start_time_cpu_us: Option<u64>,
    pub parent_cpu_time_us: Option<u64>,
    /// `--trace PATTERN` (Ferrovisor's): KVM trace events to turn on.
    pub trace: Option<String>,
    /// `--trace-file PATH` (Ferrovisor's): where they go.
    pub trace_file: Option<PathBuf>,
    /// `--gdb PORT` (Ferrovisor's): a gdb stub on 127.0.0.1:PORT once the
    /// microVM starts.
    pub gdb: Option<u16>,
}

impl Default for FcArgs {
    fn default() -> Self {
        FcArgs {
            api_sock: PathBuf::from(DEFAULT_API_SOCK),
            id: DEFAULT_ID.to_string(),
            config_file: None,
            no_api: false,
            log_path: None,
            level: None,
            module: None,
            show_level: false,
            show_log_origin: false,
            metrics_path: None,
            boot_timer: false,
            http_api_max_payload_size: api::http::DEFAULT_MAX_BODY,
            mmds_size_limit: None,
            accel: Accel::Auto,
            enable_pci: false,
            enable_fork: false,
            no_seccomp: false,
            seccomp_filter: None,
            start_time_us: None,
            start_time_cpu_us: None,
            parent_cpu_time_us: None,
            trace: None,
            trace_file: None,
            gdb: None,
        }
    }
}

/// A command-line error, and the exit status Firecracker gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("unexpected argument '{0}' (see 'ferrovisor --help')")]
    Unexpected(String),
    #[error("--{0} needs a value")]
    MissingValue(&'static str),
    #[error("--{0} was given more than once")]
    Duplicate(&'static str),
    #[error("--{0} takes no value")]
    FlagWithValue(&'static str),
    #[error("--no-api needs --config-file: without the API, the configuration file is the only way to describe the VM")]
    NoApiWithoutConfig,
    #[error("--{name} {value:?}: {reason}")]
    BadValue {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("--no-seccomp and --seccomp-filter exclude each other")]
    SeccompConflict,
    #[error("invalid logger level {0:?} (Error, Warning, Info, Debug, Trace or Off)")]
    Level(String),
    #[error("{0} is not supported by Ferrovisor yet")]
    Unsupported(&'static str),
}

impl ArgError {
    /// Firecracker's exit codes: 152 for a bad logger level, 153 for other
    /// argument errors, 1 for what it would fail on later.
    pub fn exit_status(&self) -> u8 {
        match self {
            ArgError::Level(_) => 152,
            ArgError::Unsupported(_) => 1,
            _ => 153,
        }
    }
}

/// The options, and whether each takes a value.
const OPTIONS: &[(&str, bool)] = &[
    ("api-sock", true),
    ("id", true),
    ("config-file", true),
    ("no-api", false),
    ("log-path", true),
    ("level", true),
    ("module", true),
    ("show-level", false),
    ("show-log-origin", false),
    ("metrics-path", true),
    ("boot-timer", false),
    ("http-api-max-payload-size", true),
    ("mmds-size-limit", true),
    ("accel", true),
    ("trace", true),
    ("trace-file", true),
    ("gdb", true),
    ("enable-pci", false),
    ("enable-fork", false),
    ("no-seccomp", false),
    ("seccomp-filter", true),
    ("start-time-us", true),
    ("start-time-cpu-us", true),
    ("parent-cpu-time-us", true),
    ("metadata", true),
    ("snapshot-version", false),
    ("describe-snapshot", true),
];

/// Checks `--id`: 1 to 64 letters, digits or hyphens.
pub fn check_instance_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.chars().count() > 64 {
        return Err(format!("{} characters; use 1 to 64", id.chars().count()));
    }
    if let Some((i, c)) = id
        .chars()
        .enumerate()
        .find(|(_, c)| !(*c == '-' || c.is_alphanumeric()))
    {
        return Err(format!(
            "character {c:?} at position {i}: use letters, digits and '-'"
        ));
    }
    Ok(())
}

fn number<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ArgError> {
    value.parse().map_err(|_| ArgError::BadValue {
        name,
        value: value.to_string(),
        reason: "not a non-negative integer".into(),
    })
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Invocation, ArgError> {
    let args = match args.iter().position(|a| a == "--") {
        Some(i) => &args[..i],
        None => args,
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Invocation::Help);
    }
    if args.iter().any(|a| a == "--version") {
        return Ok(Invocation::Version);
    }
    let mut seen: Vec<&'static str> = Vec::new();
    let mut out = FcArgs::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(rest) = arg.strip_prefix("--") else {
            return Err(ArgError::Unexpected(arg.clone()));
        };
        let (name, inline) = match rest.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (rest, None),
        };
        let Some(&(name, takes_value)) = OPTIONS.iter().find(|(n, _)| *n == name) else {
            return Err(ArgError::Unexpected(arg.clone()));
        };
        if seen.contains(&name) {
            return Err(ArgError::Duplicate(name));
        }
        seen.push(name);
        let value = if takes_value {
            match inline {
                Some(v) => v,
                None => iter
                    .next()
                    .filter(|v| !v.starts_with("--"))
                    .cloned()
                    .ok_or(ArgError::MissingValue(name))?,
            }
        } else {
            if inline.is_some() {
                return Err(ArgError::FlagWithValue(name));
            }
            String::new()
        };
        match name {
            "api-sock" => out.api_sock = PathBuf::from(value),
            "id" => {
                check_instance_id(&value).map_err(|reason| ArgError::BadValue {
                    name,
                    value: value.clone(),
                    reason,
                })?;
                out.id = value;
            }
            "config-file" => out.config_file = Some(PathBuf::from(value)),
            "no-api" => out.no_api = true,
            "log-path" => out.log_path = Some(PathBuf::from(value)),
            "level" => out.level = Some(value.parse().map_err(|_| ArgError::Level(value))?),
            "module" => out.module = Some(value),
            "show-level" => out.show_level = true,
            "show-log-origin" => out.show_log_origin = true,
            "metrics-path" => out.metrics_path = Some(PathBuf::from(value)),
            "boot-timer" => out.boot_timer = true,
            "http-api-max-payload-size" => {
                out.http_api_max_payload_size = number(name, &value)?;
            }
            "mmds-size-limit" => out.mmds_size_limit = Some(number(name, &value)?),
            "accel" => {
                out.accel = value
                    .parse()
                    .map_err(|e: vmm::AccelError| ArgError::BadValue {
                        name,
                        value: value.clone(),
                        reason: e.to_string(),
                    })?;
            }
            "enable-pci" => out.enable_pci = true,
            "enable-fork" => out.enable_fork = true,
            "trace" => out.trace = Some(value),
            "trace-file" => out.trace_file = Some(PathBuf::from(value)),
            "gdb" => out.gdb = Some(number(name, &value)?),
            "no-seccomp" => out.no_seccomp = true,
            "seccomp-filter" => out.seccomp_filter = Some(PathBuf::from(value)),
            "start-time-us" => out.start_time_us = Some(number(name, &value)?),
            "start-time-cpu-us" => out.start_time_cpu_us = Some(number(name, &value)?),
            "parent-cpu-time-us" => out.parent_cpu_time_us = Some(number(name, &value)?),
            "metadata" => {
                return Err(ArgError::Unsupported(
                    "--metadata (the microVM metadata service)",
                ))
            }
            "snapshot-version" | "describe-snapshot" => {
                return Err(ArgError::Unsupported("snapshotting"))
            }
            _ => return Err(ArgError::Unexpected(arg.clone())),
        }
    }
    if out.no_seccomp && out.seccomp_filter.is_some() {
        return Err(ArgError::SeccompConflict);
    }
    if out.no_api && out.config_file.is_none() {
        return Err(ArgError::NoApiWithoutConfig);
    }
    Ok(Invocation::Run(Box::new(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Invocation, ArgError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn run(args: &[&str]) -> FcArgs {
        match p(args).unwrap() {
            Invocation::Run(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_firecrackers() {
        let a = run(&[]);
        assert_eq!(a.api_sock, PathBuf::from("/run/firecracker.socket"));
        assert_eq!(a.id, "anonymous-instance");
        assert_eq!(a.http_api_max_payload_size, 51200);
        assert_eq!(a.accel, Accel::Auto);
        assert!(!a.no_api);
    }

    #[test]
    fn options_and_flags() {
        let a = run(&[
            "--api-sock",
            "/tmp/a.sock",
            "--id",
            "vm-1",
            "--level",
            "debug",
            "--show-level",
            "--show-log-origin",
            "--accel=emu",
            "--http-api-max-payload-size",
            "1000",
            "--start-time-us",
            "12",
            "--",
            "ignored",
        ]);
        assert_eq!(a.api_sock, PathBuf::from("/tmp/a.sock"));
        assert_eq!(a.id, "vm-1");
        assert_eq!(a.level, Some(LogLevel::Debug));
        assert!(a.show_level && a.show_log_origin);
        assert_eq!(a.accel, Accel::Emu);
        assert_eq!(a.http_api_max_payload_size, 1000);
        assert_eq!(a.start_time_us, Some(12));
        let a = run(&["--config-file", "/c.json", "--no-api"]);
        assert!(a.no_api);
        assert_eq!(p(&["--no-api", "--version"]), Ok(Invocation::Version));
        assert_eq!(p(&["--bogus", "-h"]), Ok(Invocation::Help));
    }

    #[test]
    fn errors_and_their_statuses() {
        for (args, status) in [
            (&["--no-api"][..], 153),
            (&["--bogus"], 153),
            (&["stray"], 153),
            (&["--api-sock"], 153),
            (&["--api-sock", "--no-api"], 153),
            (&["--id", "a", "--id", "b"], 153),
            (&["--id", "bad_id"], 153),
            (&["--id", ""], 153),
            (&["--no-api=yes"], 153),
            (&["--http-api-max-payload-size", "-1"], 153),
            (&["--accel", "xen"], 153),
            (&["--level", "loud"], 152),
            (&["--metadata", "/m.json"], 1),
            (&["--seccomp-filter", "/f", "--no-seccomp"], 153),
        ] {
            let e = p(args).unwrap_err();
            assert_eq!(e.exit_status(), status, "{args:?}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
    }
}
