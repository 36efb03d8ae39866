//! The Uffd memory backend of a restore (Firecracker's
//! `mem_backend.backend_type = "Uffd"`): guest RAM is mapped anonymous,
//! registered with a new userfaultfd in missing mode, and a page-fault
//! handler process listening on a Unix socket gets the layout and the
//! userfaultfd ([`userfault::send_layout`]); it fills each page the
//! guest (or the VMM, or KVM) touches first.
//!
//! The VMM keeps its own copy of the userfaultfd (closing it while the
//! handler lives would not matter; after the handler's death it would
//! turn every missing page into a zero page, silently) and its end of the
//! connection, which a watcher thread polls: when the handler's end
//! closes, nothing will ever fill a missing page again and a thread that
//! touches one would wait forever, so the process ends with a clear error
//! and status 1. A slow handler is simply waited for.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;

use userfault::{
    send_layout, wait_peer_closed, GuestRegionUffdMapping, LayoutError, Uffd, WaitEnd,
};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::format::MemoryRegion;
use super::memory::PAGE_SIZE;

/// Why guest memory could not be handed to a page-fault handler.
#[derive(Debug, thiserror::Error)]
pub enum UffdBackendError {
    #[error("cannot map guest memory for the page-fault handler: {0}")]
    Map(String),
    #[error("cannot create a userfaultfd")]
    Create(#[source] io::Error),
    #[error("cannot register the guest memory at {gpa:#x} with the userfaultfd")]
    Register {
        gpa: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to the page-fault handler's socket {path}")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot send the memory layout to the page-fault handler on {path}")]
    Send {
        path: String,
        #[source]
        source: LayoutError,
    },
    #[error("cannot start the thread that watches the page-fault handler")]
    Watcher(#[source] io::Error),
}

/// The machine's link to its page-fault handler: the userfaultfd, the
/// connection, and the thread watching it. Dropped with the machine
/// (the watcher stops, the connection closes and the handler ends).
pub struct PageServerLink {
    stop: EventFd,
    watcher: Option<JoinHandle<()>>,
    _stream: UnixStream,
    _uffd: Uffd,
}

impl Drop for PageServerLink {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}

/// Maps guest RAM as `regions` describe, anonymous, and hands it to the
/// page-fault handler listening on `socket`; the memory file offsets in
/// the layout are the regions' sizes added up, as in a memory file.
pub fn map_with_handler(
    socket: &Path,
    regions: &[MemoryRegion],
) -> Result<(GuestMemoryMmap, PageServerLink), UffdBackendError> {
    let mut mapped = Vec::with_capacity(regions.len());
    for r in regions {
        let region = MmapRegionBuilder::new(r.size as usize)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| UffdBackendError::Map(e.to_string()))?;
        let region = GuestRegionMmap::new(region, GuestAddress(r.gpa))
            .ok_or_else(|| UffdBackendError::Map(format!("region at {:#x} overflows", r.gpa)))?;
        mapped.push(region);
    }
    let mem =
        GuestMemoryMmap::from_regions(mapped).map_err(|e| UffdBackendError::Map(e.to_string()))?;
    let uffd = Uffd::create().map_err(UffdBackendError::Create)?;
    let mut layout = Vec::with_capacity(regions.len());
    let mut offset = 0;
    for region in mem.iter() {
        let host = region.as_ptr() as u64;
        let size = region.len();
        uffd.register_missing(host, size)
            .map_err(|source| UffdBackendError::Register {
                gpa: region.start_addr().0,
                source,
            })?;
        layout.push(GuestRegionUffdMapping {
            base_host_virt_addr: host,
            size,
            offset,
            page_size: PAGE_SIZE,
            page_size_kib: PAGE_SIZE,
        });
        offset += size;
    }
    let path = socket.display().to_string();
    let stream = UnixStream::connect(socket).map_err(|source| UffdBackendError::Connect {
        path: path.clone(),
        source,
    })?;
    send_layout(&stream, &layout, &uffd).map_err(|source| UffdBackendError::Send {
        path: path.clone(),
        source,
    })?;
    tracing::info!(socket = %path, regions = layout.len(), "guest memory handed to the page-fault handler");
    let stop = EventFd::new(EFD_NONBLOCK).map_err(UffdBackendError::Watcher)?;
    let watched = stream.try_clone().map_err(UffdBackendError::Watcher)?;
    let stopped = stop.try_clone().map_err(UffdBackendError::Watcher)?;
    let builder = std::thread::Builder::new().name("uffd-watch".into());
    let watcher = sandbox::spawn(sandbox::ThreadKind::Vmm, builder, move || {
        watch(watched, stopped, &path)
    })
    .map_err(UffdBackendError::Watcher)?;
    Ok((
        mem,
        PageServerLink {
            stop,
            watcher: Some(watcher),
            _stream: stream,
            _uffd: uffd,
        },
    ))
}

/// Waits until `stop` is written (the machine ended) or the handler's end
/// of `stream` closes (then the process ends).
fn watch(stream: UnixStream, stop: EventFd, socket: &str) {
    match wait_peer_closed(&stream, &stop) {
        Ok(WaitEnd::Stopped) => {}
        Ok(WaitEnd::PeerClosed) => handler_lost(socket),
        Err(e) => tracing::error!(error = %e, "cannot watch the page-fault handler any more"),
    }
}

/// The handler is gone: no missing page will ever be filled, and a thread
/// that touches one (a vCPU, a device worker, KVM) waits forever and
/// cannot be stopped. The VM cannot go on: the process ends, status 1.
fn handler_lost(socket: &str) -> ! {
    let message = format!(
        "the page-fault handler on {socket} closed its connection (it ended or crashed): \
         the guest's memory can no longer be served; the VM ends"
    );
    tracing::error!("{message}");
    // Not eprintln!, which panics when standard error is closed.
    let _ = io::stderr().write_all(format!("ferrovisor: {message}\n").as_bytes());
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use vm_memory::Bytes;

    use super::*;

    /// Guest RAM handed to a page server on a thread reads back the
    /// memory file (written from another guest memory); dropping the link
    /// ends the server.
    #[test]
    fn guest_memory_comes_from_the_page_server() {
        let dir = std::env::temp_dir().join(format!("fv-uffd-vmm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = crate::memory::create_guest_memory(16 << 20).unwrap();
        source.write_slice(b"first", GuestAddress(0x1000)).unwrap();
        source
            .write_slice(b"last", GuestAddress((16 << 20) - 4))
            .unwrap();
        let mem_path = dir.join("mem");
        super::super::write_full(&source, &mem_path, true).unwrap();
        let regions = super::super::layout(&source);

        let socket = dir.join("uffd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let file = std::fs::File::open(&mem_path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut server = userfault::PageServer::new(&file, stream).unwrap();
            server.serve(&userfault::ServeOptions::default()).unwrap()
        });
        let (mem, link) = match map_with_handler(&socket, &regions) {
            Ok(mapped) => mapped,
            Err(UffdBackendError::Create(e)) => {
                eprintln!("SKIPPED: no userfaultfd here: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!(super::super::layout(&mem), regions);
        let mut buf = [0u8; 5];
        mem.read_slice(&mut buf, GuestAddress(0x1000)).unwrap();
        assert_eq!(&buf, b"first");
        let mut buf = [0u8; 4];
        mem.read_slice(&mut buf, GuestAddress((16 << 20) - 4))
            .unwrap();
        assert_eq!(&buf, b"last");
        mem.write_slice(b"new", GuestAddress(0x1000)).unwrap();
        let mut buf = [0u8; 3];
        mem.read_slice(&mut buf, GuestAddress(0x1000)).unwrap();
        assert_eq!(&buf, b"new", "a served page is the guest's own");
        drop(link);
        let report = server.join().unwrap();
        assert_eq!(report.pages, 2, "{report:?}");
        drop(mem);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error() {
        let regions = [MemoryRegion {
            gpa: 0,
            size: 1 << 20,
        }];
        let e = map_with_handler(Path::new("/nonexistent/uffd.sock"), &regions)
            .err()
            .expect("refused");
        assert!(
            matches!(
                e,
                UffdBackendError::Connect { .. } | UffdBackendError::Create(_)
            ),
            "{e}"
        );
    }
}
