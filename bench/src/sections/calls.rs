//! Calling a service: `Client::call` alone and with 1,000 calls in flight, against fire-and-forget publishes to the same service in the same run.
//!
//! One `bench-noop` service on the real RabbitMQ. The caller is this
//! process on a connection of its own (the bench's broker, as the paced
//! load generators use), not the service's: a [`Client`] on it, and for the
//! baseline plain publishes of the same IDs with a consumer of the
//! service's output queue. A call is timed from before it starts (its
//! publish and that publish's confirm) until it returns
//! the service's `done` outcome, which the service sends once the output is
//! confirmed and the input acknowledged; a plain request from before its
//! publish until its output reaches the consumer. What a call adds: the
//! wait for the output's confirm and the ack, the `started` and
//! `done` replies, and their dispatch by correlation ID.
//!
//! Single requests alternate, one call then one plain request, so that both
//! see the same broker. Bursts (every request published at once, awaited
//! with `join_all`) alternate by round; the median of the rounds counts.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::join_all;
use slingshot::broker::{Broker, Message};
use slingshot::protocol::Status;
use slingshot::{Client, ServiceDef};
use slingshot_tests::{Backend, Fixture};
use tokio::sync::mpsc;

use crate::harness::{default_prefetch, scale, settings, Bench, ROUNDS};
use crate::raw;
use crate::report::{median, Report};

/// The service's concurrency (its prefetch is the default for it).
const CONCURRENCY: usize = 32;
/// Sequential requests measured on each side (before scaling).
const SINGLE: u64 = 300;
/// Requests of each side before the sequential ones, not measured.
const WARM_UP: u64 = 30;
/// Requests in flight at once in a burst (before scaling).
const BURST: u64 = 1_000;
/// How long a call, or a plain request's output, may take.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Where the plain requests' IDs start: far from the calls' IDs, whose
/// outputs arrive in the same queue and are skipped.
const PLAIN_IDS: u64 = 1 << 40;

/// The median and the tail of some latencies, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (in milliseconds), as the paced runs take them.
    fn of(mut samples: Vec<f64>) -> Percentiles {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
        }
    }
}

/// One burst of one side: the latency of each request, and the round's
/// throughput and CPU per request (this process's, service and caller
/// alike, and the broker's) from the first publish until the last request
/// is known done.
#[derive(Debug, Clone, Copy)]
struct Burst {
    latency: Percentiles,
    round: raw::Round,
}

impl Burst {
    /// The burst whose requests took `took` (milliseconds each).
    fn new(took: Vec<f64>, round: raw::Round) -> Burst {
        Burst {
            latency: Percentiles::of(took),
            round,
        }
    }

    /// The bursts' medians: each figure the median over the rounds.
    fn medians(bursts: &[Burst]) -> Burst {
        let of = |figure: fn(&Burst) -> f64| median(bursts.iter().map(figure).collect());
        Burst {
            latency: Percentiles {
                p50: of(|b| b.latency.p50),
                p99: of(|b| b.latency.p99),
            },
            round: raw::Round {
                rate: of(|b| b.round.rate),
                cpu_us: of(|b| b.round.cpu_us),
                broker_cpu_us: of(|b| b.round.broker_cpu_us),
                segments: of(|b| b.round.segments),
            },
        }
    }
}

/// `elapsed` in milliseconds.
fn ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e3
}

/// The caller's side of the run: the client, the plain publisher, and the
/// arrivals of the service's outputs.
struct Caller {
    client: Client,
    broker: Arc<dyn Broker>,
    inbound: String,
    /// Each output's ID and when it arrived, from the collector task.
    arrivals: mpsc::UnboundedReceiver<(u64, Instant)>,
    collector: tokio::task::JoinHandle<()>,
    /// The next call's ID.
    next_call: u64,
    /// The next plain request's ID.
    next_plain: u64,
}

