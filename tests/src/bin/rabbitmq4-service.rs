//! Services of the RabbitMQ 4 tests (tests/tests/rabbitmq4.rs): `rabbitmq4-service NAME [run|check|...]`.
//!
//! `sleepy-once` holds its first request for `SLINGSHOT_TEST_SLEEP_ONCE_MS`
//! (past the broker's consumer timeout, in the test); every other request,
//! including that one delivered again, passes at once.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use slingshot::ServiceDef;

static SLEPT: AtomicBool = AtomicBool::new(false);

/// Passes every ID on; the first one after a long sleep.
#[slingshot::microservice(name = "sleepy-once", sys_map = "file:unused.json", main = false)]
fn sleepy_once(request: u64) -> Vec<(u64, bool)> {
    if !SLEPT.swap(true, Ordering::SeqCst) {
        let ms = std::env::var("SLINGSHOT_TEST_SLEEP_ONCE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        eprintln!("sleepy-once: holding request {request} for {ms} ms");
        std::thread::sleep(Duration::from_millis(ms));
    }
    vec![(request, true)]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().and_then(|name| ServiceDef::named(name)) {
        Some(def) => slingshot::main_with_args(def, args[1..].to_vec()),
        None => {
            eprintln!("usage: rabbitmq4-service sleepy-once [run|...]");
            ExitCode::from(2)
        }
    }
}
