//! A subscriber as the fan-out sees it: which records it wants, its cursor and credit, and
//! where its records go (the connection's [`Outbox`]). The hub and the driver change its
//! state only through the methods here, under its lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

use super::outbox::Outbox;
use crate::metrics::Metrics;
use crate::protocol::Status;
use crate::protocol::wire::{self, SharedRecord, frame};
use crate::stream::{RecordFilter, SubscriptionPlan};

/// What a subscriber is made from.
pub(crate) struct SubscriberSpec {
    /// The subscription id on its connection.
    pub(crate) id: u32,
    /// The credit it starts with, in records.
    pub(crate) credit: u32,
    /// The most credit it may hold.
    pub(crate) max_credit: u32,
}

/// Per partition state, under the subscriber's lock.
pub(crate) struct SubState {
    /// Per partition: the offset of the first record the client has not been sent.
    next: Vec<i64>,
    /// Per partition: in the hub's index (the live reader delivers).
    live: Vec<bool>,
    /// Per partition: on the partition's shared history reader (it delivers).
    boarded: Vec<bool>,
    /// Per partition: the cursor the client has (from `Subscribed`, its records and the
    /// checkpoints it was sent).
    reported: Vec<i64>,
    credit: u64,
}

impl SubState {
    /// Starts every partition at `next` (neither live nor boarded).
    pub(crate) fn start_at(&mut self, next: &[i64]) {
        self.next = next.to_vec();
        self.reported = next.to_vec();
        self.live = vec![false; next.len()];
        self.boarded = vec![false; next.len()];
    }

    pub(crate) fn next(&self, p: usize) -> i64 {
        self.next[p]
    }

    pub(crate) fn is_live(&self, p: usize) -> bool {
        self.live[p]
    }

    pub(crate) fn set_live(&mut self, p: usize, live: bool) {
        self.live[p] = live;
    }

    pub(crate) fn set_all_live(&mut self) {
        self.live.iter_mut().for_each(|l| *l = true);
    }

    pub(crate) fn is_boarded(&self, p: usize) -> bool {
        self.boarded[p]
    }

    pub(crate) fn set_boarded(&mut self, p: usize, boarded: bool) {
        self.boarded[p] = boarded;
    }

    /// Raises the cursor of `p` to `to` (every record below it was offered); false when
    /// it was there already.
    pub(crate) fn raise(&mut self, p: usize, to: i64) -> bool {
        if to > self.next[p] {
            self.next[p] = to;
            true
        } else {
            false
        }
    }

    pub(crate) fn credit(&self) -> u64 {
        self.credit
    }
}

/// What became of a record offered to a subscriber.
pub(crate) enum Offer {
    /// Queued for the client.
    Sent,
    /// Not for this subscriber (below its cursor, or not matching); the cursor moved on.
    Skipped,
    /// No credit or no queue space: the cursor stays.
    Refused,
}

pub(crate) struct Subscriber {
    pub(crate) id: u32,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) metrics: Arc<Metrics>,
    /// Notified when the subscriber can make progress (credit, queue room, an end).
    pub(crate) wake: Arc<Notify>,
    /// Which records it wants: set once, by the subscribe hook, before it joins a hub.
    plan: OnceLock<SubscriptionPlan>,
    state: Mutex<SubState>,
    ended: AtomicBool,
    /// Held while the end is marked and while `Subscribed` is announced: so `Subscribed`
    /// is queued before the end, or not at all (never after the connection's `End`).
    announcing: Mutex<()>,
    max_credit: u64,
    opened: Instant,
    got_first: AtomicBool,
    /// Refused for lack of credit or queue room since it last sent (counted once a pause).
    paused: AtomicBool,
}

impl Subscriber {
    pub(crate) fn new(spec: SubscriberSpec, outbox: Arc<Outbox>, metrics: Arc<Metrics>) -> Arc<Subscriber> {
        Arc::new(Subscriber {
            id: spec.id,
            outbox,
            metrics,
            wake: Arc::new(Notify::new()),
            plan: OnceLock::new(),
            state: Mutex::new(SubState {
                next: Vec::new(),
                live: Vec::new(),
                boarded: Vec::new(),
                reported: Vec::new(),
                credit: u64::from(spec.credit),
            }),
            ended: AtomicBool::new(false),
            announcing: Mutex::new(()),
            max_credit: u64::from(spec.max_credit),
            opened: Instant::now(),
            got_first: AtomicBool::new(false),
            paused: AtomicBool::new(false),
        })
    }

    /// Sets which records it wants (once; later calls are ignored).
    pub(crate) fn set_plan(&self, plan: SubscriptionPlan) {
        let _ = self.plan.set(plan);
    }

    /// The key it selects, if any (the hub indexes by it).
    pub(crate) fn key(&self) -> Option<&Bytes> {
        self.plan.get().and_then(|p| p.key.as_ref())
    }

    fn filter(&self) -> Option<&RecordFilter> {
        self.plan.get().and_then(|p| p.filter.as_ref())
    }

