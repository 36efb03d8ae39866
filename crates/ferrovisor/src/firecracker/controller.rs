//! The VM side of the API: the instance's [`VmSpec`] and lifecycle state,
//! Firecracker's pre-boot/post-boot rules, and the hand-over of
//! InstanceStart to the controller thread that builds and runs the
//! machine.
//!
//! Requests come from several connection threads; one mutex orders them.
//! A request that fails changes nothing: each one is checked (and the
//! files it names opened) before the spec is touched.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use api::http::Status;
use api::schema::{
    ActionType, Drive, FirecrackerVersion, InstanceInfo, InstanceState, Logger as LoggerSpec,
    Metrics, PartialDrive, PartialNetworkInterface, VmState,
};
use api::{Backend, Reply, Request, VmSpec};
use vmm::{Command, LimitTarget, MachineHandle, RunState};

use super::logger::{open_sink, Logger};
use super::metrics::{ApiMetrics, Inputs, LineBuilder};

/// What InstanceStart hands to the controller thread.
pub struct StartRequest {
    pub spec: VmSpec,
    /// `PUT /snapshot/load`: build the machine from this snapshot.
    pub restore: Option<super::snapshot::Restore>,
    /// The started machine's handle, or `Err(message)` when the machine
    /// could not be built or started.
    pub reply: Sender<Result<MachineHandle, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Running,
    Paused,
}

struct State {
    spec: VmSpec,
    /// The running machine (None before InstanceStart).
    machine: Option<MachineHandle>,
    /// Started (from a configuration file) before the handle arrived.
    started: bool,
    metrics: Option<File>,
    /// The counters' values at the previous metrics line.
    lines: LineBuilder,
}

impl State {
    fn phase(&self) -> Phase {
        match &self.machine {
            None if self.started => Phase::Running,
            None => Phase::NotStarted,
            Some(m) => match m.state() {
                RunState::Paused => Phase::Paused,
                RunState::Running | RunState::Ended => Phase::Running,
            },
        }
    }
}

/// The instance behind the API.
pub struct Controller {
    id: String,
    state: Mutex<State>,
    start: Mutex<Sender<StartRequest>>,
    logger: Option<Arc<Logger>>,
    started: Instant,
    requests: AtomicU64,
    failed: AtomicU64,
    /// Requests by endpoint and latencies, for the metrics.
    api_metrics: ApiMetrics,
    /// From the front end's start to the API socket listening.
    startup_us: Mutex<Option<u64>>,
    /// The MMDS data store and tokens, shared with the network devices.
    mmds: mmds::SharedMmds,
    /// The running machine's exit counters.
    live: Mutex<Option<vmm::LiveStats>>,
    /// `--enable-fork`: the helper that starts `PUT /ferrovisor/fork`'s clones.
    fork_helper: Mutex<Option<crate::fork_helper::ForkHelper>>,
}

const PRE_BOOT_ONLY: &str = "this request is only accepted before the microVM starts";
const POST_BOOT_ONLY: &str = "this request is only accepted after the microVM starts";

fn open_error(what: &str, path: &str, e: &std::io::Error) -> String {
    format!("cannot open {what} {path}: {e}")
}

/// Checks that `path` is a regular file or a block device that opens for
/// reading (and writing, unless `read_only`). The open does not block: a
/// FIFO named by mistake is an error, not a hung API.
fn check_file(what: &str, path: &str, read_only: bool) -> Result<(), String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| open_error(what, path, &e))?;
    let kind = file
        .metadata()
        .map_err(|e| open_error(what, path, &e))?
        .file_type();
    if !(kind.is_file() || kind.is_block_device()) {
        return Err(format!(
            "{what} {path} is not a regular file or a block device"
        ));
    }
    Ok(())
}

impl Controller {
    pub fn new(
        id: &str,
        spec: VmSpec,
        running: bool,
        logger: Option<Arc<Logger>>,
        metrics: Option<File>,
        start: Sender<StartRequest>,
    ) -> Controller {
        Controller {
            id: id.to_string(),
            state: Mutex::new(State {
                spec,
                machine: None,
                started: running,
                metrics,
                lines: LineBuilder::default(),
            }),
            start: Mutex::new(start),
            logger,
            started: Instant::now(),
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            api_metrics: ApiMetrics::default(),
            startup_us: Mutex::new(None),
            mmds: mmds::Mmds::shared(mmds::store::DEFAULT_LIMIT),
            live: Mutex::new(None),
            fork_helper: Mutex::new(None),
        }
    }

