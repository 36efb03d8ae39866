//! Rate limiter options of `--disk`, `--net` and `--rng`: `bw=SIZE[/MS]`
//! is a bandwidth bucket of SIZE bytes (suffixes K, M, G: powers of 1024)
//! refilled in MS milliseconds (default 1000, so `bw=2M` is 2 MiB/s);
//! `ops=N[/MS]` an operations bucket; `bw_burst=SIZE` and `ops_burst=N`
//! their one-time bursts. `--net` takes them with an `rx_` or `tx_`
//! prefix. Firecracker's `RateLimiter`, in the spec's terms.

use virtio::throttle::{BucketConfig, Limits};

/// The options of one limiter, gathered in any order.
#[derive(Default)]
pub(crate) struct LimitOptions {
    bw: Option<(u64, u64)>,
    bw_burst: Option<u64>,
    ops: Option<(u64, u64)>,
    ops_burst: Option<u64>,
}

/// The option names, for error messages.
pub(crate) const NAMES: &str = "bw, bw_burst, ops, ops_burst";

/// Bytes: a number with an optional K, M or G suffix (powers of 1024).
fn bytes(option: &str, text: &str) -> Result<u64, String> {
    let bad = || format!("{option}={text}: use a number of bytes such as 4096, 512K or 2M");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| bad())?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(bad()),
    };
    value.checked_mul(1 << shift).ok_or_else(bad)
}

fn count(option: &str, text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("{option}={text}: use a whole number"))
}

/// `AMOUNT[/MS]`: the bucket's size and refill time.
fn bucket(
    option: &str,
    text: &str,
    amount: fn(&str, &str) -> Result<u64, String>,
) -> Result<(u64, u64), String> {
    let (size, refill) = match text.split_once('/') {
        Some((size, ms)) => (size, count(option, ms)?),
        None => (text, 1000),
    };
    let size = amount(option, size)?;
    if size == 0 || refill == 0 {
        return Err(format!(
            "{option}={text}: the size and the refill time must not be 0"
        ));
    }
    if refill.checked_mul(1_000_000).is_none() {
        return Err(format!("{option}={text}: the refill time is too long"));
    }
    Ok((size, refill))
}

impl LimitOptions {
    /// Takes `name=val` (`name` without its `rx_`/`tx_` prefix, `option`
    /// the whole key for messages); Ok(false) when `name` is not a limiter
    /// option.
    pub(crate) fn take(&mut self, option: &str, name: &str, val: &str) -> Result<bool, String> {
        match name {
            "bw" => self.bw = Some(bucket(option, val, bytes)?),
            "ops" => self.ops = Some(bucket(option, val, count)?),
            "bw_burst" => self.bw_burst = Some(bytes(option, val)?),
            "ops_burst" => self.ops_burst = Some(count(option, val)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The limits; `prefix` names the options in messages.
    pub(crate) fn finish(self, prefix: &str) -> Result<Limits, String> {
        let make = |b: Option<(u64, u64)>, burst: Option<u64>, name: &str| match (b, burst) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(format!("{prefix}{name}_burst needs {prefix}{name}")),
            (Some((size, refill_time_ms)), burst) => Ok(Some(BucketConfig {
                size,
                one_time_burst: burst.unwrap_or(0),
                refill_time_ms,
            })),
        };
        Ok(Limits {
            bandwidth: make(self.bw, self.bw_burst, "bw")?,
            ops: make(self.ops, self.ops_burst, "ops")?,
        })
    }
}

/// `--rng[=bw=SIZE[/MS][,ops=N[/MS]][,bw_burst=SIZE][,ops_burst=N]]`.
pub(crate) fn parse_rng(value: &str) -> Result<Limits, String> {
    let mut options = LimitOptions::default();
    for option in value.split(',').filter(|o| !o.is_empty()) {
        let Some((key, val)) = option.split_once('=') else {
            return Err(format!("'{option}' is not KEY=VALUE ({NAMES})"));
        };
        if !options.take(key, key, val)? {
            return Err(format!("unknown option '{key}' ({NAMES})"));
        }
    }
    options.finish("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_sizes_refill_times_and_bursts() {
        assert_eq!(parse_rng("").unwrap(), Limits::default());
        let l = parse_rng("bw=2M,ops=100/10,bw_burst=4K").unwrap();
        assert_eq!(
            l.bandwidth,
            Some(BucketConfig {
                size: 2 << 20,
                one_time_burst: 4096,
                refill_time_ms: 1000
            })
        );
        assert_eq!(
            l.ops,
            Some(BucketConfig {
                size: 100,
                one_time_burst: 0,
                refill_time_ms: 10
            })
        );
        for bad in [
            "bw",
            "bw=0",
            "bw=1M/0",
            "bw=1T",
            "ops=1.5",
            "ops_burst=5",
            "iops=5",
            "bw=1/99999999999999999",
        ] {
            let err = parse_rng(bad).unwrap_err();
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
    }
}
