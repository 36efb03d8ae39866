//! A KVM virtual machine: memory slots, irq lines, vCPU creation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use hv::memory::PAGE_SIZE;
use hv::{
    CpuidEntry, EventFd, HvError, IoEventAddress, MemorySlot, MsiMessage, Vcpu, Vm, VmConfig,
    MSI_GSI_RANGE,
};
use kvm_bindings::{
    kvm_irq_routing_entry, kvm_msi, kvm_pit_config, kvm_userspace_memory_region, KvmIrqRouting,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP,
    KVM_IRQ_ROUTING_MSI, KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, NoDatamatch, VmFd};

use crate::convert::cpuid_from_kvm;
use crate::error::os;
use crate::hypervisor::{HostCaps, IDENTITY_MAP_ADDRESS, TSS_ADDRESS};
use crate::vcpu::KvmVcpu;

/// What a VM's vCPUs share with it.
///
/// Every vCPU holds an `Arc` of this, so the memory behind every mapped slot
/// lives as long as any KVM file descriptor of the VM that could let the
/// guest reach it. Field order matters: the VM fd is closed before the
/// mappings are dropped.
pub(crate) struct VmShared {
    pub fd: VmFd,
    /// Mapped slots by id. Each entry holds the `Arc<MmapRegion>` KVM was
    /// given the address of.
    slots: Mutex<HashMap<u32, MemorySlot>>,
    /// The system handle (MSR index list, supported CPUID).
    pub kvm: Arc<Kvm>,
}

/// A VM on `/dev/kvm`.
pub(crate) struct KvmVm {
    shared: Arc<VmShared>,
    caps: HostCaps,
    vcpus: u32,
    /// The VM has an in-kernel PIT.
    pit: bool,
    /// Ids of the vCPUs created so far.
    created: Mutex<Vec<bool>>,
    /// The MSI routes of KVM's GSI routing table, by GSI. KVM_SET_GSI_ROUTING
    /// replaces the whole table, so every change re-sends these with the
    /// default irqchip routes ([`irqchip_routes`]).
    msi_routes: Mutex<BTreeMap<u32, MsiMessage>>,
    /// Registered irqfds as (eventfd descriptor, GSI). KVM ignores the
    /// removal of an unknown irqfd; the hv API makes it an error.
    irqfds: Mutex<HashSet<(RawFd, u32)>>,
    /// kvmclock's value when the VMM paused the VM (KVM_GET_CLOCK), set
    /// back on resume.
    paused_clock: Mutex<Option<u64>>,
    /// Pages of dirty-logging slots the VMM's devices wrote
    /// ([`Vm::note_guest_write`]; KVM's own log sees only the vCPUs'
    /// writes), by slot id, one bit per page; merged into the next
    /// [`Vm::get_dirty_log`].
    device_writes: Mutex<HashMap<u32, Vec<u64>>>,
}

/// The routes KVM_CREATE_IRQCHIP installs (the kernel's `default_routing`):
/// GSI `n` drives IOAPIC pin `n` (0–23) and, for `n < 16`, input `n % 8`
/// of the master (`n < 8`) or slave PIC. Re-sent with the MSI routes so
/// that adding one keeps every line behaving as before.
fn irqchip_routes() -> impl Iterator<Item = kvm_irq_routing_entry> {
    let route = |gsi: u32, irqchip: u32, pin: u32| {
        let mut entry = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_IRQCHIP,
            ..Default::default()
        };
        entry.u.irqchip.irqchip = irqchip;
        entry.u.irqchip.pin = pin;
        entry
    };
    (0..IOAPIC_PINS).flat_map(move |gsi| {
        let pic = (gsi < 16).then(|| {
            let chip = if gsi < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            route(gsi, chip, gsi % 8)
        });
        std::iter::once(route(gsi, KVM_IRQCHIP_IOAPIC, gsi)).chain(pic)
    })
}

fn msi_route(gsi: u32, msi: &MsiMessage) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    entry.u.msi.address_lo = msi.address as u32;
    entry.u.msi.address_hi = (msi.address >> 32) as u32;
    entry.u.msi.data = msi.data;
    entry
}

/// Pins of KVM's IOAPIC (KVM_IOAPIC_NUM_PINS).
const IOAPIC_PINS: u32 = 24;

