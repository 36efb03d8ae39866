//! The snapshot state file: what it holds and how it is checked.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "FVSNAP\r\n"
//! 8       4     format version (u32 LE)
//! 12      8     payload length N (u64 LE)
//! 20      N     payload: a postcard-encoded [`SnapshotFile`]
//! 20+N    4     CRC-32 (IEEE) of the payload (u32 LE)
//! ```
//!
//! The payload is a [`SnapshotHeader`] (what must match the host before
//! anything is restored: accelerator, CPU model, memory layout) and a
//! [`SnapshotBody`] (the VM's spec, the VM state, every vCPU's state, the
//! device manager's state). Guest memory is not in this file: it is a
//! separate raw file (see [`super::memory`]), so that a future page server
//! (userfaultfd) or a migration stream can send it on its own.
//!
//! Encoding: postcard (serde, compact, maintained, not self-describing:
//! the format version covers every layout change).

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::devices::DeviceStates;

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"FVSNAP\r\n";
/// The layout this build writes and reads. Bump it on any change of the
/// payload types.
pub const FORMAT_VERSION: u32 = 3;
const PREFIX: usize = 8 + 4 + 8;
/// Refuses payloads beyond this before allocating (a state file holds
/// registers and device state, never memory).
const MAX_PAYLOAD: u64 = 256 << 20;

/// Why a state file cannot be read or does not fit this host.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFormatError {
    #[error("cannot read the snapshot file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the snapshot file {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a Ferrovisor snapshot file (bad magic)")]
    BadMagic,
    #[error("snapshot format version {found}; this Ferrovisor reads version {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("the snapshot file is truncated ({found} bytes, {expected} expected)")]
    Truncated { found: u64, expected: u64 },
    #[error("the snapshot file is corrupt (checksum mismatch)")]
    Checksum,
    #[error("the snapshot file is corrupt: {0}")]
    Decode(String),
    #[error("the snapshot was taken on the {saved} accelerator; this VM runs on {here}")]
    Accelerator { saved: String, here: String },
    #[error("the snapshot was taken on another CPU model ({saved}); this host's is {here}")]
    CpuModel { saved: String, here: String },
    #[error("cannot encode the snapshot: {0}")]
    Encode(String),
}

/// A guest RAM region: guest-physical address and size in bytes. The
/// memory file holds the regions one after the other, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRegion {
    pub gpa: u64,
    pub size: u64,
}

/// What is checked before anything is restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The Ferrovisor that wrote the file (informative).
    pub ferrovisor_version: String,
    /// The accelerator's own name for itself ([`hv::Hypervisor::name`]).
    pub accelerator: String,
    /// [`cpu_fingerprint`] of the host's supported CPUID.
    pub cpu_fingerprint: String,
    pub memory: Vec<MemoryRegion>,
}

impl SnapshotHeader {
    /// Total guest RAM: the memory file's size.
    pub fn memory_size(&self) -> u64 {
        self.memory.iter().map(|r| r.size).sum()
    }

    /// Refuses a header taken on another accelerator or CPU model.
    pub fn check_host(&self, accelerator: &str, cpu: &str) -> Result<(), SnapshotFormatError> {
        if self.accelerator != accelerator {
            return Err(SnapshotFormatError::Accelerator {
                saved: self.accelerator.clone(),
                here: accelerator.into(),
            });
        }
        if self.cpu_fingerprint != cpu {
            return Err(SnapshotFormatError::CpuModel {
                saved: self.cpu_fingerprint.clone(),
                here: cpu.into(),
            });
        }
        Ok(())
    }
}

/// The machine's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotBody {
    /// The VM's description ([`api::VmSpec`]) as JSON (its serde layout
    /// skips absent fields, which a non-self-describing codec cannot).
    pub spec_json: String,
    pub vm: hv::VmState,
    /// By vCPU id.
    pub vcpus: Vec<hv::VcpuState>,
    pub devices: DeviceStates,
}

