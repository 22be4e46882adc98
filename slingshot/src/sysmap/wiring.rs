//! What the sys-map's endpoints say, typed: a service's wiring (inbound queue
//! and routes by case) and the broker, database and object-storage endpoints.

use crate::base::case::CaseValue;

/// One `out` entry: the queues a case routes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The case variable, as written in the sys-map.
    pub case: CaseValue,
    /// Every queue an output with this case is sent to.
    pub queues: Vec<String>,
}

/// A service's wiring: the `{name}` endpoint.
///
/// Parsing accepts every document the original `slingshot-microservice`
/// accepts and routes it the same way; where that means tolerating something
/// that is probably a mistake, [`ServiceWiring::warnings`] says what.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceWiring {
    /// The queue the service consumes.
    pub inbound: String,
    /// Where outputs go, by case: each case once.
    pub routes: Vec<Route>,
    /// What the document holds that was tolerated rather than used as
    /// written: a case listed twice (the last entry wins, as in the
    /// original), a case no case variable can equal. Logged at start-up and
    /// shown by `check`.
    pub warnings: Vec<String>,
    /// The topic exchange the service's events are published to (optional
    /// field `events`); `None`: it emits none.
    pub events: Option<String>,
    /// The events its inbound queue is bound to (optional field
    /// `subscribe`).
    pub subscriptions: Vec<Subscription>,
    /// The bucket references whose objects are encrypted (optional field
    /// `encrypt`), by reference.
    pub encrypt: Vec<Encryption>,
}

/// One `encrypt` entry: the keys of the objects behind a bucket reference.
/// Original services ignore the field and read such buckets as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    /// The bucket reference (`in`, `out`, ...).
    pub reference: String,
    /// Every key objects may be encrypted under, as (key ID, secret
    /// reference of the key), sorted by key ID.
    pub keys: Vec<(String, String)>,
    /// The key ID new objects are written under.
    pub write: String,
    /// Whether plain (unencrypted) objects are read as they are
    /// (`"plain": "read"`, for migrating a bucket) instead of failing.
    pub read_plain: bool,
}

/// One `subscribe` entry: routing-key patterns of a topic exchange the
/// service's inbound queue is bound to. Keys are `<service>.<event>`;
/// `*` stands for one word, `#` for any number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The topic exchange.
    pub exchange: String,
    /// The patterns, e.g. `tokenize.progress` or `*.invalid-input`.
    pub events: Vec<String>,
}

/// The `rabbitmq` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RabbitMqEndpoint {
    /// Broker host (the first node's).
    pub host: String,
    /// AMQP port (the first node's).
    pub port: u16,
    /// Every node of the broker, in order, as (host, port): the nodes of a
    /// cluster when `host` lists several, each with the port at the same
    /// place in `port`, or with the one port given.
    pub nodes: Vec<(String, u16)>,
    /// User name.
    pub username: String,
    /// Secret reference of the password.
    pub pass: String,
}

/// The `db` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbEndpoint {
    /// Database host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub username: String,
    /// Database name.
    pub database: String,
    /// Secret reference of the password.
    pub pass: String,
}

/// The `object-storage` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStorageEndpoint {
    /// Host, or URL with scheme and port.
    pub host: String,
    /// Secret reference of the access key ID.
    pub access_key: String,
    /// Secret reference of the secret key.
    pub secret_key: String,
}
