//! Throughput, hop latency and CPU of the no-op service by concurrency.

use slingshot_tests::{Backend, Fixture};

use crate::harness::{default_prefetch, scale, slingshot_round, Bench};
use crate::paced::latency;
use crate::raw;
use crate::report::Report;

/// Runs the section.
pub(crate) async fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    for concurrency in [1usize, 4, 16] {
        let n = scale(if concurrency == 1 { 5_000 } else { 20_000 });
        let prefetch = default_prefetch(concurrency);
        let f = Fixture::new(Backend::Real, &format!("bench-c{concurrency}"));
        let endpoints = bench.noop_endpoints(&f);
        let round = slingshot_round(&f, "bench-noop", endpoints.clone(), n, concurrency, prefetch).await;
        report.add(
            format!("noop_c{concurrency}_throughput"),
            round.rate,
            "msg/s",
            format!("{n} IDs, {:.1} us CPU per message", round.cpu_us),
        );
        raw::delete_queues(&bench.amqp, &[f.q("in"), f.q("out"), f.q("in.dead-letter")]).await;
        // Queues of its own: the collector must not first drain the outputs
        // of the round above (that was a one-second tail).
        let rate = (round.rate * 0.5).clamp(50.0, 2_000.0);
        let f = Fixture::new(Backend::Real, &format!("bench-c{concurrency}-paced"));
        let endpoints = bench.noop_endpoints(&f);
        let paced = latency(&f, &bench.broker, "bench-noop", endpoints, concurrency, prefetch, rate).await?;
        report.add(
            format!("noop_c{concurrency}_latency_p50"),
            paced.p50,
            "ms",
            format!("paced at {rate:.0} msg/s, {:.1} us CPU per message", paced.cpu_us),
        );
        report.add(format!("noop_c{concurrency}_latency_p99"), paced.p99, "ms", "");
        raw::delete_queues(&bench.amqp, &[f.q("in"), f.q("out"), f.q("in.dead-letter")]).await;
    }
    Ok(())
}
