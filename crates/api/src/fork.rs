//! `PUT /ferrovisor/fork` (Ferrovisor's): fork a paused VM in place into N
//! clones, each a new API process of its own that loads the parent's
//! snapshot (kept in memory) as a clone (`ferrovisor_clone`), and the
//! per-clone templates that give each its identity: `{n}` is the clone's
//! index (0..N), `{n:02x}` the same in two hex digits (for MACs).

use serde::{Deserialize, Serialize};

use crate::clone::{CloneParams, MacOverride};
use crate::snapshot::{
    MemoryBackend, MemoryBackendType, NetworkOverride, SnapshotLoadParams, VsockOverride,
};

/// The most clones one request starts.
pub const MAX_FORK_CLONES: u32 = 64;

/// `template` for clone `n`.
pub fn expand(template: &str, n: u32) -> String {
    template
        .replace("{n:02x}", &format!("{n:02x}"))
        .replace("{n}", &n.to_string())
}

/// Every string of `value` expanded for clone `n`.
fn expand_json(value: &serde_json::Value, n: u32) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(expand(s, n)),
        Value::Array(a) => Value::Array(a.iter().map(|v| expand_json(v, n)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), expand_json(v, n)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkParams {
    /// How many clones (1..=64).
    pub count: u32,
    /// Each clone's API socket (template; with `{n}` when count > 1).
    pub api_sock: String,
    /// Resume the parent once the clones run (else it stays paused).
    #[serde(default)]
    pub resume_parent: bool,
    /// Keep the parent's VM generation ID in the clones (a VM without
    /// ACPI tables has none, and must be forked with this).
    #[serde(default)]
    pub keep_vmgenid: bool,
    /// Each clone's serial output file (template; else discarded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_out_path: Option<String>,
    /// Clone n's vsock CID is guest_cid + n.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_cid: Option<u32>,
    /// Each clone's vsock Unix socket (template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_uds_path: Option<String>,
    /// The network interfaces' MACs (templates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guest_macs: Vec<MacOverride>,
    /// The network interfaces' TAPs (templates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
    /// Each clone's MMDS data (every string in it is a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmds: Option<serde_json::Value>,
    /// Where the state and memory files go while the clones load
    /// [default: /dev/shm, memory-backed]; they are removed once the
    /// clones mapped them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// What one clone is told: its socket, its `PUT /snapshot/load` body and
/// its MMDS data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloneLoad {
    pub n: u32,
    pub api_sock: String,
    pub load: SnapshotLoadParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmds: Option<serde_json::Value>,
}

/// Why a fork request cannot be done; one 400 each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForkParamsError {
    #[error("fork: count must be 1 to {MAX_FORK_CLONES}")]
    Count,
    #[error("fork: {0} needs {{n}} when count > 1 (each clone its own)")]
    NotPerClone(&'static str),
    #[error("fork: guest_cid + count overflows")]
    Cid,
}

impl ForkParams {
    /// Checks what does not depend on the VM.
    pub fn check(&self) -> Result<(), ForkParamsError> {
        if self.count == 0 || self.count > MAX_FORK_CLONES {
            return Err(ForkParamsError::Count);
        }
        if self.count > 1 {
            let per_clone = |t: &str| t.contains("{n}") || t.contains("{n:02x}");
            if !per_clone(&self.api_sock) {
                return Err(ForkParamsError::NotPerClone("api_sock"));
            }
            if self
                .vsock_uds_path
                .as_deref()
                .is_some_and(|t| !per_clone(t))
            {
                return Err(ForkParamsError::NotPerClone("vsock_uds_path"));
            }
            if self
                .network_overrides
                .iter()
                .any(|o| !per_clone(&o.host_dev_name))
            {
                return Err(ForkParamsError::NotPerClone("network_overrides"));
            }
        }
        if let Some(cid) = self.guest_cid {
            cid.checked_add(self.count).ok_or(ForkParamsError::Cid)?;
        }
        Ok(())
    }

    /// Clone `n`'s identity.
    pub fn identity(&self, n: u32) -> CloneParams {
        CloneParams {
            keep_vmgenid: self.keep_vmgenid,
            serial_out_path: self.serial_out_path.as_deref().map(|t| expand(t, n)),
            guest_cid: self.guest_cid.map(|c| c.saturating_add(n)),
            guest_macs: self
                .guest_macs
                .iter()
                .map(|m| MacOverride {
                    iface_id: m.iface_id.clone(),
                    guest_mac: expand(&m.guest_mac, n),
                })
                .collect(),
        }
    }

    /// Clone `n`'s load of the snapshot `state` + `mem` (paused: its MMDS
    /// data go in first).
    pub fn clone_load(&self, n: u32, state: &str, mem: &str) -> CloneLoad {
        let load = SnapshotLoadParams {
            enable_diff_snapshots: None,
            track_dirty_pages: None,
            mem_file_path: None,
            mem_backend: Some(MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: mem.to_string(),
            }),
            snapshot_path: state.to_string(),
            resume_vm: Some(false),
            network_overrides: Some(
                self.network_overrides
                    .iter()
                    .map(|o| NetworkOverride {
                        iface_id: o.iface_id.clone(),
                        host_dev_name: expand(&o.host_dev_name, n),
                    })
                    .collect(),
            ),
            vsock_override: self.vsock_uds_path.as_deref().map(|t| VsockOverride {
                uds_path: expand(t, n),
            }),
            clock_realtime: None,
            huge_pages: None,
            ferrovisor_clone: Some(self.identity(n)),
        };
        CloneLoad {
            n,
            api_sock: expand(&self.api_sock, n),
            load,
            mmds: self.mmds.as_ref().map(|v| expand_json(v, n)),
        }
    }
}

