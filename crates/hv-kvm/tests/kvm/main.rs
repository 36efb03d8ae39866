//! Tiny guests run on the host's /dev/kvm through the hv API.
//!
//! When /dev/kvm is not usable every test prints
//! `SKIPPED (kvm unavailable: <reason>)` to stderr and returns, unless
//! `FERROVISOR_REQUIRE_KVM=1`, which makes them fail instead.

mod common;
mod exits;
mod io;
mod kick;
mod memory;
mod snapshot;
mod state;
