//! W3C trace context end to end, against the real broker: a publish's `traceparent` (and
//! `tracestate`) becomes the record's Kafka headers, read back with a plain consumer, and
//! reaches a subscriber's Data frame; an invalid one is ignored and the publish still
//! succeeds. With an OpenTelemetry layer installed (the runtime's `opentelemetry` feature),
//! the header carries the gateway's `kafkasocks.publish` span, a child of the publisher's.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{Result, bail};
use bytes::Bytes;
use kafkasocks::client::{Client, ClientConfig, Delivery, StartAt, Subscription};
use kafkasocks::wire::{self, frame::Kind};
use kafkasocks::{Handshake, Limits, Principal, Transport};
use kafkasocks_tests::*;
use opentelemetry::trace::{SpanId, SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;

/// The example of the W3C Trace Context recommendation.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

/// Publishes through the raw protocol (the Rust client sends no trace context) and waits
/// for the receipt.
async fn publish(
    raw: &mut RawClient,
    id: u64,
    body: &str,
    traceparent: &str,
    tracestate: &str,
) -> Result<wire::Receipt> {
    raw.send(Kind::Publish(wire::Publish {
        id,
        method: PUBLISH.into(),
        payload: message("k", body),
        traceparent: traceparent.into(),
        tracestate: tracestate.into(),
        ..Default::default()
    }))
    .await?;
    loop {
        match raw.recv().await? {
            Some(Kind::Receipt(r)) if r.id == id => return Ok(r),
            Some(Kind::Error(e)) => bail!("publish {id} failed: {e:?}"),
            _ => {}
        }
    }
}

/// The headers of the record at (partition, offset), read with a plain consumer.
async fn kafka_headers(topic: &str, partition: i32, offset: i64) -> Result<Vec<(String, Bytes)>> {
    Ok(read_record(topic, partition, offset).await?.headers)
}

fn header<'a>(headers: &'a [(String, Bytes)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// A subscription on key "k" from the latest offset, once the gateway confirmed it.
async fn subscribed(client: &Client) -> Result<Subscription> {
    let sub = client.subscribe(SUBSCRIBE, message("k", ""), StartAt::Latest);
    for _ in 0..400 {
        if sub.cursor().is_some() {
            return Ok(sub);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("the subscription was not confirmed")
}

/// The subscription's next record, which must be the one at the receipt.
async fn delivered(sub: &mut Subscription, r: &wire::Receipt) -> Result<Delivery> {
    let d = tokio::time::timeout(Duration::from_secs(20), sub.next()).await?.unwrap()?;
    assert_eq!((d.partition, d.offset), (r.partition, r.offset));
    Ok(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_traceparent_becomes_the_record_header_and_reaches_the_subscriber() -> Result<()> {
    init_tracing(); // no OpenTelemetry layer: the context passes through unchanged
    let topic = unique_topic("trace");
    create_topic(&topic, 1).await?;
    let gw = TestGateway::start(streams(&topic), Limits::default()).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let mut sub = subscribed(&client).await?;
    let mut raw = RawClient::open(gw.addr).await?;

    // A valid context: both headers, as sent, in Kafka and in the subscriber's Data frame.
    let r = publish(&mut raw, 1, "traced", TRACEPARENT, TRACESTATE).await?;
    let in_kafka = kafka_headers(&topic, r.partition, r.offset).await?;
    assert_eq!(header(&in_kafka, "traceparent"), Some(TRACEPARENT), "{in_kafka:?}");
    assert_eq!(header(&in_kafka, "tracestate"), Some(TRACESTATE));
    let d = delivered(&mut sub, &r).await?;
    assert_eq!(d.headers, in_kafka, "the subscriber gets the record's headers as Kafka holds them");

    // An invalid traceparent (uppercase hex) is ignored, with its tracestate: no trace
    // headers, and the publish succeeds.
    let r = publish(&mut raw, 2, "upper", &TRACEPARENT.to_ascii_uppercase(), TRACESTATE).await?;
    let in_kafka = kafka_headers(&topic, r.partition, r.offset).await?;
    assert_eq!((header(&in_kafka, "traceparent"), header(&in_kafka, "tracestate")), (None, None), "{in_kafka:?}");
    let d = delivered(&mut sub, &r).await?;
    assert_eq!(header(&d.headers, "traceparent"), None);

    // An invalid tracestate (more than 512 characters) is dropped alone.
    let r = publish(&mut raw, 3, "long state", TRACEPARENT, &format!("k={}", "v".repeat(600))).await?;
    let in_kafka = kafka_headers(&topic, r.partition, r.offset).await?;
    assert_eq!((header(&in_kafka, "traceparent"), header(&in_kafka, "tracestate")), (Some(TRACEPARENT), None));
    delivered(&mut sub, &r).await?;

    // gRPC and in-process publishes: the handshake's (metadata's) traceparent.
    let grpc = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let handshake = Handshake::new(Transport::Grpc, PUBLISH, [("traceparent", grpc)], None);
    let receipt = gw
        .local
        .publish_from(Principal::anonymous(), Some(&handshake), PUBLISH, message("k", "grpc"), Bytes::new())
        .await?;
    let in_kafka = kafka_headers(&topic, receipt.partition, receipt.offset).await?;
    assert_eq!((header(&in_kafka, "traceparent"), header(&in_kafka, "tracestate")), (Some(grpc), None));

    let text = gw.metrics_text().await?;
    assert_eq!(metric(&text, "kafkasocks_trace_contexts_ignored_total"), 2.0, "the two invalid contexts counted");
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}

/// The finished `kafkasocks.publish` spans.
fn publish_spans(exporter: &InMemorySpanExporter) -> Vec<SpanData> {
    let spans = exporter.get_finished_spans().unwrap_or_default();
    spans.into_iter().filter(|s| s.name == "kafkasocks.publish").collect()
}

/// The `kafkasocks.publish` span whose id the record's `traceparent` names, and the header.
async fn span_of_record(
    exporter: &InMemorySpanExporter,
    topic: &str,
    r: &wire::Receipt,
) -> Result<(SpanData, String, Vec<(String, Bytes)>)> {
    let in_kafka = kafka_headers(topic, r.partition, r.offset).await?;
    let Some(traceparent) = header(&in_kafka, "traceparent").map(str::to_owned) else {
        bail!("no traceparent header: {in_kafka:?}");
    };
    for _ in 0..200 {
        let found = publish_spans(exporter)
            .into_iter()
            .find(|s| traceparent == format!("00-{}-{}-01", s.span_context.trace_id(), s.span_context.span_id()));
        if let Some(span) = found {
            return Ok((span, traceparent, in_kafka));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("no exported kafkasocks.publish span is {traceparent}: {:?}", publish_spans(exporter))
}

fn attribute(span: &SpanData, key: &str) -> Option<opentelemetry::Value> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.clone())
}

// A current-thread runtime of its own: the gateway's tasks run on this thread, under the
// subscriber set as this thread's default for as long as the runtime lives (the other test
// keeps the global one, without OpenTelemetry).
#[test]
fn with_an_opentelemetry_layer_the_header_carries_the_gateways_publish_span() -> Result<()> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("kafkasocks-tests"));
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(publish_spans_are_children_of_the_publishers(&exporter));
    drop(runtime); // its tasks' spans end while the subscriber is still this thread's
    result
}

async fn publish_spans_are_children_of_the_publishers(exporter: &InMemorySpanExporter) -> Result<()> {
    let topic = unique_topic("trace-otel");
    create_topic(&topic, 1).await?;
    let gw = TestGateway::start(streams(&topic), Limits::default()).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let mut sub = subscribed(&client).await?;
    let mut raw = RawClient::open(gw.addr).await?;

    // The span continues the publisher's trace; the header names the span.
    let r = publish(&mut raw, 1, "traced", TRACEPARENT, TRACESTATE).await?;
    let (span, traceparent, in_kafka) = span_of_record(exporter, &topic, &r).await?;
    assert_eq!(span.span_context.trace_id().to_string(), TRACE_ID, "the publisher's trace");
    assert_eq!(span.parent_span_id.to_string(), PARENT_ID, "a child of the publisher's span");
    assert!(span.parent_span_is_remote);
    assert_ne!(span.span_context.span_id().to_string(), PARENT_ID, "the header names the gateway's span");
    assert_eq!(span.span_kind, SpanKind::Producer);
    assert_eq!(header(&in_kafka, "tracestate"), Some(TRACESTATE), "the trace state goes on with the trace");
    assert_eq!(attribute(&span, "topic").map(|v| v.as_str().into_owned()), Some(topic.clone()));
    assert_eq!(attribute(&span, "method").map(|v| v.as_str().into_owned()), Some(PUBLISH.to_owned()));
    assert_eq!(attribute(&span, "partition"), Some(opentelemetry::Value::I64(i64::from(r.partition))));
    assert_eq!(attribute(&span, "offset"), Some(opentelemetry::Value::I64(r.offset)));
    let d = delivered(&mut sub, &r).await?;
    assert_eq!(header(&d.headers, "traceparent"), Some(traceparent.as_str()), "the consumer sees the gateway's span");

    // Without a context (or with an invalid one) a WebSocket publish starts a trace of its
    // own, which the header carries on.
    for (id, sent) in [(2, ""), (3, "00-00000000000000000000000000000000-00f067aa0ba902b7-01")] {
        let r = publish(&mut raw, id, "untraced", sent, "").await?;
        let (span, _, in_kafka) = span_of_record(exporter, &topic, &r).await?;
        assert_eq!(span.parent_span_id, SpanId::INVALID, "a root span");
        assert_ne!(span.span_context.trace_id().to_string(), TRACE_ID);
        assert_eq!(header(&in_kafka, "tracestate"), None);
        delivered(&mut sub, &r).await?;
    }

    // gRPC (the metadata's traceparent) likewise.
    let grpc_trace = "0af7651916cd43dd8448eb211c80319c";
    let handshake = Handshake::new(
        Transport::Grpc,
        PUBLISH,
        [("traceparent", format!("00-{grpc_trace}-b7ad6b7169203331-01"))],
        None,
    );
    let receipt = gw
        .local
        .publish_from(Principal::anonymous(), Some(&handshake), PUBLISH, message("k", "grpc"), Bytes::new())
        .await?;
    let r = wire::Receipt { partition: receipt.partition, offset: receipt.offset, ..Default::default() };
    let (span, _, _) = span_of_record(exporter, &topic, &r).await?;
    assert_eq!(
        (span.span_context.trace_id().to_string(), span.parent_span_id.to_string()),
        (grpc_trace.to_owned(), "b7ad6b7169203331".to_owned())
    );

    client.close();
    delete_topic(&topic).await?;
    Ok(())
}
