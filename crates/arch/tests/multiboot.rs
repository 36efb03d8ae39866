//! Multiboot (v1) kernels through `arch::boot::load_kernel`: ELF32, ELF64
//! and a.out-kludge images written to temporary files, the information
//! structure read back from guest memory.

use std::path::{Path, PathBuf};

use arch::boot::bios_handoff::{self, FIRMWARE_CODE_ADDR, FIRMWARE_CODE_SIZE};
use arch::boot::multiboot::{MultibootAddresses, MultibootError};
use arch::boot::{load_kernel, BootConfig, BootError, BootInfo, BootKind, BootProtocol};
use arch::elf::ElfError;
use arch::elf_builder::{multiboot_header, ElfBuilder};
use arch::layout::{
    ram_regions, BOOT_GDT_ADDR, CMDLINE_ADDR, EBDA_START, HIMEM_START, MMIO_HOLE_END,
    MMIO_HOLE_START, MULTIBOOT_INFO_ADDR, MULTIBOOT_STACK_TOP, PAGE_SIZE,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MIB: u64 = 1 << 20;

fn memory(size: u64) -> GuestMemoryMmap {
    let ranges: Vec<_> = ram_regions(size)
        .into_iter()
        .map(|(a, s)| (GuestAddress(a), s as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).unwrap()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "ferrovisor-arch-mb-{}-{}",
            std::process::id(),
            test
        ));
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

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

fn word(mem: &GuestMemoryMmap, addr: u64) -> u32 {
    let mut b = [0u8; 4];
    mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
    u32::from_le_bytes(b)
}

fn cstring(mem: &GuestMemoryMmap, addr: u64) -> String {
    let bytes = read(mem, addr, 256);
    let end = bytes.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(bytes[..end].to_vec()).unwrap()
}

/// The Multiboot information structure's fields.
struct Info {
    flags: u32,
    mem_lower: u32,
    mem_upper: u32,
    cmdline: String,
    /// (start, end, string)
    mods: Vec<(u32, u32, String)>,
    /// (size, base, length, type)
    mmap: Vec<(u32, u64, u64, u32)>,
    loader: String,
}

fn read_info(mem: &GuestMemoryMmap, addr: u64) -> Info {
    let f = |off: u64| word(mem, addr + off);
    let mods = (0..f(20))
        .map(|i| {
            let m = u64::from(f(24)) + 16 * u64::from(i);
            (
                word(mem, m),
                word(mem, m + 4),
                cstring(mem, word(mem, m + 8).into()),
            )
        })
        .collect();
    let (mmap_len, mmap_addr) = (u64::from(f(44)), u64::from(f(48)));
    let mut mmap = Vec::new();
    let mut at = mmap_addr;
    while at < mmap_addr + mmap_len {
        let e = read(mem, at, 24);
        let size = u32::from_le_bytes(e[0..4].try_into().unwrap());
        mmap.push((
            size,
            u64::from_le_bytes(e[4..12].try_into().unwrap()),
            u64::from_le_bytes(e[12..20].try_into().unwrap()),
            u32::from_le_bytes(e[20..24].try_into().unwrap()),
        ));
        // The size field does not count itself.
        at += u64::from(size) + 4;
    }
    Info {
        flags: f(0),
        mem_lower: f(4),
        mem_upper: f(8),
        cmdline: cstring(mem, f(16).into()),
        mods,
        mmap,
        loader: cstring(mem, f(64).into()),
    }
}

/// hlt; jmp $-1 (never runs here; just recognisable bytes).
const CODE: [u8; 4] = [0x90, 0x90, 0xf4, 0xeb];

/// A Multiboot ELF32 kernel: header then code at 1 MiB, 0x2000 of bss.
fn elf32_kernel(flags: u32) -> (Vec<u8>, Vec<u8>) {
    let mut text = multiboot_header(flags, None);
    text.extend_from_slice(&CODE);
    let elf = ElfBuilder::new32(0x10_000c)
        .segment_with_memsz(HIMEM_START, &text, text.len() as u64 + 0x2000)
        .build();
    (elf, text)
}

fn assert_protected_mode_entry(info: &BootInfo, entry: u64) {
    assert_eq!(info.kind, BootKind::Multiboot);
    assert!(!info.kind.is_linux());
    assert_eq!(info.entry, entry);
    let r = &info.regs;
    // The boot vCPU starts in the firmware stub, which jumps to the entry.
    assert_eq!(
        (r.rip, r.rax, r.rbx, r.rsp, r.rflags),
        (
            FIRMWARE_CODE_ADDR,
            0x2bad_b002,
            MULTIBOOT_INFO_ADDR,
            MULTIBOOT_STACK_TOP,
            2
        )
    );
    assert!(r.rsp <= 0x9_0000);
    let s = &info.sregs;
    assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (0x11, 0, 0, 0));
    assert_eq!(s.cs.selector, 0x08);
    assert!(s.cs.db && !s.cs.l && s.cs.g && s.cs.present);
    assert_eq!((s.cs.base, s.cs.limit, s.cs.type_), (0, 0xffff_ffff, 0xb));
    for seg in [s.ds, s.es, s.fs, s.gs, s.ss] {
        assert_eq!(seg.selector, 0x18);
        assert!(seg.db && seg.g);
        assert_eq!((seg.base, seg.limit, seg.type_), (0, 0xffff_ffff, 3));
    }
    assert_eq!(s.gdt.base, BOOT_GDT_ADDR);
    assert_eq!(s.idt.limit, 0);
}