impl Caller {
    /// Starts consuming `out` (acking every output) and makes a client on `broker`.
    async fn new(
        broker: &Arc<dyn Broker>,
        runtime: &slingshot::Runtime,
        inbound: &str,
        out: &str,
    ) -> anyhow::Result<Caller> {
        let mut consumer = broker.consume(out, 1000).await.context("consume the outputs")?;
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let collector = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let now = Instant::now();
                let id = std::str::from_utf8(&delivery.message.body)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok());
                let _ = delivery.acker.ack().await;
                if let Some(id) = id {
                    if arrived.send((id, now)).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Caller {
            client: Client::new(broker.clone(), runtime.sysmap().clone(), Vec::new()),
            broker: broker.clone(),
            inbound: inbound.to_string(),
            arrivals,
            collector,
            next_call: 0,
            next_plain: PLAIN_IDS,
        })
    }

    /// Calls the service once; returns how long the call took.
    async fn call(&self, id: u64) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let outcome = self
            .client
            .call("bench-noop", id, TIMEOUT)
            .await
            .with_context(|| format!("call {id}"))?;
        let took = started.elapsed();
        anyhow::ensure!(
            outcome.status == Status::Done && outcome.routes.len() == 1,
            "call {id}: not done with one output: {outcome:?}"
        );
        Ok(took)
    }

    /// `n` calls in flight at once, each timed.
    async fn call_burst(&mut self, n: u64) -> anyhow::Result<Burst> {
        let ids = self.next_call..self.next_call + n;
        self.next_call += n;
        let meter = raw::Meter::start();
        let took: Vec<Duration> = join_all(ids.map(|id| self.call(id)))
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let round = meter.round(n);
        Ok(Burst::new(took.into_iter().map(ms).collect(), round))
    }

    /// Publishes `n` requests at once, fire and forget (each awaiting only
    /// its confirm), and waits for their outputs: each one timed from
    /// before its publish to its output.
    async fn plain_burst(&mut self, n: u64) -> anyhow::Result<Burst> {
        let ids = self.next_plain..self.next_plain + n;
        self.next_plain += n;
        let meter = raw::Meter::start();
        let (broker, inbound) = (&self.broker, self.inbound.as_str());
        let sent: HashMap<u64, Instant> = join_all(ids.map(|id| async move {
            let at = Instant::now();
            broker
                .publish(inbound, Message::id(id))
                .await
                .with_context(|| format!("publish {id}"))?;
            anyhow::Ok((id, at))
        }))
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
        let arrived = self.outputs_of(&sent).await?;
        let round = meter.round(n);
        let took = arrived.iter().map(|(id, at)| ms(at.duration_since(sent[id]))).collect();
        Ok(Burst::new(took, round))
    }

    /// One plain request: its time from before its publish to its output,
    /// in milliseconds.
    async fn plain(&mut self) -> anyhow::Result<f64> {
        Ok(self.plain_burst(1).await?.latency.p50)
    }

    /// Waits for the output of each request in `sent`; outputs of other
    /// requests (the calls') are skipped.
    async fn outputs_of(&mut self, sent: &HashMap<u64, Instant>) -> anyhow::Result<HashMap<u64, Instant>> {
        let mut arrived = HashMap::with_capacity(sent.len());
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while arrived.len() < sent.len() {
            match tokio::time::timeout_at(deadline, self.arrivals.recv()).await {
                Ok(Some((id, at))) if sent.contains_key(&id) => {
                    arrived.insert(id, at);
                }
                Ok(Some(_)) => {}
                Ok(None) => anyhow::bail!("the output consumer stopped"),
                Err(_) => anyhow::bail!(
                    "{} of {} plain outputs arrived within {TIMEOUT:?}",
                    arrived.len(),
                    sent.len()
                ),
            }
        }
        Ok(arrived)
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        self.collector.abort();
    }
}

/// Runs the section.
pub(crate) async fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let (single, burst) = (scale(SINGLE), scale(BURST));
    let prefetch = default_prefetch(CONCURRENCY);
    eprintln!(
        "\ncalls: bench-noop at concurrency {CONCURRENCY}, prefetch {prefetch}; {single} sequential calls and plain \
         requests alternating, then {ROUNDS} interleaved rounds of {burst} at once each"
    );
    let f = Fixture::new(Backend::Real, "bench-calls");
    let runtime = f
        .runtime_with(bench.noop_endpoints(&f), settings(&f, CONCURRENCY, prefetch))
        .await;
    let inbound = runtime.sysmap().service("bench-noop").await?.inbound;
    let running = runtime
        .start(ServiceDef::find("bench-noop").expect("bench service"))
        .await?;
    let mut caller = Caller::new(&bench.broker, &runtime, &inbound, &f.q("out")).await?;

    // Alone: one request at a time, a call then a plain one.
    let (mut call_single, mut plain_single) = (Vec::new(), Vec::new());
    for i in 0..WARM_UP + single {
        let id = caller.next_call;
        caller.next_call += 1;
        let call = caller.call(id).await?;
        let plain = caller.plain().await?;
        if i >= WARM_UP {
            call_single.push(ms(call));
            plain_single.push(plain);
        }
    }
    let (call_single, plain_single) = (Percentiles::of(call_single), Percentiles::of(plain_single));

    // Bursts: a round of each side unmeasured, then interleaved rounds.
    let (mut call_bursts, mut plain_bursts) = (Vec::new(), Vec::new());
    for round in 0..=ROUNDS {
        let calls = caller.call_burst(burst).await?;
        let plain = caller.plain_burst(burst).await?;
        if round > 0 {
            call_bursts.push(calls);
            plain_bursts.push(plain);
        }
    }
    let (calls, plain) = (Burst::medians(&call_bursts), Burst::medians(&plain_bursts));

    let late = caller.client.late_replies();
    let retried = running.stats.retried.load(Ordering::Relaxed);
    let dead = running.stats.dead_lettered.load(Ordering::Relaxed);
    if late + retried + dead > 0 {
        eprintln!("  (calls run: {late} late replies, {retried} retried, {dead} dead-lettered)");
    }
    drop(caller);
    runtime.shutdown();
    let mut running = running;
    running.finished().await?;
    raw::delete_queues(&bench.amqp, &[f.q("in"), f.q("out"), f.q("in.dead-letter")]).await;

    report_figures(report, single, burst, (call_single, plain_single), (calls, plain));
    Ok(())
}

