//! What a PC BIOS leaves behind for the kernel a boot loader starts, for
//! Multiboot kernels: on a PC, GRUB (or QEMU's option ROM) runs after the
//! BIOS, and kernels that go back to real mode (kvm-unit-tests'
//! `realmode.flat`) count on the BIOS's interrupt setup.
//!
//! The loader writes, at the firmware code's place (below 1 MiB, see
//! [`super::multiboot_layout`]):
//!
//! - an **entry stub** (32-bit protected mode) that the boot vCPU runs
//!   first: it initializes the two i8259s as a BIOS does (ICW1–4: master
//!   vectors 0x08–0x0f, slave 0x70–0x77, cascade on IRQ 2; all masked but
//!   IRQ 0 and the cascade), starts PIT channel 0 in mode 2 with the
//!   largest count (18.2 Hz, IRQ 0: the BIOS tick), then jumps to the
//!   kernel's entry point with EAX, EBX and ESP as the Multiboot
//!   specification says (ECX is used for the jump);
//! - **real-mode interrupt handlers**: for IRQs 0–7 (vectors 0x08–0x0f) an
//!   EOI to the master and IRET, for IRQs 8–15 (vectors 0x70–0x77) an EOI to
//!   both and IRET, for every other vector a bare IRET;
//! - the **real-mode IVT** at 0 (256 far pointers to those handlers),
//!   unless the kernel occupies it.
//!
//! A protected-mode kernel that never enables interrupts sees none of
//! this; the kvm-unit-tests library masks the PICs first thing.

/// Default place of the firmware code (between the boot IDT and TSS).
pub const FIRMWARE_CODE_ADDR: u64 = 0x600;
/// Bytes reserved for it.
pub const FIRMWARE_CODE_SIZE: u64 = 0x100;
/// The real-mode interrupt vector table.
pub const IVT_ADDR: u64 = 0;
/// Bytes of the IVT (256 vectors × 4).
pub const IVT_SIZE: u64 = 0x400;

/// The i8259 vector bases a BIOS programs.
pub const PIC_MASTER_BASE: u8 = 0x08;
pub const PIC_SLAVE_BASE: u8 = 0x70;
/// The master's mask: all but IRQ 0 (timer) and IRQ 2 (cascade).
pub const PIC_MASTER_MASK: u8 = !0b101;
/// The slave's mask: everything.
pub const PIC_SLAVE_MASK: u8 = 0xff;

/// Offsets of the handlers in the firmware code.
const MASTER_HANDLER: usize = 0x80;
const SLAVE_HANDLER: usize = 0x90;
const IRET_HANDLER: usize = 0xa0;

/// The firmware code, whose stub jumps to `kernel_entry`
/// ([`FIRMWARE_CODE_SIZE`] bytes, position-independent; the stub at offset
/// 0).
pub fn code(kernel_entry: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(FIRMWARE_CODE_SIZE as usize);
    let out = |c: &mut Vec<u8>, port: u8| c.extend_from_slice(&[0xe6, port]);
    let mov_al = |c: &mut Vec<u8>, v: u8| c.extend_from_slice(&[0xb0, v]);
    c.push(0x50); // push eax
    mov_al(&mut c, 0x11); // ICW1: edge, cascade, ICW4 follows
    out(&mut c, 0x20);
    out(&mut c, 0xa0);
    mov_al(&mut c, PIC_MASTER_BASE); // ICW2
    out(&mut c, 0x21);
    mov_al(&mut c, PIC_SLAVE_BASE);
    out(&mut c, 0xa1);
    mov_al(&mut c, 0x04); // ICW3: slave on IRQ 2
    out(&mut c, 0x21);
    mov_al(&mut c, 0x02); // ICW3: slave ID 2
    out(&mut c, 0xa1);
    mov_al(&mut c, 0x01); // ICW4: 8086 mode
    out(&mut c, 0x21);
    out(&mut c, 0xa1);
    mov_al(&mut c, PIC_MASTER_MASK); // OCW1
    out(&mut c, 0x21);
    mov_al(&mut c, PIC_SLAVE_MASK);
    out(&mut c, 0xa1);
    mov_al(&mut c, 0x34); // PIT: channel 0, low then high byte, mode 2
    out(&mut c, 0x43);
    c.extend_from_slice(&[0x30, 0xc0]); // xor al, al: count 0 = 65536
    out(&mut c, 0x40);
    out(&mut c, 0x40);
    c.push(0x58); // pop eax
    c.push(0xb9); // mov ecx, kernel_entry
    c.extend_from_slice(&kernel_entry.to_le_bytes());
    c.extend_from_slice(&[0xff, 0xe1]); // jmp ecx
    debug_assert!(c.len() <= MASTER_HANDLER);
    c.resize(MASTER_HANDLER, 0xcc);
    // push ax; mov al, 0x20; out 0x20, al; pop ax; iret
    c.extend_from_slice(&[0x50, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0xcf]);
    c.resize(SLAVE_HANDLER, 0xcc);
    // push ax; mov al, 0x20; out 0xa0, al; out 0x20, al; pop ax; iret
    c.extend_from_slice(&[0x50, 0xb0, 0x20, 0xe6, 0xa0, 0xe6, 0x20, 0x58, 0xcf]);
    c.resize(IRET_HANDLER, 0xcc);
    c.push(0xcf); // iret
    c.resize(FIRMWARE_CODE_SIZE as usize, 0xcc);
    c
}

