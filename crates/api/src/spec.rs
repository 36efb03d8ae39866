//! [`VmSpec`]: the one description of a VM that every front end builds —
//! `ferrovisor run`'s flags, Firecracker's API requests and its
//! `--config-file` — and that `GET /vm/config` returns.
//!
//! Its JSON is Firecracker's configuration file (`boot-source`,
//! `machine-config`, `drives`, `network-interfaces`, `vsock`, `entropy`,
//! `logger`, `metrics`), plus `serial` and a `ferrovisor` object for what
//! Firecracker has no field for (boot protocol, virtio transport, console
//! device, offloads). Firecracker ignores both of those top-level keys, so
//! a file written from `GET /vm/config` also configures Firecracker.
//!
//! The checks here are the ones that need no host: ids, ranges, MAC
//! addresses, a single root device, unique TAPs. Files and TAPs are opened
//! by the VM side.

use serde::{Deserialize, Serialize};

use crate::schema::{
    BootSource, CpuTemplate, Drive, EntropyDevice, HugePages, Logger, MachineConfiguration,
    Metrics, MmdsConfig, NetworkInterface, RateLimiter, SerialDevice, Vsock,
};

/// The most vCPUs a machine has (the x86 machine's limit; Firecracker's
/// is 32).
pub const MAX_VCPUS: u32 = 254;
/// The least guest memory a machine boots with.
pub const MIN_MEM_MIB: u64 = 16;
/// The most guest memory a spec may ask for (1 TiB).
pub const MAX_MEM_MIB: u64 = 1 << 20;
/// The kernel command line when `boot-source` has no `boot_args`: the
/// microVM conventions Firecracker's users rely on (reboot through the
/// keyboard controller, panic reboots, no legacy UARTs probed, a
/// minimal i8042).
pub const DEFAULT_BOOT_ARGS: &str =
    "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd";
/// What the guest reads as a virtio-blk serial: at most this many bytes of
/// the drive id.
pub const DRIVE_SERIAL_BYTES: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("the {what} ID cannot be empty")]
    EmptyId { what: &'static str },
    #[error("the {what} ID {id:?} may only contain letters, digits and underscores")]
    BadId { what: &'static str, id: String },
    #[error("the drive ID {0:?} cannot contain '/' or control characters")]
    BadDriveId(String),
    #[error("the {what} ID in the path ({path:?}) differs from the one in the body ({body:?})")]
    IdMismatch {
        what: &'static str,
        path: String,
        body: String,
    },
    #[error("vcpu_count {0} is out of range: use 1 to {MAX_VCPUS} vCPUs")]
    VcpuCount(u32),
    #[error("mem_size_mib {0} is too small: a machine needs at least {MIN_MEM_MIB} MiB")]
    MemoryTooSmall(u64),
    #[error("mem_size_mib {0} is too large: at most {MAX_MEM_MIB} MiB")]
    MemoryTooLarge(u64),
    #[error("{0} is not supported by Ferrovisor yet")]
    Unsupported(String),
    #[error("vcpu_count {0} is invalid with smt: two threads per core need 1 or an even number of vCPUs")]
    SmtVcpuCount(u32),
    #[error("cpu_template {0} is not supported: Ferrovisor has no static CPU templates; give the CPUID and MSR modifiers as a custom template (PUT /cpu-config, or \"cpu-config\" in the configuration file)")]
    StaticCpuTemplate(String),
    #[error("{field} cannot be empty")]
    EmptyPath { field: &'static str },
    #[error("drive {0:?} has no path_on_host")]
    NoDrivePath(String),
    #[error("drive {new:?} cannot be a root device: drive {existing:?} already is")]
    SecondRoot { existing: String, new: String },
    #[error("host_dev_name {0:?} is not a network interface name (1 to 15 bytes, no '/', ':' or whitespace)")]
    BadTapName(String),
    #[error("network interfaces {first:?} and {second:?} both use the host device {tap:?}")]
    DuplicateTap {
        first: String,
        second: String,
        tap: String,
    },
    #[error("guest_mac {0:?} is not a MAC address (six hex bytes such as 06:00:00:00:00:01)")]
    BadMac(String),
    #[error("guest_mac {0} is a multicast or all-zero address")]
    NotUnicastMac(String),
    #[error("network interfaces {first:?} and {second:?} both use the MAC address {mac}")]
    DuplicateMac {
        first: String,
        second: String,
        mac: String,
    },
    #[error("mtu {0} is out of range: use 68 to 65535")]
    Mtu(u16),
    #[error("guest_cid {0} is reserved or too large: use 3 to 4294967294")]
    GuestCid(u32),
    #[error("ferrovisor.drive_images: {0}")]
    BadDriveImage(String),
    #[error("ferrovisor.offload_off names {0:?}, which is no network interface")]
    UnknownOffloadInterface(String),
    #[error("the rate limiter of {whose}: refill_time {ms} ms is too long (at most {} ms)", u64::MAX / 1_000_000)]
    RefillTime { whose: String, ms: u64 },
    #[error("The list of network interface IDs that allow forwarding MMDS requests is empty.")]
    MmdsNoInterfaces,
    #[error(
        "the MMDS network interface {0:?} is not configured (PUT /network-interfaces/{0} first)"
    )]
    MmdsUnknownInterface(String),
    #[error("the MMDS IPv4 address {0:?} is not a link-local address from 169.254.1.0 to 169.254.254.255")]
    MmdsAddress(String),
    #[error("{what} with ID {id:?} was configured twice")]
    DuplicateId { what: &'static str, id: String },
}

/// The boot protocol of the kernel (`ferrovisor.boot_protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootProtocol {
    #[default]
    Auto,
    Linux,
    Bare,
    Multiboot,
    Pvh,
}