fn ioevent_address(addr: IoEventAddress) -> kvm_ioctls::IoEventAddress {
    match addr {
        IoEventAddress::Pio(port) => kvm_ioctls::IoEventAddress::Pio(port.into()),
        IoEventAddress::Mmio(gpa) => kvm_ioctls::IoEventAddress::Mmio(gpa),
    }
}

/// The 32-bit value KVM compares a 4-byte write with.
fn datamatch_u32(value: u64) -> Result<u32, HvError> {
    u32::try_from(value).map_err(|_| {
        HvError::InvalidArgument(format!(
            "ioeventfd datamatch {value:#x} does not fit the 4-byte write it matches"
        ))
    })
}

// `_IO(KVMIO, 0x71)` with a `kvm_reinject_control`: not wrapped by
// kvm-ioctls 0.25.
vmm_sys_util::ioctl_io_nr!(KVM_REINJECT_CONTROL, kvm_bindings::KVMIO, 0x71);

/// Makes the in-kernel PIT drop the ticks the guest missed instead of
/// re-injecting them later, one after another: what the emu PIT does
/// (missed edges coalesce into one interrupt, as a PIC keeps one request)
/// and QEMU's `kvm-pit.lost_tick_policy=discard`, when the VM asks for it
/// ([`hv::VmConfig::pit_discards_lost_ticks`]). Without
/// KVM_CAP_REINJECT_CONTROL (hosts older than Linux 2.6.30) KVM keeps
/// re-injecting: said once in the log.
fn discard_lost_pit_ticks(kvm: &Kvm, fd: &VmFd) -> Result<(), HvError> {
    if !kvm.check_extension(kvm_ioctls::Cap::ReinjectControl) {
        tracing::info!("no KVM_CAP_REINJECT_CONTROL: KVM re-injects lost PIT ticks");
        return Ok(());
    }
    let control = kvm_bindings::kvm_reinject_control {
        pit_reinject: 0,
        ..Default::default()
    };
    // SAFETY: KVM_REINJECT_CONTROL reads one kvm_reinject_control, which
    // lives for the call; the fd is a VM fd.
    let ret = unsafe { vmm_sys_util::ioctl::ioctl_with_ref(fd, KVM_REINJECT_CONTROL(), &control) };
    if ret < 0 {
        return Err(os("KVM_REINJECT_CONTROL")(kvm_ioctls::Error::last()));
    }
    Ok(())
}

