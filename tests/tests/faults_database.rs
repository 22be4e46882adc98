//! Database, secret and sys-map failures: a wrong query fails its request
//! (dead-lettered, never retried as an outage), a lost connection is an
//! outage, `pass` cannot hang `check`, and a frozen PostgreSQL or a sys-map
//! that goes away mid-stream loses nothing.
//!
//! The fault tests (`sigstop-postgres`, `sysmap-outage`) stream 10,000 IDs
//! through a service process, break something in the middle, and print
//! `fault=<name> sent=N delivered=N lost=N duplicates=N dead_lettered=N`
//! through `slingshot_tests::fault_report`, as `faults.rs` does.
//!
//! The tests on real services need the `services` feature (scripts/test.sh
//! turns it on); without it only the embedded ones run, and the helpers they
//! share are allowed to go unused.

#![cfg_attr(not(feature = "services"), allow(dead_code, unused_imports))]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slingshot::broker::{Broker, Durability, HeaderValue, Message};
use slingshot::protocol::{dead_letter_queue, ATTEMPT_HEADER, ERROR_HEADER, ERROR_KIND_HEADER, OUTAGES_HEADER};
use slingshot::{AnyConnection, AnyError, ServiceDef};
use slingshot_tests::fault_report::{self, report, send_ids, spawn_stream_service, Figures};
use slingshot_tests::private::PrivatePostgres;
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::sysmap_server::SysMapServer;
use slingshot_tests::{
    drain, service_command, shared_amqp_url, test_broker, wait_for_count, Backend, Collector, Fixture,
};

const WAIT: Duration = Duration::from_secs(60);

// ---- a wrong query fails the request -------------------------------------

/// Requests 1 to 5 run a query that can never succeed; the others insert a
/// row. Request 4's error is raised by a trigger whose message reads like a
/// lost connection ("could not connect ..."): what classifies a failure is
/// its type, never its text. Request 5 sleeps past the statement timeout
/// the test sets (SQLite has no `pg_sleep`: a wrong query there too).
#[slingshot::microservice(name = "bad-query", sys_map = "file:unused.json", main = false)]
fn bad_query(request: u64, connection: &mut AnyConnection) -> Result<Vec<(u64, bool)>, AnyError> {
    use diesel::RunQueryDsl;
    let sql = match request {
        1 => "SELEC 1".to_string(),
        2 => "SELECT * FROM no_such_table".to_string(),
        3 => "INSERT INTO taken (id) VALUES (0)".to_string(),
        4 => "INSERT INTO refused (id) VALUES (4)".to_string(),
        5 => "SELECT pg_sleep(5)".to_string(),
        id => format!("INSERT INTO taken (id) VALUES ({id})"),
    };
    diesel::sql_query(sql).execute(connection)?;
    Ok(vec![(request, true)])
}

/// The tables `bad-query` needs, on `backend`'s database.
fn bad_query_tables(backend: Backend) -> Vec<&'static str> {
    let mut statements = vec![
        "CREATE TABLE taken (id BIGINT PRIMARY KEY)",
        "INSERT INTO taken (id) VALUES (0)",
        "CREATE TABLE refused (id BIGINT)",
    ];
    match backend {
        Backend::Embedded => statements.push(
            "CREATE TRIGGER refuse BEFORE INSERT ON refused \
             BEGIN SELECT RAISE(ABORT, 'could not connect to the ledger'); END",
        ),
        Backend::Real | Backend::Quorum => statements.extend([
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'could not connect to the ledger'; END $$",
            "CREATE TRIGGER refuse BEFORE INSERT ON refused FOR EACH ROW EXECUTE FUNCTION refuse()",
        ]),
    }
    statements
}

/// A header's text, whatever string type carries it.
fn text(message: &Message, name: &str) -> String {
    match message.headers.get(name) {
        Some(HeaderValue::Str(s)) => s.clone(),
        other => panic!("header {name} is {other:?}"),
    }
}

