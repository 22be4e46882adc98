//! Logging set-up: human-readable logs by default, JSON with `SLINGSHOT_LOG_FORMAT=json`, filtered by `SLINGSHOT_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber, once; later calls do nothing. Logs go
/// to stdout (containers collect stdout).
pub fn init() {
    let filter = EnvFilter::try_from_env("SLINGSHOT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SLINGSHOT_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    // An error here only means a subscriber is already installed.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}
