//! The log of Ferrovisor's own commands (run, demo, stat): `--log-level`
//! and `--log-file`, beside the `FERROVISOR_LOG` environment variable.
//!
//! The level is a tracing filter (`warn`, `debug`, `vmm=debug,info`...):
//! `--log-level` when given, else `FERROVISOR_LOG`, else `warn`. The lines
//! go to `--log-file` (created if missing, appended to; a FIFO without a
//! reader drops lines instead of stopping the VMM: the Firecracker front
//! end's [`open_sink`]) or to standard error. The Firecracker front end
//! keeps Firecracker's own `--level`/`--log-path` logger.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::Path;

use tracing_subscriber::EnvFilter;

use crate::firecracker::logger::open_sink;

/// The filter: `level`, else `FERROVISOR_LOG`, else `warn`.
fn filter(level: Option<&str>) -> Result<EnvFilter, String> {
    match level {
        Some(level) => EnvFilter::try_new(level)
            .map_err(|e| format!("--log-level {level:?} is not a log filter: {e}")),
        None => Ok(
            EnvFilter::try_from_env("FERROVISOR_LOG").unwrap_or_else(|_| EnvFilter::new("warn"))
        ),
    }
}

/// Installs the log of this process.
pub fn install(level: Option<&str>, file: Option<&Path>) -> Result<(), String> {
    let filter = filter(level)?;
    // A line that cannot be written (standard error is a pipe its reader
    // closed) is dropped: by default tracing-subscriber reports the failure
    // with `eprintln!`, which panics on that same closed pipe, in whichever
    // thread logged (the console writer, when the guest's output went to
    // `| head`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false);
    match file {
        Some(path) => {
            let sink = open_sink(path)
                .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
            // A seccomp fault's line goes to the log file too.
            sandbox::report_faults_to(sandbox::FaultReport::Log, sink.as_fd())
                .map_err(|e| format!("cannot use the log file {}: {e}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(sink))
                .init();
        }
        None => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_level_is_an_error_and_a_good_one_is_taken() {
        assert!(filter(Some("vmm=loud")).is_err());
        assert_eq!(filter(Some("debug")).unwrap().to_string(), "debug");
    }
}
