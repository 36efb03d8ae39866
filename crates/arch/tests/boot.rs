//! End-to-end tests of `arch::boot::load_kernel` on real guest memory with
//! synthetic kernels written to temporary files.

use std::path::{Path, PathBuf};

use arch::boot::pvh;
use arch::boot::{load_kernel, BootConfig, BootError, BootInfo, BootKind, BootProtocol};
use arch::bzimage::BzImageError;
use arch::elf::ElfError;
use arch::elf_builder::{build_elf64, ElfBuilder};
use arch::layout::{
    ram_regions, BARE_STACK_TOP, BOOT_STACK_TOP, CMDLINE_ADDR, EBDA_START, HIMEM_START,
    MMIO_HOLE_END, MMIO_HOLE_START, PAGE_SIZE, PML4_ADDR, ZERO_PAGE_ADDR,
};
use linux_loader::loader::bootparam::{
    boot_params, setup_header, CAN_USE_HEAP, LOADED_HIGH, XLF_KERNEL_64,
};
use linux_loader::loader::elf::start_info::hvm_start_info;
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

const MIB: u64 = 1 << 20;

fn memory(size: u64) -> GuestMemoryMmap {
    let ranges: Vec<_> = ram_regions(size)
        .into_iter()
        .map(|(a, s)| (GuestAddress(a), s as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).unwrap()
}

/// A directory of test files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("ferrovisor-arch-{}-{}", std::process::id(), test));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config<'a>(kernel: &'a Path, initrd: Option<&'a Path>, cmdline: &'a str) -> BootConfig<'a> {
    BootConfig {
        kernel,
        initrd,
        cmdline,
        protocol: BootProtocol::Auto,
    }
}

/// The protected-mode payload of the synthetic bzImage.
fn payload() -> Vec<u8> {
    (0..0x3000u32).map(|i| (i * 7 + 1) as u8).collect()
}

/// A minimal bzImage linux-loader accepts: one setup sector after the boot
/// sector, then the payload.
fn bzimage(edit: impl FnOnce(&mut setup_header)) -> Vec<u8> {
    let mut h = setup_header {
        setup_sects: 1,
        boot_flag: 0xaa55,
        header: 0x5372_6448,
        version: 0x020f,
        loadflags: LOADED_HIGH,
        code32_start: 0x10_0000,
        initrd_addr_max: 0x7fff_ffff,
        kernel_alignment: 0x20_0000,
        relocatable_kernel: 1,
        xloadflags: XLF_KERNEL_64,
        cmdline_size: 2047,
        pref_address: 0x10_0000,
        init_size: 0x1_0000,
        vid_mode: 0xffff,
        ..Default::default()
    };
    edit(&mut h);
    let mut image = vec![0u8; 1024];
    image[0x1f1..0x1f1 + h.as_slice().len()].copy_from_slice(h.as_slice());
    image.extend_from_slice(&payload());
    image
}

fn read_params(mem: &GuestMemoryMmap) -> boot_params {
    mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap()
}

