//! What S3's answers mean: an outage (retried, nothing lost) or a refusal (a failure of the request), and one line for each.

use std::io;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::storage::ObjectError;

/// Whether an error answer of the service is an outage: a server error,
/// throttling, a request that timed out on the server's side. Anything else
/// it answered (403, 404, 400, ...) it will answer again.
pub(super) fn answer_is_transient(status: u16, code: Option<&str>) -> bool {
    let transient_code = matches!(
        code,
        Some(
            "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "TooManyRequests"
                | "RequestTimeout"
                | "InternalError"
                | "ServiceUnavailable"
                | "OperationAborted"
        )
    );
    transient_code || status >= 500 || status == 429 || status == 408
}

/// An SDK error as an [`ObjectError`], classified by what it is: the
/// service unreachable, too slow, failing or throttling is an outage
/// ([`ObjectError::Backend`]); a refusal it will repeat (access denied, a bad
/// signature or key, a missing bucket, any other 4xx) or a request that
/// cannot be built is [`ObjectError::Refused`].
pub(super) fn classify<E>(op: &'static str, bucket: &str, key: &str, e: SdkError<E>) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let transient = match &e {
        SdkError::ServiceError(service) => answer_is_transient(service.raw().status().as_u16(), service.err().code()),
        SdkError::ConstructionFailure(_) => false,
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        // Timeouts, unreadable answers, and whatever else the SDK may add.
        _ => true,
    };
    let (bucket, key, message) = (bucket.to_string(), key.to_string(), sdk_message(&e));
    if transient {
        ObjectError::Backend {
            op,
            bucket,
            key,
            message,
        }
    } else {
        ObjectError::Refused {
            op,
            bucket,
            key,
            message,
        }
    }
}

/// One line for an SDK error: the service's code, message and HTTP status,
/// or why the service could not be reached.
pub(super) fn sdk_message<E>(e: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let status = service.raw().status().as_u16();
            match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
                (Some(code), None) => format!("{code} (HTTP {status})"),
                _ => format!("HTTP {status}"),
            }
        }
        SdkError::TimeoutError(_) => "the request timed out".into(),
        SdkError::DispatchFailure(failure) => match failure.as_connector_error() {
            Some(connector) => format!(
                "cannot reach the service: {}",
                crate::base::chain::error_chain(connector)
            ),
            None => format!("cannot reach the service: {}", DisplayErrorContext(e)),
        },
        other => DisplayErrorContext(other).to_string(),
    }
}

pub(super) fn io_err(op: &'static str, bucket: &str, key: &str, source: io::Error) -> ObjectError {
    ObjectError::Io {
        op,
        bucket: bucket.into(),
        key: key.into(),
        source,
    }
}

/// A download that failed midway: an outage.
pub(super) fn broken_download(bucket: &str, key: &str, message: String) -> ObjectError {
    ObjectError::Backend {
        op: "read",
        bucket: bucket.into(),
        key: key.into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_outages_or_refusals_by_what_they_are() {
        for (status, code) in [
            (500, Some("InternalError")),
            (503, Some("SlowDown")),
            (503, None),
            (429, None),
            (400, Some("RequestTimeout")),
            (409, Some("OperationAborted")),
        ] {
            assert!(answer_is_transient(status, code), "{status} {code:?} is an outage");
        }
        for (status, code) in [
            (403, Some("AccessDenied")),
            (403, Some("InvalidAccessKeyId")),
            (403, Some("SignatureDoesNotMatch")),
            (404, Some("NoSuchBucket")),
            (400, Some("InvalidArgument")),
            (400, None),
            (301, Some("PermanentRedirect")),
        ] {
            assert!(!answer_is_transient(status, code), "{status} {code:?} is a refusal");
        }
    }
}
