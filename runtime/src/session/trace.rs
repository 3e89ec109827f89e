//! The trace context of one publish, from the client to the record's Kafka headers.
//!
//! The publisher's W3C `traceparent` and `tracestate` (the Publish frame's fields, or a gRPC
//! call's metadata) are checked ([`crate::protocol::trace`]); an invalid one is ignored,
//! counted and logged at debug. The record gets the Kafka headers `traceparent` and
//! `tracestate`:
//!
//! * with the `opentelemetry` feature, when the application installed a
//!   `tracing_opentelemetry` layer: the context of the publish's own span,
//!   `kafkasocks.publish`, whose parent is the publisher's context. A consumer that
//!   continues from the header thus continues the trace below the gateway's span;
//! * otherwise (no feature, no layer, or the span filtered out): the publisher's context
//!   as it came, unchanged.
//!
//! A publish hook that set a `traceparent` header itself decides: the gateway then adds
//! neither header (nor a `tracestate` when the hook set one).

use bytes::Bytes;

use crate::metrics::Metrics;
use crate::protocol::trace::{TRACEPARENT, TRACESTATE, TraceContext};
use crate::protocol::{Receipt, Status, wire};

/// Where a publish that brought no valid trace context of its own is traced (with the
/// `opentelemetry` feature and a layer installed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Untraced {
    /// In a trace of its own: a WebSocket connection's long-lived span is no parent for
    /// its publishes.
    NewTrace,
    /// Below the caller's current span (gRPC calls, in-process publishes).
    CurrentSpan,
}

/// The trace side of one publish: its span and the headers its record gets.
#[derive(Debug)]
pub(crate) struct PublishTrace {
    /// `kafkasocks.publish` with the `opentelemetry` feature, else a disabled span.
    span: tracing::Span,
    /// `traceparent` and, when there is one, `tracestate`; empty without a context.
    headers: Vec<(String, Bytes)>,
}

impl PublishTrace {
    /// Checks the publish's trace context, opens its span (feature `opentelemetry`) and
    /// decides the headers of its record.
    pub(crate) fn begin(metrics: &Metrics, publish: &wire::Publish, topic: &str, untraced: Untraced) -> PublishTrace {
        let parsed = TraceContext::parse(&publish.traceparent, &publish.tracestate);
        if let Some(why) = parsed.ignored {
            metrics.trace_context_ignored();
            tracing::debug!(method = %publish.method, header = why.header(), error = %why, "publish trace context ignored");
        }
        let received = parsed.context;
        let span = open_span(&publish.method, topic, received.as_ref(), untraced);
        let (traceparent, tracestate) = match span_headers(&span) {
            Some(ours) => (Some(ours.0), ours.1),
            None => match received {
                Some(cx) => (Some(cx.traceparent), cx.tracestate),
                None => (None, None),
            },
        };
        let headers = traceparent
            .map(|tp| (TRACEPARENT.to_owned(), Bytes::from(tp)))
            .into_iter()
            .chain(tracestate.map(|ts| (TRACESTATE.to_owned(), Bytes::from(ts))))
            .collect();
        PublishTrace { span, headers }
    }

    /// The publish's span (disabled without the `opentelemetry` feature).
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Takes the trace headers for the record.
    pub(crate) fn take_headers(&mut self) -> Vec<(String, Bytes)> {
        std::mem::take(&mut self.headers)
    }

    /// Records the outcome on the span: where the record went, or the error code.
    pub(crate) fn finish(&self, result: &Result<Receipt, Status>) {
        match result {
            Ok(r) => {
                self.span.record("partition", r.partition);
                self.span.record("offset", r.offset);
                self.span.record("duplicate", r.duplicate);
            }
            Err(status) => {
                self.span.record("code", status.code().as_str());
                self.span.record("otel.status_code", "ERROR");
            }
        }
    }
}

/// Adds the trace headers to a record's headers (what the publish hook set), unless the
/// hook set its own: no `traceparent` over the hook's, and no `tracestate` where the hook
/// set either (a trace state belongs to its trace parent). Kafka header names are compared
/// without case.
pub(crate) fn add_trace_headers(record: &mut Vec<(String, Bytes)>, trace: Vec<(String, Bytes)>) {
    let has = |record: &[(String, Bytes)], name: &str| record.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if has(record, TRACEPARENT) {
        return;
    }
    let hook_state = has(record, TRACESTATE);
    record.extend(trace.into_iter().filter(|(k, _)| !(hook_state && k == TRACESTATE)));
}

#[cfg(not(feature = "opentelemetry"))]
fn open_span(_method: &str, _topic: &str, _received: Option<&TraceContext>, _untraced: Untraced) -> tracing::Span {
    tracing::Span::none()
}

#[cfg(not(feature = "opentelemetry"))]
fn span_headers(_span: &tracing::Span) -> Option<(String, Option<String>)> {
    None
}

