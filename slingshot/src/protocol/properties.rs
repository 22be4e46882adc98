//! Property tests of the message format: arbitrary bodies, header tables and
//! properties, as any producer may publish them, decode without panicking, and
//! whatever slingshot publishes from them fits its frame.
//!
//! Each property runs [`CASES`] cases with a random seed; together they take
//! well under a second in a debug build
//! (`cargo test -p slingshot --lib protocol::properties`).

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::*;
use crate::broker::message::strategies::message;
use crate::broker::HeaderValue;

/// Cases per property.
const CASES: u32 = 256;

fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::with_cases(CASES)
    }
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
                prop_assert!(!matches!(failure.kind, FailureKind::Malformed | FailureKind::CrashLoop | FailureKind::Oversized | FailureKind::InvalidInput));
            }
            Decision::DeadLetter { attempts } => prop_assert_eq!(attempts, attempt),
        }
    }
}
