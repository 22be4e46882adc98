//! Once mode (issue 24) under faults, on the real services: a pipeline of
//! three once-mode stages (`once-stage once-a` → `once-b` → `once-c` → a sink
//! queue), each doing a write that is not idempotent (a counter per ID goes
//! up by one) and writing an object per ID, streams 10,000 IDs while
//! something breaks. Afterwards every counter of every stage is exactly 1,
//! every object is there with the right bytes, the sink holds every ID under
//! one `message-id` and no other, every inbox holds one row per ID and every
//! outbox is empty.
//!
//! The faults: the stage's process dies (a fault point,
//! `SLINGSHOT_FAULT_POINT`, aborts it as `kill -9` would) right after its
//! uploads, right after its commit, and after its outputs were confirmed but
//! before its input was acknowledged; its relay dies in the middle of a
//! batch; RabbitMQ restarts (a private node); the producer publishes every
//! message twice with one `message-id`; two instances of every stage get the
//! two copies at the same time. Each run has its own queues, buckets and
//! database, and prints
//! `fault=once-<name> broker=<version> sent=N delivered=N lost=0 duplicates=0 double_effects=0 redelivered=N ...`
//! through `slingshot_tests::fault_report` (so `scripts/test.sh` shows it):
//! `duplicates` are IDs that reached the sink under two `message-id`s,
//! `redelivered` deliveries at the sink of a `message-id` seen before (the
//! transport is at least once; a once-mode consumer's inbox takes those
//! once), `double_effects` counter rows above 1.
//!
//! The overlap test runs 1,000 keys × 20 messages through four instances of
//! one once-mode stage, killing one at random every second or so, and checks
//! in a table of runs (key, started, finished) that no two runs of one key
//! ever overlapped: `once-overlap: keys=1000 messages=20000 instances=4 kills=K runs=N unfinished=U overlapping=0`.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{json, Value};
use slingshot::broker::{Broker, Durability, HeaderValue, Message};
use slingshot::db::once::Tables;
use slingshot::protocol::{dead_letter_queue, output_message_id, KEY_HEADER};
use slingshot::storage::ObjectStore;
use slingshot_tests::fault_report::{broker as broker_version, publish, Figures};
use slingshot_tests::private::LaneRabbit;
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::{read_object, shared_amqp_url, test_broker, Backend, Fixture, Services};

/// IDs a pipeline streams.
const N: u64 = 10_000;
/// The visit of the fault point that kills the first instance of stage b.
const KILL_AT: u64 = 3_000;
/// How long a stream, or a wait within it, may take.
const FINISH: Duration = Duration::from_secs(300);
/// The stages, in pipeline order, with their counter tables and the queue
/// each consumes (the last one's output goes to `sink`).
const STAGES: [(&str, &str, &str); 3] = [
    ("once-a", "counters_a", "in"),
    ("once-b", "counters_b", "ab"),
    ("once-c", "counters_c", "bc"),
];
/// Objects read back and compared, per stage.
const SAMPLE: u64 = 100;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_once-stage")
}

/// The settings of every stage process: concurrency 4, prefetch 8, quick
/// retries, 20 s to shut down, then `env`.
fn stage_env(env: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("SLINGSHOT_CONCURRENCY", "4".to_string()),
        ("SLINGSHOT_PREFETCH", "8".to_string()),
        ("SLINGSHOT_RETRY_BASE_MS", "50".to_string()),
        ("SLINGSHOT_RETRY_MAX_MS", "1000".to_string()),
        ("SLINGSHOT_SHUTDOWN_SECS", "20".to_string()),
    ];
    settings.extend(env.iter().cloned());
    settings
}

// ---- the database ----------------------------------------------------------

#[derive(diesel::QueryableByName)]
struct Scalar {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// The `n` (a `BIGINT`) the query `sql` returns, in the database at `url`.
async fn scalar(url: &str, sql: String) -> i64 {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let mut connection = PgConnection::establish(&url).unwrap_or_else(|e| panic!("connect for {sql}: {e}"));
        diesel::sql_query(&sql)
            .get_result::<Scalar>(&mut connection)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .n
    })
    .await
    .expect("a database query")
}

#[derive(diesel::QueryableByName)]
struct Line {
    #[diesel(sql_type = diesel::sql_types::Text)]
    line: String,
}