/// How virtio devices attach (`ferrovisor.transport`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Mmio,
    Pci,
}

/// The guest's interactive console (`ferrovisor.console`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Console {
    #[default]
    Serial,
    Virtio,
}

/// What a VM has beyond Firecracker's schema.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extensions {
    #[serde(default, skip_serializing_if = "is_default")]
    pub boot_protocol: BootProtocol,
    #[serde(default, skip_serializing_if = "is_default")]
    pub transport: Transport,
    #[serde(default, skip_serializing_if = "is_default")]
    pub console: Console,
    /// Network interfaces (by `iface_id`) offered no checksum or
    /// segmentation offloads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offload_off: Vec<String>,
    /// The CPU model in QEMU's `-cpu` syntax (`max` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// QEMU's pc-testdev (kvm-unit-tests' test device).
    #[serde(default, skip_serializing_if = "is_default")]
    pub pc_testdev: bool,
    /// No i8254 PIT (QEMU's `-machine pit=off`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub no_pit: bool,
    /// The PIT drops the ticks a guest missed (QEMU's
    /// `-global kvm-pit.lost_tick_policy=discard`); KVM's default delivers
    /// them late.
    #[serde(default, skip_serializing_if = "is_default")]
    pub pit_discards_lost_ticks: bool,
    /// Image formats and cache modes of drives (raw and writeback when
    /// a drive is not named here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drive_images: Vec<DriveImage>,
}

/// How a drive's image is opened (`ferrovisor.drive_images`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveImage {
    pub drive_id: String,
    /// `raw`, `qcow2` or `auto` (qcow2 if the file has its magic: only
    /// for images no guest wrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// QEMU's cache modes: writeback, writethrough, none, directsync,
    /// unsafe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// A VM, as Firecracker's configuration file describes one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VmSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_source: Option<BootSource>,
    #[serde(default)]
    pub machine_config: MachineConfiguration,
    #[serde(default)]
    pub drives: Vec<Drive>,
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<Vsock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<EntropyDevice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<SerialDevice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub ferrovisor: Extensions,
    // Sections of Firecracker's file that come with later work: read only
    // so that validate() refuses them by name.
    #[serde(default, skip_serializing)]
    pub balloon: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_config: Option<crate::schema::CpuConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmds_config: Option<MmdsConfig>,
    #[serde(default, skip_serializing)]
    pub pmem: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub memory_hotplug: Option<serde_json::Value>,
}

/// Checks an API resource id: not empty; letters, digits, underscores.
pub fn check_id(what: &'static str, id: &str) -> Result<(), SpecError> {
    if id.is_empty() {
        return Err(SpecError::EmptyId { what });
    }
    if !id.chars().all(|c| c == '_' || c.is_alphanumeric()) {
        return Err(SpecError::BadId {
            what,
            id: id.to_string(),
        });
    }
    Ok(())
}

