//! Operating a service: metrics after a known workload, readiness across a
//! broker restart, `check` on good and broken configurations, and one
//! request's trace followed through two services' logs.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slingshot::broker::Durability;
use slingshot_tests::private::PrivateRabbit;
use slingshot_tests::probe::{free_port, get, wait_status};
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::{service_command, shared_amqp_url, test_broker, Backend, Collector, Fixture};
use tokio::process::Command;

/// `fault-service NAME` with quick retries; `env` may override anything.
fn service(name: &str, sysmap: &str, dir: &Path, env: &[(&str, String)]) -> Command {
    let mut settings = vec![
        ("SLINGSHOT_RETRY_BASE_MS", "20".to_string()),
        ("SLINGSHOT_RETRY_MAX_MS", "100".to_string()),
        ("SLINGSHOT_LOG", "info".to_string()),
    ];
    settings.extend(env.iter().cloned());
    service_command(env!("CARGO_BIN_EXE_fault-service"), name, sysmap, dir, &settings)
}

/// `fault-service NAME` started with [`service`].
fn spawn(name: &str, sysmap: &str, dir: &Path, env: &[(&str, String)]) -> ServiceProcess {
    ServiceProcess::start(service(name, sysmap, dir, env), name, dir)
}

/// The value of one sample line `name{labels} value` of a Prometheus page.
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{page}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload() {
    let f = Fixture::new(Backend::Real, "metrics");
    let sysmap = f
        .serve_sysmap(json!({"poison": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}}))
        .await;
    let broker = test_broker(&shared_amqp_url()).await;
    for q in ["in", "out"] {
        broker.declare(&f.q(q), Durability::Durable).await.unwrap();
    }
    let port = free_port();
    let child = spawn(
        "poison",
        &sysmap,
        f.dir.path(),
        &[("SLINGSHOT_HTTP_ADDR", format!("127.0.0.1:{port}"))],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_status(&format!("{base}/readyz"), 200, Duration::from_secs(30)).await;
    assert_eq!(
        get(&format!("{base}/healthz")).await.unwrap(),
        (200, "ok\n".to_string())
    );

    // 1000..1100: 1013 panics and 1017 fails (3 attempts each, then dead
    // letters), 1019 returns an unrouted `false`, the other 97 route `true`.
    let collector = Collector::start(broker.clone(), f.q("out"));
    for id in 1000..1100 {
        broker
            .publish(&f.q("in"), slingshot::broker::Message::id(id))
            .await
            .unwrap();
    }
    collector.wait_for(97, Duration::from_secs(60)).await;
    let dlq = slingshot::protocol::dead_letter_queue(&f.q("in"));
    let start = Instant::now();
    while broker.ready_count(&dlq).await.unwrap() < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "dead letters missing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, page) = get(&format!("{base}/metrics")).await.unwrap();
    assert_eq!(status, 200);
    let s = "{service=\"poison\"}";
    assert_eq!(
        sample(&page, &format!("slingshot_messages_consumed_total{s}")),
        104.0,
        "100 + 4 retries"
    );
    assert_eq!(sample(&page, &format!("slingshot_messages_acked_total{s}")), 98.0);
    assert_eq!(sample(&page, &format!("slingshot_messages_retried_total{s}")), 4.0);
    assert_eq!(
        sample(&page, &format!("slingshot_messages_dead_lettered_total{s}")),
        2.0
    );
    assert_eq!(sample(&page, &format!("slingshot_outputs_published_total{s}")), 97.0);
    assert_eq!(sample(&page, &format!("slingshot_in_flight{s}")), 0.0);
    assert_eq!(sample(&page, &format!("slingshot_ready{s}")), 1.0);
    let routed = format!(
        "slingshot_outputs_routed_total{{service=\"poison\",case=\"true\",case_kind=\"bool\",queue=\"{}\"}}",
        f.q("out")
    );
    assert_eq!(sample(&page, &routed), 97.0);
    assert_eq!(
        sample(
            &page,
            "slingshot_outputs_unrouted_total{service=\"poison\",case=\"false\",case_kind=\"bool\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&page, "slingshot_process_duration_seconds_count{service=\"poison\"}"),
        104.0
    );
    assert_eq!(
        sample(&page, "slingshot_publish_confirm_seconds_count{service=\"poison\"}"),
        97.0 + 4.0 + 2.0 - 6.0
    );
    child.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_broker() {
    let rabbit = std::sync::Arc::new(tokio::task::spawn_blocking(PrivateRabbit::start).await.unwrap());
    let f = Fixture::new(Backend::Real, "readiness");
    let private =
        json!({"host": ["127.0.0.1"], "port": [PrivateRabbit::PORT], "username": ["guest"], "pass": ["test/rabbitmq"]});
    let sysmap = f
        .serve_sysmap(
            json!({"relay": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}, "rabbitmq": private}),
        )
        .await;
    let port = free_port();
    let child = spawn(
        "relay",
        &sysmap,
        f.dir.path(),
        &[("SLINGSHOT_HTTP_ADDR", format!("127.0.0.1:{port}"))],
    );
    let ready = format!("http://127.0.0.1:{port}/readyz");
    wait_status(&ready, 200, Duration::from_secs(30)).await;

    let r = rabbit.clone();
    tokio::task::spawn_blocking(move || r.stop_app()).await.unwrap();
    wait_status(&ready, 503, Duration::from_secs(30)).await;
    let (_, why) = get(&ready).await.unwrap();
    assert!(why.contains("not consuming: relay"), "{why}");
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/healthz")).await.unwrap().0,
        200,
        "still alive"
    );

    let r = rabbit.clone();
    tokio::task::spawn_blocking(move || r.start_app()).await.unwrap();
    wait_status(&ready, 200, Duration::from_secs(60)).await;
    child.stop().await;
}