/// The firmware code at `addr` and the IVT are what [`firmware`] makes for
/// `entry`.
fn assert_firmware(mem: &GuestMemoryMmap, addr: u64, entry: u64) {
    assert_eq!(
        read(mem, addr, FIRMWARE_CODE_SIZE as usize),
        bios_handoff::code(entry as u32)
    );
    assert_eq!(read(mem, 0, 0x400), bios_handoff::ivt(addr));
}

#[test]
fn elf32_kernel_gets_the_multiboot_information() {
    let dir = TempDir::new("elf32");
    let (elf, text) = elf32_kernel(0x3);
    let kernel = dir.file("kernel.elf", &elf);
    let initrd_bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 3) as u8).collect();
    let initrd = dir.file("initrd.img", &initrd_bytes);
    let mem = memory(64 * MIB);
    // An earlier boot's data where the bss goes.
    mem.write_slice(&[0xaa; 0x3000], GuestAddress(HIMEM_START))
        .unwrap();
    let cmdline = "console=ttyS0  quiet -- x";
    let info = load_kernel(&mem, &config(&kernel, Some(&initrd), cmdline)).unwrap();

    assert_protected_mode_entry(&info, 0x10_000c);
    assert_firmware(&mem, FIRMWARE_CODE_ADDR, 0x10_000c);
    let kernel_end = HIMEM_START + text.len() as u64 + 0x2000;
    assert_eq!(info.kernel, HIMEM_START..kernel_end);
    assert_eq!(read(&mem, HIMEM_START, text.len()), text);
    assert_eq!(
        read(&mem, HIMEM_START + text.len() as u64, 0x2000),
        vec![0; 0x2000]
    );
    // The GDT holds the 32-bit code segment at 0x08.
    assert_eq!(
        read(&mem, BOOT_GDT_ADDR + 8, 8),
        0x00cf_9b00_0000_ffffu64.to_le_bytes()
    );

    let mb = read_info(&mem, info.regs.rbx);
    assert_eq!(mb.flags, 1 | 1 << 2 | 1 << 3 | 1 << 6 | 1 << 9);
    assert_eq!(mb.mem_lower, 639);
    assert_eq!(mb.mem_upper, 63 * 1024);
    assert_eq!(mb.cmdline, cmdline, "passed verbatim");
    assert_eq!(word(&mem, MULTIBOOT_INFO_ADDR + 16), CMDLINE_ADDR as u32);
    assert_eq!(mb.loader, "Ferrovisor");

    // The initrd is module 0, page-aligned right after the kernel.
    let start = kernel_end.next_multiple_of(PAGE_SIZE);
    let end = start + initrd_bytes.len() as u64;
    assert_eq!(
        mb.mods,
        vec![(start as u32, end as u32, "initrd.img".to_string())]
    );
    assert_eq!(info.initrd, Some(start..end));
    assert_eq!(read(&mem, start, initrd_bytes.len()), initrd_bytes);

    assert_eq!(
        mb.mmap,
        vec![
            (20, 0, EBDA_START, 1),
            (20, EBDA_START, HIMEM_START - EBDA_START, 2),
            (20, HIMEM_START, 63 * MIB, 1),
        ]
    );
}