fn check_irqfd_gsi(gsi: u32) -> Result<(), HvError> {
    if gsi >= MSI_GSI_RANGE.end {
        return Err(HvError::InvalidArgument(format!(
            "GSI {gsi} does not exist (GSIs are 0 to {})",
            MSI_GSI_RANGE.end - 1
        )));
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind, which is
    // still consistent: take it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl KvmVm {
    pub fn new(kvm: Arc<Kvm>, caps: HostCaps, config: VmConfig) -> Result<KvmVm, HvError> {
        if config.vcpus == 0 {
            return Err(HvError::InvalidArgument(
                "a VM needs at least one vCPU".to_string(),
            ));
        }
        if config.vcpus > caps.max_vcpus {
            return Err(HvError::InvalidArgument(format!(
                "{} vCPUs requested, this host's KVM allows at most {}",
                config.vcpus, caps.max_vcpus
            )));
        }
        let fd = kvm.create_vm().map_err(os("KVM_CREATE_VM"))?;
        // The order is KVM's: TSS and identity map before any vCPU, the
        // irqchip before the PIT that raises its IRQ 0.
        fd.set_tss_address(TSS_ADDRESS as usize)
            .map_err(os("KVM_SET_TSS_ADDR"))?;
        fd.set_identity_map_address(IDENTITY_MAP_ADDRESS)
            .map_err(os("KVM_SET_IDENTITY_MAP_ADDR"))?;
        fd.create_irq_chip().map_err(os("KVM_CREATE_IRQCHIP"))?;
        if config.pit {
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            fd.create_pit2(pit).map_err(os("KVM_CREATE_PIT2"))?;
            if config.pit_discards_lost_ticks {
                discard_lost_pit_ticks(&kvm, &fd)?;
            }
        }
        Ok(KvmVm {
            shared: Arc::new(VmShared {
                fd,
                slots: Mutex::new(HashMap::new()),
                kvm,
            }),

            caps,
            vcpus: config.vcpus,
            pit: config.pit,
            created: Mutex::new(vec![false; config.vcpus as usize]),
            msi_routes: Mutex::new(BTreeMap::new()),
            irqfds: Mutex::new(HashSet::new()),
            device_writes: Mutex::new(HashMap::new()),
            paused_clock: Mutex::new(None),
        })
    }

    /// KVM_SET_GSI_ROUTING with the default irqchip routes and `msi`.
    fn set_gsi_routing(&self, msi: &BTreeMap<u32, MsiMessage>) -> Result<(), HvError> {
        let entries: Vec<kvm_irq_routing_entry> = irqchip_routes()
            .chain(msi.iter().map(|(gsi, m)| msi_route(*gsi, m)))
            .collect();
        let table = KvmIrqRouting::from_entries(&entries).map_err(|e| {
            HvError::InvalidArgument(format!(
                "GSI routing table of {} routes: {e:?}",
                entries.len()
            ))
        })?;
        self.shared
            .fd
            .set_gsi_routing(&table)
            .map_err(os("KVM_SET_GSI_ROUTING"))
    }

    fn ioevent_ioctl(
        &self,
        event: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u64>,
        register: bool,
    ) -> Result<(), HvError> {
        if !self.caps.ioeventfd {
            return Err(HvError::Unsupported(
                "ioeventfds (KVM_CAP_IOEVENTFD, KVM_CAP_IOEVENTFD_NO_LENGTH)",
            ));
        }
        let fd = &self.shared.fd;
        let addr = ioevent_address(addr);
        // The size of the datamatch type is the length KVM matches: none
        // (any length) or 4 bytes.
        let result = match (datamatch, register) {
            (None, true) => fd.register_ioevent(event, &addr, NoDatamatch),
            (None, false) => fd.unregister_ioevent(event, &addr, NoDatamatch),
            (Some(v), true) => fd.register_ioevent(event, &addr, datamatch_u32(v)?),
            (Some(v), false) => fd.unregister_ioevent(event, &addr, datamatch_u32(v)?),
        };
        result.map_err(os("KVM_IOEVENTFD"))
    }

    fn check_slot(
        &self,
        slot: &MemorySlot,
        slots: &HashMap<u32, MemorySlot>,
    ) -> Result<(), HvError> {
        let invalid = |msg: String| Err(HvError::InvalidArgument(msg));
        let size = slot.size();
        if slot.id >= self.caps.nr_memslots {
            return invalid(format!(
                "memory slot id {} is out of range (this host's KVM has {} slots)",
                slot.id, self.caps.nr_memslots
            ));
        }
        if !slot.guest_addr.is_multiple_of(PAGE_SIZE) {
            return invalid(format!(
                "memory slot {}: guest address {:#x} is not 4 KiB aligned",
                slot.id, slot.guest_addr
            ));
        }
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) {
            return invalid(format!(
                "memory slot {}: size {size:#x} is not a non-zero multiple of 4 KiB",
                slot.id
            ));
        }
        if !(slot.region.as_ptr() as u64).is_multiple_of(PAGE_SIZE) {
            return invalid(format!(
                "memory slot {}: host mapping at {:p} is not page aligned",
                slot.id,
                slot.region.as_ptr()
            ));
        }
        let Some(end) = slot.guest_addr.checked_add(size) else {
            return invalid(format!(
                "memory slot {}: {:#x} + {size:#x} overflows",
                slot.id, slot.guest_addr
            ));
        };
        if slot.read_only && !self.caps.readonly_mem {
            return Err(HvError::Unsupported(
                "read-only memory slots (KVM_CAP_READONLY_MEM)",
            ));
        }
        if !slot.read_only && slot.region.prot() & libc::PROT_WRITE == 0 {
            return invalid(format!(
                "memory slot {}: writable slot over a mapping without PROT_WRITE",
                slot.id
            ));
        }
        for other in slots.values().filter(|s| s.id != slot.id) {
            let other_end = other.guest_addr + other.size();
            if slot.guest_addr < other_end && other.guest_addr < end {
                return invalid(format!(
                    "memory slot {} [{:#x}, {end:#x}) overlaps slot {} [{:#x}, {other_end:#x})",
                    slot.id, slot.guest_addr, other.id, other.guest_addr
                ));
            }
        }
        Ok(())
    }

    /// KVM_SET_USER_MEMORY_REGION for `slot` (size 0 when `delete`).
    ///
    /// # Safety
    ///
    /// Unless `delete`, `slot.region` must stay mapped until the slot is
    /// deleted or the VM is destroyed: the caller keeps it in `slots`.
    unsafe fn kvm_set_region(&self, slot: &MemorySlot, delete: bool) -> Result<(), HvError> {
        let mut flags = 0;
        if slot.read_only {
            flags |= KVM_MEM_READONLY;
        }
        if slot.log_dirty {
            flags |= KVM_MEM_LOG_DIRTY_PAGES;
        }
        let region = kvm_userspace_memory_region {
            slot: slot.id,
            flags: if delete { 0 } else { flags },
            guest_phys_addr: slot.guest_addr,
            memory_size: if delete { 0 } else { slot.size() },
            userspace_addr: slot.region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping of `memory_size` bytes (an
        // MmapRegion owns it) and, per this function's contract, the caller
        // keeps it alive for as long as KVM may use it. Deleting a slot
        // passes size 0, which makes KVM drop its use of the address before
        // the ioctl returns.
        unsafe { self.shared.fd.set_user_memory_region(region) }
            .map_err(os("KVM_SET_USER_MEMORY_REGION"))
    }
}

impl Vm for KvmVm {
    fn set_memory_slot(&self, slot: MemorySlot) -> Result<(), HvError> {
        let mut slots = lock(&self.shared.slots);
        self.check_slot(&slot, &slots)?;
        if let Some(old) = slots.get(&slot.id) {
            // KVM updates a slot in place only for a flags change or a move
            // of the same host range; a new size, a new host mapping or a
            // change of KVM_MEM_READONLY needs a delete first.
            let in_place = old.size() == slot.size()
                && old.region.as_ptr() == slot.region.as_ptr()
                && old.read_only == slot.read_only;
            if !in_place {
                // SAFETY: deleting: KVM stops using the old range before
                // returning; `old` stays in the map until then.
                unsafe { self.kvm_set_region(old, true) }?;
                slots.remove(&slot.id);
            }
        }
        // SAFETY: the slot (with its Arc<MmapRegion>) goes into `slots`
        // right after, and leaves it only after KVM deleted the slot
        // (remove_memory_slot) or the VM fd is closed (VmShared's drop).
        unsafe { self.kvm_set_region(&slot, false) }?;
        // Replacing an entry drops the old region only now that KVM maps
        // the new one.
        slots.insert(slot.id, slot);
        Ok(())
    }

    fn remove_memory_slot(&self, id: u32) -> Result<(), HvError> {
        let mut slots = lock(&self.shared.slots);
        let Some(slot) = slots.get(&id) else {
            return Err(HvError::InvalidArgument(format!("no memory slot {id}")));
        };
        // SAFETY: deleting; the region is dropped only after KVM let go.
        unsafe { self.kvm_set_region(slot, true) }?;
        slots.remove(&id);
        Ok(())
    }

    fn get_dirty_log(&self, id: u32) -> Result<Vec<u64>, HvError> {
        let slots = lock(&self.shared.slots);
        let Some(slot) = slots.get(&id) else {
            return Err(HvError::InvalidArgument(format!("no memory slot {id}")));
        };
        if !slot.log_dirty {
            return Err(HvError::InvalidArgument(format!(
                "memory slot {id} does not log dirty pages"
            )));
        }
        let size = usize::try_from(slot.size())
            .map_err(|_| HvError::InvalidArgument(format!("memory slot {id} too large")))?;
        let mut bitmap = self
            .shared
            .fd
            .get_dirty_log(id, size)
            .map_err(os("KVM_GET_DIRTY_LOG"))?;
        // kvm-ioctls sizes the bitmap with the host page size; keep exactly
        // one bit per 4 KiB page of the slot.
        bitmap.resize(slot.pages().div_ceil(64) as usize, 0);
        if let Some(devices) = lock(&self.device_writes).remove(&id) {
            for (word, extra) in bitmap.iter_mut().zip(devices) {
                *word |= extra;
            }
        }
        Ok(bitmap)
    }

    fn note_guest_write(&self, gpa: u64, len: u64) {
        let slots = lock(&self.shared.slots);
        let Some(slot) = slots
            .values()
            .find(|s| s.log_dirty && gpa >= s.guest_addr && gpa - s.guest_addr < s.size())
        else {
            return;
        };
        let first = (gpa - slot.guest_addr) / PAGE_SIZE;
        let end = (gpa.saturating_add(len.max(1)) - slot.guest_addr)
            .div_ceil(PAGE_SIZE)
            .min(slot.pages());
        let mut writes = lock(&self.device_writes);
        let bitmap = writes
            .entry(slot.id)
            .or_insert_with(|| vec![0; slot.pages().div_ceil(64) as usize]);
        for page in first..end {
            bitmap[(page / 64) as usize] |= 1 << (page % 64);
        }
    }

    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>, HvError> {
        let mut created = lock(&self.created);
        let Some(done) = created.get_mut(id as usize) else {
            return Err(HvError::InvalidArgument(format!(
                "vCPU id {id} out of range: the VM has {} vCPUs",
                self.vcpus
            )));
        };
        if *done {
            return Err(HvError::InvalidArgument(format!(
                "vCPU {id} was already created"
            )));
        }
        let fd = self
            .shared
            .fd
            .create_vcpu(u64::from(id))
            .map_err(os("KVM_CREATE_VCPU"))?;
        let vcpu = KvmVcpu::new(id, fd, Arc::clone(&self.shared), &self.caps);
        *done = true;
        Ok(Box::new(vcpu))
    }

    fn set_irq_line(&self, gsi: u32, level: bool) -> Result<(), HvError> {
        tracepoints::kvm_set_irq(gsi, level.into(), 0);
        self.shared
            .fd
            .set_irq_line(gsi, level)
            .map_err(os("KVM_IRQ_LINE"))
    }

    fn signal_msi(&self, msi: MsiMessage) -> Result<(), HvError> {
        if !self.caps.signal_msi {
            return Err(HvError::Unsupported("KVM_SIGNAL_MSI"));
        }
        let kmsi = kvm_msi {
            address_lo: msi.address as u32,
            address_hi: (msi.address >> 32) as u32,
            data: msi.data,
            ..Default::default()
        };
        // > 0: delivered, 0: the guest blocked it (masked / no destination);
        // both are the guest's business, not an error.
        self.shared
            .fd
            .signal_msi(kmsi)
            .map(|_| ())
            .map_err(os("KVM_SIGNAL_MSI"))
    }

    fn register_ioevent(
        &self,
        event: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u64>,
    ) -> Result<(), HvError> {
        self.ioevent_ioctl(event, addr, datamatch, true)
    }

    fn unregister_ioevent(
        &self,
        event: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u64>,
    ) -> Result<(), HvError> {
        self.ioevent_ioctl(event, addr, datamatch, false)
    }

    fn register_irqfd(&self, event: &EventFd, gsi: u32) -> Result<(), HvError> {
        if !self.caps.irqfd {
            return Err(HvError::Unsupported("irqfds (KVM_CAP_IRQFD)"));
        }
        check_irqfd_gsi(gsi)?;
        let mut irqfds = lock(&self.irqfds);
        self.shared
            .fd
            .register_irqfd(event, gsi)
            .map_err(os("KVM_IRQFD"))?;
        irqfds.insert((event.as_raw_fd(), gsi));
        Ok(())
    }

    fn unregister_irqfd(&self, event: &EventFd, gsi: u32) -> Result<(), HvError> {
        let mut irqfds = lock(&self.irqfds);
        let key = (event.as_raw_fd(), gsi);
        if !irqfds.contains(&key) {
            return Err(HvError::InvalidArgument(format!(
                "eventfd {} is not an irqfd of GSI {gsi}",
                key.0
            )));
        }
        self.shared
            .fd
            .unregister_irqfd(event, gsi)
            .map_err(os("KVM_IRQFD"))?;
        irqfds.remove(&key);
        Ok(())
    }

    fn set_msi_route(&self, gsi: u32, msi: MsiMessage) -> Result<(), HvError> {
        if !self.caps.irq_routing {
            return Err(HvError::Unsupported("GSI routing (KVM_CAP_IRQ_ROUTING)"));
        }
        if !MSI_GSI_RANGE.contains(&gsi) {
            return Err(HvError::InvalidArgument(format!(
                "GSI {gsi} cannot carry an MSI route (MSI GSIs are {MSI_GSI_RANGE:?})"
            )));
        }
        if msi.address >> 20 != 0xfee {
            return Err(HvError::InvalidArgument(format!(
                "{:#x} is not an MSI address",
                msi.address
            )));
        }
        let mut routes = lock(&self.msi_routes);
        let mut next = routes.clone();
        next.insert(gsi, msi);
        self.set_gsi_routing(&next)?;
        *routes = next;
        Ok(())
    }

    fn pause_clock(&self) -> Result<(), HvError> {
        let data = self.shared.fd.get_clock().map_err(os("KVM_GET_CLOCK"))?;
        *lock(&self.paused_clock) = Some(data.clock);
        Ok(())
    }

    fn resume_clock(&self) -> Result<(), HvError> {
        let Some(clock) = lock(&self.paused_clock).take() else {
            return Ok(());
        };
        // Without KVM_CLOCK_REALTIME: the clock goes on from where it
        // stopped, not from the host's time.
        let data = kvm_bindings::kvm_clock_data {
            clock,
            ..Default::default()
        };
        self.shared.fd.set_clock(&data).map_err(os("KVM_SET_CLOCK"))
    }

    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>, HvError> {
        self.shared.supported_cpuid()
    }

    fn save_state(&self) -> Result<hv::VmState, HvError> {
        crate::vm_state::save(&self.shared.fd, self.pit)
    }

    fn restore_state(&self, state: &hv::VmState) -> Result<(), HvError> {
        crate::vm_state::restore(&self.shared.fd, self.pit, state)?;
        // A paused VM resumes from the restored clock.
        if let Some(clock) = lock(&self.paused_clock).as_mut() {
            *clock = state.clock_ns;
        }
        Ok(())
    }
}

impl VmShared {
    /// KVM_GET_SUPPORTED_CPUID.
    pub fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>, HvError> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(os("KVM_GET_SUPPORTED_CPUID"))?;
        Ok(cpuid.as_slice().iter().map(cpuid_from_kvm).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_are_the_kernels() {
        let routes: Vec<(u32, u32, u32)> = irqchip_routes()
            .map(|e| {
                assert_eq!(e.type_, KVM_IRQ_ROUTING_IRQCHIP);
                // SAFETY: irqchip routes are written through `u.irqchip`.
                let chip = unsafe { e.u.irqchip };
                (e.gsi, chip.irqchip, chip.pin)
            })
            .collect();
        assert_eq!(routes.len(), 24 + 16);
        assert!(routes.contains(&(0, KVM_IRQCHIP_IOAPIC, 0)));
        assert!(routes.contains(&(0, KVM_IRQCHIP_PIC_MASTER, 0)));
        assert!(routes.contains(&(9, KVM_IRQCHIP_PIC_SLAVE, 1)));
        assert!(routes.contains(&(23, KVM_IRQCHIP_IOAPIC, 23)));
        assert!(!routes
            .iter()
            .any(|r| r.0 >= 16 && r.1 != KVM_IRQCHIP_IOAPIC));
    }

    #[test]
    fn msi_routes_split_the_address() {
        let e = msi_route(
            30,
            &MsiMessage {
                address: 0x1_fee0_1000,
                data: 0x4041,
            },
        );
        assert_eq!((e.gsi, e.type_), (30, KVM_IRQ_ROUTING_MSI));
        // SAFETY: MSI routes are written through `u.msi`.
        let msi = unsafe { e.u.msi };
        assert_eq!(
            (msi.address_lo, msi.address_hi, msi.data),
            (0xfee0_1000, 1, 0x4041)
        );
    }

    #[test]
    fn datamatch_fits_four_bytes() {
        assert_eq!(datamatch_u32(0xffff_ffff).unwrap(), 0xffff_ffff);
        assert!(datamatch_u32(1 << 32).is_err());
    }
}
