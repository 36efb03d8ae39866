//! Multiboot (version 1, spec 0.6.96) kernels.
//!
//! **Detection.** A Multiboot header is the magic `0x1BADB002`, `flags` and
//! `checksum` (the three sum to zero mod 2³²) at a 4-byte aligned offset,
//! wholly inside the first 8192 bytes of the file ([`find_header`]).
//! [`BootProtocol::Auto`](super::BootProtocol::Auto) boots a file with a
//! valid header this way unless it is a bzImage; a magic with a wrong
//! checksum is an error rather than a silent fall-back to ELF.
//!
//! **Header flags.** Bits 0..15 are requirements: bit 0 (page-aligned
//! modules: always done), bit 1 (memory information: always given) and
//! bit 2 (video mode: accepted, but no video information is given — the
//! kernel sees info flags 11/12 clear) are understood; any other bit in
//! 0..15 is [`MultibootError::UnsupportedRequirements`]. Bit 16 selects the
//! address fields.
//!
//! **Loading.** With flag bit 16 (the "a.out kludge"), the file from offset
//! `header_offset - (header_addr - load_addr)` is loaded at `load_addr`, up
//! to `load_end_addr` (0: to the end of the file), then zeroed up to
//! `bss_end_addr` (0: no bss), and entered at `entry_addr`. Without it the
//! file must be an ELF32 i386 or ELF64 x86-64 executable: `PT_LOAD`
//! segments at `p_paddr`, entered at `e_entry` translated from virtual to
//! physical through the segment that holds it (as GRUB does). The kernel
//! may load anywhere in low RAM, below 1 MiB too: the loader's structures
//! (GDT/IDT/TSS, information, command line, stack) stay at their usual
//! places where the kernel leaves them free and move around it otherwise
//! ([`super::multiboot_layout`]); only a kernel that leaves no room for one
//! is refused.
//!
//! **Information structure** at [`MULTIBOOT_INFO_ADDR`] (and what follows it
//! up to [`MULTIBOOT_INFO_END`]) unless the kernel is there: flags 0
//! (`mem_lower`/`mem_upper` in KiB), 2 (command line, by default at
//! [`CMDLINE_ADDR`](crate::layout::CMDLINE_ADDR)), 3 (modules: the initrd,
//! if any, as module 0, page-aligned right after the kernel and at or
//! above 1 MiB, its string the initrd's file name), 6 (memory map: the e820
//! map, each entry preceded by its `size` = 20), 9 (boot loader name
//! "Ferrovisor").
//!
//! **Firmware state**: the boot vCPU starts in a small stub that leaves the
//! PICs, the PIT and the real-mode IVT as a PC BIOS does, then jumps to the
//! kernel's entry ([`super::bios_handoff`]).
//!
//! **Entry state** ([`mode::protected_mode_sregs`]): 32-bit protected mode,
//! paging off, CS = 0x08 flat 32-bit code, DS/ES/FS/GS/SS = 0x18 flat data,
//! GDTR = the boot GDT, IDTR limit 0, CR4 = EFER = 0, EFLAGS = 0x2 (IF = 0,
//! VM = 0), EAX = `0x2BADB002`, EBX = the information structure, ESP =
//! [`MULTIBOOT_STACK_TOP`](crate::layout::MULTIBOOT_STACK_TOP) (or the top
//! of the stack's new place). A20 is always enabled on this machine.

use std::io::{Seek, SeekFrom};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::bios_handoff;
use super::linux::e820_table;
use super::multiboot_layout::{self, MultibootLayout, MULTIBOOT_INFO_AREA_SIZE};
use super::{
    check_segments, load_segments, require_ram, zero_bss, BootContext, BootError, BootInfo,
    BootKind, Image,
};
use crate::elf;
use crate::layout::{
    CMDLINE_MAX_SIZE, EBDA_START, HIMEM_START, MULTIBOOT_INFO_ADDR, MULTIBOOT_INFO_END,
};
use crate::mode;

