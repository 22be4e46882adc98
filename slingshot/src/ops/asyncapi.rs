//! The pipeline as an AsyncAPI 3.0 document: channels (queues), operations
//! (each service's receive, sends by case, retries and dead letters), the
//! message schema and AMQP bindings, built from a [`Topology`].
//!
//! The document describes the wire contract [`crate::protocol`] implements,
//! so that services written with other tools (FastStream, Celery, ...) can
//! join the pipeline from it: a message's body is its request ID in decimal
//! ASCII, published persistently to the default exchange with the queue name
//! as routing key, and its headers are the ones listed in
//! [`crate::protocol::HEADERS`]. Nothing here does I/O; `asyncapi` on the generated binary's
//! command line reads the sys-map and prints [`document`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::base::case::CaseValue;
use crate::base::failure::FailureKind;
use crate::ops::topology::Topology;
use crate::protocol::{
    dead_letter_queue, ATTEMPT_HEADER, CRASHES_HEADER, DEADLINE_HEADER, DROPPED_HEADER, ERROR_HEADER,
    ERROR_KIND_HEADER, EVENT_DATA_HEADER, EVENT_HEADER, EVENT_SERVICE_HEADER, FAILED_AT_HEADER, FOLLOW_HEADER,
    FOLLOW_ID_HEADER, MAX_LEGACY_TRACE_ID, MAX_TRACESTATE, ORIGINAL_EXPIRATION_HEADER, OUTAGES_HEADER, QUEUE_HEADER,
    SERVICE_HEADER, TRACEPARENT_HEADER, TRACESTATE_HEADER, TRACE_HEADER,
};

/// The AsyncAPI version of the documents made here.
pub(crate) const ASYNCAPI_VERSION: &str = "3.0.0";
/// The version of the AMQP bindings used.
const AMQP_BINDING_VERSION: &str = "0.3.0";
/// What the document says beyond the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    /// The title: usually the service whose binary printed it.
    pub title: String,
    /// The document's own version (`info.version`).
    pub version: String,
    /// Where the services' wiring came from, for the description.
    pub source: Option<String>,
    /// Whether the services declare their queues durable (queue mode
    /// `durable`) or transient (`compatible`). Dead-letter queues are always
    /// durable.
    pub durable: bool,
    /// The RabbitMQ virtual host of the queues (`SLINGSHOT_AMQP_VHOST`).
    pub vhost: String,
    /// The RabbitMQ server as `host:port`, when the sys-map names one.
    pub server: Option<String>,
}

impl Options {
    /// Options for a document titled `title`: durable queues in vhost `/`,
    /// no server, this crate's version.
    pub(crate) fn new(title: &str) -> Self {
        Options {
            title: title.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            source: None,
            durable: true,
            vhost: "/".into(),
            server: None,
        }
    }
}