fn check_path_id(what: &'static str, path: &str, body: &str) -> Result<(), SpecError> {
    check_id(what, path)?;
    if path != body {
        return Err(SpecError::IdMismatch {
            what,
            path: path.to_string(),
            body: body.to_string(),
        });
    }
    Ok(())
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with '-').
pub fn parse_mac(text: &str) -> Result<[u8; 6], SpecError> {
    let bad = || SpecError::BadMac(text.to_string());
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for byte in mac.iter_mut() {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac[0] & 1 != 0 || mac == [0; 6] {
        return Err(SpecError::NotUnicastMac(text.to_string()));
    }
    Ok(mac)
}

/// Checks a rate limiter. Firecracker's rules: every count is unsigned
/// (serde refuses negatives), and a bucket of size 0 or refill time 0
/// limits nothing; Firecracker also disables, silently, a bucket whose
/// refill time in nanoseconds overflows 64 bits, which is refused here.
pub fn check_rate_limiter(limiter: &Option<RateLimiter>, whose: &str) -> Result<(), SpecError> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    for bucket in [&limiter.bandwidth, &limiter.ops].into_iter().flatten() {
        if bucket.refill_time.checked_mul(1_000_000).is_none() {
            return Err(SpecError::RefillTime {
                whose: whose.to_string(),
                ms: bucket.refill_time,
            });
        }
    }
    Ok(())
}

fn non_empty(field: &'static str, value: &str) -> Result<(), SpecError> {
    if value.is_empty() {
        return Err(SpecError::EmptyPath { field });
    }
    Ok(())
}

/// Checks a machine configuration on its own.
pub fn check_machine_config(m: &MachineConfiguration) -> Result<(), SpecError> {
    if m.vcpu_count == 0 || m.vcpu_count > MAX_VCPUS {
        return Err(SpecError::VcpuCount(m.vcpu_count));
    }
    if m.mem_size_mib < MIN_MEM_MIB {
        return Err(SpecError::MemoryTooSmall(m.mem_size_mib));
    }
    if m.mem_size_mib > MAX_MEM_MIB {
        return Err(SpecError::MemoryTooLarge(m.mem_size_mib));
    }
    if m.smt && m.vcpu_count > 1 && m.vcpu_count % 2 == 1 {
        return Err(SpecError::SmtVcpuCount(m.vcpu_count));
    }
    if m.cpu_template != CpuTemplate::None {
        return Err(SpecError::StaticCpuTemplate(format!(
            "{:?}",
            m.cpu_template
        )));
    }
    if m.huge_pages != HugePages::None {
        return Err(SpecError::Unsupported(format!(
            "huge_pages {:?}",
            m.huge_pages
        )));
    }
    Ok(())
}

/// Checks a boot source on its own.
pub fn check_boot_source(b: &BootSource) -> Result<(), SpecError> {
    non_empty("kernel_image_path", &b.kernel_image_path)?;
    if let Some(initrd) = &b.initrd_path {
        non_empty("initrd_path", initrd)?;
    }
    Ok(())
}

/// Checks the id of a drive in a spec. Firecracker's API takes letters,
/// digits and underscores (the path id of `PUT /drives/{id}` is held to
/// that); a spec also takes the ids `ferrovisor run --disk ...,id=` has
/// always taken: anything printable but '/'.
fn check_drive_id(id: &str) -> Result<(), SpecError> {
    if id.is_empty() {
        return Err(SpecError::EmptyId { what: "drive" });
    }
    if id.chars().any(|c| c == '/' || c.is_control()) {
        return Err(SpecError::BadDriveId(id.to_string()));
    }
    Ok(())
}

/// Checks a drive on its own.
pub fn check_drive(d: &Drive) -> Result<(), SpecError> {
    check_drive_id(&d.drive_id)?;
    if d.socket.is_some() {
        return Err(SpecError::Unsupported("vhost-user-block (socket)".into()));
    }
    match &d.path_on_host {
        None => return Err(SpecError::NoDrivePath(d.drive_id.clone())),
        Some(p) => non_empty("path_on_host", p)?,
    }
    check_rate_limiter(&d.rate_limiter, &format!("drive {:?}", d.drive_id))
}