/// kvm-unit-tests' realmode.flat: an ELF32 with its text at 0x8000 and its
/// data and bss at 0xb000..0xda30, entered at 0x8018.
fn realmode_like_kernel() -> Vec<u8> {
    let mut text = vec![0x90; 0x18];
    text[..12].copy_from_slice(&multiboot_header(0, None));
    text.extend_from_slice(&CODE);
    text.resize(0x286c, 0x90);
    ElfBuilder::new32(0x8018)
        .segment(0x8000, &text)
        .segment_with_memsz(0xb000, &[0x11; 0x277c], 0x2a30)
        .build()
}

#[test]
fn a_kernel_below_1mib_loads_around_the_boot_structures() {
    let dir = TempDir::new("realmode");
    let kernel = dir.file("realmode.flat", &realmode_like_kernel());
    let initrd = dir.file("env", b"NR_CPUS=1\n");
    let mem = memory(64 * MIB);
    let info = load_kernel(&mem, &config(&kernel, Some(&initrd), "realmode.flat")).unwrap();
    assert_protected_mode_entry(&info, 0x8018);
    assert_firmware(&mem, FIRMWARE_CODE_ADDR, 0x8018);
    assert_eq!(info.kernel, 0x8000..0xda30);
    assert_eq!(read(&mem, 0x8018, 4), CODE);
    assert_eq!(read(&mem, 0xb000 + 0x277c, 0x2a30 - 0x277c), vec![0; 0x2b4]);
    // The structures stayed where they always are: none overlaps the
    // kernel.
    assert_eq!(info.regs.rbx, MULTIBOOT_INFO_ADDR);
    let mb = read_info(&mem, info.regs.rbx);
    assert_eq!(mb.cmdline, "realmode.flat");
    // The module goes at 1 MiB, not into the low memory after the kernel.
    assert_eq!(
        mb.mods,
        vec![(
            HIMEM_START as u32,
            HIMEM_START as u32 + 10,
            "env".to_string()
        )]
    );
}

#[test]
fn boot_structures_move_out_of_a_low_kernels_way() {
    let dir = TempDir::new("low");
    // Text over the IVT, the GDT and the information area (0x300..0x8000), bss
    // over the command line (0x1f000..0x21000) and the stack
    // (0x80000..0x9f000).
    let mut text = vec![0x90; 0x100];
    text[..12].copy_from_slice(&multiboot_header(0, None));
    let elf = ElfBuilder::new32(0x380)
        .segment_with_memsz(0x300, &text, 0x7d00)
        .segment_with_memsz(0x1_f000, &[1], 0x2000)
        .segment_with_memsz(0x8_0000, &[2], 0x1_f000)
        .build();
    let kernel = dir.file("low", &elf);
    let mem = memory(64 * MIB);
    let cmdline = "low kernel";
    let info = load_kernel(&mem, &config(&kernel, None, cmdline)).unwrap();
    let kernel_ranges = [0x300..0x8000, 0x1_f000..0x2_1000, 0x8_0000..0x9_f000];
    let outside = |addr: u64, len: u64| {
        kernel_ranges
            .iter()
            .all(|k| addr + len <= k.start || k.end <= addr)
    };
    let s = &info.sregs;
    assert_ne!(s.gdt.base, BOOT_GDT_ADDR);
    assert!(outside(s.gdt.base, 0x30) && outside(s.idt.base, 16) && outside(s.tr.base, 0x68));
    // The GDT's TSS descriptor names the moved TSS, and the 32-bit code
    // segment is in it.
    let tss_desc = u64::from_le_bytes(read(&mem, s.gdt.base + 0x20, 8).try_into().unwrap());
    let desc_base = (tss_desc >> 16 & 0xff_ffff) | (tss_desc >> 56) << 24;
    assert_eq!(desc_base, s.tr.base);
    assert_eq!(
        read(&mem, s.gdt.base + 8, 8),
        0x00cf_9b00_0000_ffffu64.to_le_bytes()
    );
    let r = &info.regs;
    assert!(outside(r.rbx, 0x1000) && outside(r.rsp - 0x4000, 0x4000));
    assert!(outside(r.rip, FIRMWARE_CODE_SIZE) && r.rip < EBDA_START);
    assert_eq!(
        read(&mem, r.rip, FIRMWARE_CODE_SIZE as usize),
        bios_handoff::code(0x380)
    );
    // The kernel occupies the IVT: it is left alone.
    assert_eq!(read(&mem, 0x300, 0x100), text);
    assert_eq!(r.rsp % 16, 0);
    let mb = read_info(&mem, r.rbx);
    assert_eq!(mb.cmdline, cmdline);
    assert!(outside(
        u64::from(word(&mem, r.rbx + 16)),
        cmdline.len() as u64 + 1
    ));
    assert_eq!(mb.loader, "Ferrovisor");
    // The kernel's bytes are intact after the structures were written.
    assert_eq!(read(&mem, 0x1_f000, 1), [1]);
    assert_eq!(read(&mem, 0x8_0000, 1), [2]);
}

