//! `uffd-handler`: the example page-fault handler of lazy snapshot
//! restore (`/snapshot/load` with `mem_backend.backend_type = "Uffd"`,
//! `ferrovisor restore --uffd`). It listens on a Unix socket, takes one
//! VMM's memory layout and userfaultfd, and fills every page the VMM
//! touches first with UFFDIO_COPY from the snapshot's memory file, until
//! that VMM ends. It must stay alive (and connected) while the VM runs:
//! the VMM ends the VM when the connection closes.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use userfault::{PageServer, ServeOptions};

/// Serves a restored VM's memory from a snapshot memory file through
/// userfaultfd (one VMM, then exits).
#[derive(Parser)]
#[command(name = "uffd-handler", version)]
struct Args {
    /// The Unix socket to listen on: the load's mem_backend.backend_path
    /// (or `ferrovisor restore --uffd SOCKET`). A socket left there by an
    /// earlier run is replaced.
    #[arg(long, value_name = "SOCKET")]
    socket: PathBuf,
    /// The snapshot's memory file (/snapshot/create's mem_file_path).
    #[arg(long, value_name = "MEM")]
    mem: PathBuf,
    /// Wait this many milliseconds before serving each fault (a slow
    /// handler: the VM waits).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay_ms: u64,
    /// Exit (status 3) after serving N faults, as a crashed handler would
    /// (the VMM then ends the VM with an error).
    #[arg(long, value_name = "N")]
    exit_after: Option<u64>,
}

fn fail(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "uffd-handler: {message}");
    ExitCode::FAILURE
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}

fn main() -> ExitCode {
    let args = Args::parse();
    let memory = match File::open(&args.mem) {
        Ok(f) => f,
        Err(e) => return fail(&format!("{}: {e}", args.mem.display())),
    };
    if std::fs::symlink_metadata(&args.socket).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(&args.socket);
    }
    let listener = match UnixListener::bind(&args.socket) {
        Ok(l) => l,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", args.socket.display())),
    };
    println!("uffd-handler: listening on {}", args.socket.display());
    let stream = match listener.accept() {
        Ok((stream, _)) => stream,
        Err(e) => return fail(&format!("accept: {e}")),
    };
    // One VMM per handler: nobody else may connect and wait in vain.
    drop(listener);
    let _ = std::fs::remove_file(&args.socket);
    let mut server = match PageServer::new(&memory, stream) {
        Ok(s) => s,
        Err(e) => return fail(&chain(&e)),
    };
    let size: u64 = server.regions().iter().map(|r| r.size).sum();
    println!(
        "uffd-handler: serving {} regions, {size} bytes, from {}",
        server.regions().len(),
        args.mem.display()
    );
    let options = ServeOptions {
        delay: Duration::from_millis(args.delay_ms),
        exit_after: args.exit_after,
    };
    let report = match server.serve(&options) {
        Ok(r) => r,
        Err(e) => return fail(&chain(&e)),
    };
    println!(
        "uffd-handler: served {} faults, {} pages copied, {} outside the layout",
        report.faults, report.pages, report.stray
    );
    let _ = std::io::stdout().flush();
    if report.limit_reached {
        let _ = writeln!(
            std::io::stderr(),
            "uffd-handler: exiting after {} faults (--exit-after)",
            report.faults
        );
        std::process::exit(3);
    }
    ExitCode::SUCCESS
}
