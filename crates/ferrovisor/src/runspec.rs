//! `ferrovisor run`'s flags as a [`VmSpec`]: the same VM description the
//! Firecracker front end builds, so both go through
//! [`vmm::machine_config`].

use std::path::Path;

use api::schema::{
    BootSource, Drive, EntropyDevice, MachineConfiguration, NetworkInterface, Vsock,
};
use api::spec::{BootProtocol, Console, Extensions, Transport};
use api::VmSpec;

use crate::RunArgs;

fn utf8<'a>(what: &str, path: &'a Path) -> Result<&'a str, String> {
    path.to_str()
        .ok_or_else(|| format!("{what} {} is not a UTF-8 path", path.display()))
}

/// The spec of `ferrovisor run ARGS`. Disks without `id=` get the first
/// free `driveN` as id (which the guest reads as the disk's serial);
/// network devices are `net0`, `net1`, ... in order.
/// `--cpu-template FILE`: the template, checked.
fn cpu_config(path: &Path) -> Result<api::schema::CpuConfig, String> {
    let what = || format!("--cpu-template {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", what()))?;
    let config: api::schema::CpuConfig =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", what()))?;
    vmm::spec::cpu_template(&config).map_err(|e| format!("{}: {e}", what()))?;
    Ok(config)
}

