//! The logger of Firecracker's process interface: `--log-path`, `--level`,
//! `--module`, `--show-level`, `--show-log-origin` and `PUT /logger`.
//!
//! Lines look like Firecracker's: `TIME [ID:THREAD:LEVEL:FILE:LINE] text`
//! (level and origin when asked for), with the event's fields after the
//! text. They go to the log path (a file, appended to, or a FIFO; a line
//! that would block is dropped) or, without one, to standard error, where
//! they do not mix with the guest's serial output on standard output.
//! The level and module filter can change at run time: the filter is a
//! reloadable `Targets`, so events that are off cost what they cost
//! without a logger.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use api::schema::{LogLevel, Logger as LoggerSpec};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    #[error("cannot open the log file {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot change the log filter: {0}")]
    Reload(String),
}

struct Format {
    show_level: bool,
    show_origin: bool,
    target: Option<File>,
}

/// The running logger; [`Logger::update`] reconfigures it.
pub struct Logger {
    instance_id: String,
    format: Mutex<Format>,
    filter: reload::Handle<Targets, tracing_subscriber::Registry>,
    level: Mutex<(LogLevel, Option<String>)>,
    /// Lines dropped because the log target would block or failed.
    pub missed: AtomicU64,
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::OFF,
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warning => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

fn targets(level: LogLevel, module: Option<&str>) -> Targets {
    match module {
        None => Targets::new().with_default(level_filter(level)),
        Some(module) => Targets::new().with_target(module, level_filter(level)),
    }
}

/// Opens a log or metrics destination: created if missing, appended to,
/// non-blocking (a FIFO without a reader does not stop the VMM).
pub fn open_sink(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

impl Logger {
    /// Installs the logger as the process's tracing subscriber.
    pub fn install(instance_id: &str, config: &LoggerSpec) -> Result<Arc<Logger>, LoggerError> {
        let level = config.level.unwrap_or_default();
        let (filter, handle) = reload::Layer::new(targets(level, config.module.as_deref()));
        let logger = Arc::new(Logger {
            instance_id: instance_id.to_string(),
            format: Mutex::new(Format {
                show_level: false,
                show_origin: false,
                target: None,
            }),
            filter: handle,
            level: Mutex::new((level, config.module.clone())),
            missed: AtomicU64::new(0),
        });
        logger.update(config)?;
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(LineLayer(logger.clone()))
            .try_init();
        Ok(logger)
    }

    /// Applies what `config` names, leaving the rest as it is.
    pub fn update(&self, config: &LoggerSpec) -> Result<(), LoggerError> {
        let target = config
            .log_path
            .as_ref()
            .map(|path| {
                open_sink(Path::new(path)).map_err(|source| LoggerError::Open {
                    path: path.clone(),
                    source,
                })
            })
            .transpose()?;
        {
            let mut level = self.level.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = config.level {
                level.0 = l;
            }
            if let Some(m) = &config.module {
                level.1 = Some(m.clone());
            }
            self.filter
                .reload(targets(level.0, level.1.as_deref()))
                .map_err(|e| LoggerError::Reload(e.to_string()))?;
        }
        let mut format = self.format.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = target {
            // A seccomp fault's line goes to the log file too.
            if let Err(e) = sandbox::report_faults_to(sandbox::FaultReport::Log, t.as_fd()) {
                tracing::warn!("seccomp faults will not reach the log file: {e}");
            }
            format.target = Some(t);
        }
        if let Some(s) = config.show_level {
            format.show_level = s;
        }
        if let Some(s) = config.show_log_origin {
            format.show_origin = s;
        }
        Ok(())
    }

    fn write_line(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let format = self.format.lock().unwrap_or_else(|p| p.into_inner());
        let mut line = String::with_capacity(128);
        let thread = std::thread::current();
        let _ = write!(
            line,
            "{} [{}:{}",
            timestamp(std::time::SystemTime::now()),
            self.instance_id,
            thread.name().unwrap_or("-")
        );
        if format.show_level {
            let _ = write!(line, ":{}", meta.level());
        }
        if format.show_origin {
            let _ = write!(
                line,
                ":{}:{}",
                meta.file().unwrap_or("?"),
                meta.line().map_or("?".to_string(), |l| l.to_string())
            );
        }
        line.push_str("] ");
        let mut visitor = LineVisitor {
            line: &mut line,
            fields: String::new(),
        };
        event.record(&mut visitor);
        let fields = std::mem::take(&mut visitor.fields);
        line.push_str(&fields);
        line.push('\n');
        let written = match &format.target {
            Some(file) => (&*file).write_all(line.as_bytes()),
            None => std::io::stderr().write_all(line.as_bytes()),
        };
        if written.is_err() {
            self.missed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct LineLayer(Arc<Logger>);

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        self.0.write_line(event);
    }
}

struct LineVisitor<'a> {
    line: &'a mut String,
    fields: String,
}

impl Visit for LineVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.line.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.line, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn` in UTC.
pub fn timestamp(now: std::time::SystemTime) -> String {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_utc_civil_time() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000000");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 5);
        assert_eq!(timestamp(t), "2024-02-29T12:34:56.000000005");
    }
}