fn read_bytes(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

fn e820(params: &boot_params) -> Vec<(u64, u64, u32)> {
    let count = params.e820_entries as usize;
    let table = params.e820_table;
    table[..count]
        .iter()
        .map(|e| (e.addr, e.size, e.r#type))
        .collect()
}

fn assert_long_mode(info: &BootInfo) {
    assert_eq!(info.sregs.cr3, PML4_ADDR);
    assert_eq!(info.sregs.cs.selector, 0x10);
    assert_eq!(info.regs.rflags, 2);
    assert_eq!(info.regs.rip, info.entry);
}

#[test]
fn bzimage_boot_fills_the_zero_page() {
    let dir = TempDir::new("bzimage");
    let kernel = dir.file("bzImage", &bzimage(|_| {}));
    let initrd_bytes: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let initrd = dir.file("initrd", &initrd_bytes);
    let mem = memory(64 * MIB);
    let cmdline = "console=ttyS0 root=/dev/vda  -- init_arg";
    let info = load_kernel(&mem, &config(&kernel, Some(&initrd), cmdline)).unwrap();

    assert_eq!(info.kind, BootKind::LinuxBzImage);
    assert_eq!(info.entry, HIMEM_START + 0x200);
    assert_eq!(info.regs.rsi, ZERO_PAGE_ADDR);
    assert_eq!(info.regs.rsp, BOOT_STACK_TOP);
    assert_long_mode(&info);
    assert_eq!(read_bytes(&mem, HIMEM_START, 0x3000), payload());
    assert_eq!(info.kernel, HIMEM_START..HIMEM_START + 0x1_0000);

    let p = read_params(&mem);
    let hdr = p.hdr;
    assert_eq!({ hdr.header }, 0x5372_6448);
    assert_eq!({ hdr.version }, 0x020f);
    assert_eq!(hdr.type_of_loader, 0xff);
    assert_eq!(
        hdr.loadflags & (LOADED_HIGH | CAN_USE_HEAP),
        LOADED_HIGH | CAN_USE_HEAP
    );
    assert_eq!({ hdr.code32_start }, 0x10_0000);
    assert_eq!(
        { hdr.vid_mode },
        0xffff,
        "setup header copied from the image"
    );
    assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
    let written = read_bytes(&mem, CMDLINE_ADDR, { hdr.cmdline_size } as usize);
    assert_eq!(written, b"console=ttyS0 root=/dev/vda -- init_arg\0");

    // Initrd: page aligned, inside low RAM, above the kernel, contents intact.
    let (start, size) = ({ hdr.ramdisk_image } as u64, { hdr.ramdisk_size } as u64);
    assert_eq!(size, initrd_bytes.len() as u64);
    assert_eq!(start % PAGE_SIZE, 0);
    assert!(start >= info.kernel.end);
    assert!(start + size <= 64 * MIB);
    assert!(
        64 * MIB - (start + size) < PAGE_SIZE,
        "placed as high as possible"
    );
    assert_eq!(info.initrd, Some(start..start + size));
    assert_eq!(read_bytes(&mem, start, initrd_bytes.len()), initrd_bytes);

    assert_eq!(
        e820(&p),
        vec![
            (0, EBDA_START, 1),
            (EBDA_START, HIMEM_START - EBDA_START, 2),
            (HIMEM_START, 63 * MIB, 1),
        ]
    );
}

#[test]
fn e820_covers_ram_above_4g() {
    let dir = TempDir::new("e820-high");
    let kernel = dir.file("bzImage", &bzimage(|_| {}));
    let mem = memory(MMIO_HOLE_START + 64 * MIB);
    load_kernel(&mem, &config(&kernel, None, "")).unwrap();
    let p = read_params(&mem);
    assert_eq!(
        e820(&p),
        vec![
            (0, EBDA_START, 1),
            (EBDA_START, HIMEM_START - EBDA_START, 2),
            (HIMEM_START, MMIO_HOLE_START - HIMEM_START, 1),
            (MMIO_HOLE_END, 64 * MIB, 1),
        ]
    );
    // An empty command line is a lone NUL.
    assert_eq!({ p.hdr.cmdline_size }, 1);
    assert_eq!(read_bytes(&mem, CMDLINE_ADDR, 1), [0]);
}

#[test]
fn initrd_stays_below_initrd_addr_max() {
    let dir = TempDir::new("initrd-max");
    let initrd = dir.file("initrd", &[0x5a; 3 * 4096 + 5]);
    let mem = memory(1 << 30);
    for (max, limit) in [(0x0fff_ffffu32, 0x1000_0000u64), (0, 0x3800_0000)] {
        let kernel = dir.file("bzImage", &bzimage(|h| h.initrd_addr_max = max));
        let info = load_kernel(&mem, &config(&kernel, Some(&initrd), "")).unwrap();
        let r = info.initrd.unwrap();
        assert_eq!(r.start % PAGE_SIZE, 0);
        assert!(r.end <= limit, "{r:x?} above {limit:#x}");
        assert!(limit - r.end < PAGE_SIZE);
    }
}

#[test]
fn initrd_errors() {
    let dir = TempDir::new("initrd-errors");
    let kernel = dir.file("bzImage", &bzimage(|_| {}));
    let mem = memory(16 * MIB);

    // Bigger than the RAM left above the kernel.
    let big = dir.file("big", &vec![1u8; (15 * MIB) as usize]);
    let err = load_kernel(&mem, &config(&kernel, Some(&big), "")).unwrap_err();
    assert!(
        matches!(err, BootError::InitrdTooBig { size, .. } if size == 15 * MIB),
        "{err:?}"
    );

    let empty = dir.file("empty", b"");
    let err = load_kernel(&mem, &config(&kernel, Some(&empty), "")).unwrap_err();
    assert!(matches!(err, BootError::EmptyInitrd { .. }), "{err:?}");

    let missing = dir.0.join("missing");
    let err = load_kernel(&mem, &config(&kernel, Some(&missing), "")).unwrap_err();
    assert!(
        matches!(err, BootError::Open { what: "initrd", .. }),
        "{err:?}"
    );
}

#[test]
fn cmdline_errors() {
    let dir = TempDir::new("cmdline");
    let mem = memory(32 * MIB);
    let kernel = dir.file("bzImage", &bzimage(|h| h.cmdline_size = 16));
    let ok = "0123456789abcdef";
    load_kernel(&mem, &config(&kernel, None, ok)).unwrap();
    let err = load_kernel(&mem, &config(&kernel, None, "0123456789abcdefg")).unwrap_err();
    assert!(
        matches!(err, BootError::CmdlineTooLong { len: 17, max: 16 }),
        "{err:?}"
    );
    let err = load_kernel(&mem, &config(&kernel, None, "a\tb")).unwrap_err();
    assert!(
        matches!(err, BootError::CmdlineNotPrintable { position: 1 }),
        "{err:?}"
    );
    let err = load_kernel(&mem, &config(&kernel, None, " -- only_init")).unwrap_err();
    assert!(matches!(err, BootError::Cmdline(_)), "{err:?}");

    // A vmlinux has no header limit: 64 KiB including the NUL.
    let vmlinux = dir.file("vmlinux", &vmlinux_elf());
    let long = "x".repeat(0xffff);
    load_kernel(&mem, &config(&vmlinux, None, &long)).unwrap();
    let longer = "x".repeat(0x1_0000);
    let err = load_kernel(&mem, &config(&vmlinux, None, &longer)).unwrap_err();
    assert!(
        matches!(
            err,
            BootError::CmdlineTooLong {
                len: 0x1_0000,
                max: 0xffff
            }
        ),
        "{err:?}"
    );
}

#[test]
fn bzimage_errors() {
    let dir = TempDir::new("bzimage-errors");
    let mem = memory(16 * MIB);
    // Needs 0x1000000 + 32 MiB while decompressing.
    let huge = dir.file(
        "huge",
        &bzimage(|h| {
            h.pref_address = 0x100_0000;
            h.init_size = 32 << 20;
        }),
    );
    let err = load_kernel(&mem, &config(&huge, None, "")).unwrap_err();
    assert!(
        matches!(err, BootError::KernelTooBig { end, ram_end } if end == 48 * MIB && ram_end == 16 * MIB),
        "{err:?}"
    );
    let old = dir.file("old", &bzimage(|h| h.xloadflags = 0));
    let err = load_kernel(&mem, &config(&old, None, "")).unwrap_err();
    assert!(
        matches!(
            err,
            BootError::BzImage {
                source: BzImageError::Not64Bit,
                ..
            }
        ),
        "{err:?}"
    );
    let image = bzimage(|_| {});
    let bare = dir.file("bz", &image);
    let err = load_kernel(
        &mem,
        &BootConfig {
            protocol: BootProtocol::Bare,
            ..config(&bare, None, "")
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, BootError::BzImageNeedsLinux { .. }),
        "{err:?}"
    );
    // The payload cut off right after the setup sectors.
    let cut = dir.file("cut", &image[..1024]);
    let err = load_kernel(&mem, &config(&cut, None, "")).unwrap_err();
    assert!(
        matches!(
            err,
            BootError::BzImage {
                source: BzImageError::NoKernel { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

/// hlt at 1 MiB, 16 bytes of data and 8 KiB of .bss at 2 MiB.
fn bare_elf() -> Vec<u8> {
    ElfBuilder::new(0x10_0000)
        .segment(0x10_0000, &[0xf4])
        .segment_with_memsz(0x20_0000, &[0xab; 16], 0x2010)
        .build()
}

fn vmlinux_elf() -> Vec<u8> {
    ElfBuilder::new(0x100_0000)
        .segment_with_memsz(0x100_0000, &[0xf4; 64], 0x1000)
        .note("Xen", 18, &0x100_0040u32.to_le_bytes())
        .note("Linux", 6, b"6.1.0\0")
        .build()
}

#[test]
fn bare_elf_is_loaded_at_its_physical_addresses() {
    let dir = TempDir::new("bare");
    let kernel = dir.file("bare.elf", &bare_elf());
    let mem = memory(16 * MIB);
    // Stale data where .bss goes.
    mem.write_slice(&[0xee; 0x3000], GuestAddress(0x20_0000))
        .unwrap();
    let info = load_kernel(&mem, &config(&kernel, None, "ignored")).unwrap();
    assert_eq!(info.kind, BootKind::Bare);
    assert_eq!(info.entry, 0x10_0000);
    assert_long_mode(&info);
    assert_eq!(info.regs.rsp, BARE_STACK_TOP);
    assert_eq!((info.regs.rdi, info.regs.rsi), (0, 0));
    assert_eq!(info.kernel, 0x10_0000..0x20_2010);
    assert_eq!(info.initrd, None);
    assert_eq!(read_bytes(&mem, 0x10_0000, 1), [0xf4]);
    assert_eq!(read_bytes(&mem, 0x20_0000, 16), [0xab; 16]);
    assert!(read_bytes(&mem, 0x20_0010, 0x2000).iter().all(|&b| b == 0));
    assert_eq!(
        read_bytes(&mem, 0x20_2010, 1),
        [0xee],
        "beyond .bss untouched"
    );
    // The page tables are in place.
    assert_ne!(read_bytes(&mem, PML4_ADDR, 8), [0; 8]);
}

#[test]
fn bare_elf_errors() {
    let dir = TempDir::new("bare-errors");
    let mem = memory(16 * MIB);
    let load = |bytes: &[u8]| {
        let kernel = dir.file("k", bytes);
        load_kernel(&mem, &config(&kernel, None, ""))
    };
    // On top of the boot structures.
    let err = load(&build_elf64(&[(0x8000, &[0xf4])], 0x8000)).unwrap_err();
    assert!(
        matches!(err, BootError::SegmentInBootArea { start: 0x8000, .. }),
        "{err:?}"
    );
    // Beyond RAM.
    let err = load(&build_elf64(
        &[(15 * MIB, &[0; 2 * MIB as usize])],
        15 * MIB,
    ))
    .unwrap_err();
    assert!(
        matches!(err, BootError::KernelTooBig { end, .. } if end == 17 * MIB),
        "{err:?}"
    );
    // In the MMIO hole.
    let err = load(&build_elf64(&[(MMIO_HOLE_START, &[0xf4])], MMIO_HOLE_START)).unwrap_err();
    assert!(matches!(err, BootError::KernelTooBig { .. }), "{err:?}");
    // An initrd needs Linux.
    let kernel = dir.file("bare", &bare_elf());
    let initrd = dir.file("initrd", b"data");
    let err = load_kernel(&mem, &config(&kernel, Some(&initrd), "")).unwrap_err();
    assert!(matches!(err, BootError::InitrdNeedsLinux), "{err:?}");
    // Not enough RAM for the boot structures.
    let small = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x8_0000)]).unwrap();
    let err = load_kernel(&small, &config(&kernel, None, "")).unwrap_err();
    assert!(matches!(err, BootError::RamTooSmall { .. }), "{err:?}");
}

#[test]
fn kernel_file_errors() {
    let dir = TempDir::new("kernel-errors");
    let mem = memory(16 * MIB);
    let load = |path: &Path| load_kernel(&mem, &config(path, None, ""));

    let err = load(&dir.0.join("nope")).unwrap_err();
    assert!(
        matches!(err, BootError::Open { what: "kernel", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope"));

    let err = load(&dir.file("empty", b"")).unwrap_err();
    assert!(matches!(err, BootError::EmptyKernel { .. }), "{err:?}");

    let err = load(&dir.file("garbage", &[0x55; 5000])).unwrap_err();
    assert!(matches!(err, BootError::NotAKernel { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains("not a bzImage, Multiboot or ELF kernel"));
    let err = load(&dir.file("tiny", b"x")).unwrap_err();
    assert!(matches!(err, BootError::NotAKernel { .. }), "{err:?}");

    let mut elf32 = bare_elf();
    elf32[4] = 1;
    let err = load(&dir.file("elf32", &elf32)).unwrap_err();
    assert!(
        matches!(
            err,
            BootError::Elf {
                source: ElfError::Elf32,
                ..
            }
        ),
        "{err:?}"
    );

    let elf = bare_elf();
    for cut in [20, 63, 100, elf.len() - 1] {
        let err = load(&dir.file("cut", &elf[..cut])).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::Elf {
                    source: ElfError::TruncatedHeader { .. }
                        | ElfError::ProgramHeadersOutOfFile { .. }
                        | ElfError::SegmentOutOfFile { .. },
                    ..
                }
            ),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn vmlinux_boots_through_linux_loader() {
    let dir = TempDir::new("vmlinux");
    let kernel = dir.file("vmlinux", &vmlinux_elf());
    let initrd = dir.file("initrd", &[7u8; 100]);
    let mem = memory(64 * MIB);
    mem.write_slice(&[0xee; 0x1000], GuestAddress(0x100_0000))
        .unwrap();
    // It has a PVH note too: the 64-bit protocol is asked for.
    let cfg = BootConfig {
        protocol: BootProtocol::Linux,
        ..config(&kernel, Some(&initrd), "quiet")
    };
    let info = load_kernel(&mem, &cfg).unwrap();
    assert_eq!(info.kind, BootKind::LinuxElf);
    assert_eq!(info.entry, 0x100_0000);
    assert_eq!(info.regs.rsi, ZERO_PAGE_ADDR);
    assert_eq!(info.regs.rsp, BOOT_STACK_TOP);
    assert_long_mode(&info);
    assert_eq!(read_bytes(&mem, 0x100_0000, 64), [0xf4; 64]);
    assert!(read_bytes(&mem, 0x100_0040, 0x1000 - 64)
        .iter()
        .all(|&b| b == 0));

    let p = read_params(&mem);
    let hdr = p.hdr;
    assert_eq!({ hdr.header }, 0x5372_6448);
    assert_eq!({ hdr.boot_flag }, 0xaa55);
    assert_eq!(hdr.type_of_loader, 0xff);
    assert_eq!({ hdr.kernel_alignment }, 0x100_0000);
    assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
    assert_eq!(read_bytes(&mem, CMDLINE_ADDR, 6), b"quiet\0");
    let r = info.initrd.unwrap();
    assert_eq!(
        ({ hdr.ramdisk_image } as u64, { hdr.ramdisk_size } as u64),
        (r.start, 100)
    );
    assert!(r.start >= 0x100_1000 && r.end <= 64 * MIB);
    assert_eq!(e820(&p).len(), 3);
}

/// `hvm_start_info` as the guest reads it.
fn read_start_info(mem: &GuestMemoryMmap) -> hvm_start_info {
    let mut b = [0u8; std::mem::size_of::<hvm_start_info>()];
    mem.read_slice(&mut b, GuestAddress(pvh::START_INFO_ADDR))
        .unwrap();
    // SAFETY: hvm_start_info is plain old data of exactly this size.
    unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) }
}

#[test]
fn pvh_boot_fills_the_start_info() {
    use arch::acpi::{create_acpi_tables, AcpiConfig};
    use arch::boot::set_acpi_rsdp;

    let dir = TempDir::new("pvh");
    let kernel = dir.file("vmlinux", &vmlinux_elf());
    let initrd_bytes: Vec<u8> = (0..5000u32).map(|i| (i * 3) as u8).collect();
    let initrd = dir.file("initrd", &initrd_bytes);
    let mem = memory(64 * MIB);
    let info = load_kernel(&mem, &config(&kernel, Some(&initrd), "console=ttyS0")).unwrap();
    assert_eq!(info.kind, BootKind::Pvh);
    // Entered at the note's address, not e_entry, in 32-bit protected mode
    // with paging off and EBX at the start info.
    assert_eq!((info.entry, info.regs.rip), (0x100_0040, 0x100_0040));
    assert_eq!(info.regs.rbx, pvh::START_INFO_ADDR);
    assert_eq!(info.regs.rflags, 2);
    assert_eq!(info.sregs.cr0 & 0x8000_0001, 1);
    assert_eq!((info.sregs.cr4, info.sregs.efer), (0, 0));
    assert!(info.sregs.cs.db);
    assert!(!info.sregs.cs.l);
    assert_eq!(read_bytes(&mem, 0x100_0000, 64), [0xf4; 64]);

    let si = read_start_info(&mem);
    assert_eq!({ si.magic }, pvh::XEN_HVM_START_MAGIC);
    assert_eq!({ si.version }, 1);
    assert_eq!({ si.cmdline_paddr }, CMDLINE_ADDR);
    assert_eq!(read_bytes(&mem, CMDLINE_ADDR, 14), b"console=ttyS0\0");
    assert_eq!({ si.nr_modules }, 1);
    let mut m = [0u8; 32];
    mem.read_slice(&mut m, GuestAddress(si.modlist_paddr))
        .unwrap();
    let paddr = u64::from_le_bytes(m[0..8].try_into().unwrap());
    let size = u64::from_le_bytes(m[8..16].try_into().unwrap());
    assert_eq!(size, initrd_bytes.len() as u64);
    assert_eq!(Some(paddr..paddr + size), info.initrd);
    assert_eq!(read_bytes(&mem, paddr, initrd_bytes.len()), initrd_bytes);
    // The memory map is the e820 map.
    let entries = { si.memmap_entries } as usize;
    let map: Vec<(u64, u64, u32)> = (0..entries)
        .map(|i| {
            let b = read_bytes(&mem, { si.memmap_paddr } + 24 * i as u64, 24);
            (
                u64::from_le_bytes(b[0..8].try_into().unwrap()),
                u64::from_le_bytes(b[8..16].try_into().unwrap()),
                u32::from_le_bytes(b[16..20].try_into().unwrap()),
            )
        })
        .collect();
    let expected: Vec<(u64, u64, u32)> = arch::boot::e820_table(&ram_regions(64 * MIB))
        .iter()
        .map(|e| (e.addr, e.size, e.kind))
        .collect();
    assert_eq!(map, expected);

    assert_eq!({ si.rsdp_paddr }, 0);
    let rsdp = create_acpi_tables(&mem, &AcpiConfig::new(1)).unwrap();
    set_acpi_rsdp(&mem, &info, rsdp).unwrap();
    assert_eq!({ read_start_info(&mem).rsdp_paddr }, rsdp);

    // Without an initrd: no module.
    let info = load_kernel(&mem, &config(&kernel, None, "")).unwrap();
    assert_eq!(info.initrd, None);
    let si = read_start_info(&mem);
    assert_eq!(({ si.nr_modules }, { si.modlist_paddr }), (0, 0));
}

#[test]
fn protocol_overrides_detection() {
    let dir = TempDir::new("protocol");
    let mem = memory(64 * MIB);
    let bare = dir.file("bare", &bare_elf());
    let vmlinux = dir.file("vmlinux", &vmlinux_elf());
    let with = |path: &Path, protocol| {
        load_kernel(
            &mem,
            &BootConfig {
                protocol,
                ..config(path, None, "")
            },
        )
    };
    assert_eq!(
        with(&bare, BootProtocol::Linux).unwrap().kind,
        BootKind::LinuxElf
    );
    assert_eq!(
        with(&vmlinux, BootProtocol::Bare).unwrap().kind,
        BootKind::Bare
    );
    // A PVH note wins under auto, as with Firecracker and Cloud Hypervisor.
    assert_eq!(
        with(&vmlinux, BootProtocol::Auto).unwrap().kind,
        BootKind::Pvh
    );
    assert_eq!(
        with(&vmlinux, BootProtocol::Linux).unwrap().kind,
        BootKind::LinuxElf
    );
    let no_pvh = dir.file(
        "no-pvh",
        &ElfBuilder::new(0x100_0000)
            .segment_with_memsz(0x100_0000, &[0xf4; 64], 0x1000)
            .note("Linux", 6, b"6.1.0\0")
            .build(),
    );
    assert_eq!(
        with(&no_pvh, BootProtocol::Auto).unwrap().kind,
        BootKind::LinuxElf
    );
    assert!(matches!(
        with(&no_pvh, BootProtocol::Pvh),
        Err(BootError::NoPvhEntry { .. })
    ));
    let bz = dir.file("bzImage", &bzimage(|_| {}));
    assert!(matches!(
        with(&bz, BootProtocol::Pvh),
        Err(BootError::NoPvhEntry { .. })
    ));
    let garbage = dir.file("garbage", &[0u8; 4096]);
    assert!(matches!(
        with(&garbage, BootProtocol::Linux),
        Err(BootError::NotAKernel { .. })
    ));
    // A Linux ELF below 1 MiB is refused (the zero page and command line live there).
    let low = dir.file("low", &build_elf64(&[(0x9_0000, &[0xf4])], 0x9_0000));
    assert!(matches!(
        with(&low, BootProtocol::Linux),
        Err(BootError::SegmentInBootArea { reserved_end, .. }) if reserved_end == HIMEM_START
    ));
    assert_eq!("bare".parse::<BootProtocol>().unwrap(), BootProtocol::Bare);
    assert_eq!("pvh".parse::<BootProtocol>().unwrap(), BootProtocol::Pvh);
    assert!("xen".parse::<BootProtocol>().is_err());
}

#[test]
fn errors_chain_their_causes() {
    use std::error::Error;
    let dir = TempDir::new("chain");
    let mem = memory(16 * MIB);
    let mut elf32 = bare_elf();
    elf32[4] = 1;
    let path = dir.file("elf32", &elf32);
    let err = load_kernel(&mem, &config(&path, None, "")).unwrap_err();
    let source = err.source().expect("a cause");
    assert!(source.to_string().contains("32-bit"));
    assert!(!err.to_string().contains("32-bit"), "not repeated: {err}");
}

/// Loads a real kernel when `FERROVISOR_TEST_BZIMAGE` names one (e.g. the
/// Debian cloud kernel's vmlinuz); says so when it is not set.
#[test]
fn real_bzimage_from_env() {
    let Some(path) = std::env::var_os("FERROVISOR_TEST_BZIMAGE") else {
        eprintln!("SKIPPED real_bzimage_from_env: set FERROVISOR_TEST_BZIMAGE to a bzImage");
        return;
    };
    let path = PathBuf::from(path);
    let dir = TempDir::new("real");
    let initrd = dir.file("initrd", &[0u8; 1 << 20]);
    let mem = memory(256 * MIB);
    let info = load_kernel(&mem, &config(&path, Some(&initrd), "console=ttyS0")).unwrap();
    assert_eq!(info.kind, BootKind::LinuxBzImage);
    let p = read_params(&mem);
    assert_eq!({ p.hdr.code32_start }, HIMEM_START as u32);
    let r = info.initrd.unwrap();
    assert!(r.start >= info.kernel.end && r.end <= 256 * MIB);
    // Too little memory for the decompressor's footprint is a clear error.
    let err = load_kernel(&memory(32 * MIB), &config(&path, None, "")).unwrap_err();
    assert!(matches!(err, BootError::KernelTooBig { .. }), "{err:?}");
    eprintln!(
        "{}: kernel {:#x?}, initrd {r:#x?}",
        path.display(),
        info.kernel
    );
}

#[test]
fn acpi_rsdp_reaches_linux_boot_params_only() {
    use arch::acpi::{create_acpi_tables, AcpiConfig};
    use arch::boot::set_acpi_rsdp;

    let dir = TempDir::new("acpi-rsdp");
    let kernel = dir.file("bzImage", &bzimage(|_| {}));
    let mem = memory(64 * MIB);
    let info = load_kernel(&mem, &config(&kernel, None, "")).unwrap();
    let rsdp = create_acpi_tables(&mem, &AcpiConfig::new(2)).unwrap();
    assert_eq!(read_bytes(&mem, rsdp, 8), b"RSD PTR ");
    assert_eq!({ read_params(&mem).acpi_rsdp_addr }, 0);
    set_acpi_rsdp(&mem, &info, rsdp).unwrap();
    let p = read_params(&mem);
    assert_eq!({ p.acpi_rsdp_addr }, rsdp);
    // The rest of the zero page is untouched.
    assert_eq!({ p.hdr.header }, 0x5372_6448);
    // The tables sit in the e820's reserved BIOS area.
    assert!(e820(&p).contains(&(EBDA_START, HIMEM_START - EBDA_START, 2)));

    // Other kernels have no zero page: nothing is written.
    let bare = dir.file("bare", &bare_elf());
    let mem = memory(16 * MIB);
    let info = load_kernel(&mem, &config(&bare, None, "")).unwrap();
    set_acpi_rsdp(&mem, &info, rsdp).unwrap();
    assert_eq!(read_bytes(&mem, ZERO_PAGE_ADDR + 0x70, 8), [0; 8]);
}
