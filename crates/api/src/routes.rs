//! From a method, a path and a body to a typed [`Request`]: Firecracker's
//! paths, its rules on bodies (GET has none, PUT and PATCH have one), and
//! a 400 that names what is not supported yet for the paths that come
//! with later work.

use serde::de::DeserializeOwned;

use crate::http::Method;
use crate::schema::{
    ActionType, BootSource, CpuConfig, Drive, EntropyDevice, InstanceActionInfo, Logger,
    MachineConfigUpdate, MachineConfiguration, Metrics, MmdsConfig, NetworkInterface, PartialDrive,
    PartialNetworkInterface, SerialDevice, VmStateUpdate, Vsock,
};

/// A request the VM side answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    GetInstanceInfo,
    GetVersion,
    GetVmConfig,
    GetMachineConfig,
    PutMachineConfig(MachineConfiguration),
    /// `PUT /cpu-config`: a custom CPU template.
    PutCpuConfig(CpuConfig),
    PatchMachineConfig(MachineConfigUpdate),
    PutBootSource(BootSource),
    PutDrive {
        id: String,
        drive: Drive,
    },
    PatchDrive {
        id: String,
        drive: PartialDrive,
    },
    PutNetworkInterface {
        id: String,
        iface: NetworkInterface,
    },
    PatchNetworkInterface {
        id: String,
        iface: PartialNetworkInterface,
    },
    PutVsock(Vsock),
    PutEntropy(EntropyDevice),
    PutSerial(SerialDevice),
    PutLogger(Logger),
    PutMetrics(Metrics),
    Action(ActionType),
    PatchVm(VmStateUpdate),
    /// `PUT /mmds`: the new contents of the data store.
    PutMmds(serde_json::Value),
    /// `PATCH /mmds`: a JSON merge patch.
    PatchMmds(serde_json::Value),
    GetMmds,
    PutMmdsConfig(MmdsConfig),
    /// `GET /ferrovisor/stats` (Ferrovisor's): the live exit counters.
    GetStats,
    /// `GET /ferrovisor/trace` (Ferrovisor's): the trace events that are on.
    GetTrace,
    /// `PUT /ferrovisor/trace` (Ferrovisor's): choose the trace events.
    PutTrace(crate::schema::TraceConfig),
    /// `PUT /snapshot/create`.
    CreateSnapshot(crate::snapshot::SnapshotCreateParams),
    /// `PUT /snapshot/load`.
    LoadSnapshot(crate::snapshot::SnapshotLoadParams),
    /// `PUT /ferrovisor/migrate` (Ferrovisor's): live migration.
    Migrate(crate::migrate::MigrateParams),
    /// `PUT /ferrovisor/fork` (Ferrovisor's): fork the paused VM in place.
    Fork(crate::fork::ForkParams),
}

