//! `--trace PATTERN` and `--trace-file PATH`: turn on KVM's tracepoints
//! (see the `tracepoints` crate) before the VM runs.

use std::path::Path;

/// Turns on the events `pattern` names, written to `file` (standard error
/// without one). Returns a message for the user on a bad pattern or file.
pub fn setup(pattern: Option<&str>, file: Option<&Path>) -> Result<(), String> {
    if let Some(path) = file {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open the trace file {}: {e}", path.display()))?;
        tracepoints::set_output(Box::new(out));
    }
    if let Some(pattern) = pattern {
        tracepoints::enable(pattern).map_err(|e| format!("--trace: {e}"))?;
    }
    Ok(())
}

/// What `GET /ferrovisor/trace` answers: the events that are on, and every
/// event there is.
pub fn current() -> serde_json::Value {
    let all: Vec<&str> = tracepoints::Event::ALL.iter().map(|e| e.name()).collect();
    serde_json::json!({
        "events": tracepoints::enabled_names().join(","),
        "available": all,
    })
}