    /// Gives the controller the fork helper (`--enable-fork`).
    pub fn with_fork_helper(self, helper: Option<crate::fork_helper::ForkHelper>) -> Controller {
        *self.fork_helper.lock().unwrap_or_else(|p| p.into_inner()) = helper;
        self
    }

    /// Gives the controller the counters of the machine that runs.
    pub fn set_live(&self, live: vmm::LiveStats) {
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(live);
    }

    fn live_sample(&self) -> Option<vmm::StatsSample> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.as_ref().map(vmm::LiveStats::sample)
    }

    /// Serves `/mmds` from `shared` (the store the machine's network
    /// devices read).
    pub fn with_mmds(mut self, shared: mmds::SharedMmds) -> Controller {
        self.mmds = shared;
        self
    }

    /// `/mmds` (any time) and `PUT /mmds/config` (before start).
    fn handle_mmds(&self, state: &mut State, request: Request) -> Reply {
        let mut mmds = self.mmds.lock().unwrap_or_else(|p| p.into_inner());
        let result = match request {
            Request::GetMmds => return Reply::json(&mmds.store.contents()),
            Request::PutMmds(value) => mmds.store.put(value),
            Request::PatchMmds(patch) => mmds.store.patch(&patch),
            Request::PutMmdsConfig(_) if state.phase() != Phase::NotStarted => {
                return Reply::bad_request(PRE_BOOT_ONLY)
            }
            Request::PutMmdsConfig(config) => {
                return spec_reply(state.spec.set_mmds_config(config))
            }
            _ => return Reply::fault(Status::InternalServerError, "not an MMDS request"),
        };
        match result {
            Ok(()) => Reply::no_content(),
            Err(e) => Reply::bad_request(&e.to_string()),
        }
    }

    /// The machine started from a configuration file runs: commands go
    /// to `machine`.
    pub fn set_machine(&self, machine: MachineHandle) {
        self.state().machine = Some(machine);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records Firecracker's `process_startup_time_us`.
    pub fn set_startup_time(&self, took: std::time::Duration) {
        *self.startup_us.lock().unwrap_or_else(|p| p.into_inner()) = Some(took.as_micros() as u64);
    }

    /// The next metrics line (see [`super::metrics`]).
    fn metrics_line(&self, state: &mut State) -> String {
        let utc_timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let inputs = Inputs {
            api: &self.api_metrics,
            process_startup_time_us: *self.startup_us.lock().unwrap_or_else(|p| p.into_inner()),
            missed_log_count: self
                .logger
                .as_ref()
                .map_or(0, |l| l.missed.load(Ordering::Relaxed)),
            sample: live.as_ref().map(vmm::LiveStats::sample),
            devices: live.as_ref().map(vmm::LiveStats::devices),
            drive_ids: state
                .spec
                .drives_in_guest_order()
                .map(|d| d.drive_id.clone())
                .collect(),
            iface_ids: state
                .spec
                .network_interfaces
                .iter()
                .map(|n| n.iface_id.clone())
                .collect(),
            state: match state.phase() {
                Phase::NotStarted => "Not started",
                Phase::Running => "Running",
                Phase::Paused => "Paused",
            },
            uptime_us: self.started.elapsed().as_micros() as u64,
            utc_timestamp_ms,
        };
        let mut line = state.lines.line(inputs);
        if let Some(ferrovisor) = line.get_mut("ferrovisor").and_then(|v| v.as_object_mut()) {
            ferrovisor.insert(
                "api_requests".into(),
                self.requests.load(Ordering::Relaxed).into(),
            );
            ferrovisor.insert(
                "api_refused".into(),
                self.failed.load(Ordering::Relaxed).into(),
            );
        }
        let mut text = line.to_string();
        text.push('\n');
        text
    }

    /// Writes a metrics line to the metrics destination, when there is
    /// one (FlushMetrics, the periodic timer, the end of the process).
    fn flush_locked(&self, state: &mut State) -> std::io::Result<()> {
        if state.metrics.is_none() {
            return Ok(());
        }
        let line = self.metrics_line(state);
        let Some(file) = &mut state.metrics else {
            return Ok(());
        };
        file.write_all(line.as_bytes()).inspect_err(|_| {
            self.api_metrics
                .metrics_fails
                .fetch_add(1, Ordering::Relaxed);
        })
    }

    /// [`Controller::flush_locked`] from outside a request.
    pub fn flush_metrics(&self) {
        if let Err(e) = self.flush_locked(&mut self.state()) {
            tracing::warn!("cannot write the metrics: {e}");
        }
    }

    fn put_metrics(&self, state: &mut State, m: Metrics) -> Reply {
        if state.metrics.is_some() {
            return Reply::bad_request("the metrics system is already configured");
        }
        match open_sink(Path::new(&m.metrics_path)).and_then(super::metrics::report_faults_to) {
            Ok(file) => {
                state.metrics = Some(file);
                state.spec.metrics = Some(m);
                Reply::no_content()
            }
            Err(e) => Reply::bad_request(&open_error("the metrics file", &m.metrics_path, &e)),
        }
    }

    fn put_logger(&self, state: &mut State, l: LoggerSpec) -> Reply {
        let Some(logger) = &self.logger else {
            return Reply::fault(Status::InternalServerError, "no logger is installed");
        };
        match logger.update(&l) {
            Ok(()) => {
                state.spec.logger = Some(l);
                Reply::no_content()
            }
            Err(e) => Reply::bad_request(&crate::error_line(&e)),
        }
    }

    /// Checks the drive against the spec (on a copy), then opens its file,
    /// then keeps it.
    fn put_drive(state: &mut State, id: &str, drive: Drive) -> Reply {
        let path = drive.path_on_host.clone().unwrap_or_default();
        let read_only = drive.is_read_only.unwrap_or(false);
        let mut spec = state.spec.clone();
        if let Err(e) = spec.put_drive(id, drive) {
            return Reply::bad_request(&e.to_string());
        }
        if let Err(e) = virtio::blk_image::check(std::path::Path::new(&path), read_only) {
            return Reply::bad_request(&crate::error_line(&e));
        }
        state.spec = spec;
        Reply::no_content()
    }

    /// `PUT /snapshot/load`: only on a fresh instance (nothing configured
    /// but the logger and metrics); the snapshot's spec becomes the
    /// instance's, with the network overrides applied.
    fn load_snapshot(
        &self,
        state: &mut State,
        params: &api::snapshot::SnapshotLoadParams,
    ) -> Reply {
        let mut fresh = state.spec.clone();
        fresh.logger = None;
        fresh.metrics = None;
        // The transport `--enable-pci` chose is the process's default, not
        // a configuration: the snapshot's own applies.
        fresh.ferrovisor.transport = VmSpec::default().ferrovisor.transport;
        if fresh != VmSpec::default() {
            return Reply::bad_request(
                "a snapshot loads only into a fresh microVM (nothing configured but the logger and metrics)",
            );
        }
        let (mut spec, restore) = match super::snapshot::prepare_load(params) {
            Ok(r) => r,
            Err(message) => return Reply::bad_request(&message),
        };
        spec.logger = state.spec.logger.clone();
        spec.metrics = state.spec.metrics.clone();
        let (reply_tx, reply_rx) = channel();
        let request = StartRequest {
            spec: spec.clone(),
            restore: Some(restore),
            reply: reply_tx,
        };
        let sent = self
            .start
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(request);
        if sent.is_err() {
            return Reply::fault(Status::InternalServerError, "the controller thread is gone");
        }
        match reply_rx.recv() {
            Ok(Ok(machine)) => {
                state.spec = spec;
                state.machine = Some(machine);
                tracing::info!("the microVM was loaded from a snapshot");
                Reply::no_content()
            }
            Ok(Err(message)) => Reply::bad_request(&format!("cannot load the snapshot: {message}")),
            Err(_) => Reply::fault(
                Status::InternalServerError,
                "the controller thread did not answer",
            ),
        }
    }

    fn start(&self, state: &mut State) -> Reply {
        let (reply_tx, reply_rx) = channel();
        let request = StartRequest {
            spec: state.spec.clone(),
            restore: None,
            reply: reply_tx,
        };
        let sent = self
            .start
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(request);
        if sent.is_err() {
            return Reply::fault(Status::InternalServerError, "the controller thread is gone");
        }
        match reply_rx.recv() {
            Ok(Ok(machine)) => {
                state.machine = Some(machine);
                tracing::info!("the microVM started");
                Reply::no_content()
            }
            Ok(Err(message)) => Reply::bad_request(&format!("cannot start the microVM: {message}")),
            Err(_) => Reply::fault(
                Status::InternalServerError,
                "the controller thread did not answer",
            ),
        }
    }

    /// Sends `command` to the running machine.
    fn command(state: &State, command: Command) -> Reply {
        let Some(machine) = &state.machine else {
            return Reply::bad_request(
                "the microVM was started from a configuration file and is not under API control yet",
            );
        };
        match machine.send(command) {
            Ok(()) => Reply::no_content(),
            Err(e) => Reply::bad_request(&crate::error_line(&e)),
        }
    }

    /// PATCH /drives/{id} after start: a new backing file (the guest sees
    /// its size and contents) and the buckets of the rate limiter the body
    /// names. Everything is checked before anything changes.
    fn patch_drive(state: &mut State, id: &str, drive: PartialDrive) -> Reply {
        if drive.drive_id != id {
            return Reply::bad_request(&format!(
                "the drive ID in the body ({}) is not the one in the path ({id})",
                drive.drive_id
            ));
        }
        let Some((index, _)) = state
            .spec
            .drives_in_guest_order()
            .enumerate()
            .find(|(_, d)| d.drive_id == id)
            .map(|(i, d)| (i, d.clone()))
        else {
            return Reply::bad_request(&format!("no drive has the ID {id}"));
        };
        if let Err(e) = api::spec::check_rate_limiter(&drive.rate_limiter, "the drive") {
            return Reply::bad_request(&e.to_string());
        }
        if let Some(path) = &drive.path_on_host {
            // The device opens the new image (kind, locks) before it
            // lets the old one go.
            let reply = Self::command(
                state,
                Command::UpdateDrive {
                    index,
                    path: path.into(),
                },
            );
            if reply.status != Status::NoContent {
                return reply;
            }
            if let Some(d) = state.spec.drives.iter_mut().find(|d| d.drive_id == id) {
                d.path_on_host = Some(path.clone());
            }
        }
        if let Some(limiter) = &drive.rate_limiter {
            let reply = Self::command(
                state,
                Command::UpdateLimits {
                    target: LimitTarget::Drive(index),
                    update: vmm::spec::limits_update(limiter),
                },
            );
            if reply.status != Status::NoContent {
                return reply;
            }
            if let Some(d) = state.spec.drives.iter_mut().find(|d| d.drive_id == id) {
                d.rate_limiter = vmm::spec::patched_rate_limiter(d.rate_limiter.as_ref(), limiter);
            }
        }
        Reply::no_content()
    }

    /// PATCH /network-interfaces/{id} after start: the buckets of the
    /// receive and transmit rate limiters the body names.
    fn patch_network_interface(
        state: &mut State,
        id: &str,
        iface: PartialNetworkInterface,
    ) -> Reply {
        if iface.iface_id != id {
            return Reply::bad_request(&format!(
                "the interface ID in the body ({}) is not the one in the path ({id})",
                iface.iface_id
            ));
        }
        let Some(index) = state
            .spec
            .network_interfaces
            .iter()
            .position(|n| n.iface_id == id)
        else {
            return Reply::bad_request(&format!("no network interface has the ID {id}"));
        };
        for (limiter, whose) in [
            (&iface.rx_rate_limiter, "the receive queue"),
            (&iface.tx_rate_limiter, "the transmit queue"),
        ] {
            if let Err(e) = api::spec::check_rate_limiter(limiter, whose) {
                return Reply::bad_request(&e.to_string());
            }
        }
        let changes = [
            (iface.rx_rate_limiter, LimitTarget::NetRx(index)),
            (iface.tx_rate_limiter, LimitTarget::NetTx(index)),
        ];
        for (limiter, target) in changes {
            let Some(limiter) = limiter else { continue };
            let reply = Self::command(
                state,
                Command::UpdateLimits {
                    target,
                    update: vmm::spec::limits_update(&limiter),
                },
            );
            if reply.status != Status::NoContent {
                return reply;
            }
            let spec = &mut state.spec.network_interfaces[index];
            let slot = match target {
                LimitTarget::NetRx(_) => &mut spec.rx_rate_limiter,
                _ => &mut spec.tx_rate_limiter,
            };
            *slot = vmm::spec::patched_rate_limiter(slot.as_ref(), &limiter);
        }
        Reply::no_content()
    }

    /// `PUT /ferrovisor/migrate` (see [`crate::migrate::api_migrate`]).
    fn migrate(&self, params: &api::migrate::MigrateParams) -> Reply {
        let (machine, spec_json) = {
            let state = self.state();
            if state.phase() == Phase::NotStarted {
                return Reply::bad_request(POST_BOOT_ONLY);
            }
            // VmSpec's serialization cannot fail (plain data, string keys).
            let spec_json = serde_json::to_string(&state.spec).unwrap_or_default();
            (state.machine.clone(), spec_json)
        };
        let Some(machine) = machine else {
            return Reply::bad_request(
                "the microVM was started from a configuration file and is not under API control yet",
            );
        };
        crate::migrate::api_migrate(&machine, spec_json, params)
    }

    fn handle_locked(&self, state: &mut State, request: Request) -> Reply {
        let pre_boot = state.phase() == Phase::NotStarted;
        match request {
            Request::GetInstanceInfo => Reply::json(&InstanceInfo {
                app_name: "Ferrovisor".into(),
                id: self.id.clone(),
                state: match state.phase() {
                    Phase::NotStarted => InstanceState::NotStarted,
                    Phase::Running => InstanceState::Running,
                    Phase::Paused => InstanceState::Paused,
                },
                vmm_version: api::FIRECRACKER_API_VERSION.into(),
            }),
            Request::GetVersion => Reply::json(&FirecrackerVersion {
                firecracker_version: api::FIRECRACKER_API_VERSION.into(),
            }),
            Request::GetVmConfig => Reply::json(&state.spec),
            Request::GetMachineConfig => Reply::json(&state.spec.machine_config),
            Request::GetStats => match self.live_sample() {
                Some(sample) => Reply::json(&crate::stats::json(&sample)),
                None => Reply::bad_request(POST_BOOT_ONLY),
            },
            Request::GetTrace => Reply::json(&crate::trace::current()),
            Request::PutTrace(t) => match tracepoints::enable(&t.events) {
                Ok(_) => Reply::no_content(),
                Err(e) => Reply::bad_request(&e.to_string()),
            },
            Request::Action(ActionType::FlushMetrics) if pre_boot => {
                Reply::bad_request(POST_BOOT_ONLY)
            }
            Request::Action(ActionType::FlushMetrics) => match self.flush_locked(state) {
                Ok(()) => Reply::no_content(),
                Err(e) => Reply::bad_request(&format!("cannot write the metrics: {e}")),
            },
            Request::Action(ActionType::SendCtrlAltDel) if pre_boot => {
                Reply::bad_request(POST_BOOT_ONLY)
            }
            Request::Action(ActionType::SendCtrlAltDel) => {
                Self::command(state, Command::SendCtrlAltDel)
            }
            Request::GetMmds
            | Request::PutMmds(_)
            | Request::PatchMmds(_)
            | Request::PutMmdsConfig(_) => self.handle_mmds(state, request),
            Request::PatchVm(_) if pre_boot => Reply::bad_request(POST_BOOT_ONLY),
            Request::PatchVm(update) => {
                let (command, latency) = match update.state {
                    VmState::Paused => (Command::Pause, "pause_vm"),
                    VmState::Resumed => (Command::Resume, "resume_vm"),
                };
                let started = Instant::now();
                let reply = Self::command(state, command);
                if reply.status == Status::NoContent {
                    self.api_metrics.latency(latency, started.elapsed());
                }
                reply
            }
            Request::PatchDrive { .. } | Request::PatchNetworkInterface { .. } if pre_boot => {
                Reply::bad_request(POST_BOOT_ONLY)
            }
            Request::PatchDrive { id, drive } => Self::patch_drive(state, &id, drive),
            Request::PatchNetworkInterface { id, iface } => {
                Self::patch_network_interface(state, &id, iface)
            }
            Request::CreateSnapshot(_) if pre_boot => Reply::bad_request(POST_BOOT_ONLY),
            Request::CreateSnapshot(params) => {
                let started = Instant::now();
                let latency = match params.snapshot_type.unwrap_or_default() {
                    api::snapshot::SnapshotType::Full => "full_create_snapshot",
                    api::snapshot::SnapshotType::Diff => "diff_create_snapshot",
                };
                let command = super::snapshot::create_command(&state.spec, &params);
                let reply = Self::command(state, command);
                if reply.status == Status::NoContent {
                    self.api_metrics.latency(latency, started.elapsed());
                }
                reply
            }
            Request::Fork(_) if pre_boot => Reply::bad_request(POST_BOOT_ONLY),
            Request::Fork(_) if state.phase() != Phase::Paused => Reply::bad_request(
                "the microVM must be paused to fork it (PATCH /vm Paused)",
            ),
            Request::Fork(params) => match &state.machine {
                Some(machine) => {
                    super::fork::fork(&state.spec, machine, &self.fork_helper, &params)
                }
                None => Reply::bad_request(
                    "the microVM was started from a configuration file and is not under API control yet",
                ),
            },
            _ if !pre_boot => Reply::bad_request(PRE_BOOT_ONLY),
            Request::LoadSnapshot(params) => {
                let started = Instant::now();
                let reply = self.load_snapshot(state, &params);
                if reply.status == Status::NoContent {
                    self.api_metrics.latency("load_snapshot", started.elapsed());
                }
                reply
            }
            Request::Action(ActionType::InstanceStart) => self.start(state),
            // Answered by `migrate`, outside the lock.
            Request::Migrate(_) => Reply::bad_request(POST_BOOT_ONLY),
            Request::PutMachineConfig(m) => spec_reply(state.spec.set_machine_config(m)),
            Request::PatchMachineConfig(update) => {
                let merged = update.apply(&state.spec.machine_config);
                spec_reply(state.spec.set_machine_config(merged))
            }
            Request::PutCpuConfig(c) => match vmm::spec::cpu_template(&c) {
                Ok(_) => {
                    state.spec.cpu_config = Some(c);
                    Reply::no_content()
                }
                Err(e) => Reply::bad_request(&format!("bad cpu-config: {e}")),
            },
            Request::PutBootSource(b) => {
                if let Err(e) = api::spec::check_boot_source(&b) {
                    return Reply::bad_request(&e.to_string());
                }
                if let Err(e) = check_file("the kernel image", &b.kernel_image_path, true) {
                    return Reply::bad_request(&e);
                }
                if let Some(initrd) = &b.initrd_path {
                    if let Err(e) = check_file("the initrd", initrd, true) {
                        return Reply::bad_request(&e);
                    }
                }
                spec_reply(state.spec.set_boot_source(b))
            }
            Request::PutDrive { id, drive } => Self::put_drive(state, &id, drive),
            Request::PutNetworkInterface { id, iface } => {
                let tap = iface.host_dev_name.clone();
                let mut spec = state.spec.clone();
                if let Err(e) = spec.put_network_interface(&id, iface) {
                    return Reply::bad_request(&e.to_string());
                }
                if let Err(e) = virtio::tap::Tap::open(&tap) {
                    return Reply::bad_request(&crate::error_line(&e));
                }
                state.spec = spec;
                Reply::no_content()
            }
            Request::PutVsock(v) => spec_reply(state.spec.set_vsock(v)),
            Request::PutEntropy(e) => spec_reply(state.spec.set_entropy(e)),
            Request::PutSerial(s) => spec_reply(state.spec.set_serial(s)),
            Request::PutLogger(l) => self.put_logger(state, l),
            Request::PutMetrics(m) => self.put_metrics(state, m),
        }
    }
}

fn spec_reply(result: Result<(), api::spec::SpecError>) -> Reply {
    match result {
        Ok(()) => Reply::no_content(),
        Err(e) => Reply::bad_request(&e.to_string()),
    }
}

impl Backend for Controller {
    fn handle(&self, request: Request) -> Reply {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let endpoint = super::metrics::endpoint(&request);
        let reply = match request {
            // Not under the state lock: the API answers while the VM
            // migrates.
            Request::Migrate(params) => self.migrate(&params),
            request => self.handle_locked(&mut self.state(), request),
        };
        let failed = reply.status != Status::Ok && reply.status != Status::NoContent;
        if let Some(endpoint) = endpoint {
            self.api_metrics.request(endpoint, failed);
        }
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                status = reply.status.code(),
                body = reply.body.as_deref().unwrap_or(""),
                "API request refused"
            );
        }
        reply
    }
}
