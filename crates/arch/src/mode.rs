//! Entry state: what a 64-bit kernel expects to find when its first
//! instruction runs (Linux's 64-bit boot protocol, and bare ELF kernels), and
//! the 32-bit protected-mode state of a Multiboot entry.
//!
//! [`setup_long_mode`] writes the boot structures into guest memory
//! ([`setup_protected_mode`] writes the same GDT, IDT and TSS, without page
//! tables):
//!
//! | what | where | contents |
//! |---|---|---|
//! | GDT | [`BOOT_GDT_ADDR`] | 0x00 null, 0x08 flat 32-bit code (Multiboot), 0x10 64-bit code (`__BOOT_CS`), 0x18 flat data (`__BOOT_DS`, also the 32-bit data segment), 0x20 busy TSS (16 bytes) |
//! | IDT | [`BOOT_IDT_ADDR`] | 16 zero bytes; IDTR.limit = 0, so any exception triple-faults |
//! | TSS | [`BOOT_TSS_ADDR`] | zero, I/O map base = 0x68 (no I/O bitmap) |
//! | PML4 | [`PML4_ADDR`] | entry 0 → PDPT |
//! | PDPT | [`PDPT_ADDR`] | entries 0..4 → the four page directories |
//! | PDs | [`PD_ADDR`].. | 2 MiB pages: virtual = physical for 0..4 GiB (present, writable, supervisor) |
//!
//! [`long_mode_sregs`] and [`long_mode_regs`] are the matching register
//! state: CR0 = PE|ET|NE|PG, CR4 = PAE, EFER = LME|LMA, CR3 = PML4, CS = 0x10
//! (L=1), DS/ES/FS/GS/SS = 0x18, TR = 0x20, RFLAGS = 0x2 (interrupts off).
//! [`protected_mode_sregs`] is the Multiboot state: CR0 = PE|ET (paging off),
//! CR4 = EFER = 0, CS = 0x08 (32-bit), data segments 0x18, the same TR.
//! The busy TSS type (0xb) means "busy 32-bit TSS" outside long mode, so TR
//! is valid in both.

use hv::{DescriptorTable, Regs, SRegs, Segment};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::layout::{
    BOOT_CS32_SELECTOR, BOOT_CS_SELECTOR, BOOT_DS_SELECTOR, BOOT_GDT_ADDR, BOOT_GDT_SLOTS,
    BOOT_IDT_ADDR, BOOT_TSS_ADDR, BOOT_TSS_SELECTOR, BOOT_TSS_SIZE, LAPIC_ADDR, PDPT_ADDR, PD_ADDR,
    PD_COUNT, PML4_ADDR,
};

/// CR0 bits.
pub const CR0_PE: u64 = 1 << 0;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_NE: u64 = 1 << 5;
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// EFER bits.
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
/// IA32_APIC_BASE: the xAPIC is enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE: this is the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;

/// Page-table entry bits.
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_PAGE_SIZE: u64 = 1 << 7;

/// The busy 64-bit TSS type (a TSS loaded in TR is busy).
const TSS_TYPE_BUSY: u8 = 0xb;

/// Errors of [`setup_long_mode`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Guest memory does not cover a boot structure.
    #[error("cannot write the boot {what} at guest address {addr:#x}")]
    Write {
        what: &'static str,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// Writes the boot GDT, IDT, TSS and the identity page tables for the low
/// 4 GiB (see the module documentation).
pub fn setup_long_mode<M: GuestMemoryBackend>(mem: &M) -> Result<(), Error> {
    setup_protected_mode(mem)?;

    let mut pml4 = [0u8; 4096];
    pml4[..8].copy_from_slice(&(PDPT_ADDR | PTE_PRESENT | PTE_WRITABLE).to_le_bytes());
    write(mem, "PML4", PML4_ADDR, &pml4)?;

    let mut pdpt = [0u8; 4096];
    for i in 0..PD_COUNT {
        let entry = (PD_ADDR + i * 0x1000) | PTE_PRESENT | PTE_WRITABLE;
        let at = i as usize * 8;
        pdpt[at..at + 8].copy_from_slice(&entry.to_le_bytes());
    }
    write(mem, "PDPT", PDPT_ADDR, &pdpt)?;

    for i in 0..PD_COUNT {
        let mut pd = [0u8; 4096];
        for (j, slot) in pd.chunks_exact_mut(8).enumerate() {
            let phys = ((i << 9) | j as u64) << 21;
            slot.copy_from_slice(
                &(phys | PTE_PRESENT | PTE_WRITABLE | PTE_PAGE_SIZE).to_le_bytes(),
            );
        }
        write(mem, "page directory", PD_ADDR + i * 0x1000, &pd)?;
    }
    Ok(())
}

/// Where the boot GDT, IDT and TSS are: [`BootTables::DEFAULT`] for every
/// boot, or [`BootTables::packed`] where a Multiboot kernel occupies the
/// default places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootTables {
    pub gdt: u64,
    pub idt: u64,
    pub tss: u64,
}

