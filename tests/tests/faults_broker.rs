//! The broker misbehaving while a service process works: a memory alarm, a
//! deleted output queue, a dead-letter queue that refuses publishes, a
//! connection closed under an ack, and a `process` that never returns when
//! SIGTERM comes. Each stream prints a `fault=` line (see
//! `tests/src/fault_report.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::QueueDeleteOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Connection, ConnectionProperties};
use serde_json::json;
use slingshot::broker::{Broker, Durability};
use slingshot_tests::fault_report::{publish, report, send_ids, stream_settings_retrying, Figures};
use slingshot_tests::private::{LaneRabbit, PrivateRabbit};
use slingshot_tests::probe::{free_port, get, wait_status};
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::{shared_amqp_url, test_broker, Backend, Collector, Fixture};

const FAULT_SERVICE: &str = env!("CARGO_BIN_EXE_fault-service");
const FINISH: Duration = Duration::from_secs(180);

/// One at a time: each runs a service process and a stream.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn wiring(f: &Fixture) -> serde_json::Value {
    json!({"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]})
}

/// `fault-service NAME` against `sysmap`: concurrency 4, prefetch 8, quick
/// retries (20 to 100 ms), 1 ms per request; `env` may override any of it.
fn spawn(f: &Fixture, name: &str, sysmap: &str, env: &[(&str, String)]) -> ServiceProcess {
    let settings = [stream_settings_retrying(20, 100), env.to_vec()].concat();
    ServiceProcess::spawn(FAULT_SERVICE, name, sysmap, f.dir.path(), &settings)
}

async fn declare(broker: &dyn Broker, f: &Fixture) {
    for q in ["in", "out"] {
        broker.declare(&f.q(q), Durability::Durable).await.unwrap();
    }
}

/// Puts the memory watermark back however the test ends.
struct Watermark(Arc<PrivateRabbit>);

impl Drop for Watermark {
    fn drop(&mut self) {
        self.0.set_memory_watermark(0.4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_alarm_is_waited_out_without_reconnecting_or_running_anything_twice() {
    const N: u64 = 3000;
    let _turn = TURN.lock().await;
    let _figures = Figures("memory-alarm");
    let rabbit = Arc::new(tokio::task::spawn_blocking(PrivateRabbit::start).await.unwrap());
    let f = Fixture::new(Backend::Real, "memory-alarm");
    let private =
        json!({"host": ["127.0.0.1"], "port": [PrivateRabbit::PORT], "username": ["guest"], "pass": ["test/rabbitmq"]});
    let sysmap = f.serve_sysmap(json!({"relay": wiring(&f), "rabbitmq": private})).await;
    let broker = test_broker(&rabbit.amqp_url()).await;
    declare(&*broker, &f).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    // 10 ms a request: the stream outlasts the alarm's start.
    let mut service = spawn(&f, "relay", &sysmap, &[("SLINGSHOT_TEST_DELAY_MS", "10".to_string())]);
    send_ids(&*broker, &f.q("in"), 0..N).await;
    collector.wait_for(500, FINISH).await;

    // The alarm: every connection that publishes is blocked, for longer than
    // a confirm may take (15 s) before a connection is given up.
    let alarm = {
        let r = rabbit.clone();
        tokio::task::spawn_blocking(move || {
            r.set_memory_watermark(0.000_1);
            Watermark(r)
        })
        .await
        .unwrap()
    };
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = collector.unique();
    assert!(
        during < N as usize,
        "the stream finished during the alarm; nothing was tested"
    );
    tokio::task::spawn_blocking(move || drop(alarm)).await.unwrap();

    collector.wait_for(N as usize, FINISH).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    service.assert_kept_its_connection();
    let log = service.log();
    assert!(
        log.contains("the broker blocked publishing"),
        "the alarm went unnoticed:\n{log}"
    );
    let expected: Vec<u64> = (0..N).collect();
    let outcome = report("memory-alarm", N, &expected, &collector.counts(), 0);
    service.stop().await;
    assert_eq!(
        (outcome.lost, outcome.duplicates),
        (0, 0),
        "nothing lost, nothing run twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_in_time_with_every_slot_stuck_and_healthz_says_so() {
    const N: u64 = 1000;
    let _turn = TURN.lock().await;
    let _figures = Figures("stuck-process-sigterm");
    let f = Fixture::new(Backend::Real, "stuck-sigterm");
    let sysmap = f.serve_sysmap(json!({"stuck": wiring(&f)})).await;
    let broker = test_broker(&shared_amqp_url()).await;
    declare(&*broker, &f).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    let port = free_port();
    let health = format!("http://127.0.0.1:{port}/healthz");
    let service = spawn(
        &f,
        "stuck",
        &sysmap,
        &[
            ("SLINGSHOT_HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("SLINGSHOT_SHUTDOWN_SECS", "3".to_string()),
            ("SLINGSHOT_STUCK_SECS", "2".to_string()),
        ],
    );
    // One request that never returns among good ones: the others flow, and
    // one stuck slot of four is not a stuck service.
    send_ids(&*broker, &f.q("in"), 0..N).await;
    let expected: Vec<u64> = (0..N).filter(|id| id % 1000 != 300).collect();
    collector.wait_for(expected.len(), FINISH).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(get(&health).await.map(|(s, _)| s), Some(200), "one stuck slot of four");
    // Three more: every slot is stuck, and liveness says so.
    send_ids(&*broker, &f.q("in"), 1300..1301).await;
    send_ids(&*broker, &f.q("in"), 2300..2301).await;
    send_ids(&*broker, &f.q("in"), 3300..3301).await;
    let why = wait_status(&health, 503, Duration::from_secs(30)).await;
    assert!(why.contains("4 of 4 slots"), "{why}");

    let stopping = Instant::now();
    let (status, log) = service.stop_status().await;
    let took = stopping.elapsed();
    assert_eq!(status.code(), Some(75), "the exit code says requests were given up");
    assert!(
        log.contains("giving up requests still running at the shutdown deadline"),
        "{log}"
    );
    // The deadline (3 s) and a little: never the stuck calls' lifetime.
    publish(&format!(
        "stuck-process-sigterm: exited {:.1} s after SIGTERM with 4 of 4 slots stuck (deadline 3 s)",
        took.as_secs_f64()
    ));
    assert!(took < Duration::from_secs(3 + 5), "took {took:?}");
    // What was stuck went back to the queue.
    let back = broker.ready_count(&f.q("in")).await.expect("count");
    assert_eq!(back, 4, "the four stuck requests return to the queue");
    let outcome = report("stuck-process-sigterm", N + 3, &expected, &collector.counts(), 0);
    assert_eq!(outcome.lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_output_queue_is_declared_again_without_running_process_twice() {
    const N: u64 = 1000;
    let _turn = TURN.lock().await;
    let _figures = Figures("queue-deleted");
    let f = Fixture::new(Backend::Real, "queue-deleted");
    f.create_tables(&["CREATE TABLE counted_calls (id BIGINT NOT NULL)"])
        .await;
    let sysmap = f.serve_sysmap(json!({"counted": wiring(&f)})).await;
    let broker = test_broker(&shared_amqp_url()).await;
    declare(&*broker, &f).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    let mut service = spawn(&f, "counted", &sysmap, &[("SLINGSHOT_LOG", "warn".to_string())]);
    send_ids(&*broker, &f.q("in"), 0..N / 2).await;
    // Every output so far collected: the deletion destroys none.
    collector.wait_for(N as usize / 2, FINISH).await;
    // Someone deletes the output queue; the next outputs are returned.
    let connection = Connection::connect(&shared_amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_delete(ShortString::from(f.q("out")), QueueDeleteOptions::default())
        .await
        .expect("delete the output queue");
    send_ids(&*broker, &f.q("in"), N / 2..N).await;

    let start = Instant::now();
    let calls = loop {
        let calls = count_calls(&f).await;
        if calls.len() as u64 == N && broker.ready_count(&f.q("in")).await.unwrap_or(1) == 0 {
            break calls;
        }
        assert!(
            start.elapsed() < FINISH,
            "{} of {N} IDs processed:\n{}",
            calls.len(),
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let twice: Vec<_> = calls.iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "process ran more than once for {twice:?}");
    let expected: Vec<u64> = (0..N).collect();
    collector.wait_for_all(&expected, FINISH).await;
    service.assert_kept_its_connection();
    assert!(service.log().contains("declared it again"), "{}", service.log());
    let outcome = report("queue-deleted", N, &expected, &collector.counts(), 0);
    service.stop().await;
    assert_eq!(outcome.lost, 0);
}

/// A consumer that stops while a request is still running (here: the
/// inbound queue deleted under it, with a `process` call that never
/// returns) must consume again at once, that request keeping its slot,
/// rather than wait for it up to the shutdown deadline (and count it given
/// up, as if shutting down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_consumer_resumes_without_waiting_for_its_requests_in_flight() {
    const DEADLINE_SECS: u64 = 60;
    let _turn = TURN.lock().await;
    let _figures = Figures("consumer-lost-in-flight");
    let f = Fixture::new(Backend::Real, "lost-in-flight");
    let sysmap = f.serve_sysmap(json!({"stuck": wiring(&f)})).await;
    let broker = test_broker(&shared_amqp_url()).await;
    declare(&*broker, &f).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    let mut service = spawn(
        &f,
        "stuck",
        &sysmap,
        &[("SLINGSHOT_SHUTDOWN_SECS", DEADLINE_SECS.to_string())],
    );
    // 300 never returns; 0..10 show the service consumes.
    send_ids(&*broker, &f.q("in"), 300..301).await;
    send_ids(&*broker, &f.q("in"), 0..10).await;
    collector.wait_for(10, FINISH).await;

    // The inbound queue goes, and comes back at once: the broker cancels
    // the consumer, with request 300 still running.
    let connection = Connection::connect(&shared_amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_delete(ShortString::from(f.q("in")), QueueDeleteOptions::default())
        .await
        .expect("delete the inbound queue");
    broker.declare(&f.q("in"), Durability::Durable).await.unwrap();
    let resumed = Instant::now();
    send_ids(&*broker, &f.q("in"), 1000..1100).await;
    // Resuming takes a backoff delay (at most a few seconds); waiting for
    // request 300 would take the whole deadline.
    let expected: Vec<u64> = (0..10).chain(1000..1100).collect();
    collector
        .wait_for_all(&expected, Duration::from_secs(DEADLINE_SECS / 2))
        .await;
    publish(&format!(
        "consumer-lost-in-flight: consuming again {:.1} s after the queue came back, with one request stuck (deadline {DEADLINE_SECS} s)",
        resumed.elapsed().as_secs_f64()
    ));
    let log = service.log();
    assert!(
        log.contains("consumer stopped; resuming"),
        "the consumer was not cancelled:\n{log}"
    );
    assert!(
        !log.contains("shutdown deadline passed"),
        "a reconnection gave up requests as if shutting down:\n{log}"
    );
    service.assert_running();
    report("consumer-lost-in-flight", 111, &expected, &collector.counts(), 0);
    // Request 300 never returns: SIGTERM would wait out the whole deadline.
    service.kill().await;
}

/// How many times `process` ran for each ID of the `counted` service.
async fn count_calls(f: &Fixture) -> Vec<(i64, i64)> {
    let url = f.database().await.url().to_string();
    tokio::task::spawn_blocking(move || {
        use diesel::{Connection, RunQueryDsl};
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            id: i64,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut c = diesel::PgConnection::establish(&url).expect("connect");
        diesel::sql_query("SELECT id, count(*) AS n FROM counted_calls GROUP BY id")
            .load::<Row>(&mut c)
            .expect("count")
            .into_iter()
            .map(|r| (r.id, r.n))
            .collect()
    })
    .await
    .expect("counting")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_dead_letter_is_retried_with_backoff_not_by_running_process_again() {
    let _turn = TURN.lock().await;
    let _figures = Figures("dead-letter-refused");
    let f = Fixture::new(Backend::Real, "dlq-refused");
    let sysmap = f.serve_sysmap(json!({"hostile": wiring(&f)})).await;
    let broker = test_broker(&shared_amqp_url()).await;
    declare(&*broker, &f).await;
    // A dead-letter queue that refuses every publish (a length limit).
    let dlq = format!("{}.dead-letter", f.q("in"));
    let connection = Connection::connect(&shared_amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let mut full = FieldTable::default();
    full.insert(ShortString::from("x-max-length"), AMQPValue::LongLongInt(0));
    full.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    channel
        .queue_declare(
            ShortString::from(dlq.as_str()),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            full,
        )
        .await
        .expect("declare the full dead-letter queue");
    let mut service = spawn(&f, "hostile", &sysmap, &[("SLINGSHOT_MAX_ATTEMPTS", "1".to_string())]);
    send_ids(&*broker, &f.q("in"), 1_000_001..1_000_002).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log_then = service.log();
    let ran = log_then.matches("dead-lettered").count();
    let tries = log_then.matches("publish not confirmed; trying again").count();
    publish(&format!(
        "dead-letter-refused: in 5 s, process ran {ran} time(s) and the dead letter was tried {tries} times"
    ));
    assert_eq!(ran, 1, "process ran again for a refused dead letter:\n{log_then}");
    assert!(tries >= 5, "the dead letter is retried:\n{log_then}");
    assert!(tries <= 100, "{tries} tries in 5 s: no backoff");

    // The queue is replaced by one that takes it: the dead letter arrives once.
    channel
        .queue_delete(ShortString::from(dlq.as_str()), QueueDeleteOptions::default())
        .await
        .expect("delete");
    let start = Instant::now();
    while broker.ready_count(&dlq).await.unwrap_or(0) < 1 {
        assert!(
            start.elapsed() < FINISH,
            "the dead letter never arrived:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dead = slingshot_tests::drain(&*broker, &dlq).await;
    assert_eq!(dead.len(), 1);
    service.assert_kept_its_connection();
    let outcome = report("dead-letter-refused", 1, &[], &Default::default(), 1);
    service.stop().await;
    assert_eq!(outcome.lost, 0);
}

/// A private node of the lane's broker with `ids` published to a durable
/// queue of its own, every one of them delivered to one consumer and held
/// unacknowledged.
struct Held {
    rabbit: Arc<LaneRabbit>,
    broker: Arc<dyn Broker>,
    queue: String,
    consumer: Box<dyn slingshot::broker::Consumer>,
    deliveries: Vec<slingshot::broker::Delivery>,
    _f: Fixture,
}

async fn held(prefix: &str, ids: std::ops::Range<u64>) -> Held {
    let rabbit = Arc::new(tokio::task::spawn_blocking(LaneRabbit::start).await.unwrap());
    let f = Fixture::new(Backend::Real, prefix);
    let broker = test_broker(&rabbit.amqp_url()).await;
    let queue = f.q("in");
    broker.declare(&queue, Durability::Durable).await.unwrap();
    let n = ids.end - ids.start;
    send_ids(&*broker, &queue, ids).await;
    let prefetch = u16::try_from(n).expect("a prefetch for every ID");
    let mut consumer = broker.consume(&queue, prefetch).await.unwrap();
    let mut deliveries = Vec::new();
    while (deliveries.len() as u64) < n {
        let delivery = tokio::time::timeout(FINISH, consumer.next())
            .await
            .expect("every delivery in time")
            .expect("the consumer is open")
            .expect("a delivery");
        deliveries.push(delivery);
    }
    Held {
        rabbit,
        broker,
        queue,
        consumer,
        deliveries,
        _f: f,
    }
}

/// An ack for a delivery whose connection the broker closed was never sent:
/// it must fail, within the answer timeout, so that the request is not
/// counted as done; and the broker must deliver the message again. (lapin
/// answers such an ack with `Ok(false)`, which read as success.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_after_the_broker_closed_the_connection_fails_and_the_message_comes_back() {
    let _turn = TURN.lock().await;
    let Held {
        rabbit,
        broker,
        queue,
        consumer,
        mut deliveries,
        _f,
    } = held("late-ack", 7..8).await;
    let delivery = deliveries.pop().expect("one delivery");

    let r = rabbit.clone();
    tokio::task::spawn_blocking(move || r.stop_app()).await.unwrap();
    let closed = Instant::now();
    while delivery.acker.is_live() {
        assert!(
            closed.elapsed() < Duration::from_secs(30),
            "the delivery still looks live 30 s after the broker stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let limit = slingshot::broker::rabbitmq::ANSWER_TIMEOUT + Duration::from_secs(5);
    let acked = tokio::time::timeout(limit, delivery.acker.ack())
        .await
        .expect("the ack returns within the answer timeout");
    assert!(
        acked.is_err(),
        "an ack on a closed connection reported success: {acked:?}"
    );
    drop(consumer);

    let r = rabbit.clone();
    tokio::task::spawn_blocking(move || r.start_app()).await.unwrap();
    let back = Instant::now();
    let again = loop {
        if let Ok(Some(delivery)) = broker.get(&queue).await {
            break delivery;
        }
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "the message did not come back within 60 s of the broker's start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(again.redelivered, "the message came back without the redelivered flag");
    assert_eq!(
        slingshot::protocol::Request::decode(&again.message).id.ok(),
        Some(7),
        "another message came back"
    );
    again.acker.ack().await.expect("ack on a live connection");
}

/// Acks racing the broker closing their connection: each returns within
/// the answer timeout, whether or not it got out, and every message not
/// acknowledged comes back. A request whose ack never returns holds its
/// slot forever and, at SIGTERM, the whole shutdown deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_racing_a_closed_connection_all_return_and_nothing_is_lost() {
    const N: u64 = 2000;
    let _turn = TURN.lock().await;
    let Held {
        rabbit,
        broker,
        queue,
        consumer,
        deliveries,
        _f,
    } = held("racing-acks", 0..N).await;

    // The broker stops; meanwhile acks go out one every 5 ms (10 s in all),
    // the first ones before it closes the connection, the last ones after.
    let r = rabbit.clone();
    let stopping = tokio::task::spawn_blocking(move || r.stop_app());
    let limit = slingshot::broker::rabbitmq::ANSWER_TIMEOUT + Duration::from_secs(5);
    let acking = tokio::spawn(async move {
        let mut acks = Vec::new();
        for delivery in deliveries {
            acks.push(tokio::spawn(tokio::time::timeout(limit, delivery.acker.ack())));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut acked = 0u64;
        let mut hung = 0u64;
        for ack in acks {
            match ack.await.expect("the ack task") {
                Ok(Ok(())) => acked += 1,
                Ok(Err(_)) => {}
                Err(_) => hung += 1,
            }
        }
        (acked, hung)
    });
    stopping.await.unwrap();
    let (acked, hung) = acking.await.unwrap();
    drop(consumer);
    assert_eq!(hung, 0, "{hung} acks did not return within {limit:?}");
    assert!(
        acked < N,
        "every ack got out before the broker stopped; nothing was raced"
    );

    let r = rabbit.clone();
    tokio::task::spawn_blocking(move || r.start_app()).await.unwrap();
    let back = Instant::now();
    let ready = loop {
        if let Ok(ready) = broker.ready_count(&queue).await {
            break ready;
        }
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "no queue count within 60 s of the broker's start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    publish(&format!(
        "racing-acks: {acked} of {N} acks got out before the broker stopped; {ready} messages back"
    ));
    assert!(
        acked + ready >= N,
        "messages lost: {acked} acknowledged, {ready} back, of {N}"
    );
}
