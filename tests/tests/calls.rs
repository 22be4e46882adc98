//! Calling services like functions, on every backend: a call returns the
//! routes and objects of its one request, or the dead-letter failure; a call
//! nobody takes says so and its request never runs; concurrent calls from
//! one client do not wait on each other; a late answer is dropped; a
//! followed ID reports from every stage it reaches.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;
use slingshot::broker::Durability;
use slingshot::protocol::{dead_letter_queue, Status};
use slingshot::{AnyError, CallError, CallOptions, ServiceDef, WriteFileFn};
use slingshot_tests::{becomes_true, drain_ids, wait_for_count, Backend, Fixture};

const WAIT: Duration = Duration::from_secs(20);

/// Calls of `call-writer`, by request ID, across this test binary.
static CALLS: Mutex<BTreeMap<u64, u32>> = Mutex::new(BTreeMap::new());

/// Writes an object, sends its ID on (`true`) and a second one nowhere
/// (`false`, a case the sys-map does not route).
#[slingshot::microservice(name = "call-writer", sys_map = "file:unused.json", main = false)]
fn call_writer(request: u64, write_file: &WriteFileFn) -> Result<Vec<(u64, bool)>, AnyError> {
    *CALLS.lock().unwrap().entry(request).or_default() += 1;
    write!(write_file("out", request)?, "written for {request}")?;
    Ok(vec![(request, true), (request + 1000, false)])
}

/// Always fails.
#[slingshot::microservice(name = "call-doomed", sys_map = "file:unused.json", main = false)]
fn call_doomed(request: u64) -> Result<Vec<(u64, bool)>, std::io::Error> {
    Err(std::io::Error::other(format!("cannot handle {request}")))
}

/// Takes three seconds.
#[slingshot::microservice(name = "call-slow", sys_map = "file:unused.json", main = false)]
async fn call_slow(request: u64) -> Vec<(u64, bool)> {
    tokio::time::sleep(Duration::from_secs(3)).await;
    vec![(request, true)]
}

/// The first stage of the followed pipeline: `true` fans out to two
/// stages, `false` is routed nowhere.
#[slingshot::microservice(name = "p-ingest", sys_map = "file:unused.json", main = false)]
fn p_ingest(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true), (request + 1, false)]
}

/// A branch that ends in a queue no stage consumes.
#[slingshot::microservice(name = "p-left", sys_map = "file:unused.json", main = false)]
fn p_left(request: u64) -> Vec<(u64, bool)> {
    vec![(request * 10, true)]
}

/// A branch whose case has no route.
#[slingshot::microservice(name = "p-right", sys_map = "file:unused.json", main = false)]
fn p_right(request: u64) -> Vec<(u64, &'static str)> {
    vec![(request, "nowhere")]
}

slingshot_tests::on_every_backend!(
    a_call_returns_the_routes_and_objects_of_its_request,
    a_call_to_a_failing_service_returns_the_dead_letter_failure,
    a_call_nobody_picks_up_times_out_and_its_request_never_runs,
    a_call_still_running_says_so_and_its_late_answer_is_dropped,
    a_thousand_concurrent_calls_from_one_client_all_complete,
    a_followed_id_reports_from_every_stage_it_reaches,
);

fn writer_wiring(f: &Fixture) -> serde_json::Value {
    json!({
        "call-writer": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("a"), f.q("b")]}]},
        "call-writer/out": f.bucket("out"),
    })
}

