//! The i8254 programmable interval timer (KVM's `i8254.c`, QEMU's
//! `hw/timer/i8254.c`): three 16-bit counters at ports 0x40–0x42 with the
//! mode/command register at 0x43, counting at [`PIT_HZ`] from the time the
//! caller passes in, plus the channel-2 gate and output bits of port 0x61.
//!
//! Counter 0's output drives IRQ 0: [`Pit::next_irq_ns`] says when its
//! next rising edge is and [`Pit::poll`] counts the rising edges since the
//! last poll, so the caller pulses IRQ 0 at the right times. Counter 2 is
//! gated by port 0x61 bit 0 and its output is port 0x61 bit 5, which Linux
//! polls to calibrate the TSC: the output is computed from `now_ns` at the
//! moment of the read, so calibration against the caller's clock is exact.
//!
//! Modelled: modes 0–5, the access modes (LSB, MSB, LSB then MSB), binary
//! and BCD counting, the counter-latch and read-back commands (count and
//! status, with the null-count flag), gate semantics (modes 0/4 pause while
//! the gate is low, modes 1/5 are triggered by a rising gate, modes 2/3 are
//! held while low and restart on a rising edge), and in mode 0 the stop of
//! counting by the first byte of a two-byte count.
//!
//! Not modelled: a new count written in modes 2/3 takes effect at once
//! rather than at the end of the current period; the one-clock load delay
//! (counting starts at the time of the write); counter 1 (DRAM refresh)
//! counts but its output goes nowhere; port 0x61 bit 4 (refresh toggle)
//! flips every 15.085 µs from the clock; NMI status bits 6/7 read 0.

use crate::{mul_div, mul_div_ceil};

/// The PIT input clock.
pub const PIT_HZ: u64 = 1_193_182;
/// First port (counter 0); the device spans 4 ports.
pub const PIT_PORT_BASE: u16 = 0x40;
/// The NMI status and control port (speaker, gate 2, output 2).
pub const PORT_61: u16 = 0x61;

const NS_PER_SEC: u64 = 1_000_000_000;
/// Half period of the DRAM refresh toggle of port 0x61 bit 4.
const REFRESH_TOGGLE_NS: u64 = 15_085;

/// Shortest time between two IRQ 0 pulses while counter 0 runs in a
/// periodic mode (2 or 3): KVM's `min_timer_period_us`, 200 µs, which KVM
/// applies to its PIT's periodic modes as to the LAPIC's. At the fastest
/// rate a guest can program (count 2: 1.7 µs) the vCPU that drives the
/// PIT would otherwise wake and take an interrupt 600 000 times a second
/// even while the guest halts; with the limit, at most 5 000. Edges in
/// between coalesce into the next pulse (as a PIC keeps one request
/// pending), counted by [`Pit::irq_edges_coalesced`]. The count the guest
/// reads and counter 2 (TSC calibration) keep the programmed rate.
pub const MIN_IRQ_INTERVAL_NS: u64 = 200_000;

// Access states: 1 LSB only (the default arms below), 2 MSB only, 3/4 the
// first/second byte of LSB then MSB.
const RW_MSB: u8 = 2;
const RW_WORD0: u8 = 3;
const RW_WORD1: u8 = 4;

fn ticks_of(ns: u64) -> u64 {
    mul_div(ns, PIT_HZ, NS_PER_SEC)
}

fn ns_of(ticks: u64) -> u64 {
    mul_div_ceil(ticks, NS_PER_SEC, PIT_HZ)
}

fn to_bcd(v: u32) -> u16 {
    let v = v % 10_000;
    ((v / 1000) << 12 | (v / 100 % 10) << 8 | (v / 10 % 10) << 4 | (v % 10)) as u16
}

fn from_bcd(v: u16) -> u32 {
    let d = |shift: u16| u32::from((v >> shift) & 0xf).min(9);
    d(12) * 1000 + d(8) * 100 + d(4) * 10 + d(0)
}

