//! Fault tests on a three-node RabbitMQ cluster with quorum queues: each
//! streams 10,000 IDs through a `relay` service process, breaks a node in
//! the middle (kill -9 the node the service is connected to, kill -9 the
//! queue's leader, stop and restart a node, freeze a node with SIGSTOP), and
//! counts what came out. Each prints and reports
//! `fault=<name> sent=N delivered=N lost=N duplicates=N dead_lettered=N`.
//!
//! The cluster is `scripts/cluster.sh`'s (started once per run by
//! `scripts/test.sh`); every test brings back the node it broke, pass or fail.
//!
//! Who is where: the service's sys-map lists the nodes c1, c2, c3, so it
//! connects to c1; the queues are declared through c2, so their leader is c2;
//! the test's own client (sender and collector) lists c3 first.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use slingshot::broker::{Broker, QueueType};
use slingshot::protocol::dead_letter_queue;
use slingshot_tests::cluster::Cluster;
use slingshot_tests::fault_report::{assert_nothing_lost, publish, report, send_ids, spawn_stream_service, Figures};
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::{test_cluster_broker, Backend, Collector, Fixture};

const N: u64 = 10_000;
/// How many IDs may come out twice each time the service's consumer stops
/// and resumes: twice its prefetch window (concurrency 4, prefetch 8). A
/// node that goes takes both of the service's connections. Each delivery in
/// the window may have its outputs confirmed and its ack lost (the broker
/// delivers it again: one duplicate), and its publish may reach the queue
/// with the confirm lost, so it is published again on the new connection
/// before the delivery comes back (a second).
const WINDOW: u64 = 2 * slingshot_tests::fault_report::STREAM_PREFETCH;
const BREAK_AFTER: usize = 2_500;
const FINISH: Duration = Duration::from_secs(300);
/// The nodes by index.
const C1: usize = 0;
const C2: usize = 1;
const C3: usize = 2;

/// One test at a time: they share the cluster.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn cluster() -> Arc<Cluster> {
    Arc::new(tokio::task::spawn_blocking(Cluster::get).await.unwrap())
}

/// Runs a blocking cluster operation off the async threads.
async fn on(cluster: &Arc<Cluster>, operation: impl FnOnce(&Cluster) + Send + 'static) {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || operation(&cluster)).await.unwrap();
}

/// A stream of `N` IDs through `relay` on the cluster, from `in` to `out`.
struct Stream {
    f: Fixture,
    cluster: Arc<Cluster>,
    client: Arc<dyn Broker>,
    collector: Collector,
    service: ServiceProcess,
    started: std::time::Instant,
}