/// Adds the section's figures and prints its summary lines.
fn report_figures(
    report: &mut Report,
    single: u64,
    burst: u64,
    (call_single, plain_single): (Percentiles, Percentiles),
    (calls, plain): (Burst, Burst),
) {
    report.add(
        "calls_single_p50",
        call_single.p50,
        "ms",
        format!(
            "{single} sequential calls; plain publish to output: {:.3} ms",
            plain_single.p50
        ),
    );
    report.add(
        "calls_single_p99",
        call_single.p99,
        "ms",
        format!("plain: {:.3} ms", plain_single.p99),
    );
    report.add(
        "calls_single_p50_ratio_vs_plain",
        call_single.p50 / plain_single.p50,
        "ratio",
        "what waiting for the outcome adds to a lone request",
    );
    report.add(
        "calls_concurrent_throughput",
        calls.round.rate,
        "calls/s",
        format!(
            "{burst} calls in flight from one client; plain: {:.0} msg/s, {burst} published at once",
            plain.round.rate
        ),
    );
    report.add(
        "calls_concurrent_ratio_vs_plain",
        calls.round.rate / plain.round.rate,
        "ratio",
        "burst throughput of calls over plain publishes'",
    );
    report.add(
        "calls_concurrent_p50",
        calls.latency.p50,
        "ms",
        format!("each call of a burst; plain: {:.3} ms", plain.latency.p50),
    );
    report.add(
        "calls_concurrent_p99",
        calls.latency.p99,
        "ms",
        format!("plain: {:.3} ms", plain.latency.p99),
    );
    report.add(
        "calls_concurrent_p99_ratio_vs_plain",
        calls.latency.p99 / plain.latency.p99,
        "ratio",
        "burst p99 of calls over plain requests'",
    );
    report.add(
        "calls_p99_ratio_vs_single_p50",
        calls.latency.p99 / call_single.p50,
        "ratio",
        format!(
            "{burst} concurrent calls' p99 over a single call's p50; plain requests: {:.1}",
            plain.latency.p99 / plain_single.p50
        ),
    );
    report.add(
        "calls_p99_ratio_vs_single_p99",
        calls.latency.p99 / call_single.p99,
        "ratio",
        format!(
            "over a single call's p99; plain requests: {:.1}",
            plain.latency.p99 / plain_single.p99
        ),
    );
    report.add(
        "calls_cpu_us_per_call",
        calls.round.cpu_us,
        "us",
        format!(
            "in bursts, this process (service and caller); plain: {:.1} us",
            plain.round.cpu_us
        ),
    );
    report.add(
        "calls_broker_cpu_us_per_call",
        calls.round.broker_cpu_us,
        "us",
        format!("in bursts; plain: {:.1} us", plain.round.broker_cpu_us),
    );
    for (side, single, burst_figures, unit) in [
        ("calls", call_single, calls, "calls/s"),
        ("plain", plain_single, plain, "msg/s"),
    ] {
        eprintln!(
            "  {side}: single p50={:.3} ms p99={:.3} ms; {burst} concurrent: {:.0} {unit} p50={:.3} p99={:.3} ms; \
             p99/single_p50={:.1} p99/single_p99={:.1}",
            single.p50,
            single.p99,
            burst_figures.round.rate,
            burst_figures.latency.p50,
            burst_figures.latency.p99,
            burst_figures.latency.p99 / single.p50,
            burst_figures.latency.p99 / single.p99,
        );
    }
}