/// The AsyncAPI 3.0 document of the services in `topology`.
///
/// - One channel per queue (the services' inbound queues, every queue a
///   route names, and each inbound queue's dead-letter queue), bound to
///   AMQP as a queue.
/// - Per service: `receive` on its inbound queue; one `send` per case and
///   queue its routes name (the case in `x-slingshot-case`); `retry`, a send
///   back to its inbound queue; `deadLetter`, a send to its dead-letter
///   queue. Its bucket references are in `x-slingshot-buckets` of its
///   receive operation.
/// - Two messages: `request` (the ID and the trace and retry headers) and
///   `deadLetter` (the same with the failure record).
pub(crate) fn document(topology: &Topology, options: &Options) -> Value {
    let mut ids = ChannelIds::default();
    let mut channels = Map::new();
    let mut operations = Map::new();
    // Each queue once; the maps keep their keys sorted.
    let mut add_channel = |channels: &mut Map<String, Value>, queue: &str, dead_letter: bool| -> String {
        let id = ids.id(queue);
        if !channels.contains_key(&id) {
            channels.insert(id.clone(), channel(queue, dead_letter, options));
        }
        id
    };
    // Exchanges get IDs of their own, apart from queues of the same name.
    let mut exchange_ids = ChannelIds::default();
    let add_exchange = |channels: &mut Map<String, Value>, ids: &mut ChannelIds, exchange: &str| -> String {
        let id = format!("exchange.{}", ids.id(exchange));
        if !channels.contains_key(&id) {
            channels.insert(id.clone(), exchange_channel(exchange, options));
        }
        id
    };
    // The typed objects' schemas, hoisted into `components.schemas`.
    let mut object_schemas = Map::new();
    for service in &topology.services {
        let name = &service.name;
        let inbound = add_channel(&mut channels, &service.wiring.inbound, false);
        let mut receive = operation(
            "receive",
            &inbound,
            "request",
            &format!("{name} consumes request IDs from {}", service.wiring.inbound),
            json!({"ack": true, "bindingVersion": AMQP_BINDING_VERSION}),
        );
        if !service.buckets.is_empty() {
            let buckets: Map<String, Value> = service
                .buckets
                .iter()
                .map(|(reference, bucket)| (reference.clone(), Value::String(bucket.clone())))
                .collect();
            receive["x-slingshot-buckets"] = Value::Object(buckets);
        }
        if !service.objects.is_empty() {
            let objects: Vec<Value> = service
                .objects
                .iter()
                .map(|object| {
                    let id = hoist(&object.type_name, &object.schema, &mut object_schemas);
                    let bucket = service.buckets.iter().find(|(r, _)| *r == object.reference);
                    json!({
                        "reference": object.reference,
                        "bucket": bucket.map(|(_, b)| b),
                        "direction": object.direction.as_str(),
                        "type": object.type_name,
                        "key": "the request ID, in decimal",
                        "contentType": "application/json",
                        "schema": { "$ref": format!("#/components/schemas/{}", pointer_escape(&id)) },
                    })
                })
                .collect();
            receive["x-slingshot-objects"] = Value::Array(objects);
        }
        operations.insert(operation_id(&[name, "receive"]), receive);

        for route in &service.wiring.routes {
            for queue in &route.queues {
                let channel = add_channel(&mut channels, queue, false);
                let mut send = operation(
                    "send",
                    &channel,
                    "request",
                    &format!("{name} sends each output with case {} to {queue}", route.case),
                    persistent(),
                );
                send["x-slingshot-case"] = case_json(&route.case);
                insert_unique(
                    &mut operations,
                    operation_id(&[name, "send", &case_label(&route.case), queue]),
                    send,
                );
            }
        }

        operations.insert(
            operation_id(&[name, "retry"]),
            operation(
                "send",
                &inbound,
                "request",
                &format!(
                    "{name} sends a failed request back to {} with its attempt or outage count raised and the error",
                    service.wiring.inbound
                ),
                persistent(),
            ),
        );
        if let Some(exchange) = &service.wiring.events {
            let channel = add_exchange(&mut channels, &mut exchange_ids, exchange);
            operations.insert(
                operation_id(&[name, "emit"]),
                operation(
                    "send",
                    &channel,
                    "event",
                    &format!(
                        "{name} publishes the events its process emits to {exchange}, with routing key {name}.<event>"
                    ),
                    persistent(),
                ),
            );
        }
        for subscription in &service.wiring.subscriptions {
            let channel = add_exchange(&mut channels, &mut exchange_ids, &subscription.exchange);
            let mut receive = operation(
                "receive",
                &channel,
                "event",
                &format!(
                    "{name} receives the events {} through its queue {}, bound to {}",
                    subscription.events.join(", "),
                    service.wiring.inbound,
                    subscription.exchange
                ),
                json!({"ack": true, "bindingVersion": AMQP_BINDING_VERSION}),
            );
            receive["x-slingshot-bindings"] = json!(subscription.events);
            receive["x-slingshot-queue"] = json!(service.wiring.inbound);
            insert_unique(
                &mut operations,
                operation_id(&[name, "subscribe", &subscription.exchange]),
                receive,
            );
        }
        let dead_queue = dead_letter_queue(&service.wiring.inbound);
        let dead = add_channel(&mut channels, &dead_queue, true);
        operations.insert(
            operation_id(&[name, "deadLetter"]),
            operation(
                "send",
                &dead,
                "deadLetter",
                &format!("{name} gives up on a request: a malformed body, or its last attempt failed"),
                persistent(),
            ),
        );
    }

    let mut description = String::from(
        "Request IDs flowing between slingshot services over RabbitMQ. A message's body is the request ID in \
         decimal ASCII; it is published persistently to the default exchange with the queue name as routing key. \
         A service acknowledges a delivery only after it processed it, uploaded what it wrote and the broker \
         confirmed its outputs.",
    );
    if let Some(source) = &options.source {
        description.push_str(&format!(" Generated by slingshot from {source}."));
    }
    let mut doc = json!({
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": options.title,
            "version": options.version,
            "description": description,
        },
        "defaultContentType": "text/plain",
        "channels": channels,
        "operations": operations,
        "components": components(),
    });
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.extend(object_schemas);
    }
    if let Some(server) = &options.server {
        doc["servers"] = json!({
            "rabbitmq": {
                "host": server,
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The broker the sys-map's `rabbitmq` endpoint names.",
            }
        });
    }
    doc
}

