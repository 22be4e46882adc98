//! Reading a delivered message, once: its request ID (or why it is not one),
//! its counts, its trace context, and a fingerprint that names it.
//!
//! Whatever another producer published, decoding never fails and never
//! copies the body: a body longer than [`MAX_BODY`] is malformed by
//! definition, and what logs and spans show of it is a short escaped prefix.

use super::trace::{
    legacy_trace_id, TraceParent, MAX_LEGACY_TRACE_ID, MAX_TRACESTATE, TRACESTATE_HEADER, TRACE_HEADER,
};
use super::{ATTEMPT_HEADER, CRASHES_HEADER, DELIVERY_COUNT_HEADER, OUTAGES_HEADER};
use crate::broker::{HeaderValue, Headers, Message, Properties};

/// The longest body read as a request ID, in bytes. A `u64` has at most 20
/// digits; the original crate also trims surrounding whitespace and takes a
/// leading `+`, so a little room is left for those.
pub const MAX_BODY: usize = 64;

/// How much of a body that is not an ID logs and spans show, in bytes.
const SHOWN: usize = 32;

/// The counts a request carries in its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// The attempt, from 1. Failures of the request itself raise it.
    pub attempt: u32,
    /// Retries caused by outages so far. They do not use up attempts; the
    /// backoff grows with them.
    pub outages: u32,
    /// Deliveries of this message that ended with the process dying while
    /// `process` ran (see [`CRASHES_HEADER`]).
    pub crashes: u32,
}

impl Default for Counts {
    /// A first attempt.
    fn default() -> Self {
        Counts {
            attempt: 1,
            outages: 0,
            crashes: 0,
        }
    }
}

/// A delivery whose body is not a request ID. It is dead-lettered at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Malformed {
    /// What is wrong with the body: the error recorded with the dead letter.
    pub reason: String,
}

/// An optional header that was not used because of its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The header.
    pub header: &'static str,
    /// Its size in bytes.
    pub bytes: usize,
    /// The most that is used.
    pub limit: usize,
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes, over {})", self.header, self.bytes, self.limit)
    }
}

/// What a delivered message says, decoded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request ID, or why the body is not one.
    pub id: Result<u64, Malformed>,
    /// Its attempt, outage and crash counts.
    pub counts: Counts,
    /// How many times a quorum queue delivered it before
    /// (`x-delivery-count`; 0 when absent).
    pub delivery_count: u32,
    /// The trace context it continues, if it carries a usable one.
    pub parent: Option<TraceParent>,
    /// Its legacy trace ID, if it carries one.
    pub legacy_trace: Option<String>,
    /// Optional headers not used because of their size.
    pub ignored: Vec<Ignored>,
    /// Names this message among the others of its queue: the same message
    /// delivered again has the same fingerprint (a retry or a copy does
    /// not). Never 0.
    pub fingerprint: u64,
    /// Its identity: the producer's `message-id`, or one derived from the
    /// message (see [`identity`]). Once-mode services record it in their
    /// inbox, and every output's `message-id` is derived from it.
    pub message_id: String,
    /// The body as logs and spans show it: the ID, or a short escaped prefix.
    pub shown: String,
}

impl Request {
    /// Reads `message`. Missing or unreadable counts mean a first attempt
    /// without outages.
    pub fn decode(message: &Message) -> Request {
        let id = parse_id(&message.body).map_err(|reason| Malformed { reason });
        let shown = match &id {
            Ok(id) => id.to_string(),
            Err(_) => show(&message.body),
        };
        let mut ignored = Vec::new();
        let text_len = |name: &str| message.headers.get(name).and_then(HeaderValue::as_str).map(str::len);
        if let Some(bytes) = text_len(TRACESTATE_HEADER).filter(|n| *n > MAX_TRACESTATE) {
            ignored.push(Ignored {
                header: TRACESTATE_HEADER,
                bytes,
                limit: MAX_TRACESTATE,
            });
        }
        if let Some(bytes) = text_len(TRACE_HEADER).filter(|n| *n > MAX_LEGACY_TRACE_ID) {
            ignored.push(Ignored {
                header: TRACE_HEADER,
                bytes,
                limit: MAX_LEGACY_TRACE_ID,
            });
        }
        Request {
            id,
            counts: Counts {
                attempt: header_count(message, ATTEMPT_HEADER).max(1),
                outages: header_count(message, OUTAGES_HEADER),
                crashes: header_count(message, CRASHES_HEADER),
            },
            delivery_count: header_count(message, DELIVERY_COUNT_HEADER),
            parent: TraceParent::read(message),
            legacy_trace: legacy_trace_id(message).map(str::to_string),
            ignored,
            fingerprint: fingerprint(message),
            message_id: identity(message),
            shown,
        }
    }
}

