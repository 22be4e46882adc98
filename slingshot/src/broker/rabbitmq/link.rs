//! One supervised AMQP connection: opened lazily on the first node that
//! answers, given up when the broker stops answering, reopened on the next
//! node.
//!
//! The broker keeps two: one consumes and settles deliveries, one publishes.
//! RabbitMQ's memory and disk alarms block connections that publish; on a
//! connection of its own, publishing can wait out an alarm while deliveries
//! are still acknowledged.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::types::{LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use crate::broker::BrokerError;

/// How long opening a connection (TCP, TLS, AMQP handshake) may take before
/// the next node is tried: a frozen node accepts TCP connections and never
/// answers.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the broker may take to answer an operation (a declaration, the
/// watchdog's probe, a confirm while the connection is not blocked) before
/// the connection is given up and rebuilt.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// The AMQP heartbeat asked for, in seconds, unless a URL sets one: lapin
/// closes a connection that heard nothing from the broker for twice this long.
pub const HEARTBEAT_SECS: u16 = 10;

/// A broker node: where to connect, and how to name it in messages.
pub(crate) struct Node {
    /// The URL parsed, credentials included; `Err` if it does not parse.
    pub(crate) uri: Result<AMQPUri, String>,
    /// The URL without credentials.
    pub(crate) display: String,
}

/// The nodes of one broker and which to try first.
pub(crate) struct Nodes {
    pub(crate) nodes: Vec<Node>,
    next: AtomicUsize,
    /// The frame size asked for unless a URL sets `frame_max`.
    pub(crate) frame_max: u32,
}

impl Nodes {
    /// `nodes` as (URL, display) pairs, asking for `frame_max` unless a URL
    /// sets it.
    pub(crate) fn new(nodes: Vec<(String, String)>, frame_max: u32) -> Nodes {
        let nodes = nodes
            .into_iter()
            .map(|(url, display)| Node {
                uri: url.parse::<AMQPUri>(),
                display,
            })
            .collect();
        Nodes {
            nodes,
            next: AtomicUsize::new(0),
            frame_max,
        }
    }

    /// The URI to connect to `node` with: a heartbeat of [`HEARTBEAT_SECS`]
    /// and frames of `frame_max` unless its URL sets them.
    pub(crate) fn uri(&self, node: usize) -> Result<AMQPUri, String> {
        let Node { uri, display } = &self.nodes[node];
        let mut uri = uri
            .as_ref()
            .map_err(|e| format!("{display}: not an AMQP URL: {e}"))?
            .clone();
        uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
        uri.query.frame_max.get_or_insert(self.frame_max);
        Ok(uri)
    }

