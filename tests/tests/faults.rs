//! Fault injection against the real services: each test streams 10,000 IDs
//! through a service process, breaks something in the middle, and counts
//! what came out. The broken service is a private instance (or the service
//! process itself), never the shared RabbitMQ, PostgreSQL or Garage.
//!
//! Each prints `fault=<name> sent=N delivered=N lost=N duplicates=N dead_lettered=N`,
//! and appends it to the file `SLINGSHOT_FAULT_REPORT` names, if set
//! (`scripts/test.sh` sets it and prints the file after the run, pass or
//! fail: cargo test shows nobody a passing test's output). A fault test that
//! fails adds `fault=<name> FAILED ...` there too.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use slingshot::broker::{Broker, Durability, HeaderValue, Message};
use slingshot::protocol::{dead_letter_queue, ERROR_KIND_HEADER};
use slingshot_tests::fault_report::{self, publish, report, send_ids, spawn_stream_service, Figures, Outcome};
use slingshot_tests::private::{LaneRabbit, PrivateGarage, PrivatePostgres};
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::{drain, shared_amqp_url, test_broker, Backend, Collector, Fixture};

const N: u64 = 10_000;
/// The services' prefetch window (concurrency 4, prefetch 8): the most
/// deliveries that can be unacknowledged when something breaks.
const PREFETCH: u64 = fault_report::STREAM_PREFETCH;
const BREAK_AFTER: usize = 2_500;
const FINISH: Duration = Duration::from_secs(240);

/// One fault test at a time: they are heavy and share ports of private instances.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts `fault-service NAME` against the sys-map at `sysmap`: concurrency
/// 4, prefetch 8, quick retries, 1 ms per request.
fn spawn_service(name: &str, sysmap: &str, dir: &Path, env: &[(&str, String)]) -> ServiceProcess {
    spawn_stream_service(env!("CARGO_BIN_EXE_fault-service"), name, sysmap, dir, env)
}

fn relay_wiring(f: &Fixture, service: &str, inbound: &str, out: &str) -> (String, Value) {
    (
        service.to_string(),
        json!({"in": f.q(inbound), "out": [{"case": true, "queues": [f.q(out)]}]}),
    )
}

async fn declare(broker: &dyn Broker, f: &Fixture, queues: &[&str]) {
    for q in queues {
        broker.declare(&f.q(q), Durability::Durable).await.unwrap();
    }
}

/// A single-service stream of `N` IDs through `fault-service NAME`, from
/// `in` to `out`, waiting to be broken once `BREAK_AFTER` IDs came out.
struct Stream<'a> {
    f: &'a Fixture,
    name: &'static str,
    sysmap: String,
    env: Vec<(&'static str, String)>,
    broker: Arc<dyn Broker>,
    collector: Collector,
    service: Option<ServiceProcess>,
}

impl<'a> Stream<'a> {
    /// Starts the service and the collector, sends the IDs, and returns once
    /// `BREAK_AFTER` have arrived: the moment to break something.
    async fn start(
        f: &'a Fixture,
        name: &'static str,
        amqp: &str,
        extra: Value,
        env: Vec<(&'static str, String)>,
    ) -> Stream<'a> {
        let (service, wiring) = relay_wiring(f, name, "in", "out");
        let mut endpoints = extra;
        endpoints[service] = wiring;
        let sysmap = f.serve_sysmap(endpoints).await;
        let broker = test_broker(amqp).await;
        declare(&*broker, f, &["in", "out"]).await;
        let collector = Collector::start(broker.clone(), f.q("out"));
        let service = spawn_service(name, &sysmap, f.dir.path(), &env);
        send_ids(&*broker, &f.q("in"), 0..N).await;
        collector.wait_for(BREAK_AFTER, FINISH).await;
        Stream {
            f,
            name,
            sysmap,
            env,
            broker,
            collector,
            service: Some(service),
        }
    }

    /// Stops the service with SIGTERM (it must exit 0) and starts it again.
    async fn restart_gracefully(&mut self) -> Duration {
        let stopping = std::time::Instant::now();
        if let Some(service) = self.service.take() {
            service.stop().await;
        }
        let took = stopping.elapsed();
        assert!(
            self.collector.unique() < N as usize,
            "the stream finished before SIGTERM; nothing was tested"
        );
        self.service = Some(spawn_service(self.name, &self.sysmap, self.f.dir.path(), &self.env));
        took
    }

