//! Every span slingshot builds, and the one place that marks a span failed: a
//! CONSUMER span per delivery, a PRODUCER span per publish, the `process`
//! call, and CLIENT spans for object-storage calls and database queries.
//!
//! Spans follow OpenTelemetry's messaging conventions; whether they are
//! exported is `telemetry::export`'s business.

use diesel::connection::{Instrumentation, InstrumentationEvent};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::context::{context_of, set_remote_parent};
use crate::protocol::{Request, TraceParent};

/// Marks `span` failed with `error`.
pub(crate) fn failed(span: &tracing::Span, error: &str) {
    span.record("otel.status_code", "error");
    span.record("otel.status_description", error);
}

/// The CONSUMER span of one delivery from `queue` to `service`, continuing
/// the trace its message carries (`traceparent`, else the legacy trace ID),
/// and the W3C context it runs in. Its service, request ID, attempt, trace
/// and span IDs are on every log line of the request.
pub(crate) fn request(
    service: &'static str,
    queue: &str,
    system: &'static str,
    request: &Request,
    body_size: usize,
    redelivered: bool,
) -> (tracing::Span, TraceParent) {
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("process {queue}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        error.type = tracing::field::Empty,
        service,
        request = %request.shown,
        attempt = request.counts.attempt,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    if let Some(parent) = &request.parent {
        set_remote_parent(&span, parent);
    }
    set_messaging_attributes(&span, system, queue, Operation::Process);
    span.set_attribute("messaging.message.body.size", body_size as i64);
    span.set_attribute("messaging.destination.redelivered", redelivered);
    let context = context_of(&span, request.parent.as_ref());
    span.record("trace_id", context.trace_id_hex());
    span.record("span_id", context.span_id_hex());
    (span, context)
}

/// The PRODUCER span of one publish to `queue`, a child of the current
/// (CONSUMER) span, and the W3C context the message carries.
pub(crate) fn publish(system: &'static str, queue: &str, parent: &TraceParent) -> (tracing::Span, TraceParent) {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {queue}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    set_messaging_attributes(&span, system, queue, Operation::Publish);
    let context = context_of(&span, Some(parent));
    (span, context)
}

/// The span of one `process` call of `service`.
pub(crate) fn call(service: &str) -> tracing::Span {
    tracing::info_span!(
        "call",
        otel.name = %format_args!("call {service}"),
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// Attributes of the messaging conventions for RabbitMQ's default exchange:
/// the exchange (`""`), the routing key (the queue) and the operation.
fn set_messaging_attributes(span: &tracing::Span, system: &'static str, queue: &str, operation: Operation) {
    span.set_attribute("messaging.system", system);
    span.set_attribute("messaging.operation.type", operation.kind());
    span.set_attribute("messaging.operation.name", operation.name());
    span.set_attribute("messaging.rabbitmq.destination.routing_key", queue.to_string());
    let destination = match operation {
        // Consumers read a queue; producers publish to an exchange, the default one.
        Operation::Process => queue.to_string(),
        Operation::Publish => String::new(),
    };
    span.set_attribute("messaging.destination.name", destination);
}

/// A messaging operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    /// A CONSUMER span: one delivery processed.
    Process,
    /// A PRODUCER span: one message published.
    Publish,
}

impl Operation {
    fn kind(self) -> &'static str {
        match self {
            Operation::Process => "process",
            Operation::Publish => "send",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Operation::Process => "process",
            Operation::Publish => "publish",
        }
    }
}

/// The CLIENT span of one object-storage call, a child of the current span.
pub(crate) fn object(operation: &'static str, bucket: &str, key: &str) -> tracing::Span {
    tracing::info_span!(
        "object",
        otel.name = %format_args!("S3.{operation}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        rpc.service = "S3",
        rpc.method = operation,
        aws.s3.bucket = %bucket,
        aws.s3.key = %key,
    )
}

/// Makes every database connection opened from now on report its queries
/// as CLIENT spans (diesel's instrumentation). Once per process.
pub(crate) fn install_query_spans() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        fn query_spans() -> Option<Box<dyn Instrumentation>> {
            Some(Box::new(QuerySpans::default()))
        }
        if let Err(e) = diesel::connection::set_default_instrumentation(query_spans) {
            tracing::warn!(error = %e, "database calls will not have spans");
        }
    });
}

/// One connection's queries as spans: each query a CLIENT span, a child of
/// the span current when it starts (the `process` call). Queries outside
/// any span (the pool's health checks) are not recorded.
#[derive(Default)]
struct QuerySpans {
    system: &'static str,
    current: Option<tracing::Span>,
}

impl Instrumentation for QuerySpans {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartEstablishConnection { url, .. } => {
                // Only the scheme: the URL may hold a password.
                self.system = if url.starts_with("postgres") {
                    "postgresql"
                } else {
                    "sqlite"
                };
            }
            InstrumentationEvent::StartQuery { query, .. } => {
                if tracing::Span::current().is_none() {
                    return;
                }
                let text = query.to_string();
                // Diesel appends the bound values; they stay out of traces.
                let sql = text.split(" -- binds:").next().unwrap_or_default().trim();
                let operation = sql.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
                self.current = Some(tracing::info_span!(
                    "query",
                    otel.name = %operation,
                    otel.kind = "client",
                    otel.status_code = tracing::field::Empty,
                    otel.status_description = tracing::field::Empty,
                    db.system.name = self.system,
                    db.operation.name = %operation,
                    db.query.text = sql,
                ));
            }
            InstrumentationEvent::FinishQuery { error, .. } => {
                if let (Some(span), Some(error)) = (self.current.take(), error) {
                    failed(&span, &error.to_string());
                }
            }
            _ => {}
        }
    }
}