/// Checks a network interface on its own.
pub fn check_network_interface(n: &NetworkInterface) -> Result<(), SpecError> {
    check_id("network interface", &n.iface_id)?;
    let tap = &n.host_dev_name;
    if tap.is_empty()
        || tap.len() > 15
        || tap.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(SpecError::BadTapName(tap.clone()));
    }
    if let Some(mac) = &n.guest_mac {
        parse_mac(mac)?;
    }
    if let Some(mtu) = n.mtu {
        if mtu < 68 {
            return Err(SpecError::Mtu(mtu));
        }
        return Err(SpecError::Unsupported("mtu on a network interface".into()));
    }
    let whose = format!("network interface {:?}", n.iface_id);
    check_rate_limiter(&n.rx_rate_limiter, &format!("{whose} (rx)"))?;
    check_rate_limiter(&n.tx_rate_limiter, &format!("{whose} (tx)"))
}

/// Checks a vsock device on its own.
pub fn check_vsock(v: &Vsock) -> Result<(), SpecError> {
    if v.guest_cid < 3 || v.guest_cid == u32::MAX {
        return Err(SpecError::GuestCid(v.guest_cid));
    }
    non_empty("uds_path", &v.uds_path)
}

/// Checks an entropy device on its own.
pub fn check_entropy(e: &EntropyDevice) -> Result<(), SpecError> {
    check_rate_limiter(&e.rate_limiter, "the entropy device")
}

/// Checks a serial device on its own.
pub fn check_serial(s: &SerialDevice) -> Result<(), SpecError> {
    if let Some(path) = &s.serial_out_path {
        non_empty("serial_out_path", path)?;
    }
    if s.rate_limiter.is_some() {
        return Err(SpecError::Unsupported(
            "a rate limiter on the serial console".into(),
        ));
    }
    Ok(())
}

impl VmSpec {
    /// Checks the whole description: each part, and how they fit together.
    pub fn validate(&self) -> Result<(), SpecError> {
        for (name, value) in [
            ("balloon", &self.balloon),
            ("pmem", &self.pmem),
            ("memory-hotplug", &self.memory_hotplug),
        ] {
            let present = match value {
                None | Some(serde_json::Value::Null) => false,
                Some(serde_json::Value::Array(items)) => !items.is_empty(),
                Some(_) => true,
            };
            if present {
                return Err(SpecError::Unsupported(format!("the {name:?} section")));
            }
        }
        check_machine_config(&self.machine_config)?;
        if let Some(b) = &self.boot_source {
            check_boot_source(b)?;
        }
        let mut root: Option<&str> = None;
        for (i, d) in self.drives.iter().enumerate() {
            check_drive(d)?;
            if self.drives[..i].iter().any(|o| o.drive_id == d.drive_id) {
                return Err(SpecError::DuplicateId {
                    what: "a drive",
                    id: d.drive_id.clone(),
                });
            }
            if d.is_root_device {
                if let Some(existing) = root {
                    return Err(SpecError::SecondRoot {
                        existing: existing.to_string(),
                        new: d.drive_id.clone(),
                    });
                }
                root = Some(&d.drive_id);
            }
        }
        for (i, n) in self.network_interfaces.iter().enumerate() {
            check_network_interface(n)?;
            if self.network_interfaces[..i]
                .iter()
                .any(|o| o.iface_id == n.iface_id)
            {
                return Err(SpecError::DuplicateId {
                    what: "a network interface",
                    id: n.iface_id.clone(),
                });
            }
            self.check_net_clashes(n)?;
        }
        for i in &self.ferrovisor.drive_images {
            if !self.drives.iter().any(|d| d.drive_id == i.drive_id) {
                return Err(SpecError::BadDriveImage(format!(
                    "names {:?}, which is no drive",
                    i.drive_id
                )));
            }
            if let Some(f) = i
                .format
                .as_deref()
                .filter(|f| !["raw", "qcow2", "auto"].contains(f))
            {
                return Err(SpecError::BadDriveImage(format!(
                    "format {f:?}: use raw, qcow2 or auto"
                )));
            }
            const CACHES: [&str; 5] = ["writeback", "writethrough", "none", "directsync", "unsafe"];
            if let Some(c) = i.cache.as_deref().filter(|c| !CACHES.contains(c)) {
                return Err(SpecError::BadDriveImage(format!(
                    "cache {c:?}: use writeback, writethrough, none, directsync or unsafe"
                )));
            }
        }
        for id in &self.ferrovisor.offload_off {
            if !self.network_interfaces.iter().any(|n| &n.iface_id == id) {
                return Err(SpecError::UnknownOffloadInterface(id.clone()));
            }
        }
        if let Some(v) = &self.vsock {
            check_vsock(v)?;
        }
        if let Some(e) = &self.entropy {
            check_entropy(e)?;
        }
        if let Some(s) = &self.serial {
            check_serial(s)?;
        }
        if let Some(m) = &self.mmds_config {
            self.check_mmds_config(m)?;
        }
        Ok(())
    }

