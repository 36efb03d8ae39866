//! A bounds-checked reader for the ELF headers of a kernel: the program
//! headers to load and the names of its notes (to tell a Linux `vmlinux` from
//! a bare kernel). Nothing in a file can make it panic or allocate more than
//! the file's own size: every offset and size is checked against the file.
//!
//! [`parse`] reads ELF64 x86-64 executables (Linux and bare kernels);
//! [`parse_any_class`] also reads ELF32 i386 executables (Multiboot kernels).

use std::io::{self, Read, Seek, SeekFrom};

/// `\x7fELF`.
pub const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
/// `e_machine` of i386.
pub const EM_386: u16 = 3;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EHDR_SIZE: u64 = 64;
const EHDR32_SIZE: u64 = 52;
const IDENT_SIZE: u64 = 16;
const PHDR_SIZE: u16 = 56;
const PHDR32_SIZE: u16 = 32;
const NHDR_SIZE: usize = 12;
/// The Xen note's type that holds a PVH kernel's 32-bit entry point
/// (`XEN_ELFNOTE_PHYS32_ENTRY`).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Note segments larger than this are refused (real ones are a few KiB).
pub const MAX_NOTE_SEGMENT: u64 = 1 << 20;

/// Errors in an ELF kernel's headers.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read the ELF file")]
    Io(#[source] io::Error),
    #[error("not an ELF file (bad magic)")]
    BadMagic,
    #[error("truncated ELF header: the file has {len} bytes")]
    TruncatedHeader { len: u64 },
    #[error("32-bit ELF kernels are not supported (an ELF64 x86-64 executable is needed)")]
    Elf32,
    #[error("unknown ELF class {0}")]
    BadClass(u8),
    #[error("ELF data encoding {0} is not little-endian")]
    NotLittleEndian(u8),
    #[error("ELF machine {0} is not x86-64")]
    NotX86_64(u16),
    #[error("ELF32 machine {0} is not i386")]
    NotI386(u16),
    #[error("ELF type {0} is not an executable (ET_EXEC)")]
    NotExecutable(u16),
    #[error("ELF program header size {0} does not match the class (56 for ELF64, 32 for ELF32)")]
    BadPhentsize(u16),
    #[error("the ELF file has no program headers")]
    NoProgramHeaders,
    #[error("program headers at {offset:#x} (+{size:#x}) lie outside the {file_len}-byte file")]
    ProgramHeadersOutOfFile {
        offset: u64,
        size: u64,
        file_len: u64,
    },
    #[error(
        "segment {index}: bytes at {offset:#x} (+{size:#x}) lie outside the {file_len}-byte file"
    )]
    SegmentOutOfFile {
        index: usize,
        offset: u64,
        size: u64,
        file_len: u64,
    },
    #[error("segment {index}: file size {filesz:#x} is larger than memory size {memsz:#x}")]
    FileszExceedsMemsz {
        index: usize,
        filesz: u64,
        memsz: u64,
    },
    #[error("segment {index}: address {paddr:#x} + size {memsz:#x} overflows")]
    AddressOverflow {
        index: usize,
        paddr: u64,
        memsz: u64,
    },
    #[error("the ELF file has no loadable segment")]
    NoLoadSegments,
    #[error("note segment {index} is malformed")]
    BadNote { index: usize },
    #[error("note segment {index} is {size} bytes, more than the {max} allowed")]
    NoteTooLarge { index: usize, size: u64, max: u64 },
    #[error("entry point {entry:#x} is not inside a loadable segment")]
    EntryOutsideSegments { entry: u64 },
}

/// A `PT_LOAD` program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    /// Index among all program headers.
    pub index: usize,
    /// Offset of the segment's bytes in the file.
    pub offset: u64,
    pub vaddr: u64,
    /// Where the segment is loaded (guest-physical).
    pub paddr: u64,
    /// Bytes taken from the file.
    pub filesz: u64,
    /// Bytes in memory; those after `filesz` are zero.
    pub memsz: u64,
}

