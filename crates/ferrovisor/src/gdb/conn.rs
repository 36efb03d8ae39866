//! gdb's TCP connection. The socket gets a short receive timeout, so that
//! looking for a byte from gdb (Ctrl-C while the guest runs) waits a
//! moment at most; reads retry past the timeout. (The gdb thread's
//! syscall filter has setsockopt and recvfrom, not the ioctl of
//! `set_nonblocking`.)

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use gdbstub::conn::{Connection, ConnectionExt};

pub struct GdbConnection {
    stream: TcpStream,
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

impl GdbConnection {
    /// Wraps `stream`; `poll` is how long a look for input may wait.
    pub fn new(stream: TcpStream, poll: Duration) -> std::io::Result<GdbConnection> {
        stream.set_read_timeout(Some(poll))?;
        let _ = stream.set_nodelay(true);
        Ok(GdbConnection { stream })
    }

    /// Whether a byte (or the end of the connection) is there to read,
    /// waiting up to the poll time.
    pub fn readable(&self) -> std::io::Result<bool> {
        match self.stream.peek(&mut [0u8]) {
            Ok(_) => Ok(true),
            Err(e) if timed_out(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Connection for GdbConnection {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> std::io::Result<()> {
        Write::write_all(&mut self.stream, &[byte])
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        Write::write_all(&mut self.stream, buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Write::flush(&mut self.stream)
    }
}

impl ConnectionExt for GdbConnection {
    fn read(&mut self) -> std::io::Result<u8> {
        let mut b = [0u8];
        loop {
            match Read::read(&mut self.stream, &mut b) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(_) => return Ok(b[0]),
                Err(e) if timed_out(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn peek(&mut self) -> std::io::Result<Option<u8>> {
        let mut b = [0u8];
        match self.stream.peek(&mut b) {
            Ok(0) => Err(ErrorKind::UnexpectedEof.into()),
            Ok(_) => Ok(Some(b[0])),
            Err(e) if timed_out(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