    /// Checks an MMDS configuration against the network interfaces.
    fn check_mmds_config(&self, m: &MmdsConfig) -> Result<(), SpecError> {
        if m.network_interfaces.is_empty() {
            return Err(SpecError::MmdsNoInterfaces);
        }
        for id in &m.network_interfaces {
            if !self.network_interfaces.iter().any(|n| &n.iface_id == id) {
                return Err(SpecError::MmdsUnknownInterface(id.clone()));
            }
        }
        mmds_ipv4(m)?;
        Ok(())
    }

    /// `PUT /mmds/config`.
    pub fn set_mmds_config(&mut self, m: MmdsConfig) -> Result<(), SpecError> {
        self.check_mmds_config(&m)?;
        self.mmds_config = Some(m);
        Ok(())
    }

    /// Whether `n` shares a TAP or a MAC with another interface.
    fn check_net_clashes(&self, n: &NetworkInterface) -> Result<(), SpecError> {
        let mac = n.guest_mac.as_deref().map(parse_mac).transpose()?;
        for other in self
            .network_interfaces
            .iter()
            .filter(|o| o.iface_id != n.iface_id)
        {
            if other.host_dev_name == n.host_dev_name {
                return Err(SpecError::DuplicateTap {
                    first: other.iface_id.clone(),
                    second: n.iface_id.clone(),
                    tap: n.host_dev_name.clone(),
                });
            }
            let other_mac = other.guest_mac.as_deref().map(parse_mac).transpose()?;
            if let (Some(a), Some(b)) = (mac, other_mac) {
                if a == b {
                    return Err(SpecError::DuplicateMac {
                        first: other.iface_id.clone(),
                        second: n.iface_id.clone(),
                        mac: n.guest_mac.clone().unwrap_or_default(),
                    });
                }
            }
        }
        Ok(())
    }

    /// `PUT /machine-config` (and PATCH, after merging).
    pub fn set_machine_config(&mut self, m: MachineConfiguration) -> Result<(), SpecError> {
        check_machine_config(&m)?;
        self.machine_config = m;
        Ok(())
    }

    /// `PUT /boot-source`.
    pub fn set_boot_source(&mut self, b: BootSource) -> Result<(), SpecError> {
        check_boot_source(&b)?;
        self.boot_source = Some(b);
        Ok(())
    }

    /// `PUT /drives/{path_id}`: adds the drive, or replaces the one with
    /// its id.
    pub fn put_drive(&mut self, path_id: &str, d: Drive) -> Result<(), SpecError> {
        check_path_id("drive", path_id, &d.drive_id)?;
        check_drive(&d)?;
        if d.is_root_device {
            if let Some(existing) = self
                .drives
                .iter()
                .find(|o| o.is_root_device && o.drive_id != d.drive_id)
            {
                return Err(SpecError::SecondRoot {
                    existing: existing.drive_id.clone(),
                    new: d.drive_id,
                });
            }
        }
        match self.drives.iter_mut().find(|o| o.drive_id == d.drive_id) {
            Some(slot) => *slot = d,
            None => self.drives.push(d),
        }
        Ok(())
    }

    /// `PUT /network-interfaces/{path_id}`: adds the interface, or
    /// replaces the one with its id.
    pub fn put_network_interface(
        &mut self,
        path_id: &str,
        n: NetworkInterface,
    ) -> Result<(), SpecError> {
        check_path_id("network interface", path_id, &n.iface_id)?;
        check_network_interface(&n)?;
        self.check_net_clashes(&n)?;
        match self
            .network_interfaces
            .iter_mut()
            .find(|o| o.iface_id == n.iface_id)
        {
            Some(slot) => *slot = n,
            None => self.network_interfaces.push(n),
        }
        Ok(())
    }

