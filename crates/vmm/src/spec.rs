//! From the one VM description ([`api::VmSpec`]) to a [`MachineConfig`]:
//! the only place where a front end's description becomes a machine.

use std::path::PathBuf;
use std::sync::Arc;

use api::schema::{RateLimiter, TokenBucket};
use api::spec::{self, BootProtocol, Console, SpecError, Transport, VmSpec};
use arch::boot::BootProtocol as ArchBootProtocol;
use virtio::throttle::{BucketConfig, BucketUpdate, Limits, LimitsUpdate};

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
    #[error("bad cpu-config")]
    CpuTemplate(#[source] arch::cpu_template::TemplateError),
    #[error("cannot open the serial output {}", path.display())]
    SerialOut {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The format and cache mode `spec`'s extensions give drive `id`
/// (raw and writeback by default; validate() checked the names).
fn image_options(spec: &VmSpec, id: &str) -> virtio::blk_image::ImageOptions {
    use virtio::blk_image::{CacheMode, ImageFormat};
    let Some(i) = spec
        .ferrovisor
        .drive_images
        .iter()
        .find(|i| i.drive_id == id)
    else {
        return Default::default();
    };
    virtio::blk_image::ImageOptions {
        format: i
            .format
            .as_deref()
            .and_then(ImageFormat::parse)
            .unwrap_or_default(),
        cache: i
            .cache
            .as_deref()
            .and_then(CacheMode::parse)
            .unwrap_or_default(),
    }
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
            rate_limiter: limits(d.rate_limiter.as_ref()),
            image: image_options(spec, &d.drive_id),
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
                rx_rate_limiter: limits(n.rx_rate_limiter.as_ref()),
                tx_rate_limiter: limits(n.tx_rate_limiter.as_ref()),
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
        threads_per_core: if spec.machine_config.smt { 2 } else { 1 },
        kernel: PathBuf::from(&boot.kernel_image_path),
        initrd: boot.initrd_path.as_ref().map(PathBuf::from),
        cmdline: spec.kernel_cmdline(),
        boot_protocol: match ext.boot_protocol {
            BootProtocol::Auto => ArchBootProtocol::Auto,
            BootProtocol::Linux => ArchBootProtocol::Linux,
            BootProtocol::Bare => ArchBootProtocol::Bare,
            BootProtocol::Multiboot => ArchBootProtocol::Multiboot,
            BootProtocol::Pvh => ArchBootProtocol::Pvh,
        },
        console,
        console_input: true,
        console_device: match ext.console {
            Console::Serial => ConsoleDevice::Serial,
            Console::Virtio => ConsoleDevice::Virtio,
        },
        disks,
        rng: spec.entropy.is_some(),
        rng_rate_limiter: limits(spec.entropy.as_ref().and_then(|e| e.rate_limiter.as_ref())),
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
        cpu_template: spec
            .cpu_config
            .as_ref()
            .map(cpu_template)
            .transpose()
            .map_err(SpecConfigError::CpuTemplate)?
            .unwrap_or_default(),
        pc_testdev: ext.pc_testdev,
        pit: !ext.no_pit,
        pit_discards_lost_ticks: ext.pit_discards_lost_ticks,
        // A process option (Firecracker's --boot-timer), not the VM's.
        boot_timer: None,
        mmds: spec.mmds_config.as_ref().map(mmds_attach).transpose()?,
    })
}