/// The header magic.
pub const MULTIBOOT_HEADER_MAGIC: u32 = 0x1BAD_B002;
/// EAX at entry.
pub const MULTIBOOT_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie wholly within this many bytes from the file's start.
pub const MULTIBOOT_SEARCH_LEN: usize = 8192;

/// Header flag: align modules on 4 KiB pages.
pub const MULTIBOOT_FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag: memory information must be given.
pub const MULTIBOOT_FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Header flag: video mode information must be given (accepted, not given).
pub const MULTIBOOT_FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Header flag: the address fields are valid (a.out kludge).
pub const MULTIBOOT_FLAG_ADDRESSES: u32 = 1 << 16;
/// The requirement bits (0..15) this loader honours.
pub const MULTIBOOT_KNOWN_REQUIREMENTS: u32 =
    MULTIBOOT_FLAG_PAGE_ALIGN | MULTIBOOT_FLAG_MEMORY_INFO | MULTIBOOT_FLAG_VIDEO_MODE;

/// Info flag: `mem_lower` and `mem_upper` are valid.
pub const MULTIBOOT_INFO_MEMORY: u32 = 1 << 0;
/// Info flag: `cmdline` is valid.
pub const MULTIBOOT_INFO_CMDLINE: u32 = 1 << 2;
/// Info flag: `mods_count` and `mods_addr` are valid.
pub const MULTIBOOT_INFO_MODS: u32 = 1 << 3;
/// Info flag: `mmap_length` and `mmap_addr` are valid.
pub const MULTIBOOT_INFO_MEM_MAP: u32 = 1 << 6;
/// Info flag: `boot_loader_name` is valid.
pub const MULTIBOOT_INFO_BOOT_LOADER_NAME: u32 = 1 << 9;

/// The boot loader name in the information structure.
pub const BOOT_LOADER_NAME: &str = "Ferrovisor";

/// Size of the information structure (up to the framebuffer fields).
pub const MULTIBOOT_INFO_SIZE: u64 = 116;
/// Offsets in the information area (the structure at offset 0): the
/// module list (16 bytes per module; one module at most).
pub const MULTIBOOT_MODS_OFFSET: u64 = 0x80;
/// The boot loader name string.
pub const MULTIBOOT_LOADER_NAME_OFFSET: u64 = 0xc0;
/// The module's string (the initrd's file name), NUL included.
pub const MULTIBOOT_MODULE_STRING_OFFSET: u64 = 0x100;
/// Room for the module string, NUL included.
pub const MULTIBOOT_MODULE_STRING_MAX: u64 = 0x100;
/// The memory map, up to the end of the area.
pub const MULTIBOOT_MMAP_OFFSET: u64 = 0x200;
/// Bytes per memory map entry: `size` (u32, = 20) then base, length, type.
pub const MULTIBOOT_MMAP_ENTRY_SIZE: u64 = 24;
/// How many memory map entries fit.
pub const MULTIBOOT_MMAP_MAX_ENTRIES: u64 =
    (MULTIBOOT_INFO_AREA_SIZE - MULTIBOOT_MMAP_OFFSET) / MULTIBOOT_MMAP_ENTRY_SIZE;

const _: () = {
    assert!(MULTIBOOT_INFO_SIZE <= MULTIBOOT_MODS_OFFSET);
    assert!(MULTIBOOT_MODS_OFFSET + 16 <= MULTIBOOT_LOADER_NAME_OFFSET);
    assert!(
        MULTIBOOT_LOADER_NAME_OFFSET + (BOOT_LOADER_NAME.len() as u64)
            < MULTIBOOT_MODULE_STRING_OFFSET
    );
    assert!(MULTIBOOT_MODULE_STRING_OFFSET + MULTIBOOT_MODULE_STRING_MAX <= MULTIBOOT_MMAP_OFFSET);
    assert!(MULTIBOOT_INFO_END - MULTIBOOT_INFO_ADDR == MULTIBOOT_INFO_AREA_SIZE);
};

