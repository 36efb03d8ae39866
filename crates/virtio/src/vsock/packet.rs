//! virtio-vsock packets (virtio 1.2, 5.10.6): the 44-byte header and what
//! a packet from the driver may say.
//!
//! [`parse`] is a pure function over the bytes of one transmit chain: every
//! field the guest controls is checked here (its own CID, the host as the
//! destination, the stream type, a known operation, a payload within the
//! chain and within [`MAX_PAYLOAD`]), so the rest of the device deals with
//! well-formed packets only. A fuzz target drives it with arbitrary bytes.

/// Size of `struct virtio_vsock_hdr`.
pub const HEADER_LEN: usize = 44;
/// The host's CID (VMADDR_CID_HOST).
pub const HOST_CID: u64 = 2;
/// Most payload bytes in one packet: what Linux sends at most
/// (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE) and what the device puts in one.
pub const MAX_PAYLOAD: usize = 64 << 10;

/// `type`: a stream socket (the only one this device offers).
pub const TYPE_STREAM: u16 = 1;
/// `type`: a seqpacket socket (VIRTIO_VSOCK_F_SEQPACKET, not offered).
pub const TYPE_SEQPACKET: u16 = 2;

/// SHUTDOWN flags: the sender will receive no more / send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// The operations of a stream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    Request = 1,
    Response = 2,
    Rst = 3,
    Shutdown = 4,
    Rw = 5,
    CreditUpdate = 6,
    CreditRequest = 7,
}

impl Op {
    pub fn from_u16(op: u16) -> Option<Op> {
        Some(match op {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

/// A packet header, fields as on the wire (little-endian there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    /// Decodes the first [`HEADER_LEN`] bytes of `bytes` (None if shorter).
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        let u64_at = |i: usize| {
            u64::from_le_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        })
    }

    /// The header's wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// A packet from the driver that passed [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub op: Op,
    /// The guest's port (the header's src_port).
    pub src_port: u32,
    /// The host's port (the header's dst_port).
    pub dst_port: u32,
    /// SHUTDOWN flags ([`SHUTDOWN_RCV`], [`SHUTDOWN_SEND`]); 0 for others.
    pub flags: u32,
    /// The sender's receive buffer size and forwarded byte count.
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
    /// The payload of an RW packet (empty for the others).
    pub payload: &'a [u8],
}

/// Why a packet from the driver was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Short(usize),
    #[error("source CID {0} is not the guest's")]
    SourceCid(u64),
    #[error("destination CID {0} is not the host's")]
    DestinationCid(u64),
    #[error("socket type {0} is not a stream")]
    Type(u16),
    #[error("unknown operation {0}")]
    Op(u16),
    #[error("payload length {len} exceeds the {available} bytes of the chain or the {MAX_PAYLOAD}-byte limit")]
    Length { len: u32, available: usize },
    #[error("operation {op:?} carries a {len}-byte payload")]
    UnexpectedPayload { op: Op, len: u32 },
    #[error("SHUTDOWN flags {0:#x} are not RCV/SEND")]
    ShutdownFlags(u32),
}

impl PacketError {
    /// Whether the device should answer the packet with a RST (to the
    /// header's addresses): a packet from the guest's own CID that names a
    /// connection, other than a RST. Packets that lie about the sender, or
    /// are too short to name anyone, are dropped.
    pub fn answer_with_rst(&self, header: &Header) -> bool {
        match self {
            PacketError::Short(_) | PacketError::SourceCid(_) => false,
            _ => header.op != Op::Rst as u16,
        }
    }
}

/// Parses one packet from the driver (`bytes`: the header, then the
/// payload, as the readable part of a transmit chain) from the guest of
/// CID `guest_cid`. Pure: no state, no allocation, never panics.
pub fn parse(bytes: &[u8], guest_cid: u64) -> Result<Packet<'_>, PacketError> {
    let header = Header::decode(bytes).ok_or(PacketError::Short(bytes.len()))?;
    check(&header, bytes.len() - HEADER_LEN, guest_cid)?;
    let op = Op::from_u16(header.op).ok_or(PacketError::Op(header.op))?;
    let end = HEADER_LEN + header.len as usize;
    Ok(Packet {
        op,
        src_port: header.src_port,
        dst_port: header.dst_port,
        flags: header.flags,
        buf_alloc: header.buf_alloc,
        fwd_cnt: header.fwd_cnt,
        payload: &bytes[HEADER_LEN..end],
    })
}

