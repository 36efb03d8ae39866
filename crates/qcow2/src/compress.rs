//! Compressed clusters: raw deflate (RFC 1951), QEMU's compression type 0.

use std::io;

use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// Inflates `input` into `out` (one cluster). Data past the end of the
/// cluster's stream is ignored (QEMU rounds the stored size up to
/// sectors); a stream that ends before the cluster is full, or that is
/// not deflate, is an error.
pub fn inflate_cluster(input: &[u8], out: &mut [u8]) -> io::Result<()> {
    let mut state = DecompressorOxide::new();
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, _read, written) = decompress(&mut state, input, out, 0, flags);
    match status {
        TINFLStatus::Done | TINFLStatus::HasMoreOutput if written == out.len() => Ok(()),
        // The output is full and the stream wants more room: the cluster
        // is complete (QEMU stops at the cluster's end too).
        _ if written == out.len() => Ok(()),
        s => Err(crate::corrupt(format!(
            "compressed cluster does not inflate to a cluster ({s:?}, {written} bytes)"
        ))),
    }
}