impl LoadSegment {
    /// End (exclusive) of the segment in guest-physical memory.
    pub fn end(&self) -> u64 {
        // Checked when parsed.
        self.paddr + self.memsz
    }
}

/// What a kernel's ELF headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfKernel {
    /// `e_entry`.
    pub entry: u64,
    /// Loadable segments with a non-zero memory size, in header order.
    pub segments: Vec<LoadSegment>,
    /// Names of the notes in `PT_NOTE` segments (without the trailing NUL).
    pub note_names: Vec<Vec<u8>>,
    /// The PVH entry point (physical, 32-bit protected mode) of a
    /// `XEN_ELFNOTE_PHYS32_ENTRY` note, if the kernel has one.
    pub pvh_entry: Option<u64>,
}

impl ElfKernel {
    /// A Linux `vmlinux` (or Xen/PVH kernel): it carries a note named
    /// "Linux" or "Xen".
    pub fn is_linux(&self) -> bool {
        self.note_names
            .iter()
            .any(|n| n.as_slice() == b"Linux" || n.as_slice() == b"Xen")
    }

    /// Lowest load address.
    pub fn start(&self) -> u64 {
        self.segments.iter().map(|s| s.paddr).min().unwrap_or(0)
    }

    /// The physical address of the entry point, the way GRUB computes it
    /// for Multiboot kernels: `e_entry` translated through the first
    /// segment whose virtual range holds it, else `e_entry` itself if a
    /// segment's physical range holds it; `None` if neither does.
    pub fn physical_entry(&self) -> Option<u64> {
        let by_vaddr = self
            .segments
            .iter()
            .find(|s| self.entry >= s.vaddr && self.entry - s.vaddr < s.memsz)
            .map(|s| self.entry - s.vaddr + s.paddr);
        by_vaddr.or_else(|| {
            self.segments
                .iter()
                .any(|s| self.entry >= s.paddr && self.entry < s.end())
                .then_some(self.entry)
        })
    }

    /// Highest end (exclusive) of a segment.
    pub fn end(&self) -> u64 {
        self.segments
            .iter()
            .map(LoadSegment::end)
            .max()
            .unwrap_or(0)
    }
}

