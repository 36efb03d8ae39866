//! The destination side: one incoming migration, from the hello to a
//! machine ready to start.

use std::io::{BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};

use hv::{Hypervisor, VmConfig};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::protocol::{Frame, Hello, PROTOCOL_VERSION};
use super::{MigrationError, ProtocolError};
use crate::config::MachineConfig;
use crate::snapshot::{cpu_fingerprint, layout, SnapshotFile};
use crate::Machine;

/// A connection whose hello was read.
pub struct Incoming {
    input: BufReader<TcpStream>,
    out: BufWriter<TcpStream>,
    hello: Hello,
}

/// A machine received whole: start it (paused unless `resume`), then
/// tell the source with [`Confirmation::confirm`].
pub struct Received {
    pub machine: Machine,
    pub resume: bool,
    pub confirmation: Confirmation,
}

/// The last word to the source.
pub struct Confirmation {
    out: BufWriter<TcpStream>,
}

/// How long a restored VM waits for the source's [`Frame::Go`].
const GO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn stream_err(e: std::io::Error) -> MigrationError {
    MigrationError::Stream(ProtocolError::Io(e))
}

impl Incoming {
    /// Waits for a source on `listener` and reads its hello. A source of
    /// another protocol version is refused here.
    pub fn accept(listener: &TcpListener) -> Result<Incoming, MigrationError> {
        let (stream, peer) = listener.accept().map_err(stream_err)?;
        tracing::info!(%peer, "incoming migration");
        stream.set_nodelay(true).map_err(stream_err)?;
        let out = BufWriter::new(stream.try_clone().map_err(stream_err)?);
        let mut input = BufReader::with_capacity(1 << 20, stream);
        let hello = match Frame::read_from(&mut input).map_err(MigrationError::Stream)? {
            Frame::Hello(hello) => hello,
            other => return Err(MigrationError::Unexpected(other.name())),
        };
        let mut incoming = Incoming { input, out, hello };
        if incoming.hello.protocol_version != PROTOCOL_VERSION {
            let e = MigrationError::Version {
                found: incoming.hello.protocol_version,
            };
            incoming.tell(Frame::Refused(e.to_string()));
            return Err(e);
        }
        Ok(incoming)
    }

    /// What the source announced.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Best effort: the source learns why (it may be gone already).
    fn tell(&mut self, frame: Frame) {
        let _ = frame.write_to(&mut self.out);
        let _ = self.out.flush();
    }

    /// Refuses the migration with `why` (a VM description that does not
    /// build here, ...).
    pub fn refuse(mut self, why: &str) {
        self.tell(Frame::Refused(why.into()));
    }

    /// Checks the source's VM against this host and `config` (the
    /// hello's spec, built here), takes its memory and state, and builds
    /// the machine. Every failure is told to the source.
    pub fn receive(
        mut self,
        config: &MachineConfig,
        hypervisor: Box<dyn Hypervisor>,
    ) -> Result<Received, MigrationError> {
        let mem = match self.check(config, &*hypervisor) {
            Ok(mem) => mem,
            Err(e) => {
                self.tell(Frame::Refused(error_line(&e)));
                return Err(e);
            }
        };
        self.tell(Frame::Ready);
        let (machine, resume) = match self.take(config, hypervisor, mem) {
            Ok(taken) => taken,
            Err(e) => {
                self.tell(Frame::Failed(error_line(&e)));
                return Err(e);
            }
        };
        // Restored, not started: the VM is the source's until its go.
        self.tell(Frame::Prepared);
        self.wait_for_go()?;
        Ok(Received {
            machine,
            resume,
            confirmation: Confirmation { out: self.out },
        })
    }

    /// The source's commit. Without it (the connection broke, the source
    /// said nothing for [`GO_TIMEOUT`]) the source keeps the VM and this
    /// side must not start it.
    fn wait_for_go(&mut self) -> Result<(), MigrationError> {
        let stream = self.input.get_ref();
        stream
            .set_read_timeout(Some(GO_TIMEOUT))
            .map_err(stream_err)?;
        match Frame::read_from(&mut self.input).map_err(MigrationError::Stream)? {
            Frame::Go => Ok(()),
            other => Err(MigrationError::Unexpected(other.name())),
        }
    }

