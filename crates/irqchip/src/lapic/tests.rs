use super::*;

const TSC_HZ: u64 = 2_000_000_000;

fn rd(l: &Lapic, offset: u32, now: u64) -> u32 {
    let mut b = [0u8; 4];
    l.read(u64::from(offset), &mut b, now);
    u32::from_le_bytes(b)
}

fn wr(l: &mut Lapic, offset: u32, value: u32, now: u64) -> LapicAction {
    l.write(u64::from(offset), &value.to_le_bytes(), now)
}

/// An enabled xAPIC with ID `id`.
/// Nanoseconds a timer count lasts with divide-by-1.
const T: u64 = 1_000_000_000 / super::APIC_BUS_HZ;

fn enabled(id: u32) -> Lapic {
    let mut l = Lapic::new(id, id == 0, TSC_HZ);
    wr(&mut l, reg::SVR, SVR_ENABLE | 0xff, 0);
    l
}

fn x2apic(id: u32) -> Lapic {
    let mut l = enabled(id);
    l.set_apic_base(APIC_DEFAULT_BASE | APIC_BASE_ENABLE | APIC_BASE_EXTD)
        .unwrap();
    l
}

#[test]
fn power_on_registers() {
    let l = Lapic::new(3, false, TSC_HZ);
    assert_eq!(l.apic_base(), 0xfee0_0800);
    assert_eq!(Lapic::new(0, true, TSC_HZ).apic_base(), 0xfee0_0900);
    assert_eq!(rd(&l, reg::ID, 0), 3 << 24);
    assert_eq!(rd(&l, reg::VERSION, 0), 0x0005_0014);
    assert_eq!(rd(&l, reg::SVR, 0), 0xff);
    assert_eq!(rd(&l, reg::DFR, 0), 0xffff_ffff);
    for lvt in [
        reg::LVT_TIMER,
        reg::LVT_LINT0,
        reg::LVT_LINT1,
        reg::LVT_ERROR,
    ] {
        assert_eq!(rd(&l, lvt, 0), LVT_MASKED);
    }
    assert!(!l.is_sw_enabled());
    assert!(l.xapic_mmio_enabled());
}

#[test]
fn odd_mmio_accesses_do_not_panic() {
    let mut l = enabled(1);
    let mut big = [0xaau8; 16];
    l.read(0x20, &mut big, 0);
    assert_eq!(big, [0; 16]);
    let mut byte = [0u8; 1];
    l.read(0x23, &mut byte, 0);
    assert_eq!(byte[0], 1, "byte 3 of the ID register");
    l.read(0x24, &mut byte, 0);
    assert_eq!(byte[0], 0);
    l.read(0xffff_ffff_ffff_ffff, &mut byte, 0);
    l.read(0xfff, &mut byte, 0);
    let mut empty = [0u8; 0];
    l.read(0x20, &mut empty, 0);
    for offset in (0..0x1010u64).step_by(3) {
        for len in [0usize, 1, 2, 3, 4, 8] {
            let data = vec![0xffu8; len];
            let _ = l.write(offset, &data, 0);
            let mut out = vec![0u8; len];
            l.read(offset, &mut out, 0);
        }
    }
    // Two-byte write to TPR is ignored.
    let mut l = enabled(1);
    l.write(u64::from(reg::TPR), &[0x50, 0], 0);
    assert_eq!(l.tpr(), 0);
}

#[test]
fn accept_priority_and_ppr() {
    let mut l = enabled(0);
    assert!(l.accept_interrupt(0x31, false));
    assert!(l.accept_interrupt(0x52, false));
    assert_eq!(l.pending_vector(), Some(0x52));
    assert_eq!(l.acknowledge(), 0x52);
    assert_eq!(rd(&l, reg::PPR, 0), 0x50);
    // 0x31 is below the in-service class.
    assert_eq!(l.pending_vector(), None);
    // A higher class preempts.
    l.accept_interrupt(0x61, false);
    assert_eq!(l.pending_vector(), Some(0x61));
    assert_eq!(l.acknowledge(), 0x61);
    assert_eq!(l.ppr(), 0x60);
    assert_eq!(wr(&mut l, reg::EOI, 0, 0), LapicAction::None);
    assert_eq!(l.ppr(), 0x50);
    wr(&mut l, reg::EOI, 0, 0);
    assert_eq!(l.ppr(), 0);
    assert_eq!(l.pending_vector(), Some(0x31));
    // Same class as in service is not deliverable.
    l.acknowledge();
    l.accept_interrupt(0x3f, false);
    assert_eq!(l.pending_vector(), None);
}

#[test]
fn tpr_masks_by_class() {
    let mut l = enabled(0);
    wr(&mut l, reg::TPR, 0x45, 0);
    assert_eq!(l.ppr(), 0x45);
    l.accept_interrupt(0x4f, false);
    assert_eq!(l.pending_vector(), None, "same class as TPR is masked");
    l.accept_interrupt(0x50, false);
    assert_eq!(l.pending_vector(), Some(0x50));
    l.set_cr8(6);
    assert_eq!(l.tpr(), 0x60);
    assert_eq!(l.cr8(), 6);
    assert_eq!(l.pending_vector(), None);
    // Acknowledge with nothing deliverable gives the spurious vector.
    assert_eq!(l.acknowledge(), 0xff);
    assert!(l.irr_test(0x50));
    l.set_cr8(0);
    assert_eq!(l.pending_vector(), Some(0x50));
}

