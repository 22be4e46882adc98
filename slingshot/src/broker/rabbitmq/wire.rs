//! Converting messages between the broker seam and lapin: every header type and property both ways, unchanged.

use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

use crate::broker::{HeaderValue, Headers, Message, Properties};

/// Persistent delivery mode of AMQP 0-9-1.
const PERSISTENT: u8 = 2;

/// The longest AMQP short string: property values and header names.
const SHORT_STRING_MAX: usize = 255;

/// A message lapin cannot encode: a property or header name longer than an
/// AMQP short string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {len} bytes; AMQP allows at most {SHORT_STRING_MAX}")]
pub(crate) struct Unencodable {
    what: String,
    len: usize,
}

/// The message lapin delivered, as the seam carries it.
pub(crate) fn message_of(properties: &BasicProperties, body: Vec<u8>) -> Message {
    let text = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_string());
    Message {
        body: body.into(),
        headers: properties.headers().as_ref().map(headers_of).unwrap_or_default(),
        properties: Properties {
            content_type: text(properties.content_type()),
            content_encoding: text(properties.content_encoding()),
            priority: *properties.priority(),
            correlation_id: text(properties.correlation_id()),
            reply_to: text(properties.reply_to()),
            expiration: text(properties.expiration()),
            message_id: text(properties.message_id()),
            timestamp: *properties.timestamp(),
            kind: text(properties.kind()),
            user_id: text(properties.user_id()),
            app_id: text(properties.app_id()),
        },
    }
}

/// Sets one short-string property.
type SetText = fn(BasicProperties, ShortString) -> BasicProperties;

/// The properties lapin publishes `message` with: persistent, its headers
/// and every property it carries.
pub(crate) fn properties_of(message: &Message) -> Result<BasicProperties, Unencodable> {
    let short = |what: &str, value: &str| {
        if value.len() > SHORT_STRING_MAX {
            return Err(Unencodable {
                what: what.to_string(),
                len: value.len(),
            });
        }
        Ok(ShortString::from(value))
    };
    let p = &message.properties;
    let mut out = BasicProperties::default().with_delivery_mode(PERSISTENT);
    if !message.headers.is_empty() {
        out = out.with_headers(table_of(&message.headers)?);
    }
    let strings: [(&str, &Option<String>, SetText); 9] = [
        ("content-type", &p.content_type, BasicProperties::with_content_type),
        (
            "content-encoding",
            &p.content_encoding,
            BasicProperties::with_content_encoding,
        ),
        (
            "correlation-id",
            &p.correlation_id,
            BasicProperties::with_correlation_id,
        ),
        ("reply-to", &p.reply_to, BasicProperties::with_reply_to),
        ("expiration", &p.expiration, BasicProperties::with_expiration),
        ("message-id", &p.message_id, BasicProperties::with_message_id),
        ("type", &p.kind, BasicProperties::with_type),
        ("user-id", &p.user_id, BasicProperties::with_user_id),
        ("app-id", &p.app_id, BasicProperties::with_app_id),
    ];
    for (what, value, set) in strings {
        if let Some(value) = value {
            out = set(out, short(&format!("the {what} property"), value)?);
        }
    }
    if let Some(priority) = p.priority {
        out = out.with_priority(priority);
    }
    if let Some(timestamp) = p.timestamp {
        out = out.with_timestamp(timestamp);
    }
    Ok(out)
}

fn headers_of(table: &FieldTable) -> Headers {
    table
        .inner()
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), value_of(value)))
        .collect()
}

