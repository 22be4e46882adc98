//! The sys-map protocol: the `SysMapSource` seam (where the JSON comes from)
//! and the typed, cached client every service uses.
//!
//! A source answers a path (`thumbnailer`, `thumbnailer/in`, `rabbitmq`,
//! `db`, `object-storage`) with the body the HTTP sys-map would send. The
//! parsing and validation here is shared, so a local file and the HTTP
//! service are held to exactly the same protocol.

pub mod file;
pub mod http;
pub mod secrets;
pub mod server;

mod client;
mod documents;
mod wiring;

use std::path::PathBuf;

use async_trait::async_trait;

pub use self::client::SysMap;
pub use self::documents::check_queue_name;
pub use self::wiring::{
    DbEndpoint, Encryption, ObjectStorageEndpoint, RabbitMqEndpoint, Route, ServiceWiring, Subscription,
};

/// Why the sys-map could not be used. Messages name the endpoint, what it
/// answered, and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SysMapError {
    /// The source could not be reached or read, or failed to answer (a
    /// timeout, an HTTP 5xx, 408 or 429): an outage, which may end.
    #[error("{source_name}: cannot read {path:?}: {message}")]
    Unavailable {
        /// Which sys-map.
        source_name: String,
        /// The endpoint path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The source has no such endpoint (HTTP 404, or no entry in the file).
    #[error("{source_name}: no endpoint {path:?}{hint}")]
    Missing {
        /// Which sys-map.
        source_name: String,
        /// The endpoint path.
        path: String,
        /// A hint, e.g. the endpoints that do exist.
        hint: String,
    },
    /// The endpoint answered something the protocol does not allow.
    #[error("{source_name}: endpoint {path:?} answered {got}, expected {expected}")]
    Invalid {
        /// Which sys-map.
        source_name: String,
        /// The endpoint path.
        path: String,
        /// What it answered (shortened; never a secret).
        got: String,
        /// What the protocol expects.
        expected: String,
    },
    /// The source answered, but refused the request (an HTTP 4xx other than
    /// 404, 408 and 429): asking again will not help.
    #[error("{source_name}: reading {path:?} was refused: {message}")]
    Refused {
        /// Which sys-map.
        source_name: String,
        /// The endpoint path.
        path: String,
        /// What it answered.
        message: String,
    },
    /// A secret reference could not be resolved.
    #[error("{0}")]
    Secret(#[from] secrets::SecretError),
}

impl SysMapError {
    /// Whether the sys-map could not be reached or failed, rather than
    /// answering: a request that needs it is retried as an outage. A missing
    /// endpoint (404), a refusal or an answer the protocol does not allow is
    /// an answer, and asking again gives the same one.
    pub fn is_outage(&self) -> bool {
        matches!(self, SysMapError::Unavailable { .. })
    }
}

/// The seam to wherever the sys-map lives.
#[async_trait]
pub trait SysMapSource: Send + Sync + 'static {
    /// The body the endpoint `path` (no leading slash) answers.
    async fn get(&self, path: &str) -> Result<String, SysMapError>;

    /// Which backends services configured by this source use.
    fn backends(&self) -> Backends;

    /// One line naming the source, for logs and messages.
    fn describe(&self) -> String;
}

/// Which implementation of each seam a service runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends {
    /// The message broker.
    pub broker: BrokerBackend,
    /// The object store.
    pub objects: ObjectsBackend,
    /// The database behind `&mut AnyConnection` (a `PgConnection` always
    /// means PostgreSQL, a `SqliteConnection` always SQLite).
    pub database: DatabaseBackend,
}

/// The message broker to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerBackend {
    /// The in-process broker: every service of the process shares it.
    Memory,
    /// RabbitMQ, as described by the `rabbitmq` endpoint.
    RabbitMq,
}

/// The object store to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectsBackend {
    /// A local directory, one sub-directory per bucket.
    Dir(PathBuf),
    /// S3, as described by the `object-storage` endpoint.
    S3,
}

/// The database to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseBackend {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// PostgreSQL, as described by the `db` endpoint.
    Postgres,
}

#[cfg(test)]
mod properties;
