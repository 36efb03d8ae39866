//! The snapshot memory file: guest RAM as one raw file, the regions one
//! after the other ([`MemoryRegion`] order). A full snapshot writes every
//! page that is not all zero into a fresh file of the guest's size (zero
//! pages stay holes, which read as zeros: an idle guest's untouched memory
//! costs no space, and, where the process never touched it, no time: the
//! page map says so without reading it); a diff snapshot writes only the pages the accelerator logged as
//! dirty since the previous snapshot (or the start), into a sparse file of
//! the same size, which [`merge_diff`] lays onto its base. A load maps the
//! file MAP_PRIVATE: pages come in on first touch and the guest's writes
//! stay in the process.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::Path;

use hv::Vm;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};
use vmm_sys_util::seek_hole::SeekHole;

use super::format::MemoryRegion;

/// Pages of the dirty log.
pub const PAGE_SIZE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    #[error("memory file {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot copy guest memory to {path}")]
    Guest {
        path: String,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("the memory file {path} has {found} bytes; the snapshot's guest has {expected}")]
    Size {
        path: String,
        found: u64,
        expected: u64,
    },
    #[error("cannot map the memory file {path}")]
    Map { path: String, detail: String },
    #[error("cannot read the dirty-page log of memory slot {slot}")]
    DirtyLog {
        slot: u32,
        #[source]
        source: hv::HvError,
    },
}

/// The regions of `mem`, in order.
pub fn layout(mem: &GuestMemoryMmap) -> Vec<MemoryRegion> {
    mem.iter()
        .map(|r| MemoryRegion {
            gpa: r.start_addr().0,
            size: r.len(),
        })
        .collect()
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> MemoryFileError + '_ {
    move |source| MemoryFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn create(path: &Path, size: u64) -> Result<File, MemoryFileError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io(path))?;
    file.set_len(size).map_err(io(path))?;
    Ok(file)
}

fn copy_out(
    mem: &GuestMemoryMmap,
    file: &mut File,
    path: &Path,
    gpa: u64,
    offset: u64,
    len: u64,
) -> Result<(), MemoryFileError> {
    file.seek(SeekFrom::Start(offset)).map_err(io(path))?;
    mem.write_all_volatile_to(GuestAddress(gpa), file, len as usize)
        .map_err(|source| MemoryFileError::Guest {
            path: path.display().to_string(),
            source,
        })
}

/// Guest memory goes to a full snapshot through a buffer of this size.
const CHUNK: usize = 1 << 20;

/// Whether `page` holds only zeros (compared 8 bytes at a time).
fn is_zero(page: &[u8]) -> bool {
    page.chunks(8).all(|w| {
        <[u8; 8]>::try_from(w).map_or_else(
            |_| w.iter().all(|&b| b == 0),
            |w| u64::from_ne_bytes(w) == 0,
        )
    })
}

/// This process's page map (`/proc/self/pagemap`): which pages of its
/// anonymous memory were never touched.
pub(crate) struct PageMap(File);

impl PageMap {
    pub(crate) fn open() -> Option<PageMap> {
        File::open("/proc/self/pagemap").ok().map(PageMap)
    }

    /// Whether none of the `len` bytes at host address `host` (page
    /// aligned) is present or swapped out: anonymous memory in that state
    /// was never written and reads as zeros. False when the map cannot
    /// be read.
    pub(crate) fn untouched(&self, host: usize, len: usize) -> bool {
        use std::os::unix::fs::FileExt;
        const PRESENT: u64 = 1 << 63;
        const SWAPPED: u64 = 1 << 62;
        let pages = len.div_ceil(PAGE_SIZE as usize);
        let mut entries = vec![0u8; pages * 8];
        let at = (host / PAGE_SIZE as usize * 8) as u64;
        if self.0.read_exact_at(&mut entries, at).is_err() {
            return false;
        }
        entries.chunks_exact(8).all(|e| {
            let e = u64::from_ne_bytes(e.try_into().unwrap_or([0xff; 8]));
            e & (PRESENT | SWAPPED) == 0
        })
    }
}

/// Writes the pages of `len` bytes of `mem` at `gpa` that are not all
/// zero to `offset` onwards of `file`, a fresh file (zero pages stay
/// holes). With `pagemap` (the region is anonymous memory of this
/// process), chunks the process never touched are skipped unread.
fn copy_out_data(
    mem: &GuestMemoryMmap,
    file: &File,
    path: &Path,
    (gpa, offset, len): (u64, u64, u64),
    pagemap: Option<&PageMap>,
) -> Result<(), MemoryFileError> {
    use std::os::unix::fs::FileExt;
    let page = PAGE_SIZE as usize;
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK as u64) as usize;
        let host = mem.get_host_address(GuestAddress(gpa + done)).ok();
        if let (Some(map), Some(host)) = (pagemap, host) {
            if map.untouched(host as usize, n) {
                done += n as u64;
                continue;
            }
        }
        let chunk = &mut buf[..n];
        mem.read_slice(chunk, GuestAddress(gpa + done))
            .map_err(|source| MemoryFileError::Guest {
                path: path.display().to_string(),
                source,
            })?;
        let next = |i: usize| (i + page).min(n);
        let mut i = 0;
        while i < n {
            if is_zero(&chunk[i..next(i)]) {
                i = next(i);
                continue;
            }
            let start = i;
            while i < n && !is_zero(&chunk[i..next(i)]) {
                i = next(i);
            }
            file.write_all_at(&chunk[start..i], offset + done + start as u64)
                .map_err(io(path))?;
        }
        done += n as u64;
    }
    Ok(())
}

