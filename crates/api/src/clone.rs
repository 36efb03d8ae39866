//! A clone's identity: what makes one of several VMs loaded from the same
//! snapshot its own. Ferrovisor's extension of `PUT /snapshot/load`
//! (`"ferrovisor_clone": {...}`, not in Firecracker's specification) and
//! what `ferrovisor fork` gives each clone.
//!
//! Applied to the snapshot's VM description before the machine is built:
//! the serial output file, the vsock CID (the guest's driver reads it again
//! on the transport-reset event a restore sends) and Unix socket, the
//! network interfaces' MACs (the device's configuration space; a guest
//! that already read it keeps using the old one until it is told, e.g.
//! through the MMDS). A new VM generation ID is written and the guest
//! notified unless `keep_vmgenid`. MMDS data is not part of a snapshot:
//! a clone's is `PUT /mmds` after the load (or `ferrovisor fork --mmds`).

use serde::{Deserialize, Serialize};

use crate::spec::{check_vsock, parse_mac, SpecError};
use crate::VmSpec;

/// A network interface's new MAC address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacOverride {
    pub iface_id: String,
    pub guest_mac: String,
}

/// `"ferrovisor_clone"` in `PUT /snapshot/load`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloneParams {
    /// Keep the snapshot's VM generation ID (by default a clone gets a new
    /// one, and its guest is notified so that its kernel reseeds its RNG).
    #[serde(default)]
    pub keep_vmgenid: bool,
    /// The clone's serial output file (else the snapshot's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_out_path: Option<String>,
    /// The clone's vsock CID (else the snapshot's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_cid: Option<u32>,
    /// New MAC addresses of network interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guest_macs: Vec<MacOverride>,
}

/// Why a clone's identity does not fit its snapshot.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error("ferrovisor_clone: guest_cid: the snapshot has no vsock device")]
    NoVsock,
    #[error("ferrovisor_clone: guest_macs: the snapshot has no network interface {0}")]
    NoInterface(String),
    #[error("ferrovisor_clone")]
    Spec(#[source] SpecError),
}

impl CloneParams {
    /// Changes `spec` (a snapshot's VM description) into the clone's.
    /// Nothing changes when an override does not fit.
    pub fn apply(&self, spec: &mut VmSpec) -> Result<(), CloneError> {
        let mut out = spec.clone();
        if let Some(path) = &self.serial_out_path {
            let serial = out.serial.get_or_insert_with(Default::default);
            serial.serial_out_path = Some(path.clone());
        }
        if let Some(cid) = self.guest_cid {
            let vsock = out.vsock.as_mut().ok_or(CloneError::NoVsock)?;
            vsock.guest_cid = cid;
            check_vsock(vsock).map_err(CloneError::Spec)?;
        }
        for o in &self.guest_macs {
            parse_mac(&o.guest_mac).map_err(CloneError::Spec)?;
            let iface = out
                .network_interfaces
                .iter_mut()
                .find(|n| n.iface_id == o.iface_id)
                .ok_or_else(|| CloneError::NoInterface(o.iface_id.clone()))?;
            iface.guest_mac = Some(o.guest_mac.clone());
        }
        *spec = out;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        serde_json::from_value(serde_json::json!({
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
            "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:00:00:00:01"}],
            "vsock": {"guest_cid": 3, "uds_path": "/v.sock"}
        }))
        .unwrap()
    }

    #[test]
    fn overrides_change_only_what_they_name() {
        let params: CloneParams = serde_json::from_str(
            r#"{"serial_out_path": "/c1.out", "guest_cid": 7, "guest_macs": [{"iface_id": "eth0", "guest_mac": "06:00:00:00:00:07"}]}"#,
        )
        .unwrap();
        assert!(!params.keep_vmgenid);
        let mut s = spec();
        let before = s.clone();
        params.apply(&mut s).unwrap();
        assert_eq!(s.vsock.as_ref().unwrap().guest_cid, 7);
        assert_eq!(s.vsock.as_ref().unwrap().uds_path, "/v.sock");
        assert_eq!(
            s.network_interfaces[0].guest_mac.as_deref(),
            Some("06:00:00:00:00:07")
        );
        assert_eq!(s.network_interfaces[0].host_dev_name, "tap0");
        assert_eq!(
            s.serial.as_ref().unwrap().serial_out_path.as_deref(),
            Some("/c1.out")
        );
        assert_eq!(s.machine_config, before.machine_config);
    }

    #[test]
    fn bad_overrides_are_refused_and_change_nothing() {
        let mut s = spec();
        let before = s.clone();
        for (json, want) in [
            (r#"{"guest_cid": 2}"#, "ferrovisor_clone"),
            (
                r#"{"serial_out_path": "/x", "guest_macs": [{"iface_id": "eth1", "guest_mac": "06:00:00:00:00:07"}]}"#,
                "no network interface eth1",
            ),
            (
                r#"{"guest_macs": [{"iface_id": "eth0", "guest_mac": "nope"}]}"#,
                "ferrovisor_clone",
            ),
        ] {
            let params: CloneParams = serde_json::from_str(json).unwrap();
            let err = params.apply(&mut s).unwrap_err();
            let text = format!(
                "{err}: {}",
                std::error::Error::source(&err)
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            );
            assert!(text.contains(want), "{json}: {text}");
            assert_eq!(s, before, "{json}");
        }
        let mut bare = spec();
        bare.vsock = None;
        let params: CloneParams = serde_json::from_str(r#"{"guest_cid": 9}"#).unwrap();
        assert!(matches!(params.apply(&mut bare), Err(CloneError::NoVsock)));
        assert!(serde_json::from_str::<CloneParams>(r#"{"cid": 9}"#).is_err());
    }
}
