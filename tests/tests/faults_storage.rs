//! Object-storage faults against the real services: a `process` that leaves
//! large downloads partly read, a key that loses access to a bucket
//! mid-stream, a frozen Garage, and a service killed mid-upload.
//!
//! Each prints `fault=<name> sent=N delivered=N lost=N duplicates=N dead_lettered=N`
//! through `slingshot_tests::fault_report`. A Garage that is frozen or whose
//! key loses access is a private instance, never the shared one.
//!
//! The tests on real services need the `services` feature (scripts/test.sh
//! turns it on); without it only the embedded ones run, and the helpers they
//! share are allowed to go unused.

#![cfg_attr(not(feature = "services"), allow(dead_code, unused_imports))]

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slingshot::broker::{Broker, Durability};
use slingshot::protocol::{dead_letter_queue, ATTEMPT_HEADER, ERROR_HEADER, ERROR_KIND_HEADER};
use slingshot::storage::ObjectStore;
use slingshot_tests::fault_report::{
    assert_nothing_lost, publish, report, send_ids, spawn_stream_service, Figures, STREAM_PREFETCH,
};
use slingshot_tests::private::PrivateGarage;
use slingshot_tests::probe::free_port;
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::storage::{pattern, patterned, HealthWatch};
use slingshot_tests::{drain, shared_amqp_url, test_broker, Backend, Collector, Fixture, Services};

const FINISH: Duration = Duration::from_secs(300);

/// One test at a time: they are heavy and share the private Garage's ports.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts `storage-service NAME` with a fault stream's settings: concurrency
/// 4, prefetch 8, quick retries (it ignores `SLINGSHOT_TEST_DELAY_MS`), three
/// attempts; `env` may override any of these.
fn spawn_service(name: &str, sysmap: &str, dir: &Path, env: &[(&str, String)]) -> ServiceProcess {
    spawn_stream_service(env!("CARGO_BIN_EXE_storage-service"), name, sysmap, dir, env)
}

