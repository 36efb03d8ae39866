//! The one struct a machine is built from.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arch::boot::BootProtocol;
use virtio::throttle::Limits;

use crate::Accel;

/// Where the guest's serial console output goes.
#[derive(Clone, Default)]
pub enum ConsoleOutput {
    /// The host's standard output.
    #[default]
    Stdout,
    /// A shared buffer (tests, the demo).
    Buffer(Arc<Mutex<Vec<u8>>>),
    /// Discarded.
    Sink,
    /// A file (Firecracker's `serial_out_path`), appended to.
    File(Arc<std::fs::File>),
}

impl ConsoleOutput {
    pub(crate) fn writer(&self) -> Box<dyn Write + Send> {
        match self {
            // A descriptor of its own: the console's writer thread may
            // block in it without holding Rust's standard output lock.
            ConsoleOutput::Stdout => {
                use std::os::fd::AsFd;
                match std::io::stdout().as_fd().try_clone_to_owned() {
                    Ok(fd) => Box::new(std::fs::File::from(fd)),
                    Err(_) => Box::new(std::io::stdout()),
                }
            }
            ConsoleOutput::Buffer(buf) => Box::new(SharedWriter(buf.clone())),
            ConsoleOutput::Sink => Box::new(std::io::sink()),
            ConsoleOutput::File(file) => Box::new(FileWriter(file.clone())),
        }
    }
}

impl std::fmt::Debug for ConsoleOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleOutput::Stdout => f.write_str("Stdout"),
            ConsoleOutput::Buffer(_) => f.write_str("Buffer"),
            ConsoleOutput::Sink => f.write_str("Sink"),
            ConsoleOutput::File(_) => f.write_str("File"),
        }
    }
}

struct FileWriter(Arc<std::fs::File>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything needed to build a machine.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    pub accel: Accel,
    /// Guest RAM in bytes (a multiple of 4 KiB, at least 16 MiB).
    pub memory: u64,
    pub vcpus: u32,
    /// Threads per core the CPUID describes: 1, or 2 with SMT
    /// (Firecracker's `smt`; `vcpus` is then 1 or even).
    pub threads_per_core: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub boot_protocol: BootProtocol,
    pub console: ConsoleOutput,
    /// Feed the host's standard input to the console (the device
    /// `console_device` names).
    pub console_input: bool,
    /// The guest's console device: the UART (COM1, the guest's ttyS0), or a
    /// virtio console (hvc0) beside the UART, which stays for early
    /// messages. Standard input feeds this one.
    pub console_device: ConsoleDevice,
    /// virtio-blk disks, in order (the guest's vda, vdb, ...).
    pub disks: Vec<DiskConfig>,
    /// A virtio-rng entropy device.
    pub rng: bool,
    /// The entropy device's rate limiter.
    pub rng_rate_limiter: Limits,
    /// How the virtio devices attach: virtio-mmio windows or PCI.
    pub transport: VirtioTransport,
    /// virtio-net devices, in order (the guest's eth0, eth1, ...).
    pub nets: Vec<NetConfig>,
    /// A virtio-vsock device.
    pub vsock: Option<VsockConfig>,
    /// QEMU's `pc-testdev` (ports 0xe0–0xe7 and the interrupt lines at
    /// 0x2000): the test device kvm-unit-tests use.
    pub pc_testdev: bool,
    /// The i8254 PIT (and port 0x61); `false` is QEMU's `-machine pit=off`.
    pub pit: bool,
    /// [`hv::VmConfig::pit_discards_lost_ticks`].
    pub pit_discards_lost_ticks: bool,
    /// Firecracker's boot timer (`--boot-timer`) in the first virtio-mmio
    /// window, the virtio devices one window further.
    pub boot_timer: Option<devices::boot_timer::BootClock>,
    /// The CPU model and feature changes the vCPUs' CPUID shows.
    pub cpu: arch::cpu_model::CpuModel,
    /// A custom CPU template (`/cpu-config`): CPUID modifiers applied
    /// after [`Self::cpu`], MSR modifiers after the boot MSRs.
    pub cpu_template: arch::cpu_template::CpuTemplate,
    /// The microVM metadata service, reachable through the network
    /// devices whose `mmds` is set.
    pub mmds: Option<MmdsAttach>,
}

/// The MMDS of a machine: the shared data store and tokens, and how the
/// guest reaches them.
#[derive(Clone)]
pub struct MmdsAttach {
    pub shared: mmds::SharedMmds,
    pub config: mmds::StackConfig,
}

