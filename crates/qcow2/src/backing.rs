//! Backing files: opened read-only by the caller's opener (which checks
//! and locks them), raw or qcow2, chains of at most [`crate::MAX_CHAIN`].
//!
//! The format is the one the image's header extension names; an image
//! without it has its backing file probed by magic, as QEMU does for
//! backing files (the name and the format were written by whoever made
//! the image, not by a guest).

use std::io;
use std::path::{Path, PathBuf};

use crate::header::Header;
use crate::raw::RawFile;
use crate::{probe, Backend, Error, Format, Qcow2, MAX_CHAIN};

/// Opens a backing file read-only (the caller checks its kind and takes
/// its shared lock).
pub type OpenFile = dyn Fn(&Path) -> io::Result<RawFile>;

/// The backing file of the image at `path` whose header is `h`, opened;
/// `depth` is the number of images above it.
pub(crate) fn open_chain(
    h: &Header,
    path: &Path,
    open: &OpenFile,
    depth: usize,
) -> Result<Option<Box<dyn Backend>>, Error> {
    let Some(name) = &h.backing else {
        return Ok(None);
    };
    if name.starts_with("json:") || name.contains("://") {
        return Err(Error::Unsupported(format!(
            "backing file {name:?}: only file names are"
        )));
    }
    let backing = match Path::new(name) {
        p if p.is_absolute() => p.to_path_buf(),
        p => path.parent().unwrap_or(Path::new(".")).join(p),
    };
    if depth >= MAX_CHAIN {
        return Err(Error::Invalid(format!(
            "backing chain longer than {MAX_CHAIN} images (a loop?) at {}",
            backing.display()
        )));
    }
    let wrap = |path: PathBuf| {
        move |e: Error| Error::Backing {
            path,
            source: Box::new(e),
        }
    };
    let file = open(&backing).map_err(|source| Error::BackingOpen {
        path: backing.clone(),
        source,
    })?;
    let format = match h.backing_format.as_deref() {
        None => probe(&file).map_err(|source| Error::BackingOpen {
            path: backing.clone(),
            source,
        })?,
        Some(f) => Format::parse(f).ok_or_else(|| {
            Error::Unsupported(format!("backing file format {f:?} (raw and qcow2 are)"))
        })?,
    };
    Ok(Some(match format {
        Format::Raw => {
            let len = file.file_len().map_err(|source| Error::BackingOpen {
                path: backing.clone(),
                source,
            })?;
            Box::new(file.with_len(len))
        }
        Format::Qcow2 => Box::new(
            Qcow2::open_in_chain(file, &backing, false, open, depth + 1)
                .map_err(wrap(backing.clone()))?,
        ),
    }))
}
