//! Shared fixtures of the integration tests: a runtime on a chosen backend, and helpers.
//!
//! The runtime has per-test queue and bucket names; the helpers drain and
//! count queues, read objects and signal processes.
//!
//! Every semantics test is written once against [`Fixture`] and run on each
//! [`Backend`], so the embedded implementations and the real services are
//! held to the same behaviour.

pub mod backends;
pub mod cluster;
pub mod database;
pub mod fault_report;
pub mod original;
pub mod otlp;
pub mod private;
pub mod probe;
pub mod process;
pub mod rabbitmq4;
pub mod storage;
pub mod sysmap_server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slingshot::broker::memory::MemoryBroker;
use slingshot::broker::{Broker, Delivery, QueueType};
use slingshot::settings::QueueMode;
use slingshot::storage::dir::DirStore;
use slingshot::storage::ObjectStore;
use slingshot::sysmap::file::FileSysMap;
use slingshot::sysmap::SysMap;
use slingshot::{Runtime, Settings};

/// Which implementation of the seams a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In-process broker, directory store, SQLite.
    Embedded,
    /// RabbitMQ, Garage (S3) and PostgreSQL, wired by an HTTP sys-map.
    Real,
    /// The same, with the services declaring quorum queues
    /// (`SLINGSHOT_QUEUE_TYPE=quorum`).
    Quorum,
}

/// The real services, as `scripts/services.sh` describes them in its env file.
#[derive(Debug, Clone)]
pub struct Services {
    pub amqp: Url,
    pub postgres: Url,
    pub s3_endpoint: String,
    pub s3_region: String,
}

/// The parts of `scheme://user:pass@host:port/path` the tests need.
#[derive(Debug, Clone)]
pub struct Url {
    pub user: String,
    pub pass: String,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Url {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let (auth, rest) = rest.split_once('@').unwrap_or(("", rest));
        let (user, pass) = auth.split_once(':').unwrap_or((auth, ""));
        let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = hostport.rsplit_once(':').expect("URL with a port");
        Url {
            user: user.into(),
            pass: pass.into(),
            host: host.into(),
            port: port.parse().expect("numeric port"),
            path: path.into(),
        }
    }
}

/// Secret references the real fixture's sys-map uses; `scripts/test.sh`
/// exports their `SLINGSHOT_SECRET_*` variables.
pub const SECRET_REFS: [&str; 4] = [
    "test/rabbitmq",
    "test/postgres",
    "test/s3-access-key",
    "test/s3-secret-key",
];

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: the real-service tests need RabbitMQ, PostgreSQL and Garage. \
             Run them with scripts/test.sh, which starts the services and exports their addresses."
        )
    })
}

impl Services {
    /// The services from the environment; panics, saying how to get them, if absent.
    pub fn from_env() -> Services {
        for reference in SECRET_REFS {
            required(&slingshot::sysmap::secrets::env_var_name(reference));
        }
        Services {
            amqp: Url::parse(&required("SLINGSHOT_TEST_AMQP_URL")),
            postgres: Url::parse(&required("SLINGSHOT_TEST_PG_URL")),
            s3_endpoint: required("SLINGSHOT_TEST_S3_ENDPOINT"),
            s3_region: required("SLINGSHOT_TEST_S3_REGION"),
        }
    }

    /// The `rabbitmq`, `db` and `object-storage` endpoints for these services.
    pub fn endpoints(&self) -> Value {
        json!({
            "rabbitmq": {"host": [self.amqp.host], "port": [self.amqp.port], "username": [self.amqp.user], "pass": ["test/rabbitmq"]},
            "db": {"host": [self.postgres.host], "port": [self.postgres.port], "username": [self.postgres.user],
                   "database": [self.postgres.path], "pass": ["test/postgres"]},
            "object-storage": {"host": [self.s3_endpoint], "pass:access-key": ["test/s3-access-key"],
                               "pass:secret-key": ["test/s3-secret-key"]},
        })
    }