fn value_of(value: &AMQPValue) -> HeaderValue {
    match value {
        AMQPValue::Boolean(b) => HeaderValue::Bool(*b),
        AMQPValue::ShortShortInt(i) => HeaderValue::I8(*i),
        AMQPValue::ShortShortUInt(i) => HeaderValue::U8(*i),
        AMQPValue::ShortInt(i) => HeaderValue::I16(*i),
        AMQPValue::ShortUInt(i) => HeaderValue::U16(*i),
        AMQPValue::LongInt(i) => HeaderValue::I32(*i),
        AMQPValue::LongUInt(i) => HeaderValue::U32(*i),
        AMQPValue::LongLongInt(i) => HeaderValue::Int(*i),
        AMQPValue::Float(f) => HeaderValue::F32(*f),
        AMQPValue::Double(d) => HeaderValue::F64(*d),
        AMQPValue::DecimalValue(d) => HeaderValue::Decimal {
            scale: d.scale,
            value: d.value,
        },
        AMQPValue::ShortString(s) => HeaderValue::ShortStr(s.as_str().to_string()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => HeaderValue::Str(text.to_string()),
            Err(_) => HeaderValue::Bytes(s.as_bytes().to_vec()),
        },
        AMQPValue::FieldArray(values) => HeaderValue::Array(values.as_slice().iter().map(value_of).collect()),
        AMQPValue::Timestamp(t) => HeaderValue::Timestamp(*t),
        AMQPValue::FieldTable(table) => HeaderValue::Table(headers_of(table)),
        AMQPValue::ByteArray(bytes) => HeaderValue::ByteArray(bytes.as_slice().to_vec()),
        AMQPValue::Void => HeaderValue::Void,
    }
}

fn table_of(headers: &Headers) -> Result<FieldTable, Unencodable> {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        if name.len() > SHORT_STRING_MAX {
            let shown: String = name.chars().take(40).collect();
            return Err(Unencodable {
                what: format!("header name {shown:?}..."),
                len: name.len(),
            });
        }
        table.insert(ShortString::from(name.as_str()), amqp_value(value)?);
    }
    Ok(table)
}

