//! The MMDS network stack of one network interface: the device hands it
//! the guest's frames for the MMDS address ([`Stack::is_for_mmds`],
//! [`Stack::handle_guest_frame`]) instead of sending them to the host, and
//! delivers what it answers ([`Stack::next_frame_for_guest`]) into the
//! guest's receive queue.
//!
//! It answers ARP requests for its address with its own MAC, and TCP on
//! port 80 with the HTTP responder of [`crate::http`]; other TCP gets a
//! reset, other IPv4 for the address is dropped. Everything it keeps is
//! bounded, whatever the guest sends: at most [`MAX_CONNECTIONS`]
//! connections (a new one pushes out the one heard from least recently),
//! each with a request buffer of [`crate::tcp::RX_BUFFER`] bytes and one
//! answer at a time; at most [`MAX_PENDING_ARP`] ARP replies and
//! [`MAX_PENDING_RESETS`] resets waiting (the oldest go first).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Instant;

use crate::http::{self, Parsed};
use crate::tcp::{Connection, Verdict, MSS};
use crate::wire::{self, Ip, Mac, TcpOut, PROTO_TCP, TCP_ACK, TCP_RST, TCP_SYN};
use crate::{ServiceConfig, SharedMmds};

/// The MAC address the MMDS answers from (Firecracker's).
pub const MMDS_MAC: Mac = [0x06, 0x01, 0x23, 0x45, 0x67, 0x01];
pub const HTTP_PORT: u16 = 80;
pub const MAX_CONNECTIONS: usize = 16;
pub const MAX_PENDING_ARP: usize = 8;
pub const MAX_PENDING_RESETS: usize = 16;
/// The largest frame the stack writes (an Ethernet MTU with its header).
pub const MAX_FRAME: usize = wire::ETH_HEADER + 1500;

/// What the stack has seen and done.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StackCounters {
    /// Frames from the guest taken by the stack.
    pub frames_in: u64,
    /// Frames the stack gave the guest.
    pub frames_out: u64,
    /// Frames taken but not usable (malformed, not TCP, ...).
    pub dropped: u64,
    pub resets_sent: u64,
    /// Connections pushed out by newer ones.
    pub evicted: u64,
    pub requests: u64,
}

#[derive(Debug, Clone, Copy)]
struct Reset {
    mac: Mac,
    ip: Ip,
    port: u16,
    local_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
}

/// The stack's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackConfig {
    pub ipv4: Ipv4Addr,
    pub service: ServiceConfig,
}

pub struct Stack {
    ip: Ip,
    service: ServiceConfig,
    mmds: SharedMmds,
    arp: VecDeque<(Mac, Ip)>,
    resets: VecDeque<Reset>,
    connections: Vec<Connection>,
    /// Where the round-robin over connections starts next.
    next_conn: usize,
    /// Counts segments, as the clock of "least recently heard from".
    clock: u64,
    isn: u32,
    ip_id: u16,
    counters: StackCounters,
}

impl Stack {
    pub fn new(config: StackConfig, mmds: SharedMmds) -> Stack {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
        Stack {
            ip: config.ipv4.octets(),
            service: config.service,
            mmds,
            arp: VecDeque::new(),
            resets: VecDeque::new(),
            connections: Vec::new(),
            next_conn: 0,
            clock: 0,
            isn: seed,
            ip_id: 0,
            counters: StackCounters::default(),
        }
    }

    pub fn counters(&self) -> StackCounters {
        self.counters
    }

    /// Whether `frame` (Ethernet, no virtio header) is for the MMDS: an
    /// ARP packet asking for its address, or IPv4 to it. Such frames must
    /// not reach the host.
    pub fn is_for_mmds(&self, frame: &[u8]) -> bool {
        wire::arp_target_ip(frame) == Some(self.ip)
            || wire::ipv4_destination(frame) == Some(self.ip)
    }

    /// Takes a frame from the guest that [`Stack::is_for_mmds`] accepted.
    pub fn handle_guest_frame(&mut self, frame: &[u8]) {
        self.counters.frames_in += 1;
        if !self.take(frame) {
            self.counters.dropped += 1;
        }
    }

    fn take(&mut self, frame: &[u8]) -> bool {
        let Some(eth) = wire::parse_ethernet(frame) else {
            return false;
        };
        match eth.ethertype {
            wire::ETHERTYPE_ARP => {
                let Some(arp) = wire::parse_arp(eth.payload) else {
                    return false;
                };
                if arp.operation != wire::ARP_REQUEST || arp.target_ip != self.ip {
                    return false;
                }
                if self.arp.len() == MAX_PENDING_ARP {
                    self.arp.pop_front();
                }
                self.arp.push_back((arp.sender_mac, arp.sender_ip));
                true
            }
            wire::ETHERTYPE_IPV4 => {
                let Some(ip) = wire::parse_ipv4(eth.payload) else {
                    return false;
                };
                if ip.dst != self.ip || ip.protocol != PROTO_TCP {
                    return false;
                }
                let Some(seg) = wire::parse_tcp(ip.payload) else {
                    return false;
                };
                self.on_tcp(eth.src, ip.src, &seg);
                true
            }
            _ => false,
        }
    }

    fn queue_reset(&mut self, reset: Reset) {
        if self.resets.len() == MAX_PENDING_RESETS {
            self.resets.pop_front();
        }
        self.resets.push_back(reset);
    }

