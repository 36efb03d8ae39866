//! Loading a kernel and preparing the boot vCPU's entry state.
//!
//! Two boot paths, chosen by [`BootProtocol`]:
//!
//! - **Linux**, through the 64-bit boot protocol: a bzImage (loaded at
//!   [`KERNEL_LOAD_ADDR`](crate::layout::KERNEL_LOAD_ADDR), entered at load + 0x200) or an ELF `vmlinux`
//!   (segments at `p_paddr`, entered at `e_entry`, which is physical on
//!   x86-64), both loaded with linux-loader. The zero page at
//!   [`ZERO_PAGE_ADDR`] holds `boot_params`
//!   (setup header, command line, initrd, e820 map), RSI points to it and RSP
//!   is [`BOOT_STACK_TOP`](crate::layout::BOOT_STACK_TOP).
//! - **Bare**: a small ELF64 x86-64 kernel whose `PT_LOAD` segments are
//!   loaded at `p_paddr` (at or above
//!   [`BARE_RESERVED_END`](crate::layout::BARE_RESERVED_END)) and which is
//!   entered at `e_entry` in long mode with RDI = RSI = 0 and RSP =
//!   [`BARE_STACK_TOP`](crate::layout::BARE_STACK_TOP). The command line is
//!   not used; an initrd is an error.
//!
//! - **PVH**: an ELF kernel with a `XEN_ELFNOTE_PHYS32_ENTRY` note (Linux
//!   built with `CONFIG_PVH`), loaded at `p_paddr` and entered at the
//!   note's address in 32-bit protected mode with EBX = an `hvm_start_info`
//!   (see [`pvh`]).
//! - **Multiboot** (v1): a kernel with a Multiboot header, loaded through
//!   its address fields or as an ELF32/ELF64 file, entered in 32-bit
//!   protected mode with EAX = 0x2BADB002 and EBX = the Multiboot
//!   information (see [`multiboot`]).
//!
//! Linux and bare kernels run in the long-mode state of [`crate::mode`]: the
//! low 4 GiB identity-mapped, the flat boot GDT (CS = 0x10, data = 0x18),
//! interrupts off.
//!
//! [`BootProtocol::Auto`] boots a bzImage as Linux; then a file with a valid
//! Multiboot header in its first 8 KiB as Multiboot (a header magic with a
//! wrong checksum is an error); then an ELF with a "Linux" or "Xen" note as
//! PVH when it also has a PVH entry note (as Firecracker and Cloud
//! Hypervisor do), else as Linux, and any other ELF as bare; anything else is
//! [`BootError::NotAKernel`].
//!
//! The ACPI tables ([`crate::acpi`]) are written separately; after
//! [`load_kernel`], [`set_acpi_rsdp`] tells a Linux kernel where the RSDP is
//! (other kernels find it by scanning the BIOS area).

mod bare;
pub mod bios_handoff;
mod linux;
pub mod multiboot;
pub mod multiboot_layout;
pub mod pvh;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hv::{Regs, SRegs};
use linux_loader::cmdline::Cmdline;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::bzimage::{self, BzImageError};
use crate::elf::{self, ElfError, ElfKernel};
use crate::layout::{self, PAGE_SIZE, ZERO_PAGE_ADDR};
use crate::mode;
use multiboot::MultibootError;

pub use linux::{e820_table, E820Entry, E820_RAM, E820_RESERVED};

/// How to boot the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootProtocol {
    /// By the image: bzImage → Linux; valid Multiboot header → Multiboot; ELF
    /// with a Linux/Xen note → Linux; other ELF → bare.
    #[default]
    Auto,
    /// Linux's 64-bit boot protocol (bzImage or vmlinux).
    Linux,
    /// A bare ELF kernel entered in long mode.
    Bare,
    /// A Multiboot (v1) kernel entered in 32-bit protected mode.
    Multiboot,
    /// An ELF kernel entered at its PVH entry note in 32-bit protected mode.
    Pvh,
}

