//! `ferrovisor stat --api-sock PATH`: a live kvm_stat-style view of a
//! running VM through its API socket (`GET /ferrovisor/stats`): exits by
//! reason, summed over the vCPUs, with their totals and rates per second,
//! refreshed every interval; `--once` prints one sample (two readings one
//! interval apart) for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use api::client::Client;

#[derive(clap::Args)]
pub(crate) struct StatArgs {
    /// The API socket of the running ferrovisor.
    #[arg(long, value_name = "PATH")]
    api_sock: PathBuf,
    /// Print one sample and end (batch mode, as kvm_stat --once).
    #[arg(long, short = '1')]
    once: bool,
    /// Seconds between samples.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

/// Exits by reason, summed over the vCPUs (reasons no vCPU observes are
/// left out).
type Totals = BTreeMap<String, u64>;

fn read(client: &mut Client) -> Result<(String, Totals), String> {
    let r = client
        .request("GET", "/ferrovisor/stats", None)
        .map_err(|e| format!("GET /ferrovisor/stats: {e}"))?;
    if r.status != 200 {
        return Err(format!(
            "GET /ferrovisor/stats: {}",
            r.fault_message().unwrap_or(r.body)
        ));
    }
    let v: serde_json::Value =
        serde_json::from_str(&r.body).map_err(|e| format!("GET /ferrovisor/stats: {e}"))?;
    let accel = v["accel"].as_str().unwrap_or("?").to_string();
    let mut totals = Totals::new();
    for vcpu in v["exits"].as_object().into_iter().flat_map(|m| m.values()) {
        for (reason, n) in vcpu.as_object().into_iter().flatten() {
            if let Some(n) = n.as_u64() {
                *totals.entry(reason.clone()).or_default() += n;
            }
        }
    }
    Ok((accel, totals))
}

/// The table: one line per reason, busiest first, `total` last.
fn table(accel: &str, before: &Totals, after: &Totals, seconds: f64) -> String {
    let mut rows: Vec<(&String, u64, f64)> = after
        .iter()
        .filter(|(r, _)| r.as_str() != "total")
        .map(|(r, &n)| {
            let rate = n.saturating_sub(before.get(r).copied().unwrap_or(0)) as f64 / seconds;
            (r, n, rate)
        })
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.1.cmp(&a.1)));
    let mut out = String::new();
    let _ = writeln!(out, "VM exits (accelerator: {accel})");
    let _ = writeln!(out, "{:<24} {:>14} {:>12}", "Event", "Total", "Current/s");
    for (reason, total, rate) in rows {
        let _ = writeln!(out, "{reason:<24} {total:>14} {rate:>12.0}");
    }
    if let Some(&total) = after.get("total") {
        let rate = total.saturating_sub(before.get("total").copied().unwrap_or(0)) as f64 / seconds;
        let _ = writeln!(out, "{:<24} {total:>14} {rate:>12.0}", "Total");
    }
    out
}

fn connect(path: &Path) -> Result<Client, String> {
    Client::connect(path).map_err(|e| format!("cannot connect to {}: {e}", path.display()))
}

pub(crate) fn run(args: &StatArgs) -> ExitCode {
    if !(args.interval > 0.0 && args.interval.is_finite()) {
        return crate::fail("--interval must be a positive number of seconds", 2);
    }
    let interval = Duration::from_secs_f64(args.interval);
    let mut client = match connect(&args.api_sock) {
        Ok(c) => c,
        Err(e) => return crate::fail(&e, 1),
    };
    let (_, mut before) = match read(&mut client) {
        Ok(r) => r,
        Err(e) => return crate::fail(&e, 1),
    };
    let mut at = Instant::now();
    let clear = !args.once && std::io::stdout().is_terminal();
    loop {
        std::thread::sleep(interval);
        // The server may close a kept-alive connection: reconnect once.
        let reading = read(&mut client).or_else(|_| {
            client = connect(&args.api_sock)?;
            read(&mut client)
        });
        let (accel, after) = match reading {
            Ok(r) => r,
            // The VM ended: a live view ends with it.
            Err(_) if !args.once => return ExitCode::SUCCESS,
            Err(e) => return crate::fail(&e, 1),
        };
        let now = Instant::now();
        let text = table(&accel, &before, &after, (now - at).as_secs_f64());
        let mut stdout = std::io::stdout().lock();
        if clear {
            let _ = write!(stdout, "\x1b[H\x1b[2J");
        }
        let _ = write!(stdout, "{text}");
        let _ = stdout.flush();
        if args.once {
            return ExitCode::SUCCESS;
        }
        before = after;
        at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sorts_by_rate_and_ends_with_the_total() {
        let before: Totals = [("io".into(), 10), ("hlt".into(), 5), ("total".into(), 15)].into();
        let after: Totals = [
            ("io".into(), 30),
            ("hlt".into(), 105),
            ("total".into(), 135),
        ]
        .into();
        let t = table("emu", &before, &after, 2.0);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "VM exits (accelerator: emu)");
        assert!(
            lines[2].starts_with("hlt ") && lines[2].ends_with(" 105           50"),
            "{t}"
        );
        assert!(
            lines[3].starts_with("io ") && lines[3].ends_with(" 30           10"),
            "{t}"
        );
        assert!(
            lines[4].starts_with("Total ") && lines[4].ends_with(" 135           60"),
            "{t}"
        );
    }
}
