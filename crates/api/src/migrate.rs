//! `PUT /ferrovisor/migrate` (Ferrovisor's): send the running VM to a
//! destination started with `ferrovisor migrate-receive`, and the figures
//! the answer carries.

use serde::{Deserialize, Serialize};

/// The request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateParams {
    /// `tcp:HOST:PORT`: where the destination listens.
    pub destination_url: String,
    /// The downtime target: pre-copy rounds go on until what is left
    /// would take less than this [default: 50].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// Pre-copy rounds at most (the first sends all memory) [default: 30].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rounds: Option<u32>,
}

/// The answer of a migration that succeeded (the source then exits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationInfo {
    pub rounds: u32,
    /// Guest memory bytes sent in all.
    pub memory_bytes: u64,
    /// Guest memory bytes sent while the VM was paused.
    pub last_round_bytes: u64,
    /// From the pause to the destination's answer that the VM runs.
    pub downtime_us: u64,
    /// From the connection to the destination's answer.
    pub total_us: u64,
}
