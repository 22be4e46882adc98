//! Delivery semantics through the seams, run against every backend: routing,
//! staging, acknowledgement and redelivery, retries, dead letters,
//! concurrency, the database, and local invocation.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use slingshot::broker::{Durability, HeaderValue, Message, QueueState, QueueType};
use slingshot::protocol::{dead_letter_queue, ATTEMPT_HEADER, ERROR_HEADER, ERROR_KIND_HEADER, SERVICE_HEADER};
use slingshot::settings::QueueMode;
use slingshot::{AnyConnection, AnyError, ReadFileFn, RequestContext, ServiceDef, WriteFileFn};
use slingshot_tests::{drain, drain_ids, read_object, wait_for_count, Backend, Fixture};

const WAIT: Duration = Duration::from_secs(20);

// ---- services under test -------------------------------------------------

#[slingshot::microservice(name = "kind-bool", sys_map = "file:unused.json", main = false)]
fn kind_bool(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true), (request + 1000, false)]
}

#[slingshot::microservice(name = "kind-string", sys_map = "file:unused.json", main = false)]
fn kind_string(request: u64) -> Vec<(u64, &'static str)> {
    vec![(request, "true")]
}

#[slingshot::microservice(name = "kind-int", sys_map = "file:unused.json", main = false)]
fn kind_int(request: u64) -> Option<(u64, i32)> {
    Some((request, 1))
}

/// Copies `in` to `out`; fails after writing when the input says "fail",
/// panics after writing when it says "panic".
#[slingshot::microservice(name = "copier", sys_map = "file:unused.json", main = false)]
fn copier(request: u64, read_file: &ReadFileFn, write_file: &WriteFileFn) -> Result<Vec<(u64, bool)>, AnyError> {
    let mut text = String::new();
    read_file("in", request)?.read_to_string(&mut text)?;
    write_file("out", request)?.write_all(text.to_uppercase().as_bytes())?;
    match text.as_str() {
        "fail" => Err("asked to fail".into()),
        "panic" => panic!("asked to panic"),
        _ => Ok(vec![(request, true)]),
    }
}

/// Fails on the first attempt of even IDs, succeeds on the retry.
#[slingshot::microservice(name = "flaky", sys_map = "file:unused.json", main = false)]
fn flaky(request: u64, context: &RequestContext) -> Result<Vec<(u64, bool)>, AnyError> {
    if request.is_multiple_of(2) && context.attempt == 1 {
        return Err(format!("transient failure of {request}").into());
    }
    Ok(vec![(request, context.attempt > 1)])
}

/// Always fails.
#[slingshot::microservice(name = "doomed", sys_map = "file:unused.json", main = false)]
fn doomed(request: u64) -> Result<Vec<(u64, bool)>, std::io::Error> {
    Err(std::io::Error::other(format!("cannot handle {request}")))
}

