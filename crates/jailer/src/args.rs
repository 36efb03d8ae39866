//! The jailer's command line: Firecracker's jailer options, then `--` and
//! the VMM's own arguments.

use std::path::PathBuf;

/// Where chroots are built by default, as Firecracker's jailer does.
pub const DEFAULT_CHROOT_BASE: &str = "/srv/jailer";

/// The file-descriptor limit set when no `--resource-limit no-file=` is
/// given (Firecracker's default).
pub const DEFAULT_NO_FILE: u64 = 2048;

/// Which cgroup hierarchy `--cgroup` values go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// One `--cgroup FILE=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupSetting {
    /// The interface file, e.g. `cpuset.cpus`.
    pub file: String,
    /// Its controller: the file name up to the first dot (`cpuset`).
    pub controller: String,
    pub value: String,
}

/// One `--resource-limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceLimit {
    /// RLIMIT_FSIZE: the largest file the process may create, in bytes.
    FileSize(u64),
    /// RLIMIT_NOFILE: one more than the highest descriptor number.
    NoFile(u64),
}

/// Everything the jailer was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailArgs {
    pub id: String,
    pub exec_file: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub chroot_base: PathBuf,
    pub netns: Option<PathBuf>,
    pub cgroups: Vec<CgroupSetting>,
    pub cgroup_version: CgroupVersion,
    /// The cgroup under which `<id>` is made, relative to each hierarchy's
    /// root [default: the exec file's name].
    pub parent_cgroup: Option<PathBuf>,
    pub limits: Vec<ResourceLimit>,
    pub daemonize: bool,
    pub new_pid_ns: bool,
    /// The VMM's own arguments (after `--`).
    pub vmm_args: Vec<String>,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    Jail(Box<JailArgs>),
    Help,
    Version,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    #[error("unexpected argument {0:?}")]
    Unexpected(String),
    #[error("--{0} needs a value")]
    MissingValue(&'static str),
    #[error("--{0} was given more than once")]
    Duplicate(&'static str),
    #[error("--{0} takes no value")]
    FlagWithValue(&'static str),
    #[error("--{0} is required")]
    Missing(&'static str),
    #[error("--{name} {value:?}: {reason}")]
    BadValue {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// The options and whether each takes a value.
const OPTIONS: &[(&str, bool)] = &[
    ("id", true),
    ("exec-file", true),
    ("uid", true),
    ("gid", true),
    ("chroot-base-dir", true),
    ("netns", true),
    ("cgroup", true),
    ("cgroup-version", true),
    ("parent-cgroup", true),
    ("resource-limit", true),
    ("daemonize", false),
    ("new-pid-ns", false),
];

/// Options that may be given more than once.
const REPEATABLE: &[&str] = &["cgroup", "resource-limit"];

pub const USAGE: &str = "\
usage: jailer --id ID --exec-file FILE --uid UID --gid GID
              [--chroot-base-dir DIR] [--netns PATH]
              [--cgroup FILE=VALUE]... [--cgroup-version 1|2] [--parent-cgroup PATH]
              [--resource-limit fsize=N|no-file=N]... [--daemonize] [--new-pid-ns]
              [-- VMM ARGUMENTS...]
  (also 'ferrovisor jail ...'; see docs/SECURITY.md)";

/// Checks an instance id: 1 to 64 ASCII letters, digits or hyphens.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("{} characters; use 1 to 64", id.chars().count()));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        Some(c) => Err(format!(
            "{c:?} is not allowed: letters, digits and '-' only"
        )),
        None => Ok(()),
    }
}

fn bad(name: &'static str, value: &str, reason: impl Into<String>) -> ArgError {
    ArgError::BadValue {
        name,
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn number<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ArgError> {
    value
        .parse()
        .map_err(|_| bad(name, value, "not a non-negative integer"))
}

fn cgroup_setting(value: &str) -> Result<CgroupSetting, ArgError> {
    let (file, setting) = value
        .split_once('=')
        .ok_or_else(|| bad("cgroup", value, "use FILE=VALUE (e.g. cpuset.cpus=0)"))?;
    let controller = match file.split_once('.') {
        Some((c, rest)) if !c.is_empty() && !rest.is_empty() => c,
        _ => return Err(bad("cgroup", value, "the file must be CONTROLLER.NAME")),
    };
    if file.contains('/') || file.starts_with('.') || file.contains("..") {
        return Err(bad("cgroup", value, "the file must be a plain file name"));
    }
    Ok(CgroupSetting {
        file: file.to_string(),
        controller: controller.to_string(),
        value: setting.to_string(),
    })
}

fn resource_limit(value: &str) -> Result<ResourceLimit, ArgError> {
    let (name, n) = value
        .split_once('=')
        .ok_or_else(|| bad("resource-limit", value, "use fsize=N or no-file=N"))?;
    let n: u64 = number("resource-limit", n)?;
    match name {
        "fsize" => Ok(ResourceLimit::FileSize(n)),
        "no-file" => Ok(ResourceLimit::NoFile(n)),
        _ => Err(bad(
            "resource-limit",
            value,
            "unknown resource; fsize or no-file",
        )),
    }
}

fn parent_cgroup(value: &str) -> Result<PathBuf, ArgError> {
    let path = PathBuf::from(value);
    let plain = path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if value.is_empty() || !plain {
        return Err(bad(
            "parent-cgroup",
            value,
            "a relative path without '..' is needed",
        ));
    }
    Ok(path)
}

/// Parses the arguments after the program name (or after `jail`).
pub fn parse(args: &[String]) -> Result<Invocation, ArgError> {
    let (own, vmm_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (args, Vec::new()),
    };
    if own.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Invocation::Help);
    }
    if own.iter().any(|a| a == "--version") {
        return Ok(Invocation::Version);
    }
    let mut seen: Vec<&'static str> = Vec::new();
    let (mut id, mut exec_file, mut uid, mut gid) = (None, None, None, None);
    let mut out = JailArgs {
        id: String::new(),
        exec_file: PathBuf::new(),
        uid: 0,
        gid: 0,
        chroot_base: PathBuf::from(DEFAULT_CHROOT_BASE),
        netns: None,
        cgroups: Vec::new(),
        cgroup_version: CgroupVersion::V1,
        parent_cgroup: None,
        limits: Vec::new(),
        daemonize: false,
        new_pid_ns: false,
        vmm_args,
    };
    let mut iter = own.iter();
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
        if seen.contains(&name) && !REPEATABLE.contains(&name) {
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
            "id" => {
                check_id(&value).map_err(|reason| bad(name, &value, reason))?;
                id = Some(value);
            }
            "exec-file" => {
                if value.is_empty() {
                    return Err(bad(name, &value, "empty path"));
                }
                exec_file = Some(PathBuf::from(value));
            }
            "uid" => uid = Some(number(name, &value)?),
            "gid" => gid = Some(number(name, &value)?),
            "chroot-base-dir" => {
                if !value.starts_with('/') {
                    return Err(bad(name, &value, "an absolute path is needed"));
                }
                out.chroot_base = PathBuf::from(value);
            }
            "netns" => out.netns = Some(PathBuf::from(value)),
            "cgroup" => out.cgroups.push(cgroup_setting(&value)?),
            "cgroup-version" => {
                out.cgroup_version = match value.as_str() {
                    "1" => CgroupVersion::V1,
                    "2" => CgroupVersion::V2,
                    _ => return Err(bad(name, &value, "1 or 2")),
                }
            }
            "parent-cgroup" => out.parent_cgroup = Some(parent_cgroup(&value)?),
            "resource-limit" => out.limits.push(resource_limit(&value)?),
            "daemonize" => out.daemonize = true,
            "new-pid-ns" => out.new_pid_ns = true,
            _ => return Err(ArgError::Unexpected(arg.clone())),
        }
    }
    out.id = id.ok_or(ArgError::Missing("id"))?;
    out.exec_file = exec_file.ok_or(ArgError::Missing("exec-file"))?;
    out.uid = uid.ok_or(ArgError::Missing("uid"))?;
    out.gid = gid.ok_or(ArgError::Missing("gid"))?;
    Ok(Invocation::Jail(Box::new(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Invocation, ArgError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    const BASE: [&str; 8] = [
        "--id",
        "vm-1",
        "--exec-file",
        "/bin/fv",
        "--uid",
        "123",
        "--gid",
        "100",
    ];

    fn jail(extra: &[&str]) -> JailArgs {
        let mut all = BASE.to_vec();
        all.extend_from_slice(extra);
        match p(&all).unwrap() {
            Invocation::Jail(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_and_all_options() {
        let a = jail(&[]);
        assert_eq!(a.id, "vm-1");
        assert_eq!((a.uid, a.gid), (123, 100));
        assert_eq!(a.chroot_base, PathBuf::from("/srv/jailer"));
        assert_eq!(a.cgroup_version, CgroupVersion::V1);
        assert!(a.cgroups.is_empty() && a.limits.is_empty() && a.vmm_args.is_empty());
        let a = jail(&[
            "--chroot-base-dir=/tmp/j",
            "--netns",
            "/var/run/netns/x",
            "--cgroup",
            "cpuset.cpus=0",
            "--cgroup=pids.max=10",
            "--cgroup-version",
            "2",
            "--parent-cgroup",
            "a/b",
            "--resource-limit",
            "fsize=100",
            "--resource-limit",
            "no-file=64",
            "--daemonize",
            "--new-pid-ns",
            "--",
            "--api-sock",
            "/run/x.sock",
            "--id",
        ]);
        assert_eq!(a.chroot_base, PathBuf::from("/tmp/j"));
        assert_eq!(a.netns, Some(PathBuf::from("/var/run/netns/x")));
        assert_eq!(a.cgroups.len(), 2);
        assert_eq!(a.cgroups[0].controller, "cpuset");
        assert_eq!(a.cgroups[1].file, "pids.max");
        assert_eq!(a.cgroups[1].value, "10");
        assert_eq!(a.cgroup_version, CgroupVersion::V2);
        assert_eq!(a.parent_cgroup, Some(PathBuf::from("a/b")));
        assert_eq!(
            a.limits,
            vec![ResourceLimit::FileSize(100), ResourceLimit::NoFile(64)]
        );
        assert!(a.daemonize && a.new_pid_ns);
        assert_eq!(a.vmm_args, vec!["--api-sock", "/run/x.sock", "--id"]);
    }

    #[test]
    fn help_and_version() {
        assert_eq!(p(&["--help"]), Ok(Invocation::Help));
        assert_eq!(p(&["--id", "x", "-h"]), Ok(Invocation::Help));
        assert_eq!(p(&["--version"]), Ok(Invocation::Version));
        // After `--`, --help is the VMM's.
        assert!(matches!(
            p(&[&BASE[..], &["--", "--help"]].concat()),
            Ok(Invocation::Jail(_))
        ));
    }

    #[test]
    fn bad_arguments() {
        let long = "a".repeat(65);
        let cases: &[&[&str]] = &[
            &["--exec-file", "/x", "--uid", "1", "--gid", "1"],
            &["--id", "a", "--uid", "1", "--gid", "1"],
            &["--id", "a", "--exec-file", "/x", "--gid", "1"],
            &["--id", "a", "--exec-file", "/x", "--uid", "1"],
            &[
                "--id",
                "bad_id",
                "--exec-file",
                "/x",
                "--uid",
                "1",
                "--gid",
                "1",
            ],
            &[
                "--id",
                &long,
                "--exec-file",
                "/x",
                "--uid",
                "1",
                "--gid",
                "1",
            ],
            &["--id", ""],
            &["--id", "a", "--id", "b"],
            &["--uid", "-1"],
            &["--gid", "x"],
            &["--cgroup", "cpus"],
            &["--cgroup", "cpus=1"],
            &["--cgroup", "../x.y=1"],
            &["--cgroup-version", "3"],
            &["--parent-cgroup", "../up"],
            &["--parent-cgroup", "/abs"],
            &["--resource-limit", "cpu=1"],
            &["--resource-limit", "fsize=-1"],
            &["--chroot-base-dir", "relative"],
            &["--daemonize=yes"],
            &["--bogus"],
            &["stray"],
            &["--netns"],
        ];
        for case in cases {
            assert!(p(case).is_err(), "{case:?} was accepted");
        }
        assert_eq!(
            p(&["--id", "a", "--exec-file", "/x", "--uid", "1"]),
            Err(ArgError::Missing("gid"))
        );
    }
}
