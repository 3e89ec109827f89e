//! One subscription's life: resolve the start, announce it with `Subscribed`, then keep it
//! caught up (from the ring, or from Kafka by a shared history reader) until it
//! joins the live feed, and until it ends. [`SubscriptionHandle`] is what a session holds.

use std::sync::{Arc, OnceLock};

use tokio::task::AbortHandle;
use tracing::Instrument;

use super::context::FanoutContext;
use super::hub::{Step, TopicHub};
use super::hubs::Hubs;
use super::outbox::Outbox;
use super::subscriber::{Subscriber, SubscriberSpec};
use crate::kafka::TopicInfo;
use crate::protocol::wire::{self, frame};
use crate::protocol::{Cursor, Discontinuity, StartAt, Status};
use crate::stream::{BoxFuture, SubscriptionPlan};

/// An open subscription. Dropping it ends the subscription, takes it off its hub, stops
/// its driver and counts it closed, once, whichever way it ended.
pub(crate) struct SubscriptionHandle {
    sub: Arc<Subscriber>,
    hub: Arc<OnceLock<Arc<TopicHub>>>,
    task: AbortHandle,
}

/// What a subscription is opened with.
pub(crate) struct Opening {
    pub(crate) spec: SubscriberSpec,
    pub(crate) topic: String,
    pub(crate) start: StartAt,
    /// The subscribe hook's answer: which records match (an error ends the subscription).
    pub(crate) plan: BoxFuture<Result<SubscriptionPlan, Status>>,
}

impl SubscriptionHandle {
    /// Opens a subscription whose records go to `outbox`, driven by its own task inside
    /// `span`.
    pub(crate) fn open(hubs: &Arc<Hubs>, outbox: Arc<Outbox>, opening: Opening, span: tracing::Span) -> Self {
        let Opening { spec, topic, start, plan } = opening;
        let metrics = hubs.ctx.metrics.clone();
        let sub = Subscriber::new(spec, outbox, metrics.clone());
        let hub = Arc::new(OnceLock::new());
        metrics.subscription_opened();
        let opening = Box::new(Opens { topic, start, plan });
        let task = tokio::spawn(run(hubs.clone(), sub.clone(), hub.clone(), opening).instrument(span));
        SubscriptionHandle { sub, hub, task: task.abort_handle() }
    }

    /// The client returned `records` of credit.
    pub(crate) fn add_credit(&self, records: u32) {
        self.sub.add_credit(records);
    }

    /// Whether it ended by itself (an Error frame was queued).
    pub(crate) fn is_ended(&self) -> bool {
        self.sub.is_ended()
    }
}

impl Drop for SubscriptionHandle {
    fn drop(&mut self) {
        self.sub.end();
        if let Some(hub) = self.hub.get() {
            hub.detach(&self.sub);
        }
        self.task.abort();
        self.sub.metrics.subscription_closed();
    }
}

/// Checks a cursor against the topic as it is now.
pub(crate) fn validate_cursor(cursor: &Cursor, info: &TopicInfo) -> Result<Vec<i64>, Status> {
    if !cursor.topic_id.is_empty() && !info.id.is_empty() && cursor.topic_id != info.id {
        return Err(Status::data_loss(
            Discontinuity::TopicRecreated,
            "the topic was deleted and created again since this cursor was made",
        ));
    }
    let mut next = vec![None; info.partitions];
    for &(partition, next_offset) in &cursor.positions {
        match usize::try_from(partition).ok().and_then(|i| next.get_mut(i)) {
            Some(slot @ None) => *slot = Some(next_offset),
            _ => {
                return Err(Status::data_loss(
                    Discontinuity::PartitionsChanged,
                    format!("the topic has {} partitions; the cursor names partition {partition}", info.partitions),
                ));
            }
        }
    }
    next.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| {
        Status::data_loss(
            Discontinuity::PartitionsChanged,
            format!("the topic has {} partitions; the cursor has {}", info.partitions, cursor.positions.len()),
        )
    })
}

/// What only opening a subscription needs: on the heap, so that the task (allocated at
/// its largest state, for the subscription's life) does not keep room for it.
struct Opens {
    topic: String,
    start: StartAt,
    plan: BoxFuture<Result<SubscriptionPlan, Status>>,
}

