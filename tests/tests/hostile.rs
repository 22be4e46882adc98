//! Hostile producers against a service process on the real RabbitMQ: a plain
//! AMQP client (lapin, not slingshot) publishes what other programs may
//! publish — oversized headers, huge bodies, a message that kills the
//! process, every header type and property — into a stream of good IDs.
//! Each test asserts that the good IDs all arrive, the bad messages are
//! dead-lettered exactly once with a kind that says why, and (but for the
//! crash loop, which restarts the process) that the service never lost its
//! connection. Each prints a `fault=` line (see `tests/src/fault_report.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;
use slingshot::broker::{Broker, Durability};
use slingshot_tests::fault_report::{report, send_ids, stream_settings_retrying, Figures};
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::{service_command, shared_amqp_url, test_broker, Backend, Collector, Fixture};

const FAULT_SERVICE: &str = env!("CARGO_BIN_EXE_fault-service");
const GOOD: u64 = 1000;
const FINISH: Duration = Duration::from_secs(120);

/// One hostile test at a time: each runs a service process and a stream.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A plain AMQP client in confirm mode: the other producer.
struct Producer {
    channel: Channel,
    _connection: Connection,
}

impl Producer {
    async fn connect() -> Producer {
        let connection = Connection::connect(&shared_amqp_url(), ConnectionProperties::default())
            .await
            .expect("the producer's connection");
        let channel = connection.create_channel().await.expect("the producer's channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        Producer {
            channel,
            _connection: connection,
        }
    }

    /// Publishes persistently and waits for the broker's confirm.
    async fn publish(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(""),
                ShortString::from(queue),
                BasicPublishOptions::default(),
                body,
                properties.with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "the broker refused a hostile message: {confirm:?}");
    }

    /// Takes every message of `queue` (acking each), as the wire has them.
    async fn drain(&self, queue: &str) -> Vec<(Vec<u8>, BasicProperties)> {
        self.take(queue, true).await
    }

    /// Every message of `queue`, as the wire has them, left in the queue.
    async fn peek(&self, queue: &str) -> Vec<(Vec<u8>, BasicProperties)> {
        self.take(queue, false).await
    }

    async fn take(&self, queue: &str, remove: bool) -> Vec<(Vec<u8>, BasicProperties)> {
        let mut out = Vec::new();
        let mut held = Vec::new();
        while let Some(got) = self
            .channel
            .basic_get(ShortString::from(queue), BasicGetOptions::default())
            .await
            .expect("get")
        {
            let delivery = got.delivery;
            out.push((delivery.data.clone(), delivery.properties.clone()));
            if remove {
                delivery.acker.ack(BasicAckOptions::default()).await.expect("ack");
            } else {
                held.push(delivery.acker);
            }
        }
        for acker in held {
            acker
                .reject(lapin::options::BasicRejectOptions { requeue: true })
                .await
                .expect("requeue");
        }
        out
    }
}

fn headers(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in entries {
        table.insert(ShortString::from(name), value);
    }
    table
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref().and_then(|h| h.inner().get(name))
}

fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    match header(properties, name) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// A service process of `fault-service NAME`, with its sys-map and
/// settings, to start again after it died.
struct Service<'a> {
    f: &'a Fixture,
    name: &'static str,
    sysmap: String,
    env: Vec<(&'static str, String)>,
    process: ServiceProcess,
}

