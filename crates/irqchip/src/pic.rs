//! The pair of i8259A programmable interrupt controllers of a PC (KVM's
//! `i8259.c`, QEMU's `hw/intc/i8259.c`): the master at ports 0x20/0x21 and
//! the slave at 0xa0/0xa1, cascaded on master input 2, plus the edge/level
//! control registers (ELCR) at 0x4d0/0x4d1.
//!
//! Modelled: the ICW1–ICW4 initialization sequence (ICW1 LTIM, single
//! mode, IC4; ICW2 vector base; ICW3 accepted and ignored — the cascade is
//! always on master input 2; ICW4 auto-EOI and special fully nested mode),
//! OCW1 (IMR), OCW2 (non-specific / specific EOI, rotate on non-specific
//! EOI, rotate in auto-EOI mode, set priority, specific rotate), OCW3
//! (read IRR/ISR, poll, special mask mode), edge and level triggering (per
//! pin through ELCR or for the whole chip through LTIM), the INTA cycle
//! with cascade and the spurious IRQ 7 / 15.
//!
//! Not modelled: buffered mode and the 8080/8085 mode of ICW4 (ignored),
//! ICW3 slave IDs, the master's poll command chaining into the slave (a
//! poll of the master that finds input 2 acknowledges only the master).
//! An external `set_irq(2, _)` is ignored: master input 2 is the cascade.
//!
//! The caller raises the CPU's INTR when [`Pic::pending`] is true and runs
//! [`Pic::acknowledge`] when the CPU takes the interrupt (through the local
//! APIC's LINT0 in ExtINT mode, or directly when the APIC is disabled).

/// The master's command port.
pub const PIC_MASTER_COMMAND: u16 = 0x20;
/// The master's data port.
pub const PIC_MASTER_DATA: u16 = 0x21;
/// The slave's command port.
pub const PIC_SLAVE_COMMAND: u16 = 0xa0;
/// The slave's data port.
pub const PIC_SLAVE_DATA: u16 = 0xa1;
/// ELCR of the master (IRQ 0–7).
pub const PIC_ELCR_MASTER: u16 = 0x4d0;
/// ELCR of the slave (IRQ 8–15).
pub const PIC_ELCR_SLAVE: u16 = 0x4d1;

/// IRQs 0, 1 and 2 are always edge-triggered.
const ELCR_MASK_MASTER: u8 = 0xf8;
/// IRQs 8 and 13 are always edge-triggered.
const ELCR_MASK_SLAVE: u8 = 0xde;

/// The master input the slave is wired to.
const CASCADE_IRQ: u8 = 2;

/// The state of one i8259A.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PicChipState {
    /// Input line levels (for edge detection).
    pub last_irr: u8,
    pub irr: u8,
    pub imr: u8,
    pub isr: u8,
    /// The input with the lowest priority is `priority_add - 1` (rotation).
    pub priority_add: u8,
    /// ICW2: vector of input 0.
    pub irq_base: u8,
    /// OCW3: a read of the command port returns ISR (true) or IRR.
    pub read_reg_select: bool,
    /// OCW3: the next read is a poll.
    pub poll: bool,
    pub special_mask: bool,
    /// 0: operational; 1, 2, 3: waiting for ICW2, ICW3, ICW4.
    pub init_state: u8,
    pub auto_eoi: bool,
    pub rotate_on_auto_eoi: bool,
    pub special_fully_nested_mode: bool,
    /// ICW1 IC4: an ICW4 follows.
    pub init4: bool,
    /// ICW1 SNGL: no ICW3.
    pub single_mode: bool,
    /// ICW1 LTIM: every input level-triggered.
    pub ltim: bool,
    pub elcr: u8,
    /// Which ELCR bits are writable.
    pub elcr_mask: u8,
}

/// Both chips: `chips[0]` is the master, `chips[1]` the slave.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PicState {
    pub chips: [PicChipState; 2],
}

