//! The AMQP message format slingshot speaks, and the rule that retries or dead-letters a failed request. No I/O here.
//!
//! A request is a message whose body is its ID in decimal ASCII. Headers
//! carry its attempt number, how many outages it has waited out, how many
//! times it took the process down, its W3C trace context (`traceparent`,
//! `tracestate`, as OpenTelemetry's messaging conventions and FastStream put
//! them in AMQP headers), the legacy trace ID and, once it failed, the
//! failure record.
//!
//! - `inbound`: a delivery decoded once into a [`Request`];
//! - `outbound`: retries, dead letters, returns and replays, fitted to a
//!   frame;
//! - `trace`: the trace context;
//! - `reply`: answers to callers, and when a caller's request expires;
//! - `event`: events out of a stage, over a topic exchange;
//! - [`decide`]: retry or dead-letter.

mod event;
mod inbound;
mod outbound;
#[cfg(test)]
mod properties;
mod reply;
mod trace;

use std::time::Duration;

pub use self::event::{event_key, event_message, EVENT_DATA_HEADER, EVENT_HEADER, EVENT_SERVICE_HEADER};
pub use self::inbound::{output_message_id, parse_id, Counts, Ignored, Malformed, Request, MAX_BODY};
pub use self::outbound::{fit, replay, retry, returned, FailureRecord, RecordedKind, Room, TooLarge, MAX_ERROR_HEADER};
pub use self::reply::{
    carry_follow, expired, follow_of, reply_addresses, unix_ms, FailureReport, ObjectWritten, Outcome, ReplyTo,
    RouteTaken, Status, Unrouted, DEADLINE_HEADER, FOLLOW_HEADER, FOLLOW_ID_HEADER, MAX_FOLLOW, REPLY_TYPE,
};
pub use self::trace::{
    legacy_trace_id, TraceParent, MAX_LEGACY_TRACE_ID, MAX_TRACESTATE, TRACEPARENT_HEADER, TRACESTATE_HEADER,
    TRACE_HEADER,
};
use crate::base::failure::{Failure, FailureKind};
pub use crate::broker::dead_letter_queue;
use crate::settings::Settings;

/// Header choosing a once-mode service's serialization key: deliveries with
/// the same key never run `process` at the same time (default: the request
/// ID). A text value.
pub const KEY_HEADER: &str = "x-slingshot-key";
/// Header carrying the attempt number of a retried request.
pub const ATTEMPT_HEADER: &str = "x-slingshot-attempt";
/// Header counting retries caused by outages of S3, the database or the
/// broker; they do not use up attempts, but their backoff grows with it.
pub const OUTAGES_HEADER: &str = "x-slingshot-outages";
/// Header counting the deliveries of a message that ended with the process
/// dying while `process` ran (an abort, the OOM killer). Past
/// `SLINGSHOT_MAX_CRASHES` the message is dead-lettered as `crash-loop`.
pub const CRASHES_HEADER: &str = "x-slingshot-crashes";
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
/// Dead-letter header: the producer's headers dropped so that the dead letter
/// fits one frame, as `name (bytes), ...`.
pub const DROPPED_HEADER: &str = "x-slingshot-dropped-headers";
/// Dead-letter header: the message's `expiration`, which a dead letter does
/// not keep (it would expire in the dead-letter queue); a replay restores it.
pub const ORIGINAL_EXPIRATION_HEADER: &str = "x-slingshot-original-expiration";

/// Header RabbitMQ sets on a delivery from a quorum queue that it delivered
/// before (returned by a lost connection, a nack or a reject): how many
/// times. Read, never forwarded: a retry or dead letter is a new message.
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// Every header a slingshot service reads or writes (the broker's
/// [`DELIVERY_COUNT_HEADER`] aside); AsyncAPI documents describe each.
pub const HEADERS: &[&str] = &[
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    TRACE_HEADER,
    ATTEMPT_HEADER,
    OUTAGES_HEADER,
    CRASHES_HEADER,
    ERROR_HEADER,
    ERROR_KIND_HEADER,
    SERVICE_HEADER,
    QUEUE_HEADER,
    FAILED_AT_HEADER,
    DROPPED_HEADER,
    ORIGINAL_EXPIRATION_HEADER,
    FOLLOW_HEADER,
    FOLLOW_ID_HEADER,
    DEADLINE_HEADER,
    EVENT_HEADER,
    EVENT_SERVICE_HEADER,
    EVENT_DATA_HEADER,
];

/// What to do with a request that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it back to its inbound queue after `delay`, with counts `next`.
    Retry {
        /// The backoff to wait first.
        delay: Duration,
        /// The counts of the retry.
        next: Counts,
    },
    /// Give up and dead-letter it.
    DeadLetter {
        /// Attempts made, for the failure record.
        attempts: u32,
    },
}