/// The rows of `sql`, each one `line` of text, in the database at `url`.
async fn lines(url: &str, sql: String) -> Vec<String> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let mut connection = PgConnection::establish(&url).unwrap_or_else(|e| panic!("connect for {sql}: {e}"));
        diesel::sql_query(&sql)
            .load::<Line>(&mut connection)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .map(|l| l.line)
            .collect()
    })
    .await
    .expect("a database query")
}

/// The `seq` of every row in `outbox`.
async fn outbox_seqs(url: &str, outbox: &str) -> Vec<i64> {
    let (url, sql) = (url.to_string(), format!("SELECT seq AS n FROM {outbox} ORDER BY seq"));
    tokio::task::spawn_blocking(move || {
        let mut connection = PgConnection::establish(&url).unwrap_or_else(|e| panic!("connect for {sql}: {e}"));
        diesel::sql_query(&sql)
            .load::<Scalar>(&mut connection)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .map(|r| r.n)
            .collect()
    })
    .await
    .expect("a database query")
}

/// The tables of a counter per ID, each at 0, for `ids` IDs.
fn counter_tables(tables: &[&str], ids: u64) -> Vec<String> {
    tables
        .iter()
        .flat_map(|t| {
            [
                format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, n INTEGER NOT NULL)"),
                format!(
                    "INSERT INTO {t} (id, n) SELECT g, 0 FROM generate_series(0, {}) g",
                    ids - 1
                ),
            ]
        })
        .collect()
}

/// What a counter table came to.
#[derive(Debug, Clone, Copy)]
struct Effects {
    /// Rows whose counter is not 1.
    off: i64,
    /// Rows whose counter is above 1: a write done twice.
    double: i64,
    /// Rows whose counter is 0: a write lost.
    missing: i64,
}

async fn effects(url: &str, table: &str) -> Effects {
    Effects {
        off: scalar(url, format!("SELECT count(*) AS n FROM {table} WHERE n <> 1")).await,
        double: scalar(url, format!("SELECT count(*) AS n FROM {table} WHERE n > 1")).await,
        missing: scalar(url, format!("SELECT count(*) AS n FROM {table} WHERE n = 0")).await,
    }
}

// ---- the sink --------------------------------------------------------------

/// What arrived at the sink.
#[derive(Default)]
struct SinkState {
    /// The `message-id`s each ID arrived under.
    ids: HashMap<u64, HashSet<String>>,
    /// Every `message-id` seen.
    seen: HashSet<String>,
    /// Deliveries of a `message-id` seen before.
    redelivered: u64,
    /// Deliveries without a `message-id` (slingshot always sets one).
    anonymous: u64,
    deliveries: u64,
}

/// Consumes the sink queue in the background, through broker restarts, and
/// records every delivery by `message-id`.
struct Sink {
    state: Arc<Mutex<SinkState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    fn start(broker: Arc<dyn Broker>, queue: String) -> Sink {
        let state: Arc<Mutex<SinkState>> = Arc::default();
        let recorded = state.clone();
        let task = slingshot_tests::watch_queue(broker, queue, move |id, delivery| {
            let mut s = recorded.lock().unwrap();
            s.deliveries += 1;
            match delivery.message.properties.message_id.clone() {
                Some(mid) => {
                    if !s.seen.insert(mid.clone()) {
                        s.redelivered += 1;
                    }
                    s.ids.entry(id).or_default().insert(mid);
                }
                None => {
                    s.anonymous += 1;
                    s.ids.entry(id).or_default().insert(String::new());
                }
            }
        });
        Sink { state, task }
    }

    /// Distinct IDs received.
    fn unique(&self) -> usize {
        self.state.lock().unwrap().ids.len()
    }

    /// Whether `n` distinct IDs arrived within `timeout`.
    async fn arrived_within(&self, n: usize, timeout: Duration) -> bool {
        slingshot_tests::becomes_true(timeout, || self.unique() >= n).await
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- objects ---------------------------------------------------------------

/// How many objects `bucket` holds (listed a thousand at a time).
async fn count_objects(s3: &slingshot::storage::s3::S3Store, bucket: &str) -> u64 {
    let mut count = 0u64;
    let mut token: Option<String> = None;
    loop {
        let page = s3
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token.take())
            .send()
            .await
            .unwrap_or_else(|e| panic!("list the objects of {bucket}: {e:?}"));
        count += page.contents().len() as u64;
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
            _ => return count,
        }
    }
}

