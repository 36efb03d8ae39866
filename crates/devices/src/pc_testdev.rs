//! QEMU's `pc-testdev`, the ISA test device kvm-unit-tests drive
//! (`--device pc-testdev`; QEMU's `-device pc-testdev`): two port ranges.
//!
//! | ports | device | what |
//! |---|---|---|
//! | 0xe0–0xe3 | [`TestdevPorts`] | a 32-bit scratch register, byte-addressable: an access of any width at any of the four ports reads or writes those bytes of it (the I/O tests of `realmode` and `emulator`, string I/O included) |
//! | 0xe4–0xe7 | [`TestdevPorts`] | "flush page": QEMU unmaps the host page of the guest-physical address written, so that KVM's next access to it faults (`eventinj`); nothing a guest can observe, so writes are accepted and have no effect; reads 0 |
//! | 0x2000–0x2017 | [`TestdevIrq`] | interrupt lines: a write of a non-zero byte to port 0x2000 + n raises ISA IRQ / GSI n, zero lowers it (the `ioapic` test's level and edge interrupts); reads 0 |
//!
//! and one MMIO range, QEMU's "testdev-iomem":
//!
//! | addresses | device | what |
//! |---|---|---|
//! | 0xff00_0000–0xff00_ffff | [`TestdevIomem`] | 64 KiB of RAM-like memory behind MMIO exits, so that every guest access to it is emulated (the `emulator` test's instructions with a memory operand in MMIO) |
//!
//! A GSI the guest drives here is the same line other devices of the
//! machine drive: the levels are not combined, the last write wins. The
//! kvm-unit-tests use GSIs 14 and 15, which no default device uses.

use std::sync::Arc;

use crate::{BusDevice, IrqLine};

/// First port of the scratch register and the flush port.
pub const TESTDEV_PORT: u16 = 0xe0;
/// Ports of [`TestdevPorts`]: the register (4) and the flush port (4).
pub const TESTDEV_SIZE: u64 = 8;
/// First interrupt-line port.
pub const TESTDEV_IRQ_PORT: u16 = 0x2000;
/// Interrupt lines (GSIs 0..24, the IOAPIC's pins).
pub const TESTDEV_IRQ_LINES: usize = 24;

/// Guest-physical base of [`TestdevIomem`] (kvm-unit-tests' `IORAM_BASE_PHYS`).
pub const TESTDEV_IOMEM_BASE: u64 = 0xff00_0000;
/// Size of [`TestdevIomem`] (`IORAM_LEN`).
pub const TESTDEV_IOMEM_SIZE: u64 = 0x1_0000;

/// Offset of the flush-page port in [`TestdevPorts`].
const FLUSH_PAGE: u64 = 4;

/// The scratch register and the flush-page port.
#[derive(Debug, Default)]
pub struct TestdevPorts {
    scratch: [u8; 4],
    /// Pages the guest asked to flush (counted only).
    flushes: u64,
}

impl TestdevPorts {
    pub fn new() -> TestdevPorts {
        TestdevPorts::default()
    }

    /// The scratch register's value.
    pub fn scratch(&self) -> u32 {
        u32::from_le_bytes(self.scratch)
    }

    /// How many flush-page writes the guest made.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }
}

impl BusDevice for TestdevPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = match offset.checked_add(i as u64) {
                Some(o) if o < FLUSH_PAGE => self.scratch[o as usize],
                _ => 0,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= FLUSH_PAGE {
            if offset == FLUSH_PAGE {
                self.flushes += 1;
            }
            return;
        }
        for (i, &b) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                Some(o) if o < FLUSH_PAGE => self.scratch[o as usize] = b,
                _ => break,
            }
        }
    }
}

/// The MMIO range: byte-addressable memory, read back as written (zero
/// at first). Bytes of an access that fall outside the range read 0 and
/// are not written.
pub struct TestdevIomem {
    buf: Box<[u8]>,
}

impl TestdevIomem {
    pub fn new() -> TestdevIomem {
        TestdevIomem {
            buf: vec![0; TESTDEV_IOMEM_SIZE as usize].into_boxed_slice(),
        }
    }

    fn index(offset: u64, i: usize) -> Option<usize> {
        offset
            .checked_add(i as u64)
            .filter(|&o| o < TESTDEV_IOMEM_SIZE)
            .map(|o| o as usize)
    }
}

impl Default for TestdevIomem {
    fn default() -> Self {
        TestdevIomem::new()
    }
}

impl BusDevice for TestdevIomem {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = Self::index(offset, i).map_or(0, |o| self.buf[o]);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            if let Some(o) = Self::index(offset, i) {
                self.buf[o] = b;
            }
        }
    }
}

/// The interrupt-line ports: port 0x2000 + n drives `lines[n]`.
pub struct TestdevIrq {
    lines: Vec<Arc<dyn IrqLine>>,
}

impl TestdevIrq {
    /// `lines[n]` is GSI n (at most [`TESTDEV_IRQ_LINES`] are used).
    pub fn new(mut lines: Vec<Arc<dyn IrqLine>>) -> TestdevIrq {
        lines.truncate(TESTDEV_IRQ_LINES);
        TestdevIrq { lines }
    }
}

