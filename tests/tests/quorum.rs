//! Quorum queues and many instances on the shared RabbitMQ node: the
//! queues a quorum service declares, the broker's delivery limit ending in
//! the dead-letter queue rather than a silent drop, `x-delivery-count`, and
//! several processes of one service sharing a queue while one is killed.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use slingshot::broker::{Durability, Message, QueueState, QueueType, QUORUM_DELIVERY_LIMIT};
use slingshot::protocol::{dead_letter_queue, Request};
use slingshot::ServiceDef;
use slingshot_tests::fault_report::{assert_nothing_lost, report, send_ids, Figures};
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::{shared_amqp_url, test_cluster_broker, Backend, Collector, Fixture};

/// `rabbitmqctl list_queues name COLUMN` on the shared node (3.10, or 4.0
/// in the RabbitMQ 4 lane): COLUMN of `queue`.
fn queue_info(queue: &str, column: &str) -> String {
    let output = slingshot_tests::rabbitmq4::shared_rabbitmqctl()
        .args(["-q", "list_queues", "name", column, "--no-table-headers"])
        .stdin(Stdio::null())
        .output()
        .expect("rabbitmqctl");
    assert!(output.status.success(), "rabbitmqctl list_queues failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(queue)).then(|| fields.next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("queue {queue} not listed"))
}

async fn queue_info_async(queue: String, column: &'static str) -> String {
    tokio::task::spawn_blocking(move || queue_info(&queue, column))
        .await
        .unwrap()
}

#[slingshot::microservice(name = "quorum-echo", sys_map = "file:unused.json", main = false)]
fn quorum_echo(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}

/// With `SLINGSHOT_QUEUE_TYPE=quorum` a service declares its inbound,
/// outbound and dead-letter queues as quorum queues, and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_service_declares_quorum_queues_and_runs() {
    let f = Fixture::new(Backend::Quorum, "qq-declare");
    let endpoints = json!({"quorum-echo": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}});
    let runtime = f.runtime(endpoints).await;
    let service = runtime.start(ServiceDef::find("quorum-echo").unwrap()).await.unwrap();
    for queue in [
        f.q("in"),
        f.q("out"),
        dead_letter_queue(&f.q("in")),
        dead_letter_queue(&f.q("out")),
    ] {
        assert_eq!(queue_info_async(queue.clone(), "type").await, "quorum", "{queue}");
    }
    runtime.send(&f.q("in"), [1, 2, 3]).await.unwrap();
    runtime.run_until_idle(&[&service]).await.unwrap();
    let mut ids = slingshot_tests::drain_ids(&**runtime.broker(), &f.q("out")).await;
    ids.sort();
    assert_eq!(ids, [1, 2, 3]);
}

/// A classic queue that exists is used as it is by a quorum service (and
/// the other way round); `inspect` says how it differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_queues_of_the_other_type_are_used_as_they_are() {
    let f = Fixture::new(Backend::Quorum, "qq-existing");
    let classic = test_cluster_broker(&[shared_amqp_url()], QueueType::Classic).await;
    let quorum = test_cluster_broker(&[shared_amqp_url()], QueueType::Quorum).await;
    for (existing, declaring, name) in [(&classic, &quorum, "was-classic"), (&quorum, &classic, "was-quorum")] {
        let queue = f.q(name);
        existing.declare(&queue, Durability::Durable).await.unwrap();
        match declaring.inspect(&queue, Durability::Durable).await.unwrap() {
            // RabbitMQ names the first argument that differs.
            QueueState::Differs(why) => {
                assert!(why.contains("PRECONDITION_FAILED - inequivalent arg"), "{name}: {why}")
            }
            other => panic!("{name}: a queue of the other type inspected as {other:?}"),
        }
        declaring.declare(&queue, Durability::Durable).await.unwrap();
        declaring.publish(&queue, Message::id(9)).await.unwrap();
        assert_eq!(slingshot_tests::drain_ids(&**declaring, &queue).await, [9], "{name}");
    }
    assert_eq!(queue_info_async(f.q("was-classic"), "type").await, "classic");
    assert_eq!(queue_info_async(f.q("was-quorum"), "type").await, "quorum");
}

