//! Mixed deployments: a slingshot service between two services that behave on the wire exactly as
//! the original `slingshot-microservice` does, in both start orders, on the real RabbitMQ.
//!
//! The pipeline is `feeder → a → original "upstream" → b → slingshot "relay"
//! → c → original "downstream" → d → collector`. The feeder publishes as an
//! original producer does (no headers, not persistent), including bodies
//! with whitespace around the ID and bodies that are not IDs at all. Every
//! ID is counted at the end.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};
use slingshot::broker::{Broker, Durability, QueueState};
use slingshot_tests::original::{Feeder, OriginalService};
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::{service_command, shared_amqp_url, test_broker, Backend, Collector, Fixture};

const N: u64 = 500;

/// The queues of one test's pipeline.
struct Queues {
    a: String,
    b: String,
    c: String,
    d: String,
    /// Listed for `true` before `c` in the relay's sys-map: the last entry
    /// wins, as in the original, so nothing is sent here.
    shadowed: String,
}

impl Queues {
    fn new(f: &Fixture) -> Queues {
        Queues {
            a: f.q("a"),
            b: f.q("b"),
            c: f.q("c"),
            d: f.q("d"),
            shadowed: f.q("shadowed"),
        }
    }

    /// The relay's wiring, with case `true` listed twice.
    fn sysmap(&self) -> Value {
        json!({"relay": {"in": self.b, "out": [
            {"case": true, "queues": [self.shadowed]},
            {"case": true, "queues": [self.c]},
        ]}})
    }
}

fn spawn_relay(sysmap: &str, dir: &Path, mode: &str) -> ServiceProcess {
    ServiceProcess::spawn(
        env!("CARGO_BIN_EXE_fault-service"),
        "relay",
        sysmap,
        dir,
        &[
            ("SLINGSHOT_QUEUE_MODE", mode.to_string()),
            // Warnings are what this test reads in the log.
            ("SLINGSHOT_LOG", "warn".to_string()),
        ],
    )
}