    /// Every node's display form, comma-separated.
    pub(crate) fn display(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.display.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A live connection of a link.
pub(crate) struct Session {
    pub(crate) connection: Connection,
    /// The publishing link's confirm-mode channel, shared by every publish.
    pub(crate) publisher: Option<Channel>,
    /// The node it is connected to.
    pub(crate) node: usize,
    /// Set when the broker stopped answering on it: the next operation
    /// connects again, to the next node, whatever lapin's status says.
    pub(crate) dead: AtomicBool,
}

impl Session {
    /// Gives up on this session: it is no longer used, and its connection is
    /// closed in the background (a frozen broker never answers the close).
    pub(crate) fn give_up(self: &Arc<Self>, why: &str) {
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

    /// Whether it can still be used.
    pub(crate) fn healthy(&self) -> bool {
        !self.dead.load(Ordering::SeqCst)
            && self.connection.status().connected()
            && self.publisher.as_ref().is_none_or(|p| p.status().connected())
    }

    /// Whether the broker has blocked this connection (a memory or disk alarm).
    pub(crate) fn blocked(&self) -> bool {
        self.connection.status().blocked()
    }

    /// The frame size the connection negotiated, in bytes.
    pub(crate) fn frame_max(&self) -> usize {
        self.connection.configuration().frame_max() as usize
    }
}

/// What a link is for: it names the connection in RabbitMQ's views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Consumers, acknowledgements, declarations, gets.
    Consume,
    /// Confirmed publishes.
    Publish,
}

/// One connection, reopened after it is lost.
pub(crate) struct Link {
    role: Role,
    /// The connection name RabbitMQ shows.
    name: String,
    /// The live session, read on every operation without waiting.
    session: std::sync::RwLock<Option<Arc<Session>>>,
    /// Held while (re)connecting, so only one task reconnects.
    connecting: Mutex<()>,
}

impl Link {
    pub(crate) fn new(role: Role, name: &str) -> Link {
        let suffix = match role {
            Role::Consume => "consume",
            Role::Publish => "publish",
        };
        Link {
            role,
            name: format!("{name} ({suffix})"),
            session: std::sync::RwLock::new(None),
            connecting: Mutex::new(()),
        }
    }

    /// The current session if it is healthy. Never waits.
    pub(crate) fn healthy(&self) -> Option<Arc<Session>> {
        let slot = self.session.read().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().filter(|s| s.healthy()).cloned()
    }

    /// The live session, connecting (to the node after the one lost) if
    /// there is none.
    pub(crate) async fn session(&self, nodes: &Nodes) -> Result<Arc<Session>, BrokerError> {
        if let Some(session) = self.healthy() {
            return Ok(session);
        }
        let _connecting = self.connecting.lock().await;
        // Another task may have reconnected while this one waited.
        if let Some(session) = self.healthy() {
            return Ok(session);
        }
        let lost = self.session.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(lost) = lost {
            tracing::warn!(broker = %nodes.display(), connection = %self.name, "AMQP connection lost; reconnecting");
            nodes.next.store((lost.node + 1) % nodes.nodes.len(), Ordering::SeqCst);
        }
        let first = nodes.next.load(Ordering::SeqCst);
        let mut failures = Vec::new();
        for node in (0..nodes.nodes.len()).map(|i| (first + i) % nodes.nodes.len()) {
            match self.open(nodes, node).await {
                Ok(session) => {
                    let session = Arc::new(session);
                    nodes.next.store(node, Ordering::SeqCst);
                    *self.session.write().unwrap_or_else(|p| p.into_inner()) = Some(session.clone());
                    tracing::info!(
                        broker = %nodes.nodes[node].display,
                        connection = %self.name,
                        frame_max = session.frame_max(),
                        "connected"
                    );
                    return Ok(session);
                }
                Err(e) => {
                    tracing::warn!(broker = %nodes.nodes[node].display, error = %e, "cannot connect");
                    failures.push(e);
                }
            }
        }
        Err(BrokerError::Disconnected(format!(
            "cannot connect to any node: {}",
            failures.join("; ")
        )))
    }

    /// Opens a connection to `node` (and, for publishing, its confirm-mode
    /// channel) within [`CONNECT_TIMEOUT`].
    async fn open(&self, nodes: &Nodes, node: usize) -> Result<Session, String> {
        let uri = nodes.uri(node)?;
        let display = &nodes.nodes[node].display;
        let properties = ConnectionProperties::default().with_connection_name(LongString::from(self.name.as_str()));
        let opening = async {
            let connection = Connection::connect_uri(uri, properties).await?;
            let publisher = match self.role {
                Role::Publish => {
                    let channel = connection.create_channel().await?;
                    channel.confirm_select(ConfirmSelectOptions::default()).await?;
                    Some(channel)
                }
                Role::Consume => None,
            };
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_a_heartbeat_and_a_frame_size_unless_they_set_them() {
        let nodes = Nodes::new(
            vec![
                ("amqp://u:p@h:5672/%2f".into(), "a".into()),
                ("amqp://h/v?frame_max=8192".into(), "b".into()),
                ("amqp://h?heartbeat=0&frame_max=4096".into(), "c".into()),
                ("http://not-amqp".into(), "d".into()),
            ],
            131_072,
        );
        let query = |i: usize| {
            let uri = nodes.uri(i).unwrap();
            (uri.query.heartbeat, uri.query.frame_max)
        };
        assert_eq!(query(0), (Some(HEARTBEAT_SECS), Some(131_072)));
        assert_eq!(nodes.uri(0).unwrap().authority.userinfo.password, "p");
        assert_eq!(query(1), (Some(HEARTBEAT_SECS), Some(8192)));
        assert_eq!(query(2), (Some(0), Some(4096)));
        let err = nodes.uri(3).unwrap_err();
        assert!(err.starts_with("d: not an AMQP URL"), "{err}");
        assert_eq!(nodes.display(), "a, b, c, d");
    }
}
