//! `/snapshot/create` and `/snapshot/load` on the API side: from the
//! request bodies to the machine's command and to a restore request for
//! the process's controller thread.

use std::path::PathBuf;

use api::clone::CloneParams;
use api::snapshot::{
    MemorySource, NetworkOverride, SnapshotCreateParams, SnapshotLoadParams, SnapshotType,
    VsockOverride,
};
use api::VmSpec;
use vmm::snapshot::{CreateSnapshot, MemoryBackend, RestoreOptions, SnapshotFile, SnapshotKind};
use vmm::{Accel, Command, Machine};

/// A machine to build from a snapshot.
pub struct Restore {
    pub file: SnapshotFile,
    pub options: RestoreOptions,
}

/// The machine command `PUT /snapshot/create` sends.
pub fn create_command(spec: &VmSpec, params: &SnapshotCreateParams) -> Command {
    Command::CreateSnapshot(CreateSnapshot {
        state_path: PathBuf::from(&params.snapshot_path),
        mem_path: PathBuf::from(&params.mem_file_path),
        kind: match params.snapshot_type.unwrap_or_default() {
            SnapshotType::Full => SnapshotKind::Full,
            SnapshotType::Diff => SnapshotKind::Diff,
        },
        // VmSpec's serialization cannot fail (plain data, string keys).
        spec_json: serde_json::to_string(spec).unwrap_or_default(),
    })
}

/// Reads and checks the state file `params` names and the spec it holds,
/// with the network and vsock overrides and a clone's identity
/// (`ferrovisor_clone`) applied. The accelerator, CPU model and memory
/// file (or the page-fault handler's socket) are checked when the
/// machine is built.
pub fn prepare_load(params: &SnapshotLoadParams) -> Result<(VmSpec, Restore), String> {
    let memory = match params.memory_source().map_err(|e| e.to_string())? {
        MemorySource::File(path) => MemoryBackend::File(PathBuf::from(path)),
        MemorySource::Uffd(socket) => MemoryBackend::Uffd(PathBuf::from(socket)),
    };
    let file = SnapshotFile::read(std::path::Path::new(&params.snapshot_path))
        .map_err(|e| crate::error_line(&e))?;
    let mut spec: VmSpec = serde_json::from_str(&file.body.spec_json)
        .map_err(|e| format!("the snapshot's VM description is corrupt: {e}"))?;
    apply_overrides(
        &mut spec,
        params.network_overrides.as_deref().unwrap_or_default(),
        params.vsock_override.as_ref(),
        params.ferrovisor_clone.as_ref(),
    )?;
    Ok((
        spec,
        Restore {
            file,
            options: RestoreOptions {
                memory,
                track_dirty_pages: params.track_dirty_pages(),
                resume: params.resume_vm.unwrap_or(false),
                regenerate_vmgenid: params
                    .ferrovisor_clone
                    .as_ref()
                    .is_some_and(|c| !c.keep_vmgenid),
            },
        },
    ))
}

/// Applies a load's overrides to the snapshot's VM description `spec`:
/// TAPs of network interfaces, the vsock device's Unix socket, a clone's
/// identity. (`ferrovisor restore` and `/snapshot/load` alike.)
pub fn apply_overrides(
    spec: &mut VmSpec,
    nets: &[NetworkOverride],
    vsock: Option<&VsockOverride>,
    clone: Option<&CloneParams>,
) -> Result<(), String> {
    for o in nets {
        let iface = spec
            .network_interfaces
            .iter_mut()
            .find(|n| n.iface_id == o.iface_id)
            .ok_or_else(|| {
                format!(
                    "network_overrides: the snapshot has no network interface {}",
                    o.iface_id
                )
            })?;
        iface.host_dev_name = o.host_dev_name.clone();
    }
    if let Some(o) = vsock {
        let vsock = spec
            .vsock
            .as_mut()
            .ok_or("vsock_override: the snapshot has no vsock device")?;
        vsock.uds_path = o.uds_path.clone();
    }
    if let Some(clone) = clone {
        clone.apply(spec).map_err(|e| crate::error_line(&e))?;
    }
    Ok(())
}

/// Builds the machine of a restore request: the snapshot's accelerator
/// when `accel` is auto.
pub fn build(
    spec: &VmSpec,
    accel: Accel,
    restore: &Restore,
    mmds: &mmds::SharedMmds,
) -> Result<Machine, String> {
    let accel = match accel {
        Accel::Auto => restore
            .file
            .header
            .accelerator
            .parse()
            .map_err(|e| crate::error_line(&e))?,
        other => other,
    };
    let mut config = vmm::machine_config(spec, accel).map_err(|e| crate::error_line(&e))?;
    if let Some(attach) = config.mmds.as_mut() {
        attach.shared = mmds.clone();
    }
    let hypervisor = vmm::open_accelerator(accel).map_err(|e| crate::error_line(&e))?;
    Machine::restore(&config, hypervisor, &restore.file, &restore.options)
        .map_err(|e| crate::error_line(&e))
}
