//! One stream connection between a guest port and a host socket: its
//! state, the bytes in flight both ways and the credit flow control of
//! virtio 1.2, 5.10.6.3.
//!
//! The state machine is pure: packets from the guest come in through
//! [`Connection::on_packet`], bytes from and to the host socket through
//! [`Connection::push_host_data`] / [`Connection::host_bytes`] /
//! [`Connection::host_written`], and the packets for the guest come out of
//! [`Connection::next_packet`]. The backend ([`super::unix`]) does the I/O.
//!
//! Credit: the guest may have at most `buf_alloc` bytes of ours in flight
//! (sent to us but not yet written to the host socket, `rx_cnt -
//! fwd_cnt`); we send it at most its `buf_alloc - (tx_cnt - fwd_cnt)`.
//! A guest that sends past its credit has its connection reset.

use std::collections::VecDeque;

use super::packet::{
    Header, Op, Packet, HOST_CID, MAX_PAYLOAD, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND,
    TYPE_STREAM,
};

/// The receive buffer advertised to the guest: guest data not yet written
/// to the host socket.
pub const BUF_ALLOC: u32 = 256 << 10;
/// Host bytes read ahead of the guest's credit and receive buffers.
pub const TO_GUEST_CAP: usize = 64 << 10;
/// Freed receive buffer worth a CREDIT_UPDATE of its own.
const CREDIT_THRESHOLD: u32 = BUF_ALLOC / 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: the REQUEST is (to be) sent, no RESPONSE yet.
    Connecting,
    Established,
    /// A RST was sent or received: the connection is gone once the RST is
    /// out.
    Closed,
}

/// Why a connection was reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The guest sent a RST.
    Guest,
    /// A packet that does not fit the connection's state.
    Protocol,
    /// The guest sent more than its credit.
    Credit,
    /// The host socket failed or closed while the guest still sent.
    Host,
    /// Both sides are done (a clean close).
    Done,
    /// The guest did not answer a host client's REQUEST in time.
    Timeout,
}

#[derive(Debug)]
pub struct Connection {
    /// The host's port (ours).
    pub local_port: u32,
    /// The guest's port.
    pub peer_port: u32,
    pub state: State,
    guest_cid: u64,
    // Guest to host.
    to_host: VecDeque<u8>,
    /// Bytes at the front of `to_host` that are not guest data (the
    /// handshake's "OK" line).
    to_host_prefix: usize,
    rx_cnt: u32,
    fwd_cnt: u32,
    /// The fwd_cnt the guest last heard of.
    fwd_cnt_sent: u32,
    // Host to guest.
    to_guest: VecDeque<u8>,
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    // Control.
    want_request: bool,
    want_response: bool,
    want_credit_update: bool,
    want_rst: bool,
    reset_reason: Option<ResetReason>,
    /// SHUTDOWN flags the guest sent.
    guest_shut: u32,
    /// The host socket's read side ended.
    host_eof: bool,
    /// Our SHUTDOWN (SEND) went to the guest.
    shutdown_sent: bool,
    /// The host socket's write side was shut.
    host_write_shut: bool,
}

impl Connection {
    fn new(guest_cid: u64, local_port: u32, peer_port: u32, state: State) -> Connection {
        Connection {
            local_port,
            peer_port,
            state,
            guest_cid,
            to_host: VecDeque::new(),
            to_host_prefix: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            to_guest: VecDeque::new(),
            tx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            want_request: false,
            want_response: false,
            want_credit_update: false,
            want_rst: false,
            reset_reason: None,
            guest_shut: 0,
            host_eof: false,
            shutdown_sent: false,
            host_write_shut: false,
        }
    }

    /// A host client asked for the guest's `peer_port`: a REQUEST goes out;
    /// `ok_line` goes to the host socket first once the guest accepts.
    pub fn outgoing(guest_cid: u64, local_port: u32, peer_port: u32) -> Connection {
        let mut c = Connection::new(guest_cid, local_port, peer_port, State::Connecting);
        c.want_request = true;
        c
    }

    /// The guest's REQUEST `packet` reached a host socket: a RESPONSE goes
    /// out.
    pub fn incoming(guest_cid: u64, packet: &Packet) -> Connection {
        let mut c = Connection::new(
            guest_cid,
            packet.dst_port,
            packet.src_port,
            State::Established,
        );
        c.peer_credit(packet);
        c.want_response = true;
        c
    }

