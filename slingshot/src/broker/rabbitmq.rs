//! The RabbitMQ broker (lapin): classic or quorum queue declarations (durable or as the original crate makes them), a channel per consumer with bounded prefetch, one confirm-mode channel for pipelined persistent publishes, and supervision of the connection: connect timeout, heartbeats, failover over the nodes of a cluster, and a watchdog that gives up on a broker that stops answering.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::{
    Acker, Broker, BrokerError, Consumer, Delivery, Durability, HeaderValue, Headers, Message, QueueState, QueueType,
    QUORUM_DELIVERY_LIMIT,
};
use crate::protocol::dead_letter_queue;
use crate::server_info::ServerInfo;

/// Persistent delivery mode of AMQP 0-9-1.
const PERSISTENT: u8 = 2;

/// How long opening a connection (TCP, TLS, AMQP handshake) may take before
/// the next node is tried: a frozen node accepts TCP connections and never
/// answers.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The AMQP heartbeat asked for, in seconds: lapin closes a connection that
/// heard nothing from the broker for twice this long.
pub const HEARTBEAT_SECS: u16 = 10;
/// The largest AMQP frame asked for, in bytes, unless the URL sets
/// `frame_max`. lapin keeps two buffers of 32 frames each per connection, so
/// RabbitMQ's default (128 KiB) costs 8 MiB of zeroed memory; requests are
/// short bodies and headers (a failure's error is cut at
/// [`crate::protocol::MAX_ERROR_HEADER`]), so 32 KiB frames take them whole
/// for 2 MiB.
pub const FRAME_MAX: u32 = 32 * 1024;
/// A consumer that received nothing for this long checks that its channel
/// still answers.
pub const WATCHDOG_IDLE: Duration = Duration::from_secs(5);
/// How long the broker may take to answer the watchdog's probe, or to
/// confirm a publish, before the connection is given up and rebuilt.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// The delivery limit of the dead-letter queues slingshot declares as quorum
/// queues: no limit in practice (RabbitMQ 4.0 would otherwise drop a dead
/// letter delivered 20 times to tools that never settle it).
const DEAD_LETTER_DELIVERY_LIMIT: i64 = 1_000_000;

/// A RabbitMQ broker reached through one AMQP connection, opened lazily and
/// reopened after it is lost, on the next of its nodes.
pub struct RabbitMq {
    /// Every node, as (URL with credentials, URL without).
    nodes: Vec<(String, String)>,
    /// The node to try first when connecting.
    next_node: AtomicUsize,
    display: String,
    name: String,
    queue_type: QueueType,
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
    /// The node of `nodes` it is connected to.
    node: usize,
    /// Set when the broker stopped answering on it: the next operation
    /// connects again, to the next node, whatever lapin's status says.
    dead: AtomicBool,
}

