//! (c) A three-stage document pipeline in one process on the embedded
//! default: an in-process broker, a directory object store and SQLite.
//!
//! It uploads sample documents, sends their IDs to `ingest`, runs every stage
//! until the work is done, and prints what each stage did. With
//! `SLINGSHOT_SYS_MAP` pointing at a real sys-map, the same stages run on
//! RabbitMQ, S3 and PostgreSQL.
//!
//! `cargo run -p slingshot-examples --bin pipeline [-- DOCUMENTS]` (default 24)
//! runs the demo; `pipeline service NAME [run | invoke ID...]` runs one stage
//! as its own process, as it would be deployed.

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
    if id.is_multiple_of(7) {
        return "   \n".into();
    }
    let words = 5 + (id * 13 % 60) as usize;
    (0..words)
        .map(|i| WORDS[(id as usize * 3 + i * i) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(if id.is_multiple_of(2) { " " } else { "\n" })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("service") {
        let Some(def) = args.get(1).and_then(|name| ServiceDef::named(name)) else {
            eprintln!("usage: pipeline service (ingest|tokenize|catalog) [run | invoke ID...]");
            return ExitCode::from(2);
        };
        return slingshot::main_with_args(def, args[2..].to_vec());
    }
    slingshot::telemetry::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.first().cloned())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(count: Option<String>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let count: u64 = match count {
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
    runtime.send(&running[0].wiring.inbound, ids.iter().copied()).await?;
    // On a terminal, a progress line on stderr; in a log or a pipe, nothing.
    let stats: Vec<_> = running.iter().map(|s| (s.def.name, s.stats.clone())).collect();
    let progress_line = move || {
        let stages: Vec<String> = stats
            .iter()
            .map(|(name, s)| format!("{name} {}", s.processed.load(Ordering::Relaxed)))
            .collect();
        format!("\r  processed: {} (of {count} documents)  ", stages.join(" · "))
    };
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let line = progress_line.clone();
        tokio::spawn(async move {
            loop {
                eprint!("{}", line());
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    });
    runtime.run_until_idle(&running.iter().collect::<Vec<_>>()).await?;
    if let Some(progress) = progress {
        progress.abort();
        eprintln!("{}", progress_line());
    }
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
    // Where finished documents land, as the sys-map routes them.
    let queue_of = |service: &slingshot::RunningService, case: slingshot::CaseValue, index: usize| {
        service
            .wiring
            .routes
            .iter()
            .find(|r| r.case == case)
            .and_then(|r| r.queues.get(index).cloned())
            .ok_or_else(|| format!("{} has no route for case {case}", service.def.name))
    };
    let rejected_queue = queue_of(&running[0], slingshot::CaseValue::Bool(false), 0)?;
    let published_queue = queue_of(&running[2], slingshot::CaseValue::Int(0), 0)?;
    let featured_queue = queue_of(&running[2], slingshot::CaseValue::Int(1), 1)?;
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
    let published = runtime.broker().ready_count(&published_queue).await?;
    let featured = runtime.broker().ready_count(&featured_queue).await?;
    let rejected = runtime.broker().ready_count(&rejected_queue).await?;
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
