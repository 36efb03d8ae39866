//! The virtio devices of a machine: opening their backends (disks, TAPs,
//! the entropy source, the vsock socket, the console) in the guest's
//! order, and placing them in virtio-mmio windows. virtio-pci placement is
//! [`super::pci`].
//!
//! virtio-mmio devices (in the DSDT as `LNRO0005`, level-triggered IRQs):
//! one 4 KiB window each from [`VIRTIO_MMIO_BASE`], the disks first (in
//! `--disk` order), then the network devices (in `--net` order), then the
//! entropy device, the socket device and the console; IRQs from
//! [`VIRTIO_IRQS`].

use std::sync::{Arc, Mutex};

use devices::IoBuses;
use hv::Vm;
use virtio::throttle::ThrottleHandle;
use vm_memory::GuestMemoryMmap;

use super::irq::{guest_write_hook, register_notifiers, GsiLine};
use super::state::{Placed, Transport};
use crate::config::{ConsoleDevice, MachineConfig};
use crate::MachineError;

/// Guest-physical base of the virtio-mmio windows (in the MMIO hole).
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of each virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// GSIs of the virtio devices, in order: 1 (i8042), 4 (COM1) and 8 (RTC)
/// are taken, 0 and 2 are the timer's.
pub const VIRTIO_IRQS: [u32; 17] = [
    5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
];

/// How many virtio devices `config` asks for (whatever the transport).
pub(crate) fn device_count(config: &MachineConfig) -> usize {
    config.disks.len()
        + config.nets.len()
        + usize::from(config.rng)
        + usize::from(config.vsock.is_some())
        + usize::from(config.console_device == ConsoleDevice::Virtio)
}

/// Where each virtio-mmio device of `config` goes: (window base, GSI).
pub(crate) fn mmio_slots(config: &MachineConfig) -> Result<Vec<(u64, u32)>, MachineError> {
    let count = device_count(config);
    if count > VIRTIO_IRQS.len() {
        return Err(MachineError::TooManyVirtioDevices {
            count,
            max: VIRTIO_IRQS.len(),
        });
    }
    // Firecracker's boot timer, when asked for, holds the first window.
    let first = u64::from(config.boot_timer.is_some());
    Ok((0..count)
        .map(|i| {
            (
                VIRTIO_MMIO_BASE + (first + i as u64) * VIRTIO_MMIO_SIZE,
                VIRTIO_IRQS[i],
            )
        })
        .collect())
}

/// A network device's two rate limiters.
#[derive(Clone)]
pub(crate) struct NetLimits {
    pub rx: ThrottleHandle,
    pub tx: ThrottleHandle,
}

/// A device model with its name, before it is put on a transport.
pub(crate) type NamedModel = (String, Box<dyn virtio::VirtioDevice>);

/// The models of `config`'s virtio devices in the guest's order, with
/// what the device manager keeps to update them while they run.
pub(crate) struct Models {
    pub models: Vec<NamedModel>,
    /// The disks' handles, in `config.disks` order.
    pub drives: Vec<virtio::blk::BlockHandle>,
    /// The disks' rate limiters, in `config.disks` order.
    pub drive_limits: Vec<ThrottleHandle>,
    /// The network devices' rate limiters, in `config.nets` order.
    pub net_limits: Vec<NetLimits>,
    /// The network devices' counters, in `config.nets` order.
    pub net_stats: Vec<virtio::net::NetStatsHandle>,
    /// The network devices' TAP interfaces, in `config.nets` order.
    pub taps: Vec<virtio::tap::TapHandle>,
    /// The entropy device's counters and rate limiter.
    pub entropy: Option<(virtio::rng::RngStatsHandle, ThrottleHandle)>,
    /// The socket device's counters.
    pub vsock: Option<Arc<virtio::vsock::VsockCounters>>,
    /// The virtio console's input, when the console is one.
    pub console_input: Option<virtio::console::ConsoleInput>,
}

