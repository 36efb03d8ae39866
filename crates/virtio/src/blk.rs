//! virtio-blk (block device, ID 2) over a disk image: raw or qcow2
//! ([`crate::blk_image`] opens it, the `qcow2` crate serves it).
//!
//! Requests: IN, OUT, FLUSH (sync_data), GET_ID, DISCARD and WRITE_ZEROES
//! (both write zeroes). A read-only disk offers VIRTIO_BLK_F_RO and answers
//! writes with IOERR. Sectors are checked against the image size.
//!
//! The image of a running device can be replaced ([`BlockHandle::replace`],
//! Firecracker's PATCH /drives): requests from then on go to the new file
//! and the driver is told of the new capacity by a configuration change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

use crate::blk_image::ImageOptions;
use crate::chain::{serve_queue, serve_queue_gated, Chain, Segments, Served};
use crate::throttle::{Gate, Limits, ThrottleHandle};
use crate::worker::{Worker, WorkerCtl, WorkerHandler, BACKEND_TOKEN};
use crate::{
    read_config_bytes, Activation, DeviceError, Interrupt, VirtioDevice, F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC, F_VERSION_1, TYPE_BLOCK,
};

pub const SECTOR_SIZE: u64 = 512;
/// Bytes of the serial number GET_ID returns.
pub const ID_BYTES: usize = 20;

pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