#[test]
fn memory_above_4g_is_in_the_map_but_not_in_mem_upper() {
    let dir = TempDir::new("high");
    let kernel = dir.file("k", &elf32_kernel(0).0);
    let mem = memory(MMIO_HOLE_START + 64 * MIB);
    let info = load_kernel(&mem, &config(&kernel, None, "")).unwrap();
    let mb = read_info(&mem, info.regs.rbx);
    assert_eq!(
        u64::from(mb.mem_upper),
        (MMIO_HOLE_START - HIMEM_START) / 1024
    );
    assert_eq!(mb.mmap.last(), Some(&(20, MMIO_HOLE_END, 64 * MIB, 1)));
    // No initrd: the module list is valid and empty; the command line is "".
    assert_ne!(mb.flags & 1 << 3, 0);
    assert!(mb.mods.is_empty());
    assert_eq!(mb.cmdline, "");
    assert_eq!(info.initrd, None);
}

#[test]
fn elf_entry_is_translated_from_virtual_to_physical() {
    let dir = TempDir::new("virt");
    let mut text = multiboot_header(0x2, None);
    text.extend_from_slice(&CODE);
    // A higher-half ELF64 kernel whose e_entry is virtual.
    let elf64 = ElfBuilder::new(0xffff_ffff_8010_000c)
        .segment_at(0xffff_ffff_8010_0000, 0x20_0000, &text, 0x1000)
        .build();
    let mem = memory(64 * MIB);
    let info = load_kernel(&mem, &config(&dir.file("k64", &elf64), None, "")).unwrap();
    assert_protected_mode_entry(&info, 0x20_000c);
    assert_eq!(read(&mem, 0x20_0000, text.len()), text);
    assert_eq!(info.kernel, 0x20_0000..0x20_1000);

    // ELF32 whose e_entry is already physical.
    let elf32 = ElfBuilder::new32(0x30_000c)
        .segment_at(0xc030_0000, 0x30_0000, &text, 0x1000)
        .build();
    let info = load_kernel(&mem, &config(&dir.file("k32", &elf32), None, "")).unwrap();
    assert_protected_mode_entry(&info, 0x30_000c);
}

/// A raw (a.out-kludge) image: `pad` bytes, the header, code, filler up to
/// `len` bytes.
fn kludge_image(pad: usize, a: MultibootAddresses, len: usize) -> Vec<u8> {
    let mut image: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let header = multiboot_header(0x1, Some(a));
    image[pad..pad + header.len()].copy_from_slice(&header);
    image
}

