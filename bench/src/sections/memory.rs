//! Memory of service processes: a 1 GiB object copied, and an idle service.

use slingshot_tests::{Backend, Fixture};

use crate::harness::Bench;
use crate::report::Report;
use crate::services;

/// Runs the section.
pub(crate) async fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let f = Fixture::new(Backend::Real, "bench-memory");
    let bucket = f.bucket("objects");
    bench.s3.create_bucket(&bucket).await?;
    let memory = services::memory(&f, &bench.s3, &bucket).await?;
    report.add(
        "memory_1gib_object_peak_rss",
        memory.copy_peak.rss,
        "MiB",
        "target < 100, flat in object size",
    );
    report.add(
        "memory_1gib_object_peak_threads",
        memory.copy_peak.threads as f64,
        "threads",
        "the most the copying process had at once",
    );
    report.add(
        "memory_1gib_encrypted_peak_rss",
        memory.encrypted_copy_peak.rss,
        "MiB",
        "the same copy through an encrypted bucket reference; target < 100",
    );
    report.add("memory_idle_rss", memory.idle, "MiB", "target < 20");
    report.add(
        "memory_idle_anonymous",
        memory.idle_anonymous,
        "MiB",
        format!(
            "heap and stacks of {} threads; the rest is mapped code",
            memory.idle_threads
        ),
    );
    Ok(())
}
