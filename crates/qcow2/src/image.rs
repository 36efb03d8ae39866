//! A qcow2 image: cluster mapping, reads, copy-on-write writes, and the
//! ordered write-back of its metadata.

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use crate::cache::Cache;
use crate::compress::inflate_cluster;
use crate::header::{Header, AUTOCLEAR_AT};
use crate::raw::RawFile;
use crate::{backing, corrupt, Backend, Error, OpenFile};

/// L1 and L2 entry bits.
mod references;

const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const ZERO: u64 = 1;
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Cached L2 tables and refcount blocks (at most 2 MiB each).
const L2_CACHE: usize = 32;
const REFBLOCK_CACHE: usize = 8;

/// Which metadata cache.
#[derive(Clone, Copy)]
pub(crate) enum Meta {
    L2,
    Refblock,
}

/// Where the bytes of a guest cluster are.
#[derive(Clone, Copy, Debug)]
enum Mapping {
    /// In the backing file (or zero without one).
    Unallocated,
    /// Zeroes (v3); the cluster may still own a host cluster.
    Zero(Option<u64>),
    Data(u64),
    /// Compressed: host offset and stored length in bytes.
    Compressed(u64, u64),
}

impl Mapping {
    /// The host bytes this mapping holds a reference to.
    fn owned(self, cs: u64) -> Option<(u64, u64)> {
        match self {
            Mapping::Unallocated | Mapping::Zero(None) => None,
            Mapping::Zero(Some(h)) | Mapping::Data(h) => Some((h, cs)),
            Mapping::Compressed(h, len) => Some((h, len)),
        }
    }
}

pub(crate) struct State {
    pub file: RawFile,
    pub h: Header,
    pub cs: u64,
    pub writable: bool,
    l1: Vec<u64>,
    l1_dirty: bool,
    l2: Cache,
    pub reftable: Vec<u64>,
    pub reftable_dirty: bool,
    refblocks: Cache,
    /// Host byte ranges that lose one reference once the tables that no
    /// longer point at them are on disk.
    pending_free: Vec<(u64, u64)>,
    /// Where the next cluster is allocated.
    pub end: u64,
    /// Clusters holding metadata: a data write there is refused.
    pub metadata: HashSet<u64>,
    backing: Option<Box<dyn Backend>>,
    /// Writing back metadata now (a full cache writes its victim directly).
    in_flush: bool,
    /// The last compressed cluster inflated (host offset, bytes).
    inflated: Option<(u64, Vec<u8>)>,
    /// Newly allocated clusters of the current write, contiguous in the
    /// file, written at once (before any metadata that points at them).
    staged: Option<(u64, Vec<u8>)>,
}

/// Most bytes staged before they are written.
const STAGE_MAX: usize = 1 << 20;

/// A qcow2 image.
pub struct Qcow2 {
    state: Mutex<State>,
    size: u64,
}

fn be64_table(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

fn table_bytes(table: &[u64], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    for (o, v) in out.chunks_exact_mut(8).zip(table) {
        o.copy_from_slice(&v.to_be_bytes());
    }
    out
}

fn entry(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&data[i * 8..i * 8 + 8]);
    u64::from_be_bytes(b)
}

impl Qcow2 {
    /// Opens the qcow2 image in `file` (at `path`, which relative backing
    /// names are relative to); backing files are opened by `open_backing`
    /// (read-only, locked by the caller).
    pub fn open(
        file: RawFile,
        path: &Path,
        writable: bool,
        open_backing: &OpenFile,
    ) -> Result<Qcow2, Error> {
        Qcow2::open_in_chain(file, path, writable, open_backing, 1)
    }

