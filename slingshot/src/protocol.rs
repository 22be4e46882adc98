//! The AMQP message format slingshot speaks: the body, the headers and the dead-letter queue name. No I/O and no broker calls here.
//!
//! A request is a message whose body is its ID in decimal ASCII. Headers
//! carry its attempt number, how many outages it has waited out, its W3C
//! trace context (`traceparent`, `tracestate`, as OpenTelemetry's messaging
//! conventions and FastStream put them in AMQP headers), the legacy trace ID
//! and, once it failed, the failure record.
//! The worker and the dead-letter tools read and write messages only through
//! this module, and [`decide`] is the rule that chooses between retrying a
//! failed request and dead-lettering it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::broker::{HeaderValue, Message};
use crate::failure::{Failure, FailureKind};
use crate::settings::Settings;

/// Header carrying the attempt number of a retried request.
pub const ATTEMPT_HEADER: &str = "x-slingshot-attempt";
/// Header counting retries caused by outages of S3, the database or the
/// broker; they do not use up attempts, but their backoff grows with it.
pub const OUTAGES_HEADER: &str = "x-slingshot-outages";
/// Legacy header carrying the trace ID of a request through the pipeline.
/// Still read (messages already in queues keep their trace) and still
/// written, unchanged from the inbound message when it had one, for older
/// services and tools that follow it.
pub const TRACE_HEADER: &str = "x-slingshot-trace-id";
/// W3C Trace Context header: version, trace ID, parent span ID and flags.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// W3C Trace Context header: vendor-specific trace state, carried unchanged.
pub const TRACESTATE_HEADER: &str = "tracestate";
/// Dead-letter header: the last error.
pub const ERROR_HEADER: &str = "x-slingshot-error";
/// The longest error text [`ERROR_HEADER`] carries, in bytes; a longer one
/// is cut (the log has it whole). A message's headers must fit in one AMQP
/// frame, so an error of any length must not make its retry or dead letter
/// unpublishable.
pub const MAX_ERROR_HEADER: usize = 4096;
/// Dead-letter header: the kind of the last error (`malformed`, `panic`, ...).
pub const ERROR_KIND_HEADER: &str = "x-slingshot-error-kind";
/// Dead-letter header: the service that gave up.
pub const SERVICE_HEADER: &str = "x-slingshot-service";
/// Dead-letter header: the queue the message came from.
pub const QUEUE_HEADER: &str = "x-slingshot-queue";
/// Dead-letter header: when it was dead-lettered, Unix seconds.
pub const FAILED_AT_HEADER: &str = "x-slingshot-failed-at";

/// Header RabbitMQ sets on a delivery from a quorum queue that it delivered
/// before (returned by a lost connection or a `basic.reject`): how many
/// times. Read, never forwarded: a retry or dead letter is a new message.
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

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

/// A request as it travels between services: its ID and what the headers
/// say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The request ID, from the body.
    pub id: u64,
    /// The attempt, from 1. Failures of the request itself raise it.
    pub attempt: u32,
    /// Retries caused by outages so far. They do not use up attempts; the
    /// backoff grows with them.
    pub outages: u32,
    /// The trace ID following the request through the pipeline.
    pub trace_id: String,
}

/// A delivery whose body is not a request ID. It is dead-lettered at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Malformed {
    /// What is wrong with the body: the error recorded with the dead letter.
    pub reason: String,
    /// The attempt the delivery was on, for its failure record.
    pub attempt: u32,
}

impl Envelope {
    /// Reads a delivered message. Missing or unreadable counts mean a first
    /// attempt without outages. The trace ID is the legacy header's, else the
    /// `traceparent`'s; a message with neither gets a new one.
    pub fn decode(message: &Message) -> Result<Envelope, Malformed> {
        let attempt = attempt(message);
        let id = parse_id(&message.body).map_err(|reason| Malformed { reason, attempt })?;
        let trace_id = trace_id(message)
            .map(str::to_string)
            .or_else(|| TraceParent::read(message).map(|t| t.trace_id_hex()))
            .unwrap_or_else(|| new_trace_id(id));
        Ok(Envelope {
            id,
            attempt,
            outages: header_count(message, OUTAGES_HEADER),
            trace_id,
        })
    }

