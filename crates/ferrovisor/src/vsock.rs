//! `--vsock cid=N,socket=PATH`.

use std::path::PathBuf;

use vmm::VsockConfig;

/// Parses the `--vsock` value.
pub(crate) fn parse_vsock(value: &str) -> Result<VsockConfig, String> {
    let mut cid = None;
    let mut socket = None;
    for option in value.split(',') {
        let Some((key, val)) = option.split_once('=') else {
            return Err(format!("'{option}' is not KEY=VALUE (cid=N,socket=PATH)"));
        };
        match key {
            "cid" => {
                let n: u64 = val
                    .parse()
                    .map_err(|_| format!("cid={val} is not a number"))?;
                if !(3..u64::from(u32::MAX)).contains(&n) {
                    return Err(format!(
                        "cid={val} is reserved or too large: use 3 to {}",
                        u32::MAX - 1
                    ));
                }
                cid = Some(n);
            }
            "socket" | "uds_path" if val.is_empty() => return Err("socket= is empty".to_string()),
            "socket" | "uds_path" => socket = Some(PathBuf::from(val)),
            _ => return Err(format!("unknown option '{key}' (cid, socket)")),
        }
    }
    Ok(VsockConfig {
        cid: cid.ok_or("cid=N is missing")?,
        socket: socket.ok_or("socket=PATH is missing")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_values() {
        let v = parse_vsock("cid=3,socket=/tmp/v.sock").unwrap();
        assert_eq!((v.cid, v.socket), (3, PathBuf::from("/tmp/v.sock")));
        let v = parse_vsock("socket=/a,cid=4294967294").unwrap();
        assert_eq!(v.cid, 4294967294);
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        for (value, want) in [
            ("cid=2,socket=/a", "reserved"),
            ("cid=0,socket=/a", "reserved"),
            ("cid=4294967295,socket=/a", "reserved"),
            ("cid=x,socket=/a", "not a number"),
            ("cid=3", "socket=PATH is missing"),
            ("socket=/a", "cid=N is missing"),
            ("cid=3,socket=", "empty"),
            ("cid=3,socket=/a,port=2", "unknown option 'port'"),
            ("cid", "not KEY=VALUE"),
        ] {
            let err = parse_vsock(value).unwrap_err();
            assert!(err.contains(want), "{value}: {err}");
        }
    }
}
