//! The VM part of a snapshot on emu: the VM clock and the irqchip models
//! (IOAPIC, both PICs, the PIT) in the neutral layout of
//! [`hv::snapshot`]. Times are converted between the models' nanoseconds
//! and the neutral counts at the VM clock of the save and of the restore.

use hv::snapshot::{mismatch, IoapicState, PicChipState, PitChannelState, PitState, VmState};
use hv::HvError;
use irqchip::ioapic::{IoApic, IoApicState as ModelIoapic};
use irqchip::pic::{Pic, PicChipState as ModelChip, PicState as ModelPic};
use irqchip::pit::{Pit, PitChannelState as ModelChannel, PitState as ModelPit};

use crate::platform::{lock, Platform};

fn ioapic_state(s: &ModelIoapic) -> IoapicState {
    IoapicState {
        id: s.id,
        ioregsel: s.ioregsel,
        irr: s.pin_levels,
        redirtbl: s.redirtbl,
    }
}

fn ioapic_model(s: &IoapicState) -> ModelIoapic {
    ModelIoapic {
        id: s.id,
        ioregsel: s.ioregsel,
        redirtbl: s.redirtbl,
        pin_levels: s.irr,
    }
}

fn pic_chip(c: &ModelChip) -> PicChipState {
    PicChipState {
        last_irr: c.last_irr,
        irr: c.irr,
        imr: c.imr,
        isr: c.isr,
        priority_add: c.priority_add,
        irq_base: c.irq_base,
        read_reg_select: c.read_reg_select,
        poll: c.poll,
        special_mask: c.special_mask,
        init_state: c.init_state,
        auto_eoi: c.auto_eoi,
        rotate_on_auto_eoi: c.rotate_on_auto_eoi,
        special_fully_nested_mode: c.special_fully_nested_mode,
        init4: c.init4,
        single_mode: c.single_mode,
        ltim: c.ltim,
        elcr: c.elcr,
        elcr_mask: c.elcr_mask,
    }
}

fn pic_model_chip(c: &PicChipState) -> Result<ModelChip, HvError> {
    if c.init_state > 3 {
        return Err(mismatch(format!("PIC init state {}", c.init_state)));
    }
    Ok(ModelChip {
        last_irr: c.last_irr,
        irr: c.irr,
        imr: c.imr,
        isr: c.isr,
        priority_add: c.priority_add & 7,
        irq_base: c.irq_base,
        read_reg_select: c.read_reg_select,
        poll: c.poll,
        special_mask: c.special_mask,
        init_state: c.init_state,
        auto_eoi: c.auto_eoi,
        rotate_on_auto_eoi: c.rotate_on_auto_eoi,
        special_fully_nested_mode: c.special_fully_nested_mode,
        init4: c.init4,
        single_mode: c.single_mode,
        ltim: c.ltim,
        elcr: c.elcr & c.elcr_mask,
        elcr_mask: c.elcr_mask,
    })
}

fn pit_channel(c: &ModelChannel, now: u64) -> PitChannelState {
    PitChannelState {
        count: c.count,
        latched_count: c.latched_count,
        count_latched: c.count_latched,
        status_latched: c.status_latched,
        status: c.status,
        read_state: c.read_state,
        write_state: c.write_state,
        write_latch: c.write_latch,
        rw_mode: c.rw_mode,
        mode: c.mode,
        bcd: c.bcd,
        gate: c.gate,
        elapsed_ticks: c.ticks(now),
        running: c.run_start_ns.is_some(),
        null_count: c.null_count,
        started: c.started,
        reported_ticks: c.reported_ticks,
    }
}

fn pit_model_channel(c: &PitChannelState, now: u64) -> Result<ModelChannel, HvError> {
    let bad = |what: &str, v: u64| mismatch(format!("PIT counter {what} {v}"));
    if c.mode > 5 {
        return Err(bad("mode", c.mode.into()));
    }
    if c.count > 0x10000 {
        return Err(bad("count", c.count.into()));
    }
    for (what, v) in [
        ("read state", c.read_state),
        ("write state", c.write_state),
        ("access mode", c.rw_mode),
        ("latch state", c.count_latched),
    ] {
        if v > 4 {
            return Err(bad(what, v.into()));
        }
    }
    Ok(ModelChannel {
        count: c.count,
        mode: c.mode,
        bcd: c.bcd,
        rw_mode: c.rw_mode,
        read_state: c.read_state,
        write_state: c.write_state,
        write_latch: c.write_latch,
        latched_count: c.latched_count,
        count_latched: c.count_latched,
        status_latched: c.status_latched,
        status: c.status,
        gate: c.gate,
        null_count: c.null_count,
        started: c.started,
        base_ticks: c.elapsed_ticks,
        run_start_ns: c.running.then_some(now),
        reported_ticks: c.reported_ticks.min(c.elapsed_ticks),
    })
}

fn pit_state(p: &ModelPit, now: u64) -> PitState {
    PitState {
        channels: [
            pit_channel(&p.channels[0], now),
            pit_channel(&p.channels[1], now),
            pit_channel(&p.channels[2], now),
        ],
        hpet_legacy: false,
        speaker_data: p.speaker_data,
        port61_other: p.port61_other,
    }
}

