//! Python services measured beside their Rust twins in the same run.
//!
//! The same stages, each service a process of its own, the Python ones
//! written with the `slingshot` package (`bench/python/services.py`); and
//! the no-op stage against its peer written with FastStream ([`crate::peer`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::json;
use slingshot::storage::s3::S3Store;
use slingshot::{Runtime, Settings};
use slingshot_tests::{signal, Backend, Fixture, Services};

use crate::harness::{scale, ROUNDS};
use crate::peer;
use crate::raw;
use crate::report::{median, Report};
use crate::services::{gib_copy_peak, seed_objects, CopyPeak};

/// How to get an interpreter with a release build of the package.
const HOW: &str = "run `scripts/python-tests.sh` once (it creates /var/tmp/slingshot-services/pyvenv), then \
     `VIRTUAL_ENV=/var/tmp/slingshot-services/pyvenv PATH=/var/tmp/slingshot-services/pyvenv/bin:$PATH \
     maturin develop --release -m slingshot-py/Cargo.toml`, or set SLINGSHOT_BENCH_PYTHON to an interpreter \
     that has a release build of slingshot-runtime";

/// The interpreter the Python services run on; refuses a debug build.
fn interpreter() -> anyhow::Result<PathBuf> {
    let python = std::env::var_os("SLINGSHOT_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/slingshot-services/pyvenv/bin/python"));
    let profile = crate::harness::python_c(
        &python,
        "import slingshot._native as n; print(n.build_profile())",
        &[],
        "cannot import slingshot",
        HOW,
    )?
    .trim()
    .to_string();
    ensure!(
        profile == "release",
        "the slingshot extension of {} is a {profile} build, and its figures would mislead: {HOW}",
        python.display()
    );
    Ok(python)
}

/// One side of a comparison: the command that runs its service.
struct Side {
    name: &'static str,
    service: &'static str,
    command: Vec<String>,
    /// What follows `command` to run the service (slingshot's `run`).
    serve: &'static [&'static str],
}

/// How many requests a service runs at once and takes ahead: `None` leaves
/// the service's default.
#[derive(Clone, Copy)]
struct Load {
    concurrency: Option<usize>,
    prefetch: Option<u16>,
}

impl Load {
    fn concurrency(concurrency: usize) -> Load {
        Load {
            concurrency: Some(concurrency),
            prefetch: None,
        }
    }
}

/// What a round measured: throughput, and the broker's CPU time per message
/// over the same span (NaN when the broker's process is not known).
#[derive(Clone, Copy)]
struct Measured {
    rate: f64,
    broker_cpu_us: f64,
}

impl Side {
    fn rust(stage: &str) -> anyhow::Result<Side> {
        let exe = std::env::current_exe()?.display().to_string();
        let service: &'static str = match stage {
            "noop" => "bench-noop",
            "file" => "bench-file",
            _ => "bench-copy",
        };
        Ok(Side {
            name: "rust",
            service,
            command: vec![exe, "service".into(), service.into()],
            serve: &["run"],
        })
    }

    fn python(python: &std::path::Path, stage: &str) -> Side {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/services.py");
        let service: &'static str = match stage {
            "noop" => "py-bench-noop",
            "file" => "py-bench-file",
            _ => "py-bench-copy",
        };
        Side {
            name: "python",
            service,
            command: vec![python.display().to_string(), script.into(), service.into()],
            serve: &["run"],
        }
    }

    /// The no-op stage written with FastStream (`bench/python/faststream_noop.py`).
    fn faststream(python: &std::path::Path) -> Side {
        Side {
            name: "faststream",
            service: "faststream-noop",
            command: vec![python.display().to_string(), peer::SCRIPT.into()],
            serve: &[],
        }
    }
}