    /// An S3 client with the test key (which may create buckets).
    pub fn s3(&self) -> slingshot::storage::s3::S3Store {
        slingshot::storage::s3::S3Store::new(&slingshot::storage::s3::S3Config {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key: required("SLINGSHOT_TEST_S3_ACCESS_KEY"),
            secret_key: required("SLINGSHOT_TEST_S3_SECRET_KEY"),
        })
    }
}

/// One test's world: unique names, a temp directory, a database of its own,
/// and a runtime.
///
/// Nothing in it is shared with another test: queues and buckets carry a
/// unique prefix, the embedded backend's SQLite file lives in `dir`, and on
/// the real services the sys-map's `db` endpoint names a PostgreSQL database
/// created for this fixture (see [`database::TestDatabase`]) and dropped with
/// it. Tables a test needs are created with [`Fixture::create_tables`] before
/// its services start, never by the services' requests.
pub struct Fixture {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    prefix: String,
    server: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Declared last: dropped after the sys-map server stopped.
    database: tokio::sync::OnceCell<database::TestDatabase>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().ok().and_then(|mut s| s.take()) {
            server.abort();
        }
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Fixture {
    pub fn new(backend: Backend, test: &str) -> Fixture {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("t{}-{}-{seq}-{test}", std::process::id(), nanos() % 100_000)
            .to_lowercase()
            .replace('_', "-");
        Fixture {
            backend,
            dir: tempfile::Builder::new()
                .prefix("slingshot-test-")
                .tempdir()
                .expect("temp dir"),
            prefix,
            server: std::sync::Mutex::new(None),
            database: tokio::sync::OnceCell::new(),
        }
    }

    /// This fixture's own PostgreSQL database on the shared server, created
    /// (empty) on first use and dropped with the fixture. The real backend's
    /// sys-map names it unless a test supplies its own `db` endpoint.
    pub async fn database(&self) -> &database::TestDatabase {
        self.database
            .get_or_init(|| async {
                let admin = required("SLINGSHOT_TEST_PG_URL");
                // The test's name, after `t<pid>-<nanos>-<seq>-`.
                let label = self.prefix.splitn(4, '-').last().unwrap_or_default().to_string();
                tokio::task::spawn_blocking(move || database::TestDatabase::create(&admin, &label))
                    .await
                    .expect("creating the test database")
            })
            .await
    }

    /// Runs `statements` (typically `CREATE TABLE`) in the database this
    /// fixture's services use: its SQLite file on the embedded backend, its
    /// own PostgreSQL database on the real one. Call it before starting the
    /// services, so that no request ever creates a table.
    pub async fn create_tables(&self, statements: &[&str]) {
        let statements: Vec<String> = statements.iter().map(|s| s.to_string()).collect();
        match self.backend {
            Backend::Embedded => {
                let path = self.sqlite_path();
                tokio::task::spawn_blocking(move || {
                    use diesel::{Connection, RunQueryDsl};
                    let mut connection = diesel::SqliteConnection::establish(&path.display().to_string())
                        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
                    for sql in &statements {
                        diesel::sql_query(sql)
                            .execute(&mut connection)
                            .unwrap_or_else(|e| panic!("{sql} in {}: {e}", path.display()));
                    }
                })
                .await
                .expect("creating the test tables");
            }
            Backend::Real | Backend::Quorum => {
                let url = self.database().await.url().to_string();
                tokio::task::spawn_blocking(move || {
                    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
                    database::execute(&url, &statements);
                })
                .await
                .expect("creating the test tables");
            }
        }
    }

    /// The embedded backend's SQLite file (private to this fixture).
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        self.dir.path().join("db.sqlite")
    }