impl BootProtocol {
    /// The name on the command line: `auto`, `linux`, `bare`, `multiboot`,
    /// `pvh`.
    pub fn name(self) -> &'static str {
        match self {
            BootProtocol::Auto => "auto",
            BootProtocol::Linux => "linux",
            BootProtocol::Bare => "bare",
            BootProtocol::Multiboot => "multiboot",
            BootProtocol::Pvh => "pvh",
        }
    }
}

impl fmt::Display for BootProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A boot protocol name that is not `auto`, `linux`, `bare`, `multiboot` or
/// `pvh`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown boot protocol {0:?} (expected auto, linux, bare, multiboot or pvh)")]
pub struct UnknownBootProtocol(pub String);

impl FromStr for BootProtocol {
    type Err = UnknownBootProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(BootProtocol::Auto),
            "linux" => Ok(BootProtocol::Linux),
            "bare" => Ok(BootProtocol::Bare),
            "multiboot" => Ok(BootProtocol::Multiboot),
            "pvh" => Ok(BootProtocol::Pvh),
            other => Err(UnknownBootProtocol(other.to_string())),
        }
    }
}

/// What to boot.
#[derive(Debug, Clone, Copy)]
pub struct BootConfig<'a> {
    /// bzImage, vmlinux, bare ELF or Multiboot kernel.
    pub kernel: &'a Path,
    /// Linux: the initrd; Multiboot: module 0. An error for bare kernels.
    pub initrd: Option<&'a Path>,
    /// Linux and Multiboot: printable ASCII, at most the kernel's limit (and
    /// 64 KiB). Ignored for bare kernels.
    pub cmdline: &'a str,
    pub protocol: BootProtocol,
}

/// Which boot path was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootKind {
    /// Linux from a bzImage.
    LinuxBzImage,
    /// Linux from an ELF vmlinux.
    LinuxElf,
    /// A bare ELF kernel.
    Bare,
    /// A Multiboot kernel (32-bit protected-mode entry; only the boot vCPU
    /// starts, the others wait for INIT/SIPI).
    Multiboot,
    /// An ELF kernel through its PVH entry (32-bit protected mode; only the
    /// boot vCPU starts).
    Pvh,
}

impl BootKind {
    pub fn is_linux(self) -> bool {
        matches!(self, BootKind::LinuxBzImage | BootKind::LinuxElf)
    }
}

/// The loaded kernel and the state the VMM gives the boot vCPU (also the
/// MSRs of [`crate::msr::boot_msrs`] and the CPUID of [`crate::cpuid`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootInfo {
    pub kind: BootKind,
    /// The kernel's entry point: RIP at entry, but for a Multiboot kernel,
    /// which the boot vCPU enters through the firmware stub
    /// ([`bios_handoff`]) that jumps there.
    pub entry: u64,
    /// General registers of the boot vCPU (RIP = `entry`).
    pub regs: Regs,
    /// Segment/control registers of the boot vCPU.
    pub sregs: SRegs,
    /// Guest-physical memory the kernel occupies (for a bzImage, the whole
    /// footprint it decompresses into).
    pub kernel: Range<u64>,
    /// Where the initrd was placed.
    pub initrd: Option<Range<u64>>,
}

