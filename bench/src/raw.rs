//! The baselines: hand-written lapin consumers with the same guarantees as a slingshot service (durable queues, persistent confirmed publishes, the input acked after its output is confirmed, bounded prefetch and concurrency), and the broker's upper bound without them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use diesel::r2d2::{ConnectionManager, Pool};
use diesel::PgConnection;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::Semaphore;

/// What a baseline does per request besides consuming and publishing.
#[derive(Clone)]
pub enum Work {
    /// Nothing: the no-op stage.
    Noop,
    /// Nothing, and no guarantees: transient messages, no confirms, auto-ack.
    Unsafe,
    /// Get object `id` from `input` into memory and put it to `output`.
    File {
        s3: aws_sdk_s3::Client,
        input: String,
        output: String,
    },
    /// One INSERT through its own diesel pool.
    Insert(Pool<ConnectionManager<PgConnection>>),
}

pub fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub fn pool(url: &str, size: u32) -> anyhow::Result<Pool<ConnectionManager<PgConnection>>> {
    Ok(Pool::builder().max_size(size).build(ConnectionManager::new(url))?)
}

pub async fn delete_queues(amqp: &str, queues: &[String]) {
    if let Ok(conn) = Connection::connect(amqp, ConnectionProperties::default()).await {
        for queue in queues {
            if let Ok(channel) = conn.create_channel().await {
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
        let _ = conn.close(200, "done".into()).await;
    }
}

async fn preload(conn: &Connection, queue: &str, n: u64, persistent: bool) -> anyhow::Result<()> {
    let channel = conn.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let properties = BasicProperties::default().with_delivery_mode(if persistent { 2 } else { 1 });
    let ids: Vec<u64> = (0..n).collect();
    for chunk in ids.chunks(2_000) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for id in chunk {
            let body = id.to_string();
            confirms.push(
                channel
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        properties.clone(),
                    )
                    .await?,
            );
        }
        for confirm in confirms {
            anyhow::ensure!(confirm.await?.is_ack(), "preload not confirmed");
        }
    }
    Ok(())
}

/// Consumes `n` preloaded IDs from `input`, does `work` and publishes each
/// to `output`; returns requests per second.
pub async fn stage(
    amqp: &str,
    input: &str,
    output: &str,
    n: u64,
    concurrency: usize,
    work: Work,
) -> anyhow::Result<f64> {
    let safe = !matches!(work, Work::Unsafe);
    let conn = Connection::connect(amqp, ConnectionProperties::default()).await?;
    let setup = conn.create_channel().await?;
    for queue in [input, output] {
        setup
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), FieldTable::default())
            .await?;
    }
    preload(&conn, input, n, safe).await?;

    let publisher = conn.create_channel().await?;
    if safe {
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    }
    let consumer_channel = conn.create_channel().await?;
    consumer_channel
        .basic_qos(u16::try_from(concurrency * 2)?, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            input.into(),
            "raw-baseline".into(),
            BasicConsumeOptions {
                no_ack: !safe,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;

    let processed = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(Semaphore::new(concurrency));
    let output: Arc<str> = output.into();
    let started = Instant::now();
    let mut received = 0;
    while received < n {
        let Some(delivery) = consumer.next().await else {
            anyhow::bail!("consumer cancelled");
        };
        let delivery = delivery?;
        received += 1;
        let slot = slots.clone().acquire_owned().await?;
        let (publisher, processed, output, work) = (publisher.clone(), processed.clone(), output.clone(), work.clone());
        tokio::spawn(async move {
            let id: u64 = std::str::from_utf8(&delivery.data)
                .ok()
                .and_then(|s| s.parse().ok())
                .expect("decimal ID");
            match &work {
                Work::Noop | Work::Unsafe => {}
                Work::File { s3, input, output } => {
                    let object = s3
                        .get_object()
                        .bucket(input)
                        .key(id.to_string())
                        .send()
                        .await
                        .expect("get");
                    let bytes = object.body.collect().await.expect("body").into_bytes();
                    s3.put_object()
                        .bucket(output)
                        .key(id.to_string())
                        .body(bytes.into())
                        .send()
                        .await
                        .expect("put");
                }
                Work::Insert(pool) => {
                    let pool = pool.clone();
                    tokio::task::spawn_blocking(move || {
                        use diesel::RunQueryDsl;
                        let mut conn = pool.get().expect("connection");
                        diesel::sql_query("INSERT INTO bench_rows (id) VALUES ($1) ON CONFLICT DO NOTHING")
                            .bind::<diesel::sql_types::BigInt, _>(id as i64)
                            .execute(&mut conn)
                            .expect("insert");
                    })
                    .await
                    .expect("insert task");
                }
            }
            let body = id.to_string();
            let properties =
                BasicProperties::default().with_delivery_mode(if matches!(work, Work::Unsafe) { 1 } else { 2 });
            let confirm = publisher
                .basic_publish(
                    "".into(),
                    (*output).into(),
                    BasicPublishOptions {
                        mandatory: !matches!(work, Work::Unsafe),
                        ..Default::default()
                    },
                    body.as_bytes(),
                    properties,
                )
                .await
                .expect("publish");
            if !matches!(work, Work::Unsafe) {
                assert!(confirm.await.expect("confirm").is_ack(), "output not confirmed");
                delivery.ack(BasicAckOptions::default()).await.expect("ack");
            }
            processed.fetch_add(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    while processed.load(Ordering::Relaxed) < n {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let _ = conn.close(200, "done".into()).await;
    Ok(n as f64 / elapsed.as_secs_f64())
}
