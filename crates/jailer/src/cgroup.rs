//! cgroups: `<hierarchy>/<parent>/<id>/` made in each hierarchy a
//! `--cgroup` setting names (v1: the controller's own mount; v2: the
//! unified mount), the values written, then the jailer's pid joined (the
//! VMM it execs stays there).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::args::{CgroupSetting, CgroupVersion};
use crate::error::JailError;

/// The cgroup files v2 offers without any controller (`cgroup.*`).
const V2_CORE: &str = "cgroup";

/// The cgroups one jail asks for.
pub struct CgroupRequest<'a> {
    pub version: CgroupVersion,
    pub settings: &'a [CgroupSetting],
    /// Relative to each hierarchy's root.
    pub parent: &'a Path,
    pub id: &'a str,
}

/// The mount point of the v1 hierarchy holding `controller`, from
/// /proc/mounts' text.
pub fn v1_mount(mounts: &str, controller: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, target, "cgroup", options, ..] if options.split(',').any(|o| o == controller) => {
                Some(PathBuf::from(unescape(target)))
            }
            _ => None,
        }
    })
}

/// The first cgroup2 mount point, from /proc/mounts' text.
pub fn v2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, target, "cgroup2", ..] => Some(PathBuf::from(unescape(target))),
            _ => None,
        }
    })
}

/// /proc/mounts writes space, tab, newline and backslash as octal escapes.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JailError {
    let path = path.to_path_buf();
    move |source| JailError::CgroupIo { what, path, source }
}

fn read_trimmed(path: &Path) -> Result<String, JailError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(io_error("reading", path))
}

/// Writes `value` to an existing cgroup file (cgroupfs files are never
/// created by a write).
fn write_file(path: &Path, value: &str) -> Result<(), JailError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error("opening", path))?;
    file.write_all(value.as_bytes())
        .map_err(io_error("writing to", path))
}

/// One hierarchy's part of the request.
struct Hierarchy<'a> {
    root: PathBuf,
    settings: Vec<&'a CgroupSetting>,
}

/// Groups the settings by the hierarchy that holds their controller.
fn hierarchies<'a>(
    mounts: &str,
    request: &CgroupRequest<'a>,
) -> Result<Vec<Hierarchy<'a>>, JailError> {
    let mut out: Vec<Hierarchy<'a>> = Vec::new();
    for setting in request.settings {
        let root = match request.version {
            CgroupVersion::V1 => v1_mount(mounts, &setting.controller).ok_or_else(|| {
                JailError::Cgroup(format!(
                    "no cgroup v1 hierarchy has the controller {:?} (for {}; see /proc/mounts)",
                    setting.controller, setting.file
                ))
            })?,
            CgroupVersion::V2 => v2_mount(mounts).ok_or_else(|| {
                JailError::Cgroup(
                    "no cgroup2 hierarchy is mounted (--cgroup-version 2; see /proc/mounts)".into(),
                )
            })?,
        };
        match out.iter_mut().find(|h| h.root == root) {
            Some(h) => h.settings.push(setting),
            None => out.push(Hierarchy {
                root,
                settings: vec![setting],
            }),
        }
    }
    Ok(out)
}

/// Directories this jail made, removed again when a later step fails.
#[derive(Default)]
struct Made(Vec<PathBuf>);

