//! The RabbitMQ broker (lapin): classic or quorum queues, consuming with
//! bounded prefetch, confirmed persistent publishes on a connection of their
//! own, and failover over a cluster's nodes.
//!
//! Two supervised connections (`link`): one consumes and settles
//! deliveries and declares queues, one publishes in confirm mode. A broker
//! that stops answering is given up after [`ANSWER_TIMEOUT`] and the next
//! operation reconnects, to the next node of a cluster; a publishing
//! connection the broker *blocked* (a memory or disk alarm) is waited out
//! instead, while the other keeps acknowledging.

mod consumer;
mod declare;
mod link;
mod server_info;
mod wire;

use std::future::Future;

use async_trait::async_trait;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Confirmation};
use tokio::sync::Mutex;

pub use self::consumer::WATCHDOG_IDLE;
use self::consumer::{RabbitAcker, RabbitConsumer};
use self::declare::{
    arguments, declare_passive, declare_plain, effective, is_not_found, is_precondition_failed, refused, reply_text,
};
use self::link::{Link, Nodes, Role, Session};
pub use self::link::{ANSWER_TIMEOUT, CONNECT_TIMEOUT, HEARTBEAT_SECS};
pub use self::server_info::ServerInfo;
use super::{
    dead_letter_queue, is_dead_letter_queue, Broker, BrokerError, Consumer, Delivery, Durability, Message, QueueState,
    QueueType,
};

/// The AMQP frame size asked for unless the URL sets `frame_max`:
/// RabbitMQ's default and largest (`frame_max` in rabbitmq.conf). A message's
/// properties and headers travel in one frame, so a smaller frame than the
/// broker's would refuse messages other producers may publish. lapin keeps
/// two ring buffers of 32 frames per connection, allocated zeroed and
/// touched as traffic flows through them.
pub const DEFAULT_FRAME_MAX: u32 = 131_072;

/// A RabbitMQ broker reached through two AMQP connections, opened lazily and
/// reopened after they are lost, on the next of its nodes.
pub struct RabbitMq {
    nodes: Nodes,
    display: String,
    name: String,
    queue_type: QueueType,
    /// Consumers, acknowledgements, declarations, gets.
    consuming: Link,
    /// Confirmed publishes.
    publishing: Link,
    /// Channel of `basic_get`: messages taken with it are settled on it.
    getter: Mutex<Option<Channel>>,
}

impl std::fmt::Debug for RabbitMq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMq").field("broker", &self.display).finish()
    }
}

impl RabbitMq {
    /// A broker at `url` (`amqp://user:pass@host:port/vhost`, credentials
    /// percent-encoded); `display` is the same without credentials.
    /// `name` labels the connections in RabbitMQ's management views.
    pub fn new(url: String, display: String, name: &str) -> Self {
        Self::cluster(vec![(url, display)], name)
    }

    /// A broker of several nodes (a cluster), as `(url, display)` pairs: it
    /// connects to the first that answers, and after losing a connection to
    /// the next one. Each URL gets a heartbeat ([`HEARTBEAT_SECS`]) and a
    /// frame size ([`DEFAULT_FRAME_MAX`], see [`RabbitMq::with_frame_max`])
    /// unless it sets them.
    ///
    /// # Panics
    ///
    /// If `nodes` is empty.
    pub fn cluster(nodes: Vec<(String, String)>, name: &str) -> Self {
        assert!(!nodes.is_empty(), "a RabbitMQ broker needs at least one node");
        let nodes = Nodes::new(nodes, DEFAULT_FRAME_MAX);
        RabbitMq {
            display: nodes.display(),
            nodes,
            name: name.to_string(),
            queue_type: QueueType::Classic,
            consuming: Link::new(Role::Consume, name),
            publishing: Link::new(Role::Publish, name),
            getter: Mutex::new(None),
        }
    }

    /// Declares queues of `queue_type` from now on.
    pub fn with_queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// Asks for AMQP frames of `frame_max` bytes (at least 4096) on every
    /// node whose URL does not set its own. Call before connecting.
    pub fn with_frame_max(mut self, frame_max: u32) -> Self {
        self.nodes.frame_max = frame_max;
        self
    }

