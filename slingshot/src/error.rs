//! Error types at the runtime's module boundaries, and the `AnyError` alias for user code.

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
}
