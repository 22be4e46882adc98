//! `slingshot-bench`: what slingshot costs next to the best hand-written
//! program with the same guarantees, measured in one run on the local
//! RabbitMQ, PostgreSQL and Garage (`scripts/services.sh` starts them).
//!
//! `cargo run --release -p slingshot-bench` prints a table and one line per
//! figure, `bench=<name> value=<x> unit=<u>`. `SLINGSHOT_BENCH_SCALE=0.1`
//! shrinks every workload (for a quick look).

mod python;
mod raw;
mod services;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
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

fn settings(f: &Fixture, concurrency: usize, prefetch: u16) -> Settings {
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

/// The wiring of `bench-noop` on the fixture's queues `in` and `out`.
fn noop_endpoints(f: &Fixture) -> serde_json::Value {
    json!({"bench-noop": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}})
}

/// The prefetch slingshot derives from `concurrency` by default.
fn default_prefetch(concurrency: usize) -> u16 {
    Settings::from_args(["--concurrency".to_string(), concurrency.to_string()])
        .map(|s| s.prefetch)
        .unwrap_or(u16::MAX)
}

/// Runs `service` over `n` preloaded requests; returns its throughput and
/// CPU time per request.
async fn slingshot_round(
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

fn rates(rounds: &[raw::Round]) -> Vec<f64> {
    rounds.iter().map(|r| r.rate).collect()
}

/// The median over `rounds` of one of their figures.
fn median_by(rounds: &[raw::Round], figure: fn(&raw::Round) -> f64) -> f64 {
    median(rounds.iter().map(figure).collect())
}

fn cpu(rounds: &[raw::Round]) -> f64 {
    median_by(rounds, |r| r.cpu_us)
}

fn broker_cpu(rounds: &[raw::Round]) -> f64 {
    median_by(rounds, |r| r.broker_cpu_us)
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("service") {
        // The process whose memory is measured: `slingshot-bench service NAME
        // ...`, started exactly as a generated binary's `main` starts it (no
        // other runtime or thread around it).
        let Some(def) = args.get(1).and_then(|n| ServiceDef::named(n)) else {
            eprintln!("usage: slingshot-bench service NAME [run | invoke ID...]");
            return ExitCode::from(2);
        };
        return slingshot::main_with_args(def, args[2..].to_vec());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
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
    let port = amqp.parse::<lapin::uri::AMQPUri>().map(|uri| uri.authority.port);
    match port.map_err(|e| format!("{amqp:?}: {e}")).and_then(raw::watch_broker) {
        Ok(pid) => eprintln!("broker CPU: process {pid}"),
        Err(e) => eprintln!("broker CPU not measured: {e}"),
    }

    // 1. No-op stage, slingshot vs the pipelined raw lapin baseline with the
    // same guarantees: a prefetch sweep (concurrency half the prefetch, as
    // slingshot derives it), interleaved rounds, medians.
    let mut raw_noop = f64::NAN;
    if wanted("noop") {
        let n = scale(50_000);
        eprintln!("\nno-op stage: {n} IDs per round, {ROUNDS} interleaved rounds each, prefetch sweep");
        // (prefetch, slingshot median, raw median, slingshot CPU, raw CPU)
        let mut points = Vec::new();
        for prefetch in [16u16, 64, 256] {
            let concurrency = usize::from(prefetch / 2);
            let (mut ours, mut theirs, mut untraced) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..ROUNDS {
                let f = Fixture::new(Backend::Real, &format!("bench-noop-p{prefetch}-{round}"));
                let endpoints = noop_endpoints(&f);
                for (work, rounds) in [(raw::Work::Noop, &mut theirs), (raw::Work::NoopUntraced, &mut untraced)] {
                    rounds.push(
                        raw::stage(&amqp, &f.q("raw-in"), &f.q("raw-out"), n, prefetch, concurrency, work).await?,
                    );
                    raw::delete_queues(&amqp, &[f.q("raw-in"), f.q("raw-out")]).await;
                }
                ours.push(slingshot_round(&f, "bench-noop", endpoints, n, concurrency, prefetch).await);
                raw::delete_queues(&amqp, &comparison_queues(&f)).await;
            }
            let (ours_median, raw_median) = (median(rates(&ours)), median(rates(&theirs)));
            report.add(
                format!("noop_ratio_vs_raw_p{prefetch}"),
                ours_median / raw_median,
                "ratio",
                format!("{ours_median:.0} / {raw_median:.0} msg/s, concurrency {concurrency}; target >= 1.0"),
            );
            let untraced_median = median(rates(&untraced));
            report.add(
                format!("noop_ratio_vs_raw_untraced_p{prefetch}"),
                ours_median / untraced_median,
                "ratio",
                format!(
                    "{ours_median:.0} / {untraced_median:.0} msg/s: a baseline whose outputs carry no trace headers \
                     (broker CPU {:.1} us per message)",
                    broker_cpu(&untraced)
                ),
            );
            report.add(
                format!("noop_cpu_us_per_msg_p{prefetch}"),
                cpu(&ours),
                "us",
                format!("raw: {:.1} us", cpu(&theirs)),
            );
            report.add(
                format!("noop_broker_cpu_us_per_msg_p{prefetch}"),
                broker_cpu(&ours),
                "us",
                format!("the broker's CPU per message; raw: {:.1} us", broker_cpu(&theirs)),
            );
            let segments = |rounds: &[raw::Round]| median_by(rounds, |r| r.segments);
            report.add(
                format!("noop_tcp_segments_per_msg_p{prefetch}"),
                segments(&ours),
                "segments",
                format!("sent by this machine per message; raw: {:.2}", segments(&theirs)),
            );
            points.push((prefetch, ours_median, raw_median, cpu(&ours), cpu(&theirs)));
        }
        // Each side at its best-configured point.
        let best = |side: fn(&(u16, f64, f64, f64, f64)) -> f64| {
            points
                .iter()
                .max_by(|a, b| side(a).total_cmp(&side(b)))
                .copied()
                .unwrap_or((0, f64::NAN, f64::NAN, f64::NAN, f64::NAN))
        };
        let ours_best = best(|p| p.1);
        let raw_best = best(|p| p.2);
        raw_noop = raw_best.2;
        report.add(
            "noop_slingshot_throughput",
            ours_best.1,
            "msg/s",
            format!("best point: prefetch {}", ours_best.0),
        );
        report.add(
            "noop_raw_throughput",
            raw_best.2,
            "msg/s",
            format!("pipelined lapin, same guarantees; best point: prefetch {}", raw_best.0),
        );
        report.add(
            "noop_ratio_vs_raw",
            ours_best.1 / raw_best.2,
            "ratio",
            "each side at its best prefetch; target >= 1.0",
        );
        report.add(
            "noop_cpu_us_per_msg",
            ours_best.3,
            "us",
            format!("process CPU per message at prefetch {}", ours_best.0),
        );
        report.add(
            "raw_cpu_us_per_msg",
            raw_best.4,
            "us",
            format!("process CPU per message at prefetch {}", raw_best.0),
        );
    }

    // 1b. Hop latency, slingshot vs the raw baseline paced alike.
    if wanted("latency") {
        let (concurrency, rate) = (8usize, 1_000.0);
        let prefetch = default_prefetch(concurrency);
        eprintln!("\nhop latency: paced at {rate:.0} msg/s, concurrency {concurrency}, prefetch {prefetch}, {ROUNDS} interleaved rounds each");
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let f = Fixture::new(Backend::Real, &format!("bench-latency-{round}"));
            let endpoints = noop_endpoints(&f);
            theirs.push(raw_latency(&f, &amqp, &broker, concurrency, prefetch, rate).await?);
            ours.push(latency(&f, &broker, endpoints, concurrency, prefetch, rate).await?);
            raw::delete_queues(&amqp, &comparison_queues(&f)).await;
        }
        let pick = |v: &[Paced], q: fn(&Paced) -> f64| median(v.iter().map(q).collect());
        let (p50, p99) = (pick(&ours, |p| p.p50), pick(&ours, |p| p.p99));
        let (raw_p50, raw_p99) = (pick(&theirs, |p| p.p50), pick(&theirs, |p| p.p99));
        report.add("noop_latency_p50", p50, "ms", format!("raw: {raw_p50:.3} ms"));
        report.add("noop_latency_p99", p99, "ms", format!("raw: {raw_p99:.3} ms"));
        report.add(
            "noop_p99_ratio_vs_raw",
            p99 / raw_p99,
            "ratio",
            "same pacing and percentiles; target <= 2",
        );
        report.add(
            "noop_paced_cpu_us_per_msg",
            pick(&ours, |p| p.cpu_us),
            "us",
            format!(
                "at {rate:.0} msg/s, load generator included; raw: {:.1} us",
                pick(&theirs, |p| p.cpu_us)
            ),
        );
    }

    // 2. Throughput, hop latency and CPU by concurrency.
    for concurrency in [1usize, 4, 16].into_iter().filter(|_| wanted("concurrency")) {
        let n = scale(if concurrency == 1 { 5_000 } else { 20_000 });
        let prefetch = default_prefetch(concurrency);
        let f = Fixture::new(Backend::Real, &format!("bench-c{concurrency}"));
        let endpoints = noop_endpoints(&f);
        let round = slingshot_round(&f, "bench-noop", endpoints.clone(), n, concurrency, prefetch).await;
        report.add(
            format!("noop_c{concurrency}_throughput"),
            round.rate,
            "msg/s",
            format!("{n} IDs, {:.1} us CPU per message", round.cpu_us),
        );
        raw::delete_queues(&amqp, &[f.q("in"), f.q("out"), f.q("in.dead-letter")]).await;
        // Queues of its own: the collector must not first drain the outputs
        // of the round above (that was a one-second tail).
        let rate = (round.rate * 0.5).clamp(50.0, 2_000.0);
        let f = Fixture::new(Backend::Real, &format!("bench-c{concurrency}-paced"));
        let endpoints = noop_endpoints(&f);
        let paced = latency(&f, &broker, endpoints, concurrency, prefetch, rate).await?;
        report.add(
            format!("noop_c{concurrency}_latency_p50"),
            paced.p50,
            "ms",
            format!("paced at {rate:.0} msg/s, {:.1} us CPU per message", paced.cpu_us),
        );
        report.add(format!("noop_c{concurrency}_latency_p99"), paced.p99, "ms", "");
        raw::delete_queues(&amqp, &[f.q("in"), f.q("out"), f.q("in.dead-letter")]).await;
    }

    // 2b. What a prefetch beyond twice the concurrency buys (and why the
    // default is at least 32): the default concurrency with more deliveries
    // in flight. Requests whose outputs await their confirms hold no slot
    // but count against the prefetch.
    if wanted("window") {
        let (concurrency, n) = (4usize, scale(20_000));
        for prefetch in [8u16, 32, 128] {
            let mut rounds = Vec::new();
            for round in 0..ROUNDS {
                let f = Fixture::new(Backend::Real, &format!("bench-window-p{prefetch}-{round}"));
                let endpoints = noop_endpoints(&f);
                rounds.push(slingshot_round(&f, "bench-noop", endpoints, n, concurrency, prefetch).await);
                raw::delete_queues(&amqp, &[f.q("in"), f.q("out"), f.q("in.dead-letter")]).await;
            }
            report.add(
                format!("noop_c{concurrency}_p{prefetch}_throughput"),
                median(rates(&rounds)),
                "msg/s",
                format!("{:.1} us CPU per message", cpu(&rounds)),
            );
        }
    }

    // 3. The broker's limit without the guarantees.
    if wanted("upper") {
        let n = scale(50_000);
        let f = Fixture::new(Backend::Real, "bench-upper");
        let upper = raw::stage(&amqp, &f.q("in"), &f.q("out"), n, 16, 8, raw::Work::Unsafe)
            .await?
            .rate;
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
                    16,
                    8,
                    raw::Work::File {
                        s3: s3.client().clone(),
                        input: input.clone(),
                        output: output.clone(),
                    },
                )
                .await?,
            );
            ours.push(slingshot_round(&f, "bench-file", endpoints.clone(), n, 8, 16).await);
        }
        raw::delete_queues(&amqp, &comparison_queues(&f)).await;
        report.compare(
            "file",
            "req/s",
            (&rates(&ours), "1 MiB get + 1 MiB put, concurrency 8"),
            (&rates(&theirs), "lapin + aws-sdk-s3, same guarantees"),
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
            format!(
                "heap and stacks of {} threads; the rest is mapped code",
                memory.idle_threads
            ),
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
                    16,
                    8,
                    raw::Work::Insert(raw::pool(&pg, 8)?),
                )
                .await?,
            );
            services::prepare_table(&pg).await?;
            ours.push(slingshot_round(&f, "bench-db", endpoints.clone(), n, 8, 16).await);
        }
        raw::delete_queues(&amqp, &comparison_queues(&f)).await;
        report.compare(
            "db",
            "req/s",
            (&rates(&ours), "one INSERT per request through the pool"),
            (&rates(&theirs), "lapin + diesel r2d2 pool, same guarantees"),
            "",
        );
    }

    // 6. Python services beside their Rust twins.
    // A section that cannot run fails the run, after the figures of the others.
    let python = if wanted("python") {
        python::bench(&mut report, &amqp).await
    } else {
        Ok(())
    };

    println!("\n| figure | value | unit | note |\n|---|---:|---|---|");
    for f in &report.figures {
        println!("| {} | {:.3} | {} | {} |", f.name, f.value, f.unit, f.note);
    }
    println!();
    for f in &report.figures {
        println!("bench={} value={:.3} unit={}", f.name, f.value, f.unit);
    }
    python.context("the python section")
}

/// Hop latency of a paced run and the process's CPU time per message.
struct Paced {
    p50: f64,
    p99: f64,
    cpu_us: f64,
}

/// Slingshot's hop latency: the no-op service paced by [`paced`].
async fn latency(
    f: &Fixture,
    broker: &Arc<dyn Broker>,
    endpoints: serde_json::Value,
    concurrency: usize,
    prefetch: u16,
    rate: f64,
) -> anyhow::Result<Paced> {
    let runtime: Runtime = f.runtime_with(endpoints, settings(f, concurrency, prefetch)).await;
    let wiring = runtime.sysmap().service("bench-noop").await?;
    let out = wiring.routes[0].queues[0].clone();
    let running = runtime
        .start(ServiceDef::find("bench-noop").expect("bench service"))
        .await?;
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
async fn raw_latency(
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
