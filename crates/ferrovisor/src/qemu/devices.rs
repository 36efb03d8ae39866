//! The device options: -drive, -netdev, -chardev, -object, -serial and
//! -device, gathered into what the VM description has.

use api::schema::{Drive, EntropyDevice, NetworkInterface, RateLimiter, TokenBucket, Vsock};
use api::spec::Transport;

use super::props::Props;
use super::QemuError;

/// A device `-device` accepts: its name, its bus (as `-device help`
/// prints it), its properties beside id= and bus=.
pub struct DeviceKind {
    pub name: &'static str,
    pub bus: &'static str,
    pub props: &'static [&'static str],
}

pub const DEVICES: &[DeviceKind] = &[
    DeviceKind {
        name: "isa-debug-exit",
        bus: "ISA",
        props: &["iobase=0xf4", "iosize=0x4"],
    },
    DeviceKind {
        name: "pc-testdev",
        bus: "ISA",
        props: &[],
    },
    DeviceKind {
        name: "virtio-blk-device",
        bus: "virtio-bus",
        props: &["drive", "serial"],
    },
    DeviceKind {
        name: "virtio-blk-pci",
        bus: "PCI",
        props: &["drive", "serial"],
    },
    DeviceKind {
        name: "virtio-net-device",
        bus: "virtio-bus",
        props: &["netdev", "mac"],
    },
    DeviceKind {
        name: "virtio-net-pci",
        bus: "PCI",
        props: &["netdev", "mac"],
    },
    DeviceKind {
        name: "virtio-rng-device",
        bus: "virtio-bus",
        props: &["rng", "max-bytes", "period"],
    },
    DeviceKind {
        name: "virtio-rng-pci",
        bus: "PCI",
        props: &["rng", "max-bytes", "period"],
    },
    DeviceKind {
        name: "vhost-vsock-device",
        bus: "virtio-bus",
        props: &["guest-cid", "uds-path"],
    },
    DeviceKind {
        name: "vhost-vsock-pci",
        bus: "PCI",
        props: &["guest-cid", "uds-path"],
    },
    DeviceKind {
        name: "virtio-serial-device",
        bus: "virtio-bus",
        props: &[],
    },
    DeviceKind {
        name: "virtio-serial-pci",
        bus: "PCI",
        props: &[],
    },
    DeviceKind {
        name: "virtconsole",
        bus: "virtio-serial-bus",
        props: &["chardev"],
    },
];

/// Where a console's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stdio,
    File(String),
    Null,
}

/// A chardev: a console's output, or a listening Unix socket (only a
/// QMP monitor can use one: `-mon chardev=ID,mode=control`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Chardev {
    Sink(Sink),
    Socket(String),
}

/// What the device options add up to.
#[derive(Debug, Default)]
pub struct Devices {
    chardevs: Vec<(String, Chardev)>,
    /// `-object rng-random`/`rng-builtin` ids.
    rngs: Vec<String>,
    /// `-netdev tap`: id → TAP name.
    netdevs: Vec<(String, String)>,
    /// `-drive if=none`: id → the drive, until a device takes it.
    backends: Vec<(String, Option<Drive>)>,
    /// `-drive`'s format and cache: (backend id, how its image opens).
    backend_images: Vec<(String, api::spec::DriveImage)>,
    pub drives: Vec<Drive>,
    /// How the images of `drives` open (by drive id).
    pub drive_images: Vec<api::spec::DriveImage>,
    pub nets: Vec<NetworkInterface>,
    pub entropy: Option<EntropyDevice>,
    pub vsock: Option<Vsock>,
    pub pc_testdev: bool,
    /// A virtio-serial controller, and its virtconsole's output.
    virtio_serial: bool,
    pub virtconsole: Option<Sink>,
    /// -serial's output (None: no -serial given; Some(None): none).
    pub serial: Option<Option<Sink>>,
}