impl BootTables {
    /// [`BOOT_GDT_ADDR`], [`BOOT_IDT_ADDR`], [`BOOT_TSS_ADDR`].
    pub const DEFAULT: BootTables = BootTables {
        gdt: BOOT_GDT_ADDR,
        idt: BOOT_IDT_ADDR,
        tss: BOOT_TSS_ADDR,
    };
    /// Bytes of [`BootTables::packed`] tables.
    pub const PACKED_SIZE: u64 = 0x100;
    /// Alignment of [`BootTables::packed`] tables.
    pub const PACKED_ALIGN: u64 = 0x40;

    /// The three tables one after the other from `base`: the GDT at +0,
    /// the IDT at +0x40, the TSS at +0x80 ([`BootTables::PACKED_SIZE`]
    /// bytes in all).
    pub const fn packed(base: u64) -> BootTables {
        BootTables {
            gdt: base,
            idt: base + 0x40,
            tss: base + 0x80,
        }
    }

    /// The guest-physical ranges the three tables occupy.
    pub fn ranges(&self) -> [std::ops::Range<u64>; 3] {
        [
            self.gdt..self.gdt + BOOT_GDT_SLOTS as u64 * 8,
            self.idt..self.idt + 16,
            self.tss..self.tss + BOOT_TSS_SIZE,
        ]
    }
}

const _: () = {
    assert!(BOOT_GDT_SLOTS as u64 * 8 <= 0x40);
    assert!(0x80 + BOOT_TSS_SIZE <= BootTables::PACKED_SIZE);
};

/// Writes the boot GDT, IDT and TSS (no page tables): what a 32-bit
/// protected-mode entry ([`protected_mode_sregs`]) needs.
pub fn setup_protected_mode<M: GuestMemoryBackend>(mem: &M) -> Result<(), Error> {
    setup_boot_tables(mem, &BootTables::DEFAULT)
}

/// Writes the boot GDT, IDT and TSS where `tables` says (the GDT's TSS
/// descriptor points at `tables.tss`).
pub fn setup_boot_tables<M: GuestMemoryBackend>(mem: &M, tables: &BootTables) -> Result<(), Error> {
    write(mem, "GDT", tables.gdt, &gdt_bytes(tables.tss))?;
    write(mem, "IDT", tables.idt, &[0u8; 16])?;
    write(mem, "TSS", tables.tss, &tss_bytes())
}

fn write<M: GuestMemoryBackend>(
    mem: &M,
    what: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<(), Error> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| Error::Write { what, addr, source })
}

/// The 64-bit code segment (selector 0x10).
pub fn code_segment() -> Segment {
    Segment::flat(BOOT_CS_SELECTOR, 0xb, true)
}

/// The flat 32-bit code segment (selector 0x08): base 0, limit 4 GiB,
/// execute/read, D = 1.
pub fn code32_segment() -> Segment {
    Segment::flat(BOOT_CS32_SELECTOR, 0xb, false)
}

/// The flat data segment (selector 0x18).
pub fn data_segment() -> Segment {
    Segment::flat(BOOT_DS_SELECTOR, 0x3, false)
}