/// Puts a typed object's JSON Schema into `schemas` (a document's
/// `components.schemas`) under an ID from its type's name (`object.Invoice`), and returns the
/// ID. Its `$defs` become components of their own, `<ID>.<name>`, their
/// references rewritten to point there: a schema's `#/$defs/...` would
/// otherwise resolve against the AsyncAPI document. The same schema twice
/// (one stage writes what the next reads) gets one ID; another schema of the
/// same name gets a numbered one.
fn hoist(type_name: &str, schema: &Value, schemas: &mut Map<String, Value>) -> String {
    // Apart from the document's own schemas (`requestId`...).
    let base = format!("object.{}", sanitize(type_name));
    let mut n = 1;
    loop {
        let id = if n == 1 { base.clone() } else { format!("{base}_{n}") };
        let (root, defs) = rewrite_defs(schema, &id);
        match schemas.get(&id) {
            Some(existing) if *existing != root => n += 1,
            _ => {
                schemas.insert(id.clone(), root);
                schemas.extend(defs);
                return id;
            }
        }
    }
}

/// `schema` without `$schema` and `$defs`, with `#/$defs/X` references
/// rewritten to `#/components/schemas/<id>.X`; and the definitions so
/// rewritten, by their new IDs.
fn rewrite_defs(schema: &Value, id: &str) -> (Value, Vec<(String, Value)>) {
    fn rewrite(value: &mut Value, id: &str) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    match (key.as_str(), v.as_str()) {
                        ("$ref", Some(target)) if target.starts_with("#/$defs/") => {
                            let name = &target["#/$defs/".len()..];
                            *v = Value::String(format!("#/components/schemas/{id}.{name}"));
                        }
                        _ => rewrite(v, id),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, id)),
            _ => {}
        }
    }
    let mut root = schema.clone();
    let mut defs = Vec::new();
    if let Some(map) = root.as_object_mut() {
        map.remove("$schema");
        if let Some(Value::Object(found)) = map.remove("$defs") {
            for (name, mut def) in found {
                rewrite(&mut def, id);
                defs.push((format!("{id}.{}", sanitize(&name)), def));
            }
        }
    }
    rewrite(&mut root, id);
    (root, defs)
}

/// Channel IDs for queue names: the name where it is a valid, unused ID
/// (letters, digits, `.`, `-`, `_`), else the name with other characters as
/// `_` and a number to keep it unique.
#[derive(Default)]
struct ChannelIds {
    by_queue: BTreeMap<String, String>,
    used: BTreeSet<String>,
}

impl ChannelIds {
    fn id(&mut self, queue: &str) -> String {
        if let Some(id) = self.by_queue.get(queue) {
            return id.clone();
        }
        let base = sanitize(queue);
        let mut id = base.clone();
        let mut n = 2;
        while self.used.contains(&id) {
            id = format!("{base}_{n}");
            n += 1;
        }
        self.used.insert(id.clone());
        self.by_queue.insert(queue.to_string(), id.clone());
        id
    }
}

/// `s` with every character that may not appear in an AsyncAPI ID as `_`.
fn sanitize(s: &str) -> String {
    let id: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id.is_empty() {
        "_".into()
    } else {
        id
    }
}