impl<'a> Service<'a> {
    async fn start(f: &'a Fixture, name: &'static str, env: Vec<(&'static str, String)>) -> Service<'a> {
        let wiring = json!({"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]});
        let sysmap = f.serve_sysmap(json!({ name: wiring })).await;
        let process = spawn(f, name, &sysmap, &env);
        Service {
            f,
            name,
            sysmap,
            env,
            process,
        }
    }

    /// Starts the process again (after it died).
    fn respawn(&mut self) {
        self.process = spawn(self.f, self.name, &self.sysmap, &self.env);
    }
}

/// `fault-service NAME` against `sysmap`: concurrency 4, prefetch 8, quick
/// retries (20 to 100 ms), 1 ms per request; `env` may override any of it.
fn spawn(f: &Fixture, name: &str, sysmap: &str, env: &[(&str, String)]) -> ServiceProcess {
    let settings = [stream_settings_retrying(20, 100), env.to_vec()].concat();
    ServiceProcess::spawn(FAULT_SERVICE, name, sysmap, f.dir.path(), &settings)
}

/// Declares the test's queues durable, as the service does.
async fn declare(broker: &dyn Broker, f: &Fixture) {
    for q in ["in", "out"] {
        broker.declare(&f.q(q), Durability::Durable).await.unwrap();
    }
    broker
        .declare(&format!("{}.dead-letter", f.q("in")), Durability::Durable)
        .await
        .unwrap();
}

/// Waits until `queue` holds `n` messages.
async fn wait_for_messages(broker: &dyn Broker, queue: &str, n: u64) {
    let start = Instant::now();
    loop {
        let have = broker.ready_count(queue).await.expect("count");
        if have >= n {
            return;
        }
        assert!(
            start.elapsed() < FINISH,
            "{queue} holds {have} of {n} messages after {FINISH:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dead_letter_queue(f: &Fixture) -> String {
    format!("{}.dead-letter", f.q("in"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_dead_lettered_once_or_dropped_and_the_connection_stays() {
    let _turn = TURN.lock().await;
    let _figures = Figures("oversized-header");
    let f = Fixture::new(Backend::Real, "oversized-header");
    let broker = test_broker(&shared_amqp_url()).await;
    declare(&*broker, &f).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    let producer = Producer::connect().await;
    let mut service = Service::start(&f, "hostile", vec![]).await;
    let inbound = f.q("in");

    send_ids(&*broker, &inbound, 0..GOOD / 2).await;
    // A malformed body with a 30 KiB header: its dead letter must carry the
    // header and the failure record.
    let junk_30k = "j".repeat(30 * 1024);
    producer
        .publish(
            &inbound,
            b"abc",
            BasicProperties::default().with_headers(headers(vec![("x-junk", text(&junk_30k))])),
        )
        .await;
    // A good ID with a 33 KiB tracestate and a 50 KiB legacy trace ID: both
    // over what is carried on, so dropped from its output, with a warning.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    producer
        .publish(
            &inbound,
            b"5000",
            BasicProperties::default().with_headers(headers(vec![
                ("traceparent", text(traceparent)),
                ("tracestate", text(&format!("k={}", "v".repeat(33 * 1024)))),
                ("x-slingshot-trace-id", text(&"t".repeat(50 * 1024))),
            ])),
        )
        .await;
    // A request that fails, whose headers fill a 128 KiB frame all but 100
    // bytes, leaving no room for its retry's counts and failure record:
    // dead-lettered at once as `oversized`, the header dropped from the dead
    // letter and named there.
    producer
        .publish(
            &inbound,
            b"1000001",
            BasicProperties::default().with_headers(headers(vec![
                ("x-huge", text(&"h".repeat(130_900))),
                ("x-small", AMQPValue::LongLongInt(7)),
            ])),
        )
        .await;
    send_ids(&*broker, &inbound, GOOD / 2..GOOD).await;

    let mut expected: Vec<u64> = (0..GOOD).collect();
    expected.push(5000);
    collector.wait_for(expected.len(), FINISH).await;
    let dlq = dead_letter_queue(&f);
    wait_for_messages(&*broker, &dlq, 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    service.process.assert_kept_its_connection();
    let log = service.process.log();
    assert!(
        log.contains("optional headers over their size limit are ignored"),
        "no warning:\n{log}"
    );

    let dead = producer.drain(&dlq).await;
    let mut by_body: BTreeMap<Vec<u8>, BasicProperties> = BTreeMap::new();
    for (body, properties) in &dead {
        assert!(
            by_body.insert(body.clone(), properties.clone()).is_none(),
            "dead-lettered twice: {body:?}"
        );
    }
    assert_eq!(
        by_body.len(),
        2,
        "bodies dead-lettered: {:?}",
        by_body.keys().collect::<Vec<_>>()
    );
    let abc = &by_body[&b"abc"[..]];
    assert_eq!(header_text(abc, "x-slingshot-error-kind").as_deref(), Some("malformed"));
    assert_eq!(
        header_text(abc, "x-junk").as_deref(),
        Some(junk_30k.as_str()),
        "the dead letter keeps the header"
    );
    let huge = &by_body[&b"1000001"[..]];
    assert_eq!(
        header_text(huge, "x-slingshot-error-kind").as_deref(),
        Some("oversized")
    );
    let error = header_text(huge, "x-slingshot-error").unwrap_or_default();
    assert!(
        error.contains("over the 131072-byte AMQP frame") && error.contains("x-huge"),
        "{error}"
    );
    assert!(error.contains("refused 1000001"), "the failure is named too: {error}");
    assert_eq!(header(huge, "x-huge"), None);
    assert_eq!(header(huge, "x-small"), Some(&AMQPValue::LongLongInt(7)));
    let dropped = header_text(huge, "x-slingshot-dropped-headers").unwrap_or_default();
    assert!(dropped.starts_with("x-huge ("), "{dropped}");

    let counts = collector.counts();
    let outcome = report("oversized-header", GOOD + 3, &expected, &counts, dead.len() as u64);
    service.process.stop().await;
    assert_eq!((outcome.lost, outcome.duplicates, outcome.dead_lettered), (0, 0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_bodies_are_malformed_unread_and_the_log_shows_a_prefix() {
    let _turn = TURN.lock().await;
    let _figures = Figures("huge-body");
    let f = Fixture::new(Backend::Real, "huge-body");
    let broker = test_broker(&shared_amqp_url()).await;
    declare(&*broker, &f).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    let producer = Producer::connect().await;
    let mut service = Service::start(&f, "hostile", vec![("SLINGSHOT_LOG", "info".to_string())]).await;
    let inbound = f.q("in");

    send_ids(&*broker, &inbound, 0..GOOD / 2).await;
    let digits = vec![b'7'; 1 << 20];
    let noise: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let spaced = format!("{}42", " ".repeat(100)).into_bytes();
    let bad: Vec<&[u8]> = vec![&digits, &noise, &spaced];
    for body in &bad {
        producer.publish(&inbound, body, BasicProperties::default()).await;
    }
    send_ids(&*broker, &inbound, GOOD / 2..GOOD).await;

    let expected: Vec<u64> = (0..GOOD).collect();
    collector.wait_for(expected.len(), FINISH).await;
    let dlq = dead_letter_queue(&f);
    wait_for_messages(&*broker, &dlq, bad.len() as u64).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    service.process.assert_kept_its_connection();

    let dead = producer.drain(&dlq).await;
    assert_eq!(dead.len(), bad.len(), "each huge body dead-lettered once");
    for body in &bad {
        let (_, properties) = dead
            .iter()
            .find(|(b, _)| b.as_slice() == *body)
            .unwrap_or_else(|| panic!("a body of {} bytes is missing or changed", body.len()));
        assert_eq!(
            header_text(properties, "x-slingshot-error-kind").as_deref(),
            Some("malformed")
        );
        let error = header_text(properties, "x-slingshot-error").unwrap_or_default();
        assert!(error.starts_with(&format!("body is {} bytes", body.len())), "{error}");
        assert!(
            error.len() < 300,
            "the error quotes a prefix only: {} bytes",
            error.len()
        );
    }
    // Logged at info level: every line about them is short.
    let log = service.process.log();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
    assert!(
        log.contains("(1048576 bytes)"),
        "the log names the size:\n{}",
        &log[..log.len().min(4000)]
    );

    let outcome = report("huge-body", GOOD + 3, &expected, &collector.counts(), dead.len() as u64);
    service.process.stop().await;
    assert_eq!((outcome.lost, outcome.duplicates), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_the_process_is_dead_lettered_after_three_crashes() {
    let _turn = TURN.lock().await;
    let _figures = Figures("crash-loop");
    let f = Fixture::new(Backend::Real, "crash-loop");
    let broker = test_broker(&shared_amqp_url()).await;
    declare(&*broker, &f).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    // An orchestrator's restart policy: start it again whenever it dies.
    let mut service = Service::start(&f, "crasher", vec![("SLINGSHOT_MAX_CRASHES", "3".to_string())]).await;
    send_ids(&*broker, &f.q("in"), 0..GOOD).await;

    let expected: Vec<u64> = (0..GOOD).filter(|id| id % 1000 != 500).collect();
    let dlq = dead_letter_queue(&f);
    let mut restarts = 0;
    let start = Instant::now();
    while collector.unique() < expected.len() || broker.ready_count(&dlq).await.expect("count") < 1 {
        assert!(
            start.elapsed() < FINISH,
            "after {restarts} restarts, {} of {} IDs arrived and the dead-letter queue holds {}:\n{}",
            collector.unique(),
            expected.len(),
            broker.ready_count(&dlq).await.unwrap_or(0),
            service.process.log()
        );
        if service.process.exited().is_some() {
            restarts += 1;
            assert!(
                restarts <= 10,
                "restarted {restarts} times: the crash loop is not broken:\n{}",
                service.process.log()
            );
            service.respawn();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dead = slingshot_tests::drain(&*broker, &dlq).await;
    assert_eq!(dead.len(), 1, "exactly the crasher is dead-lettered");
    assert_eq!(&dead[0].message.body[..], b"500");
    let kind = dead[0]
        .message
        .headers
        .get("x-slingshot-error-kind")
        .and_then(|v| v.as_str());
    assert_eq!(kind, Some("crash-loop"));
    let error = dead[0]
        .message
        .headers
        .get("x-slingshot-error")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("died 3 times"), "{error}");
    assert_eq!(restarts, 3, "one restart per crash:\n{}", service.process.log());
    let outcome = report("crash-loop", GOOD, &expected, &collector.counts(), dead.len() as u64);
    service.process.stop().await;
    assert_eq!(outcome.lost, 0);
    // Each crash returns what was in flight and prefetched (at most the
    // prefetch window); they are processed again, not counted as crashes.
    assert!(outcome.duplicates <= 3 * 8, "{} duplicates", outcome.duplicates);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_dead_letters_and_replays_keep_every_header_and_property() {
    let _turn = TURN.lock().await;
    let _figures = Figures("metadata");
    let f = Fixture::new(Backend::Real, "metadata");
    let broker = test_broker(&shared_amqp_url()).await;
    declare(&*broker, &f).await;
    let producer = Producer::connect().await;
    let mut service = Service::start(&f, "hostile", vec![]).await;
    let inbound = f.q("in");

    let mut nested = FieldTable::default();
    nested.insert(ShortString::from("n"), AMQPValue::ShortInt(-2));
    let sent_headers = headers(vec![
        ("x-text", text("é text")),
        ("x-bool", AMQPValue::Boolean(true)),
        ("x-i8", AMQPValue::ShortShortInt(-8)),
        ("x-u8", AMQPValue::ShortShortUInt(200)),
        ("x-i16", AMQPValue::ShortInt(-300)),
        ("x-i32", AMQPValue::LongInt(-70_000)),
        ("x-i64", AMQPValue::LongLongInt(-(1 << 40))),
        ("x-f32", AMQPValue::Float(1.5)),
        ("x-f64", AMQPValue::Double(-2.25)),
        ("x-ts", AMQPValue::Timestamp(1_700_000_000)),
        (
            "x-array",
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongLongInt(1), text("two")])),
        ),
        ("x-table", AMQPValue::FieldTable(nested)),
        ("x-bytes", AMQPValue::ByteArray(vec![0u8, 1, 2].into())),
        ("x-void", AMQPValue::Void),
    ]);
    let properties = BasicProperties::default()
        .with_content_type(ShortString::from("text/plain"))
        .with_content_encoding(ShortString::from("identity"))
        .with_priority(3)
        .with_correlation_id(ShortString::from("corr-42"))
        .with_reply_to(ShortString::from("replies"))
        .with_expiration(ShortString::from("3600000"))
        .with_message_id(ShortString::from("msg-42"))
        .with_timestamp(1_700_000_123)
        .with_type(ShortString::from("order"))
        .with_app_id(ShortString::from("producer-app"))
        .with_headers(sent_headers.clone());
    producer.publish(&inbound, b"1000042", properties.clone()).await;

    let dlq = dead_letter_queue(&f);
    wait_for_messages(&*broker, &dlq, 1).await;
    service.process.assert_kept_its_connection();
    service.process.stop().await;
    let dead = producer.peek(&dlq).await;
    assert_eq!(dead.len(), 1);
    let (body, got) = &dead[0];
    assert_eq!(body, b"1000042");
    let keep = |p: &BasicProperties| {
        (
            p.content_type().clone(),
            p.content_encoding().clone(),
            *p.priority(),
            p.correlation_id().clone(),
            p.reply_to().clone(),
            p.message_id().clone(),
            *p.timestamp(),
            p.kind().clone(),
            p.app_id().clone(),
        )
    };
    assert_eq!(
        keep(got),
        keep(&properties),
        "every property survives the retries and the dead letter"
    );
    assert_eq!(*got.expiration(), None, "a dead letter does not expire");
    assert_eq!(
        header_text(got, "x-slingshot-original-expiration").as_deref(),
        Some("3600000")
    );
    for (name, value) in sent_headers.inner() {
        assert_eq!(header(got, name.as_str()), Some(value), "header {name} with its type");
    }
    assert_eq!(
        header_text(got, "x-slingshot-error-kind").as_deref(),
        Some("process-error")
    );
    assert_eq!(header(got, "x-delivery-count"), None);

    // Replayed: the same message again, its expiration back.
    let replay = service_command(FAULT_SERVICE, "hostile", &service_sysmap(&f).await, f.dir.path(), &[])
        .args(["dead-letters", "replay", "--all"])
        .status()
        .await
        .expect("replay");
    assert!(replay.success(), "replay exited with {replay}");
    let replayed = producer.drain(&inbound).await;
    assert_eq!(replayed.len(), 1);
    let (body, back) = &replayed[0];
    assert_eq!(body, b"1000042");
    assert_eq!(keep(back), keep(&properties));
    assert_eq!(back.expiration().as_ref().map(|e| e.as_str()), Some("3600000"));
    for (name, value) in sent_headers.inner() {
        assert_eq!(
            header(back, name.as_str()),
            Some(value),
            "header {name} after the replay"
        );
    }
    assert_eq!(header(back, "x-slingshot-error"), None);
    slingshot_tests::fault_report::publish(&format!(
        "fault=metadata broker={} sent=1 delivered=1 lost=0 duplicates=0 dead_lettered=1",
        slingshot_tests::fault_report::broker()
    ));
}

/// The sys-map of the test's `hostile` service again (the first server may
/// be gone with its service).
async fn service_sysmap(f: &Fixture) -> String {
    let wiring = json!({"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]});
    f.serve_sysmap(json!({ "hostile": wiring })).await
}