/// Writes every page of `mem` that is not all zero to `path`, a file of
/// the guest's size. Returns that size. `filled_here`: no page server
/// fills `mem` (a Uffd restore's pages come in from one when touched),
/// so what this process never touched of its anonymous regions is zero.
pub fn write_full(
    mem: &GuestMemoryMmap,
    path: &Path,
    filled_here: bool,
) -> Result<u64, MemoryFileError> {
    let regions = layout(mem);
    let total = regions.iter().map(|r| r.size).sum();
    let file = create(path, total)?;
    let pagemap = PageMap::open().filter(|_| filled_here);
    let mut offset = 0;
    for (r, region) in regions.iter().zip(mem.iter()) {
        // Only anonymous memory reads as zeros where never touched (a
        // file's pages may simply not be loaded yet).
        let map = pagemap.as_ref().filter(|_| region.file_offset().is_none());
        copy_out_data(mem, &file, path, (r.gpa, offset, r.size), map)?;
        offset += r.size;
    }
    file.sync_all().map_err(io(path))?;
    Ok(total)
}

/// Writes the pages `vm` logged as dirty (memory slot n = region n of
/// `mem`) to a sparse file at `path` of the full size; the log restarts.
/// Returns the bytes written.
pub fn write_diff(vm: &dyn Vm, mem: &GuestMemoryMmap, path: &Path) -> Result<u64, MemoryFileError> {
    let regions = layout(mem);
    let total = regions.iter().map(|r| r.size).sum();
    let mut file = create(path, total)?;
    let mut offset = 0;
    let mut written = 0;
    for (slot, r) in regions.iter().enumerate() {
        let slot = slot as u32;
        let log = vm
            .get_dirty_log(slot)
            .map_err(|source| MemoryFileError::DirtyLog { slot, source })?;
        let pages = r.size / PAGE_SIZE;
        let dirty = |p: u64| {
            log.get((p / 64) as usize)
                .is_some_and(|w| w >> (p % 64) & 1 != 0)
        };
        let mut p = 0;
        while p < pages {
            if !dirty(p) {
                p += 1;
                continue;
            }
            let start = p;
            while p < pages && dirty(p) {
                p += 1;
            }
            let len = (p - start) * PAGE_SIZE;
            copy_out(
                mem,
                &mut file,
                path,
                r.gpa + start * PAGE_SIZE,
                offset + start * PAGE_SIZE,
                len,
            )?;
            written += len;
        }
        offset += r.size;
    }
    file.sync_all().map_err(io(path))?;
    Ok(written)
}