/// The checks of [`parse`] on a decoded header with `available` payload
/// bytes after it.
pub fn check(header: &Header, available: usize, guest_cid: u64) -> Result<(), PacketError> {
    if header.src_cid != guest_cid {
        return Err(PacketError::SourceCid(header.src_cid));
    }
    if header.dst_cid != HOST_CID {
        return Err(PacketError::DestinationCid(header.dst_cid));
    }
    if header.kind != TYPE_STREAM {
        return Err(PacketError::Type(header.kind));
    }
    let op = Op::from_u16(header.op).ok_or(PacketError::Op(header.op))?;
    let len = header.len as usize;
    if len > MAX_PAYLOAD || len > available {
        return Err(PacketError::Length {
            len: header.len,
            available,
        });
    }
    if op != Op::Rw && len != 0 {
        return Err(PacketError::UnexpectedPayload {
            op,
            len: header.len,
        });
    }
    if op == Op::Shutdown && header.flags & !SHUTDOWN_BOTH != 0 {
        return Err(PacketError::ShutdownFlags(header.flags));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: u64 = 3;

    fn header(op: Op, len: u32) -> Header {
        Header {
            src_cid: GUEST,
            dst_cid: HOST_CID,
            src_port: 1234,
            dst_port: 5000,
            len,
            kind: TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc: 256 << 10,
            fwd_cnt: 7,
        }
    }

    fn bytes(h: &Header, payload: &[u8]) -> Vec<u8> {
        let mut v = h.encode().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn header_round_trips_in_little_endian() {
        let h = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 0xaabb_ccdd,
            dst_port: 9,
            len: 3,
            kind: 1,
            op: 5,
            flags: 0x11,
            buf_alloc: 0x1000,
            fwd_cnt: 0xffff_ffff,
        };
        let b = h.encode();
        assert_eq!(b[0], 0x08, "src_cid is little-endian");
        assert_eq!(&b[28..32], &[1, 0, 5, 0], "type, then op");
        assert_eq!(Header::decode(&b), Some(h));
        assert_eq!(Header::decode(&b[..43]), None);
    }

    #[test]
    fn a_good_rw_packet_parses_with_its_payload() {
        let b = bytes(&header(Op::Rw, 5), b"hello and more");
        let p = parse(&b, GUEST).unwrap();
        assert_eq!(p.op, Op::Rw);
        assert_eq!((p.src_port, p.dst_port), (1234, 5000));
        assert_eq!(p.payload, b"hello", "the bytes past len are not payload");
        assert_eq!((p.buf_alloc, p.fwd_cnt), (256 << 10, 7));
        for op in [
            Op::Request,
            Op::Response,
            Op::Rst,
            Op::CreditUpdate,
            Op::CreditRequest,
        ] {
            assert_eq!(parse(&bytes(&header(op, 0), &[]), GUEST).unwrap().op, op);
        }
    }

    #[test]
    fn hostile_headers_are_refused() {
        let good = header(Op::Rw, 4);
        let cases: Vec<(Header, PacketError)> = vec![
            (Header { src_cid: 4, ..good }, PacketError::SourceCid(4)),
            (Header { src_cid: 2, ..good }, PacketError::SourceCid(2)),
            (
                Header { dst_cid: 3, ..good },
                PacketError::DestinationCid(3),
            ),
            (
                Header {
                    dst_cid: u64::MAX,
                    ..good
                },
                PacketError::DestinationCid(u64::MAX),
            ),
            (
                Header {
                    kind: TYPE_SEQPACKET,
                    ..good
                },
                PacketError::Type(2),
            ),
            (Header { kind: 0, ..good }, PacketError::Type(0)),
            (Header { op: 0, ..good }, PacketError::Op(0)),
            (Header { op: 8, ..good }, PacketError::Op(8)),
            (
                Header {
                    op: u16::MAX,
                    ..good
                },
                PacketError::Op(u16::MAX),
            ),
            (
                Header { len: 5, ..good },
                PacketError::Length {
                    len: 5,
                    available: 4,
                },
            ),
            (
                Header {
                    len: u32::MAX,
                    ..good
                },
                PacketError::Length {
                    len: u32::MAX,
                    available: 4,
                },
            ),
            (
                Header {
                    op: Op::Request as u16,
                    ..good
                },
                PacketError::UnexpectedPayload {
                    op: Op::Request,
                    len: 4,
                },
            ),
            (
                Header {
                    op: Op::Shutdown as u16,
                    len: 0,
                    flags: 4,
                    ..good
                },
                PacketError::ShutdownFlags(4),
            ),
        ];
        for (h, want) in cases {
            assert_eq!(parse(&bytes(&h, b"data"), GUEST), Err(want), "{h:?}");
        }
        // Too long even when the chain holds it.
        let big = vec![0u8; MAX_PAYLOAD + 1];
        let h = header(Op::Rw, big.len() as u32);
        assert!(matches!(
            parse(&bytes(&h, &big), GUEST),
            Err(PacketError::Length { .. })
        ));
        let h = header(Op::Rw, MAX_PAYLOAD as u32);
        assert_eq!(
            parse(&bytes(&h, &big[1..]), GUEST).unwrap().payload.len(),
            MAX_PAYLOAD
        );
    }

    #[test]
    fn short_packets_are_refused_at_every_length() {
        let b = bytes(&header(Op::Rw, 0), &[]);
        for n in 0..HEADER_LEN {
            assert_eq!(parse(&b[..n], GUEST), Err(PacketError::Short(n)));
        }
    }

    #[test]
    fn only_packets_that_name_a_connection_get_a_rst() {
        let h = header(Op::Rw, 0);
        assert!(!PacketError::Short(3).answer_with_rst(&h));
        assert!(!PacketError::SourceCid(9).answer_with_rst(&h));
        assert!(PacketError::Op(99).answer_with_rst(&Header { op: 99, ..h }));
        assert!(PacketError::Type(2).answer_with_rst(&h));
        // Never a RST for a RST.
        let rst = header(Op::Rst, 0);
        assert!(!PacketError::Type(2).answer_with_rst(&rst));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic sweep (the fuzz target does the rest).
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..20000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 120) as usize;
            let mut b: Vec<u8> = (0..len).map(|i| (state >> (i % 8 * 8)) as u8).collect();
            if b.len() >= HEADER_LEN && state & 1 == 0 {
                b[..HEADER_LEN]
                    .copy_from_slice(&header(Op::Rw, (state >> 40) as u32 % 80).encode());
            }
            let _ = parse(&b, GUEST);
        }
    }
}
