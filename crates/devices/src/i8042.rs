//! The i8042 keyboard controller with a keyboard and no auxiliary (mouse)
//! port: enough for Linux's i8042 and atkbd drivers to find a keyboard,
//! for the VMM to press Ctrl-Alt-Del (Firecracker's SendCtrlAltDel), and
//! for the CPU reset line (command 0xFE on port 0x64), which Linux uses to
//! reboot.
//!
//! Mapped at ports 0x60..0x65: offset 0 is the data port, offset 4 the
//! status (read) and command (write) port. The keyboard interrupt is ISA
//! IRQ 1 (edge), raised when a byte for the keyboard port is queued and
//! the controller's command byte enables it. vm-superio 0.8's I8042Device
//! only models the reset line, hence this model.
//!
//! Scancodes are kept as set 2 and translated to set 1 when the command
//! byte asks for translation (the PC default, which Linux keeps), as a
//! real controller does; atkbd reads them either way. The aux port does
//! not exist: its loopback test answers no aux data and its interface
//! test reports a stuck clock, so Linux registers no mouse port without
//! waiting for a timeout.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{BusDevice, GuestRequest, IrqLine, RequestSink};

pub const I8042_BASE: u16 = 0x60;
pub const I8042_SIZE: u64 = 5;
/// The keyboard's ISA IRQ.
pub const I8042_KBD_IRQ: u32 = 1;

const DATA: u64 = 0;
const COMMAND: u64 = 4;

// Status register.
const STS_OUTPUT_FULL: u8 = 0x01;
const STS_SYSTEM: u8 = 0x04;
const STS_LAST_WAS_COMMAND: u8 = 0x08;
const STS_NOT_INHIBITED: u8 = 0x10;
const STS_AUX_DATA: u8 = 0x20;

// Command byte.
const CTR_KBD_INT: u8 = 0x01;
const CTR_SYSTEM: u8 = 0x04;
const CTR_KBD_DISABLED: u8 = 0x10;
const CTR_AUX_DISABLED: u8 = 0x20;
const CTR_TRANSLATE: u8 = 0x40;

// Controller commands (port 0x64).
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_BUFFER: u8 = 0xd2;
const CMD_WRITE_AUX_BUFFER: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;

// Keyboard commands (port 0x60) and answers.
const KBD_SET_LEDS: u8 = 0xed;
const KBD_ECHO: u8 = 0xee;
const KBD_SCANCODE_SET: u8 = 0xf0;
const KBD_GET_ID: u8 = 0xf2;
const KBD_SET_RATE: u8 = 0xf3;
const KBD_RESET: u8 = 0xff;
const KBD_ACK: u8 = 0xfa;
const KBD_BAT_OK: u8 = 0xaa;
const KBD_ID: [u8; 2] = [0xab, 0x83];

/// Most bytes waiting for the guest (a real controller holds one; a
/// short queue spares the VMM from pacing a key sequence).
const QUEUE_LEN: usize = 16;

/// Ctrl, Alt and Delete pressed then released, in scancode set 2.
const CTRL_ALT_DEL_SET2: [&[u8]; 6] = [
    &[0x14],
    &[0x11],
    &[0xe0, 0x71],
    &[0xe0, 0xf0, 0x71],
    &[0xf0, 0x11],
    &[0xf0, 0x14],
];
/// The same in set 1 (what translation makes of it).
const CTRL_ALT_DEL_SET1: [&[u8]; 6] = [
    &[0x1d],
    &[0x38],
    &[0xe0, 0x53],
    &[0xe0, 0xd3],
    &[0xb8],
    &[0x9d],
];

/// What the next data-port write is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Expect {
    /// A keyboard command.
    KbdCommand,
    /// The parameter of a keyboard command (LEDs, rate, scancode set).
    KbdParameter(u8),
    /// The controller's command byte (after 0x60).
    CommandByte,
    /// The output port (after 0xD1).
    OutputPort,
    /// A byte to queue as if the keyboard sent it (after 0xD2).
    KbdBuffer,
    /// A byte for the absent aux port (after 0xD3 or 0xD4).
    Aux(u8),
}

