//! Failure classification: what kind of failure a request met, and whether an outside system (S3, the database, the broker) failed rather than the request.

use crate::db::{is_connection_failure, DbError};
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
}

impl FailureKind {
    /// The name used in headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Malformed => "malformed",
            FailureKind::Process => "process-error",
            FailureKind::Panic => "panic",
            FailureKind::Storage => "storage",
            FailureKind::Database => "database",
            FailureKind::Broker => "broker",
        }
    }
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
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
            if let Some(object) = e.downcast_ref::<ObjectError>() {
                return Failure {
                    transient: object.is_transient(),
                    ..Failure::new(FailureKind::Storage, message)
                };
            }
            if let Some(db) = e.downcast_ref::<DbError>() {
                return Failure {
                    transient: db.is_outage(),
                    ..Failure::new(FailureKind::Database, message)
                };
            }
            if let Some(query) = e.downcast_ref::<diesel::result::Error>() {
                return Failure {
                    transient: is_connection_failure(query),
                    ..Failure::new(FailureKind::Database, message)
                };
            }
            // A connection `process` opened itself.
            if let Some(connect) = e.downcast_ref::<diesel::ConnectionError>() {
                return Failure {
                    transient: matches!(connect, diesel::ConnectionError::BadConnection(_)),
                    ..Failure::new(FailureKind::Database, message)
                };
            }
            cause = e.source();
        }
        Failure::new(FailureKind::Process, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error as QueryError};

    fn query_error(kind: DatabaseErrorKind, message: &str) -> AnyError {
        Box::new(QueryError::DatabaseError(kind, Box::new(message.to_string())))
    }

    #[test]
    fn database_failures_are_classified_by_type_not_text() {
        let outage = |e: AnyError| {
            let failure = Failure::from_process(e);
            assert_eq!(failure.kind, FailureKind::Database, "{failure}");
            failure.transient
        };
        assert!(outage(query_error(
            DatabaseErrorKind::ClosedConnection,
            "server closed the connection"
        )));
        assert!(outage(query_error(
            DatabaseErrorKind::UnableToSendCommand,
            "no connection to the server"
        )));
        assert!(outage(Box::new(QueryError::BrokenTransactionManager)));
        // A query's error is the request's, whatever its message says.
        for text in [
            "could not connect to the ledger",
            "terminating connection",
            "syntax error",
        ] {
            assert!(!outage(query_error(DatabaseErrorKind::Unknown, text)), "{text}");
        }
        assert!(!outage(query_error(
            DatabaseErrorKind::UniqueViolation,
            "duplicate key"
        )));
        assert!(!outage(query_error(
            DatabaseErrorKind::SerializationFailure,
            "could not serialize"
        )));
        let unreachable = DbError::Connect {
            target: "postgres://db".into(),
            message: "timed out".into(),
        };
        assert!(outage(Box::new(unreachable)));
        assert!(!outage(Box::new(DbError::Mismatch("needs PostgreSQL".into()))));
        assert!(outage(Box::new(diesel::ConnectionError::BadConnection(
            "refused".into()
        ))));
        assert!(!outage(Box::new(diesel::ConnectionError::InvalidConnectionUrl(
            "x".into()
        ))));
    }

    #[test]
    fn a_database_error_passed_on_keeps_its_kind() {
        #[derive(Debug, thiserror::Error)]
        #[error("recording the request")]
        struct Wrapped(#[source] QueryError);
        let failure = Failure::from_process(Box::new(Wrapped(QueryError::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("gone".to_string()),
        ))));
        assert_eq!((failure.kind, failure.transient), (FailureKind::Database, true));
        assert_eq!(failure.message, "recording the request: gone");
    }
}
