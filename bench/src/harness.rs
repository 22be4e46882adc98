//! What the sections share: the services, the workload scale, rounds of a slingshot service, and running the Python interpreter.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use slingshot::broker::Broker;
use slingshot::settings::QueueMode;
use slingshot::storage::s3::S3Store;
use slingshot::{ServiceDef, Settings};
use slingshot_tests::Fixture;

use crate::raw;
use crate::report::median;

/// Rounds of each side of a comparison, interleaved; the median counts.
pub(crate) const ROUNDS: usize = 3;

/// The services every section measures on.
pub(crate) struct Bench {
    /// The RabbitMQ URL (`SLINGSHOT_TEST_AMQP_URL`).
    pub(crate) amqp: String,
    /// A broker connection of this process, for paced runs.
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) s3: S3Store,
    /// The sys-map's `rabbitmq` endpoint when it is not the test services'
    /// (`SLINGSHOT_TEST_AMQP_URL`): RabbitMQ 4's, see [`crate::rabbitmq4`].
    pub(crate) rabbitmq: Option<serde_json::Value>,
}

impl Bench {
    /// The wiring of `bench-noop` on the fixture's queues `in` and `out`,
    /// on this bench's broker.
    pub(crate) fn noop_endpoints(&self, f: &Fixture) -> serde_json::Value {
        let mut endpoints = json!({"bench-noop": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}});
        if let Some(rabbitmq) = &self.rabbitmq {
            endpoints["rabbitmq"] = rabbitmq.clone();
        }
        endpoints
    }
}

/// `n` times `SLINGSHOT_BENCH_SCALE` (default 1), at least 1.
pub(crate) fn scale(n: u64) -> u64 {
    let factor: f64 = std::env::var("SLINGSHOT_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * factor).round() as u64).max(1)
}

/// The settings of a measured service.
pub(crate) fn settings(f: &Fixture, concurrency: usize, prefetch: u16) -> Settings {
    Settings {
        concurrency,
        prefetch,
        max_attempts: 3,
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_secs(1),
        staging_dir: f.staging_dir(),
        shutdown_deadline: Duration::from_secs(30),
        queue_mode: QueueMode::Durable,
        ..Settings::default()
    }
}

/// The prefetch slingshot derives from `concurrency` by default.
pub(crate) fn default_prefetch(concurrency: usize) -> u16 {
    Settings::from_args(["--concurrency".to_string(), concurrency.to_string()])
        .map(|s| s.prefetch)
        .unwrap_or(u16::MAX)
}

/// Runs `service` over `n` preloaded requests; returns its throughput and
/// CPU time per request.
pub(crate) async fn slingshot_round(
    f: &Fixture,
    service: &str,
    endpoints: serde_json::Value,
    n: u64,
    concurrency: usize,
    prefetch: u16,
) -> raw::Round {
    let runtime = f.runtime_with(endpoints, settings(f, concurrency, prefetch)).await;
    let inbound = runtime.sysmap().service(service).await.expect("wiring").inbound;
    runtime.send(&inbound, 0..n).await.expect("preload");
    let running = runtime
        .start(ServiceDef::find(service).expect("bench service"))
        .await
        .expect("start");
    let meter = raw::Meter::start();
    while running.stats.processed.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let round = meter.round(n);
    runtime.shutdown();
    let mut running = running;
    running.finished().await.expect("clean stop");
    round
}

/// The throughput of each round.
pub(crate) fn rates(rounds: &[raw::Round]) -> Vec<f64> {
    rounds.iter().map(|r| r.rate).collect()
}

/// The median over `rounds` of one of their figures.
pub(crate) fn median_by(rounds: &[raw::Round], figure: fn(&raw::Round) -> f64) -> f64 {
    median(rounds.iter().map(figure).collect())
}

/// The median CPU time per message of this process.
pub(crate) fn cpu(rounds: &[raw::Round]) -> f64 {
    median_by(rounds, |r| r.cpu_us)
}

/// The median CPU time per message of the broker.
pub(crate) fn broker_cpu(rounds: &[raw::Round]) -> f64 {
    median_by(rounds, |r| r.broker_cpu_us)
}

/// The queues of a slingshot-vs-raw comparison, deleted after it.
pub(crate) fn comparison_queues(f: &Fixture) -> Vec<String> {
    ["in", "out", "raw-in", "raw-out", "in.dead-letter"]
        .iter()
        .map(|q| f.q(q))
        .collect()
}

/// What `python -c script args...` prints; an interpreter that cannot run
/// it is an error saying `failing` and `how` to get one that can.
pub(crate) fn python_c(
    python: &std::path::Path,
    script: &str,
    args: &[&str],
    failing: &str,
    how: &str,
) -> anyhow::Result<String> {
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}: {how}", python.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} {failing} ({}): {how}",
        python.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