#[test]
fn apr_for_lowest_priority() {
    let mut l = enabled(0);
    wr(&mut l, reg::TPR, 0x20, 0);
    assert_eq!(rd(&l, reg::APR, 0), 0x20);
    l.accept_interrupt(0x80, false);
    assert_eq!(l.apr(), 0x80);
}

#[test]
fn eoi_of_level_interrupt_is_reported() {
    let mut l = enabled(0);
    l.accept_interrupt(0x40, true);
    l.accept_interrupt(0x30, false);
    assert_eq!(rd(&l, reg::TMR + 0x20, 0), 1, "TMR bit 0x40");
    assert_eq!(l.acknowledge(), 0x40);
    assert_eq!(rd(&l, reg::ISR + 0x20, 0), 1);
    assert_eq!(wr(&mut l, reg::EOI, 0, 0), LapicAction::Eoi(0x40));
    assert_eq!(l.acknowledge(), 0x30);
    assert_eq!(wr(&mut l, reg::EOI, 0, 0), LapicAction::None);
    // EOI with nothing in service.
    assert_eq!(wr(&mut l, reg::EOI, 0, 0), LapicAction::None);
    // Re-accepting a vector as edge clears its TMR bit.
    l.accept_interrupt(0x40, false);
    assert_eq!(rd(&l, reg::TMR + 0x20, 0), 0);
}

#[test]
fn software_disabled_apic() {
    let mut l = Lapic::new(0, true, TSC_HZ);
    assert!(!l.accept_interrupt(0x40, false));
    assert_eq!(l.pending_vector(), None);
    // LVTs cannot be unmasked while disabled.
    wr(&mut l, reg::LVT_LINT0, 0x700, 0);
    assert_eq!(rd(&l, reg::LVT_LINT0, 0), 0x10700);
    wr(&mut l, reg::SVR, 0x1ff, 0);
    wr(&mut l, reg::LVT_LINT0, 0x700, 0);
    assert_eq!(rd(&l, reg::LVT_LINT0, 0), 0x700);
    assert!(l.accept_pic_interrupts());
    // Disabling masks all LVTs again.
    wr(&mut l, reg::SVR, 0xff, 0);
    assert!(rd(&l, reg::LVT_LINT0, 0) & LVT_MASKED != 0);
    assert!(!l.accept_pic_interrupts());
}

#[test]
fn illegal_vectors_and_esr() {
    let mut l = enabled(0);
    wr(&mut l, reg::LVT_ERROR, 0xfe, 0);
    assert!(!l.accept_interrupt(5, false));
    assert_eq!(rd(&l, reg::ESR, 0), 0, "ESR updates on write");
    wr(&mut l, reg::ESR, 0, 0);
    assert_eq!(rd(&l, reg::ESR, 0), ESR_RECEIVE_ILLEGAL_VECTOR);
    assert_eq!(l.pending_vector(), Some(0xfe), "error LVT raised");
    wr(&mut l, reg::ESR, 0, 0);
    assert_eq!(rd(&l, reg::ESR, 0), 0);
    // Sending a fixed IPI with vector 3.
    wr(&mut l, reg::ICR_HIGH, 1 << 24, 0);
    assert_eq!(wr(&mut l, reg::ICR_LOW, 0x4003, 0), LapicAction::None);
    wr(&mut l, reg::ESR, 0, 0);
    assert_eq!(rd(&l, reg::ESR, 0), ESR_SEND_ILLEGAL_VECTOR);
}

#[test]
fn icr_ipi_decoding() {
    let mut l = enabled(0);
    wr(&mut l, reg::ICR_HIGH, 0x0300_0000, 0);
    assert_eq!(rd(&l, reg::ICR_HIGH, 0), 0x0300_0000);
    let action = wr(&mut l, reg::ICR_LOW, 0x0000_4031, 0);
    assert_eq!(
        action,
        LapicAction::SendIpi(Ipi {
            vector: 0x31,
            delivery_mode: DeliveryMode::Fixed,
            dest_mode: DestMode::Physical,
            level: true,
            trigger: TriggerMode::Edge,
            dest_shorthand: DestShorthand::None,
            destination: 3,
            x2apic_format: false,
        })
    );
    // INIT assert, level, all excluding self.
    let LapicAction::SendIpi(ipi) = wr(&mut l, reg::ICR_LOW, 0x000c_c500, 0) else {
        panic!("no IPI");
    };
    assert_eq!(ipi.delivery_mode, DeliveryMode::Init);
    assert_eq!(ipi.dest_shorthand, DestShorthand::AllExcludingSelf);
    assert_eq!(ipi.trigger, TriggerMode::Level);
    assert!(!ipi.is_init_deassert());
    // INIT de-assert.
    let LapicAction::SendIpi(ipi) = wr(&mut l, reg::ICR_LOW, 0x0008_8500, 0) else {
        panic!("no IPI");
    };
    assert!(ipi.is_init_deassert());
    assert!(!l.matches_ipi(&ipi, false));
    // SIPI to logical destination 0x0f with vector 0x9a.
    wr(&mut l, reg::ICR_HIGH, 0x0f00_0000, 0);
    let LapicAction::SendIpi(ipi) = wr(&mut l, reg::ICR_LOW, 0x0000_0e9a, 0) else {
        panic!("no IPI");
    };
    assert_eq!(ipi.delivery_mode, DeliveryMode::StartUp);
    assert_eq!(ipi.dest_mode, DestMode::Logical);
    assert_eq!(ipi.vector, 0x9a);
    assert_eq!(ipi.destination, 0x0f);
    // Delivery status always reads idle.
    assert_eq!(rd(&l, reg::ICR_LOW, 0) & (1 << 12), 0);
    // NMI to self.
    let LapicAction::SendIpi(ipi) = wr(&mut l, reg::ICR_LOW, 0x0004_0400, 0) else {
        panic!("no IPI");
    };
    assert_eq!(ipi.delivery_mode, DeliveryMode::Nmi);
    assert_eq!(ipi.dest_shorthand, DestShorthand::SelfOnly);
    assert!(l.matches_ipi(&ipi, true));
    assert!(!l.matches_ipi(&ipi, false));
}