/// The wiring of `service`: `in` to `out`.
fn wiring(f: &Fixture, service: &str) -> (String, Value) {
    (
        service.to_string(),
        json!({"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}),
    )
}

async fn declare(broker: &dyn Broker, f: &Fixture) {
    for q in ["in", "out"] {
        broker.declare(&f.q(q), Durability::Durable).await.expect("declare");
    }
}

/// The sys-map endpoint of a private Garage, and the secrets it refers to.
fn private_storage(garage: &PrivateGarage) -> (Value, Vec<(&'static str, String)>) {
    let endpoint = json!({"host": [garage.endpoint()], "pass:access-key": ["test/fault-s3-access"],
                          "pass:secret-key": ["test/fault-s3-secret"]});
    let secrets = vec![
        ("SLINGSHOT_SECRET_TEST_FAULT_S3_ACCESS", garage.access_key.clone()),
        ("SLINGSHOT_SECRET_TEST_FAULT_S3_SECRET", garage.secret_key.clone()),
    ];
    (endpoint, secrets)
}

/// Waits until `n` IDs arrived, checking on the way that the service runs
/// and, if given, that its `/healthz` answers.
async fn wait_for_ids(collector: &Collector, n: usize, service: &mut ServiceProcess, health: Option<&HealthWatch>) {
    let start = Instant::now();
    while collector.unique() < n {
        service.assert_running();
        if let Some(health) = health {
            health.assert_healthy(&format!("with {} of {n} requests done", collector.unique()));
        }
        assert!(
            start.elapsed() < FINISH,
            "only {} of {n} IDs arrived within {FINISH:?}",
            collector.unique()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `storage-service writer` on a private Garage holding its buckets `out`
/// and `side`, in the middle of a stream.
struct Writers {
    garage: PrivateGarage,
    broker: Arc<dyn Broker>,
    collector: Collector,
    service: ServiceProcess,
}

impl Writers {
    /// Starts the private Garage, the service (with `env`) and a collector,
    /// sends IDs `0..n`, and returns once `break_after` came out.
    async fn start(f: &Fixture, n: u64, break_after: usize, env: &[(&'static str, String)]) -> Writers {
        let (out, side) = (f.bucket("out"), f.bucket("side"));
        let buckets = [out.clone(), side.clone()];
        let garage = tokio::task::spawn_blocking(move || {
            let garage = PrivateGarage::start();
            for bucket in &buckets {
                garage.create_bucket(bucket);
            }
            garage
        })
        .await
        .expect("start a private Garage");
        let (storage, mut settings) = private_storage(&garage);
        let (service, wired) = wiring(f, "writer");
        let sysmap = f
            .serve_sysmap(json!({service: wired, "writer/out": out, "writer/side": side, "object-storage": storage}))
            .await;
        let broker = test_broker(&shared_amqp_url()).await;
        declare(&*broker, f).await;
        let collector = Collector::start(broker.clone(), f.q("out"));
        settings.extend(env.iter().cloned());
        let mut service = spawn_service("writer", &sysmap, f.dir.path(), &settings);
        send_ids(&*broker, &f.q("in"), 0..n).await;
        wait_for_ids(&collector, break_after, &mut service, None).await;
        Writers {
            garage,
            broker,
            collector,
            service,
        }
    }
}

/// A `process` that reads 16 bytes of a 64 MiB object and opens it again
/// while the first download is still open, at a concurrency of twice the
/// service runtime's worker threads: the runtime must keep answering
/// `/healthz` within a second, and every request must complete.
#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_read_reopen() {
    const N: u64 = 200;
    const WORKER_THREADS: usize = 2;
    let _turn = TURN.lock().await;
    let _figures = Figures("partial-read-reopen");
    let f = Fixture::new(Backend::Real, "reread");
    let input = f.bucket("in");
    let (service, wired) = wiring(&f, "rereader");
    let sysmap = f.serve_sysmap(json!({service: wired, "rereader/in": input})).await;
    let s3 = Services::from_env().s3();
    for object in 0..2u64 {
        s3.put_bytes(&input, &object.to_string(), patterned(object, 64 << 20))
            .await
            .expect("seed a 64 MiB object");
    }
    let broker = test_broker(&shared_amqp_url()).await;
    declare(&*broker, &f).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    let port = free_port();
    let mut service = spawn_service(
        "rereader",
        &sysmap,
        f.dir.path(),
        &[
            ("SLINGSHOT_CONCURRENCY", (2 * WORKER_THREADS).to_string()),
            ("TOKIO_WORKER_THREADS", WORKER_THREADS.to_string()),
            ("SLINGSHOT_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ],
    );
    let health = HealthWatch::start(port, Duration::from_secs(60)).await;
    send_ids(&*broker, &f.q("in"), 0..N).await;
    wait_for_ids(&collector, N as usize, &mut service, Some(&health)).await;
    // Late duplicates would arrive now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    health.assert_healthy("after the stream");
    assert!(health.polls() > 0, "/healthz was never polled");
    let dead = broker.ready_count(&dead_letter_queue(&f.q("in"))).await.unwrap();
    let expected: Vec<u64> = (0..N).collect();
    let outcome = report("partial-read-reopen", N, &expected, &collector.counts(), dead);
    service.stop().await;
    assert_nothing_lost(&outcome, STREAM_PREFETCH);
}

/// The key loses access to one of the two buckets the service writes
/// (`side`, written by IDs ending in 7) mid-stream: those requests are
/// failures of the request, dead-lettered after the configured attempts with
/// an error naming the denial, while everything else flows on.
#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_forbidden() {
    const N: u64 = 3_000;
    const ATTEMPTS: u32 = 3;
    let _turn = TURN.lock().await;
    let _figures = Figures("s3-forbidden");
    let f = Fixture::new(Backend::Real, "forbidden");
    let side = f.bucket("side");
    let env = [("SLINGSHOT_MAX_ATTEMPTS", ATTEMPTS.to_string())];
    let Writers {
        garage,
        broker,
        collector,
        mut service,
    } = Writers::start(&f, N, 500, &env).await;
    let garage = Arc::new(garage);
    let g = garage.clone();
    let bucket = side.clone();
    tokio::task::spawn_blocking(move || g.deny(&bucket)).await.unwrap();
    let denied_at = collector.unique();
    assert!(
        denied_at < N as usize,
        "the stream finished before the denial; nothing was tested"
    );

    // Every ID either comes out or is dead-lettered.
    let dlq = dead_letter_queue(&f.q("in"));
    let start = Instant::now();
    loop {
        service.assert_running();
        let dead = broker.ready_count(&dlq).await.unwrap();
        if collector.unique() as u64 + dead >= N {
            break;
        }
        assert!(
            start.elapsed() < FINISH,
            "{} IDs came out and {dead} were dead-lettered of {N} within {FINISH:?}: denied requests are retried \
             instead of dead-lettered",
            collector.unique()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    service.assert_running();

    let dead = drain(&*broker, &dlq).await;
    let mut dead_ids = HashSet::new();
    for d in &dead {
        let id: u64 = std::str::from_utf8(&d.message.body).unwrap().parse().unwrap();
        let header = |name: &str| d.message.headers.get(name).and_then(|v| v.as_str()).map(str::to_string);
        assert_eq!(
            id % 10,
            7,
            "request {id}, which never writes to the denied bucket, was dead-lettered"
        );
        assert_eq!(header(ERROR_KIND_HEADER).as_deref(), Some("storage"), "request {id}");
        let error = header(ERROR_HEADER).unwrap_or_default();
        assert!(
            error.contains("AccessDenied") || error.contains("Forbidden"),
            "request {id}'s dead letter does not name the denial: {error}"
        );
        let attempts = d.message.headers.get(ATTEMPT_HEADER).and_then(|v| v.as_int());
        assert_eq!(attempts, Some(i64::from(ATTEMPTS)), "request {id}: {error}");
        assert!(dead_ids.insert(id), "request {id} dead-lettered twice");
    }
    assert!(!dead_ids.is_empty(), "no request met the denial");
    let counts = collector.counts();
    assert!(
        dead_ids.iter().all(|id| !counts.contains_key(id)),
        "a dead-lettered request also came out"
    );
    let expected: Vec<u64> = (0..N).filter(|id| !dead_ids.contains(id)).collect();
    let outcome = report("s3-forbidden", N, &expected, &counts, dead_ids.len() as u64);
    service.stop().await;
    drop(garage);
    assert_eq!(outcome.lost, 0, "IDs were lost");
    assert!(
        outcome.duplicates <= STREAM_PREFETCH,
        "{} duplicates exceed the window of {STREAM_PREFETCH}",
        outcome.duplicates
    );
}

/// Garage frozen with SIGSTOP for 20 s mid-stream, then resumed: every S3
/// wait of the service is bounded, the requests caught in the freeze time
/// out and are retried as an outage, and nothing is lost.
#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_garage() {
    const N: u64 = 10_000;
    let _turn = TURN.lock().await;
    let _figures = Figures("sigstop-garage");
    let f = Fixture::new(Backend::Real, "sigstop-garage");
    let env = [
        ("SLINGSHOT_S3_CONNECT_TIMEOUT_SECS", "2".to_string()),
        ("SLINGSHOT_S3_READ_TIMEOUT_SECS", "3".to_string()),
        ("SLINGSHOT_S3_ATTEMPT_TIMEOUT_SECS", "4".to_string()),
        ("SLINGSHOT_S3_OPERATION_TIMEOUT_SECS", "8".to_string()),
    ];
    let Writers {
        garage,
        broker,
        collector,
        mut service,
    } = Writers::start(&f, N, 2_500, &env).await;
    let frozen = garage.freeze();
    let before = collector.unique();
    tokio::time::sleep(Duration::from_secs(20)).await;
    service.assert_running();
    frozen.thaw();
    assert!(
        before < N as usize,
        "the stream finished before the freeze; nothing was tested"
    );
    wait_for_ids(&collector, N as usize, &mut service, None).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    service.assert_running();
    let dead = broker.ready_count(&dead_letter_queue(&f.q("in"))).await.unwrap();
    let expected: Vec<u64> = (0..N).collect();
    let outcome = report("sigstop-garage", N, &expected, &collector.counts(), dead);
    let log = service.log();
    service.stop().await;
    assert_nothing_lost(&outcome, STREAM_PREFETCH);
    let timeouts = log.lines().filter(|l| l.to_lowercase().contains("timed out")).count();
    publish(&format!(
        "sigstop-garage: {timeouts} retries after an S3 call timed out during the 20 s freeze"
    ));
    assert!(
        timeouts > 0,
        "no S3 call timed out while Garage was frozen for 20 s: its waits are unbounded. The service logged:\n{}",
        log.lines().take(40).collect::<Vec<_>>().join("\n")
    );
}

/// Multipart uploads cut at every moment of their life, including while the
/// request that starts them is on the wire, leave no parts on Garage. An
/// upload cut after Garage created it but before its ID reached the client
/// used to stay there for good.
#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_cut_at_any_moment_leave_no_parts() {
    const UPLOADS: u64 = 40;
    let f = Fixture::new(Backend::Real, "cut-uploads");
    let bucket = f.bucket("out");
    let s3 = Services::from_env().s3();
    s3.create_bucket(&bucket).await.unwrap();
    let staged = f.dir.path().join("over-threshold.staged");
    let size = slingshot::storage::s3::MULTIPART_THRESHOLD + 1;
    std::fs::write(&staged, patterned(2, size as usize)).unwrap();
    let cuts = (0..UPLOADS).map(|i| {
        let (store, bucket, staged) = (s3.clone(), bucket.clone(), staged.clone());
        async move {
            let upload = tokio::spawn(async move { store.put_file(&bucket, &i.to_string(), &staged).await });
            // From the first poll to well after the start call came back.
            tokio::time::sleep(Duration::from_micros(i * 500)).await;
            upload.abort();
            upload.await.is_err_and(|e| e.is_cancelled())
        }
    });
    let cut = futures::future::join_all(cuts).await.into_iter().filter(|&c| c).count();
    assert!(
        cut > UPLOADS as usize / 2,
        "only {cut} of {UPLOADS} uploads were cut: nothing was tested"
    );
    let start = Instant::now();
    let mut left = unfinished_uploads(&s3, &bucket).await;
    while left > 0 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = unfinished_uploads(&s3, &bucket).await;
    }
    assert_eq!(
        left, 0,
        "{left} of {cut} cut multipart uploads were never aborted: their parts stay on Garage"
    );
}

/// The multipart uploads in progress in `bucket`.
async fn unfinished_uploads(s3: &slingshot::storage::s3::S3Store, bucket: &str) -> usize {
    s3.client()
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("list multipart uploads")
        .uploads()
        .len()
}

/// What the staging directory holds: every file and directory under it.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            found.push(path);
        }
    }
    found.sort();
    found
}

/// What is left under `dir` of the processes' staging directories (the
/// crash journals the services keep there by default are not staging).
/// How a process's staging directory is named (README, "Files"):
/// `slingshot-staging-<pid>-<random>` under `SLINGSHOT_STAGING_DIR`.
const STAGING_PREFIX: &str = "slingshot-staging-";

fn staging_left(dir: &Path) -> Vec<PathBuf> {
    tree(dir)
        .into_iter()
        .filter(|p| {
            p.strip_prefix(dir)
                .is_ok_and(|rel| rel.to_string_lossy().starts_with(STAGING_PREFIX))
        })
        .collect()
}

/// The staged files a killed process `left` are gone, and no request's are
/// left under `staging`.
fn assert_swept(left: &[PathBuf], staging: &Path) {
    for staged in left {
        assert!(
            !staged.exists(),
            "{} of the killed process was not swept",
            staged.display()
        );
    }
    assert_eq!(
        staged_files(staging),
        Vec::<PathBuf>::new(),
        "staged files left after the upload"
    );
}

/// The service that stopped removed its staging directory.
fn assert_no_staging_left(staging: &Path) {
    assert_eq!(
        staging_left(staging),
        Vec::<PathBuf>::new(),
        "staging directories left after exit"
    );
}

/// Files under `dir` whose name ends in `.staged`.
fn staged_files(dir: &Path) -> Vec<PathBuf> {
    tree(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "staged"))
        .collect()
}

/// Polls `done` every 5 ms for up to a minute.
async fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not happen within a minute"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads `reader` to the end and checks it is object `request` of `size`
/// bytes as `big-writer` writes it.
fn assert_patterned(mut reader: impl Read, request: u64, size: u64) {
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = reader.read(&mut buffer).expect("read the object back");
        if n == 0 {
            break;
        }
        for (i, byte) in buffer[..n].iter().enumerate() {
            let at = offset + i as u64;
            assert_eq!(*byte, pattern(request, at), "object {request} differs at byte {at}");
        }
        offset += n as u64;
    }
    assert_eq!(offset, size, "object {request} has the wrong size");
}

const BIG_MB: u64 = 96;
const BIG_ID: u64 = 42;

/// `big-writer` killed with SIGKILL while it uploads a 96 MiB object (in
/// parts) to Garage, then started again: the restart sweeps the killed
/// process's staging directory and aborts its unfinished multipart upload,
/// the retry uploads the whole object, and nothing is left behind.
#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mid_upload_s3() {
    let _turn = TURN.lock().await;
    let _figures = Figures("kill-mid-upload-s3");
    let f = Fixture::new(Backend::Real, "kill-upload");
    let out = f.bucket("out");
    let (service, wired) = wiring(&f, "big-writer");
    let sysmap = f.serve_sysmap(json!({service: wired, "big-writer/out": out})).await;
    let s3 = Services::from_env().s3();
    let broker = test_broker(&shared_amqp_url()).await;
    declare(&*broker, &f).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    let staging = f.dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let env = [
        ("SLINGSHOT_TEST_OBJECT_MB", BIG_MB.to_string()),
        ("SLINGSHOT_STAGING_DIR", staging.display().to_string()),
    ];
    let first = spawn_service("big-writer", &sysmap, f.dir.path(), &env);
    send_ids(&*broker, &f.q("in"), BIG_ID..BIG_ID + 1).await;
    let uploads = || unfinished_uploads(&s3, &out);
    let start = Instant::now();
    while uploads().await == 0 {
        assert!(start.elapsed() < Duration::from_secs(120), "the upload never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().await;
    let left = staged_files(&staging);
    assert!(
        !left.is_empty(),
        "the killed process left no staged file; it was not killed mid-upload"
    );
    assert!(uploads().await > 0, "no unfinished multipart upload after the kill");

    let mut second = spawn_service("big-writer", &sysmap, f.dir.path(), &env);
    wait_for_ids(&collector, 1, &mut second, None).await;
    let object = s3
        .open(&out, &BIG_ID.to_string())
        .await
        .expect("the object after the retry");
    tokio::task::spawn_blocking(move || assert_patterned(object, BIG_ID, BIG_MB << 20))
        .await
        .unwrap();
    assert_swept(&left, &staging);
    assert_eq!(uploads().await, 0, "an unfinished multipart upload was left on Garage");
    second.stop().await;
    assert_no_staging_left(&staging);
    let counts = collector.counts();
    let outcome = report("kill-mid-upload-s3", 1, &[BIG_ID], &counts, 0);
    assert_eq!(outcome.lost, 0);
}

/// The same on the directory store (with RabbitMQ): killed while it copies
/// the object into its bucket directory, the restart sweeps the staged file
/// and the `.partial-*` file, and the retry stores the whole object.
#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mid_upload_dir() {
    let _turn = TURN.lock().await;
    let _figures = Figures("kill-mid-upload-dir");
    let f = Fixture::new(Backend::Real, "kill-dir");
    let objects = f.dir.path().join("objects");
    let bucket_dir = objects.join("out");
    std::fs::create_dir_all(&bucket_dir).unwrap();
    let mut endpoints = Services::from_env().endpoints();
    let (service, wired) = wiring(&f, "big-writer");
    endpoints[service] = wired;
    endpoints["big-writer/out"] = json!("out");
    let doc = json!({
        "backends": {"broker": "rabbitmq", "objects": {"dir": objects}},
        "endpoints": endpoints,
    });
    let sysmap_file = f.dir.path().join("sysmap.json");
    std::fs::write(&sysmap_file, doc.to_string()).unwrap();
    let sysmap = format!("file:{}", sysmap_file.display());
    let broker = test_broker(&shared_amqp_url()).await;
    declare(&*broker, &f).await;
    let collector = Collector::start(broker.clone(), f.q("out"));
    let staging = f.dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let env = [
        ("SLINGSHOT_TEST_OBJECT_MB", (2 * BIG_MB).to_string()),
        ("SLINGSHOT_STAGING_DIR", staging.display().to_string()),
    ];
    let partials = || {
        std::fs::read_dir(&bucket_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".partial-"))
            })
            .collect::<Vec<_>>()
    };
    let first = spawn_service("big-writer", &sysmap, f.dir.path(), &env);
    send_ids(&*broker, &f.q("in"), BIG_ID..BIG_ID + 1).await;
    poll_until("a .partial- file in the bucket directory", || !partials().is_empty()).await;
    first.kill().await;
    let left_partials = partials();
    let left_staged = staged_files(&staging);
    assert!(!left_partials.is_empty(), "no partial file after the kill");
    assert!(!left_staged.is_empty(), "no staged file after the kill");

    let mut second = spawn_service("big-writer", &sysmap, f.dir.path(), &env);
    wait_for_ids(&collector, 1, &mut second, None).await;
    let object = std::fs::File::open(bucket_dir.join(BIG_ID.to_string())).expect("the object after the retry");
    tokio::task::spawn_blocking(move || assert_patterned(object, BIG_ID, (2 * BIG_MB) << 20))
        .await
        .unwrap();
    assert_eq!(
        partials(),
        Vec::<PathBuf>::new(),
        "partial files left in the bucket directory"
    );
    assert_swept(&left_staged, &staging);
    second.stop().await;
    assert_no_staging_left(&staging);
    let outcome = report("kill-mid-upload-dir", 1, &[BIG_ID], &collector.counts(), 0);
    assert_eq!(outcome.lost, 0);
    publish(&format!(
        "kill-mid-upload-dir: swept {} partial and {} staged files of the killed process",
        left_partials.len(),
        left_staged.len()
    ));
}