    /// A reset for a segment nothing listens for (RFC 9293, 3.10.7.1).
    fn refuse(&mut self, mac: Mac, ip: Ip, seg: &wire::Tcp<'_>) {
        if seg.has(TCP_RST) {
            return;
        }
        let (seq, ack, flags) = if seg.has(TCP_ACK) {
            (seg.ack, 0, TCP_RST)
        } else {
            (0, seg.seq.wrapping_add(seg.seq_len()), TCP_RST | TCP_ACK)
        };
        self.queue_reset(Reset {
            mac,
            ip,
            port: seg.src_port,
            local_port: seg.dst_port,
            seq,
            ack,
            flags,
        });
    }

    fn on_tcp(&mut self, mac: Mac, ip: Ip, seg: &wire::Tcp<'_>) {
        self.clock += 1;
        let now = self.clock;
        let found = self.connections.iter().position(|c| {
            c.peer_ip == ip && c.peer_port == seg.src_port && c.local_port == seg.dst_port
        });
        let index = match found {
            Some(i) => i,
            None => {
                let new = seg.has(TCP_SYN) && !seg.has(TCP_ACK) && !seg.has(TCP_RST);
                if !new || seg.dst_port != HTTP_PORT {
                    self.refuse(mac, ip, seg);
                    return;
                }
                if self.connections.len() == MAX_CONNECTIONS {
                    let oldest = (0..self.connections.len())
                        .min_by_key(|&i| self.connections[i].last_seen)
                        .unwrap_or(0);
                    self.connections.swap_remove(oldest);
                    self.counters.evicted += 1;
                }
                self.isn = self.isn.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let conn = Connection::accept(mac, ip, seg, self.isn, now);
                self.connections.push(conn);
                return;
            }
        };
        let conn = &mut self.connections[index];
        if let Verdict::Reset { seq, ack, flags } = conn.on_segment(seg, now) {
            let reset = Reset {
                mac,
                ip,
                port: seg.src_port,
                local_port: seg.dst_port,
                seq,
                ack,
                flags,
            };
            self.queue_reset(reset);
            return;
        }
        self.serve(index);
    }

    /// Answers the requests waiting on connection `index`, one at a time.
    fn serve(&mut self, index: usize) {
        let conn = &mut self.connections[index];
        if !conn.is_established() {
            return;
        }
        while conn.out.is_empty() && !conn.fin_queued {
            match http::parse(&conn.rx) {
                Parsed::Incomplete => {
                    if conn.fin_received {
                        // The guest is done sending: close too.
                        conn.fin_queued = true;
                    }
                    break;
                }
                Parsed::Bad(response) => {
                    conn.rx.clear();
                    conn.consume(0);
                    conn.out = response.to_bytes();
                    conn.fin_queued = true;
                }
                Parsed::Complete { request, len } => {
                    conn.consume(len);
                    self.counters.requests += 1;
                    let response = {
                        let mut mmds = self.mmds.lock().unwrap_or_else(|p| p.into_inner());
                        http::respond(&mut mmds, &self.service, &request, Instant::now())
                    };
                    conn.out = response.to_bytes();
                    conn.fin_queued = response.close;
                }
            }
        }
    }

    /// Writes the next frame for the guest (Ethernet, no virtio header)
    /// into `buf`, which should hold [`MAX_FRAME`] bytes; its length, or
    /// None when the stack has nothing to send.
    pub fn next_frame_for_guest(&mut self, buf: &mut [u8]) -> Option<usize> {
        let len = self.next_frame(buf);
        if len.is_some() {
            self.counters.frames_out += 1;
        }
        len
    }

    fn next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        if let Some((mac, ip)) = self.arp.pop_front() {
            return wire::write_arp_reply(buf, MMDS_MAC, self.ip, mac, ip);
        }
        if let Some(r) = self.resets.pop_front() {
            self.counters.resets_sent += 1;
            let seg = self.header(r.mac, r.ip, r.local_port, r.port);
            let seg = TcpOut {
                seq: r.seq,
                ack: r.ack,
                flags: r.flags,
                ..seg
            };
            return wire::write_tcp_frame(buf, &seg, &[]);
        }
        let max_data = buf
            .len()
            .saturating_sub(wire::ETH_HEADER + wire::IPV4_HEADER + wire::TCP_HEADER + 4)
            .min(usize::from(MSS));
        let count = self.connections.len();
        for k in 0..count {
            let i = (self.next_conn + k) % count;
            let Some(out) = self.connections[i].next_segment(max_data) else {
                continue;
            };
            self.next_conn = (i + 1) % count.max(1);
            let c = &self.connections[i];
            let seg = TcpOut {
                seq: out.seq,
                ack: out.ack,
                flags: out.flags,
                window: out.window,
                mss: out.mss,
                ..self.header(c.peer_mac, c.peer_ip, c.local_port, c.peer_port)
            };
            let c = &self.connections[i];
            let len = wire::write_tcp_frame(buf, &seg, &c.out[out.data]);
            self.connections.retain(|c| !c.is_done());
            return len;
        }
        self.connections.retain(|c| !c.is_done());
        None
    }

    fn header(&mut self, mac: Mac, ip: Ip, local_port: u16, port: u16) -> TcpOut {
        self.ip_id = self.ip_id.wrapping_add(1);
        TcpOut {
            src_mac: MMDS_MAC,
            dst_mac: mac,
            src_ip: self.ip,
            dst_ip: ip,
            ip_id: self.ip_id,
            src_port: local_port,
            dst_port: port,
            seq: 0,
            ack: 0,
            flags: 0,
            window: 0,
            mss: None,
        }
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }
}

#[cfg(test)]
#[path = "stack_tests.rs"]
mod tests;
