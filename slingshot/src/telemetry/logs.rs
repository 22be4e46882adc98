//! Logging and tracing set-up: human-readable logs by default (coloured only
//! on a terminal), JSON with `SLINGSHOT_LOG_FORMAT=json`, filtered by
//! `SLINGSHOT_LOG`; spans to OpenTelemetry (see [`crate::telemetry::export`]).

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Args, FromArgMatches, ValueEnum};
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::writer::{Lines, Sink, QUEUED_LINES};
use crate::telemetry::export::{self, Export};

/// The logging settings, as flags or environment variables.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
#[command(next_help_heading = "Logging (flags or environment variables)")]
pub struct LogArgs {
    /// Log filter, e.g. `info` or `info,slingshot=debug`. lapin is quiet by
    /// default: slingshot reports every broker failure with its context
    /// (`info,lapin=debug` shows lapin's own view).
    #[arg(long = "log", env = "SLINGSHOT_LOG", value_name = "FILTER", default_value = "info,lapin=off",
          value_parser = parse_filter, global = true)]
    pub filter: String,

    /// Log format.
    #[arg(long, env = "SLINGSHOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, with the request's span.
    Json,
}

fn parse_filter(text: &str) -> Result<String, String> {
    EnvFilter::try_new(text)
        .map(|_| text.to_string())
        .map_err(|e| format!("not a log filter ({e}); e.g. info or info,slingshot=debug"))
}

/// Where logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Standard output: for services, whose stdout is their log.
    Stdout,
    /// Standard error: for commands whose stdout is their result (`check`, `invoke`...).
    Stderr,
}

/// Installs the global log subscriber as `SLINGSHOT_LOG` and
/// `SLINGSHOT_LOG_FORMAT` say, logging to stdout (containers collect
/// stdout), and the OpenTelemetry tracer as the `OTEL_*` variables say. A
/// malformed value is reported on stderr and the defaults used. Once; later
/// calls do nothing. Call [`shutdown`](super::shutdown) before exiting to export the
/// last spans.
pub fn init() {
    let command = LogArgs::augment_args(clap::Command::new("slingshot"));
    let args = command
        .try_get_matches_from(["slingshot"])
        .and_then(|matches| LogArgs::from_arg_matches(&matches));
    match args {
        Ok(args) => args.init(Output::Stdout),
        Err(e) => {
            eprintln!("warning: {}; logging at info", e.to_string().trim());
            LogArgs {
                filter: "info,lapin=off".into(),
                log_format: LogFormat::Text,
            }
            .init(Output::Stdout);
        }
    }
}

impl LogArgs {
    /// Installs the global log subscriber, logging to `output`, and the
    /// OpenTelemetry tracer. Once; later calls do nothing.
    pub fn init(&self, output: Output) {
        self.init_service(None, output)
    }

    /// As [`LogArgs::init`], for service `service`: its spans carry its name
    /// as `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
    pub fn init_service(&self, service: Option<&str>, output: Output) {
        let filter = EnvFilter::try_new(&self.filter).unwrap_or_else(|_| EnvFilter::new("info"));
        let sink = match output {
            Output::Stdout => Sink::Stdout,
            Output::Stderr => Sink::Stderr,
        };
        let lines = match LINES.get() {
            Some(lines) => lines.clone(),
            None => match Lines::start(sink, QUEUED_LINES) {
                Ok(lines) => LINES.get_or_init(|| lines).clone(),
                Err(e) => {
                    eprintln!("error: cannot start the thread that writes the log: {e}");
                    return;
                }
            },
        };
        // Colours only on a terminal: a log redirected to a file or a pipe
        // (a container runtime, `> service.log`) gets plain text.
        let ansi = match output {
            Output::Stdout => std::io::stdout().is_terminal(),
            Output::Stderr => std::io::stderr().is_terminal(),
        };
        let logs = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .with_writer(lines);
        let logs = match self.log_format {
            LogFormat::Json => logs.json().with_filter(filter).boxed(),
            LogFormat::Text => logs.compact().with_filter(filter).boxed(),
        };
        let export = Export::from_vars(|name| std::env::var(name).ok()).unwrap_or_else(|e| {
            eprintln!("warning: {e}; traces are not exported");
            Export::Off
        });
        let provider = match &export {
            Export::Off => None,
            Export::Otlp(_) => export::provider(service, &export)
                .inspect_err(|e| eprintln!("warning: {e}; traces are not exported"))
                .ok(),
        };
        // When exporting, spans are recorded whatever `SLINGSHOT_LOG` says,
        // so that exported traces are whole; the libraries' own spans and
        // events stay out of them. When not, there is no layer at all: it
        // would build span data nobody reads, several microseconds per
        // request, and messages carry trace contexts without it (see
        // `otel::context_of`).
        let spans = provider.map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("slingshot"))
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(span_targets())
        });
        let exporting = spans.is_some();
        // An error here only means a subscriber is already installed.
        let _ = tracing_subscriber::registry().with(logs).with(spans).try_init();
        if let (Export::Otlp(url), true) = (&export, exporting) {
            let url = crate::base::redact::url(url);
            tracing::info!(%url, "exporting traces over OTLP/HTTP");
        }
    }
}

/// The log's writer, once installed.
static LINES: OnceLock<Lines> = OnceLock::new();

/// Log lines dropped so far because the output did not keep up.
pub(crate) fn dropped_lines() -> u64 {
    LINES.get().map_or(0, Lines::dropped)
}

/// Writes what the log still holds, waiting at most `timeout`.
pub(crate) fn flush(timeout: Duration) {
    if let Some(lines) = LINES.get() {
        lines.flush(timeout);
    }
}

/// What the OpenTelemetry layer records: slingshot's and the services' own
/// spans and events at `info` and above, none of the libraries'.
fn span_targets() -> Targets {
    let quiet = [
        "amq_protocol",
        "aws",
        "diesel",
        "h2",
        "hyper",
        "lapin",
        "opentelemetry",
        "pinky_swear",
        "r2d2",
        "reqwest",
        "rustls",
        "tokio",
        "tower",
    ];
    quiet
        .iter()
        .fold(Targets::new().with_default(LevelFilter::INFO), |targets, target| {
            targets.with_target(*target, LevelFilter::OFF)
        })
}
