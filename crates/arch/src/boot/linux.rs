//! Linux's 64-bit boot protocol: bzImage and vmlinux through linux-loader,
//! the zero page (`boot_params`), the e820 map, the initrd and the command
//! line.

use std::io::{Seek, SeekFrom};

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{
    boot_e820_entry, boot_params, setup_header, CAN_USE_HEAP, E820_MAX_ENTRIES_ZEROPAGE,
    LOADED_HIGH,
};
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::{
    build_cmdline, check_segments, place_initrd, require_ram, zero_bss, BootContext, BootError,
    BootInfo, BootKind, Image,
};
use crate::bzimage::{self, DEFAULT_INITRD_ADDR_MAX, ENTRY_64_OFFSET, HDRS_MAGIC};
use crate::elf::ElfKernel;
use crate::layout::{
    BOOT_STACK_TOP, CMDLINE_ADDR, CMDLINE_MAX_SIZE, EBDA_START, HIMEM_START, KERNEL_LOAD_ADDR,
    ZERO_PAGE_ADDR,
};
use crate::mode;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// `type_of_loader`: "other" (no assigned loader id).
const LOADER_OTHER: u8 = 0xff;
/// `boot_flag`.
const BOOT_FLAG: u16 = 0xaa55;
/// `kernel_alignment` announced for a vmlinux (no setup header of its own).
const VMLINUX_ALIGNMENT: u32 = 0x100_0000;
/// `heap_end_ptr` with `CAN_USE_HEAP` (the conventional 0xfe00).
const HEAP_END_PTR: u16 = 0xfe00;

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The e820 map for RAM `regions` `(start, size)`: usable RAM, except that
/// `EBDA_START..1 MiB` (EBDA, VGA, BIOS) is reserved; adjacent entries of the
/// same type are merged.
pub fn e820_table(regions: &[(u64, u64)]) -> Vec<E820Entry> {
    let mut sorted: Vec<(u64, u64)> = regions.iter().copied().filter(|r| r.1 > 0).collect();
    sorted.sort_unstable();
    let mut table: Vec<E820Entry> = Vec::new();
    let mut push = |start: u64, end: u64, kind: u32| {
        if start >= end {
            return;
        }
        if let Some(last) = table.last_mut() {
            if last.kind == kind && last.addr + last.size == start {
                last.size += end - start;
                return;
            }
        }
        table.push(E820Entry {
            addr: start,
            size: end - start,
            kind,
        });
    };
    for (start, size) in sorted {
        let end = start.saturating_add(size);
        push(start, end.min(EBDA_START), E820_RAM);
        push(start.max(EBDA_START), end.min(HIMEM_START), E820_RESERVED);
        push(start.max(HIMEM_START), end, E820_RAM);
    }
    table
}

/// Boots a bzImage: protected-mode code at [`KERNEL_LOAD_ADDR`], entry at
/// load + 0x200.
pub(super) fn boot_bzimage<M: GuestMemoryBackend>(
    ctx: &mut BootContext<'_, M>,
) -> Result<BootInfo, BootError> {
    let bz = bzimage::parse(&mut ctx.kernel.file).map_err(|source| BootError::BzImage {
        path: ctx.kernel.path.clone(),
        source,
    })?;
    require_ram(ctx.ram_end, HIMEM_START)?;
    let kernel_end = bz
        .footprint_end(KERNEL_LOAD_ADDR)
        .ok_or(BootError::KernelTooBig {
            end: u64::MAX,
            ram_end: ctx.ram_end,
        })?;
    if kernel_end > ctx.ram_end {
        return Err(BootError::KernelTooBig {
            end: kernel_end,
            ram_end: ctx.ram_end,
        });
    }
    let cmdline_max = bz.cmdline_max().min(CMDLINE_MAX_SIZE - 1);
    let mut plan = plan_linux(ctx, kernel_end, bz.initrd_addr_max(), cmdline_max)?;

    mode::setup_long_mode(ctx.mem).map_err(BootError::LongMode)?;
    ctx.kernel
        .file
        .seek(SeekFrom::Start(0))
        .map_err(ctx.kernel.read_error("kernel"))?;
    let loaded = BzImage::load(
        ctx.mem,
        Some(GuestAddress(KERNEL_LOAD_ADDR)),
        &mut ctx.kernel.file,
        None,
    )
    .map_err(BootError::LoadKernel)?;
    // linux-loader returns the file's header with code32_start = load address.
    let mut hdr = loaded.setup_header.unwrap_or(bz.header);
    hdr.code32_start = KERNEL_LOAD_ADDR as u32;
    hdr.loadflags |= CAN_USE_HEAP;
    hdr.heap_end_ptr = HEAP_END_PTR;
    finish_linux(ctx, &mut plan, hdr)?;

    let entry = KERNEL_LOAD_ADDR + ENTRY_64_OFFSET;
    Ok(BootInfo {
        kind: BootKind::LinuxBzImage,
        entry,
        regs: mode::long_mode_regs(entry, ZERO_PAGE_ADDR, BOOT_STACK_TOP),
        sregs: mode::long_mode_sregs(),
        kernel: KERNEL_LOAD_ADDR..kernel_end,
        initrd: plan.initrd_range(),
    })
}

