//! The message broker seam: declaring queues, consuming with acknowledgements, and confirmed publishing.
//!
//! Implementations: [`memory::MemoryBroker`] (in-process, the embedded
//! default) and [`rabbitmq::RabbitMq`]. The worker never sees which one it
//! talks to.

pub mod memory;
pub(crate) mod message;
pub mod rabbitmq;
mod topic;

pub use message::{HeaderValue, Headers, Message, Properties};

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
    /// The broker returned a publish: no queue of that name (it may have
    /// been deleted).
    #[error("publish to {queue:?} was returned by the broker: {message} (does the queue exist?)")]
    Returned {
        /// The queue.
        queue: String,
        /// What the broker said.
        message: String,
    },
    /// The message's properties and headers do not fit in one frame of the
    /// connection; publishing it would make the broker close the connection.
    #[error(
        "message to {queue:?} not published: its properties and headers take {size} bytes, \
         over the {limit}-byte frame the connection negotiated (SLINGSHOT_AMQP_FRAME_MAX)"
    )]
    TooLarge {
        /// The queue.
        queue: String,
        /// The content header frame's size.
        size: usize,
        /// The negotiated frame size.
        limit: usize,
    },
    /// The message cannot be encoded in AMQP (a property over 255 bytes).
    #[error("message to {queue:?} cannot be encoded: {message}")]
    Unencodable {
        /// The queue.
        queue: String,
        /// What is wrong.
        message: String,
    },
}

impl BrokerError {
    /// Whether the same operation may succeed later: the connection failed,
    /// or the broker did not confirm. A message too large or unencodable
    /// will never be published as it is.
    pub fn is_transient(&self) -> bool {
        !matches!(self, BrokerError::TooLarge { .. } | BrokerError::Unencodable { .. })
    }
}

/// The error of a broker without exchanges.
fn no_exchanges(broker: String, exchange: &str) -> BrokerError {
    BrokerError::Refused {
        op: "use an exchange",
        queue: exchange.to_string(),
        message: format!("{broker} has no exchanges"),
    }
}

/// The dead-letter queue of `inbound`: where the messages of `inbound` that
/// cannot be processed go, by slingshot or by the broker.
pub fn dead_letter_queue(inbound: &str) -> String {
    format!("{inbound}{DEAD_LETTER_SUFFIX}")
}

/// What [`dead_letter_queue`] appends.
const DEAD_LETTER_SUFFIX: &str = ".dead-letter";

/// Whether `queue` is a dead-letter queue (named as [`dead_letter_queue`] names them).
pub(crate) fn is_dead_letter_queue(queue: &str) -> bool {
    queue.ends_with(DEAD_LETTER_SUFFIX)
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
    /// The next delivery; `None` when the consumer was cancelled (by
    /// [`Consumer::cancel`], or because the queue was deleted or the broker
    /// closed it).
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>>;

    /// Asks the broker to send no more. What it sent before still comes out
    /// of [`Consumer::next`], then `None`: a caller that drains the consumer
    /// holds every delivery it was given, and can settle each.
    async fn cancel(&mut self) -> Result<(), BrokerError>;
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

    /// Declares a queue for a caller's replies, named by the broker, that
    /// only this broker connection consumes and that goes away with it (AMQP
    /// `exclusive` and `auto-delete`), and consumes it with at most
    /// `prefetch` unacknowledged deliveries. Returns its name and consumer.
    async fn consume_replies(&self, prefetch: u16) -> Result<(String, Box<dyn Consumer>), BrokerError> {
        let _ = prefetch;
        Err(BrokerError::Refused {
            op: "declare a reply queue",
            queue: String::new(),
            message: format!("{} has no reply queues", self.describe()),
        })
    }

    /// Declares `exchange`, a durable topic exchange (where events go).
    async fn declare_topic(&self, exchange: &str) -> Result<(), BrokerError> {
        Err(no_exchanges(self.describe(), exchange))
    }

    /// Binds `queue` to the topic `exchange` for routing keys matching
    /// `pattern` (`*` one word, `#` any number).
    async fn bind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BrokerError> {
        let _ = (queue, pattern);
        Err(no_exchanges(self.describe(), exchange))
    }

    /// Publishes persistently to the topic `exchange` with `routing_key` and
    /// returns once the broker confirmed it. A key no queue is bound to is
    /// not an error: nobody subscribed.
    async fn publish_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Message,
    ) -> Result<(), BrokerError> {
        let _ = (routing_key, message);
        Err(no_exchanges(self.describe(), exchange))
    }

    /// Takes one message from `queue` without a consumer, if there is one.
    async fn get(&self, queue: &str) -> Result<Option<Delivery>, BrokerError>;

    /// How many messages are ready in `queue` (not counting unacknowledged ones).
    async fn ready_count(&self, queue: &str) -> Result<u64, BrokerError>;

    /// The largest frame, in bytes, that carries a message's properties and
    /// headers to this broker (see [`Message::header_frame_size`]); `None`
    /// when there is no such limit (the in-process broker).
    fn frame_max(&self) -> Option<usize> {
        None
    }

    /// One line naming the broker, for logs (never credentials).
    fn describe(&self) -> String;

    /// What the broker says about itself (product, version, platform), for
    /// logs and `check`: `None` if it says nothing (the in-process broker) or
    /// could not be asked.
    async fn server_info(&self) -> Option<crate::broker::rabbitmq::ServerInfo> {
        None
    }

    /// The `messaging.system` of the spans of messages through this broker.
    fn messaging_system(&self) -> &'static str {
        "rabbitmq"
    }
}
