//! Replies: what a service tells a caller about one request, where it sends it, and when a caller's request expires.
//!
//! A request may carry two reply addresses:
//!
//! - the standard AMQP `reply_to` and `correlation_id` properties, as any
//!   AMQP RPC client sets them (RabbitMQ's direct reply-to included): the
//!   service that takes the request answers there, and its outputs do not
//!   carry the address on;
//! - the follow headers ([`FOLLOW_HEADER`], [`FOLLOW_ID_HEADER`]), set by
//!   [`crate::client::Client::submit`]: every stage answers there and copies
//!   them onto its outputs, so the caller hears from each stage the ID
//!   reaches.
//!
//! An answer is an [`Outcome`] as JSON, with the request's correlation ID:
//! `started` when `process` begins, then `done` once the outputs are
//! confirmed and the input is acknowledged, or `failed` once it was
//! dead-lettered. A request retried after a failure answers when its last
//! attempt ends. Replies are sent once and not retried: a caller that went
//! away misses them, and nothing else waits for them.
//!
//! A request with a [`DEADLINE_HEADER`] in the past is acknowledged without
//! running: its caller gave up. Callers set the AMQP `expiration` too, so
//! RabbitMQ drops the request from the queue by itself; the header covers
//! the in-process broker and a request already delivered.

use serde::{Deserialize, Serialize};

use crate::base::case::CaseValue;
use crate::base::failure::Failure;
use crate::broker::{HeaderValue, Message};

/// Header naming the queue every stage reports to while a caller follows
/// the request through the pipeline. Copied onto outputs.
pub const FOLLOW_HEADER: &str = "x-slingshot-follow";
/// Header with the correlation ID of a followed request's reports. Copied
/// onto outputs with [`FOLLOW_HEADER`].
pub const FOLLOW_ID_HEADER: &str = "x-slingshot-follow-id";
/// Header: when the caller gives up, in Unix milliseconds. A request taken
/// after it is acknowledged without running `process`.
pub const DEADLINE_HEADER: &str = "x-slingshot-deadline";
/// The AMQP `type` of a reply.
pub const REPLY_TYPE: &str = "slingshot.outcome";

/// Where a request's answers go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The queue (or direct reply-to address) answers are published to.
    pub queue: String,
    /// Copied into each answer's `correlation_id`.
    pub correlation_id: Option<String>,
}

/// The longest follow header value carried on: a queue name or a
/// correlation ID (AMQP short strings). Longer ones are ignored, so that a
/// producer's oversized header never rides on every output.
pub const MAX_FOLLOW: usize = 255;

/// RabbitMQ's direct reply-to pseudo-queue: a caller consumes it and sends
/// it as `reply_to`, which the broker turns into an address of its own
/// (`amq.rabbitmq.reply-to.<...>`). Published to as it is, from a channel
/// that does not consume it, RabbitMQ closes the channel.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Where the answers about `message` go: its `reply_to` property, and the
/// follow headers if it carries them (each at most once).
pub fn reply_addresses(message: &Message) -> Vec<ReplyTo> {
    let mut addresses = Vec::new();
    let usable = |q: &&String| !q.is_empty() && q.as_str() != DIRECT_REPLY_TO;
    if let Some(queue) = message.properties.reply_to.as_ref().filter(usable) {
        addresses.push(ReplyTo {
            queue: queue.clone(),
            correlation_id: message.properties.correlation_id.clone(),
        });
    }
    if let Some(follow) = follow_of(message) {
        if !addresses.contains(&follow) {
            addresses.push(follow);
        }
    }
    addresses
}

/// The follow address `message` carries, if any.
/// Headers longer than [`MAX_FOLLOW`] bytes, or not text, are ignored.
pub fn follow_of(message: &Message) -> Option<ReplyTo> {
    let text = |name: &str| {
        message
            .headers
            .get(name)
            .and_then(HeaderValue::as_str)
            .filter(|v| v.len() <= MAX_FOLLOW)
    };
    let queue = text(FOLLOW_HEADER).filter(|q| !q.is_empty() && *q != DIRECT_REPLY_TO)?;
    Some(ReplyTo {
        queue: queue.to_string(),
        correlation_id: text(FOLLOW_ID_HEADER).map(str::to_string),
    })
}

