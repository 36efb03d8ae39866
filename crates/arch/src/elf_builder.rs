//! Builds small ELF64 x86-64 (and ELF32 i386) executables in memory, for
//! tests that boot tiny guests as bare-ELF or Multiboot kernels (and for this
//! crate's own loader tests).
//!
//! ```
//! use arch::boot::multiboot::MultibootAddresses;
//! use arch::elf_builder::{build_elf64, multiboot_header, ElfBuilder};
//! // hlt at 1 MiB.
//! let elf = build_elf64(&[(0x10_0000, &[0xf4])], 0x10_0000);
//! // A segment with 4 KiB of zeroed .bss and a Linux note.
//! let vmlinux_like = ElfBuilder::new(0x100_0000)
//!     .segment_with_memsz(0x100_0000, &[0xf4], 0x1000)
//!     .note("Linux", 6, b"6.1.0\0")
//!     .build();
//! // A Multiboot ELF32 kernel: the header starts the first segment (file
//! // offset 0x1000, within the first 8 KiB), hlt follows it.
//! let mut code = multiboot_header(0x3, None);
//! code.push(0xf4);
//! let multiboot = ElfBuilder::new32(0x10_000c).segment(0x10_0000, &code).build();
//! // An a.out-kludge header (flag 16): load the file from offset 0 at 1 MiB.
//! let kludge = multiboot_header(
//!     0,
//!     Some(MultibootAddresses {
//!         header_addr: 0x10_0000,
//!         load_addr: 0x10_0000,
//!         load_end_addr: 0,
//!         bss_end_addr: 0,
//!         entry_addr: 0x10_0020,
//!     }),
//! );
//! assert_eq!(kludge.len(), 32);
//! ```
//!
//! Layout: the ELF header, the program headers (one `PT_LOAD` per segment,
//! RWX, aligned to 4 KiB, then one `PT_NOTE` if there are notes), then each
//! segment's bytes at a file offset congruent to its address modulo 4 KiB,
//! then the notes.

use crate::boot::multiboot::{
    MultibootAddresses, MULTIBOOT_FLAG_ADDRESSES, MULTIBOOT_HEADER_MAGIC,
};

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const EHDR32_SIZE: usize = 52;
const PHDR32_SIZE: usize = 32;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_RWX: u32 = 7;
const SEGMENT_ALIGN: u64 = 0x1000;

#[derive(Debug, Clone)]
struct Segment {
    vaddr: u64,
    paddr: u64,
    data: Vec<u8>,
    memsz: u64,
}

/// An ELF64 x86-64 (or ELF32 i386) `ET_EXEC` under construction.
#[derive(Debug, Clone)]
pub struct ElfBuilder {
    entry: u64,
    segments: Vec<Segment>,
    notes: Vec<u8>,
    elf32: bool,
}

impl ElfBuilder {
    /// An ELF64 x86-64 executable entered at `entry`.
    pub fn new(entry: u64) -> Self {
        ElfBuilder {
            entry,
            segments: Vec::new(),
            notes: Vec::new(),
            elf32: false,
        }
    }

    /// An ELF32 i386 executable entered at `entry`. Addresses and sizes are
    /// truncated to 32 bits when built.
    pub fn new32(entry: u32) -> Self {
        ElfBuilder {
            elf32: true,
            ..ElfBuilder::new(entry.into())
        }
    }

    /// A `PT_LOAD` segment of `data` whose virtual address `vaddr` differs
    /// from its physical (load) address `paddr`, with memory size `memsz`
    /// (at least `data.len()`).
    pub fn segment_at(mut self, vaddr: u64, paddr: u64, data: &[u8], memsz: u64) -> Self {
        self.segments.push(Segment {
            vaddr,
            paddr,
            data: data.to_vec(),
            memsz: memsz.max(data.len() as u64),
        });
        self
    }

    /// A `PT_LOAD` segment of `data` at `paddr` (= vaddr).
    pub fn segment(self, paddr: u64, data: &[u8]) -> Self {
        self.segment_with_memsz(paddr, data, data.len() as u64)
    }

    /// A `PT_LOAD` segment whose memory size is `memsz` (at least
    /// `data.len()`): the bytes after `data` are zero (.bss).
    pub fn segment_with_memsz(self, paddr: u64, data: &[u8], memsz: u64) -> Self {
        self.segment_at(paddr, paddr, data, memsz)
    }