#[test]
fn physical_and_flat_logical_destinations() {
    let mut l = enabled(5);
    assert!(l.matches_destination(5, false, false));
    assert!(!l.matches_destination(4, false, false));
    assert!(l.matches_destination(0xff, false, false), "broadcast");
    // Logical, flat model.
    wr(&mut l, reg::LDR, 0x2000_0000, 0);
    assert!(l.matches_destination(0x20, true, false));
    assert!(l.matches_destination(0x23, true, false));
    assert!(!l.matches_destination(0x10, true, false));
    assert!(l.matches_destination(0xff, true, false));
    // Changing the xAPIC ID changes physical matching.
    wr(&mut l, reg::ID, 0x0700_0000, 0);
    assert_eq!(l.id(), 7);
    assert!(l.matches_destination(7, false, false));
}

#[test]
fn cluster_logical_destinations() {
    let mut l = enabled(5);
    wr(&mut l, reg::DFR, 0x0fff_ffff, 0);
    assert_eq!(rd(&l, reg::DFR, 0), 0x0fff_ffff);
    wr(&mut l, reg::LDR, 0x3400_0000, 0); // cluster 3, member bit 2
    assert!(l.matches_destination(0x34, true, false));
    assert!(l.matches_destination(0x3c, true, false));
    assert!(!l.matches_destination(0x24, true, false), "other cluster");
    assert!(!l.matches_destination(0x33, true, false), "other members");
    assert!(l.matches_destination(0xf4, true, false), "all clusters");
}

#[test]
fn x2apic_cluster_destinations() {
    let l = x2apic(0x23);
    assert_eq!(l.id(), 0x23);
    assert_eq!(l.rdmsr(0x80d, 0).unwrap(), (2 << 16) | (1 << 3));
    assert!(l.matches_destination(0x23, false, true));
    assert!(l.matches_destination((2 << 16) | 0x8, true, true));
    assert!(!l.matches_destination((1 << 16) | 0x8, true, true));
    assert!(!l.matches_destination((2 << 16) | 0x4, true, true));
    assert!(l.matches_destination(0xffff_ffff, false, true));
    assert!(l.matches_destination(0xff, false, false), "8-bit broadcast");
    assert!(!l.matches_destination(0xff, false, true));
    // Hardware-disabled APICs match nothing.
    let mut d = enabled(1);
    d.set_apic_base(APIC_DEFAULT_BASE).unwrap();
    assert!(!d.matches_destination(1, false, false));
    assert!(d.accept_pic_interrupts());
}