/// `kafkasocks.publish`, a producer span whose parent is the publisher's context (or, per
/// [`Untraced`], a new trace or the current span).
#[cfg(feature = "opentelemetry")]
fn open_span(method: &str, topic: &str, received: Option<&TraceContext>, untraced: Untraced) -> tracing::Span {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
    use tracing::field::Empty;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let span = tracing::info_span!(
        "kafkasocks.publish",
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = %topic,
        method = %method,
        topic = %topic,
        partition = Empty,
        offset = Empty,
        duplicate = Empty,
        code = Empty,
    );
    let parent = match (received, untraced) {
        (Some(cx), _) => {
            // What the W3C TraceContextPropagator extracts, from the context checked above.
            let state = cx.tracestate.as_deref().and_then(|s| s.parse::<TraceState>().ok()).unwrap_or_default();
            let remote = SpanContext::new(
                TraceId::from_bytes(cx.parent.trace_id),
                SpanId::from_bytes(cx.parent.parent_id),
                // Flags other than `sampled` are not carried over (W3C: "other flags").
                TraceFlags::new(cx.parent.flags) & TraceFlags::SAMPLED,
                true,
                state,
            );
            opentelemetry::Context::new().with_remote_span_context(remote)
        }
        (None, Untraced::NewTrace) => opentelemetry::Context::new(),
        (None, Untraced::CurrentSpan) => return span,
    };
    // Without an OpenTelemetry layer (or with the span filtered out) there is no parent to
    // set: the publisher's context then passes through unchanged.
    let _ = span.set_parent(parent);
    span
}

/// The span's own context as `traceparent` (and `tracestate`), `None` when the span has no
/// valid OpenTelemetry context (no layer installed, or the span disabled).
#[cfg(feature = "opentelemetry")]
fn span_headers(span: &tracing::Span) -> Option<(String, Option<String>)> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let cx = span.context();
    let ours = cx.span().span_context().clone();
    if !ours.is_valid() {
        return None;
    }
    let traceparent = crate::protocol::trace::TraceParent {
        version: 0,
        trace_id: ours.trace_id().to_bytes(),
        parent_id: ours.span_id().to_bytes(),
        flags: ours.trace_flags().to_u8(),
    }
    .to_header();
    let tracestate = ours.trace_state().header();
    Some((traceparent, (!tracestate.is_empty()).then_some(tracestate)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn h(k: &str, v: &str) -> (String, Bytes) {
        (k.to_owned(), Bytes::copy_from_slice(v.as_bytes()))
    }

    fn publish(traceparent: &str, tracestate: &str) -> wire::Publish {
        wire::Publish {
            method: "a.B/C".into(),
            traceparent: traceparent.into(),
            tracestate: tracestate.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_context_passes_through_unchanged_without_an_opentelemetry_layer() {
        let metrics = Metrics::default();
        let mut t = PublishTrace::begin(&metrics, &publish(TP, "rojo=1"), "t", Untraced::NewTrace);
        assert_eq!(t.take_headers(), vec![h(TRACEPARENT, TP), h(TRACESTATE, "rojo=1")]);
        let mut t = PublishTrace::begin(&metrics, &publish(&format!(" {TP} "), ""), "t", Untraced::CurrentSpan);
        assert_eq!(t.take_headers(), vec![h(TRACEPARENT, TP)], "no tracestate header without one");
        assert_eq!(metrics.trace_contexts_ignored(), 0);
    }

    #[test]
    fn an_invalid_context_adds_no_header_and_is_counted() {
        let metrics = Metrics::default();
        let upper = TP.to_ascii_uppercase();
        let mut t = PublishTrace::begin(&metrics, &publish(&upper, "rojo=1"), "t", Untraced::NewTrace);
        assert_eq!(t.take_headers(), vec![]);
        let mut t = PublishTrace::begin(&metrics, &publish(TP, &"k=v,".repeat(200)), "t", Untraced::NewTrace);
        assert_eq!(t.take_headers(), vec![h(TRACEPARENT, TP)], "a too long tracestate is dropped alone");
        let mut t = PublishTrace::begin(&metrics, &publish("", ""), "t", Untraced::NewTrace);
        assert_eq!(t.take_headers(), vec![]);
        assert_eq!(metrics.trace_contexts_ignored(), 2, "an empty context is not an invalid one");
    }

    #[test]
    fn a_hooks_own_trace_headers_win() {
        let ours = || vec![h(TRACEPARENT, TP), h(TRACESTATE, "rojo=1")];
        let mut record = vec![h("app", "x")];
        add_trace_headers(&mut record, ours());
        assert_eq!(record, vec![h("app", "x"), h(TRACEPARENT, TP), h(TRACESTATE, "rojo=1")]);

        let hooks = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut record = vec![h("Traceparent", hooks)];
        add_trace_headers(&mut record, ours());
        assert_eq!(record, vec![h("Traceparent", hooks)], "neither header over the hook's traceparent");

        let mut record = vec![h(TRACESTATE, "congo=2")];
        add_trace_headers(&mut record, ours());
        assert_eq!(record, vec![h(TRACESTATE, "congo=2"), h(TRACEPARENT, TP)], "the hook's tracestate kept, alone");
    }
}