    pub(crate) fn open_in_chain(
        file: RawFile,
        path: &Path,
        writable: bool,
        open_backing: &OpenFile,
        depth: usize,
    ) -> Result<Qcow2, Error> {
        let len = file.file_len().map_err(|source| Error::Io {
            what: "the image size",
            source,
        })?;
        let h = Header::read(&file, len, writable)?;
        let cs = h.cluster_size();
        let io = |what| move |source| Error::Io { what, source };
        let mut l1 = vec![0u8; (h.l1_size * 8) as usize];
        file.read_exact_at(&mut l1, h.l1_offset)
            .map_err(io("the L1 table"))?;
        let l1 = be64_table(&l1);
        let mut rt = vec![0u8; (h.reftable_clusters * cs) as usize];
        file.read_exact_at(&mut rt, h.reftable_offset)
            .map_err(io("the refcount table"))?;
        let reftable = be64_table(&rt);
        let mut metadata = HashSet::new();
        metadata.insert(0);
        for (start, bytes) in [
            (h.l1_offset, h.l1_size * 8),
            (h.reftable_offset, h.reftable_clusters * cs),
        ] {
            let mut c = start;
            while c < start + bytes {
                metadata.insert(c);
                c += cs;
            }
        }
        let l2_tables: HashSet<u64> = l1
            .iter()
            .map(|e| e & OFFSET_MASK & !(cs - 1))
            .filter(|&o| o != 0)
            .collect();
        let refblocks: HashSet<u64> = reftable
            .iter()
            .map(|e| e & !0x1ff & !(cs - 1))
            .filter(|&o| o != 0)
            .collect();
        // A table inside another one would be overwritten by it when the
        // metadata is written back (found by fuzzing: an L2 table in the
        // L1 table's second cluster lost the guest's writes at close).
        if let Some(o) = l2_tables
            .iter()
            .chain(&refblocks)
            .find(|o| metadata.contains(o))
        {
            return Err(Error::Invalid(format!(
                "the table at {o:#x} overlaps the header, the L1 table or the refcount table"
            )));
        }
        if let Some(o) = l2_tables.intersection(&refblocks).next() {
            return Err(Error::Invalid(format!(
                "the cluster at {o:#x} is both an L2 table and a refcount block"
            )));
        }
        metadata.extend(l2_tables);
        metadata.extend(refblocks);
        if writable && h.autoclear != 0 {
            // Features we do not keep up to date: clear them, QEMU's rule.
            file.write_all_at(&[0u8; 8], AUTOCLEAR_AT)
                .and_then(|()| file.sync_data())
                .map_err(io("(write) the autoclear features"))?;
        }
        let backing = backing::open_chain(&h, path, open_backing, depth)?;
        let size = h.size;
        let mut state = State {
            end: len.div_ceil(cs) * cs,
            file,
            cs,
            writable,
            l1,
            l1_dirty: false,
            l2: Cache::new(L2_CACHE),
            reftable,
            reftable_dirty: false,
            refblocks: Cache::new(REFBLOCK_CACHE),
            pending_free: Vec::new(),
            metadata,
            backing,
            in_flush: false,
            inflated: None,
            staged: None,
            h,
        };
        if writable {
            state.check_references()?;
        }
        Ok(Qcow2 {
            state: Mutex::new(state),
            size,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "request past the end of the qcow2 image",
            )),
        }
    }

    /// Calls `f` on each cluster-sized piece of `len` bytes from
    /// `offset`: (guest offset, offset in the request, piece length).
    fn pieces(
        &self,
        st: &mut State,
        offset: u64,
        len: u64,
        mut f: impl FnMut(&mut State, u64, usize, usize) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut done = 0;
        while done < len {
            let at = offset + done;
            let n = (st.cs - at % st.cs).min(len - done);
            f(st, at, done as usize, n as usize)?;
            done += n;
        }
        Ok(())
    }

    /// The image's format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.state().h.version
    }
}

impl Backend for Qcow2 {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len())?;
        let mut st = self.state();
        let len = buf.len();
        let mut done = 0;
        while done < len {
            let at = offset + done as u64;
            let mut n = (st.cs - at % st.cs).min((len - done) as u64) as usize;
            let m = st.mapping(at)?;
            if let Mapping::Data(h) = m {
                // Clusters that follow each other in the file too are
                // read at once (sequentially written images are so).
                let host = h + at % st.cs;
                while done + n < len {
                    let next = at + n as u64;
                    match st.mapping(next)? {
                        Mapping::Data(h2) if h2 == host + n as u64 => {
                            n += (st.cs as usize).min(len - done - n);
                        }
                        _ => break,
                    }
                }
                st.file
                    .read_exact_at(&mut buf[done..done + n], host)
                    .map_err(|e| {
                        if e.kind() == io::ErrorKind::UnexpectedEof {
                            corrupt(format!("data cluster at {h:#x} past the end of the file"))
                        } else {
                            e
                        }
                    })?;
            } else {
                st.read_mapped(m, at, &mut buf[done..done + n])?;
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len())?;
        let mut st = self.state();
        st.writable()?;
        let r = self.pieces(&mut st, offset, buf.len() as u64, |st, at, from, n| {
            st.write_piece(at, &buf[from..from + n])
        });
        r.and(st.write_staged())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, usize::try_from(len).unwrap_or(usize::MAX))?;
        let mut st = self.state();
        st.writable()?;
        let r = self.pieces(&mut st, offset, len, |st, at, _, n| st.zero_piece(at, n));
        r.and(st.write_staged())
    }

    fn flush(&self) -> io::Result<()> {
        let mut st = self.state();
        if !st.writable {
            return Ok(());
        }
        st.write_back()?;
        st.file.sync_data()
    }
}

