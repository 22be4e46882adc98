//! W3C trace context in message headers: parsing `traceparent` and
//! `tracestate`, the legacy trace ID, and stamping a context on a message.

use crate::broker::{HeaderValue, Message};

/// Legacy header carrying the trace ID of a request through the pipeline,
/// which slingshot wrote before W3C `traceparent` carried the trace. Still
/// read (messages already in queues keep their trace) and carried on
/// unchanged when the inbound message had one; written on every output only
/// when `SLINGSHOT_LEGACY_TRACE_HEADER` asks, for services that follow only it.
pub const TRACE_HEADER: &str = "x-slingshot-trace-id";
/// W3C Trace Context header: version, trace ID, parent span ID and flags.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// W3C Trace Context header: vendor-specific trace state, carried unchanged.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// The longest `tracestate` carried on, in bytes: the 512 characters W3C
/// Trace Context asks every vendor to propagate. A longer one is dropped
/// (the specification allows it) and a warning says so.
pub const MAX_TRACESTATE: usize = 512;
/// The longest legacy trace ID carried on, in bytes. slingshot wrote 32 hex
/// digits; a longer value is ignored and the request gets the W3C trace ID.
pub const MAX_LEGACY_TRACE_ID: usize = 128;
/// The longest `traceparent` read, in bytes: version 00 is 55; later
/// versions may append fields.
const MAX_TRACEPARENT: usize = 256;

/// A W3C trace context as it travels in message headers: the trace, the span
/// that sent the message, whether the trace is sampled and the vendors'
/// `tracestate`.
///
/// ```
/// use slingshot::protocol::TraceParent;
/// let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let context = TraceParent::parse(header, Some("vendor=1")).unwrap();
/// assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(context.header_value(), header);
/// assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None).is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace ID; never 0.
    pub trace_id: u128,
    /// The span that sent the message (the parent of the span that
    /// receives it); never 0.
    pub span_id: u64,
    /// The trace flags; bit 0 is "sampled".
    pub flags: u8,
    /// The `tracestate` header, unchanged, if there was one of at most
    /// [`MAX_TRACESTATE`] bytes.
    pub state: Option<String>,
}

impl TraceParent {
    /// Parses a `traceparent` header (and its `tracestate`) as W3C Trace
    /// Context level 1 says: `None` when malformed, on version `ff`, or with
    /// an all-zero trace or span ID. Versions above 00 may append fields. A
    /// `tracestate` over [`MAX_TRACESTATE`] bytes is dropped.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceParent> {
        if traceparent.len() > MAX_TRACEPARENT {
            return None;
        }
        let text = traceparent.trim();
        let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut fields = text.splitn(5, '-');
        let (version, trace, span, flags) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
        let rest = fields.next();
        if version.len() != 2 || !lower_hex(version) || version == "ff" || (version == "00" && rest.is_some()) {
            return None;
        }
        if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        if !(lower_hex(trace) && lower_hex(span) && lower_hex(flags)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        let state = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE)
            .map(str::to_string);
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
            state,
        })
    }

    /// The trace context `message` carries: its `traceparent` (with its
    /// `tracestate`), else a context made from a legacy trace ID that is a
    /// W3C trace ID (32 hex digits, as slingshot generated them), whose parent
    /// span ID is derived from it. `None` when neither is usable.
    pub fn read(message: &Message) -> Option<TraceParent> {
        let text = |name: &str| message.headers.get(name).and_then(HeaderValue::as_str);
        if let Some(parsed) = text(TRACEPARENT_HEADER).and_then(|t| TraceParent::parse(t, text(TRACESTATE_HEADER))) {
            return Some(parsed);
        }
        let legacy = legacy_trace_id(message)?;
        if legacy.len() != 32 || !legacy.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let trace_id = u128::from_str_radix(legacy, 16).ok().filter(|t| *t != 0)?;
        let folded = (trace_id as u64) ^ ((trace_id >> 64) as u64);
        Some(TraceParent {
            trace_id,
            span_id: folded.max(1),
            flags: 1,
            state: None,
        })
    }

    /// Whether the sender sampled the trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace ID as 32 lowercase hex digits, as logs show it.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span ID as 16 lowercase hex digits, as logs show it.
    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// The `traceparent` header value (version 00).
    pub fn header_value(&self) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
    }

    /// Puts this context on `message`: `traceparent`, `tracestate` and the
    /// legacy trace ID `legacy`, each removed when there is none.
    pub fn stamp(&self, message: &mut Message, legacy: Option<&str>) {
        let headers = &mut message.headers;
        headers.insert(TRACEPARENT_HEADER.into(), HeaderValue::Str(self.header_value()));
        match &self.state {
            Some(state) => headers.insert(TRACESTATE_HEADER.into(), HeaderValue::Str(state.clone())),
            None => headers.remove(TRACESTATE_HEADER),
        };
        match legacy {
            Some(legacy) => headers.insert(TRACE_HEADER.into(), HeaderValue::Str(legacy.to_string())),
            None => headers.remove(TRACE_HEADER),
        };
    }
}