impl Stream {
    /// Starts everything, sends the IDs, and returns once `BREAK_AFTER`
    /// came out: the moment to break a node.
    async fn start(test: &str, cluster: Arc<Cluster>) -> Stream {
        let started = std::time::Instant::now();
        let f = Fixture::new(Backend::Real, test);
        let urls = |order: &[usize]| order.iter().map(|&i| cluster.amqp_url(i)).collect::<Vec<_>>();
        // Declared through c2: quorum queues get their leader there.
        let declarer = test_cluster_broker(&urls(&[C2]), QueueType::Quorum).await;
        for q in ["in", "out"] {
            declarer
                .declare(&f.q(q), slingshot::broker::Durability::Durable)
                .await
                .unwrap();
        }
        drop(declarer);
        let client = test_cluster_broker(&urls(&[C3, C2, C1]), QueueType::Quorum).await;
        let wiring = json!({"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]});
        let sysmap = f
            .serve_sysmap(json!({"rabbitmq": cluster.endpoint(&[C1, C2, C3]), "relay": wiring}))
            .await;
        let collector = Collector::start(client.clone(), f.q("out"));
        let quorum = [("SLINGSHOT_QUEUE_TYPE", "quorum".to_string())];
        let service = spawn_stream_service(
            env!("CARGO_BIN_EXE_fault-service"),
            "relay",
            &sysmap,
            f.dir.path(),
            &quorum,
        );
        send_ids(&*client, &f.q("in"), 0..N).await;
        collector.wait_for(BREAK_AFTER, FINISH).await;
        Stream {
            f,
            cluster,
            client,
            collector,
            service,
            started,
        }
    }

    /// Asserts the stream is still under way (so the fault hit it).
    fn assert_mid_stream(&self) {
        assert!(
            self.collector.unique() < N as usize,
            "the stream finished before the fault; nothing was tested"
        );
    }

    /// Waits for every ID, checks the service still runs, reports the fault
    /// line, brings the cluster back, stops the service, and asserts
    /// nothing was lost and duplicates stayed within `window` for each time
    /// the service's consumer stopped and resumed (each reconnection settles
    /// a window of deliveries anew).
    async fn finish(mut self, fault: &str, window: u64) {
        self.collector.wait_for(N as usize, FINISH).await;
        // Late duplicates would arrive now.
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.service.assert_running();
        let mut dead = 0;
        for q in ["in", "out"] {
            dead += self.client.ready_count(&dead_letter_queue(&self.f.q(q))).await.unwrap();
        }
        let expected: Vec<u64> = (0..N).collect();
        let outcome = report(fault, N, &expected, &self.collector.counts(), dead);
        let log = self.service.log();
        let resumed = log.matches("consumer stopped; resuming").count() as u64;
        publish(&format!(
            "fault={fault} took={}s consumer_resumed={resumed}",
            self.started.elapsed().as_secs()
        ));
        on(&self.cluster, Cluster::heal).await;
        self.service.stop().await;
        assert_nothing_lost(&outcome, window * resumed.max(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_node_the_service_is_connected_to() {
    let _turn = TURN.lock().await;
    let _figures = Figures("cluster-kill-9-connected-node");
    let cluster = cluster().await;
    let stream = Stream::start("cluster-kill", cluster.clone()).await;
    on(&cluster, |c| c.kill(C1)).await;
    stream.assert_mid_stream();
    // The stream finishes on the two nodes left; c1 comes back at the end.
    stream.finish("cluster-kill-9-connected-node", WINDOW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_queue_leader() {
    let _turn = TURN.lock().await;
    let _figures = Figures("cluster-kill-9-leader");
    let cluster = cluster().await;
    let stream = Stream::start("cluster-leader", cluster.clone()).await;
    let inbound = stream.f.q("in");
    let c = cluster.clone();
    let leader = tokio::task::spawn_blocking(move || c.leader(&inbound)).await.unwrap();
    assert_ne!(
        leader, C1,
        "the leader should not be the service's node (declared through c2)"
    );
    on(&cluster, move |c| c.kill(leader)).await;
    stream.assert_mid_stream();
    stream.finish("cluster-kill-9-leader", WINDOW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_and_restarted_mid_stream() {
    let _turn = TURN.lock().await;
    let _figures = Figures("cluster-node-stop-restart");
    let cluster = cluster().await;
    let stream = Stream::start("cluster-restart", cluster.clone()).await;
    on(&cluster, |c| c.stop(C1)).await;
    stream.assert_mid_stream();
    tokio::time::sleep(Duration::from_secs(5)).await;
    on(&cluster, |c| c.start(C1)).await;
    stream.finish("cluster-node-stop-restart", WINDOW).await;
}

/// A frozen node keeps its sockets open and answers nothing: no connection
/// error ever comes. The service's watchdog (or the heartbeat) must give up
/// on it and carry on through another node while it is still frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_left_for_another() {
    let _turn = TURN.lock().await;
    let _figures = Figures("cluster-sigstop-connected-node");
    let cluster = cluster().await;
    let stream = Stream::start("cluster-freeze", cluster.clone()).await;
    on(&cluster, |c| c.freeze(C1)).await;
    let frozen_at = stream.collector.unique();
    stream.assert_mid_stream();
    // Progress while c1 is still frozen: the service left it. (On failure
    // the cluster handle thaws c1 as it is dropped.)
    let progressed = (frozen_at + 1_000).min(N as usize);
    stream.collector.wait_for(progressed, Duration::from_secs(120)).await;
    on(&cluster, |c| c.thaw(C1)).await;
    // Deliveries held by the frozen node's channel come back once the
    // cluster notices it is gone; acknowledgements sent to it are lost, and
    // publishes it read but never confirmed are retried.
    stream.finish("cluster-sigstop-connected-node", WINDOW).await;
}