/// The state of one counter.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PitChannelState {
    /// The count loaded, 1..=0x10000 (binary) or 1..=10000 (BCD); 0 before
    /// the first load.
    pub count: u32,
    /// 0–5.
    pub mode: u8,
    pub bcd: bool,
    /// Access mode of the last control word (1 LSB, 2 MSB, 3 LSB then MSB).
    pub rw_mode: u8,
    pub read_state: u8,
    pub write_state: u8,
    /// The LSB of a two-byte count being written.
    pub write_latch: u8,
    pub latched_count: u16,
    /// Access state of a latched count (0 = none latched).
    pub count_latched: u8,
    pub status_latched: bool,
    pub status: u8,
    pub gate: bool,
    /// A count was written and not yet loaded into the counter (read-back
    /// status bit 6).
    pub null_count: bool,
    /// The counting sequence began (count loaded; modes 1/5: triggered).
    pub started: bool,
    /// Input clocks counted before `run_start_ns`.
    pub base_ticks: u64,
    /// Since when the counter counts; None while stopped by the gate or
    /// before it started.
    pub run_start_ns: Option<u64>,
    /// Clock ticks of this sequence up to which output edges were reported
    /// by `poll` (counter 0 only).
    pub reported_ticks: u64,
}

/// The complete PIT state.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PitState {
    pub channels: [PitChannelState; 3],
    /// Port 0x61 bit 1 (speaker data enable).
    pub speaker_data: bool,
    /// Port 0x61 bits 2–3 as last written.
    pub port61_other: u8,
}

impl PitChannelState {
    /// Input clocks counted at `now_ns` in the current sequence.
    pub fn ticks(&self, now_ns: u64) -> u64 {
        self.base_ticks.saturating_add(
            self.run_start_ns
                .map_or(0, |start| ticks_of(now_ns.saturating_sub(start))),
        )
    }

    /// The count loaded, as a number of input clocks (at least 1).
    fn n(&self) -> u64 {
        u64::from(self.count.max(1))
    }

    /// Starts a counting sequence from the loaded count at `now_ns`.
    fn restart(&mut self, now_ns: u64) {
        self.started = true;
        self.null_count = false;
        self.base_ticks = 0;
        self.reported_ticks = 0;
        self.run_start_ns = self.gate_lets_count().then_some(now_ns);
    }

    /// Does the gate allow counting in this mode right now?
    fn gate_lets_count(&self) -> bool {
        match self.mode {
            // Triggered by the gate's rising edge, then independent of it.
            1 | 5 => true,
            _ => self.gate,
        }
    }

    fn stop(&mut self, now_ns: u64) {
        self.base_ticks = self.ticks(now_ns);
        self.run_start_ns = None;
    }

    /// Loads a new count written by the guest.
    fn load(&mut self, value: u32, now_ns: u64) {
        let value = if self.bcd {
            from_bcd(value as u16)
        } else {
            value & 0xffff
        };
        self.count = match value {
            0 if self.bcd => 10_000,
            0 => 0x10000,
            v => v,
        };
        self.null_count = true;
        match self.mode {
            // Modes 1 and 5 wait for a gate trigger.
            1 | 5 => {
                if !self.started {
                    self.run_start_ns = None;
                }
            }
            _ => self.restart(now_ns),
        }
        tracing::trace!(count = self.count, mode = self.mode, "kvm_pit_load");
    }

    /// The counting element's value at `now_ns`.
    fn current(&self, now_ns: u64) -> u32 {
        if !self.started {
            return self.count & 0xffff;
        }
        let (d, n) = (self.ticks(now_ns), self.n());
        let modulus = if self.bcd { 10_000 } else { 0x10000 };
        let value = match self.mode {
            2 => n - d % n,
            3 => n - (2 * (d % n)) % n,
            _ => (n + modulus - d % modulus) % modulus,
        };
        (value % modulus) as u32
    }

    /// The count as the guest reads it (binary or BCD, 16 bits).
    fn read_value(&self, now_ns: u64) -> u16 {
        let v = self.current(now_ns);
        if self.bcd {
            to_bcd(v)
        } else {
            v as u16
        }
    }

    /// The OUT pin at `now_ns`.
    fn out(&self, now_ns: u64) -> bool {
        let (d, n) = (self.ticks(now_ns), self.n());
        match self.mode {
            0 => self.started && d >= n,
            1 => !self.started || d >= n,
            2 => !self.gate || !self.started || d % n != n - 1 || n == 1,
            3 => !self.gate || !self.started || d % n < n.div_ceil(2),
            _ => !(self.started && d == n),
        }
    }