#[test]
fn x2apic_msrs() {
    let mut l = enabled(2);
    assert_eq!(l.rdmsr(0x802, 0), Err(LapicError::NotX2Apic(0x802)));
    assert_eq!(l.wrmsr(0x808, 0, 0), Err(LapicError::NotX2Apic(0x808)));
    l.set_apic_base(0xfee0_0c00).unwrap();
    assert!(l.is_x2apic());
    assert!(!l.xapic_mmio_enabled());
    assert_eq!(rd(&l, reg::ID, 0), 0, "MMIO is off in x2APIC mode");
    assert_eq!(l.rdmsr(0x802, 0), Ok(2));
    assert_eq!(l.rdmsr(0x803, 0), Ok(0x0005_0014));
    assert_eq!(l.wrmsr(0x808, 0x40, 0), Ok(LapicAction::None));
    assert_eq!(l.rdmsr(0x808, 0), Ok(0x40));
    assert_eq!(l.rdmsr(0x80a, 0), Ok(0x40));
    assert_eq!(l.wrmsr(0x802, 7, 0), Err(LapicError::ReadOnly(0x802)));
    assert_eq!(l.wrmsr(0x80d, 7, 0), Err(LapicError::ReadOnly(0x80d)));
    assert_eq!(l.rdmsr(0x80b, 0), Err(LapicError::WriteOnly(0x80b)));
    assert_eq!(l.rdmsr(0x83f, 0), Err(LapicError::WriteOnly(0x83f)));
    assert_eq!(
        l.rdmsr(0x80e, 0),
        Err(LapicError::UnknownMsr(0x80e)),
        "no DFR"
    );
    assert_eq!(l.rdmsr(0x831, 0), Err(LapicError::UnknownMsr(0x831)));
    assert_eq!(l.wrmsr(0x809, 0, 0), Err(LapicError::UnknownMsr(0x809)));
    assert!(matches!(
        l.wrmsr(0x80b, 1, 0),
        Err(LapicError::ReservedBits { .. })
    ));
    assert!(matches!(
        l.wrmsr(0x808, 1 << 32, 0),
        Err(LapicError::ReservedBits { .. })
    ));
    assert_eq!(l.rdmsr(0x10, 0), Err(LapicError::UnknownMsr(0x10)));
    assert!(Lapic::handles_msr(0x1b) && Lapic::handles_msr(0x6e0) && Lapic::handles_msr(0x8ff));
    assert!(!Lapic::handles_msr(0x900));

    // SELF_IPI sets IRR directly.
    l.wrmsr(0x808, 0, 0).unwrap();
    assert_eq!(l.wrmsr(0x83f, 0x55, 0), Ok(LapicAction::None));
    assert_eq!(l.rdmsr(0x822, 0), Ok(1 << 0x15));
    assert_eq!(l.pending_vector(), Some(0x55));
    assert!(matches!(
        l.wrmsr(0x83f, 0x155, 0),
        Err(LapicError::ReservedBits { .. })
    ));

    // ICR is one 64-bit MSR with a 32-bit destination.
    let action = l
        .wrmsr(0x830, (0x1234_5678u64 << 32) | 0x0000_4841, 0)
        .unwrap();
    let LapicAction::SendIpi(ipi) = action else {
        panic!("no IPI");
    };
    assert_eq!(ipi.destination, 0x1234_5678);
    assert_eq!(ipi.dest_mode, DestMode::Logical);
    assert!(ipi.x2apic_format);
    assert_eq!(ipi.vector, 0x41);
    assert_eq!(l.rdmsr(0x830, 0), Ok((0x1234_5678u64 << 32) | 0x4841));

    // EOI through the MSR, level-triggered.
    l.accept_interrupt(0x60, true);
    assert_eq!(l.acknowledge(), 0x60);
    assert_eq!(l.wrmsr(0x80b, 0, 0), Ok(LapicAction::Eoi(0x60)));
}

#[test]
fn apic_base_transitions() {
    let mut l = enabled(4);
    let xapic = APIC_DEFAULT_BASE | APIC_BASE_ENABLE;
    let x2 = xapic | APIC_BASE_EXTD;
    // Reserved bits.
    assert!(l.set_apic_base(xapic | 1).is_err());
    assert!(l.set_apic_base(xapic | (1 << 60)).is_err());
    // EXTD without EN.
    assert!(l.set_apic_base(APIC_DEFAULT_BASE | APIC_BASE_EXTD).is_err());
    // Change the xAPIC ID; x2APIC mode uses the initial one.
    wr(&mut l, reg::ID, 9 << 24, 0);
    l.set_apic_base(x2).unwrap();
    assert_eq!(l.id(), 4);
    // x2APIC -> xAPIC is invalid; x2APIC -> disabled -> xAPIC works.
    assert!(l.set_apic_base(xapic).is_err());
    l.accept_interrupt(0x40, false);
    l.set_apic_base(APIC_DEFAULT_BASE).unwrap();
    assert!(!l.is_hw_enabled());
    assert_eq!(l.pending_vector(), None);
    // Disabled -> x2APIC is invalid.
    assert!(l.set_apic_base(x2).is_err());
    l.set_apic_base(xapic).unwrap();
    assert!(!l.irr_test(0x40), "disabling reset the registers");
    assert_eq!(rd(&l, reg::SVR, 0), 0xff);
    // Relocation is reported; the BSP bit is read-only.
    l.set_apic_base(0xfed0_0000 | APIC_BASE_ENABLE | APIC_BASE_BSP)
        .unwrap();
    assert_eq!(l.mmio_base(), 0xfed0_0000);
    assert_eq!(l.apic_base() & APIC_BASE_BSP, 0);
    assert_eq!(l.wrmsr(0x1b, 0xfee0_0800, 0), Ok(LapicAction::None));
    assert_eq!(l.rdmsr(0x1b, 0), Ok(0xfee0_0800));
}

#[test]
fn init_resets_all_but_id_and_base() {
    let mut l = enabled(6);
    wr(&mut l, reg::ID, 8 << 24, 0);
    wr(&mut l, reg::TPR, 0x30, 0);
    wr(&mut l, reg::LDR, 0x0100_0000, 0);
    wr(&mut l, reg::LVT_TIMER, 0x20030, 0);
    wr(&mut l, reg::TIMER_INITIAL, 1000, 0);
    l.accept_interrupt(0x80, true);
    l.deliver_init();
    assert_eq!(l.id(), 8);
    assert_eq!(l.apic_base(), 0xfee0_0800);
    assert_eq!(l.tpr(), 0);
    assert_eq!(rd(&l, reg::LDR, 0), 0);
    assert_eq!(rd(&l, reg::SVR, 0), 0xff);
    assert_eq!(rd(&l, reg::LVT_TIMER, 0), LVT_MASKED);
    assert_eq!(rd(&l, reg::TIMER_INITIAL, 0), 0);
    assert!(!l.irr_test(0x80));
    assert_eq!(l.next_deadline_ns(), None);
    // In x2APIC mode INIT keeps the mode and the derived LDR.
    let mut l = x2apic(0x11);
    l.deliver_init();
    assert!(l.is_x2apic());
    assert_eq!(l.rdmsr(0x80d, 0), Ok((1 << 16) | 2));
}

