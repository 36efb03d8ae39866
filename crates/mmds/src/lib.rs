//! Ferrovisor's microVM metadata service, Firecracker's MMDS (V1 and V2).
//!
//! - [`store`]: the data store, one JSON value the host sets (`PUT
//!   /mmds`), merges into (`PATCH /mmds`, RFC 7396) and reads (`GET
//!   /mmds`), bounded by a size limit (`--mmds-size-limit`).
//! - [`token`]: the V2 session tokens (`PUT /latest/api/token`).
//! - [`http`]: the guest's HTTP requests and Firecracker's answers (IMDS
//!   text or JSON, 401 without a token in V2, 404, 405, 501...).
//! - [`saved`]: the store and the live tokens as a live migration carries
//!   them to another process.
//! - [`wire`], [`tcp`], [`stack`]: the minimal Ethernet/ARP/IPv4/TCP stack
//!   a network device puts on its transmit path: frames for the MMDS
//!   address are answered inside the VMM and never reach the host.
//!
//! The store and the tokens are one [`Mmds`] shared by the API and every
//! network interface the MMDS is reachable through ([`SharedMmds`]); the
//! version and the address are the VM's configuration, fixed before boot
//! ([`stack::StackConfig`]).
#![forbid(unsafe_code)]

pub mod http;
pub mod saved;
pub mod stack;
pub mod store;
pub mod tcp;
pub mod token;
pub mod wire;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

pub use saved::{SavedMmds, SavedMmdsError};
pub use stack::{Stack, StackConfig};
pub use store::{DataStore, StoreError};

/// The address the guest reaches the MMDS at by default.
pub const DEFAULT_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// How the guest may read the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Version {
    /// GETs need no token.
    #[default]
    V1,
    /// GETs need a session token.
    V2,
}

/// How the guest side answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceConfig {
    pub version: Version,
    /// IMDS text whatever the request's Accept header says.
    pub imds_compat: bool,
}

/// The data store and the session tokens of a VM.
#[derive(Debug, Default)]
pub struct Mmds {
    pub store: DataStore,
    pub tokens: token::TokenAuthority,
}

/// The [`Mmds`] the API and the network devices share.
pub type SharedMmds = Arc<Mutex<Mmds>>;

impl Mmds {
    /// An empty MMDS whose store may take `limit` bytes of JSON.
    pub fn shared(limit: usize) -> SharedMmds {
        Arc::new(Mutex::new(Mmds {
            store: DataStore::new(limit),
            tokens: token::TokenAuthority::default(),
        }))
    }
}
