//! What every session of one gateway shares: the fan-out, the streams, the authenticator
//! and permissions, the client bounds, the dedup window, the registry client, limits,
//! metrics and the shutdown signal.

use std::sync::Arc;

use tokio::sync::watch;

use super::clients::Clients;
use super::dedup::DedupWindow;
use crate::auth::{Authenticator, Handshake, Operation, Permissions, Principal};
use crate::config::Limits;
use crate::fanout::hubs::Hubs;
use crate::fanout::outbox::SendBudget;
use crate::kafka::Kafka;
use crate::metrics::Metrics;
use crate::protocol::{Code, Status};
use crate::stream::{RequestContext, Streams};

pub(crate) struct Shared {
    pub(crate) hubs: Arc<Hubs>,
    pub(crate) streams: Streams,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) permissions: Permissions,
    pub(crate) clients: Arc<Clients>,
    pub(crate) send_budget: Arc<SendBudget>,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) server_id: String,
    pub(crate) dedup: DedupWindow,
    #[cfg(feature = "registry")]
    pub(crate) registry: Option<Arc<crate::registry::SchemaRegistry>>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn kafka(&self) -> &Arc<Kafka> {
        &self.hubs.ctx.kafka
    }

    pub(crate) fn draining(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Runs the authenticator within [`Limits::auth_timeout`]; every failure is a refusal.
    pub(crate) async fn authenticate(&self, token: &str, handshake: &Handshake) -> Result<Principal, Status> {
        match tokio::time::timeout(self.limits.auth_timeout, self.auth.authenticate(token, handshake)).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(status)) => {
                self.metrics.auth_refused();
                Err(match status.code() {
                    Code::Unauthenticated | Code::PermissionDenied | Code::Unavailable => status,
                    _ => Status::unauthenticated(status.message().to_owned()),
                })
            }
            Err(_) => {
                self.metrics.auth_refused();
                tracing::warn!(timeout = ?self.limits.auth_timeout, "the authenticator did not answer in time");
                Err(Status::unavailable("the token could not be checked in time"))
            }
        }
    }

    /// Whether the context's principal may do `op` on its method.
    pub(crate) fn authorize(&self, ctx: &RequestContext, op: Operation) -> Result<(), Status> {
        self.permissions.check(&ctx.principal, op, &ctx.method)
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
        permissions: Permissions::allow_all(),
        clients: Clients::new(limits.clone()),
        send_budget: SendBudget::new(limits.send_queue_bytes_total),
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