fn on_transport(name: &str, transport: Transport, machine: &str) -> Result<(), QemuError> {
    let pci = name.ends_with("-pci");
    let mmio = name.ends_with("-device");
    match transport {
        Transport::Mmio if pci => Err(QemuError::new(format!(
            "-device {name}: the {machine} machine has no PCI bus (its virtio devices are \
             virtio-mmio: use {}-device)",
            name.trim_end_matches("-pci")
        ))),
        Transport::Pci if mmio => Err(QemuError::new(format!(
            "-device {name}: No 'virtio-bus' bus found: the {machine} machine's virtio devices \
             are PCI (use {}-pci, or -machine microvm)",
            name.trim_end_matches("-device")
        ))),
        _ => Ok(()),
    }
}

impl Devices {
    /// `-chardev stdio|file|null,id=ID[,path=PATH]`, or
    /// `socket,id=ID,path=PATH,server=on,wait=off` (for `-mon`).
    pub fn chardev(&mut self, mut p: Props) -> Result<(), QemuError> {
        let backend = p.require("backend", "-chardev")?;
        let id = p.require("id", &format!("-chardev {backend}"))?;
        let chardev = match backend.as_str() {
            "stdio" => {
                // signal=on (the default) is what Ferrovisor's console does
                // with Ctrl-C: the process takes it.
                if p.take_bool("signal")? == Some(false) {
                    return Err(QemuError::new(
                        "-chardev stdio,signal=off: not supported (Ctrl-C stops Ferrovisor; \
                         Ctrl-A x ends the VM)"
                            .to_string(),
                    ));
                }
                Chardev::Sink(Sink::Stdio)
            }
            "file" => Chardev::Sink(Sink::File(p.require("path", "-chardev file")?)),
            "null" => Chardev::Sink(Sink::Null),
            "socket" => {
                let path = p.require("path", "-chardev socket")?;
                let server = p.take_bool("server")?.unwrap_or(false);
                let wait = p.take_bool("wait")?.unwrap_or(true);
                if !server || wait {
                    return Err(QemuError::new(format!(
                        "-chardev socket,id={id}: Ferrovisor listens without waiting \
                         (server=on,wait=off)"
                    )));
                }
                Chardev::Socket(path)
            }
            other => {
                return Err(QemuError::new(format!(
                    "-chardev {other}: not supported by Ferrovisor (stdio, file, null and, for \
                     -mon, socket are)"
                )))
            }
        };
        p.finish(&format!("-chardev {backend}"))?;
        if self.chardevs.iter().any(|(i, _)| *i == id) {
            return Err(QemuError::new(format!("-chardev: duplicate ID '{id}'")));
        }
        self.chardevs.push((id, chardev));
        Ok(())
    }

    fn chardev_sink(&self, id: &str, user: &str) -> Result<Sink, QemuError> {
        match self.chardevs.iter().find(|(i, _)| i == id) {
            Some((_, Chardev::Sink(s))) => Ok(s.clone()),
            Some((_, Chardev::Socket(_))) => Err(QemuError::new(format!(
                "{user}: chardev '{id}' is a socket: Ferrovisor's consoles write to stdio, a \
                 file or null"
            ))),
            None => Err(QemuError::new(format!("{user}: chardev '{id}' not found"))),
        }
    }

    /// `-mon chardev=ID,mode=control[,pretty=off]`: QMP on the socket
    /// chardev ID; its path.
    pub fn monitor(&self, mut p: Props) -> Result<String, QemuError> {
        let id = p.require("chardev", "-mon")?;
        let mode = p.take("mode").unwrap_or_else(|| "readline".into());
        if mode != "control" {
            return Err(QemuError::new(format!(
                "-mon mode={mode}: Ferrovisor has no human monitor (mode=control is QMP)"
            )));
        }
        if p.take_bool("pretty")? == Some(true) {
            return Err(QemuError::new(
                "-mon pretty=on: not supported by Ferrovisor".to_string(),
            ));
        }
        p.finish("-mon")?;
        match self.chardevs.iter().find(|(i, _)| *i == id) {
            Some((_, Chardev::Socket(path))) => Ok(path.clone()),
            Some(_) => Err(QemuError::new(format!(
                "-mon chardev={id}: QMP needs a socket chardev (server=on,wait=off)"
            ))),
            None => Err(QemuError::new(format!("-mon: chardev '{id}' not found"))),
        }
    }