/// Asks the hook, resolves the start, announces the subscription with `Subscribed`, then
/// keeps it caught up until it ends.
async fn run(hubs: Arc<Hubs>, sub: Arc<Subscriber>, slot: Arc<OnceLock<Arc<TopicHub>>>, opening: Box<Opens>) {
    let opened = async {
        let Opens { topic, start, plan } = *opening;
        sub.set_plan(plan.await?);
        open(&hubs, &sub, &slot, &topic, start).await
    };
    // On the heap while it runs: the task keeps only what delivering needs afterwards.
    let hub = match Box::pin(opened).await {
        Ok(hub) => hub,
        Err(status) => {
            sub.fail(status);
            return;
        }
    };
    drive(&hubs.ctx, &sub, &hub).await;
    hub.detach(&sub);
}

async fn open(
    hubs: &Hubs,
    sub: &Arc<Subscriber>,
    slot: &OnceLock<Arc<TopicHub>>,
    topic: &str,
    start: StartAt,
) -> Result<Arc<TopicHub>, Status> {
    let kafka = &hubs.ctx.kafka;
    let info = kafka.describe(topic).await?;
    let n = info.partitions;
    // Where delivery starts, resolved before anything is built for it. `None`: latest.
    let want: Option<Vec<i64>> = match start {
        StartAt::Latest => None,
        StartAt::Earliest => Some(kafka.watermarks(topic, n).await?.into_iter().map(|(low, _)| low).collect()),
        StartAt::Timestamp(t) => Some(kafka.offsets_for_time(topic, n, t).await?),
        StartAt::Cursor(c) => {
            let next = validate_cursor(&c, &info)?;
            // Always against the log as it is now, even when the replay ring still holds
            // the records: records deleted from Kafka are not served from memory, and
            // every gateway node gives the same answer.
            let marks = kafka.fresh_watermarks(topic, n).await?;
            for (p, (&o, &(low, high))) in next.iter().zip(&marks).enumerate() {
                if o < low {
                    return Err(Status::data_loss(
                        Discontinuity::OffsetBelowLogStart,
                        format!("partition {p}: offset {o} is below the log start {low}"),
                    ));
                }
                if o > high {
                    return Err(Status::data_loss(
                        Discontinuity::OffsetBeyondEnd,
                        format!("partition {p}: offset {o} is beyond the log end {high}"),
                    ));
                }
            }
            Some(next)
        }
    };
    // A subscription that makes the topic's hub positions its shared reader: a burst of
    // subscribers from old offsets then shares one read of the log.
    let hub = hubs.hub(topic, &info, want.as_deref()).await?;
    let _ = slot.set(hub.clone());
    let credit = {
        let mut st = sub.lock();
        st.start_at(&vec![0; n]);
        u32::try_from(st.credit()).unwrap_or(u32::MAX)
    };
    let subscribed = |next: &[i64]| {
        let cursor = Cursor {
            topic_id: info.id.clone(),
            positions: next.iter().enumerate().map(|(p, &o)| (p as i32, o)).collect(),
        }
        .to_wire();
        sub.announce(wire::encode(frame::Kind::Subscribed(wire::Subscribed {
            id: sub.id,
            topic: topic.to_owned(),
            cursor: Some(cursor),
            credit,
        })));
    };
    match want {
        None => hub.join_at_live(sub, subscribed),
        Some(next) => {
            sub.lock().start_at(&next);
            subscribed(&next);
        }
    }
    Ok(hub)
}