#[test]
fn lvt_decoding_for_virtual_wire() {
    let mut l = enabled(0);
    wr(&mut l, reg::LVT_LINT0, 0x0000_8700, 0); // ExtINT, level
    wr(&mut l, reg::LVT_LINT1, 0x0000_0400, 0); // NMI
    let lint0 = l.lvt(Lvt::Lint0);
    assert_eq!(lint0.delivery_mode, DeliveryMode::ExtInt);
    assert!(!lint0.masked && lint0.level_triggered);
    assert_eq!(l.lvt(Lvt::Lint1).delivery_mode, DeliveryMode::Nmi);
    assert!(l.accept_pic_interrupts());
    wr(&mut l, reg::LVT_LINT0, 0x0001_0700, 0);
    assert!(!l.accept_pic_interrupts());
    // Read-only bits (delivery status, remote IRR) are not writable.
    wr(&mut l, reg::LVT_LINT0, 0xffff_ffff, 0);
    assert_eq!(rd(&l, reg::LVT_LINT0, 0), 0x0001_a7ff);
    assert_eq!(l.lvt(Lvt::Timer).delivery_mode, DeliveryMode::Fixed);
}

// ---- timer ----

#[test]
fn divide_configuration() {
    let mut l = enabled(0);
    let cases = [
        (0x0, 2),
        (0x1, 4),
        (0x2, 8),
        (0x3, 16),
        (0x8, 32),
        (0x9, 64),
        (0xa, 128),
        (0xb, 1),
    ];
    for (dcr, div) in cases {
        wr(&mut l, reg::TIMER_DIVIDE, dcr | 0xf0, 0);
        assert_eq!(l.timer_divisor(), div, "dcr {dcr:#x}");
        assert_eq!(rd(&l, reg::TIMER_DIVIDE, 0), dcr);
    }
}

#[test]
fn one_shot_timer_fires_once_at_the_right_time() {
    let mut l = enabled(0);
    wr(&mut l, reg::TIMER_DIVIDE, 0x1, 0); // divide by 4 -> 4T ns per count
    wr(&mut l, reg::LVT_TIMER, 0xec, 1000);
    wr(&mut l, reg::TIMER_INITIAL, 250_000, 1000); // 1 ms at 1 GHz
    assert_eq!(l.next_deadline_ns(), Some(1000 + 1_000_000 * T));
    assert_eq!(rd(&l, reg::TIMER_CURRENT, 1000), 250_000);
    assert_eq!(rd(&l, reg::TIMER_CURRENT, 1000 + 400 * T), 250_000 - 100);
    assert_eq!(rd(&l, reg::TIMER_CURRENT, 1000 + 401 * T), 250_000 - 100);
    assert_eq!(rd(&l, reg::TIMER_CURRENT, 1000 + 404 * T), 250_000 - 101);
    assert!(!l.tick(1000 + 1_000_000 * T - 1));
    assert_eq!(l.pending_vector(), None);
    assert!(l.tick(1000 + 1_000_000 * T));
    assert_eq!(l.pending_vector(), Some(0xec));
    assert_eq!(rd(&l, reg::TIMER_CURRENT, 1000 + 1_000_000 * T), 0);
    assert_eq!(l.next_deadline_ns(), None);
    assert!(!l.tick(5_000_000 * T), "one-shot fires once");
    // Writing 0 stops a running timer.
    wr(&mut l, reg::TIMER_INITIAL, 100, 6_000_000 * T);
    wr(&mut l, reg::TIMER_INITIAL, 0, 6_000_100 * T);
    assert_eq!(l.next_deadline_ns(), None);
    assert!(!l.tick(7_000_000 * T));
}

#[test]
fn periodic_timer_rearms() {
    let mut l = enabled(0);
    wr(&mut l, reg::TIMER_DIVIDE, 0xb, 0); // divide by 1
    wr(&mut l, reg::LVT_TIMER, (1 << 17) | 0x40, 0);
    assert_eq!(l.timer_mode(), TimerMode::Periodic);
    wr(&mut l, reg::TIMER_INITIAL, 1_000_000, 0); // 1 ms at 1 GHz
    for k in 1..=3u64 {
        assert_eq!(l.next_deadline_ns(), Some(k * 1_000_000 * T));
        assert!(!l.tick(k * 1_000_000 * T - 1));
        assert!(l.tick(k * 1_000_000 * T));
        assert_eq!(l.acknowledge(), 0x40);
        wr(&mut l, reg::EOI, 0, k * 1_000_000 * T);
    }
    assert_eq!(rd(&l, reg::TIMER_CURRENT, 3_250_000 * T), 750_000);
    // Missed periods coalesce.
    assert!(l.tick(7_500_000 * T));
    assert_eq!(l.next_deadline_ns(), Some(8_000_000 * T));
    // Very short periods are stretched.
    wr(&mut l, reg::TIMER_INITIAL, 10, 10_000_000 * T);
    assert_eq!(l.next_deadline_ns(), Some(10_000_000 * T + MIN_PERIODIC_NS));
    assert!(rd(&l, reg::TIMER_CURRENT, 10_000_000 * T + MIN_PERIODIC_NS / 2) <= 10);
}

