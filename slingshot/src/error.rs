//! The errors of starting and running services, and the `AnyError` alias for user code.

use crate::broker::BrokerError;

/// The error type user code returns from `process`: anything that is
/// `Error + Send + Sync` converts into it with `?`, and so does `anyhow::Error`.
pub type AnyError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a service could not start or keep running.
///
/// Every variant carries a message written for the person operating the
/// service: what went wrong and, where it can, what to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sys-map could not be read or said something we cannot use.
    #[error("sys-map: {0}")]
    SysMap(#[from] crate::sysmap::SysMapError),
    /// The message broker failed.
    #[error("broker: {0}")]
    Broker(#[from] crate::broker::BrokerError),
    /// The object store failed.
    #[error("object storage: {0}")]
    Objects(#[from] crate::storage::ObjectError),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] crate::db::DbError),
    /// Configuration that is present but wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// A task of the runtime panicked: `what` names it (a service, a
    /// connection pool's set-up, a secret lookup).
    #[error("{what} crashed: {message}")]
    Crashed {
        /// What was running.
        what: String,
        /// The panic or cancellation, as tokio reports it.
        message: String,
    },
    /// A service ended without being asked to stop.
    #[error("service {0} stopped without being asked to")]
    Stopped(String),
    /// Listing or replaying dead letters stopped partway; every dead letter
    /// is either replayed or still in the dead-letter queue.
    #[error("dead letters: {0}")]
    DeadLetters(Box<DeadLettersStopped>),
}

impl From<DeadLettersStopped> for Error {
    fn from(stopped: DeadLettersStopped) -> Self {
        Error::DeadLetters(Box::new(stopped))
    }
}

/// A walk over a dead-letter queue that the broker stopped partway.
#[derive(Debug, thiserror::Error)]
#[error(
    "{action} of {queue} stopped after {replayed} replayed and {kept} kept, {not_reached} not reached \
     (all still dead-lettered{doubt}): {cause}",
    doubt = if *.in_doubt { "; the last one may also have been replayed or copied, and may show twice" } else { "" }
)]
pub struct DeadLettersStopped {
    /// `list` or `replay`.
    pub action: &'static str,
    /// The dead-letter queue.
    pub queue: String,
    /// Dead letters replayed to the inbound queue (and removed).
    pub replayed: usize,
    /// Dead letters passed over, still in the dead-letter queue.
    pub kept: usize,
    /// Dead letters the walk did not reach (the one in hand among them),
    /// still in the dead-letter queue.
    pub not_reached: usize,
    /// Whether the failure was the acknowledgement of a message whose
    /// replay or copy the broker had confirmed: that message is in both
    /// places.
    pub in_doubt: bool,
    /// What the broker said.
    pub cause: BrokerError,
}
