//! The VM part of a snapshot on KVM: the clock (KVM_GET/SET_CLOCK), the
//! in-kernel PICs and IOAPIC (KVM_GET/SET_IRQCHIP) and PIT
//! (KVM_GET/SET_PIT2), converted to the neutral layout of
//! [`hv::snapshot`].
//!
//! The PIT: KVM_SET_PIT2 reloads every counter from its count (the kernel
//! restarts the counting sequence and ignores `count_load_time`), so a
//! restored counter starts a new period; its elapsed ticks are saved but
//! not used, and the port 0x61 bits KVM keeps internally are lost.

use hv::snapshot::{
    mismatch, IoapicState, PicChipState, PitChannelState, PitState, VmState, IOAPIC_PINS,
};
use hv::HvError;
use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pic_state, kvm_pit_channel_state, kvm_pit_state2,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_PIT_FLAGS_HPET_LEGACY,
};
use kvm_ioctls::VmFd;

use crate::error::os;

/// The IOAPIC's fixed base (KVM's ioapic ignores another one).
const IOAPIC_BASE: u64 = 0xfec0_0000;
/// The i8254's input clock.
const PIT_HZ: u128 = 1_193_182;

/// CLOCK_MONOTONIC in nanoseconds: the kernel's `ktime_get()`, the time
/// base of the PIT's `count_load_time`.
fn ktime_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

fn get_chip(fd: &VmFd, chip_id: u32) -> Result<kvm_irqchip, HvError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    fd.get_irqchip(&mut chip).map_err(os("KVM_GET_IRQCHIP"))?;
    Ok(chip)
}

fn pic_from_kvm(p: &kvm_pic_state) -> PicChipState {
    PicChipState {
        last_irr: p.last_irr,
        irr: p.irr,
        imr: p.imr,
        isr: p.isr,
        priority_add: p.priority_add,
        irq_base: p.irq_base,
        read_reg_select: p.read_reg_select != 0,
        poll: p.poll != 0,
        special_mask: p.special_mask != 0,
        init_state: p.init_state,
        auto_eoi: p.auto_eoi != 0,
        rotate_on_auto_eoi: p.rotate_on_auto_eoi != 0,
        special_fully_nested_mode: p.special_fully_nested_mode != 0,
        init4: p.init4 != 0,
        single_mode: false,
        ltim: false,
        elcr: p.elcr,
        elcr_mask: p.elcr_mask,
    }
}

fn pic_to_kvm(p: &PicChipState) -> Result<kvm_pic_state, HvError> {
    if p.single_mode || p.ltim {
        return Err(mismatch(
            "a PIC in single or level-triggered (LTIM) mode, which KVM's does not model",
        ));
    }
    Ok(kvm_pic_state {
        last_irr: p.last_irr,
        irr: p.irr,
        imr: p.imr,
        isr: p.isr,
        priority_add: p.priority_add,
        irq_base: p.irq_base,
        read_reg_select: p.read_reg_select.into(),
        poll: p.poll.into(),
        special_mask: p.special_mask.into(),
        init_state: p.init_state,
        auto_eoi: p.auto_eoi.into(),
        rotate_on_auto_eoi: p.rotate_on_auto_eoi.into(),
        special_fully_nested_mode: p.special_fully_nested_mode.into(),
        init4: p.init4.into(),
        elcr: p.elcr,
        elcr_mask: p.elcr_mask,
    })
}

fn channel_from_kvm(c: &kvm_pit_channel_state, now: i64) -> PitChannelState {
    let elapsed = now.saturating_sub(c.count_load_time).max(0) as u128;
    PitChannelState {
        count: c.count,
        latched_count: c.latched_count,
        count_latched: c.count_latched,
        status_latched: c.status_latched != 0,
        status: c.status,
        read_state: c.read_state,
        write_state: c.write_state,
        write_latch: c.write_latch,
        rw_mode: c.rw_mode,
        mode: c.mode,
        bcd: c.bcd != 0,
        gate: c.gate != 0,
        elapsed_ticks: (elapsed * PIT_HZ / 1_000_000_000) as u64,
        running: true,
        null_count: false,
        started: true,
        reported_ticks: 0,
    }
}

fn channel_to_kvm(c: &PitChannelState, now: i64) -> Result<kvm_pit_channel_state, HvError> {
    // KVM leaves a counter no control word programmed in mode 0xff.
    if (c.mode > 5 && c.mode != 0xff) || c.count > 0x10000 {
        return Err(mismatch(format!(
            "a PIT counter in mode {} with count {:#x}",
            c.mode, c.count
        )));
    }
    let elapsed_ns = (u128::from(c.elapsed_ticks) * 1_000_000_000 / PIT_HZ).min(i64::MAX as u128);
    Ok(kvm_pit_channel_state {
        count: c.count,
        latched_count: c.latched_count,
        count_latched: c.count_latched,
        status_latched: c.status_latched.into(),
        status: c.status,
        read_state: c.read_state,
        write_state: c.write_state,
        write_latch: c.write_latch,
        rw_mode: c.rw_mode,
        mode: c.mode,
        bcd: c.bcd.into(),
        gate: c.gate.into(),
        count_load_time: now.saturating_sub(elapsed_ns as i64),
    })
}

