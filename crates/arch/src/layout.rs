//! The x86 machine's guest-physical memory map.
//!
//! ```text
//! 0x0000_0000 ┬─────────────────────────────── RAM (low) ───────────────────────────────
//!             │ 0x0000_0000..0x0000_0500  real-mode IVT + BDA (left zero)
//!             │ 0x0000_0500..0x0000_0530  boot GDT (6 slots, TSS descriptor is 16 bytes;
//!             │                           0x08 is the 32-bit code segment of Multiboot)
//!             │ 0x0000_0540..0x0000_0550  boot IDT (empty: limit 0)
//!             │ 0x0000_1000..0x0000_1068  boot TSS (so that TR holds a valid busy TSS)
//!             │ 0x0000_7000..0x0000_8000  zero page: Linux `boot_params`, or the
//!             │                           Multiboot information (info, modules, mmap)
//!             │ 0x0000_8000..0x0000_8ff0  Linux boot stack (RSP = 0x8ff0)
//!             │ 0x0000_9000..0x0000_a000  PML4
//!             │ 0x0000_a000..0x0000_b000  PDPT
//!             │ 0x0000_b000..0x0000_f000  4 page directories (2 MiB pages, 0..4 GiB identity)
//!             │ 0x0001_0000..0x0009_0000  bare-ELF vCPU stacks, 2 KiB each, top 0x9_0000
//!             │                           (Multiboot: ESP = 0x9_0000)
//!             │ 0x0002_0000..0x0003_0000  Linux / Multiboot command line (64 KiB at most)
//!             │ 0x0009_fc00..0x0010_0000  EBDA / VGA / BIOS: reserved in the e820 map
//!             │ 0x000e_0000..0x0010_0000  ACPI: RSDP at 0xe_0000, then the tables
//!             │ 0x0010_0000..             kernel (bzImage protected-mode code at 1 MiB,
//!             │                           vmlinux, bare and Multiboot ELF at their
//!             │                           p_paddr, Multiboot a.out-kludge at load_addr)
//!             │ ... Linux initrd as high as possible below min(low RAM end,
//!             │     initrd_addr_max); Multiboot module right after the kernel
//! 0xC000_0000 ┼──────────────────────── 32-bit MMIO hole ──────────────────────────────
//!             │ 0xC000_0000..0xD000_0000  PCI BAR window (the host bridge's _CRS)
//!             │ 0xD000_0000..             virtio-mmio windows (vmm's board)
//!             │ 0xE000_0000..0xE010_0000  PCI ECAM of bus 0 (MCFG; reserved in the DSDT)
//!             │ 0xFEC0_0000 IOAPIC, 0xFEE0_0000 LAPIC
//! 0x1_0000_0000 ┴──────────── RAM above 4 GiB (the rest of the guest's memory) ──────────
//! ```
//!
//! The Linux stack and the bare-ELF stacks overlap nothing else the same boot
//! uses: a Linux boot does not use the bare stack area, and the command line
//! (0x20000) is only written for Linux boots, which use the stack at 0x8ff0.
//!
//! Everything below [`BARE_RESERVED_END`] belongs to the boot structures of a
//! bare-ELF boot, so a bare kernel's segments must load at or above it; a
//! Linux kernel loads at or above [`HIMEM_START`].

/// Start of the 32-bit MMIO hole (PCI BARs, IOAPIC, LAPIC, ...).
pub const MMIO_HOLE_START: u64 = 0xC000_0000;
/// End (exclusive) of the 32-bit MMIO hole; RAM continues here.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;

/// The PCI BAR window: 32-bit, non-prefetchable memory BARs of bus 0 are
/// assigned here (the host bridge's `_CRS` window).
pub const PCI_MMIO_START: u64 = 0xC000_0000;
/// Size of the PCI BAR window (up to the virtio-mmio windows).
pub const PCI_MMIO_SIZE: u64 = 0x1000_0000;
/// ECAM (MMCONFIG) of PCI bus 0: 4 KiB per function, 1 MiB.
pub const PCI_ECAM_START: u64 = 0xE000_0000;
/// Size of the ECAM region (one bus).
pub const PCI_ECAM_SIZE: u64 = 1 << 20;

/// The boot GDT. Selectors: 0x00 null, 0x08 flat 32-bit code (Multiboot),
/// 0x10 64-bit code (`__BOOT_CS`), 0x18 data (`__BOOT_DS`), 0x20 the TSS
/// (16-byte descriptor).
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// Number of 8-byte slots in the boot GDT (the TSS takes two).
pub const BOOT_GDT_SLOTS: usize = 6;
/// The boot IDT (16 zero bytes; IDTR.limit = 0 so any exception triple-faults).
pub const BOOT_IDT_ADDR: u64 = 0x540;
/// The boot TSS (104 bytes, no I/O bitmap).
pub const BOOT_TSS_ADDR: u64 = 0x1000;
/// Size of a 64-bit TSS.
pub const BOOT_TSS_SIZE: u64 = 0x68;