/// An operation ID from its parts, joined by `.`.
fn operation_id(parts: &[&str]) -> String {
    parts.iter().map(|p| sanitize(p)).collect::<Vec<_>>().join(".")
}

/// Inserts `operation` as `id`, or as `id_2`, `id_3`... if that is taken
/// (case `true` and case `"true"` both read `true`).
fn insert_unique(operations: &mut Map<String, Value>, id: String, operation: Value) {
    let mut unique = id.clone();
    let mut n = 2;
    while operations.contains_key(&unique) {
        unique = format!("{id}_{n}");
        n += 1;
    }
    operations.insert(unique, operation);
}

/// A case as an ID part: `true`, `0`, `small` (strings without quotes).
fn case_label(case: &CaseValue) -> String {
    match case {
        CaseValue::Str(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// A case as the sys-map's JSON writes it.
fn case_json(case: &CaseValue) -> Value {
    match case {
        CaseValue::Bool(b) => Value::Bool(*b),
        CaseValue::Int(i) => i64::try_from(*i)
            .map(Value::from)
            .or_else(|_| u64::try_from(*i).map(Value::from))
            .unwrap_or_else(|_| Value::String(i.to_string())),
        CaseValue::Huge(u) => Value::String(u.to_string()),
        CaseValue::Str(s) => Value::String(s.to_string()),
    }
}

fn channel(queue: &str, dead_letter: bool, options: &Options) -> Value {
    let message = if dead_letter { "deadLetter" } else { "request" };
    let description = if dead_letter {
        "Dead letters: requests a service gave up on, with the failure record in their headers. \
         `dead-letters list` shows them, `dead-letters replay` sends them back."
            .to_string()
    } else {
        format!("The queue {queue:?} on the default exchange.")
    };
    // An address with braces would read as a parameter; the queue binding
    // still names the queue.
    let address = if queue.contains(['{', '}']) {
        Value::Null
    } else {
        Value::String(queue.to_string())
    };
    json!({
        "address": address,
        "description": description,
        "messages": { message: { "$ref": format!("#/components/messages/{message}") } },
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": queue,
                    "durable": dead_letter || options.durable,
                    "exclusive": false,
                    "autoDelete": false,
                    "vhost": options.vhost,
                },
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        }
    })
}

/// The channel of a topic exchange of events.
fn exchange_channel(exchange: &str, options: &Options) -> Value {
    json!({
        "address": Value::Null,
        "description": format!(
            "The topic exchange {exchange:?}: events, with routing keys <service>.<event>. A service subscribes by \
             binding its inbound queue to key patterns (`subscribe` in its sys-map entry)."
        ),
        "messages": { "event": { "$ref": "#/components/messages/event" } },
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {
                    "name": exchange,
                    "type": "topic",
                    "durable": true,
                    "autoDelete": false,
                    "vhost": options.vhost,
                },
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        }
    })
}

fn operation(action: &str, channel: &str, message: &str, summary: &str, amqp: Value) -> Value {
    let channel_ref = format!("#/channels/{}", pointer_escape(channel));
    json!({
        "action": action,
        "channel": { "$ref": channel_ref },
        "summary": summary,
        "messages": [{ "$ref": format!("{channel_ref}/messages/{message}") }],
        "bindings": { "amqp": amqp },
    })
}

/// The AMQP operation binding of every publish: persistent, delivered.
fn persistent() -> Value {
    json!({"deliveryMode": 2, "mandatory": false, "bindingVersion": AMQP_BINDING_VERSION})
}

