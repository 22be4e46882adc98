//! Services the fault-injection tests break: `fault-service NAME [run|...]`.
//!
//! `SLINGSHOT_TEST_DELAY_MS` makes each request take that long, so a stream
//! of 10,000 IDs lasts long enough to break something in the middle of it.

use std::io::Write;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use diesel::PgConnection;
use slingshot::{AnyError, ServiceDef, WriteFileFn};

fn pause() {
    static DELAY: OnceLock<Duration> = OnceLock::new();
    let delay = *DELAY.get_or_init(|| {
        let ms = std::env::var("SLINGSHOT_TEST_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Duration::from_millis(ms)
    });
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
}

/// Passes every ID on.
#[slingshot::microservice(name = "relay", sys_map = "file:unused.json", main = false)]
fn relay(request: u64) -> Vec<(u64, bool)> {
    pause();
    vec![(request, true)]
}

/// The second stage of a two-stage pipeline.
#[slingshot::microservice(name = "relay2", sys_map = "file:unused.json", main = false)]
fn relay2(request: u64) -> Vec<(u64, bool)> {
    pause();
    vec![(request, true)]
}

/// Writes a small object per request: depends on S3.
#[slingshot::microservice(name = "objects", sys_map = "file:unused.json", main = false)]
fn objects(request: u64, write_file: &WriteFileFn) -> Result<Vec<(u64, bool)>, AnyError> {
    pause();
    write!(write_file("out", request)?, "object {request}")?;
    Ok(vec![(request, true)])
}

/// Records each request in PostgreSQL: depends on the database.
#[slingshot::microservice(name = "records", sys_map = "file:unused.json", main = false)]
fn records(request: u64, connection: &mut PgConnection) -> Result<Vec<(u64, bool)>, AnyError> {
    use diesel::RunQueryDsl;
    pause();
    diesel::sql_query("INSERT INTO fault_records (id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind::<diesel::sql_types::BigInt, _>(i64::try_from(request)?)
        .execute(connection)?;
    Ok(vec![(request, true)])
}

/// Records every call in PostgreSQL (`counted_calls`, one row per call),
/// then relays: how many times `process` ran for each ID.
#[slingshot::microservice(name = "counted", sys_map = "file:unused.json", main = false)]
fn counted(request: u64, connection: &mut PgConnection) -> Result<Vec<(u64, bool)>, AnyError> {
    use diesel::RunQueryDsl;
    pause();
    diesel::sql_query("INSERT INTO counted_calls (id) VALUES ($1)")
        .bind::<diesel::sql_types::BigInt, _>(i64::try_from(request)?)
        .execute(connection)?;
    Ok(vec![(request, true)])
}

/// Poison among good requests: panics on IDs ending in 013, fails on 017,
/// and returns a case with no route on 019 (per thousand).
#[slingshot::microservice(name = "poison", sys_map = "file:unused.json", main = false)]
fn poison(request: u64) -> Result<Vec<(u64, bool)>, AnyError> {
    pause();
    match request % 1000 {
        13 => panic!("poison {request}"),
        17 => Err(format!("cannot digest {request}").into()),
        19 => Ok(vec![(request, false)]),
        _ => Ok(vec![(request, true)]),
    }
}

/// Relays IDs below a million and fails on the rest: for tests of what a
/// retry or a dead letter must carry.
#[slingshot::microservice(name = "hostile", sys_map = "file:unused.json", main = false)]
fn hostile(request: u64) -> Result<Vec<(u64, bool)>, AnyError> {
    pause();
    if request >= 1_000_000 {
        return Err(format!("refused {request}").into());
    }
    Ok(vec![(request, true)])
}

/// Takes the whole process down on IDs ending in 500 (per thousand), as an
/// abort in native code or the OOM killer would; relays the rest.
#[slingshot::microservice(name = "crasher", sys_map = "file:unused.json", main = false)]
fn crasher(request: u64) -> Vec<(u64, bool)> {
    pause();
    if request % 1000 == 500 {
        std::process::abort();
    }
    vec![(request, true)]
}

/// Never returns on IDs ending in 300 (per thousand), as a `process` caught
/// in an endless loop or a wait without end; relays the rest.
#[slingshot::microservice(name = "stuck", sys_map = "file:unused.json", main = false)]
fn stuck(request: u64) -> Vec<(u64, bool)> {
    pause();
    if request % 1000 == 300 {
        // Sleeping rather than spinning, to spare the test machine's cores:
        // to the runtime either is a call that never returns.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    vec![(request, true)]
}

/// Holds its first request for `SLINGSHOT_TEST_SLEEP_ONCE_MS` (past the
/// broker's consumer timeout, in tests/tests/rabbitmq4.rs); every other
/// request, that one delivered again included, passes at once.
#[slingshot::microservice(name = "sleepy-once", sys_map = "file:unused.json", main = false)]
fn sleepy_once(request: u64) -> Vec<(u64, bool)> {
    static SLEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SLEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        let ms = std::env::var("SLINGSHOT_TEST_SLEEP_ONCE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        std::thread::sleep(Duration::from_millis(ms));
    }
    vec![(request, true)]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().and_then(|name| ServiceDef::named(name)) {
        Some(def) => slingshot::main_with_args(def, args[1..].to_vec()),
        None => {
            eprintln!(
                "usage: fault-service (relay|relay2|objects|records|poison|hostile|crasher|stuck|counted|sleepy-once) [run|...]"
            );
            ExitCode::from(2)
        }
    }
}
