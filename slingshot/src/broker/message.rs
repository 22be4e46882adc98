//! A message as the broker seam carries it: body, headers and AMQP properties, with their types.
//!
//! Other producers publish to the queues slingshot consumes, with whatever
//! headers and properties they like. A retry, a dead letter or a replay is
//! the same message again, so it must carry all of it back with its types:
//! [`HeaderValue`] has a variant for every AMQP 0-9-1 field type and
//! [`Properties`] every basic property a producer sets. Only the delivery
//! mode is not kept: slingshot always publishes persistently.
//!
//! RabbitMQ sends a message's properties in one frame, which must fit the
//! frame size the connection negotiated; [`Message::header_frame_size`]
//! counts it exactly, so what slingshot publishes can be bounded before it
//! is sent (a frame over the limit closes the whole connection).

use std::collections::BTreeMap;

use bytes::Bytes;

/// A value in a message's header table: every AMQP 0-9-1 field type (as
/// RabbitMQ and lapin read them), so a header is forwarded with its type.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    /// A long string that is UTF-8 text: what slingshot writes.
    Str(String),
    /// A long string that is not UTF-8.
    Bytes(Vec<u8>),
    /// A short string.
    ShortStr(String),
    /// A signed 64-bit integer: what slingshot writes.
    Int(i64),
    /// A signed 8-bit integer.
    I8(i8),
    /// An unsigned 8-bit integer.
    U8(u8),
    /// A signed 16-bit integer.
    I16(i16),
    /// An unsigned 16-bit integer.
    U16(u16),
    /// A signed 32-bit integer.
    I32(i32),
    /// An unsigned 32-bit integer.
    U32(u32),
    /// A boolean.
    Bool(bool),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
    /// A decimal: `value` × 10^-`scale`.
    Decimal {
        /// Digits after the decimal point.
        scale: u8,
        /// The unscaled value.
        value: u32,
    },
    /// A timestamp, Unix seconds.
    Timestamp(u64),
    /// An array of values.
    Array(Vec<HeaderValue>),
    /// A nested table.
    Table(Headers),
    /// A byte array.
    ByteArray(Vec<u8>),
    /// No value.
    Void,
}

impl HeaderValue {
    /// The value as text, if it is text (a long or short string).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::Str(s) | HeaderValue::ShortStr(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an integer, if it is an integer of any width that fits
    /// an `i64`.
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            HeaderValue::Int(i) => Some(i),
            HeaderValue::I8(i) => Some(i64::from(i)),
            HeaderValue::U8(i) => Some(i64::from(i)),
            HeaderValue::I16(i) => Some(i64::from(i)),
            HeaderValue::U16(i) => Some(i64::from(i)),
            HeaderValue::I32(i) => Some(i64::from(i)),
            HeaderValue::U32(i) => Some(i64::from(i)),
            _ => None,
        }
    }

    /// Bytes this value takes in an AMQP field table after its type octet.
    fn encoded_len(&self) -> usize {
        match self {
            HeaderValue::Str(s) => 4 + s.len(),
            HeaderValue::Bytes(b) | HeaderValue::ByteArray(b) => 4 + b.len(),
            HeaderValue::ShortStr(s) => 1 + s.len(),
            HeaderValue::Int(_) | HeaderValue::F64(_) | HeaderValue::Timestamp(_) => 8,
            HeaderValue::I8(_) | HeaderValue::U8(_) | HeaderValue::Bool(_) => 1,
            HeaderValue::I16(_) | HeaderValue::U16(_) => 2,
            HeaderValue::I32(_) | HeaderValue::U32(_) | HeaderValue::F32(_) => 4,
            HeaderValue::Decimal { .. } => 5,
            HeaderValue::Array(values) => 4 + values.iter().map(|v| 1 + v.encoded_len()).sum::<usize>(),
            HeaderValue::Table(table) => table_len(table),
            HeaderValue::Void => 0,
        }
    }
}

/// Message headers, by name.
pub type Headers = BTreeMap<String, HeaderValue>;

/// Bytes `headers` take as an AMQP field table: its length, then each
/// entry's name (a short string), type octet and value.
pub(crate) fn table_len(headers: &Headers) -> usize {
    4 + headers
        .iter()
        .map(|(name, value)| entry_len(name, value))
        .sum::<usize>()
}

