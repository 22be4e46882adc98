//! What a prefetch beyond twice the concurrency buys, and why the default is at least 32.
//!
//! The default concurrency with more deliveries in flight. Requests whose
//! outputs await their confirms hold no slot but count against the prefetch.

use slingshot_tests::{Backend, Fixture};

use crate::harness::{cpu, rates, scale, slingshot_round, Bench, ROUNDS};
use crate::raw;
use crate::report::{median, Report};

/// Runs the section.
pub(crate) async fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let (concurrency, n) = (4usize, scale(20_000));
    for prefetch in [8u16, 32, 128] {
        let mut rounds = Vec::new();
        for round in 0..ROUNDS {
            let f = Fixture::new(Backend::Real, &format!("bench-window-p{prefetch}-{round}"));
            let endpoints = bench.noop_endpoints(&f);
            rounds.push(slingshot_round(&f, "bench-noop", endpoints, n, concurrency, prefetch).await);
            raw::delete_queues(&bench.amqp, &[f.q("in"), f.q("out"), f.q("in.dead-letter")]).await;
        }
        report.add(
            format!("noop_c{concurrency}_p{prefetch}_throughput"),
            median(rates(&rounds)),
            "msg/s",
            format!("{:.1} us CPU per message", cpu(&rounds)),
        );
    }
    Ok(())
}