/// The real-mode IVT for firmware code at `base` (below 1 MiB, 16-byte
/// aligned): far pointers (offset, then segment) to its handlers.
pub fn ivt(base: u64) -> Vec<u8> {
    let segment = (base >> 4) as u16;
    let mut ivt = Vec::with_capacity(IVT_SIZE as usize);
    for vector in 0..=255u8 {
        let handler = match vector {
            v if (PIC_MASTER_BASE..PIC_MASTER_BASE + 8).contains(&v) => MASTER_HANDLER,
            v if (PIC_SLAVE_BASE..PIC_SLAVE_BASE + 8).contains(&v) => SLAVE_HANDLER,
            _ => IRET_HANDLER,
        };
        let offset = (base & 0xf) as u16 + handler as u16;
        ivt.extend_from_slice(&offset.to_le_bytes());
        ivt.extend_from_slice(&segment.to_le_bytes());
    }
    ivt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stub_programs_the_pics_and_pit_then_jumps() {
        let c = code(0x0040_0123);
        assert_eq!(c.len() as u64, FIRMWARE_CODE_SIZE);
        assert_eq!(c[0], 0x50, "push eax first");
        // The jump's target, then jmp ecx.
        let jmp = c.windows(2).position(|w| w == [0xff, 0xe1]).unwrap();
        assert_eq!(&c[jmp - 5..jmp], &[0xb9, 0x23, 0x01, 0x40, 0x00]);
        assert_eq!(c[jmp - 6], 0x58, "pop eax before the jump");
        // The port writes, in order.
        let outs: Vec<u8> = c[..jmp]
            .windows(2)
            .filter(|w| w[0] == 0xe6)
            .map(|w| w[1])
            .collect();
        assert_eq!(
            outs,
            [0x20, 0xa0, 0x21, 0xa1, 0x21, 0xa1, 0x21, 0xa1, 0x21, 0xa1, 0x43, 0x40, 0x40]
        );
        assert_eq!(c[IRET_HANDLER], 0xcf);
        assert_eq!(c[MASTER_HANDLER + 6], 0xcf);
        assert_eq!(c[SLAVE_HANDLER + 8], 0xcf);
    }

    #[test]
    fn the_ivt_points_at_the_handlers() {
        let ivt = ivt(0x600);
        assert_eq!(ivt.len() as u64, IVT_SIZE);
        let far = |v: usize| {
            let e = &ivt[v * 4..v * 4 + 4];
            (
                u16::from_le_bytes([e[2], e[3]]),
                u16::from_le_bytes([e[0], e[1]]),
            )
        };
        assert_eq!(far(0x08), (0x60, MASTER_HANDLER as u16));
        assert_eq!(far(0x0f), (0x60, MASTER_HANDLER as u16));
        assert_eq!(far(0x73), (0x60, SLAVE_HANDLER as u16));
        assert_eq!(far(0x00), (0x60, IRET_HANDLER as u16));
        assert_eq!(far(0xff), (0x60, IRET_HANDLER as u16));
        // A base that is not a paragraph: the offset carries the rest.
        let ivt = super::ivt(0x9_f008);
        assert_eq!(&ivt[0x20..0x24], &[0x88, 0, 0x00, 0x9f]);
    }
}