async fn a_call_returns_the_routes_and_objects_of_its_request(backend: Backend) {
    let f = Fixture::new(backend, "call-routes");
    let runtime = f.runtime(writer_wiring(&f)).await;
    let service = runtime.start(ServiceDef::find("call-writer").unwrap()).await.unwrap();
    let client = runtime.client();
    let outcome = client.call("call-writer", 5, WAIT).await.unwrap();
    assert_eq!(outcome.status, Status::Done);
    assert_eq!(
        (outcome.service.as_str(), outcome.id, outcome.attempt),
        ("call-writer", Some(5), 1)
    );
    let mut routes: Vec<(String, u64)> = outcome.routes.iter().map(|r| (r.queue.clone(), r.id)).collect();
    routes.sort();
    assert_eq!(routes, [(f.q("a"), 5), (f.q("b"), 5)]);
    assert!(outcome.routes.iter().all(|r| r.case == json!(true)));
    assert_eq!(outcome.unrouted.len(), 1);
    assert_eq!(
        (outcome.unrouted[0].id, &outcome.unrouted[0].case),
        (1005, &json!(false))
    );
    assert_eq!(outcome.objects.len(), 1);
    let object = &outcome.objects[0];
    assert_eq!(
        (object.bucket.as_str(), object.key.as_str()),
        (f.bucket("out").as_str(), "5")
    );
    assert_eq!(object.size, "written for 5".len() as u64);
    // A reply means done: the outputs are in their queues already.
    let broker = runtime.broker().as_ref();
    assert_eq!(drain_ids(broker, &f.q("a")).await, [5]);
    assert_eq!(drain_ids(broker, &f.q("b")).await, [5]);
    assert_eq!(client.waiting(), 0);
    // Messages without a reply address get none, as before.
    runtime.send(&f.q("in"), [6]).await.unwrap();
    runtime.run_until_idle(&[&service]).await.unwrap();
    let replies = || service.stats.replies.load(Ordering::Relaxed);
    assert!(
        becomes_true(WAIT, || replies() >= 2).await,
        "no started and done replies for 5"
    );
    assert_eq!(replies(), 2, "started and done for 5, nothing for 6");
}

async fn a_call_to_a_failing_service_returns_the_dead_letter_failure(backend: Backend) {
    let f = Fixture::new(backend, "call-fails");
    let runtime = f.runtime(json!({"call-doomed": {"in": f.q("in"), "out": []}})).await;
    let _service = runtime.start(ServiceDef::find("call-doomed").unwrap()).await.unwrap();
    let outcome = runtime.client().call("call-doomed", 9, WAIT).await.unwrap();
    assert_eq!(outcome.status, Status::Failed);
    let failure = outcome.failure.expect("a failed outcome says why");
    assert_eq!(failure.kind, "process-error");
    assert_eq!(failure.error, "cannot handle 9");
    assert_eq!(failure.attempts, 3, "answered after the last attempt, not the first");
    assert_eq!(failure.dead_letter_queue, dead_letter_queue(&f.q("in")));
    assert_eq!(outcome.attempt, 3);
}

async fn a_call_nobody_picks_up_times_out_and_its_request_never_runs(backend: Backend) {
    let f = Fixture::new(backend, "call-expires");
    let runtime = f.runtime(writer_wiring(&f)).await;
    // The queue exists (a deployed service declared it) but nobody consumes.
    let broker = runtime.broker().clone();
    broker.declare(&f.q("in"), Durability::Durable).await.unwrap();
    let client = runtime.client();
    let timeout = Duration::from_millis(500);
    match client.call("call-writer", 77, timeout).await {
        Err(CallError::NeverPickedUp { id, expires, queue, .. }) => {
            assert_eq!((id, expires, queue), (77, true, f.q("in")))
        }
        other => panic!("expected never picked up, got {other:?}"),
    }
    // With run_late, a request nobody took in time runs when a service does.
    let late = CallOptions {
        timeout: Duration::from_millis(300),
        run_late: true,
    };
    let error = client.call_with("call-writer", 79, late).await.unwrap_err();
    assert!(error.to_string().contains("runs when a service takes it"), "{error}");
    // Well past 77's deadline, a service starts: it must not run 77.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let service = runtime.start(ServiceDef::find("call-writer").unwrap()).await.unwrap();
    runtime.send(&f.q("in"), [78]).await.unwrap();
    wait_for_count(broker.as_ref(), &f.q("a"), 2, WAIT).await;
    runtime.run_until_idle(&[&service]).await.unwrap();
    let mut ran = drain_ids(broker.as_ref(), &f.q("a")).await;
    ran.sort();
    assert_eq!(ran, [78, 79]);
    assert_eq!(CALLS.lock().unwrap().get(&77), None, "the expired request ran");
    assert_eq!(service.stats.processed.load(Ordering::Relaxed), 2);
}