    /// The retry of `original` as this envelope describes it: the same body
    /// and headers, with this attempt and outage count and the failure that
    /// caused the retry. The counts travel in the message, so they survive
    /// restarts.
    pub fn encode_retry(&self, original: &Message, failure: &Failure) -> Message {
        with_headers(
            original,
            [
                (ATTEMPT_HEADER, HeaderValue::Int(i64::from(self.attempt))),
                (OUTAGES_HEADER, HeaderValue::Int(i64::from(self.outages))),
                (ERROR_HEADER, HeaderValue::Str(error_header(&failure.message))),
                (ERROR_KIND_HEADER, HeaderValue::Str(failure.kind.as_str().into())),
            ],
        )
    }

    /// The message of output `id` of this request: a new request on its
    /// first attempt, carrying this request's trace ID and `context`, the
    /// trace context of the span that publishes it.
    pub fn encode_output(&self, id: u64, context: &TraceParent) -> Message {
        let mut message = Message::id(id);
        context.stamp(&mut message, &self.trace_id);
        message
    }
}

/// What to do with a request that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send it back to its inbound queue after `delay`, as `next` describes it.
    Retry {
        /// The backoff to wait first.
        delay: Duration,
        /// The envelope of the retry, its counts updated.
        next: Envelope,
    },
    /// Give up and dead-letter it.
    DeadLetter {
        /// Attempts made, for the failure record.
        attempts: u32,
    },
}

/// The retry rule: what to do with the request in `envelope` after `failure`.
///
/// - A malformed request is dead-lettered at once.
/// - An outage (`failure.transient`: S3, the database or the broker failed,
///   not the request) is retried until the system is back: the attempt stays,
///   the outage count grows and so does the backoff, `backoff(outages)`.
/// - Any other failure uses up an attempt: on attempt `max_attempts` or
///   later it is dead-lettered, otherwise retried as the next attempt after
///   `backoff(attempt)`.
pub fn decide(failure: &Failure, envelope: &Envelope, settings: &Settings) -> Decision {
    let attempt = envelope.attempt;
    if failure.kind == FailureKind::Malformed {
        return Decision::DeadLetter { attempts: attempt };
    }
    if failure.transient {
        let outages = envelope.outages.saturating_add(1);
        return Decision::Retry {
            delay: settings.backoff(outages),
            next: Envelope {
                outages,
                ..envelope.clone()
            },
        };
    }
    if attempt >= settings.max_attempts {
        return Decision::DeadLetter { attempts: attempt };
    }
    Decision::Retry {
        delay: settings.backoff(attempt),
        next: Envelope {
            attempt: attempt + 1,
            ..envelope.clone()
        },
    }
}

/// Why a message was dead-lettered, as its headers record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    /// The last error.
    pub error: String,
    /// Its kind: `malformed`, `process-error`, `panic`, `storage`,
    /// `database` or `broker`.
    pub kind: String,
    /// Attempts made.
    pub attempts: i64,
    /// The service that gave up.
    pub service: String,
    /// The queue the message came from.
    pub queue: String,
    /// When, in Unix seconds.
    pub failed_at: i64,
}

impl FailureRecord {
    /// The record of `failure`: `service`, consuming `queue`, gave up after
    /// `attempts` at `failed_at`.
    pub fn new(failure: &Failure, attempts: u32, service: &str, queue: &str, failed_at: SystemTime) -> Self {
        let seconds = failed_at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        FailureRecord {
            error: failure.message.clone(),
            kind: failure.kind.as_str().into(),
            attempts: i64::from(attempts),
            service: service.into(),
            queue: queue.into(),
            failed_at: i64::try_from(seconds).unwrap_or(i64::MAX),
        }
    }

    /// The dead letter of `original`: the same body and headers, with this
    /// record.
    pub fn encode(&self, original: &Message) -> Message {
        with_headers(
            original,
            [
                (ERROR_HEADER, HeaderValue::Str(error_header(&self.error))),
                (ERROR_KIND_HEADER, HeaderValue::Str(self.kind.clone())),
                (ATTEMPT_HEADER, HeaderValue::Int(self.attempts)),
                (SERVICE_HEADER, HeaderValue::Str(self.service.clone())),
                (QUEUE_HEADER, HeaderValue::Str(self.queue.clone())),
                (FAILED_AT_HEADER, HeaderValue::Int(self.failed_at)),
            ],
        )
    }

