//! Builds small ELF64 x86-64 executables in memory, for tests that boot tiny
//! guests as bare-ELF kernels (and for this crate's own loader tests).
//!
//! ```
//! use arch::elf_builder::{build_elf64, ElfBuilder};
//! // hlt at 1 MiB.
//! let elf = build_elf64(&[(0x10_0000, &[0xf4])], 0x10_0000);
//! // A segment with 4 KiB of zeroed .bss and a Linux note.
//! let vmlinux_like = ElfBuilder::new(0x100_0000)
//!     .segment_with_memsz(0x100_0000, &[0xf4], 0x1000)
//!     .note("Linux", 6, b"6.1.0\0")
//!     .build();
//! ```
//!
//! Layout: the ELF header, the program headers (one `PT_LOAD` per segment,
//! vaddr = paddr, RWX, aligned to 4 KiB, then one `PT_NOTE` if there are
//! notes), then each segment's bytes at a file offset congruent to its address
//! modulo 4 KiB, then the notes.

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_RWX: u32 = 7;
const SEGMENT_ALIGN: u64 = 0x1000;

#[derive(Debug, Clone)]
struct Segment {
    paddr: u64,
    data: Vec<u8>,
    memsz: u64,
}

/// An ELF64 x86-64 `ET_EXEC` under construction.
#[derive(Debug, Clone)]
pub struct ElfBuilder {
    entry: u64,
    segments: Vec<Segment>,
    notes: Vec<u8>,
}

impl ElfBuilder {
    /// An executable entered at `entry`.
    pub fn new(entry: u64) -> Self {
        ElfBuilder {
            entry,
            segments: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A `PT_LOAD` segment of `data` at `paddr` (= vaddr).
    pub fn segment(self, paddr: u64, data: &[u8]) -> Self {
        self.segment_with_memsz(paddr, data, data.len() as u64)
    }

    /// A `PT_LOAD` segment whose memory size is `memsz` (at least
    /// `data.len()`): the bytes after `data` are zero (.bss).
    pub fn segment_with_memsz(mut self, paddr: u64, data: &[u8], memsz: u64) -> Self {
        self.segments.push(Segment {
            paddr,
            data: data.to_vec(),
            memsz: memsz.max(data.len() as u64),
        });
        self
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
        let phnum = self.segments.len() + usize::from(!self.notes.is_empty());
        let mut out = vec![0u8; EHDR_SIZE + phnum * PHDR_SIZE];

        // ELF header.
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // ELFDATA2LSB
        out[6] = 1; // EV_CURRENT
        put16(&mut out, 16, 2); // ET_EXEC
        put16(&mut out, 18, 62); // EM_X86_64
        put32(&mut out, 20, 1);
        put64(&mut out, 24, self.entry);
        put64(&mut out, 32, EHDR_SIZE as u64);
        put16(&mut out, 52, EHDR_SIZE as u16);
        put16(&mut out, 54, PHDR_SIZE as u16);
        put16(&mut out, 56, phnum as u16);

        let mut phdrs = Vec::with_capacity(phnum);
        for seg in &self.segments {
            // File offset ≡ address (mod 4 KiB), as p_align requires.
            let want = seg.paddr % SEGMENT_ALIGN;
            let have = out.len() as u64 % SEGMENT_ALIGN;
            let pad = (want + SEGMENT_ALIGN - have) % SEGMENT_ALIGN;
            out.resize(out.len() + pad as usize, 0);
            let offset = out.len() as u64;
            out.extend_from_slice(&seg.data);
            phdrs.push(Phdr {
                p_type: PT_LOAD,
                offset,
                addr: seg.paddr,
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
                addr: 0,
                filesz: self.notes.len() as u64,
                memsz: 0,
                align: 4,
            });
        }
        for (i, ph) in phdrs.iter().enumerate() {
            let at = EHDR_SIZE + i * PHDR_SIZE;
            put32(&mut out, at, ph.p_type);
            put32(
                &mut out,
                at + 4,
                if ph.p_type == PT_LOAD { PF_RWX } else { 4 },
            );
            put64(&mut out, at + 8, ph.offset);
            put64(&mut out, at + 16, ph.addr);
            put64(&mut out, at + 24, ph.addr);
            put64(&mut out, at + 32, ph.filesz);
            put64(&mut out, at + 40, ph.memsz);
            put64(&mut out, at + 48, ph.align);
        }
        out
    }
}

struct Phdr {
    p_type: u32,
    offset: u64,
    addr: u64,
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
}
