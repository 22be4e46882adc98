//! The baselines: hand-written lapin consumers with the same guarantees as a slingshot service.
//!
//! The guarantees: durable queues, persistent mandatory confirmed
//! publishes, the input acked after its output is confirmed, bounded
//! prefetch and concurrency. Pipelined as well as hand-written code can;
//! and the broker's upper bound without the guarantees.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use diesel::r2d2::{ConnectionManager, Pool};
use diesel::PgConnection;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::{mpsc, Semaphore};

/// What a baseline does per request besides consuming and publishing.
#[derive(Clone)]
pub enum Work {
    /// Nothing: the no-op stage.
    Noop,
    /// Nothing, and outputs without the trace headers slingshot's carry:
    /// what propagating a trace costs.
    NoopUntraced,
    /// Nothing, and no guarantees: transient messages, no confirms, auto-ack,
    /// no trace headers.
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

/// One measured round: throughput and CPU time per message.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// Messages per second.
    pub rate: f64,
    /// User + system CPU time of this process over the round, per message.
    pub cpu_us: f64,
    /// The broker's CPU time over the round, per message (NaN when the
    /// broker's process is not known, see [`watch_broker`]).
    pub broker_cpu_us: f64,
    /// TCP segments sent on this machine over the round, per message (all
    /// of them, so a quiet machine's: each side's and the broker's writes).
    pub segments: f64,
}

/// User + system CPU time this process has used, in microseconds.
pub fn cpu_time_us() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// The broker process whose CPU time rounds report (0: none known).
static BROKER_PID: AtomicU32 = AtomicU32::new(0);

