//! `ferrovisor restore` and `ferrovisor snapshot merge`: snapshots without
//! the API.

use std::path::PathBuf;
use std::process::ExitCode;

use vmm::snapshot::{MemoryBackend, RestoreOptions, SnapshotFile};
use vmm::{Accel, Machine};

#[derive(clap::Args)]
pub(crate) struct RestoreArgs {
    /// The state file (`/snapshot/create`'s snapshot_path).
    #[arg(long, value_name = "STATE")]
    snapshot: PathBuf,
    /// The memory file (full, or a diff merged onto its base), mapped
    /// privately: pages are read on first touch.
    #[arg(long, value_name = "MEM", required_unless_present = "uffd")]
    mem: Option<PathBuf>,
    /// Instead of --mem: the Unix socket of a page-fault handler (e.g.
    /// `uffd-handler --socket SOCKET --mem MEM`) that fills guest memory
    /// on first touch through a userfaultfd (Firecracker's Uffd backend).
    #[arg(long, value_name = "SOCKET", conflicts_with = "mem")]
    uffd: Option<PathBuf>,
    /// Accelerator: auto (the snapshot's), kvm or emu; another than the
    /// snapshot's is refused.
    #[arg(long, default_value = "auto")]
    accel: Accel,
    /// Log the pages the guest dirties (for diff snapshots through a
    /// later API; kept for symmetry with /snapshot/load).
    #[arg(long)]
    track_dirty_pages: bool,
    /// Print a table of VM exits by reason for each vCPU at exit.
    #[arg(long)]
    stats: bool,
    /// No syscall filters (see `ferrovisor run --help`).
    #[arg(long)]
    no_seccomp: bool,
}

#[derive(clap::Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Lay a diff memory file onto its base (in place): only the diff's
    /// data ranges (SEEK_DATA/SEEK_HOLE) are copied. The diff must be on a
    /// file system with holes (ext4, xfs, btrfs, tmpfs).
    Merge {
        /// The full memory file, changed in place.
        #[arg(long, value_name = "MEM")]
        base: PathBuf,
        /// The diff memory file taken after the base.
        #[arg(long, value_name = "MEM")]
        diff: PathBuf,
    },
}

/// Restores the VM and runs it to its end (it starts running).
pub(crate) fn restore(args: &RestoreArgs) -> ExitCode {
    let seccomp = crate::seccomp::setting(args.no_seccomp, None);
    if let Err(message) = crate::seccomp::init(seccomp) {
        return crate::fail(&message, 1);
    }
    if let Err(e) = crate::signals::install() {
        return crate::fail(&format!("cannot take signals: {e}"), 1);
    }
    match build(args) {
        Ok(machine) => crate::signals::exit_code(crate::run_built(machine, args.stats, None)),
        Err(message) => crate::fail(&format!("cannot restore the snapshot: {message}"), 1),
    }
}

fn build(args: &RestoreArgs) -> Result<Machine, String> {
    let file = SnapshotFile::read(&args.snapshot).map_err(|e| crate::error_line(&e))?;
    let spec: api::VmSpec = serde_json::from_str(&file.body.spec_json)
        .map_err(|e| format!("the snapshot's VM description is corrupt: {e}"))?;
    let accel = match args.accel {
        Accel::Auto => file
            .header
            .accelerator
            .parse()
            .map_err(|e| crate::error_line(&e))?,
        other => other,
    };
    let config = vmm::machine_config(&spec, accel).map_err(|e| crate::error_line(&e))?;
    let hypervisor = vmm::open_accelerator(accel).map_err(|e| crate::error_line(&e))?;
    let memory = match (&args.uffd, &args.mem) {
        (Some(socket), _) => MemoryBackend::Uffd(socket.clone()),
        (None, Some(mem)) => MemoryBackend::File(mem.clone()),
        // clap requires one of them.
        (None, None) => return Err("--mem or --uffd is required".into()),
    };
    let options = RestoreOptions {
        memory,
        track_dirty_pages: args.track_dirty_pages,
        resume: true,
    };
    Machine::restore(&config, hypervisor, &file, &options).map_err(|e| crate::error_line(&e))
}

pub(crate) fn snapshot(command: &SnapshotCommand) -> ExitCode {
    match command {
        SnapshotCommand::Merge { base, diff } => match vmm::snapshot::merge_diff(base, diff) {
            Ok(bytes) => {
                say!(
                    "merged {bytes} bytes of {} onto {}",
                    diff.display(),
                    base.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => crate::fail(&crate::error_line(&e), 1),
        },
    }
}
