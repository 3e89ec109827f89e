//! What every session of one gateway shares: the fan-out, the streams, the authenticator,
//! the dedup window, the registry client, limits, metrics and the shutdown signal.

use std::sync::Arc;

use tokio::sync::watch;

use super::dedup::DedupWindow;
use crate::auth::Authenticator;
use crate::config::Limits;
use crate::fanout::hubs::Hubs;
use crate::kafka::Kafka;
use crate::metrics::Metrics;
use crate::stream::Streams;

pub(crate) struct Shared {
    pub(crate) hubs: Arc<Hubs>,
    pub(crate) streams: Streams,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) server_id: String,
    pub(crate) dedup: DedupWindow,
    #[cfg(feature = "registry")]
    pub(crate) registry: Option<crate::registry::SchemaRegistry>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn kafka(&self) -> &Arc<Kafka> {
        &self.hubs.ctx.kafka
    }

    pub(crate) fn draining(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// A gateway's shared state for unit tests: Kafka is configured but never reached, the
/// only stream is `a.B/C` on topic `t`.
#[cfg(test)]
pub(crate) fn test_shared(limits: Limits) -> (Arc<Shared>, watch::Sender<bool>) {
    let metrics = Arc::new(Metrics::default());
    let kafka = Kafka::new(crate::kafka::config::KafkaConfig::new("127.0.0.1:9"), limits.publish_timeout, "t")
        .unwrap_or_else(|e| panic!("kafka: {e}"));
    let ctx = crate::fanout::context::FanoutContext::new(kafka, limits.clone(), metrics.clone());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        hubs: Hubs::new(ctx),
        streams: Streams::new().subscribe("a.B/C", "t", crate::stream::KeyField::none()),
        auth: Arc::new(crate::auth::AllowAnonymous),
        dedup: DedupWindow::new(limits.dedup_window, 10),
        #[cfg(feature = "registry")]
        registry: None,
        limits,
        metrics,
        server_id: "test".into(),
        shutdown: shutdown_rx,
    });
    (shared, shutdown)
}