/// The boot TSS as TR holds it (selector 0x20, busy 64-bit TSS).
pub fn tss_segment() -> Segment {
    tss_segment_at(BOOT_TSS_ADDR)
}

/// [`tss_segment`] for a TSS at `base`.
pub fn tss_segment_at(base: u64) -> Segment {
    Segment {
        base,
        limit: (BOOT_TSS_SIZE - 1) as u32,
        selector: BOOT_TSS_SELECTOR,
        type_: TSS_TYPE_BUSY,
        present: true,
        dpl: 0,
        db: false,
        s: false,
        l: false,
        g: false,
        avl: false,
        unusable: false,
    }
}

/// Encodes the low 8 bytes of a segment descriptor (the high 8 bytes of a
/// 64-bit system descriptor are `base >> 32`).
pub fn descriptor(seg: &Segment) -> u64 {
    let limit = if seg.g { seg.limit >> 12 } else { seg.limit } as u64 & 0xf_ffff;
    let base = seg.base & 0xffff_ffff;
    let access = u64::from(seg.type_ & 0xf)
        | u64::from(seg.s) << 4
        | u64::from(seg.dpl & 3) << 5
        | u64::from(seg.present) << 7;
    let flags =
        u64::from(seg.avl) | u64::from(seg.l) << 1 | u64::from(seg.db) << 2 | u64::from(seg.g) << 3;
    (limit & 0xffff)
        | (base & 0xff_ffff) << 16
        | access << 40
        | (limit >> 16) << 48
        | flags << 52
        | (base >> 24) << 56
}

/// The boot GDT as it is written to [`BOOT_GDT_ADDR`].
pub fn gdt() -> [u64; BOOT_GDT_SLOTS] {
    gdt_for(BOOT_TSS_ADDR)
}

/// The boot GDT with its TSS descriptor for a TSS at `tss_base`.
pub fn gdt_for(tss_base: u64) -> [u64; BOOT_GDT_SLOTS] {
    let tss = tss_segment_at(tss_base);
    [
        0,
        descriptor(&code32_segment()),
        descriptor(&code_segment()),
        descriptor(&data_segment()),
        descriptor(&tss),
        tss.base >> 32,
    ]
}

fn gdt_bytes(tss_base: u64) -> [u8; BOOT_GDT_SLOTS * 8] {
    let mut bytes = [0u8; BOOT_GDT_SLOTS * 8];
    for (slot, entry) in bytes.chunks_exact_mut(8).zip(gdt_for(tss_base)) {
        slot.copy_from_slice(&entry.to_le_bytes());
    }
    bytes
}

fn tss_bytes() -> [u8; BOOT_TSS_SIZE as usize] {
    let mut tss = [0u8; BOOT_TSS_SIZE as usize];
    // I/O map base at the TSS limit: no I/O permission bitmap.
    tss[0x66..0x68].copy_from_slice(&(BOOT_TSS_SIZE as u16).to_le_bytes());
    tss
}

/// Segment, control and descriptor-table registers for a 64-bit entry with
/// the structures of [`setup_long_mode`]. APIC_BASE is the default LAPIC
/// address, enabled, with the BSP flag (this is the boot vCPU's state).
pub fn long_mode_sregs() -> SRegs {
    SRegs {
        cr0: CR0_PE | CR0_ET | CR0_NE | CR0_PG,
        cr3: PML4_ADDR,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
        ..flat_sregs(code_segment(), &BootTables::DEFAULT)
    }
}

/// Segment, control and descriptor-table registers for a 32-bit
/// protected-mode entry (Multiboot) with the structures of
/// [`setup_protected_mode`]: CS = 0x08 (flat 32-bit code), DS/ES/FS/GS/SS =
/// 0x18 (flat data), CR0 = PE|ET (paging off), CR3 = CR4 = EFER = 0; APIC_BASE
/// as in [`long_mode_sregs`].
pub fn protected_mode_sregs() -> SRegs {
    protected_mode_sregs_with(&BootTables::DEFAULT)
}

