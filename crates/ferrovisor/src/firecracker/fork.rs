//! `PUT /ferrovisor/fork` on the API side: with the VM paused, check every
//! clone's identity against the VM, write the VM's state and memory to
//! memory-backed files (/dev/shm unless `dir` says otherwise), have the
//! fork helper ([`crate::fork_helper`]) start and load the clones, and
//! resume the parent if asked. Any failure answers 400 and leaves the
//! parent as it was (paused); the files are removed either way (the clones
//! keep their private mappings of the memory file).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use api::fork::{ForkInfo, ForkParams};
use api::{Reply, VmSpec};
use vmm::{Command, MachineHandle};

use crate::fork_helper::{ForkHelper, HelperRequest};

/// Where the snapshot goes by default: memory, shared by the clones.
const DEFAULT_DIR: &str = "/dev/shm";

/// Numbers the forks of this process (file names).
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Every clone's identity fits the VM (checked before anything is done).
fn check(spec: &VmSpec, params: &ForkParams) -> Result<(), String> {
    params.check().map_err(|e| e.to_string())?;
    for o in &params.network_overrides {
        if !spec
            .network_interfaces
            .iter()
            .any(|n| n.iface_id == o.iface_id)
        {
            return Err(format!(
                "fork: network_overrides: the VM has no network interface {}",
                o.iface_id
            ));
        }
    }
    if params.vsock_uds_path.is_some() && spec.vsock.is_none() {
        return Err("fork: vsock_uds_path: the VM has no vsock device".into());
    }
    if params.mmds.is_some() && spec.mmds_config.is_none() {
        return Err("fork: mmds: the VM has no MMDS (PUT /mmds/config)".into());
    }
    for n in 0..params.count {
        let mut clone = spec.clone();
        params
            .identity(n)
            .apply(&mut clone)
            .map_err(|e| format!("fork: clone {n}: {}", crate::error_line(&e)))?;
    }
    Ok(())
}

/// Forks the paused VM `machine` (described by `spec`).
pub fn fork(
    spec: &VmSpec,
    machine: &MachineHandle,
    helper: &Mutex<Option<ForkHelper>>,
    params: &ForkParams,
) -> Reply {
    let started = Instant::now();
    if let Err(message) = check(spec, params) {
        return Reply::bad_request(&message);
    }
    let mut helper = helper.lock().unwrap_or_else(|p| p.into_inner());
    let Some(helper) = helper.as_mut() else {
        return Reply::bad_request(
            "PUT /ferrovisor/fork needs the fork helper: start ferrovisor with --enable-fork",
        );
    };
    let dir = params.dir.as_deref().unwrap_or(DEFAULT_DIR);
    let base = format!(
        "{dir}/ferrovisor-fork-{}-{}",
        std::process::id(),
        FORKS.fetch_add(1, Ordering::Relaxed)
    );
    let (state, mem) = (format!("{base}.state"), format!("{base}.mem"));
    let create = api::snapshot::SnapshotCreateParams {
        mem_file_path: mem.clone(),
        snapshot_path: state.clone(),
        snapshot_type: None,
    };
    let remove = vec![state.clone(), mem.clone()];
    if let Err(e) = machine.send(super::snapshot::create_command(spec, &create)) {
        // Whatever was written goes.
        let _ = helper.fork(&HelperRequest {
            loads: Vec::new(),
            remove,
        });
        return Reply::bad_request(&format!("fork: {}", crate::error_line(&e)));
    }
    let snapshot_us = started.elapsed().as_micros() as u64;
    let loads = (0..params.count)
        .map(|n| params.clone_load(n, &state, &mem))
        .collect();
    let clones = match helper.fork(&HelperRequest { loads, remove }) {
        Ok(clones) => clones,
        Err(message) => return Reply::bad_request(&format!("fork: {message}")),
    };
    let total_us = started.elapsed().as_micros() as u64;
    tracing::info!(
        clones = clones.len(),
        snapshot_us,
        total_us,
        "forked the VM in place"
    );
    if params.resume_parent {
        if let Err(e) = machine.send(Command::Resume) {
            return Reply::bad_request(&format!(
                "fork: the clones run, but the parent did not resume: {}",
                crate::error_line(&e)
            ));
        }
    }
    Reply::json(&ForkInfo {
        clones,
        snapshot_us,
        total_us,
        parent_resumed: params.resume_parent,
    })
}