/// Request 0 takes two seconds; the rest are instant.
#[slingshot::microservice(name = "sleepy", sys_map = "file:unused.json", main = false)]
async fn sleepy(request: u64) -> Vec<(u64, bool)> {
    if request == 0 {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    vec![(request, true)]
}

/// Calls per request of `outage-sim`, across the whole test binary.
static CALLS: std::sync::Mutex<BTreeMap<u64, u32>> = std::sync::Mutex::new(BTreeMap::new());

/// Behaves as if S3 were down for the first two calls of every request.
#[slingshot::microservice(name = "outage-sim", sys_map = "file:unused.json", main = false)]
fn outage_sim(request: u64) -> Result<Vec<(u64, bool)>, AnyError> {
    let calls = {
        let mut calls = CALLS.lock().unwrap();
        let n = calls.entry(request).or_default();
        *n += 1;
        *n
    };
    if calls <= 2 {
        return Err(slingshot::ObjectError::Backend {
            op: "read",
            bucket: "b".into(),
            key: request.to_string(),
            message: "connection refused".into(),
        }
        .into());
    }
    Ok(vec![(request, true)])
}

diesel::table! {
    seen (id) {
        id -> BigInt,
        attempt -> Integer,
    }
}

/// The `seen` table, created by the test before `recorder` starts: were
/// concurrent requests to create it, two could collide on a fresh database
/// and one would be retried.
const CREATE_SEEN: &str = "CREATE TABLE seen (id BIGINT PRIMARY KEY, attempt INTEGER NOT NULL)";

/// Records each request in the database (in the table [`CREATE_SEEN`] makes).
#[slingshot::microservice(name = "recorder", sys_map = "file:unused.json", main = false)]
fn recorder(
    request: u64,
    context: &RequestContext,
    connection: &mut AnyConnection,
) -> Result<Vec<(u64, bool)>, AnyError> {
    use diesel::prelude::*;
    let id = i64::try_from(request)?;
    diesel::delete(seen::table.find(id)).execute(connection)?;
    diesel::insert_into(seen::table)
        .values((seen::id.eq(id), seen::attempt.eq(context.attempt as i32)))
        .execute(connection)?;
    Ok(vec![(request, true)])
}

/// The `counters` table the once-mode services count their calls in, and
/// its rows for `ids`, all at 0.
fn counters(ids: std::ops::RangeInclusive<u64>) -> Vec<String> {
    let mut statements = vec!["CREATE TABLE counters (id BIGINT PRIMARY KEY, n INTEGER NOT NULL)".to_string()];
    statements.extend(ids.map(|id| format!("INSERT INTO counters (id, n) VALUES ({id}, 0)")));
    statements
}

/// Once mode: a write that is not idempotent (`n = n + 1`), an object and
/// an output per request. Request 13 fails once, after its write: the
/// retry must find that write rolled back.
#[slingshot::microservice(name = "once-counter", sys_map = "file:unused.json", main = false, once = true)]
fn once_counter(
    request: u64,
    context: &RequestContext,
    write_file: &WriteFileFn,
    connection: &mut AnyConnection,
) -> Result<Vec<(u64, bool)>, AnyError> {
    use diesel::RunQueryDsl;
    diesel::sql_query(format!("UPDATE counters SET n = n + 1 WHERE id = {request}")).execute(connection)?;
    write!(write_file("out", request)?, "counted {request}")?;
    if request == 13 && context.attempt == 1 {
        return Err("fails once, after its write".into());
    }
    Ok(vec![(request, true)])
}

/// When each call of `once-slow` ran, by request ID, across the test binary.
static RUNS: std::sync::Mutex<BTreeMap<u64, (Instant, Instant)>> = std::sync::Mutex::new(BTreeMap::new());

/// Once mode: takes 30 ms and records when it ran.
#[slingshot::microservice(name = "once-slow", sys_map = "file:unused.json", main = false, once = true)]
fn once_slow(request: u64, connection: &mut AnyConnection) -> Result<Vec<(u64, bool)>, AnyError> {
    use diesel::RunQueryDsl;
    let started = Instant::now();
    diesel::sql_query(format!("UPDATE counters SET n = n + 1 WHERE id = {request}")).execute(connection)?;
    std::thread::sleep(Duration::from_millis(30));
    RUNS.lock().unwrap().insert(request, (started, Instant::now()));
    Ok(vec![(request, true)])
}

/// Reads `SELECT <column> ...` rows of one BIGINT column from the runtime's database.
async fn select_numbers(runtime: &slingshot::Runtime, sql: String) -> Vec<i64> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        v: i64,
    }
    let mut connection = runtime.connect_database().await.unwrap();
    tokio::task::spawn_blocking(move || diesel::sql_query(&sql).load::<Row>(&mut connection))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|r| r.v)
        .collect()
}

// ---- the suite, once per backend ----------------------------------------

slingshot_tests::on_every_backend!(
    cases_match_by_kind_and_value_and_fan_out,
    staged_files_are_uploaded_only_after_success,
    unacked_messages_are_redelivered,
    prefetch_bounds_unacked_deliveries,
    failures_are_retried_with_the_attempt_counted,
    exhausted_requests_are_dead_lettered_with_reasons,
    malformed_bodies_are_dead_lettered_at_once,
    a_slow_request_does_not_stall_the_others,
    database_writes_are_visible,
    invoke_runs_one_request_without_publishing,
    unreachable_routes_are_reported,
    outages_are_retried_without_using_up_attempts,
    dead_letters_can_be_listed_and_replayed,
    requests_in_flight_at_the_shutdown_deadline_return_to_the_queue,
    existing_queues_are_used_as_they_are,
    compatible_mode_declares_queues_transient,
    once_mode_does_each_message_once,
    once_mode_relays_what_a_stage_left_in_the_outbox,
    once_mode_runs_one_key_at_a_time,
    once_mode_refuses_a_service_without_a_database,
);

/// `SLINGSHOT_ONCE=true` on a service whose `process` takes no connection
/// stops its start with why, rather than running it at least once.
async fn once_mode_refuses_a_service_without_a_database(backend: Backend) {
    let f = Fixture::new(backend, "once-no-db");
    let mut settings = f.settings();
    settings.once = Some(true);
    let runtime = f
        .runtime_with(json!({"kind-bool": wiring(&f, "in", json!([]))}), settings)
        .await;
    let error = runtime
        .start(ServiceDef::find("kind-bool").unwrap())
        .await
        .expect_err("started in once mode without a database");
    let text = error.to_string();
    assert!(
        text.contains("kind-bool runs in once mode") && text.contains("takes no database connection"),
        "{text}"
    );
}