#[test]
fn masked_timer_expiry_is_lost() {
    let mut l = enabled(0);
    wr(&mut l, reg::TIMER_DIVIDE, 0xb, 0);
    wr(&mut l, reg::LVT_TIMER, LVT_MASKED | 0x40, 0);
    wr(&mut l, reg::TIMER_INITIAL, 1000, 0);
    assert_eq!(l.next_deadline_ns(), None);
    wr(&mut l, reg::LVT_TIMER, 0x40, 5000 * T);
    assert!(!l.tick(5000 * T));
    assert_eq!(l.pending_vector(), None);
    assert_eq!(l.next_deadline_ns(), None);
}

#[test]
fn divide_change_rescales_the_running_count() {
    let mut l = enabled(0);
    wr(&mut l, reg::TIMER_DIVIDE, 0xb, 0);
    wr(&mut l, reg::LVT_TIMER, 0x40, 0);
    wr(&mut l, reg::TIMER_INITIAL, 1000, 0);
    wr(&mut l, reg::TIMER_DIVIDE, 0x0, 400 * T); // now divide by 2, 600 counts left
    assert_eq!(rd(&l, reg::TIMER_CURRENT, 400 * T), 600);
    assert_eq!(l.next_deadline_ns(), Some((400 + 1200) * T));
    assert_eq!(rd(&l, reg::TIMER_CURRENT, 1000 * T), 300);
}

#[test]
fn mode_switches() {
    let mut l = enabled(0);
    wr(&mut l, reg::TIMER_DIVIDE, 0xb, 0);
    wr(&mut l, reg::LVT_TIMER, (1 << 17) | 0x40, 0);
    wr(&mut l, reg::TIMER_INITIAL, 1_000_000, 0);
    // Periodic -> one-shot finishes the current period.
    wr(&mut l, reg::LVT_TIMER, 0x40, 2_300_000 * T);
    assert_eq!(l.next_deadline_ns(), Some(3_000_000 * T));
    assert_eq!(rd(&l, reg::TIMER_CURRENT, 2_500_000 * T), 500_000);
    // -> TSC deadline clears the count.
    wr(&mut l, reg::LVT_TIMER, (2 << 17) | 0x40, 2_600_000 * T);
    assert_eq!(rd(&l, reg::TIMER_INITIAL, 0), 0);
    assert_eq!(l.next_deadline_ns(), None);
    // Initial-count writes are ignored in TSC-deadline mode.
    wr(&mut l, reg::TIMER_INITIAL, 5, 2_600_000 * T);
    assert_eq!(rd(&l, reg::TIMER_INITIAL, 0), 0);
}

#[test]
fn tsc_deadline_timer() {
    let mut l = enabled(0);
    // Ignored outside TSC-deadline mode.
    l.wrmsr(MSR_IA32_TSC_DEADLINE, 1000, 0).unwrap();
    assert_eq!(l.rdmsr(MSR_IA32_TSC_DEADLINE, 0), Ok(0));
    wr(&mut l, reg::LVT_TIMER, (2 << 17) | 0xef, 0);
    assert_eq!(l.timer_mode(), TimerMode::TscDeadline);
    // 2 GHz TSC: tick 4_000_000 is at 2 ms.
    assert_eq!(l.tsc_at(1_000_000), 2_000_000);
    l.wrmsr(MSR_IA32_TSC_DEADLINE, 4_000_000, 1_000_000)
        .unwrap();
    assert_eq!(l.rdmsr(MSR_IA32_TSC_DEADLINE, 0), Ok(4_000_000));
    assert_eq!(l.next_deadline_ns(), Some(2_000_000));
    assert!(!l.tick(1_999_999));
    assert!(l.tick(2_000_000));
    assert_eq!(l.pending_vector(), Some(0xef));
    assert_eq!(
        l.rdmsr(MSR_IA32_TSC_DEADLINE, 0),
        Ok(0),
        "disarmed after firing"
    );
    assert_eq!(l.next_deadline_ns(), None);
    // A deadline in the past fires in the write itself; 0 disarms.
    assert_eq!(l.acknowledge(), 0xef);
    l.eoi();
    l.wrmsr(MSR_IA32_TSC_DEADLINE, 5, 3_000_000).unwrap();
    assert_eq!(l.next_deadline_ns(), None);
    assert_eq!(l.rdmsr(MSR_IA32_TSC_DEADLINE, 0), Ok(0));
    assert_eq!(l.pending_vector(), Some(0xef));
    assert_eq!(l.acknowledge(), 0xef);
    l.eoi();
    l.set_tsc_offset(100);
    l.wrmsr(MSR_IA32_TSC_DEADLINE, 50, 3_000_000).unwrap();
    assert_eq!(l.pending_vector(), Some(0xef), "before the TSC origin");
    l.set_tsc_offset(0);
    l.wrmsr(MSR_IA32_TSC_DEADLINE, 0, 3_000_000).unwrap();
    assert_eq!(l.next_deadline_ns(), None);
    // The TSC offset moves the deadline.
    l.set_tsc_offset(1_000_000);
    l.wrmsr(MSR_IA32_TSC_DEADLINE, 9_000_000, 3_000_000)
        .unwrap();
    assert_eq!(l.next_deadline_ns(), Some(4_000_000));
    // Odd TSC rates round the deadline up.
    let mut l = enabled(0);
    let mut s = l.state();
    s.tsc_hz = 3;
    l = Lapic::from_state(s);
    wr(&mut l, reg::LVT_TIMER, (2 << 17) | 0xef, 0);
    l.wrmsr(MSR_IA32_TSC_DEADLINE, 1, 0).unwrap();
    assert_eq!(l.next_deadline_ns(), Some(333_333_334));
    assert_eq!(l.tsc_at(333_333_334), 1);
    assert_eq!(l.tsc_at(333_333_333), 0);
}

