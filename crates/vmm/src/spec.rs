//! From the one VM description ([`api::VmSpec`]) to a [`MachineConfig`]:
//! the only place where a front end's description becomes a machine.

use std::path::PathBuf;
use std::sync::Arc;

use api::spec::{self, BootProtocol, Console, SpecError, Transport, VmSpec};
use arch::boot::BootProtocol as ArchBootProtocol;

use crate::config::{
    ConsoleDevice, ConsoleOutput, DiskConfig, MachineConfig, MmdsAttach, NetConfig,
    VirtioTransport, VsockConfig,
};
use crate::Accel;

#[derive(Debug, thiserror::Error)]
pub enum SpecConfigError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("no boot source: configure the kernel first (PUT /boot-source, or \"boot-source\" in the configuration file)")]
    NoBootSource,
    #[error("bad CPU model")]
    Cpu(#[source] arch::cpu_model::CpuModelError),
    #[error("cannot open the serial output {}", path.display())]
    SerialOut {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The machine `spec` describes, on accelerator `accel`. Opens the serial
/// output file when the spec names one; everything else is opened when the
/// machine is built.
pub fn machine_config(spec: &VmSpec, accel: Accel) -> Result<MachineConfig, SpecConfigError> {
    spec.validate()?;
    let boot = spec
        .boot_source
        .as_ref()
        .ok_or(SpecConfigError::NoBootSource)?;
    let ext = &spec.ferrovisor;
    let disks = spec
        .drives_in_guest_order()
        .map(|d| DiskConfig {
            // validate() made sure every drive has a path.
            path: PathBuf::from(d.path_on_host.clone().unwrap_or_default()),
            read_only: d.is_read_only.unwrap_or(false),
            id: Some(spec::drive_serial(&d.drive_id)),
        })
        .collect();
    let nets = spec
        .network_interfaces
        .iter()
        .map(|n| {
            Ok(NetConfig {
                tap: n.host_dev_name.clone(),
                mac: n.guest_mac.as_deref().map(spec::parse_mac).transpose()?,
                offload: !ext.offload_off.contains(&n.iface_id),
                mmds: spec
                    .mmds_config
                    .as_ref()
                    .is_some_and(|m| m.network_interfaces.contains(&n.iface_id)),
            })
        })
        .collect::<Result<Vec<_>, SpecError>>()?;
    let console = match spec
        .serial
        .as_ref()
        .and_then(|s| s.serial_out_path.as_ref())
    {
        None => ConsoleOutput::Stdout,
        Some(path) => {
            // Not blocking: a FIFO without a reader is an error, not a
            // hung start.
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(|source| SpecConfigError::SerialOut {
                    path: path.into(),
                    source,
                })?;
            ConsoleOutput::File(Arc::new(file))
        }
    };
    Ok(MachineConfig {
        accel,
        memory: spec.machine_config.mem_size_mib << 20,
        vcpus: spec.machine_config.vcpu_count,
        kernel: PathBuf::from(&boot.kernel_image_path),
        initrd: boot.initrd_path.as_ref().map(PathBuf::from),
        cmdline: spec.kernel_cmdline(),
        boot_protocol: match ext.boot_protocol {
            BootProtocol::Auto => ArchBootProtocol::Auto,
            BootProtocol::Linux => ArchBootProtocol::Linux,
            BootProtocol::Bare => ArchBootProtocol::Bare,
            BootProtocol::Multiboot => ArchBootProtocol::Multiboot,
        },
        console,
        console_input: true,
        console_device: match ext.console {
            Console::Serial => ConsoleDevice::Serial,
            Console::Virtio => ConsoleDevice::Virtio,
        },
        disks,
        rng: spec.entropy.is_some(),
        transport: match ext.transport {
            Transport::Mmio => VirtioTransport::Mmio,
            Transport::Pci => VirtioTransport::Pci,
        },
        nets,
        vsock: spec.vsock.as_ref().map(|v| VsockConfig {
            cid: v.guest_cid.into(),
            socket: PathBuf::from(&v.uds_path),
        }),
        cpu: ext
            .cpu
            .as_deref()
            .unwrap_or("max")
            .parse()
            .map_err(SpecConfigError::Cpu)?,
        pc_testdev: ext.pc_testdev,
        pit: !ext.no_pit,
        mmds: spec.mmds_config.as_ref().map(mmds_attach).transpose()?,
    })
}

/// The MMDS of `m`, with an empty store of the default size limit (a
/// front end that serves `/mmds` puts its own in `shared`).
fn mmds_attach(m: &api::schema::MmdsConfig) -> Result<MmdsAttach, SpecError> {
    Ok(MmdsAttach {
        shared: mmds::Mmds::shared(mmds::store::DEFAULT_LIMIT),
        config: mmds::StackConfig {
            ipv4: spec::mmds_ipv4(m)?,
            service: mmds::ServiceConfig {
                version: match m.version {
                    api::schema::MmdsVersion::V1 => mmds::Version::V1,
                    api::schema::MmdsVersion::V2 => mmds::Version::V2,
                },
                imds_compat: m.imds_compat,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_firecracker_file_becomes_a_machine() {
        let spec: VmSpec = serde_json::from_str(
            r#"{
              "boot-source": {"kernel_image_path": "/k", "initrd_path": "/i", "boot_args": "console=ttyS0"},
              "machine-config": {"vcpu_count": 2, "mem_size_mib": 512},
              "drives": [
                {"drive_id": "data", "path_on_host": "/d", "is_root_device": false, "is_read_only": true},
                {"drive_id": "rootfs", "path_on_host": "/r", "is_root_device": true}
              ],
              "network-interfaces": [
                {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:00:00:00:09"},
                {"iface_id": "eth1", "host_dev_name": "tap1"}
              ],
              "vsock": {"guest_cid": 3, "uds_path": "/v.sock"},
              "entropy": {},
              "mmds-config": {"network_interfaces": ["eth1"], "version": "V2", "ipv4_address": "169.254.170.2"},
              "ferrovisor": {"transport": "pci", "boot_protocol": "linux", "console": "virtio",
                             "offload_off": ["eth1"]}
            }"#,
        )
        .unwrap();
        let c = machine_config(&spec, Accel::Emu).unwrap();
        assert_eq!((c.vcpus, c.memory), (2, 512 << 20));
        assert_eq!(c.kernel, PathBuf::from("/k"));
        assert_eq!(c.initrd, Some(PathBuf::from("/i")));
        assert_eq!(c.cmdline, "console=ttyS0 root=/dev/vda rw");
        let disks: Vec<_> = c
            .disks
            .iter()
            .map(|d| {
                (
                    d.path.to_str().unwrap(),
                    d.read_only,
                    d.id.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(disks, [("/r", false, "rootfs"), ("/d", true, "data")]);
        assert_eq!(c.nets[0].mac, Some([6, 0, 0, 0, 0, 9]));
        assert!(c.nets[0].offload && !c.nets[1].offload);
        assert!(!c.nets[0].mmds && c.nets[1].mmds);
        let m = c.mmds.as_ref().unwrap().config;
        assert_eq!(m.ipv4, std::net::Ipv4Addr::new(169, 254, 170, 2));
        assert_eq!(m.service.version, mmds::Version::V2);
        assert_eq!(c.vsock.as_ref().unwrap().cid, 3);
        assert!(c.rng);
        assert_eq!(c.transport, VirtioTransport::Pci);
        assert_eq!(c.boot_protocol, ArchBootProtocol::Linux);
        assert_eq!(c.console_device, ConsoleDevice::Virtio);
    }

    #[test]
    fn a_spec_needs_a_kernel_and_valid_parts() {
        let e = machine_config(&VmSpec::default(), Accel::Emu).unwrap_err();
        assert!(matches!(e, SpecConfigError::NoBootSource));
        let spec: VmSpec = serde_json::from_str(
            r#"{"boot-source": {"kernel_image_path": "/k"}, "machine-config": {"vcpu_count": 0, "mem_size_mib": 64}}"#,
        )
        .unwrap();
        let e = machine_config(&spec, Accel::Emu).unwrap_err();
        assert!(e.to_string().contains("vcpu_count 0"), "{e}");
    }

    #[test]
    fn the_spec_limits_are_the_machines() {
        assert_eq!(spec::MAX_VCPUS, crate::config::MAX_VCPUS);
        assert_eq!(spec::MIN_MEM_MIB << 20, crate::config::MIN_MEMORY);
    }
}