/// Copies the follow address of `inbound`, if it has a usable one (see
/// [`follow_of`]), onto an output.
pub fn carry_follow(inbound: &Message, output: &mut Message) {
    if let Some(follow) = follow_of(inbound) {
        output
            .headers
            .insert(FOLLOW_HEADER.into(), HeaderValue::Str(follow.queue));
        if let Some(id) = follow.correlation_id {
            output.headers.insert(FOLLOW_ID_HEADER.into(), HeaderValue::Str(id));
        }
    }
}

/// Now, in Unix milliseconds: the clock deadlines are set and read on.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether `message` carries a deadline that passed at `now_ms` (Unix
/// milliseconds). A deadline that is not a number is ignored.
pub fn expired(message: &Message, now_ms: u64) -> bool {
    message
        .headers
        .get(DEADLINE_HEADER)
        .and_then(HeaderValue::as_int)
        .is_some_and(|deadline| u64::try_from(deadline).is_ok_and(|d| d < now_ms))
}

/// How a request ended, or that it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// A service took it and `process` is about to run.
    Started,
    /// Processed: its objects are uploaded, its outputs confirmed, the
    /// request acknowledged.
    Done,
    /// Dead-lettered: it failed for good.
    Failed,
}

impl Status {
    /// `started`, `done` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Started => "started",
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }
}

/// One output sent to one queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteTaken {
    /// The case `process` gave the output, as the sys-map writes it.
    pub case: serde_json::Value,
    /// The queue it was sent to.
    pub queue: String,
    /// The output ID.
    pub id: u64,
}

/// An output whose case has no route: dropped, as routing does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unrouted {
    /// Its case.
    pub case: serde_json::Value,
    /// The output ID.
    pub id: u64,
}

/// An object the request wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectWritten {
    /// The real bucket name.
    pub bucket: String,
    /// The object key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Why a request was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReport {
    /// Its kind (`process`, `panic`, `malformed`, ...).
    pub kind: String,
    /// The error, with its causes.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// The dead-letter queue it went to.
    pub dead_letter_queue: String,
}

impl FailureReport {
    /// The report of `failure` after `attempts`, dead-lettered to `queue`.
    pub fn new(failure: &Failure, attempts: u32, queue: &str) -> Self {
        FailureReport {
            kind: failure.kind.as_str().to_string(),
            error: failure.message.clone(),
            attempts,
            dead_letter_queue: queue.to_string(),
        }
    }
}

/// What a service says about one request: the JSON body of a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The service that answers.
    pub service: String,
    /// The queue it took the request from.
    pub queue: String,
    /// The request ID; `None` for a body that is not one.
    pub id: Option<u64>,
    /// Started, done or failed.
    pub status: Status,
    /// The attempt this answer is about (1 for the first).
    pub attempt: u32,
    /// Once mode: the request was done before and `process` did not run
    /// again; its routes are not repeated here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// Every output sent, queue by queue.
    #[serde(default)]
    pub routes: Vec<RouteTaken>,
    /// Outputs whose case has no route.
    #[serde(default)]
    pub unrouted: Vec<Unrouted>,
    /// The objects written.
    #[serde(default)]
    pub objects: Vec<ObjectWritten>,
    /// The events published, as `<service>.<event>` routing keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Why it failed, when `status` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureReport>,
}

impl Outcome {
    /// An answer of `status` with nothing routed or written yet.
    pub fn new(service: &str, queue: &str, id: Option<u64>, status: Status, attempt: u32) -> Self {
        Outcome {
            service: service.to_string(),
            queue: queue.to_string(),
            id,
            status,
            attempt,
            duplicate: false,
            routes: Vec::new(),
            unrouted: Vec::new(),
            objects: Vec::new(),
            events: Vec::new(),
            failure: None,
        }
    }

