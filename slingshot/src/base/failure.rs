//! What a failed request met: its kind, its message, and whether an outside system failed rather than the request.

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
    /// A typed input object (`Json<T>`, `read_json`, a Python model) does
    /// not parse or does not validate; the message names the object and the
    /// path of the offending field. Dead-lettered at once: the same bytes
    /// fail the same way on every attempt.
    InvalidInput,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 9] = [
        FailureKind::Malformed,
        FailureKind::Process,
        FailureKind::Panic,
        FailureKind::Storage,
        FailureKind::Database,
        FailureKind::Broker,
        FailureKind::CrashLoop,
        FailureKind::Oversized,
        FailureKind::InvalidInput,
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
            FailureKind::InvalidInput => "invalid-input",
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
}
