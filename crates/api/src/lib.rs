//! Ferrovisor's control plane, without VM logic: Firecracker's REST API
//! over HTTP/1.1 on a Unix socket, and its schema types.
//!
//! - [`spec::VmSpec`]: the one VM description every front end builds
//!   (`ferrovisor run`, Firecracker's API and `--config-file`), in
//!   Firecracker's configuration-file JSON.
//! - [`schema`]: the request and response bodies of the API.
//! - [`http`]: a small HTTP/1.1 parser and response writer;
//!   [`routes`]: paths and methods to typed [`routes::Request`]s;
//!   [`server`]: the socket, its connection threads and the [`Backend`]
//!   trait the VM side implements.
//! - [`client`]: a minimal client, for tests and tools.
#![forbid(unsafe_code)]

pub mod client;
pub mod clone;
pub mod fork;
pub mod http;
pub mod migrate;
pub mod routes;
pub mod schema;
pub mod server;
mod slots;
pub mod snapshot;
pub mod spec;

pub use routes::Request;
pub use server::{ApiServer, Backend, Reply, ServerConfig, ServerError};
pub use spec::VmSpec;

/// The version of Firecracker's API this server implements (the spec in
/// `shared/specs/firecracker-api.yaml`), reported as `firecracker_version`.
pub const FIRECRACKER_API_VERSION: &str = "1.17.0";
