//! What slingshot tells about itself: spans (built and failed in one place), the W3C trace context they carry, their OTLP export, and logs.
//!
//! Public: setting up logs and spans, for binaries of their own
//! ([`init`], [`LogArgs`]); the generated `main` does it already.

pub(crate) mod context;
pub(crate) mod export;
pub(crate) mod logs;
pub(crate) mod spans;

pub use self::export::shutdown;
pub use self::logs::{init, LogArgs, LogFormat, Output};
