//! A stdout nobody reads must not stop a service: its log goes to a pipe
//! whose buffer fills (a stalled container log driver, a parent that stopped
//! reading), while requests stream through and `/healthz` is polled.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use slingshot::broker::Durability;
use slingshot_tests::fault_report::{publish, report, send_ids, Figures};
use slingshot_tests::probe::{free_port, get};
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::{service_command, shared_amqp_url, test_broker, Backend, Collector, Fixture};

const N: u64 = 3000;
const FINISH: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_nobody_reads_stops_neither_requests_nor_healthz() {
    let _figures = Figures("stalled-stdout");
    let f = Fixture::new(Backend::Real, "stalled-stdout");
    let wiring = json!({"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]});
    let sysmap = f.serve_sysmap(json!({ "relay": wiring })).await;
    let broker = test_broker(&shared_amqp_url()).await;
    for q in ["in", "out"] {
        broker.declare(&f.q(q), Durability::Durable).await.unwrap();
    }
    let collector = Collector::start(broker.clone(), f.q("out"));
    let port = free_port();
    // Every request logs at info: the pipe's 64 KiB fill within a few
    // hundred requests, and nothing ever reads them.
    let mut command = service_command(
        env!("CARGO_BIN_EXE_fault-service"),
        "relay",
        &sysmap,
        f.dir.path(),
        &[
            ("SLINGSHOT_LOG", "info".to_string()),
            ("SLINGSHOT_HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("SLINGSHOT_CONCURRENCY", "4".to_string()),
        ],
    );
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut service = ServiceProcess::start(command, "relay", f.dir.path());
    // Held, never read: the pipes stay open and fill.
    let child = service.child_mut();
    let (_stdout, _stderr) = (child.stdout.take(), child.stderr.take());
    let health = format!("http://127.0.0.1:{port}/healthz");
    let start = Instant::now();
    while get(&health).await.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the service never answered /healthz"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    send_ids(&*broker, &f.q("in"), 0..N).await;
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    while collector.unique() < N as usize {
        assert!(
            start.elapsed() < FINISH,
            "{} of {N} IDs arrived: the service stopped while its stdout was full",
            collector.unique()
        );
        let asked = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), get(&health)).await;
        let took = asked.elapsed();
        slowest = slowest.max(took);
        assert!(
            matches!(answer, Ok(Some((200, _)))),
            "/healthz did not answer 200 within 5 s (after {} of {N} IDs): {answer:?}",
            collector.unique()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = get(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .map(|(_, page)| page)
        .unwrap_or_default();
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("slingshot_log_lines_dropped_total"))
        .unwrap_or("slingshot_log_lines_dropped_total (absent)")
        .to_string();
    publish(&format!(
        "stalled-stdout: {N} requests with a full stdout, /healthz at most {} ms; {dropped}",
        slowest.as_millis()
    ));
    let expected: Vec<u64> = (0..N).collect();
    let outcome = report("stalled-stdout", N, &expected, &collector.counts(), 0);
    // It must exit 0 on SIGTERM although its stdout is full.
    service.stop().await;
    assert_eq!((outcome.lost, outcome.duplicates), (0, 0));
}
