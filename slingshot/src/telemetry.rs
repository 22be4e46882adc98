//! Logging set-up: human-readable logs by default (coloured only on a terminal), JSON with `SLINGSHOT_LOG_FORMAT=json`, filtered by `SLINGSHOT_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber, once; later calls do nothing. Logs go
/// to stdout (containers collect stdout).
pub fn init() {
    init_to(Output::Stdout);
}

/// Where logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Standard output: for services, whose stdout is their log.
    Stdout,
    /// Standard error: for commands whose stdout is their result (`check`, `invoke`...).
    Stderr,
}

/// Like [`init`], logging to `output`.
pub fn init_to(output: Output) {
    // lapin logs broker replies the runtime handles itself (a passive
    // declare of a missing queue, a closed channel) as errors; slingshot
    // reports every broker failure with its context, so lapin is quiet
    // unless asked for (SLINGSHOT_LOG=info,lapin=debug).
    let filter = EnvFilter::try_from_env("SLINGSHOT_LOG").unwrap_or_else(|_| EnvFilter::new("info,lapin=off"));
    let json = std::env::var("SLINGSHOT_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let writer = move || -> Box<dyn std::io::Write> {
        match output {
            Output::Stdout => Box::new(std::io::stdout()),
            Output::Stderr => Box::new(std::io::stderr()),
        }
    };
    // Colours only on a terminal: a log redirected to a file or a pipe (a
    // container runtime, `> service.log`) gets plain text.
    let ansi = match output {
        Output::Stdout => std::io::stdout().is_terminal(),
        Output::Stderr => std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    // An error here only means a subscriber is already installed.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}