    /// `-serial stdio|mon:stdio|file:PATH|null|none|chardev:ID`: COM1.
    pub fn serial(&mut self, value: &str) -> Result<(), QemuError> {
        if self.serial.is_some() {
            return Err(QemuError::new(format!(
                "-serial {value}: a second serial port is not supported by Ferrovisor (COM1 only)"
            )));
        }
        let sink = match value {
            // mon:stdio multiplexes QEMU's monitor; Ferrovisor has no
            // human monitor, so it is stdio (Ctrl-A x still ends the VM).
            "stdio" | "mon:stdio" => Some(Sink::Stdio),
            "null" => Some(Sink::Null),
            "none" => None,
            v => match (v.strip_prefix("file:"), v.strip_prefix("chardev:")) {
                (Some(path), _) if !path.is_empty() => Some(Sink::File(path.to_string())),
                (_, Some(id)) => Some(self.chardev_sink(id, "-serial")?),
                _ => {
                    return Err(QemuError::new(format!(
                        "-serial {v}: not supported by Ferrovisor (stdio, mon:stdio, file:PATH, \
                         null, none and chardev:ID are)"
                    )))
                }
            },
        };
        self.serial = Some(sink);
        Ok(())
    }

    /// `-object rng-random,id=ID[,filename=/dev/urandom]` or
    /// `rng-builtin,id=ID`: a virtio-rng backend (Ferrovisor's reads the
    /// host's /dev/urandom).
    pub fn object(&mut self, mut p: Props) -> Result<(), QemuError> {
        let kind = p.require("qom-type", "-object")?;
        match kind.as_str() {
            "rng-random" | "rng-builtin" => {
                let id = p.require("id", &format!("-object {kind}"))?;
                if kind == "rng-random" {
                    if let Some(f) = p.take("filename") {
                        if f != "/dev/urandom" {
                            return Err(QemuError::new(format!(
                                "-object rng-random,filename={f}: Ferrovisor's entropy comes \
                                 from /dev/urandom only"
                            )));
                        }
                    }
                }
                p.finish(&format!("-object {kind}"))?;
                self.rngs.push(id);
                Ok(())
            }
            other => Err(QemuError::new(format!(
                "-object {other}: not supported by Ferrovisor (rng-random and rng-builtin are)"
            ))),
        }
    }

    /// `-netdev tap,id=ID,ifname=TAP[,script=no][,downscript=no]`.
    pub fn netdev(&mut self, mut p: Props) -> Result<(), QemuError> {
        let kind = p.require("type", "-netdev")?;
        if kind != "tap" {
            return Err(QemuError::new(format!(
                "-netdev {kind}: not supported by Ferrovisor (tap is)"
            )));
        }
        let id = p.require("id", "-netdev tap")?;
        let ifname = p.take("ifname").ok_or_else(|| {
            QemuError::new(format!(
                "-netdev tap,id={id}: ifname= is required: Ferrovisor attaches to an existing \
                 TAP interface and does not create one"
            ))
        })?;
        for key in ["script", "downscript"] {
            if let Some(v) = p.take(key) {
                if v != "no" {
                    return Err(QemuError::new(format!(
                        "-netdev tap,{key}={v}: Ferrovisor runs no scripts (use {key}=no and \
                         configure the TAP beforehand)"
                    )));
                }
            }
        }
        if p.take_bool("vhost")? == Some(true) {
            return Err(QemuError::new(
                "-netdev tap,vhost=on: vhost-net is not supported by Ferrovisor".to_string(),
            ));
        }
        p.finish("-netdev tap")?;
        if self.netdevs.iter().any(|(i, _)| *i == id) {
            return Err(QemuError::new(format!("-netdev: duplicate ID '{id}'")));
        }
        self.netdevs.push((id, ifname));
        Ok(())
    }