/// Opens the disks, the TAP devices, the entropy source, the vsock socket
/// and the virtio console of `config`.
pub(crate) fn open_models(
    config: &MachineConfig,
    console: &crate::console::ConsoleOut,
) -> Result<Models, MachineError> {
    let mut models: Vec<NamedModel> = Vec::new();
    let mut drives = Vec::new();
    let mut drive_limits = Vec::new();
    let mut net_limits = Vec::new();
    let mut net_stats = Vec::new();
    let mut taps = Vec::new();
    let mut entropy = None;
    let mut vsock_counters = None;
    for (i, disk) in config.disks.iter().enumerate() {
        let id = disk.id.as_deref().unwrap_or("");
        let block = virtio::blk::Block::open_image(&disk.path, disk.read_only, disk.image, id)
            .map_err(MachineError::Disk)?
            .limited(disk.rate_limiter);
        drives.push(block.handle());
        drive_limits.push(block.throttle());
        models.push((format!("virtio-blk{i}"), Box::new(block)));
    }
    for (index, net) in config.nets.iter().enumerate() {
        let tap = virtio::tap::Tap::open(&net.tap)
            .map_err(|source| MachineError::Net { index, source })?;
        taps.push(tap.handle());
        let mut device =
            virtio::net::Net::with_offloads(Box::new(tap), net.mac_or_default(index), net.offload)
                .limited(net.rx_rate_limiter, net.tx_rate_limiter);
        if let Some(m) = config.mmds.as_ref().filter(|_| net.mmds) {
            device.set_mmds(mmds::Stack::new(m.config, m.shared.clone()));
        }
        net_limits.push(NetLimits {
            rx: device.rx_throttle(),
            tx: device.tx_throttle(),
        });
        net_stats.push(device.stats());
        models.push((format!("virtio-net{index}"), Box::new(device)));
    }
    if config.rng {
        let rng = virtio::rng::Rng::new()
            .map_err(MachineError::Entropy)?
            .limited(config.rng_rate_limiter);
        entropy = Some((rng.stats(), rng.throttle()));
        models.push(("virtio-rng".to_string(), Box::new(rng)));
    }
    if let Some(vsock) = &config.vsock {
        let device =
            virtio::vsock::Vsock::new(vsock.cid, &vsock.socket).map_err(MachineError::Vsock)?;
        vsock_counters = Some(device.counters());
        models.push(("virtio-vsock".to_string(), Box::new(device)));
    }
    let mut console_input = None;
    if config.console_device == ConsoleDevice::Virtio {
        let console =
            virtio::console::Console::new(console.writer()).map_err(MachineError::VirtioEvents)?;
        console_input = Some(console.input());
        models.push(("virtio-console".to_string(), Box::new(console)));
    }
    Ok(Models {
        models,
        drives,
        drive_limits,
        net_limits,
        net_stats,
        taps,
        entropy,
        vsock: vsock_counters,
        console_input,
    })
}

/// Puts `models` in virtio-mmio windows on `buses`.
pub(crate) fn place_on_mmio(
    buses: &mut IoBuses,
    vm: &Arc<dyn Vm>,
    mem: &GuestMemoryMmap,
    config: &MachineConfig,
    models: Vec<NamedModel>,
) -> Result<Vec<Placed>, MachineError> {
    let mut placed = Vec::new();
    for ((name, model), (addr, irq)) in models.into_iter().zip(mmio_slots(config)?) {
        let transport =
            virtio::mmio::MmioTransport::new(model, mem.clone(), GsiLine::line(vm, irq))
                .map_err(MachineError::VirtioEvents)?;
        transport.set_guest_write_hook(guest_write_hook(vm));
        let gate = transport.pause_gate();
        let notifiers = transport
            .notifiers(addr)
            .map_err(MachineError::VirtioEvents)?;
        register_notifiers(vm, &name, notifiers);
        let transport = Arc::new(Mutex::new(transport));
        buses
            .mmio
            .insert(&name, addr, VIRTIO_MMIO_SIZE, transport.clone())?;
        placed.push(Placed {
            name,
            gate,
            transport: Transport::Mmio(transport),
        });
    }
    Ok(placed)
}
