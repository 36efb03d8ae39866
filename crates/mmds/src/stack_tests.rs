use super::*;
use crate::wire::{Tcp, TCP_FIN, TCP_PSH};
use crate::{Mmds, Version, DEFAULT_IPV4};

const GUEST_MAC: Mac = [0x06, 0, 0, 0, 0, 1];
const GUEST_IP: Ip = [169, 254, 0, 2];
const MMDS_IP: Ip = [169, 254, 169, 254];

fn stack(version: Version) -> (Stack, SharedMmds) {
    let mmds = Mmds::shared(crate::store::DEFAULT_LIMIT);
    mmds.lock()
        .unwrap()
        .store
        .put(serde_json::json!({"latest": {"meta-data": {"ami-id": "ami-12345", "big": "x".repeat(5000)}}}))
        .unwrap();
    let config = StackConfig {
        ipv4: DEFAULT_IPV4,
        service: ServiceConfig {
            version,
            imds_compat: false,
        },
    };
    (Stack::new(config, mmds.clone()), mmds)
}

/// A TCP frame from the guest.
fn frame(port: u16, dst_port: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let seg = TcpOut {
        src_mac: GUEST_MAC,
        dst_mac: MMDS_MAC,
        src_ip: GUEST_IP,
        dst_ip: MMDS_IP,
        ip_id: 1,
        src_port: port,
        dst_port,
        seq,
        ack,
        flags,
        window: 65535,
        mss: (flags & TCP_SYN != 0).then_some(1460),
    };
    let mut buf = vec![0u8; 2000];
    let len = wire::write_tcp_frame(&mut buf, &seg, payload).unwrap();
    buf.truncate(len);
    buf
}

/// What the stack sends, parsed: (flags, seq, ack, payload).
fn drain(stack: &mut Stack) -> Vec<(u8, u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; MAX_FRAME];
    while let Some(len) = stack.next_frame_for_guest(&mut buf) {
        let eth = wire::parse_ethernet(&buf[..len]).unwrap();
        assert_eq!((eth.src, eth.dst), (MMDS_MAC, GUEST_MAC));
        let ip = wire::parse_ipv4(eth.payload).unwrap();
        assert!(wire::tcp_checksum_ok(&ip));
        let t = wire::parse_tcp(ip.payload).unwrap();
        out.push((t.flags, t.seq, t.ack, t.payload.to_vec()));
        assert!(out.len() < 1000, "the stack never stops sending");
    }
    out
}

/// A minimal client: connect, send `request`, read until the server's
/// FIN or until nothing more comes; the bytes received.
fn exchange(stack: &mut Stack, port: u16, request: &str) -> String {
    stack.handle_guest_frame(&frame(port, 80, 1000, 0, TCP_SYN, b""));
    let synack = drain(stack);
    assert_eq!(synack.len(), 1);
    let (flags, iss, ack, _) = synack[0].clone();
    assert_eq!((flags, ack), (TCP_SYN | TCP_ACK, 1001));
    let mut seq = 1001u32;
    let mut rcv = iss.wrapping_add(1);
    let frame_in = frame(port, 80, seq, rcv, TCP_ACK | TCP_PSH, request.as_bytes());
    stack.handle_guest_frame(&frame_in);
    seq = seq.wrapping_add(request.len() as u32);
    let mut got = Vec::new();
    loop {
        let segments = drain(stack);
        if segments.is_empty() {
            break;
        }
        let mut fin = false;
        for (flags, s, _, payload) in segments {
            assert_eq!(s, rcv, "in order");
            got.extend_from_slice(&payload);
            rcv = rcv.wrapping_add(payload.len() as u32);
            if flags & TCP_FIN != 0 {
                rcv = rcv.wrapping_add(1);
                fin = true;
            }
        }
        if fin {
            stack.handle_guest_frame(&frame(port, 80, seq, rcv, TCP_ACK | TCP_FIN, b""));
            let last = drain(stack);
            assert_eq!(last.len(), 1);
            assert_eq!(last[0].0, TCP_ACK);
            break;
        }
        stack.handle_guest_frame(&frame(port, 80, seq, rcv, TCP_ACK, b""));
    }
    String::from_utf8(got).unwrap()
}