#[test]
fn aout_kludge_loads_by_the_address_fields() {
    let dir = TempDir::new("kludge");
    let a = MultibootAddresses {
        header_addr: 0x20_0040,
        load_addr: 0x20_0000,
        load_end_addr: 0x20_1000,
        bss_end_addr: 0x20_3000,
        entry_addr: 0x20_0080,
    };
    let image = kludge_image(0x40, a, 0x1800);
    let kernel = dir.file("kludge.bin", &image);
    let mem = memory(32 * MIB);
    mem.write_slice(&[0xaa; 0x4000], GuestAddress(0x20_0000))
        .unwrap();
    let info = load_kernel(&mem, &config(&kernel, None, "x")).unwrap();
    assert_protected_mode_entry(&info, 0x20_0080);
    assert_eq!(info.kernel, 0x20_0000..0x20_3000);
    // Only load_end - load_addr bytes come from the file; then the bss.
    assert_eq!(read(&mem, 0x20_0000, 0x1000), image[..0x1000]);
    assert_eq!(read(&mem, 0x20_1000, 0x2000), vec![0; 0x2000]);
    assert_eq!(read(&mem, 0x20_3000, 0x10), vec![0xaa; 0x10], "untouched");
    assert_eq!(read_info(&mem, info.regs.rbx).cmdline, "x");

    // load_end_addr = 0: the rest of the file; the header may sit further
    // in than load_addr's file offset (text starts at offset 0x20 here).
    let a = MultibootAddresses {
        header_addr: 0x40_0020,
        load_addr: 0x40_0000,
        load_end_addr: 0,
        bss_end_addr: 0,
        entry_addr: 0x40_0100,
    };
    let image = kludge_image(0x40, a, 0x1800);
    let info = load_kernel(&mem, &config(&dir.file("k2", &image), None, "")).unwrap();
    assert_eq!(info.kernel, 0x40_0000..0x40_0000 + 0x1800 - 0x20);
    assert_eq!(read(&mem, 0x40_0000, 0x1800 - 0x20), image[0x20..]);

    // An ELF with flag 16 is loaded by the address fields, not its headers.
    let a = MultibootAddresses {
        header_addr: 0x50_1000,
        load_addr: 0x50_0000,
        load_end_addr: 0,
        bss_end_addr: 0,
        entry_addr: 0x50_1020,
    };
    let mut text = multiboot_header(0, Some(a));
    text.extend_from_slice(&CODE);
    let elf = ElfBuilder::new32(0x10_0000)
        .segment(0x10_0000, &text)
        .build();
    let info = load_kernel(&mem, &config(&dir.file("elf-kludge", &elf), None, "")).unwrap();
    assert_eq!(info.entry, 0x50_1020);
    assert_eq!(read(&mem, 0x50_0000, elf.len()), elf, "the whole file");
}