    /// Number of OUT rising edges at input-clock counts in `(from, to]`.
    fn edges_between(&self, from: u64, to: u64) -> u64 {
        if to <= from || !self.started {
            return 0;
        }
        let n = self.n();
        match self.mode {
            0 | 1 => u64::from(from < n && n <= to),
            2 | 3 => to / n - from / n,
            _ => u64::from(from <= n && n < to),
        }
    }

    /// The first input-clock count after `d` with an OUT rising edge.
    fn next_edge_after(&self, d: u64) -> Option<u64> {
        if !self.started {
            return None;
        }
        let n = self.n();
        match self.mode {
            0 | 1 => (d < n).then_some(n),
            2 | 3 => Some((d / n + 1).saturating_mul(n)),
            _ => (d < n + 1).then_some(n + 1),
        }
    }

    fn set_gate(&mut self, gate: bool, now_ns: u64) {
        let rising = gate && !self.gate;
        let falling = !gate && self.gate;
        self.gate = gate;
        match self.mode {
            1 | 5 if rising && self.count != 0 => self.restart(now_ns),
            2 | 3 if rising && self.started => self.restart(now_ns),
            0 | 2..=4 if falling && self.run_start_ns.is_some() => self.stop(now_ns),
            0 | 4 if rising && self.started => self.run_start_ns = Some(now_ns),
            _ => {}
        }
    }

    fn latch_count(&mut self, now_ns: u64) {
        if self.count_latched == 0 {
            self.latched_count = self.read_value(now_ns);
            self.count_latched = self.rw_mode;
        }
    }

    fn latch_status(&mut self, now_ns: u64) {
        if !self.status_latched {
            self.status = (u8::from(self.out(now_ns)) << 7)
                | (u8::from(self.null_count) << 6)
                | (self.rw_mode << 4)
                | (self.mode << 1)
                | u8::from(self.bcd);
            self.status_latched = true;
        }
    }

    fn read(&mut self, now_ns: u64) -> u8 {
        if self.status_latched {
            self.status_latched = false;
            return self.status;
        }
        match self.count_latched {
            0 => {}
            RW_WORD0 => {
                self.count_latched = RW_MSB;
                return self.latched_count as u8;
            }
            RW_MSB => {
                self.count_latched = 0;
                return (self.latched_count >> 8) as u8;
            }
            _ => {
                self.count_latched = 0;
                return self.latched_count as u8;
            }
        }
        let count = self.read_value(now_ns);
        match self.read_state {
            RW_MSB => (count >> 8) as u8,
            RW_WORD0 => {
                self.read_state = RW_WORD1;
                count as u8
            }
            RW_WORD1 => {
                self.read_state = RW_WORD0;
                (count >> 8) as u8
            }
            _ => count as u8,
        }
    }

    fn write(&mut self, value: u8, now_ns: u64) {
        match self.write_state {
            RW_MSB => self.load(u32::from(value) << 8, now_ns),
            RW_WORD0 => {
                self.write_latch = value;
                self.write_state = RW_WORD1;
                // Mode 0: writing the first byte stops the count.
                if self.mode == 0 {
                    self.stop(now_ns);
                    self.started = false;
                }
            }
            RW_WORD1 => {
                self.write_state = RW_WORD0;
                self.load(
                    u32::from(self.write_latch) | (u32::from(value) << 8),
                    now_ns,
                );
            }
            _ => self.load(u32::from(value), now_ns),
        }
    }

    fn control(&mut self, value: u8, now_ns: u64) {
        let access = (value >> 4) & 3;
        if access == 0 {
            self.latch_count(now_ns);
            return;
        }
        let mode = (value >> 1) & 7;
        self.rw_mode = access;
        self.read_state = access;
        self.write_state = access;
        self.mode = if mode >= 6 { mode - 4 } else { mode };
        self.bcd = value & 1 != 0;
        // A control word stops the counter until a new count is written.
        self.stop(now_ns);
        self.started = false;
        self.base_ticks = 0;
        self.reported_ticks = 0;
        self.null_count = true;
    }
}

/// The i8254 with port 0x61.
#[derive(Clone, Debug)]
pub struct Pit {
    s: PitState,
    /// When the last IRQ 0 pulse was reported (not guest state: after a
    /// restore the next edge is due at once).
    last_irq_ns: Option<u64>,
    /// [`Pit::irq_edges_coalesced`].
    coalesced: u64,
}

impl Default for Pit {
    fn default() -> Self {
        Pit::new()
    }
}