/// One clone in the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkedClone {
    pub n: u32,
    pub pid: u32,
    pub api_sock: String,
}

/// The answer: the clones, running, and the figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkInfo {
    pub clones: Vec<ForkedClone>,
    /// Writing the state and memory files.
    pub snapshot_us: u64,
    /// From the request to every clone running.
    pub total_us: u64,
    /// Whether the parent was resumed.
    pub parent_resumed: bool,
}

/// What the VMM asks its fork helper (one JSON line on the helper's
/// standard input; `ferrovisor fork-helper`).
#[derive(Debug, Serialize, Deserialize)]
pub struct HelperRequest {
    pub loads: Vec<CloneLoad>,
    /// Files to remove once the clones loaded them (or failed to).
    pub remove: Vec<String>,
}

/// What the helper answers (one JSON line).
#[derive(Debug, Serialize, Deserialize)]
pub enum HelperReply {
    Started(Vec<ForkedClone>),
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: &str) -> ForkParams {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn templates_give_each_clone_its_identity() {
        assert_eq!(
            expand("eth0=06:00:00:00:01:{n:02x}", 26),
            "eth0=06:00:00:00:01:1a"
        );
        let p = params(
            r#"{"count": 2, "api_sock": "/run/c{n}.sock", "guest_cid": 10,
                "guest_macs": [{"iface_id": "eth0", "guest_mac": "06:00:00:00:01:{n:02x}"}],
                "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap{n}"}],
                "mmds": {"clone": {"n": "{n}"}, "k": 1}}"#,
        );
        p.check().unwrap();
        let c = p.clone_load(1, "/dev/shm/s", "/dev/shm/m");
        assert_eq!(c.api_sock, "/run/c1.sock");
        assert_eq!(
            c.mmds.unwrap(),
            serde_json::json!({"clone": {"n": "1"}, "k": 1})
        );
        let id = c.load.ferrovisor_clone.unwrap();
        assert_eq!(id.guest_cid, Some(11));
        assert_eq!(id.guest_macs[0].guest_mac, "06:00:00:00:01:01");
        assert!(!id.keep_vmgenid);
        assert_eq!(c.load.network_overrides.unwrap()[0].host_dev_name, "tap1");
        assert_eq!(c.load.resume_vm, Some(false));
    }

    #[test]
    fn what_cannot_be_forked_is_refused() {
        let bad = [
            (
                r#"{"count": 0, "api_sock": "a{n}"}"#,
                ForkParamsError::Count,
            ),
            (
                r#"{"count": 65, "api_sock": "a{n}"}"#,
                ForkParamsError::Count,
            ),
            (
                r#"{"count": 2, "api_sock": "a"}"#,
                ForkParamsError::NotPerClone("api_sock"),
            ),
            (
                r#"{"count": 2, "api_sock": "a{n}", "guest_cid": 4294967295}"#,
                ForkParamsError::Cid,
            ),
        ];
        for (json, want) in bad {
            assert_eq!(params(json).check(), Err(want), "{json}");
        }
        params(r#"{"count": 1, "api_sock": "a"}"#).check().unwrap();
        assert!(
            serde_json::from_str::<ForkParams>(r#"{"count": 1, "api_sock": "a", "x": 1}"#).is_err()
        );
    }
}
