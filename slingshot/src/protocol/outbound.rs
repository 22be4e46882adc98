//! The messages slingshot publishes besides outputs: retries, dead letters,
//! returned deliveries and replays, each fitted to one AMQP frame.
//!
//! A retry, a dead letter or a returned delivery is the message it came from
//! again: body, every header and property the producer set (the broker's own
//! `x-delivery-count` left out), and slingshot's counts or failure record.
//! [`fit`] makes whatever slingshot publishes fit the frame the connection
//! negotiated: the error text is cut first; a dead letter then drops the
//! producer's largest headers, and says which; a retry that cannot fit is
//! not sent at all (the caller dead-letters the message instead).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::inbound::Counts;
use super::{
    ATTEMPT_HEADER, CRASHES_HEADER, DELIVERY_COUNT_HEADER, DROPPED_HEADER, ERROR_HEADER, ERROR_KIND_HEADER,
    FAILED_AT_HEADER, HEADERS, ORIGINAL_EXPIRATION_HEADER, OUTAGES_HEADER, QUEUE_HEADER, SERVICE_HEADER,
};
use crate::base::failure::{Failure, FailureKind};
use crate::broker::message::entry_len;
#[cfg(test)]
use crate::broker::message::table_len;
use crate::broker::{HeaderValue, Message};

/// The longest error text [`ERROR_HEADER`] carries, in bytes; a longer one
/// is cut (the log has it whole).
pub const MAX_ERROR_HEADER: usize = 4096;
/// The shortest the error text is cut to when a message would not fit its
/// frame otherwise.
const MIN_ERROR_HEADER: usize = 256;
/// The longest [`DROPPED_HEADER`] value, in bytes.
const MAX_DROPPED_HEADER: usize = 1024;
/// The most bytes a header slingshot writes takes in a table (the error,
/// whole): anything larger under one of its names came from a producer.
const MAX_OWN_HEADER: usize = MAX_ERROR_HEADER + 64;

/// The retry of `original` after `failure`: the same message with the
/// counts `next` and the failure that caused it. The counts travel in the
/// message, so they survive restarts.
pub fn retry(original: &Message, next: &Counts, failure: &Failure) -> Message {
    let mut message = again(original);
    let headers = &mut message.headers;
    headers.insert(ATTEMPT_HEADER.into(), HeaderValue::Int(i64::from(next.attempt)));
    headers.insert(OUTAGES_HEADER.into(), HeaderValue::Int(i64::from(next.outages)));
    set_crashes(&mut message, next.crashes);
    message.headers.insert(
        ERROR_HEADER.into(),
        HeaderValue::Str(cut(&failure.message, MAX_ERROR_HEADER)),
    );
    message
        .headers
        .insert(ERROR_KIND_HEADER.into(), HeaderValue::Str(failure.kind.as_str().into()));
    message
}

/// `original` given back to its queue unprocessed (a shutdown, a crash
/// counted): the same message, with `crashes` recorded.
pub fn returned(original: &Message, crashes: u32) -> Message {
    let mut message = again(original);
    set_crashes(&mut message, crashes);
    message
}

/// The kind a dead letter's headers record: one of slingshot's, or
/// whatever another tool wrote there (kept as it was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedKind {
    /// A kind slingshot writes.
    Known(FailureKind),
    /// Text that names no kind slingshot knows (empty when absent).
    Other(String),
}

impl RecordedKind {
    /// The kind as the header spells it.
    pub fn as_str(&self) -> &str {
        match self {
            RecordedKind::Known(kind) => kind.as_str(),
            RecordedKind::Other(text) => text,
        }
    }

    /// The kind, if it is one of slingshot's.
    pub fn known(&self) -> Option<FailureKind> {
        match self {
            RecordedKind::Known(kind) => Some(*kind),
            RecordedKind::Other(_) => None,
        }
    }
}

impl std::fmt::Display for RecordedKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for RecordedKind {
    fn from(text: &str) -> Self {
        text.parse()
            .map(RecordedKind::Known)
            .unwrap_or_else(|_| RecordedKind::Other(text.to_string()))
    }
}

