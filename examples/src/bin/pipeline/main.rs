//! (c) A three-stage document pipeline in one process on the embedded
//! default: an in-process broker, a directory object store and SQLite.
//!
//! It uploads sample documents, sends their IDs to `ingest`, runs every stage
//! until the work is done, and prints what each stage did. With
//! `SLINGSHOT_SYS_MAP` pointing at a real sys-map, the same stages run on
//! RabbitMQ, S3 and PostgreSQL.
//!
//! `cargo run -p slingshot-examples --bin pipeline [-- DOCUMENTS]` (default 24).

mod stages;

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use diesel::prelude::*;
use slingshot::{Runtime, ServiceDef, Settings};

const DEFAULT_SYS_MAP: &str = "file:examples/sysmaps/pipeline.json";
const WORDS: &[&str] = &[
    "slingshot",
    "queue",
    "rabbit",
    "object",
    "bucket",
    "route",
    "case",
    "stage",
    "pipeline",
    "request",
];

/// A deterministic sample document; every seventh one is blank (rejected by ingest).
fn document(id: u64) -> String {
    if id % 7 == 0 {
        return "   \n".into();
    }
    let words = 5 + (id * 13 % 60) as usize;
    (0..words)
        .map(|i| WORDS[(id as usize * 3 + i * i) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(if id % 2 == 0 { " " } else { "\n" })
}

#[tokio::main]
async fn main() -> ExitCode {
    slingshot::telemetry::init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let count: u64 = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| format!("{arg:?} is not a number of documents"))?,
        None => 24,
    };
    let location = std::env::var("SLINGSHOT_SYS_MAP").unwrap_or_else(|_| DEFAULT_SYS_MAP.into());
    let runtime = Runtime::connect(&location, Settings::from_env()?).await?;
    println!("pipeline: {count} documents through ingest -> tokenize -> catalog");
    println!(
        "  sys-map {}, broker {}, objects {}",
        runtime.sysmap().describe(),
        runtime.broker().describe(),
        runtime.store().describe()
    );

    let mut connection = runtime.connect_database().await?;
    let ids: Vec<u64> = (1..=count).collect();
    tokio::task::spawn_blocking(move || -> QueryResult<()> {
        stages::migrate(&mut connection)?;
        // Start from a clean table so the summary describes this run.
        diesel::delete(stages::documents::table).execute(&mut connection)?;
        Ok(())
    })
    .await??;

    let uploads = runtime.sysmap().bucket("ingest", "in").await?;
    for &id in &ids {
        runtime
            .store()
            .put_bytes(&uploads, &id.to_string(), document(id).into_bytes())
            .await?;
    }

    let mut running = Vec::new();
    for name in ["ingest", "tokenize", "catalog"] {
        running.push(runtime.start(ServiceDef::find(name)?).await?);
    }
    let started = std::time::Instant::now();
    runtime.send("ingest", ids.iter().copied()).await?;
    runtime.run_until_idle(&running.iter().collect::<Vec<_>>()).await?;
    let elapsed = started.elapsed();

    println!("\nstage      processed  retried  dead-lettered  objects  bytes written");
    for service in &running {
        let s = &service.stats;
        println!(
            "{:<10} {:>9}  {:>7}  {:>13}  {:>7}  {:>13}",
            service.def.name,
            s.processed.load(Ordering::Relaxed),
            s.retried.load(Ordering::Relaxed),
            s.dead_lettered.load(Ordering::Relaxed),
            s.objects_written.load(Ordering::Relaxed),
            s.bytes_written.load(Ordering::Relaxed),
        );
    }
    println!("\nroutes taken (stage: case -> queue = outputs)");
    for service in &running {
        for ((case, queue), n) in service.stats.routes() {
            let queue = if queue.is_empty() {
                "(no route)".to_string()
            } else {
                queue
            };
            println!("  {}: {case} -> {queue} = {n}", service.def.name);
        }
    }
    let mut failed = false;
    for service in running {
        let name = service.def.name;
        let mut service = service;
        if let Err(e) = service.finished().await {
            eprintln!("{name} stopped with an error: {e}");
            failed = true;
        }
    }

    let mut connection = runtime.connect_database().await?;
    let statuses = tokio::task::spawn_blocking(move || {
        use stages::documents::dsl::*;
        documents
            .group_by(status)
            .select((status, diesel::dsl::count_star()))
            .order_by(status)
            .load::<(String, i64)>(&mut connection)
    })
    .await??;
    println!("\ndocuments table by status");
    for (state, n) in &statuses {
        println!("  {state:<10} {n}");
    }
    let published = runtime.broker().ready_count("published").await?;
    let featured = runtime.broker().ready_count("featured").await?;
    let rejected = runtime.broker().ready_count("rejected").await?;
    println!("\ndownstream queues: published {published}, featured {featured}, rejected {rejected}");
    println!("done in {:.2}s", elapsed.as_secs_f64());

    let expected_rejected = ids.iter().filter(|id| *id % 7 == 0).count() as u64;
    if failed || published + rejected != count || rejected != expected_rejected {
        return Err(format!(
            "pipeline incomplete: published {published} + rejected {rejected} != {count} documents (expected {expected_rejected} rejected)"
        )
        .into());
    }
    Ok(())
}
