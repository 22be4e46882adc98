//! Property tests of the message format: arbitrary bodies, header tables and properties, as any producer may publish them, decode without panicking, and whatever slingshot publishes from them fits its frame.
//!
//! Each property runs [`CASES`] cases with a random seed; together they take
//! well under a second in a debug build
//! (`cargo test -p slingshot --lib protocol::properties`).

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::*;
use crate::broker::{HeaderValue, Headers, Message, Properties};

/// Cases per property.
const CASES: u32 = 256;

fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::with_cases(CASES)
    }
}

/// Names a producer may use, slingshot's own among them.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z\\-]{1,20}",
        prop::sample::select(HEADERS.to_vec()).prop_map(str::to_string),
        Just(DELIVERY_COUNT_HEADER.to_string()),
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
        ("[ \\t\\n+]{0,5}", any::<u64>(), "[ \\t\\n]{0,5}").prop_map(|(a, id, b)| format!("{a}{id}{b}").into_bytes()),
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

fn failure() -> impl Strategy<Value = Failure> {
    (
        prop::sample::select(FailureKind::ALL.to_vec()),
        prop_oneof![any::<String>(), (0usize..20_000).prop_map(|n| "e".repeat(n))],
        any::<bool>(),
    )
        .prop_map(|(kind, message, transient)| Failure {
            kind,
            message,
            transient,
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_message_decodes_to_a_request_or_a_reason(message in message()) {
        let request = Request::decode(&message);
        prop_assert_eq!(request.id.is_ok(), parse_id(&message.body).is_ok());
        if let Ok(id) = &request.id {
            prop_assert_eq!(&request.shown, &id.to_string());
        } else {
            // Logs and spans see a bounded prefix, never the body whole.
            prop_assert!(request.shown.len() <= 32 * 4 + 30, "{} bytes shown", request.shown.len());
        }
        if message.body.len() > MAX_BODY {
            prop_assert!(request.id.is_err());
        }
        prop_assert!(request.counts.attempt >= 1);
        prop_assert_ne!(request.fingerprint, 0);
        prop_assert_eq!(request.fingerprint, Request::decode(&message).fingerprint);
        if let Some(parent) = &request.parent {
            prop_assert!(parent.state.as_ref().is_none_or(|s| s.len() <= MAX_TRACESTATE));
        }
        prop_assert!(request.legacy_trace.as_ref().is_none_or(|t| t.len() <= MAX_LEGACY_TRACE_ID));
    }

    #[test]
    fn what_slingshot_publishes_from_any_message_fits_its_frame(
        message in message(),
        failure in failure(),
        limit in prop_oneof![Just(4096usize), Just(32 * 1024), Just(131_072)],
    ) {
        let request = Request::decode(&message);
        let next = Counts { attempt: request.counts.attempt.saturating_add(1), ..request.counts };
        // A retry fits or is refused; it never loses a producer's header.
        match fit(retry(&message, &next, &failure), Some(limit), Room::CutError) {
            Ok(fitted) => {
                prop_assert!(fitted.header_frame_size() <= limit);
                for (name, value) in &message.headers {
                    if !HEADERS.contains(&name.as_str()) && name != DELIVERY_COUNT_HEADER {
                        prop_assert!(fitted.headers.contains_key(name), "{} dropped", name);
                        if !matches!(value, HeaderValue::F32(_) | HeaderValue::F64(_)) {
                            prop_assert_eq!(fitted.headers.get(name), Some(value));
                        }
                    }
                }
                prop_assert!(!fitted.headers.contains_key(DELIVERY_COUNT_HEADER));
            }
            Err(too_large) => prop_assert!(too_large.size > limit),
        }
        // A dead letter always fits a frame of 8 KiB or more.
        let record = FailureRecord::new(&failure, 3, "svc", "in", std::time::UNIX_EPOCH);
        let dead = fit(record.encode(&message), Some(limit), Room::DropHeaders);
        if limit >= 8192 {
            let dead = dead.expect("a dead letter fits");
            prop_assert!(dead.header_frame_size() <= limit);
            prop_assert_eq!(&dead.body, &message.body);
            let replayed = replay(&dead);
            prop_assert!(!replayed.headers.contains_key(ERROR_HEADER));
            prop_assert_eq!(Request::decode(&replayed).counts.attempt, 1);
        }
        // A returned delivery carries its crashes.
        let back = returned(&message, 2);
        prop_assert_eq!(Request::decode(&back).counts.crashes, 2);
    }

    #[test]
    fn decisions_always_retry_or_dead_letter(failure in failure(), attempt in 1u32..10, outages in any::<u32>()) {
        let counts = Counts { attempt, outages, crashes: 0 };
        match decide(&failure, &counts, &Settings::default()) {
            Decision::Retry { next, .. } => {
                prop_assert!(next.attempt >= attempt);
                prop_assert!(!matches!(failure.kind, FailureKind::Malformed | FailureKind::CrashLoop | FailureKind::Oversized));
            }
            Decision::DeadLetter { attempts } => prop_assert_eq!(attempts, attempt),
        }
    }
}
