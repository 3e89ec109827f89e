//! The gateway's metrics on `prometheus-client`: counters, gauges, latency histograms and
//! a build-info metric, with bounded label sets only (a status code, a topic and a
//! partition; never a session or subscription id). Rendered in the OpenMetrics text
//! format by the admin endpoint (`/metrics`).
//!
//! This module is a leaf: the layers above report into it, and the fan-out registers a
//! collector for its lag gauges ([`Metrics::register_collector`]).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::protocol::Code;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why a connection was refused before or at its Hello (the `reason` label).
pub(crate) const REFUSAL_REASONS: &[&str] =
    &["origin", "host", "connection_limit", "address_limit", "principal_limit", "handshakes", "unauthenticated"];

/// Latency buckets: 0.5 ms doubling up to about 16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Extra text appended to every scrape (the user's own metrics, already encoded).
pub(crate) type MetricsExtension = Box<dyn Fn(&mut String) -> std::fmt::Result + Send + Sync>;

pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    extensions: Mutex<Vec<MetricsExtension>>,
    connections_open: Gauge,
    connections: Counter,
    connections_rejected: Family<ReasonLabel, Counter>,
    auth_refusals: Counter,
    subscriptions_open: Gauge,
    subscriptions: Counter,
    records_delivered: Counter,
    data_frames: Counter,
    replay_served: Counter,
    catch_up_reads: Counter,
    live_reads: Counter,
    key_index_reads: Counter,
    key_index_skipped: Counter,
    paused: Counter,
    publishes: Counter,
    publish_duplicates: Counter,
    publish_failures: Counter,
    trace_contexts_ignored: Counter,
    slow_consumer_disconnects: Counter,
    kafka_errors: Counter,
    records_skipped_other_type: Counter,
    errors: Family<CodeLabel, Counter>,
    publish_latency: Histogram,
    first_record_latency: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("kafkasocks")),
            extensions: Mutex::default(),
            connections_open: Gauge::default(),
            connections: Counter::default(),
            connections_rejected: Family::default(),
            auth_refusals: Counter::default(),
            subscriptions_open: Gauge::default(),
            subscriptions: Counter::default(),
            records_delivered: Counter::default(),
            data_frames: Counter::default(),
            replay_served: Counter::default(),
            catch_up_reads: Counter::default(),
            live_reads: Counter::default(),
            key_index_reads: Counter::default(),
            key_index_skipped: Counter::default(),
            paused: Counter::default(),
            publishes: Counter::default(),
            publish_duplicates: Counter::default(),
            publish_failures: Counter::default(),
            trace_contexts_ignored: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            kafka_errors: Counter::default(),
            records_skipped_other_type: Counter::default(),
            errors: Family::default(),
            publish_latency: latency_histogram(),
            first_record_latency: latency_histogram(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register(
                "build",
                "The KafkaSocks runtime version",
                Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
            );
            r.register("connections_open", "Open WebSocket connections", m.connections_open.clone());
            r.register("connections", "WebSocket connections accepted", m.connections.clone());
            r.register(
                "connections_rejected",
                "Connections refused before their session began, by reason",
                m.connections_rejected.clone(),
            );
            r.register("auth_refusals", "Tokens refused (Hello, TokenRefresh, gRPC)", m.auth_refusals.clone());
            r.register("subscriptions_open", "Open subscriptions", m.subscriptions_open.clone());
            r.register("subscriptions", "Subscriptions opened", m.subscriptions.clone());
            r.register("records_delivered", "Records written to clients", m.records_delivered.clone());
            r.register(
                "records_skipped_other_type",
                "Records of a type their stream does not accept, skipped (other_types: OTHER_TYPES_SKIP)",
                m.records_skipped_other_type.clone(),
            );
            r.register("data_frames", "Data frames written to clients", m.data_frames.clone());
            r.register(
                "replay_records",
                "Records served to catching-up subscribers from memory",
                m.replay_served.clone(),
            );
            r.register("catch_up_reads", "Records read from Kafka by catch-up readers", m.catch_up_reads.clone());
            r.register("live_reads", "Records read from Kafka by the topics' live readers", m.live_reads.clone());
            r.register("key_index_reads", "Records read from Kafka to build key indexes", m.key_index_reads.clone());
            r.register(
                "key_index_skipped",
                "Offsets keyed subscriptions skipped because the key index said they held none of their keys",
                m.key_index_skipped.clone(),
            );
            r.register(
                "subscription_pauses",
                "Times a subscription paused (no credit or full send queue)",
                m.paused.clone(),
            );
            r.register("publishes", "Publishes acknowledged", m.publishes.clone());
            r.register("publish_duplicates", "Publishes answered from the dedup window", m.publish_duplicates.clone());
            r.register("publish_failures", "Publishes answered with an error", m.publish_failures.clone());
            r.register(
                "trace_contexts_ignored",
                "Publishes whose invalid W3C traceparent or tracestate was ignored",
                m.trace_contexts_ignored.clone(),
            );
            r.register(
                "slow_consumer_disconnects",
                "Connections closed with 4008",
                m.slow_consumer_disconnects.clone(),
            );
            r.register("kafka_errors", "Errors reported by Kafka readers", m.kafka_errors.clone());
            r.register("errors", "Error frames sent, by code", m.errors.clone());
            r.register(
                "publish_latency_seconds",
                "From a publish's arrival to its receipt (Kafka's acknowledgement or the dedup window)",
                m.publish_latency.clone(),
            );
            r.register(
                "first_record_latency_seconds",
                "From a subscribe's arrival to its first record queued for the client",
                m.first_record_latency.clone(),
            );
        }
        for &reason in REFUSAL_REASONS {
            let _ = m.connections_rejected.get_or_create(&ReasonLabel { reason });
        }
        // Every code is listed from the first scrape on, at zero.
        for &code in Code::ALL {
            let _ = m.errors.get_or_create(&CodeLabel { code: code.as_str() });
        }
        m
    }

    /// Adds a collector (for metrics whose values are read at scrape time).
    pub(crate) fn register_collector(&self, collector: Box<dyn Collector>) {
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).register_collector(collector);
    }

    /// Adds text to every scrape after ours (a user's own registry, encoded).
    pub(crate) fn add_extension(&self, extension: MetricsExtension) {
        self.extensions.lock().unwrap_or_else(|p| p.into_inner()).push(extension);
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_open.inc();
        self.connections.inc();
    }
    pub(crate) fn connection_closed(&self) {
        self.connections_open.dec();
    }
    /// A connection refused; `reason` is one of [`REFUSAL_REASONS`].
    pub(crate) fn connection_rejected(&self, reason: &'static str) {
        debug_assert!(REFUSAL_REASONS.contains(&reason));
        self.connections_rejected.get_or_create(&ReasonLabel { reason }).inc();
    }
    pub(crate) fn auth_refused(&self) {
        self.auth_refusals.inc();
    }
    pub(crate) fn subscription_opened(&self) {
        self.subscriptions_open.inc();
        self.subscriptions.inc();
    }
    pub(crate) fn subscription_closed(&self) {
        self.subscriptions_open.dec();
    }
    pub(crate) fn delivered(&self, records: u64, frames: u64) {
        self.records_delivered.inc_by(records);
        self.data_frames.inc_by(frames);
    }
    pub(crate) fn replay_served(&self, records: u64) {
        self.replay_served.inc_by(records);
    }
    pub(crate) fn catch_up_reads(&self, records: usize) {
        self.catch_up_reads.inc_by(records as u64);
    }
    pub(crate) fn live_read(&self) {
        self.live_reads.inc();
    }
    pub(crate) fn key_index_reads(&self, records: usize) {
        self.key_index_reads.inc_by(records as u64);
    }
    pub(crate) fn key_index_skipped(&self, offsets: i64) {
        self.key_index_skipped.inc_by(u64::try_from(offsets).unwrap_or(0));
    }
    pub(crate) fn paused(&self) {
        self.paused.inc();
    }
    pub(crate) fn published(&self, duplicate: bool, took: Duration) {
        self.publishes.inc();
        if duplicate {
            self.publish_duplicates.inc();
        }
        self.publish_latency.observe(took.as_secs_f64());
    }
    pub(crate) fn publish_failed(&self) {
        self.publish_failures.inc();
    }
    /// A publish's trace context (or its tracestate) was invalid and ignored.
    pub(crate) fn trace_context_ignored(&self) {
        self.trace_contexts_ignored.inc();
    }
    #[cfg(test)]
    pub(crate) fn trace_contexts_ignored(&self) -> u64 {
        self.trace_contexts_ignored.get()
    }
    pub(crate) fn first_record(&self, took: Duration) {
        self.first_record_latency.observe(took.as_secs_f64());
    }
    pub(crate) fn slow_consumer(&self) {
        self.slow_consumer_disconnects.inc();
    }
    pub(crate) fn kafka_error(&self) {
        self.kafka_errors.inc();
    }
    pub(crate) fn skipped_other_type(&self) {
        self.records_skipped_other_type.inc();
    }
    pub(crate) fn error(&self, code: Code) {
        self.errors.get_or_create(&CodeLabel { code: code.as_str() }).inc();
    }

    /// The OpenMetrics text of every metric, the extensions' after ours, then `# EOF`.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        {
            let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            if prometheus_client::encoding::text::encode_registry(&mut out, &registry).is_err() {
                out.clear();
            }
        }
        for ext in self.extensions.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let before = out.len();
            if ext(&mut out).is_err() {
                out.truncate(before);
            }
            if !out.ends_with('\n') && !out.is_empty() {
                out.push('\n');
            }
        }
        let _ = writeln!(out, "# EOF");
        out
    }
}

