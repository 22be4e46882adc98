//! RabbitMQ 4's rules, each on RabbitMQ 4.0.5 (scripts/rabbitmq4.sh runs it beside the host's
//! 3.10): returning deliveries never walks a good message to a quorum queue's delivery limit, a
//! delivery held past the consumer timeout is processed once the consumer is back, a broker that
//! refuses deprecated features gets a clear error, and `check` and the start-up log name the
//! broker's version and queue type.
//!
//! The 4.0 node is `SLINGSHOT_TEST_RABBITMQ4_URL` (and private 4.0 nodes in
//! its root filesystem); `SLINGSHOT_TEST_AMQP_URL` stays the host's 3.10,
//! which the version test compares with. scripts/test.sh's RabbitMQ 4 lane
//! runs this file: `cargo test -p slingshot-tests --test rabbitmq4`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slingshot::broker::rabbitmq::RabbitMq;
use slingshot::broker::rabbitmq::ServerInfo;
use slingshot::broker::{Broker, Durability, QueueState, QueueType};
use slingshot::protocol::dead_letter_queue;
use slingshot_tests::fault_report::{report, send_ids, Figures};
use slingshot_tests::private::PrivateRabbit4;
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::{drain, rabbitmq4, shared_amqp_url, test_cluster_broker, Backend, Collector, Fixture, Url};

/// One test at a time: the SIGTERM test counts on a quiet machine, and the
/// private 4.0 node is one at a time anyway.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The sys-map's `rabbitmq` endpoint for the broker at `url`.
fn rabbitmq_endpoint(url: &str) -> Value {
    json!({"host": ["127.0.0.1"], "port": [Url::parse(url).port], "username": ["guest"], "pass": ["test/rabbitmq"]})
}

