//! Firecracker's boot timer (`--boot-timer`): a guest that writes the byte
//! 123 at offset 0 of this MMIO window (the first virtio-mmio window,
//! 0xd000_0000, which the virtio devices then leave free) gets its boot
//! time logged, measured from the VMM's start (or the jailer's, which it
//! passes with `--start-time-us`/`--start-time-cpu-us`), in Firecracker's
//! words, which tools parse: `Guest-boot-time = N us M ms, C CPU us D CPU
//! ms`. Any other access does nothing.

use crate::bus::BusDevice;

/// The value a guest writes when it has booted.
pub const BOOT_COMPLETE: u8 = 123;

/// A point in time: the monotonic clock and the process's CPU time, in
/// microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub wall_us: u64,
    pub cpu_us: u64,
}

/// Where boot time counts from, and how to read the clocks now (the VMM
/// supplies both: this crate reads no clock itself).
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    pub start: Timestamp,
    pub now: fn() -> Timestamp,
}

pub struct BootTimer {
    clock: BootClock,
}

impl BootTimer {
    pub fn new(clock: BootClock) -> BootTimer {
        BootTimer { clock }
    }
}

/// Firecracker's log line for a boot that took `wall_us` and `cpu_us`.
pub fn boot_time_line(wall_us: u64, cpu_us: u64) -> String {
    format!(
        "Guest-boot-time = {wall_us:>6} us {} ms, {cpu_us:>6} CPU us {} CPU ms",
        wall_us / 1000,
        cpu_us / 1000
    )
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != 0 || data != [BOOT_COMPLETE] {
            return;
        }
        let now = (self.clock.now)();
        let start = self.clock.start;
        tracing::info!(
            "{}",
            boot_time_line(
                now.wall_us.saturating_sub(start.wall_us),
                now.cpu_us.saturating_sub(start.cpu_us)
            )
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_firecrackers() {
        assert_eq!(
            boot_time_line(123_456, 7_890),
            "Guest-boot-time = 123456 us 123 ms,   7890 CPU us 7 CPU ms"
        );
    }
}