    fn check(
        &self,
        config: &MachineConfig,
        hypervisor: &dyn Hypervisor,
    ) -> Result<GuestMemoryMmap, MigrationError> {
        let header = &self.hello.header;
        sandbox::set_accelerator(hypervisor.host_calls());
        let probe = hypervisor
            .create_vm(VmConfig::new(1))
            .map_err(|e| MigrationError::Incompatible(format!("cannot create a VM: {e}")))?;
        let supported = probe
            .supported_cpuid()
            .map_err(|e| MigrationError::Incompatible(format!("cannot read CPUID: {e}")))?;
        drop(probe);
        header
            .check_host(hypervisor.name(), &cpu_fingerprint(&supported))
            .map_err(MigrationError::Format)?;
        let mem = crate::memory::create_guest_memory(config.memory)
            .map_err(|e| MigrationError::Machine(Box::new(e.into())))?;
        if layout(&mem) != header.memory {
            return Err(MigrationError::Incompatible(
                "the memory layout does not match the VM's memory size".into(),
            ));
        }
        Ok(mem)
    }

    fn take(
        &mut self,
        config: &MachineConfig,
        hypervisor: Box<dyn Hypervisor>,
        mem: GuestMemoryMmap,
    ) -> Result<(Machine, bool), MigrationError> {
        let mut pages = 0u64;
        let mut carried_mmds = None;
        let (resume, bytes) = loop {
            match Frame::read_from(&mut self.input).map_err(MigrationError::Stream)? {
                Frame::Pages { gpa, data } => {
                    let len = data.len() as u64;
                    if !GuestMemoryBackend::check_range(&mem, GuestAddress(gpa), data.len())
                        || !gpa.is_multiple_of(super::protocol::PAGE_SIZE as u64)
                    {
                        return Err(MigrationError::OutsideRam { gpa, len });
                    }
                    mem.write_slice(&data, GuestAddress(gpa))
                        .map_err(MigrationError::Memory)?;
                    pages += len / super::protocol::PAGE_SIZE as u64;
                }
                Frame::Mmds(saved) => carried_mmds = Some(saved),
                Frame::State { resume, file } => break (resume, file),
                other => return Err(MigrationError::Unexpected(other.name())),
            }
        };
        let file = SnapshotFile::from_bytes(&bytes).map_err(MigrationError::Format)?;
        if file.header != self.hello.header {
            return Err(MigrationError::Incompatible(
                "the final state does not match the hello".into(),
            ));
        }
        tracing::info!(pages, "migration: memory received");
        match (carried_mmds, &config.mmds) {
            (Some(saved), Some(attach)) => attach
                .shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .restore(&saved, std::time::Instant::now())
                .map_err(MigrationError::Mmds)?,
            (Some(_), None) => {
                return Err(MigrationError::Incompatible(
                    "the source sent an MMDS, and the VM description has none".into(),
                ))
            }
            (None, _) => {}
        }
        let machine = Machine::restore_with_memory(config, hypervisor, &file, mem, false, resume)
            .map_err(MigrationError::Snapshot)?;
        Ok((machine, resume))
    }
}

impl Confirmation {
    /// Tells the source the VM runs here (it then ends), or that it
    /// could not be started (it then resumes).
    pub fn confirm(mut self, started: Result<(), String>) {
        let frame = match started {
            Ok(()) => Frame::Resumed,
            Err(why) => Frame::Failed(why),
        };
        if let Err(e) = frame
            .write_to(&mut self.out)
            .and_then(|()| self.out.flush().map_err(ProtocolError::from))
        {
            tracing::warn!(error = %e, "cannot tell the source how the migration ended");
        }
    }
}

/// `error` and its sources, `: `-separated.
pub(crate) fn error_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}
