//! Ethernet II, ARP (Ethernet/IPv4), IPv4 and TCP on the wire: parsing
//! that checks every length before it reads (any byte string is safe to
//! hand it) and building of the few frames the MMDS sends.
//!
//! Not handled: 802.1Q tags, IPv4 options beyond skipping them, IPv4
//! fragments (dropped), TCP options other than MSS. TCP checksums of
//! received segments are not checked: the guest's driver may leave them
//! to the device (virtio-net checksum offload), and the link from the
//! guest to the VMM cannot corrupt a frame. The IPv4 header checksum,
//! which the guest always computes, is checked.

pub const ETH_HEADER: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const IPV4_HEADER: usize = 20;
pub const TCP_HEADER: usize = 20;
pub const PROTO_TCP: u8 = 6;
const ARP_LEN: usize = 28;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

pub type Mac = [u8; 6];
pub type Ip = [u8; 4];

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ethernet<'a> {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
    pub payload: &'a [u8],
}

pub fn parse_ethernet(frame: &[u8]) -> Option<Ethernet<'_>> {
    if frame.len() < ETH_HEADER {
        return None;
    }
    Some(Ethernet {
        dst: array(frame, 0),
        src: array(frame, 6),
        ethertype: be16(frame, 12),
        payload: &frame[ETH_HEADER..],
    })
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub operation: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ip,
    pub target_ip: Ip,
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

pub fn parse_arp(packet: &[u8]) -> Option<Arp> {
    if packet.len() < ARP_LEN
        || be16(packet, 0) != 1
        || be16(packet, 2) != ETHERTYPE_IPV4
        || packet[4] != 6
        || packet[5] != 4
    {
        return None;
    }
    Some(Arp {
        operation: be16(packet, 6),
        sender_mac: array(packet, 8),
        sender_ip: array(packet, 14),
        target_ip: array(packet, 24),
    })
}

/// The target protocol address of what looks like an ARP frame, without
/// parsing the rest.
pub fn arp_target_ip(frame: &[u8]) -> Option<Ip> {
    (frame.len() >= ETH_HEADER + ARP_LEN && be16(frame, 12) == ETHERTYPE_ARP)
        .then(|| array(frame, ETH_HEADER + 24))
}

/// The destination of what looks like an IPv4 frame.
pub fn ipv4_destination(frame: &[u8]) -> Option<Ip> {
    (frame.len() >= ETH_HEADER + IPV4_HEADER && be16(frame, 12) == ETHERTYPE_IPV4)
        .then(|| array(frame, ETH_HEADER + 16))
}

fn write_ethernet(buf: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// Writes an ARP reply frame ("`ip` is at `mac`") to `to_mac`/`to_ip`;
/// its length, or None when `buf` is too small.
pub fn write_arp_reply(buf: &mut [u8], mac: Mac, ip: Ip, to_mac: Mac, to_ip: Ip) -> Option<usize> {
    let len = ETH_HEADER + ARP_LEN;
    let buf = buf.get_mut(..len)?;
    write_ethernet(buf, to_mac, mac, ETHERTYPE_ARP);
    let p = &mut buf[ETH_HEADER..];
    p[0..2].copy_from_slice(&1u16.to_be_bytes());
    p[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&ARP_REPLY.to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip);
    p[18..24].copy_from_slice(&to_mac);
    p[24..28].copy_from_slice(&to_ip);
    Some(len)
}

/// The Internet checksum's one's-complement sum of `data`, added to
/// `sum`.
fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4<'a> {
    pub src: Ip,
    pub dst: Ip,
    pub protocol: u8,
    pub payload: &'a [u8],
}

