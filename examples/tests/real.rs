//! The examples on the real services, unchanged, with `SLINGSHOT_SYS_MAP` pointing at an HTTP sys-map
//! (the `services` feature).
//!
//! The original crate's `simple` service as a process, the pipeline demo,
//! and the pipeline's three stages as three separate processes, as they
//! would be deployed.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use slingshot::broker::Durability;
use slingshot::Runtime;
use slingshot_tests::{drain_ids, read_object, signal, wait_for_count, Backend, Fixture};

/// The pipeline's `documents` table, as `stages::migrate` makes it. Each test
/// creates it in its fixture's own database before any stage starts, so no
/// request (and no other test) ever creates or empties it.
const CREATE_DOCUMENTS: &str = "CREATE TABLE documents (id BIGINT PRIMARY KEY, chars BIGINT NOT NULL, \
                                words BIGINT, top_word TEXT, status TEXT NOT NULL)";

/// The endpoints of `examples/sysmaps/{file}` with this test's own queue and
/// bucket names.
fn endpoints(f: &Fixture, file: &str) -> Value {
    let path = format!("{}/sysmaps/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut endpoints = serde_json::Map::new();
    for (path, body) in doc["endpoints"].as_object().unwrap() {
        let renamed = match body {
            Value::String(bucket) => Value::String(f.bucket(bucket)),
            Value::Object(wiring) if wiring.contains_key("in") => {
                let mut wiring = wiring.clone();
                wiring["in"] = Value::String(f.q(wiring["in"].as_str().unwrap()));
                for route in wiring["out"].as_array_mut().unwrap() {
                    let queues: Vec<Value> = route["queues"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|q| Value::String(f.q(q.as_str().unwrap())))
                        .collect();
                    route["queues"] = Value::Array(queues);
                }
                Value::Object(wiring)
            }
            // rabbitmq, db, object-storage: the fixture supplies the real ones.
            _ => continue,
        };
        endpoints.insert(path.clone(), renamed);
    }
    Value::Object(endpoints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_example_runs_on_an_http_sys_map() {
    const REQUESTS: u64 = 12;
    let f = Fixture::new(Backend::Real, "example-simple");
    let base = f.serve_sysmap(endpoints(&f, "simple.json")).await;
    let runtime = Runtime::connect(&base, f.settings()).await.unwrap();
    let (uploads, written) = (
        runtime.sysmap().bucket("simple-microservice", "in").await.unwrap(),
        runtime.sysmap().bucket("simple-microservice", "out").await.unwrap(),
    );
    let input = |id: u64| format!("document {id}").repeat(id as usize);
    for id in 1..=REQUESTS {
        runtime
            .store()
            .put_bytes(&uploads, &id.to_string(), input(id).into_bytes())
            .await
            .unwrap();
    }
    let broker = runtime.broker().as_ref();
    // The service declares these as it starts; declare them now to count them.
    let outbound = ["case_a_outbound_1", "case_a_outbound_2", "case_b_outbound"].map(|q| f.q(q));
    for queue in &outbound {
        broker.declare(queue, Durability::Durable).await.unwrap();
    }
    let log = f.dir.path().join("simple.log");
    let log_file = std::fs::File::create(&log).unwrap();
    // The binary as built, no arguments: `run`, with the attribute's
    // `sys-map.example.com` overridden by the environment.
    let mut service = tokio::process::Command::new(env!("CARGO_BIN_EXE_simple"))
        .env("SLINGSHOT_SYS_MAP", &base)
        .env("SLINGSHOT_HTTP_ADDR", "off")
        .env("SLINGSHOT_STAGING_DIR", f.dir.path())
        .env("SLINGSHOT_LOG", "warn")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    runtime
        .send(&f.q("simple-microservice-inbound"), 1..=REQUESTS)
        .await
        .unwrap();

    // Every request routed on "case_a", to both of its queues, once; a
    // service that stops on the way is reported with what it said.
    let started = std::time::Instant::now();
    for queue in &outbound[..2] {
        while broker.ready_count(queue).await.unwrap() < REQUESTS {
            if let Some(status) = service.try_wait().unwrap() {
                panic!(
                    "the service exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{queue}: outputs missing after 60s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let expected: Vec<u64> = (1..=REQUESTS).collect();
    for queue in &outbound[..2] {
        let mut ids = drain_ids(broker, queue).await;
        ids.sort_unstable();
        assert_eq!(
            ids,
            expected,
            "{queue}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    assert_eq!(broker.ready_count(&outbound[2]).await.unwrap(), 0, "nothing is case_b");
    for id in 1..=REQUESTS {
        let copied = read_object(runtime.store(), &written, id).await;
        assert_eq!(copied, Some(input(id).into_bytes()), "object {id} in the out bucket");
    }

    signal(service.id().unwrap(), 15);
    let status = tokio::time::timeout(Duration::from_secs(30), service.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "exit {status} after SIGTERM: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_example_runs_unchanged_on_rabbitmq_s3_and_postgres() {
    let f = Fixture::new(Backend::Real, "example-pipeline");
    // The demo runs its own `CREATE TABLE IF NOT EXISTS` too; here it finds the table.
    f.create_tables(&[CREATE_DOCUMENTS]).await;
    let base = f.serve_sysmap(endpoints(&f, "pipeline.json")).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .arg("30")
        .env("SLINGSHOT_SYS_MAP", &base)
        .env("SLINGSHOT_STAGING_DIR", f.dir.path())
        .env("SLINGSHOT_LOG", "warn")
        .output()
        .await
        .unwrap();
    let shown = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains(&format!("sys-map sys-map {base}")), "{shown}");
    assert!(shown.contains("broker RabbitMQ amqp://"), "{shown}");
    assert!(shown.contains("objects S3 http://"), "{shown}");
    // 30 documents, every seventh blank: 4 rejected, 26 published.
    assert!(shown.contains("downstream queues: published 26"), "{shown}");
    assert!(shown.contains("rejected 4"), "{shown}");
    assert!(shown.contains("cataloged  26"), "PostgreSQL rows: {shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stages_in_three_processes() {
    const DOCUMENTS: u64 = 40;
    let f = Fixture::new(Backend::Real, "three-processes");
    // The table the stages write to (the demo binary creates it itself).
    f.create_tables(&[CREATE_DOCUMENTS]).await;
    let base = f.serve_sysmap(endpoints(&f, "pipeline.json")).await;
    let runtime = Runtime::connect(&base, f.settings()).await.unwrap();
    let uploads = runtime.sysmap().bucket("ingest", "in").await.unwrap();
    for id in 1..=DOCUMENTS {
        let text = if id % 5 == 0 {
            String::new()
        } else {
            format!("slingshot document {id} ").repeat(id as usize)
        };
        runtime
            .store()
            .put_bytes(&uploads, &id.to_string(), text.into_bytes())
            .await
            .unwrap();
    }
    let mut children = Vec::new();
    for stage in ["ingest", "tokenize", "catalog"] {
        children.push(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
                .args(["service", stage])
                .env("SLINGSHOT_SYS_MAP", &base)
                .env("SLINGSHOT_HTTP_ADDR", "off")
                .env("SLINGSHOT_STAGING_DIR", f.dir.path())
                .env("SLINGSHOT_LOG", "warn")
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap(),
        );
    }
    let broker = runtime.broker().as_ref();
    // The stages declare these as they start; declare them now to count them.
    for queue in ["rejected", "published", "featured", "review"] {
        broker.declare(&f.q(queue), Durability::Durable).await.unwrap();
    }
    runtime.send(&f.q("ingest"), 1..=DOCUMENTS).await.unwrap();
    let rejected = DOCUMENTS / 5;
    wait_for_count(broker, &f.q("rejected"), rejected, Duration::from_secs(60)).await;
    let mut published = 0;
    let started = std::time::Instant::now();
    while published < DOCUMENTS - rejected {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {published} documents published"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        published = broker.ready_count(&f.q("published")).await.unwrap();
    }
    let mut ids = drain_ids(broker, &f.q("published")).await;
    ids.sort_unstable();
    let expected: Vec<u64> = (1..=DOCUMENTS).filter(|id| id % 5 != 0).collect();
    assert_eq!(ids, expected, "every non-empty document is published exactly once");

    // SIGTERM each stage: each stops cleanly with exit 0.
    for child in &mut children {
        signal(child.id().unwrap(), 15);
    }
    for mut child in children {
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "a stage exited with {status} after SIGTERM");
    }
}

/// `call` as a user runs it against RabbitMQ: with the service stopped it
/// says the request was never picked up and exits 1; the request expired,
/// so the service started afterwards does not run it. Then a call to the
/// running service prints its routes and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_from_the_command_line_on_rabbitmq() {
    let f = Fixture::new(Backend::Real, "example-call");
    let base = f.serve_sysmap(endpoints(&f, "simple.json")).await;
    let runtime = Runtime::connect(&base, f.settings()).await.unwrap();
    let uploads = runtime.sysmap().bucket("simple-microservice", "in").await.unwrap();
    for id in [3u64, 4] {
        let text = format!("document {id}").into_bytes();
        runtime
            .store()
            .put_bytes(&uploads, &id.to_string(), text)
            .await
            .unwrap();
    }
    let inbound = f.q("simple-microservice-inbound");
    let broker = runtime.broker().as_ref();
    broker.declare(&inbound, Durability::Durable).await.unwrap();
    // The binary as a user runs it, from a blocking thread.
    let cli = |args: &'static [&'static str]| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_simple"))
                .args(args)
                .env("SLINGSHOT_SYS_MAP", &base)
                .env("SLINGSHOT_HTTP_ADDR", "off")
                .env("SLINGSHOT_LOG", "warn")
                .output()
                .unwrap()
        })
    };
    let shown = |output: &std::process::Output| {
        format!(
            "status {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let unanswered = cli(&["call", "3", "--timeout", "1s"]).await.unwrap();
    let text = shown(&unanswered);
    assert_eq!(unanswered.status.code(), Some(1), "{text}");
    assert!(text.contains("request 3: never-picked-up"), "{text}");
    assert!(text.contains("it expires and will not run"), "{text}");

    let mut service = tokio::process::Command::new(env!("CARGO_BIN_EXE_simple"))
        .env("SLINGSHOT_SYS_MAP", &base)
        .env("SLINGSHOT_HTTP_ADDR", "off")
        .env("SLINGSHOT_STAGING_DIR", f.dir.path())
        .env("SLINGSHOT_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let answered = cli(&["call", "4", "--timeout", "60s"]).await.unwrap();
    let text = shown(&answered);
    assert!(answered.status.success(), "{text}");
    assert!(text.contains("simple-microservice") && text.contains("done"), "{text}");
    assert!(text.contains(&format!("-> {}", f.q("case_a_outbound_1"))), "{text}");
    // Only 4 ran: 3 expired before the service started.
    wait_for_count(broker, &f.q("case_a_outbound_1"), 1, Duration::from_secs(20)).await;
    assert_eq!(drain_ids(broker, &f.q("case_a_outbound_1")).await, [4]);
    assert_eq!(broker.ready_count(&inbound).await.unwrap(), 0);
    let _ = service.kill().await;
}