async fn a_call_still_running_says_so_and_its_late_answer_is_dropped(backend: Backend) {
    let f = Fixture::new(backend, "call-slow");
    let runtime = f
        .runtime(json!({"call-slow": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}}))
        .await;
    let service = runtime.start(ServiceDef::find("call-slow").unwrap()).await.unwrap();
    let client = runtime.client();
    match client.call("call-slow", 3, Duration::from_secs(1)).await {
        Err(CallError::StillRunning { id, attempt, .. }) => assert_eq!((id, attempt), (3, 1)),
        other => panic!("expected still running, got {other:?}"),
    }
    assert_eq!(client.waiting(), 0, "a call that gave up leaves nothing waiting");
    // It goes on, and its answer finds nobody waiting.
    assert!(
        becomes_true(WAIT, || client.late_replies() == 1).await,
        "the late answer was not dropped: {} late",
        client.late_replies()
    );
    runtime.run_until_idle(&[&service]).await.unwrap();
    assert_eq!(drain_ids(runtime.broker().as_ref(), &f.q("out")).await, [3]);
}

async fn a_thousand_concurrent_calls_from_one_client_all_complete(backend: Backend) {
    const CALLS_AT_ONCE: u64 = 1000;
    let f = Fixture::new(backend, "call-many");
    let mut settings = f.settings();
    settings.concurrency = 16;
    settings.prefetch = 64;
    let runtime = f.runtime_with(writer_wiring(&f), settings).await;
    let _service = runtime.start(ServiceDef::find("call-writer").unwrap()).await.unwrap();
    let client = runtime.client();
    let ids = 10_000..10_000 + CALLS_AT_ONCE;
    let calls = ids.clone().map(|id| {
        let client = client.clone();
        async move { (id, client.call("call-writer", id, Duration::from_secs(120)).await) }
    });
    let outcomes = futures::future::join_all(calls).await;
    for (id, outcome) in outcomes {
        let outcome = outcome.unwrap_or_else(|e| panic!("call {id}: {e}"));
        assert_eq!(
            (outcome.id, outcome.status),
            (Some(id), Status::Done),
            "each call gets its own answer"
        );
        assert_eq!(outcome.objects[0].key, id.to_string());
    }
    assert_eq!(client.waiting(), 0);
    assert_eq!(client.late_replies(), 0, "every answer found its call");
}

async fn a_followed_id_reports_from_every_stage_it_reaches(backend: Backend) {
    let f = Fixture::new(backend, "call-follow");
    let runtime = f
        .runtime(json!({
            "p-ingest": {"in": f.q("ingest"), "out": [{"case": true, "queues": [f.q("left"), f.q("right")]}]},
            "p-left": {"in": f.q("left"), "out": [{"case": true, "queues": [f.q("sink")]}]},
            "p-right": {"in": f.q("right"), "out": [{"case": "elsewhere", "queues": [f.q("sink")]}]},
        }))
        .await;
    let mut services = Vec::new();
    for name in ["p-ingest", "p-left"] {
        services.push(runtime.start(ServiceDef::find(name).unwrap()).await.unwrap());
    }
    let client = runtime.client_following(vec!["p-ingest".into(), "p-left".into(), "p-right".into()]);
    // A stage that is not running (its queue exists): the wait says which
    // one and why.
    let broker = runtime.broker().clone();
    broker.declare(&f.q("right"), Durability::Durable).await.unwrap();
    let mut submission = client.submit("p-ingest", 6).await.unwrap();
    match submission.wait_until_done(Duration::from_secs(3)).await {
        Err(CallError::Unfinished { done, waiting, .. }) => {
            assert_eq!(done.stages.len(), 2, "ingest and left reported");
            assert_eq!(waiting.len(), 1);
            let right = &waiting[0];
            assert_eq!((right.service.as_str(), right.id, right.started), ("p-right", 6, false));
            assert!(right.to_string().contains("never picked up"), "{right}");
        }
        other => panic!("expected unfinished, got {other:?}"),
    }
    services.push(runtime.start(ServiceDef::find("p-right").unwrap()).await.unwrap());
    wait_for_count(broker.as_ref(), &f.q("sink"), 1, WAIT).await;
    assert_eq!(drain_ids(broker.as_ref(), &f.q("sink")).await, [60]);
    let done = client
        .submit("p-ingest", 4)
        .await
        .unwrap()
        .wait_until_done(WAIT)
        .await
        .unwrap();
    let mut stages: Vec<(&str, Option<u64>)> = done.stages.iter().map(|o| (o.service.as_str(), o.id)).collect();
    stages.sort();
    assert_eq!(
        stages,
        [("p-ingest", Some(4)), ("p-left", Some(4)), ("p-right", Some(4))]
    );
    assert!(done.stages.iter().all(|o| o.status == Status::Done));
    let ingest = done.stages.iter().find(|o| o.service == "p-ingest").unwrap();
    assert_eq!(ingest.routes.len(), 2, "fanned out to two stages");
    assert_eq!((ingest.unrouted[0].id, &ingest.unrouted[0].case), (5, &json!(false)));
    let right = done.stages.iter().find(|o| o.service == "p-right").unwrap();
    assert_eq!(
        right.unrouted[0].case,
        json!("nowhere"),
        "a case routed nowhere ends its branch"
    );
    assert_eq!(done.ended_at.len(), 1);
    assert_eq!(
        (done.ended_at[0].queue.as_str(), done.ended_at[0].id),
        (f.q("sink").as_str(), 40)
    );
    assert_eq!(drain_ids(runtime.broker().as_ref(), &f.q("sink")).await, [40]);
}

