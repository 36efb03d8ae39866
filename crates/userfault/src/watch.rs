//! The VMM's side after the handshake: wait for the handler's end of the
//! connection to close (or for the VMM to stop watching).

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// What ended [`wait_peer_closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// `stop` became readable.
    Stopped,
    /// The other end of the connection closed (or failed).
    PeerClosed,
}

/// Waits until `stop` (an eventfd, a pipe) is readable or the peer of
/// `stream` closes its end. Whatever the peer sends meanwhile is read and
/// dropped (the protocol has nothing from the handler).
pub fn wait_peer_closed(stream: &UnixStream, stop: &impl AsRawFd) -> io::Result<WaitEnd> {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: stream.as_raw_fd(),
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll(2) reads and writes the two pollfds we own.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if fds[1].revents != 0 {
            return Ok(WaitEnd::Stopped);
        }
        let events = fds[0].revents;
        if events & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return Ok(WaitEnd::PeerClosed);
        }
        if events & libc::POLLIN != 0 {
            let mut buf = [0u8; 512];
            let mut reader = stream;
            match reader.read(&mut buf) {
                Ok(0) => return Ok(WaitEnd::PeerClosed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Ok(WaitEnd::PeerClosed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn data_is_dropped_a_stop_stops_and_a_close_is_an_end() {
        // A stop after some data from the peer.
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (stop_rx, mut stop_tx) = UnixStream::pair().unwrap();
        let waiter = std::thread::spawn(move || wait_peer_closed(&ours, &stop_rx).unwrap());
        theirs.write_all(b"hello").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "data from the peer is not an end");
        stop_tx.write_all(b"x").unwrap();
        assert_eq!(waiter.join().unwrap(), WaitEnd::Stopped);

        // The peer closes after some data; nobody writes the stop.
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (stop_rx, _stop_tx) = UnixStream::pair().unwrap();
        let waiter = std::thread::spawn(move || wait_peer_closed(&ours, &stop_rx).unwrap());
        theirs.write_all(b"hello").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished());
        drop(theirs);
        assert_eq!(waiter.join().unwrap(), WaitEnd::PeerClosed);
    }
}
