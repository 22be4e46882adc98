//! Paced runs: requests published at a steady rate, each one's hop latency measured.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slingshot::broker::Broker;
use slingshot::{Runtime, ServiceDef};
use slingshot_tests::Fixture;

use crate::harness::{scale, settings};
use crate::raw;

/// Hop latency of a paced run and the process's CPU time per message.
pub(crate) struct Paced {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) cpu_us: f64,
}

/// Slingshot's hop latency: `service` (the first route of its first case)
/// paced by [`paced`].
pub(crate) async fn latency(
    f: &Fixture,
    broker: &Arc<dyn Broker>,
    service: &str,
    endpoints: serde_json::Value,
    concurrency: usize,
    prefetch: u16,
    rate: f64,
) -> anyhow::Result<Paced> {
    let runtime: Runtime = f.runtime_with(endpoints, settings(f, concurrency, prefetch)).await;
    let wiring = runtime.sysmap().service(service).await?;
    let out = wiring.routes[0].queues[0].clone();
    let running = runtime.start(ServiceDef::find(service).expect("bench service")).await?;
    let measured = paced(broker, &wiring.inbound, &out, rate).await;
    let retried = running.stats.retried.load(Ordering::Relaxed);
    let dead = running.stats.dead_lettered.load(Ordering::Relaxed);
    if retried + dead > 0 {
        eprintln!("  (latency run: {retried} retried, {dead} dead-lettered)");
    }
    runtime.shutdown();
    let mut running = running;
    running.finished().await?;
    measured
}

/// The raw baseline's hop latency, paced exactly like slingshot's.
pub(crate) async fn raw_latency(
    f: &Fixture,
    amqp: &str,
    broker: &Arc<dyn Broker>,
    concurrency: usize,
    prefetch: u16,
    rate: f64,
) -> anyhow::Result<Paced> {
    let (input, output) = (f.q("raw-in"), f.q("raw-out"));
    let stage = raw::Stage::open(amqp, &input, &output, prefetch, concurrency, raw::Work::Noop).await?;
    let count = paced_count(rate);
    let consumer = tokio::spawn(stage.run(count));
    let measured = paced(broker, &input, &output, rate).await;
    match tokio::time::timeout(Duration::from_secs(10), consumer).await {
        Ok(done) => {
            done??;
        }
        Err(_) => anyhow::bail!("the raw consumer did not finish"),
    }
    measured
}

/// How many requests a paced run at `rate` sends.
fn paced_count(rate: f64) -> u64 {
    scale((rate * 4.0) as u64)
}

/// Publishes to `inbound` at `rate` for a few seconds with the send time in
/// the trace header (which both slingshot and the raw baseline forward) and
/// measures each request's time to its output on `out`. Percentiles in
/// milliseconds; CPU of this whole process (load generator included).
async fn paced(broker: &Arc<dyn Broker>, inbound: &str, out: &str, rate: f64) -> anyhow::Result<Paced> {
    let count = paced_count(rate);
    let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(count as usize)));
    let mut consumer = broker.consume(out, 1000).await?;
    let collected = samples.clone();
    let collector = tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let now = raw::now_nanos();
            if let Some(sent) = delivery
                .message
                .headers
                .get(slingshot::protocol::TRACE_HEADER)
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<u128>().ok())
            {
                collected.lock().unwrap().push((now.saturating_sub(sent)) as f64 / 1e6);
            }
            let _ = delivery.acker.ack().await;
        }
    });
    let meter = raw::Meter::start();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut publishes = tokio::task::JoinSet::new();
    let mut next = Instant::now();
    for id in 0..count {
        next += interval;
        let message = slingshot::broker::Message::id(id).with_header(
            slingshot::protocol::TRACE_HEADER,
            slingshot::broker::HeaderValue::Str(raw::now_nanos().to_string()),
        );
        // Each publish awaits its confirm in its own task: a slow confirm
        // (the broker's fsync) must not hold back the next send and turn
        // the pacing into bursts.
        let (broker, inbound) = (broker.clone(), inbound.to_string());
        publishes.spawn(async move { broker.publish(&inbound, message).await });
        tokio::time::sleep_until(next.into()).await;
    }
    while let Some(published) = publishes.join_next().await {
        published??;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (samples.lock().unwrap().len() as u64) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_us = meter.round(count).cpu_us;
    collector.abort();
    let mut values = samples.lock().unwrap().clone();
    anyhow::ensure!(!values.is_empty(), "no latency samples");
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() as f64 - 1.0) * q).round() as usize];
    Ok(Paced {
        p50: at(0.50),
        p99: at(0.99),
        cpu_us,
    })
}