/// The sampled IDs whose objects are read back: one in every hundred,
/// spread over the hundreds.
fn sample(n: u64) -> Vec<u64> {
    let step = n / SAMPLE;
    (0..SAMPLE).map(|i| i * step + (i * 37) % step).collect()
}

// ---- the pipeline ----------------------------------------------------------

/// A three-stage once-mode pipeline of one test: its fixture (queues,
/// buckets, database), the test's broker connection, the sink, and the
/// stage processes.
struct Pipeline {
    f: Fixture,
    fault: &'static str,
    sysmap: String,
    db: String,
    broker: Arc<dyn Broker>,
    sink: Sink,
    /// The running stage processes, by stage name.
    running: Vec<(&'static str, ServiceProcess)>,
    /// Messages the producer published.
    sent: u64,
    /// When the test set the pipeline up.
    born: Instant,
}

impl Pipeline {
    /// The fixture, its counter tables (one row per ID, each 0), the sys-map
    /// (with `extra` endpoints: another RabbitMQ, say), the queues, and the
    /// sink's consumer on the RabbitMQ at `amqp`. No stage runs yet.
    async fn new(fault: &'static str, amqp: &str, extra: Value) -> Pipeline {
        let born = Instant::now();
        let f = Fixture::new(Backend::Real, fault);
        let tables: Vec<&str> = STAGES.iter().map(|(_, table, _)| *table).collect();
        let statements = counter_tables(&tables, N);
        f.create_tables(&statements.iter().map(String::as_str).collect::<Vec<_>>())
            .await;
        let mut endpoints = extra;
        for (i, (stage, _, inbound)) in STAGES.iter().enumerate() {
            let out = STAGES.get(i + 1).map_or("sink", |next| next.2);
            endpoints[*stage] = json!({"in": f.q(inbound), "out": [{"case": true, "queues": [f.q(out)]}]});
            endpoints[format!("{stage}/out")] = Value::String(f.bucket(&stage[5..]));
        }
        let sysmap = f.serve_sysmap(endpoints).await;
        let db = f.database().await.url().to_string();
        let broker = test_broker(amqp).await;
        for q in ["in", "ab", "bc", "sink"] {
            broker.declare(&f.q(q), Durability::Durable).await.unwrap();
        }
        let sink = Sink::start(broker.clone(), f.q("sink"));
        Pipeline {
            f,
            fault,
            sysmap,
            db,
            broker,
            sink,
            running: Vec::new(),
            sent: 0,
            born,
        }
    }