    /// A queue name unique to this test.
    pub fn q(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// A bucket name unique to this test (S3 rules: lowercase, 3-63 chars).
    pub fn bucket(&self, name: &str) -> String {
        let mut b = format!("{}-{name}", self.prefix);
        b.truncate(63);
        b.trim_end_matches('-').to_string()
    }

    /// Settings for tests: fast retries, staging inside the fixture.
    pub fn settings(&self) -> Settings {
        Settings {
            concurrency: 4,
            prefetch: 8,
            max_attempts: 3,
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
            staging_dir: self.staging_dir(),
            shutdown_deadline: Duration::from_secs(10),
            queue_mode: QueueMode::Durable,
            queue_type: match self.backend {
                Backend::Quorum => QueueType::Quorum,
                Backend::Embedded | Backend::Real => QueueType::Classic,
            },
            ..Settings::default()
        }
    }

    /// Where services of this fixture stage `write_file` output.
    pub fn staging_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("staging")
    }

    /// A runtime whose sys-map holds `endpoints`.
    pub async fn runtime(&self, endpoints: Value) -> Runtime {
        self.runtime_with(endpoints, self.settings()).await
    }

    pub async fn runtime_with(&self, endpoints: Value, settings: Settings) -> Runtime {
        match self.backend {
            Backend::Embedded => {
                let doc = json!({
                    "backends": {
                        "broker": "memory",
                        "objects": {"dir": self.dir.path().join("objects")},
                        "database": {"sqlite": self.sqlite_path()},
                    },
                    "endpoints": endpoints,
                });
                let map = FileSysMap::parse(&doc.to_string(), self.dir.path(), "fixture").expect("fixture sys-map");
                let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
                let store: Arc<dyn ObjectStore> = Arc::new(DirStore::new(self.dir.path().join("objects")));
                Runtime::from_parts(SysMap::new(Arc::new(map)), broker, store, settings)
            }
            Backend::Real | Backend::Quorum => {
                let url = self.serve_sysmap(endpoints).await;
                Runtime::connect(&url, settings)
                    .await
                    .expect("runtime on the real services")
            }
        }
    }

    /// Serves `endpoints` plus the real services' endpoints over HTTP on
    /// loopback (creating every bucket they name) and returns the base URL.
    /// The `db` endpoint names this fixture's own database unless `endpoints`
    /// has a `db` of its own.
    pub async fn serve_sysmap(&self, endpoints: Value) -> String {
        let map = self.sysmap_file(endpoints).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sys-map server");
        let port = listener.local_addr().expect("local addr").port();
        let server = tokio::spawn(async move {
            let _ = slingshot::sysmap::server::serve(map, listener).await;
        });
        if let Some(old) = self.server.lock().expect("server slot").replace(server) {
            old.abort();
        }
        format!("http://127.0.0.1:{port}")
    }

    /// What [`Fixture::serve_sysmap`] serves, for a server of the test's
    /// own ([`sysmap_server::SysMapServer`]): `endpoints` plus the real
    /// services' endpoints, every bucket they name created.
    pub async fn sysmap_file(&self, endpoints: Value) -> FileSysMap {
        let services = Services::from_env();
        let mut all = services.endpoints();
        if endpoints.get("db").is_none() {
            all["db"]["database"] = json!([self.database().await.name()]);
        }
        let s3 = services.s3();
        for (path, body) in endpoints.as_object().expect("endpoints object") {
            // Bucket endpoints; a deliberately invalid name is left for the test to meet.
            let valid = |b: &str| {
                b.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            };
            if let (true, Value::String(bucket)) = (path.contains('/'), body) {
                if valid(bucket) {
                    s3.create_bucket(bucket).await.expect("create test bucket");
                }
            }
            all[path] = body.clone();
        }
        let doc = json!({"endpoints": all});
        FileSysMap::parse(&doc.to_string(), self.dir.path(), "fixture").expect("fixture sys-map")
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Object `id` of `bucket`, read whole off the async threads; `None` if
/// there is no such object.
pub async fn read_object(
    store: &std::sync::Arc<dyn slingshot::storage::ObjectStore>,
    bucket: &str,
    id: u64,
) -> Option<Vec<u8>> {
    match store.open(bucket, &id.to_string()).await {
        Ok(mut reader) => Some(
            tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut reader, &mut bytes).map(|_| bytes)
            })
            .await
            .unwrap()
            .unwrap(),
        ),
        Err(e) if e.is_not_found() => None,
        Err(e) => panic!("reading {bucket}/{id}: {e}"),
    }
}

