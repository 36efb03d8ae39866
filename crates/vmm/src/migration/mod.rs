//! Live migration between two Ferrovisor processes over TCP.
//!
//! The source's controller thread runs [`send`] for
//! [`crate::Command::Migrate`] (pre-copy rounds driven by the dirty log,
//! then stop and copy: see [`send`]); the destination, started to
//! receive, takes the connection with [`Incoming::accept`], checks the
//! hello like a snapshot's header, writes the pages into its own
//! anonymous guest memory and builds the machine from the final state
//! ([`Incoming::receive`]). The stream's frames are in [`protocol`].
//!
//! A failure at any step leaves the source running: see [`send`].

pub mod protocol;
mod receive;
mod send;

use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hv::Vm;
use vm_memory::GuestMemoryMmap;

pub use protocol::{Frame, Hello, ProtocolError, PROTOCOL_VERSION};
pub(crate) use receive::error_line;
pub use receive::{Confirmation, Incoming, Received};
pub use send::send;

use crate::snapshot::{SnapshotError, SnapshotFile, SnapshotFormatError, SnapshotHeader};

/// How the source runs the pre-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOptions {
    /// Stop and copy once what is left would take less than this at the
    /// bandwidth measured so far.
    pub downtime: Duration,
    /// Stop and copy after this many rounds (the first sends all memory)
    /// whatever is left.
    pub max_rounds: u32,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            downtime: Duration::from_millis(50),
            max_rounds: 30,
        }
    }
}

/// What a migration did, measured on the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Pre-copy rounds (the first sends every non-zero page).
    pub rounds: u32,
    /// Guest memory bytes sent in all.
    pub bytes: u64,
    /// Bytes sent while the VM was paused.
    pub last_round_bytes: u64,
    /// From the pause to the destination's answer that the VM runs.
    pub downtime: Duration,
    /// From the connection to the destination's answer.
    pub total: Duration,
}

/// A [`crate::Command::Migrate`]: the connection the API opened (the
/// controller thread takes it), the VM description, and where the
/// figures go.
#[derive(Debug, Clone)]
pub struct MigrateRequest {
    pub stream: Arc<Mutex<Option<TcpStream>>>,
    pub spec_json: String,
    pub options: SendOptions,
    pub report: Arc<Mutex<Option<MigrationReport>>>,
}

impl MigrateRequest {
    pub fn new(stream: TcpStream, spec_json: String, options: SendOptions) -> MigrateRequest {
        MigrateRequest {
            stream: Arc::new(Mutex::new(Some(stream))),
            spec_json,
            options,
            report: Arc::default(),
        }
    }

    /// The figures of a migration that succeeded.
    pub fn report(&self) -> Option<MigrationReport> {
        *self.report.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PartialEq for MigrateRequest {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.stream, &other.stream)
    }
}

impl Eq for MigrateRequest {}

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("{0:?} is not a migration URL (tcp:HOST:PORT)")]
    BadUrl(String),
    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the migration stream broke")]
    Stream(#[source] ProtocolError),
    #[error("the destination refused the migration: {0}")]
    Refused(String),
    #[error("the destination could not restore the VM: {0}")]
    DestinationFailed(String),
    /// The whole state reached the destination, then its answer did not:
    /// it may be running the VM. Resuming here too would run the VM twice
    /// on one disk, so the source stays paused with its disks and TAPs
    /// handed over, for whoever knows (an orchestrator, an operator) to
    /// resume it or end it.
    #[error(
        "the destination got the whole VM but its answer was lost ({0}): it may be running \
         the VM, so this one stays paused with its disks and TAPs handed over; resume it \
         (PATCH /vm Resumed, which takes them back) only if the destination is not running"
    )]
    OutcomeUnknown(String),
    #[error("the peer sent an unexpected {0} frame")]
    Unexpected(&'static str),
    #[error(
        "migration protocol version {found}; this Ferrovisor speaks version {PROTOCOL_VERSION}"
    )]
    Version { found: u32 },
    #[error("the VM cannot run here: {0}")]
    Incompatible(String),
    #[error("the source sent pages at {gpa:#x}+{len:#x}, outside guest RAM")]
    OutsideRam { gpa: u64, len: u64 },
    #[error("cannot copy guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
    #[error("cannot read the dirty-page log of memory slot {slot}")]
    DirtyLog {
        slot: u32,
        #[source]
        source: hv::HvError,
    },
    #[error("a migration is already running")]
    Busy,
    #[error("cannot hand the devices' host resources to the destination: {0}")]
    Handover(String),
    #[error("the vCPUs did not stop")]
    PauseTimeout,
    #[error(transparent)]
    Format(SnapshotFormatError),
    #[error(transparent)]
    Snapshot(SnapshotError),
    #[error("the MMDS the source sent is refused")]
    Mmds(#[source] mmds::SavedMmdsError),
    #[error("cannot build the machine")]
    Machine(#[source] Box<crate::MachineError>),
}

/// The machine being migrated, as the source's controller offers it.
pub trait Source {
    fn memory(&self) -> &GuestMemoryMmap;
    fn vm(&self) -> &dyn Vm;
    /// Accelerator, CPU model and memory layout.
    fn header(&self) -> SnapshotHeader;
    /// Whether the memory slots log dirty pages.
    fn dirty_logging(&self) -> bool;
    fn set_dirty_logging(&mut self, on: bool) -> Result<(), MigrationError>;
    fn paused(&self) -> bool;
    fn pause(&mut self) -> Result<(), MigrationError>;
    fn resume(&mut self);
    /// The paused machine's state file.
    fn state(&mut self, spec_json: &str) -> Result<SnapshotFile, MigrationError>;
    /// Hands the host resources only one process may hold (the disk
    /// images' locks, the TAP interfaces) to the destination, before it
    /// restores the VM.
    fn release_backends(&mut self) -> Result<(), MigrationError>;
    /// Takes them back: the migration failed after
    /// [`Source::release_backends`].
    fn retake_backends(&mut self);
    /// The MMDS's store and live session tokens, when the VM has one.
    fn mmds(&self) -> Option<mmds::SavedMmds>;
    /// No page server fills guest memory (a Uffd restore's does): what
    /// this process never touched of its anonymous RAM is zero.
    fn memory_filled_here(&self) -> bool;
}

/// Connects to a destination: `tcp:HOST:PORT` (or `tcp://HOST:PORT`).
pub fn connect(url: &str) -> Result<TcpStream, MigrationError> {
    use std::net::ToSocketAddrs;
    let address = url
        .strip_prefix("tcp://")
        .or_else(|| url.strip_prefix("tcp:"))
        .ok_or_else(|| MigrationError::BadUrl(url.into()))?;
    let connect_err = |source| MigrationError::Connect {
        url: url.into(),
        source,
    };
    let addrs: Vec<_> = address
        .to_socket_addrs()
        .map_err(|_| MigrationError::BadUrl(url.into()))?
        .collect();
    let mut last = std::io::Error::other("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(connect_err(last))
}