async fn a_wrong_query_is_dead_lettered_as_a_database_failure(backend: Backend) {
    let f = Fixture::new(backend, "bad-query");
    f.create_tables(&bad_query_tables(backend)).await;
    let settings = slingshot::Settings {
        db_statement_timeout: Duration::from_secs(1),
        ..f.settings()
    };
    let runtime = f
        .runtime_with(
            json!({"bad-query": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("ok")]}]}}),
            settings,
        )
        .await;
    let service = runtime.start(ServiceDef::find("bad-query").unwrap()).await.unwrap();
    let broker = runtime.broker().clone();
    let dlq = dead_letter_queue(&f.q("in"));
    runtime.send(&f.q("in"), 1..=5).await.unwrap();
    // Were any of them an outage, it would be retried for ever instead.
    wait_for_count(broker.as_ref(), &dlq, 5, WAIT).await;
    // The service keeps running: good requests after them go through.
    runtime.send(&f.q("in"), 10..20).await.unwrap();
    wait_for_count(broker.as_ref(), &f.q("ok"), 10, WAIT).await;

    let mut dead = drain(broker.as_ref(), &dlq).await;
    dead.sort_by_key(|d| d.message.body.clone());
    let expected = [
        (1, "syntax error"),
        (2, "no_such_table"),
        (3, "unique"),
        (4, "could not connect to the ledger"),
        (
            5,
            match backend {
                Backend::Embedded => "no such function: pg_sleep",
                Backend::Real | Backend::Quorum => "canceling statement due to statement timeout",
            },
        ),
    ];
    assert_eq!(dead.len(), expected.len());
    for (d, (id, error)) in dead.iter().zip(expected) {
        let m = &d.message;
        assert_eq!(std::str::from_utf8(&m.body).unwrap(), id.to_string());
        assert_eq!(text(m, ERROR_KIND_HEADER), "database", "request {id}");
        let message = text(m, ERROR_HEADER);
        assert!(
            message.to_lowercase().contains(error),
            "request {id}: {message:?} should name {error:?}"
        );
        assert_eq!(
            m.headers.get(ATTEMPT_HEADER),
            Some(&HeaderValue::Int(3)),
            "request {id}"
        );
        assert_eq!(
            m.headers.get(OUTAGES_HEADER),
            Some(&HeaderValue::Int(0)),
            "request {id} was taken for an outage"
        );
    }
    assert_eq!(service.stats.dead_lettered.load(Ordering::Relaxed), 5);
    runtime.shutdown();
}

mod embedded {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_query_is_dead_lettered_as_a_database_failure() {
        super::a_wrong_query_is_dead_lettered_as_a_database_failure(slingshot_tests::Backend::Embedded).await
    }
}

#[cfg(feature = "services")]
mod real {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_query_is_dead_lettered_as_a_database_failure() {
        super::a_wrong_query_is_dead_lettered_as_a_database_failure(slingshot_tests::Backend::Real).await
    }
}

// ---- what a lost connection looks like -----------------------------------

#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_an_outage_and_a_query_error_is_not() {
    use diesel::{Connection, PgConnection, RunQueryDsl};
    let f = Fixture::new(Backend::Real, "lost-connection");
    let url = f.database().await.url().to_string();
    tokio::task::spawn_blocking(move || {
        #[derive(diesel::QueryableByName)]
        struct Pid {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            pid: i32,
        }
        let mut victim = PgConnection::establish(&url).unwrap();
        let mut admin = PgConnection::establish(&url).unwrap();
        for sql in [
            "SELEC 1",
            "SELECT * FROM nowhere",
            "EXECUTE never_prepared",
            "SELECT 1/0",
        ] {
            let error = diesel::sql_query(sql).execute(&mut victim).unwrap_err();
            assert!(
                !slingshot::db::is_connection_failure(&error),
                "{sql}: {error:?} is not a lost connection"
            );
        }
        let pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result::<Pid>(&mut victim)
            .unwrap()
            .pid;
        diesel::sql_query(format!("SELECT pg_terminate_backend({pid})"))
            .execute(&mut admin)
            .unwrap();
        // The server said why it went ("terminating connection due to
        // administrator command"), then closed; and then there is nothing.
        for attempt in ["first", "second"] {
            let error = diesel::sql_query("SELECT 1").execute(&mut victim).unwrap_err();
            assert!(
                slingshot::db::is_connection_failure(&error),
                "{attempt} query on a terminated connection: {error:?}"
            );
        }
    })
    .await
    .unwrap();
}

// ---- `pass` cannot hang start-up or `check` --------------------------------