fn amqp_value(value: &HeaderValue) -> Result<AMQPValue, Unencodable> {
    Ok(match value {
        HeaderValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        HeaderValue::Bytes(b) => AMQPValue::LongString(LongString::from(b.as_slice())),
        HeaderValue::ShortStr(s) => {
            if s.len() > SHORT_STRING_MAX {
                return Err(Unencodable {
                    what: "a short-string header value".into(),
                    len: s.len(),
                });
            }
            AMQPValue::ShortString(ShortString::from(s.as_str()))
        }
        HeaderValue::Int(i) => AMQPValue::LongLongInt(*i),
        HeaderValue::I8(i) => AMQPValue::ShortShortInt(*i),
        HeaderValue::U8(i) => AMQPValue::ShortShortUInt(*i),
        HeaderValue::I16(i) => AMQPValue::ShortInt(*i),
        HeaderValue::U16(i) => AMQPValue::ShortUInt(*i),
        HeaderValue::I32(i) => AMQPValue::LongInt(*i),
        HeaderValue::U32(i) => AMQPValue::LongUInt(*i),
        HeaderValue::Bool(b) => AMQPValue::Boolean(*b),
        HeaderValue::F32(f) => AMQPValue::Float(*f),
        HeaderValue::F64(d) => AMQPValue::Double(*d),
        HeaderValue::Decimal { scale, value } => AMQPValue::DecimalValue(DecimalValue {
            scale: *scale,
            value: *value,
        }),
        HeaderValue::Timestamp(t) => AMQPValue::Timestamp(*t),
        HeaderValue::Array(values) => AMQPValue::FieldArray(FieldArray::from(
            values.iter().map(amqp_value).collect::<Result<Vec<_>, _>>()?,
        )),
        HeaderValue::Table(table) => AMQPValue::FieldTable(table_of(table)?),
        HeaderValue::ByteArray(bytes) => AMQPValue::ByteArray(ByteArray::from(bytes.as_slice())),
        HeaderValue::Void => AMQPValue::Void,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};

    /// A message with every header type and every property.
    fn everything() -> Message {
        let mut nested = Headers::new();
        nested.insert("n".into(), HeaderValue::I16(-2));
        let headers: Headers = [
            ("s", HeaderValue::Str("text é".into())),
            ("bin", HeaderValue::Bytes(vec![0xff, 0x00, 0xfe])),
            ("l", HeaderValue::Int(-1 << 40)),
            ("b", HeaderValue::I8(-1)),
            ("B", HeaderValue::U8(200)),
            ("u", HeaderValue::U16(60_000)),
            ("I", HeaderValue::I32(-70_000)),
            ("i", HeaderValue::U32(4_000_000_000)),
            ("t", HeaderValue::Bool(true)),
            ("f", HeaderValue::F32(1.5)),
            ("d", HeaderValue::F64(-2.25)),
            (
                "D",
                HeaderValue::Decimal {
                    scale: 2,
                    value: 12_345,
                },
            ),
            ("T", HeaderValue::Timestamp(1_700_000_000)),
            (
                "A",
                HeaderValue::Array(vec![HeaderValue::Int(1), HeaderValue::Str("x".into())]),
            ),
            ("F", HeaderValue::Table(nested)),
            ("x", HeaderValue::ByteArray(vec![1, 2, 3])),
            ("V", HeaderValue::Void),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Message {
            body: "42".into(),
            headers,
            properties: Properties {
                content_type: Some("text/plain".into()),
                content_encoding: Some("identity".into()),
                priority: Some(7),
                correlation_id: Some("corr-1".into()),
                reply_to: Some("amq.rabbitmq.reply-to".into()),
                expiration: Some("60000".into()),
                message_id: Some("m-1".into()),
                timestamp: Some(1_700_000_001),
                kind: Some("invoice".into()),
                user_id: Some("guest".into()),
                app_id: Some("producer".into()),
            },
        }
    }

    #[test]
    fn every_header_type_and_property_round_trips() {
        let message = everything();
        let properties = properties_of(&message).unwrap();
        assert_eq!(*properties.delivery_mode(), Some(PERSISTENT));
        assert_eq!(message_of(&properties, b"42".to_vec()), message);
        assert_eq!(message_of(&BasicProperties::default(), b"7".to_vec()), Message::id(7));
    }

    /// The frame lapin would write for `message`'s content header.
    fn encoded_header_frame(message: &Message) -> usize {
        header_frame_bytes(message).len()
    }

    fn header_frame_bytes(message: &Message) -> Vec<u8> {
        let frame = AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: message.body.len() as u64,
                properties: properties_of(message).unwrap(),
            },
        );
        let written = gen_frame(&frame)(WriteContext::from(Vec::new())).expect("the frame encodes");
        written.write
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            failure_persistence: None,
            ..proptest::test_runner::Config::with_cases(128)
        })]

        /// Any message crosses lapin unchanged on the wire, and its counted
        /// header frame size is the size lapin writes.
        #[test]
        fn any_message_crosses_lapin_byte_for_byte(message in crate::broker::message::strategies::message()) {
            let wire = header_frame_bytes(&message);
            proptest::prop_assert_eq!(message.header_frame_size(), wire.len());
            let properties = properties_of(&message).unwrap();
            let back = message_of(&properties, message.body.to_vec());
            proptest::prop_assert_eq!(header_frame_bytes(&back), wire);
            proptest::prop_assert_eq!(back.body, message.body);
        }
    }

    #[test]
    fn the_counted_header_frame_size_is_what_lapin_writes() {
        let mut message = everything();
        assert_eq!(message.header_frame_size(), encoded_header_frame(&message));
        message
            .headers
            .insert("big".into(), HeaderValue::Str("x".repeat(70_000)));
        assert_eq!(message.header_frame_size(), encoded_header_frame(&message));
        for bare in [Message::id(1), Message::new("abc")] {
            assert_eq!(bare.header_frame_size(), encoded_header_frame(&bare));
        }
    }

    #[test]
    fn overlong_short_strings_are_refused_not_truncated() {
        let mut message = Message::id(1);
        message.properties.message_id = Some("m".repeat(256));
        let err = properties_of(&message).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the message-id property is 256 bytes; AMQP allows at most 255"
        );
        let long_name = Message::id(1).with_header(&"h".repeat(300), HeaderValue::Int(1));
        assert!(properties_of(&long_name).is_err());
    }
}
