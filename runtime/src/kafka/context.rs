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
    /// Keeps `reason`, unless it only says that brokers are down and another error is
    /// already kept, or that a connection failed while a refusal (a refused password, a
    /// failed TLS handshake) is kept: the kept one says why. (librdkafka reports one failed
    /// TLS handshake both as an SSL error and, at times, as a transport failure after it.)
    fn record(&self, error: &KafkaError, reason: &str) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::AllBrokersDown) && last.is_some() {
            return;
        }
        if code == Some(RDKafkaErrorCode::BrokerTransportFailure) && last.as_ref().is_some_and(|e| e.refused) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal stays known while librdkafka reports the same failed handshake as a
    /// transport failure, or all brokers down; only an answer from Kafka lifts it. (A
    /// transport failure kept last made a publish wait out its timeout, now and then, in
    /// `tests/secured.rs`.)
    #[test]
    fn a_refusal_outlives_the_transport_failures_that_follow_it() {
        let h = KafkaHealth::default();
        h.record(&KafkaError::Global(RDKafkaErrorCode::SSL), "SSL handshake failed: certificate verify failed");
        h.record(&KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure), "certificate verify failed");
        h.record(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "1/1 brokers are down");
        assert_eq!(h.refusal().as_deref(), Some("SSL handshake failed: certificate verify failed"));
        h.clear();
        assert_eq!(h.refusal(), None);
        // Without a refusal, a transport failure is what there is to say.
        h.record(&KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure), "connection refused");
        assert_eq!((h.refusal(), h.last_error().as_deref()), (None, Some("connection refused")));
    }
}
