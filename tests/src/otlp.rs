//! A test-only OTLP/HTTP receiver: accepts `POST /v1/traces` in protobuf, as a collector's port
//! 4318 does, decodes the spans with the `opentelemetry-proto` types and keeps them for the tests
//! to inspect.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message;

/// One span as the receiver decoded it; IDs in lowercase hex, as in
/// `traceparent`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub kind: SpanKind,
    /// Attribute values as text (`true`, `42`, `abc`).
    pub attributes: BTreeMap<String, String>,
    /// Event names, in order.
    pub events: Vec<String>,
    /// `(trace ID, span ID)` of each link.
    pub links: Vec<(String, String)>,
    /// Whether the span ended in error.
    pub error: bool,
}

impl ReceivedSpan {
    /// Attribute `key` as text, or "" when absent.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or("")
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    /// Requests that did not decode: each would be a failure of the test.
    errors: Vec<String>,
}

/// A running receiver on loopback. Stops when dropped.
pub struct OtlpReceiver {
    /// The base URL, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub url: String,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Listens on a free loopback port.
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let port = listener.local_addr().expect("local addr").port();
        let received: Arc<Mutex<Received>> = Arc::default();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(traces))
            .with_state(received.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OtlpReceiver {
            url: format!("http://127.0.0.1:{port}"),
            received,
            task,
        }
    }

    /// Every span received so far. Panics if any request did not decode.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let received = self.received.lock().unwrap();
        assert!(
            received.errors.is_empty(),
            "undecodable OTLP requests: {:?}",
            received.errors
        );
        received.spans.clone()
    }

    /// Waits until `done` holds for the spans received, then returns them;
    /// panics with what arrived after `timeout`.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        let start = Instant::now();
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if start.elapsed() > timeout {
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{} {} ({})", s.service, s.name, s.trace_id))
                    .collect();
                panic!("the receiver did not get the spans expected within {timeout:?}; got {names:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn traces(State(received): State<Arc<Mutex<Received>>>, body: Bytes) -> impl IntoResponse {
    let decoded = ExportTraceServiceRequest::decode(body.as_ref());
    let mut received = received.lock().unwrap_or_else(|p| p.into_inner());
    match decoded {
        Ok(request) => {
            received.spans.extend(spans_of(request));
            let answer = ExportTraceServiceResponse::default().encode_to_vec();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                answer,
            )
        }
        Err(e) => {
            received.errors.push(e.to_string());
            (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain")],
                e.to_string().into_bytes(),
            )
        }
    }
}

fn spans_of(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name.clone(),
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    attributes: attributes(&span.attributes),
                    events: span.events.iter().map(|e| e.name.clone()).collect(),
                    links: span.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
                    error: span.status.as_ref().is_some_and(|s| s.code == SpanStatus::Error as i32),
                });
            }
        }
    }
    out
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map(text).unwrap_or_default()))
        .collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
