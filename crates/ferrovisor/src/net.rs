//! `--net tap=NAME[,mac=MAC][,offload=on|off]`.

use vmm::NetConfig;

/// Parses one `--net` value.
pub(crate) fn parse_net(value: &str) -> Result<NetConfig, String> {
    let mut tap = None;
    let mut mac = None;
    let mut offload = true;
    let mut rx = crate::limits::LimitOptions::default();
    let mut tx = crate::limits::LimitOptions::default();
    for option in value.split(',') {
        let Some((key, val)) = option.split_once('=') else {
            return Err(format!(
                "'{option}' is not KEY=VALUE (tap=NAME[,mac=MAC][,offload=on|off])"
            ));
        };
        match key {
            "tap" if val.is_empty() => return Err("tap= is empty".to_string()),
            "tap" if val.len() > 15 || val.contains(['/', ' ']) => {
                return Err(format!(
                    "tap={val}: not an interface name (at most 15 bytes, no '/' or space)"
                ))
            }
            "tap" => tap = Some(val.to_string()),
            "mac" => mac = Some(parse_mac(val)?),
            "offload" => {
                offload = match val {
                    "on" | "true" | "yes" | "1" => true,
                    "off" | "false" | "no" | "0" => false,
                    _ => return Err(format!("offload={val}: use on or off")),
                }
            }
            _ => {
                let taken = match key.split_once('_') {
                    Some(("rx", name)) => rx.take(key, name, val)?,
                    Some(("tx", name)) => tx.take(key, name, val)?,
                    _ => false,
                };
                if !taken {
                    return Err(format!(
                        "unknown option '{key}' (tap, mac, offload, rx_ or tx_ + {})",
                        crate::limits::NAMES
                    ));
                }
            }
        }
    }
    let tap = tap.ok_or("tap=NAME is missing")?;
    let rx_rate_limiter = rx.finish("rx_")?;
    let tx_rate_limiter = tx.finish("tx_")?;
    Ok(NetConfig {
        tap,
        mac,
        offload,
        rx_rate_limiter,
        tx_rate_limiter,
        mmds: false,
    })
}

/// `aa:bb:cc:dd:ee:ff` (or with '-'); a unicast address.
fn parse_mac(value: &str) -> Result<[u8; 6], String> {
    let bad = || format!("mac={value}: use six hex bytes like 06:00:00:00:00:01");
    let parts: Vec<&str> = value.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!("mac={value} is a multicast address"));
    }
    if mac == [0; 6] {
        return Err(format!("mac={value} is all zeroes"));
    }
    Ok(mac)
}

/// The first TAP named twice.
pub(crate) fn duplicate_tap(nets: &[NetConfig]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    nets.iter()
        .map(|n| n.tap.as_str())
        .find(|t| !seen.insert(*t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_taps_and_macs() {
        let n = parse_net("tap=tap0").unwrap();
        assert_eq!(n.tap, "tap0");
        assert_eq!(n.mac, None);
        assert!(n.offload);
        assert_eq!(n.mac_or_default(0), [6, 0, 0, 0, 0, 1]);
        assert_eq!(n.mac_or_default(1), [6, 0, 0, 0, 0, 2]);
        let n = parse_net("tap=fv1,mac=52:54:00:AB:cd:0f").unwrap();
        assert_eq!(n.mac, Some([0x52, 0x54, 0, 0xab, 0xcd, 0x0f]));
        assert_eq!(n.mac_or_default(3), [0x52, 0x54, 0, 0xab, 0xcd, 0x0f]);
        let n = parse_net("mac=06-00-00-00-00-09,tap=x,offload=off").unwrap();
        assert_eq!(n.mac, Some([6, 0, 0, 0, 0, 9]));
        assert!(!n.offload);
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        for bad in [
            "",
            "tap0",
            "mac=06:00:00:00:00:01",
            "tap=",
            "tap=a-name-much-too-long",
            "tap=a/b",
            "tap=t,mac=06:00:00:00:00",
            "tap=t,mac=06:00:00:00:00:01:02",
            "tap=t,mac=06:00:00:00:00:zz",
            "tap=t,mac=6:0:0:0:0:1",
            "tap=t,mac=01:00:5e:00:00:01",
            "tap=t,mac=00:00:00:00:00:00",
            "tap=t,queues=2",
            "tap=t,offload=maybe",
        ] {
            let err = parse_net(bad).unwrap_err();
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
        let nets = [
            parse_net("tap=a").unwrap(),
            parse_net("tap=b").unwrap(),
            parse_net("tap=a").unwrap(),
        ];
        assert_eq!(duplicate_tap(&nets), Some("a"));
        assert_eq!(duplicate_tap(&nets[..2]), None);
    }
}
