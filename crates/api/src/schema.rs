//! The request and response bodies of Firecracker's API
//! (`firecracker-api.yaml`), as serde types.
//!
//! Every object refuses unknown fields, as Firecracker's do, so that a typo
//! in a field name is an error rather than a silently ignored setting.
//! Optional fields that are absent stay absent when serialized again.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `GET /`: what the instance is and in which state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceInfo {
    pub app_name: String,
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: String,
}

/// The lifecycle states the API reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirecrackerVersion {
    pub firecracker_version: String,
}

/// `PUT /actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    FlushMetrics,
    InstanceStart,
    SendCtrlAltDel,
}

/// `PUT /boot-source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    /// The kernel command line; without it, Firecracker's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

/// `CpuTemplate`: only `None` (no template) is supported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuTemplate {
    C3,
    T2,
    T2S,
    T2CL,
    T2A,
    V1N1,
    #[default]
    None,
}

/// How guest memory is backed: only `None` (4 KiB pages) is supported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    #[default]
    None,
    Transparent,
    #[serde(rename = "2M")]
    Huge2M,
}

/// `PUT /machine-config` and `GET /machine-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfiguration {
    pub vcpu_count: u32,
    pub mem_size_mib: u64,
    #[serde(default)]
    pub smt: bool,
    #[serde(default, skip_serializing_if = "is_no_template")]
    pub cpu_template: CpuTemplate,
    #[serde(default)]
    pub track_dirty_pages: bool,
    #[serde(default)]
    pub huge_pages: HugePages,
}

fn is_no_template(t: &CpuTemplate) -> bool {
    *t == CpuTemplate::None
}

impl Default for MachineConfiguration {
    /// Firecracker's defaults: one vCPU, 128 MiB.
    fn default() -> Self {
        MachineConfiguration {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            cpu_template: CpuTemplate::None,
            track_dirty_pages: false,
            huge_pages: HugePages::None,
        }
    }
}

/// `PUT /cpu-config` and the `cpu-config` section of a VM description:
/// a custom CPU template (x86-64 parts; the aarch64 fields
/// `reg_modifiers` and `vcpu_features` are unknown fields here). The
/// strings are checked and applied by `arch::cpu_template`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuConfig {
    /// KVM capability numbers to require (`"N"`) or not (`"!N"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kvm_capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpuid_modifiers: Vec<CpuidLeafModifier>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub msr_modifiers: Vec<MsrModifier>,
}

/// The modifiers of one CPUID leaf/subleaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuidLeafModifier {
    /// Hex (`0x`), binary (`0b`) or decimal.
    pub leaf: String,
    pub subleaf: String,
    /// KVM's CPUID entry flags: bit 0 = the subleaf is significant.
    pub flags: u32,
    pub modifiers: Vec<CpuidRegisterModifier>,
}

/// A CPUID register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuidRegister {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// One register of a CPUID leaf modifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuidRegisterModifier {
    pub register: CpuidRegister,
    /// `0b` + 32 of `0`, `1`, `x` (keep).
    pub bitmap: String,
}

/// One MSR modifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MsrModifier {
    /// Hex (`0x`), binary (`0b`) or decimal.
    pub addr: String,
    /// `0b` + 64 of `0`, `1`, `x` (keep); `_` may separate groups.
    pub bitmap: String,
}

/// `PATCH /machine-config`: the fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    #[serde(default)]
    pub vcpu_count: Option<u32>,
    #[serde(default)]
    pub mem_size_mib: Option<u64>,
    #[serde(default)]
    pub smt: Option<bool>,
    #[serde(default)]
    pub cpu_template: Option<CpuTemplate>,
    #[serde(default)]
    pub track_dirty_pages: Option<bool>,
    #[serde(default)]
    pub huge_pages: Option<HugePages>,
}

impl MachineConfigUpdate {
    /// `base` with the fields this update names replaced.
    pub fn apply(&self, base: &MachineConfiguration) -> MachineConfiguration {
        MachineConfiguration {
            vcpu_count: self.vcpu_count.unwrap_or(base.vcpu_count),
            mem_size_mib: self.mem_size_mib.unwrap_or(base.mem_size_mib),
            smt: self.smt.unwrap_or(base.smt),
            cpu_template: self.cpu_template.unwrap_or(base.cpu_template),
            track_dirty_pages: self.track_dirty_pages.unwrap_or(base.track_dirty_pages),
            huge_pages: self.huge_pages.unwrap_or(base.huge_pages),
        }
    }
}

/// A token bucket of a rate limiter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    pub refill_time: u64,
}

/// A rate limiter: a bandwidth bucket (bytes) and an operations bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