    /// `PUT /vsock`.
    pub fn set_vsock(&mut self, v: Vsock) -> Result<(), SpecError> {
        check_vsock(&v)?;
        self.vsock = Some(v);
        Ok(())
    }

    /// `PUT /entropy`.
    pub fn set_entropy(&mut self, e: EntropyDevice) -> Result<(), SpecError> {
        check_entropy(&e)?;
        self.entropy = Some(e);
        Ok(())
    }

    /// `PUT /serial`.
    pub fn set_serial(&mut self, s: SerialDevice) -> Result<(), SpecError> {
        check_serial(&s)?;
        self.serial = Some(s);
        Ok(())
    }

    /// The drives in the order the guest sees them: the root device first
    /// (vda), the others in the order they were added.
    pub fn drives_in_guest_order(&self) -> impl Iterator<Item = &Drive> {
        let root = self.drives.iter().filter(|d| d.is_root_device);
        root.chain(self.drives.iter().filter(|d| !d.is_root_device))
    }

    /// The kernel command line: `boot_args` (or [`DEFAULT_BOOT_ARGS`]),
    /// with `root=` for a root drive as Firecracker adds it.
    pub fn kernel_cmdline(&self) -> String {
        let mut cmdline = self
            .boot_source
            .as_ref()
            .and_then(|b| b.boot_args.clone())
            .unwrap_or_else(|| DEFAULT_BOOT_ARGS.to_string());
        if let Some(root) = self.drives.iter().find(|d| d.is_root_device) {
            let device = match &root.partuuid {
                Some(uuid) => format!("PARTUUID={uuid}"),
                None => "/dev/vda".to_string(),
            };
            let mode = if root.is_read_only.unwrap_or(false) {
                "ro"
            } else {
                "rw"
            };
            if !cmdline.is_empty() {
                cmdline.push(' ');
            }
            cmdline.push_str(&format!("root={device} {mode}"));
        }
        cmdline
    }
}

/// The address the guest reaches the MMDS at: `ipv4_address`, a
/// link-local address (169.254.1.0 to 169.254.254.255, as Firecracker
/// takes), or 169.254.169.254.
pub fn mmds_ipv4(m: &MmdsConfig) -> Result<std::net::Ipv4Addr, SpecError> {
    let Some(text) = &m.ipv4_address else {
        return Ok(std::net::Ipv4Addr::new(169, 254, 169, 254));
    };
    match text.parse::<std::net::Ipv4Addr>() {
        Ok(ip) if matches!(ip.octets(), [169, 254, 1..=254, _]) => Ok(ip),
        _ => Err(SpecError::MmdsAddress(text.clone())),
    }
}