/// Makes rounds report the CPU time of the process listening on `port` (the
/// broker, on this machine), found with `ss`; returns its PID, or why not
/// (and then rounds report none, until a later call finds one).
pub fn watch_broker(port: u16) -> Result<u32, String> {
    BROKER_PID.store(0, Ordering::Relaxed);
    let out = std::process::Command::new("ss")
        .args(["-ltnpH", &format!("sport = :{port}")])
        .output()
        .map_err(|e| format!("ss: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pid = text
        .split("pid=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| format!("no process listening on port {port} in `ss -ltnp`: {text:?}"))?;
    BROKER_PID.store(pid, Ordering::Relaxed);
    Ok(pid)
}

/// User + system CPU time of process `pid`, in microseconds
/// (`/proc/PID/stat`, in clock ticks of 10 ms).
fn process_cpu_us(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    Some((ticks(11)? + ticks(12)?) * 1e6 / hz)
}

/// TCP segments this machine has sent (`OutSegs` of `/proc/net/snmp`).
fn tcp_segments_sent() -> f64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return f64::NAN;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "OutSegs")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The watched broker's CPU time so far, in microseconds (NaN when none is watched).
pub fn broker_cpu_us() -> f64 {
    match BROKER_PID.load(Ordering::Relaxed) {
        0 => f64::NAN,
        pid => process_cpu_us(pid).unwrap_or(f64::NAN),
    }
}

/// Times a round: wall clock and CPU from construction to [`Meter::round`].
pub struct Meter {
    started: Instant,
    cpu: f64,
    broker_cpu: f64,
    segments: f64,
}

impl Meter {
    pub fn start() -> Meter {
        Meter {
            started: Instant::now(),
            cpu: cpu_time_us(),
            broker_cpu: broker_cpu_us(),
            segments: tcp_segments_sent(),
        }
    }

    pub fn round(&self, n: u64) -> Round {
        let elapsed = self.started.elapsed().as_secs_f64();
        Round {
            rate: n as f64 / elapsed,
            cpu_us: (cpu_time_us() - self.cpu) / n as f64,
            broker_cpu_us: (broker_cpu_us() - self.broker_cpu) / n as f64,
            segments: (tcp_segments_sent() - self.segments) / n as f64,
        }
    }
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

/// A baseline consumer of `input` publishing to `output`: its connection,
/// queues declared, not consuming yet.
pub struct Stage {
    conn: Connection,
    input: String,
    output: Arc<str>,
    prefetch: u16,
    concurrency: usize,
    work: Work,
}

impl Stage {
    /// Connects and declares both queues (durable).
    pub async fn open(
        amqp: &str,
        input: &str,
        output: &str,
        prefetch: u16,
        concurrency: usize,
        work: Work,
    ) -> anyhow::Result<Stage> {
        let conn = Connection::connect(amqp, ConnectionProperties::default()).await?;
        let setup = conn.create_channel().await?;
        for queue in [input, output] {
            setup
                .queue_declare(queue.into(), QueueDeclareOptions::durable(), FieldTable::default())
                .await?;
        }
        let _ = setup.close(200, "declared".into()).await;
        Ok(Stage {
            conn,
            input: input.into(),
            output: output.into(),
            prefetch,
            concurrency,
            work,
        })
    }

    fn safe(&self) -> bool {
        !matches!(self.work, Work::Unsafe)
    }

    fn traced(&self) -> bool {
        !matches!(self.work, Work::Unsafe | Work::NoopUntraced)
    }

    /// Puts IDs `0..n` in the input queue (confirmed, persistent unless unsafe).
    pub async fn preload(&self, n: u64) -> anyhow::Result<()> {
        let channel = self.conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let properties = BasicProperties::default().with_delivery_mode(if self.safe() { 2 } else { 1 });
        let ids: Vec<u64> = (0..n).collect();
        for chunk in ids.chunks(2_000) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for id in chunk {
                let body = id.to_string();
                confirms.push(
                    channel
                        .basic_publish(
                            "".into(),
                            self.input.as_str().into(),
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
        let _ = channel.close(200, "preloaded".into()).await;
        Ok(())
    }

    /// Consumes until `n` requests are done and returns the round's figures.
    ///
    /// Pipelined: the work of a request holds one of `concurrency` slots; its
    /// output is published as soon as the work is done and the slot freed,
    /// and the confirm is awaited off the consuming path (by one task that
    /// acks each input once its output is confirmed, in delivery order).
    /// The broker bounds what is in flight by `prefetch`.
    pub async fn run(self, n: u64) -> anyhow::Result<Round> {
        let (safe, traced) = (self.safe(), self.traced());
        let publisher = self.conn.create_channel().await?;
        if safe {
            publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        }
        let consumer_channel = self.conn.create_channel().await?;
        consumer_channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = consumer_channel
            .basic_consume(
                self.input.as_str().into(),
                "raw-baseline".into(),
                BasicConsumeOptions {
                    no_ack: !safe,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;

        let processed = Arc::new(AtomicU64::new(0));
        // Confirms to await, with the input to ack after each, in publish order.
        let (settle, mut to_settle) = mpsc::unbounded_channel::<(lapin::PublisherConfirm, lapin::Acker)>();
        let settler = {
            let processed = processed.clone();
            tokio::spawn(async move {
                while let Some((confirm, acker)) = to_settle.recv().await {
                    let confirmed = confirm.await?;
                    anyhow::ensure!(
                        confirmed.is_ack() && confirmed.take_message().is_none(),
                        "output not confirmed"
                    );
                    acker.ack(BasicAckOptions::default()).await?;
                    processed.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        };
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let meter = Meter::start();
        let mut received = 0;
        while received < n {
            let Some(delivery) = consumer.next().await else {
                anyhow::bail!("consumer cancelled");
            };
            let delivery = delivery?;
            received += 1;
            match &self.work {
                // No work: publish straight from the consuming task.
                Work::Noop | Work::NoopUntraced | Work::Unsafe => {
                    let confirm = publish(&publisher, &self.output, &delivery, safe, traced).await?;
                    if safe {
                        settle.send((confirm, delivery.acker))?;
                    } else {
                        processed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                work => {
                    let slot = slots.clone().acquire_owned().await?;
                    let (publisher, output, work, settle) =
                        (publisher.clone(), self.output.clone(), work.clone(), settle.clone());
                    tokio::spawn(async move {
                        let id: u64 = std::str::from_utf8(&delivery.data)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .expect("decimal ID");
                        do_work(&work, id).await;
                        let confirm = publish(&publisher, &output, &delivery, true, true)
                            .await
                            .expect("publish");
                        drop(slot);
                        let _ = settle.send((confirm, delivery.acker));
                    });
                }
            }
        }
        while processed.load(Ordering::Relaxed) < n {
            if settler.is_finished() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let round = meter.round(n);
        drop(settle);
        if settler.is_finished() {
            settler.await??;
        }
        let _ = self.conn.close(200, "done".into()).await;
        Ok(round)
    }
}

/// Publishes the delivery's ID (and headers) to `output`: persistent and
/// mandatory when `safe`; when `traced`, with the trace header a slingshot
/// output carries (`traceparent`; the inbound headers, a legacy trace ID
/// among them, pass unchanged), so that the broker stores and delivers
/// messages of the same size.
async fn publish(
    publisher: &Channel,
    output: &str,
    delivery: &lapin::message::Delivery,
    safe: bool,
    traced: bool,
) -> lapin::Result<lapin::PublisherConfirm> {
    let mut properties = BasicProperties::default().with_delivery_mode(if safe { 2 } else { 1 });
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    if traced {
        let tag = delivery.delivery_tag;
        let trace = now_nanos() ^ u128::from(tag);
        let span = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let text = |s: String| lapin::types::AMQPValue::LongString(s.into());
        headers.insert("traceparent".into(), text(format!("00-{trace:032x}-{span:016x}-01")));
    }
    if !headers.inner().is_empty() {
        properties = properties.with_headers(headers);
    }
    publisher
        .basic_publish(
            "".into(),
            output.into(),
            BasicPublishOptions {
                mandatory: safe,
                ..Default::default()
            },
            &delivery.data,
            properties,
        )
        .await
}

async fn do_work(work: &Work, id: u64) {
    match work {
        Work::Noop | Work::NoopUntraced | Work::Unsafe => {}
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
}

/// Preloads `n` IDs into `input`, then consumes them as [`Stage::run`] does.
pub async fn stage(
    amqp: &str,
    input: &str,
    output: &str,
    n: u64,
    prefetch: u16,
    concurrency: usize,
    work: Work,
) -> anyhow::Result<Round> {
    let stage = Stage::open(amqp, input, output, prefetch, concurrency, work).await?;
    stage.preload(n).await?;
    stage.run(n).await
}