impl BusDevice for TestdevIrq {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // A wider write drives consecutive lines, one byte each.
        for (i, &b) in data.iter().enumerate() {
            let line = offset
                .checked_add(i as u64)
                .and_then(|n| usize::try_from(n).ok())
                .and_then(|n| self.lines.get(n));
            if let Some(line) = line {
                line.set_level(b != 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn scratch_register_is_byte_addressable_at_any_width() {
        let mut dev = TestdevPorts::new();
        dev.write(0, &0x1234_5678u32.to_le_bytes());
        let mut d = [0; 4];
        dev.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1234_5678);
        // A byte write changes that byte only; reads of any width and
        // offset see the register's bytes.
        dev.write(1, &[0xab]);
        assert_eq!(dev.scratch(), 0x1234_ab78);
        let mut w = [0; 2];
        dev.read(2, &mut w);
        assert_eq!(w, [0x34, 0x12]);
        let mut b = [0];
        dev.read(0, &mut b);
        assert_eq!(b, [0x78]);
        // realmode's word and byte round trips at 0xe0.
        dev.write(0, &[0x5a, 0xa5]);
        dev.read(0, &mut w);
        assert_eq!(w, [0x5a, 0xa5]);
        assert_eq!(dev.scratch(), 0x1234_a55a);
    }

    #[test]
    fn flush_port_counts_and_reads_zero() {
        let mut dev = TestdevPorts::new();
        dev.write(0, &[1, 2, 3, 4]);
        dev.write(FLUSH_PAGE, &0x1000u32.to_le_bytes());
        assert_eq!(dev.flushes(), 1);
        assert_eq!(dev.scratch(), 0x0403_0201);
        let mut d = [0xff; 4];
        dev.read(FLUSH_PAGE, &mut d);
        assert_eq!(d, [0; 4]);
        // A write that runs past the register stops at its end.
        dev.write(3, &[9, 9, 9]);
        assert_eq!(dev.scratch(), 0x0903_0201);
        for offset in [5, 7, 8, 0xffff, u64::MAX] {
            let mut buf = [0xff; 4];
            dev.read(offset, &mut buf);
            dev.write(offset, &buf);
        }
        assert_eq!(dev.scratch(), 0x0903_0201);
    }

    #[test]
    fn iomem_reads_back_what_was_written_at_any_width() {
        let mut dev = TestdevIomem::new();
        let mut q = [0xff; 8];
        dev.read(0x100, &mut q);
        assert_eq!(q, [0; 8]);
        dev.write(0x100, &0x1122_3344_5566_7788u64.to_le_bytes());
        dev.write(0x101, &[0xab]);
        dev.read(0x100, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x1122_3344_5566_ab88);
        let mut w = [0; 2];
        dev.read(0x106, &mut w);
        assert_eq!(w, [0x22, 0x11]);
        // 16-byte (SSE) accesses and the last bytes of the range.
        let x: Vec<u8> = (1..=16).collect();
        dev.write(TESTDEV_IOMEM_SIZE - 16, &x);
        let mut o = [0; 16];
        dev.read(TESTDEV_IOMEM_SIZE - 16, &mut o);
        assert_eq!(o.as_slice(), x.as_slice());
        // Past the end: the bytes inside are written, the rest read 0.
        dev.write(TESTDEV_IOMEM_SIZE - 2, &[7, 7, 7, 7]);
        dev.read(TESTDEV_IOMEM_SIZE - 2, &mut q[..4]);
        assert_eq!(&q[..4], &[7, 7, 0, 0]);
        for offset in [TESTDEV_IOMEM_SIZE, u64::MAX] {
            dev.write(offset, &[1; 8]);
            dev.read(offset, &mut q);
            assert_eq!(q, [0; 8]);
        }
    }

    struct Recorder {
        gsi: usize,
        seen: Arc<Mutex<Vec<(usize, bool)>>>,
    }

    impl IrqLine for Recorder {
        fn set_level(&self, level: bool) {
            self.seen.lock().unwrap().push((self.gsi, level));
        }
    }

    #[test]
    fn irq_ports_drive_their_lines() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let lines: Vec<Arc<dyn IrqLine>> = (0..TESTDEV_IRQ_LINES)
            .map(|gsi| {
                Arc::new(Recorder {
                    gsi,
                    seen: seen.clone(),
                }) as Arc<dyn IrqLine>
            })
            .collect();
        let mut dev = TestdevIrq::new(lines);
        dev.write(0x0e, &[1]);
        dev.write(0x0e, &[0]);
        dev.write(0x0f, &[0x80]);
        dev.write(0x16, &[1, 0]);
        // Past the last line: nothing.
        dev.write(0x17, &[1, 1]);
        dev.write(u64::MAX, &[1, 1]);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (0x0e, true),
                (0x0e, false),
                (0x0f, true),
                (0x16, true),
                (0x17, false),
                (0x17, true),
            ]
        );
        let mut d = [0xff; 2];
        dev.read(0x0e, &mut d);
        assert_eq!(d, [0, 0]);
    }
}
