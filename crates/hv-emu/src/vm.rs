//! An emu VM: memory slots shared by its vCPUs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hv::{CpuidEntry, HvError, MemorySlot, MsiMessage, Vcpu, Vm, VmConfig};

use crate::memory::{Slot, SlotList};
use crate::platform::{Platform, Router};
use crate::vcpu::{EmuVcpu, VcpuShared};

/// What the VM and its vCPUs share.
pub(crate) struct VmShared {
    slots: RwLock<Arc<SlotList>>,
    /// Bumped whenever the slot list changes; vCPUs re-read the list when
    /// they see a new value.
    generation: AtomicU64,
    /// Slots that were removed or replaced. Their mappings stay alive as
    /// long as the VM, because a vCPU may still hold pointers into them in
    /// its TLB until it has flushed.
    retired: Mutex<Vec<Arc<Slot>>>,
    /// Every vCPU the VM will have, created up front so that interrupts
    /// can be routed to a LAPIC before its vCPU thread exists.
    pub vcpus: Vec<Arc<VcpuShared>>,
    /// Which of `vcpus` were handed out by `create_vcpu`.
    created: Mutex<Vec<bool>>,
    pub platform: Platform,
    /// Which guest pages hold decoded code, shared by the vCPUs so that
    /// code one vCPU writes is re-decoded by the others.
    pub code: Arc<x86::CodeShare>,
    pub config: VmConfig,
}

impl VmShared {
    pub fn slots(&self) -> Arc<SlotList> {
        self.slots.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn router(&self) -> Router<'_> {
        Router {
            platform: &self.platform,
            vcpus: &self.vcpus,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn replace_slots(&self, list: SlotList, retired: Option<Arc<Slot>>) {
        {
            let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
            *slots = Arc::new(list);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(slot) = retired {
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(slot);
        }
        self.sync_vcpus();
    }

    /// Makes every vCPU drop its TLB and decoded blocks, and waits until
    /// the running ones have done so.
    fn sync_vcpus(&self) {
        for vcpu in &self.vcpus {
            vcpu.request_sync();
        }
        for vcpu in &self.vcpus {
            vcpu.wait_synced();
        }
    }
}

pub(crate) struct EmuVm {
    shared: Arc<VmShared>,
}

impl EmuVm {
    pub fn new(config: VmConfig) -> EmuVm {
        EmuVm {
            shared: Arc::new(VmShared {
                slots: RwLock::new(Arc::new(SlotList::default())),
                generation: AtomicU64::new(0),
                retired: Mutex::new(Vec::new()),
                vcpus: (0..config.vcpus)
                    .map(|id| Arc::new(VcpuShared::new(id)))
                    .collect(),
                created: Mutex::new(vec![false; config.vcpus as usize]),
                platform: Platform::new(config.vcpus),
                code: Arc::new(x86::CodeShare::new()),
                config,
            }),
        }
    }
}

impl Vm for EmuVm {
    fn set_memory_slot(&self, slot: MemorySlot) -> Result<(), HvError> {
        let new = Slot::new(&slot)?;
        let current = self.shared.slots();
        let retired = current.by_id(slot.id).cloned();
        let list = current.with(new)?;
        self.shared.replace_slots(list, retired);
        Ok(())
    }

    fn remove_memory_slot(&self, id: u32) -> Result<(), HvError> {
        let (list, removed) = self.shared.slots().without(id)?;
        self.shared.replace_slots(list, Some(removed));
        Ok(())
    }

    fn get_dirty_log(&self, id: u32) -> Result<Vec<u64>, HvError> {
        let slots = self.shared.slots();
        let slot = slots
            .by_id(id)
            .ok_or_else(|| HvError::InvalidArgument(format!("no memory slot {id}")))?;
        let log = slot.take_dirty().ok_or_else(|| {
            HvError::InvalidArgument(format!("memory slot {id} does not log dirty pages"))
        })?;
        // A vCPU marks a page when it maps it writable in its TLB. After the
        // bits are taken, writes through such mappings land on pages this
        // log already names; the sync makes later writes map (and mark)
        // again.
        self.shared.sync_vcpus();
        Ok(log)
    }

    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>, HvError> {
        let mut created = self
            .shared
            .created
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let slot = created.get_mut(id as usize).ok_or_else(|| {
            HvError::InvalidArgument(format!(
                "vCPU id {id} is beyond the {} vCPUs of this VM",
                self.shared.config.vcpus
            ))
        })?;
        if *slot {
            return Err(HvError::InvalidArgument(format!(
                "vCPU {id} exists already"
            )));
        }
        *slot = true;
        Ok(Box::new(EmuVcpu::new(id, self.shared.clone())))
    }

    fn set_irq_line(&self, gsi: u32, level: bool) -> Result<(), HvError> {
        if gsi >= crate::platform::IOAPIC_PINS {
            return Err(HvError::InvalidArgument(format!(
                "GSI {gsi} does not exist (the IOAPIC has {} pins)",
                crate::platform::IOAPIC_PINS
            )));
        }
        self.shared.router().set_gsi(gsi, level);
        Ok(())
    }

    fn signal_msi(&self, msi: MsiMessage) -> Result<(), HvError> {
        if !irqchip::ioapic::is_msi_address(msi.address) {
            return Err(HvError::InvalidArgument(format!(
                "{:#x} is not an MSI address",
                msi.address
            )));
        }
        let delivery = irqchip::ioapic::decode_msi(msi.address, msi.data);
        self.shared.router().deliver(&delivery);
        Ok(())
    }

    fn note_guest_write(&self, gpa: u64, len: u64) {
        self.shared.code.note_external_write(gpa, len);
    }

    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>, HvError> {
        Ok(crate::cpuid::supported_cpuid())
    }
}
