//! What a debugger (the gdb stub) reaches of a running machine: pause and
//! resume through the machine's [`MachineHandle`] (devices and the guest's
//! clock stop as on any pause), the vCPUs' registers and guest debug
//! settings through their own threads while the machine is paused, the
//! guest's memory, and the stops the vCPUs report.

use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use hv::{DebugCause, Vcpu, Vm};
use vm_memory::GuestMemoryMmap;

use crate::controller::MachineHandle;
use crate::vcpu::VcpuControl;

/// How long a paused vCPU's thread may take to run a debugger's job.
const JOB_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a debugger's access to a vCPU failed.
#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    #[error("the machine is not paused")]
    NotPaused,
    #[error("there is no vCPU {0}")]
    NoVcpu(u32),
    #[error("vCPU {0} did not answer")]
    NoAnswer(u32),
}

/// A debugger's view of a started machine; cheap to clone.
#[derive(Clone)]
pub struct MachineDebug {
    pub(crate) control: Arc<VcpuControl>,
    pub(crate) handle: MachineHandle,
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) vm: Arc<dyn Vm>,
    pub(crate) vcpus: u32,
}

impl MachineDebug {
    /// Pauses, resumes and stops the machine.
    pub fn handle(&self) -> &MachineHandle {
        &self.handle
    }

    /// The number of vCPUs (ids 0..n).
    pub fn vcpus(&self) -> u32 {
        self.vcpus
    }

    /// The guest's RAM.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The debugger wrote guest RAM (a breakpoint, a poke): accelerators
    /// that cache decoded code drop what they decoded there.
    pub fn note_guest_write(&self, gpa: u64, len: u64) {
        self.vm.note_guest_write(gpa, len);
    }

    /// Runs `f` on vCPU `id` (on its own thread) while the machine is
    /// paused, and returns what it returned.
    pub fn with_vcpu<T: Send + 'static>(
        &self,
        id: u32,
        f: impl FnOnce(&mut dyn Vcpu) -> T + Send + 'static,
    ) -> Result<T, DebugError> {
        if id >= self.vcpus {
            return Err(DebugError::NoVcpu(id));
        }
        let (tx, rx) = channel();
        let job = Box::new(move |vcpu: &mut dyn Vcpu| {
            let _ = tx.send(f(vcpu));
        });
        if !self.control.run_on(id, job) {
            return Err(DebugError::NotPaused);
        }
        rx.recv_timeout(JOB_TIMEOUT)
            .map_err(|_| DebugError::NoAnswer(id))
    }

    /// The oldest stop a vCPU reported for the debugger (vCPU id and
    /// cause), waiting up to `timeout`.
    pub fn take_stop(&self, timeout: Duration) -> Option<(u32, DebugCause)> {
        self.control.take_debug_stop(timeout)
    }

    /// Forgets the stops reported so far; call it while paused, before
    /// resuming.
    pub fn clear_stops(&self) {
        self.control.clear_debug_stops();
    }
}