    /// Starts an instance of `stage` with the stage settings and `env`.
    fn spawn(&self, stage: &'static str, env: &[(&'static str, String)]) -> ServiceProcess {
        ServiceProcess::spawn(binary(), stage, &self.sysmap, self.f.dir.path(), &stage_env(env))
    }

    /// Starts an instance of `stage` that runs until the end of the test.
    fn run(&mut self, stage: &'static str, env: &[(&'static str, String)]) {
        let process = self.spawn(stage, env);
        self.running.push((stage, process));
    }

    /// Publishes `messages` to the first stage's queue with confirms, a
    /// thousand at a time.
    async fn send(&mut self, messages: Vec<Message>) {
        let inbound = self.f.q("in");
        for chunk in messages.chunks(1000) {
            futures::future::try_join_all(chunk.iter().map(|m| self.broker.publish(&inbound, m.clone())))
                .await
                .expect("send the stream");
        }
        self.sent += messages.len() as u64;
    }

    /// The outbox of `stage`.
    fn outbox(stage: &str) -> String {
        Tables::of(stage).outbox
    }

    /// Rows in the outbox of `stage`.
    async fn outbox_rows(&self, stage: &str) -> i64 {
        scalar(&self.db, format!("SELECT count(*) AS n FROM {}", Self::outbox(stage))).await
    }

    /// Waits for `process` to abort at the fault point `point` (its
    /// `visit`th time there), as `kill -9` would end it; panics with its
    /// log if it does not within [`FINISH`] or ends otherwise.
    async fn wait_for_fault(&self, mut process: ServiceProcess, point: &str, visit: u64) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = process.exited() {
                break status;
            }
            assert!(
                start.elapsed() < FINISH,
                "{}: the process did not reach {point}:{visit} within {FINISH:?} ({} IDs at the sink); its log:\n{}",
                self.fault,
                self.sink.unique(),
                tail(&process.log())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let log = process.log();
        let line = format!("fault point {point}: visit {visit}, aborting");
        assert!(
            status.signal() == Some(6) && log.contains(&line),
            "{}: the process ended with {status}, not at {point}:{visit}; its log:\n{}",
            self.fault,
            tail(&log)
        );
    }

    /// Waits until every ID reached the sink, every outbox is empty and
    /// every stage's queue is drained, then stops the stages (each must
    /// exit 0 on SIGTERM) and checks and reports the outcome: every counter
    /// exactly 1, every object right, each ID at the sink under one
    /// `message-id` (`expected_ids`, if given, the one it must be), one inbox
    /// row per ID, nothing dead-lettered. `extra` goes on the fault line.
    async fn finish(mut self, extra: &str, expected_ids: Option<&dyn Fn(u64) -> String>) {
        if !self.sink.arrived_within(N as usize, FINISH).await {
            let mut depths = String::new();
            for q in ["in", "ab", "bc", "sink"] {
                let ready = self.broker.ready_count(&self.f.q(q)).await;
                depths.push_str(&format!(" {q}={ready:?}"));
            }
            let mut logs = String::new();
            for (stage, process) in &self.running {
                logs.push_str(&format!("--- {stage}:\n{}\n", tail(&process.log())));
            }
            panic!(
                "{}: only {} of {N} IDs reached the sink within {FINISH:?}; ready:{depths}\n{logs}",
                self.fault,
                self.sink.unique()
            );
        }
        // Outputs a crash left are published by a relay after its grace.
        for (stage, _, _) in STAGES {
            let waiting = Instant::now();
            loop {
                let rows = self.outbox_rows(stage).await;
                if rows == 0 {
                    break;
                }
                assert!(
                    waiting.elapsed() < FINISH,
                    "{}: {rows} rows stay in the outbox of {stage} {FINISH:?} after the stream",
                    self.fault
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Every queue empty twice, 2 s apart: copies still on their way
        // (a redelivery, a relay's row) have arrived and been taken, and
        // the stages hold nothing when they are stopped.
        let waiting = Instant::now();
        let mut quiet = 0;
        while quiet < 2 {
            let mut ready = 0;
            for q in ["in", "ab", "bc", "sink"] {
                ready += self.broker.ready_count(&self.f.q(q)).await.unwrap();
            }
            if ready == 0 {
                quiet += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
            } else {
                quiet = 0;
                assert!(waiting.elapsed() < FINISH, "{}: the queues do not drain", self.fault);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let running = std::mem::take(&mut self.running);
        for (_, mut process) in running {
            process.assert_running();
            process.stop().await;
        }
        let mut dead_lettered = 0;
        let mut unsettled = Vec::new();
        for q in ["in", "ab", "bc"] {
            let queue = self.f.q(q);
            dead_lettered += self.broker.ready_count(&dead_letter_queue(&queue)).await.unwrap();
            // Stopped, the stages hold nothing: whatever is left was never acknowledged.
            let left = self.broker.ready_count(&queue).await.unwrap();
            if left > 0 {
                unsettled.push(format!("{queue}: {left}"));
            }
        }

        let mut double_effects = 0;
        let mut missing_effects = 0;
        let mut outbox_left = 0;
        let mut off = Vec::new();
        let mut inboxes = Vec::new();
        for (stage, table, _) in STAGES {
            outbox_left += self.outbox_rows(stage).await;
            let e = effects(&self.db, table).await;
            double_effects += e.double;
            missing_effects += e.missing;
            if e.off > 0 {
                off.push(format!("{stage}: {e:?}"));
            }
            let inbox = scalar(
                &self.db,
                format!("SELECT count(*) AS n FROM {}", Tables::of(stage).inbox),
            )
            .await;
            if inbox != N as i64 {
                inboxes.push(format!("{stage}: {inbox}"));
            }
        }

        let s3 = Services::from_env().s3();
        let mut objects = 0;
        let mut wrong_objects = Vec::new();
        for (stage, _, _) in STAGES {
            let bucket = self.f.bucket(&stage[5..]);
            objects += count_objects(&s3, &bucket).await;
            let store: Arc<dyn ObjectStore> = Arc::new(Services::from_env().s3());
            for id in sample(N) {
                let got = read_object(&store, &bucket, id).await;
                let want = format!("{stage} {id}");
                if got.as_deref() != Some(want.as_bytes()) {
                    wrong_objects.push(format!(
                        "{bucket}/{id}: {:?}",
                        got.map(|b| String::from_utf8_lossy(&b).into_owned())
                    ));
                }
            }
        }

        let (delivered, lost, duplicates, redelivered, anonymous, deliveries, unexpected) = {
            let s = self.sink.state.lock().unwrap();
            let delivered = (0..N).filter(|id| s.ids.contains_key(id)).count() as u64;
            let duplicates = s.ids.values().filter(|mids| mids.len() > 1).count() as u64;
            let stray = s.ids.keys().filter(|&&id| id >= N).count();
            assert_eq!(stray, 0, "{}: IDs reached the sink that were never sent", self.fault);
            let unexpected: Vec<String> = match expected_ids {
                Some(expected) => s
                    .ids
                    .iter()
                    .filter(|(id, mids)| mids.iter().any(|m| *m != expected(**id)))
                    .take(5)
                    .map(|(id, mids)| format!("{id}: {mids:?}, expected {}", expected(*id)))
                    .collect(),
                None => Vec::new(),
            };
            (
                delivered,
                N - delivered,
                duplicates,
                s.redelivered,
                s.anonymous,
                s.deliveries,
                unexpected,
            )
        };
        publish(&format!(
            "fault={} broker={} sent={N} delivered={delivered} lost={lost} duplicates={duplicates} \
             double_effects={double_effects} redelivered={redelivered} dead_lettered={dead_lettered} \
             missing_effects={missing_effects} outbox_left={outbox_left} objects={objects}/{} published={} \
             sink_deliveries={deliveries}{extra} took_s={:.0}",
            self.fault,
            broker_version(),
            3 * N,
            self.sent,
            self.born.elapsed().as_secs_f64(),
        ));
        assert_eq!(lost, 0, "{}: IDs never reached the sink", self.fault);
        assert_eq!(
            duplicates, 0,
            "{}: IDs reached the sink under two message-ids",
            self.fault
        );
        assert_eq!(anonymous, 0, "{}: sink deliveries without a message-id", self.fault);
        assert!(
            off.is_empty(),
            "{}: counters that are not exactly 1 (double_effects={double_effects}, missing={missing_effects}): {off:?}",
            self.fault
        );
        assert!(
            unexpected.is_empty(),
            "{}: sink message-ids that are not the deterministic ones: {unexpected:?}",
            self.fault
        );
        assert_eq!(dead_lettered, 0, "{}: requests were dead-lettered", self.fault);
        assert_eq!(
            outbox_left, 0,
            "{}: rows came back to an outbox after it drained",
            self.fault
        );
        assert!(
            unsettled.is_empty(),
            "{}: messages never acknowledged: {unsettled:?}",
            self.fault
        );
        assert!(
            inboxes.is_empty(),
            "{}: inboxes without exactly one row per ID: {inboxes:?}",
            self.fault
        );
        assert!(
            wrong_objects.is_empty(),
            "{}: {} of {} sampled objects wrong: {:?}",
            self.fault,
            wrong_objects.len(),
            3 * SAMPLE,
            &wrong_objects[..wrong_objects.len().min(10)]
        );
        assert_eq!(objects, 3 * N, "{}: object count of the three buckets", self.fault);
    }
}

/// The last 60 lines of `log`.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// The stream's messages: every ID, no `message-id` (each stage derives
/// the first one's from the message).
fn plain_ids() -> Vec<Message> {
    (0..N).map(Message::id).collect()
}

/// The producer's `message-id` of ID `id`.
fn producer_id(id: u64) -> String {
    format!("m-{id}")
}

/// ID `id` with the producer's `message-id`.
fn with_message_id(id: u64) -> Message {
    let mut message = Message::id(id);
    message.properties.message_id = Some(producer_id(id));
    message
}

/// The `message-id` at the sink of ID `id` that the producer sent as
/// [`producer_id`]: each stage derives its output's from its input's.
fn sink_message_id(f: &Fixture) -> impl Fn(u64) -> String {
    let queues = [f.q("ab"), f.q("bc"), f.q("sink")];
    move |id| {
        queues.iter().fold(producer_id(id), |inbound, queue| {
            output_message_id(&inbound, queue, id, 0)
        })
    }
}

// ---- a stage killed at a fault point -----------------------------------------

/// Stage b's process dies at `point` (its `KILL_AT`th visit) in the middle
/// of the stream; a fresh instance finishes it.
async fn stage_b_killed_at(point: &'static str, fault: &'static str, leaves_outbox_rows: bool) {
    let _figures = Figures(fault);
    let mut p = Pipeline::new(fault, &shared_amqp_url(), json!({})).await;
    p.run("once-a", &[]);
    p.run("once-c", &[]);
    let doomed = p.spawn("once-b", &[("SLINGSHOT_FAULT_POINT", format!("{point}:{KILL_AT}"))]);
    p.send(plain_ids()).await;
    p.wait_for_fault(doomed, point, KILL_AT).await;
    let at_kill = p.sink.unique();
    assert!(at_kill < N as usize, "{fault}: the stream finished before the kill");
    let left = p.outbox_rows("once-b").await;
    if leaves_outbox_rows {
        assert!(
            left > 0,
            "{fault}: the killed stage left no outbox rows; nothing was tested"
        );
    }
    p.run("once-b", &[]);
    p.finish(&format!(" outbox_at_kill={left} sink_at_kill={at_kill}"), None)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_upload_before_commit() {
    stage_b_killed_at("once-after-upload", "once-after-upload", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_commit_before_publish() {
    stage_b_killed_at("once-after-commit", "once-after-commit", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_publish_before_ack() {
    stage_b_killed_at("once-after-publish", "once-after-publish", true).await;
}

/// The relay dies in the middle of a batch: instances of stage b die after
/// their commit, four times, leaving outbox rows (their relays wait an hour,
/// so none publishes them); then one whose relay waits 1 s dies after the
/// relay published the third row of its batch, before deleting any; then a
/// clean one finishes. Rows published twice carry one `message-id`, which
/// stage c's inbox takes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_mid_batch() {
    const FAULT: &str = "once-mid-relay";
    let _figures = Figures(FAULT);
    let mut p = Pipeline::new(FAULT, &shared_amqp_url(), json!({})).await;
    p.run("once-a", &[]);
    p.run("once-c", &[]);
    let patient = ("SLINGSHOT_ONCE_RELAY_GRACE_SECS", "3600".to_string());
    let first = p.spawn(
        "once-b",
        &[
            ("SLINGSHOT_FAULT_POINT", format!("once-after-commit:{KILL_AT}")),
            patient.clone(),
        ],
    );
    p.send(plain_ids()).await;
    p.wait_for_fault(first, "once-after-commit", KILL_AT).await;
    for _ in 0..3 {
        let next = p.spawn(
            "once-b",
            &[
                ("SLINGSHOT_FAULT_POINT", "once-after-commit:300".to_string()),
                patient.clone(),
            ],
        );
        p.wait_for_fault(next, "once-after-commit", 300).await;
    }
    let left = outbox_seqs(&p.db, &Pipeline::outbox("once-b")).await;
    assert!(
        left.len() >= 4,
        "{FAULT}: four stages killed after their commits left {} outbox rows",
        left.len()
    );
    let at_kill = p.sink.unique();
    assert!(
        at_kill < N as usize,
        "{FAULT}: the stream finished before the relay's crash"
    );
    let relay = p.spawn(
        "once-b",
        &[
            ("SLINGSHOT_FAULT_POINT", "once-mid-relay:3".to_string()),
            ("SLINGSHOT_ONCE_RELAY_GRACE_SECS", "1".to_string()),
        ],
    );
    p.wait_for_fault(relay, "once-mid-relay", 3).await;
    // The relay's batch was not deleted: its transaction died with it.
    let after = outbox_seqs(&p.db, &Pipeline::outbox("once-b")).await;
    let kept = left.iter().filter(|seq| after.contains(seq)).count();
    assert_eq!(
        kept,
        left.len(),
        "{FAULT}: rows of the relay's batch went missing without being deleted: before {left:?}, after {after:?}"
    );
    p.run("once-b", &[]);
    p.finish(&format!(" outbox_at_kill={} sink_at_kill={at_kill}", left.len()), None)
        .await;
}

// ---- the broker restarts -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted_mid_stream() {
    const FAULT: &str = "once-rabbitmq-restart";
    let _figures = Figures(FAULT);
    // A private node of the shared broker's kind, stopped and started again;
    // dropped (stopped for good) when the test ends, pass or fail.
    let rabbit = Arc::new(tokio::task::spawn_blocking(LaneRabbit::start).await.unwrap());
    let private =
        json!({"host": ["127.0.0.1"], "port": [rabbit.port()], "username": ["guest"], "pass": ["test/rabbitmq"]});
    let mut p = Pipeline::new(FAULT, &rabbit.amqp_url(), json!({"rabbitmq": private})).await;
    for (stage, _, _) in STAGES {
        p.run(stage, &[]);
    }
    p.send(plain_ids()).await;
    assert!(
        p.sink.arrived_within(KILL_AT as usize, FINISH).await,
        "{FAULT}: the stream did not get going"
    );
    let r = rabbit.clone();
    tokio::task::spawn_blocking(move || r.stop_app()).await.unwrap();
    let at_stop = p.sink.unique();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = rabbit.clone();
    tokio::task::spawn_blocking(move || r.start_app()).await.unwrap();
    assert!(at_stop < N as usize, "{FAULT}: the stream finished before the restart");
    p.finish(&format!(" sink_at_stop={at_stop}"), None).await;
    drop(rabbit);
}

// ---- duplicates from the producer ------------------------------------------------

/// The producer publishes the whole stream, then all of it again: every
/// message twice, with one `message-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_published_twice() {
    const FAULT: &str = "once-published-twice";
    let _figures = Figures(FAULT);
    let mut p = Pipeline::new(FAULT, &shared_amqp_url(), json!({})).await;
    for (stage, _, _) in STAGES {
        p.run(stage, &[]);
    }
    let messages: Vec<Message> = (0..N).map(with_message_id).collect();
    p.send(messages.clone()).await;
    p.send(messages).await;
    let expected = sink_message_id(&p.f);
    p.finish("", Some(&expected)).await;
}

/// Two instances of every stage, every message published twice in a row
/// with one `message-id`: the broker hands the two copies to the two
/// instances at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_to_two_instances_at_once() {
    const FAULT: &str = "once-two-instances";
    let _figures = Figures(FAULT);
    let mut p = Pipeline::new(FAULT, &shared_amqp_url(), json!({})).await;
    for (stage, _, _) in STAGES {
        p.run(stage, &[]);
        p.run(stage, &[]);
    }
    let messages: Vec<Message> = (0..N)
        .flat_map(|id| [with_message_id(id), with_message_id(id)])
        .collect();
    p.send(messages).await;
    let expected = sink_message_id(&p.f);
    p.finish("", Some(&expected)).await;
}

// ---- one key at a time -------------------------------------------------------------

/// Keys of the overlap test, and messages per key.
const KEYS: u64 = 1_000;
const PER_KEY: u64 = 20;
const INSTANCES: usize = 4;

/// A small random number generator (xorshift), seeded from the clock: the
/// kills' timing and victims need no more.
struct Dice(u64);

impl Dice {
    fn new() -> Dice {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Dice(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// 1,000 keys × 20 messages (20,000 request IDs, those of one key in a row,
/// each with `x-slingshot-key: k<key>`) through four instances of one
/// once-mode stage, one killed (SIGKILL) at random every second or so and
/// started again. Every run of `process` is recorded with its key, start
/// and finish (by a connection outside the stage's transaction, so a killed
/// run keeps its start); no two finished runs of one key may overlap, and
/// every counter must end at exactly 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_runs_one_at_a_time_across_instances_with_kills() {
    const FAULT: &str = "once-overlap";
    let _figures = Figures(FAULT);
    let total = KEYS * PER_KEY;
    let f = Fixture::new(Backend::Real, FAULT);
    let mut statements = counter_tables(&["overlap_counters"], total);
    statements.extend([
        "CREATE TABLE overlap_runs (run BIGSERIAL PRIMARY KEY, key BIGINT NOT NULL, request BIGINT NOT NULL, \
         started BIGINT NOT NULL, finished BIGINT)"
            .to_string(),
        "CREATE INDEX overlap_runs_key ON overlap_runs (key)".to_string(),
    ]);
    f.create_tables(&statements.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let sysmap = f
        .serve_sysmap(json!({"once-overlap": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("sink")]}]}}))
        .await;
    let db = f.database().await.url().to_string();
    let broker = test_broker(&shared_amqp_url()).await;
    for q in ["in", "sink"] {
        broker.declare(&f.q(q), Durability::Durable).await.unwrap();
    }
    let sink = Sink::start(broker.clone(), f.q("sink"));
    let env = stage_env(&[
        ("SLINGSHOT_TEST_RUNS_URL", db.clone()),
        ("SLINGSHOT_ONCE_RELAY_GRACE_SECS", "2".to_string()),
    ]);
    let spawn = || ServiceProcess::spawn(binary(), "once-overlap", &sysmap, f.dir.path(), &env);
    let mut instances: Vec<ServiceProcess> = (0..INSTANCES).map(|_| spawn()).collect();

    let messages: Vec<Message> = (0..total)
        .map(|r| Message::id(r).with_header(KEY_HEADER, HeaderValue::Str(format!("k{}", r / PER_KEY))))
        .collect();
    let sending = {
        let (broker, inbound) = (broker.clone(), f.q("in"));
        tokio::spawn(async move {
            for chunk in messages.chunks(1000) {
                futures::future::try_join_all(chunk.iter().map(|m| broker.publish(&inbound, m.clone())))
                    .await
                    .expect("send the stream");
            }
        })
    };

    // A kill every 0.7 to 1.3 s while the stream runs, at most 30.
    let mut dice = Dice::new();
    let mut kills = 0;
    let started = Instant::now();
    while sink.unique() < (total as usize) * 9 / 10 && kills < 30 {
        assert!(
            started.elapsed() < FINISH,
            "{FAULT}: only {} of {total} IDs arrived",
            sink.unique()
        );
        tokio::time::sleep(Duration::from_millis(700 + dice.below(600))).await;
        let victim = dice.below(INSTANCES as u64) as usize;
        instances[victim].assert_running();
        let doomed = std::mem::replace(&mut instances[victim], spawn());
        doomed.kill().await;
        kills += 1;
    }
    sending.await.unwrap();
    if !sink.arrived_within(total as usize, FINISH).await {
        panic!(
            "{FAULT}: only {} of {total} IDs reached the sink within {FINISH:?}; an instance's log:\n{}",
            sink.unique(),
            tail(&instances[0].log())
        );
    }
    let outbox = Tables::of("once-overlap").outbox;
    let waiting = Instant::now();
    loop {
        let rows = scalar(&db, format!("SELECT count(*) AS n FROM {outbox}")).await;
        if rows == 0 {
            break;
        }
        assert!(waiting.elapsed() < FINISH, "{FAULT}: {rows} rows stay in the outbox");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for instance in instances {
        instance.stop().await;
    }

    let runs = scalar(&db, "SELECT count(*) AS n FROM overlap_runs".into()).await;
    let unfinished = scalar(
        &db,
        "SELECT count(*) AS n FROM overlap_runs WHERE finished IS NULL".into(),
    )
    .await;
    let overlapping = scalar(
        &db,
        "SELECT count(*) AS n FROM overlap_runs a JOIN overlap_runs b ON a.key = b.key AND a.run < b.run \
         WHERE a.finished IS NOT NULL AND b.finished IS NOT NULL \
         AND a.started < b.finished AND b.started < a.finished"
            .into(),
    )
    .await;
    let e = effects(&db, "overlap_counters").await;
    let (delivered, duplicates, redelivered) = {
        let s = sink.state.lock().unwrap();
        (
            (0..total).filter(|id| s.ids.contains_key(id)).count() as u64,
            s.ids.values().filter(|mids| mids.len() > 1).count(),
            s.redelivered,
        )
    };
    publish(&format!(
        "once-overlap: keys={KEYS} messages={total} instances={INSTANCES} kills={kills} runs={runs} \
         unfinished={unfinished} overlapping={overlapping} double_effects={} missing_effects={} \
         delivered={delivered} duplicates={duplicates} redelivered={redelivered} broker={}",
        e.double,
        e.missing,
        broker_version()
    ));
    if overlapping > 0 {
        let pairs = lines(
            &db,
            "SELECT format('key %s: run %s (request %s) %s..%s and run %s (request %s) %s..%s', a.key, \
             a.run, a.request, a.started, a.finished, b.run, b.request, b.started, b.finished) AS line \
             FROM overlap_runs a JOIN overlap_runs b ON a.key = b.key AND a.run < b.run \
             WHERE a.finished IS NOT NULL AND b.finished IS NOT NULL \
             AND a.started < b.finished AND b.started < a.finished"
                .into(),
        )
        .await;
        panic!("{FAULT}: runs of one key overlapped in time:\n{}", pairs.join("\n"));
    }
    assert!(kills > 0, "{FAULT}: nothing was killed");
    assert_eq!(e.off, 0, "{FAULT}: counters that are not exactly 1: {e:?}");
    assert_eq!(delivered, total, "{FAULT}: IDs never reached the sink");
    assert_eq!(duplicates, 0, "{FAULT}: IDs reached the sink under two message-ids");
    assert!(
        runs >= total as i64,
        "{FAULT}: {runs} runs recorded for {total} requests"
    );
}