/// Runs `fault-service NAME check` and returns its exit code and output.
async fn check(name: &str, sysmap: &str, dir: &Path, env: &[(&str, String)]) -> (i32, String) {
    let output = service(name, sysmap, dir, env)
        .arg("check")
        .stdout(Stdio::piped())
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_good_configuration_and_names_each_problem() {
    let f = Fixture::new(Backend::Real, "check");
    let bucket = f.bucket("out");
    let good = json!({
        "objects": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]},
        "objects/out": bucket,
        "records": {"in": f.q("rin"), "out": [{"case": true, "queues": [f.q("rout")]}]},
    });
    let sysmap = f.serve_sysmap(good.clone()).await;
    let dir = f.dir.path();

    let (code, out) = check("objects", &sysmap, dir, &[]).await;
    assert_eq!(code, 0, "{out}");
    for needle in [
        "ok      sys-map",
        "ok      wiring",
        "ok      broker: RabbitMQ",
        "ok      bucket \"out\"",
        "ok      queue mode: durable",
        "ok      queue type: classic",
        "ok      broker version: RabbitMQ ",
        "all 11 checks passed",
    ] {
        assert!(out.contains(needle), "lacks {needle:?}:\n{out}");
    }
    assert!(out.contains("flowchart LR"), "prints the topology:\n{out}");
    let (code, out) = check("records", &sysmap, dir, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok      database: postgres://"), "{out}");
    assert!(!out.contains("once tables"), "a plain service has none:\n{out}");
    // In once mode, `check` creates the inbox and outbox if missing, and
    // writes and reads a probe row.
    let (code, out) = check("records", &sysmap, dir, &[("SLINGSHOT_ONCE", "true".into())]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok      once tables: slingshot_records_") && out.contains("(0 outbox rows)"),
        "{out}"
    );

    let broken = |patch: Value| {
        let mut endpoints = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            endpoints[k] = v.clone();
        }
        endpoints
    };
    // (service, sys-map patch, extra environment, what the report must say)
    type Broken<'a> = (&'a str, Value, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Broken> = vec![
        (
            "objects",
            json!({"objects": {"in": f.q("in"), "out": [{"case": 7, "queues": []}]}}),
            vec![],
            "FAILED  routes: case 7 (to []) can never match: `objects` returns cases of bool",
        ),
        // (A name with a dot: the fixture creates only dotless buckets.)
        (
            "objects",
            json!({"objects/out": format!("{}.never", f.bucket("x"))}),
            vec![],
            "FAILED  bucket \"out\"",
        ),
        (
            "objects",
            json!({"rabbitmq": {"host": ["127.0.0.1"], "port": [5672], "username": ["guest"], "pass": ["test/wrong"]}}),
            vec![("SLINGSHOT_SECRET_TEST_WRONG", "not-the-password".to_string())],
            "FAILED  broker",
        ),
        (
            "objects",
            json!({"rabbitmq": {"host": ["127.0.0.1"], "port": [5672], "username": ["guest"], "pass": ["test/absent"]}}),
            vec![],
            "secret \"test/absent\" not found; tried $SLINGSHOT_SECRET_TEST_ABSENT is not set",
        ),
        (
            "objects",
            json!({"object-storage": {"host": ["http://127.0.0.1:3900"], "pass:access-key": ["test/rabbitmq"]}}),
            vec![],
            "FAILED  object storage: sys-map: sys-map",
        ),
        (
            "records",
            json!({"db": {"host": ["127.0.0.1"], "port": [1], "username": ["slingshot"], "database": ["slingshot"], "pass": ["test/postgres"]}}),
            vec![],
            "FAILED  database: database: cannot connect to postgres://slingshot@127.0.0.1:1/slingshot",
        ),
    ];
    for (name, patch, env, needle) in cases {
        let sysmap = f.serve_sysmap(broken(patch.clone())).await;
        let (code, out) = check(name, &sysmap, dir, &env).await;
        assert_eq!(code, 1, "{patch} should fail:\n{out}");
        assert!(out.contains(needle), "{patch}: lacks {needle:?}:\n{out}");
        assert!(out.contains("checks failed"), "{out}");
    }
    let (code, out) = check("objects", "http://127.0.0.1:9", dir, &[]).await;
    assert_eq!(code, 1);
    assert!(
        out.contains(
            "FAILED  sys-map: sys-map http://127.0.0.1:9: cannot read \"objects\": GET http://127.0.0.1:9/objects: cannot connect"
        ) && out.contains("is the sys-map running, and reachable from here?"),
        "{out}"
    );
    let (code, out) = check("objects", &f.serve_sysmap(json!({})).await, dir, &[]).await;
    assert_eq!(code, 1);
    assert!(
        out.contains("no endpoint \"objects\"") && out.contains("add the service's endpoint to the sys-map"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_can_be_followed_through_two_services_by_its_trace_id() {
    let f = Fixture::new(Backend::Real, "trace");
    let sysmap = f
        .serve_sysmap(json!({
            "relay": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("mid")]}]},
            "relay2": {"in": f.q("mid"), "out": [{"case": true, "queues": [f.q("out")]}]},
        }))
        .await;
    let broker = test_broker(&shared_amqp_url()).await;
    for q in ["in", "mid", "out"] {
        broker.declare(&f.q(q), Durability::Durable).await.unwrap();
    }
    let json_logs = [
        ("SLINGSHOT_LOG_FORMAT", "json".to_string()),
        ("SLINGSHOT_LOG", "info".to_string()),
    ];
    let first = spawn("relay", &sysmap, f.dir.path(), &json_logs);
    let second = spawn("relay2", &sysmap, f.dir.path(), &json_logs);
    let collector = Collector::start(broker.clone(), f.q("out"));
    for id in [41, 42, 43] {
        broker
            .publish(&f.q("in"), slingshot::broker::Message::id(id))
            .await
            .unwrap();
    }
    collector.wait_for(3, Duration::from_secs(30)).await;
    let logs = (first.stop().await, second.stop().await);

    let events = |log: &str| -> Vec<Value> { log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect() };
    let routed_trace = |events: &[Value], request: &str| -> String {
        events
            .iter()
            .find(|e| e["fields"]["message"] == "routed" && e["span"]["request"] == request)
            .and_then(|e| e["span"]["trace_id"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no routed event for request {request}"))
    };
    let (one, two) = (events(&logs.0), events(&logs.1));
    let trace = routed_trace(&one, "42");
    assert_eq!(trace.len(), 32, "{trace}");
    assert_eq!(
        routed_trace(&two, "42"),
        trace,
        "the second service logs request 42 under the same trace ID"
    );
    assert_ne!(routed_trace(&one, "41"), trace, "each request has its own trace");
}