const QUEUE_SIZES: &[u16] = &[256];
/// Largest transfer per host read/write.
const CHUNK: u64 = 256 << 10;
/// Segment limit advertised (descriptors of data per request).
const SEG_MAX: u32 = 254;
/// Most sectors per discard / write-zeroes segment.
const MAX_ZERO_SECTORS: u32 = 1 << 16;
/// Most segments per discard / write-zeroes request.
const MAX_ZERO_SEGS: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open the drive {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the size of disk image {path}")]
    Size {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disk ID {0:?} is longer than {ID_BYTES} bytes")]
    IdTooLong(String),
    #[error("disk image {path} is a {kind}: use a regular file or a block device")]
    NotADisk { path: PathBuf, kind: &'static str },
    #[error("disk image {path} is in use: {conflict}")]
    Locked {
        path: PathBuf,
        conflict: crate::blk_image::LockConflict,
    },
    #[error("disk image {path}: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: qcow2::Error,
    },
    #[error("disk image {path}: cache=none and directsync need O_DIRECT, which its filesystem does not support (use cache=writeback, or put the image elsewhere)")]
    NoDirect { path: PathBuf },
    #[error("cannot lock disk image {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Requests served, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCounters {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub errors: u64,
    pub unsupported: u64,
    /// Data bytes of the reads that succeeded.
    pub read_bytes: u64,
    /// Data bytes of the writes that succeeded.
    pub write_bytes: u64,
}

/// The image and what requests need of it, shared with the worker.
struct Disk {
    backend: Box<dyn qcow2::Backend>,
    /// How it was opened (a replacement is opened the same way).
    options: ImageOptions,
    size: u64,
    /// (device, inode) of the image.
    identity: (u64, u64),
    read_only: bool,
    id: [u8; ID_BYTES],
    /// The device's counters: the image that replaces this one keeps
    /// counting into them.
    counters: Arc<Mutex<BlockCounters>>,
    locks: crate::blk_image::ImageLocks,
}

/// The disk a device serves, which [`BlockHandle::replace`] swaps.
struct DiskSlot {
    disk: Mutex<Arc<Disk>>,
    /// The running device's interrupt (for the configuration change).
    interrupt: Mutex<Option<Arc<dyn Interrupt>>>,
}

impl DiskSlot {
    fn get(&self) -> Arc<Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Changes the image of a block device while it runs.
#[derive(Clone)]
pub struct BlockHandle(Arc<DiskSlot>);

impl BlockHandle {
    /// Serves the raw image at `path` from now on (read-only and ID as
    /// before); requests being served finish on the old one. Tells a
    /// running driver of the new capacity. Returns the new size in bytes.
    pub fn replace(&self, path: &Path) -> Result<u64, BlockError> {
        let old = self.0.get();
        let id = String::from_utf8_lossy(&old.id)
            .trim_end_matches('\0')
            .to_string();
        // A qcow2 image reopened as itself must find the old one's
        // metadata on disk, not in its caches.
        if let Err(e) = old.backend.flush() {
            tracing::warn!(error = %e, "cannot flush the disk image being replaced");
        }
        let new = Disk::open(
            path,
            old.read_only,
            old.options,
            &id,
            old.counters.clone(),
            Some(old.identity),
        )?;
        let size = new.size;
        *self.0.disk.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        let interrupt = self
            .0
            .interrupt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(interrupt) = interrupt {
            interrupt.signal_config();
        }
        Ok(size)
    }

    /// Makes the writes so far reach stable storage (fdatasync).
    pub fn flush(&self) -> std::io::Result<()> {
        self.0.get().flush()
    }

    /// Hands the image to another process (a live migration's
    /// destination): what was written reaches the image, then its locks
    /// are dropped. The device must be paused; the file stays open.
    pub fn release_locks(&self) -> std::io::Result<()> {
        let disk = self.0.get();
        disk.backend.flush()?;
        disk.locks.release()
    }

    /// Takes the image's locks back after [`BlockHandle::release_locks`]
    /// (the migration failed).
    pub fn retake_locks(&self) -> std::io::Result<()> {
        self.0.get().locks.retake()
    }

    /// The size of the image served now, in bytes.
    pub fn size(&self) -> u64 {
        self.0.get().size
    }

    /// The requests served since the device was built (across image
    /// replacements).
    pub fn counters(&self) -> BlockCounters {
        *self.0.get().counters()
    }
}

/// The block device's work on its thread.
struct Serve {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<dyn Interrupt>,
    disk: Arc<DiskSlot>,
    /// The drive's rate limiter.
    gate: Gate,
}

impl WorkerHandler for Serve {
    fn start(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        self.gate.register(ctl).map_err(DeviceError::Io)
    }

    fn park(&mut self) -> Option<Vec<crate::pause::QueuePosition>> {
        Some(vec![crate::worker::position(&self.queue)])
    }

    fn queue_event(&mut self, ctl: &WorkerCtl, queue: usize) -> Result<(), DeviceError> {
        if queue != 0 {
            return Err(DeviceError::NoQueue(queue));
        }
        if self.gate.blocked() {
            // The gate's timer serves the queue when tokens are back.
            return Ok(());
        }
        // The image of this pass: a replacement applies from the next one.
        let disk = self.disk.get();
        let (mem, gate) = (&self.mem, &mut self.gate);
        let served = serve_queue_gated(mem, &mut self.queue, 0, &*self.interrupt, |chain| {
            // Firecracker's costs: one op per request, and the data bytes
            // of reads and writes.
            gate.admit(disk.data_bytes(mem, chain), 1)
                .then(|| disk.request(mem, chain))
        })?;
        if served == Served::More {
            ctl.rearm(0);
        }
        Ok(())
    }

    fn backend_event(
        &mut self,
        ctl: &WorkerCtl,
        token: u64,
        _events: EventSet,
    ) -> Result<(), DeviceError> {
        if self.gate.event(token) {
            self.queue_event(ctl, 0)?;
        }
        Ok(())
    }
}

/// The block device.
pub struct Block {
    disk: Arc<DiskSlot>,
    worker: Option<Worker<Serve>>,
    throttle: ThrottleHandle,
}

impl Block {
    /// A block device on the raw image at `path`; `id` is what GET_ID
    /// returns (at most 20 bytes).
    pub fn open(path: &Path, read_only: bool, id: &str) -> Result<Block, BlockError> {
        Block::open_image(path, read_only, ImageOptions::default(), id)
    }

    /// A block device on the image at `path`, in the format and with the
    /// cache mode of `options`.
    pub fn open_image(
        path: &Path,
        read_only: bool,
        options: ImageOptions,
        id: &str,
    ) -> Result<Block, BlockError> {
        Ok(Block {
            disk: Arc::new(DiskSlot {
                disk: Mutex::new(Arc::new(Disk::open(
                    path,
                    read_only,
                    options,
                    id,
                    Arc::default(),
                    None,
                )?)),
                interrupt: Mutex::new(None),
            }),
            worker: None,
            throttle: ThrottleHandle::new(Limits::default()),
        })
    }

    /// The device with the rate limiter `limits` (none by default).
    pub fn limited(mut self, limits: Limits) -> Block {
        self.throttle = ThrottleHandle::new(limits);
        self
    }

    /// The rate limiter's handle: its limits, changed at run time, and
    /// how often requests waited (`rate_limiter_throttled_events`).
    pub fn throttle(&self) -> ThrottleHandle {
        self.throttle.clone()
    }

    /// The handle that replaces the image while the device runs.
    pub fn handle(&self) -> BlockHandle {
        BlockHandle(self.disk.clone())
    }

    pub fn counters(&self) -> BlockCounters {
        *self.disk.get().counters()
    }

    /// Serves the available requests of `queue` on the calling thread, as
    /// the device's worker does (for tests and the fuzz harness).
    pub fn serve(
        &self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
        interrupt: &dyn Interrupt,
    ) -> Result<Served, DeviceError> {
        self.disk.get().serve(mem, queue, interrupt)
    }
}

impl Disk {
    /// Opens, checks and locks the image (see [`crate::blk_image`]);
    /// `replacing` is the identity of the image this one replaces.
    fn open(
        path: &Path,
        read_only: bool,
        options: ImageOptions,
        id: &str,
        counters: Arc<Mutex<BlockCounters>>,
        replacing: Option<(u64, u64)>,
    ) -> Result<Disk, BlockError> {
        if id.len() > ID_BYTES {
            return Err(BlockError::IdTooLong(id.to_string()));
        }
        let mut id_bytes = [0u8; ID_BYTES];
        id_bytes[..id.len()].copy_from_slice(id.as_bytes());
        let crate::blk_image::Opened {
            backend,
            identity,
            locks,
        } = crate::blk_image::open_image(path, read_only, replacing, options)?;
        Ok(Disk {
            size: backend.size(),
            backend,
            options,
            identity,
            read_only,
            id: id_bytes,
            counters,
            locks,
        })
    }

    /// What was written reaches stable storage (nothing to do on a
    /// read-only image, nor with cache=unsafe).
    fn flush(&self) -> std::io::Result<()> {
        match self.read_only || self.options.cache.ignores_flush() {
            true => Ok(()),
            false => self.backend.flush(),
        }
    }

    /// After a write: cache=writethrough and directsync complete it only
    /// once it is on stable storage.
    fn written(&self) -> bool {
        !self.options.cache.write_through() || self.backend.flush().is_ok()
    }

    fn serve(
        &self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
        interrupt: &dyn Interrupt,
    ) -> Result<Served, DeviceError> {
        serve_queue(mem, queue, 0, interrupt, |chain| self.request(mem, chain))
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, BlockCounters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The data bytes of a request (reads and writes; 0 for the other
    /// requests and for malformed ones, which fail without touching data).
    fn data_bytes(&self, mem: &GuestMemoryMmap, chain: &Chain) -> u64 {
        let mut kind = [0u8; 4];
        if !chain.readable().read_at(mem, 0, &mut kind) {
            return 0;
        }
        match u32::from_le_bytes(kind) {
            T_IN => chain.writable().len().saturating_sub(1),
            T_OUT => chain.readable().len().saturating_sub(16),
            _ => 0,
        }
    }

    /// Serves one request; returns the bytes written into the chain.
    fn request(&self, mem: &GuestMemoryMmap, chain: &Chain) -> u32 {
        let input = chain.readable();
        let output = chain.writable();
        // The status byte is the last writable byte.
        let Some(status_at) = output.len().checked_sub(1) else {
            self.counters().errors += 1;
            return 0;
        };
        let mut header = [0u8; 16];
        let (status, data_written) = if !input.read_at(mem, 0, &mut header) {
            (S_IOERR, 0)
        } else {
            let kind = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
            let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
            self.execute(mem, kind, sector, &input, &output, status_at)
        };
        match status {
            S_OK => {}
            S_UNSUPP => self.counters().unsupported += 1,
            _ => self.counters().errors += 1,
        }
        if !output.write_at(mem, status_at, &[status]) {
            return 0;
        }
        (data_written + 1) as u32
    }

    /// Runs a request; returns its status and the data bytes it wrote.
    fn execute(
        &self,
        mem: &GuestMemoryMmap,
        kind: u32,
        sector: u64,
        input: &Segments,
        output: &Segments,
        data_out: u64,
    ) -> (u8, u64) {
        let data_in = input.len() - 16;
        match kind {
            T_IN => {
                self.counters().reads += 1;
                match self.range(sector, data_out) {
                    Some(start) => match self.read_into(mem, start, output, data_out) {
                        true => {
                            self.counters().read_bytes += data_out;
                            (S_OK, data_out)
                        }
                        false => (S_IOERR, 0),
                    },
                    None => (S_IOERR, 0),
                }
            }
            T_OUT => {
                self.counters().writes += 1;
                if self.read_only {
                    return (S_IOERR, 0);
                }
                match self.range(sector, data_in) {
                    Some(start) => {
                        let status = self.write_from(mem, start, input, data_in);
                        if status == S_OK {
                            self.counters().write_bytes += data_in;
                        }
                        (status, 0)
                    }
                    None => (S_IOERR, 0),
                }
            }
            T_FLUSH => {
                // Completed only once the data is on stable storage.
                self.counters().flushes += 1;
                if self.flush().is_ok() {
                    (S_OK, 0)
                } else {
                    (S_IOERR, 0)
                }
            }
            T_GET_ID => {
                let n = data_out.min(ID_BYTES as u64);
                if output.write_at(mem, 0, &self.id[..n as usize]) {
                    (S_OK, n)
                } else {
                    (S_IOERR, 0)
                }
            }
            T_DISCARD | T_WRITE_ZEROES if !self.read_only => {
                (self.write_zeroes(mem, input, data_in), 0)
            }
            T_DISCARD | T_WRITE_ZEROES => (S_IOERR, 0),
            _ => (S_UNSUPP, 0),
        }
    }

    /// The byte offset of `sector` if `len` bytes from there lie in the
    /// image and `len` is whole sectors.
    fn range(&self, sector: u64, len: u64) -> Option<u64> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return None;
        }
        let start = sector.checked_mul(SECTOR_SIZE)?;
        (start.checked_add(len)? <= self.size).then_some(start)
    }

    fn read_into(&self, mem: &GuestMemoryMmap, start: u64, out: &Segments, len: u64) -> bool {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK) as usize;
            let mut buf = vec![0u8; n];
            if self.backend.read_at(&mut buf, start + done).is_err()
                || !out.write_at(mem, done, &buf)
            {
                return false;
            }
            done += n as u64;
        }
        true
    }

    fn write_from(&self, mem: &GuestMemoryMmap, start: u64, input: &Segments, len: u64) -> u8 {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK) as usize;
            let mut buf = vec![0u8; n];
            if !input.read_at(mem, 16 + done, &mut buf)
                || self.backend.write_at(&buf, start + done).is_err()
            {
                return S_IOERR;
            }
            done += n as u64;
        }
        match self.written() {
            true => S_OK,
            false => S_IOERR,
        }
    }

    /// DISCARD and WRITE_ZEROES: segments of (sector u64, num_sectors u32,
    /// flags u32); both write zeroes.
    fn write_zeroes(&self, mem: &GuestMemoryMmap, input: &Segments, len: u64) -> u8 {
        if len == 0 || !len.is_multiple_of(16) || len / 16 > u64::from(MAX_ZERO_SEGS) {
            return S_IOERR;
        }
        for i in 0..len / 16 {
            let mut seg = [0u8; 16];
            if !input.read_at(mem, 16 + i * 16, &mut seg) {
                return S_IOERR;
            }
            let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap_or_default());
            let sectors = u32::from_le_bytes(seg[8..12].try_into().unwrap_or_default());
            let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap_or_default());
            if flags & !1 != 0 || sectors > MAX_ZERO_SECTORS {
                return S_UNSUPP;
            }
            let bytes = u64::from(sectors) * SECTOR_SIZE;
            let Some(start) = self.range(sector, bytes) else {
                return S_IOERR;
            };
            if self.backend.write_zeroes(start, bytes).is_err() {
                return S_IOERR;
            }
        }
        match self.written() {
            true => S_OK,
            false => S_IOERR,
        }
    }
}