/// Why a request was not routed; always a 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("invalid request method and/or path: {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("a GET request cannot have a body")]
    GetWithBody,
    #[error("a {0} request on this path needs a JSON body")]
    EmptyBody(&'static str),
    #[error("the request body is not valid JSON for this request: {0}")]
    Json(String),
    #[error("{path}: the {what} ID is missing from the path")]
    MissingId { path: String, what: &'static str },
    #[error("{0} is not supported by Ferrovisor yet")]
    NotSupported(&'static str),
}

fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, RouteError> {
    serde_json::from_slice(body).map_err(|e| RouteError::Json(e.to_string()))
}

/// The paths of the spec that come with later work, by first segment.
fn not_supported(first: &str) -> Option<&'static str> {
    Some(match first {
        "balloon" => "the balloon device (/balloon)",
        "pmem" => "virtio-pmem (/pmem)",
        "hotplug" => "memory hotplug (/hotplug/memory)",
        _ => return None,
    })
}

/// Routes one request.
pub fn route(method: &Method, path: &str, body: &[u8]) -> Result<Request, RouteError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split_terminator('/').collect();
    let first = segments.first().copied().unwrap_or("");
    let no_route = || RouteError::NoRoute {
        method: method.as_str().to_string(),
        path: path.to_string(),
    };
    if let Some(what) = not_supported(first) {
        return Err(RouteError::NotSupported(what));
    }
    let has_body = !body.is_empty();
    match method {
        Method::Get if has_body => return Err(RouteError::GetWithBody),
        Method::Put if !has_body => return Err(RouteError::EmptyBody("PUT")),
        Method::Patch if !has_body => return Err(RouteError::EmptyBody("PATCH")),
        _ => {}
    }
    // The id of /drives/{id} and /network-interfaces/{id}.
    let id = |what: &'static str| -> Result<String, RouteError> {
        match segments.as_slice() {
            [_, id] => Ok((*id).to_string()),
            [_] => Err(RouteError::MissingId {
                path: path.to_string(),
                what,
            }),
            _ => Err(no_route()),
        }
    };
    let single = segments.len() <= 1;
    match (method, first) {
        (Method::Get, "") if single => Ok(Request::GetInstanceInfo),
        (Method::Get, "version") if single => Ok(Request::GetVersion),
        (Method::Get, "machine-config") if single => Ok(Request::GetMachineConfig),
        (Method::Get, "vm") if segments == ["vm", "config"] => Ok(Request::GetVmConfig),
        (Method::Put, "actions") if single => {
            let info: InstanceActionInfo = json(body)?;
            Ok(Request::Action(info.action_type))
        }
        (Method::Put, "machine-config") if single => Ok(Request::PutMachineConfig(json(body)?)),
        (Method::Patch, "machine-config") if single => Ok(Request::PatchMachineConfig(json(body)?)),
        (Method::Put, "cpu-config") if single => Ok(Request::PutCpuConfig(json(body)?)),
        (Method::Put, "boot-source") if single => Ok(Request::PutBootSource(json(body)?)),
        (Method::Put, "drives") => Ok(Request::PutDrive {
            id: id("drive")?,
            drive: json(body)?,
        }),
        (Method::Patch, "drives") => Ok(Request::PatchDrive {
            id: id("drive")?,
            drive: json(body)?,
        }),
        (Method::Put, "network-interfaces") => Ok(Request::PutNetworkInterface {
            id: id("network interface")?,
            iface: json(body)?,
        }),
        (Method::Patch, "network-interfaces") => Ok(Request::PatchNetworkInterface {
            id: id("network interface")?,
            iface: json(body)?,
        }),
        (Method::Put, "vsock") if single => Ok(Request::PutVsock(json(body)?)),
        (Method::Put, "entropy") if single => Ok(Request::PutEntropy(json(body)?)),
        (Method::Put, "serial") if single => Ok(Request::PutSerial(json(body)?)),
        (Method::Put, "logger") if single => Ok(Request::PutLogger(json(body)?)),
        (Method::Put, "metrics") if single => Ok(Request::PutMetrics(json(body)?)),
        (Method::Patch, "vm") if single => Ok(Request::PatchVm(json(body)?)),
        (Method::Put, "mmds") if single => Ok(Request::PutMmds(json(body)?)),
        (Method::Patch, "mmds") if single => Ok(Request::PatchMmds(json(body)?)),
        (Method::Get, "mmds") if single => Ok(Request::GetMmds),
        (Method::Put, "mmds") if segments == ["mmds", "config"] => {
            Ok(Request::PutMmdsConfig(json(body)?))
        }
        (Method::Get, "ferrovisor") if segments == ["ferrovisor", "stats"] => Ok(Request::GetStats),
        (Method::Get, "ferrovisor") if segments == ["ferrovisor", "trace"] => Ok(Request::GetTrace),
        (Method::Put, "ferrovisor") if segments == ["ferrovisor", "trace"] => {
            Ok(Request::PutTrace(json(body)?))
        }
        (Method::Put, "ferrovisor") if segments == ["ferrovisor", "migrate"] => {
            Ok(Request::Migrate(json(body)?))
        }
        (Method::Put, "ferrovisor") if segments == ["ferrovisor", "fork"] => {
            Ok(Request::Fork(json(body)?))
        }
        (Method::Put, "snapshot") if segments == ["snapshot", "create"] => {
            Ok(Request::CreateSnapshot(json(body)?))
        }
        (Method::Put, "snapshot") if segments == ["snapshot", "load"] => {
            Ok(Request::LoadSnapshot(json(body)?))
        }
        (Method::Delete, "drives" | "network-interfaces") => {
            Err(RouteError::NotSupported("hot-unplugging a device (DELETE)"))
        }
        _ => Err(no_route()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ferrovisor_extension_routes() {
        assert_eq!(
            route(&Method::Get, "/ferrovisor/stats", b""),
            Ok(Request::GetStats)
        );
        assert_eq!(
            route(&Method::Get, "/ferrovisor/trace", b""),
            Ok(Request::GetTrace)
        );
        assert_eq!(
            route(
                &Method::Put,
                "/ferrovisor/trace",
                br#"{"events": "kvm_exit"}"#
            ),
            Ok(Request::PutTrace(crate::schema::TraceConfig {
                events: "kvm_exit".into()
            }))
        );
        assert!(route(&Method::Put, "/ferrovisor/trace", br#"{"event": "x"}"#).is_err());
        assert!(route(&Method::Get, "/ferrovisor", b"").is_err());
        assert!(route(&Method::Get, "/ferrovisor/stats/x", b"").is_err());
    }

    #[test]
    fn routes_firecrackers_paths() {
        assert_eq!(route(&Method::Get, "/", b""), Ok(Request::GetInstanceInfo));
        assert_eq!(
            route(&Method::Get, "/version", b""),
            Ok(Request::GetVersion)
        );
        assert_eq!(
            route(&Method::Get, "/vm/config", b""),
            Ok(Request::GetVmConfig)
        );
        assert_eq!(
            route(&Method::Get, "/machine-config/", b""),
            Ok(Request::GetMachineConfig)
        );
        assert_eq!(
            route(
                &Method::Put,
                "/actions",
                br#"{"action_type": "InstanceStart"}"#
            ),
            Ok(Request::Action(ActionType::InstanceStart))
        );
        let r = route(
            &Method::Put,
            "/drives/rootfs",
            br#"{"drive_id": "rootfs", "path_on_host": "/x", "is_root_device": true}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::PutDrive { ref id, .. } if id == "rootfs"));
    }

    #[test]
    fn refuses_what_it_cannot_route() {
        let e = route(&Method::Get, "/nope", b"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid request method and/or path: GET /nope"
        );
        assert!(matches!(
            route(&Method::Other("POST".into()), "/actions", b"{}"),
            Err(RouteError::NoRoute { .. })
        ));
        assert!(matches!(
            route(&Method::Get, "/version/x", b""),
            Err(RouteError::NoRoute { .. })
        ));
        assert!(matches!(
            route(&Method::Put, "/drives/a/b", b"{}"),
            Err(RouteError::NoRoute { .. })
        ));
        assert!(matches!(
            route(&Method::Put, "/drives", b"{}"),
            Err(RouteError::MissingId { .. })
        ));
        assert_eq!(route(&Method::Get, "/", b"x"), Err(RouteError::GetWithBody));
        assert_eq!(
            route(&Method::Put, "/machine-config", b""),
            Err(RouteError::EmptyBody("PUT"))
        );
        let e = route(&Method::Put, "/machine-config", b"{\"vcpu_count\": 1}").unwrap_err();
        assert!(
            e.to_string().contains("missing field `mem_size_mib`"),
            "{e}"
        );
        let e = route(&Method::Put, "/actions", br#"{"action_type": "Reboot"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant `Reboot`"), "{e}");
    }

    #[test]
    fn mmds_routes() {
        assert_eq!(
            route(&Method::Put, "/mmds", br#"{"a": [1]}"#),
            Ok(Request::PutMmds(serde_json::json!({"a": [1]})))
        );
        assert_eq!(
            route(&Method::Patch, "/mmds/", br#"{"a": null}"#),
            Ok(Request::PatchMmds(serde_json::json!({"a": null})))
        );
        assert_eq!(route(&Method::Get, "/mmds", b""), Ok(Request::GetMmds));
        let r = route(
            &Method::Put,
            "/mmds/config",
            br#"{"network_interfaces": ["eth0"], "version": "V2"}"#,
        )
        .unwrap();
        assert!(
            matches!(r, Request::PutMmdsConfig(ref c) if c.version == crate::schema::MmdsVersion::V2)
        );
        assert!(route(&Method::Put, "/mmds/config", br#"{"version": "V2"}"#).is_err());
        assert!(route(
            &Method::Put,
            "/mmds/config",
            br#"{"network_interfaces": [], "x": 1}"#
        )
        .is_err());
        assert!(route(&Method::Put, "/mmds", b"{").is_err());
        assert!(matches!(
            route(&Method::Get, "/mmds/config", b""),
            Err(RouteError::NoRoute { .. })
        ));
    }

    #[test]
    fn snapshot_routes() {
        let r = route(
            &Method::Put,
            "/snapshot/create",
            br#"{"snapshot_path": "s", "mem_file_path": "m"}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::CreateSnapshot(ref p) if p.snapshot_path == "s"));
        let r = route(
            &Method::Put,
            "/snapshot/load",
            br#"{"snapshot_path": "s", "mem_file_path": "m", "resume_vm": true}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::LoadSnapshot(ref p) if p.resume_vm == Some(true)));
        assert!(route(
            &Method::Put,
            "/snapshot/create",
            br#"{"snapshot_path": "s"}"#
        )
        .is_err());
        assert!(matches!(
            route(&Method::Put, "/snapshot/x", b"{}"),
            Err(RouteError::NoRoute { .. })
        ));
    }

    #[test]
    fn migrate_route() {
        let r = route(
            &Method::Put,
            "/ferrovisor/migrate",
            br#"{"destination_url": "tcp:127.0.0.1:4444", "downtime_ms": 20}"#,
        )
        .unwrap();
        assert!(
            matches!(r, Request::Migrate(ref p) if p.destination_url == "tcp:127.0.0.1:4444" && p.downtime_ms == Some(20))
        );
        assert!(route(&Method::Put, "/ferrovisor/migrate", br#"{"url": "x"}"#).is_err());
    }

    #[test]
    fn fork_route() {
        let r = route(
            &Method::Put,
            "/ferrovisor/fork",
            br#"{"count": 2, "api_sock": "/tmp/c{n}.sock", "resume_parent": true}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::Fork(ref p) if p.count == 2 && p.resume_parent));
        assert!(route(&Method::Put, "/ferrovisor/fork", br#"{"count": 2}"#).is_err());
    }

    #[test]
    fn later_features_say_so() {
        for path in [
            "/balloon",
            "/balloon/statistics",
            "/pmem/a",
            "/hotplug/memory",
        ] {
            let e = route(&Method::Put, path, b"{}").unwrap_err();
            assert!(
                e.to_string().contains("not supported by Ferrovisor yet"),
                "{path}: {e}"
            );
        }
    }
}