impl std::fmt::Debug for MmdsAttach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmdsAttach")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The bus the virtio devices sit on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VirtioTransport {
    /// virtio-mmio windows described in the DSDT (the default).
    #[default]
    Mmio,
    /// virtio-pci functions on PCI bus 0, with MSI-X.
    Pci,
}

impl std::str::FromStr for VirtioTransport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mmio" => Ok(VirtioTransport::Mmio),
            "pci" => Ok(VirtioTransport::Pci),
            _ => Err(format!("unknown transport {s:?} (mmio or pci)")),
        }
    }
}

impl std::fmt::Display for VirtioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VirtioTransport::Mmio => "mmio",
            VirtioTransport::Pci => "pci",
        })
    }
}

/// A virtio-net device on an existing host TAP interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The TAP interface's name.
    pub tap: String,
    /// The guest's MAC address; by default 06:00:00:00:00:<n+1> for the
    /// n-th device (locally administered, unicast).
    pub mac: Option<[u8; 6]>,
    /// Offer the guest checksum and TCP segmentation offloads (they pass
    /// through the TAP's vnet header).
    pub offload: bool,
    /// Rate limiters of the frames to the guest (rx) and from it (tx).
    pub rx_rate_limiter: Limits,
    pub tx_rate_limiter: Limits,
    /// The guest reaches the MMDS ([`MachineConfig::mmds`]) through it.
    pub mmds: bool,
}

impl NetConfig {
    /// The MAC address of the `index`-th network device.
    pub fn mac_or_default(&self, index: usize) -> [u8; 6] {
        self.mac.unwrap_or_else(|| {
            let n = (index as u32).wrapping_add(1).to_be_bytes();
            [0x06, 0x00, n[0], n[1], n[2], n[3]]
        })
    }
}

/// A virtio-vsock device: the guest's CID and the Unix socket the host
/// side listens on (Firecracker's convention: host clients connect to
/// `socket` and send `CONNECT <port>`; guest connections to host port P go
/// to `socket`_P).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    pub cid: u64,
    pub socket: PathBuf,
}

/// Which device is the guest's interactive console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConsoleDevice {
    /// COM1 (ttyS0).
    #[default]
    Serial,
    /// A virtio console (hvc0).
    Virtio,
}

impl ConsoleDevice {
    /// The kernel command line `ferrovisor run` uses when none is given.
    pub fn default_cmdline(self) -> &'static str {
        match self {
            ConsoleDevice::Serial => "console=ttyS0 reboot=k panic=-1",
            ConsoleDevice::Virtio => "console=hvc0 reboot=k panic=-1",
        }
    }
}

impl std::str::FromStr for ConsoleDevice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "serial" => Ok(ConsoleDevice::Serial),
            "virtio" => Ok(ConsoleDevice::Virtio),
            _ => Err(format!("unknown console '{s}' (serial or virtio)")),
        }
    }
}

/// A virtio-blk disk on a raw image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
    /// What the guest reads as the disk's serial number (at most 20 bytes).
    pub id: Option<String>,
    /// The disk's rate limiter.
    pub rate_limiter: Limits,
    /// Its format (raw unless said) and cache mode.
    pub image: virtio::blk_image::ImageOptions,
}

pub const MIN_MEMORY: u64 = 16 << 20;
pub const MAX_VCPUS: u32 = 254;

impl MachineConfig {
    /// A config with Ferrovisor's defaults for `kernel`.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        MachineConfig {
            accel: Accel::Auto,
            memory: 256 << 20,
            vcpus: 1,
            threads_per_core: 1,
            kernel: kernel.into(),
            initrd: None,
            cmdline: ConsoleDevice::Serial.default_cmdline().to_string(),
            boot_protocol: BootProtocol::Auto,
            console: ConsoleOutput::Stdout,
            console_input: false,
            console_device: ConsoleDevice::Serial,
            disks: Vec::new(),
            rng: false,
            rng_rate_limiter: Limits::default(),
            transport: VirtioTransport::Mmio,
            nets: Vec::new(),
            vsock: None,
            pc_testdev: false,
            pit: true,
            pit_discards_lost_ticks: false,
            boot_timer: None,
            cpu: arch::cpu_model::CpuModel::default(),
            cpu_template: arch::cpu_template::CpuTemplate::default(),
            mmds: None,
        }
    }
}