impl Session {
    /// Gives up on this session: it is no longer used, and its connection is
    /// closed in the background (a frozen broker never answers the close).
    fn give_up(self: &Arc<Self>, why: &str) {
        if !self.dead.swap(true, Ordering::SeqCst) {
            tracing::warn!(why, "giving up on the AMQP connection; reconnecting");
            let session = self.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let close = session.connection.close(320, ShortString::from("not answering"));
                    let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
                });
            }
        }
    }
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
        Self::cluster(vec![(url, display)], name)
    }

    /// A broker of several nodes (a cluster), as `(url, display)` pairs: it
    /// connects to the first that answers, and after losing a connection to
    /// the next one. Each URL gets a heartbeat unless it sets one.
    ///
    /// # Panics
    ///
    /// If `nodes` is empty.
    pub fn cluster(nodes: Vec<(String, String)>, name: &str) -> Self {
        assert!(!nodes.is_empty(), "a RabbitMQ broker needs at least one node");
        let display = nodes.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>().join(", ");
        let nodes = nodes.into_iter().map(|(url, d)| (with_defaults(&url), d)).collect();
        RabbitMq {
            nodes,
            next_node: AtomicUsize::new(0),
            display,
            name: name.to_string(),
            queue_type: QueueType::Classic,
            session: std::sync::RwLock::new(None),
            connecting: Mutex::new(()),
            getter: Mutex::new(None),
        }
    }

    /// Declares queues of `queue_type` from now on.
    pub fn with_queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// The type of the queues it declares.
    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }

    /// Whether the broker accepts transient (non-durable, non-exclusive)
    /// queues, which SLINGSHOT_QUEUE_MODE=compatible declares: declares a
    /// server-named one (that would expire within a minute) and deletes it.
    /// RabbitMQ 4 refuses them when its configuration sets
    /// `deprecated_features.permit.transient_nonexcl_queues = false`
    /// ([`BrokerError::Deprecated`]), closing the connection (the next
    /// operation reconnects).
    pub async fn probe_transient_queues(&self) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        let probing = async {
            let mut arguments = FieldTable::default();
            arguments.insert(ShortString::from("x-expires"), AMQPValue::LongInt(60_000));
            let queue = declare_plain(&channel, "", Durability::Transient, arguments)
                .await
                .map_err(|e| refused("declare", "(a transient probe queue)", e))?;
            channel
                .queue_delete(queue.name().clone(), QueueDeleteOptions::default())
                .await
                .map_err(|e| refused("delete", queue.name().as_str(), e))?;
            let _ = channel.close(200, ShortString::from("probed")).await;
            Ok(())
        };
        self.within("probe", probing).await
    }

    /// What the node it is connected to announces about itself (product,
    /// version, platform), read on a short connection of its own.
    pub async fn read_server_info(&self) -> Result<ServerInfo, BrokerError> {
        let node = self.session().await?.node;
        let (url, display) = &self.nodes[node];
        crate::server_info::read(url, CONNECT_TIMEOUT)
            .await
            .map_err(|e| BrokerError::Disconnected(format!("{display}: {e}")))
    }

    /// Connects now, so a wrong address or password fails at start-up.
    pub async fn connect(&self) -> Result<(), BrokerError> {
        self.session().await.map(drop)
    }

    /// The current session if it is healthy. Never waits.
    fn healthy(&self) -> Option<Arc<Session>> {
        let slot = self.session.read().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|s| {
                !s.dead.load(Ordering::SeqCst) && s.connection.status().connected() && s.publisher.status().connected()
            })
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
        // After losing a node, start with the one after it.
        let lost = self.session.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(lost) = lost {
            self.next_node
                .store((lost.node + 1) % self.nodes.len(), Ordering::SeqCst);
        }
        let first = self.next_node.load(Ordering::SeqCst);
        let mut failures = Vec::new();
        for node in (0..self.nodes.len()).map(|i| (first + i) % self.nodes.len()) {
            match self.open(node).await {
                Ok(session) => {
                    let session = Arc::new(session);
                    self.next_node.store(node, Ordering::SeqCst);
                    *self.session.write().unwrap_or_else(|p| p.into_inner()) = Some(session.clone());
                    tracing::info!(broker = %self.nodes[node].1, "connected");
                    return Ok(session);
                }
                Err(e) => {
                    tracing::warn!(broker = %self.nodes[node].1, error = %e, "cannot connect");
                    failures.push(e);
                }
            }
        }
        Err(BrokerError::Disconnected(format!(
            "cannot connect to any node: {}",
            failures.join("; ")
        )))
    }

    /// Opens a connection and the publishing channel to `node`, within
    /// [`CONNECT_TIMEOUT`].
    async fn open(&self, node: usize) -> Result<Session, String> {
        let (url, display) = &self.nodes[node];
        let properties = ConnectionProperties::default().with_connection_name(LongString::from(self.name.clone()));
        let opening = async {
            let connection = Connection::connect(url, properties).await?;
            let publisher = connection.create_channel().await?;
            publisher.confirm_select(ConfirmSelectOptions::default()).await?;
            Ok::<_, lapin::Error>(Session {
                connection,
                publisher,
                node,
                dead: AtomicBool::new(false),
            })
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(e)) => Err(format!("{display}: {e}")),
            Err(_) => Err(format!("{display}: no answer within {CONNECT_TIMEOUT:?}")),
        }
    }

    /// The arguments `queue` is declared with: none for a classic queue (as
    /// the original crate declares it); for a quorum queue, its type, a
    /// delivery limit and, unless it is a dead-letter queue itself,
    /// at-least-once dead-lettering to its dead-letter queue.
    fn arguments(&self, queue: &str) -> FieldTable {
        let mut table = FieldTable::default();
        if self.queue_type == QueueType::Classic {
            return table;
        }
        let mut set = |name: &str, value: AMQPValue| {
            table.insert(ShortString::from(name), value);
        };
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        set("x-queue-type", text("quorum"));
        if is_dead_letter_queue(queue) {
            set("x-delivery-limit", AMQPValue::LongLongInt(DEAD_LETTER_DELIVERY_LIMIT));
        } else {
            set("x-delivery-limit", AMQPValue::LongLongInt(QUORUM_DELIVERY_LIMIT));
            set("x-dead-letter-exchange", text(""));
            set("x-dead-letter-routing-key", text(&dead_letter_queue(queue)));
            // at-least-once dead-lettering only applies with reject-publish
            // overflow; with the default (drop-head) it is at-most-once.
            set("x-dead-letter-strategy", text("at-least-once"));
            set("x-overflow", text("reject-publish"));
        }
        table
    }

    fn lost(&self, e: lapin::Error) -> BrokerError {
        BrokerError::Disconnected(format!("{}: {e}", self.display))
    }

    /// Declares one queue with this broker's queue type; an existing queue
    /// with other properties is used as it is.
    async fn declare_one(&self, queue: &str, durability: Durability) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        let durability = self.durability(durability);
        match declare_plain(&channel, queue, durability, self.arguments(queue)).await {
            Ok(_) => {
                let _ = channel.close(200, ShortString::from("declared")).await;
                Ok(())
            }
            // The queue exists with another durability or other arguments
            // (another queue type, TTL, DLX...): the broker closed that
            // channel; check that the queue exists and use it as it is.
            Err(e) if is_precondition_failed(&e) => {
                let check = self.channel().await?;
                declare_passive(&check, queue)
                    .await
                    .map_err(|e| refused("declare", queue, e))?;
                let _ = check.close(200, ShortString::from("declared")).await;
                tracing::warn!(
                    queue,
                    declared = %durability,
                    queue_type = %self.queue_type,
                    broker = %reply_text(&e),
                    "queue exists with other properties; using it as it is (`check` explains)"
                );
                Ok(())
            }
            Err(e) => Err(refused("declare", queue, e)),
        }
    }

    async fn inspect_one(&self, queue: &str, durability: Durability) -> Result<QueueState, BrokerError> {
        // Passive first, so that inspecting never creates a queue.
        let channel = self.channel().await?;
        match declare_passive(&channel, queue).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(QueueState::Missing),
            Err(e) => return Err(refused("inspect", queue, e)),
        }
        // Declaring an existing queue with equivalent properties changes
        // nothing; with other ones the broker refuses and says why.
        match declare_plain(&channel, queue, self.durability(durability), self.arguments(queue)).await {
            Ok(_) => {
                let _ = channel.close(200, ShortString::from("inspected")).await;
                Ok(QueueState::Matches)
            }
            Err(e) if is_precondition_failed(&e) => Ok(QueueState::Differs(reply_text(&e))),
            Err(e) => Err(refused("inspect", queue, e)),
        }
    }

    /// Quorum queues are always durable.
    fn durability(&self, durability: Durability) -> Durability {
        match self.queue_type {
            QueueType::Quorum => Durability::Durable,
            QueueType::Classic => durability,
        }
    }

    /// Runs a broker operation; one that gets no answer within
    /// [`ANSWER_TIMEOUT`] gives up the connection (the broker froze, or the
    /// network dropped without a reset) so that the next one reconnects.
    async fn within<T>(
        &self,
        op: &'static str,
        operation: impl std::future::Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        match tokio::time::timeout(ANSWER_TIMEOUT, operation).await {
            Ok(result) => result,
            Err(_) => {
                if let Some(session) = self.healthy() {
                    session.give_up(op);
                }
                Err(BrokerError::Disconnected(format!(
                    "{}: {op} got no answer within {ANSWER_TIMEOUT:?}",
                    self.display
                )))
            }
        }
    }

    async fn channel(&self) -> Result<Channel, BrokerError> {
        Ok(self.channel_of().await?.0)
    }

    /// A new channel and the session it belongs to.
    async fn channel_of(&self) -> Result<(Channel, Arc<Session>), BrokerError> {
        let session = self.session().await?;
        match tokio::time::timeout(ANSWER_TIMEOUT, session.connection.create_channel()).await {
            Ok(Ok(channel)) => Ok((channel, session)),
            Ok(Err(e)) => Err(self.lost(e)),
            Err(_) => {
                session.give_up("no channel within the answer timeout");
                Err(BrokerError::Disconnected(format!(
                    "{}: no channel within {ANSWER_TIMEOUT:?}",
                    self.display
                )))
            }
        }
    }
}