impl RateLimiter {
    /// Whether it limits anything (an empty object does not).
    pub fn limits(&self) -> bool {
        self.bandwidth.is_some() || self.ops.is_some()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    #[default]
    Unsafe,
    Writeback,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    #[default]
    Sync,
    Async,
}

/// `PUT /drives/{drive_id}`: a virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    pub is_root_device: bool,
    #[serde(default)]
    pub cache_type: CacheType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// A vhost-user-block backend's socket (not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

/// `PATCH /drives/{drive_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialDrive {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// `PUT /network-interfaces/{iface_id}`: a virtio-net device on a TAP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `PATCH /network-interfaces/{iface_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialNetworkInterface {
    pub iface_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `PUT /vsock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    pub guest_cid: u32,
    pub uds_path: String,
    /// Deprecated by Firecracker; kept when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
}

/// `PUT /entropy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// `PUT /serial`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_out_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<TokenBucket>,
}

/// A logger level; parsed without regard to case, `Warn` accepted for
/// `Warning`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    Warning,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Off => "Off",
            LogLevel::Error => "Error",
            LogLevel::Warning => "Warning",
            LogLevel::Info => "Info",
            LogLevel::Debug => "Debug",
            LogLevel::Trace => "Trace",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(LogLevel::Off),
            "error" => Ok(LogLevel::Error),
            "warning" | "warn" => Ok(LogLevel::Warning),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(format!(
                "unknown log level {s:?} (Error, Warning, Info, Debug, Trace or Off)"
            )),
        }
    }
}

impl Serialize for LogLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `PUT /logger`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// `PUT /ferrovisor/trace` and `GET /ferrovisor/trace` (Ferrovisor's):
/// KVM trace events chosen by name pattern (`kvm_exit,kvm_pio`, `kvm_*`;
/// empty: none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    pub events: String,
}

/// `PUT /metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub metrics_path: String,
    #[serde(default)]
    pub emit_id: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
}

/// `PATCH /vm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateUpdate {
    pub state: VmState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    Paused,
    Resumed,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub fault_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_config_defaults_and_names() {
        let m: MachineConfiguration =
            serde_json::from_str(r#"{"vcpu_count": 2, "mem_size_mib": 256}"#).unwrap();
        assert_eq!(m.vcpu_count, 2);
        assert!(!m.smt && !m.track_dirty_pages);
        assert_eq!(m.huge_pages, HugePages::None);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}"#
        );
        let m: MachineConfiguration = serde_json::from_str(
            r#"{"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "2M", "cpu_template": "T2"}"#,
        )
        .unwrap();
        assert_eq!(
            (m.huge_pages, m.cpu_template),
            (HugePages::Huge2M, CpuTemplate::T2)
        );
    }

    #[test]
    fn unknown_and_missing_fields_are_errors() {
        let e = serde_json::from_str::<MachineConfiguration>(
            r#"{"vcpu_count": 2, "mem_size_mib": 256, "vcpus": 3}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `vcpus`"), "{e}");
        let e = serde_json::from_str::<MachineConfiguration>(r#"{"vcpu_count": 2}"#).unwrap_err();
        assert!(
            e.to_string().contains("missing field `mem_size_mib`"),
            "{e}"
        );
        let e = serde_json::from_str::<Drive>(r#"{"drive_id": "a", "is_root_device": "yes"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("expected a boolean"), "{e}");
    }

    #[test]
    fn instance_state_and_log_levels_use_firecrackers_spelling() {
        assert_eq!(
            serde_json::to_string(&InstanceState::NotStarted).unwrap(),
            r#""Not started""#
        );
        for (text, level) in [
            ("\"warn\"", LogLevel::Warning),
            ("\"Warning\"", LogLevel::Warning),
            ("\"DEBUG\"", LogLevel::Debug),
            ("\"off\"", LogLevel::Off),
        ] {
            assert_eq!(serde_json::from_str::<LogLevel>(text).unwrap(), level);
        }
        assert!(serde_json::from_str::<LogLevel>("\"loud\"").is_err());
        assert_eq!(serde_json::to_string(&LogLevel::Info).unwrap(), "\"Info\"");
    }

    #[test]
    fn patch_applies_only_named_fields() {
        let base = MachineConfiguration::default();
        let update: MachineConfigUpdate = serde_json::from_str(r#"{"vcpu_count": 4}"#).unwrap();
        let m = update.apply(&base);
        assert_eq!((m.vcpu_count, m.mem_size_mib), (4, 128));
    }
}

/// The MMDS version of `PUT /mmds/config`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MmdsVersion {
    #[default]
    V1,
    V2,
}

/// `PUT /mmds/config` (and the `mmds-config` section of a configuration
/// file): which network interfaces reach the MMDS, at which address, how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmdsConfig {
    #[serde(default)]
    pub version: MmdsVersion,
    pub network_interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imds_compat: bool,
}