    /// Records the routes of `outputs`: `queues_of` says where a case goes
    /// (`None`: nowhere).
    pub fn routed<'a>(
        mut self,
        outputs: &[(u64, CaseValue)],
        queues_of: impl Fn(&CaseValue) -> Option<&'a [String]>,
    ) -> Self {
        for (id, case) in outputs {
            match queues_of(case) {
                Some(queues) => self.routes.extend(queues.iter().map(|queue| RouteTaken {
                    case: case.to_json(),
                    queue: queue.clone(),
                    id: *id,
                })),
                None => self.unrouted.push(Unrouted {
                    case: case.to_json(),
                    id: *id,
                }),
            }
        }
        self
    }

    /// The reply message to `to`: this outcome as JSON.
    pub fn to_message(&self, to: &ReplyTo) -> Message {
        let mut message = Message::new(serde_json::to_vec(self).unwrap_or_default());
        message.properties.correlation_id = to.correlation_id.clone();
        message.properties.content_type = Some("application/json".into());
        message.properties.kind = Some(REPLY_TYPE.into());
        message
    }

    /// Reads a reply's body.
    pub fn from_json(body: &[u8]) -> Result<Outcome, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_answers_its_reply_to_and_its_follower_once_each() {
        let mut message = Message::id(7);
        assert!(reply_addresses(&message).is_empty());
        message.properties.reply_to = Some("amq.rabbitmq.reply-to.abc".into());
        message.properties.correlation_id = Some("c1".into());
        message
            .headers
            .insert(FOLLOW_HEADER.into(), HeaderValue::Str("replies".into()));
        message
            .headers
            .insert(FOLLOW_ID_HEADER.into(), HeaderValue::Str("f1".into()));
        let addresses = reply_addresses(&message);
        assert_eq!(addresses.len(), 2);
        assert_eq!(addresses[0].queue, "amq.rabbitmq.reply-to.abc");
        assert_eq!(addresses[1].correlation_id.as_deref(), Some("f1"));
        let mut output = Message::id(8);
        carry_follow(&message, &mut output);
        assert_eq!(follow_of(&output), Some(addresses[1].clone()));
        assert_eq!(output.properties.reply_to, None, "reply_to is not carried on");
    }

    #[test]
    fn oversized_follow_headers_and_the_bare_direct_reply_to_are_not_answered_or_carried() {
        let mut message = Message::id(7)
            .with_header(FOLLOW_HEADER, HeaderValue::Str("q".repeat(MAX_FOLLOW + 1)))
            .with_header(FOLLOW_ID_HEADER, HeaderValue::Str("f1".into()));
        message.properties.reply_to = Some(DIRECT_REPLY_TO.into());
        assert!(reply_addresses(&message).is_empty());
        let mut output = Message::id(8);
        carry_follow(&message, &mut output);
        assert!(output.headers.is_empty(), "{:?}", output.headers);
        message.headers.insert(FOLLOW_HEADER.into(), HeaderValue::Int(3));
        assert_eq!(follow_of(&message), None, "a follow address is text");
    }

    #[test]
    fn a_deadline_in_the_past_expires_the_request() {
        let message = Message::id(7).with_header(DEADLINE_HEADER, HeaderValue::Int(1_000));
        assert!(expired(&message, 1_001));
        assert!(!expired(&message, 1_000));
        assert!(!expired(&Message::id(7), u64::MAX));
        let text = Message::id(7).with_header(DEADLINE_HEADER, HeaderValue::Str("soon".into()));
        assert!(!expired(&text, u64::MAX));
    }

    #[test]
    fn an_outcome_reads_back_as_written_with_cases_as_json() {
        let routes = vec!["a".to_string(), "b".to_string()];
        let outcome = Outcome::new("s", "q", Some(1), Status::Done, 1)
            .routed(&[(2, CaseValue::Bool(true)), (3, CaseValue::Int(7))], |case| {
                (*case == CaseValue::Bool(true)).then_some(routes.as_slice())
            });
        assert_eq!(outcome.routes.len(), 2);
        assert_eq!(outcome.unrouted[0].case, serde_json::json!(7));
        let message = outcome.to_message(&ReplyTo {
            queue: "r".into(),
            correlation_id: Some("c".into()),
        });
        assert_eq!(message.properties.correlation_id.as_deref(), Some("c"));
        assert_eq!(Outcome::from_json(&message.body).unwrap(), outcome);
        let text = String::from_utf8(message.body.to_vec()).unwrap();
        assert!(text.contains(r#""status":"done""#), "{text}");
        assert!(!text.contains("duplicate"), "{text}");
    }
}
