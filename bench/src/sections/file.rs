//! The file stage, 1 MiB read and 1 MiB written per request, against lapin with aws-sdk-s3.

use serde_json::json;
use slingshot_tests::{Backend, Fixture};

use crate::harness::{comparison_queues, rates, scale, slingshot_round, Bench, ROUNDS};
use crate::raw;
use crate::report::Report;
use crate::services;

/// Runs the section.
pub(crate) async fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let n = scale(600);
    let f = Fixture::new(Backend::Real, "bench-file");
    let (input, output) = (f.bucket("in"), f.bucket("out"));
    bench.s3.create_bucket(&input).await?;
    bench.s3.create_bucket(&output).await?;
    services::seed_objects(&bench.s3, &input, n, 1 << 20).await?;
    let endpoints = json!({"bench-file": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]},
                       "bench-file/in": input, "bench-file/out": output});
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        theirs.push(
            raw::stage(
                &bench.amqp,
                &f.q("raw-in"),
                &f.q("raw-out"),
                n,
                16,
                8,
                raw::Work::File {
                    s3: bench.s3.client().clone(),
                    input: input.clone(),
                    output: output.clone(),
                },
            )
            .await?,
        );
        ours.push(slingshot_round(&f, "bench-file", endpoints.clone(), n, 8, 16).await);
    }
    raw::delete_queues(&bench.amqp, &comparison_queues(&f)).await;
    report.compare(
        "file",
        "req/s",
        (&rates(&ours), "1 MiB get + 1 MiB put, concurrency 8"),
        (&rates(&theirs), "lapin + aws-sdk-s3, same guarantees"),
        "target >= 0.9",
    );
    Ok(())
}