/// Readers `stash` kept beyond its request, for the test to try.
static STASHED: std::sync::Mutex<Vec<slingshot::ObjectReader>> = std::sync::Mutex::new(Vec::new());

/// Keeps the reader of its input past the end of the request.
#[slingshot::microservice(name = "stash", sys_map = "file:unused.json", main = false)]
fn stash(request: u64, read_file: &slingshot::ReadFileFn) -> Result<Vec<(u64, bool)>, slingshot::AnyError> {
    let mut reader = read_file("in", request)?;
    let mut first = [0u8; 1];
    reader.read_exact(&mut first)?;
    STASHED.lock().unwrap().push(reader);
    Ok(vec![(request, true)])
}

/// A reader kept after its request ended fails instead of going on reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_kept_past_its_request_fails() {
    let f = Fixture::new(Backend::Embedded, "stash");
    let input = f.bucket("in");
    let runtime = f
        .runtime(json!({"stash": {"in": f.q("in"), "out": []}, "stash/in": input}))
        .await;
    runtime
        .store()
        .put_bytes(&input, "5", b"more than one byte".to_vec())
        .await
        .unwrap();
    let def = slingshot::ServiceDef::find("stash").unwrap();
    let outcome = runtime.invoke(def, &[5]).await.unwrap();
    assert!(outcome[0].is_ok(), "{:?}", outcome[0]);
    let mut reader = STASHED.lock().unwrap().pop().expect("the stashed reader");
    let read = tokio::task::spawn_blocking(move || {
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).map(|_| rest)
    })
    .await
    .unwrap();
    let error = read.expect_err("a reader of an ended request must fail");
    let object = slingshot::ObjectError::in_io_error(&error).expect("an ObjectError inside the I/O error");
    assert!(
        matches!(object, slingshot::ObjectError::RequestEnded { .. }),
        "{object}"
    );
    assert!(!object.is_transient());
}

