//! `slingshot-bench`: what slingshot costs next to the best hand-written
//! program with the same guarantees, measured in one run on the local
//! RabbitMQ, PostgreSQL and Garage (`scripts/services.sh` starts them).
//!
//! `cargo run --release -p slingshot-bench` prints a table and one line per
//! figure, `bench=<name> value=<x> unit=<u>`. `SLINGSHOT_BENCH_SCALE=0.1`
//! shrinks every workload (for a quick look).

mod raw;
mod services;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use slingshot::broker::Broker;
use slingshot::settings::QueueMode;
use slingshot::{Runtime, ServiceDef, Settings};
use slingshot_tests::{test_broker, Backend, Fixture, Services};

/// Rounds of each side of a comparison, interleaved; the median counts.
const ROUNDS: usize = 3;

/// One measured figure.
struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    note: String,
}

#[derive(Default)]
struct Report {
    figures: Vec<Figure>,
}

impl Report {
    /// Adds `{stage}_slingshot_throughput`, `{stage}_raw_throughput` and
    /// `{stage}_ratio_vs_raw` from the rounds of each side; returns the medians.
    fn compare(
        &mut self,
        stage: &str,
        unit: &'static str,
        ours: (&[f64], &str),
        raw: (&[f64], &str),
        ratio_note: &str,
    ) -> (f64, f64) {
        let (ours_median, raw_median) = (median(ours.0.to_vec()), median(raw.0.to_vec()));
        self.add(format!("{stage}_slingshot_throughput"), ours_median, unit, ours.1);
        self.add(format!("{stage}_raw_throughput"), raw_median, unit, raw.1);
        self.add(
            format!("{stage}_ratio_vs_raw"),
            ours_median / raw_median,
            "ratio",
            ratio_note,
        );
        (ours_median, raw_median)
    }

    fn add(&mut self, name: impl Into<String>, value: f64, unit: &'static str, note: impl Into<String>) {
        let figure = Figure {
            name: name.into(),
            value,
            unit,
            note: note.into(),
        };
        eprintln!(
            "  {:<34} {:>12.3} {:<6} {}",
            figure.name, figure.value, figure.unit, figure.note
        );
        self.figures.push(figure);
    }
}

