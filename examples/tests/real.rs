//! The examples on the real services, unchanged: the pipeline demo with
//! `SLINGSHOT_SYS_MAP` pointing at an HTTP sys-map, and its three stages as
//! three separate processes, as they would be deployed.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use slingshot::broker::Durability;
use slingshot::Runtime;
use slingshot_tests::{drain_ids, wait_for_count, Backend, Fixture};

/// The pipeline's `documents` table, as `stages::migrate` makes it. Each test
/// creates it in its fixture's own database before any stage starts, so no
/// request (and no other test) ever creates or empties it.
const CREATE_DOCUMENTS: &str = "CREATE TABLE documents (id BIGINT PRIMARY KEY, chars BIGINT NOT NULL, \
                                words BIGINT, top_word TEXT, status TEXT NOT NULL)";

/// The pipeline's sys-map endpoints with this test's own queue and bucket names.
fn pipeline_endpoints(f: &Fixture) -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sysmaps/pipeline.json")).unwrap();
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
async fn the_pipeline_example_runs_unchanged_on_rabbitmq_s3_and_postgres() {
    let f = Fixture::new(Backend::Real, "example-pipeline");
    // The demo runs its own `CREATE TABLE IF NOT EXISTS` too; here it finds the table.
    f.create_tables(&[CREATE_DOCUMENTS]).await;
    let base = f.serve_sysmap(pipeline_endpoints(&f)).await;
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
    let base = f.serve_sysmap(pipeline_endpoints(&f)).await;
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
        let pid = child.id().unwrap() as i32;
        assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
    }
    for mut child in children {
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "a stage exited with {status} after SIGTERM");
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}
