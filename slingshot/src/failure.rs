//! Failure classification: what kind of failure a request met, and whether an outside system (S3, the database, the broker) failed rather than the request.

use crate::db::DbError;
use crate::error::{error_chain, AnyError};
use crate::storage::ObjectError;

/// Why a request failed; carried in dead-letter headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The body is not a decimal `u64`.
    Malformed,
    /// `process` returned an error.
    Process,
    /// `process` panicked.
    Panic,
    /// Object storage failed.
    Storage,
    /// The database failed.
    Database,
    /// The broker failed.
    Broker,
    /// The process died again and again while handling the message (an
    /// abort, the OOM killer): it was delivered `SLINGSHOT_MAX_CRASHES`
    /// times without being settled.
    CrashLoop,
    /// The message cannot be carried on: its properties and headers, with
    /// what slingshot adds to a retry, would not fit in one AMQP frame.
    Oversized,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Malformed,
        FailureKind::Process,
        FailureKind::Panic,
        FailureKind::Storage,
        FailureKind::Database,
        FailureKind::Broker,
        FailureKind::CrashLoop,
        FailureKind::Oversized,
    ];

    /// The name used in headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Malformed => "malformed",
            FailureKind::Process => "process-error",
            FailureKind::Panic => "panic",
            FailureKind::Storage => "storage",
            FailureKind::Database => "database",
            FailureKind::Broker => "broker",
            FailureKind::CrashLoop => "crash-loop",
            FailureKind::Oversized => "oversized",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure kind's name that is not one of [`FailureKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure kind {0:?}")]
pub struct UnknownKind(pub String);

impl std::str::FromStr for FailureKind {
    type Err = UnknownKind;

    /// The kind `name` names, as [`FailureKind::as_str`] writes it.
    fn from_str(name: &str) -> Result<Self, UnknownKind> {
        FailureKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| UnknownKind(name.to_string()))
    }
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Failure {
    /// What failed.
    pub kind: FailureKind,
    /// The error, with its causes.
    pub message: String,
    /// Whether an outside system failed (S3, the database, the broker) rather
    /// than this request: such failures are retried until the system is back
    /// and do not count towards `SLINGSHOT_MAX_ATTEMPTS`.
    pub transient: bool,
}

impl Failure {
    /// A failure of this request.
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            transient: false,
        }
    }

    /// A failure of an outside system.
    pub(crate) fn outage(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            transient: true,
            ..Failure::new(kind, message)
        }
    }

    /// Classifies an error `process` returned. Storage and database errors it
    /// passed on with `?` (anywhere in the error's chain) keep their kind, and
    /// count as outages when the system failed rather than the request.
    pub(crate) fn from_process(error: AnyError) -> Self {
        let message = error_chain(&*error);
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
        while let Some(e) = cause {
            // Classified already (by a language binding): kept as it is.
            if let Some(failure) = e.downcast_ref::<Failure>() {
                return failure.clone();
            }
            // A reader's I/O error carries the ObjectError of the download
            // that failed (io::Error's `source` skips it).
            let object = e
                .downcast_ref::<ObjectError>()
                .or_else(|| e.downcast_ref::<std::io::Error>().and_then(ObjectError::in_io_error));
            if let Some(object) = object {
                return Failure {
                    transient: object.is_transient(),
                    ..Failure::new(FailureKind::Storage, message)
                };
            }
            if let Some(db) = e.downcast_ref::<DbError>() {
                return Failure {
                    transient: matches!(db, DbError::Connect { .. }),
                    ..Failure::new(FailureKind::Database, message)
                };
            }
            if let Some(query) = e.downcast_ref::<diesel::result::Error>() {
                return Failure {
                    transient: is_lost_connection(query),
                    ..Failure::new(FailureKind::Database, message)
                };
            }
            cause = e.source();
        }
        Failure::new(FailureKind::Process, message)
    }
}

/// Whether a diesel error means the connection, not the query, failed.
fn is_lost_connection(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _) => true,
        Error::BrokenTransactionManager => true,
        // libpq reports a server that went away mid-query this way.
        Error::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            let text = info.message();
            text.contains("server closed the connection")
                || text.contains("terminating connection")
                || text.contains("no connection to the server")
                || text.contains("could not connect")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_from_their_names() {
        for kind in FailureKind::ALL {
            assert_eq!(kind.as_str().parse::<FailureKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!("nope".parse::<FailureKind>(), Err(UnknownKind("nope".into())));
    }

    #[test]
    fn an_object_error_inside_a_readers_io_error_keeps_its_class() {
        let broken = ObjectError::Backend {
            op: "read",
            bucket: "b".into(),
            key: "1".into(),
            message: "the download broke off".into(),
        };
        let failure = Failure::from_process(Box::new(broken.into_io_error()));
        assert_eq!((failure.kind, failure.transient), (FailureKind::Storage, true));
        let refused = ObjectError::Refused {
            op: "upload",
            bucket: "b".into(),
            key: "1".into(),
            message: "AccessDenied: Forbidden (HTTP 403)".into(),
        };
        let failure = Failure::from_process(Box::new(refused));
        assert_eq!((failure.kind, failure.transient), (FailureKind::Storage, false));
        assert!(failure.message.contains("AccessDenied"), "{}", failure.message);
        let plain = Failure::from_process(Box::new(std::io::Error::other("disk on fire")));
        assert_eq!((plain.kind, plain.transient), (FailureKind::Process, false));
    }
}