/// `s` as one JSON Pointer token (RFC 6901).
fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn components() -> Value {
    let count =
        |description: &str, minimum: u32| json!({"type": "integer", "minimum": minimum, "description": description});
    let text = |description: &str| json!({"type": "string", "description": description});
    let mut request_headers = Map::new();
    request_headers.insert(
        TRACEPARENT_HEADER.into(),
        json!({
            "type": "string",
            "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            "description": "W3C trace context: version-traceid-parentid-flags. Continues the trace of the request that produced this one.",
            "examples": ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
        }),
    );
    request_headers.insert(
        TRACESTATE_HEADER.into(),
        text(&format!(
            "W3C trace context: vendor-specific trace state, passed on unchanged when present and at most \
             {MAX_TRACESTATE} bytes."
        )),
    );
    request_headers.insert(
        TRACE_HEADER.into(),
        text(&format!(
            "slingshot's earlier trace ID, before W3C trace context: read, and carried on to the outputs when at \
             most {MAX_LEGACY_TRACE_ID} bytes; written on every output only under SLINGSHOT_LEGACY_TRACE_HEADER=true."
        )),
    );
    request_headers.insert(
        ATTEMPT_HEADER.into(),
        count("The attempt this delivery is on; absent means 1.", 1),
    );
    request_headers.insert(
        OUTAGES_HEADER.into(),
        count(
            "Retries caused by outages of S3, the database or the broker; they do not use up attempts.",
            0,
        ),
    );
    request_headers.insert(
        CRASHES_HEADER.into(),
        count(
            "Deliveries of this message that ended with the process dying while processing it; at \
             SLINGSHOT_MAX_CRASHES it is dead-lettered as crash-loop.",
            0,
        ),
    );
    request_headers.insert(
        FOLLOW_HEADER.into(),
        text("A caller follows this request through the pipeline: each stage reports its outcome to this queue and copies the header onto its outputs."),
    );
    request_headers.insert(
        FOLLOW_ID_HEADER.into(),
        text("The correlation ID of the reports sent to x-slingshot-follow."),
    );
    request_headers.insert(
        DEADLINE_HEADER.into(),
        json!({"type": "integer", "description": "When the caller gives up, Unix milliseconds: taken later, the request is acknowledged without running."}),
    );
    request_headers.insert(
        EVENT_HEADER.into(),
        text("On an event: its name (progress, invalid-input, ...)."),
    );
    request_headers.insert(
        EVENT_SERVICE_HEADER.into(),
        text("On an event: the service that emitted it."),
    );
    request_headers.insert(EVENT_DATA_HEADER.into(), text("On an event: its data, if it has any."));
    request_headers.insert(ERROR_HEADER.into(), text("On a retry or dead letter: the last error."));
    request_headers.insert(
        ERROR_KIND_HEADER.into(),
        json!({
            "type": "string",
            "enum": FailureKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "description": "On a retry or dead letter: the kind of the last error.",
        }),
    );
    let mut dead_headers = request_headers.clone();
    dead_headers.insert(SERVICE_HEADER.into(), text("The service that gave up."));
    dead_headers.insert(QUEUE_HEADER.into(), text("The queue the request came from."));
    dead_headers.insert(
        FAILED_AT_HEADER.into(),
        json!({"type": "integer", "description": "When it was dead-lettered, Unix seconds."}),
    );
    dead_headers.insert(
        DROPPED_HEADER.into(),
        text("The producer's headers dropped so that the dead letter fits one frame, as `name (bytes), ...`."),
    );
    dead_headers.insert(
        ORIGINAL_EXPIRATION_HEADER.into(),
        text("The message's `expiration`, which a dead letter does not keep; a replay restores it."),
    );
    let headers = |properties: Map<String, Value>, required: &[&str]| {
        json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": true,
        })
    };
    let payload = json!({
        "type": "string",
        "pattern": "^\\s*\\+?[0-9]{1,20}\\s*$",
        "description": "The request ID, a u64, in decimal ASCII.",
        "examples": ["42"],
    });
    json!({
        "schemas": {
            "requestId": payload,
            "requestHeaders": headers(request_headers, &[]),
            "deadLetterHeaders": headers(
                dead_headers,
                &[ERROR_HEADER, ERROR_KIND_HEADER, ATTEMPT_HEADER, SERVICE_HEADER, QUEUE_HEADER, FAILED_AT_HEADER],
            ),
        },
        "messages": {
            "request": {
                "name": "request",
                "title": "Request ID",
                "summary": "A request: its ID in the body, its trace and retry state in the headers.",
                "contentType": "text/plain",
                "payload": { "$ref": "#/components/schemas/requestId" },
                "headers": { "$ref": "#/components/schemas/requestHeaders" },
                "correlationId": {
                    "description": "The W3C trace context the request travels in.",
                    "location": format!("$message.header#/{TRACEPARENT_HEADER}"),
                },
                "bindings": { "amqp": { "bindingVersion": AMQP_BINDING_VERSION } },
                "examples": [{ "name": "first attempt", "payload": "42", "headers": {
                    TRACEPARENT_HEADER: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                } }],
            },
            "event": {
                "name": "event",
                "title": "Event",
                "summary": "An event a stage emitted about a request: the request ID in the body, the event's name, service and data in the headers.",
                "contentType": "text/plain",
                "payload": { "$ref": "#/components/schemas/requestId" },
                "headers": { "$ref": "#/components/schemas/requestHeaders" },
                "bindings": { "amqp": { "bindingVersion": AMQP_BINDING_VERSION } },
                "examples": [{ "name": "progress", "payload": "42", "headers": {
                    EVENT_HEADER: "progress", EVENT_SERVICE_HEADER: "tokenize", EVENT_DATA_HEADER: "50%",
                } }],
            },
            "deadLetter": {
                "name": "deadLetter",
                "title": "Dead letter",
                "summary": "A request a service gave up on, with the failure record in its headers.",
                "contentType": "text/plain",
                "payload": { "type": "string", "description": "The body as it arrived: normally a request ID, anything for a malformed message." },
                "headers": { "$ref": "#/components/schemas/deadLetterHeaders" },
                "bindings": { "amqp": { "bindingVersion": AMQP_BINDING_VERSION } },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::topology::ServiceNode;
    use crate::sysmap::{Route, ServiceWiring};

    fn pipeline() -> Topology {
        let route = |case: CaseValue, queues: &[&str]| Route {
            case,
            queues: queues.iter().map(|q| q.to_string()).collect(),
        };
        Topology {
            services: vec![
                ServiceNode {
                    name: "ingest".into(),
                    wiring: ServiceWiring {
                        inbound: "ingest".into(),
                        routes: vec![
                            route(CaseValue::Bool(true), &["resize", "audit/log"]),
                            route(CaseValue::Bool(false), &["audit/log"]),
                        ],
                        warnings: vec![],
                        ..ServiceWiring::default()
                    },
                    buckets: vec![("in".into(), "uploads".into())],
                    objects: vec![],
                },
                ServiceNode {
                    name: "resize".into(),
                    wiring: ServiceWiring {
                        inbound: "resize".into(),
                        routes: vec![
                            route(CaseValue::Str("small".into()), &["audit_log"]),
                            route(CaseValue::Bool(true), &["audit_log"]),
                            route(CaseValue::Str("true".into()), &["audit_log"]),
                        ],
                        warnings: vec![],
                        ..ServiceWiring::default()
                    },
                    buckets: vec![],
                    objects: vec![],
                },
            ],
        }
    }

    /// Follows a local `$ref` (`#/a/b`) through `doc`.
    fn resolve<'a>(doc: &'a Value, reference: &Value) -> &'a Value {
        let pointer = reference["$ref"].as_str().expect("a $ref").trim_start_matches('#');
        doc.pointer(pointer)
            .unwrap_or_else(|| panic!("{pointer} resolves to nothing"))
    }

    #[test]
    fn every_queue_is_a_channel_and_every_route_an_operation() {
        let doc = document(&pipeline(), &Options::new("ingest"));
        let channels = doc["channels"].as_object().unwrap();
        let queues: Vec<&str> = channels
            .values()
            .map(|c| c["bindings"]["amqp"]["queue"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            queues,
            // By channel ID.
            [
                "audit/log",
                "audit_log",
                "ingest",
                "ingest.dead-letter",
                "resize",
                "resize.dead-letter"
            ]
        );
        // `audit/log` and `audit_log` sanitize alike; their IDs stay apart.
        assert_eq!(channels["audit_log"]["address"], "audit/log");
        assert_eq!(channels["audit_log_2"]["address"], "audit_log");

        let operations = doc["operations"].as_object().unwrap();
        let ids: BTreeSet<&str> = operations.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = [
            "ingest.receive",
            "ingest.send.true.resize",
            "ingest.send.true.audit_log",
            "ingest.send.false.audit_log",
            "ingest.retry",
            "ingest.deadLetter",
            "resize.receive",
            "resize.send.small.audit_log",
            "resize.send.true.audit_log",
            "resize.send.true.audit_log_2",
            "resize.retry",
            "resize.deadLetter",
        ]
        .into();
        assert_eq!(ids, expected);
        let send = &operations["ingest.send.false.audit_log"];
        assert_eq!(send["action"], "send");
        assert_eq!(send["x-slingshot-case"], false);
        assert_eq!(resolve(&doc, &send["channel"])["address"], "audit/log");
        assert_eq!(send["bindings"]["amqp"]["deliveryMode"], 2);
        assert_eq!(operations["resize.send.small.audit_log"]["x-slingshot-case"], "small");
        assert_eq!(operations["resize.send.true.audit_log"]["x-slingshot-case"], true);
        assert_eq!(operations["resize.send.true.audit_log_2"]["x-slingshot-case"], "true");
        assert_eq!(operations["ingest.receive"]["x-slingshot-buckets"]["in"], "uploads");
        assert_eq!(
            resolve(&doc, &operations["resize.deadLetter"]["channel"])["address"],
            "resize.dead-letter"
        );

        // Every operation's message is one of its channel's messages, and
        // every reference resolves.
        for (id, operation) in operations {
            let channel = resolve(&doc, &operation["channel"]);
            for message in operation["messages"].as_array().unwrap() {
                let reference = message["$ref"].as_str().unwrap();
                assert!(
                    reference.starts_with(operation["channel"]["$ref"].as_str().unwrap()),
                    "{id}"
                );
                let name = reference.rsplit('/').next().unwrap();
                let declared = &channel["messages"][name];
                assert!(declared.is_object(), "{id}: channel lacks {name}");
                assert!(resolve(&doc, declared)["payload"].is_object());
            }
        }
    }

    #[test]
    fn queues_are_durable_as_the_queue_mode_declares_them() {
        let transient = document(
            &pipeline(),
            &Options {
                durable: false,
                ..Options::new("x")
            },
        );
        assert_eq!(
            transient["channels"]["ingest"]["bindings"]["amqp"]["queue"]["durable"],
            false
        );
        assert_eq!(
            transient["channels"]["ingest.dead-letter"]["bindings"]["amqp"]["queue"]["durable"], true,
            "dead-letter queues are always durable"
        );
        let durable = document(&pipeline(), &Options::new("x"));
        assert_eq!(
            durable["channels"]["ingest"]["bindings"]["amqp"]["queue"]["durable"],
            true
        );
        assert_eq!(durable["channels"]["ingest"]["bindings"]["amqp"]["queue"]["vhost"], "/");
        let vhost = document(
            &pipeline(),
            &Options {
                vhost: "staging".into(),
                ..Options::new("x")
            },
        );
        assert_eq!(
            vhost["channels"]["resize"]["bindings"]["amqp"]["queue"]["vhost"],
            "staging"
        );
        assert!(durable.get("servers").is_none());
        let served = document(
            &pipeline(),
            &Options {
                server: Some("rabbit:5672".into()),
                ..Options::new("x")
            },
        );
        assert_eq!(served["servers"]["rabbitmq"]["host"], "rabbit:5672");
        assert_eq!(served["servers"]["rabbitmq"]["protocol"], "amqp");
    }

    #[test]
    fn the_message_schema_names_every_header_slingshot_sets() {
        let doc = document(&pipeline(), &Options::new("x"));
        let request = &doc["components"]["schemas"]["requestHeaders"]["properties"];
        let dead = &doc["components"]["schemas"]["deadLetterHeaders"]["properties"];
        for header in crate::protocol::HEADERS {
            assert!(dead[header].is_object(), "dead letters lack {header}");
        }
        for header in [
            TRACEPARENT_HEADER,
            TRACESTATE_HEADER,
            TRACE_HEADER,
            ATTEMPT_HEADER,
            OUTAGES_HEADER,
        ] {
            assert!(request[header].is_object(), "requests lack {header}");
        }
        assert!(request[SERVICE_HEADER].is_null(), "only dead letters name the service");
    }
}
