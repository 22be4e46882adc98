//! The file stage, 1 MiB read and 1 MiB written per request, against lapin with aws-sdk-s3.

use serde_json::json;
use slingshot_tests::{Backend, Fixture};

use crate::harness::{comparison_queues, rates, scale, slingshot_round, Bench, ROUNDS};
use crate::raw;
use crate::report::{median, Report};
use crate::services;

/// Runs the section.
pub(crate) async fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let n = scale(600);
    // Bytes per object: 1 MiB unless SLINGSHOT_BENCH_FILE_BYTES says otherwise.
    let size: usize = std::env::var("SLINGSHOT_BENCH_FILE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 20);
    let f = Fixture::new(Backend::Real, "bench-file");
    let (input, output) = (f.bucket("in"), f.bucket("out"));
    bench.s3.create_bucket(&input).await?;
    bench.s3.create_bucket(&output).await?;
    services::seed_objects(&bench.s3, &input, n, size).await?;
    let endpoints = json!({"bench-file": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]},
                       "bench-file/in": input, "bench-file/out": output});
    // The same stage through encrypted bucket references, on buckets of its
    // own seeded encrypted, measured in the same rounds.
    let (sealed_in, sealed_out) = (f.bucket("sealed-in"), f.bucket("sealed-out"));
    bench.s3.create_bucket(&sealed_in).await?;
    bench.s3.create_bucket(&sealed_out).await?;
    services::seed_objects(&services::encrypted_store(&bench.s3, &sealed_in), &sealed_in, n, size).await?;
    // The secret ref `bench/objects` resolves from the environment.
    std::env::set_var(services::BENCH_KEY_VAR, services::BENCH_KEY);
    let sealed = json!({"bench-file": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}],
                                        "encrypt": {"in": services::encrypt_entry(), "out": services::encrypt_entry()}},
                        "bench-file/in": sealed_in, "bench-file/out": sealed_out});
    let (mut ours, mut theirs, mut encrypted) = (Vec::new(), Vec::new(), Vec::new());
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
        encrypted.push(slingshot_round(&f, "bench-file", sealed.clone(), n, 8, 16).await);
    }
    raw::delete_queues(&bench.amqp, &comparison_queues(&f)).await;
    report.compare(
        "file",
        "req/s",
        (&rates(&ours), "1 MiB get + 1 MiB put, concurrency 8"),
        (&rates(&theirs), "lapin + aws-sdk-s3, same guarantees"),
        "target >= 0.9",
    );
    let (plain, sealed) = (median(rates(&ours)), median(rates(&encrypted)));
    report.add(
        "file_encrypted_throughput",
        sealed,
        "req/s",
        "the same stage, both buckets encrypted (AES-256-GCM segments)",
    );
    report.add(
        "file_encrypted_ratio_vs_plain",
        sealed / plain,
        "ratio",
        "target >= 0.9",
    );
    Ok(())
}