pub(crate) fn save(fd: &VmFd, pit: bool) -> Result<VmState, HvError> {
    let clock = fd.get_clock().map_err(os("KVM_GET_CLOCK"))?.clock;
    let master = get_chip(fd, KVM_IRQCHIP_PIC_MASTER)?;
    let slave = get_chip(fd, KVM_IRQCHIP_PIC_SLAVE)?;
    let ioapic = get_chip(fd, KVM_IRQCHIP_IOAPIC)?;
    // SAFETY: KVM_GET_IRQCHIP filled the union member its chip id names.
    let (master, slave, ioapic) = unsafe { (master.chip.pic, slave.chip.pic, ioapic.chip.ioapic) };
    let mut redirtbl = [0u64; IOAPIC_PINS];
    for (d, s) in redirtbl.iter_mut().zip(ioapic.redirtbl.iter()) {
        // SAFETY: every bit pattern is a valid u64.
        *d = unsafe { s.bits };
    }
    let pit = if pit {
        let now = ktime_ns();
        let p = fd.get_pit2().map_err(os("KVM_GET_PIT2"))?;
        Some(PitState {
            channels: [
                channel_from_kvm(&p.channels[0], now),
                channel_from_kvm(&p.channels[1], now),
                channel_from_kvm(&p.channels[2], now),
            ],
            hpet_legacy: p.flags & KVM_PIT_FLAGS_HPET_LEGACY != 0,
            speaker_data: false,
            port61_other: 0,
        })
    } else {
        None
    };
    Ok(VmState {
        clock_ns: clock,
        ioapic: IoapicState {
            id: ioapic.id,
            ioregsel: ioapic.ioregsel,
            irr: ioapic.irr,
            redirtbl,
        },
        pic: [pic_from_kvm(&master), pic_from_kvm(&slave)],
        pit,
    })
}

/// Everything is converted and checked before the first ioctl.
pub(crate) fn restore(fd: &VmFd, pit: bool, state: &VmState) -> Result<(), HvError> {
    if state.pit.is_some() != pit {
        return Err(mismatch(if pit {
            "a state without a PIT for a VM with one"
        } else {
            "a PIT state for a VM created without a PIT"
        }));
    }
    let now = ktime_ns();
    let pit = match &state.pit {
        Some(p) => Some(kvm_pit_state2 {
            channels: [
                channel_to_kvm(&p.channels[0], now)?,
                channel_to_kvm(&p.channels[1], now)?,
                channel_to_kvm(&p.channels[2], now)?,
            ],
            flags: if p.hpet_legacy {
                KVM_PIT_FLAGS_HPET_LEGACY
            } else {
                0
            },
            ..Default::default()
        }),
        None => None,
    };
    let mut pics = [kvm_irqchip::default(), kvm_irqchip::default()];
    for ((chip, id), saved) in pics
        .iter_mut()
        .zip([KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE])
        .zip(&state.pic)
    {
        chip.chip_id = id;
        chip.chip.pic = pic_to_kvm(saved)?;
    }
    let mut ioapic = get_chip(fd, KVM_IRQCHIP_IOAPIC)?;
    // SAFETY: KVM_GET_IRQCHIP filled the IOAPIC member for this chip id;
    // only plain integers are written back.
    unsafe {
        let io = &mut ioapic.chip.ioapic;
        io.base_address = IOAPIC_BASE;
        io.ioregsel = state.ioapic.ioregsel;
        io.id = state.ioapic.id;
        io.irr = state.ioapic.irr;
        for (d, s) in io.redirtbl.iter_mut().zip(state.ioapic.redirtbl) {
            d.bits = s;
        }
    }
    let clock = kvm_clock_data {
        clock: state.clock_ns,
        ..Default::default()
    };
    fd.set_clock(&clock).map_err(refused("KVM_SET_CLOCK"))?;
    for chip in pics.iter().chain([&ioapic]) {
        fd.set_irqchip(chip).map_err(refused("KVM_SET_IRQCHIP"))?;
    }
    if let Some(pit) = pit {
        fd.set_pit2(&pit).map_err(refused("KVM_SET_PIT2"))?;
    }
    Ok(())
}

/// A set ioctl that refused the state: EINVAL says it does not fit.
pub(crate) fn refused(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HvError {
    move |e| {
        if e.errno() == libc::EINVAL {
            mismatch(format!("{op} refused it (EINVAL)"))
        } else {
            crate::error::os_error(op, e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pic_fields_round_trip_and_emu_only_modes_are_refused() {
        let p = PicChipState {
            irr: 3,
            imr: 0xfa,
            irq_base: 0x30,
            init4: true,
            auto_eoi: true,
            elcr: 0x20,
            elcr_mask: 0xf8,
            ..Default::default()
        };
        assert_eq!(pic_from_kvm(&pic_to_kvm(&p).unwrap()), p);
        assert!(pic_to_kvm(&PicChipState { ltim: true, ..p }).is_err());
    }

    #[test]
    fn pit_channels_keep_their_elapsed_ticks() {
        let c = PitChannelState {
            count: 11932,
            mode: 2,
            rw_mode: 3,
            read_state: 3,
            write_state: 3,
            gate: true,
            elapsed_ticks: 5000,
            running: true,
            started: true,
            ..Default::default()
        };
        let k = channel_to_kvm(&c, 1_000_000_000).unwrap();
        let back = channel_from_kvm(&k, 1_000_000_000);
        assert!(
            back.elapsed_ticks.abs_diff(5000) <= 1,
            "{}",
            back.elapsed_ticks
        );
        assert_eq!(
            PitChannelState {
                elapsed_ticks: 5000,
                ..back
            },
            c
        );
        assert!(channel_to_kvm(&PitChannelState { mode: 6, ..c }, 0).is_err());
    }
}
