//! The bodies of `PUT /snapshot/create` and `PUT /snapshot/load`
//! (`SnapshotCreateParams`, `SnapshotLoadParams`, `MemoryBackend`,
//! `NetworkOverride` in `firecracker-api.yaml`).

use serde::{Deserialize, Serialize};

/// Full (every page) or diff (pages dirtied since the last snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SnapshotType {
    #[default]
    Full,
    Diff,
}

/// `PUT /snapshot/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateParams {
    pub mem_file_path: String,
    pub snapshot_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
}

/// Where a loaded guest's memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    /// A memory file, mapped privately.
    File,
    /// A page server on a Unix socket (userfaultfd).
    Uffd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    pub backend_type: MemoryBackendType,
    pub backend_path: String,
}

/// A network interface's new TAP device on load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// A vsock device's new Unix socket on load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockOverride {
    pub uds_path: String,
}

/// `PUT /snapshot/load`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoadParams {
    /// Deprecated name of `track_dirty_pages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_diff_snapshots: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Deprecated: a `File` memory backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_file_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_backend: Option<MemoryBackend>,
    pub snapshot_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_overrides: Option<Vec<NetworkOverride>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_realtime: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
    /// Ferrovisor's extension (not in Firecracker's specification): load
    /// the snapshot as a clone with its own identity (see
    /// [`crate::clone`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ferrovisor_clone: Option<crate::clone::CloneParams>,
}

/// Where a load takes the guest's memory from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySource<'a> {
    /// The memory file at this path.
    File(&'a str),
    /// The page-fault handler listening on this Unix socket.
    Uffd(&'a str),
}

/// Why a load request is refused before anything is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotParamsError {
    #[error("exactly one of mem_file_path and mem_backend must be given")]
    MemorySource,
    #[error("mem_backend.backend_path is empty")]
    EmptyPath,
    #[error("huge_pages {0:?} is not supported on load (only \"Snapshot\" and \"None\")")]
    HugePages(String),
}

impl SnapshotLoadParams {
    /// Where the memory comes from: `mem_backend` (File or Uffd) or the
    /// deprecated `mem_file_path` (a file), exactly one of them.
    pub fn memory_source(&self) -> Result<MemorySource<'_>, SnapshotParamsError> {
        if let Some(h) = &self.huge_pages {
            if h != "Snapshot" && h != "None" {
                return Err(SnapshotParamsError::HugePages(h.clone()));
            }
        }
        match (&self.mem_file_path, &self.mem_backend) {
            (Some(path), None) => Ok(MemorySource::File(path)),
            (None, Some(b)) if b.backend_path.is_empty() => Err(SnapshotParamsError::EmptyPath),
            (None, Some(b)) => Ok(match b.backend_type {
                MemoryBackendType::File => MemorySource::File(&b.backend_path),
                MemoryBackendType::Uffd => MemorySource::Uffd(&b.backend_path),
            }),
            _ => Err(SnapshotParamsError::MemorySource),
        }
    }

    /// Dirty page tracking, under either name.
    pub fn track_dirty_pages(&self) -> bool {
        self.track_dirty_pages
            .or(self.enable_diff_snapshots)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> SnapshotLoadParams {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn memory_source_is_exactly_one() {
        let p = load(r#"{"snapshot_path": "s", "mem_file_path": "m"}"#);
        assert_eq!(p.memory_source(), Ok(MemorySource::File("m")));
        let p = load(
            r#"{"snapshot_path": "s", "mem_backend": {"backend_type": "File", "backend_path": "m2"}}"#,
        );
        assert_eq!(p.memory_source(), Ok(MemorySource::File("m2")));
        let p = load(
            r#"{"snapshot_path": "s", "mem_backend": {"backend_type": "Uffd", "backend_path": "u"}}"#,
        );
        assert_eq!(p.memory_source(), Ok(MemorySource::Uffd("u")));
        let p = load(
            r#"{"snapshot_path": "s", "mem_backend": {"backend_type": "Uffd", "backend_path": ""}}"#,
        );
        assert_eq!(p.memory_source(), Err(SnapshotParamsError::EmptyPath));
        let p = load(r#"{"snapshot_path": "s"}"#);
        assert_eq!(p.memory_source(), Err(SnapshotParamsError::MemorySource));
        let p = load(
            r#"{"snapshot_path": "s", "mem_file_path": "m", "mem_backend": {"backend_type": "File", "backend_path": "m"}}"#,
        );
        assert_eq!(p.memory_source(), Err(SnapshotParamsError::MemorySource));
    }

    #[test]
    fn dirty_tracking_under_both_names() {
        let p =
            load(r#"{"snapshot_path": "s", "mem_file_path": "m", "enable_diff_snapshots": true}"#);
        assert!(p.track_dirty_pages());
        let p = load(r#"{"snapshot_path": "s", "mem_file_path": "m"}"#);
        assert!(!p.track_dirty_pages());
        assert!(
            serde_json::from_str::<SnapshotLoadParams>(r#"{"snapshot_path": "s", "x": 1}"#)
                .is_err()
        );
        let c: SnapshotCreateParams = serde_json::from_str(
            r#"{"snapshot_path": "s", "mem_file_path": "m", "snapshot_type": "Diff"}"#,
        )
        .unwrap();
        assert_eq!(c.snapshot_type, Some(SnapshotType::Diff));
    }
}
