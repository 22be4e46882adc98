//! Shared fixtures of the integration tests: a runtime on a chosen backend with per-test queue and bucket names, and helpers to drain and count queues.
//!
//! Every semantics test is written once against [`Fixture`] and run on each
//! [`Backend`], so the embedded implementations and the real services are
//! held to the same behaviour.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slingshot::broker::memory::MemoryBroker;
use slingshot::broker::{Broker, Delivery};
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
}

/// One test's world: unique names, a temp directory, and a runtime.
pub struct Fixture {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    prefix: String,
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
        }
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
                        "database": {"sqlite": self.dir.path().join("db.sqlite")},
                    },
                    "endpoints": endpoints,
                });
                let map = FileSysMap::parse(&doc.to_string(), self.dir.path(), "fixture")
                    .expect("fixture sys-map");
                let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
                let store: Arc<dyn ObjectStore> =
                    Arc::new(DirStore::new(self.dir.path().join("objects")));
                Runtime::from_parts(SysMap::new(Arc::new(map)), broker, store, settings)
            }
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
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