/// What the guest reads as the serial number of drive `id`.
pub fn drive_serial(id: &str) -> String {
    let mut end = id.len().min(DRIVE_SERIAL_BYTES);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    id[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(id: &str, root: bool) -> Drive {
        Drive {
            drive_id: id.into(),
            partuuid: None,
            is_root_device: root,
            cache_type: Default::default(),
            is_read_only: None,
            path_on_host: Some(format!("/img/{id}")),
            rate_limiter: None,
            io_engine: None,
            socket: None,
        }
    }

    fn net(id: &str, tap: &str, mac: Option<&str>) -> NetworkInterface {
        NetworkInterface {
            iface_id: id.into(),
            host_dev_name: tap.into(),
            guest_mac: mac.map(Into::into),
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }
    }

    #[test]
    fn firecracker_config_files_parse() {
        let spec: VmSpec = serde_json::from_str(
            r#"{
              "boot-source": {"kernel_image_path": "vmlinux", "boot_args": "console=ttyS0 reboot=k"},
              "drives": [{"drive_id": "rootfs", "path_on_host": "rootfs.ext4",
                          "is_root_device": true, "is_read_only": false}],
              "machine-config": {"vcpu_count": 2, "mem_size_mib": 1024},
              "network-interfaces": [{"iface_id": "eth0", "guest_mac": "06:00:AC:10:00:02",
                                      "host_dev_name": "tap0"}],
              "balloon": null,
              "logger": {"level": "Debug", "log_path": "/tmp/log"}
            }"#,
        )
        .unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.machine_config.vcpu_count, 2);
        assert_eq!(
            spec.kernel_cmdline(),
            "console=ttyS0 reboot=k root=/dev/vda rw"
        );
        // Round trip through JSON.
        let json = serde_json::to_string(&spec).unwrap();
        let again: VmSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn drive_images_name_drives_formats_and_cache_modes() {
        let mut spec: VmSpec = serde_json::from_str(
            r#"{"drives": [{"drive_id": "root", "path_on_host": "r.qcow2", "is_root_device": true}],
                "ferrovisor": {"drive_images": [{"drive_id": "root", "format": "qcow2", "cache": "none"}]}}"#,
        )
        .unwrap();
        spec.validate().unwrap();
        assert_eq!(
            spec.ferrovisor.drive_images[0].format.as_deref(),
            Some("qcow2")
        );
        for (id, format, cache, error) in [
            ("nope", "raw", "none", "no drive"),
            ("root", "vmdk", "none", "format \"vmdk\""),
            ("root", "raw", "fast", "cache \"fast\""),
        ] {
            spec.ferrovisor.drive_images = vec![DriveImage {
                drive_id: id.into(),
                format: Some(format.into()),
                cache: Some(cache.into()),
            }];
            let e = spec.validate().unwrap_err().to_string();
            assert!(e.contains(error), "{e}");
        }
    }

    #[test]
    fn unsupported_sections_and_unknown_keys_are_refused() {
        let spec: VmSpec =
            serde_json::from_str(r#"{"balloon": {"amount_mib": 1, "deflate_on_oom": true}}"#)
                .unwrap();
        let e = spec.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "the \"balloon\" section is not supported by Ferrovisor yet"
        );
        let e = serde_json::from_str::<VmSpec>(r#"{"boot_source": {}}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `boot_source`"), "{e}");
        let spec: VmSpec = serde_json::from_str(r#"{"pmem": []}"#).unwrap();
        spec.validate().unwrap();
    }

    #[test]
    fn drives_have_one_root_which_comes_first() {
        let mut spec = VmSpec::default();
        spec.put_drive("data", drive("data", false)).unwrap();
        spec.put_drive("root", drive("root", true)).unwrap();
        let e = spec.put_drive("other", drive("other", true)).unwrap_err();
        assert!(matches!(e, SpecError::SecondRoot { .. }), "{e}");
        // Replacing the root by itself is fine.
        spec.put_drive("root", drive("root", true)).unwrap();
        let order: Vec<_> = spec
            .drives_in_guest_order()
            .map(|d| d.drive_id.as_str())
            .collect();
        assert_eq!(order, ["root", "data"]);
        assert!(spec.kernel_cmdline().ends_with(" root=/dev/vda rw"));
        assert!(spec.kernel_cmdline().starts_with(DEFAULT_BOOT_ARGS));
        let e = spec.put_drive("a", drive("b", false)).unwrap_err();
        assert!(matches!(e, SpecError::IdMismatch { .. }));
        let e = spec.put_drive("a-b", drive("a-b", false)).unwrap_err();
        assert!(matches!(e, SpecError::BadId { .. }));
        let mut no_path = drive("x", false);
        no_path.path_on_host = None;
        assert!(spec.put_drive("x", no_path).is_err());
        let mut limited = drive("x", false);
        limited.rate_limiter = Some(RateLimiter {
            bandwidth: Some(crate::schema::TokenBucket {
                size: 1,
                one_time_burst: None,
                refill_time: 1,
            }),
            ops: None,
        });
        spec.put_drive("x", limited.clone()).unwrap();
        limited.rate_limiter = Some(RateLimiter {
            bandwidth: None,
            ops: Some(crate::schema::TokenBucket {
                size: 1,
                one_time_burst: Some(5),
                refill_time: u64::MAX / 1_000_000 + 1,
            }),
        });
        let e = spec.put_drive("x", limited).unwrap_err();
        assert!(e.to_string().contains("refill_time"), "{e}");
    }

    #[test]
    fn network_interfaces_need_distinct_taps_and_macs() {
        let mut spec = VmSpec::default();
        spec.put_network_interface("a", net("a", "tap0", Some("06:00:00:00:00:01")))
            .unwrap();
        let e = spec
            .put_network_interface("b", net("b", "tap0", None))
            .unwrap_err();
        assert!(matches!(e, SpecError::DuplicateTap { .. }));
        let e = spec
            .put_network_interface("b", net("b", "tap1", Some("06:00:00:00:00:01")))
            .unwrap_err();
        assert!(matches!(e, SpecError::DuplicateMac { .. }));
        // The same interface again replaces itself.
        spec.put_network_interface("a", net("a", "tap0", Some("06:00:00:00:00:01")))
            .unwrap();
        for bad in [
            "06:00:00:00:00",
            "zz:00:00:00:00:01",
            "01:00:5e:00:00:01",
            "6:0:0:0:0:1",
        ] {
            assert!(spec
                .put_network_interface("c", net("c", "tap2", Some(bad)))
                .is_err());
        }
        assert!(spec
            .put_network_interface("c", net("c", "a/b", None))
            .is_err());
        assert_eq!(spec.network_interfaces.len(), 1);
    }

    #[test]
    fn mmds_config_needs_known_interfaces_and_a_link_local_address() {
        let mut spec = VmSpec::default();
        let config = |ifaces: &[&str], ip: Option<&str>| MmdsConfig {
            version: crate::schema::MmdsVersion::V2,
            network_interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            ipv4_address: ip.map(Into::into),
            imds_compat: false,
        };
        let e = spec.set_mmds_config(config(&["eth0"], None)).unwrap_err();
        assert!(matches!(e, SpecError::MmdsUnknownInterface(_)), "{e}");
        spec.put_network_interface("eth0", net("eth0", "tap0", None))
            .unwrap();
        let e = spec.set_mmds_config(config(&[], None)).unwrap_err();
        assert_eq!(e, SpecError::MmdsNoInterfaces);
        for bad in ["10.0.0.1", "169.254.0.1", "169.254.255.1", "169.254.1", "x"] {
            let e = spec
                .set_mmds_config(config(&["eth0"], Some(bad)))
                .unwrap_err();
            assert!(matches!(e, SpecError::MmdsAddress(_)), "{bad}: {e}");
        }
        spec.set_mmds_config(config(&["eth0"], Some("169.254.170.2")))
            .unwrap();
        assert_eq!(
            mmds_ipv4(spec.mmds_config.as_ref().unwrap()).unwrap(),
            std::net::Ipv4Addr::new(169, 254, 170, 2)
        );
        // Round trip through JSON, as GET /vm/config and --config-file.
        let json = serde_json::to_string(&spec).unwrap();
        assert!(
            json.contains(r#""mmds-config":{"version":"V2","network_interfaces":["eth0"]"#),
            "{json}"
        );
        let again: VmSpec = serde_json::from_str(&json).unwrap();
        again.validate().unwrap();
        assert_eq!(again, spec);
        let file: VmSpec = serde_json::from_str(
            r#"{"network-interfaces": [{"iface_id": "a", "host_dev_name": "t"}],
                "mmds-config": {"network_interfaces": ["b"]}}"#,
        )
        .unwrap();
        assert!(file.validate().is_err());
    }

    #[test]
    fn machine_limits() {
        let mut spec = VmSpec::default();
        let m = |v, mem| MachineConfiguration {
            vcpu_count: v,
            mem_size_mib: mem,
            ..Default::default()
        };
        assert!(spec.set_machine_config(m(0, 128)).is_err());
        assert!(spec.set_machine_config(m(MAX_VCPUS + 1, 128)).is_err());
        assert!(spec.set_machine_config(m(1, 8)).is_err());
        spec.set_machine_config(m(4, 512)).unwrap();
        let smt = |v| MachineConfiguration {
            smt: true,
            ..m(v, 128)
        };
        let Err(e) = spec.set_machine_config(smt(3)) else {
            panic!("3 vCPUs with SMT")
        };
        assert!(e.to_string().contains("even number"), "{e}");
        assert_eq!(spec.machine_config.vcpu_count, 4);
        spec.set_machine_config(smt(1)).unwrap();
        spec.set_machine_config(smt(2)).unwrap();
        assert!(spec.machine_config.smt);
    }

    #[test]
    fn drive_serials_are_truncated() {
        assert_eq!(drive_serial("rootfs"), "rootfs");
        assert_eq!(
            drive_serial("abcdefghijklmnopqrstuvwxyz"),
            "abcdefghijklmnopqrst"
        );
    }
}