/// Why a message was dead-lettered, as its headers record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    /// The last error.
    pub error: String,
    /// Its kind.
    pub kind: RecordedKind,
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
            kind: RecordedKind::Known(failure.kind),
            attempts: i64::from(attempts),
            service: service.into(),
            queue: queue.into(),
            failed_at: i64::try_from(seconds).unwrap_or(i64::MAX),
        }
    }

    /// The dead letter of `original`: the same message with this record. A
    /// dead letter does not expire: an `expiration` moves to
    /// [`ORIGINAL_EXPIRATION_HEADER`] (as RabbitMQ's own dead-lettering does),
    /// and a replay puts it back.
    pub fn encode(&self, original: &Message) -> Message {
        let mut message = again(original);
        if let Some(expiration) = message.properties.expiration.take() {
            message
                .headers
                .insert(ORIGINAL_EXPIRATION_HEADER.into(), HeaderValue::Str(expiration));
        }
        for (name, value) in [
            (ERROR_HEADER, HeaderValue::Str(cut(&self.error, MAX_ERROR_HEADER))),
            (ERROR_KIND_HEADER, HeaderValue::Str(self.kind.as_str().to_string())),
            (ATTEMPT_HEADER, HeaderValue::Int(self.attempts)),
            (SERVICE_HEADER, HeaderValue::Str(self.service.clone())),
            (QUEUE_HEADER, HeaderValue::Str(self.queue.clone())),
            (FAILED_AT_HEADER, HeaderValue::Int(self.failed_at)),
        ] {
            message.headers.insert(name.into(), value);
        }
        message
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
            kind: RecordedKind::from(text(ERROR_KIND_HEADER).as_str()),
            attempts: int(ATTEMPT_HEADER),
            service: text(SERVICE_HEADER),
            queue: text(QUEUE_HEADER),
            failed_at: int(FAILED_AT_HEADER),
        }
    }
}

/// The message that replays dead letter `dead`: its body, properties, trace
/// and any other headers kept (its `expiration` restored), its counts and
/// failure record dropped, so it starts over at attempt 1 without outages.
pub fn replay(dead: &Message) -> Message {
    let mut message = again(dead);
    for name in [
        ATTEMPT_HEADER,
        OUTAGES_HEADER,
        CRASHES_HEADER,
        ERROR_HEADER,
        ERROR_KIND_HEADER,
        SERVICE_HEADER,
        QUEUE_HEADER,
        FAILED_AT_HEADER,
    ] {
        message.headers.remove(name);
    }
    if let Some(HeaderValue::Str(expiration)) = message.headers.remove(ORIGINAL_EXPIRATION_HEADER) {
        message.properties.expiration = Some(expiration);
    }
    message
}

/// What [`fit`] may take away from a message that does not fit its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Only cut the error text: a retry must keep everything else.
    CutError,
    /// Cut the error text, then drop the producer's largest headers, and
    /// record which in [`DROPPED_HEADER`]: a dead letter must be sent.
    DropHeaders,
}

/// A message that does not fit its frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct TooLarge {
    /// The size of its properties and headers frame, in bytes.
    pub size: usize,
    /// The frame size.
    pub limit: usize,
    /// Its largest headers, as (name, bytes), largest first (at most three).
    pub largest: Vec<(String, usize)>,
}

impl TooLarge {
    fn describe(&self) -> String {
        let largest: Vec<String> = self
            .largest
            .iter()
            .map(|(name, bytes)| format!("{name} ({bytes} bytes)"))
            .collect();
        format!(
            "its properties and headers take {} bytes, {} over the {}-byte AMQP frame (largest headers: {})",
            self.size,
            self.size.saturating_sub(self.limit),
            self.limit,
            if largest.is_empty() {
                "none".into()
            } else {
                largest.join(", ")
            }
        )
    }
}