    /// The record a dead letter carries. What is missing or of the wrong
    /// type reads as empty text or 0.
    pub fn decode(message: &Message) -> Self {
        let text = |name: &str| {
            message
                .headers
                .get(name)
                .and_then(HeaderValue::as_str)
                .unwrap_or("")
                .to_string()
        };
        let int = |name: &str| message.headers.get(name).and_then(HeaderValue::as_int).unwrap_or(0);
        FailureRecord {
            error: text(ERROR_HEADER),
            kind: text(ERROR_KIND_HEADER),
            attempts: int(ATTEMPT_HEADER),
            service: text(SERVICE_HEADER),
            queue: text(QUEUE_HEADER),
            failed_at: int(FAILED_AT_HEADER),
        }
    }
}

/// The message that replays dead letter `dead`: its body, trace ID and any
/// other headers kept, its counts and failure record dropped, so it starts
/// over at attempt 1 without outages.
pub fn replay_message(dead: &Message) -> Message {
    let mut message = dead.clone();
    for name in [
        ATTEMPT_HEADER,
        OUTAGES_HEADER,
        ERROR_HEADER,
        ERROR_KIND_HEADER,
        SERVICE_HEADER,
        QUEUE_HEADER,
        FAILED_AT_HEADER,
    ] {
        message.headers.remove(name);
    }
    message
}

/// The attempt `message` is on: 1 unless a retry raised it.
pub fn attempt(message: &Message) -> u32 {
    header_count(message, ATTEMPT_HEADER).max(1)
}

/// How many times the broker delivered `message` before, by the
/// `x-delivery-count` quorum queues set (0 when absent).
pub fn delivery_count(message: &Message) -> u32 {
    header_count(message, DELIVERY_COUNT_HEADER)
}

/// The legacy trace ID `message` carries ([`TRACE_HEADER`]), if it
/// carries one as text.
pub fn trace_id(message: &Message) -> Option<&str> {
    message.headers.get(TRACE_HEADER).and_then(HeaderValue::as_str)
}

/// A W3C trace context as it travels in message headers: the trace, the span
/// that sent the message, whether the trace is sampled and the vendors'
/// `tracestate`.
///
/// ```
/// use slingshot::protocol::TraceParent;
/// let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let context = TraceParent::parse(header, Some("vendor=1")).unwrap();
/// assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(context.header_value(), header);
/// assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None).is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace ID; never 0.
    pub trace_id: u128,
    /// The span that sent the message (the parent of the span that
    /// receives it); never 0.
    pub span_id: u64,
    /// The trace flags; bit 0 is "sampled".
    pub flags: u8,
    /// The `tracestate` header, unchanged, if there was one.
    pub state: Option<String>,
}

impl TraceParent {
    /// Parses a `traceparent` header (and its `tracestate`) as W3C Trace
    /// Context level 1 says: `None` when malformed, on version `ff`, or with
    /// an all-zero trace or span ID. Versions above 00 may append fields.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceParent> {
        let text = traceparent.trim();
        let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut fields = text.splitn(5, '-');
        let (version, trace, span, flags) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
        let rest = fields.next();
        if version.len() != 2 || !lower_hex(version) || version == "ff" || (version == "00" && rest.is_some()) {
            return None;
        }
        if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        if !(lower_hex(trace) && lower_hex(span) && lower_hex(flags)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        let state = tracestate.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
            state,
        })
    }

    /// The trace context `message` carries: its `traceparent` (with its
    /// `tracestate`), else a context made from a legacy trace ID that is a
    /// W3C trace ID (32 hex digits, as slingshot generated them), whose parent
    /// span ID is derived from it. `None` when neither is usable.
    pub fn read(message: &Message) -> Option<TraceParent> {
        let text = |name: &str| message.headers.get(name).and_then(HeaderValue::as_str);
        if let Some(parsed) = text(TRACEPARENT_HEADER).and_then(|t| TraceParent::parse(t, text(TRACESTATE_HEADER))) {
            return Some(parsed);
        }
        let legacy = trace_id(message)?.trim();
        if legacy.len() != 32 || !legacy.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let trace_id = u128::from_str_radix(legacy, 16).ok().filter(|t| *t != 0)?;
        let folded = (trace_id as u64) ^ ((trace_id >> 64) as u64);
        Some(TraceParent {
            trace_id,
            span_id: folded.max(1),
            flags: 1,
            state: None,
        })
    }

    /// Whether the sender sampled the trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace ID as 32 lowercase hex digits, as logs show it.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span ID as 16 lowercase hex digits, as logs show it.
    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// The `traceparent` header value (version 00).
    pub fn header_value(&self) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
    }

    /// Puts this context on `message`: `traceparent`, `tracestate` (removed
    /// when there is none) and the legacy trace ID `legacy`.
    pub fn stamp(&self, message: &mut Message, legacy: &str) {
        let headers = &mut message.headers;
        headers.insert(TRACEPARENT_HEADER.into(), HeaderValue::Str(self.header_value()));
        match &self.state {
            Some(state) => headers.insert(TRACESTATE_HEADER.into(), HeaderValue::Str(state.clone())),
            None => headers.remove(TRACESTATE_HEADER),
        };
        headers.insert(TRACE_HEADER.into(), HeaderValue::Str(legacy.to_string()));
    }
}