pub fn parse_ipv4(packet: &[u8]) -> Option<Ipv4<'_>> {
    if packet.len() < IPV4_HEADER || packet[0] >> 4 != 4 {
        return None;
    }
    let header = usize::from(packet[0] & 0xf) * 4;
    if header < IPV4_HEADER || packet.len() < header {
        return None;
    }
    if fold(sum16(0, &packet[..header])) != 0 {
        return None;
    }
    // Fragments (more fragments, or an offset) are not reassembled.
    if be16(packet, 6) & 0x3fff != 0 {
        return None;
    }
    // A segmentation-offload packet may say 0; Ethernet may pad.
    let total = match usize::from(be16(packet, 2)) {
        0 => packet.len(),
        n if n < header || n > packet.len() => return None,
        n => n,
    };
    Some(Ipv4 {
        src: array(packet, 12),
        dst: array(packet, 16),
        protocol: packet[9],
        payload: &packet[header..total],
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// The MSS option (on a SYN).
    pub mss: Option<u16>,
    pub payload: &'a [u8],
}

impl Tcp<'_> {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The sequence space the segment takes (data, SYN and FIN).
    pub fn seq_len(&self) -> u32 {
        self.payload.len() as u32 + u32::from(self.has(TCP_SYN)) + u32::from(self.has(TCP_FIN))
    }
}

pub fn parse_tcp(segment: &[u8]) -> Option<Tcp<'_>> {
    if segment.len() < TCP_HEADER {
        return None;
    }
    let header = usize::from(segment[12] >> 4) * 4;
    if header < TCP_HEADER || segment.len() < header {
        return None;
    }
    let mut mss = None;
    let mut options = &segment[TCP_HEADER..header];
    while let Some(&kind) = options.first() {
        match kind {
            0 => break,
            1 => options = &options[1..],
            _ => {
                let len = usize::from(*options.get(1)?);
                if len < 2 || len > options.len() {
                    return None;
                }
                if kind == 2 && len == 4 {
                    mss = Some(be16(options, 2));
                }
                options = &options[len..];
            }
        }
    }
    Some(Tcp {
        src_port: be16(segment, 0),
        dst_port: be16(segment, 2),
        seq: be32(segment, 4),
        ack: be32(segment, 8),
        flags: segment[13] & 0x3f,
        window: be16(segment, 14),
        mss,
        payload: &segment[header..],
    })
}

/// A segment to send: its addresses and its TCP header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOut {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_ip: Ip,
    pub dst_ip: Ip,
    pub ip_id: u16,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub mss: Option<u16>,
}

/// Writes the Ethernet frame of `seg` with `payload`, checksums done; its
/// length, or None when `buf` is too small.
pub fn write_tcp_frame(buf: &mut [u8], seg: &TcpOut, payload: &[u8]) -> Option<usize> {
    let options = if seg.mss.is_some() { 4 } else { 0 };
    let tcp_len = TCP_HEADER + options + payload.len();
    let ip_len = IPV4_HEADER + tcp_len;
    let len = ETH_HEADER + ip_len;
    let buf = buf.get_mut(..len)?;
    let ip_total = u16::try_from(ip_len).ok()?;
    write_ethernet(buf, seg.dst_mac, seg.src_mac, ETHERTYPE_IPV4);
    let ip = &mut buf[ETH_HEADER..];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&ip_total.to_be_bytes());
    ip[4..6].copy_from_slice(&seg.ip_id.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
    ip[8] = 64;
    ip[9] = PROTO_TCP;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&seg.src_ip);
    ip[16..20].copy_from_slice(&seg.dst_ip);
    let checksum = fold(sum16(0, &ip[..IPV4_HEADER]));
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    let tcp = &mut ip[IPV4_HEADER..];
    tcp[0..2].copy_from_slice(&seg.src_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&seg.dst_port.to_be_bytes());
    tcp[4..8].copy_from_slice(&seg.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&seg.ack.to_be_bytes());
    tcp[12] = (((TCP_HEADER + options) / 4) as u8) << 4;
    tcp[13] = seg.flags;
    tcp[14..16].copy_from_slice(&seg.window.to_be_bytes());
    tcp[16..20].fill(0);
    if let Some(mss) = seg.mss {
        tcp[20] = 2;
        tcp[21] = 4;
        tcp[22..24].copy_from_slice(&mss.to_be_bytes());
    }
    tcp[TCP_HEADER + options..].copy_from_slice(payload);
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&seg.src_ip);
    pseudo[4..8].copy_from_slice(&seg.dst_ip);
    pseudo[9] = PROTO_TCP;
    pseudo[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    let checksum = fold(sum16(sum16(0, &pseudo), tcp));
    tcp[16..18].copy_from_slice(&checksum.to_be_bytes());
    Some(len)
}

