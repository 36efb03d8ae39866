//! Firecracker's process interface: `ferrovisor` started without a
//! subcommand takes Firecracker's options, serves Firecracker's API on
//! `--api-sock` (default /run/firecracker.socket), or boots the VM of
//! `--config-file` (with `--no-api`, without a socket), and exits as
//! Firecracker does: 0 when the guest powers off or resets, 1 when the VM
//! cannot be built or a vCPU fails, 152 for a bad logger level, 153 for
//! other argument errors. `--accel` is Ferrovisor's addition.

pub mod args;
pub mod controller;
pub mod fork;
pub mod logger;
pub mod metrics;
pub mod snapshot;

use devices::boot_timer::{BootClock, Timestamp};
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::channel;
use std::sync::Arc;

use api::schema::Logger as LoggerSpec;
use api::spec::Transport;
use api::{ApiServer, ServerConfig, VmSpec};
use vmm::{Accel, Machine};

use args::{FcArgs, Invocation};
use controller::Controller;
use logger::{open_sink, Logger};

const HELP: &str = "\
Ferrovisor, started as Firecracker: serves Firecracker's REST API on a Unix
socket, or boots the VM a configuration file describes.

usage: ferrovisor [OPTIONS]
       ferrovisor run --kernel PATH [...]   (Ferrovisor's own command line; ferrovisor run --help)
       ferrovisor demo [--tiny]             (boot a demo guest)

options (Firecracker's, plus --accel):
  --api-sock <path>        API socket to create [default: /run/firecracker.socket]
  --config-file <path>     boot the VM this JSON file describes (Firecracker's format,
                           or what GET /vm/config returns)
  --no-api                 no API socket (needs --config-file)
  --id <id>                instance id, 1-64 letters, digits or '-' [default: anonymous-instance]
  --accel <auto|kvm|emu>   accelerator [default: auto]
  --log-path <path>        log to this file or FIFO [default: standard error]
  --level <level>          Error, Warning, Info, Debug, Trace or Off [default: Info]
  --module <path>          log only events of this module
  --show-level             put the level in each log line
  --show-log-origin        put the source file and line in each log line
  --metrics-path <path>    file or FIFO that FlushMetrics writes to
  --http-api-max-payload-size <bytes>   largest request body [default: 51200]
  --mmds-size-limit <bytes>             largest MMDS data store (JSON bytes) [default: the payload size]
  --boot-timer             log the guest's boot time when it writes 123 at 0xd0000000
  --enable-pci             virtio devices on PCI instead of virtio-mmio
  --enable-fork            start the fork helper: PUT /ferrovisor/fork forks the paused VM in place
  --trace <pattern>        KVM trace events to write (kvm_exit, kvm_pio,kvm_mmio, kvm_*; docs/TRACING.md)
  --trace-file <path>      where trace events go [default: standard error]
  --gdb <port>             a gdb stub on 127.0.0.1:<port> once the microVM starts
  --no-seccomp             no syscall filters (they are on by default; docs/SECURITY.md)
  --seccomp-filter <path>  syscall filters from this seccompiler JSON file, one per thread kind
  --start-time-us, --start-time-cpu-us, --parent-cpu-time-us <n>   accepted (from the jailer)
  --version                print the Firecracker API version implemented
  --help, -h               this text

See docs/API.md for the endpoints and what is not supported yet.
";

fn fail(message: &str, status: u8) -> ExitCode {
    crate::fail(message, status)
}

/// Runs Firecracker's process interface with the arguments after the
/// program name.
pub fn main(argv: &[String]) -> ExitCode {
    let process_start = std::time::Instant::now();
    let start_stamp = now_stamp();
    let fc = match args::parse(argv) {
        Ok(Invocation::Help) => {
            crate::out::stdout(HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            crate::out::stdout(&format!(
                "Firecracker v{} (Ferrovisor {})\n\n",
                api::FIRECRACKER_API_VERSION,
                env!("CARGO_PKG_VERSION")
            ));
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Run(fc)) => fc,
        Err(e) => return fail(&e.to_string(), e.exit_status()),
    };
    let seccomp = crate::seccomp::setting(fc.no_seccomp, fc.seccomp_filter.as_deref());
    if let Err(message) = crate::seccomp::init(seccomp) {
        return fail(&message, 1);
    }
    if let Err(e) = crate::signals::install() {
        return fail(&format!("cannot take signals: {e}"), 1);
    }
    if let Err(message) = crate::trace::setup(fc.trace.as_deref(), fc.trace_file.as_deref()) {
        return fail(&message, 153);
    }
    let logger_spec = LoggerSpec {
        level: fc.level,
        log_path: fc.log_path.as_ref().map(|p| p.display().to_string()),
        show_level: fc.show_level.then_some(true),
        show_log_origin: fc.show_log_origin.then_some(true),
        module: fc.module.clone(),
    };
    let logger = match Logger::install(&fc.id, &logger_spec) {
        Ok(l) => l,
        Err(e) => return fail(&crate::error_line(&e), 1),
    };
    let mut spec = match &fc.config_file {
        Some(path) => match read_config(path) {
            Ok(spec) => spec,
            Err(message) => return fail(&message, 1),
        },
        None => VmSpec::default(),
    };
    if fc.enable_pci {
        spec.ferrovisor.transport = Transport::Pci;
    }
    if let Some(l) = &spec.logger {
        if let Err(e) = logger.update(l) {
            return fail(&crate::error_line(&e), 1);
        }
    }
    let metrics_path = fc
        .metrics_path
        .clone()
        .or_else(|| spec.metrics.as_ref().map(|m| m.metrics_path.clone().into()));
    let metrics = match metrics_path
        .as_deref()
        .map(|p| (p, open_sink(p).and_then(metrics::report_faults_to)))
    {
        None => None,
        Some((_, Ok(file))) => Some(file),
        Some((path, Err(e))) => {
            return fail(
                &format!("cannot open the metrics file {}: {e}", path.display()),
                1,
            )
        }
    };
    if fc.boot_timer {
        // From the jailer's start when it passed its times, as Firecracker.
        let start = Timestamp {
            wall_us: fc.start_time_us.unwrap_or(start_stamp.wall_us),
            cpu_us: fc.start_time_cpu_us.unwrap_or(start_stamp.cpu_us),
        };
        let _ = BOOT_TIMER.set(BootClock {
            start,
            now: now_stamp,
        });
    }
    tracing::info!(
        "Running Ferrovisor {} (Firecracker API {})",
        env!("CARGO_PKG_VERSION"),
        api::FIRECRACKER_API_VERSION
    );
    let mmds = mmds::Mmds::shared(fc.mmds_size_limit.unwrap_or(fc.http_api_max_payload_size));
    let gdb = match fc
        .gdb
        .map(|port| crate::gdb::GdbServer::bind(format!("127.0.0.1:{port}")))
    {
        Some(Err(message)) => return fail(&message, 1),
        bound => std::cell::Cell::new(bound.and_then(Result::ok)),
    };
    let start = |machine: Machine| start(machine, &gdb);
    if fc.no_api {
        let machine = match build(&spec, fc.accel, &mmds) {
            Ok(machine) => machine,
            Err(message) => return fail(&format!("cannot start the microVM: {message}"), 1),
        };
        let running = match start(machine) {
            Ok(running) => running,
            Err(message) => return fail(&message, 1),
        };
        // No API: the controller only keeps the state the metrics read.
        let (start_tx, _) = channel();
        let controller = Arc::new(
            Controller::new(&fc.id, spec, true, Some(logger), metrics, start_tx).with_mmds(mmds),
        );
        controller.set_machine(running.handle());
        controller.set_live(running.live_stats());
        let code = run_to_end(&controller, None, running);
        controller.flush_metrics();
        return code;
    }
    serve(&fc, spec, logger, metrics, mmds, process_start, &start)
}

fn read_config(path: &Path) -> Result<VmSpec, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the configuration file {}: {e}", path.display()))?;
    let spec: VmSpec = serde_json::from_str(&text)
        .map_err(|e| format!("configuration file {}: {e}", path.display()))?;
    spec.validate()
        .map_err(|e| format!("configuration file {}: {e}", path.display()))?;
    Ok(spec)
}

/// `--boot-timer`'s clock, for the machine this process boots (not for a
/// restored one: Firecracker's boot timer times boots only).
static BOOT_TIMER: std::sync::OnceLock<BootClock> = std::sync::OnceLock::new();

fn now_stamp() -> Timestamp {
    Timestamp {
        wall_us: jailer::monotonic_us(),
        cpu_us: jailer::cpu_time_us(),
    }
}

/// Builds the machine `spec` describes; its MMDS (if any) serves `mmds`.
fn build(spec: &VmSpec, accel: Accel, mmds: &mmds::SharedMmds) -> Result<Machine, String> {
    let mut config = vmm::machine_config(spec, accel).map_err(|e| crate::error_line(&e))?;
    config.boot_timer = BOOT_TIMER.get().copied();
    if let Some(attach) = config.mmds.as_mut() {
        attach.shared = mmds.clone();
    }
    let mut machine = Machine::new(&config).map_err(|e| crate::error_line(&e))?;
    if spec.machine_config.track_dirty_pages {
        machine
            .track_dirty_pages()
            .map_err(|e| crate::error_line(&e))?;
    }
    Ok(machine)
}

/// Starts a built machine, and the gdb stub if there is one.
fn start(
    machine: Machine,
    gdb: &std::cell::Cell<Option<crate::gdb::GdbServer>>,
) -> Result<vmm::RunningMachine, String> {
    let running = machine.start().map_err(|e| crate::error_line(&e))?;
    if let Some(server) = gdb.take() {
        server.spawn(running.debugger())?;
    }
    Ok(running)
}

/// Removes the API socket when the process ends normally.
struct SocketFile<'a>(&'a Path);

impl Drop for SocketFile<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

fn serve(
    fc: &FcArgs,
    spec: VmSpec,
    logger: Arc<Logger>,
    metrics: Option<std::fs::File>,
    mmds: mmds::SharedMmds,
    process_start: std::time::Instant,
    start: &dyn Fn(Machine) -> Result<vmm::RunningMachine, String>,
) -> ExitCode {
    let config = ServerConfig {
        limits: api::http::Limits {
            max_body: fc.http_api_max_payload_size,
            ..Default::default()
        },
        ..Default::default()
    };
    let server = match ApiServer::bind(&fc.api_sock, config) {
        Ok(s) => s,
        Err(e) => return fail(&crate::error_line(&e), 1),
    };
    let _socket = SocketFile(&fc.api_sock);
    // The main thread has no filter yet: the helper and its clones must
    // not inherit one.
    let fork_helper = if fc.enable_fork {
        match crate::fork_helper::ForkHelper::start(fc.no_seccomp) {
            Ok(helper) => Some(helper),
            Err(message) => return fail(&message, 1),
        }
    } else {
        None
    };
    tracing::info!("API socket listening on {}", fc.api_sock.display());
    let (start_tx, start_rx) = channel();
    let from_file = fc.config_file.is_some();
    let controller = Arc::new(
        Controller::new(
            &fc.id,
            spec.clone(),
            from_file,
            Some(logger),
            metrics,
            start_tx,
        )
        .with_mmds(mmds.clone())
        .with_fork_helper(fork_helper),
    );
    let api = match server.serve(controller.clone()) {
        Ok(api) => api,
        Err(e) => return fail(&crate::error_line(&e), 1),
    };
    controller.set_startup_time(process_start.elapsed());
    let code = if from_file {
        match build(&spec, fc.accel, &mmds).and_then(start) {
            Ok(running) => {
                controller.set_machine(running.handle());
                controller.set_live(running.live_stats());
                run_to_end(&controller, Some(&api), running)
            }
            Err(message) => fail(&format!("cannot start the microVM: {message}"), 1),
        }
    } else {
        wait_for_start(fc, &controller, &api, &start_rx, &mmds, start)
    };
    // As Firecracker's Vmm::stop: the last metrics line, whatever ended
    // the process (the guest, a signal, a failed start).
    controller.flush_metrics();
    code
}

/// Waits for InstanceStart (or a signal), builds and starts the machine,
/// then waits for its end (the machine's own controller thread takes the
/// API's commands through its handle).
fn wait_for_start(
    fc: &FcArgs,
    controller: &Arc<Controller>,
    api: &api::server::Serving,
    start_rx: &std::sync::mpsc::Receiver<controller::StartRequest>,
    mmds: &mmds::SharedMmds,
    start: &dyn Fn(Machine) -> Result<vmm::RunningMachine, String>,
) -> ExitCode {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        // A signal before InstanceStart ends the process; the channel
        // cannot be woken by the signal thread, so it is polled.
        if crate::signals::received().is_some() {
            return ExitCode::SUCCESS;
        }
        let request = match start_rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(request) => request,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return fail("the API server stopped", 1),
        };
        let built = match &request.restore {
            Some(restore) => snapshot::build(&request.spec, fc.accel, restore, mmds),
            None => build(&request.spec, fc.accel, mmds),
        };
        match built.and_then(start) {
            Ok(running) => {
                controller.set_live(running.live_stats());
                let _ = request.reply.send(Ok(running.handle()));
                return run_to_end(controller, Some(api), running);
            }
            Err(message) => {
                tracing::warn!("InstanceStart failed: {message}");
                let _ = request.reply.send(Err(message));
            }
        }
    }
}

