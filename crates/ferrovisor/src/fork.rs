//! `ferrovisor fork`: N clones of a snapshot, each a process of its own
//! restoring it as `ferrovisor restore --new-vmgenid` would, with its
//! identity. The clones are forked from this process, not executed: they
//! share its relocated binary, libraries and the state file it read once,
//! copy-on-write, as they share the memory file they map MAP_PRIVATE (the
//! host's page cache) until they write its pages.
//!
//! Per-clone values are templates: `{n}` is the clone's index (0..N),
//! `{n:02x}` the same in two hex digits (for MACs). The parent waits for
//! each clone's ready line (`restore --report-ready`), prints a line per
//! clone (`clone N pid P running after T ms (restore R ms)`) and a summary
//! (`forked N clones in T ms: R clones/s`), forwards each clone's other
//! standard output prefixed with `[N] `, and ends when every clone ended:
//! 0 if they all did, else the first failing status. A clone that ends
//! before it is ready makes the parent stop the others and fail.

use std::io::{BufRead, BufReader, PipeReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Instant;

use jailer::process::Forked;
use vmm::snapshot::SnapshotFile;

use crate::snapshot_cli::{RestoreArgs, READY_MARKER};

/// The most clones one command starts.
pub(crate) const MAX_CLONES: u32 = 1024;

#[derive(clap::Args)]
pub(crate) struct ForkArgs {
    /// The state file.
    #[arg(long, value_name = "STATE")]
    snapshot: PathBuf,
    /// The memory file every clone maps privately.
    #[arg(long, value_name = "MEM")]
    mem: PathBuf,
    /// How many clones.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_CLONES as i64))]
    count: u32,
    /// Accelerator: auto (the snapshot's), kvm or emu.
    #[arg(long, default_value = "auto")]
    accel: String,
    /// Keep the snapshot's VM generation ID (by default each clone gets a
    /// new one; a snapshot without the device, a VM without ACPI tables,
    /// is forked without).
    #[arg(long)]
    keep_vmgenid: bool,
    /// Each clone's serial output file (template).
    #[arg(long, value_name = "TEMPLATE")]
    serial_out: Option<String>,
    /// Each clone's vsock Unix socket (template).
    #[arg(long, value_name = "TEMPLATE")]
    vsock_uds: Option<String>,
    /// Clone n's vsock CID is CID + n.
    #[arg(long, value_name = "CID")]
    guest_cid: Option<u32>,
    /// A network interface's TAP: IFACE=TEMPLATE (repeatable).
    #[arg(long, value_name = "IFACE=TEMPLATE")]
    tap: Vec<String>,
    /// A network interface's MAC: IFACE=TEMPLATE (repeatable), e.g.
    /// eth0=06:00:00:00:01:{n:02x}.
    #[arg(long, value_name = "IFACE=TEMPLATE")]
    mac: Vec<String>,
    /// Each clone's MMDS data (JSON template), e.g. '{"clone": {n}}'.
    #[arg(long, value_name = "TEMPLATE")]
    mmds_data: Option<String>,
    /// No syscall filters in the clones.
    #[arg(long)]
    no_seccomp: bool,
}

/// `template` for clone `n` (the same templates as `PUT /ferrovisor/fork`).
pub(crate) use api::fork::expand;

/// The `restore` arguments of clone `n`.
fn clone_args(args: &ForkArgs, n: u32, new_vmgenid: bool) -> Result<RestoreArgs, String> {
    let mut v: Vec<String> = vec![
        "restore".into(),
        "--snapshot".into(),
        args.snapshot.display().to_string(),
        "--mem".into(),
        args.mem.display().to_string(),
        "--accel".into(),
        args.accel.clone(),
        "--report-ready".into(),
    ];
    if new_vmgenid {
        v.push("--new-vmgenid".into());
    }
    if args.no_seccomp {
        v.push("--no-seccomp".into());
    }
    let mut opt = |flag: &str, value: Option<String>| {
        if let Some(value) = value {
            v.push(flag.into());
            v.push(value);
        }
    };
    opt(
        "--serial-out",
        args.serial_out.as_deref().map(|t| expand(t, n)),
    );
    opt(
        "--vsock-uds",
        args.vsock_uds.as_deref().map(|t| expand(t, n)),
    );
    let cid = match args.guest_cid {
        Some(base) => Some(
            base.checked_add(n)
                .ok_or("--guest-cid: CID + N overflows")?
                .to_string(),
        ),
        None => None,
    };
    opt("--guest-cid", cid);
    opt(
        "--mmds-data",
        args.mmds_data.as_deref().map(|t| expand(t, n)),
    );
    for (flag, list) in [("--tap", &args.tap), ("--mac", &args.mac)] {
        for t in list {
            v.push(flag.into());
            v.push(expand(t, n));
        }
    }
    crate::snapshot_cli::parse_restore(&v).map_err(|e| format!("clone {n}: {e}"))
}

/// What a clone's output reader reports.
enum Event {
    Ready { n: u32, restore_us: u64 },
    Line { n: u32, line: String },
    Closed { n: u32 },
}

/// Reads clone `n`'s standard output on a thread of its own.
fn read_output(n: u32, out: PipeReader, events: mpsc::Sender<Event>) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let event = match line.strip_prefix(READY_MARKER) {
                Some(rest) => Event::Ready {
                    n,
                    restore_us: rest
                        .trim()
                        .strip_prefix("restore_us=")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                },
                None => Event::Line { n, line },
            };
            if events.send(event).is_err() {
                return;
            }
        }
        let _ = events.send(Event::Closed { n });
    });
}

