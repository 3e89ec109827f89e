//! Logs (text or JSON lines) and, when configured, OpenTelemetry traces over OTLP/HTTP with
//! the W3C trace-context propagator (the gateway's publish spans continue the browser's
//! `traceparent`; docs/protocol.md).

use anyhow::{Context, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::LogFormat;
use crate::settings::Settings;

/// Keeps the trace exporter alive; flushes and stops it when dropped (outside the async
/// runtime: the exporter's HTTP client is a blocking one, on the batch processor's thread).
#[derive(Debug, Default)]
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("kafkasocks: flushing traces: {e}");
        }
    }
}

/// The OTLP endpoint: `[telemetry] otlp_endpoint`, else `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn endpoint(settings: &Settings) -> Option<String> {
    settings
        .telemetry
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.is_empty())
}

/// Installs the global subscriber (and the trace exporter when an endpoint is configured).
/// Call before the async runtime starts.
pub(crate) fn init(settings: &Settings, format: Option<LogFormat>) -> anyhow::Result<Telemetry> {
    let format = match format {
        Some(f) => f,
        None => match settings.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => bail!("[log] format = {other:?}: expected text or json"),
        },
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(&f).with_context(|| format!("RUST_LOG={f:?}"))?,
        _ => EnvFilter::try_new(&settings.log.filter)
            .with_context(|| format!("[log] filter = {:?}", settings.log.filter))?,
    };
    let mut telemetry = Telemetry::default();
    let otel = match endpoint(settings) {
        Some(endpoint) => {
            let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url.clone())
                .build()
                .with_context(|| format!("the OTLP exporter for {url}"))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(settings.telemetry.service_name.clone())
                .build();
            let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
            let tracer = provider.tracer("kafkasocks");
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            opentelemetry::global::set_tracer_provider(provider.clone());
            telemetry.provider = Some(provider);
            Some((tracing_opentelemetry::layer().with_tracer(tracer), url))
        }
        None => None,
    };
    let (layer, url) = match otel {
        Some((layer, url)) => (Some(layer), Some(url)),
        None => (None, None),
    };
    let registry = tracing_subscriber::registry().with(filter).with(layer);
    match format {
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr))
            .try_init(),
    }
    .context("installing the log subscriber")?;
    match url {
        Some(url) => tracing::info!(%url, "traces exported over OTLP/HTTP"),
        None => tracing::debug!("no OTLP endpoint: traces are not exported"),
    }
    Ok(telemetry)
}