/// `url` with `heartbeat=HEARTBEAT_SECS` and `frame_max=FRAME_MAX` unless it
/// sets them.
fn with_defaults(url: &str) -> String {
    let mut url = url.to_string();
    for (name, value) in [("heartbeat", u32::from(HEARTBEAT_SECS)), ("frame_max", FRAME_MAX)] {
        if !url.contains(&format!("{name}=")) {
            let separator = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{separator}{name}={value}");
        }
    }
    url
}

/// Whether `queue` is a dead-letter queue (named as [`dead_letter_queue`] names them).
fn is_dead_letter_queue(queue: &str) -> bool {
    queue.ends_with(&dead_letter_queue(""))
}

/// Declares `queue` with `durability`, `arguments` and AMQP's defaults for
/// the rest (not exclusive, not auto-delete): with `Transient` and no
/// arguments, exactly what the original `slingshot-microservice` sends.
async fn declare_plain(
    channel: &Channel,
    queue: &str,
    durability: Durability,
    arguments: FieldTable,
) -> lapin::Result<lapin::Queue> {
    let options = QueueDeclareOptions {
        durable: durability == Durability::Durable,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(ShortString::from(queue), options, arguments)
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
    let message = e.to_string();
    if let Some(feature) = deprecated_feature(&message) {
        let advice = match feature {
            "transient_nonexcl_queues" => {
                "; slingshot declares transient queues only in SLINGSHOT_QUEUE_MODE=compatible, as the original \
                 slingshot-microservice does: set SLINGSHOT_QUEUE_MODE=durable (once no original service declares \
                 these queues), or permit the feature on the broker \
                 (deprecated_features.permit.transient_nonexcl_queues = true in rabbitmq.conf)"
            }
            _ => "",
        };
        return BrokerError::Deprecated {
            op,
            queue: queue.into(),
            feature: feature.to_string(),
            advice: advice.to_string(),
        };
    }
    BrokerError::Refused {
        op,
        queue: queue.into(),
        message,
    }
}

/// The feature a RabbitMQ 4 refusal names when its configuration does not
/// permit a deprecated feature (a connection error: "Feature
/// `transient_nonexcl_queues` is deprecated. Its use is not permitted per
/// the configuration ...").
fn deprecated_feature(broker_says: &str) -> Option<&str> {
    let (_, rest) = broker_says.split_once("Feature `")?;
    let (feature, rest) = rest.split_once('`')?;
    rest.trim_start().starts_with("is deprecated").then_some(feature)
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
        // A quorum queue dead-letters to its dead-letter queue: that one first.
        if self.queue_type == QueueType::Quorum && !is_dead_letter_queue(queue) {
            let dead = dead_letter_queue(queue);
            self.within("declare", self.declare_one(&dead, Durability::Durable))
                .await?;
        }
        self.within("declare", self.declare_one(queue, durability)).await
    }

    async fn inspect(&self, queue: &str, durability: Durability) -> Result<QueueState, BrokerError> {
        self.within("inspect", self.inspect_one(queue, durability)).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BrokerError> {
        let (channel, session) = self.channel_of().await?;
        let prefetch = prefetch.max(1);
        let starting = async {
            // Per-consumer (not global) QoS: quorum queues refuse global QoS.
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| self.lost(e))?;
            channel
                .basic_consume(
                    ShortString::from(queue),
                    ShortString::from(format!("{}-{}", self.name, std::process::id())),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| refused("consume", queue, e))
        };
        let consumer = self.within("consume", starting).await?;
        Ok(Box::new(RabbitConsumer {
            queue: queue.to_string(),
            consumer,
            prefetch,
            session,
            channel,
        }))
    }

    async fn publish(&self, queue: &str, message: Message) -> Result<(), BrokerError> {
        let session = self.session().await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_headers(to_field_table(&message.headers));
        let not_confirmed = |message: String| BrokerError::NotConfirmed {
            queue: queue.into(),
            message,
        };
        let publishing = session.publisher.basic_publish(
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
        );
        // A broker that stops answering would leave the confirm pending
        // forever: give up the connection instead, and let the caller retry.
        let confirmed = tokio::time::timeout(ANSWER_TIMEOUT, async {
            let confirm = publishing.await.map_err(|e| self.lost(e))?;
            confirm.await.map_err(|e| not_confirmed(e.to_string()))
        })
        .await;
        let confirmation = match confirmed {
            Ok(confirmation) => confirmation?,
            Err(_) => {
                session.give_up("publish not confirmed within the answer timeout");
                return Err(not_confirmed(format!("no confirm within {ANSWER_TIMEOUT:?}")));
            }
        };
        match confirmation {
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
        let getting = async {
            channel
                .basic_get(ShortString::from(queue), BasicGetOptions::default())
                .await
                .map_err(|e| refused("get", queue, e))
        };
        let got = self.within("get", getting).await?;
        Ok(got.map(|message| {
            let delivery = message.delivery;
            Delivery {
                message: Message {
                    headers: from_field_table(delivery.properties.headers().as_ref()),
                    body: delivery.data,
                },
                redelivered: delivery.redelivered,
                acker: Box::new(RabbitAcker {
                    acker: delivery.acker,
                    channel: channel.clone(),
                    session: None,
                }),
            }
        }))
    }

    async fn ready_count(&self, queue: &str) -> Result<u64, BrokerError> {
        let channel = self.channel().await?;
        let counting = async {
            declare_passive(&channel, queue)
                .await
                .map_err(|e| refused("count", queue, e))
        };
        let declared = self.within("count", counting).await?;
        let _ = channel.close(200, ShortString::from("counted")).await;
        Ok(u64::from(declared.message_count()))
    }

    fn describe(&self) -> String {
        format!("RabbitMQ {}", self.display)
    }

    async fn server_info(&self) -> Option<ServerInfo> {
        match self.read_server_info().await {
            Ok(info) => Some(info),
            Err(e) => {
                tracing::warn!(broker = %self.display, error = %e, "cannot read the broker's version");
                None
            }
        }
    }
}

struct RabbitConsumer {
    queue: String,
    consumer: lapin::Consumer,
    prefetch: u16,
    /// The connection it consumes on, given up if the watchdog's probe gets no answer.
    session: Arc<Session>,
    /// Keeps the consumer's channel open; dropping it closes the channel and
    /// the broker requeues every unacknowledged delivery.
    channel: Channel,
}

impl RabbitConsumer {
    /// The watchdog's probe: after [`WATCHDOG_IDLE`] without a delivery, asks
    /// the broker something on the consumer's own channel (setting the same
    /// prefetch again changes nothing). `Err` when the channel is closed or
    /// the broker does not answer within [`ANSWER_TIMEOUT`]: lapin may not
    /// notice a frozen broker before its heartbeat runs out, and would
    /// otherwise wait for deliveries that never come.
    async fn probe(&self) -> Result<(), BrokerError> {
        let lost = |why: String| BrokerError::Disconnected(format!("consumer of {:?}: {why}", self.queue));
        if self.session.dead.load(Ordering::SeqCst) || !self.channel.status().connected() {
            return Err(lost("the connection was lost".into()));
        }
        match tokio::time::timeout(
            ANSWER_TIMEOUT,
            self.channel.basic_qos(self.prefetch, BasicQosOptions::default()),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(lost(e.to_string())),
            Err(_) => {
                self.session.give_up("the consumer's watchdog got no answer");
                Err(lost(format!("the broker did not answer within {ANSWER_TIMEOUT:?}")))
            }
        }
    }
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            let next = tokio::select! {
                next = self.consumer.next() => next,
                _ = tokio::time::sleep(WATCHDOG_IDLE) => match self.probe().await {
                    Ok(()) => continue,
                    Err(e) => return Some(Err(e)),
                },
            };
            return match next? {
                Ok(delivery) => Some(Ok(Delivery {
                    message: Message {
                        headers: from_field_table(delivery.properties.headers().as_ref()),
                        body: delivery.data,
                    },
                    redelivered: delivery.redelivered,
                    acker: Box::new(RabbitAcker {
                        acker: delivery.acker,
                        channel: self.channel.clone(),
                        session: Some(self.session.clone()),
                    }),
                })),
                Err(e) => Some(Err(BrokerError::Disconnected(format!(
                    "consumer of {:?}: {e}",
                    self.queue
                )))),
            };
        }
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        let channel = self.channel.clone();
        // Closing returns unacked deliveries to the queue now rather than when
        // the connection ends. Best effort: if there is no runtime, the
        // connection's end does the same; a broker that does not answer
        // does not keep the task forever.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let close = channel.close(200, ShortString::from("consumer dropped"));
                let _ = tokio::time::timeout(ANSWER_TIMEOUT, close).await;
            });
        }
    }
}