/// A whole state file's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub header: SnapshotHeader,
    pub body: SnapshotBody,
}

/// A short name of the host's CPU model as the accelerator offers it:
/// vendor, family/model/stepping and a hash of the feature leaves (1 and
/// 7.0: ECX, EDX, EBX), so that a guest that saw some features never wakes
/// up on a CPU without them.
pub fn cpu_fingerprint(supported: &[hv::CpuidEntry]) -> String {
    let vendor = hv::snapshot::cpu_vendor(supported)
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_else(|| "unknown".into());
    let leaf = |f: u32, i: u32| {
        supported
            .iter()
            .find(|e| e.function == f && (!e.significant_index || e.index == i))
            .copied()
            .unwrap_or_default()
    };
    let l1 = leaf(1, 0);
    let l7 = leaf(7, 0);
    let mut h = crc32fast::Hasher::new();
    for w in [l1.ecx, l1.edx, l7.ebx, l7.ecx, l7.edx] {
        h.update(&w.to_le_bytes());
    }
    format!(
        "{vendor} signature {:#x} features {:08x}",
        l1.eax & 0x0fff_3fff,
        h.finalize()
    )
}

impl SnapshotFile {
    /// Encodes the file.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SnapshotFormatError> {
        let payload =
            postcard::to_stdvec(self).map_err(|e| SnapshotFormatError::Encode(e.to_string()))?;
        let mut out = Vec::with_capacity(PREFIX + payload.len() + 4);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        Ok(out)
    }

    /// Decodes and checks a file: magic, version, length, checksum, then
    /// the payload.
    pub fn from_bytes(bytes: &[u8]) -> Result<SnapshotFile, SnapshotFormatError> {
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotFormatError::BadMagic);
        }
        if bytes.len() < PREFIX {
            return Err(SnapshotFormatError::Truncated {
                found: bytes.len() as u64,
                expected: PREFIX as u64,
            });
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
        if version != FORMAT_VERSION {
            return Err(SnapshotFormatError::Version { found: version });
        }
        let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
        if len > MAX_PAYLOAD {
            return Err(SnapshotFormatError::Decode(format!(
                "a payload of {len} bytes"
            )));
        }
        let expected = PREFIX as u64 + len + 4;
        if (bytes.len() as u64) < expected {
            return Err(SnapshotFormatError::Truncated {
                found: bytes.len() as u64,
                expected,
            });
        }
        if (bytes.len() as u64) > expected {
            return Err(SnapshotFormatError::Decode(format!(
                "{} bytes after the checksum",
                bytes.len() as u64 - expected
            )));
        }
        let payload = &bytes[PREFIX..PREFIX + len as usize];
        let crc = &bytes[PREFIX + len as usize..];
        if crc32fast::hash(payload).to_le_bytes() != crc {
            return Err(SnapshotFormatError::Checksum);
        }
        postcard::from_bytes(payload).map_err(|e| SnapshotFormatError::Decode(e.to_string()))
    }

    /// Writes the file at `path` (through a temporary file beside it and
    /// a rename, so that a failed write never leaves half a snapshot under
    /// the name).
    pub fn write(&self, path: &Path) -> Result<(), SnapshotFormatError> {
        let err = |source| SnapshotFormatError::Write {
            path: path.display().to_string(),
            source,
        };
        let bytes = self.to_bytes()?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let mut file = std::fs::File::create(&tmp).map_err(err)?;
        file.write_all(&bytes).map_err(err)?;
        file.sync_all().map_err(err)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Reads and checks the file at `path`.
    pub fn read(path: &Path) -> Result<SnapshotFile, SnapshotFormatError> {
        let err = |source| SnapshotFormatError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        if size > MAX_PAYLOAD + PREFIX as u64 + 4 {
            return Err(SnapshotFormatError::Decode(format!(
                "a file of {size} bytes"
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes).map_err(err)?;
        Self::from_bytes(&bytes)
    }
}
