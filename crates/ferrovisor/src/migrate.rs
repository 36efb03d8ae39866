//! Live migration from the command line and the API:
//! `ferrovisor migrate-receive` (the destination), `ferrovisor
//! migrate-send` (asks a source's API to send its VM) and the API side of
//! `PUT /ferrovisor/migrate`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use api::migrate::{MigrateParams, MigrationInfo};
use api::Reply;
use vmm::migration::{Incoming, MigrateRequest, SendOptions};
use vmm::{Accel, Command, MachineHandle};

#[derive(clap::Args)]
pub(crate) struct ReceiveArgs {
    /// Where to wait for the source: HOST:PORT (one migration, then the
    /// VM runs here).
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,
    /// Serve Firecracker's API on this socket once the VM runs here (to
    /// pause it, migrate it again, ...).
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// Accelerator: auto (the source's), kvm or emu; another than the
    /// source's is refused.
    #[arg(long, default_value = "auto")]
    accel: Accel,
    /// No syscall filters (see `ferrovisor run --help`).
    #[arg(long)]
    no_seccomp: bool,
}

#[derive(clap::Args)]
pub(crate) struct SendArgs {
    /// The source's API socket.
    #[arg(long, value_name = "PATH")]
    api_sock: PathBuf,
    /// The destination: tcp:HOST:PORT, where `migrate-receive` listens.
    #[arg(long, value_name = "tcp:HOST:PORT")]
    to: String,
    /// Downtime target in milliseconds.
    #[arg(long, value_name = "MS")]
    downtime_ms: Option<u64>,
    /// Pre-copy rounds at most.
    #[arg(long, value_name = "N")]
    max_rounds: Option<u32>,
}

/// `ferrovisor migrate-receive`: takes one VM and runs it to its end.
pub(crate) fn receive(args: &ReceiveArgs) -> ExitCode {
    let seccomp = crate::seccomp::setting(args.no_seccomp, None);
    if let Err(message) = crate::seccomp::init(seccomp) {
        return crate::fail(&message, 1);
    }
    if let Err(e) = crate::signals::install() {
        return crate::fail(&format!("cannot take signals: {e}"), 1);
    }
    let listener = match TcpListener::bind(&args.listen) {
        Ok(l) => l,
        Err(e) => return crate::fail(&format!("cannot listen on {}: {e}", args.listen), 1),
    };
    match listener.local_addr() {
        Ok(addr) => eprintln!("ferrovisor: waiting for a migration on {addr}"),
        Err(e) => return crate::fail(&format!("cannot listen on {}: {e}", args.listen), 1),
    }
    let (spec, running, mmds) = match take(&listener, args.accel) {
        Ok(taken) => taken,
        Err(message) => return crate::fail(&format!("the migration failed: {message}"), 1),
    };
    drop(listener);
    match &args.api_sock {
        Some(path) => crate::firecracker::serve_running(path, spec, running, mmds),
        None => {
            crate::signals::attach(running.handle());
            if let Err(message) = crate::seccomp::enter_main() {
                return crate::fail(&message, 1);
            }
            crate::finish(running.wait(), false)
        }
    }
}

/// Receives the VM, starts it and tells the source; returns the MMDS
/// its network devices answer from (the source's store and tokens), if
/// it has one.
fn take(
    listener: &TcpListener,
    accel: Accel,
) -> Result<(api::VmSpec, vmm::RunningMachine, Option<mmds::SharedMmds>), String> {
    let incoming = Incoming::accept(listener).map_err(|e| crate::error_line(&e))?;
    let hello = incoming.hello().clone();
    let built = (|| {
        let spec: api::VmSpec = serde_json::from_str(&hello.spec_json)
            .map_err(|e| format!("the VM description is corrupt: {e}"))?;
        let accel = match accel {
            Accel::Auto => hello
                .header
                .accelerator
                .parse()
                .map_err(|e| crate::error_line(&e))?,
            other => other,
        };
        let config = vmm::machine_config(&spec, accel).map_err(|e| crate::error_line(&e))?;
        let hypervisor = vmm::open_accelerator(accel).map_err(|e| crate::error_line(&e))?;
        Ok::<_, String>((spec, config, hypervisor))
    })();
    let (spec, config, hypervisor) = match built {
        Ok(b) => b,
        Err(message) => {
            incoming.refuse(&message);
            return Err(message);
        }
    };
    let mmds = config.mmds.as_ref().map(|m| m.shared.clone());
    let received = incoming
        .receive(&config, hypervisor)
        .map_err(|e| crate::error_line(&e))?;
    match received.machine.start() {
        Ok(running) => {
            received.confirmation.confirm(Ok(()));
            tracing::info!(resumed = received.resume, "the migrated VM runs here");
            Ok((spec, running, mmds))
        }
        Err(e) => {
            let message = crate::error_line(&e);
            received.confirmation.confirm(Err(message.clone()));
            Err(message)
        }
    }
}

/// `ferrovisor migrate-send`: `PUT /ferrovisor/migrate` on the source's
/// socket.
pub(crate) fn send(args: &SendArgs) -> ExitCode {
    let params = MigrateParams {
        destination_url: args.to.clone(),
        downtime_ms: args.downtime_ms,
        max_rounds: args.max_rounds,
    };
    let body = serde_json::to_string(&params).unwrap_or_default();
    let answer = api::client::Client::connect(&args.api_sock)
        .and_then(|mut c| c.request("PUT", "/ferrovisor/migrate", Some(&body)));
    match answer {
        Ok(r) if r.status == 200 => {
            println!("{}", r.body);
            ExitCode::SUCCESS
        }
        Ok(r) => crate::fail(
            &r.fault_message()
                .unwrap_or_else(|| format!("status {}", r.status)),
            1,
        ),
        Err(e) => crate::fail(
            &format!("cannot reach the API at {}: {e}", args.api_sock.display()),
            1,
        ),
    }
}

/// The API side of `PUT /ferrovisor/migrate`: connects (this thread's
/// filter allows TCP connections), hands the connection to the machine's
/// controller thread and waits for the outcome.
pub(crate) fn api_migrate(machine: &MachineHandle, spec_json: String, p: &MigrateParams) -> Reply {
    let stream = match vmm::migration::connect(&p.destination_url) {
        Ok(s) => s,
        Err(e) => return Reply::bad_request(&crate::error_line(&e)),
    };
    let defaults = SendOptions::default();
    let options = SendOptions {
        downtime: p
            .downtime_ms
            .map(Duration::from_millis)
            .unwrap_or(defaults.downtime),
        max_rounds: p.max_rounds.unwrap_or(defaults.max_rounds).max(1),
    };
    let request = MigrateRequest::new(stream, spec_json, options);
    match machine.send(Command::Migrate(request.clone())) {
        Ok(()) => {
            let r = request.report().unwrap_or_default();
            Reply::json(&MigrationInfo {
                rounds: r.rounds,
                memory_bytes: r.bytes,
                last_round_bytes: r.last_round_bytes,
                downtime_us: r.downtime.as_micros() as u64,
                total_us: r.total.as_micros() as u64,
            })
        }
        Err(e) => Reply::bad_request(&crate::error_line(&e)),
    }
}
