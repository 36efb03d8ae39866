//! One TCP connection of the MMDS, passive side, over a link that does
//! not reorder and (almost) never loses frames: the guest's VMM.
//!
//! What it does: SYN → SYN-ACK (with an MSS option, no window scaling, no
//! SACK, no timestamps), in-order data into a bounded receive buffer
//! (the advertised window is its free room, so a well-behaved guest never
//! overruns it; what does not fit is dropped), data out in segments of
//! the guest's MSS within the guest's window, FIN both ways, RST.
//! Retransmission is go-back-N, triggered by the guest: a duplicate ACK
//! or a segment repeated by the guest (its own retransmission timer)
//! makes the unacknowledged data go again. Nothing here waits on a timer.

use crate::wire::{Ip, Mac, Tcp, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

/// The receive buffer, which bounds a request.
pub const RX_BUFFER: usize = crate::http::MAX_REQUEST;
/// The largest segment the MMDS sends or accepts (an Ethernet MTU).
pub const MSS: u16 = 1460;
/// The guest's MSS when its SYN has no option (RFC 9293, 3.7.1).
const DEFAULT_MSS: u16 = 536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SynReceived,
    Established,
    /// Reset, or closed both ways: removed once nothing is left to send.
    Closed,
}

/// Sequence-number order (RFC 9293, 3.4): `a` before `b`.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// What a received segment asks of the connection's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Answer with a reset (seq, ack, flags) and forget the connection.
    Reset {
        seq: u32,
        ack: u32,
        flags: u8,
    },
}

/// A segment the connection wants to send: header fields, and the range
/// of [`Connection::out`] it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub mss: Option<u16>,
    pub data: std::ops::Range<usize>,
}

#[derive(Debug)]
pub struct Connection {
    pub peer_mac: Mac,
    pub peer_ip: Ip,
    pub peer_port: u16,
    pub local_port: u16,
    state: State,
    iss: u32,
    /// Oldest unacknowledged sequence number: that of `out[0]` once
    /// established.
    snd_una: u32,
    snd_nxt: u32,
    snd_wnd: u32,
    peer_mss: u16,
    /// Bytes to send, from `snd_una` on.
    pub out: Vec<u8>,
    /// Send a FIN once `out` is all sent.
    pub fin_queued: bool,
    fin_sent: bool,
    fin_acked: bool,
    rcv_nxt: u32,
    /// Bytes received in order, not yet consumed.
    pub rx: Vec<u8>,
    pub fin_received: bool,
    syn_ack_due: bool,
    ack_due: bool,
    /// When it last heard from the guest (the owner's clock).
    pub last_seen: u64,
}

impl Connection {
    /// A connection for the guest's `syn`, with initial send sequence
    /// `iss`; it owes the guest a SYN-ACK.
    pub fn accept(peer_mac: Mac, peer_ip: Ip, syn: &Tcp<'_>, iss: u32, now: u64) -> Connection {
        Connection {
            peer_mac,
            peer_ip,
            peer_port: syn.src_port,
            local_port: syn.dst_port,
            state: State::SynReceived,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_wnd: u32::from(syn.window),
            peer_mss: syn.mss.unwrap_or(DEFAULT_MSS).clamp(64, MSS),
            out: Vec::new(),
            fin_queued: false,
            fin_sent: false,
            fin_acked: false,
            rcv_nxt: syn.seq.wrapping_add(1),
            rx: Vec::new(),
            fin_received: false,
            syn_ack_due: true,
            ack_due: false,
            last_seen: now,
        }
    }

    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Nothing more will happen on it: reset, or closed both ways with
    /// every ACK sent.
    pub fn is_done(&self) -> bool {
        match self.state {
            State::Closed => true,
            State::SynReceived => false,
            State::Established => self.fin_acked && self.fin_received && !self.ack_due,
        }
    }

    /// The window the MMDS advertises: the free room in its buffer.
    fn window(&self) -> u16 {
        (RX_BUFFER.saturating_sub(self.rx.len())).min(usize::from(u16::MAX)) as u16
    }

    /// Sends the unacknowledged data again.
    fn go_back(&mut self) {
        if self.snd_nxt != self.snd_una {
            self.snd_nxt = self.snd_una;
            if !self.fin_acked {
                self.fin_sent = false;
            }
        }
    }