/// [`protected_mode_sregs`] with the tables of [`setup_boot_tables`] at
/// `tables`.
pub fn protected_mode_sregs_with(tables: &BootTables) -> SRegs {
    SRegs {
        cr0: CR0_PE | CR0_ET,
        cr3: 0,
        cr4: 0,
        efer: 0,
        ..flat_sregs(code32_segment(), tables)
    }
}

/// The boot GDT/IDT/TSS state with code segment `cs`; control registers
/// zero.
fn flat_sregs(cs: Segment, tables: &BootTables) -> SRegs {
    let data = data_segment();
    SRegs {
        cs,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: tss_segment_at(tables.tss),
        ldt: Segment {
            type_: 0x2,
            unusable: true,
            ..Segment::default()
        },
        gdt: DescriptorTable {
            base: tables.gdt,
            limit: (BOOT_GDT_SLOTS * 8 - 1) as u16,
        },
        idt: DescriptorTable {
            base: tables.idt,
            limit: 0,
        },
        cr0: 0,
        cr2: 0,
        cr3: 0,
        cr4: 0,
        cr8: 0,
        efer: 0,
        apic_base: LAPIC_ADDR | APIC_BASE_ENABLE | APIC_BASE_BSP,
    }
}

/// General registers for a 64-bit entry at `entry` with RSI = `rsi` (Linux:
/// the zero page) and RSP = `rsp`; RFLAGS = 0x2 (interrupts off), the rest 0.
pub fn long_mode_regs(entry: u64, rsi: u64, rsp: u64) -> Regs {
    Regs {
        rip: entry,
        rsi,
        rsp,
        rflags: 0x2,
        ..Regs::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ram_regions;
    use vm_memory::GuestMemoryMmap;

    fn memory(size: u64) -> GuestMemoryMmap {
        let ranges: Vec<_> = ram_regions(size)
            .into_iter()
            .map(|(a, s)| (GuestAddress(a), s as usize))
            .collect();
        GuestMemoryMmap::from_ranges(&ranges).unwrap()
    }

    fn read_u64(mem: &GuestMemoryMmap, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        u64::from_le_bytes(b)
    }

    /// A 4-level walk of the boot page tables: `None` on a not-present entry.
    fn translate(mem: &GuestMemoryMmap, cr3: u64, va: u64) -> Option<u64> {
        const ADDR: u64 = 0x000f_ffff_ffff_f000;
        let pml4e = read_u64(mem, (cr3 & ADDR) + ((va >> 39) & 0x1ff) * 8);
        if pml4e & PTE_PRESENT == 0 {
            return None;
        }
        let pdpte = read_u64(mem, (pml4e & ADDR) + ((va >> 30) & 0x1ff) * 8);
        if pdpte & PTE_PRESENT == 0 {
            return None;
        }
        if pdpte & PTE_PAGE_SIZE != 0 {
            return Some((pdpte & ADDR & !0x3fff_ffff) | (va & 0x3fff_ffff));
        }
        let pde = read_u64(mem, (pdpte & ADDR) + ((va >> 21) & 0x1ff) * 8);
        if pde & PTE_PRESENT == 0 {
            return None;
        }
        if pde & PTE_PAGE_SIZE != 0 {
            return Some((pde & ADDR & !0x1f_ffff) | (va & 0x1f_ffff));
        }
        let pte = read_u64(mem, (pde & ADDR) + ((va >> 12) & 0x1ff) * 8);
        if pte & PTE_PRESENT == 0 {
            return None;
        }
        Some((pte & ADDR) | (va & 0xfff))
    }

    #[test]
    fn page_tables_identity_map_the_low_4g() {
        let mem = memory(32 << 20);
        setup_long_mode(&mem).unwrap();
        let cr3 = long_mode_sregs().cr3;
        for va in [
            0u64,
            0x7000,
            0x1f_ffff,
            0x20_0000,
            0x123_4567,
            0xbfff_ffff,
            LAPIC_ADDR,
            0xffff_fff0,
        ] {
            assert_eq!(translate(&mem, cr3, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&mem, cr3, 0x1_0000_0000), None);
        assert_eq!(translate(&mem, cr3, 0xffff_8000_0000_0000), None);
        // Every entry that maps is writable, and the PDs use 2 MiB pages.
        assert_eq!(read_u64(&mem, PD_ADDR + 8) & 0xfff, 0x83);
    }

    #[test]
    fn gdt_in_memory_matches_the_segment_registers() {
        let mem = memory(16 << 20);
        setup_long_mode(&mem).unwrap();
        let sregs = long_mode_sregs();
        let at = |sel: u16| read_u64(&mem, sregs.gdt.base + u64::from(sel));
        assert_eq!(at(0), 0);
        // The 32-bit code segment of a Multiboot entry.
        assert_eq!(at(8), 0x00cf_9b00_0000_ffff);
        assert_eq!(at(sregs.cs.selector), 0x00af_9b00_0000_ffff);
        assert_eq!(at(sregs.ds.selector), 0x00cf_9300_0000_ffff);
        assert_eq!(at(sregs.tr.selector), 0x0000_8b00_1000_0067);
        assert_eq!(at(sregs.tr.selector + 8), 0);
        assert_eq!(u64::from(sregs.gdt.limit) + 1, BOOT_GDT_SLOTS as u64 * 8);
        // Linux's 64-bit boot protocol selectors.
        assert_eq!(sregs.cs.selector, 0x10);
        assert!(sregs.cs.l && !sregs.cs.db);
        for seg in [sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss] {
            assert_eq!(seg.selector, 0x18);
        }
        assert_eq!(sregs.idt.limit, 0);
        assert_eq!(read_u64(&mem, BOOT_IDT_ADDR), 0);
        // TSS: no I/O bitmap.
        let mut iomap = [0u8; 2];
        mem.read_slice(&mut iomap, GuestAddress(BOOT_TSS_ADDR + 0x66))
            .unwrap();
        assert_eq!(u16::from_le_bytes(iomap), 0x68);
    }

    #[test]
    fn control_registers_enable_long_mode() {
        let s = long_mode_sregs();
        assert_eq!(s.cr0, 0x8000_0031);
        assert_eq!(s.cr4, 0x20);
        assert_eq!(s.efer, 0x500);
        assert_eq!(s.cr3, PML4_ADDR);
        assert_eq!(s.apic_base, 0xfee0_0900);
        assert_eq!(s.tr.type_, 0xb);
        let r = long_mode_regs(0x10_0200, 0x7000, 0x8ff0);
        assert_eq!(
            (r.rip, r.rsi, r.rsp, r.rflags),
            (0x10_0200, 0x7000, 0x8ff0, 2)
        );
        assert_eq!(r.rdi, 0);
    }

    #[test]
    fn protected_mode_is_flat_32_bit_without_paging() {
        let mem = memory(16 << 20);
        setup_protected_mode(&mem).unwrap();
        let s = protected_mode_sregs();
        assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (0x11, 0, 0, 0));
        assert_eq!(s.cs.selector, 0x08);
        assert!(s.cs.db && !s.cs.l && s.cs.g);
        assert_eq!((s.cs.base, s.cs.limit, s.cs.type_), (0, 0xffff_ffff, 0xb));
        for seg in [s.ds, s.es, s.fs, s.gs, s.ss] {
            assert_eq!(seg.selector, 0x18);
            assert!(seg.db && seg.g && seg.present);
            assert_eq!((seg.base, seg.limit, seg.type_), (0, 0xffff_ffff, 0x3));
        }
        let at = |sel: u16| read_u64(&mem, s.gdt.base + u64::from(sel));
        assert_eq!(at(s.cs.selector), descriptor(&s.cs));
        assert_eq!(at(s.ds.selector), descriptor(&s.ds));
        assert_eq!(s.tr, long_mode_sregs().tr);
        assert_eq!(s.apic_base, long_mode_sregs().apic_base);
        // No page tables written.
        assert_eq!(read_u64(&mem, PML4_ADDR), 0);
    }

    #[test]
    fn missing_memory_is_an_error() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x10_0000), 0x1000)]).unwrap();
        assert!(matches!(
            setup_long_mode(&mem),
            Err(Error::Write { what: "GDT", .. })
        ));
    }
}
