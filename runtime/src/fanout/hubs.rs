//! The topic hubs of one gateway: one per topic, made on first use, replaced when the
//! topic's identity changes; and the lag gauges they report at scrape time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::context::FanoutContext;
use super::hub::TopicHub;
use crate::kafka::TopicInfo;
use crate::protocol::Status;

pub(crate) struct Hubs {
    pub(crate) ctx: Arc<FanoutContext>,
    map: Mutex<HashMap<String, Arc<TopicHub>>>,
}

impl Hubs {
    /// The hubs, with a lag collector registered in the context's metrics.
    pub(crate) fn new(ctx: Arc<FanoutContext>) -> Arc<Hubs> {
        let hubs = Arc::new(Hubs { ctx, map: Mutex::default() });
        hubs.ctx.metrics.register_collector(Box::new(LagCollector(Arc::downgrade(&hubs))));
        hubs
    }

    /// The live hub of `topic`, made if needed. A hub made for another incarnation of the
    /// topic (another id, another partition count) is retired first: its subscribers are
    /// told why. A new hub's reader starts at `start` (per partition, within the log), or
    /// at the log end.
    pub(crate) async fn hub(
        &self,
        topic: &str,
        info: &TopicInfo,
        start: Option<&[i64]>,
    ) -> Result<Arc<TopicHub>, Status> {
        let stale = {
            let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(topic) {
                Some(h) if !h.is_retired() && h.matches(info) => return Ok(h.clone()),
                other => other.cloned(),
            }
        };
        if let Some(old) = stale.filter(|h| !h.is_retired()) {
            old.retire(TopicHub::discontinuity_to(&old.info, info));
        }
        let marks = self.ctx.kafka.watermarks(topic, info.partitions).await?;
        let hub = TopicHub::start(self.ctx.clone(), topic, info.clone(), &marks, start)?;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Another caller may have made one meanwhile: keep the first.
        match map.get(topic) {
            Some(h) if !h.is_retired() && h.matches(info) => {
                hub.retire(None);
                Ok(h.clone())
            }
            _ => {
                map.insert(topic.to_owned(), hub.clone());
                Ok(hub)
            }
        }
    }

    /// The hubs that still read (a retired one stays in the map until it is replaced).
    fn live(&self) -> Vec<Arc<TopicHub>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|h| !h.is_retired()).cloned().collect()
    }

    /// Stops every reader and ends every subscription (at shutdown).
    pub(crate) fn retire_all(&self) {
        for hub in self.live() {
            hub.retire(None);
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    topic: String,
    partition: i32,
}

/// `kafkasocks_subscriber_lag_records_max{topic, partition}`: labels are bounded by the
/// registered streams' topics and their partitions.
#[derive(Debug)]
struct LagCollector(Weak<Hubs>);

impl Collector for LagCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(hubs) = self.0.upgrade() else { return Ok(()) };
        let family = Family::<LagLabels, Gauge>::default();
        for hub in hubs.live() {
            for (p, lag) in hub.max_lag().into_iter().enumerate() {
                family.get_or_create(&LagLabels { topic: hub.topic.clone(), partition: p as i32 }).set(lag);
            }
        }
        let metric = encoder.encode_descriptor(
            "subscriber_lag_records_max",
            "The most records a live subscriber of the partition is behind the gateway's reader.",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}
