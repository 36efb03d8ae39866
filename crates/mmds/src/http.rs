//! The guest side of the MMDS: HTTP/1.x requests from the guest, parsed
//! from a connection's bytes, and Firecracker's answers to them.
//!
//! V1: GET reads the store, with or without a token (a token is not even
//! checked, as Firecracker does, so that V1 clients that learned V2's
//! session dance keep working); PUT /latest/api/token gives a session
//! token. V2: the same, but every GET needs a valid `X-metadata-token`
//! (or `X-aws-ec2-metadata-token`), else 401. Other methods: 405 with
//! `Allow: GET, PUT`. The answer is IMDS text unless the request says
//! `Accept: application/json` (and `imds_compat` is off).

use std::time::Instant;

use crate::store::{Format, StoreError};
use crate::token::{parse_ttl, TokenError};
use crate::{Mmds, ServiceConfig, Version};

/// The most bytes a request (head and body) may have.
pub const MAX_REQUEST: usize = 4096;
/// Where V2 sessions start.
pub const TOKEN_PATH: &str = "/latest/api/token";

/// A request's head, as far as the MMDS cares.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path (from an origin-form or absolute-form target), without
    /// the query; empty for an absolute-form target without one.
    pub path: String,
    pub http10: bool,
    pub accept_json: bool,
    pub token: Option<String>,
    pub ttl: Option<String>,
    pub forwarded_for: bool,
    /// The client wants the connection closed after the answer.
    pub close: bool,
}

/// What the bytes at the start of a connection's buffer are.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request yet.
    Incomplete,
    /// A request of `len` bytes (head and body).
    Complete { request: Request, len: usize },
    /// Not a request the MMDS can answer: the answer, then close.
    Bad(Response),
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub json: bool,
    pub body: String,
    pub allow: Option<&'static str>,
    pub close: bool,
    pub http10: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            json: false,
            body: body.into(),
            allow: None,
            close: false,
            http10: false,
        }
    }

    fn bad(status: u16, body: &str) -> Response {
        Response {
            close: true,
            ..Response::text(status, body)
        }
    }

    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            413 => "Payload Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            _ => "",
        }
    }

    /// The answer as bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.{} {} {}\r\nServer: Ferrovisor MMDS\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            if self.http10 { 0 } else { 1 },
            self.status,
            self.reason(),
            if self.json {
                "application/json"
            } else {
                "text/plain"
            },
            self.body.len()
        );
        if let Some(allow) = self.allow {
            head.push_str(&format!("Allow: {allow}\r\n"));
        }
        if self.close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses the request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let Some(head_len) = find_head_end(buf) else {
        if buf.len() >= MAX_REQUEST {
            return Parsed::Bad(Response::bad(400, "Request too large."));
        }
        return Parsed::Incomplete;
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_len - 4]) else {
        return Parsed::Bad(Response::bad(400, "Invalid request: not UTF-8."));
    };
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad(Response::bad(400, "Invalid request line."));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Parsed::Bad(Response::bad(400, "Unsupported HTTP version.")),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Parsed::Bad(Response::bad(400, "Invalid request method."));
    }
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("", |i| &rest[i..]),
        None if target.starts_with('/') => target,
        None => return Parsed::Bad(Response::bad(400, "Invalid URI.")),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut request = Request {
        method: method.to_string(),
        path: path.to_string(),
        http10,
        close: http10,
        ..Request::default()
    };
    let mut body_len = 0usize;
    for header in lines {
        let Some((name, value)) = header.split_once(':') else {
            return Parsed::Bad(Response::bad(400, "Invalid header."));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "accept" => request.accept_json = value.eq_ignore_ascii_case("application/json"),
            "x-metadata-token" | "x-aws-ec2-metadata-token" => {
                request.token = Some(value.to_string())
            }
            "x-metadata-token-ttl-seconds" | "x-aws-ec2-metadata-token-ttl-seconds" => {
                request.ttl = Some(value.to_string())
            }
            "x-forwarded-for" => request.forwarded_for = true,
            "connection" => {
                if value.eq_ignore_ascii_case("close") {
                    request.close = true;
                } else if value.eq_ignore_ascii_case("keep-alive") {
                    request.close = false;
                }
            }
            "content-length" => match value.parse::<usize>() {
                // Checked: a guest's Content-Length near usize::MAX must not
                // wrap (found by fuzz target mmds_request).
                Ok(n) if head_len.checked_add(n).is_some_and(|l| l <= MAX_REQUEST) => body_len = n,
                Ok(_) => return Parsed::Bad(Response::bad(413, "Request too large.")),
                Err(_) => return Parsed::Bad(Response::bad(400, "Invalid Content-Length.")),
            },
            "transfer-encoding" => {
                return Parsed::Bad(Response::bad(501, "Transfer encodings are not supported."))
            }
            _ => {}
        }
    }
    let len = head_len + body_len;
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    Parsed::Complete { request, len }
}