/// Selector of the flat 32-bit code segment (Multiboot entry).
pub const BOOT_CS32_SELECTOR: u16 = 0x08;
/// Selector of the 64-bit code segment (Linux's `__BOOT_CS`).
pub const BOOT_CS_SELECTOR: u16 = 0x10;
/// Selector of the data segment (Linux's `__BOOT_DS`).
pub const BOOT_DS_SELECTOR: u16 = 0x18;
/// Selector of the boot TSS.
pub const BOOT_TSS_SELECTOR: u16 = 0x20;

/// Linux's zero page (`struct boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial RSP of a Linux boot (16-byte aligned, inside 0x8000..0x9000).
pub const BOOT_STACK_TOP: u64 = 0x8ff0;

/// Page-map level 4 of the boot page tables (CR3).
pub const PML4_ADDR: u64 = 0x9000;
/// The page-directory-pointer table (`PML4[0]`).
pub const PDPT_ADDR: u64 = 0xa000;
/// The first of four page directories (`PDPT[0..4]`), one 4 KiB page each.
pub const PD_ADDR: u64 = 0xb000;
/// Number of page directories: 4 × 1 GiB = the low 4 GiB identity-mapped.
pub const PD_COUNT: u64 = 4;
/// End (exclusive) of the boot page tables.
pub const PAGE_TABLES_END: u64 = PD_ADDR + PD_COUNT * 0x1000;

/// Lowest bare-ELF vCPU stack address (the stacks grow down towards it).
pub const BARE_STACK_BOTTOM: u64 = 0x1_0000;
/// Initial RSP of vCPU 0 of a bare-ELF boot.
pub const BARE_STACK_TOP: u64 = 0x9_0000;
/// Stack size of each bare-ELF vCPU: vCPU `n` starts with
/// `RSP = BARE_STACK_TOP - n * BARE_STACK_PER_VCPU`.
pub const BARE_STACK_PER_VCPU: u64 = 0x800;
/// How many vCPUs have a bare-ELF stack (256).
pub const BARE_MAX_VCPUS: u64 = (BARE_STACK_TOP - BARE_STACK_BOTTOM) / BARE_STACK_PER_VCPU;
/// Bare-ELF segments must load at or above this address: everything below is
/// the boot GDT/IDT/TSS, page tables and vCPU stacks.
pub const BARE_RESERVED_END: u64 = BARE_STACK_TOP;

/// The Linux kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Room for the command line, including its terminating NUL.
pub const CMDLINE_MAX_SIZE: u64 = 0x1_0000;

/// Start of the EBDA; from here to [`HIMEM_START`] is reserved in the e820 map.
pub const EBDA_START: u64 = 0x9_fc00;
/// First byte above the legacy BIOS area (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;
/// Where a bzImage's protected-mode code is loaded (its 64-bit entry is
/// `KERNEL_LOAD_ADDR + 0x200`).
pub const KERNEL_LOAD_ADDR: u64 = HIMEM_START;

/// The Multiboot information structure (a Multiboot boot has no zero page).
/// Its module list, strings and memory map follow it, up to
/// [`MULTIBOOT_INFO_END`].
pub const MULTIBOOT_INFO_ADDR: u64 = ZERO_PAGE_ADDR;
/// End (exclusive) of the Multiboot information area.
pub const MULTIBOOT_INFO_END: u64 = ZERO_PAGE_ADDR + 0x1000;
/// ESP of a Multiboot entry (the spec leaves it undefined; this is the top
/// of the otherwise unused bare-ELF stack area).
pub const MULTIBOOT_STACK_TOP: u64 = BARE_STACK_TOP;

/// The ACPI tables live in the BIOS area, which the e820 map reserves.
pub const ACPI_AREA_START: u64 = 0xE_0000;
/// End (exclusive) of the ACPI area.
pub const ACPI_AREA_END: u64 = HIMEM_START;
/// The RSDP: 16-byte aligned at the start of the BIOS area, where a scan
/// for "RSD PTR " (0xE0000..0xFFFFF) finds it first.
pub const ACPI_RSDP_ADDR: u64 = ACPI_AREA_START;

/// The IOAPIC's MMIO base.
pub const IOAPIC_ADDR: u64 = 0xFEC0_0000;
/// Number of IOAPIC input pins (GSIs 0..24).
pub const IOAPIC_PINS: u32 = 24;
/// The local APIC's MMIO base (IA32_APIC_BASE default).
pub const LAPIC_ADDR: u64 = 0xFEE0_0000;

