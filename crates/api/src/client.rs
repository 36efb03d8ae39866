//! A minimal client for the API socket: what the tests, benchmarks and
//! tools of this project use to talk to a running ferrovisor.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// An answer as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `fault_message` of an error answer.
    pub fn fault_message(&self) -> Option<String> {
        let fault: crate::schema::Fault = serde_json::from_str(&self.body).ok()?;
        Some(fault.fault_message)
    }
}

/// One kept-alive connection.
pub struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

impl Client {
    pub fn connect(path: &Path) -> std::io::Result<Client> {
        Ok(Client {
            stream: UnixStream::connect(path)?,
            buf: Vec::new(),
        })
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends one request (with `body` as JSON) and reads its answer.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<Response> {
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
        if let Some(body) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        self.send_raw(req.as_bytes())?;
        self.read_response()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads the next answer (skipping `100 Continue`).
    pub fn read_response(&mut self) -> std::io::Result<Response> {
        loop {
            let end = loop {
                if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                self.fill()?;
            };
            let head = std::str::from_utf8(&self.buf[..end])
                .map_err(|_| invalid("answer head is not UTF-8"))?
                .to_string();
            let mut lines = head.split("\r\n");
            let status: u16 = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| invalid("bad status line"))?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map(|(_, v)| v.parse().map_err(|_| invalid("bad Content-Length")))
                .transpose()?
                .unwrap_or(0);
            while self.buf.len() < end + length {
                self.fill()?;
            }
            let body = String::from_utf8_lossy(&self.buf[end..end + length]).into_owned();
            self.buf.drain(..end + length);
            if status == 100 {
                continue;
            }
            return Ok(Response {
                status,
                headers,
                body,
            });
        }
    }
}