/// Runs `fault-service relay check` with `mode`: exit code and output.
async fn check(sysmap: &str, dir: &Path, mode: &str) -> (i32, String) {
    let output = service_command(
        env!("CARGO_BIN_EXE_fault-service"),
        "relay",
        sysmap,
        dir,
        &[("SLINGSHOT_QUEUE_MODE", mode.to_string())],
    )
    .arg("check")
    .stdout(Stdio::piped())
    .output()
    .await
    .expect("run check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Waits until `queue` exists (declared by a service starting up).
async fn wait_declared(broker: &dyn Broker, queue: &str) {
    for _ in 0..300 {
        if broker.inspect(queue, Durability::Durable).await.expect("inspect") != QueueState::Missing {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{queue} was not declared within 30s");
}

/// Feeds IDs 1..=N into `a` as an original producer would (every tenth with
/// whitespace around it) plus three bodies that are not IDs, and checks that
/// every ID comes out of `d` exactly once.
async fn run_ids_through(q: &Queues, upstream: &OriginalService, collector: &Collector) {
    let feeder = Feeder::connect(&shared_amqp_url()).await.expect("feeder connection");
    let bodies = (1..=N).map(|id| {
        if id % 10 == 0 {
            format!(" {id}\n")
        } else {
            id.to_string()
        }
    });
    let junk = ["oops", "-1", ""].map(String::from);
    feeder.send_all(&q.a, bodies.chain(junk)).await.expect("feed a");
    collector.wait_for(N as usize, Duration::from_secs(120)).await;
    // Anything late would show up as a duplicate now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = collector.counts();
    assert_eq!(counts.len() as u64, N, "distinct IDs at the end of the pipeline");
    assert!(
        (1..=N).all(|id| counts.get(&id) == Some(&1)),
        "each ID arrives exactly once"
    );
    assert_eq!(
        upstream.rejected.load(Ordering::Relaxed),
        3,
        "the upstream original drops non-IDs"
    );
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("relay.log")).expect("relay log")
}

/// The relay's log and `check` both say that the duplicated case routes by
/// its last entry, and nothing reached the shadowed queue (never declared).
async fn assert_last_entry_won(broker: &dyn Broker, q: &Queues, log: &str, check_output: &str) {
    let warning = "case true is listed at out[0] and again at out[1]; as in the original slingshot-microservice the last entry wins";
    assert!(
        log.contains(warning),
        "relay log lacks the duplicate-case warning:\n{log}"
    );
    assert!(
        check_output.contains(&format!("WARNING wiring: {warning}")),
        "check lacks the duplicate-case warning:\n{check_output}"
    );
    assert_eq!(
        broker.inspect(&q.shadowed, Durability::Durable).await.expect("inspect"),
        QueueState::Missing,
        "the shadowed entry's queue was used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originals_started_first_slingshot_in_the_middle() {
    let f = Fixture::new(Backend::Real, "interop-originals-first");
    let q = Queues::new(&f);
    let broker = test_broker(&shared_amqp_url()).await;
    let sysmap = f.serve_sysmap(q.sysmap()).await;
    let dir = f.dir.path();

    let upstream = OriginalService::start(&shared_amqp_url(), "upstream", &q.a, std::slice::from_ref(&q.b))
        .await
        .expect("upstream original starts");
    let _downstream = OriginalService::start(&shared_amqp_url(), "downstream", &q.c, std::slice::from_ref(&q.d))
        .await
        .expect("downstream original starts");
    // Durable, the default: the originals' transient queues are used as they are.
    let relay = spawn_relay(&sysmap, dir, "durable");
    let collector = Collector::start(broker.clone(), q.d.clone());
    run_ids_through(&q, &upstream, &collector).await;
    relay.stop().await;

    let log = read_log(dir);
    assert!(
        log.contains("queue exists with other properties; using it as it is"),
        "the relay says it uses the originals' queues as they are:\n{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "a log written to a file has no ANSI escapes:\n{log:?}"
    );

    let (code, out) = check(&sysmap, dir, "durable").await;
    assert_eq!(code, 0, "warnings do not fail check:\n{out}");
    for queue in [&q.b, &q.c] {
        let line = format!(
            "WARNING queue {queue:?}: exists transient, as the original slingshot-microservice declares its queues"
        );
        assert!(out.contains(&line), "check lacks {line:?}:\n{out}");
    }
    assert!(out.contains("set SLINGSHOT_QUEUE_MODE=compatible"), "{out}");
    assert!(
        out.contains("inequivalent arg 'durable'"),
        "check quotes the broker:\n{out}"
    );
    assert!(
        out.contains(&format!(
            "ok      queue {:?}: exists, durable",
            format!("{}.dead-letter", q.b)
        )),
        "{out}"
    );
    assert_last_entry_won(&*broker, &q, &log, &out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slingshot_started_first_in_compatible_mode_then_originals() {
    let f = Fixture::new(Backend::Real, "interop-slingshot-first");
    let q = Queues::new(&f);
    let broker = test_broker(&shared_amqp_url()).await;
    let sysmap = f.serve_sysmap(q.sysmap()).await;
    let dir = f.dir.path();

    let relay = spawn_relay(&sysmap, dir, "compatible");
    wait_declared(&*broker, &q.c).await;
    assert_eq!(
        broker.inspect(&q.b, Durability::Transient).await.unwrap(),
        QueueState::Matches,
        "compatible mode declares queues as the original does"
    );
    let upstream = OriginalService::start(&shared_amqp_url(), "upstream", &q.a, std::slice::from_ref(&q.b))
        .await
        .expect("upstream original starts after slingshot declared its queues");
    let _downstream = OriginalService::start(&shared_amqp_url(), "downstream", &q.c, std::slice::from_ref(&q.d))
        .await
        .expect("downstream original starts after slingshot declared its queues");
    let collector = Collector::start(broker.clone(), q.d.clone());
    run_ids_through(&q, &upstream, &collector).await;
    relay.stop().await;

    let (code, out) = check(&sysmap, dir, "compatible").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok      queue mode: compatible"), "{out}");
    for queue in [&q.b, &q.c] {
        assert!(
            out.contains(&format!("ok      queue {queue:?}: exists, transient")),
            "{out}"
        );
    }
    // Only slingshot uses the dead-letter queue: durable in either mode.
    assert!(
        out.contains(&format!(
            "ok      queue {:?}: exists, durable",
            format!("{}.dead-letter", q.b)
        )),
        "{out}"
    );
    assert_last_entry_won(&*broker, &q, &read_log(dir), &out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_queues_stop_originals_and_check_says_what_to_do() {
    let f = Fixture::new(Backend::Real, "interop-durable-first");
    let q = Queues::new(&f);
    let broker = test_broker(&shared_amqp_url()).await;
    let sysmap = f.serve_sysmap(q.sysmap()).await;
    let dir = f.dir.path();

    let relay = spawn_relay(&sysmap, dir, "durable");
    wait_declared(&*broker, &q.c).await;
    // What the original does when slingshot declared a queue durable first.
    let refused = OriginalService::start(&shared_amqp_url(), "downstream", &q.c, std::slice::from_ref(&q.d)).await;
    let error = refused
        .err()
        .expect("an original cannot declare a durable queue")
        .to_string();
    assert!(
        error.contains("PRECONDITION_FAILED") && error.contains("inequivalent arg 'durable'"),
        "{error}"
    );
    relay.stop().await;

    // Told that originals will share the queues, check says what to change.
    let (code, out) = check(&sysmap, dir, "compatible").await;
    assert_eq!(code, 0, "{out}");
    let line = format!(
        "WARNING queue {:?}: exists durable, not transient as SLINGSHOT_QUEUE_MODE=compatible declares it",
        q.c
    );
    assert!(out.contains(&line), "check lacks {line:?}:\n{out}");
    assert!(
        out.contains("stops at start-up with PRECONDITION_FAILED") && out.contains("delete it"),
        "{out}"
    );
    assert!(out.contains("checks passed, 3 with warnings"), "{out}");
}