pub(crate) fn run(args: &ForkArgs) -> ExitCode {
    let file = match SnapshotFile::read(&args.snapshot) {
        Ok(file) => file,
        Err(e) => return crate::fail(&format!("fork: {}", crate::error_line(&e)), 1),
    };
    let has = file.body.devices.vmgenid.is_some();
    if !has && !args.keep_vmgenid {
        say!("ferrovisor: fork: the snapshot's VM has no VM generation ID device (no ACPI tables): the clones keep their state as it is");
    }
    let new_vmgenid = has && !args.keep_vmgenid;
    let clones = match (0..args.count)
        .map(|n| clone_args(args, n, new_vmgenid))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(clones) => clones,
        Err(message) => return crate::fail(&format!("fork: {message}"), 2),
    };
    vmm::warm_up_for_clones();
    let started = Instant::now();
    // Every clone is forked before this process starts a thread.
    let mut children = Vec::new();
    let mut outputs = Vec::new();
    for (n, clone) in clones.iter().enumerate() {
        match jailer::process::fork_with_output() {
            Ok(Forked::Parent { pid, output }) => {
                children.push(pid);
                outputs.push(output);
            }
            Ok(Forked::Child) => {
                // The other clones' pipes are not this clone's.
                drop(outputs);
                return crate::snapshot_cli::restore_from(clone, Some(file));
            }
            Err(e) => {
                stop(&children);
                return crate::fail(&format!("fork: cannot start clone {n}: {e}"), 1);
            }
        }
    }
    let (tx, events) = mpsc::channel();
    for (n, output) in (0..).zip(outputs) {
        read_output(n, output, tx.clone());
    }
    drop(tx);
    let mut is_ready = vec![false; args.count as usize];
    let mut ready = 0;
    let mut open = args.count;
    while open > 0 {
        let Ok(event) = events.recv() else { break };
        match event {
            Event::Ready { n, restore_us } => {
                is_ready[n as usize] = true;
                ready += 1;
                let pid = children[n as usize];
                let after = started.elapsed().as_secs_f64() * 1e3;
                say!(
                    "clone {n} pid {pid} running after {after:.1} ms (restore {:.1} ms)",
                    restore_us as f64 / 1e3
                );
                if ready == args.count {
                    let secs = started.elapsed().as_secs_f64();
                    say!(
                        "forked {} clones in {:.1} ms: {:.0} clones/s",
                        args.count,
                        secs * 1e3,
                        f64::from(args.count) / secs
                    );
                }
            }
            Event::Line { n, line } => crate::out::stdout(&format!("[{n}] {line}\n")),
            Event::Closed { n } => {
                open -= 1;
                if !is_ready[n as usize] {
                    say!("ferrovisor: fork: clone {n} ended before it ran; stopping the others");
                    let _ = jailer::process::wait(children[n as usize]);
                    stop(&children);
                    return ExitCode::from(1);
                }
            }
        }
    }
    wait_all(&children)
}

/// Kills and reaps the clones started so far.
fn stop(children: &[libc::pid_t]) {
    for &pid in children {
        let _ = jailer::process::signal(pid, libc::SIGKILL);
        let _ = jailer::process::wait(pid);
    }
}

/// Waits for every clone; the first failing status, else 0.
fn wait_all(children: &[libc::pid_t]) -> ExitCode {
    let mut status = 0u8;
    for (n, &pid) in children.iter().enumerate() {
        match jailer::process::wait(pid) {
            Ok(s) if s.success() => {}
            Ok(s) => {
                say!("ferrovisor: fork: clone {n} ended with {s}");
                if status == 0 {
                    status = s.code().map_or(1, |c| c as u8);
                }
            }
            Err(e) => say!("ferrovisor: fork: clone {n}: {e}"),
        }
    }
    ExitCode::from(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_per_clone() {
        assert_eq!(expand("/tmp/c{n}.out", 3), "/tmp/c3.out");
        assert_eq!(
            expand("eth0=06:00:00:00:01:{n:02x}", 26),
            "eth0=06:00:00:00:01:1a"
        );
        assert_eq!(expand(r#"{"clone": {n}}"#, 7), r#"{"clone": 7}"#);
        assert_eq!(expand("same", 9), "same");
    }
}