/// `error` as [`ERROR_HEADER`] carries it: whole up to [`MAX_ERROR_HEADER`]
/// bytes, else cut at a character boundary and marked.
fn error_header(error: &str) -> String {
    if error.len() <= MAX_ERROR_HEADER {
        return error.to_string();
    }
    let marker = format!(" [... cut: {} bytes in all]", error.len());
    let mut end = MAX_ERROR_HEADER - marker.len();
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &error[..end])
}

/// `original` with `headers` set (replacing any of the same name): body and
/// other headers kept.
fn with_headers<const N: usize>(original: &Message, headers: [(&str, HeaderValue); N]) -> Message {
    let mut message = original.clone();
    message.headers.remove(DELIVERY_COUNT_HEADER);
    for (name, value) in headers {
        message.headers.insert(name.into(), value);
    }
    message
}

/// A non-negative count carried in a header (0 when absent or malformed).
fn header_count(message: &Message, name: &str) -> u32 {
    message
        .headers
        .get(name)
        .and_then(HeaderValue::as_int)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// A new trace ID for `request`: unique per process, time and call.
fn new_trace_id(request: u64) -> String {
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

    fn message(body: &[u8], headers: &[(&str, HeaderValue)]) -> Message {
        Message {
            body: body.to_vec(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        }
    }

    #[test]
    fn long_errors_are_cut_to_fit_a_frame() {
        let short = "boom: é".to_string();
        assert_eq!(error_header(&short), short);
        let exact = "x".repeat(MAX_ERROR_HEADER);
        assert_eq!(error_header(&exact), exact);
        // Two-byte characters, so that the cut falls inside one.
        let long = "é".repeat(MAX_ERROR_HEADER);
        let failure = Failure::new(crate::failure::FailureKind::Panic, long.clone());
        let record = FailureRecord::new(&failure, 3, "svc", "in", UNIX_EPOCH);
        let dead = record.encode(&message(b"7", &[]));
        let Some(HeaderValue::Str(cut)) = dead.headers.get(ERROR_HEADER) else {
            panic!("no error header: {:?}", dead.headers);
        };
        assert!(cut.len() <= MAX_ERROR_HEADER, "{} bytes", cut.len());
        assert!(cut.starts_with("ééé"));
        assert!(
            cut.ends_with(&format!(" [... cut: {} bytes in all]", long.len())),
            "{cut}"
        );
        // The record itself keeps the whole error (it is logged whole).
        assert_eq!(record.error, long);
    }

    #[test]
    fn envelopes_decode_ids_counts_and_trace() {
        let decoded = Envelope::decode(&message(
            b" 42\n",
            &[
                (ATTEMPT_HEADER, HeaderValue::Int(3)),
                (OUTAGES_HEADER, HeaderValue::Int(2)),
                (TRACE_HEADER, HeaderValue::Str("abc".into())),
            ],
        ));
        let expected = Envelope {
            id: 42,
            attempt: 3,
            outages: 2,
            trace_id: "abc".into(),
        };
        assert_eq!(decoded, Ok(expected));

        // A first delivery: attempt 1, no outages, a new trace ID.
        let fresh = Envelope::decode(&Message::id(7)).unwrap();
        assert_eq!((fresh.id, fresh.attempt, fresh.outages), (7, 1, 0));
        assert_eq!(fresh.trace_id.len(), 32);
        assert!(fresh.trace_id.bytes().all(|b| b.is_ascii_hexdigit()));

        // Unreadable counts count as absent; a trace ID that is not text gets a new one.
        let odd = Envelope::decode(&message(
            b"7",
            &[
                (ATTEMPT_HEADER, HeaderValue::Str("3".into())),
                (OUTAGES_HEADER, HeaderValue::Int(-1)),
                (TRACE_HEADER, HeaderValue::Int(5)),
            ],
        ))
        .unwrap();
        assert_eq!((odd.attempt, odd.outages, odd.trace_id.len()), (1, 0, 32));
        for (value, attempt) in [
            (0, 1),
            (-4, 1),
            (i64::from(u32::MAX) + 1, 1),
            (i64::from(u32::MAX), u32::MAX),
        ] {
            let m = message(b"7", &[(ATTEMPT_HEADER, HeaderValue::Int(value))]);
            assert_eq!(Envelope::decode(&m).unwrap().attempt, attempt, "{value}");
        }
    }

    #[test]
    fn malformed_bodies_say_why_and_keep_their_attempt() {
        for body in [&b"abc"[..], b"", b"-1", b"\xff", b"18446744073709551616"] {
            let m = message(body, &[(ATTEMPT_HEADER, HeaderValue::Int(4))]);
            let reason = parse_id(body).unwrap_err();
            let malformed = Envelope::decode(&m).unwrap_err();
            assert_eq!(malformed.to_string(), reason);
            assert_eq!(malformed, Malformed { reason, attempt: 4 });
        }
        assert_eq!(Envelope::decode(&message(b"x", &[])).unwrap_err().attempt, 1);
    }

    #[test]
    fn retries_keep_the_message_and_update_counts_and_error() {
        let original = message(
            b" 9 ",
            &[
                (TRACE_HEADER, HeaderValue::Str("t".into())),
                (ATTEMPT_HEADER, HeaderValue::Int(1)),
                ("x-other", HeaderValue::Int(1)),
            ],
        );
        let next = Envelope {
            id: 9,
            attempt: 2,
            outages: 3,
            trace_id: "t".into(),
        };
        let failure = Failure::new(FailureKind::Process, "nope");
        let expected = message(
            b" 9 ",
            &[
                (TRACE_HEADER, HeaderValue::Str("t".into())),
                (ATTEMPT_HEADER, HeaderValue::Int(2)),
                (OUTAGES_HEADER, HeaderValue::Int(3)),
                (ERROR_HEADER, HeaderValue::Str("nope".into())),
                (ERROR_KIND_HEADER, HeaderValue::Str("process-error".into())),
                ("x-other", HeaderValue::Int(1)),
            ],
        );
        assert_eq!(next.encode_retry(&original, &failure), expected);
        assert_eq!(Envelope::decode(&expected), Ok(next));
    }

    #[test]
    fn the_brokers_delivery_count_is_read_and_not_forwarded() {
        let delivered = message(b"7", &[(DELIVERY_COUNT_HEADER, HeaderValue::Int(3))]);
        assert_eq!(delivery_count(&delivered), 3);
        assert_eq!(delivery_count(&message(b"7", &[])), 0);
        let envelope = Envelope::decode(&delivered).unwrap();
        let failure = Failure::new(FailureKind::Process, "boom");
        let retry = envelope.encode_retry(&delivered, &failure);
        assert!(!retry.headers.contains_key(DELIVERY_COUNT_HEADER));
        let record = FailureRecord::new(&failure, 1, "svc", "q", UNIX_EPOCH);
        assert!(!record.encode(&delivered).headers.contains_key(DELIVERY_COUNT_HEADER));
    }

    #[test]
    fn outputs_carry_only_their_id_and_the_trace() {
        let envelope = Envelope {
            id: 1,
            attempt: 3,
            outages: 2,
            trace_id: "t".into(),
        };
        let context = TraceParent {
            trace_id: 0xabc,
            span_id: 0x12,
            flags: 1,
            state: Some("k=v".into()),
        };
        assert_eq!(
            envelope.encode_output(12, &context),
            message(
                b"12",
                &[
                    (TRACE_HEADER, HeaderValue::Str("t".into())),
                    (
                        TRACEPARENT_HEADER,
                        HeaderValue::Str("00-00000000000000000000000000000abc-0000000000000012-01".into())
                    ),
                    (TRACESTATE_HEADER, HeaderValue::Str("k=v".into())),
                ]
            )
        );
        // No trace state: no header, and a stale one is removed.
        let mut stale = message(b"1", &[(TRACESTATE_HEADER, HeaderValue::Str("old".into()))]);
        TraceParent { state: None, ..context }.stamp(&mut stale, "t");
        assert!(!stale.headers.contains_key(TRACESTATE_HEADER));
    }

    #[test]
    fn traceparent_headers_parse_as_w3c_says() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(good, Some(" congo=t61rcWkgMzE ")).unwrap();
        assert_eq!(parsed.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parsed.span_id, 0x00f067aa0ba902b7);
        assert!(parsed.sampled());
        assert_eq!(parsed.state.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(parsed.header_value(), good);
        assert_eq!(parsed.span_id_hex(), "00f067aa0ba902b7");
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", Some("")).unwrap();
        assert!(!unsampled.sampled());
        assert_eq!(unsampled.state, None);
        // A later version may append fields; version 00 may not.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", None).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bx-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        ] {
            assert_eq!(TraceParent::parse(bad, None), None, "{bad:?}");
        }
    }

    #[test]
    fn the_trace_context_is_read_from_traceparent_then_the_legacy_header() {
        let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let legacy = "0123456789abcdef0123456789abcdef";
        let both = message(
            b"1",
            &[
                (TRACEPARENT_HEADER, HeaderValue::Str(w3c.into())),
                (TRACESTATE_HEADER, HeaderValue::Str("a=b".into())),
                (TRACE_HEADER, HeaderValue::Str(legacy.into())),
            ],
        );
        let read = TraceParent::read(&both).unwrap();
        assert_eq!(
            (read.header_value().as_str(), read.state.as_deref()),
            (w3c, Some("a=b"))
        );
        // The legacy trace ID still names the request, and the body's ID is read.
        assert_eq!(Envelope::decode(&both).unwrap().trace_id, legacy);

        // Only the legacy header (a message queued by an older slingshot):
        // the same trace, under a parent span derived from it.
        let old = message(b"1", &[(TRACE_HEADER, HeaderValue::Str(legacy.into()))]);
        let read = TraceParent::read(&old).unwrap();
        assert_eq!(read.trace_id_hex(), legacy);
        assert_eq!(read.span_id, 1, "equal halves fold to 0, which is not a span ID");
        let other = message(
            b"1",
            &[(
                TRACE_HEADER,
                HeaderValue::Str("000000000000000f00000000000000f0".into()),
            )],
        );
        assert_eq!(TraceParent::read(&other).unwrap().span_id, 0xff);
        assert!(read.sampled());
        // A malformed traceparent falls back to the legacy header too.
        let broken = message(
            b"1",
            &[
                (TRACEPARENT_HEADER, HeaderValue::Str("garbage".into())),
                (TRACE_HEADER, HeaderValue::Str(legacy.into())),
            ],
        );
        assert_eq!(TraceParent::read(&broken).unwrap().trace_id_hex(), legacy);
        // Only a traceparent: its trace ID names the request.
        let w3c_only = message(b"1", &[(TRACEPARENT_HEADER, HeaderValue::Str(w3c.into()))]);
        assert_eq!(
            Envelope::decode(&w3c_only).unwrap().trace_id,
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // Legacy IDs that are not W3C trace IDs, or no header at all: no context.
        for value in [
            "invoke-7",
            "",
            "00000000000000000000000000000000",
            "0123456789abcdef0123456789abcdeX",
        ] {
            let m = message(b"1", &[(TRACE_HEADER, HeaderValue::Str(value.into()))]);
            assert_eq!(TraceParent::read(&m), None, "{value:?}");
        }
        assert_eq!(TraceParent::read(&Message::id(1)), None);
    }

    #[test]
    fn failure_records_encode_into_dead_letters_and_decode_back() {
        let original = message(
            b"13",
            &[
                (TRACE_HEADER, HeaderValue::Str("t".into())),
                (ATTEMPT_HEADER, HeaderValue::Int(2)),
                (OUTAGES_HEADER, HeaderValue::Int(4)),
                ("x-other", HeaderValue::Str("o".into())),
            ],
        );
        let failure = Failure::new(FailureKind::Panic, "boom");
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let record = FailureRecord::new(&failure, 3, "svc", "in", at);
        let expected = FailureRecord {
            error: "boom".into(),
            kind: "panic".into(),
            attempts: 3,
            service: "svc".into(),
            queue: "in".into(),
            failed_at: 1_700_000_000,
        };
        assert_eq!(record, expected);
        let dead = record.encode(&original);
        assert_eq!(
            dead,
            message(
                b"13",
                &[
                    (TRACE_HEADER, HeaderValue::Str("t".into())),
                    (ATTEMPT_HEADER, HeaderValue::Int(3)),
                    (OUTAGES_HEADER, HeaderValue::Int(4)),
                    ("x-other", HeaderValue::Str("o".into())),
                    (ERROR_HEADER, HeaderValue::Str("boom".into())),
                    (ERROR_KIND_HEADER, HeaderValue::Str("panic".into())),
                    (SERVICE_HEADER, HeaderValue::Str("svc".into())),
                    (QUEUE_HEADER, HeaderValue::Str("in".into())),
                    (FAILED_AT_HEADER, HeaderValue::Int(1_700_000_000)),
                ],
            )
        );
        assert_eq!(FailureRecord::decode(&dead), expected);
        // Before the epoch reads as 0.
        assert_eq!(
            FailureRecord::new(&failure, 1, "s", "q", UNIX_EPOCH - Duration::from_secs(5)).failed_at,
            0
        );
        // Missing or mistyped headers read as empty and 0.
        let odd = message(
            b"x",
            &[
                (ERROR_HEADER, HeaderValue::Int(1)),
                (ATTEMPT_HEADER, HeaderValue::Int(-2)),
            ],
        );
        let blank = FailureRecord {
            error: String::new(),
            kind: String::new(),
            attempts: -2,
            service: String::new(),
            queue: String::new(),
            failed_at: 0,
        };
        assert_eq!(FailureRecord::decode(&odd), blank);
    }

    #[test]
    fn replays_drop_counts_and_record_but_keep_trace_and_other_headers() {
        let failure = Failure::new(FailureKind::Process, "e");
        let original = message(
            b" 8",
            &[
                (TRACE_HEADER, HeaderValue::Str("t".into())),
                (OUTAGES_HEADER, HeaderValue::Int(4)),
                ("x-other", HeaderValue::Int(1)),
            ],
        );
        let dead = FailureRecord::new(&failure, 5, "s", "q", UNIX_EPOCH).encode(&original);
        let replayed = replay_message(&dead);
        assert_eq!(
            replayed,
            message(
                b" 8",
                &[
                    (TRACE_HEADER, HeaderValue::Str("t".into())),
                    ("x-other", HeaderValue::Int(1)),
                ],
            )
        );
        let envelope = Envelope::decode(&replayed).unwrap();
        assert_eq!((envelope.attempt, envelope.outages), (1, 0));
    }

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
            // Malformed requests are dead-lettered at once.
            (Malformed, false, 1, 0, 5, Dead(1)),
            (Malformed, false, 2, 3, 5, Dead(2)),
        ];
        for (kind, outage, attempt, outages, max_attempts, want) in table {
            let failure = Failure {
                kind,
                message: "e".into(),
                transient: outage,
            };
            let envelope = Envelope {
                id: 11,
                attempt,
                outages,
                trace_id: "t".into(),
            };
            let got = match decide(&failure, &envelope, &settings(max_attempts)) {
                Decision::Retry { delay, next } => {
                    assert_eq!(
                        (next.id, next.trace_id.as_str()),
                        (11, "t"),
                        "the request and trace stay"
                    );
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