/// The address fields of a header with flag bit 16 (physical addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultibootAddresses {
    /// Where the header's first byte (the magic) is loaded.
    pub header_addr: u32,
    /// Where the text starts; at most `header_addr`.
    pub load_addr: u32,
    /// End (exclusive) of the bytes loaded from the file; 0 = end of file.
    pub load_end_addr: u32,
    /// End (exclusive) of the bss; 0 = no bss.
    pub bss_end_addr: u32,
    /// The entry point.
    pub entry_addr: u32,
}

/// A Multiboot header found in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultibootHeader {
    /// File offset of the magic.
    pub offset: u64,
    pub flags: u32,
    /// The address fields, when flag bit 16 is set.
    pub addresses: Option<MultibootAddresses>,
}

/// What is wrong with a Multiboot kernel.
#[derive(Debug, thiserror::Error)]
pub enum MultibootError {
    #[error(
        "no Multiboot header (magic 0x1BADB002 at a 4-byte aligned offset in the first 8192 bytes)"
    )]
    NoHeader,
    #[error("Multiboot header at offset {offset:#x}: magic + flags {flags:#x} + checksum {checksum:#x} is not zero")]
    BadChecksum {
        offset: u64,
        flags: u32,
        checksum: u32,
    },
    #[error("Multiboot header at offset {offset:#x} is cut off by the end of the file or of its first 8192 bytes")]
    HeaderTruncated { offset: u64 },
    #[error("the Multiboot header requires features {unsupported:#x} (flags {flags:#x}) that this loader does not provide")]
    UnsupportedRequirements { flags: u32, unsupported: u32 },
    #[error("Multiboot header_addr {header_addr:#x} is below load_addr {load_addr:#x}")]
    HeaderBelowLoadAddr { header_addr: u32, load_addr: u32 },
    #[error("the Multiboot header at file offset {header_offset:#x} cannot lie header_addr - load_addr = {distance:#x} bytes into the loaded image")]
    LoadStartBeforeFile { header_offset: u64, distance: u64 },
    #[error("Multiboot load_end_addr {load_end_addr:#x} is not above load_addr {load_addr:#x}")]
    LoadEndNotAboveLoadAddr { load_addr: u32, load_end_addr: u32 },
    #[error("the {size:#x} bytes to load from file offset {offset:#x} go past the end of the {file_len}-byte file")]
    LoadBeyondFile {
        offset: u64,
        size: u64,
        file_len: u64,
    },
    #[error("Multiboot bss_end_addr {bss_end_addr:#x} is below the end of the loaded image {load_end:#x}")]
    BssEndBeforeLoadEnd { bss_end_addr: u32, load_end: u64 },
    #[error(
        "the kernel leaves no room below the MMIO hole for the Multiboot {what} ({size:#x} bytes)"
    )]
    NoRoom { what: &'static str, size: u64 },
    #[error("Multiboot entry_addr {entry:#x} is outside the loaded image {start:#x}..{end:#x}")]
    EntryOutsideImage { entry: u64, start: u64, end: u64 },
    #[error("the ELF entry point {entry:#x} lies in no loadable segment (by virtual or physical address)")]
    ElfEntryOutsideSegments { entry: u64 },
    #[error("the file is not ELF and its Multiboot header has no address fields (flag bit 16)")]
    NotElfWithoutAddresses,
    #[error("the memory map has {count} entries; the Multiboot information area holds {max}")]
    TooManyMemoryMapEntries { count: usize, max: u64 },
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Looks for a Multiboot header in `head`, the first bytes of a file (only
/// the first [`MULTIBOOT_SEARCH_LEN`] are searched). `Ok(None)` if there is
/// no magic; a magic whose checksum is wrong, or a header cut off, is an
/// error unless a valid header follows.
pub fn find_header(head: &[u8]) -> Result<Option<MultibootHeader>, MultibootError> {
    let head = &head[..head.len().min(MULTIBOOT_SEARCH_LEN)];
    let mut first_error = None;
    for offset in (0..head.len().saturating_sub(3)).step_by(4) {
        if word(head, offset) != MULTIBOOT_HEADER_MAGIC {
            continue;
        }
        let at = offset as u64;
        if offset + 12 > head.len() {
            first_error.get_or_insert(MultibootError::HeaderTruncated { offset: at });
            continue;
        }
        let flags = word(head, offset + 4);
        let checksum = word(head, offset + 8);
        if MULTIBOOT_HEADER_MAGIC
            .wrapping_add(flags)
            .wrapping_add(checksum)
            != 0
        {
            first_error.get_or_insert(MultibootError::BadChecksum {
                offset: at,
                flags,
                checksum,
            });
            continue;
        }
        let addresses = if flags & MULTIBOOT_FLAG_ADDRESSES != 0 {
            if offset + 32 > head.len() {
                return Err(MultibootError::HeaderTruncated { offset: at });
            }
            let field = |i: usize| word(head, offset + 12 + 4 * i);
            Some(MultibootAddresses {
                header_addr: field(0),
                load_addr: field(1),
                load_end_addr: field(2),
                bss_end_addr: field(3),
                entry_addr: field(4),
            })
        } else {
            None
        };
        return Ok(Some(MultibootHeader {
            offset: at,
            flags,
            addresses,
        }));
    }
    first_error.map_or(Ok(None), Err)
}

/// Where the kernel goes and where it starts.
struct Placement {
    /// Guest-physical range the kernel spans (bss included).
    range: std::ops::Range<u64>,
    /// The ranges it occupies (its segments; the range for the kludge).
    occupied: Vec<std::ops::Range<u64>>,
    entry: u64,
    what: What,
}

enum What {
    /// The a.out kludge: `size` bytes from file offset `offset` at the
    /// range's start, zeros after them.
    Kludge {
        offset: u64,
        size: u64,
    },
    Elf(elf::ElfKernel),
}

/// Checks the address fields against the file and the machine.
fn place_kludge(
    header: &MultibootHeader,
    a: &MultibootAddresses,
    file_len: u64,
    ram_end: u64,
    mb: &dyn Fn(MultibootError) -> BootError,
) -> Result<Placement, BootError> {
    let load_addr = u64::from(a.load_addr);
    if a.header_addr < a.load_addr {
        return Err(mb(MultibootError::HeaderBelowLoadAddr {
            header_addr: a.header_addr,
            load_addr: a.load_addr,
        }));
    }
    let distance = u64::from(a.header_addr - a.load_addr);
    let offset = header
        .offset
        .checked_sub(distance)
        .ok_or(MultibootError::LoadStartBeforeFile {
            header_offset: header.offset,
            distance,
        })
        .map_err(mb)?;
    let load_end = match a.load_end_addr {
        0 => load_addr + (file_len - offset),
        end if end <= a.load_addr => {
            return Err(mb(MultibootError::LoadEndNotAboveLoadAddr {
                load_addr: a.load_addr,
                load_end_addr: end,
            }))
        }
        end => u64::from(end),
    };
    let size = load_end - load_addr;
    if offset + size > file_len {
        return Err(mb(MultibootError::LoadBeyondFile {
            offset,
            size,
            file_len,
        }));
    }
    let end = match a.bss_end_addr {
        0 => load_end,
        bss if u64::from(bss) < load_end => {
            return Err(mb(MultibootError::BssEndBeforeLoadEnd {
                bss_end_addr: bss,
                load_end,
            }))
        }
        bss => u64::from(bss),
    };
    if end > ram_end {
        return Err(BootError::KernelTooBig { end, ram_end });
    }
    let entry = u64::from(a.entry_addr);
    if !(load_addr..load_end).contains(&entry) {
        return Err(mb(MultibootError::EntryOutsideImage {
            entry,
            start: load_addr,
            end: load_end,
        }));
    }
    Ok(Placement {
        range: load_addr..end,
        occupied: std::iter::once(load_addr..end).collect(),
        entry,
        what: What::Kludge { offset, size },
    })
}

/// Boots the Multiboot kernel of `ctx` whose header is `header`.
pub(super) fn boot<M: GuestMemoryBackend>(
    ctx: &mut BootContext<'_, M>,
    header: &MultibootHeader,
) -> Result<BootInfo, BootError> {
    let path = ctx.kernel.path.clone();
    let mb = move |source| BootError::Multiboot {
        path: path.clone(),
        source,
    };
    let unsupported = header.flags & 0xffff & !MULTIBOOT_KNOWN_REQUIREMENTS;
    if unsupported != 0 {
        return Err(mb(MultibootError::UnsupportedRequirements {
            flags: header.flags,
            unsupported,
        }));
    }
    require_ram(ctx.ram_end, HIMEM_START)?;

    // Where the kernel goes.
    let placement = match &header.addresses {
        Some(a) => place_kludge(header, a, ctx.kernel.len, ctx.ram_end, &mb)?,
        None => {
            let mut head = [0u8; 4];
            let n = ctx.kernel.len.min(4) as usize;
            ctx.kernel
                .file
                .seek(SeekFrom::Start(0))
                .map_err(ctx.kernel.read_error("kernel"))?;
            std::io::Read::read_exact(&mut ctx.kernel.file, &mut head[..n])
                .map_err(ctx.kernel.read_error("kernel"))?;
            if !elf::is_elf(&head[..n]) {
                return Err(mb(MultibootError::NotElfWithoutAddresses));
            }
            let parsed =
                elf::parse_any_class(&mut ctx.kernel.file).map_err(|source| BootError::Elf {
                    path: ctx.kernel.path.clone(),
                    source,
                })?;
            // Anywhere in RAM: the loader's structures go around it.
            check_segments(&parsed, 0, ctx.ram_end)?;
            let entry = parsed.physical_entry().ok_or_else(|| {
                mb(MultibootError::ElfEntryOutsideSegments {
                    entry: parsed.entry,
                })
            })?;
            Placement {
                range: parsed.start()..parsed.end(),
                occupied: parsed.segments.iter().map(|s| s.paddr..s.end()).collect(),
                entry,
                what: What::Elf(parsed),
            }
        }
    };

    // Everything else, checked before anything is written.
    let cmdline = ctx.cfg.cmdline.as_bytes();
    if let Some(position) = cmdline.iter().position(|b| !(b' '..=b'~').contains(b)) {
        return Err(BootError::CmdlineNotPrintable { position });
    }
    if cmdline.len() as u64 > CMDLINE_MAX_SIZE - 1 {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len() as u64,
            max: CMDLINE_MAX_SIZE - 1,
        });
    }
    let mut initrd = match ctx.cfg.initrd {
        None => None,
        Some(path) => {
            let image = Image::open("initrd", path)?;
            if image.len == 0 {
                return Err(BootError::EmptyInitrd {
                    path: image.path.clone(),
                });
            }
            let kernel_end = placement.range.end;
            let start = multiboot_layout::module_start(kernel_end);
            let fits = start
                .checked_add(image.len)
                .is_some_and(|end| end <= ctx.ram_end);
            // Unlike a Linux initrd (as high as possible), a Multiboot
            // module goes right after the kernel, where 32-bit kernels that
            // map only their own neighbourhood still reach it.
            if !fits {
                return Err(BootError::InitrdTooBig {
                    size: image.len,
                    kernel_end,
                    limit: ctx.ram_end,
                });
            }
            Some((image, start))
        }
    };
    let e820 = e820_table(&ctx.regions);
    if e820.len() as u64 > MULTIBOOT_MMAP_MAX_ENTRIES {
        return Err(mb(MultibootError::TooManyMemoryMapEntries {
            count: e820.len(),
            max: MULTIBOOT_MMAP_MAX_ENTRIES,
        }));
    }

    let mut occupied = placement.occupied.clone();
    if let Some((image, start)) = &initrd {
        occupied.push(*start..*start + image.len);
    }
    let layout =
        multiboot_layout::place(&occupied, cmdline.len() as u64, ctx.ram_end).map_err(&mb)?;

    // Write.
    mode::setup_boot_tables(ctx.mem, &layout.tables).map_err(BootError::ProtectedMode)?;
    match &placement.what {
        What::Elf(parsed) => load_segments(ctx, parsed)?,
        What::Kludge { offset, size } => {
            ctx.kernel
                .file
                .seek(SeekFrom::Start(*offset))
                .map_err(ctx.kernel.read_error("kernel"))?;
            // Checked to lie in low RAM, so it fits in a usize.
            ctx.mem
                .read_exact_volatile_from(
                    GuestAddress(placement.range.start),
                    &mut ctx.kernel.file,
                    *size as usize,
                )
                .map_err(|source| BootError::WriteMemory {
                    what: "kernel",
                    addr: placement.range.start,
                    source,
                })?;
            let load_end = placement.range.start + size;
            zero_bss(ctx.mem, load_end, placement.range.end - load_end)?;
        }
    }
    let mut info = InfoBuilder::default();
    if let Some((image, start)) = &mut initrd {
        ctx.mem
            .read_exact_volatile_from(GuestAddress(*start), &mut image.file, image.len as usize)
            .map_err(|source| BootError::WriteMemory {
                what: "initrd",
                addr: *start,
                source,
            })?;
        info.module = Some((*start, *start + image.len, module_string(&image.path)));
    }
    info.cmdline = cmdline.to_vec();
    info.mem_lower_kib = (ctx.ram_end.min(EBDA_START) / 1024) as u32;
    info.mem_upper_kib = ((ctx.ram_end - HIMEM_START) / 1024).min(u64::from(u32::MAX)) as u32;
    info.mmap = e820
        .iter()
        .map(|e| MemoryMapEntry {
            addr: e.addr,
            len: e.size,
            kind: e.kind,
        })
        .collect();
    info.write(ctx.mem, &layout)?;
    write_firmware(ctx.mem, &layout, &occupied, placement.entry)?;

    let regs = hv::Regs {
        rax: MULTIBOOT_BOOTLOADER_MAGIC.into(),
        rbx: layout.info,
        rip: layout.firmware,
        rsp: layout.stack_top,
        rflags: 0x2,
        ..hv::Regs::default()
    };
    Ok(BootInfo {
        kind: BootKind::Multiboot,
        entry: placement.entry,
        regs,
        sregs: mode::protected_mode_sregs_with(&layout.tables),
        kernel: placement.range,
        initrd: initrd.map(|(image, start)| start..start + image.len),
    })
}