/// Why a kernel could not be booted.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open the {what} {}", path.display())]
    Open {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the {what} {}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the kernel image {} is empty", path.display())]
    EmptyKernel { path: PathBuf },
    #[error("{}: not a bzImage, Multiboot or ELF kernel", path.display())]
    NotAKernel { path: PathBuf },
    #[error("{}: bad Multiboot kernel", path.display())]
    Multiboot {
        path: PathBuf,
        #[source]
        source: MultibootError,
    },
    #[error("{}: bad ELF kernel", path.display())]
    Elf {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("{}: bad bzImage", path.display())]
    BzImage {
        path: PathBuf,
        #[source]
        source: BzImageError,
    },
    #[error("{}: a bzImage can only be booted with the Linux boot protocol", path.display())]
    BzImageNeedsLinux { path: PathBuf },
    #[error("{}: no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): the PVH boot needs an uncompressed vmlinux built with CONFIG_PVH", path.display())]
    NoPvhEntry { path: PathBuf },
    #[error("the kernel's PVH note says entry {ours:#x}, linux-loader read {loader}")]
    PvhNoteMismatch { ours: u64, loader: String },
    #[error("an initrd can only be used with the Linux or Multiboot boot protocol")]
    InitrdNeedsLinux,
    #[error(
        "guest RAM below the MMIO hole ends at {ram_end:#x}; the boot needs at least {needed:#x}"
    )]
    RamTooSmall { ram_end: u64, needed: u64 },
    #[error("the kernel needs guest memory up to {end:#x}, but RAM below the MMIO hole ends at {ram_end:#x}")]
    KernelTooBig { end: u64, ram_end: u64 },
    #[error("kernel segment {index} ({start:#x}..{end:#x}) overlaps the boot area below {reserved_end:#x}")]
    SegmentInBootArea {
        index: usize,
        start: u64,
        end: u64,
        reserved_end: u64,
    },
    #[error("the initrd {} is empty", path.display())]
    EmptyInitrd { path: PathBuf },
    #[error("the {size}-byte initrd does not fit between the kernel's end {kernel_end:#x} and {limit:#x}")]
    InitrdTooBig {
        size: u64,
        kernel_end: u64,
        limit: u64,
    },
    #[error("the command line is {len} bytes long, more than the {max} allowed")]
    CmdlineTooLong { len: u64, max: u64 },
    #[error("the command line has a byte that is not printable ASCII at offset {position}")]
    CmdlineNotPrintable { position: usize },
    #[error("invalid command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    #[error("too many e820 entries ({count}) for the zero page")]
    TooManyE820Entries { count: usize },
    #[error("cannot write the long-mode boot structures")]
    LongMode(#[source] mode::Error),
    #[error("cannot write the protected-mode boot structures")]
    ProtectedMode(#[source] mode::Error),
    #[error("cannot load the kernel into guest memory")]
    LoadKernel(#[source] linux_loader::loader::Error),
    #[error("cannot load the command line into guest memory")]
    LoadCmdline(#[source] linux_loader::loader::Error),
    #[error("cannot write the zero page")]
    BootParams(#[source] linux_loader::configurator::Error),
    #[error("cannot write the {what} to guest memory at {addr:#x}")]
    WriteMemory {
        what: &'static str,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// An open image file.
struct Image {
    path: PathBuf,
    file: File,
    len: u64,
}

impl Image {
    fn open(what: &'static str, path: &Path) -> Result<Image, BootError> {
        let file = File::open(path).map_err(|source| BootError::Open {
            what,
            path: path.to_path_buf(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| BootError::Read {
                what,
                path: path.to_path_buf(),
                source,
            })?
            .len();
        Ok(Image {
            path: path.to_path_buf(),
            file,
            len,
        })
    }

    fn read_error(&self, what: &'static str) -> impl FnOnce(io::Error) -> BootError + '_ {
        move |source| BootError::Read {
            what,
            path: self.path.clone(),
            source,
        }
    }
}

/// Everything a boot path needs.
struct BootContext<'a, M> {
    mem: &'a M,
    cfg: &'a BootConfig<'a>,
    /// RAM regions `(start, size)` of `mem`.
    regions: Vec<(u64, u64)>,
    /// End of the RAM from 0 below the MMIO hole.
    ram_end: u64,
    kernel: Image,
}

/// Loads the kernel (and initrd, command line and boot structures) of `cfg`
/// into `mem` and returns the boot vCPU's entry state. Nothing is started;
/// on error, guest memory may be partly written.
pub fn load_kernel<M: GuestMemoryBackend>(
    mem: &M,
    cfg: &BootConfig<'_>,
) -> Result<BootInfo, BootError> {
    let mut kernel = Image::open("kernel", cfg.kernel)?;
    if kernel.len == 0 {
        return Err(BootError::EmptyKernel {
            path: kernel.path.clone(),
        });
    }
    // Enough for the bzImage magic and a Multiboot header search.
    let head_len = (bzimage::HDRS_OFFSET + 4).max(multiboot::MULTIBOOT_SEARCH_LEN);
    let mut head = Vec::with_capacity(head_len);
    (&mut kernel.file)
        .take(head_len as u64)
        .read_to_end(&mut head)
        .map_err(kernel.read_error("kernel"))?;

    let regions: Vec<(u64, u64)> = mem
        .iter()
        .map(|r| (r.start_addr().raw_value(), r.len()))
        .collect();
    let ram_end = layout::low_ram_end(&regions);
    let is_bzimage = bzimage::is_bzimage(&head);
    let is_elf = elf::is_elf(&head);
    let multiboot_header = match cfg.protocol {
        BootProtocol::Multiboot => Some(
            multiboot::find_header(&head)
                .and_then(|h| h.ok_or(MultibootError::NoHeader))
                .map_err(|source| BootError::Multiboot {
                    path: kernel.path.clone(),
                    source,
                })?,
        ),
        BootProtocol::Auto if !is_bzimage => {
            multiboot::find_header(&head).map_err(|source| BootError::Multiboot {
                path: kernel.path.clone(),
                source,
            })?
        }
        _ => None,
    };
    let mut ctx = BootContext {
        mem,
        cfg,
        regions,
        ram_end,
        kernel,
    };

    if let Some(header) = multiboot_header {
        multiboot::boot(&mut ctx, &header)
    } else if is_elf {
        let parsed = elf::parse(&mut ctx.kernel.file).map_err(|source| BootError::Elf {
            path: ctx.kernel.path.clone(),
            source,
        })?;
        let pvh = match (cfg.protocol, parsed.pvh_entry) {
            (BootProtocol::Pvh, None) => {
                return Err(BootError::NoPvhEntry {
                    path: ctx.kernel.path,
                })
            }
            (BootProtocol::Pvh | BootProtocol::Auto, entry) => entry,
            _ => None,
        };
        let linux = match cfg.protocol {
            BootProtocol::Auto => parsed.is_linux(),
            BootProtocol::Linux => true,
            // Multiboot always has a header here; PVH is chosen above.
            BootProtocol::Bare | BootProtocol::Multiboot | BootProtocol::Pvh => false,
        };
        if let Some(entry) = pvh {
            pvh::boot(&mut ctx, &parsed, entry)
        } else if linux {
            linux::boot_vmlinux(&mut ctx, &parsed)
        } else {
            bare::boot(&mut ctx, &parsed)
        }
    } else if is_bzimage {
        match cfg.protocol {
            BootProtocol::Bare => {
                return Err(BootError::BzImageNeedsLinux {
                    path: ctx.kernel.path,
                })
            }
            BootProtocol::Pvh => {
                return Err(BootError::NoPvhEntry {
                    path: ctx.kernel.path,
                })
            }
            _ => {}
        }
        linux::boot_bzimage(&mut ctx)
    } else {
        Err(BootError::NotAKernel {
            path: ctx.kernel.path,
        })
    }
}

/// Tells a Linux or PVH kernel loaded by [`load_kernel`] where the ACPI
/// RSDP is: writes `boot_params.acpi_rsdp_addr` in the zero page, or
/// `hvm_start_info.rsdp_paddr`. Other kernels have no such field (they scan
/// the BIOS area, where [`crate::acpi::create_acpi_tables`] puts the RSDP),
/// so for them this does nothing. Call it after [`load_kernel`], which
/// writes the zero page or the start info.
pub fn set_acpi_rsdp<M: GuestMemoryBackend>(
    mem: &M,
    boot: &BootInfo,
    rsdp_addr: u64,
) -> Result<(), BootError> {
    let (what, addr) = match boot.kind {
        BootKind::LinuxBzImage | BootKind::LinuxElf => (
            "boot_params.acpi_rsdp_addr",
            ZERO_PAGE_ADDR
                + std::mem::offset_of!(linux_loader::loader::bootparam::boot_params, acpi_rsdp_addr)
                    as u64,
        ),
        BootKind::Pvh => (
            "hvm_start_info.rsdp_paddr",
            pvh::START_INFO_ADDR + pvh::RSDP_PADDR_OFFSET,
        ),
        BootKind::Bare | BootKind::Multiboot => return Ok(()),
    };
    mem.write_obj(rsdp_addr, GuestAddress(addr))
        .map_err(|source| BootError::WriteMemory { what, addr, source })
}

/// Where an initrd of `size` bytes goes: the highest page-aligned address
/// with the whole initrd below `limit_end` (exclusive) and at or above
/// `kernel_end` (rounded up to a page). `None` if it does not fit.
pub fn place_initrd(size: u64, kernel_end: u64, limit_end: u64) -> Option<u64> {
    let start = limit_end.checked_sub(size)? & !(PAGE_SIZE - 1);
    let min = kernel_end.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
    (size > 0 && start >= min).then_some(start)
}

/// Checks the ELF's segments lie in `[reserved_end, ram_end)`.
fn check_segments(elf: &ElfKernel, reserved_end: u64, ram_end: u64) -> Result<(), BootError> {
    for seg in &elf.segments {
        if seg.paddr < reserved_end {
            return Err(BootError::SegmentInBootArea {
                index: seg.index,
                start: seg.paddr,
                end: seg.end(),
                reserved_end,
            });
        }
        if seg.end() > ram_end {
            return Err(BootError::KernelTooBig {
                end: seg.end(),
                ram_end,
            });
        }
    }
    Ok(())
}

/// Loads the ELF's segments at their physical addresses (the file bytes,
/// then zeros up to the memory size).
fn load_segments<M: GuestMemoryBackend>(
    ctx: &mut BootContext<'_, M>,
    elf: &ElfKernel,
) -> Result<(), BootError> {
    use std::io::{Seek, SeekFrom};
    for seg in &elf.segments {
        ctx.kernel
            .file
            .seek(SeekFrom::Start(seg.offset))
            .map_err(ctx.kernel.read_error("kernel"))?;
        // Checked to lie in low RAM (below 4 GiB), so it fits in a usize.
        let filesz = seg.filesz as usize;
        ctx.mem
            .read_exact_volatile_from(GuestAddress(seg.paddr), &mut ctx.kernel.file, filesz)
            .map_err(|source| BootError::WriteMemory {
                what: "kernel segment",
                addr: seg.paddr,
                source,
            })?;
        zero_bss(ctx.mem, seg.paddr + seg.filesz, seg.memsz - seg.filesz)?;
    }
    Ok(())
}

/// Zeroes `len` bytes at `addr` (a segment's .bss; memory may hold an earlier
/// boot's data).
fn zero_bss<M: GuestMemoryBackend>(mem: &M, addr: u64, len: u64) -> Result<(), BootError> {
    const CHUNK: usize = 64 * 1024;
    static ZEROS: [u8; CHUNK] = [0; CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK as u64) as usize;
        mem.write_slice(&ZEROS[..n], GuestAddress(addr + done))
            .map_err(|source| BootError::WriteMemory {
                what: "kernel .bss",
                addr: addr + done,
                source,
            })?;
        done += n as u64;
    }
    Ok(())
}

/// The minimum low RAM each path needs before anything is written.
fn require_ram(ram_end: u64, needed: u64) -> Result<(), BootError> {
    if ram_end < needed {
        return Err(BootError::RamTooSmall { ram_end, needed });
    }
    Ok(())
}

/// Validates and builds the command line; `max_len` excludes the NUL.
fn build_cmdline(cmdline: &str, max_len: u64) -> Result<Cmdline, BootError> {
    if let Some(position) = cmdline.bytes().position(|b| !(b' '..=b'~').contains(&b)) {
        return Err(BootError::CmdlineNotPrintable { position });
    }
    let len = cmdline.trim().len() as u64;
    if len > max_len {
        return Err(BootError::CmdlineTooLong { len, max: max_len });
    }
    // `max_len` is at most CMDLINE_MAX_SIZE - 1, so this cannot overflow.
    let built = Cmdline::try_from(cmdline, max_len as usize + 1).map_err(BootError::Cmdline)?;
    // Refuse what linux-loader would refuse when writing it.
    built.as_cstring().map_err(BootError::Cmdline)?;
    Ok(built)
}