#[test]
fn snapshot_round_trip_keeps_the_timer() {
    let mut l = enabled(0);
    wr(&mut l, reg::LVT_TIMER, 0x40, 0);
    wr(&mut l, reg::TIMER_INITIAL, 1000, 0);
    l.accept_interrupt(0x90, true);
    let state = l.state();
    let mut r = Lapic::from_state(state.clone());
    assert_eq!(r.state(), state);
    assert_eq!(r.next_deadline_ns(), l.next_deadline_ns());
    assert!(r.tick(2_000 * 2 * T));
    assert_eq!(r.pending_vector(), Some(0x90));
}

#[test]
fn garbage_state_does_not_panic() {
    let state = LapicState {
        apic_base: u64::MAX,
        svr: u32::MAX,
        lvt: [u32::MAX; 7],
        timer_initial: u32::MAX,
        timer_divide: u32::MAX,
        timer_period_ns: u64::MAX,
        timer_next_ns: Some(0),
        tsc_deadline: u64::MAX,
        tsc_hz: u64::MAX,
        tsc_offset: u64::MAX,
        isr: [u32::MAX; 8],
        irr: [u32::MAX; 8],
        tmr: [u32::MAX; 8],
        ..LapicState::default()
    };
    let mut l = Lapic::from_state(state);
    for now in [0, 1, u64::MAX / 2, u64::MAX] {
        l.tick(now);
        let _ = l.next_deadline_ns();
        let _ = l.timer_current_count(now);
        let _ = l.rdmsr(0x839, now);
        let _ = l.wrmsr(0x83e, 0xb, now);
        let _ = l.wrmsr(0x838, 0xffff_ffff, now);
        let _ = l.wrmsr(0x832, 1 << 17, now);
        let _ = l.tick(now);
        l.acknowledge();
        l.eoi();
    }
}

#[test]
fn one_shot_to_periodic_after_expiry_stays_stopped() {
    let mut l = enabled(0);
    wr(&mut l, reg::TIMER_DIVIDE, 0xb, 0);
    wr(&mut l, reg::LVT_TIMER, 0x40, 0);
    wr(&mut l, reg::TIMER_INITIAL, 1_000_000, 0);
    // Switch to periodic while still counting: it keeps going and rearms.
    wr(&mut l, reg::LVT_TIMER, (1 << 17) | 0x40, 500_000 * T);
    assert_eq!(rd(&l, reg::TIMER_CURRENT, 500_000 * T), 500_000);
    assert!(l.tick(1_000_000 * T));
    assert_eq!(l.next_deadline_ns(), Some(2_000_000 * T));
    // Back to one-shot, let it expire, then periodic: stays at 0.
    wr(&mut l, reg::LVT_TIMER, 0x40, 1_500_000 * T);
    assert!(l.tick(2_000_000 * T));
    wr(&mut l, reg::LVT_TIMER, (1 << 17) | 0x40, 3_000_000 * T);
    assert_eq!(rd(&l, reg::TIMER_CURRENT, 3_000_000 * T), 0);
    assert_eq!(l.next_deadline_ns(), None);
    // A new initial count starts it again.
    wr(&mut l, reg::TIMER_INITIAL, 1_000_000, 3_000_000 * T);
    assert_eq!(l.next_deadline_ns(), Some(4_000_000 * T));
}

#[test]
fn periodic_count_keeps_reloading_before_tick() {
    let mut l = enabled(0);
    wr(&mut l, reg::TIMER_DIVIDE, 0xb, 0);
    wr(&mut l, reg::LVT_TIMER, (1 << 17) | 0x40, 0);
    wr(&mut l, reg::TIMER_INITIAL, 1_000_000, 0);
    // No tick yet, but the count has reloaded twice.
    assert_eq!(rd(&l, reg::TIMER_CURRENT, 2_300_000 * T), 700_000);
}

#[test]
fn shorthand_matching() {
    let l = enabled(3);
    let ipi = |dest_shorthand| Ipi {
        vector: 0x40,
        dest_shorthand,
        destination: 9,
        ..Ipi::default()
    };
    assert!(l.matches_ipi(&ipi(DestShorthand::AllIncludingSelf), true));
    assert!(l.matches_ipi(&ipi(DestShorthand::AllIncludingSelf), false));
    assert!(!l.matches_ipi(&ipi(DestShorthand::AllExcludingSelf), true));
    assert!(l.matches_ipi(&ipi(DestShorthand::AllExcludingSelf), false));
    assert!(
        !l.matches_ipi(&ipi(DestShorthand::None), false),
        "destination 9"
    );
    let mut to_me = ipi(DestShorthand::None);
    to_me.destination = 3;
    assert!(l.matches_ipi(&to_me, false));
}

