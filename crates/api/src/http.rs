//! Just enough HTTP/1.1 for a local control API: request heads with
//! `Content-Length` bodies, keep-alive, `Expect: 100-continue`, pipelined
//! requests; responses with a JSON body or none.
//!
//! The parser works on the bytes received so far and says whether a
//! request head is complete; it never allocates more than the head, and it
//! refuses what it does not support (chunked bodies, line folding, HTTP/2)
//! with an error that becomes a 400 answer.

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line plus headers.
    pub max_head: usize,
    /// The body (`--http-api-max-payload-size`).
    pub max_body: usize,
}

/// The largest request head accepted.
pub const MAX_HEAD: usize = 8 << 10;
/// Firecracker's default payload limit.
pub const DEFAULT_MAX_BODY: usize = 51200;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: MAX_HEAD,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Patch,
    Delete,
    /// Any other token (answered 400).
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Other(m) => m,
        }
    }
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    /// The path, without query or fragment.
    pub path: String,
    /// The connection stays open after the answer.
    pub keep_alive: bool,
    pub content_length: usize,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
    /// Bytes of the head, including the blank line.
    pub len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the request head is longer than {0} bytes")]
    HeadTooLong(usize),
    #[error("malformed request line {0:?} (expected METHOD /path HTTP/1.1)")]
    RequestLine(String),
    #[error("unsupported protocol version {0:?} (HTTP/1.0 and HTTP/1.1 are)")]
    Version(String),
    #[error("malformed header line {0:?}")]
    Header(String),
    #[error("the request head is not valid UTF-8")]
    NotUtf8,
    #[error("invalid Content-Length {0:?}")]
    ContentLength(String),
    #[error("Transfer-Encoding {0:?} is not supported; send the body with a Content-Length")]
    TransferEncoding(String),
    #[error("the request target {0:?} is not a path")]
    Target(String),
    #[error("request payload of {size} bytes is larger than the limit of {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },
}

/// Parses the request head at the start of `buf`: `Ok(None)` when it is
/// not complete yet.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, ParseError> {
    // Clients may send blank lines between pipelined requests (RFC 9112 2.2).
    let skip = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let Some(end) = head_end(&buf[skip..]) else {
        if buf.len() > limits.max_head {
            return Err(ParseError::HeadTooLong(limits.max_head));
        }
        return Ok(None);
    };
    if skip + end > limits.max_head {
        return Err(ParseError::HeadTooLong(limits.max_head));
    }
    let text = std::str::from_utf8(&buf[skip..skip + end]).map_err(|_| ParseError::NotUtf8)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let (method, target, version) = split_request_line(request_line)?;
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") => return Err(ParseError::Version(v.to_string())),
        _ => return Err(ParseError::RequestLine(request_line.to_string())),
    };
    let method = match method {
        "GET" => Method::Get,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        m => Method::Other(m.to_string()),
    };
    let path = request_path(target)?;

    let mut content_length: Option<usize> = None;
    let mut keep_alive = !http10;
    let mut expect_continue = false;
    for line in lines.filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            return Err(ParseError::Header(line.to_string()));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ParseError::Header(line.to_string()));
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(ParseError::Header(line.to_string()));
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(value)?;
            if content_length.is_some_and(|old| old != n) {
                return Err(ParseError::ContentLength(value.to_string()));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ParseError::TransferEncoding(value.to_string()));
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > limits.max_body {
        return Err(ParseError::BodyTooLarge {
            size: content_length,
            limit: limits.max_body,
        });
    }
    Ok(Some(Head {
        method,
        path,
        keep_alive,
        content_length,
        expect_continue,
        len: skip + end,
    }))
}

/// The index just past the blank line that ends a head, if there is one
/// (lines end in CRLF or a bare LF).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            let line = &buf[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

fn split_request_line(line: &str) -> Result<(&str, &str, &str), ParseError> {
    let bad = || ParseError::RequestLine(line.chars().take(200).collect());
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) || target.is_empty() {
        return Err(bad());
    }
    Ok((method, target, version))
}

