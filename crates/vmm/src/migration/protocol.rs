//! The migration stream: frames over one TCP connection.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "FVMG"
//! 4       1     kind (see [`Frame`])
//! 5       4     payload length N (u32 LE)
//! 9       N     payload
//! 9+N     4     CRC-32 (IEEE) of kind, length and payload (u32 LE)
//! ```
//!
//! Source → destination: [`Frame::Hello`] (protocol version, the snapshot
//! header — accelerator, CPU model, memory layout — and the VM
//! description), then [`Frame::Pages`] (guest-physical address and whole
//! pages, any number of rounds), then [`Frame::Mmds`] (the MMDS's store
//! and live session tokens, when the VM has an MMDS) and [`Frame::State`]
//! (a snapshot state file's bytes, which carry their own version and
//! checksum, and whether the destination resumes). Destination → source: [`Frame::Ready`] or
//! [`Frame::Refused`] after the hello, [`Frame::Prepared`] (restored,
//! not started) or [`Frame::Failed`] after the state; then the source
//! commits with [`Frame::Go`], and the destination starts the VM and
//! answers [`Frame::Resumed`] (or [`Frame::Failed`]). A destination never
//! starts the VM without the go, so until the source sent it a broken
//! connection leaves the VM to the source alone.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::snapshot::SnapshotHeader;

/// The first bytes of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"FVMG";
/// The protocol this build speaks. Bump it on any change of the frames.
pub const PROTOCOL_VERSION: u32 = 3;
/// Pages per [`Frame::Pages`] at most.
pub const MAX_PAGES_PER_FRAME: usize = 256;
/// Guest page size of the stream (the dirty log's).
pub const PAGE_SIZE: usize = 4096;
/// Payloads beyond this are refused before allocating (a state file is
/// far smaller; a pages frame is 1 MiB and 8 bytes).
const MAX_PAYLOAD: u32 = 64 << 20;
const HEADER_LEN: usize = 9;

/// Why the stream broke.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the connection failed")]
    Io(#[source] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("not a Ferrovisor migration stream (bad magic)")]
    BadMagic,
    #[error("a frame of unknown kind {0}")]
    UnknownKind(u8),
    #[error("a frame of {0} bytes is too large")]
    TooLarge(u32),
    #[error("a frame is corrupt (checksum mismatch)")]
    Checksum,
    #[error("a frame is corrupt: {0}")]
    Decode(String),
}

impl From<std::io::Error> for ProtocolError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ProtocolError::Closed,
            _ => ProtocolError::Io(e),
        }
    }
}

/// What the source announces first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    /// Accelerator, CPU model and memory layout, as a snapshot records
    /// them (checked the same way).
    pub header: SnapshotHeader,
    /// The VM description ([`api::VmSpec`]) as JSON.
    pub spec_json: String,
}

/// One frame of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    /// Whole pages of guest RAM from `gpa` on.
    Pages {
        gpa: u64,
        data: Vec<u8>,
    },
    /// The paused machine's state file; the destination resumes the VM
    /// when `resume`.
    State {
        resume: bool,
        file: Vec<u8>,
    },
    /// The MMDS's store and live session tokens (JSON), before the state.
    Mmds(mmds::SavedMmds),
    /// The destination takes the VM.
    Ready,
    /// The destination does not take the VM, and why.
    Refused(String),
    /// The destination runs the VM.
    Resumed,
    /// The destination could not restore the VM, and why.
    Failed(String),
    /// The destination restored the VM and waits for [`Frame::Go`].
    Prepared,
    /// The source hands the VM over: the destination may start it.
    Go,
}

