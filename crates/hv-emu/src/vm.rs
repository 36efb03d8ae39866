//! An emu VM: memory slots shared by its vCPUs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hv::{
    CpuidEntry, EventFd, HvError, IoEventAddress, MemorySlot, MsiMessage, Vcpu, Vm, VmConfig,
};

use crate::ioevent::IoEvents;
use crate::irqfd::Irqfds;
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
    /// The JIT's compiler thread, shared by the vCPUs (None: each
    /// compiles on its own thread, `FERROVISOR_JIT_ASYNC=0`).
    pub jit: Option<Arc<x86::JitCompiler>>,
    pub config: VmConfig,
    /// Guest writes that signal an eventfd instead of the VMM.
    pub ioevents: IoEvents,
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
        self.sync_vcpus(x86::TlbFlush::MemoryMap);
    }

    /// Makes every vCPU drop its TLB and decoded blocks (counted as
    /// `cause`), and waits until the running ones have done so.
    fn sync_vcpus(&self, cause: x86::TlbFlush) {
        for vcpu in &self.vcpus {
            vcpu.request_sync(cause);
        }
        for vcpu in &self.vcpus {
            vcpu.wait_synced();
        }
    }
}

pub(crate) struct EmuVm {
    shared: Arc<VmShared>,
    /// Dropped with the VM: joins the irqfd thread, which holds an `Arc`
    /// of `shared`.
    irqfds: Irqfds,
}

impl EmuVm {
    pub fn new(config: VmConfig) -> EmuVm {
        // Before any thread is sandboxed (vCPU threads may not open).
        x86::open_jit_perfmap();
        EmuVm {
            shared: Arc::new(VmShared {
                slots: RwLock::new(Arc::new(SlotList::default())),
                generation: AtomicU64::new(0),
                retired: Mutex::new(Vec::new()),
                vcpus: (0..config.vcpus)
                    .map(|id| Arc::new(VcpuShared::new(id)))
                    .collect(),
                created: Mutex::new(vec![false; config.vcpus as usize]),
                platform: Platform::new(config.vcpus, config.pit),
                code: Arc::new(x86::CodeShare::new()),
                jit: x86::JitCompiler::wanted().then(|| {
                    x86::JitCompiler::new(Box::new(|f| {
                        let builder = std::thread::Builder::new().name("emu-jit".to_string());
                        sandbox::spawn(sandbox::ThreadKind::JitCompiler, builder, f).map(|_| ())
                    }))
                }),
                config,
                ioevents: IoEvents::default(),
            }),
            irqfds: Irqfds::new(),
        }
    }
}

#[cfg(test)]
impl EmuVm {
    /// vCPU `id` as its concrete type, for the backend's own tests.
    pub(crate) fn test_vcpu(&self, id: u32) -> EmuVcpu {
        EmuVcpu::new(id, self.shared.clone())
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
        self.shared.sync_vcpus(x86::TlbFlush::DirtyLog);
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
        tracepoints::kvm_set_irq(gsi, level.into(), 0);
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
        // The dirty log covers device writes too (a migration or a diff
        // snapshot must not miss them).
        let slots = self.shared.slots();
        let end = gpa.saturating_add(len);
        let mut page = gpa & !(hv::memory::PAGE_SIZE - 1);
        while page < end {
            if let Some(slot) = slots.find(page) {
                slot.mark_dirty(page);
            }
            page += hv::memory::PAGE_SIZE;
        }
    }

    fn register_ioevent(
        &self,
        event: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u64>,
    ) -> Result<(), HvError> {
        self.shared.ioevents.register(event, addr, datamatch)
    }

    fn unregister_ioevent(
        &self,
        event: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u64>,
    ) -> Result<(), HvError> {
        self.shared.ioevents.unregister(event, addr, datamatch)
    }

    fn register_irqfd(&self, event: &EventFd, gsi: u32) -> Result<(), HvError> {
        self.irqfds.register(&self.shared, event, gsi)
    }

    fn unregister_irqfd(&self, event: &EventFd, gsi: u32) -> Result<(), HvError> {
        self.irqfds.unregister(event, gsi)
    }

    fn set_msi_route(&self, gsi: u32, msi: MsiMessage) -> Result<(), HvError> {
        self.irqfds.set_msi_route(gsi, msi)
    }

    fn pause_clock(&self) -> Result<(), HvError> {
        self.shared.platform.freeze();
        Ok(())
    }

    fn resume_clock(&self) -> Result<(), HvError> {
        self.shared.platform.thaw();
        // Sleeping vCPUs computed their timeouts on the stopped clock.
        for vcpu in &self.shared.vcpus {
            vcpu.notify_event();
        }
        Ok(())
    }

    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>, HvError> {
        Ok(crate::cpuid::supported_cpuid())
    }

    fn save_state(&self) -> Result<hv::VmState, HvError> {
        Ok(crate::vm_state::save(&self.shared.platform))
    }

