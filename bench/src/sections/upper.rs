//! The broker's limit without the guarantees, and what the guarantees cost against it.

use slingshot_tests::{Backend, Fixture};

use crate::harness::{scale, Bench};
use crate::raw;
use crate::report::Report;

/// Runs the section; `raw_noop` is the raw baseline's no-op throughput
/// (NaN when the `noop` section did not run).
pub(crate) async fn run(bench: &Bench, report: &mut Report, raw_noop: f64) -> anyhow::Result<()> {
    let n = scale(50_000);
    let f = Fixture::new(Backend::Real, "bench-upper");
    let upper = raw::stage(&bench.amqp, &f.q("in"), &f.q("out"), n, 16, 8, raw::Work::Unsafe)
        .await?
        .rate;
    raw::delete_queues(&bench.amqp, &[f.q("in"), f.q("out")]).await;
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
    Ok(())
}