/// A multipart upload whose future is dropped midway (as the shutdown
/// deadline drops a request's) is aborted: Garage keeps no parts of it.
#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_dropped_midway_is_aborted() {
    let f = Fixture::new(Backend::Real, "dropped-upload");
    let bucket = f.bucket("out");
    let s3 = Services::from_env().s3();
    s3.create_bucket(&bucket).await.unwrap();
    let staged = f.dir.path().join("big.staged");
    std::fs::write(&staged, patterned(1, (BIG_MB << 20) as usize)).unwrap();
    let uploads = || unfinished_uploads(&s3, &bucket);
    let upload = {
        let (store, bucket, staged) = (s3.clone(), bucket.clone(), staged.clone());
        tokio::spawn(async move { store.put_file(&bucket, "1", &staged).await })
    };
    let start = Instant::now();
    while uploads().await == 0 {
        assert!(!upload.is_finished(), "the upload finished before it could be cut");
        assert!(start.elapsed() < Duration::from_secs(60), "the upload never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    upload.abort();
    assert!(upload.await.unwrap_err().is_cancelled());
    let start = Instant::now();
    while uploads().await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the dropped multipart upload was not aborted: its parts stay on Garage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        s3.open(&bucket, "1").await.is_err_and(|e| e.is_not_found()),
        "no object from a cut upload"
    );
}
