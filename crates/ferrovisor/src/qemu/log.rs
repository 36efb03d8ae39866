//! Log lines in QEMU's form, `PROGRAM: warning: MESSAGE`: scripts that
//! run QEMU read its standard error that way (kvm-unit-tests counts a
//! run that printed anything but lines with "warning" as failed).
//! The level comes from FERROVISOR_LOG, warn by default, as for `run`.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

struct QemuFormat {
    program: String,
}

impl<S, N> FormatEvent<S, N> for QemuFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(writer, "{}: {level}: ", self.program)?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

pub fn install(program: &str) {
    // A line standard error cannot take is dropped (see crate::logging).
    tracing_subscriber::fmt()
        .log_internal_errors(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERROVISOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .event_format(QemuFormat {
            program: program.to_string(),
        })
        .with_writer(std::io::stderr)
        .init();
}