/// Bytes one entry of a field table takes.
pub(crate) fn entry_len(name: &str, value: &HeaderValue) -> usize {
    1 + name.len() + 1 + value.encoded_len()
}

/// The AMQP basic properties a producer may set, besides the headers and
/// the delivery mode. `None` is unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// MIME content type.
    pub content_type: Option<String>,
    /// MIME content encoding.
    pub content_encoding: Option<String>,
    /// Priority, 0 to 9 (in RabbitMQ up to the queue's `x-max-priority`).
    pub priority: Option<u8>,
    /// The correlation ID of a request/response exchange.
    pub correlation_id: Option<String>,
    /// Where a reply goes.
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds, as text.
    pub expiration: Option<String>,
    /// The producer's message ID.
    pub message_id: Option<String>,
    /// When the producer sent it, Unix seconds.
    pub timestamp: Option<u64>,
    /// The AMQP `type` property: the message's type name.
    pub kind: Option<String>,
    /// The user the producer authenticated as (RabbitMQ checks it on publish).
    pub user_id: Option<String>,
    /// The producing application.
    pub app_id: Option<String>,
}

impl Properties {
    /// Bytes the set properties take in a content header, besides the
    /// headers and the delivery mode.
    fn encoded_len(&self) -> usize {
        let short = |s: &Option<String>| s.as_ref().map_or(0, |s| 1 + s.len());
        short(&self.content_type)
            + short(&self.content_encoding)
            + self.priority.map_or(0, |_| 1)
            + short(&self.correlation_id)
            + short(&self.reply_to)
            + short(&self.expiration)
            + short(&self.message_id)
            + self.timestamp.map_or(0, |_| 8)
            + short(&self.kind)
            + short(&self.user_id)
            + short(&self.app_id)
    }
}

/// A message: what is published and what a delivery holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// The body: for requests, the ID in decimal ASCII. Cheap to clone.
    pub body: Bytes,
    /// The header table (attempt count, trace context, dead-letter reasons,
    /// and whatever the producer set).
    pub headers: Headers,
    /// The other AMQP properties the producer set.
    pub properties: Properties,
}

/// AMQP frame overhead: type, channel, size, end octet.
const FRAME_OVERHEAD: usize = 8;
/// A content header's fixed part: class, weight, body size, property flags.
const CONTENT_HEADER_FIXED: usize = 2 + 2 + 8 + 2;

impl Message {
    /// A request message: `id` in decimal ASCII, as the original crate sends it.
    pub fn id(id: u64) -> Self {
        Message::new(id.to_string())
    }

    /// A message with `body` and nothing else.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Message {
            body: body.into(),
            ..Message::default()
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: HeaderValue) -> Self {
        self.headers.insert(name.to_string(), value);
        self
    }

    /// The size in bytes of the frame that carries this message's
    /// properties and headers when slingshot publishes it (persistent
    /// delivery mode included): it must not exceed the connection's
    /// negotiated frame size.
    pub fn header_frame_size(&self) -> usize {
        let headers = if self.headers.is_empty() {
            0
        } else {
            table_len(&self.headers)
        };
        // + 1: the delivery mode, always set.
        FRAME_OVERHEAD + CONTENT_HEADER_FIXED + self.properties.encoded_len() + headers + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_of_every_width_read_as_int_and_text_as_str() {
        for (value, int) in [
            (HeaderValue::Int(-3), Some(-3)),
            (HeaderValue::I8(-3), Some(-3)),
            (HeaderValue::U8(3), Some(3)),
            (HeaderValue::I16(-3), Some(-3)),
            (HeaderValue::U16(3), Some(3)),
            (HeaderValue::I32(-3), Some(-3)),
            (HeaderValue::U32(3), Some(3)),
            (HeaderValue::Bool(true), None),
            (HeaderValue::Timestamp(3), None),
            (HeaderValue::Str("3".into()), None),
        ] {
            assert_eq!(value.as_int(), int, "{value:?}");
        }
        assert_eq!(HeaderValue::ShortStr("a".into()).as_str(), Some("a"));
        assert_eq!(HeaderValue::Bytes(vec![0xff]).as_str(), None);
    }

    #[test]
    fn the_header_frame_of_a_bare_message_is_its_fixed_part() {
        // Frame overhead 8, class/weight/size/flags 14, delivery mode 1.
        assert_eq!(Message::id(7).header_frame_size(), 23);
        let with = Message::id(7).with_header("ab", HeaderValue::Str("xyz".into()));
        // Table length 4, name 1 + 2, type 1, long string 4 + 3.
        assert_eq!(with.header_frame_size(), 23 + 4 + 3 + 1 + 7);
    }
}

