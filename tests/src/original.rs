//! A wire-level stand-in of the original `slingshot-microservice`: what its services do on
//! RabbitMQ, for the interoperability tests.
//!
//! What the original does on the wire (read in its source, not copied):
//! - it declares its inbound queue and every outbound queue with AMQP's
//!   default options and no arguments: transient, not exclusive, not
//!   auto-delete; a queue that exists durable makes the declaration fail with
//!   `PRECONDITION_FAILED` and the service stops at start-up;
//! - it consumes with no prefetch limit and no consumer arguments;
//! - a body is UTF-8, trimmed, then parsed as a `u64`; one that does not
//!   parse is `basic.nack`ed without requeue (dropped);
//! - each output ID is published in decimal, with no properties at all (no
//!   headers, not persistent), to the default exchange, routing key = queue;
//! - the delivery is acked after its outputs were published.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// A running stand-in service: consumes `inbound`, sends each ID it parses
/// to every queue of `outbound`. Stops when dropped.
pub struct OriginalService {
    /// Bodies it dropped because they were not a `u64`.
    pub rejected: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    _connection: Connection,
}

impl OriginalService {
    /// Starts like the original: connect, declare the queues, consume. The
    /// error is what the original would die of at start-up.
    pub async fn start(amqp_url: &str, name: &str, inbound: &str, outbound: &[String]) -> Result<Self, lapin::Error> {
        let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        declare_like_the_original(&channel, inbound).await?;
        for queue in outbound {
            declare_like_the_original(&channel, queue).await?;
        }
        let mut consumer = channel
            .basic_consume(
                ShortString::from(inbound),
                ShortString::from(format!("{name}-consumer")),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let rejected = Arc::new(AtomicU64::new(0));
        let rejections = rejected.clone();
        let outbound = outbound.to_vec();
        let task = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let parsed = std::str::from_utf8(&delivery.data)
                    .ok()
                    .and_then(|text| text.trim().parse::<u64>().ok());
                let Some(id) = parsed else {
                    rejections.fetch_add(1, Ordering::Relaxed);
                    let _ = delivery.acker.nack(BasicNackOptions::default()).await;
                    continue;
                };
                for queue in &outbound {
                    let published = send(&channel, queue, &id.to_string()).await;
                    assert!(published.is_ok(), "stand-in publish to {queue}: {published:?}");
                }
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
        });
        Ok(OriginalService {
            rejected,
            task,
            _connection: connection,
        })
    }
}

impl Drop for OriginalService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Declares `queue` exactly as the original does.
pub async fn declare_like_the_original(channel: &Channel, queue: &str) -> Result<(), lapin::Error> {
    channel
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map(drop)
}

/// Publishes `body` to `queue` as the original does: default exchange, no
/// properties, and (the channel not being in confirm mode) nothing to wait for.
pub async fn send(channel: &Channel, queue: &str, body: &str) -> Result<(), lapin::Error> {
    channel
        .basic_publish(
            ShortString::from(""),
            ShortString::from(queue),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await?
        .await
        .map(drop)
}

/// A connection and channel of the test's own, to feed a pipeline as an
/// original upstream producer would.
pub struct Feeder {
    /// Its channel.
    pub channel: Channel,
    _connection: Connection,
}

impl Feeder {
    /// Connects to `amqp_url`.
    pub async fn connect(amqp_url: &str) -> Result<Feeder, lapin::Error> {
        let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        Ok(Feeder {
            channel,
            _connection: connection,
        })
    }

    /// Publishes each body to `queue`.
    pub async fn send_all(&self, queue: &str, bodies: impl IntoIterator<Item = String>) -> Result<(), lapin::Error> {
        for body in bodies {
            send(&self.channel, queue, &body).await?;
        }
        Ok(())
    }
}
