//! The RabbitMQ broker (lapin): queue declarations durable or as the original crate makes them, a channel per consumer with bounded prefetch, one confirm-mode channel for pipelined persistent publishes, reconnection on demand.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::{Acker, Broker, BrokerError, Consumer, Delivery, Durability, HeaderValue, Headers, Message, QueueState};

/// Persistent delivery mode of AMQP 0-9-1.
const PERSISTENT: u8 = 2;

/// A RabbitMQ broker reached through one AMQP connection, opened lazily and
/// reopened after it is lost.
pub struct RabbitMq {
    url: String,
    display: String,
    name: String,
    /// The live session, read on every publish without waiting.
    session: std::sync::RwLock<Option<Arc<Session>>>,
    /// Held while (re)connecting, so only one task reconnects.
    connecting: Mutex<()>,
    /// Channel of `basic_get`: messages taken with it are settled on it.
    getter: Mutex<Option<Channel>>,
}

struct Session {
    connection: Connection,
    /// Confirm-mode channel shared by every publish.
    publisher: Channel,
}

impl std::fmt::Debug for RabbitMq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMq").field("broker", &self.display).finish()
    }
}

impl RabbitMq {
    /// A broker at `url` (`amqp://user:pass@host:port/vhost`, credentials
    /// percent-encoded); `display` is the same without credentials.
    /// `name` labels the connection in RabbitMQ's management views.
    pub fn new(url: String, display: String, name: &str) -> Self {
        RabbitMq {
            url,
            display,
            name: name.to_string(),
            session: std::sync::RwLock::new(None),
            connecting: Mutex::new(()),
            getter: Mutex::new(None),
        }
    }

    /// Connects now, so a wrong address or password fails at start-up.
    pub async fn connect(&self) -> Result<(), BrokerError> {
        self.session().await.map(drop)
    }

    /// The current session if it is healthy. Never waits.
    fn healthy(&self) -> Option<Arc<Session>> {
        let slot = self.session.read().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|s| s.connection.status().connected() && s.publisher.status().connected())
            .cloned()
    }

    async fn session(&self) -> Result<Arc<Session>, BrokerError> {
        if let Some(session) = self.healthy() {
            return Ok(session);
        }
        let _connecting = self.connecting.lock().await;
        // Another task may have reconnected while this one waited.
        if let Some(session) = self.healthy() {
            return Ok(session);
        }
        if self.session.read().unwrap_or_else(|p| p.into_inner()).is_some() {
            tracing::warn!(broker = %self.display, "AMQP connection lost; reconnecting");
        }
        let properties = ConnectionProperties::default().with_connection_name(LongString::from(self.name.clone()));
        let connection = Connection::connect(&self.url, properties)
            .await
            .map_err(|e| BrokerError::Disconnected(format!("cannot connect to {}: {e}", self.display)))?;
        let publisher = connection.create_channel().await.map_err(|e| self.lost(e))?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.lost(e))?;
        let session = Arc::new(Session { connection, publisher });
        *self.session.write().unwrap_or_else(|p| p.into_inner()) = Some(session.clone());
        tracing::info!(broker = %self.display, "connected");
        Ok(session)
    }

    fn lost(&self, e: lapin::Error) -> BrokerError {
        BrokerError::Disconnected(format!("{}: {e}", self.display))
    }

    async fn channel(&self) -> Result<Channel, BrokerError> {
        let session = self.session().await?;
        session.connection.create_channel().await.map_err(|e| self.lost(e))
    }
}

/// Declares `queue` with `durability`, no arguments and AMQP's defaults for
/// the rest (not exclusive, not auto-delete): with `Transient`, exactly what
/// the original `slingshot-microservice` sends.
async fn declare_plain(channel: &Channel, queue: &str, durability: Durability) -> lapin::Result<lapin::Queue> {
    let options = QueueDeclareOptions {
        durable: durability == Durability::Durable,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(ShortString::from(queue), options, FieldTable::default())
        .await
}

/// Asks whether `queue` exists (and how many messages are ready in it)
/// without creating or changing it.
async fn declare_passive(channel: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    channel
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        )
        .await
}

/// Whether the broker refused with the soft error `kind`.
fn is_soft(e: &lapin::Error, kind: AMQPSoftError) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if *amqp.kind() == AMQPErrorKind::Soft(kind))
}