    /// Takes `n` bytes out of the receive buffer (a request was
    /// consumed): the window opens, which the guest is told.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.rx.len());
        self.rx.drain(..n);
        self.ack_due = true;
    }

    /// A segment from the guest for this connection.
    pub fn on_segment(&mut self, seg: &Tcp<'_>, now: u64) -> Verdict {
        self.last_seen = now;
        if seg.has(TCP_RST) {
            // In-window resets only (RFC 5961's blind-reset check, simply).
            let offset = seg.seq.wrapping_sub(self.rcv_nxt);
            if offset <= u32::from(self.window()) {
                self.state = State::Closed;
                self.ack_due = false;
            }
            return Verdict::Ok;
        }
        if seg.has(TCP_SYN) {
            if self.state == State::SynReceived && seg.seq.wrapping_add(1) == self.rcv_nxt {
                // The guest did not get the SYN-ACK: again.
                self.syn_ack_due = true;
            } else {
                // A SYN on a synchronized connection: a challenge ACK.
                self.ack_due = true;
            }
            return Verdict::Ok;
        }
        if !seg.has(TCP_ACK) {
            return Verdict::Ok;
        }
        if self.state == State::SynReceived {
            if seg.ack != self.iss.wrapping_add(1) {
                self.state = State::Closed;
                return Verdict::Reset {
                    seq: seg.ack,
                    ack: 0,
                    flags: TCP_RST,
                };
            }
            self.state = State::Established;
            self.snd_una = seg.ack;
            self.snd_nxt = seg.ack;
            self.syn_ack_due = false;
        } else if self.state == State::Closed {
            return Verdict::Ok;
        }
        self.on_ack(seg);
        self.on_data(seg);
        Verdict::Ok
    }

    fn on_ack(&mut self, seg: &Tcp<'_>) {
        let in_flight = self.snd_nxt.wrapping_sub(self.snd_una);
        let acked = seg.ack.wrapping_sub(self.snd_una);
        if before(seg.ack, self.snd_una) {
            // An old ACK: only its data matters.
        } else if acked > in_flight {
            // Acknowledges what was never sent.
            self.ack_due = true;
            return;
        } else if acked > 0 {
            let data = (acked as usize).min(self.out.len());
            self.out.drain(..data);
            if self.fin_sent && acked as usize > data {
                self.fin_acked = true;
            }
            self.snd_una = seg.ack;
        } else if in_flight > 0
            && seg.payload.is_empty()
            && !seg.has(TCP_FIN)
            && u32::from(seg.window) == self.snd_wnd
        {
            // A duplicate ACK: something was lost.
            self.go_back();
        }
        if !before(seg.ack, self.snd_una) {
            self.snd_wnd = u32::from(seg.window);
        }
    }

    fn on_data(&mut self, seg: &Tcp<'_>) {
        let fin = seg.has(TCP_FIN);
        if seg.payload.is_empty() && !fin {
            return;
        }
        self.ack_due = true;
        if seg.seq != self.rcv_nxt || self.fin_received {
            // A repeat (the guest's retransmission: it may have missed
            // ours too) or a gap.
            if before(seg.seq, self.rcv_nxt) {
                self.go_back();
            }
            return;
        }
        let room = RX_BUFFER.saturating_sub(self.rx.len());
        let take = seg.payload.len().min(room);
        self.rx.extend_from_slice(&seg.payload[..take]);
        self.rcv_nxt = self.rcv_nxt.wrapping_add(take as u32);
        if fin && take == seg.payload.len() {
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            self.fin_received = true;
        }
    }

    /// The next segment to send, if any, with at most `max_data` bytes
    /// of data.
    pub fn next_segment(&mut self, max_data: usize) -> Option<Outgoing> {
        let window = self.window();
        let mut out = Outgoing {
            seq: self.snd_nxt,
            ack: self.rcv_nxt,
            flags: TCP_ACK,
            window,
            mss: None,
            data: 0..0,
        };
        match self.state {
            State::Closed => return None,
            State::SynReceived if self.syn_ack_due => {
                self.syn_ack_due = false;
                self.snd_nxt = self.iss.wrapping_add(1);
                out.seq = self.iss;
                out.flags = TCP_SYN | TCP_ACK;
                out.mss = Some(MSS);
                return Some(out);
            }
            State::SynReceived => return None,
            State::Established => {}
        }
        let in_flight = self.snd_nxt.wrapping_sub(self.snd_una) as usize;
        let sent_data = in_flight.saturating_sub(usize::from(self.fin_sent && !self.fin_acked));
        let unsent = self.out.len().saturating_sub(sent_data);
        let room = (self.snd_wnd as usize).saturating_sub(in_flight);
        let n = unsent
            .min(room)
            .min(usize::from(self.peer_mss))
            .min(max_data);
        if n > 0 {
            self.snd_nxt = self.snd_nxt.wrapping_add(n as u32);
            self.ack_due = false;
            out.data = sent_data..sent_data + n;
            if n == unsent {
                out.flags |= TCP_PSH;
            }
            return Some(out);
        }
        if self.fin_queued && !self.fin_sent && unsent == 0 {
            self.fin_sent = true;
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            self.ack_due = false;
            out.flags |= TCP_FIN;
            return Some(out);
        }
        if self.ack_due {
            self.ack_due = false;
            return Some(out);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Tcp<'_> {
        Tcp {
            src_port: 40000,
            dst_port: 80,
            seq,
            ack,
            flags,
            window: 1000,
            mss: Some(100),
            payload,
        }
    }

    #[test]
    fn handshake_data_and_close() {
        let mut c = Connection::accept([0; 6], [0; 4], &seg(TCP_SYN, 99, 0, b""), 5000, 0);
        let s = c.next_segment(1460).unwrap();
        assert_eq!(
            (s.seq, s.ack, s.flags, s.mss),
            (5000, 100, TCP_SYN | TCP_ACK, Some(MSS))
        );
        assert!(c.next_segment(1460).is_none());
        assert_eq!(c.on_segment(&seg(TCP_ACK, 100, 5001, b""), 1), Verdict::Ok);
        assert!(c.is_established());
        c.on_segment(&seg(TCP_ACK | TCP_PSH, 100, 5001, b"GET"), 2);
        assert_eq!(c.rx, b"GET");
        let s = c.next_segment(1460).unwrap();
        assert_eq!(
            (s.seq, s.ack, s.flags, s.window),
            (5001, 103, TCP_ACK, 4093)
        );
        // 250 bytes out in MSS-sized (100) segments.
        c.out = vec![7; 250];
        c.fin_queued = true;
        let sizes: Vec<_> = std::iter::from_fn(|| c.next_segment(1460))
            .map(|s| (s.seq, s.data.len(), s.flags))
            .collect();
        assert_eq!(
            sizes,
            [
                (5001, 100, TCP_ACK),
                (5101, 100, TCP_ACK),
                (5201, 50, TCP_ACK | TCP_PSH),
                (5251, 0, TCP_ACK | TCP_FIN)
            ]
        );
        // Lost: a duplicate ACK sends everything from 5101 again.
        c.on_segment(&seg(TCP_ACK, 103, 5101, b""), 3);
        c.on_segment(&seg(TCP_ACK, 103, 5101, b""), 3);
        assert_eq!(c.out.len(), 150);
        let s = c.next_segment(1460).unwrap();
        assert_eq!((s.seq, s.data.clone()), (5101, 0..100));
        while c.next_segment(1460).is_some() {}
        c.on_segment(&seg(TCP_ACK | TCP_FIN, 103, 5252, b""), 4);
        assert!(c.out.is_empty() && c.fin_received);
        let s = c.next_segment(1460).unwrap();
        assert_eq!((s.seq, s.ack, s.flags), (5252, 104, TCP_ACK));
        assert!(c.is_done());
    }

    #[test]
    fn the_window_bounds_what_is_sent_and_received() {
        let mut c = Connection::accept([0; 6], [0; 4], &seg(TCP_SYN, 0, 0, b""), 0, 0);
        c.next_segment(1460);
        let mut ack = seg(TCP_ACK, 1, 1, b"");
        ack.window = 150;
        c.on_segment(&ack, 1);
        c.out = vec![1; 1000];
        let total: usize = std::iter::from_fn(|| c.next_segment(1460))
            .map(|s| s.data.len())
            .sum();
        assert_eq!(total, 150);
        // More data than the receive buffer holds: the rest is dropped.
        let big = vec![b'x'; RX_BUFFER + 10];
        c.on_segment(&seg(TCP_ACK, 1, 1, &big), 2);
        assert_eq!(c.rx.len(), RX_BUFFER);
        assert_eq!(c.next_segment(0).unwrap().window, 0);
        c.consume(100);
        assert_eq!(c.next_segment(0).unwrap().window, 100);
    }

    #[test]
    fn resets_and_bad_acks() {
        let mut c = Connection::accept([0; 6], [0; 4], &seg(TCP_SYN, 0, 0, b""), 10, 0);
        c.next_segment(1460);
        // The SYN again: the SYN-ACK again.
        c.on_segment(&seg(TCP_SYN, 0, 0, b""), 0);
        assert_eq!(c.next_segment(1460).unwrap().flags, TCP_SYN | TCP_ACK);
        // A wrong ACK in SYN-RECEIVED: reset.
        let v = c.on_segment(&seg(TCP_ACK, 1, 99, b""), 0);
        assert_eq!(
            v,
            Verdict::Reset {
                seq: 99,
                ack: 0,
                flags: TCP_RST
            }
        );
        assert!(c.is_done());
        let mut c = Connection::accept([0; 6], [0; 4], &seg(TCP_SYN, 0, 0, b""), 10, 0);
        c.next_segment(1460);
        c.on_segment(&seg(TCP_ACK, 1, 11, b""), 0);
        // A reset far out of the window is ignored, one in it is not.
        c.on_segment(&seg(TCP_RST, 1 << 30, 0, b""), 0);
        assert!(!c.is_done());
        c.on_segment(&seg(TCP_RST, 1, 0, b""), 0);
        assert!(c.is_done());
        assert!(c.next_segment(1460).is_none());
    }
}