/// The path of an origin-form (`/a/b?q`) or absolute-form
/// (`http://localhost/a/b`) target.
fn request_path(target: &str) -> Result<String, ParseError> {
    let rest = if target.starts_with('/') {
        target
    } else if let Some(after) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        after.find('/').map_or("/", |i| &after[i..])
    } else {
        return Err(ParseError::Target(target.chars().take(200).collect()));
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let path = &rest[..end];
    if path.bytes().any(|b| b.is_ascii_control()) {
        return Err(ParseError::Target(target.chars().take(200).collect()));
    }
    Ok(path.to_string())
}

fn parse_length(value: &str) -> Result<usize, ParseError> {
    let bad = || ParseError::ContentLength(value.chars().take(40).collect());
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The status codes the API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    NoContent,
    BadRequest,
    NotFound,
    PayloadTooLarge,
    InternalServerError,
    ServiceUnavailable,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::NoContent => 204,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::PayloadTooLarge => 413,
            Status::InternalServerError => 500,
            Status::ServiceUnavailable => 503,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NoContent => "No Content",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::PayloadTooLarge => "Payload Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// The `Server` header of every answer.
pub const SERVER_NAME: &str = "Ferrovisor API";

/// Appends a complete response to `out`.
pub fn write_response(out: &mut Vec<u8>, status: Status, body: Option<&str>, keep_alive: bool) {
    use std::io::Write;
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nServer: {SERVER_NAME}\r\nConnection: {connection}\r\n",
        status.code(),
        status.reason()
    );
    match body {
        Some(body) => {
            let _ = write!(
                out,
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            out.extend_from_slice(body.as_bytes());
        }
        None if status == Status::NoContent => out.extend_from_slice(b"\r\n"),
        None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
    }
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, ParseError> {
        parse_head(text.as_bytes(), &Limits::default())
    }

    #[test]
    fn parses_heads() {
        let h = head("PUT /machine-config HTTP/1.1\r\nHost: localhost\r\nContent-Length: 12\r\nContent-Type: application/json\r\n\r\n{\"a\"")
            .unwrap()
            .unwrap();
        assert_eq!(h.method, Method::Put);
        assert_eq!(h.path, "/machine-config");
        assert_eq!(h.content_length, 12);
        assert!(h.keep_alive && !h.expect_continue);
        assert_eq!(h.len, 101);
        let h = head("GET http://localhost/vm/config?x=1 HTTP/1.0\n\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.path.as_str(), h.keep_alive), ("/vm/config", false));
        let h = head("\r\nGET / HTTP/1.1\r\nConnection: close\r\nExpect: 100-continue\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive && h.expect_continue);
        let h = head("POST / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.method, Method::Other("POST".into()));
        assert!(h.keep_alive);
    }

    #[test]
    fn incomplete_heads_wait() {
        assert_eq!(head("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(head(""), Ok(None));
        assert_eq!(head("\r\n\r\n"), Ok(None));
    }

    #[test]
    fn malformed_heads_are_errors() {
        for bad in [
            "GET / HTTP/1.1 extra\r\n\r\n",
            "GET\r\n\r\n",
            "GET /\r\n\r\n",
            "GET / FTP/1.0\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET foo HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: 51201\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{bad:?}");
        }
        let e = head("GET /\u{1}x HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(matches!(e, ParseError::Target(_)));
        let bytes = [
            b"GET / HTTP/1.1\r\nX: ".as_slice(),
            &[0xff, 0xfe],
            b"\r\n\r\n",
        ]
        .concat();
        assert_eq!(
            parse_head(&bytes, &Limits::default()),
            Err(ParseError::NotUtf8)
        );
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(head(&long), Err(ParseError::HeadTooLong(MAX_HEAD)));
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        write_response(&mut out, Status::NoContent, None, true);
        assert_eq!(
            out,
            b"HTTP/1.1 204 No Content\r\nServer: Ferrovisor API\r\nConnection: keep-alive\r\n\r\n"
        );
        out.clear();
        write_response(&mut out, Status::BadRequest, Some("{}"), false);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "HTTP/1.1 400 Bad Request\r\nServer: Ferrovisor API\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }
}