fn pit_model(p: &PitState, now: u64) -> Result<ModelPit, HvError> {
    if p.hpet_legacy {
        return Err(mismatch("the PIT in HPET legacy mode (emu has no HPET)"));
    }
    Ok(ModelPit {
        channels: [
            pit_model_channel(&p.channels[0], now)?,
            pit_model_channel(&p.channels[1], now)?,
            pit_model_channel(&p.channels[2], now)?,
        ],
        speaker_data: p.speaker_data,
        port61_other: p.port61_other & 0xc,
    })
}

/// The state of `platform`'s clock and devices.
pub(crate) fn save(platform: &Platform) -> VmState {
    let now = platform.now_ns();
    let pic = lock(&platform.pic).state();
    VmState {
        clock_ns: now,
        ioapic: ioapic_state(&lock(&platform.ioapic).state()),
        pic: [pic_chip(&pic.chips[0]), pic_chip(&pic.chips[1])],
        pit: platform
            .pit
            .as_ref()
            .map(|p| pit_state(&lock(p).state(), now)),
    }
}

/// Restores `state` into `platform`; checks everything before it changes
/// anything.
pub(crate) fn restore(platform: &Platform, state: &VmState) -> Result<(), HvError> {
    if state.clock_ns == u64::MAX {
        return Err(mismatch("a VM clock at u64::MAX"));
    }
    if state.pit.is_some() != platform.pit.is_some() {
        return Err(mismatch(if platform.pit.is_some() {
            "a state without a PIT for a VM with one"
        } else {
            "a PIT state for a VM created without a PIT"
        }));
    }
    let now = state.clock_ns;
    let ioapic = ioapic_model(&state.ioapic);
    let pic = ModelPic {
        chips: [
            pic_model_chip(&state.pic[0])?,
            pic_model_chip(&state.pic[1])?,
        ],
    };
    let pit = state.pit.as_ref().map(|p| pit_model(p, now)).transpose()?;
    platform.set_clock(now);
    *lock(&platform.ioapic) = IoApic::from_state(ioapic);
    *lock(&platform.pic) = Pic::from_state(pic);
    if let (Some(slot), Some(pit)) = (&platform.pit, pit) {
        *lock(slot) = Pit::from_state(pit);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A platform with some state in every device.
    fn busy_platform() -> Platform {
        let p = Platform::new(2, true);
        p.set_clock(10_000_000);
        {
            let mut ioapic = lock(&p.ioapic);
            ioapic.write(0, &0x12u32.to_le_bytes());
            ioapic.write(0x10, &0x0000_a045u32.to_le_bytes());
            let _ = ioapic.set_irq(3, true);
        }
        {
            let mut pic = lock(&p.pic);
            for (port, v) in [
                (0x20, 0x11),
                (0x21, 0x30),
                (0x21, 4),
                (0x21, 1),
                (0x21, 0xfa),
            ] {
                pic.write(port, v);
            }
            pic.set_irq(0, true);
        }
        {
            let now = p.now_ns();
            let mut pit = lock(p.pit.as_ref().unwrap());
            pit.write(3, 0x34, now); // counter 0, LSB then MSB, mode 2
            pit.write(0, 0x9c, now);
            pit.write(0, 0x2e, now); // 11932: 10 ms
        }
        p
    }

    #[test]
    fn vm_state_round_trips() {
        let p = busy_platform();
        p.freeze();
        let saved = save(&p);
        let q = Platform::new(2, true);
        restore(&q, &saved).unwrap();
        q.freeze();
        q.set_clock(saved.clock_ns);
        assert_eq!(save(&q), saved);
        // The PIT goes on counting from where it was (within the input
        // clock tick the neutral count rounds to).
        let next = lock(p.pit.as_ref().unwrap()).next_irq_ns().unwrap();
        let again = lock(q.pit.as_ref().unwrap()).next_irq_ns().unwrap();
        assert!(again.abs_diff(next) < 1_000, "{next} {again}");
        // And the state goes through JSON unchanged.
        let json = serde_json::to_string(&saved).unwrap();
        assert_eq!(serde_json::from_str::<VmState>(&json).unwrap(), saved);
    }

    #[test]
    fn states_that_do_not_fit_are_refused_and_change_nothing() {
        let saved = {
            let p = busy_platform();
            p.freeze();
            save(&p)
        };
        let q = Platform::new(2, false);
        assert!(matches!(
            restore(&q, &saved),
            Err(HvError::StateMismatch(_))
        ));
        let q = Platform::new(2, true);
        let before = save(&{
            let q2 = Platform::new(2, true);
            q2.freeze();
            q2
        });
        for corrupt in [
            |s: &mut VmState| s.pit.as_mut().unwrap().channels[1].mode = 9,
            |s: &mut VmState| s.pit.as_mut().unwrap().channels[0].count = 0x20000,
            |s: &mut VmState| s.pic[1].init_state = 7,
            |s: &mut VmState| s.pit.as_mut().unwrap().hpet_legacy = true,
        ] {
            let mut bad = saved.clone();
            corrupt(&mut bad);
            assert!(matches!(restore(&q, &bad), Err(HvError::StateMismatch(_))));
        }
        q.freeze();
        let mut after = save(&q);
        after.clock_ns = before.clock_ns;
        assert_eq!(after, before, "a refused restore changed the VM");
    }
}