/// The custom CPU template `c` describes: every number and bitmap
/// checked (`PUT /cpu-config` answers 400 with this error).
pub fn cpu_template(
    c: &api::schema::CpuConfig,
) -> Result<arch::cpu_template::CpuTemplate, arch::cpu_template::TemplateError> {
    use api::schema::CpuidRegister;
    use arch::cpu_model::Reg;
    use arch::cpu_template::{parse_kvm_capability, CpuTemplate, CpuidModifier, MsrModifier};
    let mut t = CpuTemplate::default();
    for item in &c.kvm_capabilities {
        match parse_kvm_capability(item)? {
            (cap, true) => t.kvm_required.push(cap),
            (cap, false) => t.kvm_removed.push(cap),
        }
    }
    for leaf in &c.cpuid_modifiers {
        for m in &leaf.modifiers {
            let reg = match m.register {
                CpuidRegister::Eax => Reg::Eax,
                CpuidRegister::Ebx => Reg::Ebx,
                CpuidRegister::Ecx => Reg::Ecx,
                CpuidRegister::Edx => Reg::Edx,
            };
            t.cpuid.push(CpuidModifier::parse(
                &leaf.leaf,
                &leaf.subleaf,
                leaf.flags,
                reg,
                &m.bitmap,
            )?);
        }
    }
    for m in &c.msr_modifiers {
        t.msrs.push(MsrModifier::parse(&m.addr, &m.bitmap)?);
    }
    Ok(t)
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

fn bucket(b: &TokenBucket) -> BucketConfig {
    BucketConfig {
        size: b.size,
        one_time_burst: b.one_time_burst.unwrap_or(0),
        refill_time_ms: b.refill_time,
    }
}

fn token_bucket(b: &BucketConfig) -> TokenBucket {
    TokenBucket {
        size: b.size,
        one_time_burst: (b.one_time_burst != 0).then_some(b.one_time_burst),
        refill_time: b.refill_time_ms,
    }
}

/// A device's limits from a spec's rate limiter (none when absent; a
/// bucket of size or refill time 0 limits nothing).
pub fn limits(limiter: Option<&RateLimiter>) -> Limits {
    limiter.map_or_else(Limits::default, |l| Limits {
        bandwidth: l.bandwidth.as_ref().map(bucket),
        ops: l.ops.as_ref().map(bucket),
    })
}

/// The spec's rate limiter of a device's limits (`ferrovisor run`'s
/// flags); None when it has no bucket.
pub fn rate_limiter(limits: &Limits) -> Option<RateLimiter> {
    (limits.bandwidth.is_some() || limits.ops.is_some()).then(|| RateLimiter {
        bandwidth: limits.bandwidth.as_ref().map(token_bucket),
        ops: limits.ops.as_ref().map(token_bucket),
    })
}

/// What a PATCH's rate limiter does to a running device's
/// ([`virtio::throttle::ThrottleHandle::update`]), as Firecracker does: a
/// bucket it names is replaced by a new, full one (removed when its size
/// or refill time is 0); a bucket it does not name is kept.
pub fn limits_update(limiter: &RateLimiter) -> LimitsUpdate {
    let update = |b: &Option<TokenBucket>| match b {
        Some(b) => BucketUpdate::Set(bucket(b)),
        None => BucketUpdate::Keep,
    };
    LimitsUpdate {
        bandwidth: update(&limiter.bandwidth),
        ops: update(&limiter.ops),
    }
}

/// A spec's rate limiter after a PATCH with `patch` (the buckets it names
/// replaced), for `GET /vm/config`.
pub fn patched_rate_limiter(
    current: Option<&RateLimiter>,
    patch: &RateLimiter,
) -> Option<RateLimiter> {
    let mut merged = current.cloned().unwrap_or_default();
    if patch.bandwidth.is_some() {
        merged.bandwidth = patch.bandwidth.clone();
    }
    if patch.ops.is_some() {
        merged.ops = patch.ops.clone();
    }
    (merged.bandwidth.is_some() || merged.ops.is_some()).then_some(merged)
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
        assert_eq!(c.disks[0].rate_limiter, Limits::default());
        assert_eq!(c.rng_rate_limiter, Limits::default());
    }

    #[test]
    fn rate_limiters_reach_the_devices_and_come_back() {
        let spec: VmSpec = serde_json::from_str(
            r#"{
              "boot-source": {"kernel_image_path": "/k"},
              "drives": [{"drive_id": "d", "path_on_host": "/d", "is_root_device": false,
                          "rate_limiter": {"bandwidth": {"size": 1048576, "one_time_burst": 4096, "refill_time": 1000},
                                           "ops": {"size": 0, "refill_time": 100}}}],
              "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                                      "tx_rate_limiter": {"ops": {"size": 100, "refill_time": 10}}}],
              "entropy": {"rate_limiter": {"bandwidth": {"size": 64, "refill_time": 1}}}
            }"#,
        )
        .unwrap();
        let c = machine_config(&spec, Accel::Emu).unwrap();
        let disk = c.disks[0].rate_limiter;
        assert_eq!(
            disk.bandwidth,
            Some(BucketConfig {
                size: 1 << 20,
                one_time_burst: 4096,
                refill_time_ms: 1000
            })
        );
        // Kept as given, and limits nothing (Firecracker's rule).
        assert!(disk.ops.is_some_and(|b| !b.limits()));
        assert_eq!(c.nets[0].rx_rate_limiter, Limits::default());
        assert_eq!(c.nets[0].tx_rate_limiter.ops.unwrap().size, 100);
        assert_eq!(c.rng_rate_limiter.bandwidth.unwrap().refill_time_ms, 1);
        // Back to the spec's form, as `ferrovisor run` builds it.
        assert_eq!(
            rate_limiter(&disk).as_ref(),
            spec.drives[0].rate_limiter.as_ref()
        );
        assert_eq!(rate_limiter(&Limits::default()), None);
    }

    #[test]
    fn a_patch_replaces_the_buckets_it_names() {
        let current: RateLimiter = serde_json::from_str(
            r#"{"bandwidth": {"size": 10, "refill_time": 100}, "ops": {"size": 1, "refill_time": 100}}"#,
        )
        .unwrap();
        let patch: RateLimiter =
            serde_json::from_str(r#"{"ops": {"size": 0, "refill_time": 0}}"#).unwrap();
        let update = limits_update(&patch);
        assert_eq!(update.bandwidth, BucketUpdate::Keep);
        assert!(matches!(update.ops, BucketUpdate::Set(b) if !b.limits()));
        let merged = patched_rate_limiter(Some(&current), &patch).unwrap();
        assert_eq!(merged.bandwidth, current.bandwidth);
        assert_eq!(merged.ops.unwrap().size, 0);
        assert_eq!(patched_rate_limiter(None, &RateLimiter::default()), None);
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
