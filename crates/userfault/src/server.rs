//! A page server: the handler's side of lazy restore. It maps the
//! snapshot's memory file, takes the VMM's layout and userfaultfd, and
//! answers every missing-page fault with UFFDIO_COPY of that page from
//! the file, until the VMM goes away.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::{receive_layout, CopyError, Event, GuestRegionUffdMapping, LayoutError, Uffd};

/// The only page size served (no huge pages).
const PAGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("the memory file")]
    File(#[source] io::Error),
    #[error("the memory file is empty")]
    EmptyFile,
    #[error("cannot map the memory file")]
    Map(#[source] io::Error),
    #[error("region {index} of the layout ({detail}) does not fit the memory file of {file_len} bytes with 4 KiB pages")]
    BadRegion {
        index: usize,
        detail: String,
        file_len: u64,
    },
    #[error("waiting for events")]
    Poll(#[source] io::Error),
    #[error("reading the userfaultfd")]
    Read(#[source] io::Error),
    #[error("filling the page at {address:#x}")]
    Copy {
        address: u64,
        #[source]
        source: CopyError,
    },
}

/// Knobs of [`PageServer::serve`] (the slow and the failing handler of
/// the tests, and a way to watch restores in slow motion).
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Wait this long before serving each fault.
    pub delay: Duration,
    /// Stop after serving this many faults (as if the handler crashed).
    pub exit_after: Option<u64>,
}

/// Why serving ended, and what was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeReport {
    /// Fault events read.
    pub faults: u64,
    /// Pages copied in (a fault on a page already there copies none).
    pub pages: u64,
    /// Faults outside every region of the layout (left unserved).
    pub stray: u64,
    /// `ServeOptions::exit_after` was reached (else the VMM went away).
    pub limit_reached: bool,
}

/// The memory file, mapped read-only.
struct FileMap {
    addr: *mut libc::c_void,
    len: u64,
}

impl FileMap {
    fn new(file: &File) -> Result<FileMap, ServeError> {
        let len = file.metadata().map_err(ServeError::File)?.len();
        if len == 0 {
            return Err(ServeError::EmptyFile);
        }
        // SAFETY: a new private read-only mapping of the whole file; no
        // existing memory is touched. It lives until `drop`.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(ServeError::Map(io::Error::last_os_error()));
        }
        Ok(FileMap { addr, len })
    }
}

// SAFETY: the mapping is read-only and owned by the FileMap alone;
// reading it from another thread is sound.
unsafe impl Send for FileMap {}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.addr, self.len as usize) };
    }
}

/// One VMM's faults, served from one memory file.
pub struct PageServer {
    map: FileMap,
    regions: Vec<GuestRegionUffdMapping>,
    uffd: Uffd,
    stream: UnixStream,
}

impl PageServer {
    /// Takes the layout and userfaultfd the VMM sends on `stream` (just
    /// accepted) and maps `memory`; every region must lie in the file.
    pub fn new(memory: &File, stream: UnixStream) -> Result<PageServer, ServeError> {
        let map = FileMap::new(memory)?;
        let (regions, uffd) = receive_layout(&stream)?;
        for (index, r) in regions.iter().enumerate() {
            let fits = r
                .offset
                .checked_add(r.size)
                .is_some_and(|end| end <= map.len);
            let aligned = r.page_bytes() == PAGE
                && r.base_host_virt_addr % PAGE == 0
                && r.size % PAGE == 0
                && r.offset % PAGE == 0;
            if !fits || !aligned || r.size == 0 {
                return Err(ServeError::BadRegion {
                    index,
                    detail: format!(
                        "size {:#x} at file offset {:#x}, page size {}",
                        r.size,
                        r.offset,
                        r.page_bytes()
                    ),
                    file_len: map.len,
                });
            }
        }
        Ok(PageServer {
            map,
            regions,
            uffd,
            stream,
        })
    }

    /// The layout the VMM sent.
    pub fn regions(&self) -> &[GuestRegionUffdMapping] {
        &self.regions
    }

    /// Serves faults until the VMM closes the connection (it ended) or
    /// its memory is gone, or `options.exit_after` faults were served.
    pub fn serve(&mut self, options: &ServeOptions) -> Result<ServeReport, ServeError> {
        let mut report = ServeReport {
            faults: 0,
            pages: 0,
            stray: 0,
            limit_reached: false,
        };
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.uffd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.stream.as_raw_fd(),
                    events: libc::POLLIN | libc::POLLRDHUP,
                    revents: 0,
                },
            ];
            // SAFETY: poll(2) reads and writes the two pollfds we own.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ServeError::Poll(err));
            }
            if fds[0].revents != 0 {
                while let Some(event) = self.uffd.read_event().map_err(ServeError::Read)? {
                    match event {
                        Event::PageFault { address, .. } => {
                            report.faults += 1;
                            if !self.fault(address, options, &mut report)? {
                                return Ok(report);
                            }
                            if options.exit_after.is_some_and(|n| report.faults >= n) {
                                report.limit_reached = true;
                                return Ok(report);
                            }
                        }
                        Event::Other(kind) => {
                            eprintln!("uffd-handler: ignored userfaultfd event {kind:#x}");
                        }
                    }
                }
            }
            if fds[1].revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0 {
                return Ok(report);
            }
            if fds[1].revents & libc::POLLIN != 0 {
                // The VMM sends nothing after the layout; read what came
                // (or the end of the connection).
                let mut buf = [0u8; 256];
                match self.stream.read(&mut buf) {
                    Ok(0) | Err(_) => return Ok(report),
                    Ok(_) => {}
                }
            }
        }
    }

    /// Serves one fault; `false` when the VMM's memory is gone.
    fn fault(
        &self,
        address: u64,
        options: &ServeOptions,
        report: &mut ServeReport,
    ) -> Result<bool, ServeError> {
        let Some(region) = self
            .regions
            .iter()
            .find(|r| address >= r.base_host_virt_addr && address - r.base_host_virt_addr < r.size)
        else {
            report.stray += 1;
            eprintln!("uffd-handler: a fault at {address:#x} outside the layout");
            return Ok(true);
        };
        if !options.delay.is_zero() {
            std::thread::sleep(options.delay);
        }
        let page = address & !(PAGE - 1);
        let offset = region.offset + (page - region.base_host_virt_addr);
        // `offset + PAGE` is within the mapped file (checked in `new`).
        let src = self.map.addr.cast::<u8>().wrapping_add(offset as usize);
        loop {
            // SAFETY: `src..src + PAGE` lies in our mapping of the file
            // (the region fits the file, checked in `new`).
            match unsafe { self.uffd.copy(page, src, PAGE) } {
                Ok(_) => {
                    report.pages += 1;
                    return Ok(true);
                }
                Err(CopyError::Exists) => {
                    // Served by an earlier event on the same page; make
                    // sure nobody still waits on it.
                    let _ = self.uffd.wake(page, PAGE);
                    return Ok(true);
                }
                Err(CopyError::Again { .. }) => std::thread::yield_now(),
                Err(CopyError::Gone) => return Ok(false),
                Err(source) => return Err(ServeError::Copy { address, source }),
            }
        }
    }
}

#[cfg(test)]
mod tests;
