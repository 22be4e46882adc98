//! `slingshot-bench`: what slingshot costs next to the best hand-written program with the same guarantees.
//!
//! Measured in one run on the local RabbitMQ, PostgreSQL and Garage
//! (`scripts/services.sh` starts them). `cargo run --release -p
//! slingshot-bench` prints a table and one line per figure,
//! `bench=<name> value=<x> unit=<u>`. `SLINGSHOT_BENCH_SCALE=0.1` shrinks
//! every workload (for a quick look); `SLINGSHOT_BENCH_ONLY=noop,file` runs
//! some sections only (each is a module of [`sections`]). When the test
//! suite's RabbitMQ 4 runs (`SLINGSHOT_TEST_RABBITMQ4_URL`), the no-op and
//! latency sections run on it too ([`rabbitmq4`]); when not, one line says
//! so.
//!
//! This file chooses the sections, runs them in order and prints the report.

mod broker4;
mod harness;
mod paced;
mod peer;
mod raw;
mod report;
mod sections;
mod services;

use std::process::ExitCode;

use anyhow::Context as _;
use slingshot::ServiceDef;
use slingshot_tests::{test_broker, Services};

use crate::harness::Bench;
use crate::report::Report;

/// Whether section `name` runs (`SLINGSHOT_BENCH_ONLY=noop,file` picks some).
fn wanted(name: &str) -> bool {
    match std::env::var("SLINGSHOT_BENCH_ONLY") {
        Ok(only) => only.split(',').any(|s| s.trim() == name),
        Err(_) => true,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("service") {
        // The process whose memory is measured: `slingshot-bench service NAME
        // ...`, started exactly as a generated binary's `main` starts it (no
        // other runtime or thread around it).
        let Some(def) = args.get(1).and_then(|n| ServiceDef::named(n)) else {
            eprintln!("usage: slingshot-bench service NAME [run | invoke ID...]");
            return ExitCode::from(2);
        };
        return slingshot::main_with_args(def, args[2..].to_vec());
    }
    // Before the runtime's threads start: it sets an environment variable.
    broker4::export_secret();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// This machine's cores and CPU model, for the report's heading.
fn machine() -> String {
    format!(
        "{} cores, {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string()))
            .unwrap_or_default()
    )
}

async fn run() -> anyhow::Result<()> {
    let services = Services::from_env();
    let amqp = std::env::var("SLINGSHOT_TEST_AMQP_URL")?;
    let broker = test_broker(&amqp).await;
    let mut report = Report::default();
    eprintln!("slingshot-bench on {}", machine());
    let port = amqp.parse::<lapin::uri::AMQPUri>().map(|uri| uri.authority.port);
    match port
        .as_ref()
        .map_err(|e| format!("{amqp:?}: {e}"))
        .and_then(|&port| raw::watch_broker(port))
    {
        Ok(pid) => eprintln!("broker CPU: process {pid}"),
        Err(e) => eprintln!("broker CPU not measured: {e}"),
    }
    let bench = Bench {
        amqp,
        broker,
        s3: services.s3(),
        rabbitmq: None,
    };

    let mut raw_noop = f64::NAN;
    if wanted("noop") {
        raw_noop = sections::noop::run(&bench, &mut report).await?;
    }
    if wanted("latency") {
        sections::latency::run(&bench, &mut report).await?;
    }
    if wanted("noop") || wanted("latency") {
        broker4::run(&bench, &mut report, wanted("noop"), wanted("latency"), port.ok()).await?;
    }
    if wanted("concurrency") {
        sections::concurrency::run(&bench, &mut report).await?;
    }
    if wanted("window") {
        sections::window::run(&bench, &mut report).await?;
    }
    if wanted("upper") {
        sections::upper::run(&bench, &mut report, raw_noop).await?;
    }
    if wanted("file") {
        sections::file::run(&bench, &mut report).await?;
    }
    if wanted("memory") {
        sections::memory::run(&bench, &mut report).await?;
    }
    if wanted("db") {
        sections::db::run(&bench, &mut report).await?;
    }
    if wanted("once") {
        sections::once::run(&bench, &mut report).await?;
    }
    if wanted("calls") {
        sections::calls::run(&bench, &mut report).await?;
    }
    // A section that cannot run fails the run, after the figures of the others.
    let python = if wanted("python") {
        sections::python::bench(&mut report, &bench.amqp).await
    } else {
        Ok(())
    };

    report.print();
    python.context("the python section")
}
