//! The AMQP message format slingshot speaks: the body, the headers and the dead-letter queue name. No I/O and no broker calls here.
//!
//! A request is a message whose body is its ID in decimal ASCII. Headers
//! carry its attempt number, how many outages it has waited out, the trace ID
//! that follows it through a pipeline and, once it failed, the failure record.
//! The worker and the dead-letter tools read and write messages only through
//! this module.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Header carrying the attempt number of a retried request.
pub const ATTEMPT_HEADER: &str = "x-slingshot-attempt";
/// Header counting retries caused by outages of S3, the database or the
/// broker; they do not use up attempts, but their backoff grows with it.
pub const OUTAGES_HEADER: &str = "x-slingshot-outages";
/// Header carrying the trace ID of a request through the pipeline.
pub const TRACE_HEADER: &str = "x-slingshot-trace-id";
/// Dead-letter header: the last error.
pub const ERROR_HEADER: &str = "x-slingshot-error";
/// Dead-letter header: the kind of the last error (`malformed`, `panic`, ...).
pub const ERROR_KIND_HEADER: &str = "x-slingshot-error-kind";
/// Dead-letter header: the service that gave up.
pub const SERVICE_HEADER: &str = "x-slingshot-service";
/// Dead-letter header: the queue the message came from.
pub const QUEUE_HEADER: &str = "x-slingshot-queue";
/// Dead-letter header: when it was dead-lettered, Unix seconds.
pub const FAILED_AT_HEADER: &str = "x-slingshot-failed-at";

/// The dead-letter queue of `inbound`.
pub fn dead_letter_queue(inbound: &str) -> String {
    format!("{inbound}.dead-letter")
}

/// Parses a request body: the ID in decimal ASCII. Exactly what the
/// original `slingshot-microservice` accepts: surrounding whitespace is
/// trimmed and a leading `+` is allowed (Rust's `u64` parsing).
pub fn parse_id(body: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(body).map_err(|_| format!("body is not UTF-8 ({} bytes)", body.len()))?;
    let digits = text.trim();
    let unsigned = digits.strip_prefix('+').unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        let shown: String = digits.chars().take(40).collect();
        return Err(format!("body {shown:?} is not a decimal u64"));
    }
    digits
        .parse()
        .map_err(|_| format!("body {digits:?} is out of range for a u64"))
}

/// A new trace ID for `request`: unique per process, time and call.
pub(crate) fn new_trace_id(request: u64) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos() as u64;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:016x}{:08x}{:08x}",
        nanos ^ request.rotate_left(17),
        std::process::id(),
        seq as u32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_strictly() {
        assert_eq!(parse_id(b"42"), Ok(42));
        assert_eq!(parse_id(b" 42\n"), Ok(42));
        assert_eq!(parse_id(b"18446744073709551615"), Ok(u64::MAX));
        // As the original: trimmed, then Rust's parser, which takes a `+`.
        assert_eq!(parse_id(b"\t+7\r\n"), Ok(7));
        assert_eq!(parse_id(b"007"), Ok(7));
        for bad in [
            &b""[..],
            b"+",
            b"++1",
            b"-1",
            b"4 2",
            b"0x10",
            b"1.0",
            b"abc",
            b"18446744073709551616",
            b"\xff\xfe",
        ] {
            assert!(parse_id(bad).is_err(), "{bad:?}");
        }
        assert!(parse_id(b"\xff").unwrap_err().contains("not UTF-8"));
    }
}
