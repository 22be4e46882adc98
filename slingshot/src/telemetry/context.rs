//! The bridge between W3C trace contexts in message headers and spans: the
//! context a span runs in, and a remote parent for a span.

use std::str::FromStr;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::protocol::TraceParent;

/// The W3C context `span` runs in: its OpenTelemetry context when the layer
/// records it, else a new span ID under `parent` (or a new sampled trace), so
/// messages carry a trace context with or without telemetry installed.
pub(crate) fn context_of(span: &tracing::Span, parent: Option<&TraceParent>) -> TraceParent {
    let context = span.context();
    let recorded = context.span().span_context().clone();
    if recorded.is_valid() {
        let state = recorded.trace_state().header();
        return TraceParent {
            trace_id: u128::from_be_bytes(recorded.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(recorded.span_id().to_bytes()),
            flags: recorded.trace_flags().to_u8(),
            state: Some(state).filter(|s| !s.is_empty()),
        };
    }
    let ids = RandomIdGenerator::default();
    let span_id = u64::from_be_bytes(ids.new_span_id().to_bytes());
    match parent {
        Some(parent) => TraceParent {
            span_id,
            ..parent.clone()
        },
        None => TraceParent {
            trace_id: u128::from_be_bytes(ids.new_trace_id().to_bytes()),
            span_id,
            flags: 1,
            state: None,
        },
    }
}

/// Makes the remote `parent` (the span that published a message) the parent
/// of `span`. Does nothing when OpenTelemetry does not record `span`.
pub(crate) fn set_remote_parent(span: &tracing::Span, parent: &TraceParent) {
    let state = parent
        .state
        .as_deref()
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id.to_be_bytes()),
        SpanId::from_bytes(parent.span_id.to_be_bytes()),
        TraceFlags::new(parent.flags),
        true,
        state,
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_layer_contexts_continue_the_parent_or_start_a_trace() {
        // No subscriber here: spans are not recorded, IDs come from the fallback.
        let span = tracing::Span::none();
        let parent = TraceParent {
            trace_id: 7,
            span_id: 9,
            flags: 0,
            state: Some("a=b".into()),
        };
        let child = context_of(&span, Some(&parent));
        assert_eq!(
            (child.trace_id, child.flags, child.state.as_deref()),
            (7, 0, Some("a=b"))
        );
        assert_ne!(child.span_id, 9);
        assert_ne!(child.span_id, 0);
        let root = context_of(&span, None);
        assert!(root.trace_id != 0 && root.span_id != 0 && root.sampled());
        assert_ne!(root.trace_id, context_of(&span, None).trace_id);
    }
}