/// Every message is published twice with one identity (a `message-id`, or
/// none and the same content): each is done once, its write counted once,
/// its object written, and its output published once with an ID of its own.
async fn once_mode_does_each_message_once(backend: Backend) {
    let f = Fixture::new(backend, "once");
    let statements = counters(1..=45);
    f.create_tables(&statements.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let output = f.bucket("out");
    let runtime = f
        .runtime(json!({
            "once-counter": wiring(&f, "in", json!([{"case": true, "queues": [f.q("done")]}])),
            "once-counter/out": output,
        }))
        .await;
    let service = runtime.start(ServiceDef::find("once-counter").unwrap()).await.unwrap();
    let broker = runtime.broker().clone();
    for id in 1..=45u64 {
        let mut message = Message::id(id);
        if id <= 40 {
            message.properties.message_id = Some(format!("m-{id}"));
        }
        broker.publish(&f.q("in"), message.clone()).await.unwrap();
        broker.publish(&f.q("in"), message).await.unwrap();
    }
    runtime.run_until_idle(&[&service]).await.unwrap();

    let twice = select_numbers(&runtime, "SELECT id AS v FROM counters WHERE n <> 1 ORDER BY id".into()).await;
    assert_eq!(twice, Vec::<i64>::new(), "counters not exactly 1");
    let done = drain(broker.as_ref(), &f.q("done")).await;
    let mut ids: Vec<u64> = done
        .iter()
        .map(|d| std::str::from_utf8(&d.message.body).unwrap().parse().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=45).collect::<Vec<_>>());
    let message_ids: std::collections::HashSet<_> = done
        .iter()
        .map(|d| d.message.properties.message_id.clone().unwrap())
        .collect();
    assert_eq!(message_ids.len(), 45);
    assert!(message_ids.iter().all(|m| m.starts_with("o-")), "{message_ids:?}");
    for id in [1, 13, 45] {
        let object = read_object(runtime.store(), &output, id).await;
        assert_eq!(object, Some(format!("counted {id}").into_bytes()));
    }
    assert_eq!(service.stats.duplicates.load(Ordering::Relaxed), 45);
    // Published rows are deleted in batches, the last when the service stops.
    let mut service = service;
    service.finished().await.unwrap();
    // Both copies of request 13 failed their first attempt (neither had
    // committed), and of their two retries one was done, one a duplicate.
    assert_eq!(service.stats.retried.load(Ordering::Relaxed), 2);
    let tables = slingshot::db::once::Tables::of("once-counter");
    let count = |table: &str| format!("SELECT count(*) AS v FROM {table}");
    assert_eq!(select_numbers(&runtime, count(&tables.inbox)).await, [45]);
    assert_eq!(select_numbers(&runtime, count(&tables.outbox)).await, [0]);
}