/// Takes every message now in `queue` (acking them) and returns their bodies as IDs.
pub async fn drain_ids(broker: &dyn Broker, queue: &str) -> Vec<u64> {
    drain(broker, queue)
        .await
        .into_iter()
        .map(|d| {
            std::str::from_utf8(&d.message.body)
                .expect("utf-8 body")
                .parse()
                .expect("decimal id")
        })
        .collect()
}

/// Takes every message now in `queue`, acking each.
pub async fn drain(broker: &dyn Broker, queue: &str) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(delivery) = broker.get(queue).await.expect("get") {
        let copy = Delivery {
            message: delivery.message.clone(),
            redelivered: delivery.redelivered,
            acker: Box::new(Settled),
        };
        delivery.acker.ack().await.expect("ack");
        out.push(copy);
    }
    out
}

/// Waits until `queue` holds `n` ready messages, or panics after `timeout`.
pub async fn wait_for_count(broker: &dyn Broker, queue: &str, n: u64, timeout: Duration) {
    let start = Instant::now();
    loop {
        let have = broker.ready_count(queue).await.expect("count");
        if have >= n {
            assert_eq!(have, n, "{queue} holds more messages than expected");
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{queue} holds {have} of {n} expected messages after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An acker for copies of messages that were already settled.
struct Settled;

#[async_trait::async_trait]
impl slingshot::broker::Acker for Settled {
    async fn ack(self: Box<Self>) -> Result<(), slingshot::broker::BrokerError> {
        Ok(())
    }
    async fn reject(self: Box<Self>, _: bool) -> Result<(), slingshot::broker::BrokerError> {
        Ok(())
    }
}

/// Consumes a queue in the background and counts every ID that arrives,
/// through broker restarts. A message the collector itself received before
/// (a redelivery after its own connection broke) is not counted twice; a
/// duplicate *published* by a service arrives fresh and is.
pub struct Collector {
    seen: Arc<std::sync::Mutex<std::collections::HashMap<u64, u32>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Whether `condition` turns true within `timeout` (looked at every 50 ms).
pub async fn becomes_true(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !condition() {
        if start.elapsed() >= timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Consumes `queue` in the background, through broker restarts, calling
/// `record` with each delivery's ID and the delivery, then acking it.
pub fn watch_queue(
    broker: Arc<dyn Broker>,
    queue: String,
    mut record: impl FnMut(u64, &Delivery) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(mut consumer) = broker.consume(&queue, 1000).await {
                while let Some(Ok(delivery)) = consumer.next().await {
                    let id: u64 = std::str::from_utf8(&delivery.message.body)
                        .ok()
                        .and_then(|b| b.parse().ok())
                        .expect("a body that is not an ID");
                    record(id, &delivery);
                    let _ = delivery.acker.ack().await;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

impl Collector {
    pub fn start(broker: Arc<dyn Broker>, queue: String) -> Collector {
        let seen: Arc<std::sync::Mutex<std::collections::HashMap<u64, u32>>> = Arc::default();
        let counts = seen.clone();
        let task = watch_queue(broker, queue, move |id, delivery| {
            let mut seen = counts.lock().unwrap();
            if !(delivery.redelivered && seen.contains_key(&id)) {
                *seen.entry(id).or_default() += 1;
            }
        });
        Collector { seen, task }
    }

    /// Distinct IDs received.
    pub fn unique(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The count of every ID received.
    pub fn counts(&self) -> std::collections::HashMap<u64, u32> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `n` distinct IDs arrived, or panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) {
        if !self.arrived_within(n, timeout).await {
            panic!("only {} of {n} IDs arrived within {timeout:?}", self.unique());
        }
    }

    /// Whether `n` distinct IDs arrived within `timeout`: for a test that
    /// says more than [`Collector::wait_for`] when they did not.
    pub async fn arrived_within(&self, n: usize, timeout: Duration) -> bool {
        becomes_true(timeout, || self.unique() >= n).await
    }
}

impl Collector {
    /// Waits until every ID of `ids` arrived, or panics after `timeout`.
    pub async fn wait_for_all(&self, ids: &[u64], timeout: Duration) {
        let start = Instant::now();
        loop {
            let missing = {
                let seen = self.seen.lock().unwrap();
                ids.iter().filter(|id| !seen.contains_key(id)).count()
            };
            if missing == 0 {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{missing} of {} IDs did not arrive within {timeout:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shared RabbitMQ's URL (`SLINGSHOT_TEST_AMQP_URL`); panics, saying how
/// to get it, if it is not set.
pub fn shared_amqp_url() -> String {
    required("SLINGSHOT_TEST_AMQP_URL")
}

/// A broker client of its own for a test (to send and collect), at `amqp_url`.
pub async fn test_broker(amqp_url: &str) -> Arc<dyn Broker> {
    let broker =
        slingshot::broker::rabbitmq::RabbitMq::new(amqp_url.to_string(), "test broker".into(), "slingshot-test");
    broker.connect().await.expect("the test's broker connection");
    record_version(&broker).await;
    Arc::new(broker)
}

/// Names `broker`'s version in the fault lines (see [`fault_report::broker`]).
async fn record_version(broker: &slingshot::broker::rabbitmq::RabbitMq) {
    let info = broker
        .read_server_info()
        .await
        .expect("the test broker's version (connection.start)");
    fault_report::set_broker(&info.version);
}

/// A broker client for a test on the nodes of a cluster at `amqp_urls`
/// (tried in order), declaring queues of `queue_type`.
pub async fn test_cluster_broker(amqp_urls: &[String], queue_type: QueueType) -> Arc<dyn Broker> {
    let nodes = amqp_urls
        .iter()
        .map(|u| (u.clone(), format!("test broker {}", Url::parse(u).port)))
        .collect();
    let broker = slingshot::broker::rabbitmq::RabbitMq::cluster(nodes, "slingshot-test").with_queue_type(queue_type);
    broker.connect().await.expect("the test's broker connection");
    record_version(&broker).await;
    Arc::new(broker)
}

/// Sends a signal to a process (`kill(2)`).
pub fn signal(pid: u32, signal: i32) {
    extern "C" {
        fn kill(pid: i32, signal: i32) -> i32;
    }
    let pid = i32::try_from(pid).expect("pid fits i32");
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { kill(pid, signal) }, 0, "kill({pid}, {signal}) failed");
}

/// The command of a service process (`binary NAME`) for a test: the given
/// sys-map, staging in `dir`, output appended to `dir/NAME.log`, three
/// attempts, no ops endpoint, killed if the test drops it. `env` comes last
/// and may override any of these.
pub fn service_command(
    binary: &str,
    name: &str,
    sysmap: &str,
    dir: &std::path::Path,
    env: &[(&str, String)],
) -> tokio::process::Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .expect("service log file");
    let mut command = tokio::process::Command::new(binary);
    command
        .arg(name)
        .env("SLINGSHOT_SYS_MAP", sysmap)
        .env("SLINGSHOT_STAGING_DIR", dir)
        .env("SLINGSHOT_MAX_ATTEMPTS", "3")
        .env("SLINGSHOT_HTTP_ADDR", "off")
        .env("SLINGSHOT_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("service log file"))
        .stderr(log)
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// The `main` of a test binary holding several services: runs the one its
/// first argument names (`binary NAME [run|...]`), or prints `usage` and
/// exits 2.
pub fn run_named_service(usage: &str) -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().and_then(|name| slingshot::ServiceDef::named(name)) {
        Some(def) => slingshot::main_with_args(def, args[1..].to_vec()),
        None => {
            eprintln!("usage: {usage}");
            std::process::ExitCode::from(2)
        }
    }
}
