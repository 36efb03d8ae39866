//! The message the VMM sends the handler once, right after it connects:
//! the guest memory layout as a JSON list of [`GuestRegionUffdMapping`]
//! (Firecracker's format and field names), with the userfaultfd attached
//! as SCM_RIGHTS ancillary data.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::Uffd;

/// One guest RAM region: where it is in the VMM's address space, and
/// where its contents are in the snapshot's memory file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRegionUffdMapping {
    /// The region's first byte in the VMM process.
    pub base_host_virt_addr: u64,
    /// Bytes.
    pub size: u64,
    /// Where the region's contents start in the memory file.
    pub offset: u64,
    /// The region's page size in bytes (4096: no huge pages).
    #[serde(default)]
    pub page_size: u64,
    /// Firecracker's deprecated name of `page_size` (in bytes despite
    /// the name), sent for handlers written against it.
    #[serde(default)]
    pub page_size_kib: u64,
}

impl GuestRegionUffdMapping {
    /// The page size, from whichever field the sender filled (4096 when
    /// neither).
    pub fn page_bytes(&self) -> u64 {
        match (self.page_size, self.page_size_kib) {
            (0, 0) => 4096,
            (0, old) => old,
            (size, _) => size,
        }
    }
}

/// A layout message larger than this is refused.
const MAX_MESSAGE: usize = 1 << 20;
/// How long the handler waits for the VMM's message once it connected.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot send the memory layout")]
    Send(#[source] io::Error),
    #[error("cannot receive the memory layout")]
    Receive(#[source] io::Error),
    #[error("the connection closed before the whole memory layout arrived")]
    Closed,
    #[error("the memory layout message is larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("the memory layout message is not a list of regions")]
    Json(#[source] serde_json::Error),
    #[error("the memory layout message came without a userfaultfd")]
    NoDescriptor,
}

/// Sends `regions` as JSON with `uffd` attached.
pub fn send_layout(
    stream: &UnixStream,
    regions: &[GuestRegionUffdMapping],
    uffd: &Uffd,
) -> Result<(), LayoutError> {
    // Plain data with string keys: serialization cannot fail.
    let json = serde_json::to_vec(regions).unwrap_or_default();
    let sent = stream
        .send_with_fd(&json[..], uffd.as_raw_fd())
        .map_err(|e| LayoutError::Send(io::Error::from_raw_os_error(e.errno())))?;
    // A stream socket may take a long message in parts.
    let mut writer = stream;
    writer
        .write_all(&json[sent.min(json.len())..])
        .map_err(LayoutError::Send)
}

/// Receives the layout and the userfaultfd the VMM sent on `stream`.
pub fn receive_layout(
    stream: &UnixStream,
) -> Result<(Vec<GuestRegionUffdMapping>, Uffd), LayoutError> {
    stream
        .set_read_timeout(Some(RECEIVE_TIMEOUT))
        .map_err(LayoutError::Receive)?;
    let mut message = Vec::new();
    let mut uffd = None;
    let mut buf = vec![0u8; 64 << 10];
    let regions = loop {
        let n = if uffd.is_none() {
            let (n, file) = stream
                .recv_with_fd(&mut buf)
                .map_err(|e| LayoutError::Receive(io::Error::from_raw_os_error(e.errno())))?;
            uffd = file.map(Uffd::from_file);
            n
        } else {
            let mut reader = stream;
            reader.read(&mut buf).map_err(LayoutError::Receive)?
        };
        if n == 0 {
            return Err(LayoutError::Closed);
        }
        message.extend_from_slice(&buf[..n]);
        if message.len() > MAX_MESSAGE {
            return Err(LayoutError::TooLarge);
        }
        match serde_json::from_slice::<Vec<GuestRegionUffdMapping>>(&message) {
            Ok(regions) => break regions,
            Err(e) if e.is_eof() => continue,
            Err(e) => return Err(LayoutError::Json(e)),
        }
    };
    stream
        .set_read_timeout(None)
        .map_err(LayoutError::Receive)?;
    let uffd = uffd.ok_or(LayoutError::NoDescriptor)?;
    Ok((regions, uffd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_firecrackers_json() {
        let regions = vec![
            GuestRegionUffdMapping {
                base_host_virt_addr: 0x7f00_0000_0000,
                size: 0x1000_0000,
                offset: 0,
                page_size: 4096,
                page_size_kib: 4096,
            },
            GuestRegionUffdMapping {
                base_host_virt_addr: 0x7f10_0000_0000,
                size: 0x2000,
                offset: 0x1000_0000,
                page_size: 4096,
                page_size_kib: 4096,
            },
        ];
        let json = serde_json::to_value(&regions).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"base_host_virt_addr": 0x7f00_0000_0000u64, "size": 0x1000_0000u64,
                 "offset": 0, "page_size": 4096, "page_size_kib": 4096},
                {"base_host_virt_addr": 0x7f10_0000_0000u64, "size": 0x2000,
                 "offset": 0x1000_0000u64, "page_size": 4096, "page_size_kib": 4096},
            ])
        );
        // An older sender's message (page_size_kib only) and a newer one
        // (page_size only) both read back.
        let old: Vec<GuestRegionUffdMapping> = serde_json::from_str(
            r#"[{"base_host_virt_addr": 4096, "size": 8192, "offset": 0, "page_size_kib": 4096}]"#,
        )
        .unwrap();
        assert_eq!(old[0].page_bytes(), 4096);
        let new: Vec<GuestRegionUffdMapping> = serde_json::from_str(
            r#"[{"base_host_virt_addr": 4096, "size": 8192, "offset": 0, "page_size": 2097152}]"#,
        )
        .unwrap();
        assert_eq!(new[0].page_bytes(), 2 << 20);
    }

    #[test]
    fn a_layout_goes_through_a_socket_with_its_descriptor() {
        let Ok(uffd) = Uffd::create() else {
            eprintln!("SKIPPED: no userfaultfd here");
            return;
        };
        let (a, b) = UnixStream::pair().unwrap();
        let regions: Vec<_> = (0..2000u64)
            .map(|i| GuestRegionUffdMapping {
                base_host_virt_addr: 0x1000 * i,
                size: 0x1000,
                offset: 0x1000 * i,
                page_size: 4096,
                page_size_kib: 4096,
            })
            .collect();
        let sender = {
            let regions = regions.clone();
            std::thread::spawn(move || send_layout(&a, &regions, &uffd).map(|()| a))
        };
        let (got, received) = receive_layout(&b).unwrap();
        let _a = sender.join().unwrap().unwrap();
        assert_eq!(got, regions, "a message larger than one read arrives whole");
        // The descriptor is a userfaultfd: nothing pending on it.
        assert!(received.read_event().unwrap().is_none());
        drop(_a);
        let (c, d) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut c = c;
            c.write_all(b"[{\"size\": 1").unwrap();
        });
        assert!(matches!(receive_layout(&d), Err(LayoutError::Closed)));
    }
}
