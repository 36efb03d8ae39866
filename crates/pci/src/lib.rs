//! PCI for Ferrovisor: bus 0 behind a host bridge, reached through
//! configuration mechanism #1 (ports 0xCF8/0xCFC) and ECAM, with memory
//! BARs in a window of the 32-bit MMIO hole ([`bus`]); type-0 headers with
//! BAR sizing and relocation and a capability list ([`config`]); MSI-X
//! ([`msix`]); and the virtio-pci modern transport ([`virtio`]).
//!
//! Nothing the guest writes can make it panic: configuration accesses of
//! any size at any offset are masked or ignored, BARs keep only the address
//! bits their size allows, unknown functions read all ones.
#![forbid(unsafe_code)]

pub mod bus;
pub mod config;
pub mod msix;
pub mod virtio;

pub use bus::{BarWindow, ConfigIo, Ecam, PciBus, PciError};
pub use config::{BarRange, ConfigSpace, PciIds};
pub use msix::{MsiSink, MsixTable};

/// A PCI function on [`PciBus`].
pub trait PciDevice: Send {
    /// Reads configuration space at `offset` (below 4096; 1, 2 or 4 bytes
    /// that do not cross a dword).
    fn config_read(&mut self, offset: usize, data: &mut [u8]);
    /// Writes configuration space (same shapes as reads).
    fn config_write(&mut self, offset: usize, data: &[u8]);
    /// The memory ranges the function decodes now (its BARs, if memory
    /// space is enabled).
    fn bar_ranges(&self) -> Vec<BarRange>;
    /// Reads `offset` bytes into BAR `bar`.
    fn bar_read(&mut self, _bar: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    /// Writes `offset` bytes into BAR `bar`.
    fn bar_write(&mut self, _bar: u8, _offset: u64, _data: &[u8]) {}
}