/// Any AMQP client calls a service the RPC way, with RabbitMQ's direct
/// reply-to: the request is the decimal ID with `reply_to` and
/// `correlation_id`; the reply is JSON with the same `correlation_id`.
#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_amqp_rpc_client_with_direct_reply_to_gets_the_outcome() {
    use futures::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let f = Fixture::new(Backend::Real, "call-rpc");
    let runtime = f.runtime(writer_wiring(&f)).await;
    let _service = runtime.start(ServiceDef::find("call-writer").unwrap()).await.unwrap();
    let connection = Connection::connect(&slingshot_tests::shared_amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.unwrap();
    let mut replies = channel
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "rpc-client".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume direct reply-to");
    let properties = BasicProperties::default()
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_correlation_id("rpc-41".into());
    channel
        .basic_publish(
            "".into(),
            f.q("in").as_str().into(),
            BasicPublishOptions::default(),
            b"41",
            properties,
        )
        .await
        .unwrap();
    let done = tokio::time::timeout(WAIT, async {
        while let Some(delivery) = replies.next().await {
            let delivery = delivery.expect("a reply");
            assert_eq!(
                delivery.properties.correlation_id().as_ref().map(|c| c.as_str()),
                Some("rpc-41")
            );
            let reply: serde_json::Value = serde_json::from_slice(&delivery.data).expect("a JSON reply");
            if reply["status"] != "started" {
                return reply;
            }
        }
        panic!("the reply consumer ended");
    })
    .await
    .expect("no reply within the wait");
    assert_eq!(done["status"], "done");
    assert_eq!(done["id"], 41);
    assert_eq!(done["objects"][0]["key"], "41");
    assert_eq!(done["routes"].as_array().map(Vec::len), Some(2));
}

/// Another producer's follow header, too large to ride on every output, is
/// ignored: the request runs, its output does not carry it, and calls after
/// it are answered. (A forged direct reply-to address never reaches a
/// service: RabbitMQ refuses the producer's publish.)
#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_follow_header_is_not_carried_onto_outputs() {
    use slingshot::broker::{HeaderValue, Message};
    use slingshot::protocol::{FOLLOW_HEADER, MAX_FOLLOW};

    let f = Fixture::new(Backend::Real, "call-hostile");
    let runtime = f.runtime(writer_wiring(&f)).await;
    let service = runtime.start(ServiceDef::find("call-writer").unwrap()).await.unwrap();
    let broker = runtime.broker().clone();
    let oversized = Message::id(62).with_header(FOLLOW_HEADER, HeaderValue::Str("f".repeat(MAX_FOLLOW * 100)));
    broker.publish(&f.q("in"), oversized).await.unwrap();
    wait_for_count(broker.as_ref(), &f.q("a"), 1, WAIT).await;
    let outcome = runtime.client().call("call-writer", 63, WAIT).await.unwrap();
    assert_eq!(outcome.status, Status::Done);
    let outputs = slingshot_tests::drain(broker.as_ref(), &f.q("a")).await;
    assert_eq!(outputs.len(), 2);
    for output in &outputs {
        assert!(
            !output.message.headers.contains_key(FOLLOW_HEADER),
            "an oversized follow header rode on"
        );
    }
    assert_eq!(service.stats.dead_lettered.load(Ordering::Relaxed), 0);
}