/// Writes the firmware code (its stub jumps to `entry`) and, where the
/// kernel leaves it free, the real-mode IVT ([`bios_handoff`]).
fn write_firmware<M: GuestMemoryBackend>(
    mem: &M,
    layout: &MultibootLayout,
    occupied: &[std::ops::Range<u64>],
    entry: u64,
) -> Result<(), BootError> {
    let put = |what: &'static str, addr: u64, bytes: &[u8]| {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|source| BootError::WriteMemory { what, addr, source })
    };
    // The entry lies in a segment below 4 GiB.
    put(
        "firmware code",
        layout.firmware,
        &bios_handoff::code(entry as u32),
    )?;
    let ivt = bios_handoff::IVT_ADDR..bios_handoff::IVT_ADDR + bios_handoff::IVT_SIZE;
    if !occupied
        .iter()
        .any(|r| r.start < ivt.end && ivt.start < r.end)
    {
        put(
            "real-mode IVT",
            ivt.start,
            &bios_handoff::ivt(layout.firmware),
        )?;
    }
    Ok(())
}

/// The module string: the initrd's file name, printable ASCII (other bytes
/// become `_`), cut to fit [`MULTIBOOT_MODULE_STRING_MAX`].
fn module_string(path: &std::path::Path) -> Vec<u8> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.bytes()
        .map(|b| if (b' '..=b'~').contains(&b) { b } else { b'_' })
        .take(MULTIBOOT_MODULE_STRING_MAX as usize - 1)
        .collect()
}

