//! The file stage, 1 MiB read and 1 MiB written per request, against lapin with aws-sdk-s3.

use serde_json::json;
use slingshot_tests::{Backend, Fixture};

use crate::harness::{comparison_queues, cpu, rates, scale, slingshot_round, Bench, ROUNDS};
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
    // The cost of encryption, on objects the store can neither compress nor
    // keep once for several (as it can the ones above, and never can
    // ciphertext): each input its own random-looking bytes, each output
    // different from its input (`bench-file-stamped`). The same stage reads
    // and writes plain buckets and encrypted ones, in the same rounds.
    let (plain_in, plain_out) = (f.bucket("unique-in"), f.bucket("unique-out"));
    let (sealed_in, sealed_out) = (f.bucket("sealed-in"), f.bucket("sealed-out"));
    for bucket in [&plain_in, &plain_out, &sealed_in, &sealed_out] {
        bench.s3.create_bucket(bucket).await?;
    }
    services::seed_unique_objects(&bench.s3, &plain_in, n, size).await?;
    services::seed_unique_objects(&services::encrypted_store(&bench.s3, &sealed_in), &sealed_in, n, size).await?;
    // The secret ref `bench/objects` resolves from the environment.
    std::env::set_var(services::BENCH_KEY_VAR, services::BENCH_KEY);
    let wiring = |input: &str, output: &str, encrypt: bool| {
        let mut stage = json!({"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]});
        if encrypt {
            stage["encrypt"] = json!({"in": services::encrypt_entry(), "out": services::encrypt_entry()});
        }
        json!({"bench-file-stamped": stage, "bench-file-stamped/in": input, "bench-file-stamped/out": output})
    };
    let (plain, sealed) = (
        wiring(&plain_in, &plain_out, false),
        wiring(&sealed_in, &sealed_out, true),
    );
    let (mut ours, mut theirs, mut unique_plain, mut encrypted) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
        unique_plain.push(slingshot_round(&f, "bench-file-stamped", plain.clone(), n, 8, 16).await);
        encrypted.push(slingshot_round(&f, "bench-file-stamped", sealed.clone(), n, 8, 16).await);
    }
    raw::delete_queues(&bench.amqp, &comparison_queues(&f)).await;
    report.compare(
        "file",
        "req/s",
        (&rates(&ours), "1 MiB get + 1 MiB put, concurrency 8"),
        (&rates(&theirs), "lapin + aws-sdk-s3, same guarantees"),
        "target >= 0.9",
    );
    let (plain, sealed) = (median(rates(&unique_plain)), median(rates(&encrypted)));
    report.add(
        "file_unique_throughput",
        plain,
        "req/s",
        "the same stage on objects each its own random-looking bytes, output != input",
    );
    report.add(
        "file_encrypted_throughput",
        sealed,
        "req/s",
        "the same, both buckets encrypted (AES-256-GCM segments)",
    );
    report.add(
        "file_encrypted_ratio_vs_plain",
        sealed / plain,
        "ratio",
        "target >= 0.9",
    );
    report.add(
        "file_encrypted_cpu_us_per_req",
        cpu(&encrypted),
        "us",
        format!(
            "this process's CPU per request; plain: {:.0} us (the stage on alike objects: {:.0} us)",
            cpu(&unique_plain),
            cpu(&ours)
        ),
    );
    report.add(
        "file_encrypted_ratio_vs_alike",
        sealed / median(rates(&ours)),
        "ratio",
        "against the stage on alike, compressible objects, which the store keeps once",
    );
    Ok(())
}
