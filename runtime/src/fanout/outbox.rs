//! The per-connection send queue: bounded in record bytes and in control frames.
//!
//! Fan-out never blocks on a connection: it offers a record with [`Outbox::offer_record`],
//! and a full queue answers `false`, which pauses that subscription (it keeps its cursor
//! and catches up later). The writer task takes everything queued at once, writes it
//! as few WebSocket messages as it can, and flushes once.

use std::collections::VecDeque;
use std::iter::Peekable;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::protocol::close;
use crate::protocol::wire::{self, DataFrame, SharedRecord, frame};

pub(crate) enum Item {
    /// Consecutive records for subscription `.0`, copied into the Data frame that will
    /// carry them (up to [`DATA_BATCH_BYTES`]): no reference to a shared record per
    /// subscriber (an atomic count on a cache line every subscriber's core touches), and
    /// the writer has nothing left to gather.
    Records(u32, DataFrame),
    Frame(Bytes),
    Close(u16, &'static str),
}

/// The largest Data frame a queue builds from consecutive records of one subscription
/// (a larger record gets a frame of its own).
pub(crate) const DATA_BATCH_BYTES: usize = 256 << 10;

#[derive(Default)]
struct State {
    items: VecDeque<Item>,
    record_bytes: usize,
    frames: usize,
    full_since: Option<Instant>,
    /// The wakers of subscriptions refused for lack of room.
    waiting: Vec<Weak<Notify>>,
    closed: bool,
    /// Closed as a slow consumer: what the peer was not sent is dropped (see
    /// [`Outbox::close_slow_consumer`]).
    discarding: bool,
}

/// The step in which [`Outbox::offer_records`] takes the gateway-wide bound.
const BUDGET_STEP: usize = 64 << 10;

/// Control-queue places kept for the gateway's own frames while a client's requests fill it.
pub(crate) const RESERVED_FRAMES: usize = 16;

pub(crate) struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    /// Notified when the writer took what was queued (control room again).
    drained: Notify,
    /// Notified when the connection is closed as a slow consumer.
    discard: Notify,
    /// Notified for the session when the record bound starts refusing (its slow-consumer
    /// clock starts) and when the queue is closed by someone else.
    attention: Notify,
    max_record_bytes: usize,
    max_frames: usize,
    budget: Arc<SendBudget>,
}

/// Record bytes queued for every connection of a gateway together, and their bound.
#[derive(Debug)]
pub(crate) struct SendBudget {
    used: AtomicUsize,
    max: usize,
}

impl SendBudget {
    pub(crate) fn new(max: usize) -> Arc<SendBudget> {
        Arc::new(SendBudget { used: AtomicUsize::new(0), max })
    }