/// Runs `side`'s service over `n` preloaded requests in its own process and
/// returns its throughput, from its first output to its last (so that
/// starting an interpreter is not counted against it). The service finds its
/// queues in the sys-map; a service that takes no sys-map (FastStream's) in
/// `SLINGSHOT_BENCH_AMQP_URL`, `SLINGSHOT_BENCH_IN`, `SLINGSHOT_BENCH_OUT`
/// and `SLINGSHOT_BENCH_PREFETCH`.
async fn round(
    f: &Fixture,
    amqp: &str,
    side: &Side,
    buckets: Option<(&str, &str)>,
    n: u64,
    load: Load,
    tag: &str,
) -> anyhow::Result<Measured> {
    let (inbound, outbound) = (f.q(&format!("{tag}-in")), f.q(&format!("{tag}-out")));
    let mut endpoints = json!({
        side.service: {"in": inbound, "out": [{"case": true, "queues": [outbound]}]},
    });
    if let Some((bucket_in, bucket_out)) = buckets {
        endpoints[format!("{}/in", side.service)] = json!(bucket_in);
        endpoints[format!("{}/out", side.service)] = json!(bucket_out);
    }
    let sysmap = f.serve_sysmap(endpoints).await;
    let sender = Runtime::connect(&sysmap, Settings::default()).await?;
    sender.send(&outbound, std::iter::empty()).await?;
    sender.send(&inbound, 0..n).await?;
    let mut command = tokio::process::Command::new(&side.command[0]);
    command.args(&side.command[1..]).args(side.serve);
    command
        .env("SLINGSHOT_SYS_MAP", &sysmap)
        .env("SLINGSHOT_STAGING_DIR", f.staging_dir())
        .env("SLINGSHOT_HTTP_ADDR", "off")
        .env("SLINGSHOT_LOG", "warn")
        .env("SLINGSHOT_BENCH_AMQP_URL", amqp)
        .env("SLINGSHOT_BENCH_IN", &inbound)
        .env("SLINGSHOT_BENCH_OUT", &outbound);
    if let Some(concurrency) = load.concurrency {
        command.env("SLINGSHOT_CONCURRENCY", concurrency.to_string());
    }
    if let Some(prefetch) = load.prefetch {
        command
            .env("SLINGSHOT_PREFETCH", prefetch.to_string())
            .env("SLINGSHOT_BENCH_PREFETCH", prefetch.to_string());
    }
    let mut child = command
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", side.command.join(" ")))?;
    let broker = sender.broker().clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first = None;
    let last = loop {
        let have = broker.ready_count(&outbound).await?;
        let now = Instant::now();
        if have > 0 && first.is_none() {
            first = Some((now, raw::broker_cpu_us()));
        }
        if have >= n {
            break (now, raw::broker_cpu_us());
        }
        ensure!(now < deadline, "{}: {have} of {n} outputs after 10 minutes", side.name);
        if let Ok(status) = tokio::time::timeout(Duration::from_millis(5), child.wait()).await {
            anyhow::bail!("the {} service exited early: {}", side.name, status?);
        }
    };
    if let Some(pid) = child.id() {
        signal(pid, 15);
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await??;
    ensure!(
        status.success(),
        "the {} service did not stop cleanly: {status}",
        side.name
    );
    raw::delete_queues(amqp, &[inbound.clone(), outbound, format!("{inbound}.dead-letter")]).await;
    let first = first.unwrap_or(last);
    let elapsed = last.0.duration_since(first.0).as_secs_f64().max(1e-9);
    let counted = n.saturating_sub(1).max(1) as f64;
    Ok(Measured {
        rate: n.saturating_sub(1) as f64 / elapsed,
        broker_cpu_us: (last.1 - first.1) / counted,
    })
}

/// Interleaved rounds of both sides; the medians.
#[allow(clippy::too_many_arguments)]
async fn compare(
    f: &Fixture,
    amqp: &str,
    stage: &str,
    python: &std::path::Path,
    buckets: Option<(&str, &str)>,
    n: u64,
    concurrency: usize,
) -> anyhow::Result<(f64, f64)> {
    let (rust, py) = (Side::rust(stage)?, Side::python(python, stage));
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        ours.push(
            round(
                f,
                amqp,
                &rust,
                buckets,
                n,
                Load::concurrency(concurrency),
                &format!("{stage}-c{concurrency}-rust-{r}"),
            )
            .await?
            .rate,
        );
        theirs.push(
            round(
                f,
                amqp,
                &py,
                buckets,
                n,
                Load::concurrency(concurrency),
                &format!("{stage}-c{concurrency}-py-{r}"),
            )
            .await?
            .rate,
        );
    }
    Ok((median(ours), median(theirs)))
}

/// The Python no-op service at concurrency 1 and at its default, and its
/// FastStream peer, in interleaved rounds, all at prefetch 32; the medians
/// (`[c1, default, faststream]`).
async fn against_peer(f: &Fixture, amqp: &str, python: &std::path::Path, n: u64) -> anyhow::Result<[Measured; 3]> {
    let (slingshot, faststream) = (Side::python(python, "noop"), Side::faststream(python));
    let legs = [
        (&slingshot, Some(1), "c1"),
        (&slingshot, None, "default"),
        (&faststream, None, "faststream"),
    ];
    let mut rounds: [Vec<Measured>; 3] = Default::default();
    for r in 0..ROUNDS {
        for ((side, concurrency, tag), measured) in legs.iter().zip(rounds.iter_mut()) {
            let load = Load {
                concurrency: *concurrency,
                prefetch: Some(PEER_PREFETCH),
            };
            measured.push(round(f, amqp, side, None, n, load, &format!("peer-{tag}-{r}")).await?);
        }
    }
    Ok(rounds.map(|measured| Measured {
        rate: median(measured.iter().map(|m| m.rate).collect()),
        broker_cpu_us: median(measured.iter().map(|m| m.broker_cpu_us).collect()),
    }))
}