/// Guest pages are 4 KiB.
pub const PAGE_SIZE: u64 = 0x1000;

// The bare stacks sit above every structure a bare boot writes, and below
// the EBDA; the page tables fit below the Linux command line.
const _: () = {
    assert!(PAGE_TABLES_END <= BARE_STACK_BOTTOM);
    assert!(BARE_RESERVED_END <= EBDA_START);
    assert!(PAGE_TABLES_END <= CMDLINE_ADDR);
    assert!(EBDA_START <= ACPI_AREA_START && ACPI_AREA_END <= HIMEM_START);
    assert!(ACPI_RSDP_ADDR & 0xf == 0);
    assert!(MULTIBOOT_STACK_TOP <= EBDA_START);
    assert!(MMIO_HOLE_START <= PCI_MMIO_START && PCI_MMIO_START + PCI_MMIO_SIZE <= 0xD000_0000);
    assert!(
        PCI_ECAM_START >= 0xD000_0000 + 0x100_0000 && PCI_ECAM_START + PCI_ECAM_SIZE <= IOAPIC_ADDR
    );
};

/// The RAM regions `(guest-physical address, size)` for a guest of
/// `mem_size` bytes: up to 3 GiB from 0, the rest from 4 GiB. Zero bytes
/// give no region.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    let low = mem_size.min(MMIO_HOLE_START);
    let high = mem_size - low;
    let mut regions = Vec::with_capacity(2);
    if low > 0 {
        regions.push((0, low));
    }
    if high > 0 {
        regions.push((MMIO_HOLE_END, high));
    }
    regions
}

/// The end (exclusive) of the RAM that starts at 0 and runs without a gap,
/// capped at [`MMIO_HOLE_START`]: where boot structures, kernel and initrd may
/// go. `regions` are `(address, size)` pairs in any order.
pub fn low_ram_end(regions: &[(u64, u64)]) -> u64 {
    let mut end = 0u64;
    loop {
        let next = regions
            .iter()
            .filter(|&&(start, size)| start <= end && size > 0)
            .map(|&(start, size)| start.saturating_add(size))
            .max()
            .unwrap_or(end);
        if next <= end {
            return end.min(MMIO_HOLE_START);
        }
        end = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guests_have_one_region() {
        assert_eq!(ram_regions(256 << 20), vec![(0, 256 << 20)]);
        assert_eq!(ram_regions(MMIO_HOLE_START), vec![(0, MMIO_HOLE_START)]);
        assert!(ram_regions(0).is_empty());
    }

    #[test]
    fn large_guests_continue_above_4g() {
        assert_eq!(
            ram_regions(4 << 30),
            vec![(0, MMIO_HOLE_START), (MMIO_HOLE_END, 1 << 30)]
        );
    }

    #[test]
    fn low_ram_end_follows_contiguous_regions() {
        assert_eq!(low_ram_end(&ram_regions(64 << 20)), 64 << 20);
        assert_eq!(low_ram_end(&ram_regions(8 << 30)), MMIO_HOLE_START);
        assert_eq!(low_ram_end(&[(0x1000, 0x1000)]), 0);
        assert_eq!(low_ram_end(&[(0x2000, 0x1000), (0, 0x2000)]), 0x3000);
        assert_eq!(low_ram_end(&[]), 0);
    }

    #[test]
    fn boot_structures_do_not_overlap() {
        let mut areas = [
            (BOOT_GDT_ADDR, BOOT_GDT_ADDR + BOOT_GDT_SLOTS as u64 * 8),
            (BOOT_IDT_ADDR, BOOT_IDT_ADDR + 16),
            (BOOT_TSS_ADDR, BOOT_TSS_ADDR + BOOT_TSS_SIZE),
            (ZERO_PAGE_ADDR, ZERO_PAGE_ADDR + 0x1000),
            (0x8000, BOOT_STACK_TOP),
            (PML4_ADDR, PAGE_TABLES_END),
            (CMDLINE_ADDR, CMDLINE_ADDR + CMDLINE_MAX_SIZE),
        ];
        // The Multiboot information replaces the zero page.
        assert_eq!(
            (MULTIBOOT_INFO_ADDR, MULTIBOOT_INFO_END),
            (ZERO_PAGE_ADDR, ZERO_PAGE_ADDR + 0x1000)
        );
        areas.sort();
        for pair in areas.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:x?}");
        }
        assert!(areas.last().unwrap().1 <= EBDA_START);
        assert_eq!(BARE_MAX_VCPUS, 256);
    }
}
