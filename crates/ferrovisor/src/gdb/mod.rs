//! The gdb stub: `--gdb PORT` (QEMU's `-s`, `-gdb tcp::PORT`). A thread
//! accepts one gdb at a time on a TCP port; while it is attached the
//! machine is paused whenever gdb looks at it (through the machine's own
//! pause, so devices and the guest's clock stop too), and each vCPU is a
//! gdb thread. Built on the `gdbstub` crate (protocol) and
//! `gdbstub_arch` (x86-64 register layout).

mod arch;
mod conn;
mod regs;
mod target;

use std::net::TcpListener;
use std::time::Duration;

use gdbstub::common::Signal;
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::{run_blocking, DisconnectReason, GdbStub, GdbStubError, MultiThreadStopReason};
use gdbstub::target::Target;
use vmm::controller::{Command, RunState};
use vmm::debug::MachineDebug;

use conn::GdbConnection;
use target::GdbTarget;

/// How often the wait for a stop looks at gdb's connection.
const POLL: Duration = Duration::from_millis(10);

/// A gdb stub to start with a machine.
pub struct GdbStart {
    pub server: GdbServer,
    /// Start the machine paused, until gdb continues it (`-S`).
    pub wait: bool,
}

/// A bound gdb port, waiting for the machine to start.
pub struct GdbServer {
    listener: TcpListener,
}

impl GdbServer {
    /// Listens on `addr` (`HOST:PORT`; QEMU's `tcp::1234` is
    /// `0.0.0.0:1234`, ours `127.0.0.1:PORT` unless a host is given).
    pub fn bind(addr: String) -> Result<GdbServer, String> {
        let listener =
            TcpListener::bind(&addr).map_err(|e| format!("gdb: cannot listen on {addr}: {e}"))?;
        tracing::info!(%addr, "waiting for gdb");
        Ok(GdbServer { listener })
    }

    /// Serves gdb on its own thread for as long as the process lives.
    pub fn spawn(self, debug: MachineDebug) -> Result<(), String> {
        let builder = std::thread::Builder::new().name("gdb".into());
        sandbox::spawn(sandbox::ThreadKind::Api, builder, move || self.serve(debug))
            .map(|_| ())
            .map_err(|e| format!("gdb: cannot start its thread: {e}"))
    }

    fn serve(self, debug: MachineDebug) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, peer)) => {
                    tracing::info!(%peer, "gdb attached");
                    stream
                }
                Err(e) => {
                    tracing::warn!(error = %e, "gdb: accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if debug.handle().state() == RunState::Ended {
                return;
            }
            let conn = match GdbConnection::new(stream, POLL) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "gdb: cannot set up the connection");
                    continue;
                }
            };
            if let Err(e) = debug.handle().send(Command::Pause) {
                tracing::warn!(error = %e, "gdb: cannot stop the VM");
                continue;
            }
            let mut target = GdbTarget::new(debug.clone());
            let end = GdbStub::new(conn).run_blocking::<EventLoop>(&mut target);
            let kill = match end {
                Ok(DisconnectReason::Kill) => true,
                Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => {
                    return
                }
                Ok(DisconnectReason::Disconnect) => false,
                Err(e) => {
                    report(&e);
                    false
                }
            };
            tracing::info!("gdb detached");
            if debug.handle().state() == RunState::Ended {
                return;
            }
            // Running or paused: make sure every vCPU is out of the guest
            // before its debug settings change.
            let _ = debug.handle().send(Command::Pause);
            target.release();
            debug.clear_stops();
            let _ = debug
                .handle()
                .send(if kill { Command::Stop } else { Command::Resume });
        }
    }
}

fn report<T: std::fmt::Display, C: std::fmt::Display>(e: &GdbStubError<T, C>) {
    tracing::warn!(error = %e, "gdb: session ended");
}

/// gdbstub's blocking loop: waits for a vCPU's debug stop, the end of the
/// machine, or a byte from gdb (Ctrl-C).
enum EventLoop {}

impl run_blocking::BlockingEventLoop for EventLoop {
    type Target = GdbTarget;
    type Connection = GdbConnection;
    type StopReason = MultiThreadStopReason<u64>;

    #[allow(clippy::type_complexity)]
    fn wait_for_stop_reason(
        target: &mut GdbTarget,
        conn: &mut GdbConnection,
    ) -> Result<
        run_blocking::Event<Self::StopReason>,
        run_blocking::WaitForStopReasonError<
            <GdbTarget as Target>::Error,
            <GdbConnection as Connection>::Error,
        >,
    > {
        use run_blocking::{Event, WaitForStopReasonError as E};
        loop {
            if let Some((id, cause)) = target.debug.take_stop(Duration::ZERO) {
                target
                    .debug
                    .handle()
                    .send(Command::Pause)
                    .map_err(|e| E::Target(e.to_string()))?;
                return Ok(Event::TargetStopped(target.stop_reason(id, cause)));
            }
            if target.debug.handle().state() == RunState::Ended {
                return Ok(Event::TargetStopped(MultiThreadStopReason::Exited(0)));
            }
            // Waits up to POLL for gdb.
            if conn.readable().map_err(E::Connection)? {
                let byte = conn.read().map_err(E::Connection)?;
                return Ok(Event::IncomingData(byte));
            }
        }
    }

    fn on_interrupt(target: &mut GdbTarget) -> Result<Option<MultiThreadStopReason<u64>>, String> {
        target
            .debug
            .handle()
            .send(Command::Pause)
            .map_err(|e| e.to_string())?;
        Ok(Some(MultiThreadStopReason::SignalWithThread {
            tid: target::tid(0),
            signal: Signal::SIGINT,
        }))
    }
}