impl Made {
    fn undo(&self) {
        for dir in self.0.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Makes `root/parent/id` level by level; returns the levels below
/// `root`, top first.
fn make_levels(root: &Path, relative: &Path, made: &mut Made) -> Result<Vec<PathBuf>, JailError> {
    let mut levels = Vec::new();
    let mut dir = root.to_path_buf();
    for component in relative.components() {
        dir.push(component);
        match fs::create_dir(&dir) {
            Ok(()) => made.0.push(dir.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("creating", &dir)(e)),
        }
        levels.push(dir.clone());
    }
    Ok(levels)
}

/// v1 cpuset: a new cgroup has no CPUs or memory nodes until given some
/// (a process cannot join it then); each level takes its parent's when
/// empty, as Firecracker's jailer does.
fn inherit_cpuset(root: &Path, levels: &[PathBuf]) -> Result<(), JailError> {
    let mut parent = root.to_path_buf();
    for level in levels {
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if read_trimmed(&level.join(file))?.is_empty() {
                let value = read_trimmed(&parent.join(file))?;
                write_file(&level.join(file), &value)?;
            }
        }
        parent = level.clone();
    }
    Ok(())
}

/// v2: the controllers must be offered by the hierarchy and enabled in
/// the subtree_control of every level above the jail's cgroup.
fn enable_v2_controllers(
    root: &Path,
    levels: &[PathBuf],
    settings: &[&CgroupSetting],
) -> Result<(), JailError> {
    let offered = read_trimmed(&root.join("cgroup.controllers"))?;
    let mut wanted: Vec<&str> = Vec::new();
    for s in settings {
        let c = s.controller.as_str();
        if c == V2_CORE || wanted.contains(&c) {
            continue;
        }
        if !offered.split_whitespace().any(|o| o == c) {
            return Err(JailError::Cgroup(format!(
                "the cgroup2 hierarchy at {} does not offer the controller {c:?} (for {}; it offers: {})",
                root.display(),
                s.file,
                if offered.is_empty() { "none" } else { &offered }
            )));
        }
        wanted.push(c);
    }
    let above = std::iter::once(root.to_path_buf())
        .chain(levels.iter().cloned())
        .take(levels.len());
    for dir in above {
        let control = dir.join("cgroup.subtree_control");
        let enabled = read_trimmed(&control)?;
        for c in &wanted {
            if !enabled.split_whitespace().any(|e| e == *c) {
                write_file(&control, &format!("+{c}"))?;
            }
        }
    }
    Ok(())
}

fn write_settings(dir: &Path, settings: &[&CgroupSetting]) -> Result<(), JailError> {
    for s in settings {
        let path = dir.join(&s.file);
        if !path.exists() {
            return Err(JailError::Cgroup(format!(
                "{} has no file {:?} (unknown for the controller {:?})",
                dir.display(),
                s.file,
                s.controller
            )));
        }
        write_file(&path, &s.value)?;
    }
    Ok(())
}

/// Makes the cgroups, writes the values and moves process `pid` into
/// them. On failure the directories it made are removed again.
pub fn apply(request: &CgroupRequest, pid: u32) -> Result<Vec<PathBuf>, JailError> {
    if request.settings.is_empty() {
        return Ok(Vec::new());
    }
    let mounts = fs::read_to_string("/proc/mounts")
        .map_err(io_error("reading", Path::new("/proc/mounts")))?;
    let hierarchies = hierarchies(&mounts, request)?;
    let mut made = Made::default();
    let result = apply_all(request, &hierarchies, pid, &mut made);
    if result.is_err() {
        made.undo();
    }
    result
}

fn apply_all(
    request: &CgroupRequest,
    hierarchies: &[Hierarchy],
    pid: u32,
    made: &mut Made,
) -> Result<Vec<PathBuf>, JailError> {
    let relative = request.parent.join(request.id);
    let mut leaves = Vec::new();
    for h in hierarchies {
        let levels = make_levels(&h.root, &relative, made)?;
        match request.version {
            CgroupVersion::V1 => {
                if h.settings.iter().any(|s| s.controller == "cpuset") {
                    inherit_cpuset(&h.root, &levels)?;
                }
            }
            CgroupVersion::V2 => enable_v2_controllers(&h.root, &levels, &h.settings)?,
        }
        let leaf = levels.last().cloned().unwrap_or_else(|| h.root.clone());
        write_settings(&leaf, &h.settings)?;
        leaves.push(leaf);
    }
    for leaf in &leaves {
        write_file(&leaf.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(leaves)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /tmp/my\\040cg cgroup2 rw,relatime 0 0
";

    #[test]
    fn finds_mounts() {
        assert_eq!(
            v1_mount(MOUNTS, "cpuacct"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            v1_mount(MOUNTS, "cpuset"),
            Some(PathBuf::from("/sys/fs/cgroup/cpuset"))
        );
        assert_eq!(v1_mount(MOUNTS, "memory"), None);
        assert_eq!(v2_mount(MOUNTS), Some(PathBuf::from("/tmp/my cg")));
        assert_eq!(v2_mount("cgroup /a cgroup rw,cpu 0 0\n"), None);
    }

    #[test]
    fn groups_settings_by_hierarchy_and_names_unknown_controllers() {
        let s = |file: &str| CgroupSetting {
            file: file.into(),
            controller: file.split('.').next().unwrap().into(),
            value: "1".into(),
        };
        let settings = [s("cpu.shares"), s("cpuacct.usage"), s("cpuset.cpus")];
        let request = CgroupRequest {
            version: CgroupVersion::V1,
            settings: &settings,
            parent: Path::new("fv"),
            id: "a",
        };
        let h = hierarchies(MOUNTS, &request).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].settings.len(), 2);
        let bad = [s("bogus.max")];
        let request = CgroupRequest {
            settings: &bad,
            ..request
        };
        let e = hierarchies(MOUNTS, &request).err().unwrap().to_string();
        assert!(e.contains("\"bogus\""), "{e}");
        let request = CgroupRequest {
            version: CgroupVersion::V2,
            ..request
        };
        let h = hierarchies(MOUNTS, &request).unwrap();
        assert_eq!(h[0].root, PathBuf::from("/tmp/my cg"));
        assert!(hierarchies("", &request).is_err());
    }
}