    /// Whether some records may not be for it (it then gets checkpoints).
    pub(crate) fn is_filtered(&self) -> bool {
        #[cfg(feature = "registry")]
        let typed = self.plan.get().is_some_and(|p| p.typed.is_some());
        #[cfg(not(feature = "registry"))]
        let typed = false;
        self.key().is_some() || self.filter().is_some() || typed
    }

    /// Tells the client how far its cursor moved past the records it was not sent: a
    /// Checkpoint for each partition whose position is beyond the client's, live ones
    /// raised to the live reader's position (`live_next`) first. Queued under the
    /// subscriber's lock, so no record at a later offset can be queued before it. The
    /// client's cursor counts as moved only once the frame is queued: one the control
    /// queue had no room for is sent again at the next checkpoint, so a quiet topic's
    /// cursor still reaches the log end (and a resume after retention is no DATA_LOSS).
    pub(crate) fn checkpoint(&self, live_next: &[i64]) {
        let mut st = self.lock();
        let mut moved = Vec::new();
        for p in 0..st.next.len() {
            if st.live[p]
                && let Some(&live) = live_next.get(p)
            {
                st.raise(p, live);
            }
            if st.next[p] > st.reported[p] {
                moved.push(wire::PartitionOffset { partition: p as i32, next_offset: st.next[p] });
            }
        }
        if moved.is_empty() {
            return;
        }
        let frame = wire::encode(frame::Kind::Checkpoint(wire::Checkpoint {
            subscription_id: self.id,
            positions: moved.clone(),
        }));
        if self.outbox.push_frame(frame).is_ok() {
            for po in moved {
                st.reported[po.partition as usize] = po.next_offset;
            }
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Marks the subscription over; returns false if it already was.
    pub(crate) fn end(&self) -> bool {
        let first = {
            let _announcing = self.announcing.lock().unwrap_or_else(|p| p.into_inner());
            !self.ended.swap(true, Ordering::AcqRel)
        };
        self.wake.notify_one();
        first
    }

    /// Queues `frame` (the `Subscribed` announcement) unless the subscription has ended.
    pub(crate) fn announce(&self, frame: bytes::Bytes) {
        let _announcing = self.announcing.lock().unwrap_or_else(|p| p.into_inner());
        if !self.is_ended() {
            self.outbox.push_owed(frame);
        }
    }

    /// Ends the subscription with an error frame (the connection sweeps ended ones).
    pub(crate) fn fail(&self, status: Status) {
        if self.end() {
            self.metrics.error(status.code());
            self.outbox.push_owed(wire::encode(frame::Kind::Error(status.to_wire(self.id, 0))));
        }
    }

    pub(crate) fn add_credit(&self, records: u32) {
        let mut st = self.lock();
        st.credit = (st.credit + u64::from(records)).min(self.max_credit);
        drop(st);
        self.wake.notify_one();
    }

    /// Refused for lack of credit or queue room: counted once per pause, whichever path
    /// (live, ring, history, catch-up) offered the record.
    fn pause(&self) -> Offer {
        if !self.paused.swap(true, Ordering::Relaxed) {
            self.metrics.paused();
        }
        Offer::Refused
    }

    /// Offers the records of `recs` (partition `p`, in offset order) until one is
    /// refused: whether all were taken (sent or skipped), and how many. A subscription
    /// that takes every record as it is (no key, filter or record types) hands them to
    /// its send queue as one run; the others are offered one by one.
    pub(crate) fn offer_run<'a>(
        &self,
        st: &mut SubState,
        recs: impl Iterator<Item = &'a SharedRecord>,
        p: usize,
    ) -> (bool, u64) {
        if self.is_filtered() {
            let mut served = 0;
            for rec in recs {
                if let Offer::Refused = self.offer(st, rec, p) {
                    return (false, served);
                }
                served += 1;
            }
            return (true, served);
        }
        // One walk: past what the cursor already has, then as much as credit and room take.
        let next = st.next[p];
        let mut recs = recs.peekable();
        let mut skipped = 0;
        while recs.next_if(|r| r.offset < next).is_some() {
            skipped += 1;
        }
        if recs.peek().is_none() {
            return (true, skipped);
        }
        let (queued, after) = if st.credit == 0 {
            (0, None)
        } else {
            self.outbox.offer_records(self.id, &self.wake, &mut recs, st.credit)
        };
        if let Some(after) = after {
            self.paused.store(false, Ordering::Relaxed);
            st.credit -= queued;
            st.next[p] = after;
            st.reported[p] = after;
            if !self.got_first.load(Ordering::Relaxed) && !self.got_first.swap(true, Ordering::Relaxed) {
                self.metrics.first_record(self.opened.elapsed());
            }
        }
        if recs.peek().is_some() {
            self.pause();
            return (false, skipped + queued);
        }
        (true, skipped + queued)
    }

    /// Offers `rec` (partition `p`) to the client: sent, skipped (below the cursor or not
    /// matching; the cursor moves on) or refused (no credit or no queue space, or, on a
    /// stream of several types, the record's schema still being fetched; the cursor stays).
    pub(crate) fn offer(&self, st: &mut SubState, rec: &SharedRecord, p: usize) -> Offer {
        if rec.offset < st.next[p] {
            return Offer::Skipped;
        }
        if self.key().is_some_and(|k| *k != rec.key) {
            st.next[p] = rec.offset + 1;
            return Offer::Skipped;
        }
        // Typed streams: the record as the client gets it (the filter sees that too).
        #[cfg(feature = "registry")]
        let typed = match self.plan.get().and_then(|p| p.typed.as_ref()) {
            None => None,
            Some(typed) => {
                if st.credit == 0 {
                    return self.pause();
                }
                match typed.prepare(rec, &self.wake) {
                    crate::registry::Typed::Deliver(r) => Some(r),
                    crate::registry::Typed::Skip => {
                        self.metrics.skipped_other_type();
                        st.next[p] = rec.offset + 1;
                        return Offer::Skipped;
                    }
                    crate::registry::Typed::Wait => return Offer::Refused,
                    crate::registry::Typed::Fail(status) => {
                        self.fail(status);
                        return Offer::Refused;
                    }
                }
            }
        };
        #[cfg(feature = "registry")]
        let rec = typed.as_ref().unwrap_or(rec);
        if self.filter().is_some_and(|f| !f(&rec.view())) {
            st.next[p] = rec.offset + 1;
            return Offer::Skipped;
        }
        if st.credit == 0 || !self.outbox.offer_record(self.id, &self.wake, rec) {
            return self.pause();
        }
        self.paused.store(false, Ordering::Relaxed);
        st.credit -= 1;
        st.next[p] = rec.offset + 1;
        st.reported[p] = rec.offset + 1;
        if !self.got_first.load(Ordering::Relaxed) && !self.got_first.swap(true, Ordering::Relaxed) {
            self.metrics.first_record(self.opened.elapsed());
        }
        Offer::Sent
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::fanout::outbox::{Item, SendBudget};

    fn checkpoints(items: &std::collections::VecDeque<Item>) -> Vec<Vec<(i32, i64)>> {
        items
            .iter()
            .filter_map(|item| match item {
                Item::Frame(b) => match wire::Frame::decode(b.clone()).ok()?.kind? {
                    frame::Kind::Checkpoint(c) => {
                        Some(c.positions.iter().map(|p| (p.partition, p.next_offset)).collect())
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// A subscription that fails while the control queue is full still tells its client:
    /// the Error frame is owed, not dropped (before, the client waited on a subscription
    /// that was over).
    #[tokio::test]
    async fn a_failure_is_sent_even_when_the_control_queue_is_full() {
        let outbox = Outbox::new(1 << 20, 1, SendBudget::new(1 << 20));
        let spec = SubscriberSpec { id: 4, credit: 10, max_credit: 10 };
        let sub = Subscriber::new(spec, outbox.clone(), Arc::new(Metrics::default()));
        let ping = wire::encode(frame::Kind::Ping(wire::Ping { nonce: 1 }));
        outbox.push_frame(ping).expect("room for one frame");
        assert!(outbox.push_frame(wire::encode(frame::Kind::Ping(wire::Ping { nonce: 2 }))).is_err(), "full");
        sub.fail(Status::unavailable("the topic's reader stopped"));
        let (items, _) = outbox.take().await;
        let errors: Vec<_> = items
            .iter()
            .filter_map(|item| match item {
                Item::Frame(b) => match wire::Frame::decode(b.clone()).ok()?.kind? {
                    frame::Kind::Error(e) => Some(e.subscription_id),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(errors, [4], "the Error frame for subscription 4");
        assert!(!outbox.is_closed(), "and the connection stays open");
    }

    /// A checkpoint the control queue had no room for is not taken as sent: the next one
    /// carries the position, though nothing moved in between.
    #[tokio::test]
    async fn a_checkpoint_the_queue_refused_is_sent_with_the_next_one() {
        let outbox = Outbox::new(1 << 20, 1, SendBudget::new(1 << 20));
        let spec = SubscriberSpec { id: 1, credit: 10, max_credit: 10 };
        let sub = Subscriber::new(spec, outbox.clone(), Arc::new(Metrics::default()));
        sub.lock().start_at(&[0, 0]);
        sub.lock().set_all_live();
        let ping = wire::encode(frame::Kind::Ping(wire::Ping { nonce: 1 }));
        outbox.push_frame(ping).expect("room for one frame");
        sub.checkpoint(&[5, 7]);
        let (items, _) = outbox.take().await;
        assert_eq!((items.len(), checkpoints(&items).len()), (1, 0), "the queue was full");
        sub.checkpoint(&[5, 7]);
        let (items, _) = tokio::time::timeout(std::time::Duration::from_secs(1), outbox.take())
            .await
            .expect("the checkpoint is queued again");
        assert_eq!(checkpoints(&items), [vec![(0, 5), (1, 7)]]);
        // Sent once: nothing moved since.
        sub.checkpoint(&[5, 7]);
        outbox.close(1000, "");
        let (items, _) = outbox.take().await;
        assert!(checkpoints(&items).is_empty());
    }
}