/// Priority (0 = highest) of the highest-priority bit of `mask`, 8 if none.
fn priority(chip: &PicChipState, mask: u8) -> u8 {
    if mask == 0 {
        return 8;
    }
    (0..8)
        .find(|p: &u8| mask & (1 << (p.wrapping_add(chip.priority_add) & 7)) != 0)
        .unwrap_or(8)
}

/// The input the chip wants to interrupt with, if any.
fn get_irq(chip: &PicChipState, master: bool) -> Option<u8> {
    let wanted = priority(chip, chip.irr & !chip.imr);
    if wanted == 8 {
        return None;
    }
    // In special fully nested mode the master does not count the slave's
    // in-service input, so that the slave can nest its own priorities.
    let mut in_service = chip.isr;
    if chip.special_mask {
        in_service &= !chip.imr;
    }
    if chip.special_fully_nested_mode && master {
        in_service &= !(1 << CASCADE_IRQ);
    }
    (wanted < priority(chip, in_service)).then_some(wanted.wrapping_add(chip.priority_add) & 7)
}

fn is_level(chip: &PicChipState, irq: u8) -> bool {
    chip.ltim || chip.elcr & (1 << irq) != 0
}

fn set_input(chip: &mut PicChipState, irq: u8, level: bool) {
    let mask = 1u8 << (irq & 7);
    if is_level(chip, irq & 7) {
        if level {
            chip.irr |= mask;
            chip.last_irr |= mask;
        } else {
            chip.irr &= !mask;
            chip.last_irr &= !mask;
        }
    } else if level {
        if chip.last_irr & mask == 0 {
            chip.irr |= mask;
        }
        chip.last_irr |= mask;
    } else {
        chip.last_irr &= !mask;
    }
}

/// The interrupt-acknowledge of input `irq`: into ISR (unless auto-EOI),
/// out of IRR if edge-triggered.
fn intack(chip: &mut PicChipState, irq: u8) {
    if chip.auto_eoi {
        if chip.rotate_on_auto_eoi {
            chip.priority_add = (irq + 1) & 7;
        }
    } else {
        chip.isr |= 1 << irq;
    }
    if !is_level(chip, irq) {
        chip.irr &= !(1 << irq);
    }
}

/// What ICW1 resets. The ELCR survives.
fn init_reset(chip: &mut PicChipState) {
    chip.last_irr = 0;
    chip.irr &= chip.elcr;
    chip.imr = 0;
    chip.isr = 0;
    chip.priority_add = 0;
    chip.irq_base = 0;
    chip.read_reg_select = false;
    chip.poll = false;
    chip.special_mask = false;
    chip.init_state = 0;
    chip.auto_eoi = false;
    chip.rotate_on_auto_eoi = false;
    chip.special_fully_nested_mode = false;
    chip.init4 = false;
    chip.single_mode = false;
    chip.ltim = false;
}

fn write_command(chip: &mut PicChipState, value: u8) {
    if value & 0x10 != 0 {
        // ICW1.
        init_reset(chip);
        chip.init_state = 1;
        chip.init4 = value & 1 != 0;
        chip.single_mode = value & 2 != 0;
        chip.ltim = value & 8 != 0;
    } else if value & 0x08 != 0 {
        // OCW3.
        if value & 0x04 != 0 {
            chip.poll = true;
        }
        if value & 0x02 != 0 {
            chip.read_reg_select = value & 1 != 0;
        }
        if value & 0x40 != 0 {
            chip.special_mask = value & 0x20 != 0;
        }
    } else {
        // OCW2.
        let irq = value & 7;
        match value >> 5 {
            // Rotate in auto-EOI mode: clear (0) / set (4).
            0 | 4 => chip.rotate_on_auto_eoi = value >> 7 != 0,
            // Non-specific EOI (5: and rotate).
            1 | 5 => {
                let p = priority(chip, chip.isr);
                if p != 8 {
                    let served = p.wrapping_add(chip.priority_add) & 7;
                    chip.isr &= !(1 << served);
                    if value >> 5 == 5 {
                        chip.priority_add = (served + 1) & 7;
                    }
                }
            }
            // Specific EOI.
            3 => chip.isr &= !(1 << irq),
            // Set priority: `irq` becomes the lowest.
            6 => chip.priority_add = (irq + 1) & 7,
            // Specific EOI and rotate.
            7 => {
                chip.isr &= !(1 << irq);
                chip.priority_add = (irq + 1) & 7;
            }
            // 2: no operation.
            _ => {}
        }
    }
}

