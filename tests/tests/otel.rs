//! Tracing across services: requests through two services on the real RabbitMQ, S3 and PostgreSQL,
//! their spans exported over OTLP/HTTP to a receiver in the test, their W3C headers read off the
//! wire with a raw AMQP client.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::{json, Value};
use slingshot::broker::Durability;
use slingshot_tests::original::Feeder;
use slingshot_tests::otlp::{OtlpReceiver, ReceivedSpan};
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::{service_command, shared_amqp_url, test_broker, Backend, Fixture};

/// A message as it was on the wire: body and text headers.
#[derive(Debug, Clone)]
struct Wire {
    body: String,
    headers: BTreeMap<String, String>,
}

impl Wire {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Takes `n` messages from `queue` with `basic.get`, waiting up to a minute.
async fn take(feeder: &Feeder, queue: &str, n: usize) -> Vec<Wire> {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{queue}: {} of {n} messages: {got:?}",
            got.len()
        );
        let message = feeder
            .channel
            .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        let Some(message) = message else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let delivery = message.delivery;
        let headers = delivery
            .properties
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .inner()
                    .iter()
                    .filter_map(|(k, v)| match v {
                        AMQPValue::LongString(s) => Some((
                            k.as_str().to_string(),
                            String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        )),
                        AMQPValue::ShortString(s) => Some((k.as_str().to_string(), s.as_str().to_string())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        got.push(Wire {
            body: String::from_utf8_lossy(&delivery.data).into_owned(),
            headers,
        });
    }
    got.sort_by(|a, b| a.body.cmp(&b.body));
    got
}

/// Publishes `id` to `queue` with `headers`, as an upstream service would.
async fn publish(feeder: &Feeder, queue: &str, id: u64, headers: &[(&str, &str)]) {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert(
            ShortString::from(*k),
            AMQPValue::LongString(LongString::from(v.to_string())),
        );
    }
    feeder
        .channel
        .basic_publish(
            ShortString::from(""),
            ShortString::from(queue),
            Default::default(),
            id.to_string().as_bytes(),
            BasicProperties::default().with_headers(table),
        )
        .await
        .expect("publish")
        .await
        .expect("publish confirmed");
}

/// The one span of `service` named `name` in `trace` whose parent is `parent`
/// (any parent when `None`).
fn one<'a>(
    spans: &'a [ReceivedSpan],
    trace: &str,
    service: &str,
    name: &str,
    parent: Option<&str>,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == trace && s.service == service && s.name == name)
        .filter(|s| parent.is_none_or(|p| s.parent_span_id == p))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{service} {name:?} under {parent:?} in trace {trace}: {found:#?}\nall of the trace: {:#?}",
        spans.iter().filter(|s| s.trace_id == trace).collect::<Vec<_>>()
    );
    found[0]
}

fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_requests_through_two_services_to_an_otlp_receiver() {
    let f = Fixture::new(Backend::Real, "otel");
    let receiver = OtlpReceiver::start().await;
    f.create_tables(&["CREATE TABLE otel_records (id BIGINT PRIMARY KEY, size BIGINT NOT NULL)"])
        .await;
    let objects = f.bucket("objects");
    let (input, mid, tap, out) = (f.q("in"), f.q("mid"), f.q("tap"), f.q("out"));
    let dead = format!("{mid}.dead-letter");
    let sysmap = f
        .serve_sysmap(json!({
            "ingest": {"in": input, "out": [{"case": true, "queues": [mid, tap]}]},
            "ingest/out": objects,
            "record": {"in": mid, "out": [{"case": true, "queues": [out]}]},
            "record/in": objects,
        }))
        .await;
    let broker = test_broker(&shared_amqp_url()).await;
    for queue in [&input, &mid, &tap, &out, &dead] {
        broker.declare(queue, Durability::Durable).await.unwrap();
    }
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ("SLINGSHOT_MAX_ATTEMPTS", "2".to_string()),
        ("SLINGSHOT_RETRY_BASE_MS", "20".to_string()),
        ("SLINGSHOT_RETRY_MAX_MS", "100".to_string()),
        ("SLINGSHOT_LOG", "info".to_string()),
        ("SLINGSHOT_LOG_FORMAT", "json".to_string()),
    ];
    let binary = env!("CARGO_BIN_EXE_otel-service");
    let ingest = ServiceProcess::spawn(binary, "ingest", &sysmap, f.dir.path(), &env);
    let record = ServiceProcess::spawn(binary, "record", &sysmap, f.dir.path(), &env);

    // 42 comes from an upstream service that traces (W3C headers), 43 from an
    // older slingshot (legacy trace ID only), 113 with no trace at all; 113
    // fails in `record`, is retried once and dead-lettered.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let upstream_trace = format!("{:032x}", nanos | (1 << 120));
    let upstream_span = "00f067aa0ba902b7";
    let legacy = format!("{:032x}", nanos | (2 << 120));
    let feeder = Feeder::connect(&shared_amqp_url()).await.unwrap();
    feeder.channel.confirm_select(Default::default()).await.unwrap();
    let upstream = traceparent(&upstream_trace, upstream_span);
    publish(
        &feeder,
        &input,
        42,
        &[("traceparent", &upstream), ("tracestate", "upstream=1")],
    )
    .await;
    publish(&feeder, &input, 43, &[("x-slingshot-trace-id", &legacy)]).await;
    publish(&feeder, &input, 113, &[]).await;

    let tapped = take(&feeder, &tap, 3).await;
    let outputs = take(&feeder, &out, 2).await;
    let dead_letters = take(&feeder, &dead, 1).await;
    ingest.stop().await;
    let record_log = record.stop().await;
    // Sorted as text: 113, 42, 43.
    let bodies = |wires: &[Wire]| wires.iter().map(|w| w.body.clone()).collect::<Vec<_>>();
    assert_eq!(bodies(&tapped), ["113", "42", "43"]);
    assert_eq!(bodies(&outputs), ["42", "43"]);
    assert_eq!(bodies(&dead_letters), ["113"]);

    // The third trace is the one `ingest` started: read its ID off the wire.
    let fresh = tapped[0]
        .header("traceparent")
        .split('-')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert_eq!(fresh.len(), 32, "{:?}", tapped[0]);
    let traces = [upstream_trace.clone(), legacy.clone(), fresh.clone()];
    // Spans come in batches; both services flushed theirs when they stopped.
    let spans = receiver
        .wait_until(Duration::from_secs(20), |spans| {
            traces
                .iter()
                .all(|t| spans.iter().filter(|s| &s.trace_id == t).count() >= 10)
        })
        .await;

    // Request 42: one trace, continuing the upstream's, across both services.
    let t = upstream_trace.as_str();
    println!("trace {t}, as the receiver got it:");
    for s in spans.iter().filter(|s| s.trace_id == t) {
        println!(
            "  {:<7} {:<9} {:<48} span {} parent {:<16} {:?}",
            s.service,
            format!("{:?}", s.kind),
            s.name,
            s.span_id,
            s.parent_span_id,
            s.attributes
                .iter()
                .filter(|(k, _)| k.starts_with("messaging.") || k.starts_with("db.") || k.starts_with("aws."))
                .collect::<Vec<_>>()
        );
    }
    let consumed = one(&spans, t, "ingest", &format!("process {input}"), Some(upstream_span));
    assert_eq!(consumed.kind, SpanKind::Consumer);
    for (key, value) in [
        ("messaging.system", "rabbitmq"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", input.as_str()),
        ("messaging.rabbitmq.destination.routing_key", input.as_str()),
        ("messaging.message.body.size", "2"),
        ("service", "ingest"),
        ("request", "42"),
    ] {
        assert_eq!(consumed.attr(key), value, "{key} of {consumed:#?}");
    }
    assert!(!consumed.error);
    let call = one(&spans, t, "ingest", "call ingest", Some(&consumed.span_id));
    assert_eq!(call.kind, SpanKind::Internal);
    let put = one(&spans, t, "ingest", "S3.PutObject", Some(&consumed.span_id));
    assert_eq!(put.kind, SpanKind::Client);
    assert_eq!(
        (put.attr("aws.s3.bucket"), put.attr("aws.s3.key")),
        (objects.as_str(), "42")
    );
    let to_mid = one(&spans, t, "ingest", &format!("publish {mid}"), Some(&consumed.span_id));
    let to_tap = one(&spans, t, "ingest", &format!("publish {tap}"), Some(&consumed.span_id));
    for (producer, queue) in [(to_mid, &mid), (to_tap, &tap)] {
        assert_eq!(producer.kind, SpanKind::Producer);
        assert_eq!(producer.attr("messaging.system"), "rabbitmq");
        assert_eq!(producer.attr("messaging.operation.type"), "send");
        assert_eq!(producer.attr("messaging.destination.name"), "", "the default exchange");
        assert_eq!(
            producer.attr("messaging.rabbitmq.destination.routing_key"),
            queue.as_str()
        );
    }
    // On the wire: the tapped copy carries its producer span's context and
    // the upstream's trace state; no legacy header, which it did not carry.
    let wire = &tapped[1];
    assert_eq!(wire.header("traceparent"), traceparent(t, &to_tap.span_id), "{wire:?}");
    assert_eq!(wire.header("tracestate"), "upstream=1");
    assert!(!wire.headers.contains_key("x-slingshot-trace-id"), "{wire:?}");
    // The second service continues the trace under the publish to its queue.
    let received = one(&spans, t, "record", &format!("process {mid}"), Some(&to_mid.span_id));
    assert_eq!(received.kind, SpanKind::Consumer);
    assert_eq!(received.attr("messaging.destination.name"), mid);
    let call = one(&spans, t, "record", "call record", Some(&received.span_id));
    let get = one(&spans, t, "record", "S3.GetObject", Some(&call.span_id));
    assert_eq!((get.kind, get.attr("aws.s3.key")), (SpanKind::Client, "42"));
    let insert = one(&spans, t, "record", "INSERT", Some(&call.span_id));
    assert_eq!(insert.kind, SpanKind::Client);
    assert_eq!(insert.attr("db.system.name"), "postgresql");
    assert_eq!(
        insert.attr("db.query.text"),
        "INSERT INTO otel_records (id, size) VALUES ($1, $2)",
        "the SQL without its bound values"
    );
    let to_out = one(&spans, t, "record", &format!("publish {out}"), Some(&received.span_id));
    assert_eq!(outputs[0].header("traceparent"), traceparent(t, &to_out.span_id));
    assert_eq!(
        spans.iter().filter(|s| s.trace_id == t).count(),
        10,
        "five spans in each service"
    );

    // Request 43: the legacy trace ID goes on as the W3C trace ID.
    let consumed = one(&spans, &legacy, "ingest", &format!("process {input}"), None);
    assert_eq!(consumed.attr("request"), "43");
    assert_ne!(consumed.parent_span_id, "", "under a parent derived from the legacy ID");
    let to_mid = one(
        &spans,
        &legacy,
        "ingest",
        &format!("publish {mid}"),
        Some(&consumed.span_id),
    );
    one(
        &spans,
        &legacy,
        "record",
        &format!("process {mid}"),
        Some(&to_mid.span_id),
    );
    assert_eq!(
        tapped[2].header("x-slingshot-trace-id"),
        legacy,
        "the legacy header travels unchanged"
    );
    assert_eq!(
        outputs[1].header("traceparent").split('-').nth(1),
        Some(legacy.as_str())
    );

    // Request 113: a new trace; the failure, the retry and the dead letter are in it.
    let consumed = one(&spans, &fresh, "ingest", &format!("process {input}"), Some(""));
    let to_mid = one(
        &spans,
        &fresh,
        "ingest",
        &format!("publish {mid}"),
        Some(&consumed.span_id),
    );
    let first = one(
        &spans,
        &fresh,
        "record",
        &format!("process {mid}"),
        Some(&to_mid.span_id),
    );
    assert!(first.error, "{first:#?}");
    assert_eq!(first.attr("error.type"), "process-error");
    assert_eq!(first.attr("attempt"), "1");
    assert!(
        first.events.iter().any(|e| e == "failed; will retry"),
        "{:?}",
        first.events
    );
    let retry = one(
        &spans,
        &fresh,
        "record",
        &format!("publish {mid}"),
        Some(&first.span_id),
    );
    assert_eq!(retry.kind, SpanKind::Producer);
    let second = one(
        &spans,
        &fresh,
        "record",
        &format!("process {mid}"),
        Some(&retry.span_id),
    );
    assert_eq!(second.attr("attempt"), "2");
    assert!(second.error);
    for event in ["giving up: dead-lettering", "dead-lettered"] {
        assert!(second.events.iter().any(|e| e == event), "{event}: {:?}", second.events);
    }
    let dead_letter = one(
        &spans,
        &fresh,
        "record",
        &format!("publish {dead}"),
        Some(&second.span_id),
    );
    assert_eq!(
        dead_letters[0].header("traceparent"),
        traceparent(&fresh, &dead_letter.span_id),
        "a replay continues the trace"
    );

    // Log lines carry the trace and span IDs of their request.
    let lines: Vec<Value> = record_log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let routed = lines
        .iter()
        .find(|e| e["fields"]["message"] == "routed" && e["span"]["request"] == "42")
        .expect("a routed line for 42");
    let consumer_42 = one(&spans, t, "record", &format!("process {mid}"), None);
    assert_eq!(routed["span"]["trace_id"], t);
    assert_eq!(routed["span"]["span_id"], consumer_42.span_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_otlp_endpoint_messages_and_logs_still_carry_the_trace() {
    let f = Fixture::new(Backend::Real, "otel-off");
    let objects = f.bucket("objects");
    let (input, mid) = (f.q("in"), f.q("mid"));
    let sysmap = f
        .serve_sysmap(json!({
            "ingest": {"in": input, "out": [{"case": true, "queues": [mid]}]},
            "ingest/out": objects,
        }))
        .await;
    let broker = test_broker(&shared_amqp_url()).await;
    for queue in [&input, &mid] {
        broker.declare(queue, Durability::Durable).await.unwrap();
    }
    // Every output carries the legacy trace header too, as asked.
    let env = [
        ("SLINGSHOT_LOG", "info".to_string()),
        ("SLINGSHOT_LOG_FORMAT", "json".to_string()),
        ("SLINGSHOT_LEGACY_TRACE_HEADER", "true".to_string()),
    ];
    let mut command = service_command(
        env!("CARGO_BIN_EXE_otel-service"),
        "ingest",
        &sysmap,
        f.dir.path(),
        &env,
    );
    command
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let ingest = ServiceProcess::start(command, "ingest", f.dir.path());
    let feeder = Feeder::connect(&shared_amqp_url()).await.unwrap();
    feeder.channel.confirm_select(Default::default()).await.unwrap();
    let (trace, parent) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    publish(
        &feeder,
        &input,
        7,
        &[("traceparent", &traceparent(trace, parent)), ("tracestate", "x=1")],
    )
    .await;
    publish(&feeder, &input, 8, &[]).await;
    let sent = take(&feeder, &mid, 2).await;
    let ingest_log = ingest.stop().await;

    // 7 continues the upstream trace under a new span; 8 starts a sampled trace.
    let fields: Vec<&str> = sent[0].header("traceparent").split('-').collect();
    assert_eq!(sent[0].body, "7");
    assert_eq!(
        (fields.len(), fields[0], fields[1], fields[3]),
        (4, "00", trace, "01"),
        "{sent:?}"
    );
    assert!(fields[2].len() == 16 && fields[2] != parent && fields[2] != "0000000000000000");
    assert_eq!(sent[0].header("tracestate"), "x=1");
    let fresh: Vec<&str> = sent[1].header("traceparent").split('-').collect();
    assert_eq!((fresh.len(), fresh[1].len(), fresh[3]), (4, 32, "01"), "{sent:?}");
    assert_ne!(fresh[1], trace);
    assert_eq!(
        sent[1].header("x-slingshot-trace-id"),
        fresh[1],
        "asked for on every output"
    );
    assert_eq!(sent[0].header("x-slingshot-trace-id"), trace);

    // Log lines carry the request's trace ID and its own span ID.
    let lines: Vec<Value> = ingest_log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let routed = |request: &str| {
        lines
            .iter()
            .find(|e| e["fields"]["message"] == "routed" && e["span"]["request"] == request)
            .unwrap_or_else(|| panic!("no routed line for {request}"))
            .clone()
    };
    let (seven, eight) = (routed("7"), routed("8"));
    assert_eq!(seven["span"]["trace_id"], trace);
    assert_eq!(eight["span"]["trace_id"], fresh[1]);
    let span_id = seven["span"]["span_id"].as_str().unwrap_or_default();
    assert!(
        span_id.len() == 16 && span_id != parent && span_id != fields[2],
        "{seven}"
    );
}
