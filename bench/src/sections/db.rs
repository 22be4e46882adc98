//! The database stage, one insert per request, against lapin with a diesel r2d2 pool.

use serde_json::json;
use slingshot_tests::{Backend, Fixture};

use crate::harness::{comparison_queues, rates, scale, slingshot_round, Bench, ROUNDS};
use crate::raw;
use crate::report::Report;
use crate::services;

/// Runs the section.
pub(crate) async fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
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
                &bench.amqp,
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
    raw::delete_queues(&bench.amqp, &comparison_queues(&f)).await;
    report.compare(
        "db",
        "req/s",
        (&rates(&ours), "one INSERT per request through the pool"),
        (&rates(&theirs), "lapin + diesel r2d2 pool, same guarantees"),
        "",
    );
    Ok(())
}
