//! The message broker seam: declaring queues, consuming with acknowledgements, and confirmed publishing.
//!
//! Implementations: [`memory::MemoryBroker`] (in-process, the embedded
//! default) and [`rabbitmq::RabbitMq`]. The worker never sees which one it
//! talks to.

pub mod memory;
pub mod rabbitmq;

use std::collections::BTreeMap;

use async_trait::async_trait;

/// A failure of the broker or of the connection to it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The connection or channel is gone; the operation may succeed after reconnecting.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// The broker refused the operation.
    #[error("{op} {queue:?} refused: {message}")]
    Refused {
        /// The operation.
        op: &'static str,
        /// The queue.
        queue: String,
        /// What the broker said.
        message: String,
    },
    /// The broker does not permit a feature it deprecated (RabbitMQ 4's
    /// `deprecated_features.permit.<feature> = false`): retrying cannot help.
    #[error("{op} {queue:?} refused: RabbitMQ does not permit its deprecated feature `{feature}` (deprecated_features.permit.{feature} = false in its configuration){advice}")]
    Deprecated {
        /// The operation.
        op: &'static str,
        /// The queue.
        queue: String,
        /// The deprecated feature, as RabbitMQ names it (`transient_nonexcl_queues`).
        feature: String,
        /// What to do about it, starting with `; ` (empty if nothing specific).
        advice: String,
    },
    /// The broker did not confirm a publish.
    #[error("publish to {queue:?} was not confirmed: {message}")]
    NotConfirmed {
        /// The queue.
        queue: String,
        /// Why.
        message: String,
    },
}

/// How a queue is declared.
///
/// RabbitMQ refuses to declare an existing queue with a different durability
/// (`PRECONDITION_FAILED - inequivalent arg 'durable'`), so services that
/// share a queue must agree on it. slingshot uses an existing queue as it is
/// whatever its durability; the original `slingshot-microservice` crashes at
/// start-up instead, which is why [`crate::settings::QueueMode::Compatible`]
/// declares queues [`Durability::Transient`] as it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Durability {
    /// Survives a broker restart (with persistent messages, they do too).
    Durable,
    /// Deleted when the broker restarts, with its messages: how the original
    /// `slingshot-microservice` declares every queue (AMQP's defaults).
    Transient,
}

impl Durability {
    /// `durable` or `transient`.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Durable => "durable",
            Durability::Transient => "transient",
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of RabbitMQ queue a service declares (`SLINGSHOT_QUEUE_TYPE`).
///
/// Classic queues live on one node. Quorum queues are replicated over a
/// cluster (Raft) and survive the loss of a minority of its nodes; they are
/// RabbitMQ 4's only replicated queues. slingshot declares a quorum queue
/// with the arguments RabbitMQ 4.0 would otherwise impose or that keep it
/// lossless: a delivery limit ([`QUORUM_DELIVERY_LIMIT`]) with the queue's
/// dead-letter queue as dead-letter target, at-least-once dead-lettering and
/// `reject-publish` overflow. The in-process broker has one kind of queue
/// and ignores this.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum QueueType {
    /// One node's queue: RabbitMQ's default, and the original crate's.
    #[default]
    Classic,
    /// A replicated Raft queue: for clusters, survives losing a node.
    Quorum,
}

impl QueueType {
    /// `classic` or `quorum`, as RabbitMQ's `x-queue-type` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The delivery limit slingshot sets on the quorum queues it declares:
/// RabbitMQ 4.0's default, set explicitly so that 3.x brokers apply it too.
/// Only deliveries the broker takes back count (a lost connection or channel,
/// `basic.reject`); slingshot's own retries publish a new message and do not.
/// A message over the limit goes to the queue's dead-letter queue.
pub const QUORUM_DELIVERY_LIMIT: i64 = 20;

/// How an existing queue compares with a declaration (see [`Broker::inspect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueState {
    /// No such queue: a declaration would create it.
    Missing,
    /// The queue exists and the broker accepts the declaration as it is.
    Matches,
    /// The queue exists with other properties; the broker's words.
    Differs(String),
}

/// A header value carried with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Text.
    Str(String),
    /// A signed integer.
    Int(i64),
}

impl HeaderValue {
    /// The value as text, if it is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::Str(s) => Some(s),
            HeaderValue::Int(_) => None,
        }
    }

    /// The value as an integer, if it is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            HeaderValue::Int(i) => Some(*i),
            HeaderValue::Str(_) => None,
        }
    }
}

/// Message headers.
pub type Headers = BTreeMap<String, HeaderValue>;

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The body: for requests, the ID in decimal ASCII.
    pub body: Vec<u8>,
    /// Headers (attempt count, trace ID, dead-letter reasons).
    pub headers: Headers,
}

impl Message {
    /// A request message: `id` in decimal ASCII, as the original crate sends it.
    pub fn id(id: u64) -> Self {
        Message {
            body: id.to_string().into_bytes(),
            headers: Headers::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: HeaderValue) -> Self {
        self.headers.insert(name.to_string(), value);
        self
    }
}

/// Settles one delivery. Dropping it unsettled leaves the message with the
/// broker, which redelivers it when the consumer goes away.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Acknowledges: the broker forgets the message.
    async fn ack(self: Box<Self>) -> Result<(), BrokerError>;
    /// Rejects: `requeue` puts it back, otherwise the broker drops it.
    async fn reject(self: Box<Self>, requeue: bool) -> Result<(), BrokerError>;

    /// Whether the delivery can still be settled. `false` once its channel
    /// or connection is gone: the broker then delivers the message again by
    /// itself, so sending a copy of it (a retry) would only duplicate it.
    fn is_live(&self) -> bool {
        true
    }
}

/// A message received from a queue.
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// Whether the broker delivered it before.
    pub redelivered: bool,
    /// How to settle it.
    pub acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

/// A stream of deliveries from one queue, at most `prefetch` unsettled.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `None` when the consumer was cancelled (the queue
    /// was deleted or the broker closed it).
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>>;
}

/// The seam to a message broker.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Declares `queue` with `durability` and no arguments. A queue that
    /// already exists with another durability or other arguments is used as
    /// it is (and a warning says so).
    async fn declare(&self, queue: &str, durability: Durability) -> Result<(), BrokerError>;

    /// Whether `queue` exists and would accept a declaration with
    /// `durability` and no arguments, without creating it or changing it.
    async fn inspect(&self, queue: &str, durability: Durability) -> Result<QueueState, BrokerError>;

    /// Starts consuming `queue` with at most `prefetch` unacknowledged deliveries.
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BrokerError>;

    /// Publishes persistently to `queue` through the default exchange and
    /// returns once the broker confirmed it. Calls may run concurrently;
    /// confirms are then pipelined.
    async fn publish(&self, queue: &str, message: Message) -> Result<(), BrokerError>;

    /// Takes one message from `queue` without a consumer, if there is one.
    async fn get(&self, queue: &str) -> Result<Option<Delivery>, BrokerError>;

    /// How many messages are ready in `queue` (not counting unacknowledged ones).
    async fn ready_count(&self, queue: &str) -> Result<u64, BrokerError>;

    /// One line naming the broker, for logs (never credentials).
    fn describe(&self) -> String;

    /// What the broker says about itself (product, version, platform), for
    /// logs and `check`: `None` if it says nothing (the in-process broker) or
    /// could not be asked.
    async fn server_info(&self) -> Option<crate::server_info::ServerInfo> {
        None
    }

    /// The `messaging.system` of the spans of messages through this broker.
    fn messaging_system(&self) -> &'static str {
        "rabbitmq"
    }
}