fn relay_wiring(f: &Fixture) -> Value {
    json!({"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]})
}

/// What the broker at `url` announces.
async fn server_info(url: &str) -> ServerInfo {
    let broker = RabbitMq::new(url.to_string(), "version".into(), "slingshot-test");
    broker.read_server_info().await.expect("the broker's version")
}

/// Panics unless the broker at `url` is RabbitMQ 4.
async fn assert_rabbitmq4(url: &str) {
    let info = server_info(url).await;
    assert_eq!(info.major(), Some(4), "these tests need RabbitMQ 4, not {info}");
}

fn fault_service() -> &'static str {
    env!("CARGO_BIN_EXE_fault-service")
}

/// Polls `done` every 100 ms until it holds, or panics after `timeout`.
async fn wait_until(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < timeout, "{what}: not after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Takes the dead-letter queue of `queue` and counts the messages the broker
/// itself dead-lettered past the delivery limit (`x-first-death-reason`).
async fn broker_dead_lettered(broker: &dyn Broker, queue: &str) -> (u64, Vec<u64>) {
    let dead = drain(broker, &dead_letter_queue(queue)).await;
    let mut at_limit = Vec::new();
    for d in &dead {
        let reason = d.message.headers.get("x-first-death-reason").and_then(|v| v.as_str());
        if reason == Some("delivery_limit") {
            at_limit.push(
                std::str::from_utf8(&d.message.body)
                    .ok()
                    .and_then(|b| b.parse().ok())
                    .expect("a dead-lettered ID"),
            );
        }
    }
    (dead.len() as u64, at_limit)
}

/// RabbitMQ 4.0 counts every delivery a consumer hands back, closed channel
/// and `basic.nack` included, towards a quorum queue's delivery limit. A
/// service stopped gracefully 25 times in a row, each time with a request in
/// flight and 31 prefetched (concurrency 1, prefetch 32, as the defaults
/// give at concurrency 1), must still never make the broker dead-letter a
/// good message, and lose none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restarts_never_walk_a_message_to_the_delivery_limit() {
    const N: u64 = 100;
    const ROUNDS: usize = 25;
    let _turn = TURN.lock().await;
    let _figures = Figures("sigterm-25x-quorum");
    let url = rabbitmq4::url();
    assert_rabbitmq4(&url).await;
    let f = Fixture::new(Backend::Quorum, "sigterm-25x");
    let broker = test_cluster_broker(std::slice::from_ref(&url), QueueType::Quorum).await;
    for q in ["in", "out"] {
        broker.declare(&f.q(q), Durability::Durable).await.unwrap();
    }
    let sysmap = f
        .serve_sysmap(json!({"rabbitmq": rabbitmq_endpoint(&url), "relay": relay_wiring(&f)}))
        .await;
    send_ids(&*broker, &f.q("in"), 0..N).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    let dir = f.dir.path();
    let settings = |delay_ms: u32| {
        vec![
            ("SLINGSHOT_QUEUE_TYPE", "quorum".to_string()),
            ("SLINGSHOT_CONCURRENCY", "1".to_string()),
            ("SLINGSHOT_PREFETCH", "32".to_string()),
            ("SLINGSHOT_SHUTDOWN_SECS", "20".to_string()),
            ("SLINGSHOT_TEST_DELAY_MS", delay_ms.to_string()),
        ]
    };
    let inbound = f.q("in");
    for round in 0..ROUNDS {
        let ready = broker.ready_count(&inbound).await.unwrap();
        assert!(
            ready > 32,
            "round {round}: only {ready} ready; the window must stay full"
        );
        let mut service = ServiceProcess::spawn(fault_service(), "relay", &sysmap, dir, &settings(300));
        // Its prefetch arrived (the ready count dropped) and its first
        // request is in flight (each takes 300 ms): stop it now.
        wait_until("the service takes its prefetch", Duration::from_secs(30), async || {
            service.assert_running();
            broker.ready_count(&inbound).await.unwrap() < ready
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        service.stop().await;
    }
    // The last instance, quick, takes the rest.
    let mut service = ServiceProcess::spawn(fault_service(), "relay", &sysmap, dir, &settings(0));
    let dead_letters = dead_letter_queue(&inbound);
    wait_until("every ID out or dead-lettered", Duration::from_secs(120), async || {
        service.assert_running();
        collector.unique() as u64 + broker.ready_count(&dead_letters).await.unwrap() >= N
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (dead, at_limit) = broker_dead_lettered(&*broker, &inbound).await;
    let expected: Vec<u64> = (0..N).collect();
    let outcome = report("sigterm-25x-quorum", N, &expected, &collector.counts(), dead);
    service.stop().await;
    assert_eq!(
        at_limit,
        Vec::<u64>::new(),
        "the broker dead-lettered good messages at the delivery limit"
    );
    assert_eq!(outcome.lost, 0, "IDs were lost");
    assert_eq!(outcome.dead_lettered, 0, "good requests were dead-lettered");
}

/// `rabbitmqctl list_queues name messages` of the private node: ready and
/// unacknowledged messages of `queue`.
fn messages_in(node: &PrivateRabbit4, queue: &str) -> u64 {
    let listed = node.ctl(&["-q", "list_queues", "name", "messages", "--no-table-headers"]);
    listed
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(queue)).then(|| fields.next().and_then(|n| n.parse().ok()))
        })
        .flatten()
        .unwrap_or_else(|| panic!("queue {queue} not listed: {listed}"))
}

/// A delivery held past the broker's consumer timeout: RabbitMQ 4.0 closes
/// the consumer's channel (`PRECONDITION_FAILED - delivery acknowledgement
/// ... timed out`). The service consumes again, the message is delivered
/// again and processed, nothing is lost or dead-lettered, and the queue ends
/// empty (the redelivery was acknowledged), for classic and quorum queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_held_past_the_consumer_timeout_is_processed_once_the_consumer_is_back() {
    const N: u64 = 20;
    let _turn = TURN.lock().await;
    let _figures = Figures("consumer-timeout");
    // A 5 s consumer timeout, checked every second (the channel's tick is a
    // minute by default, which is also how late a timeout can fire).
    let node = Arc::new(
        tokio::task::spawn_blocking(|| {
            PrivateRabbit4::start_with(
                "consumer_timeout = 5000",
                Some("[{rabbit, [{channel_tick_interval, 1000}]}]."),
            )
        })
        .await
        .unwrap(),
    );
    let url = node.amqp_url();
    assert_rabbitmq4(&url).await;
    // The consumer timeouts the node logged before each round: one a round.
    for (timeouts, queue_type) in [QueueType::Classic, QueueType::Quorum].into_iter().enumerate() {
        let fault = format!("consumer-timeout-{queue_type}");
        let f = Fixture::new(Backend::Real, &fault);
        let broker = test_cluster_broker(std::slice::from_ref(&url), queue_type).await;
        for q in ["in", "out"] {
            broker.declare(&f.q(q), Durability::Durable).await.unwrap();
        }
        let sysmap = f
            .serve_sysmap(json!({"rabbitmq": rabbitmq_endpoint(&url), "sleepy-once": relay_wiring(&f)}))
            .await;
        let collector = Collector::start(broker.clone(), f.q("out"));
        let dir = f.dir.path();
        let env = [
            ("SLINGSHOT_QUEUE_TYPE", queue_type.as_str().to_string()),
            ("SLINGSHOT_CONCURRENCY", "2".to_string()),
            ("SLINGSHOT_PREFETCH", "4".to_string()),
            ("SLINGSHOT_SHUTDOWN_SECS", "30".to_string()),
            ("SLINGSHOT_TEST_SLEEP_ONCE_MS", "12000".to_string()),
        ];
        let mut service = ServiceProcess::spawn(fault_service(), "sleepy-once", &sysmap, dir, &env);
        send_ids(&*broker, &f.q("in"), 0..N / 2).await;
        // The broker gives up on the held delivery.
        let timed_out = |log: &str| log.matches("delivery acknowledgement on channel").count();
        let n = node.clone();
        wait_until("the broker's consumer timeout", Duration::from_secs(60), async || {
            service.assert_running();
            let node = n.clone();
            tokio::task::spawn_blocking(move || timed_out(&node.log()))
                .await
                .unwrap()
                > timeouts
        })
        .await;
        // IDs sent now are processed only by a consumer that came back.
        send_ids(&*broker, &f.q("in"), N / 2..N).await;
        collector.wait_for(N as usize, Duration::from_secs(90)).await;
        let inbound = f.q("in");
        let n = node.clone();
        wait_until(
            "the inbound queue empty and acknowledged",
            Duration::from_secs(60),
            async || {
                let (node, queue) = (n.clone(), inbound.clone());
                tokio::task::spawn_blocking(move || messages_in(&node, &queue))
                    .await
                    .unwrap()
                    == 0
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        service.assert_running();
        let dead = broker.ready_count(&dead_letter_queue(&inbound)).await.unwrap();
        let expected: Vec<u64> = (0..N).collect();
        let outcome = report(&fault, N, &expected, &collector.counts(), dead);
        service.stop().await;
        assert_eq!(outcome.lost, 0, "{fault}: IDs were lost");
        assert_eq!(outcome.dead_lettered, 0, "{fault}: good requests were dead-lettered");
        // The held request ran twice at most: once held, once redelivered.
        assert!(outcome.duplicates <= 1, "{fault}: {} duplicates", outcome.duplicates);
    }
}

/// `fault-service relay ARGS` against `sysmap` with `env`, its stderr
/// piped (and its stdout to nowhere unless the caller says otherwise).
fn relay(args: &[&str], sysmap: &str, dir: &Path, env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(fault_service());
    command
        .arg("relay")
        .args(args)
        .env("SLINGSHOT_SYS_MAP", sysmap)
        .env("SLINGSHOT_STAGING_DIR", dir)
        .env("SLINGSHOT_HTTP_ADDR", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// `fault-service relay ARGS` against `sysmap` with `env`, to its end
/// (within `timeout`): its status, stdout and stderr.
async fn run_to_end(
    args: &[&str],
    sysmap: &str,
    dir: &Path,
    env: &[(&str, &str)],
    timeout: Duration,
) -> (std::process::ExitStatus, String, String) {
    let child = relay(args, sysmap, dir, env)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start fault-service");
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("fault-service relay {args:?} still runs after {timeout:?}: a reconnect loop?"))
        .expect("fault-service output");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What a RabbitMQ 4 node's configuration says to refuse both deprecated
/// features slingshot could meet.
const REFUSE_DEPRECATED: &str = "deprecated_features.permit.transient_nonexcl_queues = false\n\
                                 deprecated_features.permit.global_qos = false";

/// Whether an error line names the refused feature and both ways out.
fn names_the_way_out(line: &str) -> bool {
    line.contains("transient_nonexcl_queues")
        && line.contains("SLINGSHOT_QUEUE_MODE=durable")
        && line.contains("deprecated_features.permit.transient_nonexcl_queues = true")
}

/// A RabbitMQ 4 node that permits neither transient non-exclusive queues
/// nor global QoS: compatible mode (transient queues) fails with an error
/// naming the feature and what to do, from `check` (a FAILED line) and at
/// start-up (one error line, a non-zero exit, no reconnect loop); durable
/// mode runs there, and slingshot never uses global QoS (the node logs each
/// use of a deprecated feature).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_features_refused_by_the_broker_fail_clearly() {
    let _turn = TURN.lock().await;
    let node = tokio::task::spawn_blocking(|| PrivateRabbit4::start_with(REFUSE_DEPRECATED, None))
        .await
        .unwrap();
    let url = node.amqp_url();
    assert_rabbitmq4(&url).await;
    let f = Fixture::new(Backend::Real, "deprecated");
    let sysmap = f
        .serve_sysmap(json!({"rabbitmq": rabbitmq_endpoint(&url), "relay": relay_wiring(&f)}))
        .await;
    let dir = f.dir.path();
    let compatible = [("SLINGSHOT_QUEUE_MODE", "compatible")];

    let (status, stdout, _) = run_to_end(&["check"], &sysmap, dir, &compatible, Duration::from_secs(60)).await;
    assert!(!status.success(), "check passed in compatible mode:\n{stdout}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert!(
        failed.iter().any(|l| names_the_way_out(l)),
        "no FAILED line names the feature and what to do:\n{stdout}"
    );

    let (status, stdout, stderr) = run_to_end(&[], &sysmap, dir, &compatible, Duration::from_secs(60)).await;
    assert!(
        !status.success(),
        "the service started in compatible mode:\n{stdout}{stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line on stderr:\n{stderr}");
    assert!(names_the_way_out(errors[0]), "{}", errors[0]);

    let durable = [("SLINGSHOT_QUEUE_MODE", "durable")];
    let (status, stdout, stderr) = run_to_end(&["check"], &sysmap, dir, &durable, Duration::from_secs(60)).await;
    assert!(status.success(), "check failed in durable mode:\n{stdout}{stderr}");
    let broker = test_cluster_broker(std::slice::from_ref(&url), QueueType::Classic).await;
    for q in ["in", "out"] {
        broker.declare(&f.q(q), Durability::Durable).await.unwrap();
    }
    let collector = Collector::start(broker.clone(), f.q("out"));
    let service = ServiceProcess::spawn(
        fault_service(),
        "relay",
        &sysmap,
        dir,
        &[("SLINGSHOT_QUEUE_MODE", "durable".to_string())],
    );
    send_ids(&*broker, &f.q("in"), 0..100).await;
    collector.wait_for(100, Duration::from_secs(60)).await;
    service.stop().await;
    let log = tokio::task::spawn_blocking(move || {
        node.stop();
        node.log()
    })
    .await
    .unwrap();
    assert!(
        log.contains("transient_nonexcl_queues"),
        "the node logged no refusal: is the test's configuration applied?\n{log}"
    );
    assert!(
        !log.contains("global_qos"),
        "slingshot used global QoS, which RabbitMQ 4 deprecates:\n{log}"
    );
}

/// The `started` log line (JSON) of a service's log.
fn started_line(log: &str) -> Option<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "started")
}

/// On both brokers and both queue types, `check` names the broker's version
/// (as `rabbitmqctl version` gives it) and the queue type, and so does the
/// service's `started` log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_the_start_up_log_name_the_broker_version_and_queue_type() {
    let _turn = TURN.lock().await;
    assert!(
        !rabbitmq4::shared_is_rabbitmq4(),
        "SLINGSHOT_TEST_AMQP_URL must be the host's RabbitMQ 3.10 here (the 4.0 node is SLINGSHOT_TEST_RABBITMQ4_URL)"
    );
    let shared = shared_amqp_url();
    let version = |mut ctl: Command| {
        let output = ctl
            .args(["-q", "version"])
            .stdin(Stdio::null())
            .output()
            .expect("rabbitmqctl version");
        assert!(output.status.success(), "rabbitmqctl version: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    let brokers = [
        (rabbitmq4::url(), version(rabbitmq4::rabbitmqctl(rabbitmq4::NODE))),
        (shared, version(Command::new("rabbitmqctl"))),
    ];
    assert!(brokers[0].1.starts_with("4."), "the 4.0 node says {}", brokers[0].1);
    assert!(brokers[1].1.starts_with("3."), "the host's node says {}", brokers[1].1);
    for (url, version) in &brokers {
        for queue_type in ["classic", "quorum"] {
            let f = Fixture::new(Backend::Real, &format!("version-{queue_type}"));
            let sysmap = f
                .serve_sysmap(json!({"rabbitmq": rabbitmq_endpoint(url), "relay": relay_wiring(&f)}))
                .await;
            let dir = f.dir.path();
            let env = [("SLINGSHOT_QUEUE_TYPE", queue_type)];
            let (status, stdout, stderr) = run_to_end(&["check"], &sysmap, dir, &env, Duration::from_secs(60)).await;
            assert!(status.success(), "check on {version}, {queue_type}:\n{stdout}{stderr}");
            assert!(
                stdout.lines().any(|l| l.starts_with("ok")
                    && l.contains("broker version")
                    && l.contains(&format!("RabbitMQ {version}"))),
                "check names no broker version {version}:\n{stdout}"
            );
            assert!(
                stdout
                    .lines()
                    .any(|l| l.contains("queue type:") && l.contains(&format!("{queue_type} (SLINGSHOT_QUEUE_TYPE)"))),
                "check names no queue type {queue_type}:\n{stdout}"
            );

            let env = [
                ("SLINGSHOT_QUEUE_TYPE", queue_type.to_string()),
                ("SLINGSHOT_LOG", "info".to_string()),
                ("SLINGSHOT_LOG_FORMAT", "json".to_string()),
            ];
            let mut service = ServiceProcess::spawn(fault_service(), "relay", &sysmap, dir, &env);
            wait_until("the started line", Duration::from_secs(60), async || {
                service.assert_running();
                started_line(&service.log()).is_some()
            })
            .await;
            let started = started_line(&service.log()).expect("a started line");
            let fields = &started["fields"];
            assert!(
                fields["broker_version"]
                    .as_str()
                    .is_some_and(|v| v.contains(&format!("RabbitMQ {version}"))),
                "started line without broker_version {version}: {started}"
            );
            assert_eq!(fields["queue_type"], queue_type, "started line: {started}");
            service.stop().await;
        }
    }
}

/// A compatible-mode service whose broker comes back refusing transient
/// queues (upgraded, or reconfigured): its transient queues went with the
/// restart and it cannot declare them again. It stops with the same clear
/// error line and exit 1, instead of trying again forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_comes_back_refusing_transient_queues_stops_a_compatible_service_clearly() {
    let _turn = TURN.lock().await;
    let mut node = tokio::task::spawn_blocking(PrivateRabbit4::start).await.unwrap();
    let url = node.amqp_url();
    assert_rabbitmq4(&url).await;
    let f = Fixture::new(Backend::Real, "deprecated-restart");
    let sysmap = f
        .serve_sysmap(json!({"rabbitmq": rabbitmq_endpoint(&url), "relay": relay_wiring(&f)}))
        .await;
    let dir = f.dir.path();
    let service = relay(&[], &sysmap, dir, &[("SLINGSHOT_QUEUE_MODE", "compatible")])
        .spawn()
        .expect("start fault-service relay");
    let broker = test_cluster_broker(std::slice::from_ref(&url), QueueType::Classic).await;
    let inbound = f.q("in");
    wait_until(
        "the service declares its transient queue",
        Duration::from_secs(60),
        async || broker.inspect(&inbound, Durability::Transient).await.unwrap() == QueueState::Matches,
    )
    .await;
    node = tokio::task::spawn_blocking(move || {
        node.restart_with(REFUSE_DEPRECATED, None);
        node
    })
    .await
    .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(120), service.wait_with_output())
        .await
        .expect("the service still runs 120 s after its broker came back refusing its queues: a reconnect loop")
        .expect("the service's output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the service exited 0:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line on stderr:\n{stderr}");
    assert!(names_the_way_out(errors[0]), "{}", errors[0]);
    drop(node);
}