/// How long the end of the process waits for the API's answers to the
/// requests it has read (a backend call may be blocked on the machine that
/// ended).
const API_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits for the machine's end (signals stop it cleanly), writing the
/// metrics every [`metrics::PERIOD`] while it runs, then for the API's
/// answers in flight (the InstanceStart of a guest that ended at once,
/// the migration that ended it); the caller writes the last line.
fn run_to_end(
    controller: &Arc<Controller>,
    api: Option<&api::server::Serving>,
    running: vmm::RunningMachine,
) -> ExitCode {
    crate::signals::attach(running.handle());
    let weak = Arc::downgrade(controller);
    let periodic = metrics::Periodic::spawn(metrics::PERIOD, move || {
        if let Some(controller) = weak.upgrade() {
            controller.flush_metrics();
        }
    });
    if let Err(message) = crate::seccomp::enter_main() {
        return fail(&message, 1);
    }
    let report = running.wait();
    drop(periodic);
    if api.is_some_and(|api| !api.drain(API_DRAIN)) {
        tracing::warn!("the process ends with API requests unanswered");
    }
    crate::finish(report, false)
}

/// Serves Firecracker's API on `api_sock` for a machine that already runs
/// (a migration's destination) until it ends.
pub(crate) fn serve_running(
    api_sock: &Path,
    spec: VmSpec,
    running: vmm::RunningMachine,
    mmds: Option<mmds::SharedMmds>,
) -> ExitCode {
    let server = match ApiServer::bind(api_sock, ServerConfig::default()) {
        Ok(s) => s,
        Err(e) => return fail(&crate::error_line(&e), 1),
    };
    let _socket = SocketFile(api_sock);
    let (start_tx, _) = channel();
    let mut controller = Controller::new("anonymous-instance", spec, true, None, None, start_tx);
    if let Some(shared) = mmds {
        // `/mmds` serves the store the guest reads.
        controller = controller.with_mmds(shared);
    }
    let controller = Arc::new(controller);
    controller.set_machine(running.handle());
    controller.set_live(running.live_stats());
    let api = match server.serve(controller.clone()) {
        Ok(api) => api,
        Err(e) => return fail(&crate::error_line(&e), 1),
    };
    run_to_end(&controller, Some(&api), running)
}