    /// `-drive file=PATH[,if=virtio|none][,format=raw|qcow2][,readonly=on]
    /// [,id=ID][,cache=writeback|writethrough|none|directsync|unsafe]
    /// [,media=disk]`.
    pub fn drive(&mut self, mut p: Props, virtio_count: &mut usize) -> Result<(), QemuError> {
        let file = p.require("file", "-drive")?;
        let iface = p.take("if");
        let id = p.take("id");
        let format = p.take("format");
        let read_only = p.take_bool("readonly")?.unwrap_or(false);
        let cache = p.take("cache");
        if let Some(m) = p.take("media") {
            if m != "disk" {
                return Err(QemuError::new(format!(
                    "-drive media={m}: not supported by Ferrovisor (disk is)"
                )));
            }
        }
        p.finish("-drive")?;
        // QEMU probes when format= is missing; Ferrovisor serves a raw
        // image then, and refuses a file with qcow2's magic rather than
        // guess (a guest can write the magic into a raw disk).
        let image_format = match format.as_deref() {
            Some("raw") => "raw",
            Some("qcow2") => "qcow2",
            Some(f) => {
                return Err(QemuError::new(format!(
                    "-drive format={f}: not supported by Ferrovisor (raw and qcow2 are)"
                )))
            }
            None => {
                let mut magic = [0u8; 4];
                let is_qcow2 = std::fs::File::open(&file)
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                    .is_ok()
                    && magic == qcow2::MAGIC;
                if is_qcow2 {
                    return Err(QemuError::new(format!(
                        "-drive file={file}: a qcow2 image: say format=qcow2 (Ferrovisor does not probe formats)"
                    )));
                }
                "raw"
            }
        };
        let cache_mode = cache.as_deref().unwrap_or("writeback");
        if virtio::blk_image::CacheMode::parse(cache_mode).is_none() {
            return Err(QemuError::new(format!(
                "-drive cache={cache_mode}: not supported (use {})",
                virtio::blk_image::CacheMode::NAMES
            )));
        }
        let cache_type = match cache_mode {
            "unsafe" => api::schema::CacheType::Unsafe,
            _ => api::schema::CacheType::Writeback,
        };
        let image = |drive_id: String| api::spec::DriveImage {
            drive_id,
            format: Some(image_format.to_string()),
            cache: Some(cache_mode.to_string()),
        };
        let drive = |drive_id: String| Drive {
            drive_id,
            partuuid: None,
            is_root_device: false,
            cache_type,
            is_read_only: Some(read_only),
            path_on_host: Some(file.clone()),
            rate_limiter: None,
            io_engine: None,
            socket: None,
        };
        match iface.as_deref() {
            None | Some("virtio") => {
                if iface.is_none() {
                    return Err(QemuError::new(format!(
                        "-drive file={file}: the default interface (IDE) is not supported by \
                         Ferrovisor: add if=virtio, or if=none and a -device virtio-blk-*"
                    )));
                }
                // QEMU's name for the n-th if=virtio drive.
                let name = id.unwrap_or_else(|| format!("virtio{}", *virtio_count));
                *virtio_count += 1;
                self.drive_images.push(image(name.clone()));
                self.drives.push(drive(name));
            }
            Some("none") => {
                let id = id.ok_or_else(|| {
                    QemuError::new(format!("-drive file={file},if=none: needs id="))
                })?;
                if self.backends.iter().any(|(i, _)| *i == id) {
                    return Err(QemuError::new(format!("-drive: duplicate ID '{id}'")));
                }
                let d = drive(id.clone());
                self.backend_images.push((id.clone(), image(id.clone())));
                self.backends.push((id, Some(d)));
            }
            Some(other) => {
                return Err(QemuError::new(format!(
                    "-drive if={other}: not supported by Ferrovisor (virtio and none are)"
                )))
            }
        }
        Ok(())
    }