/// Whether the broker refused a declaration because the queue exists with
/// other properties (AMQP 406 PRECONDITION_FAILED).
fn is_precondition_failed(e: &lapin::Error) -> bool {
    is_soft(e, AMQPSoftError::PRECONDITIONFAILED)
}

/// Whether a passive declaration found no such queue (AMQP 404 NOT_FOUND).
fn is_not_found(e: &lapin::Error) -> bool {
    is_soft(e, AMQPSoftError::NOTFOUND)
}

/// What the broker said, without lapin's wrapping: `PRECONDITION_FAILED -
/// inequivalent arg 'durable' for queue ...`.
fn reply_text(e: &lapin::Error) -> String {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => amqp.get_message().as_str().to_string(),
        _ => e.to_string(),
    }
}

fn refused(op: &'static str, queue: &str, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Refused {
        op,
        queue: queue.into(),
        message: e.to_string(),
    }
}

fn to_field_table(headers: &Headers) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        let value = match value {
            HeaderValue::Str(s) => AMQPValue::LongString(LongString::from(s.clone())),
            HeaderValue::Int(i) => AMQPValue::LongLongInt(*i),
        };
        table.insert(ShortString::from(name.clone()), value);
    }
    table
}

fn from_field_table(table: Option<&FieldTable>) -> Headers {
    let mut headers = Headers::new();
    for (name, value) in table.into_iter().flat_map(|t| t.inner().iter()) {
        let value = match value {
            AMQPValue::LongString(s) => HeaderValue::Str(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => HeaderValue::Str(s.as_str().to_string()),
            AMQPValue::ShortShortInt(i) => HeaderValue::Int(i64::from(*i)),
            AMQPValue::ShortShortUInt(i) => HeaderValue::Int(i64::from(*i)),
            AMQPValue::ShortInt(i) => HeaderValue::Int(i64::from(*i)),
            AMQPValue::ShortUInt(i) => HeaderValue::Int(i64::from(*i)),
            AMQPValue::LongInt(i) => HeaderValue::Int(i64::from(*i)),
            AMQPValue::LongUInt(i) => HeaderValue::Int(i64::from(*i)),
            AMQPValue::LongLongInt(i) => HeaderValue::Int(*i),
            AMQPValue::Timestamp(t) => HeaderValue::Int(i64::try_from(*t).unwrap_or(i64::MAX)),
            AMQPValue::Boolean(b) => HeaderValue::Int(i64::from(*b)),
            // Other AMQP types (floats, arrays, tables) are not slingshot's headers.
            _ => continue,
        };
        headers.insert(name.as_str().to_string(), value);
    }
    headers
}

#[async_trait]
impl Broker for RabbitMq {
    async fn declare(&self, queue: &str, durability: Durability) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        match declare_plain(&channel, queue, durability).await {
            Ok(_) => {
                let _ = channel.close(200, ShortString::from("declared")).await;
                Ok(())
            }
            // The queue exists with another durability or other arguments
            // (quorum, TTL, DLX...): the broker closed that channel; check
            // that the queue exists and use it as it is.
            Err(e) if is_precondition_failed(&e) => {
                let check = self.channel().await?;
                declare_passive(&check, queue)
                    .await
                    .map_err(|e| refused("declare", queue, e))?;
                let _ = check.close(200, ShortString::from("declared")).await;
                tracing::warn!(
                    queue,
                    declared = %durability,
                    broker = %reply_text(&e),
                    "queue exists with other properties; using it as it is (`check` explains)"
                );
                Ok(())
            }
            Err(e) => Err(refused("declare", queue, e)),
        }
    }

    async fn inspect(&self, queue: &str, durability: Durability) -> Result<QueueState, BrokerError> {
        // Passive first, so that inspecting never creates a queue.
        let channel = self.channel().await?;
        match declare_passive(&channel, queue).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(QueueState::Missing),
            Err(e) => return Err(refused("inspect", queue, e)),
        }
        // Declaring an existing queue with equivalent properties changes
        // nothing; with other ones the broker refuses and says why.
        match declare_plain(&channel, queue, durability).await {
            Ok(_) => {
                let _ = channel.close(200, ShortString::from("inspected")).await;
                Ok(QueueState::Matches)
            }
            Err(e) if is_precondition_failed(&e) => Ok(QueueState::Differs(reply_text(&e))),
            Err(e) => Err(refused("inspect", queue, e)),
        }
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BrokerError> {
        let channel = self.channel().await?;
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(|e| self.lost(e))?;
        let consumer = channel
            .basic_consume(
                ShortString::from(queue),
                ShortString::from(format!("{}-{}", self.name, std::process::id())),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| refused("consume", queue, e))?;
        Ok(Box::new(RabbitConsumer {
            queue: queue.to_string(),
            consumer,
            _channel: channel,
        }))
    }

    async fn publish(&self, queue: &str, message: Message) -> Result<(), BrokerError> {
        let session = self.session().await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_headers(to_field_table(&message.headers));
        let confirm = session
            .publisher
            .basic_publish(
                ShortString::from(""),
                ShortString::from(queue),
                // Mandatory: a publish to a queue that does not exist comes
                // back as an error instead of vanishing.
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                properties,
            )
            .await
            .map_err(|e| self.lost(e))?;
        let not_confirmed = |message: String| BrokerError::NotConfirmed {
            queue: queue.into(),
            message,
        };
        match confirm.await.map_err(|e| not_confirmed(e.to_string()))? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(not_confirmed(format!(
                "returned by the broker: {} (does the queue exist?)",
                returned.reply_text
            ))),
            Confirmation::Nack(_) => Err(not_confirmed("the broker nacked it".into())),
            Confirmation::NotRequested => Err(not_confirmed("confirms are not enabled on the channel".into())),
        }
    }

    async fn get(&self, queue: &str) -> Result<Option<Delivery>, BrokerError> {
        let channel = {
            let mut getter = self.getter.lock().await;
            match getter.as_ref().filter(|c| c.status().connected()) {
                Some(channel) => channel.clone(),
                None => {
                    let channel = self.channel().await?;
                    *getter = Some(channel.clone());
                    channel
                }
            }
        };
        let got = channel
            .basic_get(ShortString::from(queue), BasicGetOptions::default())
            .await
            .map_err(|e| refused("get", queue, e))?;
        Ok(got.map(|message| {
            let delivery = message.delivery;
            Delivery {
                message: Message {
                    headers: from_field_table(delivery.properties.headers().as_ref()),
                    body: delivery.data,
                },
                redelivered: delivery.redelivered,
                acker: Box::new(RabbitAcker { acker: delivery.acker }),
            }
        }))
    }

    async fn ready_count(&self, queue: &str) -> Result<u64, BrokerError> {
        let channel = self.channel().await?;
        let declared = declare_passive(&channel, queue)
            .await
            .map_err(|e| refused("count", queue, e))?;
        let _ = channel.close(200, ShortString::from("counted")).await;
        Ok(u64::from(declared.message_count()))
    }

    fn describe(&self) -> String {
        format!("RabbitMQ {}", self.display)
    }
}