/// Parses a request body: the ID in decimal ASCII. Exactly what the
/// original `slingshot-microservice` accepts: surrounding whitespace is
/// trimmed and a leading `+` is allowed (Rust's `u64` parsing). A body over
/// [`MAX_BODY`] bytes is refused unread.
pub fn parse_id(body: &[u8]) -> Result<u64, String> {
    if body.len() > MAX_BODY {
        return Err(format!(
            "body is {} bytes; a request ID is a decimal u64 of at most {MAX_BODY} bytes (it starts {})",
            body.len(),
            show(body)
        ));
    }
    let text =
        std::str::from_utf8(body).map_err(|_| format!("body is not UTF-8 ({} bytes: {})", body.len(), show(body)))?;
    let digits = text.trim();
    let unsigned = digits.strip_prefix('+').unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("body {} is not a decimal u64", show(body)));
    }
    digits
        .parse()
        .map_err(|_| format!("body {} is out of range for a u64", show(digits.as_bytes())))
}

/// The first [`SHOWN`] bytes of `body`, quoted and escaped, marked when cut.
fn show(body: &[u8]) -> String {
    let head = &body[..body.len().min(SHOWN)];
    let escaped: String = head.escape_ascii().to_string();
    if body.len() > SHOWN {
        format!("\"{escaped}\"... ({} bytes)", body.len())
    } else {
        format!("\"{escaped}\"")
    }
}

