//! Command-line option strings: `ferrovisor run`'s `--disk`, `--net`,
//! `--vsock`, `--rng` and `--memory` values, and the QEMU front end's
//! argument splitting and `KEY=VALUE,...` property lists. The parsers are
//! the binary's own sources, compiled into this crate (see lib.rs).

use crate::qemu::{options, props::Props};

pub fn run(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match pick % 7 {
        0 => {
            if let Ok(disk) = crate::disk::parse_disk(text) {
                assert!(!disk.path.as_os_str().is_empty(), "{text:?}");
                if let Some(id) = &disk.id {
                    assert!(
                        !id.is_empty() && id.len() <= virtio::blk::ID_BYTES,
                        "{text:?}"
                    );
                }
            }
        }
        1 => {
            if let Ok(net) = crate::net::parse_net(text) {
                assert!(!net.tap.is_empty(), "{text:?}");
                if let Some(mac) = net.mac {
                    // A guest MAC is a unicast address.
                    assert_eq!(mac[0] & 1, 0, "{text:?} gives multicast {mac:x?}");
                }
            }
        }
        2 => {
            if let Ok(vsock) = crate::vsock::parse_vsock(text) {
                assert!((3..u64::from(u32::MAX)).contains(&vsock.cid), "{text:?}");
                assert!(!vsock.socket.as_os_str().is_empty(), "{text:?}");
            }
        }
        3 => {
            let _ = crate::limits::parse_rng(text);
        }
        4 => {
            if let Ok(n) = crate::size::parse_size(text) {
                // Every size is whole KiB, and reads back from its KiB.
                assert_eq!(n % 1024, 0, "{text:?}");
                assert_eq!(crate::size::parse_size(&format!("{}K", n >> 10)), Ok(n));
            }
        }
        5 => {
            // A QEMU command line: NUL-separated arguments.
            let args: Vec<String> = text.split('\0').map(str::to_string).collect();
            if let Ok(opts) = options::split(&args) {
                assert!(opts.len() <= args.len(), "{args:?}");
                for o in &opts {
                    assert!(!o.name.is_empty() && !o.name.starts_with('-'), "{o:?}");
                }
            }
        }
        _ => {
            let (implied, text) = match text.split_once('\0') {
                Some((implied, text)) if !implied.is_empty() => (Some(implied), text),
                Some((_, text)) => (None, text),
                None => (None, text),
            };
            let Ok(mut props) = Props::parse("-device", text, implied) else {
                return;
            };
            let _ = props.has_help();
            // Each key is there once: taking it leaves none behind.
            for key in ["id", "drive", "if", "file", "format", "readonly", "help"] {
                if props.take(key).is_some() {
                    assert!(props.take(key).is_none(), "{key} twice in {text:?}");
                }
            }
            let _ = props.take_bool("x");
            let _ = props.take_u64("y");
            let _ = props.finish("a device");
        }
    }
}
