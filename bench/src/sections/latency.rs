//! Hop latency: slingshot against the raw baseline, both paced alike.

use slingshot_tests::{Backend, Fixture};

use crate::harness::{comparison_queues, default_prefetch, Bench, ROUNDS};
use crate::paced::{latency, raw_latency, Paced};
use crate::raw;
use crate::report::{median, Report};

/// Runs the section.
pub(crate) async fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let (concurrency, rate) = (8usize, 1_000.0);
    let prefetch = default_prefetch(concurrency);
    eprintln!("\nhop latency: paced at {rate:.0} msg/s, concurrency {concurrency}, prefetch {prefetch}, {ROUNDS} interleaved rounds each");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let f = Fixture::new(Backend::Real, &format!("bench-latency-{round}"));
        let endpoints = bench.noop_endpoints(&f);
        theirs.push(raw_latency(&f, &bench.amqp, &bench.broker, concurrency, prefetch, rate).await?);
        ours.push(latency(&f, &bench.broker, "bench-noop", endpoints, concurrency, prefetch, rate).await?);
        raw::delete_queues(&bench.amqp, &comparison_queues(&f)).await;
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
        "same pacing and percentiles; target <= 1.2",
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
    Ok(())
}