/// Boots an ELF vmlinux: segments at `p_paddr` (at or above 1 MiB), entry
/// at `e_entry` (physical on x86-64).
pub(super) fn boot_vmlinux<M: GuestMemoryBackend>(
    ctx: &mut BootContext<'_, M>,
    elf: &ElfKernel,
) -> Result<BootInfo, BootError> {
    let mut plan = plan_elf(ctx, elf)?;

    mode::setup_long_mode(ctx.mem).map_err(BootError::LongMode)?;
    let loaded = Elf::load(
        ctx.mem,
        None,
        &mut ctx.kernel.file,
        Some(GuestAddress(HIMEM_START)),
    )
    .map_err(BootError::LoadKernel)?;
    // linux-loader does not clear .bss (Linux does, but memory may hold an
    // earlier boot's data, and bare kernels rely on it).
    for seg in &elf.segments {
        zero_bss(ctx.mem, seg.paddr + seg.filesz, seg.memsz - seg.filesz)?;
    }
    let hdr = setup_header {
        boot_flag: BOOT_FLAG,
        header: HDRS_MAGIC,
        kernel_alignment: VMLINUX_ALIGNMENT,
        loadflags: LOADED_HIGH | CAN_USE_HEAP,
        heap_end_ptr: HEAP_END_PTR,
        ..setup_header::default()
    };
    finish_linux(ctx, &mut plan, hdr)?;

    // linux-loader reports e_entry as kernel_load.
    let entry = loaded.kernel_load.0;
    Ok(BootInfo {
        kind: BootKind::LinuxElf,
        entry,
        regs: mode::long_mode_regs(entry, ZERO_PAGE_ADDR, BOOT_STACK_TOP),
        sregs: mode::long_mode_sregs(),
        kernel: elf.start()..elf.end(),
        initrd: plan.initrd_range(),
    })
}

/// What a Linux boot writes besides the kernel, checked before anything is.
pub(super) struct LinuxPlan {
    cmdline: linux_loader::cmdline::Cmdline,
    /// The initrd file, its address and size.
    initrd: Option<(Image, u64, u64)>,
    pub(super) e820: Vec<E820Entry>,
}

impl LinuxPlan {
    pub(super) fn initrd_range(&self) -> Option<std::ops::Range<u64>> {
        self.initrd
            .as_ref()
            .map(|&(_, addr, size)| addr..addr + size)
    }
}

/// [`plan_linux`] for an ELF kernel (vmlinux, PVH): its segments checked
/// to lie in RAM from 1 MiB, the initrd above them.
pub(super) fn plan_elf<M: GuestMemoryBackend>(
    ctx: &BootContext<'_, M>,
    elf: &ElfKernel,
) -> Result<LinuxPlan, BootError> {
    require_ram(ctx.ram_end, HIMEM_START)?;
    check_segments(elf, HIMEM_START, ctx.ram_end)?;
    plan_linux(
        ctx,
        elf.end(),
        DEFAULT_INITRD_ADDR_MAX,
        CMDLINE_MAX_SIZE - 1,
    )
}