/// The prefetch of the FastStream comparison, on both sides: the issue's,
/// and what slingshot derives from its default concurrency.
const PEER_PREFETCH: u16 = 32;

/// The Python service copying a 1 GiB object: its peak RSS and threads.
async fn copy_peak(f: &Fixture, s3: &S3Store, bucket: &str, python: &std::path::Path) -> anyhow::Result<CopyPeak> {
    let side = Side::python(python, "copy");
    let sysmap = f
        .serve_sysmap(json!({
            side.service: {"in": f.q("py-copy-in"), "out": []},
            format!("{}/in", side.service): bucket,
            format!("{}/out", side.service): bucket,
        }))
        .await;
    let mut copy = tokio::process::Command::new(&side.command[0]);
    copy.args(&side.command[1..]);
    gib_copy_peak(f, s3, s3, bucket, 2_000_000, copy, &sysmap).await
}

/// The Python figures: noop and file throughput against the Rust services,
/// the per-call overhead, and peak memory on a 1 GiB object.
pub(crate) async fn bench(report: &mut Report, amqp: &str) -> anyhow::Result<()> {
    let python = interpreter()?;
    let versions = peer::check(&python)?;
    eprintln!(
        "python: {} (release build of slingshot-runtime; {versions})",
        python.display()
    );
    let f = Fixture::new(Backend::Real, "bench-python");
    let services = Services::from_env();
    let s3 = services.s3();

    let n = scale(20_000);
    let (rust, py) = compare(&f, amqp, "noop", &python, None, n, 8).await?;
    report.add("python_noop_throughput", py, "msg/s", format!("{n} IDs, concurrency 8"));
    report.add(
        "rust_noop_process_throughput",
        rust,
        "msg/s",
        "the Rust twin, measured the same way",
    );
    report.add("python_noop_ratio_vs_rust", py / rust, "ratio", "goal ≥ 0.9");

    let n1 = scale(3_000);
    let (rust1, py1) = compare(&f, amqp, "noop", &python, None, n1, 1).await?;
    report.add(
        "python_call_overhead_us",
        (1.0 / py1 - 1.0 / rust1) * 1e6,
        "µs",
        format!("per request at concurrency 1: {py1:.0} vs {rust1:.0} msg/s"),
    );

    let np = scale(5_000);
    let default = Settings::default().concurrency;
    eprintln!(
        "\nthe Python no-op service against FastStream: {np} IDs, prefetch {PEER_PREFETCH}, {ROUNDS} interleaved rounds"
    );
    let [c1, dflt, fast] = against_peer(&f, amqp, &python, np).await?;
    report.add(
        "python_faststream_throughput",
        fast.rate,
        "msg/s",
        format!(
            "{versions}; prefetch {PEER_PREFETCH} (a task per delivery: its concurrency); broker CPU {:.1} us/msg",
            fast.broker_cpu_us
        ),
    );
    for (name, measured, concurrency) in [("_c1", c1, 1), ("", dflt, default)] {
        report.add(
            format!("python_peer_noop_throughput{name}"),
            measured.rate,
            "msg/s",
            format!(
                "the Python slingshot service, concurrency {concurrency}, prefetch {PEER_PREFETCH}; broker CPU {:.1} us/msg",
                measured.broker_cpu_us
            ),
        );
        report.add(
            format!("python_vs_faststream_ratio{name}"),
            measured.rate / fast.rate,
            "ratio",
            format!(
                "{:.0} / {:.0} msg/s at concurrency {concurrency}: > 1 is the Python slingshot service ahead",
                measured.rate, fast.rate
            ),
        );
    }

    let (bucket_in, bucket_out) = (f.bucket("py-file-in"), f.bucket("py-file-out"));
    s3.create_bucket(&bucket_in).await?;
    s3.create_bucket(&bucket_out).await?;
    let files = scale(400);
    seed_objects(&s3, &bucket_in, files, 1 << 20).await?;
    let (rust_f, py_f) = compare(&f, amqp, "file", &python, Some((&bucket_in, &bucket_out)), files, 8).await?;
    report.add(
        "python_file_throughput",
        py_f,
        "req/s",
        "1 MiB read + 1 MiB write, concurrency 8",
    );
    report.add(
        "rust_file_process_throughput",
        rust_f,
        "req/s",
        "the Rust twin, measured the same way",
    );
    report.add("python_file_ratio_vs_rust", py_f / rust_f, "ratio", "goal ≥ 0.9");

    let peak = copy_peak(&f, &s3, &bucket_in, &python).await?;
    report.add(
        "python_1gib_object_peak_rss",
        peak.rss,
        "MiB",
        "a 1 GiB copy through read/write in 64 KiB chunks; goal < 40",
    );
    report.add(
        "python_1gib_object_peak_threads",
        peak.threads as f64,
        "threads",
        "the most the copying process had at once",
    );
    Ok(())
}