    fn restore_state(&self, state: &hv::VmState) -> Result<(), HvError> {
        crate::vm_state::restore(&self.shared.platform, state)?;
        // Sleeping vCPUs computed their timeouts on the old clock, and
        // the PIC may have an interrupt for them now.
        for vcpu in &self.shared.vcpus {
            vcpu.notify_event();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;
    use crate::platform::lock;

    fn vm() -> EmuVm {
        EmuVm::new(VmConfig::new(1))
    }

    /// Software-enables vCPU 0's LAPIC (SVR = 0x1ff) so that it accepts
    /// fixed interrupts.
    fn enable_lapic(vm: &EmuVm) {
        vm.shared.vcpus[0]
            .lapic()
            .write(0xf0, &0x1ffu32.to_le_bytes(), 0);
    }

    /// Waits until vector `v` is requested on vCPU 0's LAPIC, then clears
    /// it by acknowledging and EOIing it.
    fn wait_for_vector(vm: &EmuVm, v: u8) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            {
                let mut lapic = vm.shared.vcpus[0].lapic();
                if lapic.irr_test(v) {
                    assert_eq!(lapic.acknowledge(), v);
                    lapic.write(0xb0, &0u32.to_le_bytes(), 0);
                    return;
                }
            }
            assert!(Instant::now() < deadline, "vector {v:#x} never arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn msi(vector: u8) -> MsiMessage {
        MsiMessage {
            address: 0xfee0_0000,
            data: vector.into(),
        }
    }

    #[test]
    fn the_irqfd_thread_starts_lazily_and_is_joined_on_drop() {
        let vm = vm();
        assert!(!vm.irqfds.has_thread());
        vm.set_msi_route(30, msi(0x40)).unwrap();
        assert!(!vm.irqfds.has_thread(), "routes need no thread");
        let event = EventFd::new(EFD_NONBLOCK).unwrap();
        vm.register_irqfd(&event, 30).unwrap();
        assert!(vm.irqfds.has_thread());
        let shared = Arc::downgrade(&vm.shared);
        drop(vm);
        // The thread held a reference to the VM's shared state; once the
        // drop returned it has exited.
        assert_eq!(shared.strong_count(), 0, "the irqfd thread outlived its VM");
        // The VM closed its descriptor: the eventfd is the VMM's alone again.
        event.write(1).unwrap();
        assert_eq!(event.read().unwrap(), 1);
    }

    #[test]
    fn msi_routes_follow_updates_and_irqfds_come_and_go() {
        let vm = vm();
        enable_lapic(&vm);
        let (a, b) = (
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        );
        vm.register_irqfd(&a, 24).unwrap();
        // No route yet: nothing is delivered.
        a.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(vm.shared.vcpus[0].lapic().pending_vector(), None);
        vm.set_msi_route(24, msi(0x41)).unwrap();
        a.write(1).unwrap();
        wait_for_vector(&vm, 0x41);
        vm.set_msi_route(24, msi(0x42)).unwrap();
        a.write(3).unwrap();
        wait_for_vector(&vm, 0x42);
        // A second irqfd while the thread runs.
        vm.set_msi_route(25, msi(0x43)).unwrap();
        vm.register_irqfd(&b, 25).unwrap();
        b.write(1).unwrap();
        wait_for_vector(&vm, 0x43);
        vm.unregister_irqfd(&a, 24).unwrap();
        a.write(1).unwrap();
        b.write(1).unwrap();
        wait_for_vector(&vm, 0x43);
        assert!(!vm.shared.vcpus[0].lapic().irr_test(0x42));
        assert_eq!(a.read().unwrap(), 1, "nobody consumes a removed irqfd");
    }

    #[test]
    fn irqfd_arguments_are_checked() {
        let vm = vm();
        let event = EventFd::new(EFD_NONBLOCK).unwrap();
        assert!(vm.register_irqfd(&event, 1024).is_err());
        assert!(vm.set_msi_route(23, msi(0x40)).is_err());
        assert!(vm.set_msi_route(1024, msi(0x40)).is_err());
        assert!(vm
            .set_msi_route(
                24,
                MsiMessage {
                    address: 0xd000_0000,
                    data: 0x40
                }
            )
            .is_err());
        assert!(vm.unregister_irqfd(&event, 5).is_err());
        vm.register_irqfd(&event, 5).unwrap();
        assert!(vm.register_irqfd(&event, 6).is_err(), "one GSI per eventfd");
        assert!(vm.unregister_irqfd(&event, 6).is_err());
        vm.unregister_irqfd(&event, 5).unwrap();
        assert!(vm.unregister_irqfd(&event, 5).is_err());
    }

    #[test]
    fn an_irqfd_pulses_an_ioapic_pin() {
        let vm = vm();
        enable_lapic(&vm);
        // Pin 9: vector 0x49, fixed, physical, edge, destination APIC 0.
        {
            let mut ioapic = lock(&vm.shared.platform.ioapic);
            ioapic.write(0, &(0x10u32 + 2 * 9).to_le_bytes());
            ioapic.write(0x10, &0x49u32.to_le_bytes());
        }
        let event = EventFd::new(EFD_NONBLOCK).unwrap();
        vm.register_irqfd(&event, 9).unwrap();
        // Each write is an edge: the pulse leaves the line low.
        for _ in 0..3 {
            event.write(1).unwrap();
            wait_for_vector(&vm, 0x49);
        }
    }
}