/// Answers `request` from `mmds`, as `config` says, at time `now`.
pub fn respond(
    mmds: &mut Mmds,
    config: &ServiceConfig,
    request: &Request,
    now: Instant,
) -> Response {
    let mut response = answer(mmds, config, request, now);
    response.http10 = request.http10;
    response.close |= request.close;
    response
}

fn answer(mmds: &mut Mmds, config: &ServiceConfig, request: &Request, now: Instant) -> Response {
    if request.path.is_empty() {
        return Response::text(400, "Invalid URI.");
    }
    match request.method.as_str() {
        "GET" => {
            if config.version == Version::V2 {
                let Some(token) = &request.token else {
                    return Response::text(
                        401,
                        "No MMDS token provided. Use `X-metadata-token` header to specify the session token.",
                    );
                };
                if !mmds.tokens.is_valid(token, now) {
                    return Response::text(401, "MMDS token not valid.");
                }
            }
            let format = if request.accept_json && !config.imds_compat {
                Format::Json
            } else {
                Format::Imds
            };
            match mmds.store.get(&request.path, format) {
                Ok(body) => Response {
                    json: format == Format::Json,
                    ..Response::text(200, body)
                },
                Err(StoreError::NotFound) => {
                    Response::text(404, format!("Resource not found: {}.", request.path))
                }
                Err(e) => Response::text(501, e.to_string()),
            }
        }
        "PUT" => {
            if request.forwarded_for {
                return Response::text(
                    400,
                    "Invalid header. Reason: Unsupported header name. Key: X-Forwarded-For",
                );
            }
            let path = request.path.trim_end_matches('/');
            if path != TOKEN_PATH {
                return Response::text(404, format!("Resource not found: {}.", request.path));
            }
            let Some(ttl) = &request.ttl else {
                return Response::text(
                    400,
                    "Token time to live value not found. Use `X-metadata-token-ttl-seconds` header to specify the token's lifetime.",
                );
            };
            let generated = parse_ttl(ttl).and_then(|ttl| mmds.tokens.generate(ttl, now));
            match generated {
                Ok(token) => Response::text(200, token),
                Err(e @ TokenError::InvalidTtl(_)) => Response::text(400, e.to_string()),
                Err(e) => Response::text(500, e.to_string()),
            }
        }
        _ => Response {
            allow: Some("GET, PUT"),
            ..Response::text(405, "Not allowed HTTP method.")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mmds() -> Mmds {
        let mut m = Mmds::default();
        m.store
            .put(json!({"latest": {"meta-data": {"ami-id": "ami-1", "n": 3}}}))
            .unwrap();
        m
    }

    fn ask(m: &mut Mmds, config: ServiceConfig, raw: &str) -> Response {
        match parse(raw.as_bytes()) {
            Parsed::Complete { request, len } => {
                assert_eq!(len, raw.len());
                respond(m, &config, &request, Instant::now())
            }
            Parsed::Bad(r) => r,
            Parsed::Incomplete => panic!("incomplete: {raw:?}"),
        }
    }

    const V1: ServiceConfig = ServiceConfig {
        version: Version::V1,
        imds_compat: false,
    };
    const V2: ServiceConfig = ServiceConfig {
        version: Version::V2,
        imds_compat: false,
    };

    #[test]
    fn v1_reads_without_tokens() {
        let mut m = mmds();
        let r = ask(
            &mut m,
            V1,
            "GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert_eq!((r.status, r.body.as_str()), (200, "ami-id\nn"));
        let r = ask(
            &mut m,
            V1,
            "GET http://169.254.169.254/latest/meta-data/ami-id HTTP/1.0\r\nX-metadata-token: bogus\r\n\r\n",
        );
        assert_eq!((r.status, r.body.as_str()), (200, "ami-1"));
        assert!(r.http10 && r.close);
        let bytes = String::from_utf8(r.to_bytes()).unwrap();
        assert!(bytes.starts_with("HTTP/1.0 200 OK\r\n"), "{bytes}");
        assert!(bytes.ends_with("Content-Length: 5\r\nConnection: close\r\n\r\nami-1"));
        let r = ask(
            &mut m,
            V1,
            "GET /latest/meta-data HTTP/1.1\r\naccept: application/json\r\n\r\n",
        );
        assert_eq!((r.status, r.json), (200, true));
        assert_eq!(r.body, r#"{"ami-id":"ami-1","n":3}"#);
        let r = ask(&mut m, V1, "GET /latest/meta-data/n HTTP/1.1\r\n\r\n");
        assert_eq!(r.status, 501);
        let r = ask(&mut m, V1, "GET /nope HTTP/1.1\r\n\r\n");
        assert_eq!(
            (r.status, r.body.as_str()),
            (404, "Resource not found: /nope.")
        );
        let r = ask(&mut m, V1, "POST / HTTP/1.1\r\n\r\n");
        assert_eq!((r.status, r.allow), (405, Some("GET, PUT")));
        let r = ask(&mut m, V1, "GET http://169.254.169.254 HTTP/1.1\r\n\r\n");
        assert_eq!(r.status, 400);
    }

    #[test]
    fn imds_compat_ignores_accept() {
        let mut m = mmds();
        let compat = ServiceConfig {
            version: Version::V1,
            imds_compat: true,
        };
        let r = ask(
            &mut m,
            compat,
            "GET /latest/meta-data/ami-id HTTP/1.1\r\nAccept: application/json\r\n\r\n",
        );
        assert_eq!((r.status, r.body.as_str(), r.json), (200, "ami-1", false));
    }

    #[test]
    fn v2_needs_a_session_token() {
        let mut m = mmds();
        let get = "GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n";
        let r = ask(&mut m, V2, get);
        assert_eq!(r.status, 401);
        assert!(r.body.starts_with("No MMDS token provided"));
        let r = ask(
            &mut m,
            V2,
            "GET /latest/meta-data/ami-id HTTP/1.1\r\nX-metadata-token: nope\r\n\r\n",
        );
        assert_eq!((r.status, r.body.as_str()), (401, "MMDS token not valid."));
        let r = ask(
            &mut m,
            V2,
            "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n",
        );
        assert_eq!(r.status, 200);
        let token = r.body;
        for header in ["X-metadata-token", "X-aws-ec2-metadata-token"] {
            let r = ask(
                &mut m,
                V2,
                &format!("GET /latest/meta-data/ami-id HTTP/1.1\r\n{header}: {token}\r\n\r\n"),
            );
            assert_eq!((r.status, r.body.as_str()), (200, "ami-1"));
        }
        for (put, status) in [
            ("PUT /latest/api/token HTTP/1.1\r\n\r\n", 400),
            (
                "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 0\r\n\r\n",
                400,
            ),
            (
                "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 21601\r\n\r\n",
                400,
            ),
            (
                "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 5\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
                400,
            ),
            (
                "PUT /latest/api/other HTTP/1.1\r\nX-metadata-token-ttl-seconds: 5\r\n\r\n",
                404,
            ),
            ("DELETE /latest HTTP/1.1\r\n\r\n", 405),
        ] {
            assert_eq!(ask(&mut m, V2, put).status, status, "{put}");
        }
        // The same session dance works in V1.
        let r = ask(
            &mut m,
            V1,
            "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 5\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(r.status, 200);
    }

    #[test]
    fn parsing_incomplete_bad_and_bodies() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n"), Parsed::Incomplete);
        assert_eq!(
            parse(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"),
            Parsed::Incomplete
        );
        match parse(b"PUT / HTTP/1.1\r\nContent-Length: 2\r\n\r\nabGET") {
            Parsed::Complete { len, .. } => assert_eq!(len, 39),
            other => panic!("{other:?}"),
        }
        for bad in [
            &b"GET / HTTP/2\r\n\r\n"[..],
            b"GET /\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nnocolon\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 18446744073709551600\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ] {
            match parse(bad) {
                Parsed::Bad(r) => assert!(r.close && r.status >= 400),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
        assert!(matches!(parse(&[b'a'; MAX_REQUEST]), Parsed::Bad(_)));
    }
}
