//! The documents of the sys-map's endpoints as the original crate reads them,
//! deserialized with serde and validated: unknown fields ignored, each field
//! of the broker, database and object-storage endpoints an array holding one
//! value.

use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::wiring::{Encryption, Route, ServiceWiring, Subscription};
use crate::base::case::CaseValue;

/// The documents of the `rabbitmq`, `db` and `object-storage` endpoints, as
/// the original reads them: unknown fields are ignored, each field is an
/// array holding exactly one value.
#[derive(Deserialize)]
#[serde(expecting = "an object")]
pub(super) struct RabbitMqDoc {
    /// The nodes of a cluster, or the one broker.
    pub(super) host: Many<Text>,
    pub(super) port: Many<Port>,
    pub(super) username: One<Text>,
    pub(super) pass: One<Text>,
}

#[derive(Deserialize)]
#[serde(expecting = "an object")]
pub(super) struct DbDoc {
    pub(super) host: One<Text>,
    pub(super) port: One<Port>,
    pub(super) username: One<Text>,
    pub(super) database: One<Text>,
    pub(super) pass: One<Text>,
}

#[derive(Deserialize)]
#[serde(expecting = "an object")]
pub(super) struct ObjectStorageDoc {
    pub(super) host: One<Text>,
    #[serde(rename = "pass:access-key")]
    pub(super) access_key: One<Text>,
    #[serde(rename = "pass:secret-key")]
    pub(super) secret_key: One<Text>,
}

/// An array holding exactly one `T`. What is found instead is described by
/// its shape only: these fields may hold secret references.
pub(super) struct One<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for One<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneVisitor<T> {
            type Value = One<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array holding exactly one value")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<One<T>, A::Error> {
                let Some(first) = seq.next_element::<T>()? else {
                    return Err(de::Error::invalid_length(0, &self));
                };
                let mut more = 0;
                while seq.next_element::<de::IgnoredAny>()?.is_some() {
                    more += 1;
                }
                match more {
                    0 => Ok(One(first)),
                    n => Err(de::Error::invalid_length(1 + n, &self)),
                }
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<One<T>, E> {
                Err(E::invalid_type(Unexpected::Other("a string"), &self))
            }
        }

        deserializer.deserialize_any(OneVisitor(std::marker::PhantomData))
    }
}

/// A non-empty array of `T`.
pub(super) struct Many<T>(pub(super) Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Many<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ManyVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ManyVisitor<T> {
            type Value = Many<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array holding one value or more")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Many<T>, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element::<T>()? {
                    values.push(value);
                }
                match values.is_empty() {
                    true => Err(de::Error::invalid_length(0, &self)),
                    false => Ok(Many(values)),
                }
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Many<T>, E> {
                Err(E::invalid_type(Unexpected::Other("a string"), &self))
            }
        }

        deserializer.deserialize_any(ManyVisitor(std::marker::PhantomData))
    }
}

/// A non-empty string.
pub(super) struct Text(pub(super) String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Err(de::Error::invalid_value(Unexpected::Str(""), &"a non-empty string"));
        }
        Ok(Text(text))
    }
}

/// A port number, 1-65535, written as a number or a string.
pub(super) struct Port(pub(super) u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;

        impl Visitor<'_> for PortVisitor {
            type Value = Port;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port number (1-65535)")
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Port, E> {
                match u16::try_from(n) {
                    Ok(port) if port != 0 => Ok(Port(port)),
                    _ => Err(E::invalid_value(Unexpected::Unsigned(n), &self)),
                }
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Port, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(n), &self)),
                }
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Port, E> {
                match text.trim().parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(Unexpected::Str(text), &self)),
                }
            }
        }

        deserializer.deserialize_any(PortVisitor)
    }
}

pub(super) fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    let text = text.trim();
    if text.is_empty() {
        return "an empty body".into();
    }
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("`{}…`", &text[..cut]),
        None => format!("`{text}`"),
    }
}

pub(super) const WIRING_SHAPE: &str =
    r#"{"in": "<queue>", "out": [{"case": <bool|integer|string>, "queues": ["<queue>", ...]}, ...]}"#;

