//! The librdkafka client context of every client the gateway makes: librdkafka's logs go to
//! `tracing`, and the errors it reports about the connection (a refused password, a failed
//! TLS handshake, brokers down) are kept, so that health checks and errors can say why
//! Kafka does not answer instead of only that it does not.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The last connection-level error librdkafka reported, shared by all clients.
#[derive(Debug, Default)]
pub(crate) struct KafkaHealth {
    last_error: Mutex<Option<LastError>>,
    /// A check of whether Kafka accepts the gateway again is running (one at a time).
    pub(crate) probing: AtomicBool,
}

#[derive(Debug)]
struct LastError {
    reason: String,
    /// Kafka refused the gateway itself: its credentials (SASL) or the TLS handshake. That
    /// does not pass by waiting, unlike brokers being down.
    refused: bool,
}

impl KafkaHealth {
    /// Keeps `reason`, unless it only says that brokers are down and a more telling error
    /// (a refused password, a failed TLS handshake) is already kept: that one says why.
    fn record(&self, error: &KafkaError, reason: &str) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::AllBrokersDown) && last.is_some() {
            return;
        }
        let refused = matches!(code, Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL));
        *last = Some(LastError { reason: reason.to_owned(), refused });
    }

    /// Forgets past errors (Kafka answered).
    pub(crate) fn clear(&self) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The last error librdkafka reported, if any since Kafka last answered.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|e| e.reason.clone())
    }

    /// Why Kafka refuses the gateway (its credentials, the TLS handshake), if it did so
    /// last and has not answered since.
    pub(crate) fn refusal(&self) -> Option<String> {
        let last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref().filter(|e| e.refused).map(|e| e.reason.clone())
    }
}

#[derive(Clone)]
pub(crate) struct GatewayContext {
    pub(crate) health: Arc<KafkaHealth>,
}

impl ClientContext for GatewayContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility = fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", error = %error, "{reason}");
        self.health.record(&error, reason);
    }
}

impl ConsumerContext for GatewayContext {}
