//! One subscription: its cursor, credit and the driver task that keeps it caught up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use rdkafka::error::KafkaError;
use tokio::sync::Notify;

use crate::kafka::hub::{Offer, Step, TopicHub, to_shared};
use crate::kafka::{Kafka, TopicInfo};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::stream::RecordFilter;
use crate::wire::{self, SharedRecord, frame};
use crate::{Discontinuity, Status};

pub(crate) struct SubState {
    /// Per partition: the offset of the first record the client has not been sent.
    pub(crate) next: Vec<i64>,
    /// Per partition: in the hub's index (the live reader delivers).
    pub(crate) live: Vec<bool>,
    /// Per partition: on the partition's shared history reader (it delivers).
    pub(crate) boarded: Vec<bool>,
    pub(crate) credit: u64,
}

pub(crate) struct SubCore {
    pub(crate) id: u32,
    pub(crate) session: String,
    pub(crate) key: Option<Bytes>,
    pub(crate) filter: Option<RecordFilter>,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) wake: Notify,
    /// The hub once the start is resolved.
    pub(crate) hub: OnceLock<Arc<TopicHub>>,
    state: Mutex<SubState>,
    ended: AtomicBool,
    max_credit: u64,
}

impl SubCore {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u32,
        session: String,
        key: Option<Bytes>,
        filter: Option<RecordFilter>,
        outbox: Arc<Outbox>,
        metrics: Arc<Metrics>,
        credit: u32,
        max_credit: u32,
    ) -> Arc<SubCore> {
        Arc::new(SubCore {
            id,
            session,
            key,
            filter,
            outbox,
            metrics,
            wake: Notify::new(),
            hub: OnceLock::new(),
            state: Mutex::new(SubState {
                next: Vec::new(),
                live: Vec::new(),
                boarded: Vec::new(),
                credit: u64::from(credit),
            }),
            ended: AtomicBool::new(false),
            max_credit: u64::from(max_credit),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Marks the subscription over; returns false if it already was.
    pub(crate) fn end(&self) -> bool {
        let first = !self.ended.swap(true, Ordering::AcqRel);
        self.wake.notify_one();
        first
    }

    /// Ends the subscription with an error frame (the connection sweeps ended ones).
    pub(crate) fn fail(&self, status: Status) {
        if self.end() {
            self.metrics.error(status.code());
            let _ = self.outbox.push_frame(wire::encode(frame::Kind::Error(status.to_wire(self.id, 0))));
        }
    }

    pub(crate) fn add_credit(&self, records: u32) {
        let mut st = self.lock();
        st.credit = (st.credit + u64::from(records)).min(self.max_credit);
        drop(st);
        self.wake.notify_one();
    }

    fn matches(&self, rec: &SharedRecord) -> bool {
        self.key.as_ref().is_none_or(|k| *k == rec.key) && self.filter.as_ref().is_none_or(|f| f(&rec.view()))
    }

    /// Offers `rec` (partition `p`, at or after the cursor) to the client: sent, skipped
    /// (not matching, the cursor moves on) or refused (no credit or no queue space; the
    /// cursor stays).
    pub(crate) fn offer(self: &Arc<Self>, st: &mut SubState, rec: &SharedRecord, p: usize) -> Offer {
        if rec.offset < st.next[p] {
            return Offer::Skipped;
        }
        if !self.matches(rec) {
            st.next[p] = rec.offset + 1;
            return Offer::Skipped;
        }
        if st.credit == 0 || !self.outbox.offer_record(self, rec) {
            return Offer::Refused;
        }
        st.credit -= 1;
        st.next[p] = rec.offset + 1;
        Offer::Sent
    }
}

/// Where a subscription starts, from the Subscribe frame.
#[derive(Debug, Clone)]
pub(crate) enum Start {
    Latest,
    Earliest,
    Timestamp(i64),
    Cursor(wire::Cursor),
}

impl Start {
    pub(crate) fn from_wire(s: Option<wire::StartPosition>) -> Start {
        use wire::start_position::Position;
        match s.and_then(|s| s.position) {
            None | Some(Position::Latest(_)) => Start::Latest,
            Some(Position::Earliest(_)) => Start::Earliest,
            Some(Position::TimestampMs(t)) => Start::Timestamp(t),
            Some(Position::Cursor(c)) => Start::Cursor(c),
        }
    }
}

/// Checks a cursor against the topic as it is now.
pub(crate) fn validate_cursor(cursor: &wire::Cursor, info: &TopicInfo) -> Result<Vec<i64>, Status> {
    if !cursor.topic_id.is_empty() && !info.id.is_empty() && cursor.topic_id != info.id {
        return Err(Status::data_loss(
            Discontinuity::TopicRecreated,
            "the topic was deleted and created again since this cursor was made",
        ));
    }
    let mut next = vec![None; info.partitions];
    for p in &cursor.positions {
        match usize::try_from(p.partition).ok().and_then(|i| next.get_mut(i)) {
            Some(slot @ None) => *slot = Some(p.next_offset),
            _ => {
                return Err(Status::data_loss(
                    Discontinuity::PartitionsChanged,
                    format!("the topic has {} partitions; the cursor names partition {}", info.partitions, p.partition),
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

/// Resolves the start, announces the subscription with `Subscribed`, then keeps it
/// caught up until it ends.
pub(crate) async fn run(kafka: Arc<Kafka>, sub: Arc<SubCore>, topic: String, start: Start) {
    let hub = match open(&kafka, &sub, &topic, start).await {
        Ok(hub) => hub,
        Err(status) => {
            sub.fail(status);
            return;
        }
    };
    drive(&kafka, &sub, &hub).await;
    hub.detach(&sub);
}

async fn open(kafka: &Arc<Kafka>, sub: &Arc<SubCore>, topic: &str, start: Start) -> Result<Arc<TopicHub>, Status> {
    let info = kafka.describe(topic).await?;
    let n = info.partitions;
    // Where delivery starts, resolved before anything is built for it. `None`: latest.
    let want: Option<Vec<i64>> = match start {
        Start::Latest => None,
        Start::Earliest => Some(kafka.watermarks(topic, n).await?.into_iter().map(|(low, _)| low).collect()),
        Start::Timestamp(t) => Some(kafka.offsets_for_time(topic, n, t).await?),
        Start::Cursor(c) => {
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
    let hub = kafka.hub(topic, &info, want.as_deref()).await?;
    let _ = sub.hub.set(hub.clone());
    {
        let mut st = sub.lock();
        st.next = vec![0; n];
        st.live = vec![false; n];
        st.boarded = vec![false; n];
    }
    let credit = sub.lock().credit as u32;
    let subscribed = |next: &[i64]| {
        let cursor = wire::Cursor {
            topic_id: info.id.clone(),
            positions: next
                .iter()
                .enumerate()
                .map(|(p, &o)| wire::PartitionOffset { partition: p as i32, next_offset: o })
                .collect(),
        };
        let _ = sub.outbox.push_frame(wire::encode(frame::Kind::Subscribed(wire::Subscribed {
            id: sub.id,
            topic: topic.to_owned(),
            cursor: Some(cursor),
            credit,
        })));
    };
    match want {
        None => hub.join_at_live(sub, subscribed),
        Some(next) => {
            sub.lock().next.clone_from(&next);
            subscribed(&next);
        }
    }
    Ok(hub)
}

async fn drive(kafka: &Arc<Kafka>, sub: &Arc<SubCore>, hub: &Arc<TopicHub>) {
    let filtered = sub.key.is_some() || sub.filter.is_some();
    let mut checkpoint = tokio::time::interval(kafka.limits.checkpoint_interval);
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
                Step::ReadKafka(from) => match catch_up(kafka, sub, hub, p, from).await {
                    // Caught up to the ring: the next pass joins.
                    Ok(CatchUp::Reached) => sub.wake.notify_one(),
                    // Credit or queue space will wake the driver.
                    Ok(CatchUp::Blocked) => {}
                    Err(status) => {
                        sub.fail(status);
                        return;
                    }
                },
                Step::StartHistory(id, from) => hub.start_history(kafka, p, id, from),
                Step::Live | Step::Blocked | Step::Boarded => {}
            }
        }
        tokio::select! {
            () = sub.wake.notified() => {}
            _ = checkpoint.tick(), if filtered => {
                let moved = hub.checkpoint(sub);
                if !moved.is_empty() {
                    let frame = wire::encode(frame::Kind::Checkpoint(wire::Checkpoint {
                        subscription_id: sub.id,
                        positions: moved
                            .into_iter()
                            .map(|(partition, next_offset)| wire::PartitionOffset { partition, next_offset })
                            .collect(),
                    }));
                    let _ = sub.outbox.push_frame(frame);
                }
            }
        }
    }
}

/// How long a catch-up reader waits for a blocked client before giving the reader back.
const BLOCKED_READER_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// How a catch-up read ended.
enum CatchUp {
    /// The cursor is where the ring (or the live reader) can take over.
    Reached,
    /// The client has no credit or queue space left: the reader was given back.
    Blocked,
}

/// Reads partition `p` from Kafka at `from` until the ring reaches back to the cursor.
async fn catch_up(
    kafka: &Arc<Kafka>,
    sub: &Arc<SubCore>,
    hub: &TopicHub,
    p: usize,
    from: i64,
) -> Result<CatchUp, Status> {
    let _permit = kafka
        .catchup_permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Status::unavailable("gateway shutting down"))?;
    if sub.is_ended() {
        return Ok(CatchUp::Reached);
    }
    let consumer = kafka.reader(&hub.topic, &[(p as i32, from)], true)?;
    tracing::debug!(topic = %hub.topic, partition = p, from, "catch-up reader started");
    loop {
        if sub.is_ended() || hub.is_retired() {
            return Ok(CatchUp::Reached);
        }
        let next = sub.lock().next[p];
        if hub.ring_reaches(p, next) {
            return Ok(CatchUp::Reached);
        }
        let msg = tokio::select! {
            m = consumer.recv() => m,
            () = sub.wake.notified() => continue,
        };
        let rec = match msg {
            Ok(m) => {
                let r = to_shared(&m);
                drop(m);
                r
            }
            Err(KafkaError::PartitionEOF(_)) => {
                // At the log end: the live reader is at or behind us; joining with the
                // cursor ahead of it skips what we already sent.
                let next = sub.lock().next[p];
                if hub.ring_reaches(p, next) || next >= hub.live_positions()[p] {
                    return Ok(CatchUp::Reached);
                }
                continue;
            }
            Err(e) if crate::kafka::below_log_start(&e) => {
                return Err(Status::data_loss(
                    Discontinuity::OffsetBelowLogStart,
                    format!("partition {p}: the log no longer holds offset {}", sub.lock().next[p]),
                ));
            }
            Err(e) => {
                kafka.metrics.kafka_error();
                tracing::warn!(topic = %hub.topic, error = %e, "catch-up reader error");
                continue;
            }
        };
        kafka.metrics.catch_up_read();
        // Out of credit or queue space: a client that is reading gets room soon, so wait a
        // little; one that is not must not hold the reader (and its permit) for as long as
        // it takes: give it back, and the driver resumes from the cursor when woken.
        let deadline = tokio::time::Instant::now() + BLOCKED_READER_GRACE;
        loop {
            let waker = sub.wake.notified();
            if !matches!(sub.offer(&mut sub.lock(), &rec, p), Offer::Refused) {
                break;
            }
            if sub.is_ended() || tokio::time::timeout_at(deadline, waker).await.is_err() {
                return Ok(CatchUp::Blocked);
            }
        }
    }
}
