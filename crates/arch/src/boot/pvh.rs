//! The PVH boot protocol (Xen's direct boot, also used by Firecracker,
//! Cloud Hypervisor and QEMU): an uncompressed ELF kernel with a
//! `XEN_ELFNOTE_PHYS32_ENTRY` note is loaded at its segments' physical
//! addresses and entered at that note's address in 32-bit protected mode,
//! paging off, with EBX pointing at an `hvm_start_info` structure (version
//! 1): the command line, the initrd as module 0, the ACPI RSDP (written
//! later by [`super::set_acpi_rsdp`]) and the memory map.
//!
//! Layout (in the page of the Linux zero page, which PVH does not use):
//! `hvm_start_info` at [`START_INFO_ADDR`], the module list at
//! [`MODLIST_ADDR`], the memory map from [`MEMMAP_ADDR`] to the end of the
//! page. The command line is at [`CMDLINE_ADDR`] as for the 64-bit
//! protocol; the GDT/IDT/TSS of [`mode::setup_protected_mode`].

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{Elf, KernelLoader};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use super::linux::{plan_elf, write_initrd_and_cmdline};
use super::{zero_bss, BootContext, BootError, BootInfo, BootKind};
use crate::elf::ElfKernel;
use crate::layout::{CMDLINE_ADDR, HIMEM_START, ZERO_PAGE_ADDR};
use crate::mode;

/// `hvm_start_info.magic` ("xEn3" with the top bit of the first byte set).
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// The `hvm_start_info` version written (1: with the memory map).
pub const START_INFO_VERSION: u32 = 1;
/// Where `hvm_start_info` goes (EBX at entry).
pub const START_INFO_ADDR: u64 = ZERO_PAGE_ADDR;
/// The module list (the initrd).
pub const MODLIST_ADDR: u64 = START_INFO_ADDR + 0x40;
/// The memory map, up to the end of the page.
pub const MEMMAP_ADDR: u64 = MODLIST_ADDR + 0x40;
/// Most memory map entries that fit in the page.
pub const MEMMAP_MAX_ENTRIES: usize = ((ZERO_PAGE_ADDR + 0x1000 - MEMMAP_ADDR) / 24) as usize;
/// Offset of `rsdp_paddr` in `hvm_start_info`.
pub const RSDP_PADDR_OFFSET: u64 = std::mem::offset_of!(hvm_start_info, rsdp_paddr) as u64;

const _: () = {
    assert!(std::mem::size_of::<hvm_start_info>() as u64 <= MODLIST_ADDR - START_INFO_ADDR);
    assert!(std::mem::size_of::<hvm_modlist_entry>() as u64 <= MEMMAP_ADDR - MODLIST_ADDR);
    assert!(std::mem::size_of::<hvm_memmap_table_entry>() == 24);
};

/// Boots `elf`, whose PVH entry is `entry`, through the PVH protocol.
pub(super) fn boot<M: GuestMemoryBackend>(
    ctx: &mut BootContext<'_, M>,
    elf: &ElfKernel,
    entry: u64,
) -> Result<BootInfo, BootError> {
    let mut plan = plan_elf(ctx, elf)?;
    if plan.e820.len() > MEMMAP_MAX_ENTRIES {
        return Err(BootError::TooManyE820Entries {
            count: plan.e820.len(),
        });
    }

    mode::setup_protected_mode(ctx.mem).map_err(BootError::ProtectedMode)?;
    let loaded = Elf::load(
        ctx.mem,
        None,
        &mut ctx.kernel.file,
        Some(GuestAddress(HIMEM_START)),
    )
    .map_err(BootError::LoadKernel)?;
    // Our ELF reader and linux-loader read the same note.
    if loaded.pvh_boot_cap != PvhBootCapability::PvhEntryPresent(GuestAddress(entry)) {
        return Err(BootError::PvhNoteMismatch {
            ours: entry,
            loader: loaded.pvh_boot_cap.to_string(),
        });
    }
    for seg in &elf.segments {
        zero_bss(ctx.mem, seg.paddr + seg.filesz, seg.memsz - seg.filesz)?;
    }
    let (initrd, _) = write_initrd_and_cmdline(ctx, &mut plan)?;

    let memmap: Vec<hvm_memmap_table_entry> = plan
        .e820
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let modules: Vec<hvm_modlist_entry> = initrd
        .map(|(paddr, size)| hvm_modlist_entry {
            paddr,
            size,
            cmdline_paddr: 0,
            reserved: 0,
        })
        .into_iter()
        .collect();
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: START_INFO_VERSION,
        flags: 0,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() { 0 } else { MODLIST_ADDR },
        cmdline_paddr: CMDLINE_ADDR,
        // Written by set_acpi_rsdp once the tables are.
        rsdp_paddr: 0,
        memmap_paddr: MEMMAP_ADDR,
        // At most MEMMAP_MAX_ENTRIES, checked above.
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    let mut params = BootParams::new(&start_info, GuestAddress(START_INFO_ADDR));
    params.set_sections(&memmap, GuestAddress(MEMMAP_ADDR));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams(&params, ctx.mem).map_err(BootError::BootParams)?;

    let regs = hv::Regs {
        rip: entry,
        rbx: START_INFO_ADDR,
        rflags: 0x2,
        ..hv::Regs::default()
    };
    Ok(BootInfo {
        kind: BootKind::Pvh,
        entry,
        regs,
        sregs: mode::protected_mode_sregs(),
        kernel: elf.start()..elf.end(),
        initrd: initrd.map(|(addr, size)| addr..addr + size),
    })
}
