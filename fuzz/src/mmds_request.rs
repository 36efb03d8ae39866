//! MMDS requests from the guest: bytes of a TCP stream → `http::parse` →
//! `http::respond` against a small store, V1 or V2, with and without IMDS
//! compatibility.

use std::time::Instant;

use mmds::http::{parse, respond, Parsed};
use mmds::{Mmds, ServiceConfig, Version};

const STORE: &str = r#"{"latest": {"meta-data": {"ami-id": "ami-1", "tags": ["a", "b"],
  "network": {"interfaces": {"macs": {"06:00:00:00:00:01": {"local-ipv4s": "10.0.0.2"}}}}}},
  "n": 1, "t": true, "z": null}"#;

pub fn run(data: &[u8]) {
    let Some((&pick, mut buf)) = data.split_first() else {
        return;
    };
    let config = ServiceConfig {
        version: if pick & 1 == 0 {
            Version::V1
        } else {
            Version::V2
        },
        imds_compat: pick & 2 != 0,
    };
    let mut mmds = Mmds::default();
    mmds.store = mmds::DataStore::new(64 << 10);
    mmds.store
        .put(serde_json::from_str(STORE).expect("the store is JSON"))
        .expect("the store fits");
    let now = Instant::now();
    // Pipelined requests on one connection, as the guest's TCP stream
    // delivers them; a token issued by one may be used by the next.
    for _ in 0..8 {
        match parse(buf) {
            Parsed::Incomplete => return,
            Parsed::Bad(response) => {
                assert!((400..600).contains(&response.status), "{response:?}");
                check_bytes(&response.to_bytes());
                return;
            }
            Parsed::Complete { request, len } => {
                assert!(
                    len > 0 && len <= buf.len(),
                    "request of {len} in {}",
                    buf.len()
                );
                let response = respond(&mut mmds, &config, &request, now);
                assert!((200..600).contains(&response.status), "{response:?}");
                check_bytes(&response.to_bytes());
                buf = &buf[len..];
            }
        }
    }
}

/// An answer is one HTTP response whose Content-Length is its body's.
fn check_bytes(bytes: &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = std::str::from_utf8(&bytes[..end]).expect("an ASCII head");
    assert!(head.starts_with("HTTP/1."), "{head}");
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().expect("a number"))
        })
        .expect("a Content-Length");
    assert_eq!(length, bytes.len() - end, "{head}");
}
