//! The QEMU front end's option parsers, compiled from the binary's sources
//! (the binary crate has no library to depend on).

#[path = "../../crates/ferrovisor/src/qemu/error.rs"]
mod error;
#[allow(dead_code)]
#[path = "../../crates/ferrovisor/src/qemu/options.rs"]
pub mod options;
#[allow(dead_code)]
#[path = "../../crates/ferrovisor/src/qemu/props.rs"]
pub mod props;

pub use error::QemuError;