    /// The type of the queues it declares.
    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }

    /// What the node it is connected to announces about itself (product,
    /// version, platform), read on a short connection of its own.
    pub async fn read_server_info(&self) -> Result<ServerInfo, BrokerError> {
        let node = self.consuming.session(&self.nodes).await?.node;
        let display = &self.nodes.nodes[node].display;
        let uri = self.nodes.uri(node).map_err(BrokerError::Disconnected)?;
        crate::broker::rabbitmq::server_info::read_uri(&uri, CONNECT_TIMEOUT)
            .await
            .map_err(|e| BrokerError::Disconnected(format!("{display}: {e}")))
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

    /// Connects both connections now, so a wrong address or password fails
    /// at start-up.
    pub async fn connect(&self) -> Result<(), BrokerError> {
        self.consuming.session(&self.nodes).await?;
        self.publishing.session(&self.nodes).await.map(drop)
    }

    fn lost(&self, e: lapin::Error) -> BrokerError {
        BrokerError::Disconnected(format!("{}: {e}", self.display))
    }

    /// Runs an operation on the consuming connection; one that gets no
    /// answer within [`ANSWER_TIMEOUT`] gives the connection up (the broker
    /// froze, or the network dropped without a reset) so that the next one
    /// reconnects.
    async fn within<T>(
        &self,
        op: &'static str,
        operation: impl Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        match tokio::time::timeout(ANSWER_TIMEOUT, operation).await {
            Ok(result) => result,
            Err(_) => {
                if let Some(session) = self.consuming.healthy() {
                    session.give_up(op);
                }
                Err(BrokerError::Disconnected(format!(
                    "{}: {op} got no answer within {ANSWER_TIMEOUT:?}",
                    self.display
                )))
            }
        }
    }

    /// A new channel on the consuming connection, and its session.
    async fn channel_of(&self) -> Result<(Channel, std::sync::Arc<Session>), BrokerError> {
        let session = self.consuming.session(&self.nodes).await?;
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

    async fn channel(&self) -> Result<Channel, BrokerError> {
        Ok(self.channel_of().await?.0)
    }

    /// Declares one queue with this broker's queue type; an existing queue
    /// with other properties is used as it is.
    async fn declare_one(&self, queue: &str, durability: Durability) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        let durability = effective(self.queue_type, durability);
        match declare_plain(&channel, queue, durability, arguments(self.queue_type, queue)).await {
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
        let durability = effective(self.queue_type, durability);
        match declare_plain(&channel, queue, durability, arguments(self.queue_type, queue)).await {
            Ok(_) => {
                let _ = channel.close(200, ShortString::from("inspected")).await;
                Ok(QueueState::Matches)
            }
            Err(e) if is_precondition_failed(&e) => Ok(QueueState::Differs(reply_text(&e))),
            Err(e) => Err(refused("inspect", queue, e)),
        }
    }

    /// Waits for `publish` (one publish, sent and confirmed). A broker that
    /// stops answering would leave it pending forever: past
    /// [`ANSWER_TIMEOUT`] the connection is given up, unless the broker
    /// *blocked* it (a memory or disk alarm), which is waited out however
    /// long it lasts: lapin holds the publish back meanwhile.
    async fn unless_frozen<T>(
        &self,
        session: &std::sync::Arc<Session>,
        queue: &str,
        publish: impl Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        tokio::pin!(publish);
        let mut waited_out_alarm = false;
        loop {
            match tokio::time::timeout(ANSWER_TIMEOUT, &mut publish).await {
                Ok(done) => {
                    if waited_out_alarm {
                        tracing::info!(broker = %self.display, queue, "the broker unblocked publishing");
                    }
                    return done;
                }
                Err(_) if session.blocked() && !session.dead.load(std::sync::atomic::Ordering::SeqCst) => {
                    if !waited_out_alarm {
                        tracing::warn!(
                            broker = %self.display,
                            queue,
                            "the broker blocked publishing (a memory or disk alarm); waiting for it to clear"
                        );
                        waited_out_alarm = true;
                    }
                }
                Err(_) => {
                    session.give_up("publish not confirmed within the answer timeout");
                    return Err(BrokerError::NotConfirmed {
                        queue: queue.into(),
                        message: format!("no confirm within {ANSWER_TIMEOUT:?}"),
                    });
                }
            }
        }
    }
}

impl RabbitMq {
    /// Publishes `message` to `exchange` with `routing_key` (named `queue`
    /// in errors) and waits for the broker's confirm. `mandatory`: a message
    /// no queue takes comes back as [`BrokerError::Returned`].
    async fn publish_routed(
        &self,
        exchange: &str,
        queue: &str,
        mandatory: bool,
        mut message: Message,
    ) -> Result<(), BrokerError> {
        let session = self.publishing.session(&self.nodes).await?;
        // RabbitMQ refuses a publish whose user-id is not the publisher's
        // own user, closing the channel: a message another user published is
        // forwarded without it.
        if message
            .properties
            .user_id
            .as_ref()
            .is_some_and(|user| *user != session.connection.status().username())
        {
            message.properties.user_id = None;
        }
        // A frame over the negotiated size makes the broker close the whole
        // connection: refuse it here instead.
        let (size, limit) = (message.header_frame_size(), session.frame_max());
        if limit > 0 && size > limit {
            return Err(BrokerError::TooLarge {
                queue: queue.into(),
                size,
                limit,
            });
        }
        let properties = wire::properties_of(&message).map_err(|e| BrokerError::Unencodable {
            queue: queue.into(),
            message: e.to_string(),
        })?;
        let Some(publisher) = session.publisher.as_ref() else {
            return Err(BrokerError::Disconnected(
                "the publishing connection has no channel".into(),
            ));
        };
        let publishing = publisher.basic_publish(
            ShortString::from(exchange),
            ShortString::from(queue),
            BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            },
            &message.body,
            properties,
        );
        let not_confirmed = |message: String| BrokerError::NotConfirmed {
            queue: queue.into(),
            message,
        };
        let sent_and_confirmed = async {
            let confirm = publishing.await.map_err(|e| self.lost(e))?;
            confirm.await.map_err(|e| not_confirmed(e.to_string()))
        };
        match self.unless_frozen(&session, queue, sent_and_confirmed).await? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(BrokerError::Returned {
                queue: queue.into(),
                message: returned.reply_text.to_string(),
            }),
            Confirmation::Nack(_) => Err(not_confirmed("the broker nacked it".into())),
            Confirmation::NotRequested => Err(not_confirmed("confirms are not enabled on the channel".into())),
        }
    }
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
        let tag = format!("{}-{}", self.name, std::process::id());
        let starting = async {
            // Per-consumer (not global) QoS: quorum queues refuse global QoS,
            // and RabbitMQ 4 deprecates it.
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| self.lost(e))?;
            channel
                .basic_consume(
                    ShortString::from(queue),
                    ShortString::from(tag.as_str()),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| refused("consume", queue, e))
        };
        let consumer = self.within("consume", starting).await?;
        Ok(Box::new(RabbitConsumer {
            queue: queue.to_string(),
            tag,
            consumer,
            prefetch,
            session,
            channel,
            cancelled: false,
        }))
    }

    async fn consume_replies(&self, prefetch: u16) -> Result<(String, Box<dyn Consumer>), BrokerError> {
        let (channel, session) = self.channel_of().await?;
        let prefetch = prefetch.max(1);
        let tag = format!("{}-replies-{}", self.name, std::process::id());
        let starting = async {
            // Exclusive: no RabbitMQ 4 deprecation (transient non-exclusive
            // queues), and the queue goes with the connection.
            let options = QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                durable: false,
                ..QueueDeclareOptions::default()
            };
            let declared = channel
                .queue_declare(ShortString::from(""), options, FieldTable::default())
                .await
                .map_err(|e| refused("declare a reply queue", "", e))?;
            let queue = declared.name().to_string();
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| self.lost(e))?;
            let consumer = channel
                .basic_consume(
                    ShortString::from(queue.as_str()),
                    ShortString::from(tag.as_str()),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| refused("consume", &queue, e))?;
            Ok::<_, BrokerError>((queue, consumer))
        };
        let (queue, consumer) = self.within("consume replies", starting).await?;
        Ok((
            queue.clone(),
            Box::new(RabbitConsumer {
                queue,
                tag,
                consumer,
                prefetch,
                session,
                channel,
                cancelled: false,
            }),
        ))
    }

    async fn publish(&self, queue: &str, message: Message) -> Result<(), BrokerError> {
        // Mandatory: a publish to a queue that does not exist comes back as
        // an error instead of vanishing.
        self.publish_routed("", queue, true, message).await
    }

    async fn declare_topic(&self, exchange: &str) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        let declaring = async {
            channel
                .exchange_declare(
                    ShortString::from(exchange),
                    lapin::ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| refused("declare exchange", exchange, e))
        };
        self.within("declare exchange", declaring).await?;
        let _ = channel.close(200, ShortString::from("declared")).await;
        Ok(())
    }

    async fn bind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        let binding = async {
            channel
                .queue_bind(
                    ShortString::from(queue),
                    ShortString::from(exchange),
                    ShortString::from(pattern),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| refused("bind", queue, e))
        };
        self.within("bind", binding).await?;
        let _ = channel.close(200, ShortString::from("bound")).await;
        Ok(())
    }

    async fn publish_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Message,
    ) -> Result<(), BrokerError> {
        // Not mandatory: an event nobody subscribed to is not an error.
        self.publish_routed(exchange, routing_key, false, message).await
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
                message: wire::message_of(&delivery.properties, delivery.data),
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

    fn frame_max(&self) -> Option<usize> {
        Some(match self.publishing.healthy() {
            Some(session) => session.frame_max(),
            None => self.nodes.frame_max as usize,
        })
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