    /// One `-device`, on a machine whose virtio transport is `transport`.
    pub fn device(
        &mut self,
        mut p: Props,
        transport: Transport,
        machine: &str,
    ) -> Result<(), QemuError> {
        let name = p.require("driver", "-device")?;
        let Some(kind) = DEVICES.iter().find(|d| d.name == name) else {
            return Err(QemuError::new(format!(
                "-device {name}: not supported by Ferrovisor (use -device help)"
            )));
        };
        let what = format!("-device {name}");
        // Where it goes: Ferrovisor places devices itself.
        p.take("id");
        if let Some(bus) = p.take("bus") {
            if !matches!(bus.as_str(), "pci.0" | "pcie.0" | "virtio-serial0.0") {
                return Err(QemuError::new(format!(
                    "{what},bus={bus}: Ferrovisor places devices on bus 0 itself"
                )));
            }
        }
        if kind.bus == "PCI" || kind.bus == "virtio-bus" {
            on_transport(&name, transport, machine)?;
        }
        // romfile= (empty): no option ROM, which is what Ferrovisor loads.
        if let Some(rom) = p.take("romfile") {
            if !rom.is_empty() {
                return Err(QemuError::new(format!(
                    "{what},romfile={rom}: Ferrovisor loads no option ROMs"
                )));
            }
        }
        match name.trim_end_matches("-pci").trim_end_matches("-device") {
            "isa-debug-exit" => {
                // Every Ferrovisor machine has it at QEMU's usual place.
                let base = p.take_u64("iobase")?.unwrap_or(0x501);
                let size = p.take_u64("iosize")?.unwrap_or(2);
                if (base, size) != (0xf4, 4) {
                    return Err(QemuError::new(format!(
                        "{what},iobase={base:#x},iosize={size:#x}: Ferrovisor's debug-exit port \
                         is iobase=0xf4,iosize=0x4"
                    )));
                }
            }
            "pc-testdev" => self.pc_testdev = true,
            "virtio-blk" => {
                let id = p.require("drive", &what)?;
                let serial = p.take("serial");
                let slot = self
                    .backends
                    .iter_mut()
                    .find(|(i, _)| *i == id)
                    .ok_or_else(|| {
                        QemuError::new(format!("{what},drive={id}: no -drive if=none,id={id}"))
                    })?;
                let mut drive = slot.1.take().ok_or_else(|| {
                    QemuError::new(format!("{what},drive={id}: the drive is in use already"))
                })?;
                // The guest reads the drive id as the disk's serial.
                if let Some(s) = serial {
                    drive.drive_id = s;
                }
                if let Some((_, image)) = self.backend_images.iter().find(|(i, _)| *i == id) {
                    self.drive_images.push(api::spec::DriveImage {
                        drive_id: drive.drive_id.clone(),
                        ..image.clone()
                    });
                }
                self.drives.push(drive);
            }
            "virtio-net" => {
                let id = p.require("netdev", &what)?;
                let mac = p.take("mac");
                let tap = self
                    .netdevs
                    .iter()
                    .find(|(i, _)| *i == id)
                    .map(|(_, t)| t.clone())
                    .ok_or_else(|| {
                        QemuError::new(format!("{what},netdev={id}: no -netdev with id={id}"))
                    })?;
                if self.nets.iter().any(|n| n.host_dev_name == tap) {
                    return Err(QemuError::new(format!(
                        "{what},netdev={id}: the netdev is in use already"
                    )));
                }
                self.nets.push(NetworkInterface {
                    iface_id: format!("net{}", self.nets.len()),
                    host_dev_name: tap,
                    guest_mac: mac,
                    mtu: None,
                    rx_rate_limiter: None,
                    tx_rate_limiter: None,
                });
            }
            "virtio-rng" => {
                if self.entropy.is_some() {
                    return Err(QemuError::new(format!(
                        "{what}: a second entropy device is not supported by Ferrovisor"
                    )));
                }
                if let Some(rng) = p.take("rng") {
                    if !self.rngs.contains(&rng) {
                        return Err(QemuError::new(format!(
                            "{what},rng={rng}: no -object rng-random with id={rng}"
                        )));
                    }
                }
                // QEMU's rate limit: max-bytes per period milliseconds.
                let bytes = p.take_u64("max-bytes")?;
                let period = p.take_u64("period")?;
                let rate_limiter = bytes.map(|size| RateLimiter {
                    bandwidth: Some(TokenBucket {
                        size,
                        one_time_burst: None,
                        refill_time: period.unwrap_or(1000),
                    }),
                    ops: None,
                });
                if bytes.is_none() && period.is_some() {
                    return Err(QemuError::new(format!("{what},period=: needs max-bytes=")));
                }
                self.entropy = Some(EntropyDevice { rate_limiter });
            }
            "vhost-vsock" => {
                if self.vsock.is_some() {
                    return Err(QemuError::new(format!(
                        "{what}: a second vsock device is not supported by Ferrovisor"
                    )));
                }
                let cid = p.require("guest-cid", &what)?;
                let cid: u32 = super::props::parse_u64(&cid)
                    .and_then(|c| u32::try_from(c).ok())
                    .ok_or_else(|| QemuError::new(format!("{what},guest-cid={cid}: not a CID")))?;
                // The host side is a Unix socket (Firecracker's vsock
                // model), not the host kernel's AF_VSOCK.
                let uds = p
                    .take("uds-path")
                    .unwrap_or_else(|| format!("/tmp/ferrovisor-vsock-{cid}.sock"));
                self.vsock = Some(Vsock {
                    guest_cid: cid,
                    uds_path: uds,
                    vsock_id: None,
                });
            }
            "virtio-serial" => {
                if self.virtio_serial {
                    return Err(QemuError::new(format!(
                        "{what}: a second virtio-serial controller is not supported by Ferrovisor"
                    )));
                }
                self.virtio_serial = true;
            }
            "virtconsole" => {
                if !self.virtio_serial {
                    return Err(QemuError::new(format!(
                        "{what}: No 'virtio-serial-bus' bus found (add -device virtio-serial-*)"
                    )));
                }
                if self.virtconsole.is_some() {
                    return Err(QemuError::new(format!(
                        "{what}: a second virtconsole is not supported by Ferrovisor"
                    )));
                }
                let id = p.require("chardev", &what)?;
                self.virtconsole = Some(self.chardev_sink(&id, &what)?);
            }
            _ => unreachable_device(&name)?,
        }
        p.finish(&what)
    }