impl Pit {
    /// The PIT after power-on: counters unprogrammed, gates of counters 0
    /// and 1 high (they are wired high), gate 2 low.
    pub fn new() -> Pit {
        let mut s = PitState::default();
        for (i, ch) in s.channels.iter_mut().enumerate() {
            ch.gate = i != 2;
            ch.rw_mode = RW_WORD0;
            ch.read_state = RW_WORD0;
            ch.write_state = RW_WORD0;
        }
        Pit {
            s,
            last_irq_ns: None,
            coalesced: 0,
        }
    }

    pub fn state(&self) -> PitState {
        self.s.clone()
    }

    pub fn from_state(state: PitState) -> Pit {
        Pit {
            s: state,
            last_irq_ns: None,
            coalesced: 0,
        }
    }

    /// A guest read of port `0x40 + offset` (offset 0–3; the control port
    /// and anything else read 0xff).
    pub fn read(&mut self, offset: u16, now_ns: u64) -> u8 {
        match self.s.channels.get_mut(usize::from(offset)) {
            Some(ch) => ch.read(now_ns),
            None => 0xff,
        }
    }

    /// A guest write to port `0x40 + offset` (offset 0–3).
    pub fn write(&mut self, offset: u16, value: u8, now_ns: u64) {
        match offset {
            0..=2 => self.s.channels[usize::from(offset)].write(value, now_ns),
            3 => {
                let channel = usize::from(value >> 6);
                if channel == 3 {
                    // Read-back: bit 5 clear latches counts, bit 4 clear
                    // latches status, bits 1-3 select counters.
                    for (i, ch) in self.s.channels.iter_mut().enumerate() {
                        if value & (2 << i) == 0 {
                            continue;
                        }
                        if value & 0x20 == 0 {
                            ch.latch_count(now_ns);
                        }
                        if value & 0x10 == 0 {
                            ch.latch_status(now_ns);
                        }
                    }
                } else if let Some(ch) = self.s.channels.get_mut(channel) {
                    ch.control(value, now_ns);
                }
            }
            _ => {}
        }
    }

    /// Port 0x61: bit 0 gate 2, bit 1 speaker data, bits 2-3 as written,
    /// bit 4 refresh toggle, bit 5 counter 2 output.
    pub fn port61_read(&self, now_ns: u64) -> u8 {
        let refresh = (now_ns / REFRESH_TOGGLE_NS) & 1 != 0;
        u8::from(self.s.channels[2].gate)
            | (u8::from(self.s.speaker_data) << 1)
            | (self.s.port61_other & 0x0c)
            | (u8::from(refresh) << 4)
            | (u8::from(self.s.channels[2].out(now_ns)) << 5)
    }

    /// Port 0x61 write: bit 0 gate 2, bit 1 speaker data.
    pub fn port61_write(&mut self, value: u8, now_ns: u64) {
        self.s.channels[2].set_gate(value & 1 != 0, now_ns);
        self.s.speaker_data = value & 2 != 0;
        self.s.port61_other = value & 0x0c;
    }

    /// Sets the gate input of `channel` (0–2; others are ignored).
    pub fn set_gate(&mut self, channel: usize, gate: bool, now_ns: u64) {
        if let Some(ch) = self.s.channels.get_mut(channel) {
            ch.set_gate(gate, now_ns);
        }
    }

    /// The OUT pin of `channel` at `now_ns` (false for a bad channel).
    pub fn out(&self, channel: usize, now_ns: u64) -> bool {
        self.s
            .channels
            .get(channel)
            .is_some_and(|ch| ch.out(now_ns))
    }

    /// When counter 0's output next rises (an IRQ 0 edge not yet
    /// reported by [`Pit::poll`]); None if it never will without a new
    /// programming or gate change.
    pub fn next_irq_ns(&self) -> Option<u64> {
        let ch = &self.s.channels[0];
        let start = ch.run_start_ns?;
        let edge = ch.next_edge_after(ch.reported_ticks)?;
        // An edge before the current run (not polled yet) is due now.
        let at = start.saturating_add(ns_of(edge.saturating_sub(ch.base_ticks)));
        Some(match self.rate_limited_until() {
            Some(allowed) => at.max(allowed),
            None => at,
        })
    }