fn scale(n: u64) -> u64 {
    let factor: f64 = std::env::var("SLINGSHOT_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * factor).round() as u64).max(1)
}

/// Whether section `name` runs (`SLINGSHOT_BENCH_ONLY=noop,file` picks some).
fn wanted(name: &str) -> bool {
    match std::env::var("SLINGSHOT_BENCH_ONLY") {
        Ok(only) => only.split(',').any(|s| s.trim() == name),
        Err(_) => true,
    }
}

fn settings(f: &Fixture, concurrency: usize) -> Settings {
    Settings {
        concurrency,
        prefetch: u16::try_from(concurrency * 2).unwrap_or(u16::MAX),
        max_attempts: 3,
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_secs(1),
        staging_dir: f.staging_dir(),
        shutdown_deadline: Duration::from_secs(30),
        queue_mode: QueueMode::Durable,
        ..Settings::default()
    }
}

/// Runs `service` over `n` preloaded requests; returns requests per second.
async fn slingshot_round(f: &Fixture, service: &str, endpoints: serde_json::Value, n: u64, concurrency: usize) -> f64 {
    let runtime = f.runtime_with(endpoints, settings(f, concurrency)).await;
    let inbound = runtime.sysmap().service(service).await.expect("wiring").inbound;
    runtime.send(&inbound, 0..n).await.expect("preload");
    let running = runtime
        .start(ServiceDef::find(service).expect("bench service"))
        .await
        .expect("start");
    let started = Instant::now();
    while running.stats.processed.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    runtime.shutdown();
    let mut running = running;
    running.finished().await.expect("clean stop");
    n as f64 / elapsed.as_secs_f64()
}

/// The queues of a slingshot-vs-raw comparison, deleted after it.
fn comparison_queues(f: &Fixture) -> Vec<String> {
    ["in", "out", "raw-in", "raw-out", "in.dead-letter"]
        .iter()
        .map(|q| f.q(q))
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("service") {
        // The process whose memory is measured: `slingshot-bench service NAME ...`.
        let Some(def) = args.get(1).and_then(|n| ServiceDef::named(n)) else {
            eprintln!("usage: slingshot-bench service NAME [run | invoke ID...]");
            return ExitCode::from(2);
        };
        let rest = args[2..].to_vec();
        return tokio::task::spawn_blocking(move || slingshot::main_with_args(def, rest))
            .await
            .unwrap_or(ExitCode::FAILURE);
    }
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let services = Services::from_env();
    let amqp = std::env::var("SLINGSHOT_TEST_AMQP_URL")?;
    let broker = test_broker(&amqp).await;
    let mut report = Report::default();
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string()))
            .unwrap_or_default()
    );
    eprintln!("slingshot-bench on {machine}");

    // 1. No-op stage, slingshot vs raw lapin with the same guarantees, interleaved.
    let mut raw_noop = f64::NAN;
    if wanted("noop") {
        let n = scale(50_000);
        eprintln!("\nno-op stage: {n} IDs per round, concurrency 8, prefetch 16, {ROUNDS} interleaved rounds each");
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let f = Fixture::new(Backend::Real, &format!("bench-noop-{round}"));
            let endpoints = json!({"bench-noop": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}});
            theirs.push(raw::stage(&amqp, &f.q("raw-in"), &f.q("raw-out"), n, 8, raw::Work::Noop).await?);
            ours.push(slingshot_round(&f, "bench-noop", endpoints, n, 8).await);
            raw::delete_queues(&amqp, &comparison_queues(&f)).await;
        }
        raw_noop = report
            .compare(
                "noop",
                "msg/s",
                (&ours, "durable, persistent, confirmed, ack after confirm"),
                (&theirs, "hand-written lapin, same guarantees"),
                "target >= 1.0",
            )
            .1;
    }

    // 2. Throughput and hop latency by concurrency.
    for concurrency in [1usize, 4, 16].into_iter().filter(|_| wanted("concurrency")) {
        let n = scale(if concurrency == 1 { 5_000 } else { 20_000 });
        let f = Fixture::new(Backend::Real, &format!("bench-c{concurrency}"));
        let endpoints = json!({"bench-noop": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}});
        let throughput = slingshot_round(&f, "bench-noop", endpoints.clone(), n, concurrency).await;
        report.add(
            format!("noop_c{concurrency}_throughput"),
            throughput,
            "msg/s",
            format!("{n} IDs"),
        );
        let rate = (throughput * 0.5).clamp(50.0, 2_000.0);
        let (p50, p99) = latency(&f, &*broker, endpoints, concurrency, rate).await?;
        report.add(
            format!("noop_c{concurrency}_latency_p50"),
            p50,
            "ms",
            format!("paced at {rate:.0} msg/s"),
        );
        report.add(format!("noop_c{concurrency}_latency_p99"), p99, "ms", "");
        raw::delete_queues(&amqp, &[f.q("in"), f.q("out"), f.q("in.dead-letter")]).await;
    }

    // 3. The broker's limit without the guarantees.
    if wanted("upper") {
        let n = scale(50_000);
        let f = Fixture::new(Backend::Real, "bench-upper");
        let upper = raw::stage(&amqp, &f.q("in"), &f.q("out"), n, 8, raw::Work::Unsafe).await?;
        raw::delete_queues(&amqp, &[f.q("in"), f.q("out")]).await;
        report.add(
            "upper_bound_throughput",
            upper,
            "msg/s",
            "transient, no confirms, auto-ack",
        );
        report.add(
            "guarantees_cost_ratio",
            raw_noop / upper,
            "ratio",
            "raw with guarantees / upper bound",
        );
    }

    // 4. File stage: 1 MiB read + 1 MiB write per request.
    let s3 = services.s3();
    if wanted("file") {
        let n = scale(600);
        let f = Fixture::new(Backend::Real, "bench-file");
        let (input, output) = (f.bucket("in"), f.bucket("out"));
        s3.create_bucket(&input).await?;
        s3.create_bucket(&output).await?;
        services::seed_objects(&s3, &input, n, 1 << 20).await?;
        let endpoints = json!({"bench-file": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]},
                           "bench-file/in": input, "bench-file/out": output});
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            theirs.push(
                raw::stage(
                    &amqp,
                    &f.q("raw-in"),
                    &f.q("raw-out"),
                    n,
                    8,
                    raw::Work::File {
                        s3: s3.client().clone(),
                        input: input.clone(),
                        output: output.clone(),
                    },
                )
                .await?,
            );
            ours.push(slingshot_round(&f, "bench-file", endpoints.clone(), n, 8).await);
        }
        raw::delete_queues(&amqp, &comparison_queues(&f)).await;
        report.compare(
            "file",
            "req/s",
            (&ours, "1 MiB get + 1 MiB put, concurrency 8"),
            (&theirs, "lapin + aws-sdk-s3, same guarantees"),
            "target >= 0.9",
        );
    }

    // 5. Memory.
    if wanted("memory") {
        let f = Fixture::new(Backend::Real, "bench-memory");
        let bucket = f.bucket("objects");
        s3.create_bucket(&bucket).await?;
        let memory = services::memory(&f, &s3, &bucket).await?;
        report.add(
            "memory_1gib_object_peak_rss",
            memory.copy_peak,
            "MiB",
            "target < 100, flat in object size",
        );
        report.add("memory_idle_rss", memory.idle, "MiB", "target < 20");
        report.add(
            "memory_idle_anonymous",
            memory.idle_anonymous,
            "MiB",
            "heap and stacks; the rest is mapped code",
        );
    }

    // 6. Database stage: one insert per request.
    if wanted("db") {
        let n = scale(5_000);
        let f = Fixture::new(Backend::Real, "bench-db");
        // The fixture's own database (its sys-map names it too): both sides
        // insert there, into a table made before either starts.
        let pg = f.database().await.url().to_string();
        let endpoints = json!({"bench-db": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}});
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            services::prepare_table(&pg).await?;
            theirs.push(
                raw::stage(
                    &amqp,
                    &f.q("raw-in"),
                    &f.q("raw-out"),
                    n,
                    8,
                    raw::Work::Insert(raw::pool(&pg, 8)?),
                )
                .await?,
            );
            services::prepare_table(&pg).await?;
            ours.push(slingshot_round(&f, "bench-db", endpoints.clone(), n, 8).await);
        }
        raw::delete_queues(&amqp, &comparison_queues(&f)).await;
        report.compare(
            "db",
            "req/s",
            (&ours, "one INSERT per request through the pool"),
            (&theirs, "lapin + diesel r2d2 pool, same guarantees"),
            "",
        );
    }

    println!("\n| figure | value | unit | note |\n|---|---:|---|---|");
    for f in &report.figures {
        println!("| {} | {:.3} | {} | {} |", f.name, f.value, f.unit, f.note);
    }
    println!();
    for f in &report.figures {
        println!("bench={} value={:.3} unit={}", f.name, f.value, f.unit);
    }
    Ok(())
}