    /// A note (in the single `PT_NOTE` segment) named `name` of type
    /// `n_type` with descriptor `desc`.
    pub fn note(mut self, name: &str, n_type: u32, desc: &[u8]) -> Self {
        let namesz = name.len() + 1;
        self.notes.extend_from_slice(&(namesz as u32).to_le_bytes());
        self.notes
            .extend_from_slice(&(desc.len() as u32).to_le_bytes());
        self.notes.extend_from_slice(&n_type.to_le_bytes());
        self.notes.extend_from_slice(name.as_bytes());
        self.notes.push(0);
        pad_to(&mut self.notes, 4);
        self.notes.extend_from_slice(desc);
        pad_to(&mut self.notes, 4);
        self
    }

    /// The file's bytes.
    pub fn build(&self) -> Vec<u8> {
        let (ehdr_size, phdr_size) = if self.elf32 {
            (EHDR32_SIZE, PHDR32_SIZE)
        } else {
            (EHDR_SIZE, PHDR_SIZE)
        };
        let phnum = self.segments.len() + usize::from(!self.notes.is_empty());
        let mut out = vec![0u8; ehdr_size + phnum * phdr_size];

        // ELF header.
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = if self.elf32 { 1 } else { 2 }; // ELFCLASS32 / ELFCLASS64
        out[5] = 1; // ELFDATA2LSB
        out[6] = 1; // EV_CURRENT
        put16(&mut out, 16, 2); // ET_EXEC
        put32(&mut out, 20, 1);
        if self.elf32 {
            put16(&mut out, 18, 3); // EM_386
            put32(&mut out, 24, self.entry as u32);
            put32(&mut out, 28, ehdr_size as u32);
            put16(&mut out, 40, ehdr_size as u16);
            put16(&mut out, 42, phdr_size as u16);
            put16(&mut out, 44, phnum as u16);
        } else {
            put16(&mut out, 18, 62); // EM_X86_64
            put64(&mut out, 24, self.entry);
            put64(&mut out, 32, ehdr_size as u64);
            put16(&mut out, 52, ehdr_size as u16);
            put16(&mut out, 54, phdr_size as u16);
            put16(&mut out, 56, phnum as u16);
        }

        let mut phdrs = Vec::with_capacity(phnum);
        for seg in &self.segments {
            // File offset ≡ address (mod 4 KiB), as p_align requires.
            let want = seg.vaddr % SEGMENT_ALIGN;
            let have = out.len() as u64 % SEGMENT_ALIGN;
            let pad = (want + SEGMENT_ALIGN - have) % SEGMENT_ALIGN;
            out.resize(out.len() + pad as usize, 0);
            let offset = out.len() as u64;
            out.extend_from_slice(&seg.data);
            phdrs.push(Phdr {
                p_type: PT_LOAD,
                offset,
                vaddr: seg.vaddr,
                paddr: seg.paddr,
                filesz: seg.data.len() as u64,
                memsz: seg.memsz,
                align: SEGMENT_ALIGN,
            });
        }
        if !self.notes.is_empty() {
            pad_to(&mut out, 4);
            let offset = out.len() as u64;
            out.extend_from_slice(&self.notes);
            phdrs.push(Phdr {
                p_type: PT_NOTE,
                offset,
                vaddr: 0,
                paddr: 0,
                filesz: self.notes.len() as u64,
                memsz: 0,
                align: 4,
            });
        }
        for (i, ph) in phdrs.iter().enumerate() {
            let at = ehdr_size + i * phdr_size;
            let flags = if ph.p_type == PT_LOAD { PF_RWX } else { 4 };
            put32(&mut out, at, ph.p_type);
            if self.elf32 {
                put32(&mut out, at + 4, ph.offset as u32);
                put32(&mut out, at + 8, ph.vaddr as u32);
                put32(&mut out, at + 12, ph.paddr as u32);
                put32(&mut out, at + 16, ph.filesz as u32);
                put32(&mut out, at + 20, ph.memsz as u32);
                put32(&mut out, at + 24, flags);
                put32(&mut out, at + 28, ph.align as u32);
            } else {
                put32(&mut out, at + 4, flags);
                put64(&mut out, at + 8, ph.offset);
                put64(&mut out, at + 16, ph.vaddr);
                put64(&mut out, at + 24, ph.paddr);
                put64(&mut out, at + 32, ph.filesz);
                put64(&mut out, at + 40, ph.memsz);
                put64(&mut out, at + 48, ph.align);
            }
        }
        out
    }
}

