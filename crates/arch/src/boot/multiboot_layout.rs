//! Where a Multiboot boot puts its own structures: around the kernel.
//!
//! A Multiboot kernel may load anywhere in RAM, below 1 MiB too
//! (kvm-unit-tests' `realmode.flat` occupies 0x8000..0xda30). The loader's
//! structures each have a default place (the one every other boot uses):
//!
//! | structure | default | size | moved to, when the kernel is there |
//! |---|---|---|---|
//! | GDT, IDT, TSS | [`BootTables::DEFAULT`] (0x500, 0x540, 0x1000) | 0x30, 0x10, 0x68 | one packed block ([`BootTables::packed`], 0x100 bytes, 64-byte aligned) |
//! | information structure, module list, strings, memory map | [`MULTIBOOT_INFO_ADDR`] | [`MULTIBOOT_INFO_AREA_SIZE`] | a 4 KiB-aligned block |
//! | command line | [`CMDLINE_ADDR`] | its length + 1 | a 16-byte-aligned block |
//! | stack | top [`MULTIBOOT_STACK_TOP`] | [`MULTIBOOT_STACK_SIZE`] | a 16-byte-aligned block |
//! | firmware code ([`super::bios_handoff`]) | [`FIRMWARE_CODE_ADDR`] | [`FIRMWARE_CODE_SIZE`] | a 16-byte-aligned block below [`EBDA_START`] (real-mode handlers must be reachable) |
//!
//! A structure stays at its default when that range is free of the
//! kernel, the module and the structures placed before it (the firmware
//! code first, then in the table's order); otherwise it goes to the lowest free, aligned range of
//! 0x500..[`EBDA_START`], then of 1 MiB..the end of low RAM. The module is
//! placed before any of them: page-aligned after the kernel's end, at or
//! above 1 MiB. Only a kernel that leaves no room for a structure is
//! refused ([`MultibootError::NoRoom`]). The real-mode IVT and BIOS data
//! area (below 0x500) and the EBDA and BIOS area (from [`EBDA_START`] to
//! 1 MiB) never hold a structure; the ACPI tables have their fixed place
//! in the BIOS area and are left out when the kernel lies there.

use std::ops::Range;

use super::bios_handoff::{FIRMWARE_CODE_ADDR, FIRMWARE_CODE_SIZE};
use super::multiboot::MultibootError;
use crate::layout::{
    CMDLINE_ADDR, EBDA_START, HIMEM_START, MMIO_HOLE_START, MULTIBOOT_INFO_ADDR,
    MULTIBOOT_STACK_TOP, PAGE_SIZE,
};
use crate::mode::BootTables;

/// Bytes of the information area (structure, module list, strings, memory
/// map).
pub const MULTIBOOT_INFO_AREA_SIZE: u64 = 0x1000;
/// Bytes reserved for the entry stack below ESP.
pub const MULTIBOOT_STACK_SIZE: u64 = 0x4000;
/// Lowest address a structure may use (above the real-mode IVT and BDA).
pub const MULTIBOOT_LOW_START: u64 = 0x500;

/// Where the structures of one Multiboot boot go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultibootLayout {
    pub tables: BootTables,
    /// The information area ([`MULTIBOOT_INFO_AREA_SIZE`] bytes); EBX.
    pub info: u64,
    /// The command line (NUL-terminated).
    pub cmdline: u64,
    /// ESP at entry.
    pub stack_top: u64,
    /// The firmware code (below 1 MiB).
    pub firmware: u64,
}