/// Publishes at `rate` for a few seconds with the send time in the trace
/// header (which slingshot forwards to the outputs) and measures each
/// request's time to its output. Returns (p50, p99) in milliseconds.
async fn latency(
    f: &Fixture,
    broker: &dyn Broker,
    endpoints: serde_json::Value,
    concurrency: usize,
    rate: f64,
) -> anyhow::Result<(f64, f64)> {
    let runtime: Runtime = f.runtime_with(endpoints, settings(f, concurrency)).await;
    let wiring = runtime.sysmap().service("bench-noop").await?;
    let out = wiring.routes[0].queues[0].clone();
    let running = runtime
        .start(ServiceDef::find("bench-noop").expect("bench service"))
        .await?;
    let count = scale((rate * 4.0) as u64);
    let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(count as usize)));
    let mut consumer = broker.consume(&out, 1000).await?;
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
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut next = Instant::now();
    for id in 0..count {
        next += interval;
        let message = slingshot::broker::Message::id(id).with_header(
            slingshot::protocol::TRACE_HEADER,
            slingshot::broker::HeaderValue::Str(raw::now_nanos().to_string()),
        );
        broker.publish(&wiring.inbound, message).await?;
        tokio::time::sleep_until(next.into()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (samples.lock().unwrap().len() as u64) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    collector.abort();
    let retried = running.stats.retried.load(Ordering::Relaxed);
    let dead = running.stats.dead_lettered.load(Ordering::Relaxed);
    if retried + dead > 0 {
        eprintln!("  (latency run: {retried} retried, {dead} dead-lettered)");
    }
    runtime.shutdown();
    let mut running = running;
    running.finished().await?;
    let mut values = samples.lock().unwrap().clone();
    anyhow::ensure!(!values.is_empty(), "no latency samples");
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() as f64 - 1.0) * q).round() as usize];
    Ok((at(0.50), at(0.99)))
}