/// `message` made to fit a frame of `limit` bytes (`None`: no limit), taking
/// away only what `room` allows.
pub fn fit(mut message: Message, limit: Option<usize>, room: Room) -> Result<Message, TooLarge> {
    let Some(limit) = limit else {
        return Ok(message);
    };
    if message.header_frame_size() <= limit {
        return Ok(message);
    }
    // The error text first: down to MIN_ERROR_HEADER, by what is over.
    if let Some(HeaderValue::Str(error)) = message.headers.get(ERROR_HEADER) {
        let over = message.header_frame_size() - limit;
        let keep = error.len().saturating_sub(over + 64).max(MIN_ERROR_HEADER);
        if keep < error.len() {
            let shorter = cut(error, keep);
            message.headers.insert(ERROR_HEADER.into(), HeaderValue::Str(shorter));
        }
    }
    if message.header_frame_size() <= limit {
        return Ok(message);
    }
    let too_large = |message: &Message| TooLarge {
        size: message.header_frame_size(),
        limit,
        largest: largest_headers(message, 3),
    };
    if room == Room::CutError {
        return Err(too_large(&message));
    }
    // Then the producer's headers, largest first, until it fits.
    let before = too_large(&message);
    let mut dropped = Vec::new();
    for (name, bytes) in largest_headers(&message, usize::MAX) {
        // slingshot's own headers stay, unless a producer set one of their
        // names to something larger than slingshot ever writes.
        if HEADERS.contains(&name.as_str()) && bytes <= MAX_OWN_HEADER {
            continue;
        }
        message.headers.remove(&name);
        dropped.push(format!("{name} ({bytes} bytes)"));
        let record = HeaderValue::Str(cut(&dropped.join(", "), MAX_DROPPED_HEADER));
        message.headers.insert(DROPPED_HEADER.into(), record);
        if message.header_frame_size() <= limit {
            return Ok(message);
        }
    }
    Err(before)
}

/// The largest `n` headers of `message` as (name, encoded bytes).
fn largest_headers(message: &Message, n: usize) -> Vec<(String, usize)> {
    let mut sizes: Vec<(String, usize)> = message
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), entry_len(name, value)))
        .collect();
    sizes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sizes.truncate(n);
    sizes
}

/// The same message to publish again: the broker's delivery count removed.
/// `original` to publish again. It keeps its identity: a message without a
/// `message-id` gets the one derived from it, which its changed headers
/// would otherwise change.
fn again(original: &Message) -> Message {
    let mut message = original.clone();
    message.headers.remove(DELIVERY_COUNT_HEADER);
    if message.properties.message_id.as_deref().is_none_or(str::is_empty) {
        message.properties.message_id = Some(super::inbound::identity(original));
    }
    message
}

fn set_crashes(message: &mut Message, crashes: u32) {
    if crashes > 0 {
        message
            .headers
            .insert(CRASHES_HEADER.into(), HeaderValue::Int(i64::from(crashes)));
    }
}

/// `text` whole up to `max` bytes, else cut at a character boundary and
/// marked with its full length (the length before any earlier cut).
pub(crate) fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let (kept, total) = cut_before(text).unwrap_or((text, text.len()));
    let marker = format!(" [... cut: {total} bytes in all]");
    let mut end = max.saturating_sub(marker.len()).min(kept.len());
    while !kept.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &kept[..end])
}

/// What an earlier [`cut`] kept of a text, and the text's length before it.
fn cut_before(text: &str) -> Option<(&str, usize)> {
    let rest = text.strip_suffix(" bytes in all]")?;
    let at = rest.rfind(" [... cut: ")?;
    let total = rest[at + " [... cut: ".len()..].parse().ok()?;
    Some((&text[..at], total))
}