/// The content type of [`Metrics::render`].
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn renders_counters_histograms_build_info_and_extensions() {
        let m = Metrics::new();
        m.connection_opened();
        m.published(false, Duration::from_millis(3));
        m.published(true, Duration::from_millis(1));
        m.error(Code::DataLoss);
        m.add_extension(Box::new(|out| writeln!(out, "# TYPE my_app_things counter\nmy_app_things_total 7")));
        let text = m.render();
        assert_eq!(value(&text, "kafkasocks_connections_open"), Some(1.0), "{text}");
        assert_eq!(value(&text, "kafkasocks_publishes_total"), Some(2.0));
        assert_eq!(value(&text, "kafkasocks_publish_duplicates_total"), Some(1.0));
        assert_eq!(value(&text, "kafkasocks_errors_total{code=\"DATA_LOSS\"}"), Some(1.0));
        assert_eq!(value(&text, "kafkasocks_errors_total{code=\"NOT_FOUND\"}"), Some(0.0));
        assert_eq!(value(&text, "kafkasocks_publish_latency_seconds_count"), Some(2.0));
        let build = format!("kafkasocks_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
        assert_eq!(value(&text, &build), Some(1.0), "{text}");
        assert_eq!(value(&text, "my_app_things_total"), Some(7.0));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}