const HELLO: u8 = 1;
const PAGES: u8 = 2;
const STATE: u8 = 3;
const READY: u8 = 4;
const REFUSED: u8 = 5;
const RESUMED: u8 = 6;
const FAILED: u8 = 7;
const PREPARED: u8 = 8;
const GO: u8 = 9;
const MMDS: u8 = 10;

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => HELLO,
            Frame::Pages { .. } => PAGES,
            Frame::State { .. } => STATE,
            Frame::Ready => READY,
            Frame::Refused(_) => REFUSED,
            Frame::Resumed => RESUMED,
            Frame::Failed(_) => FAILED,
            Frame::Prepared => PREPARED,
            Frame::Go => GO,
            Frame::Mmds(_) => MMDS,
        }
    }

    /// A short name for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Pages { .. } => "pages",
            Frame::State { .. } => "state",
            Frame::Ready => "ready",
            Frame::Refused(_) => "refused",
            Frame::Resumed => "resumed",
            Frame::Failed(_) => "failed",
            Frame::Prepared => "prepared",
            Frame::Go => "go",
            Frame::Mmds(_) => "mmds",
        }
    }

    fn payload(&self) -> Result<Vec<u8>, ProtocolError> {
        Ok(match self {
            Frame::Hello(hello) => {
                postcard::to_stdvec(hello).map_err(|e| ProtocolError::Decode(e.to_string()))?
            }
            Frame::Pages { gpa, data } => {
                let mut p = Vec::with_capacity(8 + data.len());
                p.extend_from_slice(&gpa.to_le_bytes());
                p.extend_from_slice(data);
                p
            }
            Frame::State { resume, file } => {
                let mut p = Vec::with_capacity(1 + file.len());
                p.push(u8::from(*resume));
                p.extend_from_slice(file);
                p
            }
            Frame::Mmds(saved) => {
                serde_json::to_vec(saved).map_err(|e| ProtocolError::Decode(e.to_string()))?
            }
            Frame::Ready | Frame::Resumed | Frame::Prepared | Frame::Go => Vec::new(),
            Frame::Refused(m) | Frame::Failed(m) => m.as_bytes().to_vec(),
        })
    }

    fn decode(kind: u8, payload: Vec<u8>) -> Result<Frame, ProtocolError> {
        let text = |p: Vec<u8>| String::from_utf8_lossy(&p).into_owned();
        Ok(match kind {
            HELLO => Frame::Hello(
                postcard::from_bytes(&payload).map_err(|e| ProtocolError::Decode(e.to_string()))?,
            ),
            PAGES => {
                if payload.len() < 8 || !(payload.len() - 8).is_multiple_of(PAGE_SIZE) {
                    return Err(ProtocolError::Decode(format!(
                        "a pages frame of {} bytes",
                        payload.len()
                    )));
                }
                let gpa = u64::from_le_bytes(payload[..8].try_into().unwrap_or_default());
                Frame::Pages {
                    gpa,
                    data: payload[8..].to_vec(),
                }
            }
            STATE => match payload.split_first() {
                Some((&resume, file)) if resume <= 1 => Frame::State {
                    resume: resume == 1,
                    file: file.to_vec(),
                },
                _ => return Err(ProtocolError::Decode("a bad state frame".into())),
            },
            READY => Frame::Ready,
            REFUSED => Frame::Refused(text(payload)),
            RESUMED => Frame::Resumed,
            FAILED => Frame::Failed(text(payload)),
            PREPARED => Frame::Prepared,
            GO => Frame::Go,
            MMDS => Frame::Mmds(
                serde_json::from_slice(&payload)
                    .map_err(|e| ProtocolError::Decode(format!("the MMDS: {e}")))?,
            ),
            other => return Err(ProtocolError::UnknownKind(other)),
        })
    }

    /// Writes the frame (not flushed).
    pub fn write_to(&self, out: &mut impl Write) -> Result<(), ProtocolError> {
        let payload = self.payload()?;
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_PAYLOAD)
            .ok_or(ProtocolError::TooLarge(u32::MAX))?;
        let mut head = [0u8; HEADER_LEN];
        head[..4].copy_from_slice(&FRAME_MAGIC);
        head[4] = self.kind();
        head[5..9].copy_from_slice(&len.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[4..]);
        crc.update(&payload);
        out.write_all(&head)?;
        out.write_all(&payload)?;
        out.write_all(&crc.finalize().to_le_bytes())?;
        Ok(())
    }

    /// Reads and checks one frame.
    pub fn read_from(input: &mut impl Read) -> Result<Frame, ProtocolError> {
        let mut head = [0u8; HEADER_LEN];
        input.read_exact(&mut head)?;
        if head[..4] != FRAME_MAGIC {
            return Err(ProtocolError::BadMagic);
        }
        let kind = head[4];
        let len = u32::from_le_bytes(head[5..9].try_into().unwrap_or_default());
        if len > MAX_PAYLOAD {
            return Err(ProtocolError::TooLarge(len));
        }
        let mut payload = vec![0u8; len as usize];
        input.read_exact(&mut payload)?;
        let mut crc = [0u8; 4];
        input.read_exact(&mut crc)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&head[4..]);
        h.update(&payload);
        if h.finalize().to_le_bytes() != crc {
            return Err(ProtocolError::Checksum);
        }
        Frame::decode(kind, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut bytes = Vec::new();
        frame.write_to(&mut bytes).unwrap();
        assert_eq!(Frame::read_from(&mut bytes.as_slice()).unwrap(), frame);
    }

    #[test]
    fn frames_round_trip() {
        round_trip(Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            header: SnapshotHeader {
                ferrovisor_version: "x".into(),
                accelerator: "emu".into(),
                cpu_fingerprint: "cpu".into(),
                memory: vec![crate::snapshot::MemoryRegion {
                    gpa: 0,
                    size: 1 << 20,
                }],
            },
            spec_json: "{}".into(),
        }));
        round_trip(Frame::Pages {
            gpa: 0x1000,
            data: vec![7; 2 * PAGE_SIZE],
        });
        round_trip(Frame::State {
            resume: true,
            file: vec![1, 2, 3],
        });
        round_trip(Frame::Ready);
        round_trip(Frame::Refused("no".into()));
        round_trip(Frame::Resumed);
        round_trip(Frame::Failed("bad".into()));
        round_trip(Frame::Prepared);
        round_trip(Frame::Go);
        round_trip(Frame::Mmds(mmds::SavedMmds {
            limit: 100,
            data: Some(serde_json::json!({"latest": {"a": [1, "b"]}})),
            tokens: vec![mmds::saved::SavedToken {
                token: "0123456789abcdef0123456789abcdef".into(),
                ms_left: 1500,
            }],
        }));
    }

    #[test]
    fn corruption_and_truncation_are_refused() {
        let mut bytes = Vec::new();
        Frame::Pages {
            gpa: 0,
            data: vec![1; PAGE_SIZE],
        }
        .write_to(&mut bytes)
        .unwrap();
        let mut flipped = bytes.clone();
        flipped[100] ^= 4;
        assert!(matches!(
            Frame::read_from(&mut flipped.as_slice()),
            Err(ProtocolError::Checksum)
        ));
        assert!(matches!(
            Frame::read_from(&mut &bytes[..bytes.len() - 1]),
            Err(ProtocolError::Closed)
        ));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(matches!(
            Frame::read_from(&mut magic.as_slice()),
            Err(ProtocolError::BadMagic)
        ));
        let mut big = bytes;
        big[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Frame::read_from(&mut big.as_slice()),
            Err(ProtocolError::TooLarge(_))
        ));
    }
}
