//! `ferrovisor restore` and `ferrovisor snapshot merge`: snapshots without
//! the API. `restore` also makes clones (`--new-vmgenid` and the identity
//! overrides; `ferrovisor fork` runs several, see [`crate::fork`]).

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
    /// Restore as a clone: write a new VM generation ID and notify the
    /// guest (its kernel reseeds its RNG). The snapshot's VM must have
    /// ACPI tables (a Linux guest).
    #[arg(long)]
    new_vmgenid: bool,
    /// The serial output file (else the snapshot's).
    #[arg(long, value_name = "PATH")]
    serial_out: Option<String>,
    /// The vsock device's CID (else the snapshot's).
    #[arg(long, value_name = "CID")]
    guest_cid: Option<u32>,
    /// The vsock device's Unix socket (else the snapshot's).
    #[arg(long, value_name = "PATH")]
    vsock_uds: Option<String>,
    /// A network interface's TAP: IFACE=TAP (repeatable).
    #[arg(long, value_name = "IFACE=TAP", value_parser = iface_value)]
    tap: Vec<(String, String)>,
    /// A network interface's MAC address: IFACE=MAC (repeatable).
    #[arg(long, value_name = "IFACE=MAC", value_parser = iface_value)]
    mac: Vec<(String, String)>,
    /// The MMDS data store's contents (JSON), as `PUT /mmds` would set
    /// them; the snapshot's VM must have an MMDS configuration.
    #[arg(long, value_name = "JSON")]
    mmds_data: Option<String>,
    /// Print `ferrovisor-clone-ready restore_us=N` on standard output
    /// once the VM runs (N: microseconds from reading the snapshot to the
    /// running VM). `ferrovisor fork` waits for it.
    #[arg(long)]
    report_ready: bool,
}

/// The marker line of `--report-ready`.
pub(crate) const READY_MARKER: &str = "ferrovisor-clone-ready";

fn iface_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((iface, value)) if !iface.is_empty() && !value.is_empty() => {
            Ok((iface.to_string(), value.to_string()))
        }
        _ => Err(format!("{text:?} is not IFACE=VALUE")),
    }
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

/// `restore`'s arguments from a command line (`argv[0]` is not one).
pub(crate) fn parse_restore(argv: &[String]) -> Result<RestoreArgs, String> {
    #[derive(clap::Parser)]
    struct Restore {
        #[command(flatten)]
        args: RestoreArgs,
    }
    <Restore as clap::Parser>::try_parse_from(argv)
        .map(|r| r.args)
        .map_err(|e| crate::usage::one_line(&e))
}

/// Restores the VM and runs it to its end (it starts running).
pub(crate) fn restore(args: &RestoreArgs) -> ExitCode {
    restore_from(args, None)
}

/// [`restore`] from the state file `read` when the caller read it
/// already (`ferrovisor fork` reads it once for all its clones).
pub(crate) fn restore_from(args: &RestoreArgs, read: Option<SnapshotFile>) -> ExitCode {
    let seccomp = crate::seccomp::setting(args.no_seccomp, None);
    if let Err(message) = crate::seccomp::init(seccomp) {
        return crate::fail(&message, 1);
    }
    if let Err(e) = crate::signals::install() {
        return crate::fail(&format!("cannot take signals: {e}"), 1);
    }
    let started = std::time::Instant::now();
    match build(args, read) {
        Ok(machine) => {
            let report = args.report_ready;
            let announce = move || {
                if report {
                    let us = started.elapsed().as_micros();
                    crate::out::stdout(&format!("{READY_MARKER} restore_us={us}\n"));
                }
            };
            crate::signals::exit_code(crate::run_built_then(machine, args.stats, None, announce))
        }
        Err(message) => crate::fail(&format!("cannot restore the snapshot: {message}"), 1),
    }
}

/// The overrides of `args` (`--tap`, `--vsock-uds`, and a clone's
/// identity) applied to the snapshot's VM description.
fn apply_overrides(args: &RestoreArgs, spec: &mut api::VmSpec) -> Result<(), String> {
    let nets: Vec<_> = args
        .tap
        .iter()
        .map(|(iface_id, tap)| api::snapshot::NetworkOverride {
            iface_id: iface_id.clone(),
            host_dev_name: tap.clone(),
        })
        .collect();
    let vsock = args
        .vsock_uds
        .as_ref()
        .map(|uds_path| api::snapshot::VsockOverride {
            uds_path: uds_path.clone(),
        });
    let clone = api::clone::CloneParams {
        keep_vmgenid: !args.new_vmgenid,
        serial_out_path: args.serial_out.clone(),
        guest_cid: args.guest_cid,
        guest_macs: args
            .mac
            .iter()
            .map(|(iface_id, mac)| api::clone::MacOverride {
                iface_id: iface_id.clone(),
                guest_mac: mac.clone(),
            })
            .collect(),
    };
    crate::firecracker::snapshot::apply_overrides(spec, &nets, vsock.as_ref(), Some(&clone))
}

/// Fills the MMDS of `config` with `json`.
fn put_mmds(config: &vmm::MachineConfig, json: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("--mmds-data is not JSON: {e}"))?;
    let attach = config
        .mmds
        .as_ref()
        .ok_or("--mmds-data: the snapshot's VM has no MMDS (mmds-config)")?;
    let mut mmds = attach.shared.lock().unwrap_or_else(|p| p.into_inner());
    mmds.store
        .put(value)
        .map_err(|e| format!("--mmds-data: {}", crate::error_line(&e)))
}

fn build(args: &RestoreArgs, read: Option<SnapshotFile>) -> Result<Machine, String> {
    let file = match read {
        Some(file) => file,
        None => SnapshotFile::read(&args.snapshot).map_err(|e| crate::error_line(&e))?,
    };
    let mut spec: api::VmSpec = serde_json::from_str(&file.body.spec_json)
        .map_err(|e| format!("the snapshot's VM description is corrupt: {e}"))?;
    apply_overrides(args, &mut spec)?;
    let accel = match args.accel {
        Accel::Auto => file
            .header
            .accelerator
            .parse()
            .map_err(|e| crate::error_line(&e))?,
        other => other,
    };
    let config = vmm::machine_config(&spec, accel).map_err(|e| crate::error_line(&e))?;
    if let Some(json) = &args.mmds_data {
        put_mmds(&config, json)?;
    }
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
        regenerate_vmgenid: args.new_vmgenid,
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