#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_does_not_hang_on_a_pass_that_never_answers() {
    let f = Fixture::new(Backend::Real, "pass-hangs");
    let bin = f.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let pass = bin.join("pass");
    // Never answers (as `pass` waiting for a GnuPG passphrase); `exec`, so
    // that killing it kills the sleep.
    std::fs::write(&pass, "#!/bin/sh\nexec sleep 120\n").unwrap();
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let services = slingshot_tests::Services::from_env();
    let rabbitmq = json!({"host": [services.amqp.host], "port": [services.amqp.port],
                          "username": [services.amqp.user], "pass": ["test/only-in-pass"]});
    let sysmap = f
        .serve_sysmap(json!({"relay": {"in": f.q("in"), "out": []}, "rabbitmq": rabbitmq}))
        .await;
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let secrets_dir = f.dir.path().join("no-secrets");
    let mut command = service_command(
        env!("CARGO_BIN_EXE_fault-service"),
        "relay",
        &sysmap,
        f.dir.path(),
        &[
            ("PATH", path),
            ("SLINGSHOT_SECRETS_DIR", secrets_dir.display().to_string()),
            ("SLINGSHOT_SECRET_TIMEOUT_SECS", "2".to_string()),
        ],
    );
    command.arg("check");
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(60), command.status())
        .await
        .expect("`check` hung on a `pass` that never answers")
        .unwrap();
    let took = started.elapsed();
    let log = std::fs::read_to_string(f.dir.path().join("relay.log")).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "check must fail:\n{log}");
    assert!(
        log.contains("`pass show` did not finish within 2 s"),
        "check must say `pass` timed out:\n{log}"
    );
    assert!(took < Duration::from_secs(30), "check took {took:?}:\n{log}");
}

// ---- fault streams ---------------------------------------------------------

const N: u64 = 10_000;
/// The services' prefetch window.
const PREFETCH: u64 = fault_report::STREAM_PREFETCH;
const BREAK_AFTER: usize = 2_500;
const FINISH: Duration = Duration::from_secs(300);

/// One fault stream at a time: they are heavy and share private instances.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A stream of `N` IDs through one service process, from `in` to `out`.
struct Stream<'a> {
    f: &'a Fixture,
    broker: Arc<dyn Broker>,
    collector: Collector,
    service: ServiceProcess,
}