#[test]
fn protocol_choice() {
    let dir = TempDir::new("protocol");
    let mut text = multiboot_header(0, None);
    text.extend_from_slice(&CODE);
    let elf64 = ElfBuilder::new(0x10_000c).segment(0x10_0000, &text).build();
    let kernel = dir.file("k", &elf64);
    let mem = memory(32 * MIB);
    let boot = |protocol| {
        load_kernel(
            &mem,
            &BootConfig {
                protocol,
                ..config(&kernel, None, "")
            },
        )
    };
    assert_eq!(boot(BootProtocol::Auto).unwrap().kind, BootKind::Multiboot);
    assert_eq!(
        boot("multiboot".parse().unwrap()).unwrap().kind,
        BootKind::Multiboot
    );
    assert_eq!(BootProtocol::Multiboot.to_string(), "multiboot");
    // Bare overrides detection: long mode at the same entry.
    let bare = boot(BootProtocol::Bare).unwrap();
    assert_eq!(bare.kind, BootKind::Bare);
    assert_eq!(bare.sregs.cs.selector, 0x10);

    // Multiboot asked for, no header.
    let plain = ElfBuilder::new(0x10_0000).segment(0x10_0000, &CODE).build();
    let plain = dir.file("plain", &plain);
    let err = load_kernel(
        &mem,
        &BootConfig {
            protocol: BootProtocol::Multiboot,
            ..config(&plain, None, "")
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            BootError::Multiboot {
                source: MultibootError::NoHeader,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("plain"));
}

fn mb_error(err: BootError) -> MultibootError {
    match err {
        BootError::Multiboot { source, .. } => source,
        other => panic!("not a Multiboot error: {other:?}"),
    }
}

#[test]
fn malformed_kludge_headers_are_distinct_errors() {
    let dir = TempDir::new("kludge-errors");
    let mem = memory(16 * MIB);
    let good = MultibootAddresses {
        header_addr: 0x20_0040,
        load_addr: 0x20_0000,
        load_end_addr: 0x20_1000,
        bss_end_addr: 0x20_2000,
        entry_addr: 0x20_0080,
    };
    let load = |edit: &dyn Fn(&mut MultibootAddresses)| {
        let mut a = good;
        edit(&mut a);
        let path = dir.file("k", &kludge_image(0x40, a, 0x1800));
        load_kernel(&mem, &config(&path, None, ""))
    };
    assert!(load(&|_| {}).is_ok());
    let e = |edit: &dyn Fn(&mut MultibootAddresses)| mb_error(load(edit).unwrap_err());

    assert!(matches!(
        e(&|a| a.header_addr = 0x1f_0000),
        MultibootError::HeaderBelowLoadAddr { .. }
    ));
    assert!(matches!(
        e(&|a| a.load_addr = 0x1f_0000),
        MultibootError::LoadStartBeforeFile {
            header_offset: 0x40,
            distance: 0x1_0040
        }
    ));
    assert!(matches!(
        e(&|a| a.load_end_addr = 0x20_0000),
        MultibootError::LoadEndNotAboveLoadAddr { .. }
    ));
    assert!(matches!(
        e(&|a| a.load_end_addr = 0x20_2000),
        MultibootError::LoadBeyondFile {
            offset: 0,
            size: 0x2000,
            file_len: 0x1800
        }
    ));
    assert!(matches!(
        e(&|a| a.bss_end_addr = 0x20_0800),
        MultibootError::BssEndBeforeLoadEnd { .. }
    ));
    assert!(matches!(
        e(&|a| a.entry_addr = 0x20_1800),
        MultibootError::EntryOutsideImage {
            entry: 0x20_1800,
            ..
        }
    ));
    assert!(matches!(
        e(&|a| a.entry_addr = 0x1f_ffff),
        MultibootError::EntryOutsideImage { .. }
    ));
    // Beyond RAM.
    let err = load(&|a| a.bss_end_addr = 0x200_0000).unwrap_err();
    assert!(
        matches!(
            err,
            BootError::KernelTooBig {
                end: 0x200_0000,
                ram_end: 0x100_0000
            }
        ),
        "{err:?}"
    );
    // The address fields cut off by the end of the file.
    let image = kludge_image(0x40, good, 0x1800);
    let path = dir.file("cut", &image[..0x50]);
    let err = mb_error(load_kernel(&mem, &config(&path, None, "")).unwrap_err());
    assert!(
        matches!(err, MultibootError::HeaderTruncated { offset: 0x40 }),
        "{err:?}"
    );
}

#[test]
fn malformed_kernels_are_distinct_errors() {
    let dir = TempDir::new("errors");
    let mem = memory(16 * MIB);
    let load = |name: &str, bytes: &[u8]| {
        let path = dir.file(name, bytes);
        load_kernel(&mem, &config(&path, None, ""))
    };
    let (good, _) = elf32_kernel(0);

    // Checksum off by one; found by Auto, not silently booted as ELF.
    let mut bad = good.clone();
    bad[0x1008] ^= 1;
    assert!(matches!(
        mb_error(load("checksum", &bad).unwrap_err()),
        MultibootError::BadChecksum { offset: 0x1000, .. }
    ));

    // Requirements we do not know (bit 3).
    let (unknown, _) = elf32_kernel(1 << 3 | 1);
    assert!(matches!(
        mb_error(load("flags", &unknown).unwrap_err()),
        MultibootError::UnsupportedRequirements { unsupported: 8, .. }
    ));
    // The video-mode request is accepted (without video information).
    let (video, _) = elf32_kernel(1 << 2);
    assert!(load("video", &video).is_ok());

    // No address fields and not ELF.
    let mut raw = vec![0u8; 0x100];
    raw[..12].copy_from_slice(&multiboot_header(0, None));
    assert!(matches!(
        mb_error(load("raw", &raw).unwrap_err()),
        MultibootError::NotElfWithoutAddresses
    ));

    // ELF without a loadable segment.
    let mut noload = good.clone();
    noload[52..56].copy_from_slice(&6u32.to_le_bytes());
    let err = load("noload", &noload).unwrap_err();
    assert!(
        matches!(
            err,
            BootError::Elf {
                source: ElfError::NoLoadSegments,
                ..
            }
        ),
        "{err:?}"
    );

    // ELF32 for another machine.
    let mut arm = good.clone();
    arm[18] = 40;
    let err = load("arm", &arm).unwrap_err();
    assert!(
        matches!(
            err,
            BootError::Elf {
                source: ElfError::NotI386(40),
                ..
            }
        ),
        "{err:?}"
    );

    let mut text = multiboot_header(0, None);
    text.extend_from_slice(&CODE);

    // A kernel that covers every place a structure could go.
    let everywhere = ElfBuilder::new32(0x600)
        .segment_with_memsz(0x500, &text, 16 * MIB - 0x500)
        .build();
    let err = load("everywhere", &everywhere).unwrap_err();
    assert!(matches!(
        mb_error(err),
        MultibootError::NoRoom {
            what: "firmware code below 1 MiB",
            size: 0x100
        }
    ),);

    // Entry in no segment.
    let lost = ElfBuilder::new32(0x90_0000)
        .segment(0x10_0000, &text)
        .build();
    assert!(matches!(
        mb_error(load("entry", &lost).unwrap_err()),
        MultibootError::ElfEntryOutsideSegments { entry: 0x90_0000 }
    ));

    // Beyond RAM.
    let big = ElfBuilder::new32(0x10_000c)
        .segment_with_memsz(0x10_0000, &text, 32 * MIB)
        .build();
    assert!(matches!(
        load("big", &big).unwrap_err(),
        BootError::KernelTooBig { .. }
    ));

    // Too little RAM for anything at 1 MiB.
    let small = memory(MIB / 2);
    let path = dir.file("good", &good);
    assert!(matches!(
        load_kernel(&small, &config(&path, None, "")).unwrap_err(),
        BootError::RamTooSmall { .. }
    ));
}

#[test]
fn cmdline_and_initrd_errors() {
    let dir = TempDir::new("cmdline");
    let mem = memory(16 * MIB);
    let kernel = dir.file("k", &elf32_kernel(0).0);

    let long = "x".repeat(0x1_0000);
    let err = load_kernel(&mem, &config(&kernel, None, &long)).unwrap_err();
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
    let longest = "x".repeat(0xffff);
    let info = load_kernel(&mem, &config(&kernel, None, &longest)).unwrap();
    assert_eq!(
        read(&mem, CMDLINE_ADDR + 0xfff0, 0x10),
        [&[b'x'; 15][..], &[0]].concat()
    );
    assert_eq!(info.kind, BootKind::Multiboot);
    let err = load_kernel(&mem, &config(&kernel, None, "a\nb")).unwrap_err();
    assert!(
        matches!(err, BootError::CmdlineNotPrintable { position: 1 }),
        "{err:?}"
    );

    let empty = dir.file("empty", b"");
    let err = load_kernel(&mem, &config(&kernel, Some(&empty), "")).unwrap_err();
    assert!(matches!(err, BootError::EmptyInitrd { .. }), "{err:?}");
    let huge = dir.file("huge", &vec![1u8; 15 * MIB as usize]);
    let err = load_kernel(&mem, &config(&kernel, Some(&huge), "")).unwrap_err();
    assert!(
        matches!(
            err,
            BootError::InitrdTooBig {
                limit: 0x100_0000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_bzimage_with_a_multiboot_header_is_still_linux() {
    let dir = TempDir::new("bz");
    // Minimal bzImage header bytes: "HdrS" at 0x202 and a Multiboot header
    // at 0x400. Detection alone is checked (the bzImage is not valid).
    let mut image = vec![0u8; 0x2000];
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x400..0x40c].copy_from_slice(&multiboot_header(0, None));
    let path = dir.file("bz", &image);
    let mem = memory(16 * MIB);
    let err = load_kernel(&mem, &config(&path, None, "")).unwrap_err();
    assert!(matches!(err, BootError::BzImage { .. }), "{err:?}");
}
