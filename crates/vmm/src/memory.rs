//! Guest RAM: anonymous host mappings in the x86 layout, registered with the
//! VM as memory slots.

use hv::{MemorySlot, Vm};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::config::MIN_MEMORY;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {0} bytes is too small (at least 16 MiB)")]
    TooSmall(u64),
    #[error("guest memory of {0} bytes is not a multiple of 4 KiB")]
    Unaligned(u64),
    #[error("guest memory of {0} bytes is more than this host can map")]
    TooLarge(u64),
    #[error("cannot map {size} bytes of guest memory")]
    Map {
        size: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("cannot register guest memory with the accelerator")]
    Slot(#[source] hv::HvError),
    #[error("cannot write the firmware ROM")]
    Rom(#[source] vm_memory::GuestMemoryError),
}

/// Largest guest the VMM accepts (the x86 layout's 46-bit physical space is
/// far beyond any host here; this keeps arithmetic simple and errors early).
pub const MAX_MEMORY: u64 = 1 << 40;

/// Maps `size` bytes of guest RAM in the x86 layout.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if size < MIN_MEMORY {
        return Err(MemoryError::TooSmall(size));
    }
    if !size.is_multiple_of(4096) {
        return Err(MemoryError::Unaligned(size));
    }
    if size > MAX_MEMORY {
        return Err(MemoryError::TooLarge(size));
    }
    let ranges: Vec<(GuestAddress, usize)> = arch::layout::ram_regions(size)
        .into_iter()
        .map(|(gpa, len)| (GuestAddress(gpa), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Map { size, source })
}

/// Registers every region of `mem` with `vm`, slot ids from 0.
pub fn register_slots(
    vm: &dyn Vm,
    mem: &GuestMemoryMmap,
    log_dirty: bool,
) -> Result<(), MemoryError> {
    for (id, region) in mem.iter().enumerate() {
        vm.set_memory_slot(MemorySlot {
            id: id as u32,
            guest_addr: region.start_addr().0,
            region: region.get_mmap(),
            read_only: false,
            log_dirty,
        })
        .map_err(MemoryError::Slot)?;
    }
    Ok(())
}

/// Maps the firmware ROM ([`arch::firmware::rom_image`]) below 4 GiB as
/// slot `id`: read-only where the accelerator can (KVM without
/// KVM_CAP_READONLY_MEM gets a writable copy, which only the guest itself
/// could spoil). The caller keeps the returned memory for the VM's life.
pub fn register_rom(vm: &dyn Vm, id: u32) -> Result<GuestMemoryMmap, MemoryError> {
    use arch::firmware::{rom_image, ROM_BASE, ROM_SIZE};
    let rom = GuestMemoryMmap::from_ranges(&[(GuestAddress(ROM_BASE), ROM_SIZE as usize)])
        .map_err(|source| MemoryError::Map {
            size: ROM_SIZE,
            source,
        })?;
    rom.write_slice(&rom_image(), GuestAddress(ROM_BASE))
        .map_err(MemoryError::Rom)?;
    let region = rom
        .iter()
        .next()
        .map(|r| r.get_mmap())
        .ok_or(MemoryError::TooSmall(0))?;
    let slot = |read_only| MemorySlot {
        id,
        guest_addr: ROM_BASE,
        region: region.clone(),
        read_only,
        log_dirty: false,
    };
    match vm.set_memory_slot(slot(true)) {
        Err(hv::HvError::Unsupported(what)) => {
            tracing::info!(
                missing = what,
                "the firmware ROM is writable on this accelerator"
            );
            vm.set_memory_slot(slot(false)).map_err(MemoryError::Slot)?;
        }
        r => r.map_err(MemoryError::Slot)?,
    }
    Ok(rom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        assert!(matches!(
            create_guest_memory(1 << 20),
            Err(MemoryError::TooSmall(_))
        ));
        assert!(matches!(
            create_guest_memory((64 << 20) + 1),
            Err(MemoryError::Unaligned(_))
        ));
        assert!(matches!(
            create_guest_memory(1 << 50),
            Err(MemoryError::TooLarge(_))
        ));
    }

    #[test]
    fn memory_below_the_hole_is_one_region() {
        let mem = create_guest_memory(64 << 20).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((64 << 20) - 1));
    }
}