    /// The bytes taken now (the tests read it; the bound itself is kept by `try_reserve`).
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` of the bound if they fit (never more than the bound is handed out).
    fn try_reserve(&self, bytes: usize) -> bool {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.max {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Bytes a writer has written (or dropped) after taking them.
    pub(crate) fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The control-frame bound was hit: the peer does not read.
#[derive(Debug)]
pub(crate) struct Overflow;

impl Outbox {
    pub(crate) fn new(max_record_bytes: usize, max_frames: usize, budget: Arc<SendBudget>) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::default(),
            ready: Notify::new(),
            drained: Notify::new(),
            discard: Notify::new(),
            attention: Notify::new(),
            max_record_bytes,
            max_frames,
            budget,
        })
    }

    /// The gateway-wide bound this queue counts against.
    pub(crate) fn budget(&self) -> &Arc<SendBudget> {
        &self.budget
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a record for subscription `id` unless the byte bound of this queue, or the
    /// gateway's over all queues, is reached (a lone record always fits, however large,
    /// so every connection makes progress). On `false`, `wake` is notified once the queue
    /// drains.
    pub(crate) fn offer_record(&self, id: u32, wake: &Arc<Notify>, rec: &SharedRecord) -> bool {
        self.offer_records(id, wake, &mut std::iter::once(rec).peekable(), 1).0 == 1
    }

    /// [`Outbox::offer_record`] for a run of records of one subscription, in order, under
    /// one lock and with one wake of the writer: how many it queued (a prefix of `recs`,
    /// at most `max`, taken from it; what it did not queue is left there) and the offset
    /// after the last one. Fewer than offered: the queue (or the gateway's bound) is full,
    /// and `wake` is notified once it drains. A run takes the gateway-wide bound in steps of
    /// [`BUDGET_STEP`] and gives back what is left of the last step (a single record
    /// takes its own size), so the bound is never passed (a lone record in an empty queue
    /// still always fits).
    pub(crate) fn offer_records<'a, I: Iterator<Item = &'a SharedRecord>>(
        &self,
        id: u32,
        wake: &Arc<Notify>,
        recs: &mut Peekable<I>,
        max: u64,
    ) -> (u64, Option<i64>) {
        let mut s = self.lock();
        if s.closed {
            return (0, None);
        }
        let (mut queued, mut reserved, mut used, mut after) = (0u64, 0usize, 0usize, None);
        let mut full = false;
        while queued < max {
            let Some(&rec) = recs.peek() else { break };
            let len = rec.encoded.len();
            if s.record_bytes > 0 && s.record_bytes + len > self.max_record_bytes {
                full = true;
                break;
            }
            if used + len > reserved {
                let room = self.max_record_bytes.saturating_sub(s.record_bytes).max(len);
                let step = if max > 1 { BUDGET_STEP.max(len).min(room) } else { len };
                reserved += if self.budget.try_reserve(step) {
                    step
                } else if step > len && self.budget.try_reserve(len) {
                    len
                } else if s.record_bytes == 0 {
                    // A lone record always fits: every connection makes progress.
                    self.budget.used.fetch_add(len, Ordering::Relaxed);
                    len
                } else {
                    full = true;
                    break;
                };
            }
            used += len;
            s.record_bytes += len;
            match s.items.back_mut() {
                Some(Item::Records(last, frame)) if *last == id && frame.records_len() + len <= DATA_BATCH_BYTES => {
                    frame.push(&rec.encoded);
                }
                _ => {
                    // Room for the run as far as it is known (credit, the iterator's
                    // length), so that a run is copied once; a lone record gets its size.
                    let known = recs.size_hint().0.min(usize::try_from(max - queued).unwrap_or(usize::MAX));
                    let capacity = len.saturating_mul(known.max(1)).min(DATA_BATCH_BYTES.max(len));
                    let mut frame = DataFrame::with_capacity(capacity);
                    frame.push(&rec.encoded);
                    s.items.push_back(Item::Records(id, frame));
                }
            }
            recs.next();
            queued += 1;
            after = Some(rec.offset + 1);
        }
        self.budget.release(reserved - used);
        if full {
            self.mark_full(&mut s);
            s.waiting.push(Arc::downgrade(wake));
        }
        drop(s);
        if queued > 0 {
            self.ready.notify_one();
        }
        (queued, after)
    }

    /// Starts the slow-consumer clock, unless it runs already (and tells the session).
    fn mark_full(&self, s: &mut State) {
        if s.full_since.is_none() {
            s.full_since = Some(Instant::now());
            self.attention.notify_one();
        }
    }

    /// Waits until the queue calls for the session's attention: it started refusing
    /// records, or it was closed.
    pub(crate) async fn attention(&self) {
        self.attention.notified().await;
    }

    /// Notifies `wake` when the writer next takes the queue (at once if it is empty of
    /// records): for a history reader that was refused room for one of its subscribers.
    pub(crate) fn notify_on_room(&self, wake: &Arc<Notify>) {
        let mut s = self.lock();
        if s.record_bytes == 0 || s.closed {
            drop(s);
            wake.notify_one();
            return;
        }
        s.waiting.push(Arc::downgrade(wake));
    }

    /// Queues a control frame (in order with records).
    pub(crate) fn push_frame(&self, frame: Bytes) -> Result<(), Overflow> {
        self.queue_frame(frame, true)
    }

    /// Queues a frame a subscription is owed once (its `Subscribed`, its final `Error`)
    /// even past the frame bound, which such frames cannot outgrow for long: at most two
    /// per subscription, and a connection holds at most `max_subscriptions`. Dropping one
    /// would leave the client waiting on a subscription that is over.
    pub(crate) fn push_owed(&self, frame: Bytes) {
        let _always = self.queue_frame(frame, false);
    }

    /// Queues `frame` (nothing once closed), within the frame bound when `bounded`.
    fn queue_frame(&self, frame: Bytes, bounded: bool) -> Result<(), Overflow> {
        let mut s = self.lock();
        if s.closed {
            return Ok(());
        }
        if bounded && s.frames >= self.max_frames {
            return Err(Overflow);
        }
        s.frames += 1;
        s.items.push_back(Item::Frame(frame));
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues the close frame; nothing queued after it is sent.
    pub(crate) fn close(&self, code: u16, reason: &'static str) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        s.closed = true;
        s.items.push_back(Item::Close(code, reason));
        drop(s);
        self.ready.notify_one();
        self.attention.notify_one();
    }

    /// Closes the connection as a slow consumer (4008: it resumes from its cursor). The
    /// peer is not reading, and the Close must reach it as soon as it reads again: what it
    /// was not sent yet is dropped ([`dropped_when_discarding`]: the queued records, whose
    /// bytes leave the send budget now, and the checkpoints, which may cover them), the
    /// other control frames stay (receipts, errors: at most `send_queue_frames`), then the
    /// Close. The writer drops the same from what it holds ([`Outbox::discarding`]).
    pub(crate) fn close_slow_consumer(&self, metrics: &Metrics) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        metrics.slow_consumer();
        s.discarding = true;
        s.items.retain(|item| !dropped_when_discarding(item));
        self.budget.release(std::mem::take(&mut s.record_bytes));
        s.frames = s.items.len();
        s.full_since = None;
        s.waiting.clear();
        s.closed = true;
        s.items.push_back(Item::Close(close::SLOW_CONSUMER, "slow consumer: resume from your cursor"));
        drop(s);
        self.ready.notify_one();
        self.discard.notify_waiters();
        self.attention.notify_one();
    }

    /// Whether the connection was closed as a slow consumer.
    pub(crate) fn is_discarding(&self) -> bool {
        self.lock().discarding
    }

    /// Waits until the connection is closed as a slow consumer (the writer races its
    /// blocked writes against it, to drop the records it holds).
    pub(crate) async fn discarding(&self) {
        loop {
            let discard = self.discard.notified();
            if self.is_discarding() {
                return;
            }
            discard.await;
        }
    }

    /// Queues a control frame; a peer that lets the control queue fill is closed as a
    /// slow consumer. False when it was.
    pub(crate) fn push_frame_or_close(&self, frame: Bytes, metrics: &Metrics) -> bool {
        if self.push_frame(frame).is_err() {
            self.close_slow_consumer(metrics);
            return false;
        }
        true
    }

    /// Waits for items and takes them all; wakes subscriptions that were refused. The
    /// taker owes [`SendBudget::release`] the returned record bytes once written.
    pub(crate) async fn take(&self) -> (VecDeque<Item>, usize) {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if !s.items.is_empty() {
                    let bytes = s.record_bytes;
                    s.record_bytes = 0;
                    s.frames = 0;
                    s.full_since = None;
                    let waiting = std::mem::take(&mut s.waiting);
                    let items = std::mem::take(&mut s.items);
                    drop(s);
                    self.drained.notify_waiters();
                    for w in waiting {
                        if let Some(wake) = w.upgrade() {
                            wake.notify_one();
                        }
                    }
                    return (items, bytes);
                }
            }
            notified.await;
        }
    }

    /// Whether the control queue has room for the answers to another incoming frame. The
    /// session stops reading while it has not (TCP pushes back on a client that sends
    /// requests faster than it reads their answers) instead of closing it as a slow
    /// consumer; a few places stay free for the gateway's own frames (Ping, GoAway).
    pub(crate) fn has_answer_room(&self) -> bool {
        self.lock().frames + RESERVED_FRAMES.min(self.max_frames / 2) < self.max_frames
    }

    /// Waits until the writer has taken the queue (then there is room again).
    pub(crate) async fn answer_room(&self) {
        loop {
            let drained = self.drained.notified();
            if self.has_answer_room() || self.is_closed() {
                return;
            }
            drained.await;
        }
    }

    /// How long the record bound has refused records without the writer draining.
    pub(crate) fn full_since(&self) -> Option<Instant> {
        self.lock().full_since
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// What a slow consumer's Close goes without: records, and checkpoints (a checkpoint may
/// raise the client's cursor past records queued before it, which it will now not get).
pub(crate) fn dropped_when_discarding(item: &Item) -> bool {
    match item {
        Item::Records(..) => true,
        Item::Frame(b) => {
            matches!(wire::Frame::decode(b.clone()), Ok(wire::Frame { kind: Some(frame::Kind::Checkpoint(_)) }))
        }
        Item::Close(..) => false,
    }
}

/// Records still queued when a connection ends (its writer stopped first) leave the
/// gateway-wide count with the queue.
impl Drop for Outbox {
    fn drop(&mut self) {
        let s = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        self.budget.release(s.record_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: usize) -> SharedRecord {
        SharedRecord::new(0, 0, 0, b"", &[], &vec![7u8; len])
    }

    /// Queues that each have room still stop taking records once the gateway-wide bound
    /// is reached; each keeps one record (progress), and the bound frees as writers drain.
    #[tokio::test]
    async fn the_gateway_wide_bound_pauses_every_queue_until_writers_drain() {
        let budget = SendBudget::new(3_000);
        let (a, b) = (Outbox::new(1 << 20, 64, budget.clone()), Outbox::new(1 << 20, 64, budget.clone()));
        let wake = Arc::new(Notify::new());
        let rec = record(1_000);
        let len = rec.encoded.len();
        assert!(a.offer_record(1, &wake, &rec) && a.offer_record(1, &wake, &rec));
        assert!(b.offer_record(1, &wake, &rec), "an empty queue always takes one record");
        assert!(!a.offer_record(1, &wake, &rec) && !b.offer_record(1, &wake, &rec), "over the gateway-wide bound");
        assert_eq!(budget.used(), 3 * len);
        let (items, bytes) = a.take().await;
        assert_eq!((items.len(), bytes), (1, 2 * len), "two records, one Data frame");
        budget.release(bytes);
        assert!(b.offer_record(1, &wake, &rec), "room again once a writer wrote what it took");
        assert_eq!(budget.used(), 2 * len);
        // A connection that ends with records still queued gives them back.
        drop((a, b));
        assert_eq!(budget.used(), 0);
    }

    /// A run of records queues what fits, in order, under both bounds; the part of the
    /// gateway-wide bound it took in steps and did not use is given back at once.
    #[tokio::test]
    async fn a_run_of_records_queues_what_fits_and_takes_no_more_of_the_budget() {
        let recs: Vec<SharedRecord> = (1..=10).map(|i| SharedRecord::new(0, i, 0, b"", &[], &[7u8; 1_000])).collect();
        let len = recs[0].encoded.len();
        let wake = Arc::new(Notify::new());
        // The queue's own bound: 3 records and a bit.
        let budget = SendBudget::new(1 << 20);
        let a = Outbox::new(3 * len + 10, 64, budget.clone());
        assert_eq!(a.offer_records(1, &wake, &mut recs.iter().peekable(), u64::MAX).0, 3);
        assert_eq!(budget.used(), 3 * len, "exactly what is queued");
        assert!(a.full_since().is_some());
        // `max` (the credit) stops it too.
        let b = Outbox::new(1 << 20, 64, budget.clone());
        let mut run = recs.iter().peekable();
        assert_eq!(b.offer_records(1, &wake, &mut run, 2), (2, Some(recs[1].offset + 1)));
        assert_eq!(run.next().map(|r| r.offset), Some(recs[2].offset), "what it did not queue is left");
        assert_eq!(budget.used(), 5 * len);
        // The gateway-wide bound: room for 2 more records only (less than one step).
        let tight = SendBudget::new(2 * len + 5);
        let c = Outbox::new(1 << 20, 64, tight.clone());
        assert_eq!(c.offer_records(1, &wake, &mut recs.iter().peekable(), u64::MAX).0, 2);
        assert_eq!(tight.used(), 2 * len);
        // Another queue, empty, still takes one record (progress); not two.
        let d = Outbox::new(1 << 20, 64, tight.clone());
        assert_eq!(d.offer_records(1, &wake, &mut recs.iter().peekable(), u64::MAX).0, 1);
        let (items, bytes) = c.take().await;
        assert_eq!((items.len(), bytes), (1, 2 * len), "one Data frame for the run");
        let Item::Records(1, data) = &items[0] else { panic!("not subscription 1's records") };
        assert_eq!(data.encodings().collect::<Vec<_>>(), [&recs[0].encoded[..], &recs[1].encoded[..]]);
        // The writer's take woke the refused subscription.
        tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified()).await.expect("woken");
    }

    /// A slow consumer's queue keeps its control frames but not its records (their bytes
    /// leave the budget at once) nor its checkpoints, then the Close; it is counted once.
    #[tokio::test]
    async fn a_slow_consumer_s_close_drops_its_records_and_checkpoints() {
        use crate::protocol::wire::frame::Kind;
        let budget = SendBudget::new(1 << 20);
        let outbox = Outbox::new(1 << 20, 64, budget.clone());
        let (wake, metrics) = (Arc::new(Notify::new()), Metrics::default());
        let checkpoint = wire::encode(Kind::Checkpoint(wire::Checkpoint { subscription_id: 1, positions: Vec::new() }));
        let receipt = wire::encode(Kind::Receipt(wire::Receipt { id: 3, ..Default::default() }));
        assert!(outbox.offer_record(1, &wake, &record(1_000)));
        outbox.push_frame(checkpoint).expect("room");
        assert!(outbox.offer_record(1, &wake, &record(1_000)));
        outbox.push_frame(receipt.clone()).expect("room");
        assert!(budget.used() > 0 && !outbox.is_discarding());
        outbox.close_slow_consumer(&metrics);
        outbox.close_slow_consumer(&metrics);
        assert_eq!(budget.used(), 0);
        assert!(outbox.is_discarding() && outbox.is_closed());
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.discarding()).await.expect("discarding");
        let (items, bytes) = outbox.take().await;
        assert_eq!(bytes, 0);
        assert!(matches!(
            items.iter().collect::<Vec<_>>()[..],
            [Item::Frame(r), Item::Close(close::SLOW_CONSUMER, _)] if *r == receipt
        ));
        assert!(metrics.render().contains("kafkasocks_slow_consumer_disconnects_total 1\n"));
        assert!(!outbox.offer_record(1, &wake, &record(10)), "nothing is queued after the Close");
    }
}