impl Drop for Disk {
    /// An image replaced (or the device gone) keeps nothing unflushed.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "cannot flush a disk image being closed");
        }
    }
}

/// The configuration space (virtio 1.2, 5.2.4) of a disk of `capacity`
/// sectors.
fn config_space(capacity: u64) -> Vec<u8> {
    let mut c = vec![0u8; 60];
    c[0..8].copy_from_slice(&capacity.to_le_bytes());
    c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
    c[34..36].copy_from_slice(&1u16.to_le_bytes()); // num_queues
    c[36..40].copy_from_slice(&MAX_ZERO_SECTORS.to_le_bytes()); // max_discard_sectors
    c[40..44].copy_from_slice(&MAX_ZERO_SEGS.to_le_bytes()); // max_discard_seg
    c[44..48].copy_from_slice(&1u32.to_le_bytes()); // discard_sector_alignment
    c[48..52].copy_from_slice(&MAX_ZERO_SECTORS.to_le_bytes()); // max_write_zeroes_sectors
    c[52..56].copy_from_slice(&MAX_ZERO_SEGS.to_le_bytes()); // max_write_zeroes_seg
    c
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }
    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }
    fn features(&self) -> u64 {
        let base = F_VERSION_1 | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX | F_SEG_MAX | F_FLUSH;
        if self.disk.get().read_only {
            base | F_RO
        } else {
            base | F_DISCARD | F_WRITE_ZEROES
        }
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let capacity = self.disk.get().size / SECTOR_SIZE;
        read_config_bytes(&config_space(capacity), offset, data);
    }
    fn activate(&mut self, activation: Activation) -> Result<(), DeviceError> {
        self.reset();
        let [queue] = crate::ready_queues(activation.queues)?;
        *self
            .disk
            .interrupt
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(activation.interrupt.clone());
        let serve = Serve {
            mem: activation.mem,
            queue,
            interrupt: activation.interrupt.clone(),
            disk: self.disk.clone(),
            gate: Gate::new(&self.throttle, BACKEND_TOKEN).map_err(DeviceError::Io)?,
        };
        self.worker = Some(Worker::spawn(
            sandbox::ThreadKind::VirtioBlk,
            activation.queue_events,
            activation.interrupt,
            serve,
        )?);
        Ok(())
    }
    fn reset(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop();
        }
        *self
            .disk
            .interrupt
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod replace_tests {
    use super::*;

    #[test]
    fn replacing_the_image_changes_the_capacity_and_keeps_the_rest() {
        let dir =
            std::env::temp_dir().join(format!("ferrovisor-blk-replace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.img"), dir.join("b.img"));
        std::fs::write(&a, vec![0u8; 4096]).unwrap();
        std::fs::write(&b, vec![0u8; 8192]).unwrap();
        let block = Block::open(&a, true, "disk0").unwrap();
        let capacity = |block: &Block| {
            let mut c = [0u8; 8];
            block.read_config(0, &mut c);
            u64::from_le_bytes(c)
        };
        assert_eq!(capacity(&block), 8);
        let handle = block.handle();
        assert_eq!(handle.replace(&b).unwrap(), 8192);
        assert_eq!(capacity(&block), 16);
        assert_eq!(handle.size(), 8192);
        assert_ne!(block.features() & F_RO, 0, "still read-only");
        assert_eq!(&block.disk.get().id[..5], b"disk0");
        assert!(handle.replace(&dir.join("missing.img")).is_err());
        assert_eq!(capacity(&block), 16, "a failed replace changes nothing");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