#[test]
fn arp_is_answered_for_the_mmds_address_only() {
    let (mut s, _) = stack(Version::V1);
    let mut req = vec![0u8; 42];
    req[0..6].fill(0xff);
    req[6..12].copy_from_slice(&GUEST_MAC);
    req[12..14].copy_from_slice(&wire::ETHERTYPE_ARP.to_be_bytes());
    req[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    req[22..28].copy_from_slice(&GUEST_MAC);
    req[28..32].copy_from_slice(&GUEST_IP);
    req[38..42].copy_from_slice(&MMDS_IP);
    assert!(s.is_for_mmds(&req));
    s.handle_guest_frame(&req);
    let mut buf = [0u8; MAX_FRAME];
    let len = s.next_frame_for_guest(&mut buf).unwrap();
    let eth = wire::parse_ethernet(&buf[..len]).unwrap();
    let arp = wire::parse_arp(eth.payload).unwrap();
    assert_eq!(
        (arp.operation, arp.sender_mac, arp.sender_ip, arp.target_ip),
        (wire::ARP_REPLY, MMDS_MAC, MMDS_IP, GUEST_IP)
    );
    assert!(s.next_frame_for_guest(&mut buf).is_none());
    req[41] = 1;
    assert!(!s.is_for_mmds(&req));
}

#[test]
fn http_get_over_tcp_v1() {
    let (mut s, _) = stack(Version::V1);
    let text = exchange(
        &mut s,
        40000,
        "GET /latest/meta-data/ami-id HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n",
    );
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nami-12345"), "{text}");
    // A large answer goes in several segments.
    let text = exchange(&mut s, 40001, "GET /latest/meta-data/big HTTP/1.0\r\n\r\n");
    assert!(text.ends_with(&"x".repeat(5000)), "{}", text.len());
    assert_eq!(s.connections(), 0);
    assert_eq!(s.counters().requests, 2);
}

#[test]
fn v2_session_over_tcp() {
    let (mut s, _) = stack(Version::V2);
    let text = exchange(&mut s, 1, "GET /latest HTTP/1.0\r\n\r\n");
    assert!(text.starts_with("HTTP/1.0 401 "), "{text}");
    let text = exchange(
        &mut s,
        2,
        "PUT /latest/api/token HTTP/1.0\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n",
    );
    let token = text.split("\r\n\r\n").nth(1).unwrap().to_string();
    let text = exchange(
        &mut s,
        3,
        &format!("GET /latest HTTP/1.0\r\nX-metadata-token: {token}\r\n\r\n"),
    );
    assert!(text.ends_with("\r\n\r\nmeta-data/"), "{text}");
}

#[test]
fn keep_alive_answers_pipelined_requests_in_order() {
    let (mut s, _) = stack(Version::V1);
    let two = "GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\nGET /latest HTTP/1.1\r\nConnection: close\r\n\r\n";
    let text = exchange(&mut s, 7, two);
    let first = text.find("ami-12345").unwrap();
    let second = text.find("meta-data/").unwrap();
    assert!(first < second, "{text}");
}

#[test]
fn strangers_get_resets() {
    let (mut s, _) = stack(Version::V1);
    // A SYN to another port; data for no connection.
    s.handle_guest_frame(&frame(5, 22, 100, 0, TCP_SYN, b""));
    s.handle_guest_frame(&frame(6, 80, 100, 77, TCP_ACK, b"x"));
    let out = drain(&mut s);
    assert_eq!(
        out,
        [
            (TCP_RST | TCP_ACK, 0, 101, vec![]),
            (TCP_RST, 77, 0, vec![])
        ]
    );
    // Not TCP (UDP to the address): dropped, nothing sent.
    let mut udp = frame(5, 80, 0, 0, 0, b"");
    udp[14 + 9] = 17;
    udp[14 + 10..14 + 12].fill(0);
    let sum = {
        let mut acc = 0u32;
        for c in udp[14..34].chunks(2) {
            acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    };
    udp[24..26].copy_from_slice(&sum.to_be_bytes());
    assert!(s.is_for_mmds(&udp));
    s.handle_guest_frame(&udp);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.counters().dropped, 1);
}

#[test]
fn a_flood_of_connections_stays_bounded() {
    let (mut s, _) = stack(Version::V1);
    for port in 0..1000u16 {
        s.handle_guest_frame(&frame(port, 80, 1, 0, TCP_SYN, b""));
        // Requests that never end, to fill buffers too.
        s.handle_guest_frame(&frame(port, 80, 2, 0, TCP_ACK, &[b'a'; 100]));
    }
    assert_eq!(s.connections(), MAX_CONNECTIONS);
    assert!(s.counters().evicted >= 1000 - MAX_CONNECTIONS as u64);
    drain(&mut s);
    // Resets and ARP replies waiting are bounded too.
    for port in 0..1000u16 {
        s.handle_guest_frame(&frame(port, 81, 1, 0, TCP_SYN, b""));
    }
    assert_eq!(drain(&mut s).len(), MAX_PENDING_RESETS);
}

/// A small deterministic generator for the fuzz-style tests.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_frames_never_panic() {
    let (mut s, _) = stack(Version::V2);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut buf = [0u8; MAX_FRAME];
    let valid = frame(9, 80, 1, 0, TCP_SYN, b"");
    for round in 0..20_000 {
        let mut f: Vec<u8> = match round % 3 {
            // Pure noise.
            0 => (0..rng.next() % 120).map(|_| rng.next() as u8).collect(),
            // A valid frame with bytes flipped (the addresses kept, so
            // that it reaches the parsers).
            1 => {
                let mut f = valid.clone();
                for _ in 0..1 + rng.next() % 4 {
                    let i = 14 + (rng.next() as usize % (f.len() - 14));
                    if !(30..34).contains(&i) {
                        f[i] = rng.next() as u8;
                    }
                }
                f
            }
            // A well-formed segment with random numbers and payload.
            _ => {
                let payload: Vec<u8> = (0..rng.next() % 300).map(|_| rng.next() as u8).collect();
                frame(
                    (rng.next() % 4) as u16,
                    80,
                    rng.next() as u32,
                    rng.next() as u32,
                    rng.next() as u8 & 0x3f,
                    &payload,
                )
            }
        };
        if round % 7 == 0 && f.len() > 20 {
            f.truncate(rng.next() as usize % f.len());
        }
        if s.is_for_mmds(&f) {
            s.handle_guest_frame(&f);
        }
        for _ in 0..rng.next() % 4 {
            let _ = s.next_frame_for_guest(&mut buf);
        }
        assert!(s.connections() <= MAX_CONNECTIONS);
    }
    let mut frames = 0;
    while s.next_frame_for_guest(&mut buf).is_some() {
        frames += 1;
        assert!(frames < 100_000);
    }
    // Random HTTP bytes into an established connection.
    let mut port = 1000;
    for _ in 0..200 {
        port += 1;
        let noise: Vec<u8> = (0..rng.next() % 600).map(|_| rng.next() as u8).collect();
        let request = String::from_utf8_lossy(&noise).into_owned();
        let _ = exchange(&mut s, port, &request);
    }
}

#[test]
fn segments_for_unknown_ports_do_not_create_state() {
    let (mut s, _) = stack(Version::V1);
    let t = Tcp {
        src_port: 1,
        dst_port: 80,
        seq: 0,
        ack: 0,
        flags: TCP_ACK,
        window: 0,
        mss: None,
        payload: b"",
    };
    assert!(!t.has(TCP_SYN));
    s.handle_guest_frame(&frame(1, 80, 0, 0, TCP_ACK | TCP_FIN, b""));
    assert_eq!(s.connections(), 0);
}