/// Bytes the header table of `message` takes (0 without headers).
#[cfg(test)]
fn headers_size(message: &Message) -> usize {
    if message.headers.is_empty() {
        0
    } else {
        table_len(&message.headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::failure::FailureKind;

    fn message(body: &[u8], headers: &[(&str, HeaderValue)]) -> Message {
        let mut m = Message::new(body.to_vec());
        for (k, v) in headers {
            m.headers.insert(k.to_string(), v.clone());
        }
        m
    }

    #[test]
    fn long_errors_are_cut_with_a_marker() {
        let short = "boom: é".to_string();
        assert_eq!(cut(&short, MAX_ERROR_HEADER), short);
        let exact = "x".repeat(MAX_ERROR_HEADER);
        assert_eq!(cut(&exact, MAX_ERROR_HEADER), exact);
        // Two-byte characters, so that the cut falls inside one.
        let long = "é".repeat(MAX_ERROR_HEADER);
        let failure = Failure::new(FailureKind::Panic, long.clone());
        let record = FailureRecord::new(&failure, 3, "svc", "in", UNIX_EPOCH);
        let dead = record.encode(&Message::id(7));
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
        // Cut again, it still says how long it was.
        let again = super::cut(cut, 300);
        assert!(
            again.len() <= 300 && again.ends_with(&format!(" [... cut: {} bytes in all]", long.len())),
            "{again}"
        );
    }

    #[test]
    fn retries_keep_the_message_and_update_counts_and_error() {
        let mut original = message(
            b" 9 ",
            &[
                ("x-slingshot-trace-id", HeaderValue::Str("t".into())),
                (ATTEMPT_HEADER, HeaderValue::Int(1)),
                (DELIVERY_COUNT_HEADER, HeaderValue::Int(3)),
                ("x-other", HeaderValue::Bool(true)),
                ("x-float", HeaderValue::F64(0.5)),
            ],
        );
        original.properties.message_id = Some("m-1".into());
        original.properties.priority = Some(4);
        let next = Counts {
            attempt: 2,
            outages: 3,
            crashes: 0,
        };
        let failure = Failure::new(FailureKind::Process, "nope");
        let mut expected = message(
            b" 9 ",
            &[
                ("x-slingshot-trace-id", HeaderValue::Str("t".into())),
                (ATTEMPT_HEADER, HeaderValue::Int(2)),
                (OUTAGES_HEADER, HeaderValue::Int(3)),
                (ERROR_HEADER, HeaderValue::Str("nope".into())),
                (ERROR_KIND_HEADER, HeaderValue::Str("process-error".into())),
                ("x-other", HeaderValue::Bool(true)),
                ("x-float", HeaderValue::F64(0.5)),
            ],
        );
        expected.properties = original.properties.clone();
        assert_eq!(retry(&original, &next, &failure), expected);
        let decoded = super::super::Request::decode(&expected);
        assert_eq!(decoded.counts, next);
    }

    #[test]
    fn dead_letters_carry_the_record_and_no_expiration() {
        let mut original = message(
            b"13",
            &[
                (ATTEMPT_HEADER, HeaderValue::Int(2)),
                (OUTAGES_HEADER, HeaderValue::Int(4)),
                ("x-other", HeaderValue::Str("o".into())),
            ],
        );
        original.properties.expiration = Some("60000".into());
        original.properties.correlation_id = Some("c".into());
        let failure = Failure::new(FailureKind::Panic, "boom");
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let record = FailureRecord::new(&failure, 3, "svc", "in", at);
        let dead = record.encode(&original);
        let mut expected = message(
            b"13",
            &[
                (ATTEMPT_HEADER, HeaderValue::Int(3)),
                (OUTAGES_HEADER, HeaderValue::Int(4)),
                ("x-other", HeaderValue::Str("o".into())),
                (ORIGINAL_EXPIRATION_HEADER, HeaderValue::Str("60000".into())),
                (ERROR_HEADER, HeaderValue::Str("boom".into())),
                (ERROR_KIND_HEADER, HeaderValue::Str("panic".into())),
                (SERVICE_HEADER, HeaderValue::Str("svc".into())),
                (QUEUE_HEADER, HeaderValue::Str("in".into())),
                (FAILED_AT_HEADER, HeaderValue::Int(1_700_000_000)),
            ],
        );
        expected.properties.correlation_id = Some("c".into());
        // Without a `message-id` of its own, it carries its identity.
        expected.properties.message_id = Some(super::super::inbound::identity(&original));
        assert_eq!(dead, expected);
        assert_eq!(FailureRecord::decode(&dead), record);
        // Missing or mistyped headers read as empty and 0.
        let odd = message(
            b"x",
            &[
                (ERROR_HEADER, HeaderValue::Int(1)),
                (ATTEMPT_HEADER, HeaderValue::I8(-2)),
            ],
        );
        let blank = FailureRecord::decode(&odd);
        assert_eq!((blank.error.as_str(), blank.attempts, blank.failed_at), ("", -2, 0));

        // The replay starts over and gets its expiration back.
        let replayed = replay(&dead);
        let mut back = message(b"13", &[("x-other", HeaderValue::Str("o".into()))]);
        back.properties = original.properties.clone();
        back.properties.message_id = expected.properties.message_id.clone();
        assert_eq!(replayed, back);
    }

    #[test]
    fn returned_deliveries_carry_their_crashes_and_not_the_brokers_count() {
        let delivered = message(
            b"7",
            &[(DELIVERY_COUNT_HEADER, HeaderValue::Int(3)), ("x-a", HeaderValue::Void)],
        );
        let identified = |mut m: Message| {
            m.properties.message_id = Some(super::super::inbound::identity(&delivered));
            m
        };
        assert_eq!(
            returned(&delivered, 0),
            identified(message(b"7", &[("x-a", HeaderValue::Void)]))
        );
        assert_eq!(
            returned(&delivered, 2),
            identified(message(
                b"7",
                &[("x-a", HeaderValue::Void), (CRASHES_HEADER, HeaderValue::Int(2))]
            ))
        );
    }

    #[test]
    fn a_message_keeps_its_identity_through_retries_and_returns_and_two_messages_differ() {
        use crate::protocol::Request;
        let first = message(b"5", &[("traceparent", HeaderValue::Str("x".into()))]);
        let identity = Request::decode(&first).message_id;
        assert!(identity.starts_with("d-") && identity.len() == 34, "{identity}");
        let failure = Failure::new(FailureKind::Process, "nope");
        let again = retry(
            &first,
            &Counts {
                attempt: 2,
                ..Counts::default()
            },
            &failure,
        );
        let twice = retry(
            &again,
            &Counts {
                attempt: 3,
                ..Counts::default()
            },
            &failure,
        );
        for copy in [&again, &twice, &returned(&twice, 1)] {
            assert_eq!(Request::decode(copy).message_id, identity);
        }
        assert_ne!(Request::decode(&message(b"6", &[])).message_id, identity);
        let mut named = first.clone();
        named.properties.message_id = Some("producer-7".into());
        assert_eq!(Request::decode(&named).message_id, "producer-7");
        assert_eq!(
            Request::decode(&retry(&named, &Counts::default(), &failure)).message_id,
            "producer-7"
        );
    }

    #[test]
    fn fitting_cuts_the_error_first_and_a_retry_keeps_the_producers_headers() {
        let junk = "j".repeat(30 * 1024);
        let original = message(b"abc", &[("x-junk", HeaderValue::Str(junk.clone()))]);
        let failure = Failure::new(FailureKind::Process, "e".repeat(10_000));
        let next = Counts::default();
        let limit = 32 * 1024;
        let fitted = fit(retry(&original, &next, &failure), Some(limit), Room::CutError).unwrap();
        assert!(fitted.header_frame_size() <= limit);
        assert_eq!(fitted.headers.get("x-junk"), Some(&HeaderValue::Str(junk.clone())));
        let error = fitted.headers.get(ERROR_HEADER).and_then(HeaderValue::as_str).unwrap();
        assert!(
            error.len() < MAX_ERROR_HEADER && error.contains("[... cut: 10000 bytes in all]"),
            "{error}"
        );

        // 33 KiB of the producer's headers cannot go into a 32 KiB frame: a
        // retry refuses, saying by how much and what is largest.
        let big = message(
            b"7",
            &[
                ("x-junk", HeaderValue::Str("j".repeat(33 * 1024))),
                ("x-b", HeaderValue::Int(1)),
            ],
        );
        let err = fit(retry(&big, &next, &failure), Some(limit), Room::CutError).unwrap_err();
        assert_eq!(err.limit, limit);
        assert_eq!(err.largest[0], ("x-junk".into(), 1 + 6 + 1 + 4 + 33 * 1024));
        assert!(
            err.to_string().contains(&format!("over the {limit}-byte AMQP frame")),
            "{err}"
        );

        // A dead letter drops them, largest first, and says so.
        let record = FailureRecord::new(&failure, 1, "svc", "in", UNIX_EPOCH);
        let dead = fit(record.encode(&big), Some(limit), Room::DropHeaders).unwrap();
        assert!(dead.header_frame_size() <= limit);
        assert!(!dead.headers.contains_key("x-junk"));
        assert_eq!(dead.headers.get("x-b"), Some(&HeaderValue::Int(1)));
        assert_eq!(
            dead.headers.get(DROPPED_HEADER).and_then(HeaderValue::as_str),
            Some(format!("x-junk ({} bytes)", 1 + 6 + 1 + 4 + 33 * 1024).as_str())
        );
        assert_eq!(
            dead.headers.get(SERVICE_HEADER).and_then(HeaderValue::as_str),
            Some("svc")
        );
        // No limit: untouched.
        assert_eq!(fit(big.clone(), None, Room::CutError), Ok(big.clone()));
        assert!(headers_size(&big) > limit);
    }
}