    /// Waits for every ID, checks the service is still running, prints the
    /// fault line, stops the service, and asserts nothing was lost.
    async fn finish(mut self, fault: &str) {
        if !self.collector.arrived_within(N as usize, FINISH).await {
            let (inbound, out) = (self.f.q("in"), self.f.q("out"));
            let ready_in = self.broker.ready_count(&inbound).await;
            let ready_out = self.broker.ready_count(&out).await;
            let log = self.service.as_ref().map(ServiceProcess::log).unwrap_or_default();
            panic!(
                "only {} of {N} IDs arrived within {FINISH:?}; ready in {inbound}: {ready_in:?}, \
                 in {out}: {ready_out:?}; the service's log:\n{log}",
                self.collector.unique()
            );
        }
        // Late duplicates would arrive now.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut service = self.service.take().expect("a running service");
        service.assert_running();
        let dead = self
            .broker
            .ready_count(&dead_letter_queue(&self.f.q("in")))
            .await
            .unwrap();
        let expected: Vec<u64> = (0..N).collect();
        let outcome = report(fault, N, &expected, &self.collector.counts(), dead);
        service.stop().await;
        assert_nothing_lost(&outcome);
    }
}

/// No ID lost, none dead-lettered, duplicates within the prefetch window.
fn assert_nothing_lost(outcome: &Outcome) {
    fault_report::assert_nothing_lost(outcome, PREFETCH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_two_stages() {
    let _turn = TURN.lock().await;
    let _figures = Figures("kill-9");
    let f = Fixture::new(Backend::Real, "kill9");
    let (a, wa) = relay_wiring(&f, "relay", "in", "mid");
    let (b, wb) = relay_wiring(&f, "relay2", "mid", "out");
    let sysmap = f.serve_sysmap(json!({a: wa, b: wb})).await;
    let broker = test_broker(&shared_amqp_url()).await;
    declare(&*broker, &f, &["in", "mid", "out"]).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    let dir = f.dir.path();
    let first = spawn_service("relay", &sysmap, dir, &[]);
    let mut second = spawn_service("relay2", &sysmap, dir, &[]);

    let sending = {
        let (broker, inbound) = (broker.clone(), f.q("in"));
        tokio::spawn(async move { send_ids(&*broker, &inbound, 0..N).await })
    };
    collector.wait_for(BREAK_AFTER, FINISH).await;
    first.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut first = spawn_service("relay", &sysmap, dir, &[]);
    sending.await.unwrap();
    collector.wait_for(N as usize, FINISH).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    first.assert_running();
    second.assert_running();
    let dead = broker.ready_count(&dead_letter_queue(&f.q("in"))).await.unwrap()
        + broker.ready_count(&dead_letter_queue(&f.q("mid"))).await.unwrap();
    let expected: Vec<u64> = (0..N).collect();
    let outcome = report("kill-9", N, &expected, &collector.counts(), dead);
    first.stop().await;
    second.stop().await;
    assert_nothing_lost(&outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted_mid_stream() {
    let _turn = TURN.lock().await;
    let _figures = Figures("rabbitmq-restart");
    // A private node of the shared broker's kind (3.10, or 4.0 in the RabbitMQ 4 lane).
    let rabbit = Arc::new(tokio::task::spawn_blocking(LaneRabbit::start).await.unwrap());
    let f = Fixture::new(Backend::Real, "rabbit-restart");
    let private =
        json!({"host": ["127.0.0.1"], "port": [rabbit.port()], "username": ["guest"], "pass": ["test/rabbitmq"]});
    let stream = Stream::start(&f, "relay", &rabbit.amqp_url(), json!({"rabbitmq": private}), vec![]).await;
    let r = rabbit.clone();
    tokio::task::spawn_blocking(move || r.stop_app()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = rabbit.clone();
    tokio::task::spawn_blocking(move || r.start_app()).await.unwrap();
    stream.finish("rabbitmq-restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_stopped_for_10s_mid_stream() {
    let _turn = TURN.lock().await;
    let _figures = Figures("garage-stop-10s");
    let mut garage = tokio::task::spawn_blocking(PrivateGarage::start).await.unwrap();
    let f = Fixture::new(Backend::Real, "garage-stop");
    let bucket = f.bucket("out");
    slingshot::storage::s3::S3Store::new(&slingshot::storage::s3::S3Config {
        endpoint: garage.endpoint(),
        region: "garage".into(),
        access_key: garage.access_key.clone(),
        secret_key: garage.secret_key.clone(),
    })
    .create_bucket(&bucket)
    .await
    .unwrap();
    let private = json!({"host": [garage.endpoint()], "pass:access-key": ["test/fault-s3-access"],
                         "pass:secret-key": ["test/fault-s3-secret"]});
    let secrets = vec![
        ("SLINGSHOT_SECRET_TEST_FAULT_S3_ACCESS", garage.access_key.clone()),
        ("SLINGSHOT_SECRET_TEST_FAULT_S3_SECRET", garage.secret_key.clone()),
    ];
    let extra = json!({"objects/out": bucket, "object-storage": private});
    let stream = Stream::start(&f, "objects", &shared_amqp_url(), extra, secrets).await;
    garage = tokio::task::spawn_blocking(move || {
        garage.stop_server();
        garage
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let garage = tokio::task::spawn_blocking(move || {
        garage.start_server();
        garage
    })
    .await
    .unwrap();
    stream.finish("garage-stop-10s").await;
    drop(garage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_10s_mid_stream() {
    use diesel::{Connection, RunQueryDsl};
    let _turn = TURN.lock().await;
    let _figures = Figures("postgres-stop-10s");
    let pg = Arc::new(tokio::task::spawn_blocking(PrivatePostgres::start).await.unwrap());
    let url = pg.url();
    tokio::task::spawn_blocking(move || {
        let mut c = diesel::PgConnection::establish(&url).unwrap();
        diesel::sql_query("CREATE TABLE fault_records (id BIGINT PRIMARY KEY)")
            .execute(&mut c)
            .unwrap();
    })
    .await
    .unwrap();
    let f = Fixture::new(Backend::Real, "postgres-stop");
    let private = json!({"host": ["127.0.0.1"], "port": [PrivatePostgres::PORT], "username": ["postgres"],
                         "database": ["postgres"], "pass": ["test/postgres"]});
    let stream = Stream::start(&f, "records", &shared_amqp_url(), json!({"db": private}), vec![]).await;
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.stop_server()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.start_server()).await.unwrap();
    stream.finish("postgres-stop-10s").await;

    let url = pg.url();
    let rows: i64 = tokio::task::spawn_blocking(move || {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut c = diesel::PgConnection::establish(&url).unwrap();
        diesel::sql_query("SELECT count(*) AS n FROM fault_records")
            .get_result::<Count>(&mut c)
            .unwrap()
            .n
    })
    .await
    .unwrap();
    assert_eq!(rows, N as i64, "every request's row is in the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_good_ones_flow() {
    let _turn = TURN.lock().await;
    let _figures = Figures("poison");
    let f = Fixture::new(Backend::Real, "poison");
    let sysmap = f
        .serve_sysmap(json!({"poison": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}}))
        .await;
    let broker = test_broker(&shared_amqp_url()).await;
    declare(&*broker, &f, &["in", "out"]).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    let dir = f.dir.path();
    let mut service = spawn_service("poison", &sysmap, dir, &[]);
    // Malformed bodies first, in the middle, and last among good IDs.
    let malformed: Vec<Vec<u8>> = (0..10u8)
        .map(|i| vec![0xff, 0xfe, i])
        .chain((0..10).map(|i| format!("id-{i}").into_bytes()))
        .collect();
    for (i, body) in malformed.iter().enumerate() {
        if i == 10 {
            send_ids(&*broker, &f.q("in"), 0..N).await;
        }
        broker.publish(&f.q("in"), Message::new(body.clone())).await.unwrap();
    }
    let poison = |id: &u64| matches!(id % 1000, 13 | 17 | 19);
    let good: Vec<u64> = (0..N).filter(|id| !poison(id)).collect();
    collector.wait_for(good.len(), FINISH).await;
    let dlq = dead_letter_queue(&f.q("in"));
    let expected_dead = (N / 1000) * 2 + malformed.len() as u64;
    let start = std::time::Instant::now();
    while broker.ready_count(&dlq).await.unwrap() < expected_dead {
        assert!(start.elapsed() < FINISH, "dead letters missing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    service.assert_running();

    let dead = drain(&*broker, &dlq).await;
    let kind = |m: &Message| match m.headers.get(ERROR_KIND_HEADER) {
        Some(HeaderValue::Str(k)) => k.clone(),
        other => panic!("dead letter without a kind: {other:?}"),
    };
    let mut by_kind: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for d in &dead {
        by_kind
            .entry(kind(&d.message))
            .or_default()
            .push(d.message.body.to_vec());
    }
    let ids_of = |k: &str| {
        let mut ids: Vec<u64> = by_kind[k]
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(ids_of("panic"), (0..N).filter(|i| i % 1000 == 13).collect::<Vec<_>>());
    assert_eq!(
        ids_of("process-error"),
        (0..N).filter(|i| i % 1000 == 17).collect::<Vec<_>>()
    );
    let mut bad = by_kind["malformed"].clone();
    bad.sort();
    let mut sent_bad = malformed.clone();
    sent_bad.sort();
    assert_eq!(bad, sent_bad, "every malformed body is dead-lettered as malformed");
    let counts = collector.counts();
    assert!(
        (0..N).filter(|i| i % 1000 == 19).all(|i| !counts.contains_key(&i)),
        "unrouted outputs went somewhere"
    );

    let outcome = report("poison", N + malformed.len() as u64, &good, &counts, dead.len() as u64);
    service.stop().await;
    assert_eq!(outcome.lost, 0);
    assert_eq!(outcome.dead_lettered, expected_dead);
    assert!(outcome.duplicates <= PREFETCH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_then_restart() {
    let _turn = TURN.lock().await;
    let _figures = Figures("sigterm");
    let f = Fixture::new(Backend::Real, "sigterm");
    let mut stream = Stream::start(&f, "relay", &shared_amqp_url(), json!({}), vec![]).await;
    let took = stream.restart_gracefully().await;
    publish(&format!(
        "sigterm: the service exited 0 {:.0} ms after SIGTERM",
        took.as_secs_f64() * 1000.0
    ));
    stream.finish("sigterm").await;
}
