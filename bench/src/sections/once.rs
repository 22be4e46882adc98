//! What once mode costs: the database stage (one INSERT per request) in once mode against the same stage in plain mode, at concurrency 4 and 16.

use serde_json::json;
use slingshot_tests::{Backend, Fixture};

use crate::harness::{rates, scale, slingshot_round, Bench, ROUNDS};
use crate::paced::{latency, Paced};
use crate::raw;
use crate::report::{median, Report};
use crate::services;

/// The pace of the latency runs: well below either mode's throughput.
const PACE: f64 = 300.0;

/// Runs the section.
pub(crate) async fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let n = scale(4_000);
    for concurrency in [4usize, 16] {
        let prefetch = u16::try_from(concurrency * 2).unwrap_or(u16::MAX).max(32);
        eprintln!(
            "\nonce mode vs plain, concurrency {concurrency}: {n} requests, then paced at {PACE:.0} msg/s, {ROUNDS} interleaved rounds each"
        );
        let (mut once, mut plain) = (Vec::new(), Vec::new());
        let (mut once_paced, mut plain_paced) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // A fixture (and so a database) per round: the inbox of one
            // round would take the next round's requests for duplicates.
            for (service, rounds, paced) in [
                ("bench-db", &mut plain, &mut plain_paced),
                ("bench-once", &mut once, &mut once_paced),
            ] {
                let f = Fixture::new(Backend::Real, &format!("{service}-c{concurrency}-{round}"));
                let pg = f.database().await.url().to_string();
                services::prepare_table(&pg).await?;
                let endpoints = json!({service: {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]}});
                rounds.push(slingshot_round(&f, service, endpoints.clone(), n, concurrency, prefetch).await);
                raw::delete_queues(&bench.amqp, &[f.q("in"), f.q("out")]).await;
                services::prepare_table(&pg).await?;
                paced.push(latency(&f, &bench.broker, service, endpoints, concurrency, prefetch, PACE).await?);
                raw::delete_queues(&bench.amqp, &[f.q("in"), f.q("out"), f.q("in.dead-letter")]).await;
            }
        }
        let (once_rate, plain_rate) = (median(rates(&once)), median(rates(&plain)));
        report.add(
            format!("once_c{concurrency}_throughput"),
            once_rate,
            "req/s",
            format!("plain mode: {plain_rate:.0} req/s; one INSERT per request"),
        );
        report.add(
            format!("once_c{concurrency}_ratio_vs_plain"),
            once_rate / plain_rate,
            "ratio",
            "once-mode throughput over plain mode's, same stage",
        );
        let p99 = |v: &[Paced]| median(v.iter().map(|p| p.p99).collect());
        let (once_p99, plain_p99) = (p99(&once_paced), p99(&plain_paced));
        report.add(
            format!("once_c{concurrency}_p99"),
            once_p99,
            "ms",
            format!("plain mode: {plain_p99:.3} ms; paced at {PACE:.0} msg/s"),
        );
        report.add(
            format!("once_c{concurrency}_p99_ratio_vs_plain"),
            once_p99 / plain_p99,
            "ratio",
            "once-mode hop p99 over plain mode's",
        );
    }
    Ok(())
}