/// One entry of the Multiboot memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemoryMapEntry {
    addr: u64,
    len: u64,
    /// 1 = available RAM, 2 = reserved (the e820 types).
    kind: u32,
}

/// The Multiboot information to write.
#[derive(Debug, Default)]
struct InfoBuilder {
    mem_lower_kib: u32,
    mem_upper_kib: u32,
    cmdline: Vec<u8>,
    /// (start, end, string) of the one module.
    module: Option<(u64, u64, Vec<u8>)>,
    mmap: Vec<MemoryMapEntry>,
}

impl InfoBuilder {
    fn write<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        layout: &MultibootLayout,
    ) -> Result<(), BootError> {
        let put = |what: &'static str, addr: u64, bytes: &[u8]| {
            mem.write_slice(bytes, GuestAddress(addr))
                .map_err(|source| BootError::WriteMemory { what, addr, source })
        };
        let base = layout.info;
        // Placed below 4 GiB.
        let addr32 = |offset: u64| (base + offset) as u32;
        // Memory may hold an earlier boot's data.
        put(
            "Multiboot information",
            base,
            &[0u8; MULTIBOOT_INFO_AREA_SIZE as usize],
        )?;

        let mut info = [0u8; MULTIBOOT_INFO_SIZE as usize];
        let mut set = |at: usize, v: u32| info[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let mut flags = MULTIBOOT_INFO_MEMORY
            | MULTIBOOT_INFO_CMDLINE
            | MULTIBOOT_INFO_MODS
            | MULTIBOOT_INFO_MEM_MAP
            | MULTIBOOT_INFO_BOOT_LOADER_NAME;
        set(4, self.mem_lower_kib);
        set(8, self.mem_upper_kib);

        let mut cmdline = self.cmdline.clone();
        cmdline.push(0);
        put("Multiboot command line", layout.cmdline, &cmdline)?;
        set(16, layout.cmdline as u32);

        if let Some((start, end, string)) = &self.module {
            let mut s = string.clone();
            s.push(0);
            put(
                "Multiboot module string",
                base + MULTIBOOT_MODULE_STRING_OFFSET,
                &s,
            )?;
            let mut m = [0u8; 16];
            // Below 3 GiB (placed in low RAM).
            m[0..4].copy_from_slice(&(*start as u32).to_le_bytes());
            m[4..8].copy_from_slice(&(*end as u32).to_le_bytes());
            m[8..12].copy_from_slice(&addr32(MULTIBOOT_MODULE_STRING_OFFSET).to_le_bytes());
            put("Multiboot module list", base + MULTIBOOT_MODS_OFFSET, &m)?;
            set(20, 1);
        }
        set(24, addr32(MULTIBOOT_MODS_OFFSET));

        let mut mmap = Vec::with_capacity(self.mmap.len() * MULTIBOOT_MMAP_ENTRY_SIZE as usize);
        for e in &self.mmap {
            mmap.extend_from_slice(&20u32.to_le_bytes());
            mmap.extend_from_slice(&e.addr.to_le_bytes());
            mmap.extend_from_slice(&e.len.to_le_bytes());
            mmap.extend_from_slice(&e.kind.to_le_bytes());
        }
        put("Multiboot memory map", base + MULTIBOOT_MMAP_OFFSET, &mmap)?;
        set(44, mmap.len() as u32);
        set(48, addr32(MULTIBOOT_MMAP_OFFSET));

        let mut name = BOOT_LOADER_NAME.as_bytes().to_vec();
        name.push(0);
        put(
            "boot loader name",
            base + MULTIBOOT_LOADER_NAME_OFFSET,
            &name,
        )?;
        set(64, addr32(MULTIBOOT_LOADER_NAME_OFFSET));

        if self.mmap.is_empty() {
            flags &= !MULTIBOOT_INFO_MEM_MAP;
        }
        set(0, flags);
        put("Multiboot information", base, &info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf_builder::multiboot_header;

    fn at(offset: usize, header: &[u8], len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        v[offset..offset + header.len()].copy_from_slice(header);
        v
    }

    #[test]
    fn finds_aligned_headers_in_the_first_8k() {
        let h = multiboot_header(0x3, None);
        let found = find_header(&at(0x1000, &h, 0x3000)).unwrap().unwrap();
        assert_eq!(
            found,
            MultibootHeader {
                offset: 0x1000,
                flags: 0x3,
                addresses: None
            }
        );
        // The last aligned place that holds the whole header.
        assert!(find_header(&at(8192 - 12, &h, 0x3000)).unwrap().is_some());
        // Unaligned or beyond 8 KiB: not a header.
        assert!(find_header(&at(0x1002, &h, 0x3000)).unwrap().is_none());
        assert!(find_header(&at(8192, &h, 0x3000)).unwrap().is_none());
        assert!(find_header(&[]).unwrap().is_none());
        assert!(find_header(&[0x02, 0xb0, 0xad]).unwrap().is_none());
    }

    #[test]
    fn bad_and_cut_off_headers_are_errors() {
        let mut h = multiboot_header(0x3, None);
        h[8] ^= 1;
        assert!(matches!(
            find_header(&at(0x40, &h, 0x1000)),
            Err(MultibootError::BadChecksum {
                offset: 0x40,
                flags: 3,
                ..
            })
        ));
        // A valid header after a bad one wins.
        let mut v = at(0x40, &h, 0x1000);
        let good = multiboot_header(0x2, None);
        v[0x80..0x8c].copy_from_slice(&good);
        assert_eq!(find_header(&v).unwrap().unwrap().offset, 0x80);
        // Magic at the very end of the file.
        let magic = MULTIBOOT_HEADER_MAGIC.to_le_bytes();
        assert!(matches!(
            find_header(&at(0x10, &magic, 0x14)),
            Err(MultibootError::HeaderTruncated { offset: 0x10 })
        ));
        // Address fields past 8 KiB.
        let addrs = MultibootAddresses {
            header_addr: 0x10_0000,
            load_addr: 0x10_0000,
            load_end_addr: 0,
            bss_end_addr: 0,
            entry_addr: 0x10_0000,
        };
        let k = multiboot_header(0, Some(addrs));
        assert!(matches!(
            find_header(&at(8192 - 12, &k[..12], 0x3000)),
            Err(MultibootError::HeaderTruncated { .. })
        ));
        let found = find_header(&at(8192 - 32, &k, 0x3000)).unwrap().unwrap();
        assert_eq!(found.addresses, Some(addrs));
    }

    #[test]
    fn module_strings_are_printable() {
        use std::path::Path;
        assert_eq!(module_string(Path::new("/tmp/x/initrd.img")), b"initrd.img");
        assert_eq!(module_string(Path::new("a\tb")), b"a_b");
        assert_eq!(
            module_string(Path::new(&"n".repeat(400))).len() as u64,
            MULTIBOOT_MODULE_STRING_MAX - 1
        );
    }
}