#[test]
fn x2apic_mode_needs_the_cpu_model_to_offer_it() {
    let mut l = Lapic::new(1, false, 1_000_000_000);
    let xapic = 0xfee0_0000 | APIC_BASE_ENABLE;
    l.set_x2apic_capable(false);
    assert!(matches!(
        l.set_apic_base(xapic | APIC_BASE_EXTD),
        Err(LapicError::InvalidApicBase { .. })
    ));
    assert!(!l.is_x2apic());
    // xAPIC mode and disabling still work.
    l.set_apic_base(xapic).unwrap();
    l.set_apic_base(0xfee0_0000).unwrap();
    l.set_apic_base(xapic).unwrap();
    l.set_x2apic_capable(true);
    l.set_apic_base(xapic | APIC_BASE_EXTD).unwrap();
    assert!(l.is_x2apic());
}

#[test]
fn apic_base_above_the_physical_address_width_is_reserved() {
    let mut l = Lapic::new(0, true, 1_000_000_000);
    let base = 0xfee0_0000 | APIC_BASE_ENABLE;
    l.set_phys_addr_bits(36);
    assert!(l.set_apic_base(base | 1 << 36).is_err());
    assert!(l.set_apic_base(base | 1 << 35).is_ok());
    l.set_phys_addr_bits(0);
    assert!(l.set_apic_base(base | 1 << 51).is_ok());
    assert!(l.set_apic_base(base | 1 << 52).is_err());
}

#[test]
fn no_cmci_register_with_max_lvt_5() {
    assert_eq!(APIC_VERSION >> 16 & 0xff, 5, "max LVT entry");
    let mut l = enabled(0);
    wr(&mut l, reg::LVT_CMCI, 0x40, 0);
    assert_eq!(rd(&l, reg::LVT_CMCI, 0), 0);
    let mut l = x2apic(0);
    assert!(l.rdmsr(0x82f, 0).is_err());
    assert!(l.wrmsr(0x82f, 0, 0).is_err());
    // The LVTs that exist answer.
    assert!(l.rdmsr(0x832, 0).is_ok());
}

/// Saves `l` as a register page at `at`, loads it into a fresh LAPIC of
/// the same base at `restore_at`, and returns the copy.
fn page_copy(l: &Lapic, at: u64, restore_at: u64) -> Lapic {
    let page = l.register_page(at);
    let mut copy = Lapic::new(l.state().initial_id, false, TSC_HZ);
    copy.set_apic_base(l.apic_base()).unwrap();
    copy.load_register_page(&page, restore_at).unwrap();
    copy
}

#[test]
fn register_page_round_trips_with_a_running_periodic_timer() {
    let mut l = enabled(2);
    wr(&mut l, reg::TIMER_DIVIDE, 0x3, 0); // divide by 16
    wr(&mut l, reg::LVT_TIMER, 0x2_0040, 0); // periodic, vector 0x40
    wr(&mut l, reg::TIMER_INITIAL, 100_000, 0); // 1.6 ms period
    wr(&mut l, reg::TPR, 0x20, 0);
    assert!(l.accept_interrupt(0x51, true));
    assert!(l.accept_interrupt(0x61, false));
    assert_eq!(l.acknowledge(), 0x61);
    let at = 700_000;
    // Restored 5 s later on another clock: the count goes on from where
    // it was, so the page read at the restore time is the saved one.
    let copy = page_copy(&l, at, 5_000_000_000);
    assert_eq!(copy.register_page(5_000_000_000), l.register_page(at));
    assert_eq!(
        rd(&copy, reg::TIMER_CURRENT, 5_000_000_000),
        rd(&l, reg::TIMER_CURRENT, at)
    );
    // The next expiry is as far away as it was.
    let left = l.next_deadline_ns().unwrap() - at;
    assert_eq!(copy.next_deadline_ns(), Some(5_000_000_000 + left));
    assert!(copy.irr_test(0x51) && copy.isr_test(0x61));
    assert_eq!(copy.state().tmr, l.state().tmr);
}

#[test]
fn register_page_keeps_the_x2apic_id_and_a_one_shot_that_fired() {
    let mut l = x2apic(0x1_0005);
    wr_x2(&mut l, reg::LVT_TIMER, 0x41);
    wr_x2(&mut l, reg::TIMER_INITIAL, 10);
    l.tick(1_000_000);
    let copy = page_copy(&l, 1_000_000, 0);
    assert_eq!(copy.id(), 0x1_0005);
    assert_eq!(
        copy.next_deadline_ns(),
        None,
        "an expired one-shot stays expired"
    );
    assert_eq!(copy.register_page(0), l.register_page(1_000_000));
}

#[test]
fn a_short_register_page_is_refused() {
    let mut l = enabled(0);
    assert_eq!(
        l.load_register_page(&[0; 100], 0),
        Err(PageError::Size(100))
    );
}

fn wr_x2(l: &mut Lapic, offset: u32, value: u32) {
    l.wrmsr(MSR_X2APIC_FIRST + offset / 16, value.into(), 0)
        .unwrap();
}
