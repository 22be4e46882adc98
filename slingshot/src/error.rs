//! Error types at the runtime's module boundaries, the `AnyError` alias for user code, and how an error and its causes are written on one line.

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
    DeadLetters(Box<crate::deadletter::Stopped>),
}

impl From<crate::deadletter::Stopped> for Error {
    fn from(stopped: crate::deadletter::Stopped) -> Self {
        Error::DeadLetters(Box::new(stopped))
    }
}

/// `error: cause: cause`, on one line.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}
