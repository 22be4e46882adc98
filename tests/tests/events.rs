//! Events out of a stage, on every backend: one stage emits named events to
//! the topic exchange its sys-map entry names; two subscriber services,
//! bound by their `subscribe` entries, each receive every event they asked
//! for; the sys-map's new fields leave an original-protocol consumer
//! working.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;
use slingshot::broker::Durability;
use slingshot::protocol::{EVENT_DATA_HEADER, EVENT_HEADER, EVENT_SERVICE_HEADER};
use slingshot::{AnyError, RequestContext, ServiceDef};
use slingshot_tests::{drain, drain_ids, wait_for_count, Backend, Fixture};

const WAIT: Duration = Duration::from_secs(30);
const IDS: u64 = 20;

/// What each subscriber received, by (fixture prefix, subscriber), ID →
/// deliveries, across this test binary.
static RECEIVED: Mutex<BTreeMap<Subscriber, BTreeMap<u64, u32>>> = Mutex::new(BTreeMap::new());

/// A subscriber of one test: its IDs' base, its name.
type Subscriber = (String, &'static str);

fn record(context: &RequestContext) {
    // The queue prefix tells the fixtures apart: requests of each test are
    // offset by its own base.
    let mut received = RECEIVED.lock().unwrap();
    let base = context.request / 1_000 * 1_000;
    *received
        .entry((base.to_string(), context.service))
        .or_default()
        .entry(context.request)
        .or_default() += 1;
}

/// Emits `progress` for every request and `invalid-input` for odd ones,
/// then routes the ID on.
#[slingshot::microservice(name = "ev-stage", sys_map = "file:unused.json", main = false)]
fn ev_stage(request: u64, context: &RequestContext) -> Result<Vec<(u64, bool)>, AnyError> {
    context.emit("progress", "half")?;
    if request % 2 == 1 {
        context.emit("invalid-input", &format!("odd {request}"))?;
    }
    Ok(vec![(request, true)])
}

/// Subscribed to the stage's `progress` only.
#[slingshot::microservice(name = "ev-progress", sys_map = "file:unused.json", main = false)]
fn ev_progress(_request: u64, context: &RequestContext) -> Vec<(u64, bool)> {
    record(context);
    vec![]
}

/// Subscribed to every event of the stage.
#[slingshot::microservice(name = "ev-all", sys_map = "file:unused.json", main = false)]
fn ev_all(_request: u64, context: &RequestContext) -> Vec<(u64, bool)> {
    record(context);
    vec![]
}

/// An event name that cannot be a routing key word fails the request.
#[slingshot::microservice(name = "ev-bad-name", sys_map = "file:unused.json", main = false)]
fn ev_bad_name(_request: u64, context: &RequestContext) -> Result<Vec<(u64, bool)>, AnyError> {
    context.emit("Bad.Name", "")?;
    Ok(vec![])
}

// Each backend sends its own IDs (base 1,000, 2,000, 3,000): the services record events by ID, in one process.
slingshot_tests::on_every_backend!(with [embedded: Embedded(1_000), real: Real(2_000), quorum: Quorum(3_000)] two_subscribers_receive_every_event_they_asked_for);

fn endpoints(f: &Fixture) -> serde_json::Value {
    let exchange = f.q("events");
    json!({
        "ev-stage": {"in": f.q("stage"), "out": [{"case": true, "queues": [f.q("out")]}], "events": exchange},
        "ev-progress": {"in": f.q("progress"), "out": [],
                        "subscribe": [{"exchange": exchange, "events": ["ev-stage.progress"]}]},
        "ev-all": {"in": f.q("all"), "out": [],
                   "subscribe": [{"exchange": exchange, "events": ["ev-stage.#"]}]},
    })
}

async fn two_subscribers_receive_every_event_they_asked_for(backend: Backend, base: u64) {
    let f = Fixture::new(backend, "events");
    let runtime = f.runtime(endpoints(&f)).await;
    let broker = runtime.broker().clone();
    let mut services = Vec::new();
    // Subscribers first: an event published before a queue is bound is
    // nobody's.
    for name in ["ev-progress", "ev-all", "ev-stage"] {
        services.push(runtime.start(ServiceDef::find(name).unwrap()).await.unwrap());
    }
    // A plain queue bound to everything, to read the events as they travel.
    broker.declare(&f.q("tap"), Durability::Durable).await.unwrap();
    broker.bind(&f.q("tap"), &f.q("events"), "#").await.unwrap();
    let ids: Vec<u64> = (base..base + IDS).collect();
    runtime.send(&f.q("stage"), ids.clone()).await.unwrap();
    wait_for_count(broker.as_ref(), &f.q("out"), IDS, WAIT).await;
    // Every progress event, and the invalid-input events of the 10 odd IDs.
    wait_for_count(broker.as_ref(), &f.q("tap"), IDS + IDS / 2, WAIT).await;
    runtime
        .run_until_idle(&services.iter().collect::<Vec<_>>())
        .await
        .unwrap();

    let received = RECEIVED.lock().unwrap().clone();
    let progress = &received[&(base.to_string(), "ev-progress")];
    let all = &received[&(base.to_string(), "ev-all")];
    for id in &ids {
        assert_eq!(progress.get(id), Some(&1), "ev-progress got {id}'s progress once");
        let expected = if id % 2 == 1 { 2 } else { 1 };
        assert_eq!(all.get(id), Some(&expected), "ev-all got every event of {id}");
    }
    assert_eq!(progress.len(), ids.len());
    let stage = &services[2].stats;
    assert_eq!(
        stage.events_published.load(std::sync::atomic::Ordering::Relaxed),
        IDS + IDS / 2
    );
    assert_eq!(stage.events_dropped.load(std::sync::atomic::Ordering::Relaxed), 0);

    let tapped = drain(broker.as_ref(), &f.q("tap")).await;
    let text = |d: &slingshot::broker::Delivery, name: &str| {
        d.message.headers.get(name).and_then(|v| v.as_str()).map(str::to_string)
    };
    let invalid: Vec<_> = tapped
        .iter()
        .filter(|d| text(d, EVENT_HEADER).as_deref() == Some("invalid-input"))
        .collect();
    assert_eq!(invalid.len(), (IDS / 2) as usize);
    for d in &invalid {
        let id: u64 = std::str::from_utf8(&d.message.body).unwrap().parse().unwrap();
        assert_eq!(text(d, EVENT_SERVICE_HEADER).as_deref(), Some("ev-stage"));
        assert_eq!(text(d, EVENT_DATA_HEADER), Some(format!("odd {id}")));
        assert!(d.message.properties.message_id.is_some(), "events carry a message ID");
    }
    assert_eq!(drain_ids(broker.as_ref(), &f.q("out")).await.len(), IDS as usize);
}

/// A bad event name fails the request with the reason, and no event of it
/// is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_event_name_fails_the_request() {
    let f = Fixture::new(Backend::Embedded, "events-bad");
    let runtime = f
        .runtime(json!({"ev-bad-name": {"in": f.q("in"), "out": [], "events": f.q("events")}}))
        .await;
    let service = runtime.start(ServiceDef::find("ev-bad-name").unwrap()).await.unwrap();
    runtime.send(&f.q("in"), [1]).await.unwrap();
    runtime.run_until_idle(&[&service]).await.unwrap();
    let dead = drain(
        runtime.broker().as_ref(),
        &slingshot::protocol::dead_letter_queue(&f.q("in")),
    )
    .await;
    assert_eq!(dead.len(), 1);
    let error = dead[0].message.headers[slingshot::protocol::ERROR_HEADER]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("event name \"Bad.Name\""), "{error}");
    assert_eq!(
        service
            .stats
            .events_published
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// A sys-map entry with the new optional fields reads, for a consumer
/// written to the original protocol (only `in` and `out`, unknown fields
/// ignored), as it always did; that consumer runs beside the services
/// that use them.
#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_consumer_of_the_same_sys_map_still_works() {
    #[derive(serde::Deserialize)]
    struct OriginalWiring {
        #[serde(rename = "in")]
        inbound: String,
        out: Vec<OriginalRoute>,
    }
    #[derive(serde::Deserialize)]
    struct OriginalRoute {
        #[allow(dead_code)]
        case: serde_json::Value,
        queues: Vec<String>,
    }
    let f = Fixture::new(Backend::Real, "events-original");
    let mut all = endpoints(&f);
    // The original service downstream of the stage; its entry carries the
    // new fields too, as a sys-map shared by both kinds of services would.
    all["original-sink"] = json!({
        "in": f.q("out"), "out": [{"case": true, "queues": [f.q("final")]}],
        "subscribe": [{"exchange": f.q("events"), "events": ["ev-stage.progress"]}],
        "events": f.q("events"),
    });
    let url = f.serve_sysmap(all).await;
    let document: OriginalWiring = reqwest::get(format!("{url}/original-sink"))
        .await
        .unwrap()
        .json()
        .await
        .expect("the original protocol's fields read as before");
    let outbound: Vec<String> = document.out.into_iter().flat_map(|r| r.queues).collect();
    // Queues as the original declares them (transient), shared with it.
    let mut settings = f.settings();
    settings.queue_mode = slingshot::settings::QueueMode::Compatible;
    let original = slingshot_tests::original::OriginalService::start(
        &slingshot_tests::shared_amqp_url(),
        "original-sink",
        &document.inbound,
        &outbound,
    )
    .await
    .expect("the original starts on the same sys-map");
    let runtime = slingshot::Runtime::connect(&url, settings).await.unwrap();
    let stage = runtime.start(ServiceDef::find("ev-stage").unwrap()).await.unwrap();
    runtime.send(&f.q("stage"), 4_000..4_010).await.unwrap();
    wait_for_count(runtime.broker().as_ref(), &f.q("final"), 10, WAIT).await;
    let mut arrived = drain_ids(runtime.broker().as_ref(), &f.q("final")).await;
    arrived.sort();
    assert_eq!(arrived, (4_000..4_010).collect::<Vec<_>>());
    assert_eq!(
        stage.stats.events_published.load(std::sync::atomic::Ordering::Relaxed),
        15
    );
    drop(original);
}