async fn drive(ctx: &Arc<FanoutContext>, sub: &Arc<Subscriber>, hub: &Arc<TopicHub>) {
    let filtered = sub.is_filtered();
    if sub.key().is_some() {
        hub.index_keys(ctx);
    }
    let mut checkpoint = tokio::time::interval(ctx.limits.checkpoint_interval);
    checkpoint.tick().await;
    loop {
        if sub.is_ended() {
            return;
        }
        if hub.is_retired() {
            sub.fail(hub.retire_status());
            return;
        }
        for p in 0..hub.partitions() {
            match hub.try_join(sub, p) {
                Step::StartHistory(id, from) => hub.start_history(ctx, p, id, from),
                Step::Live | Step::Blocked | Step::Boarded => {}
            }
        }
        tokio::select! {
            () = sub.wake.notified() => {}
            _ = checkpoint.tick(), if filtered => {
                hub.checkpoint(sub);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Limits;
    use crate::kafka::Kafka;
    use crate::kafka::config::KafkaConfig;
    use crate::metrics::Metrics;
    use crate::protocol::Code;
    use prost::Message as _;

    fn hubs() -> (Arc<Hubs>, Arc<Metrics>) {
        let limits = Limits::default();
        let metrics = Arc::new(Metrics::new());
        // Never reached: every plan below fails or never resolves.
        let kafka = Kafka::new(KafkaConfig::new("127.0.0.1:9"), limits.publish_timeout, "t").expect("kafka");
        (Hubs::new(FanoutContext::new(kafka, limits, metrics.clone())), metrics)
    }

    fn opening(id: u32, plan: BoxFuture<Result<SubscriptionPlan, Status>>) -> Opening {
        Opening {
            spec: SubscriberSpec { id, credit: 10, max_credit: 10 },
            topic: "t".into(),
            start: StartAt::Latest,
            plan,
        }
    }

    fn open_subscriptions(metrics: &Metrics) -> String {
        metrics.render().lines().find(|l| l.starts_with("kafkasocks_subscriptions_open ")).unwrap_or("").to_owned()
    }

    /// However a subscription ends (by itself with an error, or by its handle), dropping
    /// the handle counts it closed exactly once, and a refused plan reaches the client.
    #[tokio::test]
    async fn a_handle_ends_and_counts_a_subscription_once() {
        let (hubs, metrics) = hubs();
        let outbox = Outbox::new(1 << 20, 64, crate::fanout::outbox::SendBudget::new(1 << 20));
        let refused: BoxFuture<_> = Box::pin(async { Err(Status::permission_denied("not yours")) });
        let pending: BoxFuture<_> = Box::pin(std::future::pending());
        let failing = SubscriptionHandle::open(&hubs, outbox.clone(), opening(1, refused), tracing::Span::none());
        let waiting = SubscriptionHandle::open(&hubs, outbox.clone(), opening(2, pending), tracing::Span::none());
        assert_eq!(open_subscriptions(&metrics), "kafkasocks_subscriptions_open 2");
        tokio::time::timeout(Duration::from_secs(5), async {
            while !failing.is_ended() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the refused subscription ends by itself");
        let (frames, _) = outbox.take().await;
        let refusal = frames.iter().find_map(|item| match item {
            crate::fanout::outbox::Item::Frame(b) => match wire::Frame::decode(b.clone()).ok()?.kind? {
                frame::Kind::Error(e) => Some((e.subscription_id, Code::from_grpc(e.code))),
                _ => None,
            },
            _ => None,
        });
        assert_eq!(refusal, Some((1, Code::PermissionDenied)));
        assert!(!waiting.is_ended());
        drop(failing);
        assert_eq!(open_subscriptions(&metrics), "kafkasocks_subscriptions_open 1");
        drop(waiting);
        assert_eq!(open_subscriptions(&metrics), "kafkasocks_subscriptions_open 0");
    }

    /// A subscription's task lives as long as the subscription, allocated at its largest
    /// state: what opening it needs is on the heap while it runs.
    #[tokio::test]
    async fn a_subscription_s_task_stays_small() {
        let (hubs, metrics) = hubs();
        let outbox = Outbox::new(1 << 20, 64, crate::fanout::outbox::SendBudget::new(1 << 20));
        let Opening { spec, topic, start, plan } = opening(1, Box::pin(std::future::pending()));
        let sub = Subscriber::new(spec, outbox, metrics);
        let task = run(hubs.clone(), sub, Arc::new(OnceLock::new()), Box::new(Opens { topic, start, plan }));
        let size = std::mem::size_of_val(&task);
        assert!(size <= 320, "subscription task: {size} B");
    }
}