/// Rows a stage committed but did not publish (its process died) are
/// published by the relay, in order, with their own message IDs, and leave
/// the outbox.
async fn once_mode_relays_what_a_stage_left_in_the_outbox(backend: Backend) {
    let f = Fixture::new(backend, "relay");
    let statements = counters(1..=1);
    f.create_tables(&statements.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let mut settings = f.settings();
    settings.once_relay_grace = Duration::ZERO;
    let runtime = f
        .runtime_with(
            json!({
                "once-counter": wiring(&f, "in", json!([{"case": true, "queues": [f.q("done")]}])),
                "once-counter/out": f.bucket("out"),
            }),
            settings,
        )
        .await;
    let service = runtime.start(ServiceDef::find("once-counter").unwrap()).await.unwrap();
    let outbox = slingshot::db::once::Tables::of("once-counter").outbox;
    let left: Vec<String> = (1..=3)
        .map(|n| {
            format!(
                "INSERT INTO {outbox} (inbound, message_id, queue, request, created_ms) \
                 VALUES ('m-dead', 'o-left-{n}', '{}', {}, 1)",
                f.q("done"),
                100 + n
            )
        })
        .collect();
    f.create_tables(&left.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let broker = runtime.broker().clone();
    wait_for_count(broker.as_ref(), &f.q("done"), 3, WAIT).await;
    let done = drain(broker.as_ref(), &f.q("done")).await;
    let got: Vec<_> = done
        .iter()
        .map(|d| {
            (
                d.message.properties.message_id.clone().unwrap(),
                std::str::from_utf8(&d.message.body).unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<_> = (1..=3)
        .map(|n| (format!("o-left-{n}"), (100 + n).to_string()))
        .collect();
    assert_eq!(got, want, "in outbox order");
    let started = Instant::now();
    while select_numbers(&runtime, format!("SELECT count(*) AS v FROM {outbox}")).await != [0] {
        assert!(started.elapsed() < WAIT, "the relayed rows stay in the outbox");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(service.stats.relayed.load(Ordering::Relaxed), 3);
    runtime.shutdown();
}

/// Deliveries with one serialization key (`x-slingshot-key`) never run
/// `process` at the same time, though the service runs four at once.
async fn once_mode_runs_one_key_at_a_time(backend: Backend) {
    let f = Fixture::new(backend, "keys");
    // Request IDs of their own per backend: RUNS is shared by the binary.
    let base = 1_000_000 * (backend as u64 + 1);
    let ids = base + 1..=base + 40;
    let statements = counters(ids.clone());
    f.create_tables(&statements.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let runtime = f.runtime(json!({"once-slow": wiring(&f, "in", json!([]))})).await;
    let service = runtime.start(ServiceDef::find("once-slow").unwrap()).await.unwrap();
    let key = |id: u64| format!("k{}", id % 4);
    for id in ids.clone() {
        let message = Message::id(id).with_header(slingshot::protocol::KEY_HEADER, HeaderValue::Str(key(id)));
        runtime.broker().publish(&f.q("in"), message).await.unwrap();
    }
    runtime.run_until_idle(&[&service]).await.unwrap();
    let runs: Vec<(u64, (Instant, Instant))> = {
        let all = RUNS.lock().unwrap();
        ids.clone().map(|id| (id, all[&id])).collect()
    };
    let overlap = |a: &(Instant, Instant), b: &(Instant, Instant)| a.0 < b.1 && b.0 < a.1;
    let mut same_key = 0;
    let mut other_keys = 0;
    for (i, (a, ra)) in runs.iter().enumerate() {
        for (b, rb) in &runs[i + 1..] {
            if overlap(ra, rb) {
                if key(*a) == key(*b) {
                    same_key += 1;
                } else {
                    other_keys += 1;
                }
            }
        }
    }
    assert_eq!(same_key, 0, "runs of one key overlapped");
    // SQLite takes one writer at a time; PostgreSQL locks only the key.
    if backend != Backend::Embedded {
        assert!(
            other_keys > 0,
            "runs of different keys never overlapped: not concurrent at all"
        );
    }
}

/// A queue is declared as asked; one that exists otherwise is used as it
/// is, and `inspect` tells the difference without creating anything.
async fn existing_queues_are_used_as_they_are(backend: Backend) {
    let f = Fixture::new(backend, "declare");
    // Durabilities are a classic queue's: a quorum queue is always durable.
    let classic = slingshot::Settings {
        queue_type: QueueType::Classic,
        ..f.settings()
    };
    let runtime = f.runtime_with(json!({}), classic).await;
    let broker = runtime.broker().clone();
    let queue = f.q("shared");
    for _ in 0..2 {
        let state = broker.inspect(&queue, Durability::Durable).await.unwrap();
        assert_eq!(state, QueueState::Missing, "inspecting creates nothing");
    }
    broker.declare(&queue, Durability::Transient).await.unwrap();
    let matches = broker.inspect(&queue, Durability::Transient).await.unwrap();
    assert_eq!(matches, QueueState::Matches);
    match broker.inspect(&queue, Durability::Durable).await.unwrap() {
        QueueState::Differs(why) => assert!(why.contains("inequivalent arg 'durable'"), "{why}"),
        other => panic!("a transient queue inspected as durable: {other:?}"),
    }
    // Declared durable now, it stays transient and keeps working.
    broker.declare(&queue, Durability::Durable).await.unwrap();
    let still = broker.inspect(&queue, Durability::Transient).await.unwrap();
    assert_eq!(still, QueueState::Matches);
    broker.publish(&queue, Message::id(5)).await.unwrap();
    assert_eq!(drain_ids(&*broker, &queue).await, [5]);
}

/// In compatible mode a service declares its inbound and outbound queues
/// transient and its dead-letter queue durable, and works as in durable mode.
async fn compatible_mode_declares_queues_transient(backend: Backend) {
    let f = Fixture::new(backend, "compatible");
    let settings = slingshot::Settings {
        queue_mode: QueueMode::Compatible,
        // Compatible mode declares classic queues, as the original does.
        queue_type: QueueType::Classic,
        ..f.settings()
    };
    let endpoints = json!({"kind-bool": wiring(&f, "in", json!([{"case": true, "queues": [f.q("out")]}]))});
    let runtime = f.runtime_with(endpoints, settings).await;
    let service = runtime.start(ServiceDef::find("kind-bool").unwrap()).await.unwrap();
    let broker = runtime.broker().clone();
    for (queue, durability) in [
        (f.q("in"), Durability::Transient),
        (f.q("out"), Durability::Transient),
        (dead_letter_queue(&f.q("in")), Durability::Durable),
    ] {
        let state = broker.inspect(&queue, durability).await.unwrap();
        assert_eq!(state, QueueState::Matches, "{queue} is {durability}");
    }
    runtime.send(&f.q("in"), [1, 2, 3]).await.unwrap();
    runtime.run_until_idle(&[&service]).await.unwrap();
    let mut ids = drain_ids(&*broker, &f.q("out")).await;
    ids.sort();
    assert_eq!(ids, [1, 2, 3]);
}

fn wiring(f: &Fixture, inbound: &str, out: serde_json::Value) -> serde_json::Value {
    json!({"in": f.q(inbound), "out": out})
}

async fn cases_match_by_kind_and_value_and_fan_out(backend: Backend) {
    let f = Fixture::new(backend, "kinds");
    let out = json!([
        {"case": true, "queues": [f.q("bool-a"), f.q("bool-b")]},
        {"case": "true", "queues": [f.q("string")]},
        {"case": 1, "queues": [f.q("int")]},
    ]);
    let runtime = f
        .runtime(json!({
            "kind-bool": wiring(&f, "in-bool", out.clone()),
            "kind-string": wiring(&f, "in-string", out.clone()),
            "kind-int": wiring(&f, "in-int", out),
        }))
        .await;
    let mut services = Vec::new();
    for name in ["kind-bool", "kind-string", "kind-int"] {
        services.push(runtime.start(ServiceDef::find(name).unwrap()).await.unwrap());
    }
    runtime.send(&f.q("in-bool"), [1, 2]).await.unwrap();
    runtime.send(&f.q("in-string"), [3]).await.unwrap();
    runtime.send(&f.q("in-int"), [4]).await.unwrap();
    let broker = runtime.broker().as_ref();
    for queue in ["bool-a", "bool-b"] {
        wait_for_count(broker, &f.q(queue), 2, WAIT).await;
    }
    wait_for_count(broker, &f.q("string"), 1, WAIT).await;
    wait_for_count(broker, &f.q("int"), 1, WAIT).await;
    runtime
        .run_until_idle(&services.iter().collect::<Vec<_>>())
        .await
        .unwrap();

    let mut fanned = drain_ids(broker, &f.q("bool-a")).await;
    fanned.sort();
    assert_eq!(fanned, [1, 2]);
    assert_eq!(drain_ids(broker, &f.q("string")).await, [3], "\"true\" is not true");
    assert_eq!(drain_ids(broker, &f.q("int")).await, [4], "1 is not true");
    // `false` has no route: counted, not sent anywhere, not an error.
    let bool_stats = &services[0].stats;
    assert_eq!(bool_stats.unrouted.load(Ordering::Relaxed), 2);
    assert_eq!(bool_stats.processed.load(Ordering::Relaxed), 2);
    assert_eq!(bool_stats.dead_lettered.load(Ordering::Relaxed), 0);
    assert_eq!(bool_stats.routes().get(&("false".into(), String::new())), Some(&2));
}

async fn staged_files_are_uploaded_only_after_success(backend: Backend) {
    let f = Fixture::new(backend, "staging");
    let (input, output) = (f.bucket("in"), f.bucket("out"));
    let mut settings = f.settings();
    settings.max_attempts = 1;
    let runtime = f
        .runtime_with(
            json!({
                "copier": wiring(&f, "in", json!([{"case": true, "queues": [f.q("done")]}])),
                "copier/in": input,
                "copier/out": output,
            }),
            settings,
        )
        .await;
    let store = runtime.store().clone();
    for (id, text) in [(1, "hello"), (2, "fail"), (3, "panic"), (4, "world")] {
        store.put_bytes(&input, &id.to_string(), text.into()).await.unwrap();
    }
    let service = runtime.start(ServiceDef::find("copier").unwrap()).await.unwrap();
    runtime.send(&f.q("in"), [1, 2, 3, 4]).await.unwrap();
    runtime.run_until_idle(&[&service]).await.unwrap();

    assert_eq!(read_object(&store, &output, 1).await.as_deref(), Some(&b"HELLO"[..]));
    assert_eq!(read_object(&store, &output, 4).await.as_deref(), Some(&b"WORLD"[..]));
    assert_eq!(
        read_object(&store, &output, 2).await,
        None,
        "an error must upload nothing"
    );
    assert_eq!(
        read_object(&store, &output, 3).await,
        None,
        "a panic must upload nothing"
    );
    let mut done = drain_ids(runtime.broker().as_ref(), &f.q("done")).await;
    done.sort();
    assert_eq!(done, [1, 4]);
    let dead = drain(runtime.broker().as_ref(), &dead_letter_queue(&f.q("in"))).await;
    let kinds: Vec<_> = dead.iter().map(|d| header(&d.message, ERROR_KIND_HEADER)).collect();
    assert_eq!(kinds.len(), 2);
    assert!(kinds.contains(&"process-error".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"panic".to_string()), "{kinds:?}");
    // Every request's staged files are gone, whatever happened to it.
    let leftovers: Vec<_> = std::fs::read_dir(f.staging_dir())
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "staged files left behind: {leftovers:?}");
    assert_eq!(service.stats.objects_written.load(Ordering::Relaxed), 2);
}

async fn unacked_messages_are_redelivered(backend: Backend) {
    let f = Fixture::new(backend, "redeliver");
    let runtime = f.runtime(json!({})).await;
    let broker = runtime.broker().clone();
    let queue = f.q("work");
    broker.declare(&queue, Durability::Durable).await.unwrap();
    for id in [1, 2, 3] {
        broker.publish(&queue, Message::id(id)).await.unwrap();
    }
    let mut consumer = broker.consume(&queue, 2).await.unwrap();
    let first = consumer.next().await.unwrap().unwrap();
    let second = consumer.next().await.unwrap().unwrap();
    assert_eq!((&first.message.body[..], first.redelivered), (&b"1"[..], false));
    first.acker.ack().await.unwrap();
    // `second` is neither acked nor rejected when its consumer goes away.
    std::mem::forget(second.acker);
    drop(consumer);

    let mut consumer = broker.consume(&queue, 2).await.unwrap();
    let mut back = Vec::new();
    for _ in 0..2 {
        let delivery = tokio::time::timeout(WAIT, consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        back.push(delivery);
    }
    let (second_back, first_back) = (back.pop().unwrap(), back.pop().unwrap());
    // "3" may or may not have been pushed into the first consumer's freed
    // prefetch slot before it closed (RabbitMQ does, the in-process broker
    // does not), so only its arrival is certain, not its flag; and a quorum
    // queue may return it ahead of "2".
    let (again, third) = match &first_back.message.body[..] {
        b"3" => (second_back, first_back),
        _ => (first_back, second_back),
    };
    assert_eq!(again.message.body, &b"2"[..]);
    assert!(again.redelivered, "an unacked message comes back marked redelivered");
    assert_eq!(third.message.body, &b"3"[..]);
    again.acker.ack().await.unwrap();
    third.acker.ack().await.unwrap();
    drop(consumer);
    assert_eq!(
        broker.ready_count(&queue).await.unwrap(),
        0,
        "the acked \"1\" never comes back"
    );
}

async fn prefetch_bounds_unacked_deliveries(backend: Backend) {
    let f = Fixture::new(backend, "prefetch");
    let runtime = f.runtime(json!({})).await;
    let broker = runtime.broker().clone();
    let queue = f.q("work");
    broker.declare(&queue, Durability::Durable).await.unwrap();
    for id in 0..5 {
        broker.publish(&queue, Message::id(id)).await.unwrap();
    }
    let mut consumer = broker.consume(&queue, 2).await.unwrap();
    let a = consumer.next().await.unwrap().unwrap();
    let _b = consumer.next().await.unwrap().unwrap();
    let blocked = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(
        blocked.is_err(),
        "a third delivery arrived with two unacked and prefetch 2"
    );
    a.acker.ack().await.unwrap();
    let c = tokio::time::timeout(WAIT, consumer.next()).await;
    assert!(matches!(c, Ok(Some(Ok(_)))), "acking one must let the next through");
}

async fn failures_are_retried_with_the_attempt_counted(backend: Backend) {
    let f = Fixture::new(backend, "retry");
    let runtime = f
        .runtime(json!({
            "flaky": wiring(&f, "in", json!([
                {"case": false, "queues": [f.q("first-try")]},
                {"case": true, "queues": [f.q("retried")]},
            ])),
        }))
        .await;
    let service = runtime.start(ServiceDef::find("flaky").unwrap()).await.unwrap();
    runtime.send(&f.q("in"), 1..=10).await.unwrap();
    runtime.run_until_idle(&[&service]).await.unwrap();
    let broker = runtime.broker().as_ref();
    let mut first = drain_ids(broker, &f.q("first-try")).await;
    let mut retried = drain_ids(broker, &f.q("retried")).await;
    first.sort();
    retried.sort();
    assert_eq!(first, [1, 3, 5, 7, 9]);
    assert_eq!(retried, [2, 4, 6, 8, 10], "even IDs succeed on attempt 2");
    assert_eq!(service.stats.retried.load(Ordering::Relaxed), 5);
    assert_eq!(service.stats.dead_lettered.load(Ordering::Relaxed), 0);
}

async fn exhausted_requests_are_dead_lettered_with_reasons(backend: Backend) {
    let f = Fixture::new(backend, "exhaust");
    let runtime = f.runtime(json!({"doomed": wiring(&f, "in", json!([]))})).await;
    let service = runtime.start(ServiceDef::find("doomed").unwrap()).await.unwrap();
    let started = Instant::now();
    runtime.send(&f.q("in"), [7, 8]).await.unwrap();
    runtime.run_until_idle(&[&service]).await.unwrap();
    let dead = drain(runtime.broker().as_ref(), &dead_letter_queue(&f.q("in"))).await;
    assert_eq!(dead.len(), 2);
    for d in &dead {
        let id = std::str::from_utf8(&d.message.body).unwrap();
        assert_eq!(header(&d.message, ERROR_HEADER), format!("cannot handle {id}"));
        assert_eq!(header(&d.message, ERROR_KIND_HEADER), "process-error");
        assert_eq!(header(&d.message, SERVICE_HEADER), "doomed");
        assert_eq!(d.message.headers.get(ATTEMPT_HEADER), Some(&HeaderValue::Int(3)));
    }
    assert_eq!(
        service.stats.retried.load(Ordering::Relaxed),
        4,
        "two retries each before giving up"
    );
    // Backoff 20 ms then 40 ms: the retries waited rather than spun.
    assert!(started.elapsed() >= Duration::from_millis(60));
}

async fn malformed_bodies_are_dead_lettered_at_once(backend: Backend) {
    let f = Fixture::new(backend, "malformed");
    let runtime = f
        .runtime(json!({"kind-bool": wiring(&f, "in", json!([{"case": true, "queues": [f.q("ok")]}]))}))
        .await;
    let service = runtime.start(ServiceDef::find("kind-bool").unwrap()).await.unwrap();
    let broker = runtime.broker().clone();
    let bodies: [&[u8]; 5] = [b"\xff\xfe", b"twelve", b"-3", b"18446744073709551616", b""];
    for body in bodies {
        broker.publish(&f.q("in"), Message::new(body.to_vec())).await.unwrap();
    }
    runtime.send(&f.q("in"), [5]).await.unwrap();
    runtime.run_until_idle(&[&service]).await.unwrap();
    assert_eq!(
        drain_ids(broker.as_ref(), &f.q("ok")).await,
        [5],
        "good messages still flow"
    );
    let dead = drain(broker.as_ref(), &dead_letter_queue(&f.q("in"))).await;
    assert_eq!(dead.len(), bodies.len());
    for d in &dead {
        assert_eq!(header(&d.message, ERROR_KIND_HEADER), "malformed");
        assert_eq!(
            d.message.headers.get(ATTEMPT_HEADER),
            Some(&HeaderValue::Int(1)),
            "no retries for a malformed body"
        );
    }
    assert!(dead
        .iter()
        .any(|d| header(&d.message, ERROR_HEADER).contains("not UTF-8")));
    assert!(dead
        .iter()
        .any(|d| header(&d.message, ERROR_HEADER).contains("out of range")));
    assert_eq!(service.stats.retried.load(Ordering::Relaxed), 0);
}

async fn a_slow_request_does_not_stall_the_others(backend: Backend) {
    let f = Fixture::new(backend, "slow");
    let runtime = f
        .runtime(json!({"sleepy": wiring(&f, "in", json!([{"case": true, "queues": [f.q("out")]}]))}))
        .await;
    let service = runtime.start(ServiceDef::find("sleepy").unwrap()).await.unwrap();
    let started = Instant::now();
    runtime.send(&f.q("in"), 0..20).await.unwrap();
    wait_for_count(runtime.broker().as_ref(), &f.q("out"), 19, WAIT).await;
    let fast = started.elapsed();
    assert!(
        fast < Duration::from_millis(1500),
        "19 fast requests took {fast:?} behind one slow one"
    );
    runtime.run_until_idle(&[&service]).await.unwrap();
    assert_eq!(drain_ids(runtime.broker().as_ref(), &f.q("out")).await.len(), 20);
}

async fn database_writes_are_visible(backend: Backend) {
    use diesel::prelude::*;
    let f = Fixture::new(backend, "database");
    // The fixture's own (new, empty) database: the table is created once,
    // here, before any request runs.
    f.create_tables(&[CREATE_SEEN]).await;
    let runtime = f.runtime(json!({"recorder": wiring(&f, "in", json!([]))})).await;
    let service = runtime.start(ServiceDef::find("recorder").unwrap()).await.unwrap();
    runtime.send(&f.q("in"), 100..150).await.unwrap();
    runtime.run_until_idle(&[&service]).await.unwrap();
    let mut connection = runtime.connect_database().await.unwrap();
    let rows: Vec<(i64, i32)> = tokio::task::spawn_blocking(move || {
        seen::table
            .filter(seen::id.between(100, 149))
            .order_by(seen::id)
            .load(&mut connection)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[0], (100, 1));
    assert_eq!(rows[49], (149, 1));
}

async fn invoke_runs_one_request_without_publishing(backend: Backend) {
    let f = Fixture::new(backend, "invoke");
    let (input, output) = (f.bucket("in"), f.bucket("out"));
    let runtime = f
        .runtime(json!({
            "copier": wiring(&f, "in", json!([{"case": true, "queues": [f.q("done")]}])),
            "copier/in": input,
            "copier/out": output,
        }))
        .await;
    runtime.store().put_bytes(&input, "9", b"local".to_vec()).await.unwrap();
    let results = runtime
        .invoke(ServiceDef::find("copier").unwrap(), &[9, 10])
        .await
        .unwrap();
    let ok = results[0].as_ref().unwrap();
    assert_eq!(ok.routes, [(f.q("done"), 9)]);
    assert_eq!(ok.executed.written.len(), 1);
    assert_eq!(ok.executed.written[0].size, 5);
    let missing = results[1].as_ref().unwrap_err();
    assert_eq!(missing.kind, slingshot::FailureKind::Storage, "{missing}");
    assert!(missing.message.contains("not found"), "{missing}");
    assert_eq!(
        read_object(runtime.store(), &output, 9).await.as_deref(),
        Some(&b"LOCAL"[..])
    );
    assert_eq!(
        runtime.broker().ready_count(&f.q("done")).await.unwrap(),
        0,
        "invoke publishes nothing"
    );
}

async fn unreachable_routes_are_reported(backend: Backend) {
    let f = Fixture::new(backend, "unreachable");
    let runtime = f
        .runtime(json!({"kind-int": wiring(&f, "in", json!([
            {"case": 1, "queues": [f.q("one")]},
            {"case": true, "queues": [f.q("never-bool")]},
            {"case": 5000000000_i64, "queues": [f.q("never-big")]},
        ]))}))
        .await;
    let service = runtime.start(ServiceDef::find("kind-int").unwrap()).await.unwrap();
    let cases: Vec<String> = service.unreachable.iter().map(|r| r.case.to_string()).collect();
    assert_eq!(cases, ["true", "5000000000"], "an i32 can produce neither");
    runtime.shutdown();
}

async fn outages_are_retried_without_using_up_attempts(backend: Backend) {
    let f = Fixture::new(backend, "outage");
    let mut settings = f.settings();
    // A single attempt: were outages counted, every request would be dead-lettered.
    settings.max_attempts = 1;
    let runtime = f
        .runtime_with(
            json!({"outage-sim": wiring(&f, "in", json!([{"case": true, "queues": [f.q("ok")]}]))}),
            settings,
        )
        .await;
    let service = runtime.start(ServiceDef::find("outage-sim").unwrap()).await.unwrap();
    let base = match backend {
        Backend::Embedded => 0,
        Backend::Real => 1_000_000,
        Backend::Quorum => 2_000_000,
    };
    runtime.send(&f.q("in"), base..base + 10).await.unwrap();
    wait_for_count(runtime.broker().as_ref(), &f.q("ok"), 10, WAIT).await;
    runtime.run_until_idle(&[&service]).await.unwrap();
    assert_eq!(service.stats.dead_lettered.load(Ordering::Relaxed), 0);
    assert_eq!(
        service.stats.retried.load(Ordering::Relaxed),
        20,
        "two outage retries per request"
    );
}

async fn dead_letters_can_be_listed_and_replayed(backend: Backend) {
    use slingshot::deadletter::{self, Selection};
    let f = Fixture::new(backend, "replay");
    let mut settings = f.settings();
    settings.max_attempts = 1;
    let runtime = f
        .runtime_with(json!({"doomed": wiring(&f, "in", json!([]))}), settings)
        .await;
    let service = runtime.start(ServiceDef::find("doomed").unwrap()).await.unwrap();
    runtime.send(&f.q("in"), [1, 2, 3]).await.unwrap();
    runtime.run_until_idle(&[&service]).await.unwrap();
    let broker = runtime.broker().as_ref();
    let inbound = f.q("in");

    let mut letters = Vec::new();
    deadletter::list(broker, &inbound, |letter| letters.push(letter))
        .await
        .unwrap();
    let mut ids: Vec<_> = letters.iter().map(|l| l.id.unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3]);
    for letter in &letters {
        assert_eq!(
            (
                letter.record.kind.as_str(),
                letter.record.attempts,
                letter.record.service.as_str()
            ),
            ("process-error", 1, "doomed")
        );
        assert_eq!(letter.record.error, format!("cannot handle {}", letter.id.unwrap()));
        assert!(letter.record.failed_at > 1_700_000_000);
    }
    assert_eq!(
        deadletter::list(broker, &inbound, drop).await.unwrap(),
        3,
        "listing leaves them in place"
    );

    assert_eq!(
        deadletter::replay(broker, &inbound, &Selection::Ids(vec![2]))
            .await
            .unwrap(),
        (1, 2)
    );
    let replayed = drain(broker, &inbound).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].message.body, &b"2"[..]);
    assert_eq!(
        replayed[0].message.headers.get(ATTEMPT_HEADER),
        None,
        "a replay starts with fresh attempts"
    );
    assert_eq!(
        deadletter::replay(broker, &inbound, &Selection::All).await.unwrap(),
        (2, 0)
    );
    assert_eq!(deadletter::list(broker, &inbound, drop).await.unwrap(), 0);
}

async fn requests_in_flight_at_the_shutdown_deadline_return_to_the_queue(backend: Backend) {
    let f = Fixture::new(backend, "deadline");
    let mut settings = f.settings();
    settings.shutdown_deadline = Duration::from_millis(200);
    let runtime = f
        .runtime_with(
            json!({"sleepy": wiring(&f, "in", json!([{"case": true, "queues": [f.q("out")]}]))}),
            settings,
        )
        .await;
    let mut service = runtime.start(ServiceDef::find("sleepy").unwrap()).await.unwrap();
    runtime.send(&f.q("in"), [0]).await.unwrap();
    let start = Instant::now();
    while service.stats.in_flight.load(Ordering::Relaxed) == 0 {
        assert!(start.elapsed() < WAIT, "request 0 never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runtime.shutdown();
    service.finished().await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "shutdown waited for the 2 s request"
    );
    // Back in its queue, unprocessed, for the next instance to take.
    wait_for_count(runtime.broker().as_ref(), &f.q("in"), 1, WAIT).await;
    assert_eq!(runtime.broker().ready_count(&f.q("out")).await.unwrap(), 0);
    assert_eq!(service.stats.processed.load(Ordering::Relaxed), 0);
}

// ---- helpers -------------------------------------------------------------

fn header(message: &Message, name: &str) -> String {
    match message.headers.get(name) {
        Some(HeaderValue::Str(s)) => s.clone(),
        other => panic!("header {name} is {other:?}"),
    }
}