/// Arbitrary messages for property tests, as any producer may publish them.
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;

    use super::{HeaderValue, Headers, Message, Properties};

    /// Header names slingshot and the broker use, for the strategies to
    /// hit: the generated names alone would almost never meet them.
    const OWN: [&str; 8] = [
        "traceparent",
        "tracestate",
        "x-slingshot-trace-id",
        "x-slingshot-attempt",
        "x-slingshot-error",
        "x-slingshot-crashes",
        "x-slingshot-dropped-headers",
        "x-delivery-count",
    ];

    /// Names a producer may use, slingshot's own among them.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z\\-]{1,20}",
            prop::sample::select(OWN.to_vec()).prop_map(str::to_string),
        ]
    }

    /// Any header value, nested up to two levels.
    pub(crate) fn value() -> impl Strategy<Value = HeaderValue> {
        let leaf = prop_oneof![
            any::<String>().prop_map(HeaderValue::Str),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(HeaderValue::Bytes),
            "[ -~]{0,40}".prop_map(HeaderValue::ShortStr),
            any::<i64>().prop_map(HeaderValue::Int),
            any::<i8>().prop_map(HeaderValue::I8),
            any::<u8>().prop_map(HeaderValue::U8),
            any::<i16>().prop_map(HeaderValue::I16),
            any::<u16>().prop_map(HeaderValue::U16),
            any::<i32>().prop_map(HeaderValue::I32),
            any::<u32>().prop_map(HeaderValue::U32),
            any::<bool>().prop_map(HeaderValue::Bool),
            any::<f32>().prop_map(HeaderValue::F32),
            any::<f64>().prop_map(HeaderValue::F64),
            (any::<u8>(), any::<u32>()).prop_map(|(scale, value)| HeaderValue::Decimal { scale, value }),
            any::<u64>().prop_map(HeaderValue::Timestamp),
            prop::collection::vec(any::<u8>(), 0..16).prop_map(HeaderValue::ByteArray),
            Just(HeaderValue::Void),
            // Large text, as the oversized headers of hostile producers.
            (0usize..40_000).prop_map(|n| HeaderValue::Str("x".repeat(n))),
        ];
        leaf.prop_recursive(2, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(HeaderValue::Array),
                prop::collection::btree_map("[a-z]{1,8}", inner, 0..4).prop_map(HeaderValue::Table),
            ]
        })
    }

    fn headers() -> impl Strategy<Value = Headers> {
        prop::collection::btree_map(name(), value(), 0..8)
    }

    fn short() -> impl Strategy<Value = Option<String>> {
        prop::option::of("[ -~]{0,255}")
    }

    fn properties() -> impl Strategy<Value = Properties> {
        (
            (
                short(),
                short(),
                prop::option::of(any::<u8>()),
                short(),
                short(),
                short(),
            ),
            (short(), prop::option::of(any::<u64>()), short(), short(), short()),
        )
            .prop_map(
                |(
                    (content_type, content_encoding, priority, correlation_id, reply_to, expiration),
                    (message_id, timestamp, kind, user_id, app_id),
                )| Properties {
                    content_type,
                    content_encoding,
                    priority,
                    correlation_id,
                    reply_to,
                    expiration,
                    message_id,
                    timestamp,
                    kind,
                    user_id,
                    app_id,
                },
            )
    }

    /// A body: an ID, an ID with padding, arbitrary bytes, or a huge one.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<u64>().prop_map(|id| id.to_string().into_bytes()),
            ("[ \\t\\n+]{0,5}", any::<u64>(), "[ \\t\\n]{0,5}")
                .prop_map(|(a, id, b)| format!("{a}{id}{b}").into_bytes()),
            prop::collection::vec(any::<u8>(), 0..100),
            (0usize..200_000).prop_map(|n| vec![b'7'; n]),
        ]
    }

    /// Any message a producer may publish.
    pub(crate) fn message() -> impl Strategy<Value = Message> {
        (body(), headers(), properties()).prop_map(|(body, headers, properties)| Message {
            body: body.into(),
            headers,
            properties,
        })
    }
}