fn write_data(chip: &mut PicChipState, value: u8) {
    match chip.init_state {
        1 => {
            // ICW2.
            chip.irq_base = value & 0xf8;
            chip.init_state = match (chip.single_mode, chip.init4) {
                (false, _) => 2,
                (true, true) => 3,
                (true, false) => 0,
            };
        }
        // ICW3: the wiring is fixed.
        2 => chip.init_state = if chip.init4 { 3 } else { 0 },
        3 => {
            // ICW4.
            chip.special_fully_nested_mode = value & 0x10 != 0;
            chip.auto_eoi = value & 0x02 != 0;
            chip.init_state = 0;
        }
        // OCW1.
        _ => chip.imr = value,
    }
}

/// The cascaded i8259A pair.
#[derive(Clone, Debug)]
pub struct Pic {
    s: PicState,
}

impl Default for Pic {
    fn default() -> Self {
        Pic::new()
    }
}

impl Pic {
    /// Both chips after power-on: uninitialized, nothing masked, every
    /// input edge-triggered.
    pub fn new() -> Pic {
        let mut s = PicState::default();
        s.chips[0].elcr_mask = ELCR_MASK_MASTER;
        s.chips[1].elcr_mask = ELCR_MASK_SLAVE;
        Pic { s }
    }

    pub fn state(&self) -> PicState {
        self.s.clone()
    }

    pub fn from_state(state: PicState) -> Pic {
        Pic { s: state }
    }

    /// Propagates the slave's INT output to master input 2.
    fn update(&mut self) {
        let slave_out = get_irq(&self.s.chips[1], false).is_some();
        set_input(&mut self.s.chips[0], CASCADE_IRQ, slave_out);
    }

