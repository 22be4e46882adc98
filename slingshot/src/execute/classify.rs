//! Classifying what `process` returned: a failure of the request, or an outage
//! of S3, the database or the broker, by the type of the error and its causes.

use crate::base::chain::error_chain;
use crate::base::failure::{Failure, FailureKind};
use crate::db::{is_connection_failure, DbError};
use crate::error::AnyError;
use crate::storage::ObjectError;

/// Classifies an error `process` returned. Storage and database errors it
/// passed on with `?` (anywhere in the error's chain) keep their kind, and
/// count as outages when the system failed rather than the request.
pub(crate) fn from_process(error: AnyError) -> Failure {
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
            if object.is_invalid() {
                return Failure::new(FailureKind::InvalidInput, message);
            }
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
            let failure = from_process(e);
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
        let failure = from_process(Box::new(Wrapped(QueryError::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("gone".to_string()),
        ))));
        assert_eq!((failure.kind, failure.transient), (FailureKind::Database, true));
        assert_eq!(failure.message, "recording the request: gone");
    }

    #[test]
    fn an_object_error_inside_a_readers_io_error_keeps_its_class() {
        let broken = ObjectError::Backend {
            op: "read",
            bucket: "b".into(),
            key: "1".into(),
            message: "the download broke off".into(),
        };
        let failure = from_process(Box::new(broken.into_io_error()));
        assert_eq!((failure.kind, failure.transient), (FailureKind::Storage, true));
        let refused = ObjectError::Refused {
            op: "upload",
            bucket: "b".into(),
            key: "1".into(),
            message: "AccessDenied: Forbidden (HTTP 403)".into(),
        };
        let failure = from_process(Box::new(refused));
        assert_eq!((failure.kind, failure.transient), (FailureKind::Storage, false));
        assert!(failure.message.contains("AccessDenied"), "{}", failure.message);
        let plain = from_process(Box::new(std::io::Error::other("disk on fire")));
        assert_eq!((plain.kind, plain.transient), (FailureKind::Process, false));
    }
}