struct RabbitConsumer {
    queue: String,
    consumer: lapin::Consumer,
    /// Keeps the consumer's channel open; dropping it closes the channel and
    /// the broker requeues every unacknowledged delivery.
    _channel: Channel,
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        match self.consumer.next().await? {
            Ok(delivery) => Some(Ok(Delivery {
                message: Message {
                    headers: from_field_table(delivery.properties.headers().as_ref()),
                    body: delivery.data,
                },
                redelivered: delivery.redelivered,
                acker: Box::new(RabbitAcker { acker: delivery.acker }),
            })),
            Err(e) => Some(Err(BrokerError::Disconnected(format!(
                "consumer of {:?}: {e}",
                self.queue
            )))),
        }
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        let channel = self._channel.clone();
        // Closing returns unacked deliveries to the queue now rather than when
        // the connection ends. Best effort: if there is no runtime, the
        // connection's end does the same.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = channel.close(200, ShortString::from("consumer dropped")).await;
            });
        }
    }
}

struct RabbitAcker {
    acker: lapin::Acker,
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.acker
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(|e| BrokerError::Disconnected(format!("ack: {e}")))
    }

    async fn reject(self: Box<Self>, requeue: bool) -> Result<(), BrokerError> {
        self.acker
            .reject(BasicRejectOptions { requeue })
            .await
            .map(drop)
            .map_err(|e| BrokerError::Disconnected(format!("reject: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_amqp_tables() {
        let mut headers = Headers::new();
        headers.insert("x-slingshot-attempt".into(), HeaderValue::Int(3));
        headers.insert("x-slingshot-error".into(), HeaderValue::Str("boom: é".into()));
        let table = to_field_table(&headers);
        assert_eq!(from_field_table(Some(&table)), headers);
        assert!(from_field_table(None).is_empty());
    }
}
