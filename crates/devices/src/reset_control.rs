//! The PC chipset's reset control register at port 0xCF9 (the PIIX/ICH
//! "RST_CNT"): setting RST_CPU (bit 2) resets the machine; SYS_RST (bit 1)
//! and FULL_RST (bit 3) choose the kind of reset and read back. Linux's
//! `reboot=pci` (BOOT_CF9_FORCE) and `reboot=q` (BOOT_CF9_SAFE) write it.
//!
//! Port 0xCF9 lies inside the PCI configuration mechanism's 0xCF8..0xCFF:
//! a byte access there is this register, a dword access at 0xCF8
//! CONFIG_ADDRESS (the PCI host bridge forwards the byte accesses).

use crate::{BusDevice, GuestRequest, RequestSink};

pub const RESET_CONTROL_PORT: u16 = 0xcf9;
pub const RESET_CONTROL_SIZE: u64 = 1;

/// SYS_RST: a hard (system) reset rather than a soft one.
const SYS_RST: u8 = 1 << 1;
/// RST_CPU: the reset happens on the write that sets it.
const RST_CPU: u8 = 1 << 2;
/// FULL_RST: power-cycle as part of a hard reset.
const FULL_RST: u8 = 1 << 3;

pub struct ResetControl {
    value: u8,
    requests: RequestSink,
}

impl ResetControl {
    pub fn new(requests: RequestSink) -> Self {
        ResetControl { value: 0, requests }
    }
}

impl BusDevice for ResetControl {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = self.value;
        }
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        self.value = value & (SYS_RST | FULL_RST);
        if value & RST_CPU != 0 {
            (self.requests)(GuestRequest::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn rst_cpu_resets_and_the_mode_bits_read_back() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let mut dev = ResetControl::new(Arc::new(move |r| sink_seen.lock().unwrap().push(r)));
        // Linux's CF9 sequence: read, write SYS_RST, then SYS_RST|RST_CPU.
        let mut b = [0xaa];
        dev.read(0, &mut b);
        assert_eq!(b, [0]);
        dev.write(0, &[SYS_RST]);
        assert!(seen.lock().unwrap().is_empty(), "no reset without RST_CPU");
        dev.read(0, &mut b);
        assert_eq!(b, [SYS_RST]);
        dev.write(0, &[SYS_RST | RST_CPU | FULL_RST]);
        assert_eq!(*seen.lock().unwrap(), vec![GuestRequest::Reset]);
        dev.read(0, &mut b);
        assert_eq!(b, [SYS_RST | FULL_RST], "RST_CPU does not read back");
        dev.write(0, &[]);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
