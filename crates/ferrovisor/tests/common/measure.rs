//! What a running VMM process costs the host, read from /proc: CPU time
//! (utime + stime of every thread), peak resident memory (VmHWM) and
//! thread count, sampled while it runs.

use std::process::Child;
use std::time::{Duration, Instant};

/// One reading of /proc/PID.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// utime + stime, seconds.
    pub cpu_secs: f64,
    /// VmHWM, KiB.
    pub peak_rss_kib: u64,
    pub threads: u64,
}

/// Reads /proc/PID/stat and /proc/PID/status; None once the process is
/// gone.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) in parentheses:
    // state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(Sample {
        at: Instant::now(),
        cpu_secs: ticks as f64 / hz,
        peak_rss_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
    })
}

/// What a process cost over a window of its life.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Host cores used on average over the window (CPU time / wall time).
    pub cores: f64,
    pub window: Duration,
    /// Peak resident set over the whole life so far, KiB.
    pub peak_rss_kib: u64,
    /// Most threads seen at once.
    pub max_threads: u64,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3} cores over {:.1} s, peak RSS {} KiB, {} threads",
            self.cores,
            self.window.as_secs_f64(),
            self.peak_rss_kib,
            self.max_threads
        )
    }
}

/// Lets `child` run `warmup` (its start-up is not measured), then samples
/// it every 50 ms for `window`. Panics if it ends meanwhile.
pub fn measure(child: &mut Child, warmup: Duration, window: Duration) -> Usage {
    let pid = child.id();
    let gone = |child: &mut Child| -> String {
        format!("the VMM ended while measured: {:?}", child.try_wait())
    };
    std::thread::sleep(warmup);
    let first = sample(pid).unwrap_or_else(|| panic!("{}", gone(child)));
    let mut last = first;
    let mut max_threads = first.threads;
    while last.at.duration_since(first.at) < window {
        std::thread::sleep(Duration::from_millis(50));
        assert!(child.try_wait().unwrap().is_none(), "{}", gone(child));
        last = sample(pid).unwrap_or_else(|| panic!("{}", gone(child)));
        max_threads = max_threads.max(last.threads);
    }
    let wall = last.at.duration_since(first.at);
    Usage {
        cores: (last.cpu_secs - first.cpu_secs) / wall.as_secs_f64(),
        window: wall,
        peak_rss_kib: last.peak_rss_kib,
        max_threads,
    }
}

/// Sends SIGTERM (a clean stop: `--stats` are printed) and waits for the
/// end; kills after `timeout`. The exit code.
pub fn terminate(child: &mut Child, timeout: Duration) -> Option<i32> {
    super::signal(child, libc::SIGTERM);
    super::firecracker::wait_child(child, timeout)
}