struct Phdr {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

/// A valid ELF64 x86-64 executable with one `PT_LOAD` per `(paddr, bytes)`
/// (vaddr = paddr), entered at `entry`.
pub fn build_elf64(segments: &[(u64, &[u8])], entry: u64) -> Vec<u8> {
    segments
        .iter()
        .fold(ElfBuilder::new(entry), |b, &(paddr, data)| {
            b.segment(paddr, data)
        })
        .build()
}

/// A valid ELF32 i386 executable with one `PT_LOAD` per `(paddr, bytes)`
/// (vaddr = paddr), entered at `entry`.
pub fn build_elf32(segments: &[(u32, &[u8])], entry: u32) -> Vec<u8> {
    segments
        .iter()
        .fold(ElfBuilder::new32(entry), |b, &(paddr, data)| {
            b.segment(paddr.into(), data)
        })
        .build()
}

/// A Multiboot (v1) header with a valid checksum: 12 bytes (magic, flags,
/// checksum), or 32 with the address fields of `addresses` (and flag bit 16
/// set). Put it at a 4-byte aligned offset in the first 8 KiB of the image.
pub fn multiboot_header(flags: u32, addresses: Option<MultibootAddresses>) -> Vec<u8> {
    let flags = match addresses {
        Some(_) => flags | MULTIBOOT_FLAG_ADDRESSES,
        None => flags & !MULTIBOOT_FLAG_ADDRESSES,
    };
    let checksum = 0u32
        .wrapping_sub(MULTIBOOT_HEADER_MAGIC)
        .wrapping_sub(flags);
    let mut words = vec![MULTIBOOT_HEADER_MAGIC, flags, checksum];
    if let Some(a) = addresses {
        words.extend([
            a.header_addr,
            a.load_addr,
            a.load_end_addr,
            a.bss_end_addr,
            a.entry_addr,
        ]);
    }
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn pad_to(v: &mut Vec<u8>, align: usize) {
    let len = v.len().next_multiple_of(align);
    v.resize(len, 0);
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_where_the_headers_say() {
        let elf = build_elf64(&[(0x10_0123, b"abc"), (0x30_0000, b"defg")], 0x10_0123);
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([elf[56], elf[57]]), 2);
        for (i, (paddr, data)) in [(0x10_0123u64, &b"abc"[..]), (0x30_0000, b"defg")]
            .iter()
            .enumerate()
        {
            let ph = 64 + i * 56;
            let field = |f: usize| u64::from_le_bytes(elf[ph + f..ph + f + 8].try_into().unwrap());
            let offset = field(8) as usize;
            assert_eq!(field(24), *paddr);
            assert_eq!(field(16), *paddr);
            assert_eq!(field(8) % 0x1000, paddr % 0x1000);
            assert_eq!(&elf[offset..offset + data.len()], *data);
        }
    }

    #[test]
    fn elf32_headers_are_where_the_spec_says() {
        let elf = ElfBuilder::new32(0x10_0010)
            .segment_at(0xc010_0000, 0x10_0000, b"abcd", 0x2000)
            .build();
        let f32 = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
        assert_eq!((elf[4], u16::from_le_bytes([elf[18], elf[19]])), (1, 3));
        assert_eq!((f32(24), f32(28)), (0x10_0010, 52));
        assert_eq!(u16::from_le_bytes([elf[44], elf[45]]), 1);
        let ph = 52;
        assert_eq!(f32(ph), 1);
        assert_eq!((f32(ph + 8), f32(ph + 12)), (0xc010_0000, 0x10_0000));
        assert_eq!((f32(ph + 16), f32(ph + 20)), (4, 0x2000));
        let offset = f32(ph + 4) as usize;
        assert_eq!(offset % 0x1000, 0);
        assert_eq!(&elf[offset..offset + 4], b"abcd");
    }

    #[test]
    fn multiboot_headers_sum_to_zero() {
        for header in [
            multiboot_header(0x3, None),
            multiboot_header(
                0x1_0002,
                Some(MultibootAddresses {
                    header_addr: 1,
                    load_addr: 2,
                    load_end_addr: 3,
                    bss_end_addr: 4,
                    entry_addr: 5,
                }),
            ),
        ] {
            let words: Vec<u32> = header
                .chunks_exact(4)
                .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
                .collect();
            assert_eq!(words[0], 0x1bad_b002);
            assert_eq!(words[0].wrapping_add(words[1]).wrapping_add(words[2]), 0);
            if words.len() == 8 {
                assert_eq!(words[1], 0x1_0002);
                assert_eq!(&words[3..], &[1, 2, 3, 4, 5]);
            } else {
                assert_eq!(words[1], 0x3);
            }
        }
    }
}
