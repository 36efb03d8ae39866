//! The qcow2 header (versions 2 and 3) and its extensions, checked.

use crate::raw::RawFile;
use crate::Error;

pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Incompatible feature bits.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Header extension: the backing file's format name.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Where the autoclear features are (v3).
pub const AUTOCLEAR_AT: u64 = 88;

/// QEMU's caps: an L1 table of at most 32 MiB, a refcount table of at
/// most 8 MiB (which hold images far larger than any real one).
const MAX_L1_BYTES: u64 = 32 << 20;
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// QEMU's cap on a backing file name.
const MAX_BACKING_NAME: u32 = 1023;

#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u64,
    pub l1_offset: u64,
    pub reftable_offset: u64,
    pub reftable_clusters: u64,
    pub snapshots: u32,
    pub incompatible: u64,
    pub autoclear: u64,
    pub refcount_order: u32,
    pub backing: Option<String>,
    pub backing_format: Option<String>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

fn invalid(what: impl Into<String>) -> Error {
    Error::Invalid(what.into())
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries of one L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Reads and checks the header of `file` (`len` bytes long);
    /// `writable` refuses what may only be read.
    pub fn read(file: &RawFile, len: u64, writable: bool) -> Result<Header, Error> {
        let io = |source| Error::Io {
            what: "the qcow2 header",
            source,
        };
        if len < 72 {
            return Err(invalid("shorter than a header"));
        }
        // The header and its extensions live in the first cluster, at
        // most 2 MiB: read what there is of the first 4 KiB, then more
        // if the cluster is bigger.
        let mut h = vec![0u8; 4096.min(len) as usize];
        file.read_exact_at(&mut h, 0).map_err(io)?;
        if h[0..4] != MAGIC {
            return Err(invalid("no qcow2 magic"));
        }
        let version = be32(&h, 4);
        if version != 2 && version != 3 {
            return Err(Error::Unsupported(format!("version {version}")));
        }
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(invalid(format!(
                "cluster bits {cluster_bits} (9 to 21 are valid)"
            )));
        }
        let cluster_size = 1u64 << cluster_bits;
        let first = cluster_size.min(len) as usize;
        if first > h.len() {
            h.resize(first, 0);
            file.read_exact_at(&mut h, 0).map_err(io)?;
        }
        // Only the first cluster is the header's: with clusters under
        // 4 KiB, what follows it is tables or guest data, which writes
        // change (found by fuzzing: extensions read past a 512-byte
        // cluster made an image refuse to reopen once written).
        h.truncate(first);
        let mut header = Header {
            version,
            cluster_bits,
            size: be64(&h, 24),
            l1_size: u64::from(be32(&h, 36)),
            l1_offset: be64(&h, 40),
            reftable_offset: be64(&h, 48),
            reftable_clusters: u64::from(be32(&h, 56)),
            snapshots: be32(&h, 60),
            incompatible: 0,
            autoclear: 0,
            refcount_order: 4,
            backing: None,
            backing_format: None,
        };
        if be32(&h, 32) != 0 {
            return Err(Error::Unsupported("encrypted images".into()));
        }
        let mut header_len = 72usize;
        if version == 3 {
            if h.len() < 104 {
                return Err(invalid("v3 header cut short"));
            }
            header.incompatible = be64(&h, 72);
            header.autoclear = be64(&h, 88);
            header.refcount_order = be32(&h, 96);
            header_len = be32(&h, 100) as usize;
            if header_len < 104 || header_len > h.len() || !header_len.is_multiple_of(8) {
                return Err(invalid(format!("header length {header_len}")));
            }
            header.check_features(&h, header_len, writable)?;
        }
        if header.refcount_order > 6 {
            return Err(invalid(format!(
                "refcount order {} (0 to 6 are valid)",
                header.refcount_order
            )));
        }
        header.check_tables(len)?;
        header.read_backing_name(&h)?;
        header.read_extensions(&h, header_len)?;
        if writable && header.snapshots > 0 {
            return Err(Error::Unsupported(format!(
                "{} internal snapshot(s): such an image can only be opened read-only",
                header.snapshots
            )));
        }
        Ok(header)
    }

    fn check_features(&self, h: &[u8], header_len: usize, writable: bool) -> Result<(), Error> {
        let f = self.incompatible;
        let known = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION;
        if f & INCOMPAT_DATA_FILE != 0 {
            return Err(Error::Unsupported("external data file".into()));
        }
        if f & INCOMPAT_EXTL2 != 0 {
            return Err(Error::Unsupported(
                "extended L2 entries (subclusters)".into(),
            ));
        }
        if f & !(known | INCOMPAT_DATA_FILE | INCOMPAT_EXTL2) != 0 {
            return Err(Error::Unsupported(format!(
                "unknown incompatible features {:#x}",
                f & !known
            )));
        }
        if f & INCOMPAT_COMPRESSION != 0 {
            let kind = if header_len > 104 { h[104] } else { 0 };
            if kind != 0 {
                return Err(Error::Unsupported(format!(
                    "compression type {kind} (only deflate, 0, is)"
                )));
            }
        }
        if writable && f & INCOMPAT_CORRUPT != 0 {
            return Err(invalid(
                "marked corrupt: it can only be opened read-only (repair: qemu-img check -r all)",
            ));
        }
        if writable && f & INCOMPAT_DIRTY != 0 {
            return Err(Error::Unsupported(
                "marked dirty (lazy refcounts not written back): repair with \
                 qemu-img check -r all, or open it read-only"
                    .into(),
            ));
        }
        Ok(())
    }

    fn check_tables(&self, len: u64) -> Result<(), Error> {
        let cs = self.cluster_size();
        // Virtual bytes one L1 entry maps.
        let per_l1 = cs * self.l2_entries();
        let needed = self.size.div_ceil(per_l1);
        if self.l1_size < needed {
            return Err(invalid(format!(
                "L1 table of {} entries for {} bytes ({needed} needed)",
                self.l1_size, self.size
            )));
        }
        if self.l1_size * 8 > MAX_L1_BYTES {
            return Err(invalid(format!(
                "L1 table of {} entries (QEMU's limit is {})",
                self.l1_size,
                MAX_L1_BYTES / 8
            )));
        }
        let l1_bytes = self.l1_size * 8;
        let reftable_bytes = self.reftable_clusters * cs;
        if reftable_bytes == 0 || reftable_bytes > MAX_REFTABLE_BYTES {
            return Err(invalid(format!(
                "refcount table of {} clusters",
                self.reftable_clusters
            )));
        }
        for (name, offset, bytes) in [
            ("L1 table", self.l1_offset, l1_bytes),
            ("refcount table", self.reftable_offset, reftable_bytes),
        ] {
            if bytes == 0 {
                continue;
            }
            if !offset.is_multiple_of(cs) || offset == 0 {
                return Err(invalid(format!("{name} at unaligned offset {offset:#x}")));
            }
            if offset.checked_add(bytes).is_none_or(|end| end > len) {
                return Err(invalid(format!(
                    "{name} at {offset:#x} ({bytes} bytes) ends past the end of the file ({len} bytes)"
                )));
            }
        }
        let (l1, rt) = (
            (self.l1_offset, self.l1_offset + l1_bytes),
            (self.reftable_offset, self.reftable_offset + reftable_bytes),
        );
        if l1_bytes > 0 && l1.0 < rt.1 && rt.0 < l1.1 {
            return Err(invalid("the L1 table and the refcount table overlap"));
        }
        Ok(())
    }

    fn read_backing_name(&mut self, h: &[u8]) -> Result<(), Error> {
        let offset = be64(h, 8);
        let size = be32(h, 16);
        if offset == 0 {
            return Ok(());
        }
        if size == 0 || size > MAX_BACKING_NAME {
            return Err(invalid(format!("backing file name of {size} bytes")));
        }
        let end = offset
            .checked_add(u64::from(size))
            .filter(|&e| e <= h.len() as u64)
            .ok_or_else(|| invalid("backing file name outside the first cluster"))?;
        let name = std::str::from_utf8(&h[offset as usize..end as usize])
            .map_err(|_| invalid("backing file name is not UTF-8"))?;
        self.backing = Some(name.to_string());
        Ok(())
    }

    /// Header extensions: only the backing format is read.
    fn read_extensions(&mut self, h: &[u8], header_len: usize) -> Result<(), Error> {
        let mut at = header_len;
        loop {
            if at + 8 > h.len() {
                // v2 images may have none and no end marker.
                return Ok(());
            }
            let kind = be32(h, at);
            let len = be32(h, at + 4) as usize;
            at += 8;
            if kind == 0 {
                return Ok(());
            }
            if len > h.len() - at {
                return Err(invalid("header extension past the first cluster"));
            }
            if kind == EXT_BACKING_FORMAT {
                let name = std::str::from_utf8(&h[at..at + len])
                    .map_err(|_| invalid("backing format name is not UTF-8"))?;
                self.backing_format = Some(name.to_string());
            }
            at += len.div_ceil(8) * 8;
        }
    }
}