/// The `{name}` endpoint's document, as the original reads it: unknown
/// fields ignored, any JSON value as a case.
#[derive(Deserialize)]
#[serde(expecting = "an object with \"in\" and \"out\"")]
pub(super) struct WiringDoc {
    #[serde(rename = "in")]
    inbound: String,
    #[serde(default)]
    out: Vec<OutDoc>,
    /// slingshot's own optional field: the topic exchange of its events.
    #[serde(default)]
    events: Option<String>,
    /// slingshot's own optional field: events its queue is bound to.
    #[serde(default)]
    subscribe: Vec<SubscribeDoc>,
    /// slingshot's own optional field: encrypted bucket references.
    #[serde(default)]
    encrypt: std::collections::BTreeMap<String, EncryptDoc>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with \"keys\" ({\"<key ID>\": \"<secret ref>\", ...}), \"write\" (a key ID) and optionally \"plain\" (\"reject\" or \"read\")"
)]
struct EncryptDoc {
    keys: std::collections::BTreeMap<String, String>,
    write: String,
    #[serde(default)]
    plain: PlainDoc,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum PlainDoc {
    #[default]
    Reject,
    Read,
}

#[derive(Deserialize)]
#[serde(expecting = "an object with \"exchange\" and \"events\"")]
struct SubscribeDoc {
    exchange: String,
    events: Vec<String>,
}

#[derive(Deserialize)]
#[serde(expecting = "an object with \"case\" and \"queues\"")]
struct OutDoc {
    case: Value,
    queues: Vec<String>,
}

impl WiringDoc {
    /// Checks the queue names and routes the cases as the original does.
    pub(super) fn validate(self) -> Result<ServiceWiring, String> {
        let mut warnings = Vec::new();
        check_queue_name(&self.inbound, &mut warnings).map_err(|why| format!("in: {why}"))?;
        let mut routes: Vec<Route> = Vec::with_capacity(self.out.len());
        // Where each route's entry is, for messages about duplicates.
        let mut sources: Vec<usize> = Vec::with_capacity(self.out.len());
        for (i, entry) in self.out.into_iter().enumerate() {
            for (j, queue) in entry.queues.iter().enumerate() {
                check_queue_name(queue, &mut warnings).map_err(|why| format!("out[{i}].queues[{j}]: {why}"))?;
            }
            // The original keys its routes by the case's JSON text, so it
            // takes any JSON value; one that is not a bool, an integer or a
            // string can never equal a case variable, so its entry is unused.
            let Some(case) = CaseValue::from_json(&entry.case) else {
                warnings.push(format!(
                    "out[{i}].case is {}, which no case variable can equal (a case is a bool, an integer or a string): entry ignored",
                    entry.case
                ));
                continue;
            };
            match routes.iter().position(|r| r.case == case) {
                // As the original did: each entry replaces an earlier one
                // with the same case, so the last one wins.
                Some(earlier) => {
                    warnings.push(format!(
                        "case {case} is listed at out[{}] and again at out[{i}]; as in the original slingshot-microservice the last entry wins: case {case} routes to {:?}, not to {:?}",
                        sources[earlier], entry.queues, routes[earlier].queues
                    ));
                    routes[earlier].queues = entry.queues;
                    sources[earlier] = i;
                }
                None => {
                    routes.push(Route {
                        case,
                        queues: entry.queues,
                    });
                    sources.push(i);
                }
            }
        }
        if let Some(exchange) = &self.events {
            check_exchange_name(exchange).map_err(|why| format!("events: {why}"))?;
        }
        let mut subscriptions = Vec::with_capacity(self.subscribe.len());
        for (i, entry) in self.subscribe.into_iter().enumerate() {
            check_exchange_name(&entry.exchange).map_err(|why| format!("subscribe[{i}].exchange: {why}"))?;
            if entry.events.is_empty() {
                return Err(format!(
                    "subscribe[{i}].events is empty: name at least one event pattern"
                ));
            }
            for (j, pattern) in entry.events.iter().enumerate() {
                check_event_pattern(pattern).map_err(|why| format!("subscribe[{i}].events[{j}]: {why}"))?;
            }
            subscriptions.push(Subscription {
                exchange: entry.exchange,
                events: entry.events,
            });
        }
        let mut encrypt = Vec::with_capacity(self.encrypt.len());
        for (reference, entry) in self.encrypt {
            encrypt.push(check_encryption(reference, entry)?);
        }
        Ok(ServiceWiring {
            inbound: self.inbound,
            routes,
            warnings,
            events: self.events,
            subscriptions,
            encrypt,
        })
    }
}

/// One `encrypt` entry checked: key IDs that fit a header and S3 metadata,
/// secret references, and a write key among the keys.
fn check_encryption(reference: String, entry: EncryptDoc) -> Result<Encryption, String> {
    if reference.is_empty() {
        return Err("encrypt: an empty bucket reference".into());
    }
    let at = format!("encrypt.{reference}");
    if entry.keys.is_empty() {
        return Err(format!(
            "{at}.keys is empty: name at least one key ID and its secret reference"
        ));
    }
    for (id, secret) in &entry.keys {
        let fits = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !fits {
            return Err(format!(
                "{at}.keys: key ID {id:?} is not 1 to 64 characters of a-z, A-Z, 0-9, '.', '_', '-'"
            ));
        }
        if secret.trim().is_empty() {
            return Err(format!("{at}.keys.{id}: an empty secret reference"));
        }
    }
    if !entry.keys.contains_key(&entry.write) {
        return Err(format!(
            "{at}.write: key ID {:?} is not one of {at}.keys ({})",
            entry.write,
            entry.keys.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(Encryption {
        reference,
        keys: entry.keys.into_iter().collect(),
        write: entry.write,
        read_plain: entry.plain == PlainDoc::Read,
    })
}

/// Whether `name` can be an exchange of events: RabbitMQ's rules for
/// names, and not one of its own (`amq.`) or the default exchange.
fn check_exchange_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an empty exchange name is the default exchange, which has no topics".into());
    }
    if name.len() > 255 {
        return Err(format!("{} bytes, over RabbitMQ's 255", name.len()));
    }
    if name.starts_with("amq.") {
        return Err(format!("{name:?}: names starting with amq. are RabbitMQ's own"));
    }
    Ok(())
}

/// Whether `pattern` can bind to events: dot-separated words, each `*`,
/// `#` or a name.
fn check_event_pattern(pattern: &str) -> Result<(), String> {
    let words_ok = pattern.split('.').all(|word| {
        word == "*"
            || word == "#"
            || (!word.is_empty() && !word.contains(['*', '#']) && !word.contains(char::is_whitespace))
    });
    if pattern.is_empty() || pattern.len() > 255 || !words_ok {
        return Err(format!(
            "{pattern:?} is not a pattern of <service>.<event> keys (dot-separated words, * for one word, # for any)"
        ));
    }
    Ok(())
}

/// Whether `name` can be a queue name: RabbitMQ refuses empty names (it
/// would make up one), names over 255 bytes and names starting with `amq.`.
/// Anything else it accepts, and so does the original crate; a name that is
/// probably a typo (whitespace or control characters) adds a warning.
pub fn check_queue_name(name: &str, warnings: &mut Vec<String>) -> Result<(), String> {
    if name.is_empty() {
        return Err("a queue name cannot be empty".into());
    }
    if name.len() > 255 {
        return Err(format!("{name:?} is longer than 255 bytes"));
    }
    if name.starts_with("amq.") {
        return Err(format!("{name:?} starts with \"amq.\", which RabbitMQ reserves"));
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || c.is_whitespace()) {
        warnings.push(format!(
            "queue name {name:?} contains {c:?}; RabbitMQ accepts it, but is it a typo?"
        ));
    }
    Ok(())
}

pub(super) fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !name.starts_with(['.', '-'])
        && !name.ends_with(['.', '-'])
}
