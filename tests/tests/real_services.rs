//! Integration tests that need the real services: volume, large objects in a
//! separate process, RabbitMQ's and PostgreSQL's own failure modes, and the
//! HTTP sys-map's errors.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::json;
use slingshot::broker::Message;
use slingshot::{AnyConnection, AnyError, ServiceDef};
use slingshot_tests::{drain_ids, wait_for_count, Backend, Fixture, Services};

/// Routes request `r` by `r % 3` (an integer case) to one queue per residue.
#[slingshot::microservice(name = "sorter", sys_map = "file:unused.json", main = false)]
fn sorter(request: u64) -> [(u64, u8); 1] {
    [(request, (request % 3) as u8)]
}

/// Counts the rows of `pool_probe` through a pooled connection.
#[slingshot::microservice(name = "pool-probe", sys_map = "file:unused.json", main = false)]
fn pool_probe(request: u64, connection: &mut AnyConnection) -> Result<Vec<(u64, bool)>, AnyError> {
    diesel::sql_query("SELECT 1").execute(connection)?;
    Ok(vec![(request, true)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_ids_at_concurrency_8_arrive_exactly_as_routed() {
    const N: u64 = 10_000;
    let f = Fixture::new(Backend::Real, "volume");
    let mut settings = f.settings();
    settings.concurrency = 8;
    settings.prefetch = 16;
    let out = json!([
        {"case": 0, "queues": [f.q("zero")]},
        {"case": 1, "queues": [f.q("one"), f.q("one-copy")]},
        {"case": 2, "queues": [f.q("two")]},
    ]);
    let runtime = f
        .runtime_with(json!({"sorter": {"in": f.q("in"), "out": out}}), settings)
        .await;
    let service = runtime.start(ServiceDef::find("sorter").unwrap()).await.unwrap();
    let started = Instant::now();
    runtime.send(&f.q("in"), 0..N).await.unwrap();
    let broker = runtime.broker().as_ref();
    let expected = |r: u64| (0..N).filter(|i| i % 3 == r).collect::<Vec<_>>();
    for (queue, residue) in [("zero", 0), ("one", 1), ("one-copy", 1), ("two", 2)] {
        wait_for_count(
            broker,
            &f.q(queue),
            expected(residue).len() as u64,
            Duration::from_secs(180),
        )
        .await;
    }
    let elapsed = started.elapsed();
    runtime.run_until_idle(&[&service]).await.unwrap();
    for (queue, residue) in [("zero", 0), ("one", 1), ("one-copy", 1), ("two", 2)] {
        let mut ids = drain_ids(broker, &f.q(queue)).await;
        ids.sort_unstable();
        assert_eq!(
            ids,
            expected(residue),
            "{queue} must hold exactly the IDs with residue {residue}, once each"
        );
    }
    assert_eq!(service.stats.processed.load(Ordering::Relaxed), N);
    assert_eq!(service.stats.dead_lettered.load(Ordering::Relaxed), 0);
    println!(
        "volume: {N} IDs at concurrency 8 through RabbitMQ in {:.2}s ({:.0} msg/s, 4 outputs per 3 inputs)",
        elapsed.as_secs_f64(),
        N as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_with_other_arguments_is_used_as_is() {
    let f = Fixture::new(Backend::Real, "preexisting");
    let inbound = f.q("in");
    // Another tool declared the inbound queue first, as a length-limited queue.
    let conn = lapin::Connection::connect(&slingshot_tests::shared_amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut args = lapin::types::FieldTable::default();
    args.insert("x-max-length".into(), lapin::types::AMQPValue::LongInt(100_000));
    channel
        .queue_declare(
            inbound.as_str().into(),
            lapin::options::QueueDeclareOptions::durable(),
            args,
        )
        .await
        .unwrap();
    let runtime = f
        .runtime(json!({"sorter": {"in": inbound, "out": [{"case": 1, "queues": [f.q("one")]}]}}))
        .await;
    let service = runtime.start(ServiceDef::find("sorter").unwrap()).await.unwrap();
    runtime.send(&f.q("in"), [1, 4]).await.unwrap();
    wait_for_count(runtime.broker().as_ref(), &f.q("one"), 2, Duration::from_secs(20)).await;
    runtime.run_until_idle(&[&service]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_database_connection_is_replaced_not_reused() {
    let f = Fixture::new(Backend::Real, "pool");
    let mut settings = f.settings();
    settings.concurrency = 2;
    settings.prefetch = 2;
    // One attempt only: a request handed a dead connection would be dead-lettered.
    settings.max_attempts = 1;
    let runtime = f
        .runtime_with(
            json!({"pool-probe": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("ok")]}]}}),
            settings,
        )
        .await;
    let service = runtime.start(ServiceDef::find("pool-probe").unwrap()).await.unwrap();
    runtime.send(&f.q("in"), 0..10).await.unwrap();
    let broker = runtime.broker().as_ref();
    wait_for_count(broker, &f.q("ok"), 10, Duration::from_secs(20)).await;

    // Kill the server side of every pooled connection behind the pool's back
    // (only this test's: they are the ones in its own database).
    let pg = std::env::var("SLINGSHOT_TEST_PG_URL").unwrap();
    let database = f.database().await.name().to_string();
    let killed: usize = tokio::task::spawn_blocking(move || {
        let mut admin = diesel::PgConnection::establish(&pg).unwrap();
        diesel::sql_query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'slingshot pool-probe' AND datname = $1",
        )
        .bind::<diesel::sql_types::Text, _>(database)
        .execute(&mut admin)
        .unwrap()
    })
    .await
    .unwrap();
    assert!(killed >= 1, "the pool held no connection to kill");

    runtime.send(&f.q("in"), 10..20).await.unwrap();
    wait_for_count(broker, &f.q("ok"), 20, Duration::from_secs(20)).await;
    runtime.run_until_idle(&[&service]).await.unwrap();
    assert_eq!(
        service.stats.dead_lettered.load(Ordering::Relaxed),
        0,
        "a request got a dead connection"
    );
    assert_eq!(service.stats.processed.load(Ordering::Relaxed), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_map_errors_name_the_url_and_what_was_expected() {
    let f = Fixture::new(Backend::Real, "sysmap-errors");
    let base = f
        .serve_sysmap(json!({
            // A queue name that is not a string: the original refuses this
            // too (a case like 1.5 it accepts, and so does slingshot).
            "sorter": {"in": f.q("in"), "out": [{"case": 1, "queues": [7]}]},
            "pool-probe/in": "Not A Bucket",
        }))
        .await;
    let runtime = slingshot::Runtime::connect(&base, f.settings()).await.unwrap();
    let err = runtime
        .start(ServiceDef::find("sorter").unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&base), "{err}");
    assert!(err.contains("out[0].queues[0]"), "names the field: {err}");
    let err = runtime
        .sysmap()
        .bucket("pool-probe", "in")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"pool-probe/in\" answered `Not A Bucket`"), "{err}");
    let err = runtime.sysmap().service("nobody").await.unwrap_err().to_string();
    assert!(err.contains(&format!("GET {base}/nobody answered 404")), "{err}");
    let err = slingshot::Runtime::connect("http://127.0.0.1:9", f.settings())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("GET http://127.0.0.1:9/rabbitmq: cannot connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_object_round_trips_with_flat_memory() {
    const SIZE: usize = 100 * 1024 * 1024;
    let f = Fixture::new(Backend::Real, "large");
    let (input, output) = (f.bucket("in"), f.bucket("out"));
    let base = f
        .serve_sysmap(json!({
            "big-copy": {"in": f.q("in"), "out": [{"case": SIZE, "queues": [f.q("done")]}]},
            "big-copy/in": input,
            "big-copy/out": output,
        }))
        .await;
    let s3 = Services::from_env().s3();
    let pattern = |i: usize| (i.wrapping_mul(2654435761) >> 13) as u8;
    let data: Vec<u8> = (0..SIZE).map(pattern).collect();
    slingshot::storage::ObjectStore::put_bytes(&s3, &input, "1", data)
        .await
        .unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_big-copy"))
        .args(["invoke", "1"])
        .env("SLINGSHOT_SYS_MAP", &base)
        .env("SLINGSHOT_STAGING_DIR", f.dir.path())
        .env("SLINGSHOT_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(hwm) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak_kib = peak_kib.max(hwm.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0));
            }
        }
        match tokio::time::timeout(Duration::from_millis(20), child.wait()).await {
            Ok(status) => break status.unwrap(),
            Err(_) => continue,
        }
    };
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        tokio::io::AsyncReadExt::read_to_string(&mut out, &mut stdout)
            .await
            .unwrap();
    }
    assert!(status.success(), "big-copy invoke failed: {status}\n{stdout}");
    assert!(
        stdout.contains(&format!("output 1 case {SIZE} -> {}", f.q("done"))),
        "{stdout}"
    );
    println!(
        "large object: 100 MiB copied through S3 by a service whose peak RSS was {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
    assert!(peak_kib > 0, "could not read the service's peak RSS");
    assert!(
        peak_kib < 100 * 1024,
        "peak RSS {peak_kib} KiB grows with the 100 MiB object"
    );

    // The copy is byte-for-byte the original.
    let mut reader = slingshot::storage::ObjectStore::open(&s3, &output, "1").await.unwrap();
    let (len, mismatch) = tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0u8; 1 << 20];
        let (mut offset, mut mismatch) = (0usize, None);
        loop {
            let n = reader.read(&mut buffer).unwrap();
            if n == 0 {
                break (offset, mismatch);
            }
            if mismatch.is_none() {
                mismatch = (0..n).find(|&i| buffer[i] != pattern(offset + i)).map(|i| offset + i);
            }
            offset += n;
        }
    })
    .await
    .unwrap();
    assert_eq!(len, SIZE);
    assert_eq!(mismatch, None, "the copy differs from the original");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_missing_queue_is_an_error_not_a_silent_drop() {
    let f = Fixture::new(Backend::Real, "mandatory");
    let runtime = f.runtime(json!({})).await;
    let err = runtime
        .broker()
        .publish(&f.q("nowhere"), Message::id(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does the queue exist?"), "{err}");
}
