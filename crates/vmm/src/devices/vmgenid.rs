//! The VM generation ID device: 16 random bytes in guest RAM at
//! [`VMGENID_ADDR`] (the ACPI area, reserved in the e820 map), described
//! by the DSDT's `\_SB.VGEN`, and the Generic Event Device's interrupt
//! ([`VMGENID_GSI`], edge) that tells the guest it changed (see
//! [`arch::acpi::vmgenid`]).
//!
//! Every machine with ACPI tables has one, with a random ID from its
//! first boot. Its state (address, GSI, ID) is saved in snapshots; a
//! machine restored as a clone ([`VmGenId::regenerate`]) gets a new random
//! ID written over the saved one in its (private) memory and the GSI
//! pulsed, so that the guest's kernel reseeds its RNG and user space hears
//! of the fork.

use std::io::Read;
use std::sync::Arc;

pub use arch::acpi::vmgenid::VMGENID_ADDR;
use arch::acpi::vmgenid::VMGENID_SIZE;
use devices::IrqLine;
use hv::Vm;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::irq::GsiLine;

/// The GSI of the Generic Event Device: the last IOAPIC input (the virtio
/// devices take 5..22).
pub const VMGENID_GSI: u32 = 23;

/// A generation ID.
pub type GenerationId = [u8; VMGENID_SIZE];

/// The saved state of the device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmGenIdState {
    /// Guest-physical address of the ID.
    pub addr: u64,
    /// The GSI the Generic Event Device listens on.
    pub gsi: u32,
    /// The ID the guest was last told of.
    pub id: GenerationId,
}

/// Why the device could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum VmGenIdError {
    #[error("cannot read a random generation ID from /dev/urandom")]
    Random(#[source] std::io::Error),
    #[error("cannot write the generation ID at guest address {addr:#x}")]
    Write {
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("the snapshot's generation ID address {addr:#x} or GSI {gsi} does not fit this VM")]
    BadState { addr: u64, gsi: u32 },
}

/// The device of one machine.
pub(crate) struct VmGenId {
    state: VmGenIdState,
    mem: GuestMemoryMmap,
    vm: Arc<dyn Vm>,
    line: Arc<dyn IrqLine>,
}

/// A random version-4 UUID (RFC 9562), the form Windows and QEMU use; Linux
/// takes the 16 bytes as they are.
pub fn random_id() -> Result<GenerationId, VmGenIdError> {
    let mut id = [0u8; VMGENID_SIZE];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut id))
        .map_err(VmGenIdError::Random)?;
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Ok(id)
}

impl VmGenId {
    /// A new device with a random ID, written to guest memory at `addr`.
    pub fn create(
        vm: &Arc<dyn Vm>,
        mem: &GuestMemoryMmap,
        addr: u64,
        gsi: u32,
    ) -> Result<VmGenId, VmGenIdError> {
        let dev = VmGenId {
            state: VmGenIdState {
                addr,
                gsi,
                id: random_id()?,
            },
            mem: mem.clone(),
            vm: vm.clone(),
            line: GsiLine::line(vm, gsi),
        };
        dev.write()?;
        Ok(dev)
    }

    /// The device of a restored machine: `saved` is checked (its ID lies
    /// in guest RAM, its GSI is an IOAPIC input); the memory already holds
    /// the ID.
    pub fn restore(
        vm: &Arc<dyn Vm>,
        mem: &GuestMemoryMmap,
        saved: &VmGenIdState,
    ) -> Result<VmGenId, VmGenIdError> {
        let fits = saved
            .addr
            .checked_add(VMGENID_SIZE as u64)
            .is_some_and(|_| {
                vm_memory::GuestMemoryBackend::check_range(
                    mem,
                    GuestAddress(saved.addr),
                    VMGENID_SIZE,
                )
            });
        if !fits || saved.gsi >= arch::layout::IOAPIC_PINS {
            return Err(VmGenIdError::BadState {
                addr: saved.addr,
                gsi: saved.gsi,
            });
        }
        Ok(VmGenId {
            state: saved.clone(),
            mem: mem.clone(),
            vm: vm.clone(),
            line: GsiLine::line(vm, saved.gsi),
        })
    }

    /// Writes a new random ID and pulses the GSI: the guest's Generic
    /// Event Device runs `Notify(VGEN, 0x80)`. Returns the new ID.
    pub fn regenerate(&mut self) -> Result<GenerationId, VmGenIdError> {
        self.state.id = random_id()?;
        self.write()?;
        self.line.pulse();
        Ok(self.state.id)
    }

    pub fn save(&self) -> VmGenIdState {
        self.state.clone()
    }

    fn write(&self) -> Result<(), VmGenIdError> {
        let addr = self.state.addr;
        self.mem
            .write_slice(&self.state.id, GuestAddress(addr))
            .map_err(|source| VmGenIdError::Write { addr, source })?;
        self.vm.note_guest_write(addr, VMGENID_SIZE as u64);
        Ok(())
    }
}

/// The ID as the guest reads it in memory, in hex.
pub fn id_hex(id: &GenerationId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_version_4_uuids_and_differ() {
        let (a, b) = (random_id().unwrap(), random_id().unwrap());
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id[6] >> 4, 4);
            assert_eq!(id[8] >> 6, 0b10);
        }
        assert_eq!(id_hex(&[0xab; 16]), "ab".repeat(16));
    }

    #[test]
    fn state_round_trips_through_the_snapshot_codec() {
        let s = VmGenIdState {
            addr: VMGENID_ADDR,
            gsi: VMGENID_GSI,
            id: random_id().unwrap(),
        };
        let bytes = postcard::to_allocvec(&s).unwrap();
        assert_eq!(postcard::from_bytes::<VmGenIdState>(&bytes).unwrap(), s);
    }
}
