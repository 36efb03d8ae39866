//! The API's request path, as the server takes it: bytes from the socket →
//! `http::parse_head` → `routes::route` with the body → a typed request.

use api::http::{parse_head, Limits};
use api::routes::route;

pub fn run(data: &[u8]) {
    // The first byte picks the limits (the body limit is a command-line
    // option); the rest is what the client sent.
    let Some((&pick, buf)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_head: if pick & 1 == 0 {
            api::http::MAX_HEAD
        } else {
            64
        },
        max_body: if pick & 2 == 0 {
            api::http::DEFAULT_MAX_BODY
        } else {
            16
        },
    };
    let head = match parse_head(buf, &limits) {
        Ok(Some(head)) => head,
        Ok(None) | Err(_) => return,
    };
    // The head lies in what was received, within the limits.
    assert!(
        head.len <= buf.len(),
        "head of {} in {} bytes",
        head.len,
        buf.len()
    );
    assert!(head.len <= limits.max_head, "head of {} bytes", head.len);
    assert!(head.content_length <= limits.max_body);
    assert!(head.path.starts_with('/'), "path {:?}", head.path);
    assert!(!head.path.contains(['?', '#']), "path {:?}", head.path);
    // The same bytes give the same head, whatever follows them.
    let again = parse_head(&buf[..head.len], &limits);
    assert_eq!(again, Ok(Some(head.clone())));
    // The body as the server collects it (possibly cut short: the client
    // may still be sending; the server waits, the router must cope anyway).
    let rest = &buf[head.len..];
    let body = &rest[..head.content_length.min(rest.len())];
    let first = route(&head.method, &head.path, body);
    // Routing is a pure function of the request.
    assert_eq!(first, route(&head.method, &head.path, body));
}
