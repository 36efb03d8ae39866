//! The host side of the console: standard input to the UART or the virtio
//! console ([`InputTarget`]), with an interactive mode on terminals.
//!
//! On a terminal, standard input is put in raw mode (no line editing, no
//! echo, Ctrl-C goes to the guest) and restored when the machine ends; the
//! escape sequence **Ctrl-A x** ends the VM, and **Ctrl-A Ctrl-A** sends one
//! Ctrl-A to the guest. Under a pipe or a file, bytes pass through as they
//! are. End of file on standard input stops the feeding, never the VM.
//!
//! The other way, the guest's output reaches standard output (or the
//! serial file) through [`ConsoleOut`]: a bounded buffer and a writer
//! thread, so that a vCPU never blocks on the host (a pipe nobody reads)
//! and Ctrl-A x always ends the VM.

use std::io::{IsTerminal, Read, Write};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::serial::Serial;
use devices::serial_output::{self, OutputDrain};
use vmm_sys_util::terminal::Terminal;

use crate::config::ConsoleOutput;
use crate::vcpu::MachineEvent;

/// How long the end of the machine waits for the guest's last output to
/// reach the host (a blocked standard output is then given up).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The guest's console output, as every console device writes it.
pub(crate) struct ConsoleOut {
    output: ConsoleOutput,
    /// The buffered writer and its drain, for outputs on host files
    /// (standard output, the serial file), which can block.
    buffered: Option<(serial_output::BufferedOutput, OutputDrain)>,
}

impl ConsoleOut {
    /// Starts the writer thread when `output` is a host file.
    pub fn open(output: &ConsoleOutput) -> std::io::Result<ConsoleOut> {
        let buffered = match output {
            ConsoleOutput::Stdout | ConsoleOutput::File(_) => Some(serial_output::spawn(
                "console-out",
                output.writer(),
                serial_output::DEFAULT_CAPACITY,
            )?),
            ConsoleOutput::Buffer(_) | ConsoleOutput::Sink => None,
        };
        Ok(ConsoleOut {
            output: output.clone(),
            buffered,
        })
    }

    /// A writer for one console device.
    pub fn writer(&self) -> Box<dyn Write + Send> {
        match &self.buffered {
            Some((writer, _)) => Box::new(writer.clone()),
            None => self.output.writer(),
        }
    }

    /// Waits (at most `timeout`) for the buffered output to reach the
    /// host; says so when it could not.
    pub fn drain(&self, timeout: Duration) {
        let Some((_, drain)) = &self.buffered else {
            return;
        };
        let drained = drain.drain(timeout);
        let lost_bytes = drain.stats().lost_bytes();
        if !drained {
            tracing::warn!(
                lost_bytes,
                "the console output is blocked: the guest's last output is dropped"
            );
        } else if lost_bytes > 0 {
            tracing::warn!(
                lost_bytes,
                "the console output could not keep up: guest output was dropped"
            );
        }
    }
}

/// The escape key: Ctrl-A, as QEMU's `-serial mon:stdio`.
pub const ESCAPE: u8 = 0x01;
/// After the escape key, this ends the VM.
pub const QUIT: u8 = b'x';

/// Splits the user's keystrokes into bytes for the guest and the quit
/// request.
#[derive(Debug, Default)]
pub struct EscapeFilter {
    after_escape: bool,
}

impl EscapeFilter {
    /// Appends the bytes for the guest to `out`; returns true when the user
    /// asked to quit (the rest of `input` is dropped).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &byte in input {
            if self.after_escape {
                self.after_escape = false;
                match byte {
                    QUIT | b'X' => return true,
                    ESCAPE => out.push(ESCAPE),
                    other => out.extend_from_slice(&[ESCAPE, other]),
                }
            } else if byte == ESCAPE {
                self.after_escape = true;
            } else {
                out.push(byte);
            }
        }
        false
    }
}

/// Puts the standard input terminal in raw mode until dropped.
pub struct RawTerminal {
    active: bool,
}

impl RawTerminal {
    /// Raw mode when standard input is a terminal; otherwise nothing.
    pub fn enable() -> RawTerminal {
        let stdin = std::io::stdin();
        let active = stdin.is_terminal() && stdin.lock().set_raw_mode().is_ok();
        RawTerminal { active }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if self.active {
            let _ = std::io::stdin().lock().set_canon_mode();
        }
    }
}

/// Where standard input goes.
#[derive(Clone)]
pub enum InputTarget {
    /// The UART's receive FIFO.
    Serial(Arc<Mutex<Serial>>),
    /// The virtio console's input buffer.
    Virtio(virtio::console::ConsoleInput),
}

impl InputTarget {
    /// Queues as much of `bytes` as fits now; returns how many.
    fn offer(&self, bytes: &[u8]) -> usize {
        match self {
            InputTarget::Serial(serial) => serial
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .enqueue_input(bytes),
            InputTarget::Virtio(input) => {
                let n = input.room().min(bytes.len());
                input.push(&bytes[..n])
            }
        }
    }
}

/// Feeds standard input to `target` on a thread of its own (waiting while
/// the guest does not take it). With `interactive`, the escape sequence is
/// honoured and Ctrl-A x sends [`MachineEvent::HostQuit`].
pub fn spawn_stdin_reader(target: InputTarget, interactive: bool, events: Sender<MachineEvent>) {
    let builder = std::thread::Builder::new().name("stdin".into());
    let _ = sandbox::spawn(sandbox::ThreadKind::Stdin, builder, move || {
        let mut stdin = std::io::stdin();
        let mut filter = EscapeFilter::default();
        let mut buf = [0u8; 64];
        let mut for_guest = Vec::with_capacity(128);
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            for_guest.clear();
            if interactive {
                if filter.feed(&buf[..n], &mut for_guest) {
                    let _ = events.send(MachineEvent::HostQuit);
                    return;
                }
            } else {
                for_guest.extend_from_slice(&buf[..n]);
            }
            let mut pending = &for_guest[..];
            while !pending.is_empty() {
                let taken = target.offer(pending);
                pending = &pending[taken..];
                if taken == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(filter: &mut EscapeFilter, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let quit = filter.feed(input, &mut out);
        (out, quit)
    }

    #[test]
    fn plain_bytes_pass_through() {
        let mut f = EscapeFilter::default();
        assert_eq!(
            feed(&mut f, b"ls -l\r\x03"),
            (b"ls -l\r\x03".to_vec(), false)
        );
    }

    #[test]
    fn ctrl_a_x_quits_even_across_reads() {
        let mut f = EscapeFilter::default();
        assert_eq!(feed(&mut f, b"ab\x01"), (b"ab".to_vec(), false));
        assert_eq!(feed(&mut f, b"x more"), (Vec::new(), true));
    }

    #[test]
    fn ctrl_a_ctrl_a_sends_one_ctrl_a_and_others_pass() {
        let mut f = EscapeFilter::default();
        assert_eq!(feed(&mut f, b"\x01\x01"), (vec![0x01], false));
        assert_eq!(feed(&mut f, b"\x01c"), (vec![0x01, b'c'], false));
    }
}