/// A non-negative count carried in a header (0 when absent or malformed).
pub(crate) fn header_count(message: &Message, name: &str) -> u32 {
    message
        .headers
        .get(name)
        .and_then(HeaderValue::as_int)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// A stable 64-bit FNV-1a hash of the body, headers (the broker's delivery
/// count left out) and properties: the same in every build and process, so a
/// fingerprint written before a crash is recognised after the restart.
fn fingerprint(message: &Message) -> u64 {
    let mut hash = Fnv::default();
    hash.message(message);
    hash.0.max(1)
}

/// The message's identity: its `message-id` if the producer set one, else
/// `d-` and 32 hex digits of a SHA-256 over what [`fingerprint`] covers, so
/// the same message delivered again has the same identity. Retries and
/// copies slingshot publishes carry it as their `message-id` (see
/// `outbound::again`), so it survives their changed headers.
pub(crate) fn identity(message: &Message) -> String {
    if let Some(id) = message.properties.message_id.as_deref().filter(|id| !id.is_empty()) {
        return id.to_string();
    }
    let mut hash = Sha(sha2::Sha256::default());
    hash.message(message);
    format!("d-{}", hex128(&sha2::Digest::finalize(hash.0)))
}

/// The `message-id` of an output: `o-` and 32 hex digits of a SHA-256 over
/// the inbound message's identity, the queue, the output's ID and how many
/// times the same `(queue, id)` came before it in the same call. A run again
/// of the same message that returns the same outputs publishes the same IDs,
/// so a consumer with an inbox (a once-mode stage) takes each once.
pub fn output_message_id(inbound: &str, queue: &str, id: u64, nth: u32) -> String {
    let mut hash = Sha(sha2::Sha256::default());
    hash.bytes(inbound.as_bytes());
    hash.bytes(queue.as_bytes());
    hash.bytes(&id.to_le_bytes());
    hash.bytes(&nth.to_le_bytes());
    format!("o-{}", hex128(&sha2::Digest::finalize(hash.0)))
}

/// The first 128 bits of a digest in lowercase hex.
pub(crate) fn hex128(digest: &[u8]) -> String {
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A hash fed field by field, each length-prefixed, in one fixed order.
trait FieldHash {
    fn byte(&mut self, b: u8);

    /// Length first, so that adjacent fields cannot run into each other.
    fn bytes(&mut self, bytes: &[u8]) {
        for b in (bytes.len() as u64).to_le_bytes() {
            self.byte(b);
        }
        for &b in bytes {
            self.byte(b);
        }
    }

    /// The body, headers (the broker's delivery count left out) and properties.
    fn message(&mut self, message: &Message) {
        self.bytes(&message.body);
        self.headers(&message.headers, true);
        self.properties(&message.properties);
    }

    fn headers(&mut self, headers: &Headers, top: bool) {
        for (name, value) in headers {
            if top && name == DELIVERY_COUNT_HEADER {
                continue;
            }
            self.bytes(name.as_bytes());
            self.value(value);
        }
        self.byte(0xff);
    }

    fn value(&mut self, value: &HeaderValue) {
        let (tag, bytes): (u8, Vec<u8>) = match value {
            HeaderValue::Str(s) => (1, s.as_bytes().to_vec()),
            HeaderValue::Bytes(b) => (2, b.clone()),
            HeaderValue::ShortStr(s) => (3, s.as_bytes().to_vec()),
            HeaderValue::Int(i) => (4, i.to_le_bytes().to_vec()),
            HeaderValue::I8(i) => (5, i.to_le_bytes().to_vec()),
            HeaderValue::U8(i) => (6, vec![*i]),
            HeaderValue::I16(i) => (7, i.to_le_bytes().to_vec()),
            HeaderValue::U16(i) => (8, i.to_le_bytes().to_vec()),
            HeaderValue::I32(i) => (9, i.to_le_bytes().to_vec()),
            HeaderValue::U32(i) => (10, i.to_le_bytes().to_vec()),
            HeaderValue::Bool(b) => (11, vec![u8::from(*b)]),
            HeaderValue::F32(f) => (12, f.to_bits().to_le_bytes().to_vec()),
            HeaderValue::F64(f) => (13, f.to_bits().to_le_bytes().to_vec()),
            HeaderValue::Decimal { scale, value } => (14, [&[*scale][..], &value.to_le_bytes()].concat()),
            HeaderValue::Timestamp(t) => (15, t.to_le_bytes().to_vec()),
            HeaderValue::ByteArray(b) => (16, b.clone()),
            HeaderValue::Void => (17, Vec::new()),
            HeaderValue::Array(values) => {
                self.byte(18);
                for v in values {
                    self.value(v);
                }
                self.byte(0xff);
                return;
            }
            HeaderValue::Table(table) => {
                self.byte(19);
                self.headers(table, false);
                return;
            }
        };
        self.byte(tag);
        self.bytes(&bytes);
    }

    fn properties(&mut self, p: &Properties) {
        let mut text = |s: &Option<String>| match s {
            Some(s) => self.bytes(s.as_bytes()),
            None => self.byte(0),
        };
        for field in [
            &p.content_type,
            &p.content_encoding,
            &p.correlation_id,
            &p.reply_to,
            &p.expiration,
            &p.message_id,
            &p.kind,
            &p.user_id,
            &p.app_id,
        ] {
            text(field);
        }
        self.bytes(&[p.priority.unwrap_or(0xff)]);
        self.bytes(&p.timestamp.unwrap_or(u64::MAX).to_le_bytes());
    }
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl FieldHash for Fnv {
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

struct Sha(sha2::Sha256);

impl FieldHash for Sha {
    fn byte(&mut self, b: u8) {
        sha2::Digest::update(&mut self.0, [b]);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, (bytes.len() as u64).to_le_bytes());
        sha2::Digest::update(&mut self.0, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8], headers: &[(&str, HeaderValue)]) -> Message {
        let mut m = Message::new(body.to_vec());
        for (k, v) in headers {
            m.headers.insert(k.to_string(), v.clone());
        }
        m
    }

    #[test]
    fn requests_decode_ids_counts_and_trace() {
        let decoded = Request::decode(&message(
            b" 42\n",
            &[
                (ATTEMPT_HEADER, HeaderValue::Int(3)),
                (OUTAGES_HEADER, HeaderValue::I32(2)),
                (CRASHES_HEADER, HeaderValue::Int(1)),
                (DELIVERY_COUNT_HEADER, HeaderValue::Int(4)),
                (TRACE_HEADER, HeaderValue::Str("abc".into())),
            ],
        ));
        assert_eq!(decoded.id, Ok(42));
        assert_eq!(
            decoded.counts,
            Counts {
                attempt: 3,
                outages: 2,
                crashes: 1
            }
        );
        assert_eq!(decoded.delivery_count, 4);
        assert_eq!(decoded.legacy_trace.as_deref(), Some("abc"));
        assert_eq!(decoded.shown, "42");
        assert!(decoded.ignored.is_empty());

        // A first delivery: attempt 1, no outages, no trace.
        let fresh = Request::decode(&Message::id(7));
        assert_eq!(
            (fresh.id, fresh.counts, fresh.parent, fresh.legacy_trace),
            (Ok(7), Counts::default(), None, None)
        );

        // Unreadable counts count as absent.
        let odd = Request::decode(&message(
            b"7",
            &[
                (ATTEMPT_HEADER, HeaderValue::Str("3".into())),
                (OUTAGES_HEADER, HeaderValue::Int(-1)),
                (TRACE_HEADER, HeaderValue::Int(5)),
            ],
        ));
        assert_eq!((odd.counts, odd.legacy_trace), (Counts::default(), None));
        for (value, attempt) in [
            (0, 1),
            (-4, 1),
            (i64::from(u32::MAX) + 1, 1),
            (i64::from(u32::MAX), u32::MAX),
        ] {
            let m = message(b"7", &[(ATTEMPT_HEADER, HeaderValue::Int(value))]);
            assert_eq!(Request::decode(&m).counts.attempt, attempt, "{value}");
        }
    }

    #[test]
    fn malformed_bodies_say_why_and_show_only_a_prefix() {
        for body in [&b"abc"[..], b"", b"-1", b"\xff", b"18446744073709551616"] {
            let decoded = Request::decode(&message(body, &[(ATTEMPT_HEADER, HeaderValue::Int(4))]));
            assert_eq!(
                decoded.id,
                Err(Malformed {
                    reason: parse_id(body).unwrap_err()
                })
            );
            assert_eq!(decoded.counts.attempt, 4);
        }
        let huge = vec![b'7'; 1 << 20];
        let decoded = Request::decode(&Message::new(huge));
        let reason = decoded.id.unwrap_err().reason;
        assert!(
            reason.starts_with("body is 1048576 bytes; a request ID is a decimal u64 of at most 64 bytes"),
            "{reason}"
        );
        assert!(reason.len() < 200, "the reason quotes a prefix only: {reason}");
        assert_eq!(decoded.shown, format!("\"{}\"... (1048576 bytes)", "7".repeat(32)));
        // Out of range quotes the digits, bounded.
        let digits = "9".repeat(60);
        let err = parse_id(digits.as_bytes()).unwrap_err();
        assert!(err.ends_with("is out of range for a u64"), "{err}");
        assert!(err.len() < 100, "{err}");
    }

    #[test]
    fn oversized_optional_headers_are_ignored_and_reported() {
        let state = "k=".to_string() + &"v".repeat(33 * 1024);
        let decoded = Request::decode(&message(
            b"7",
            &[
                (
                    "traceparent",
                    HeaderValue::Str("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
                ),
                (TRACESTATE_HEADER, HeaderValue::Str(state.clone())),
                (TRACE_HEADER, HeaderValue::Str("t".repeat(200))),
            ],
        ));
        assert_eq!(decoded.parent.as_ref().map(|p| p.state.clone()), Some(None));
        assert_eq!(decoded.legacy_trace, None);
        let ignored: Vec<String> = decoded.ignored.iter().map(ToString::to_string).collect();
        assert_eq!(
            ignored,
            [
                format!("tracestate ({} bytes, over 512)", state.len()),
                "x-slingshot-trace-id (200 bytes, over 128)".to_string()
            ]
        );
    }

    #[test]
    fn fingerprints_name_a_message_whatever_its_delivery_count() {
        let first = message(b"7", &[("x-a", HeaderValue::Int(1))]);
        let again = message(
            b"7",
            &[
                ("x-a", HeaderValue::Int(1)),
                (DELIVERY_COUNT_HEADER, HeaderValue::Int(2)),
            ],
        );
        let retry = message(
            b"7",
            &[("x-a", HeaderValue::Int(1)), (ATTEMPT_HEADER, HeaderValue::Int(2))],
        );
        let fp = |m: &Message| Request::decode(m).fingerprint;
        assert_eq!(fp(&first), fp(&again));
        assert_ne!(fp(&first), fp(&retry));
        assert_ne!(fp(&first), fp(&message(b"8", &[("x-a", HeaderValue::Int(1))])));
        assert_ne!(
            fp(&first),
            fp(&message(b"7", &[("x-a", HeaderValue::I32(1))])),
            "types count"
        );
        let mut with_id = first.clone();
        with_id.properties.message_id = Some("m".into());
        assert_ne!(fp(&first), fp(&with_id));
        // Stable across builds: a fixed value.
        assert_eq!(fp(&Message::id(7)), fp(&Message::id(7)));
        assert_ne!(fp(&Message::id(7)), 0);
    }

    #[test]
    fn ids_parse_strictly() {
        assert_eq!(parse_id(b"42"), Ok(42));
        assert_eq!(parse_id(b" 42\n"), Ok(42));
        assert_eq!(parse_id(b"18446744073709551615"), Ok(u64::MAX));
        // As the original: trimmed, then Rust's parser, which takes a `+`.
        assert_eq!(parse_id(b"\t+7\r\n"), Ok(7));
        assert_eq!(parse_id(b"007"), Ok(7));
        let padded = format!("{}7", " ".repeat(MAX_BODY - 1));
        assert_eq!(parse_id(padded.as_bytes()), Ok(7));
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
        assert!(
            parse_id(format!(" {padded}").as_bytes()).is_err(),
            "one byte over the bound"
        );
    }
}
