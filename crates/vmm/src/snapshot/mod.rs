//! Snapshots: a paused machine's state written to a state file
//! ([`format`]) beside a raw memory file ([`memory`]), and a machine
//! built back from them ([`crate::Machine::restore`]).
//!
//! Creating one ([`crate::Command::CreateSnapshot`]) needs a paused
//! machine: the vCPUs leave their state as they park, the device workers
//! have finished their requests, the VM clock is stopped. The state file
//! is written through a temporary file and a rename; the memory file is
//! full, or (diff) only the pages the accelerator logged dirty since the
//! last snapshot or the start, in a sparse file of the full size.
//!
//! A restore maps guest RAM from the memory file (MAP_PRIVATE), or hands
//! anonymous guest RAM to a page-fault handler process through a
//! userfaultfd ([`uffd`], Firecracker's Uffd backend).

mod format;
mod memory;
mod uffd;

use std::path::PathBuf;

use hv::Vm;
use vm_memory::GuestMemoryMmap;

pub use crate::devices::{
    id_hex, DeviceStateError, DeviceStates, GenerationId, TransportSaved, VirtioSaved,
    VmGenIdState, VMGENID_ADDR, VMGENID_GSI,
};
pub use format::{
    cpu_fingerprint, MemoryRegion, SnapshotBody, SnapshotFile, SnapshotFormatError, SnapshotHeader,
    FORMAT_VERSION, MAGIC,
};
pub(crate) use memory::PageMap;
pub use memory::{layout, map_private, merge_diff, write_diff, write_full, MemoryFileError};
pub use uffd::{map_with_handler, PageServerLink, UffdBackendError};

/// Full or diff memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    Full,
    /// Only the pages dirtied since the last snapshot (or the start); the
    /// machine must log dirty pages (`track_dirty_pages`).
    Diff,
}

/// What [`crate::Command::CreateSnapshot`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSnapshot {
    pub state_path: PathBuf,
    pub mem_path: PathBuf,
    pub kind: SnapshotKind,
    /// The VM's description ([`api::VmSpec`]) as JSON, stored so that a
    /// load builds the same machine.
    pub spec_json: String,
}

/// Where a restored guest's memory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryBackend {
    /// The memory file at this path, mapped MAP_PRIVATE: pages are read
    /// on first touch.
    File(PathBuf),
    /// A page-fault handler listening on this Unix socket: it gets a
    /// userfaultfd and the layout, and fills each page on first touch.
    Uffd(PathBuf),
}

/// How [`crate::Machine::restore`] builds the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOptions {
    pub memory: MemoryBackend,
    pub track_dirty_pages: bool,
    /// Start running (else the machine starts paused).
    pub resume: bool,
    /// A clone: write a new VM generation ID and notify the guest (the
    /// snapshot's machine must have the device: one with ACPI tables).
    pub regenerate_vmgenid: bool,
}

/// Why a snapshot could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the microVM must be paused to create a snapshot")]
    NotPaused,
    #[error("a diff snapshot needs dirty page tracking (track_dirty_pages)")]
    DiffWithoutTracking,
    #[error(transparent)]
    Format(#[from] SnapshotFormatError),
    #[error(transparent)]
    Memory(#[from] MemoryFileError),
    #[error(transparent)]
    PageServer(#[from] UffdBackendError),
    #[error("cannot save or restore the VM state")]
    Vm(#[source] hv::HvError),
    #[error("cannot save or restore the state of vCPU {id}: {message}")]
    Vcpu { id: u32, message: String },
    #[error(transparent)]
    Devices(DeviceStateError),
    #[error("the snapshot's VM has no VM generation ID device (it has no ACPI tables): it cannot be given a new generation ID")]
    NoVmGenId,
    #[error("cannot give the VM a new generation ID")]
    VmGenId(#[source] crate::devices::VmGenIdError),
    #[error("the snapshot does not fit its own VM description: {0}")]
    Inconsistent(String),
    #[error("cannot build the machine")]
    Machine(#[source] Box<crate::MachineError>),
}

impl From<crate::MachineError> for SnapshotError {
    fn from(e: crate::MachineError) -> Self {
        SnapshotError::Machine(Box::new(e))
    }
}

impl From<crate::memory::MemoryError> for SnapshotError {
    fn from(e: crate::memory::MemoryError) -> Self {
        SnapshotError::Machine(Box::new(e.into()))
    }
}

/// Guest RAM laid out as `regions`, from `backend`; with a page-fault
/// handler, the link the machine keeps while it lives.
pub(crate) fn map_memory(
    backend: &MemoryBackend,
    regions: &[MemoryRegion],
) -> Result<(GuestMemoryMmap, Option<PageServerLink>), SnapshotError> {
    Ok(match backend {
        MemoryBackend::File(path) => (map_private(path, regions)?, None),
        MemoryBackend::Uffd(socket) => {
            let (mem, link) = map_with_handler(socket, regions)?;
            (mem, Some(link))
        }
    })
}

/// Gathers a paused machine's state into a state file's contents.
pub(crate) fn collect(
    vm: &dyn Vm,
    mem: &GuestMemoryMmap,
    devices: &crate::devices::DeviceManager,
    vcpus: Vec<hv::VcpuState>,
    spec_json: &str,
    accel: &str,
    cpu: &str,
) -> Result<SnapshotFile, SnapshotError> {
    let devices = devices.save().map_err(SnapshotError::Devices)?;
    Ok(SnapshotFile {
        header: SnapshotHeader {
            ferrovisor_version: env!("CARGO_PKG_VERSION").into(),
            accelerator: accel.into(),
            cpu_fingerprint: cpu.into(),
            memory: layout(mem),
        },
        body: SnapshotBody {
            spec_json: spec_json.into(),
            vm: vm.save_state().map_err(SnapshotError::Vm)?,
            vcpus,
            devices,
        },
    })
}

/// Writes the memory file, then the state file (so that a state file
/// never names memory that was not written). Returns the memory bytes
/// written. `filled_here`: see [`write_full`].
pub(crate) fn write_files(
    file: &SnapshotFile,
    vm: &dyn Vm,
    mem: &GuestMemoryMmap,
    request: &CreateSnapshot,
    (dirty_log, filled_here): (bool, bool),
) -> Result<u64, SnapshotError> {
    let written = match request.kind {
        SnapshotKind::Full => {
            if dirty_log {
                // The next diff is relative to this full snapshot.
                for slot in 0..layout(mem).len() as u32 {
                    vm.get_dirty_log(slot)
                        .map_err(|source| MemoryFileError::DirtyLog { slot, source })?;
                }
            }
            write_full(mem, &request.mem_path, filled_here)?
        }
        SnapshotKind::Diff => write_diff(vm, mem, &request.mem_path)?,
    };
    file.write(&request.state_path)?;
    Ok(written)
}

#[cfg(test)]
mod tests;