    /// Sets the level of IRQ `irq` (0–15). Edge-triggered inputs latch a
    /// rising edge; level-triggered ones follow the line. IRQ 2 and
    /// numbers above 15 are ignored.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        if irq >= 16 || irq == CASCADE_IRQ {
            return;
        }
        tracing::trace!(irq, level, "kvm_pic_set_irq");
        let chip = usize::from(irq >> 3);
        set_input(&mut self.s.chips[chip], irq & 7, level);
        self.update();
    }

    /// The master's INT output: an interrupt is waiting for the CPU.
    pub fn pending(&self) -> bool {
        get_irq(&self.s.chips[0], true).is_some()
    }

    /// The INTA cycle: returns the vector of the highest-priority request
    /// and puts it in service (through the slave for IRQ 8–15). If the
    /// request went away, returns the spurious vector of IRQ 7 (master) or
    /// IRQ 15 (slave), which is not put in service.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match get_irq(&self.s.chips[0], true) {
            Some(CASCADE_IRQ) => {
                let slave = &mut self.s.chips[1];
                let irq2 = match get_irq(slave, false) {
                    Some(irq2) => {
                        intack(slave, irq2);
                        irq2
                    }
                    None => 7,
                };
                let vector = slave.irq_base.wrapping_add(irq2);
                intack(&mut self.s.chips[0], CASCADE_IRQ);
                vector
            }
            Some(irq) => {
                intack(&mut self.s.chips[0], irq);
                self.s.chips[0].irq_base.wrapping_add(irq)
            }
            None => self.s.chips[0].irq_base.wrapping_add(7),
        };
        self.update();
        tracing::trace!(vector, "kvm_pic_ack");
        vector
    }

    /// A guest read of `port` (0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1;
    /// anything else reads 0xff). After an OCW3 poll command, a read of
    /// either port of that chip is the poll: bit 7 set and the input
    /// number of the request it acknowledged, or 0.
    pub fn read(&mut self, port: u16) -> u8 {
        let (index, data) = match port {
            PIC_MASTER_COMMAND => (0, false),
            PIC_MASTER_DATA => (0, true),
            PIC_SLAVE_COMMAND => (1, false),
            PIC_SLAVE_DATA => (1, true),
            PIC_ELCR_MASTER => return self.s.chips[0].elcr,
            PIC_ELCR_SLAVE => return self.s.chips[1].elcr,
            _ => return 0xff,
        };
        let master = index == 0;
        let chip = &mut self.s.chips[index];
        let value = if chip.poll {
            chip.poll = false;
            match get_irq(chip, master) {
                Some(irq) => {
                    intack(chip, irq);
                    0x80 | irq
                }
                None => 0,
            }
        } else if data {
            chip.imr
        } else if chip.read_reg_select {
            chip.isr
        } else {
            chip.irr
        };
        self.update();
        value
    }

    /// A guest write to `port` (see [`Pic::read`]); other ports are
    /// ignored.
    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            PIC_MASTER_COMMAND => write_command(&mut self.s.chips[0], value),
            PIC_MASTER_DATA => write_data(&mut self.s.chips[0], value),
            PIC_SLAVE_COMMAND => write_command(&mut self.s.chips[1], value),
            PIC_SLAVE_DATA => write_data(&mut self.s.chips[1], value),
            PIC_ELCR_MASTER | PIC_ELCR_SLAVE => {
                let chip = &mut self.s.chips[usize::from(port & 1)];
                chip.elcr = value & chip.elcr_mask;
            }
            _ => return,
        }
        self.update();
    }

    /// The ELCRs as one 16-bit mask (bit n = IRQ n level-triggered).
    pub fn elcr(&self) -> u16 {
        u16::from(self.s.chips[0].elcr) | (u16::from(self.s.chips[1].elcr) << 8)
    }

    /// The interrupt mask of both chips (bit n = IRQ n masked).
    pub fn imr(&self) -> u16 {
        u16::from(self.s.chips[0].imr) | (u16::from(self.s.chips[1].imr) << 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's `init_8259A`: vectors 0x30 and 0x38, cascade, 8086 mode.
    fn linux_init(pic: &mut Pic, auto_eoi: bool) {
        pic.write(0x21, 0xff);
        pic.write(0xa1, 0xff);
        pic.write(0x20, 0x11);
        pic.write(0x21, 0x30);
        pic.write(0x21, 0x04);
        pic.write(0x21, if auto_eoi { 0x03 } else { 0x01 });
        pic.write(0xa0, 0x11);
        pic.write(0xa1, 0x38);
        pic.write(0xa1, 0x02);
        pic.write(0xa1, 0x01);
        pic.write(0x21, 0x00);
        pic.write(0xa1, 0x00);
    }

    fn pulse(pic: &mut Pic, irq: u8) {
        pic.set_irq(irq, true);
        pic.set_irq(irq, false);
    }

    #[test]
    fn init_sequence_programs_the_vector_base() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        assert_eq!(pic.s.chips[0].irq_base, 0x30);
        assert_eq!(pic.s.chips[1].irq_base, 0x38);
        assert_eq!(pic.s.chips[0].init_state, 0);
        assert_eq!(pic.read(0x21), 0);
        pic.write(0x21, 0xfb);
        assert_eq!(pic.read(0x21), 0xfb);
        assert_eq!(pic.imr(), 0x00fb);
        // ICW1 clears IMR and ISR.
        pic.write(0x20, 0x11);
        assert_eq!(pic.s.chips[0].imr, 0);
        // Single mode without ICW4: only ICW2 follows.
        pic.write(0x20, 0x12);
        pic.write(0x21, 0x08);
        assert_eq!(pic.s.chips[0].init_state, 0);
        pic.write(0x21, 0xaa);
        assert_eq!(pic.read(0x21), 0xaa);
    }

    #[test]
    fn priority_and_eoi() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        assert!(!pic.pending());
        pulse(&mut pic, 4);
        pulse(&mut pic, 1);
        assert!(pic.pending());
        assert_eq!(pic.acknowledge(), 0x31);
        // IRQ 4 has lower priority than IRQ 1 in service.
        assert!(!pic.pending());
        pulse(&mut pic, 0);
        assert!(pic.pending(), "IRQ 0 preempts IRQ 1");
        assert_eq!(pic.acknowledge(), 0x30);
        pic.write(0x20, 0x0b); // OCW3: read ISR
        assert_eq!(pic.read(0x20), 0x03);
        pic.write(0x20, 0x0a); // read IRR
        assert_eq!(pic.read(0x20), 0x10);
        pic.write(0x20, 0x20); // non-specific EOI: IRQ 0
        assert_eq!(pic.s.chips[0].isr, 0x02);
        assert!(!pic.pending());
        pic.write(0x20, 0x61); // specific EOI of IRQ 1
        assert_eq!(pic.s.chips[0].isr, 0);
        assert!(pic.pending());
        assert_eq!(pic.acknowledge(), 0x34);
    }

    #[test]
    fn masking() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pic.write(0x21, 0x08);
        pulse(&mut pic, 3);
        assert!(!pic.pending());
        pic.write(0x21, 0x00);
        assert!(pic.pending());
        assert_eq!(pic.acknowledge(), 0x33);
    }

    #[test]
    fn cascade_through_the_slave() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pulse(&mut pic, 12);
        assert!(pic.pending());
        assert_eq!(pic.acknowledge(), 0x3c);
        assert_eq!(pic.s.chips[0].isr, 0x04);
        assert_eq!(pic.s.chips[1].isr, 0x10);
        // Another slave IRQ waits for both EOIs.
        pulse(&mut pic, 9);
        assert!(!pic.pending());
        pic.write(0xa0, 0x20);
        pic.write(0x20, 0x20);
        assert!(pic.pending());
        assert_eq!(pic.acknowledge(), 0x39);
        // Masking the cascade on the master hides the slave.
        pic.write(0xa0, 0x20);
        pic.write(0x20, 0x20);
        pic.write(0x21, 0x04);
        pulse(&mut pic, 15);
        assert!(!pic.pending());
        pic.write(0x21, 0x00);
        assert_eq!(pic.acknowledge(), 0x3f);
    }

    #[test]
    fn spurious_interrupts() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        assert_eq!(pic.acknowledge(), 0x37, "nothing pending: IRQ 7");
        assert_eq!(pic.s.chips[0].isr, 0);
        // A level-triggered slave IRQ that goes away before the INTA.
        pic.write(0x4d1, 0x08); // IRQ 11 level
        pic.set_irq(11, true);
        assert!(pic.pending());
        pic.set_irq(11, false);
        // The master latched the cascade edge.
        assert!(pic.pending());
        assert_eq!(pic.acknowledge(), 0x3f, "slave spurious: IRQ 15");
        assert_eq!(pic.s.chips[1].isr, 0);
    }

    #[test]
    fn level_triggered_via_elcr() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pic.write(0x4d0, 0xff);
        assert_eq!(pic.read(0x4d0), 0xf8, "IRQ 0-2 stay edge");
        pic.write(0x4d1, 0xff);
        assert_eq!(pic.read(0x4d1), 0xde);
        assert_eq!(pic.elcr(), 0xdef8);
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), 0x35);
        pic.write(0x20, 0x20);
        // Still asserted: requested again.
        assert!(pic.pending());
        assert_eq!(pic.acknowledge(), 0x35);
        pic.set_irq(5, false);
        pic.write(0x20, 0x20);
        assert!(!pic.pending());
        // An edge input does not re-request while held high.
        pic.set_irq(1, true);
        assert_eq!(pic.acknowledge(), 0x31);
        pic.write(0x20, 0x20);
        assert!(!pic.pending());
    }

    #[test]
    fn ltim_makes_every_input_level_triggered() {
        let mut pic = Pic::new();
        pic.write(0x20, 0x19); // ICW1 with LTIM
        pic.write(0x21, 0x20);
        pic.write(0x21, 0x04);
        pic.write(0x21, 0x01);
        pic.set_irq(0, true);
        pic.set_irq(0, false);
        assert!(!pic.pending());
    }

    #[test]
    fn auto_eoi_and_rotation() {
        let mut pic = Pic::new();
        linux_init(&mut pic, true);
        pulse(&mut pic, 3);
        assert_eq!(pic.acknowledge(), 0x33);
        assert_eq!(pic.s.chips[0].isr, 0, "auto-EOI");
        // Rotate in auto-EOI mode: the served IRQ becomes lowest.
        pic.write(0x20, 0x80);
        pulse(&mut pic, 3);
        assert_eq!(pic.acknowledge(), 0x33);
        assert_eq!(pic.s.chips[0].priority_add, 4);
        pulse(&mut pic, 3);
        pulse(&mut pic, 5);
        assert_eq!(pic.acknowledge(), 0x35, "5 outranks 3 after rotation");
        pic.write(0x20, 0x00);
        assert!(!pic.s.chips[0].rotate_on_auto_eoi);
    }

    #[test]
    fn rotate_and_set_priority() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pic.write(0x20, 0xc4); // set priority: IRQ 4 lowest, 5 highest
        pulse(&mut pic, 2 + 1);
        pulse(&mut pic, 6);
        assert_eq!(pic.acknowledge(), 0x36);
        pic.write(0x20, 0xa0); // rotate on non-specific EOI
        assert_eq!(pic.s.chips[0].priority_add, 7);
        assert_eq!(pic.acknowledge(), 0x33);
        pic.write(0x20, 0xe3); // specific EOI and rotate on IRQ 3
        assert_eq!(pic.s.chips[0].isr, 0);
        assert_eq!(pic.s.chips[0].priority_add, 4);
    }

    #[test]
    fn poll_mode() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pic.write(0x20, 0x0c);
        assert_eq!(pic.read(0x20), 0, "nothing pending");
        pulse(&mut pic, 6);
        pic.write(0x20, 0x0c);
        assert_eq!(pic.read(0x21), 0x86);
        assert_eq!(pic.s.chips[0].isr, 0x40);
        // The next read is normal again.
        assert_eq!(pic.read(0x21), 0x00);
    }

    #[test]
    fn special_mask_mode() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pulse(&mut pic, 1);
        assert_eq!(pic.acknowledge(), 0x31);
        pulse(&mut pic, 5);
        assert!(!pic.pending());
        // Mask IRQ 1 and enter special mask mode: lower IRQs get through.
        pic.write(0x21, 0x02);
        pic.write(0x20, 0x68);
        assert!(pic.pending());
        assert_eq!(pic.acknowledge(), 0x35);
        pic.write(0x20, 0x48);
        assert!(!pic.s.chips[0].special_mask);
    }

    #[test]
    fn special_fully_nested_mode() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pic.write(0x20, 0x11);
        pic.write(0x21, 0x30);
        pic.write(0x21, 0x04);
        pic.write(0x21, 0x11); // SFNM
        pulse(&mut pic, 12);
        assert_eq!(pic.acknowledge(), 0x3c);
        pulse(&mut pic, 9);
        assert!(pic.pending(), "higher slave IRQ nests");
        assert_eq!(pic.acknowledge(), 0x39);
    }

    #[test]
    fn bad_ports_and_irqs_are_ignored() {
        let mut pic = Pic::new();
        assert_eq!(pic.read(0x22), 0xff);
        pic.write(0x22, 0x11);
        pic.set_irq(16, true);
        pic.set_irq(255, true);
        pic.set_irq(2, true);
        assert!(!pic.pending());
        for v in 0..=255u8 {
            for port in [0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1] {
                pic.write(port, v);
                pic.read(port);
                pic.set_irq(v & 15, v & 1 != 0);
                if pic.pending() {
                    pic.acknowledge();
                }
            }
        }
    }

    #[test]
    fn snapshot_round_trip() {
        let mut pic = Pic::new();
        linux_init(&mut pic, false);
        pulse(&mut pic, 10);
        let state = pic.state();
        let mut restored = Pic::from_state(state.clone());
        assert_eq!(restored.state(), state);
        assert_eq!(restored.acknowledge(), 0x3a);
    }
}