/// Checks the command line, places the initrd and builds the e820 map.
pub(super) fn plan_linux<M: GuestMemoryBackend>(
    ctx: &BootContext<'_, M>,
    kernel_end: u64,
    initrd_addr_max: u64,
    cmdline_max: u64,
) -> Result<LinuxPlan, BootError> {
    let cmdline = build_cmdline(ctx.cfg.cmdline, cmdline_max)?;
    let initrd = match ctx.cfg.initrd {
        None => None,
        Some(path) => {
            let image = Image::open("initrd", path)?;
            if image.len == 0 {
                return Err(BootError::EmptyInitrd {
                    path: image.path.clone(),
                });
            }
            let limit = ctx.ram_end.min(initrd_addr_max.saturating_add(1));
            let addr =
                place_initrd(image.len, kernel_end, limit).ok_or(BootError::InitrdTooBig {
                    size: image.len,
                    kernel_end,
                    limit,
                })?;
            let size = image.len;
            Some((image, addr, size))
        }
    };
    let e820 = e820_table(&ctx.regions);
    if e820.len() > E820_MAX_ENTRIES_ZEROPAGE {
        return Err(BootError::TooManyE820Entries { count: e820.len() });
    }
    Ok(LinuxPlan {
        cmdline,
        initrd,
        e820,
    })
}

/// Writes the initrd and the command line of `plan`; returns the initrd's
/// (address, size) and the command line's length with its NUL.
pub(super) fn write_initrd_and_cmdline<M: GuestMemoryBackend>(
    ctx: &mut BootContext<'_, M>,
    plan: &mut LinuxPlan,
) -> Result<(Option<(u64, u64)>, usize), BootError> {
    let mut initrd = None;
    if let Some((image, addr, size)) = &mut plan.initrd {
        // The initrd fits below 4 GiB (placed in low RAM), so in a usize.
        ctx.mem
            .read_exact_volatile_from(GuestAddress(*addr), &mut image.file, *size as usize)
            .map_err(|source| BootError::WriteMemory {
                what: "initrd",
                addr: *addr,
                source,
            })?;
        initrd = Some((*addr, *size));
    }
    load_cmdline(ctx.mem, GuestAddress(CMDLINE_ADDR), &plan.cmdline)
        .map_err(BootError::LoadCmdline)?;
    let cmdline_len = plan
        .cmdline
        .as_cstring()
        .map_err(BootError::Cmdline)?
        .as_bytes_with_nul()
        .len();
    Ok((initrd, cmdline_len))
}

/// Writes the initrd, the command line and the zero page with `hdr`.
fn finish_linux<M: GuestMemoryBackend>(
    ctx: &mut BootContext<'_, M>,
    plan: &mut LinuxPlan,
    mut hdr: setup_header,
) -> Result<(), BootError> {
    let (initrd, cmdline_len) = write_initrd_and_cmdline(ctx, plan)?;
    if let Some((addr, size)) = initrd {
        hdr.ramdisk_image = addr as u32;
        hdr.ramdisk_size = size as u32;
    }
    hdr.type_of_loader = LOADER_OTHER;
    hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    hdr.cmdline_size = cmdline_len as u32;

    let mut e820_table = [boot_e820_entry::default(); E820_MAX_ENTRIES_ZEROPAGE];
    for (slot, e) in e820_table.iter_mut().zip(&plan.e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    let params = boot_params {
        hdr,
        e820_table,
        // Checked against E820_MAX_ENTRIES_ZEROPAGE (128) in plan_linux.
        e820_entries: plan.e820.len() as u8,
        ..boot_params::default()
    };
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_ADDR)),
        ctx.mem,
    )
    .map_err(BootError::BootParams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{ram_regions, MMIO_HOLE_END, MMIO_HOLE_START};

    #[test]
    fn e820_reserves_the_bios_area_and_skips_the_hole() {
        let t = e820_table(&ram_regions(4 << 30));
        assert_eq!(
            t,
            vec![
                E820Entry {
                    addr: 0,
                    size: EBDA_START,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: EBDA_START,
                    size: HIMEM_START - EBDA_START,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: HIMEM_START,
                    size: MMIO_HOLE_START - HIMEM_START,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: MMIO_HOLE_END,
                    size: 1 << 30,
                    kind: E820_RAM
                },
            ]
        );
    }

    #[test]
    fn e820_of_small_and_odd_regions() {
        assert_eq!(
            e820_table(&[(0, 0x8_0000)]),
            vec![E820Entry {
                addr: 0,
                size: 0x8_0000,
                kind: E820_RAM
            }]
        );
        // Adjacent regions merge; empty ones vanish.
        let t = e820_table(&[
            (0x20_0000, 0x10_0000),
            (0x10_0000, 0x10_0000),
            (0x50_0000, 0),
        ]);
        assert_eq!(
            t,
            vec![E820Entry {
                addr: 0x10_0000,
                size: 0x20_0000,
                kind: E820_RAM
            }]
        );
        assert!(e820_table(&[]).is_empty());
    }
}