/// The legacy trace ID `message` carries ([`TRACE_HEADER`]), trimmed, if it
/// carries one as text of at most [`MAX_LEGACY_TRACE_ID`] bytes.
pub fn legacy_trace_id(message: &Message) -> Option<&str> {
    message
        .headers
        .get(TRACE_HEADER)
        .and_then(HeaderValue::as_str)
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= MAX_LEGACY_TRACE_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(headers: &[(&str, &str)]) -> Message {
        let mut m = Message::id(1);
        for (k, v) in headers {
            m.headers.insert(k.to_string(), HeaderValue::Str(v.to_string()));
        }
        m
    }

    #[test]
    fn traceparent_headers_parse_as_w3c_says() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(good, Some(" congo=t61rcWkgMzE ")).unwrap();
        assert_eq!(parsed.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parsed.span_id, 0x00f067aa0ba902b7);
        assert!(parsed.sampled());
        assert_eq!(parsed.state.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(parsed.header_value(), good);
        assert_eq!(parsed.span_id_hex(), "00f067aa0ba902b7");
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", Some("")).unwrap();
        assert!(!unsampled.sampled());
        assert_eq!(unsampled.state, None);
        // A later version may append fields; version 00 may not.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", None).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bx-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        ] {
            assert_eq!(TraceParent::parse(bad, None), None, "{bad:?}");
        }
        let long = format!(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-{}",
            "x".repeat(300)
        );
        assert_eq!(
            TraceParent::parse(&long, None),
            None,
            "an unbounded traceparent is not read"
        );
    }

    #[test]
    fn an_oversized_tracestate_is_dropped_and_the_context_kept() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let at_limit = format!("k={}", "v".repeat(MAX_TRACESTATE - 2));
        assert_eq!(
            TraceParent::parse(good, Some(&at_limit)).unwrap().state.as_deref(),
            Some(at_limit.as_str())
        );
        let over = format!("k={}", "v".repeat(33 * 1024));
        let parsed = TraceParent::parse(good, Some(&over)).unwrap();
        assert_eq!(
            (parsed.trace_id_hex().as_str(), parsed.state),
            ("4bf92f3577b34da6a3ce929d0e0e4736", None)
        );
    }

    #[test]
    fn the_trace_context_is_read_from_traceparent_then_the_legacy_header() {
        let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let legacy = "0123456789abcdef0123456789abcdef";
        let both = message(&[
            (TRACEPARENT_HEADER, w3c),
            (TRACESTATE_HEADER, "a=b"),
            (TRACE_HEADER, legacy),
        ]);
        let read = TraceParent::read(&both).unwrap();
        assert_eq!(
            (read.header_value().as_str(), read.state.as_deref()),
            (w3c, Some("a=b"))
        );

        // Only the legacy header (a message queued by an older slingshot):
        // the same trace, under a parent span derived from it.
        let read = TraceParent::read(&message(&[(TRACE_HEADER, legacy)])).unwrap();
        assert_eq!(read.trace_id_hex(), legacy);
        assert_eq!(read.span_id, 1, "equal halves fold to 0, which is not a span ID");
        let other = message(&[(TRACE_HEADER, "000000000000000f00000000000000f0")]);
        assert_eq!(TraceParent::read(&other).unwrap().span_id, 0xff);
        assert!(read.sampled());
        // A malformed traceparent falls back to the legacy header too.
        let broken = message(&[(TRACEPARENT_HEADER, "garbage"), (TRACE_HEADER, legacy)]);
        assert_eq!(TraceParent::read(&broken).unwrap().trace_id_hex(), legacy);
        // Legacy IDs that are not W3C trace IDs, or no header at all: no context.
        for value in [
            "invoke-7",
            "",
            "00000000000000000000000000000000",
            "0123456789abcdef0123456789abcdeX",
        ] {
            assert_eq!(TraceParent::read(&message(&[(TRACE_HEADER, value)])), None, "{value:?}");
        }
        assert_eq!(TraceParent::read(&Message::id(1)), None);
    }

    #[test]
    fn legacy_trace_ids_are_read_only_when_short_text() {
        assert_eq!(legacy_trace_id(&message(&[(TRACE_HEADER, " abc ")])), Some("abc"));
        assert_eq!(legacy_trace_id(&message(&[(TRACE_HEADER, &"a".repeat(129))])), None);
        assert_eq!(legacy_trace_id(&message(&[(TRACE_HEADER, "  ")])), None);
        let int = Message::id(1).with_header(TRACE_HEADER, HeaderValue::Int(5));
        assert_eq!(legacy_trace_id(&int), None);
    }

    #[test]
    fn stamping_replaces_the_context_and_removes_a_stale_state_and_legacy_id() {
        let context = TraceParent {
            trace_id: 0xabc,
            span_id: 0x12,
            flags: 1,
            state: Some("k=v".into()),
        };
        let mut m = Message::id(12);
        context.stamp(&mut m, Some("t"));
        assert_eq!(
            m.headers.get(TRACEPARENT_HEADER).and_then(HeaderValue::as_str),
            Some("00-00000000000000000000000000000abc-0000000000000012-01")
        );
        assert_eq!(
            m.headers.get(TRACESTATE_HEADER).and_then(HeaderValue::as_str),
            Some("k=v")
        );
        assert_eq!(m.headers.get(TRACE_HEADER).and_then(HeaderValue::as_str), Some("t"));
        TraceParent { state: None, ..context }.stamp(&mut m, None);
        assert!(!m.headers.contains_key(TRACESTATE_HEADER));
        assert!(!m.headers.contains_key(TRACE_HEADER));
    }
}
