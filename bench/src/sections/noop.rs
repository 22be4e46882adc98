//! The no-op stage against the pipelined raw lapin baseline with the same guarantees.
//!
//! A prefetch sweep (concurrency half the prefetch, as slingshot derives
//! it), interleaved rounds, medians.

use slingshot_tests::{Backend, Fixture};

use crate::harness::{broker_cpu, comparison_queues, cpu, median_by, rates, scale, slingshot_round, Bench, ROUNDS};
use crate::raw;
use crate::report::{median, Report};

/// Runs the section; returns the raw baseline's best throughput, which the
/// `upper` section compares with the broker's limit.
pub(crate) async fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<f64> {
    let n = scale(50_000);
    eprintln!("\nno-op stage: {n} IDs per round, {ROUNDS} interleaved rounds each, prefetch sweep");
    // (prefetch, slingshot median, raw median, slingshot CPU, raw CPU)
    let mut points = Vec::new();
    for prefetch in [16u16, 64, 256] {
        let concurrency = usize::from(prefetch / 2);
        let (mut ours, mut theirs, mut untraced) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let f = Fixture::new(Backend::Real, &format!("bench-noop-p{prefetch}-{round}"));
            let endpoints = bench.noop_endpoints(&f);
            for (work, rounds) in [(raw::Work::Noop, &mut theirs), (raw::Work::NoopUntraced, &mut untraced)] {
                rounds.push(
                    raw::stage(
                        &bench.amqp,
                        &f.q("raw-in"),
                        &f.q("raw-out"),
                        n,
                        prefetch,
                        concurrency,
                        work,
                    )
                    .await?,
                );
                raw::delete_queues(&bench.amqp, &[f.q("raw-in"), f.q("raw-out")]).await;
            }
            ours.push(slingshot_round(&f, "bench-noop", endpoints, n, concurrency, prefetch).await);
            raw::delete_queues(&bench.amqp, &comparison_queues(&f)).await;
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
    Ok(raw_best.2)
}