/// The saved state of the i8042.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042Snapshot {
    pub ctr: u8,
    pub status: u8,
    pub expect: Expect,
    /// Bytes for the guest, with whether they come from the aux port.
    pub queue: Vec<(u8, bool)>,
}

/// Why the VMM's key press was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum I8042Error {
    #[error("the i8042's buffer is full (the guest is not reading its keyboard)")]
    BufferFull,
    #[error("the saved i8042 output buffer holds {0} bytes, more than the controller's")]
    SavedBufferTooLarge(usize),
}

/// What the controller counted (Firecracker's `i8042` metrics), since it
/// was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct I8042Counters {
    /// Guest reads of the data port.
    pub read_count: u64,
    /// Guest writes to the data port.
    pub write_count: u64,
    /// CPU resets the guest asked for (command 0xFE).
    pub reset_count: u64,
}

/// The controller's counters, readable without its lock.
#[derive(Debug, Default)]
pub struct I8042Stats {
    read: AtomicU64,
    write: AtomicU64,
    reset: AtomicU64,
}

impl I8042Stats {
    pub fn snapshot(&self) -> I8042Counters {
        I8042Counters {
            read_count: self.read.load(Ordering::Relaxed),
            write_count: self.write.load(Ordering::Relaxed),
            reset_count: self.reset.load(Ordering::Relaxed),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The controller.
pub struct I8042 {
    requests: RequestSink,
    irq: Arc<dyn IrqLine>,
    ctr: u8,
    status: u8,
    expect: Expect,
    /// Bytes for the guest, with whether they come from the aux port.
    queue: VecDeque<(u8, bool)>,
    stats: Arc<I8042Stats>,
}

impl I8042 {
    /// A controller whose reset line goes to `requests` and whose keyboard
    /// interrupt is `irq`.
    pub fn new(requests: RequestSink, irq: Arc<dyn IrqLine>) -> Self {
        I8042 {
            requests,
            irq,
            // What a PC BIOS leaves: keyboard interrupt, system flag,
            // translation; aux port disabled.
            ctr: CTR_KBD_INT | CTR_SYSTEM | CTR_AUX_DISABLED | CTR_TRANSLATE,
            status: STS_SYSTEM | STS_NOT_INHIBITED,
            expect: Expect::KbdCommand,
            queue: VecDeque::with_capacity(QUEUE_LEN),
            stats: Arc::default(),
        }
    }

    /// The controller's registers and output buffer, for a snapshot.
    pub fn save(&self) -> I8042Snapshot {
        I8042Snapshot {
            ctr: self.ctr,
            status: self.status,
            expect: self.expect,
            queue: self.queue.iter().copied().collect(),
        }
    }

    /// Puts the controller in the state `snapshot` describes (its reset
    /// line, interrupt and counters stay); an output buffer larger than
    /// the controller's is refused and nothing changes.
    pub fn restore(&mut self, snapshot: &I8042Snapshot) -> Result<(), I8042Error> {
        if snapshot.queue.len() > QUEUE_LEN {
            return Err(I8042Error::SavedBufferTooLarge(snapshot.queue.len()));
        }
        self.ctr = snapshot.ctr;
        self.status = snapshot.status;
        self.expect = snapshot.expect;
        self.queue = snapshot.queue.iter().copied().collect();
        Ok(())
    }

    /// The controller's counters (a handle: read it while it runs).
    pub fn stats(&self) -> Arc<I8042Stats> {
        self.stats.clone()
    }

    /// Presses and releases Ctrl-Alt-Del on the keyboard.
    pub fn trigger_ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
        let keys = if self.ctr & CTR_TRANSLATE != 0 {
            CTRL_ALT_DEL_SET1
        } else {
            CTRL_ALT_DEL_SET2
        };
        let len: usize = keys.iter().map(|k| k.len()).sum();
        if self.queue.len() + len > QUEUE_LEN {
            return Err(I8042Error::BufferFull);
        }
        for key in keys {
            for &byte in key.iter() {
                self.queue.push_back((byte, false));
            }
        }
        self.interrupt();
        Ok(())
    }

    /// Queues a byte from the keyboard (or the controller) for the guest.
    fn push(&mut self, byte: u8) {
        if self.queue.len() < QUEUE_LEN {
            self.queue.push_back((byte, false));
        }
        self.interrupt();
    }

    /// Raises IRQ 1 when a keyboard byte waits and the guest wants it.
    fn interrupt(&self) {
        let waiting = self.queue.front().is_some_and(|&(_, aux)| !aux);
        if waiting && self.ctr & CTR_KBD_INT != 0 && self.ctr & CTR_KBD_DISABLED == 0 {
            self.irq.pulse();
        }
    }

    fn status(&self) -> u8 {
        let mut status = self.status;
        if let Some(&(_, aux)) = self.queue.front() {
            status |= STS_OUTPUT_FULL;
            if aux {
                status |= STS_AUX_DATA;
            }
        }
        status
    }

    fn read_data(&mut self) -> u8 {
        let byte = self.queue.pop_front().map_or(0, |(b, _)| b);
        // The next byte, if any, interrupts again.
        self.interrupt();
        byte
    }

    fn command(&mut self, command: u8) {
        self.status |= STS_LAST_WAS_COMMAND;
        self.expect = Expect::KbdCommand;
        match command {
            CMD_READ_CTR => self.push(self.ctr),
            CMD_WRITE_CTR => self.expect = Expect::CommandByte,
            CMD_AUX_DISABLE => self.ctr |= CTR_AUX_DISABLED,
            // There is no aux port: it stays disabled.
            CMD_AUX_ENABLE => {}
            // "Clock line stuck low": no aux port.
            CMD_AUX_TEST => self.push(0x01),
            CMD_SELF_TEST => {
                self.status |= STS_SYSTEM;
                self.push(0x55);
            }
            CMD_KBD_TEST => self.push(0x00),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DISABLED,
            CMD_KBD_ENABLE => {
                self.ctr &= !CTR_KBD_DISABLED;
                self.interrupt();
            }
            // A20 enabled, reset line high.
            CMD_READ_OUTPUT_PORT => self.push(0x03),
            CMD_WRITE_OUTPUT_PORT => self.expect = Expect::OutputPort,
            CMD_WRITE_KBD_BUFFER => self.expect = Expect::KbdBuffer,
            CMD_WRITE_AUX_BUFFER | CMD_WRITE_AUX => self.expect = Expect::Aux(command),
            CMD_RESET_CPU => {
                bump(&self.stats.reset);
                (self.requests)(GuestRequest::Reset)
            }
            // Pulses of the output port's low bits: bit 0 is the reset line.
            c if c & 0xf0 == 0xf0 && c & 1 == 0 => (self.requests)(GuestRequest::Reset),
            _ => {}
        }
    }

    fn write_data(&mut self, value: u8) {
        self.status &= !STS_LAST_WAS_COMMAND;
        let expect = std::mem::replace(&mut self.expect, Expect::KbdCommand);
        match expect {
            Expect::CommandByte => {
                self.ctr = value | CTR_AUX_DISABLED;
                self.interrupt();
            }
            Expect::OutputPort => {
                if value & 1 == 0 {
                    (self.requests)(GuestRequest::Reset);
                }
            }
            Expect::KbdBuffer => self.push(value),
            // The loopback of an aux port that is not there: the byte
            // comes back altered and not marked as aux data, which Linux
            // reads as "no aux port".
            Expect::Aux(CMD_WRITE_AUX_BUFFER) => self.push(!value),
            Expect::Aux(_) => {}
            Expect::KbdParameter(command) => {
                self.push(KBD_ACK);
                if command == KBD_SCANCODE_SET && value == 0 {
                    // The current set: 2, or its translation.
                    self.push(if self.ctr & CTR_TRANSLATE != 0 {
                        0x41
                    } else {
                        0x02
                    });
                }
            }
            Expect::KbdCommand => self.keyboard_command(value),
        }
    }

    fn keyboard_command(&mut self, command: u8) {
        // The keyboard's buffer is cleared by any command.
        self.queue.retain(|&(_, aux)| aux);
        match command {
            KBD_ECHO => self.push(KBD_ECHO),
            KBD_SET_LEDS | KBD_SET_RATE | KBD_SCANCODE_SET => {
                self.push(KBD_ACK);
                self.expect = Expect::KbdParameter(command);
            }
            KBD_GET_ID => {
                self.push(KBD_ACK);
                self.push(KBD_ID[0]);
                self.push(KBD_ID[1]);
            }
            KBD_RESET => {
                self.push(KBD_ACK);
                self.push(KBD_BAT_OK);
            }
            // Enable, disable, defaults, resend and the rest: acknowledged.
            _ => self.push(KBD_ACK),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA => {
                bump(&self.stats.read);
                self.read_data()
            }
            COMMAND => self.status(),
            _ => 0,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            DATA => {
                bump(&self.stats.write);
                self.write_data(value)
            }
            COMMAND => self.command(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Line(AtomicU32);

    impl IrqLine for Line {
        fn set_level(&self, level: bool) {
            if level {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn device() -> (I8042, Arc<Mutex<Vec<GuestRequest>>>, Arc<Line>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let line = Arc::new(Line::default());
        let dev = I8042::new(
            Arc::new(move |r| sink_seen.lock().unwrap().push(r)),
            line.clone(),
        );
        (dev, seen, line)
    }

    fn read(dev: &mut I8042, offset: u64) -> u8 {
        let mut b = [0xaa];
        dev.read(offset, &mut b);
        b[0]
    }

    /// Reads what the controller has for the guest.
    fn drain(dev: &mut I8042) -> Vec<u8> {
        let mut out = Vec::new();
        while read(dev, COMMAND) & STS_OUTPUT_FULL != 0 {
            out.push(read(dev, DATA));
        }
        out
    }

    #[test]
    fn state_moves_to_another_controller() {
        let (mut a, _, _) = device();
        a.write(COMMAND, &[CMD_WRITE_CTR]);
        a.write(DATA, &[CTR_SYSTEM]);
        a.write(COMMAND, &[CMD_SELF_TEST]);
        let saved = a.save();
        assert_eq!(saved.queue, vec![(0x55, false)]);

        let (mut b, _, _) = device();
        b.restore(&saved).unwrap();
        assert_eq!(drain(&mut b), [0x55]);
        b.write(COMMAND, &[CMD_READ_CTR]);
        assert_eq!(drain(&mut b)[0] & !CTR_AUX_DISABLED, CTR_SYSTEM);

        let mut too_long = saved.clone();
        too_long.queue = vec![(0, false); QUEUE_LEN + 1];
        assert_eq!(
            b.restore(&too_long),
            Err(I8042Error::SavedBufferTooLarge(QUEUE_LEN + 1))
        );
        assert_eq!(b.save().queue, vec![], "a refused state changes nothing");
    }

    #[test]
    fn reset_command_requests_reset_and_nothing_else_does() {
        let (mut dev, seen, _) = device();
        assert_eq!(read(&mut dev, COMMAND) & STS_OUTPUT_FULL, 0);
        dev.write(COMMAND, &[CMD_READ_CTR]);
        dev.write(DATA, &[0xfe]);
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(dev.stats().snapshot().reset_count, 0);
        dev.write(COMMAND, &[CMD_RESET_CPU]);
        assert_eq!(*seen.lock().unwrap(), vec![GuestRequest::Reset]);
        let counted = dev.stats().snapshot();
        assert_eq!((counted.reset_count, counted.write_count), (1, 1));
    }

    #[test]
    fn linux_probe_sequence_is_answered() {
        let (mut dev, _, _) = device();
        dev.write(COMMAND, &[CMD_SELF_TEST]);
        assert_eq!(drain(&mut dev), [0x55]);
        dev.write(COMMAND, &[CMD_READ_CTR]);
        let ctr = drain(&mut dev)[0];
        assert_ne!(ctr & CTR_TRANSLATE, 0);
        dev.write(COMMAND, &[CMD_WRITE_CTR]);
        dev.write(DATA, &[ctr & !CTR_KBD_INT]);
        dev.write(COMMAND, &[CMD_READ_CTR]);
        assert_eq!(drain(&mut dev), [(ctr & !CTR_KBD_INT) | CTR_AUX_DISABLED]);
        // No aux port: the loopback does not come back as aux data, the
        // interface test fails, enabling leaves it disabled.
        dev.write(COMMAND, &[CMD_WRITE_AUX_BUFFER]);
        dev.write(DATA, &[0x5a]);
        let status = read(&mut dev, COMMAND);
        assert_eq!(status & STS_AUX_DATA, 0);
        assert_ne!(drain(&mut dev), [0x5a]);
        dev.write(COMMAND, &[CMD_AUX_TEST]);
        assert_eq!(drain(&mut dev), [0x01]);
        dev.write(COMMAND, &[CMD_AUX_ENABLE]);
        dev.write(COMMAND, &[CMD_READ_CTR]);
        assert_ne!(drain(&mut dev)[0] & CTR_AUX_DISABLED, 0);
        // The keyboard: identity, LEDs, reset.
        dev.write(DATA, &[KBD_GET_ID]);
        assert_eq!(drain(&mut dev), [KBD_ACK, 0xab, 0x83]);
        dev.write(DATA, &[KBD_SET_LEDS]);
        assert_eq!(drain(&mut dev), [KBD_ACK]);
        dev.write(DATA, &[0x02]);
        assert_eq!(drain(&mut dev), [KBD_ACK]);
        dev.write(DATA, &[KBD_RESET]);
        assert_eq!(drain(&mut dev), [KBD_ACK, KBD_BAT_OK]);
    }

    #[test]
    fn ctrl_alt_del_is_set_1_with_translation_and_set_2_without() {
        let (mut dev, _, line) = device();
        dev.trigger_ctrl_alt_del().unwrap();
        assert!(line.0.load(Ordering::SeqCst) >= 1);
        assert_eq!(
            drain(&mut dev),
            [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d]
        );
        dev.write(COMMAND, &[CMD_WRITE_CTR]);
        dev.write(DATA, &[CTR_KBD_INT | CTR_SYSTEM]);
        dev.trigger_ctrl_alt_del().unwrap();
        assert_eq!(
            drain(&mut dev),
            [0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14]
        );
        // A guest that never reads: the buffer fills, nothing panics.
        dev.trigger_ctrl_alt_del().unwrap();
        assert_eq!(dev.trigger_ctrl_alt_del(), Err(I8042Error::BufferFull));
    }

    #[test]
    fn no_interrupt_while_the_keyboard_interrupt_is_off() {
        let (mut dev, _, line) = device();
        dev.write(COMMAND, &[CMD_WRITE_CTR]);
        dev.write(DATA, &[CTR_SYSTEM | CTR_TRANSLATE]);
        let before = line.0.load(Ordering::SeqCst);
        dev.trigger_ctrl_alt_del().unwrap();
        assert_eq!(line.0.load(Ordering::SeqCst), before);
        assert_eq!(drain(&mut dev).len(), 8);
    }
}