    fn peer_credit(&mut self, packet: &Packet) {
        self.peer_buf_alloc = packet.buf_alloc;
        self.peer_fwd_cnt = packet.fwd_cnt;
    }

    /// Bytes the guest can take now.
    pub fn peer_credit_left(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn reset(&mut self, reason: ResetReason) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.reset_reason = Some(reason);
            // A RST from the guest needs no answer.
            self.want_rst = reason != ResetReason::Guest;
        }
        self.to_guest.clear();
    }

    /// Why the connection was reset, once it is.
    pub fn reset_reason(&self) -> Option<ResetReason> {
        self.reset_reason
    }

    /// A packet from the guest for this connection.
    pub fn on_packet(&mut self, packet: &Packet) {
        if self.state == State::Closed {
            return;
        }
        self.peer_credit(packet);
        match packet.op {
            Op::Response if self.state == State::Connecting && !self.want_request => {
                self.state = State::Established;
                let line = format!("OK {}\n", self.local_port);
                self.to_host_prefix = line.len();
                self.to_host.extend(line.as_bytes());
            }
            Op::Rw if self.state == State::Established && self.guest_shut & SHUTDOWN_SEND == 0 => {
                let buffered = self.rx_cnt.wrapping_sub(self.fwd_cnt);
                if packet.payload.len() as u64 + u64::from(buffered) > u64::from(BUF_ALLOC) {
                    self.reset(ResetReason::Credit);
                    return;
                }
                self.to_host.extend(packet.payload);
                self.rx_cnt = self.rx_cnt.wrapping_add(packet.payload.len() as u32);
            }
            Op::CreditUpdate => {}
            Op::CreditRequest => self.want_credit_update = true,
            Op::Shutdown if self.state == State::Established => {
                self.guest_shut |= packet.flags;
                if self.guest_shut & SHUTDOWN_RCV != 0 {
                    self.to_guest.clear();
                }
            }
            Op::Rst => self.reset(ResetReason::Guest),
            _ => self.reset(ResetReason::Protocol),
        }
        self.check_done();
    }

    /// Clean close: both directions ended and every guest byte reached the
    /// host; or the guest shut both ways and what it sent was delivered.
    fn check_done(&mut self) {
        if self.state != State::Established || !self.to_host.is_empty() {
            return;
        }
        let guest_done = self.guest_shut == SHUTDOWN_BOTH;
        let both_done =
            self.guest_shut & SHUTDOWN_SEND != 0 && self.host_eof && self.to_guest.is_empty();
        if guest_done || (both_done && self.shutdown_sent) {
            self.reset(ResetReason::Done);
        }
    }

    /// How many host bytes may be read now (0 when none are wanted).
    pub fn host_room(&self) -> usize {
        if self.state != State::Established || self.host_eof || self.guest_shut & SHUTDOWN_RCV != 0
        {
            return 0;
        }
        TO_GUEST_CAP.saturating_sub(self.to_guest.len())
    }

    /// Bytes read from the host socket (at most [`Self::host_room`]).
    pub fn push_host_data(&mut self, data: &[u8]) {
        if self.host_room() >= data.len() {
            self.to_guest.extend(data);
        }
    }

    /// The host socket's read side ended.
    pub fn host_eof(&mut self) {
        self.host_eof = true;
        self.check_done();
    }

    /// The guest left a host client's REQUEST unanswered too long.
    pub fn connect_timed_out(&mut self) {
        if self.state == State::Connecting {
            self.reset(ResetReason::Timeout);
        }
    }

    /// The host socket failed (a write or read error, a hang-up while the
    /// guest still sends).
    pub fn host_failed(&mut self) {
        self.reset(ResetReason::Host);
    }

    /// The bytes waiting for the host socket (the front ones).
    pub fn host_bytes(&self) -> &[u8] {
        self.to_host.as_slices().0
    }

    pub fn has_host_bytes(&self) -> bool {
        !self.to_host.is_empty()
    }

    /// `n` bytes of [`Self::host_bytes`] were written to the host socket.
    pub fn host_written(&mut self, n: usize) {
        let n = n.min(self.to_host.len());
        self.to_host.drain(..n);
        let prefix = n.min(self.to_host_prefix);
        self.to_host_prefix -= prefix;
        self.fwd_cnt = self.fwd_cnt.wrapping_add((n - prefix) as u32);
        let unannounced = self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent);
        if unannounced >= CREDIT_THRESHOLD || (self.to_host.is_empty() && unannounced > 0) {
            self.want_credit_update = true;
        }
        self.check_done();
    }

    /// Whether the host socket's write side should be shut now (the guest
    /// sent SHUTDOWN SEND and all it sent was written); true once.
    pub fn take_host_write_shutdown(&mut self) -> bool {
        let due = self.state == State::Established
            && self.guest_shut & SHUTDOWN_SEND != 0
            && self.to_host.is_empty()
            && !self.host_write_shut;
        if due {
            self.host_write_shut = true;
        }
        due
    }

    /// The connection is over: remove it and close the host socket.
    pub fn finished(&self) -> bool {
        self.state == State::Closed && !self.want_rst
    }

    /// The next packet for the guest, if any, in a receive buffer with
    /// `room` payload bytes.
    pub fn next_op(&self, room: usize) -> Option<Op> {
        if self.want_rst {
            return Some(Op::Rst);
        }
        match self.state {
            State::Closed => None,
            State::Connecting => self.want_request.then_some(Op::Request),
            State::Established => {
                if self.want_response {
                    Some(Op::Response)
                } else if !self.to_guest.is_empty() && self.peer_credit_left() > 0 && room > 0 {
                    Some(Op::Rw)
                } else if self.want_credit_update {
                    Some(Op::CreditUpdate)
                } else if self.host_eof && self.to_guest.is_empty() && !self.shutdown_sent {
                    Some(Op::Shutdown)
                } else {
                    None
                }
            }
        }
    }

    pub fn has_output(&self) -> bool {
        self.next_op(MAX_PAYLOAD).is_some()
    }

    /// Takes the next packet for the guest (header and payload) for a
    /// receive buffer with `room` payload bytes.
    pub fn next_packet(&mut self, room: usize) -> Option<(Header, Vec<u8>)> {
        let op = self.next_op(room)?;
        let mut flags = 0;
        let mut payload = Vec::new();
        match op {
            Op::Rst => {
                self.want_rst = false;
                self.state = State::Closed;
            }
            Op::Request => self.want_request = false,
            Op::Response => self.want_response = false,
            Op::Rw => {
                let n = self
                    .to_guest
                    .len()
                    .min(self.peer_credit_left() as usize)
                    .min(room)
                    .min(MAX_PAYLOAD);
                payload.extend(self.to_guest.drain(..n));
                self.tx_cnt = self.tx_cnt.wrapping_add(n as u32);
            }
            Op::CreditUpdate => {}
            Op::Shutdown => {
                // The host will send no more; it may still receive.
                flags = SHUTDOWN_SEND;
                self.shutdown_sent = true;
            }
            Op::CreditRequest => {}
        }
        // Every packet tells the guest our credit.
        self.want_credit_update = false;
        self.fwd_cnt_sent = self.fwd_cnt;
        let header = Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: payload.len() as u32,
            kind: TYPE_STREAM,
            op: op as u16,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
        };
        if op == Op::Shutdown {
            self.check_done();
        }
        Some((header, payload))
    }
}