pub(crate) fn spec_from_run(args: &RunArgs) -> Result<VmSpec, String> {
    if !args.memory.is_multiple_of(1 << 20) {
        return Err(format!(
            "--memory {} bytes is not a whole number of MiB",
            args.memory
        ));
    }
    let mut used: Vec<String> = args.disks.iter().filter_map(|d| d.id.clone()).collect();
    let mut drives = Vec::with_capacity(args.disks.len());
    let mut drive_images = Vec::new();
    for disk in &args.disks {
        let id = match &disk.id {
            Some(id) => id.clone(),
            None => {
                let id = (0..)
                    .map(|n| format!("drive{n}"))
                    .find(|c| !used.contains(c))
                    .unwrap_or_default();
                used.push(id.clone());
                id
            }
        };
        if disk.image != Default::default() {
            drive_images.push(api::spec::DriveImage {
                drive_id: id.clone(),
                format: Some(disk.image.format.name().to_string()),
                cache: Some(disk.image.cache.name().to_string()),
            });
        }
        drives.push(Drive {
            drive_id: id,
            partuuid: None,
            is_root_device: false,
            cache_type: Default::default(),
            is_read_only: Some(disk.read_only),
            path_on_host: Some(utf8("disk", &disk.path)?.to_string()),
            rate_limiter: vmm::spec::rate_limiter(&disk.rate_limiter),
            io_engine: None,
            socket: None,
        });
    }
    let mut offload_off = Vec::new();
    let network_interfaces = args
        .nets
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let iface_id = format!("net{i}");
            if !n.offload {
                offload_off.push(iface_id.clone());
            }
            let m = n.mac_or_default(i);
            NetworkInterface {
                iface_id,
                host_dev_name: n.tap.clone(),
                guest_mac: Some(format!(
                    "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    m[0], m[1], m[2], m[3], m[4], m[5]
                )),
                mtu: None,
                rx_rate_limiter: vmm::spec::rate_limiter(&n.rx_rate_limiter),
                tx_rate_limiter: vmm::spec::rate_limiter(&n.tx_rate_limiter),
            }
        })
        .collect();
    let vsock = match &args.vsock {
        None => None,
        Some(v) => Some(Vsock {
            guest_cid: u32::try_from(v.cid).map_err(|_| format!("cid={} is too large", v.cid))?,
            uds_path: utf8("vsock socket", &v.socket)?.to_string(),
            vsock_id: None,
        }),
    };
    let initrd_path = match &args.initrd {
        Some(p) => Some(utf8("initrd", p)?.to_string()),
        None => None,
    };
    let mut spec = VmSpec::default();
    spec = VmSpec {
        boot_source: Some(BootSource {
            kernel_image_path: utf8("kernel", &args.kernel)?.to_string(),
            initrd_path,
            boot_args: Some(
                args.cmdline
                    .clone()
                    .unwrap_or_else(|| args.console.default_cmdline().to_string()),
            ),
        }),
        machine_config: MachineConfiguration {
            vcpu_count: args.cpus,
            mem_size_mib: args.memory >> 20,
            ..Default::default()
        },
        drives,
        network_interfaces,
        vsock,
        entropy: args.rng.as_ref().map(|limits| EntropyDevice {
            rate_limiter: vmm::spec::rate_limiter(limits),
        }),
        ferrovisor: Extensions {
            boot_protocol: match args.boot {
                arch::boot::BootProtocol::Auto => BootProtocol::Auto,
                arch::boot::BootProtocol::Linux => BootProtocol::Linux,
                arch::boot::BootProtocol::Bare => BootProtocol::Bare,
                arch::boot::BootProtocol::Multiboot => BootProtocol::Multiboot,
                arch::boot::BootProtocol::Pvh => BootProtocol::Pvh,
            },
            transport: match args.transport {
                vmm::VirtioTransport::Mmio => Transport::Mmio,
                vmm::VirtioTransport::Pci => Transport::Pci,
            },
            console: match args.console {
                vmm::ConsoleDevice::Serial => Console::Serial,
                vmm::ConsoleDevice::Virtio => Console::Virtio,
            },
            offload_off,
            drive_images,
            cpu: (args.cpu != "max").then(|| args.cpu.clone()),
            pc_testdev: args.devices.contains(&crate::TestDevice::PcTestdev),
            no_pit: args.no_pit,
            // KVM's default (late delivery); emu coalesces either way.
            pit_discards_lost_ticks: false,
        },
        cpu_config: args.cpu_template.as_deref().map(cpu_config).transpose()?,
        ..spec
    };
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn spec(args: &[&str]) -> Result<VmSpec, String> {
        let cli =
            crate::Cli::try_parse_from(["ferrovisor", "run", "--kernel", "/k"].iter().chain(args))
                .unwrap();
        let crate::Command::Run(run) = cli.command else {
            panic!("not run")
        };
        spec_from_run(&run)
    }

    #[test]
    fn run_flags_make_the_same_machine_as_before() {
        let s = spec(&[
            "--cpus",
            "2",
            "--memory",
            "512M",
            "--disk",
            "path=/a.img",
            "--disk",
            "path=/b.img,readonly=on,id=drive0,bw=2M/500,bw_burst=1M,ops=100",
            "--net",
            "tap=tap0,offload=off,tx_ops=1000/10,rx_bw=64K",
            "--rng=bw=1K",
            "--vsock",
            "cid=5,socket=/v.sock",
            "--transport",
            "pci",
            "--console",
            "virtio",
        ])
        .unwrap();
        let c = vmm::machine_config(&s, vmm::Accel::Emu).unwrap();
        assert_eq!((c.vcpus, c.memory), (2, 512 << 20));
        assert_eq!(c.cmdline, "console=hvc0 reboot=k panic=-1");
        assert_eq!(c.disks.len(), 2);
        assert_eq!(c.disks[0].id.as_deref(), Some("drive1"));
        assert!(!c.disks[0].read_only && c.disks[1].read_only);
        assert_eq!(c.nets[0].mac, Some([6, 0, 0, 0, 0, 1]));
        assert!(!c.nets[0].offload);
        assert!(c.rng);
        // The rate limiters, through the spec.
        assert_eq!(c.disks[0].rate_limiter, Default::default());
        let disk = c.disks[1].rate_limiter;
        let bw = disk.bandwidth.unwrap();
        assert_eq!(
            (bw.size, bw.one_time_burst, bw.refill_time_ms),
            (2 << 20, 1 << 20, 500)
        );
        assert_eq!(disk.ops.unwrap().size, 100);
        assert_eq!(c.nets[0].tx_rate_limiter.ops.unwrap().refill_time_ms, 10);
        assert_eq!(c.nets[0].rx_rate_limiter.bandwidth.unwrap().size, 64 << 10);
        assert_eq!(c.rng_rate_limiter.bandwidth.unwrap().size, 1024);
        assert_eq!(
            s.drives[1]
                .rate_limiter
                .as_ref()
                .unwrap()
                .ops
                .as_ref()
                .unwrap()
                .refill_time,
            1000
        );
        assert_eq!(c.vsock.unwrap().cid, 5);
        assert_eq!(c.transport, vmm::VirtioTransport::Pci);
        assert_eq!(c.console_device, vmm::ConsoleDevice::Virtio);
        // The spec survives JSON, as GET /vm/config and --config-file use it.
        let again: VmSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn memory_is_whole_mib() {
        assert!(spec(&["--memory", "1000K"]).is_err());
        assert!(spec(&["--memory", "65536K"]).is_ok());
    }
}