/// Whether `header` starts with the ELF magic.
pub fn is_elf(header: &[u8]) -> bool {
    header.starts_with(&ELF_MAGIC)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn read_at<R: Read + Seek>(r: &mut R, offset: u64, buf: &mut [u8]) -> Result<(), ElfError> {
    r.seek(SeekFrom::Start(offset)).map_err(ElfError::Io)?;
    r.read_exact(buf).map_err(ElfError::Io)
}

/// `offset + size <= file_len`, without overflow.
fn in_file(offset: u64, size: u64, file_len: u64) -> bool {
    offset.checked_add(size).is_some_and(|end| end <= file_len)
}

/// Reads and checks the headers of an ELF64 x86-64 executable whose entry
/// point lies inside a loadable segment (by physical address).
pub fn parse<R: Read + Seek>(r: &mut R) -> Result<ElfKernel, ElfError> {
    let kernel = parse_headers(r, false)?;
    if !kernel
        .segments
        .iter()
        .any(|s| kernel.entry >= s.paddr && kernel.entry < s.end())
    {
        return Err(ElfError::EntryOutsideSegments {
            entry: kernel.entry,
        });
    }
    Ok(kernel)
}

/// Reads and checks the headers of an ELF64 x86-64 or ELF32 i386
/// executable. The entry point is not checked: the caller decides whether
/// it is physical or virtual (see [`ElfKernel::physical_entry`]).
pub fn parse_any_class<R: Read + Seek>(r: &mut R) -> Result<ElfKernel, ElfError> {
    parse_headers(r, true)
}

/// The fields of the ELF header that differ between the classes.
struct Layout {
    ehdr_size: u64,
    phdr_size: u16,
    machine: u16,
}

const ELF64: Layout = Layout {
    ehdr_size: EHDR_SIZE,
    phdr_size: PHDR_SIZE,
    machine: EM_X86_64,
};

const ELF32: Layout = Layout {
    ehdr_size: EHDR32_SIZE,
    phdr_size: PHDR32_SIZE,
    machine: EM_386,
};

/// One program header, widened to 64 bits.
struct Phdr {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

fn read_phdr(ph: &[u8], elf32: bool) -> Phdr {
    if elf32 {
        Phdr {
            p_type: le32(ph, 0),
            offset: le32(ph, 4).into(),
            vaddr: le32(ph, 8).into(),
            paddr: le32(ph, 12).into(),
            filesz: le32(ph, 16).into(),
            memsz: le32(ph, 20).into(),
            align: le32(ph, 28).into(),
        }
    } else {
        Phdr {
            p_type: le32(ph, 0),
            offset: le64(ph, 8),
            vaddr: le64(ph, 16),
            paddr: le64(ph, 24),
            filesz: le64(ph, 32),
            memsz: le64(ph, 40),
            align: le64(ph, 48),
        }
    }
}

fn parse_headers<R: Read + Seek>(r: &mut R, allow_elf32: bool) -> Result<ElfKernel, ElfError> {
    let file_len = r.seek(SeekFrom::End(0)).map_err(ElfError::Io)?;
    if file_len < IDENT_SIZE {
        let mut head = vec![0u8; file_len as usize];
        read_at(r, 0, &mut head)?;
        if !is_elf(&head) {
            return Err(ElfError::BadMagic);
        }
        return Err(ElfError::TruncatedHeader { len: file_len });
    }
    let mut ehdr = [0u8; EHDR_SIZE as usize];
    let head_len = file_len.min(EHDR_SIZE) as usize;
    read_at(r, 0, &mut ehdr[..head_len])?;
    if !is_elf(&ehdr) {
        return Err(ElfError::BadMagic);
    }
    let (layout, elf32) = match ehdr[4] {
        ELFCLASS64 => (ELF64, false),
        ELFCLASS32 if allow_elf32 => (ELF32, true),
        ELFCLASS32 => return Err(ElfError::Elf32),
        class => return Err(ElfError::BadClass(class)),
    };
    if ehdr[5] != ELFDATA2LSB {
        return Err(ElfError::NotLittleEndian(ehdr[5]));
    }
    if file_len < layout.ehdr_size {
        return Err(ElfError::TruncatedHeader { len: file_len });
    }
    let e_type = le16(&ehdr, 16);
    let machine = le16(&ehdr, 18);
    if machine != layout.machine {
        return Err(if elf32 {
            ElfError::NotI386(machine)
        } else {
            ElfError::NotX86_64(machine)
        });
    }
    if e_type != ET_EXEC {
        return Err(ElfError::NotExecutable(e_type));
    }
    let (entry, phoff, phentsize, phnum) = if elf32 {
        (
            u64::from(le32(&ehdr, 24)),
            u64::from(le32(&ehdr, 28)),
            le16(&ehdr, 42),
            le16(&ehdr, 44),
        )
    } else {
        (
            le64(&ehdr, 24),
            le64(&ehdr, 32),
            le16(&ehdr, 54),
            le16(&ehdr, 56),
        )
    };
    if phnum == 0 {
        return Err(ElfError::NoProgramHeaders);
    }
    if phentsize != layout.phdr_size {
        return Err(ElfError::BadPhentsize(phentsize));
    }
    let ph_size = u64::from(phnum) * u64::from(layout.phdr_size);
    if !in_file(phoff, ph_size, file_len) {
        return Err(ElfError::ProgramHeadersOutOfFile {
            offset: phoff,
            size: ph_size,
            file_len,
        });
    }
    let mut phdrs = vec![0u8; ph_size as usize];
    read_at(r, phoff, &mut phdrs)?;

    let mut kernel = ElfKernel {
        entry,
        segments: Vec::new(),
        note_names: Vec::new(),
        pvh_entry: None,
    };
    for (index, ph) in phdrs.chunks_exact(layout.phdr_size as usize).enumerate() {
        let Phdr {
            p_type,
            offset,
            vaddr,
            paddr,
            filesz,
            memsz,
            align,
        } = read_phdr(ph, elf32);
        match p_type {
            PT_LOAD => {
                if filesz > memsz {
                    return Err(ElfError::FileszExceedsMemsz {
                        index,
                        filesz,
                        memsz,
                    });
                }
                if !in_file(offset, filesz, file_len) {
                    return Err(ElfError::SegmentOutOfFile {
                        index,
                        offset,
                        size: filesz,
                        file_len,
                    });
                }
                if paddr.checked_add(memsz).is_none() {
                    return Err(ElfError::AddressOverflow {
                        index,
                        paddr,
                        memsz,
                    });
                }
                if memsz > 0 {
                    kernel.segments.push(LoadSegment {
                        index,
                        offset,
                        vaddr,
                        paddr,
                        filesz,
                        memsz,
                    });
                }
            }
            PT_NOTE => {
                if filesz > MAX_NOTE_SEGMENT {
                    return Err(ElfError::NoteTooLarge {
                        index,
                        size: filesz,
                        max: MAX_NOTE_SEGMENT,
                    });
                }
                if !in_file(offset, filesz, file_len) {
                    return Err(ElfError::SegmentOutOfFile {
                        index,
                        offset,
                        size: filesz,
                        file_len,
                    });
                }
                let mut notes = vec![0u8; filesz as usize];
                read_at(r, offset, &mut notes)?;
                let note_align = if align == 8 { 8 } else { 4 };
                parse_notes(&notes, note_align, &mut kernel).ok_or(ElfError::BadNote { index })?;
            }
            _ => {}
        }
    }
    if kernel.segments.is_empty() {
        return Err(ElfError::NoLoadSegments);
    }
    Ok(kernel)
}

/// Appends the names of the notes in `data` to `kernel.note_names` and
/// records a PVH entry note; `None` if a note does not fit or a PVH note's
/// descriptor is not a 32- or 64-bit address below 4 GiB.
fn parse_notes(data: &[u8], align: usize, kernel: &mut ElfKernel) -> Option<()> {
    let pad = |n: usize| n.checked_add(align - 1).map(|n| n & !(align - 1));
    let mut at = 0usize;
    while at < data.len() {
        let header = data.get(at..at.checked_add(NHDR_SIZE)?)?;
        let namesz = le32(header, 0) as usize;
        let descsz = le32(header, 4) as usize;
        let name_at = at + NHDR_SIZE;
        let name = data.get(name_at..name_at.checked_add(namesz)?)?;
        let desc_at = name_at.checked_add(pad(namesz)?)?;
        let next = desc_at.checked_add(pad(descsz)?)?;
        // The descriptor must be inside the segment; the final padding may not.
        data.get(desc_at..desc_at.checked_add(descsz)?)?;
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        if &name[..len] == b"Xen" && le32(header, 8) == XEN_ELFNOTE_PHYS32_ENTRY {
            let desc = &data[desc_at..desc_at + descsz];
            let entry = match descsz {
                4 => u64::from(le32(desc, 0)),
                8 => le64(desc, 0),
                _ => return None,
            };
            if entry > u64::from(u32::MAX) {
                return None;
            }
            kernel.pvh_entry = Some(entry);
        }
        kernel.note_names.push(name[..len].to_vec());
        at = next;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf_builder::{build_elf64, ElfBuilder};
    use std::io::Cursor;

    fn parse_bytes(bytes: &[u8]) -> Result<ElfKernel, ElfError> {
        parse(&mut Cursor::new(bytes))
    }

    #[test]
    fn parses_what_the_builder_builds() {
        let elf = build_elf64(
            &[(0x10_0000, &[1, 2, 3]), (0x20_0000, &[4; 100])],
            0x10_0001,
        );
        let k = parse_bytes(&elf).unwrap();
        assert_eq!(k.entry, 0x10_0001);
        assert_eq!(k.segments.len(), 2);
        assert_eq!(k.segments[1].paddr, 0x20_0000);
        assert_eq!(k.segments[1].filesz, 100);
        assert_eq!((k.start(), k.end()), (0x10_0000, 0x20_0064));
        assert!(!k.is_linux());
    }

    #[test]
    fn finds_linux_and_xen_notes() {
        for (name, linux) in [("Linux", true), ("Xen", true), ("GNU", false)] {
            let elf = ElfBuilder::new(0x10_0000)
                .segment(0x10_0000, &[0x90; 16])
                .note("Other", 1, &[1, 2, 3])
                .note(name, 6, b"6.1.0")
                .build();
            let k = parse_bytes(&elf).unwrap();
            assert_eq!(k.is_linux(), linux, "{name}");
            assert_eq!(k.note_names[0], b"Other");
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let good = build_elf64(&[(0x10_0000, &[0xf4])], 0x10_0000);
        assert!(matches!(parse_bytes(b""), Err(ElfError::BadMagic)));
        assert!(matches!(
            parse_bytes(&good[..10]),
            Err(ElfError::TruncatedHeader { len: 10 })
        ));
        assert!(matches!(
            parse_bytes(&good[..40]),
            Err(ElfError::TruncatedHeader { len: 40 })
        ));
        // Program headers cut off.
        assert!(matches!(
            parse_bytes(&good[..100]),
            Err(ElfError::ProgramHeadersOutOfFile { .. })
        ));
        let patch = |at: usize, bytes: &[u8]| {
            let mut e = good.clone();
            e[at..at + bytes.len()].copy_from_slice(bytes);
            parse_bytes(&e)
        };
        assert!(matches!(patch(4, &[1]), Err(ElfError::Elf32)));
        assert!(matches!(patch(4, &[7]), Err(ElfError::BadClass(7))));
        assert!(matches!(patch(5, &[2]), Err(ElfError::NotLittleEndian(2))));
        assert!(matches!(patch(18, &[3, 0]), Err(ElfError::NotX86_64(3))));
        assert!(matches!(
            patch(16, &[3, 0]),
            Err(ElfError::NotExecutable(3))
        ));
        assert!(matches!(
            patch(54, &[32, 0]),
            Err(ElfError::BadPhentsize(32))
        ));
        assert!(matches!(
            patch(56, &[0, 0]),
            Err(ElfError::NoProgramHeaders)
        ));
        assert!(matches!(
            patch(56, &[0xff, 0xff]),
            Err(ElfError::ProgramHeadersOutOfFile { .. })
        ));
        assert!(matches!(
            patch(32, &u64::MAX.to_le_bytes()),
            Err(ElfError::ProgramHeadersOutOfFile { .. })
        ));
        // Entry outside the only segment.
        assert!(matches!(
            patch(24, &0x20_0000u64.to_le_bytes()),
            Err(ElfError::EntryOutsideSegments { entry: 0x20_0000 })
        ));
    }

    #[test]
    fn rejects_lying_program_headers() {
        let good = build_elf64(&[(0x10_0000, &[0xf4; 8])], 0x10_0000);
        let ph = 64;
        let patch = |field: usize, value: u64| {
            let mut e = good.clone();
            e[ph + field..ph + field + 8].copy_from_slice(&value.to_le_bytes());
            parse_bytes(&e)
        };
        // p_offset / p_filesz beyond the file.
        assert!(matches!(
            patch(8, 1 << 40),
            Err(ElfError::SegmentOutOfFile { index: 0, .. })
        ));
        assert!(matches!(
            patch(8, u64::MAX),
            Err(ElfError::SegmentOutOfFile { .. })
        ));
        assert!(matches!(
            patch(32, 1 << 20),
            Err(ElfError::FileszExceedsMemsz { .. })
        ));
        // p_paddr + p_memsz overflows.
        assert!(matches!(
            patch(24, u64::MAX - 2),
            Err(ElfError::AddressOverflow { .. })
        ));
        // A segment's bytes cut off at the end of the file.
        assert!(matches!(
            parse_bytes(&good[..good.len() - 1]),
            Err(ElfError::SegmentOutOfFile { .. })
        ));
        // No PT_LOAD at all.
        let mut e = good.clone();
        e[ph..ph + 4].copy_from_slice(&6u32.to_le_bytes());
        assert!(matches!(parse_bytes(&e), Err(ElfError::NoLoadSegments)));
    }

    #[test]
    fn rejects_malformed_notes() {
        let elf = ElfBuilder::new(0x10_0000)
            .segment(0x10_0000, &[0x90; 16])
            .note("Linux", 1, &[0; 4])
            .build();
        assert!(parse_bytes(&elf).unwrap().is_linux());
        // Find the note segment (the builder puts PT_NOTE last) and make its
        // namesz lie.
        let phnum = u16::from_le_bytes([elf[56], elf[57]]) as usize;
        let note_ph = 64 + (phnum - 1) * 56;
        let note_off = le64(&elf, note_ph + 8) as usize;
        let mut bad = elf.clone();
        bad[note_off..note_off + 4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(parse_bytes(&bad), Err(ElfError::BadNote { .. })));
        let mut huge = elf.clone();
        huge[note_ph + 32..note_ph + 40].copy_from_slice(&(1u64 << 30).to_le_bytes());
        assert!(matches!(
            parse_bytes(&huge),
            Err(ElfError::NoteTooLarge { .. })
        ));
    }

    #[test]
    fn parses_elf32_only_when_asked() {
        let elf = ElfBuilder::new32(0x10_0004)
            .segment_with_memsz(0x10_0000, &[1, 2, 3, 4, 5], 0x1000)
            .segment_at(0xc020_0000, 0x20_0000, &[6; 8], 8)
            .build();
        assert!(matches!(parse_bytes(&elf), Err(ElfError::Elf32)));
        let k = parse_any_class(&mut Cursor::new(&elf)).unwrap();
        assert_eq!(k.entry, 0x10_0004);
        assert_eq!(k.segments.len(), 2);
        assert_eq!(
            (
                k.segments[0].paddr,
                k.segments[0].filesz,
                k.segments[0].memsz
            ),
            (0x10_0000, 5, 0x1000)
        );
        assert_eq!(
            (k.segments[1].vaddr, k.segments[1].paddr),
            (0xc020_0000, 0x20_0000)
        );
        let off = k.segments[0].offset as usize;
        assert_eq!(&elf[off..off + 5], &[1, 2, 3, 4, 5]);
        assert_eq!(k.physical_entry(), Some(0x10_0004));
        // ELF64 through the same door.
        let elf64 = build_elf64(&[(0x10_0000, &[0xf4])], 0x10_0000);
        assert_eq!(
            parse_any_class(&mut Cursor::new(&elf64)).unwrap(),
            parse_bytes(&elf64).unwrap()
        );
    }

    #[test]
    fn rejects_bad_elf32_headers() {
        let good = ElfBuilder::new32(0x10_0000)
            .segment(0x10_0000, &[0xf4])
            .build();
        let patch = |at: usize, bytes: &[u8]| {
            let mut e = good.clone();
            e[at..at + bytes.len()].copy_from_slice(bytes);
            parse_any_class(&mut Cursor::new(&e))
        };
        assert!(matches!(patch(18, &[62, 0]), Err(ElfError::NotI386(62))));
        assert!(matches!(
            patch(42, &[56, 0]),
            Err(ElfError::BadPhentsize(56))
        ));
        assert!(matches!(
            patch(28, &0xffff_fff0u32.to_le_bytes()),
            Err(ElfError::ProgramHeadersOutOfFile { .. })
        ));
        // p_offset beyond the file.
        assert!(matches!(
            patch(52 + 4, &0x10_0000u32.to_le_bytes()),
            Err(ElfError::SegmentOutOfFile { .. })
        ));
        assert!(matches!(
            parse_any_class(&mut Cursor::new(&good[..51])),
            Err(ElfError::TruncatedHeader { len: 51 })
        ));
        // An ELF64 x86-64 header that claims ELF32 is read as ELF32 (and
        // fails on the machine).
        let mut e64 = build_elf64(&[(0x10_0000, &[0xf4])], 0x10_0000);
        e64[4] = 1;
        assert!(matches!(
            parse_any_class(&mut Cursor::new(&e64)),
            Err(ElfError::NotI386(62))
        ));
    }

    #[test]
    fn physical_entry_follows_virtual_then_physical_addresses() {
        let seg = |vaddr, paddr| LoadSegment {
            index: 0,
            offset: 0,
            vaddr,
            paddr,
            filesz: 0,
            memsz: 0x1000,
        };
        let kernel = |entry, segments| ElfKernel {
            entry,
            segments,
            note_names: Vec::new(),
            pvh_entry: None,
        };
        let higher_half = vec![seg(0xc010_0000, 0x10_0000)];
        assert_eq!(
            kernel(0xc010_0040, higher_half.clone()).physical_entry(),
            Some(0x10_0040)
        );
        assert_eq!(
            kernel(0x10_0040, higher_half.clone()).physical_entry(),
            Some(0x10_0040)
        );
        assert_eq!(kernel(0xc010_1000, higher_half).physical_entry(), None);
        // No overflow near the top of the address space.
        let top = vec![seg(u64::MAX - 0xfff, 0x10_0000)];
        assert_eq!(kernel(u64::MAX, top).physical_entry(), Some(0x10_0fff));
    }

    #[test]
    fn finds_the_pvh_entry_note() {
        let with = |desc: &[u8]| {
            let elf = ElfBuilder::new(0x100_0000)
                .segment(0x100_0000, &[0x90; 16])
                .note("Linux", 1, b"6.1")
                .note("Xen", XEN_ELFNOTE_PHYS32_ENTRY, desc)
                .build();
            parse_bytes(&elf)
        };
        // Linux writes it as a 64-bit value; Xen kernels as 32-bit.
        assert_eq!(
            with(&0x100_0040u64.to_le_bytes()).unwrap().pvh_entry,
            Some(0x100_0040)
        );
        assert_eq!(
            with(&0x100_0080u32.to_le_bytes()).unwrap().pvh_entry,
            Some(0x100_0080)
        );
        // Not a 32-bit physical address, or a descriptor of another size.
        assert!(matches!(
            with(&(1u64 << 32).to_le_bytes()),
            Err(ElfError::BadNote { .. })
        ));
        assert!(matches!(with(&[1, 2]), Err(ElfError::BadNote { .. })));
        // Another Xen note type is no PVH entry.
        let elf = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[0x90; 16])
            .note("Xen", 6, &0x100_0040u64.to_le_bytes())
            .build();
        assert_eq!(parse_bytes(&elf).unwrap().pvh_entry, None);
    }

    #[test]
    fn note_parser_never_panics_on_garbage() {
        let mut names = ElfKernel {
            entry: 0,
            segments: Vec::new(),
            note_names: Vec::new(),
            pvh_entry: None,
        };
        let mut x = 0x1234_5678u32;
        for len in 0..200 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x % 7) as u8
                })
                .collect();
            let _ = parse_notes(&data, 4, &mut names);
            let _ = parse_notes(&data, 8, &mut names);
        }
    }
}