    /// Checks what needs every option seen: every `if=none` drive used,
    /// a virtio-serial controller with its console.
    pub fn finish(&self) -> Result<(), QemuError> {
        if let Some((id, _)) = self.backends.iter().find(|(_, d)| d.is_some()) {
            return Err(QemuError::new(format!(
                "-drive id={id},if=none: no device uses it (add -device virtio-blk-*,drive={id})"
            )));
        }
        if self.virtio_serial && self.virtconsole.is_none() {
            return Err(QemuError::new(
                "-device virtio-serial-*: without a virtconsole port (Ferrovisor's virtio \
                 console is one console port)"
                    .to_string(),
            ));
        }
        Ok(())
    }
}

/// A name in [`DEVICES`] without a branch above is a bug of this file.
fn unreachable_device(name: &str) -> Result<(), QemuError> {
    Err(QemuError::new(format!(
        "-device {name}: listed but not mapped (a Ferrovisor bug)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(d: &mut Devices, text: &str, t: Transport) -> Result<(), QemuError> {
        d.device(
            Props::parse("-device", text, Some("driver")).unwrap(),
            t,
            "pc",
        )
    }

    #[test]
    fn every_listed_device_is_mapped() {
        for kind in DEVICES {
            let mut d = Devices::default();
            let t = if kind.bus == "virtio-bus" {
                Transport::Mmio
            } else {
                Transport::Pci
            };
            let e = dev(&mut d, kind.name, t);
            if let Err(e) = e {
                assert!(!e.to_string().contains("a Ferrovisor bug"), "{e}");
            }
        }
    }

    #[test]
    fn drives_pair_with_devices() {
        let mut d = Devices::default();
        let mut n = 0;
        let p = |t| Props::parse("-drive", t, None).unwrap();
        d.drive(p("id=test,file=/t.img,format=raw,if=none"), &mut n)
            .unwrap();
        d.drive(p("file=/u.img,if=virtio,readonly=on"), &mut n)
            .unwrap();
        assert!(d.finish().is_err());
        dev(&mut d, "virtio-blk-device,drive=test", Transport::Mmio).unwrap();
        d.finish().unwrap();
        let ids: Vec<_> = d.drives.iter().map(|d| d.drive_id.as_str()).collect();
        assert_eq!(ids, ["virtio0", "test"]);
        assert_eq!(d.drives[0].is_read_only, Some(true));
        assert!(dev(&mut d, "virtio-blk-device,drive=test", Transport::Mmio).is_err());
        let e = d
            .drive(p("file=/q.img,format=qcow2,if=virtio"), &mut n)
            .unwrap_err();
        assert!(e.to_string().contains("qcow2 is not supported yet"), "{e}");
        assert!(d.drive(p("file=/x.img"), &mut n).is_err());
        assert!(d
            .drive(p("file=/x.img,if=virtio,cache=none"), &mut n)
            .is_err());
    }

    #[test]
    fn transports_must_match_the_machine() {
        let mut d = Devices::default();
        let e = dev(&mut d, "virtio-rng-pci", Transport::Mmio).unwrap_err();
        assert!(e.to_string().contains("virtio-rng-device"), "{e}");
        let e = dev(&mut d, "virtio-rng-device", Transport::Pci).unwrap_err();
        assert!(e.to_string().contains("virtio-rng-pci"), "{e}");
        dev(
            &mut d,
            "virtio-rng-pci,max-bytes=1024,period=100",
            Transport::Pci,
        )
        .unwrap();
        let b = d.entropy.as_ref().unwrap().rate_limiter.as_ref().unwrap();
        assert_eq!(b.bandwidth.as_ref().unwrap().refill_time, 100);
    }

    #[test]
    fn consoles_and_nets() {
        let mut d = Devices::default();
        let c = |t| Props::parse("-chardev", t, Some("backend")).unwrap();
        d.chardev(c("stdio,id=virtiocon0")).unwrap();
        assert!(dev(&mut d, "virtconsole,chardev=virtiocon0", Transport::Mmio).is_err());
        dev(&mut d, "virtio-serial-device", Transport::Mmio).unwrap();
        assert!(dev(&mut d, "virtconsole,chardev=nope", Transport::Mmio).is_err());
        dev(&mut d, "virtconsole,chardev=virtiocon0", Transport::Mmio).unwrap();
        assert_eq!(d.virtconsole, Some(Sink::Stdio));
        d.chardev(c("socket,id=mon0,path=/tmp/q.sock,server=on,wait=off"))
            .unwrap();
        assert!(d
            .chardev(c("socket,id=mon1,path=/tmp/r.sock,server=on"))
            .is_err());
        let m = |t| Props::parse("-mon", t, Some("chardev")).unwrap();
        assert_eq!(
            d.monitor(m("chardev=mon0,mode=control")).unwrap(),
            "/tmp/q.sock"
        );
        assert!(d.monitor(m("chardev=mon0")).is_err());
        assert!(d.monitor(m("chardev=virtiocon0,mode=control")).is_err());
        assert!(d.serial("chardev:mon0").is_err());
        d.serial("file:/tmp/s.log").unwrap();
        assert!(d.serial("stdio").is_err());
        let n = |t| Props::parse("-netdev", t, Some("type")).unwrap();
        assert!(d.netdev(n("tap,id=tap0,script=no,downscript=no")).is_err());
        assert!(d.netdev(n("user,id=u0")).is_err());
        d.netdev(n("tap,id=tap0,ifname=fvtap0,script=no,downscript=no"))
            .unwrap();
        dev(
            &mut d,
            "virtio-net-pci,netdev=tap0,mac=52:54:00:12:34:56",
            Transport::Pci,
        )
        .unwrap();
        assert_eq!(d.nets[0].host_dev_name, "fvtap0");
        assert!(dev(&mut d, "virtio-net-pci,netdev=tap0", Transport::Pci).is_err());
        assert!(dev(&mut d, "e1000,netdev=tap0", Transport::Pci).is_err());
        assert!(dev(
            &mut d,
            "isa-debug-exit,iobase=0x501,iosize=2",
            Transport::Pci
        )
        .is_err());
        dev(
            &mut d,
            "isa-debug-exit,iobase=0xf4,iosize=0x4",
            Transport::Pci,
        )
        .unwrap();
    }
}