struct RabbitAcker {
    acker: lapin::Acker,
    /// The channel the delivery came on: it can be settled only there.
    channel: Channel,
    /// The connection of that channel, if it may be given up while open.
    session: Option<Arc<Session>>,
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

    fn is_live(&self) -> bool {
        self.channel.status().connected() && !self.session.as_ref().is_some_and(|s| s.dead.load(Ordering::SeqCst))
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

    #[test]
    fn refusals_of_deprecated_features_name_the_feature_and_what_to_do() {
        // What RabbitMQ 4.0.5 answers a transient queue's declaration when
        // its configuration does not permit them (cut at 255 bytes).
        let said = "protocol error: AMQP hard error: INTERNAL-ERROR: INTERNAL_ERROR - Feature `transient_nonexcl_queues` \
                    is deprecated.\nIts use is not permitted per the configuration (overriding the default, which is \
                    permitted):\n    \"deprecated_features.permit.transient_nonexcl_queues = false\"\nIts use will not be permit...";
        let error = refused("declare", "q", said).to_string();
        assert!(!error.contains('\n'), "one line: {error}");
        for part in [
            "declare \"q\" refused",
            "`transient_nonexcl_queues`",
            "SLINGSHOT_QUEUE_MODE=durable",
            "deprecated_features.permit.transient_nonexcl_queues = true",
        ] {
            assert!(error.contains(part), "{part:?} missing: {error}");
        }
        assert!(matches!(
            refused("declare", "q", "NOT_FOUND - no queue 'q'"),
            BrokerError::Refused { .. }
        ));
        assert_eq!(deprecated_feature("Feature `x` is not deprecated"), None);
    }

    #[test]
    fn urls_get_a_heartbeat_and_a_frame_size_unless_they_set_them() {
        assert_eq!(
            with_defaults("amqp://h:5672/%2f"),
            format!("amqp://h:5672/%2f?heartbeat={HEARTBEAT_SECS}&frame_max={FRAME_MAX}")
        );
        assert_eq!(
            with_defaults("amqp://h/v?frame_max=131072"),
            format!("amqp://h/v?frame_max=131072&heartbeat={HEARTBEAT_SECS}")
        );
        assert_eq!(
            with_defaults("amqp://h?heartbeat=0&frame_max=8192"),
            "amqp://h?heartbeat=0&frame_max=8192"
        );
    }
}