/// The module's place: page-aligned after `kernel_end`, at or above 1 MiB.
pub fn module_start(kernel_end: u64) -> u64 {
    kernel_end.max(HIMEM_START).next_multiple_of(PAGE_SIZE)
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Free-space search over the windows structures may use.
struct Placer {
    taken: Vec<Range<u64>>,
    windows: [Range<u64>; 2],
}

impl Placer {
    fn is_free(&self, r: &Range<u64>) -> bool {
        self.windows
            .iter()
            .any(|w| w.start <= r.start && r.end <= w.end)
            && !self.taken.iter().any(|t| overlaps(t, r))
    }

    /// The lowest free `size`-byte range aligned to `align`, in the first
    /// `windows` windows.
    fn find_in(&self, windows: usize, size: u64, align: u64) -> Option<u64> {
        for w in &self.windows[..windows] {
            let mut at = w.start.next_multiple_of(align);
            while at.checked_add(size).is_some_and(|end| end <= w.end) {
                let r = at..at + size;
                match self
                    .taken
                    .iter()
                    .filter(|t| overlaps(t, &r))
                    .map(|t| t.end)
                    .max()
                {
                    None => return Some(at),
                    Some(end) => at = end.next_multiple_of(align),
                }
            }
        }
        None
    }

    /// The lowest free `size`-byte range aligned to `align`.
    fn find(&self, size: u64, align: u64) -> Option<u64> {
        self.find_in(self.windows.len(), size, align)
    }

    /// `default` if free, else the lowest free aligned range; taken either
    /// way.
    fn place(
        &mut self,
        what: &'static str,
        default: Range<u64>,
        align: u64,
    ) -> Result<u64, MultibootError> {
        let size = default.end - default.start;
        let at = if self.is_free(&default) {
            default.start
        } else {
            self.find(size, align)
                .ok_or(MultibootError::NoRoom { what, size })?
        };
        self.taken.push(at..at + size);
        Ok(at)
    }
}

/// Places the structures around `occupied` (the kernel's ranges and the
/// module's), for a command line of `cmdline_len` bytes (NUL excluded),
/// in RAM up to `ram_end`.
pub fn place(
    occupied: &[Range<u64>],
    cmdline_len: u64,
    ram_end: u64,
) -> Result<MultibootLayout, MultibootError> {
    let low_end = ram_end.min(EBDA_START);
    let high_end = ram_end.min(MMIO_HOLE_START);
    let mut p = Placer {
        taken: occupied
            .iter()
            .filter(|r| r.start < r.end)
            .cloned()
            .collect(),
        windows: [
            MULTIBOOT_LOW_START..low_end.max(MULTIBOOT_LOW_START),
            HIMEM_START..high_end.max(HIMEM_START),
        ],
    };

    // First the one that must stay below 1 MiB.
    let firmware_default = FIRMWARE_CODE_ADDR..FIRMWARE_CODE_ADDR + FIRMWARE_CODE_SIZE;
    let firmware = if p.is_free(&firmware_default) {
        FIRMWARE_CODE_ADDR
    } else {
        p.find_in(1, FIRMWARE_CODE_SIZE, 16)
            .ok_or(MultibootError::NoRoom {
                what: "firmware code below 1 MiB",
                size: FIRMWARE_CODE_SIZE,
            })?
    };
    p.taken.push(firmware..firmware + FIRMWARE_CODE_SIZE);
    let defaults = BootTables::DEFAULT;
    let tables = if defaults.ranges().iter().all(|r| p.is_free(r)) {
        p.taken.extend(defaults.ranges());
        defaults
    } else {
        let size = BootTables::PACKED_SIZE;
        let base = p
            .find(size, BootTables::PACKED_ALIGN)
            .ok_or(MultibootError::NoRoom {
                what: "GDT, IDT and TSS",
                size,
            })?;
        p.taken.push(base..base + size);
        BootTables::packed(base)
    };
    let info = p.place(
        "information structure",
        MULTIBOOT_INFO_ADDR..MULTIBOOT_INFO_ADDR + MULTIBOOT_INFO_AREA_SIZE,
        PAGE_SIZE,
    )?;
    let cmdline = p.place(
        "command line",
        CMDLINE_ADDR..CMDLINE_ADDR + cmdline_len + 1,
        16,
    )?;
    let stack_bottom = p.place(
        "stack",
        MULTIBOOT_STACK_TOP - MULTIBOOT_STACK_SIZE..MULTIBOOT_STACK_TOP,
        16,
    )?;
    Ok(MultibootLayout {
        tables,
        info,
        cmdline,
        stack_top: stack_bottom + MULTIBOOT_STACK_SIZE,
        firmware,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 64 << 20;

    fn all_ranges(l: &MultibootLayout, cmdline_len: u64) -> Vec<Range<u64>> {
        let mut v: Vec<Range<u64>> = l.tables.ranges().to_vec();
        v.push(l.info..l.info + MULTIBOOT_INFO_AREA_SIZE);
        v.push(l.cmdline..l.cmdline + cmdline_len + 1);
        v.push(l.stack_top - MULTIBOOT_STACK_SIZE..l.stack_top);
        v.push(l.firmware..l.firmware + FIRMWARE_CODE_SIZE);
        v
    }

    fn assert_apart(l: &MultibootLayout, cmdline_len: u64, kernel: &[Range<u64>]) {
        let ours = all_ranges(l, cmdline_len);
        for (i, a) in ours.iter().enumerate() {
            assert!(a.start >= MULTIBOOT_LOW_START, "{a:x?}");
            assert!(!(EBDA_START..HIMEM_START).contains(&a.start), "{a:x?}");
            for b in &ours[i + 1..] {
                assert!(!overlaps(a, b), "{a:x?} {b:x?}");
            }
            for k in kernel {
                assert!(!overlaps(a, k), "{a:x?} overlaps the kernel {k:x?}");
            }
        }
    }

    #[test]
    fn a_kernel_above_1mib_leaves_the_defaults() {
        let kernel = vec![0x40_0000..0x50_0000, 0x60_0000..0x60_1000];
        let l = place(&kernel, 10, RAM).unwrap();
        assert_eq!(
            l,
            MultibootLayout {
                tables: BootTables::DEFAULT,
                info: MULTIBOOT_INFO_ADDR,
                cmdline: CMDLINE_ADDR,
                stack_top: MULTIBOOT_STACK_TOP,
                firmware: FIRMWARE_CODE_ADDR,
            }
        );
        assert_apart(&l, 10, &kernel);
    }

    #[test]
    fn realmode_flat_keeps_the_defaults_around_it() {
        // kvm-unit-tests' realmode.flat: text 0x8000..0xa86c, data and bss
        // 0xb000..0xda30.
        let kernel = [0x8000..0xa86c, 0xb000..0xda30, 0x10_0000..0x10_1000];
        let l = place(&kernel, 30, RAM).unwrap();
        assert_eq!(l.info, MULTIBOOT_INFO_ADDR);
        assert_eq!(l.tables, BootTables::DEFAULT);
        assert_apart(&l, 30, &kernel);
    }

    #[test]
    fn structures_move_out_of_the_kernels_way() {
        // Over the GDT, the information area, the command line and the
        // stack.
        let kernel = [0x400..0x8000, 0x1_f000..0x2_1000, 0x8_0000..0x9_f000];
        let l = place(&kernel, 0x100, RAM).unwrap();
        assert_ne!(l.tables, BootTables::DEFAULT);
        assert_eq!(l.tables.gdt % BootTables::PACKED_ALIGN, 0);
        assert_eq!(l.info % PAGE_SIZE, 0);
        assert_eq!(l.stack_top % 16, 0);
        assert_apart(&l, 0x100, &kernel);
        // The lowest free places: 0x8000 for the firmware code, then the
        // tables, the next page for the information.
        assert_eq!(l.firmware, 0x8000);
        assert_eq!(l.tables.gdt, 0x8100);
        assert_eq!(l.info, 0x9000);
        assert_eq!(l.cmdline, 0x8200);
    }

    #[test]
    fn a_kernel_filling_low_memory_pushes_structures_above_1mib() {
        let kernel = [0..0x9_f000, 0x10_0000..0x20_0000];
        let l = place(&kernel, 0, RAM).unwrap();
        assert!(l.info >= 0x20_0000 && l.stack_top > 0x20_0000);
        // The firmware code stays in the one gap below 1 MiB.
        assert_eq!(l.firmware, 0x9_f000);
        assert_apart(&l, 0, &kernel);
        // No gap at all below 1 MiB: an error.
        let kernel = [0..EBDA_START, 0x10_0000..0x20_0000];
        assert!(matches!(
            place(&kernel, 0, RAM),
            Err(MultibootError::NoRoom {
                what: "firmware code below 1 MiB",
                ..
            })
        ));
    }

    #[test]
    fn no_room_is_an_error_naming_the_structure() {
        assert!(matches!(
            place(std::slice::from_ref(&(0..RAM)), 0, RAM),
            Err(MultibootError::NoRoom {
                what: "firmware code below 1 MiB",
                ..
            })
        ));
        // Room for the firmware code and the tables, and nothing else.
        assert!(matches!(
            place(std::slice::from_ref(&(0x700..RAM)), 0, RAM),
            Err(MultibootError::NoRoom {
                what: "information structure",
                ..
            })
        ));
    }

    #[test]
    fn modules_go_after_the_kernel_above_1mib() {
        assert_eq!(module_start(0xda30), HIMEM_START);
        assert_eq!(module_start(0x40_0001), 0x40_1000);
        assert_eq!(module_start(0x40_0000), 0x40_0000);
    }
}
