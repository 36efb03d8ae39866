//! Linux userfaultfd for lazy snapshot restore, as Firecracker does it
//! (its docs/snapshotting/handling-page-faults-on-snapshot-resume.md):
//!
//! 1. A page-fault handler process listens on a Unix socket.
//! 2. The VMM maps guest RAM anonymous, creates a userfaultfd
//!    ([`Uffd::create`]), registers every RAM region in MISSING mode,
//!    connects to the socket and sends the memory layout as JSON (a list
//!    of [`GuestRegionUffdMapping`]) with the userfaultfd attached
//!    (SCM_RIGHTS, [`send_layout`]).
//! 3. The handler ([`PageServer`]) receives both ([`receive_layout`]),
//!    maps the snapshot's memory file and answers each fault of the VMM
//!    with UFFDIO_COPY of the page from the file.
//!
//! Ferrovisor adds one rule: the handler keeps its end of the connection
//! open while it serves; the VMM watches it and ends the VM with an error
//! when it closes (the handler died), instead of waiting forever on a
//! fault nobody will serve.

mod layout;
mod server;
mod sys;
mod uffd;
mod watch;

pub use layout::{receive_layout, send_layout, GuestRegionUffdMapping, LayoutError};
pub use server::{PageServer, ServeError, ServeOptions, ServeReport};
pub use uffd::{CopyError, Event, Uffd};
pub use watch::{wait_peer_closed, WaitEnd};