/// Whether the TCP checksum of `ip`'s segment is right (tests, and
/// checking what the MMDS sends).
pub fn tcp_checksum_ok(ip: &Ipv4<'_>) -> bool {
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&ip.src);
    pseudo[4..8].copy_from_slice(&ip.dst);
    pseudo[9] = ip.protocol;
    pseudo[10..12].copy_from_slice(&(ip.payload.len() as u16).to_be_bytes());
    fold(sum16(sum16(0, &pseudo), ip.payload)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [2, 0, 0, 0, 0, 1];
    const B: Mac = [2, 0, 0, 0, 0, 2];

    #[test]
    fn tcp_frames_round_trip_with_checksums() {
        let seg = TcpOut {
            src_mac: A,
            dst_mac: B,
            src_ip: [169, 254, 169, 254],
            dst_ip: [169, 254, 0, 2],
            ip_id: 7,
            src_port: 80,
            dst_port: 40000,
            seq: 1,
            ack: 0xffff_fff0,
            flags: TCP_SYN | TCP_ACK,
            window: 4096,
            mss: Some(1460),
        };
        let mut buf = [0u8; 1514];
        let len = write_tcp_frame(&mut buf, &seg, b"hello").unwrap();
        assert_eq!(len, 14 + 20 + 24 + 5);
        let eth = parse_ethernet(&buf[..len]).unwrap();
        assert_eq!((eth.dst, eth.src, eth.ethertype), (B, A, ETHERTYPE_IPV4));
        let ip = parse_ipv4(eth.payload).unwrap();
        assert_eq!(
            (ip.src, ip.dst, ip.protocol),
            (seg.src_ip, seg.dst_ip, PROTO_TCP)
        );
        assert!(tcp_checksum_ok(&ip));
        let tcp = parse_tcp(ip.payload).unwrap();
        assert_eq!(
            (
                tcp.src_port,
                tcp.dst_port,
                tcp.seq,
                tcp.ack,
                tcp.flags,
                tcp.window,
                tcp.mss
            ),
            (
                80,
                40000,
                1,
                0xffff_fff0,
                TCP_SYN | TCP_ACK,
                4096,
                Some(1460)
            )
        );
        assert_eq!(tcp.payload, b"hello");
        assert_eq!(tcp.seq_len(), 6);
        assert!(write_tcp_frame(&mut buf[..50], &seg, b"hello").is_none());
        // A corrupted IP header is refused.
        buf[14 + 8] ^= 1;
        assert!(parse_ipv4(&buf[14..len]).is_none());
    }

    #[test]
    fn arp_reply_round_trip() {
        let mut buf = [0u8; 64];
        let len = write_arp_reply(&mut buf, A, [1, 2, 3, 4], B, [5, 6, 7, 8]).unwrap();
        assert_eq!(arp_target_ip(&buf[..len]), Some([5, 6, 7, 8]));
        let eth = parse_ethernet(&buf[..len]).unwrap();
        let arp = parse_arp(eth.payload).unwrap();
        assert_eq!(
            arp,
            Arp {
                operation: ARP_REPLY,
                sender_mac: A,
                sender_ip: [1, 2, 3, 4],
                target_ip: [5, 6, 7, 8]
            }
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert!(parse_ethernet(&[0; 13]).is_none());
        assert!(parse_arp(&[0; 27]).is_none());
        assert!(parse_ipv4(&[0x45; 19]).is_none());
        assert!(parse_ipv4(&[0x65; 40]).is_none());
        // IHL 4 (16 bytes): too short.
        let mut ip = [0u8; 40];
        ip[0] = 0x44;
        assert!(parse_ipv4(&ip).is_none());
        assert!(parse_tcp(&[0; 19]).is_none());
        // Data offset past the end; an option running past the header.
        let mut tcp = [0u8; 24];
        tcp[12] = 0x70;
        assert!(parse_tcp(&tcp).is_none());
        tcp[12] = 0x60;
        tcp[20] = 2;
        tcp[21] = 9;
        assert!(parse_tcp(&tcp).is_none());
        tcp[21] = 0;
        assert!(parse_tcp(&tcp).is_none());
        tcp[20] = 1;
        assert!(parse_tcp(&tcp).is_some());
    }
}