impl Drop for Qcow2 {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if st.writable {
            if let Err(e) = st.write_back().and_then(|()| st.file.sync_data()) {
                tracing::error!(error = %e, "cannot write back the metadata of a qcow2 image being closed");
            }
        }
    }
}

impl State {
    fn writable(&self) -> io::Result<()> {
        match self.writable {
            true => Ok(()),
            false => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "qcow2 image opened read-only",
            )),
        }
    }

    pub(crate) fn cache(&mut self, which: Meta) -> &mut Cache {
        match which {
            Meta::L2 => &mut self.l2,
            Meta::Refblock => &mut self.refblocks,
        }
    }

    /// Makes room in a full cache: its least recently used entry goes,
    /// after the metadata is written back if it was dirty.
    fn make_room(&mut self, which: Meta) -> io::Result<()> {
        if !self.cache(which).is_full() {
            return Ok(());
        }
        let Some(victim) = self.cache(which).victim() else {
            return Ok(());
        };
        let dirty = self.cache(which).get(victim).is_some_and(|e| e.dirty);
        if dirty {
            if self.in_flush {
                // Writing back: the order of the steps is kept by the
                // caller, this table may go out now.
                if let Some(e) = self.cache(which).get(victim) {
                    let data = std::mem::take(&mut e.data);
                    self.file.write_all_at(&data, victim)?;
                }
            } else {
                self.write_back()?;
            }
        }
        self.cache(which).remove(victim);
        Ok(())
    }

    /// Loads the metadata cluster at `offset` into its cache.
    pub(crate) fn load(&mut self, which: Meta, offset: u64) -> io::Result<()> {
        if self.cache(which).contains(offset) {
            return Ok(());
        }
        self.make_room(which)?;
        let mut data = vec![0u8; self.cs as usize];
        self.file.read_exact_at(&mut data, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                corrupt(format!(
                    "metadata table at {offset:#x} past the end of the file"
                ))
            } else {
                e
            }
        })?;
        self.cache(which).insert(offset, data, false);
        Ok(())
    }

    /// Puts a new, dirty metadata cluster into its cache.
    pub(crate) fn insert(&mut self, which: Meta, offset: u64, data: Vec<u8>) -> io::Result<()> {
        self.make_room(which)?;
        self.cache(which).insert(offset, data, true);
        Ok(())
    }

    fn l1_index(&self, at: u64) -> usize {
        (at >> (2 * self.h.cluster_bits - 3)) as usize
    }

    fn l2_index(&self, at: u64) -> usize {
        ((at >> self.h.cluster_bits) & (self.h.l2_entries() - 1)) as usize
    }

    /// The L2 table for guest offset `at`, loaded (0: none).
    fn l2_table(&mut self, at: u64) -> io::Result<u64> {
        let Some(&e) = self.l1.get(self.l1_index(at)) else {
            return Ok(0);
        };
        let offset = e & OFFSET_MASK;
        if offset == 0 {
            return Ok(0);
        }
        if !offset.is_multiple_of(self.cs) {
            return Err(corrupt(format!("L2 table at unaligned offset {offset:#x}")));
        }
        self.load(Meta::L2, offset)?;
        Ok(offset)
    }

    fn l2_entry(&mut self, table: u64, i: usize) -> io::Result<u64> {
        let e = self.l2.get(table).ok_or_else(lost)?;
        Ok(entry(&e.data, i))
    }

    fn set_l2_entry(&mut self, table: u64, i: usize, value: u64) -> io::Result<()> {
        self.load(Meta::L2, table)?;
        let e = self.l2.get(table).ok_or_else(lost)?;
        e.data[i * 8..i * 8 + 8].copy_from_slice(&value.to_be_bytes());
        e.dirty = true;
        Ok(())
    }

    fn decode(&self, e: u64) -> io::Result<Mapping> {
        let cb = self.h.cluster_bits;
        if e & COMPRESSED != 0 {
            let x = 62 - (cb - 8);
            let offset = e & ((1 << x) - 1);
            let sectors = (e >> x) & ((1 << (cb - 8)) - 1);
            let len = (sectors + 1) * 512 - (offset & 511);
            return Ok(Mapping::Compressed(offset, len));
        }
        let offset = e & OFFSET_MASK;
        if offset != 0 && !offset.is_multiple_of(self.cs) {
            return Err(corrupt(format!(
                "data cluster at unaligned offset {offset:#x}"
            )));
        }
        Ok(if self.h.version >= 3 && e & ZERO != 0 {
            Mapping::Zero((offset != 0).then_some(offset))
        } else if offset == 0 {
            Mapping::Unallocated
        } else {
            Mapping::Data(offset)
        })
    }

    fn mapping(&mut self, at: u64) -> io::Result<Mapping> {
        let table = self.l2_table(at)?;
        if table == 0 {
            return Ok(Mapping::Unallocated);
        }
        let e = self.l2_entry(table, self.l2_index(at))?;
        self.decode(e)
    }

    /// Reads `buf` (within one cluster) at guest offset `at` from `m`.
    fn read_mapped(&mut self, m: Mapping, at: u64, buf: &mut [u8]) -> io::Result<()> {
        let within = at % self.cs;
        match m {
            Mapping::Unallocated => self.read_backing(buf, at),
            Mapping::Zero(_) => {
                buf.fill(0);
                Ok(())
            }
            Mapping::Data(h) => self.file.read_exact_at(buf, h + within).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    corrupt(format!("data cluster at {h:#x} past the end of the file"))
                } else {
                    e
                }
            }),
            Mapping::Compressed(h, len) => {
                if self.inflated.as_ref().is_none_or(|(o, _)| *o != h) {
                    if h >= self.file.file_len()? {
                        return Err(corrupt(format!(
                            "compressed cluster at {h:#x} past the end of the file"
                        )));
                    }
                    let mut input = vec![0u8; len as usize];
                    self.file.read_or_zero_at(&mut input, h)?;
                    let mut out = vec![0u8; self.cs as usize];
                    inflate_cluster(&input, &mut out)?;
                    self.inflated = Some((h, out));
                }
                let (_, data) = self.inflated.as_ref().ok_or_else(lost)?;
                let w = within as usize;
                buf.copy_from_slice(&data[w..w + buf.len()]);
                Ok(())
            }
        }
    }

    /// Reads from the backing file (zeroes past its end, or without one).
    fn read_backing(&mut self, buf: &mut [u8], at: u64) -> io::Result<()> {
        let Some(backing) = &self.backing else {
            buf.fill(0);
            return Ok(());
        };
        let have = backing.size().saturating_sub(at).min(buf.len() as u64) as usize;
        buf[have..].fill(0);
        if have > 0 {
            backing.read_at(&mut buf[..have], at)?;
        }
        Ok(())
    }

    /// The L2 table for guest offset `at`, made if there is none.
    fn l2_table_for_write(&mut self, at: u64) -> io::Result<u64> {
        let i = self.l1_index(at);
        let e = *self
            .l1
            .get(i)
            .ok_or_else(|| corrupt("L1 table too small"))?;
        let offset = e & OFFSET_MASK;
        if offset != 0 {
            if e & COPIED == 0 {
                // Only a table with one reference may change in place.
                if self.refcount(offset >> self.h.cluster_bits)? != 1 {
                    return Err(corrupt("shared L2 table (internal snapshot)"));
                }
                self.l1[i] = offset | COPIED;
                self.l1_dirty = true;
            }
            return self.l2_table(at);
        }
        let table = self.alloc_cluster()?;
        self.insert(Meta::L2, table, vec![0u8; self.cs as usize])?;
        self.metadata.insert(table);
        self.l1[i] = table | COPIED;
        self.l1_dirty = true;
        Ok(table)
    }

    /// Writes `data` (within one cluster) at guest offset `at`.
    fn write_piece(&mut self, at: u64, data: &[u8]) -> io::Result<()> {
        let table = self.l2_table_for_write(at)?;
        let i = self.l2_index(at);
        let e = self.l2_entry(table, i)?;
        let m = self.decode(e)?;
        let within = at % self.cs;
        if let Mapping::Data(h) = m {
            if e & COPIED != 0 {
                if self.metadata.contains(&h) {
                    return Err(corrupt(format!(
                        "data cluster at {h:#x} overlaps the image's metadata"
                    )));
                }
                if h >= self.end {
                    // Not allocated by anyone: writing there would grow
                    // the file to wherever the image says.
                    return Err(corrupt(format!(
                        "data cluster at {h:#x} past the end of the file"
                    )));
                }
                return self.file.write_all_at(data, h + within);
            }
        }
        // Copy on write: the whole cluster, old bytes around the new.
        let cluster = if data.len() as u64 == self.cs {
            data.to_vec()
        } else {
            let mut c = vec![0u8; self.cs as usize];
            self.read_mapped(m, at - within, &mut c)?;
            c[within as usize..within as usize + data.len()].copy_from_slice(data);
            c
        };
        let new = self.alloc_cluster()?;
        self.stage(new, cluster)?;
        self.set_l2_entry(table, i, new | COPIED)?;
        if let Some(old) = m.owned(self.cs) {
            self.pending_free.push(old);
        }
        Ok(())
    }

    /// Makes `len` bytes (within one cluster) at guest offset `at` read
    /// as zeroes.
    fn zero_piece(&mut self, at: u64, len: usize) -> io::Result<()> {
        let m = self.mapping(at)?;
        let reads_zero = match m {
            Mapping::Zero(_) => true,
            Mapping::Unallocated => self.backing.as_ref().is_none_or(|b| at >= b.size()),
            _ => false,
        };
        if reads_zero {
            return Ok(());
        }
        if self.h.version >= 3 && len as u64 == self.cs {
            let table = self.l2_table_for_write(at)?;
            self.set_l2_entry(table, self.l2_index(at), ZERO)?;
            if let Some(old) = m.owned(self.cs) {
                self.pending_free.push(old);
            }
            return Ok(());
        }
        self.write_piece(at, &vec![0u8; len])
    }

    /// Queues `cluster` for the file at `host`: joined to the staged
    /// clusters if it follows them, else they are written first.
    fn stage(&mut self, host: u64, cluster: Vec<u8>) -> io::Result<()> {
        if let Some((start, data)) = &mut self.staged {
            if *start + data.len() as u64 == host && data.len() < STAGE_MAX {
                data.extend_from_slice(&cluster);
                return Ok(());
            }
        }
        self.write_staged()?;
        self.staged = Some((host, cluster));
        Ok(())
    }

    /// Writes the staged clusters.
    fn write_staged(&mut self) -> io::Result<()> {
        match self.staged.take() {
            Some((host, data)) => self.file.write_all_at(&data, host),
            None => Ok(()),
        }
    }

    /// Writes the cached metadata back, in crash-safe order.
    pub(crate) fn write_back(&mut self) -> io::Result<()> {
        self.in_flush = true;
        let r = self.write_back_steps();
        self.in_flush = false;
        r
    }

    fn write_dirty(&mut self, which: Meta) -> io::Result<bool> {
        let dirty = self.cache(which).dirty();
        for &offset in &dirty {
            if let Some(e) = self.cache(which).get(offset) {
                let data = std::mem::take(&mut e.data);
                let r = self.file.write_all_at(&data, offset);
                if let Some(e) = self.cache(which).get(offset) {
                    e.data = data;
                    if r.is_ok() {
                        e.dirty = false;
                    }
                }
                r?;
            }
        }
        Ok(!dirty.is_empty())
    }

    fn write_back_steps(&mut self) -> io::Result<()> {
        // 0. Guest data before anything that points at it.
        self.write_staged()?;
        // 1. New counts (and new refcount blocks before the table entry
        //    that points at them).
        self.write_dirty(Meta::Refblock)?;
        if self.reftable_dirty {
            self.file.sync_data()?;
            let bytes = table_bytes(
                &self.reftable,
                (self.h.reftable_clusters * self.cs) as usize,
            );
            self.file.write_all_at(&bytes, self.h.reftable_offset)?;
            self.reftable_dirty = false;
        }
        // 2. Counts and guest data on disk before the tables point at
        //    them; L2 tables before the L1 entries.
        if self.l2.any_dirty() || self.l1_dirty {
            self.file.sync_data()?;
            self.write_dirty(Meta::L2)?;
            if self.l1_dirty {
                self.file.sync_data()?;
                let bytes = table_bytes(&self.l1, (self.h.l1_size * 8) as usize);
                self.file.write_all_at(&bytes, self.h.l1_offset)?;
                self.l1_dirty = false;
            }
        }
        // 3. References no table holds any more.
        if !self.pending_free.is_empty() {
            self.file.sync_data()?;
            for (offset, len) in std::mem::take(&mut self.pending_free) {
                if let Err(e) = self.free_range(offset, len) {
                    // A leak at worst; the image stays usable.
                    tracing::warn!(error = %e, "qcow2: cannot drop a reference");
                }
            }
            self.write_dirty(Meta::Refblock)?;
        }
        Ok(())
    }
}

fn lost() -> io::Error {
    io::Error::other("qcow2 metadata cache lost a loaded table")
}