/// A RST answering a packet with `header` that names no connection (from
/// the address the packet was sent to).
pub fn rst_for(header: &Header) -> Header {
    Header {
        src_cid: header.dst_cid,
        dst_cid: header.src_cid,
        src_port: header.dst_port,
        dst_port: header.src_port,
        len: 0,
        kind: TYPE_STREAM,
        op: Op::Rst as u16,
        flags: 0,
        buf_alloc: 0,
        fwd_cnt: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: u64 = 3;

    fn pkt(op: Op, payload: &[u8]) -> Packet<'_> {
        Packet {
            op,
            src_port: 1000,
            dst_port: 2000,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 0,
            payload,
        }
    }

    fn take(c: &mut Connection) -> Vec<(Op, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((h, p)) = c.next_packet(4096) {
            assert_eq!((h.src_cid, h.dst_cid), (HOST_CID, GUEST));
            assert_eq!((h.src_port, h.dst_port), (c.local_port, c.peer_port));
            assert_eq!(h.len as usize, p.len());
            out.push((Op::from_u16(h.op).unwrap(), p));
            assert!(out.len() < 100, "endless output");
        }
        out
    }

    fn ops(c: &mut Connection) -> Vec<Op> {
        take(c).into_iter().map(|(op, _)| op).collect()
    }

    fn established_incoming() -> Connection {
        let mut c = Connection::incoming(GUEST, &pkt(Op::Request, &[]));
        assert_eq!((c.local_port, c.peer_port), (2000, 1000));
        assert_eq!(ops(&mut c), vec![Op::Response]);
        c
    }

    #[test]
    fn host_initiated_handshake_writes_ok_then_relays() {
        let mut c = Connection::outgoing(GUEST, 0x4000_0000, 5000);
        assert_eq!(c.host_room(), 0, "no host data before the guest accepts");
        assert_eq!(ops(&mut c), vec![Op::Request]);
        assert_eq!(ops(&mut c), vec![]);
        c.on_packet(&Packet {
            src_port: 5000,
            dst_port: 0x4000_0000,
            ..pkt(Op::Response, &[])
        });
        assert_eq!(c.state, State::Established);
        assert_eq!(c.host_bytes(), b"OK 1073741824\n");
        c.host_written(14);
        assert!(!c.has_host_bytes());
        // The OK line is not guest data: no credit to announce.
        assert_eq!(ops(&mut c), vec![]);
        c.on_packet(&pkt(Op::Rw, b"hi"));
        assert_eq!(c.host_bytes(), b"hi");
    }

    #[test]
    fn a_response_to_nothing_or_data_before_it_resets() {
        let mut c = established_incoming();
        c.on_packet(&pkt(Op::Response, &[]));
        assert_eq!(c.reset_reason(), Some(ResetReason::Protocol));
        assert_eq!(ops(&mut c), vec![Op::Rst]);
        assert!(c.finished());

        let mut c = Connection::outgoing(GUEST, 1, 2);
        let _ = ops(&mut c);
        c.on_packet(&pkt(Op::Rw, b"early"));
        assert_eq!(ops(&mut c), vec![Op::Rst]);
        assert!(c.finished());
        // Nothing revives it.
        c.on_packet(&pkt(Op::Response, &[]));
        assert!(c.finished() && ops(&mut c).is_empty());
    }

    #[test]
    fn host_data_respects_the_guest_credit() {
        let mut c = established_incoming();
        c.push_host_data(&[7u8; 6000]);
        // The guest gave 4096 bytes of credit.
        let out = take(&mut c);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Op::Rw);
        assert_eq!(out[0].1.len(), 4096);
        assert_eq!(c.peer_credit_left(), 0);
        // The guest reads 1000 bytes and says so.
        c.on_packet(&Packet {
            fwd_cnt: 1000,
            ..pkt(Op::CreditUpdate, &[])
        });
        let out = take(&mut c);
        assert_eq!(out[0].1.len(), 1000);
        // A lying fwd_cnt (more than was sent) gives no credit at all.
        c.on_packet(&Packet {
            fwd_cnt: 1_000_000,
            ..pkt(Op::CreditUpdate, &[])
        });
        assert_eq!(c.peer_credit_left(), 0);
        assert!(take(&mut c).is_empty());
        c.on_packet(&Packet {
            fwd_cnt: 5096,
            ..pkt(Op::CreditUpdate, &[])
        });
        assert_eq!(c.peer_credit_left(), 4096);
        assert_eq!(take(&mut c)[0].1.len(), 904);
    }

    #[test]
    fn the_guest_past_its_credit_is_reset() {
        let mut c = established_incoming();
        let chunk = vec![1u8; MAX_PAYLOAD];
        for _ in 0..BUF_ALLOC as usize / MAX_PAYLOAD {
            c.on_packet(&pkt(Op::Rw, &chunk));
        }
        assert_eq!(c.state, State::Established);
        c.on_packet(&pkt(Op::Rw, b"x"));
        assert_eq!(c.reset_reason(), Some(ResetReason::Credit));
        assert_eq!(ops(&mut c), vec![Op::Rst]);
    }

    #[test]
    fn written_data_is_announced_as_credit() {
        let mut c = established_incoming();
        c.on_packet(&pkt(Op::Rw, b"hello"));
        assert_eq!(c.host_bytes(), b"hello");
        c.host_written(2);
        assert_eq!(ops(&mut c), vec![], "a partial small write waits");
        c.host_written(3);
        let (h, _) = c.next_packet(4096).unwrap();
        assert_eq!(Op::from_u16(h.op), Some(Op::CreditUpdate));
        assert_eq!((h.buf_alloc, h.fwd_cnt), (BUF_ALLOC, 5));
        // A credit request gets an update.
        c.on_packet(&pkt(Op::CreditRequest, &[]));
        assert_eq!(ops(&mut c), vec![Op::CreditUpdate]);
    }

    #[test]
    fn guest_half_close_then_host_close_ends_cleanly() {
        let mut c = established_incoming();
        c.on_packet(&pkt(Op::Rw, b"ping"));
        c.on_packet(&Packet {
            flags: SHUTDOWN_SEND,
            ..pkt(Op::Shutdown, &[])
        });
        assert!(!c.take_host_write_shutdown(), "data first");
        c.host_written(4);
        assert!(c.take_host_write_shutdown());
        assert!(!c.take_host_write_shutdown(), "once");
        // The host answers and closes.
        c.push_host_data(b"pong");
        c.host_eof();
        assert_eq!(c.host_room(), 0);
        let out = take(&mut c);
        let ops: Vec<Op> = out.iter().map(|(op, _)| *op).collect();
        assert_eq!(ops, vec![Op::Rw, Op::Shutdown, Op::Rst]);
        assert_eq!(out[0].1, b"pong");
        assert_eq!(c.reset_reason(), Some(ResetReason::Done));
        assert!(c.finished());
    }

    #[test]
    fn guest_full_shutdown_is_answered_with_rst_after_delivery() {
        let mut c = established_incoming();
        c.on_packet(&pkt(Op::Rw, b"last words"));
        c.on_packet(&Packet {
            flags: SHUTDOWN_BOTH,
            ..pkt(Op::Shutdown, &[])
        });
        assert!(!c.finished());
        assert_eq!(ops(&mut c), vec![], "the bytes reach the host first");
        c.host_written(10);
        assert_eq!(ops(&mut c), vec![Op::Rst]);
        assert!(c.finished());
    }

    #[test]
    fn guest_rst_closes_without_an_answer() {
        let mut c = established_incoming();
        c.push_host_data(b"unsent");
        c.on_packet(&pkt(Op::Rst, &[]));
        assert!(c.finished());
        assert_eq!(ops(&mut c), vec![]);
        assert_eq!(c.reset_reason(), Some(ResetReason::Guest));
    }

    #[test]
    fn host_failure_resets_and_guest_shutdown_rcv_drops_host_data() {
        let mut c = established_incoming();
        c.host_failed();
        assert_eq!(ops(&mut c), vec![Op::Rst]);
        assert!(c.finished());

        let mut c = established_incoming();
        c.push_host_data(b"nobody reads this");
        c.on_packet(&Packet {
            flags: SHUTDOWN_RCV,
            ..pkt(Op::Shutdown, &[])
        });
        assert_eq!(c.host_room(), 0);
        assert_eq!(ops(&mut c), vec![]);
    }

    #[test]
    fn an_unanswered_request_times_out_with_a_rst() {
        let mut c = Connection::outgoing(GUEST, 1, 2);
        assert_eq!(ops(&mut c), vec![Op::Request]);
        c.connect_timed_out();
        assert_eq!(c.reset_reason(), Some(ResetReason::Timeout));
        assert_eq!(ops(&mut c), vec![Op::Rst]);
        assert!(c.finished());
        // Only while connecting.
        let mut c = established_incoming();
        c.connect_timed_out();
        assert_eq!(c.state, State::Established);
    }

    #[test]
    fn a_second_request_on_a_connection_resets_it() {
        let mut c = established_incoming();
        c.on_packet(&pkt(Op::Request, &[]));
        assert_eq!(c.reset_reason(), Some(ResetReason::Protocol));
        assert_eq!(ops(&mut c), vec![Op::Rst]);
    }

    #[test]
    fn counters_wrap_without_panicking() {
        let mut c = established_incoming();
        c.tx_cnt = u32::MAX - 1;
        c.peer_fwd_cnt = u32::MAX - 1;
        c.push_host_data(b"wrap");
        assert_eq!(take(&mut c)[0].1, b"wrap");
        assert_eq!(c.tx_cnt, 2);
        assert_eq!(c.peer_credit_left(), 4096 - 4);
    }

    #[test]
    fn rst_for_swaps_the_addresses() {
        let h = Header {
            src_cid: GUEST,
            dst_cid: 7,
            src_port: 1,
            dst_port: 2,
            ..Header::default()
        };
        let r = rst_for(&h);
        assert_eq!(
            (r.src_cid, r.dst_cid, r.src_port, r.dst_port),
            (7, GUEST, 2, 1)
        );
        assert_eq!(r.op, Op::Rst as u16);
    }
}
