//! What slingshot tells about itself: spans (built and failed in one place),
//! the W3C trace context they carry, their OTLP export, and logs.
//!
//! Public: setting up logs and spans, for binaries of their own
//! ([`init`], [`LogArgs`]); the generated `main` does it already.

pub(crate) mod context;
pub(crate) mod export;
pub(crate) mod logs;
pub(crate) mod spans;
mod writer;

pub use self::logs::{init, LogArgs, LogFormat, Output};

/// Exports the last spans and writes what the log still holds (at most a
/// couple of seconds each: a collector or a stdout that does not answer does
/// not keep the process from exiting). Call it before exiting.
pub fn shutdown() {
    export::shutdown();
    logs::flush(std::time::Duration::from_secs(2));
}