/// The retry rule: what to do with a request carrying `counts` after
/// `failure`.
///
/// - A malformed, crash-looping or oversized message, or one whose typed
///   input object is invalid, is dead-lettered at once.
/// - An outage (`failure.transient`: S3, the database or the broker failed,
///   not the request) is retried until the system is back: the attempt stays,
///   the outage count grows and so does the backoff, `backoff(outages)`.
/// - Any other failure uses up an attempt: on attempt `max_attempts` or
///   later it is dead-lettered, otherwise retried as the next attempt after
///   `backoff(attempt)`.
pub fn decide(failure: &Failure, counts: &Counts, settings: &Settings) -> Decision {
    let attempt = counts.attempt;
    if matches!(
        failure.kind,
        FailureKind::Malformed | FailureKind::CrashLoop | FailureKind::Oversized | FailureKind::InvalidInput
    ) {
        return Decision::DeadLetter { attempts: attempt };
    }
    if failure.transient {
        let outages = counts.outages.saturating_add(1);
        return Decision::Retry {
            delay: settings.backoff(outages),
            next: Counts { outages, ..*counts },
        };
    }
    if attempt >= settings.max_attempts {
        return Decision::DeadLetter { attempts: attempt };
    }
    Decision::Retry {
        delay: settings.backoff(attempt),
        next: Counts {
            attempt: attempt + 1,
            ..*counts
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected decision in the table below.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Want {
        /// Retry after this many milliseconds, as (attempt, outages).
        Retry(u64, u32, u32),
        /// Dead-letter, recording this many attempts.
        Dead(u32),
    }

    #[test]
    fn decisions() {
        use FailureKind::*;
        use Want::*;
        // Backoff: 100, 200, 400, 800 ms, then capped at 1 s.
        let settings = |max_attempts| Settings {
            max_attempts,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            ..Settings::default()
        };
        #[rustfmt::skip]
        let table = [
            // kind,   outage, attempt, outages, max, want
            // Failures of the request use up attempts; backoff by attempt.
            (Process,  false, 1, 0, 3, Retry(100, 2, 0)),
            (Process,  false, 2, 0, 3, Retry(200, 3, 0)),
            (Process,  false, 3, 0, 3, Dead(3)),
            (Process,  false, 7, 0, 3, Dead(7)),
            (Process,  false, 4, 0, 9, Retry(800, 5, 0)),
            (Process,  false, 6, 0, 9, Retry(1000, 7, 0)),
            (Panic,    false, 1, 0, 3, Retry(100, 2, 0)),
            (Panic,    false, 1, 0, 1, Dead(1)),
            // Past outages neither count as attempts nor lengthen their backoff.
            (Process,  false, 2, 5, 3, Retry(200, 3, 5)),
            (Panic,    false, 3, 5, 3, Dead(3)),
            // Storage and database failures of the request itself use attempts too.
            (Storage,  false, 1, 0, 3, Retry(100, 2, 0)),
            (Database, false, 3, 1, 3, Dead(3)),
            // Outages keep the attempt, even at the limit; backoff by outages.
            (Storage,  true,  1, 0, 3, Retry(100, 1, 1)),
            (Database, true,  1, 1, 3, Retry(200, 1, 2)),
            (Broker,   true,  3, 2, 3, Retry(400, 3, 3)),
            (Broker,   true,  9, 0, 3, Retry(100, 9, 1)),
            (Storage,  true,  2, 40, 3, Retry(1000, 2, 41)),
            (Database, true,  1, u32::MAX, 3, Retry(1000, 1, u32::MAX)),
            // Malformed, crash-looping and oversized messages are dead-lettered at once.
            (Malformed, false, 1, 0, 5, Dead(1)),
            (Malformed, false, 2, 3, 5, Dead(2)),
            (CrashLoop, false, 1, 0, 5, Dead(1)),
            (Oversized, false, 2, 0, 5, Dead(2)),
            (Oversized, true,  1, 0, 5, Dead(1)),
        ];
        for (kind, outage, attempt, outages, max_attempts, want) in table {
            let failure = Failure {
                kind,
                message: "e".into(),
                transient: outage,
            };
            let counts = Counts {
                attempt,
                outages,
                crashes: 2,
            };
            let got = match decide(&failure, &counts, &settings(max_attempts)) {
                Decision::Retry { delay, next } => {
                    assert_eq!(next.crashes, 2, "the crash count stays");
                    Retry(delay.as_millis() as u64, next.attempt, next.outages)
                }
                Decision::DeadLetter { attempts } => Dead(attempts),
            };
            assert_eq!(
                got, want,
                "{kind:?} outage={outage} attempt={attempt} outages={outages} max={max_attempts}"
            );
        }
    }

    #[test]
    fn dead_letter_queue_names() {
        assert_eq!(dead_letter_queue("in"), "in.dead-letter");
    }

    #[test]
    fn every_header_is_named_once() {
        let mut names = HEADERS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), HEADERS.len());
        assert!(!HEADERS.contains(&DELIVERY_COUNT_HEADER));
    }
}
