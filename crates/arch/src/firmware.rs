//! The little firmware a PC has where software expects it: the reset
//! vector.
//!
//! Ferrovisor boots kernels directly and has no BIOS, but kernels still
//! jump to the BIOS's reset entry when they reboot. Linux's `reboot=bios`
//! path (also the one it ends on by default when the ACPI tables are
//! hardware-reduced and it finds no EFI: BOOT_EFI falls through to
//! BOOT_BIOS) returns to real mode and jumps to F000:FFF0, and a processor
//! that comes out of RESET or INIT as the bootstrap processor fetches from
//! 0xFFFF_FFF0. Both places hold the same code here: it pulses the reset
//! line through the i8042 (0xFE to port 0x64), which ends the VM as a reset
//! does, then halts.
//!
//! | where | what |
//! |---|---|
//! | 0x000F_FFF0 (F000:FFF0) | [`RESET_STUB`], in the BIOS area of RAM (the e820 map reserves it) |
//! | 0xFFFF_0000..0x1_0000_0000 | [`rom_image`]: a read-only 64 KiB ROM, [`RESET_STUB`] at 0xFFFF_FFF0 |

use std::ops::Range;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// The guest-physical address of the real-mode BIOS reset entry F000:FFF0.
pub const BIOS_RESET_ENTRY: u64 = 0xF_FFF0;
/// Where the firmware ROM is mapped: the last 64 KiB below 4 GiB.
pub const ROM_BASE: u64 = 0xFFFF_0000;
/// Size of the firmware ROM.
pub const ROM_SIZE: u64 = 0x1_0000;
/// The reset vector: where a processor fetches its first instruction.
pub const RESET_VECTOR: u64 = 0xFFFF_FFF0;

/// 16-bit code that resets the machine through the keyboard controller:
/// `mov al, 0xfe; out 0x64, al; cli; hlt; jmp short` back to the hlt,
/// and a `nop` of padding.
pub const RESET_STUB: [u8; 9] = [0xB0, 0xFE, 0xE6, 0x64, 0xFA, 0xF4, 0xEB, 0xFD, 0x90];

/// The ROM's contents: 0xFF (erased flash) but for the reset stub at the
/// reset vector.
pub fn rom_image() -> Vec<u8> {
    let mut rom = vec![0xFF; ROM_SIZE as usize];
    let at = (RESET_VECTOR - ROM_BASE) as usize;
    rom[at..at + RESET_STUB.len()].copy_from_slice(&RESET_STUB);
    rom
}

/// Writes the reset stub at F000:FFF0 unless a loaded image (`occupied`:
/// the kernel, the initrd) lies there. Returns whether it was written.
pub fn write_bios_reset_entry<M: GuestMemoryBackend>(
    mem: &M,
    occupied: &[Range<u64>],
) -> Result<bool, vm_memory::GuestMemoryError> {
    let stub = BIOS_RESET_ENTRY..BIOS_RESET_ENTRY + RESET_STUB.len() as u64;
    if occupied
        .iter()
        .any(|r| r.start < stub.end && stub.start < r.end)
    {
        return Ok(false);
    }
    mem.write_slice(&RESET_STUB, GuestAddress(BIOS_RESET_ENTRY))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn the_stub_decodes_as_a_keyboard_controller_reset() {
        // out 0x64 with AL = 0xFE, then a halt loop that stays on the hlt.
        assert_eq!(&RESET_STUB[..4], &[0xB0, 0xFE, 0xE6, 0x64]);
        assert_eq!(RESET_STUB[5], 0xF4, "hlt");
        // jmp rel8 -3 from the end of the jmp lands on the hlt.
        assert_eq!(6 + 2 + (RESET_STUB[7] as i8 as isize), 5);
    }

    #[test]
    fn the_rom_holds_the_stub_at_the_reset_vector() {
        let rom = rom_image();
        assert_eq!(rom.len() as u64, ROM_SIZE);
        let at = (RESET_VECTOR - ROM_BASE) as usize;
        assert_eq!(&rom[at..at + RESET_STUB.len()], &RESET_STUB);
        assert!(rom[..at].iter().all(|&b| b == 0xFF));
        assert_eq!(ROM_BASE + ROM_SIZE, 1 << 32);
    }

    #[test]
    fn the_bios_entry_is_written_only_where_nothing_was_loaded() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let kernel = 0x10_0000..0x20_0000;
        let initrd = 0x20_0000..0x30_0000;
        assert!(write_bios_reset_entry(&mem, &[kernel, initrd]).unwrap());
        let mut back = [0u8; RESET_STUB.len()];
        mem.read_slice(&mut back, GuestAddress(BIOS_RESET_ENTRY))
            .unwrap();
        assert_eq!(back, RESET_STUB);
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let kernel = 0x10_0000..0x20_0000;
        let in_bios_area = 0xF_0000..0x10_0000;
        assert!(!write_bios_reset_entry(&mem, &[kernel, in_bios_area]).unwrap());
        mem.read_slice(&mut back, GuestAddress(BIOS_RESET_ENTRY))
            .unwrap();
        assert_eq!(back, [0; RESET_STUB.len()]);
    }
}