    /// While counter 0 runs in a periodic mode: when the next IRQ 0 pulse
    /// may come ([`MIN_IRQ_INTERVAL_NS`] after the last).
    fn rate_limited_until(&self) -> Option<u64> {
        let periodic = matches!(self.s.channels[0].mode, 2 | 3);
        let last = self.last_irq_ns.filter(|_| periodic)?;
        Some(last.saturating_add(MIN_IRQ_INTERVAL_NS))
    }

    /// Counter-0 output edges that did not get an IRQ 0 pulse of their
    /// own: merged into the next one by [`MIN_IRQ_INTERVAL_NS`] or because
    /// nobody polled in time. A counter for `--stats`, not guest state.
    pub fn irq_edges_coalesced(&self) -> u64 {
        self.coalesced
    }

    /// The number of counter-0 output rising edges (IRQ 0 pulses) since
    /// the last poll, up to `now_ns`. Mode 2 at count N gives one per
    /// N / 1.193182 MHz; mode 0 and 4 one per programming.
    /// In a periodic mode, nothing is reported sooner than
    /// [`MIN_IRQ_INTERVAL_NS`] after the last report: the edges wait for
    /// the next poll.
    pub fn poll(&mut self, now_ns: u64) -> u32 {
        if self.rate_limited_until().is_some_and(|t| now_ns < t) {
            return 0;
        }
        let ch = &mut self.s.channels[0];
        let d = ch.ticks(now_ns);
        let edges = ch.edges_between(ch.reported_ticks, d);
        ch.reported_ticks = ch.reported_ticks.max(d);
        if edges > 0 {
            tracing::trace!(edges, "kvm_pit_irq");
            self.last_irq_ns = Some(now_ns);
            self.coalesced = self.coalesced.saturating_add(edges - 1);
        }
        u32::try_from(edges).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ns of `ticks` input clocks, rounded up.
    fn t(ticks: u64) -> u64 {
        ns_of(ticks)
    }

    fn program(pit: &mut Pit, channel: u8, mode: u8, count: u16, now: u64) {
        pit.write(3, (channel << 6) | 0x30 | (mode << 1), now);
        pit.write(u16::from(channel), count as u8, now);
        pit.write(u16::from(channel), (count >> 8) as u8, now);
    }

    fn read_count(pit: &mut Pit, channel: u16, now: u64) -> u16 {
        let lo = pit.read(channel, now);
        let hi = pit.read(channel, now);
        u16::from_le_bytes([lo, hi])
    }

    #[test]
    fn mode2_rate_generator_period() {
        let mut pit = Pit::new();
        // Linux's periodic tick at HZ=1000: count 1193 (LATCH).
        program(&mut pit, 0, 2, 1193, 0);
        assert_eq!(pit.next_irq_ns(), Some(t(1193)));
        assert_eq!(pit.poll(t(1193) - 1), 0);
        assert_eq!(pit.poll(t(1193)), 1);
        assert_eq!(pit.next_irq_ns(), Some(t(2 * 1193)));
        // 1 second later: 1000 more edges (1193182 / 1193 = 1000.15).
        assert_eq!(pit.poll(t(1193) + 1_000_000_000), 1000);
        // The period in ns.
        let mut pit = Pit::new();
        program(&mut pit, 0, 2, 1193, 5_000);
        let first = pit.next_irq_ns().unwrap();
        pit.poll(first);
        let second = pit.next_irq_ns().unwrap();
        assert!(
            (999_800..=1_000_000).contains(&(second - first)),
            "{}",
            second - first
        );
        // Counting down and reloading.
        let mut pit = Pit::new();
        program(&mut pit, 0, 2, 100, 0);
        assert_eq!(read_count(&mut pit, 0, 0), 100);
        assert_eq!(read_count(&mut pit, 0, t(30)), 70);
        assert_eq!(read_count(&mut pit, 0, t(130)), 70);
        assert!(pit.out(0, t(50)));
        assert!(!pit.out(0, t(99)));
        assert!(pit.out(0, t(100)));
    }

    /// Issue 13: the fastest periodic rate (count 2, 1.7 µs) gives IRQ 0
    /// pulses no closer than MIN_IRQ_INTERVAL_NS; the edges in between
    /// are counted as coalesced, and the guest's count keeps its rate.
    #[test]
    fn the_fastest_periodic_rate_is_limited_to_one_irq_per_interval() {
        for mode in [2, 3] {
            let mut pit = Pit::new();
            program(&mut pit, 0, mode, 2, 0);
            let first = pit.next_irq_ns().unwrap();
            assert!(first < 2_000, "{first}");
            assert_eq!(pit.poll(first), 1);
            // The next edge comes 1.7 µs later, its pulse 200 µs later.
            assert_eq!(pit.next_irq_ns(), Some(first + MIN_IRQ_INTERVAL_NS));
            assert_eq!(pit.poll(first + 10_000), 0);
            let mut now = first;
            let mut pulses = 1;
            while now < 1_000_000_000 {
                now = pit.next_irq_ns().unwrap();
                assert!(pit.poll(now) > 0);
                pulses += 1;
            }
            // One second: 5 000 pulses, not 596 591.
            assert!((5_000..=5_001).contains(&pulses), "mode {mode}: {pulses}");
            assert!(pit.irq_edges_coalesced() > 590_000, "mode {mode}");
            // The count the guest reads still runs at 1.193182 MHz (mode
            // 3 counts down by two: with count 2 it always reads 2).
            if mode == 2 {
                let c0 = read_count(&mut pit, 0, now);
                let c1 = read_count(&mut pit, 0, now + t(1));
                assert_ne!(c0, c1);
            }
        }
        // A slow periodic rate and the one-shot mode are not limited.
        let mut pit = Pit::new();
        program(&mut pit, 0, 2, 1193, 0);
        pit.poll(t(1193));
        assert_eq!(pit.next_irq_ns(), Some(t(2 * 1193)));
        assert_eq!(pit.irq_edges_coalesced(), 0);
        let mut pit = Pit::new();
        program(&mut pit, 0, 0, 2, 0);
        assert_eq!(pit.poll(t(2)), 1);
        program(&mut pit, 0, 0, 2, t(2));
        assert_eq!(pit.next_irq_ns(), Some(t(2) + t(2)));
    }

    #[test]
    fn mode0_interrupt_on_terminal_count() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 0, 11932, 1000); // ~10 ms
        assert!(!pit.out(0, 1000));
        assert_eq!(pit.next_irq_ns(), Some(1000 + t(11932)));
        assert_eq!(pit.poll(1000 + t(11932) - 1), 0);
        assert!(!pit.out(0, 1000 + t(11932) - 1));
        assert_eq!(pit.poll(1000 + t(11932)), 1);
        assert!(pit.out(0, 1000 + t(11932)));
        assert_eq!(pit.next_irq_ns(), None);
        assert_eq!(pit.poll(1_000_000_000), 0, "fires once");
        // The counter keeps decrementing and wraps.
        assert_eq!(read_count(&mut pit, 0, 1000 + t(11932 + 5)), 0xfffb);
        // Count 0 means 0x10000.
        program(&mut pit, 0, 0, 0, 0);
        assert_eq!(pit.next_irq_ns(), Some(t(0x10000)));
    }

    #[test]
    fn mode0_first_byte_stops_counting() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 0, 100, 0);
        pit.write(0, 50, t(10));
        assert_eq!(pit.next_irq_ns(), None);
        assert_eq!(pit.poll(t(200)), 0);
        pit.write(0, 0, t(300));
        assert_eq!(pit.next_irq_ns(), Some(t(300) + t(50)));
    }

    #[test]
    fn mode3_square_wave_and_mode4_strobe() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 3, 1000, 0);
        assert!(pit.out(0, t(499)));
        assert!(!pit.out(0, t(500)));
        assert!(pit.out(0, t(1000)));
        assert_eq!(pit.poll(t(10_000)), 10);
        assert_eq!(read_count(&mut pit, 0, t(10_100)), 800, "decrements by 2");
        // Mode 4 (Linux's one-shot clockevent): one edge after N + 1.
        let mut pit = Pit::new();
        program(&mut pit, 0, 4, 100, 0);
        assert!(pit.out(0, t(99)));
        assert!(!pit.out(0, t(100)));
        assert!(pit.out(0, t(101)));
        assert_eq!(pit.next_irq_ns(), Some(t(101)));
        assert_eq!(pit.poll(t(1000)), 1);
        assert_eq!(pit.poll(t(100_000)), 0);
    }

    #[test]
    fn modes_1_and_5_wait_for_the_gate() {
        let mut pit = Pit::new();
        pit.port61_write(0, 0);
        program(&mut pit, 2, 1, 100, 0);
        assert!(pit.out(2, t(200)), "no trigger yet: high");
        pit.port61_write(1, t(300));
        assert!(!pit.out(2, t(301)));
        assert!(!pit.out(2, t(300) + t(100) - 1));
        assert!(pit.out(2, t(300) + t(100)));
        // Retrigger.
        pit.port61_write(0, t(450));
        pit.port61_write(1, t(500));
        assert!(!pit.out(2, t(500) + t(50)));
        assert_eq!(read_count(&mut pit, 2, t(500) + t(50)), 50);
        // Mode 5: strobe N clocks after the trigger.
        let mut pit = Pit::new();
        program(&mut pit, 2, 5, 10, 0);
        pit.port61_write(1, t(100));
        assert!(pit.out(2, t(100) + t(9)));
        assert!(!pit.out(2, t(100) + t(10)));
        assert!(pit.out(2, t(100) + t(11)));
    }

    #[test]
    fn linux_tsc_calibration_with_channel2() {
        // pit_calibrate_tsc: gate on, speaker off, mode 0, 50 ms, then
        // poll port 0x61 bit 5.
        let mut pit = Pit::new();
        let start = 123_456_789;
        let v = pit.port61_read(start);
        pit.port61_write((v & !0x02) | 0x01, start);
        pit.write(3, 0xb0, start);
        let latch: u16 = (PIT_HZ / 20) as u16;
        pit.write(2, latch as u8, start);
        pit.write(2, (latch >> 8) as u8, start);
        let expire = start + t(u64::from(latch));
        assert_eq!(pit.port61_read(expire - 1) & 0x20, 0);
        assert_eq!(pit.port61_read(expire) & 0x21, 0x21);
        let ms = (expire - start) as f64 / 1e6;
        assert!((ms - 50.0).abs() < 0.001, "{ms}");
        // quick_pit_calibrate: count 0xffff, read MSBs.
        let mut pit = Pit::new();
        pit.port61_write(1, 0);
        pit.write(3, 0xb0, 0);
        pit.write(2, 0xff, 0);
        pit.write(2, 0xff, 0);
        let lo = pit.read(2, t(256 * 10));
        let hi = pit.read(2, t(256 * 10));
        assert_eq!(hi, 0xff - 10);
        assert_eq!(lo, 0xff);
    }

    #[test]
    fn gate_low_pauses_mode0() {
        let mut pit = Pit::new();
        pit.port61_write(1, 0);
        program(&mut pit, 2, 0, 100, 0);
        pit.port61_write(0, t(40));
        assert_eq!(read_count(&mut pit, 2, t(1000)), 60);
        assert!(!pit.out(2, t(1000)));
        pit.port61_write(1, t(1000));
        assert!(!pit.out(2, t(1000) + t(60) - 1));
        assert!(pit.out(2, t(1000) + t(60)));
        // Gate low at programming time: counting waits.
        let mut pit = Pit::new();
        program(&mut pit, 2, 0, 100, 0);
        assert_eq!(read_count(&mut pit, 2, t(500)), 100);
        pit.port61_write(1, t(500));
        assert!(pit.out(2, t(500) + t(100)));
        assert!(!pit.out(2, t(500) + t(100) - 1));
    }

    #[test]
    fn latch_command() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 2, 1000, 0);
        pit.write(3, 0x00, t(100)); // latch counter 0
                                    // Later reads still see the latched value, once.
        assert_eq!(read_count(&mut pit, 0, t(500)), 900);
        assert_eq!(read_count(&mut pit, 0, t(500)), 500);
        // A second latch while one is pending is ignored.
        pit.write(3, 0x00, t(100));
        pit.write(3, 0x00, t(200));
        assert_eq!(read_count(&mut pit, 0, t(500)), 900);
        // LSB-only access mode.
        pit.write(3, 0x14, 0); // counter 0, LSB, mode 2
        pit.write(0, 50, 0);
        assert_eq!(pit.read(0, t(10)), 40);
        assert_eq!(pit.read(0, t(11)), 39);
        // MSB-only.
        pit.write(3, 0x24, 0);
        pit.write(0, 2, 0);
        assert_eq!(pit.read(0, 0), 2);
        pit.write(3, 0x00, t(1));
        assert_eq!(pit.read(0, t(100)), 1, "latched MSB of 511");
    }

    #[test]
    fn read_back_command() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 2, 1000, 0);
        program(&mut pit, 2, 0, 500, 0);
        pit.port61_write(1, 0);
        program(&mut pit, 2, 0, 500, 0);
        // Latch status and count of counters 0 and 2.
        pit.write(3, 0xc0 | 0x02 | 0x08, t(600));
        assert_eq!(
            pit.read(0, t(700)),
            0b1011_0100,
            "OUT high, LSB/MSB, mode 2"
        );
        assert_eq!(read_count(&mut pit, 0, t(700)), 400);
        assert_eq!(pit.read(2, t(700)), 0b1011_0000, "OUT high, mode 0");
        assert_eq!(
            read_count(&mut pit, 2, t(700)),
            (500u32 + 0x10000 - 600) as u16
        );
        // Status only, with null count right after a control word.
        pit.write(3, 0x34, t(800));
        pit.write(3, 0xe2, t(800));
        assert_eq!(pit.read(0, t(800)), 0b1111_0100, "OUT high, null count");
        // Count only.
        pit.write(0, 10, t(800));
        pit.write(0, 0, t(800));
        pit.write(3, 0xd2, t(800) + t(5));
        assert_eq!(read_count(&mut pit, 0, t(900)), 5);
    }

    #[test]
    fn bcd_counting() {
        let mut pit = Pit::new();
        pit.write(3, 0x35, 0); // LSB/MSB, mode 2, BCD
        pit.write(0, 0x00, 0);
        pit.write(0, 0x10, 0); // 1000 decimal
        assert_eq!(read_count(&mut pit, 0, t(1)), 0x0999);
        assert_eq!(pit.next_irq_ns(), Some(t(1000)));
        // 0 is 10000 in BCD.
        pit.write(3, 0x31, 0);
        pit.write(0, 0, 0);
        pit.write(0, 0, 0);
        assert_eq!(pit.next_irq_ns(), Some(t(10_000)));
        assert_eq!(read_count(&mut pit, 0, t(1)), 0x9999);
        // Garbage BCD digits do not panic.
        pit.write(0, 0xff, 0);
        pit.write(0, 0xff, 0);
        read_count(&mut pit, 0, t(5));
    }

    #[test]
    fn port61_bits() {
        let mut pit = Pit::new();
        pit.port61_write(0xff, 0);
        let v = pit.port61_read(0);
        assert_eq!(v & 0x0f, 0x0f);
        assert_eq!(v & 0xc0, 0);
        assert_ne!(
            pit.port61_read(0) & 0x10,
            pit.port61_read(REFRESH_TOGGLE_NS) & 0x10
        );
        pit.port61_write(0, 0);
        assert_eq!(pit.port61_read(0) & 0x03, 0);
    }

    #[test]
    fn garbage_does_not_panic() {
        let mut pit = Pit::new();
        let mut now = 0u64;
        for v in 0..=255u8 {
            for offset in 0..6u16 {
                pit.write(offset, v, now);
                pit.read(offset, now);
                pit.write(3, v.rotate_left(3), now);
                pit.port61_write(v, now);
                let _ = pit.port61_read(now);
                let _ = pit.next_irq_ns();
                pit.poll(now);
                now += 997;
            }
        }
        pit.poll(u64::MAX);
        let _ = pit.port61_read(u64::MAX);
        assert!(!pit.out(7, 0));
        pit.set_gate(9, true, 0);
        let state = PitState {
            channels: [
                PitChannelState {
                    count: u32::MAX,
                    mode: 255,
                    started: true,
                    base_ticks: u64::MAX,
                    run_start_ns: Some(0),
                    reported_ticks: 0,
                    ..PitChannelState::default()
                },
                PitChannelState::default(),
                PitChannelState::default(),
            ],
            ..PitState::default()
        };
        let mut pit = Pit::from_state(state);
        pit.poll(u64::MAX);
        let _ = pit.next_irq_ns();
        pit.read(0, 5);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 2, 1193, 0);
        pit.poll(t(5000));
        let state = pit.state();
        let mut restored = Pit::from_state(state.clone());
        assert_eq!(restored.state(), state);
        assert_eq!(restored.next_irq_ns(), pit.next_irq_ns());
        assert_eq!(restored.poll(t(1193 * 10)), pit.poll(t(1193 * 10)));
    }
}