/// A message the broker takes back again and again (here `basic.reject`
/// with requeue; a lost connection counts the same) carries
/// `x-delivery-count`, and past the delivery limit lands in the dead-letter
/// queue: never dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_delivery_limit_a_message_is_dead_lettered_not_dropped() {
    let f = Fixture::new(Backend::Quorum, "qq-limit");
    let broker = test_cluster_broker(&[shared_amqp_url()], QueueType::Quorum).await;
    let queue = f.q("in");
    broker.declare(&queue, Durability::Durable).await.unwrap();
    broker.publish(&queue, Message::id(7)).await.unwrap();
    let mut deliveries = 0_i64;
    let mut counts = Vec::new();
    while let Some(delivery) = broker.get(&queue).await.unwrap() {
        deliveries += 1;
        counts.push(Request::decode(&delivery.message).delivery_count);
        assert!(
            deliveries <= QUORUM_DELIVERY_LIMIT + 5,
            "the delivery limit is not applied"
        );
        delivery.acker.reject(true).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        deliveries >= QUORUM_DELIVERY_LIMIT,
        "only {deliveries} deliveries before the message left the queue"
    );
    assert_eq!(counts[0], 0, "a first delivery has no x-delivery-count");
    assert_eq!(counts[1], 1, "the second delivery says it is the second: {counts:?}");
    // At-least-once dead-lettering is asynchronous: wait for it.
    let dead = dead_letter_queue(&queue);
    let mut found = None;
    for _ in 0..100 {
        if let Some(delivery) = broker.get(&dead).await.unwrap() {
            found = Some(delivery);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivery = found.expect("the message over the delivery limit is in the dead-letter queue");
    assert_eq!(delivery.message.body, &b"7"[..]);
    delivery.acker.ack().await.unwrap();
}

const N: u64 = 10_000;
const PREFETCH: u64 = 8;
const INSTANCES: usize = 3;

/// `INSTANCES` processes of one service consume one queue; once they all
/// consume and a quarter of the IDs came out, one is killed (-9). Its
/// unacknowledged deliveries go to the others: every ID comes out.
async fn instances_share_a_queue_and_survive_a_kill(queue_type: QueueType, fault: &'static str) {
    let _figures = Figures(fault);
    let backend = match queue_type {
        QueueType::Classic => Backend::Real,
        QueueType::Quorum => Backend::Quorum,
    };
    let f = Fixture::new(backend, fault);
    let broker = test_cluster_broker(&[shared_amqp_url()], queue_type).await;
    for q in ["in", "out"] {
        broker.declare(&f.q(q), Durability::Durable).await.unwrap();
    }
    let wiring = json!({"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]});
    let sysmap = f.serve_sysmap(json!({"relay": wiring})).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    let settings = [
        ("SLINGSHOT_QUEUE_TYPE", queue_type.as_str().to_string()),
        ("SLINGSHOT_CONCURRENCY", "4".to_string()),
        ("SLINGSHOT_PREFETCH", PREFETCH.to_string()),
        ("SLINGSHOT_SHUTDOWN_SECS", "20".to_string()),
        ("SLINGSHOT_TEST_DELAY_MS", "2".to_string()),
    ];
    let mut instances: Vec<_> = (0..INSTANCES)
        .map(|_| {
            ServiceProcess::spawn(
                env!("CARGO_BIN_EXE_fault-service"),
                "relay",
                &sysmap,
                f.dir.path(),
                &settings,
            )
        })
        .collect();
    // Every instance consumes before the IDs go out, so all share them.
    let inbound = f.q("in");
    let mut consumers = String::new();
    for _ in 0..100 {
        consumers = queue_info_async(inbound.clone(), "consumers").await;
        if consumers == INSTANCES.to_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if consumers != INSTANCES.to_string() {
        // Which instance is missing, and what it said: a start-up that
        // failed, or one still waiting for something.
        let states: Vec<String> = instances
            .iter_mut()
            .enumerate()
            .map(|(i, instance)| {
                let state = match instance.exited() {
                    Some(status) => format!("exited with {status}"),
                    None => "running".to_string(),
                };
                let log = instance.log();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "instance {i} (pid {}): {state}; its last lines:\n{}",
                    instance.pid(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect();
        panic!(
            "{consumers} consumers of the shared queue, not {INSTANCES}\n{}",
            states.join("\n")
        );
    }
    send_ids(&*broker, &inbound, 0..N).await;
    collector.wait_for(N as usize / 4, Duration::from_secs(240)).await;
    instances.remove(0).kill().await;
    assert!(collector.unique() < N as usize, "the stream finished before the kill");
    collector.wait_for(N as usize, Duration::from_secs(240)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dead = broker.ready_count(&dead_letter_queue(&inbound)).await.unwrap();
    let expected: Vec<u64> = (0..N).collect();
    let outcome = report(fault, N, &expected, &collector.counts(), dead);
    for mut instance in instances {
        instance.assert_running();
        instance.stop().await;
    }
    assert_nothing_lost(&outcome, PREFETCH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_a_classic_queue_and_survive_a_kill() {
    instances_share_a_queue_and_survive_a_kill(QueueType::Classic, "instances-kill-9-classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_a_quorum_queue_and_survive_a_kill() {
    instances_share_a_queue_and_survive_a_kill(QueueType::Quorum, "instances-kill-9-quorum").await;
}