impl<'a> Stream<'a> {
    /// Starts the service and the collector, sends the IDs (all at once, or
    /// `paced` per second: a live stream, whose queue stays short, so that
    /// a retry comes round again at once), and returns once `BREAK_AFTER`
    /// have arrived: the moment to break something.
    async fn start(f: &'a Fixture, binary: &str, name: &'static str, sysmap: &str, paced: Option<u64>) -> Stream<'a> {
        let broker = test_broker(&shared_amqp_url()).await;
        for q in ["in", "out"] {
            broker.declare(&f.q(q), Durability::Durable).await.unwrap();
        }
        let collector = Collector::start(broker.clone(), f.q("out"));
        let service = spawn_stream_service(binary, name, sysmap, f.dir.path(), &[]);
        match paced {
            None => send_ids(&*broker, &f.q("in"), 0..N).await,
            Some(per_second) => {
                let (broker, inbound) = (broker.clone(), f.q("in"));
                tokio::spawn(async move {
                    let tenth = (per_second / 10).max(1);
                    let mut tick = tokio::time::interval(Duration::from_millis(100));
                    for start in (0..N).step_by(tenth as usize) {
                        tick.tick().await;
                        send_ids(&*broker, &inbound, start..(start + tenth).min(N)).await;
                    }
                });
            }
        }
        collector.wait_for(BREAK_AFTER, FINISH).await;
        Stream {
            f,
            broker,
            collector,
            service,
        }
    }

    /// Asserts the stream is still going: the break happened mid-stream.
    fn assert_unfinished(&self) {
        assert!(
            self.collector.unique() < N as usize,
            "the stream finished before the fault ended; nothing was tested"
        );
    }

    /// Waits for every ID, checks the service is still running, prints the
    /// fault line, stops the service, and asserts nothing was lost or
    /// dead-lettered.
    async fn finish(mut self, fault: &str) -> String {
        // Every ID, but for those dead-lettered: they are not coming, and
        // the line below reports them.
        let dlq = dead_letter_queue(&self.f.q("in"));
        let waiting = Instant::now();
        while self.collector.unique() as u64 + self.broker.ready_count(&dlq).await.unwrap() < N {
            assert!(
                waiting.elapsed() < FINISH,
                "only {} of {N} IDs arrived within {FINISH:?}",
                self.collector.unique()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Late duplicates would arrive now.
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.service.assert_running();
        let dead = self.broker.ready_count(&dlq).await.unwrap();
        let expected: Vec<u64> = (0..N).collect();
        let outcome = report(fault, N, &expected, &self.collector.counts(), dead);
        let log = self.service.stop().await;
        fault_report::assert_nothing_lost(&outcome, PREFETCH);
        log
    }
}

/// Lines of `log` that mention every one of `needles`, counted.
fn count_lines(log: &str, needles: &[&str]) -> usize {
    log.lines().filter(|l| needles.iter().all(|n| l.contains(n))).count()
}

/// The distinct errors of the retries `log` records, without the parts
/// that differ between requests (the request and its timing).
fn retry_errors(log: &str) -> std::collections::BTreeSet<String> {
    log.lines()
        .filter(|l| l.contains("will retry"))
        .filter_map(|l| {
            let error = l.split_once("error=")?.1;
            let error = error.split(" delay=").next()?;
            Some(
                error
                    .chars()
                    .map(|c| if c.is_ascii_digit() { '#' } else { c })
                    .collect(),
            )
        })
        .collect()
}

#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_frozen_for_20s_mid_stream() {
    let _turn = TURN.lock().await;
    let _figures = Figures("sigstop-postgres");
    let pg = Arc::new(tokio::task::spawn_blocking(PrivatePostgres::start).await.unwrap());
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.execute("CREATE TABLE fault_records (id BIGINT PRIMARY KEY)"))
        .await
        .unwrap();
    let f = Fixture::new(Backend::Real, "sigstop-postgres");
    let private = json!({"host": ["127.0.0.1"], "port": [PrivatePostgres::PORT], "username": ["postgres"],
                         "database": ["postgres"], "pass": ["test/postgres"]});
    let sysmap = f
        .serve_sysmap(
            json!({"db": private, "records": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}}),
        )
        .await;
    let stream = Stream::start(&f, env!("CARGO_BIN_EXE_fault-service"), "records", &sysmap, None).await;
    let before = stream.collector.unique();
    {
        // Resumed when dropped, however this block ends.
        let frozen = pg.freeze();
        assert!(frozen.count() > 1, "the postmaster and its backends are frozen");
        tokio::time::sleep(Duration::from_secs(20)).await;
        let during = stream.collector.unique();
        println!(
            "sigstop-postgres: {} IDs arrived in the 20 s frozen ({before} before)",
            during - before
        );
    }
    stream.assert_unfinished();
    let log = stream.finish("sigstop-postgres").await;
    println!(
        "sigstop-postgres: the service retried {} requests as outages ({} could not get a database connection) \
         and {} as failures of the request",
        count_lines(&log, &["will retry", "transient=true"]),
        count_lines(&log, &["will retry", "transient=true", "cannot connect"]),
        count_lines(&log, &["will retry", "transient=false"]),
    );
    for error in retry_errors(&log) {
        println!("sigstop-postgres: retried after: {error}");
    }

    let p = pg.clone();
    let rows = tokio::task::spawn_blocking(move || p.count_rows("fault_records"))
        .await
        .unwrap();
    assert_eq!(rows, N as i64, "every request's row is in the database");
}

#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysmap_gone_for_10s_mid_stream() {
    let _turn = TURN.lock().await;
    let _figures = Figures("sysmap-outage");
    let f = Fixture::new(Backend::Real, "sysmap-outage");
    let bucket = f.bucket("out");
    let mut endpoints = json!({"hopper": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}});
    // One bucket behind every reference: `out`, and a `rare` one that one
    // ID in a hundred needs, so the stream keeps looking references up.
    endpoints["hopper/out"] = Value::String(bucket.clone());
    for r in 0..N / 100 {
        endpoints[format!("hopper/rare{r}")] = Value::String(bucket.clone());
    }
    let mut server = SysMapServer::start(f.sysmap_file(endpoints).await).await;
    // Paced, below what the service can do: with every ID queued at once, a
    // failed request's next attempt would wait behind thousands of others,
    // and the outage would end before any request could use up its
    // attempts (so a bug would go unnoticed).
    let stream = Stream::start(
        &f,
        env!("CARGO_BIN_EXE_lookup-service"),
        "hopper",
        &server.url(),
        Some(250),
    )
    .await;
    server.stop().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    stream.assert_unfinished();
    server.restart().await;
    let log = stream.finish("sysmap-outage").await;
    println!(
        "sysmap-outage: the service retried {} requests as outages and {} as failures of the request",
        count_lines(&log, &["will retry", "transient=true"]),
        count_lines(&log, &["will retry", "transient=false"]),
    );
    for error in retry_errors(&log) {
        println!("sysmap-outage: retried after: {error}");
    }
    assert!(
        log.contains("could not be resolved"),
        "no bucket lookup met the outage, so nothing was tested:\n{log}"
    );
}
