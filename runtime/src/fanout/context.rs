//! What the fan-out's readers share: the Kafka clients, the limits, the metrics and the
//! permits that bound catch-up readers.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::Limits;
use crate::kafka::Kafka;
use crate::metrics::Metrics;

pub(crate) struct FanoutContext {
    pub(crate) kafka: Arc<Kafka>,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
    /// Catch-up and history readers hold one each (`Limits::max_catchup_readers`).
    pub(crate) catchup_permits: Arc<Semaphore>,
}

impl FanoutContext {
    pub(crate) fn new(kafka: Arc<Kafka>, limits: Limits, metrics: Arc<Metrics>) -> Arc<FanoutContext> {
        Arc::new(FanoutContext {
            catchup_permits: Arc::new(Semaphore::new(limits.max_catchup_readers.max(1))),
            kafka,
            limits,
            metrics,
        })
    }
}
