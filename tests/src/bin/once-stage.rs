//! Once-mode stages the once-mode fault tests run (tests/tests/once_faults.rs):
//! `once-stage NAME [run|...]`.
//!
//! `once-a`, `once-b` and `once-c` are the three stages of a pipeline. Each
//! does a write that is **not** idempotent, `UPDATE counters_<stage> SET n =
//! n + 1 WHERE id = $1` (the test inserts a row with `n = 0` per ID before
//! the services start), writes one object per request (`out`, holding
//! `"<stage> <id>"`) and passes the ID on. In once mode the update, the
//! inbox record and the outbox rows commit together, so every counter ends
//! at exactly 1 whatever crashes in between.
//!
//! `once-overlap` records every run of `process` in `overlap_runs` (key,
//! request, `started`, `finished`) through a connection of its own in
//! autocommit mode (`SLINGSHOT_TEST_RUNS_URL`), so a run killed half-way
//! keeps its start. The times are this host's clock, in microseconds, read
//! where `process` runs (every instance is on the same host): when `process`
//! starts, which is after its stage took the key's lock, and when it is
//! done, which is before its stage commits and lets the lock go. The
//! server's `clock_timestamp()` would read the end when the recording
//! statement runs, which for a process killed just after sending it can be
//! after the database released the dead process's lock; it sleeps
//! `SLINGSHOT_TEST_RUN_MS` (default 5) between the two, and increments
//! `overlap_counters` inside the stage's transaction. The serialization key
//! of request `r` is `k<r / 20>` (the test sets `x-slingshot-key` so).
//!
//! `SLINGSHOT_TEST_DELAY_MS` makes each request of every stage take that much
//! longer, as in `fault-service`.

use std::cell::RefCell;
use std::io::Write;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use diesel::sql_types::BigInt;
use diesel::{Connection, PgConnection, RunQueryDsl};
use slingshot::{AnyError, WriteFileFn};

/// How many consecutive request IDs share a serialization key in `once-overlap`.
const KEY_SPAN: u64 = 20;

fn millis(var: &str, default: u64) -> Duration {
    Duration::from_millis(std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

fn pause() {
    static DELAY: OnceLock<Duration> = OnceLock::new();
    let delay = *DELAY.get_or_init(|| millis("SLINGSHOT_TEST_DELAY_MS", 0));
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
}

/// One stage's work: the counter of `request` in `table` goes up by one (an
/// error if there is no such row), and object `out/request` says
/// `"<stage> <request>"`.
fn stage(
    stage: &str,
    table: &str,
    request: u64,
    write_file: &WriteFileFn,
    connection: &mut PgConnection,
) -> Result<Vec<(u64, bool)>, AnyError> {
    pause();
    let updated = diesel::sql_query(format!("UPDATE {table} SET n = n + 1 WHERE id = $1"))
        .bind::<BigInt, _>(i64::try_from(request)?)
        .execute(connection)?;
    if updated != 1 {
        return Err(format!("{table} has no row for {request}").into());
    }
    write!(write_file("out", request)?, "{stage} {request}")?;
    Ok(vec![(request, true)])
}

/// The first stage.
#[slingshot::microservice(name = "once-a", sys_map = "file:unused.json", main = false, once = true)]
fn once_a(request: u64, write_file: &WriteFileFn, conn: &mut PgConnection) -> Result<Vec<(u64, bool)>, AnyError> {
    stage("once-a", "counters_a", request, write_file, conn)
}

/// The second stage: the one the fault tests kill.
#[slingshot::microservice(name = "once-b", sys_map = "file:unused.json", main = false, once = true)]
fn once_b(request: u64, write_file: &WriteFileFn, conn: &mut PgConnection) -> Result<Vec<(u64, bool)>, AnyError> {
    stage("once-b", "counters_b", request, write_file, conn)
}

/// The third stage, whose outputs go to the sink.
#[slingshot::microservice(name = "once-c", sys_map = "file:unused.json", main = false, once = true)]
fn once_c(request: u64, write_file: &WriteFileFn, conn: &mut PgConnection) -> Result<Vec<(u64, bool)>, AnyError> {
    stage("once-c", "counters_c", request, write_file, conn)
}

#[derive(diesel::QueryableByName)]
struct Run {
    #[diesel(sql_type = BigInt)]
    run: i64,
}

thread_local! {
    /// This thread's autocommit connection for `overlap_runs`: outside the
    /// stage's transaction, so what it records stays if the process dies.
    static RUNS: RefCell<Option<PgConnection>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's `overlap_runs` connection, opening it first if need be.
fn on_runs<T>(f: impl FnOnce(&mut PgConnection) -> Result<T, AnyError>) -> Result<T, AnyError> {
    RUNS.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            let url = std::env::var("SLINGSHOT_TEST_RUNS_URL").map_err(|_| "SLINGSHOT_TEST_RUNS_URL is not set")?;
            *slot = Some(PgConnection::establish(&url)?);
        }
        let connection = slot.as_mut().expect("opened above");
        let done = f(connection);
        if done.is_err() {
            // Opened again by the next call: it may have broken.
            *slot = None;
        }
        done
    })
}

/// Records its run (start and finish) beside the stage's transaction and
/// counts the request inside it.
#[slingshot::microservice(name = "once-overlap", sys_map = "file:unused.json", main = false, once = true)]
fn once_overlap(request: u64, conn: &mut PgConnection) -> Result<Vec<(u64, bool)>, AnyError> {
    static RUN: OnceLock<Duration> = OnceLock::new();
    let key = i64::try_from(request / KEY_SPAN)?;
    let id = i64::try_from(request)?;
    let started = now_us();
    let run = on_runs(|runs| {
        Ok(
            diesel::sql_query("INSERT INTO overlap_runs (key, request, started) VALUES ($1, $2, $3) RETURNING run")
                .bind::<BigInt, _>(key)
                .bind::<BigInt, _>(id)
                .bind::<BigInt, _>(started)
                .get_result::<Run>(runs)?
                .run,
        )
    })?;
    std::thread::sleep(*RUN.get_or_init(|| millis("SLINGSHOT_TEST_RUN_MS", 5)));
    let updated = diesel::sql_query("UPDATE overlap_counters SET n = n + 1 WHERE id = $1")
        .bind::<BigInt, _>(id)
        .execute(conn)?;
    if updated != 1 {
        return Err(format!("overlap_counters has no row for {request}").into());
    }
    let finished = now_us();
    on_runs(|runs| {
        diesel::sql_query("UPDATE overlap_runs SET finished = $1 WHERE run = $2")
            .bind::<BigInt, _>(finished)
            .bind::<BigInt, _>(run)
            .execute(runs)?;
        Ok(())
    })?;
    Ok(vec![(request, true)])
}

/// This host's clock in microseconds since the Unix epoch.
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn main() -> ExitCode {
    slingshot_tests::run_named_service("once-stage (once-a|once-b|once-c|once-overlap) [run|...]")
}