/// Maps the memory file at `path` as the guest RAM `regions` describe,
/// MAP_PRIVATE (nothing is read now; the guest's writes never reach the
/// file). Refuses a file of another size.
pub fn map_private(
    path: &Path,
    regions: &[MemoryRegion],
) -> Result<GuestMemoryMmap, MemoryFileError> {
    let expected: u64 = regions.iter().map(|r| r.size).sum();
    let file = File::open(path).map_err(io(path))?;
    let found = file.metadata().map_err(io(path))?.len();
    if found != expected {
        return Err(MemoryFileError::Size {
            path: path.display().to_string(),
            found,
            expected,
        });
    }
    let map_err = |detail: String| MemoryFileError::Map {
        path: path.display().to_string(),
        detail,
    };
    let mut mapped = Vec::with_capacity(regions.len());
    let mut offset = 0;
    for r in regions {
        let fd = file.try_clone().map_err(io(path))?;
        let region = MmapRegionBuilder::new(r.size as usize)
            .with_file_offset(FileOffset::new(fd, offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| map_err(e.to_string()))?;
        let region = GuestRegionMmap::new(region, GuestAddress(r.gpa))
            .ok_or_else(|| map_err(format!("region at {:#x} overflows", r.gpa)))?;
        mapped.push(region);
        offset += r.size;
    }
    GuestMemoryMmap::from_regions(mapped).map_err(|e| map_err(e.to_string()))
}

/// Lays the data of the sparse diff memory file `diff` onto the full
/// memory file `base` (same size), in place: only the diff's data ranges
/// (SEEK_DATA/SEEK_HOLE) are copied. Returns the bytes copied.
pub fn merge_diff(base: &Path, diff: &Path) -> Result<u64, MemoryFileError> {
    let mut src = File::open(diff).map_err(io(diff))?;
    let mut dst = OpenOptions::new()
        .write(true)
        .open(base)
        .map_err(io(base))?;
    let size = src.metadata().map_err(io(diff))?.len();
    let base_size = dst.metadata().map_err(io(base))?.len();
    if size != base_size {
        return Err(MemoryFileError::Size {
            path: diff.display().to_string(),
            found: size,
            expected: base_size,
        });
    }
    let mut pos = 0;
    let mut copied = 0;
    while pos < size {
        let Some(start) = src.seek_data(pos).map_err(io(diff))? else {
            break;
        };
        let end = src.seek_hole(start).map_err(io(diff))?.unwrap_or(size);
        src.seek(SeekFrom::Start(start)).map_err(io(diff))?;
        dst.seek(SeekFrom::Start(start)).map_err(io(base))?;
        let n = std::io::copy(&mut std::io::Read::take(&mut src, end - start), &mut dst)
            .map_err(io(base))?;
        copied += n;
        pos = end;
    }
    dst.sync_all().map_err(io(base))?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fv-snapmem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// The page map's skip changes nothing in the file: chunks with data
    /// anywhere in them (first page, last page, one byte) are written,
    /// untouched ones are holes either way.
    #[test]
    fn untouched_memory_is_skipped_without_changing_the_file() {
        let mem = crate::memory::create_guest_memory(32 << 20).unwrap();
        for (gpa, data) in [
            (0u64, &b"first"[..]),
            ((5 << 20) + 4095, b"xy"),
            ((9 << 20) - 1, b"z"),
            ((32 << 20) - 4, b"last"),
        ] {
            mem.write_slice(data, GuestAddress(gpa)).unwrap();
        }
        // A page read but never written (the zero page) stays a hole.
        let mut buf = [1u8; 8];
        mem.read_slice(&mut buf, GuestAddress(20 << 20)).unwrap();
        let map = PageMap::open().unwrap();
        let host = |gpa: u64| mem.get_host_address(GuestAddress(gpa)).unwrap() as usize;
        assert!(!map.untouched(host(5 << 20), 1 << 20));
        assert!(map.untouched(host(14 << 20), 1 << 20));
        let (skipped, read) = (temp("skipped.mem"), temp("read.mem"));
        write_full(&mem, &skipped, true).unwrap();
        assert!(map.untouched(host(14 << 20), 1 << 20), "skipped unread");
        // Reading every page (as a Uffd restore's must) gives the same file.
        write_full(&mem, &read, false).unwrap();
        assert!(std::fs::read(&skipped).unwrap() == std::fs::read(&read).unwrap());
    }

    #[test]
    fn full_file_maps_back_privately() {
        let mem = crate::memory::create_guest_memory(16 << 20).unwrap();
        mem.write_slice(b"hello", GuestAddress(0x1234)).unwrap();
        mem.write_slice(b"end", GuestAddress((16 << 20) - 3))
            .unwrap();
        let path = temp("full.mem");
        assert_eq!(write_full(&mem, &path, true).unwrap(), 16 << 20);

        let back = map_private(&path, &layout(&mem)).unwrap();
        let mut buf = [0u8; 5];
        back.read_slice(&mut buf, GuestAddress(0x1234)).unwrap();
        assert_eq!(&buf, b"hello");
        back.write_slice(b"HELLO", GuestAddress(0x1234)).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(
            &on_disk[0x1234..0x1239],
            b"hello",
            "MAP_PRIVATE: the file stays"
        );
        assert_eq!(&on_disk[(16 << 20) - 3..], b"end");
        assert!(on_disk[0x1239..(16 << 20) - 3].iter().all(|&b| b == 0));
        // Only the two pages with data were written: the rest are holes.
        use std::os::unix::fs::MetadataExt;
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated <= 1 << 20, "{allocated} bytes allocated");

        let wrong = [MemoryRegion {
            gpa: 0,
            size: 32 << 20,
        }];
        assert!(matches!(
            map_private(&path, &wrong),
            Err(MemoryFileError::Size { .. })
        ));
    }

    #[test]
    fn merge_copies_only_data() {
        let base = temp("base.mem");
        let diff = temp("diff.mem");
        std::fs::write(&base, vec![1u8; 4 * PAGE_SIZE as usize]).unwrap();
        {
            let mut f = create(&diff, 4 * PAGE_SIZE).unwrap();
            f.seek(SeekFrom::Start(2 * PAGE_SIZE)).unwrap();
            std::io::Write::write_all(&mut f, &[7u8; PAGE_SIZE as usize]).unwrap();
        }
        merge_diff(&base, &diff).unwrap();
        let merged = std::fs::read(&base).unwrap();
        let p = PAGE_SIZE as usize;
        assert!(merged[..2 * p].iter().all(|&b| b == 1));
        assert!(merged[2 * p..3 * p].iter().all(|&b| b == 7));
        assert!(merged[3 * p..].iter().all(|&b| b == 1));
    }
}
