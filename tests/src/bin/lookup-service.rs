//! A service the sys-map fault test breaks: `lookup-service hopper [run|...]`.
//!
//! `hopper` writes each request's object through the bucket reference
//! `out`, but one request in a hundred (IDs ending in 50) through
//! `rare<request / 100>`: a stream of IDs keeps needing references not
//! looked up yet (each is looked up once, then cached), while most of it
//! flows.
//! `SLINGSHOT_TEST_DELAY_MS` makes each request take that long.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use slingshot::{AnyError, WriteFileFn};

/// The bucket reference of `request`.
fn reference(request: u64) -> String {
    match request % 100 {
        50 => format!("rare{}", request / 100),
        _ => "out".to_string(),
    }
}

#[slingshot::microservice(name = "hopper", sys_map = "file:unused.json", main = false)]
fn hopper(request: u64, write_file: &WriteFileFn) -> Result<Vec<(u64, bool)>, AnyError> {
    let delay = std::env::var("SLINGSHOT_TEST_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(delay));
    write!(write_file(&reference(request), request)?, "object {request}")?;
    Ok(vec![(request, true)])
}

fn main() -> ExitCode {
    slingshot_tests::run_named_service("lookup-service hopper [run|...]")
}
