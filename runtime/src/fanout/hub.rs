//! One live reader per topic, shared by every subscriber in this process.
//!
//! Each partition has a [`PartitionFeed`]: the next offset the live reader will hand
//! over (`live_next`), a replay ring of the most recent records (complete from
//! `ring_start` to `live_next`), and the subscribers that are *live* on it, indexed by
//! key. A record costs work only for the subscribers whose key matches (plus those
//! without a key). A subscriber that is behind — new with an old start, out of credit,
//! or with a full send queue — is not in the index; its driver catches it up from the
//! ring, or from Kafka when the ring does not reach back far enough, and re-inserts it
//! under the lock once it has everything up to `live_next`. Because the live reader
//! hands records over under the same lock, a subscriber sees every record exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::context::FanoutContext;
use super::keys::{Block, KeyIndex};
use super::subscriber::{Offer, SubState, Subscriber};
use crate::kafka::{Kafka, ReadEvent, Reader, TopicInfo};
use crate::protocol::wire::SharedRecord;
use crate::protocol::{Code, Discontinuity, Status};

pub(crate) struct PartitionFeed {
    pub(crate) live_next: i64,
    /// The log end when the hub was made: "latest" never starts below it, even while the
    /// reader is still reading older records for subscribers that asked for them.
    latest_floor: i64,
    pub(crate) ring_start: i64,
    ring: VecDeque<SharedRecord>,
    ring_bytes: usize,
    by_key: HashMap<Bytes, Vec<Arc<Subscriber>>>,
    all: Vec<Arc<Subscriber>>,
    /// The partition's shared history readers, while they run: one per group of
    /// subscribers that boarded together.
    histories: Vec<History>,
    /// Which keys each stretch of the partition holds, once a keyed subscription asked
    /// for it (see [`TopicHub::index_keys`]).
    keys: Option<KeyIndex>,
    /// Keyed subscribers beyond the index's end, waiting for its builder to get there.
    index_waiters: Vec<Arc<Subscriber>>,
    /// The index is asked for but not made yet (shared blocks being read): keyed
    /// subscribers wait for it.
    index_pending: bool,
}

/// A reader of older records that many subscribers behind the ring share ("board"):
/// it offers each record to all of them, so a burst of resumes reads the log once. A
/// subscriber whose cursor every running reader has passed starts another one (which
/// the next latecomers board), so none waits for a reader of its own.
struct History {
    /// Tells this reader from a later one on the same partition.
    id: u64,
    /// The next offset it will read: a subscriber can board while its cursor is here or
    /// ahead (records below a cursor are skipped for it).
    next: i64,
    subs: Vec<Arc<Subscriber>>,
    task: Option<AbortHandle>,
}

/// How long a new history reader lets others board before it delivers (its consumer
/// connects and fetches meanwhile). Those that come later start another reader.
const BOARDING: Duration = Duration::from_millis(20);

/// The most records a history reader takes from its consumer's queue (what is already
/// there, without waiting) and offers to its subscribers under one lock.
const HISTORY_BATCH: usize = 512;

/// How long a history reader waits for a boarded subscriber without room (a client that
/// is reading gets room within milliseconds) before that subscriber leaves.
const HISTORY_GRACE: Duration = Duration::from_millis(250);

/// How often a history reader tries again a subscriber refused for lack of credit (room
/// in its send queue wakes the reader as soon as the writer takes the queue).
const HISTORY_RETRY: Duration = Duration::from_millis(2);

/// The most records an index builder adds under one lock.
const INDEX_BATCH: usize = 4096;

/// What a driver should do next for one partition of a subscription.
pub(crate) enum Step {
    /// Live: the hub delivers.
    Live,
    /// Out of credit or queue space: wait for a wake.
    Blocked,
    /// On one of the partition's history readers: it delivers.
    Boarded,
    /// Boarded a history reader that must be started: (its id, the offset).
    StartHistory(u64, i64),
}

pub(crate) struct TopicHub {
    pub(crate) topic: String,
    pub(crate) info: TopicInfo,
    feeds: Mutex<Vec<PartitionFeed>>,
    retired: AtomicBool,
    retire_status: Mutex<Option<Status>>,
    reader: Mutex<Option<AbortHandle>>,
    /// Set once the key index is being built; its builders, while they run.
    indexing: AtomicBool,
    builders: Mutex<Vec<AbortHandle>>,
    /// Where sealed key index blocks are shared, when they are (and the topic has an id:
    /// without one, blocks of a deleted topic could pass for the new one's).
    share: Option<Arc<Kafka>>,
    history_ids: std::sync::atomic::AtomicU64,
    replay_records: usize,
    replay_bytes: usize,
}

impl std::fmt::Debug for TopicHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicHub").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl TopicHub {
    pub(crate) fn start(
        ctx: Arc<FanoutContext>,
        topic: &str,
        info: TopicInfo,
        marks: &[(i64, i64)],
        start: Option<&[i64]>,
    ) -> Result<Arc<TopicHub>, Status> {
        let from: Vec<i64> = marks
            .iter()
            .enumerate()
            .map(|(p, &(low, high))| start.and_then(|s| s.get(p)).map_or(high, |&o| o.clamp(low, high)))
            .collect();
        let feeds = marks
            .iter()
            .zip(&from)
            .map(|(&(_, high), &first)| PartitionFeed {
                live_next: first,
                latest_floor: high,
                ring_start: first,
                ring: VecDeque::new(),
                ring_bytes: 0,
                by_key: HashMap::new(),
                all: Vec::new(),
                histories: Vec::new(),
                keys: None,
                index_waiters: Vec::new(),
                index_pending: false,
            })
            .collect();
        let positions: Vec<(i32, i64)> = from.iter().enumerate().map(|(p, &o)| (p as i32, o)).collect();
        let reader = ctx.kafka.reader(topic, &positions, false)?;
        let share = (ctx.kafka.shares_key_index() && !info.id.is_empty()).then(|| ctx.kafka.clone());
        let hub = Arc::new(TopicHub {
            topic: topic.to_owned(),
            info,
            feeds: Mutex::new(feeds),
            retired: AtomicBool::new(false),
            retire_status: Mutex::new(None),
            reader: Mutex::new(None),
            indexing: AtomicBool::new(false),
            builders: Mutex::new(Vec::new()),
            share,
            history_ids: std::sync::atomic::AtomicU64::new(1),
            replay_records: ctx.limits.replay_records,
            replay_bytes: ctx.limits.replay_bytes,
        });
        let task = tokio::spawn(run_live(hub.clone(), ctx, reader));
        *hub.reader.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        tracing::info!(topic, partitions = marks.len(), "live reader started");
        Ok(hub)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Vec<PartitionFeed>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn partitions(&self) -> usize {
        self.info.partitions
    }

    pub(crate) fn matches(&self, info: &TopicInfo) -> bool {
        TopicHub::discontinuity_to(&self.info, info).is_none()
    }

    pub(crate) fn discontinuity_to(old: &TopicInfo, new: &TopicInfo) -> Option<Discontinuity> {
        if !old.id.is_empty() && !new.id.is_empty() && old.id != new.id {
            Some(Discontinuity::TopicRecreated)
        } else if old.partitions != new.partitions {
            Some(Discontinuity::PartitionsChanged)
        } else {
            None
        }
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    pub(crate) fn retire_status(&self) -> Status {
        self.retire_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| Status::unavailable("the topic's reader stopped; resubscribe"))
    }

    /// Stops the live reader and ends every subscription on this hub, telling each why.
    pub(crate) fn retire(&self, why: Option<Discontinuity>) {
        self.retire_with(match why {
            Some(d) => Status::data_loss(d, format!("topic {:?}: {d:?}", self.topic)),
            None => Status::unavailable(format!("topic {:?}: reader stopped; resubscribe", self.topic)),
        });
    }

    /// Stops the live reader and ends every subscription on this hub with `status`.
    pub(crate) fn retire_with(&self, status: Status) {
        *self.retire_status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status.clone());
        self.retired.store(true, Ordering::Release);
        if let Some(r) = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take() {
            r.abort();
        }
        for b in self.builders.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            b.abort();
        }
        let mut subs = Vec::new();
        for feed in self.lock().iter_mut() {
            subs.append(&mut feed.all);
            for (_, mut v) in feed.by_key.drain() {
                subs.append(&mut v);
            }
            subs.append(&mut feed.index_waiters);
            for mut h in feed.histories.drain(..) {
                if let Some(t) = h.task.take() {
                    t.abort();
                }
                subs.append(&mut h.subs);
            }
        }
        for s in subs {
            s.fail(status.clone());
        }
    }

    /// Hands one record from the live reader to every live subscriber it matches.
    pub(crate) fn dispatch(&self, rec: SharedRecord) {
        let mut feeds = self.lock();
        let Some(feed) = feeds.get_mut(rec.partition as usize) else {
            return;
        };
        if rec.offset < feed.live_next {
            return;
        }
        // Once its builder caught up, the index takes the live records too: every offset
        // from its end to this record was read by the live reader, and held none.
        if let Some(keys) = feed.keys.as_mut().filter(|k| k.live && k.end() >= feed.live_next)
            && let Some(block) = keys.add(rec.offset, &rec.key)
        {
            self.share_block(&block, rec.partition);
        }
        feed.live_next = rec.offset + 1;
        feed.ring_bytes += rec.encoded.len();
        feed.ring.push_back(rec.clone());
        while feed.ring.len() > self.replay_records || (feed.ring_bytes > self.replay_bytes && feed.ring.len() > 1) {
            if let Some(old) = feed.ring.pop_front() {
                feed.ring_bytes -= old.encoded.len();
                feed.ring_start = old.offset + 1;
            }
        }
        let p = rec.partition as usize;
        if !rec.key.is_empty()
            && let Some(list) = feed.by_key.get_mut(&rec.key)
        {
            list.retain(|s| deliver_live(s, &rec, p));
            if list.is_empty() {
                feed.by_key.remove(&rec.key);
            }
        }
        feed.all.retain(|s| deliver_live(s, &rec, p));
    }

    /// Brings partition `p` of `sub` up to date from the ring and makes it live, or says
    /// what stands in the way.
    pub(crate) fn try_join(&self, sub: &Arc<Subscriber>, p: usize) -> Step {
        let mut feeds = self.lock();
        // Ended (its handle dropped, maybe detaching from this hub just before we took the
        // lock): it must not join an index nobody will take it out of again.
        if sub.is_ended() {
            return Step::Live;
        }
        let Some(feed) = feeds.get_mut(p) else {
            return Step::Live;
        };
        let mut st = sub.lock();
        if st.is_live(p) {
            return Step::Live;
        }
        if st.is_boarded(p) {
            return Step::Boarded;
        }
        // A keyed subscription skips what the key index says holds none of its records.
        if let (Some(key), Some(keys)) = (sub.key(), &feed.keys) {
            let (from, to) = (st.next(p), keys.next_for(key, st.next(p)));
            if st.raise(p, to) {
                sub.metrics.key_index_skipped(to - from);
            }
        }
        let next = st.next(p);
        if next < feed.live_next {
            if next < feed.ring_start {
                // Beyond the index's end while its builder reads on: wait for it rather
                // than read the same records again.
                if sub.key().is_some()
                    && (feed.index_pending || feed.keys.as_ref().is_some_and(|k| k.waits && next >= k.end()))
                {
                    if !feed.index_waiters.iter().any(|s| Arc::ptr_eq(s, sub)) {
                        feed.index_waiters.push(sub.clone());
                    }
                    return Step::Blocked;
                }
                // Board the reader closest behind the cursor, unless it is further behind
                // than the ring is long (reading that much for nothing takes longer than
                // starting a reader); or start one.
                let reach = self.replay_records.max(HISTORY_BATCH) as i64;
                st.set_boarded(p, true);
                return match feed
                    .histories
                    .iter_mut()
                    .filter(|h| h.next <= next && next - h.next <= reach)
                    .max_by_key(|h| h.next)
                {
                    Some(h) => {
                        h.subs.push(sub.clone());
                        Step::Boarded
                    }
                    None => {
                        let id = self.history_ids.fetch_add(1, Ordering::Relaxed);
                        feed.histories.push(History { id, next, subs: vec![sub.clone()], task: None });
                        Step::StartHistory(id, next)
                    }
                };
            }
            let from = feed.ring.partition_point(|r| r.offset < next);
            let (all, served) = sub.offer_run(&mut st, feed.ring.range(from..), p);
            sub.metrics.replay_served(served);
            if !all {
                return Step::Blocked;
            }
        }
        st.set_live(p, true);
        drop(st);
        match sub.key() {
            Some(k) => feed.by_key.entry(k.clone()).or_default().push(sub.clone()),
            None => feed.all.push(sub.clone()),
        }
        Step::Live
    }

    /// Removes `sub` from every partition's index.
    pub(crate) fn detach(&self, sub: &Arc<Subscriber>) {
        let mut feeds = self.lock();
        for feed in feeds.iter_mut() {
            match sub.key() {
                Some(k) => {
                    if let Some(list) = feed.by_key.get_mut(k) {
                        list.retain(|s| !Arc::ptr_eq(s, sub));
                        if list.is_empty() {
                            feed.by_key.remove(k);
                        }
                    }
                }
                None => feed.all.retain(|s| !Arc::ptr_eq(s, sub)),
            }
            for h in &mut feed.histories {
                h.subs.retain(|s| !Arc::ptr_eq(s, sub));
            }
            feed.index_waiters.retain(|s| !Arc::ptr_eq(s, sub));
        }
    }

    /// Sends `sub` a checkpoint of how far its cursor moved past records not for it, its
    /// live partitions raised to the live reader's position (every record below was
    /// offered to it already).
    pub(crate) fn checkpoint(&self, sub: &Subscriber) {
        // The feeds' lock before the subscriber's, as when records are dispatched.
        let feeds = self.lock();
        let live_next: Vec<i64> = feeds.iter().map(|f| f.live_next).collect();
        sub.checkpoint(&live_next);
    }

    /// Makes `sub` live on every partition at the live position (start "latest"),
    /// calling `announce` with the positions first, under the lock, so that nothing
    /// can be delivered before it.
    pub(crate) fn join_at_live(&self, sub: &Arc<Subscriber>, announce: impl FnOnce(&[i64])) {
        let mut feeds = self.lock();
        // As in try_join: an ended subscriber joins nothing (and announces nothing).
        if sub.is_ended() {
            return;
        }
        let positions: Vec<i64> = feeds.iter().map(|f| f.live_next.max(f.latest_floor)).collect();
        {
            let mut st = sub.lock();
            st.start_at(&positions);
            st.set_all_live();
        }
        announce(&positions);
        for feed in feeds.iter_mut() {
            match sub.key() {
                Some(k) => feed.by_key.entry(k.clone()).or_default().push(sub.clone()),
                None => feed.all.push(sub.clone()),
            }
        }
    }

    /// Per partition, the most records any live subscriber is behind the live reader.
    pub(crate) fn max_lag(&self) -> Vec<i64> {
        let feeds = self.lock();
        feeds
            .iter()
            .enumerate()
            .map(|(p, feed)| {
                let lag = |s: &Arc<Subscriber>| feed.live_next - s.lock().next(p);
                feed.by_key.values().flatten().chain(feed.all.iter()).map(lag).max().unwrap_or(0)
            })
            .collect()
    }
}

impl TopicHub {
    /// Starts building the key index of every partition, once (keyed subscriptions ask
    /// for it): a builder reads each partition from the start of the window
    /// ([`Limits::key_index_records`](crate::Limits::key_index_records) before the log
    /// end, not before the log start) until it meets the live reader, which then adds
    /// its records as it dispatches them.
    pub(crate) fn index_keys(self: &Arc<Self>, ctx: &Arc<FanoutContext>) {
        if ctx.limits.key_index_bytes == 0 || self.indexing.swap(true, Ordering::AcqRel) {
            return;
        }
        for feed in self.lock().iter_mut() {
            feed.index_pending = true;
        }
        let task = tokio::spawn(build_index(self.clone(), ctx.clone()));
        self.builders.lock().unwrap_or_else(|p| p.into_inner()).push(task.abort_handle());
    }

    /// Adds what a builder read to partition `p`'s index; true once the index reached
    /// the live reader (which goes on from there). `to`: the builder is at the end of the
    /// partition, at this position (no records below it are still to come).
    fn index_add(&self, p: usize, recs: &[SharedRecord], to: Option<i64>) -> bool {
        let mut feeds = self.lock();
        let Some(feed) = feeds.get_mut(p) else { return true };
        let Some(keys) = feed.keys.as_mut() else { return true };
        for rec in recs {
            if let Some(block) = keys.add(rec.offset, &rec.key) {
                self.share_block(&block, p as i32);
            }
        }
        if let Some(to) = to {
            keys.extend_to(to);
        }
        keys.live = keys.end() >= feed.live_next;
        // At the partition's end but short of the live reader (offsets without records,
        // such as transaction markers, between): nobody waits for it any more.
        // Once live, the index is never behind again.
        if keys.live || to.is_some() {
            keys.waits = false;
        }
        let (keys, live) = (&*keys, keys.live);
        // Waiters whose key the new blocks may hold (or all, when nobody waits any more)
        // go back to their drivers; the others skip what was indexed and wait on.
        feed.index_waiters.retain(|s| {
            let Some(key) = s.key().filter(|_| keys.waits && !s.is_ended()) else {
                s.wake.notify_one();
                return false;
            };
            let mut st = s.lock();
            let (from, next) = (st.next(p), keys.next_for(key, st.next(p)));
            if next >= keys.end() {
                if st.raise(p, next) {
                    s.metrics.key_index_skipped(next - from);
                }
                return true;
            }
            drop(st);
            s.wake.notify_one();
            false
        });
        live
    }

    /// Shares a block that was just sealed, when blocks are shared.
    fn share_block(&self, block: &Block, partition: i32) {
        if let Some(kafka) = &self.share {
            let (key, value) = block.encode(&self.info.id, &self.topic, partition);
            kafka.share_block(key, value);
        }
    }

    /// The builder of partition `p` stopped short of the live reader: its waiters go back
    /// to their drivers and nobody waits for it again.
    fn index_stopped(&self, p: usize) {
        let mut feeds = self.lock();
        let Some(feed) = feeds.get_mut(p) else { return };
        if let Some(keys) = feed.keys.as_mut() {
            keys.waits = false;
        }
        for s in feed.index_waiters.drain(..) {
            s.wake.notify_one();
        }
    }

    /// Partition `p`'s builder starts: keyed subscribers beyond the index wait for it.
    fn index_started(&self, p: usize) {
        if let Some(keys) = self.lock().get_mut(p).and_then(|f| f.keys.as_mut()) {
            keys.waits = true;
        }
    }

    /// Starts history reader `id` that `try_join` set up for partition `p` at `from`
    /// (unless it is already gone: its subscribers all left).
    pub(crate) fn start_history(self: &Arc<Self>, ctx: &Arc<FanoutContext>, p: usize, id: u64, from: i64) {
        let task = tokio::spawn(run_history(self.clone(), ctx.clone(), p, id, from));
        let mut feeds = self.lock();
        match feeds.get_mut(p).and_then(|f| f.histories.iter_mut().find(|h| h.id == id)) {
            Some(h) if h.task.is_none() => h.task = Some(task.abort_handle()),
            _ => task.abort(),
        }
    }

    /// History reader `id` of partition `p`, with the partition's ring start.
    fn history_mut(feeds: &mut [PartitionFeed], p: usize, id: u64) -> Option<(&mut History, i64)> {
        let feed = feeds.get_mut(p)?;
        let ring_start = feed.ring_start;
        feed.histories.iter_mut().find(|h| h.id == id).map(|h| (h, ring_start))
    }

    /// Removes history reader `id` of partition `p`, returning it.
    fn history_take(feeds: &mut [PartitionFeed], p: usize, id: u64) -> Option<History> {
        let feed = feeds.get_mut(p)?;
        let i = feed.histories.iter().position(|h| h.id == id)?;
        Some(feed.histories.swap_remove(i))
    }

    /// Offers records read by history reader `id` of `p` (in order) to its boarded
    /// subscribers (all of them, or only `only`). Subscribers leave when they reach the
    /// ring (they join live from there); the ones refused (out of credit or queue space)
    /// stay and are returned, for the reader to offer again after a short wait (what they
    /// were sent already is skipped then); `room` is notified when their send queues are
    /// taken. `None`: nobody is left, or this reader was replaced; it stops.
    fn history_offer(
        &self,
        p: usize,
        id: u64,
        recs: &[SharedRecord],
        only: Option<&[Arc<Subscriber>]>,
        room: &Arc<Notify>,
    ) -> Option<Vec<Arc<Subscriber>>> {
        let mut feeds = self.lock();
        let feed = feeds.get_mut(p)?;
        let (ring_start, keys) = (feed.ring_start, &feed.keys);
        // Beyond the index's end while its builder reads on: leave, to wait for it.
        let waits_for =
            |s: &Subscriber, next: i64| s.key().is_some() && keys.as_ref().is_some_and(|k| k.waits && next >= k.end());
        let h = feed.histories.iter_mut().find(|h| h.id == id)?;
        if let Some(last) = recs.last() {
            h.next = h.next.max(last.offset + 1);
        }
        let mut refused = Vec::new();
        h.subs.retain(|s| {
            if s.is_ended() {
                return false;
            }
            if only.is_some_and(|o| !o.iter().any(|x| Arc::ptr_eq(x, s))) {
                return true;
            }
            let mut st = s.lock();
            let mut stay = true;
            if s.offer_run(&mut st, recs.iter(), p).0 {
                if let (Some(key), Some(keys)) = (s.key(), keys) {
                    let (from, to) = (st.next(p), keys.next_for(key, st.next(p)));
                    if st.raise(p, to) {
                        s.metrics.key_index_skipped(to - from);
                    }
                }
                stay = st.next(p) < ring_start && !waits_for(s, st.next(p));
            } else {
                s.outbox.notify_on_room(room);
                refused.push(s.clone());
            }
            if !stay {
                st.set_boarded(p, false);
                drop(st);
                s.wake.notify_one();
            }
            stay
        });
        if h.subs.is_empty() {
            Self::history_take(&mut feeds, p, id);
            return None;
        }
        Some(refused)
    }

    /// Where history reader `id` of `p` should read next when none of its subscribers
    /// wants what it would read next (keyed ones whose key the index says is further on):
    /// the lowest of their cursors, which becomes its position.
    fn history_skip(&self, p: usize, id: u64) -> Option<i64> {
        let mut feeds = self.lock();
        let (h, _) = Self::history_mut(&mut feeds, p, id)?;
        let lowest = h.subs.iter().map(|s| s.lock().next(p)).min()?;
        // A short way is read through: the consumer has it fetched already.
        if lowest - h.next <= HISTORY_BATCH as i64 {
            return None;
        }
        h.next = lowest;
        Some(lowest)
    }

    /// Takes `subs` off history reader `id` of `p`: they resume on their own.
    fn history_drop(&self, p: usize, id: u64, subs: &[Arc<Subscriber>]) -> bool {
        let mut feeds = self.lock();
        let Some((h, _)) = Self::history_mut(&mut feeds, p, id) else { return false };
        h.subs.retain(|s| !subs.iter().any(|x| Arc::ptr_eq(x, s)));
        let empty = h.subs.is_empty();
        for s in subs {
            s.lock().set_boarded(p, false);
            s.wake.notify_one();
        }
        if empty {
            Self::history_take(&mut feeds, p, id);
            return false;
        }
        true
    }

    /// Delivers records of history reader `id`, waiting up to the grace for boarded
    /// subscribers that had no room; those still without room leave. False: stop.
    async fn history_deliver(&self, p: usize, id: u64, recs: &[SharedRecord], room: &Arc<Notify>) -> bool {
        let Some(mut refused) = self.history_offer(p, id, recs, None, room) else { return false };
        let deadline = tokio::time::Instant::now() + HISTORY_GRACE;
        while !refused.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return self.history_drop(p, id, &refused);
            }
            let _ = tokio::time::timeout(HISTORY_RETRY, room.notified()).await;
            match self.history_offer(p, id, recs, Some(&refused), room) {
                Some(r) => refused = r,
                None => return false,
            }
        }
        true
    }

    /// Ends history reader `id` of `p`: its subscribers fail with `status`, or (without
    /// one) go back to their drivers.
    fn end_history(&self, p: usize, id: u64, status: Option<Status>) {
        let h = Self::history_take(&mut self.lock(), p, id);
        for s in h.map(|h| h.subs).unwrap_or_default() {
            s.lock().set_boarded(p, false);
            match &status {
                Some(st) => s.fail(st.clone()),
                None => s.wake.notify_one(),
            }
        }
    }

    /// Whether history reader `id` of `p` is at or past the ring (or gone).
    fn history_reaches_ring(&self, p: usize, id: u64) -> bool {
        let mut feeds = self.lock();
        Self::history_mut(&mut feeds, p, id).is_none_or(|(h, ring_start)| h.next >= ring_start)
    }
}

async fn run_history(hub: Arc<TopicHub>, ctx: Arc<FanoutContext>, p: usize, id: u64, from: i64) {
    use futures_util::{FutureExt, StreamExt};
    let boarding = tokio::time::Instant::now() + BOARDING;
    let Ok(_permit) = ctx.catchup_permits.clone().acquire_owned().await else {
        return hub.end_history(p, id, Some(Status::unavailable("gateway shutting down")));
    };
    // Everyone may have left while it waited for a permit.
    if hub.lock().get(p).is_none_or(|f| !f.histories.iter().any(|h| h.id == id)) {
        return;
    }
    let reader = match ctx.kafka.reader(&hub.topic, &[(p as i32, from)], true) {
        Ok(r) => r,
        Err(status) => return hub.end_history(p, id, Some(status)),
    };
    tracing::debug!(topic = %hub.topic, partition = p, from, "history reader started");
    // Others board while the consumer connects and makes its first fetch.
    tokio::time::sleep_until(boarding).await;
    let mut events = reader.events();
    let mut batch: Vec<SharedRecord> = Vec::with_capacity(HISTORY_BATCH);
    let room = Arc::new(Notify::new());
    loop {
        // The next event, and the records already queued behind it (up to a batch).
        let Some(first) = events.next().await else { return hub.end_history(p, id, None) };
        let mut event = Some(first);
        while let Some(ReadEvent::Record(rec)) = event {
            batch.push(rec);
            event = if batch.len() < HISTORY_BATCH { events.next().now_or_never().flatten() } else { None };
        }
        if !batch.is_empty() {
            ctx.metrics.catch_up_reads(batch.len());
            if !hub.history_deliver(p, id, &batch, &room).await {
                return;
            }
            batch.clear();
            // As the live reader does (run_live): let the writers it woke run.
            tokio::task::yield_now().await;
            // Everyone on it is keyed and further on: read from there. Records fetched
            // before the seek took hold are below every cursor, and skipped.
            if let Some(to) = hub.history_skip(p, id)
                && let Err(e) = reader.seek(&hub.topic, p as i32, to)
            {
                tracing::warn!(topic = %hub.topic, partition = p, error = %e, "history reader: seek failed");
            }
        }
        match event {
            None | Some(ReadEvent::Record(_)) => {}
            // At the log end everyone left for the ring (their cursors are there); a
            // subscriber still here matched nothing recent: it goes back to its driver.
            Some(ReadEvent::PartitionEnd) => {
                if hub.history_reaches_ring(p, id) {
                    return hub.end_history(p, id, None);
                }
            }
            Some(ReadEvent::Denied(why)) => {
                let status = Status::permission_denied(format!("reading {:?}: {why}", hub.topic));
                return hub.end_history(p, id, Some(status));
            }
            Some(ReadEvent::BelowLogStart) => {
                let status = Status::data_loss(
                    Discontinuity::OffsetBelowLogStart,
                    format!("partition {p}: the log no longer holds the records being read"),
                );
                return hub.end_history(p, id, Some(status));
            }
            Some(ReadEvent::Error(e)) => {
                ctx.metrics.kafka_error();
                tracing::warn!(topic = %hub.topic, error = %e, "history reader error");
            }
        }
    }
}

/// Builds the key index of each partition of `hub`'s topic in turn (one consumer).
async fn build_index(hub: Arc<TopicHub>, ctx: Arc<FanoutContext>) {
    let n = hub.partitions();
    let marks = match ctx.kafka.watermarks(&hub.topic, n).await {
        Ok(m) => m,
        Err(status) => {
            // The next keyed subscription tries again.
            tracing::warn!(topic = %hub.topic, %status, "key index: no watermarks");
            for feed in hub.lock().iter_mut() {
                feed.index_pending = false;
                feed.index_waiters.drain(..).for_each(|s| s.wake.notify_one());
            }
            hub.indexing.store(false, Ordering::Release);
            return;
        }
    };
    let budget = ctx.limits.key_index_bytes / n.max(1);
    let window = i64::try_from(ctx.limits.key_index_records).unwrap_or(i64::MAX);
    let shared = match &hub.share {
        Some(kafka) => kafka.shared_blocks().await.unwrap_or_else(|status| {
            tracing::warn!(topic = %hub.topic, %status, "key index: shared blocks not read; building them");
            Vec::new()
        }),
        None => Vec::new(),
    };
    let mut from = Vec::with_capacity(n);
    let mut loaded = 0;
    {
        let mut feeds = hub.lock();
        for (p, (feed, &(low, high))) in feeds.iter_mut().zip(&marks).enumerate() {
            let start = low.max(high.saturating_sub(window));
            // The most recent run of shared blocks, when it reaches the window; never past
            // the log end.
            let blocks: Vec<Block> = shared
                .iter()
                .filter_map(|(k, v)| Block::decode(k, v, &hub.info.id, &hub.topic, p as i32))
                .filter(|b| b.end() <= high)
                .collect();
            let keys = match KeyIndex::from_blocks(blocks, budget).filter(|k| k.end() >= start) {
                Some(k) => {
                    loaded += k.end() - k.start();
                    k
                }
                None => KeyIndex::new(start, budget),
            };
            from.push(keys.end());
            feed.keys = Some(keys);
            feed.index_pending = false;
            // Back to their drivers: they wait for the builder of their partition if it
            // runs by then (the first starts at once), or read as before.
            feed.index_waiters.drain(..).for_each(|s| s.wake.notify_one());
        }
        if let Some(keys) = feeds.first_mut().and_then(|f| f.keys.as_mut()) {
            keys.waits = true;
        }
    }
    tracing::info!(topic = %hub.topic, partitions = n, offsets_loaded = loaded, "key index: building");
    for (p, &f) in from.iter().enumerate() {
        hub.index_started(p);
        if !build_partition(&hub, &ctx, p, f).await {
            hub.index_stopped(p);
        }
    }
}

/// Reads partition `p` from `from` into its index until the index meets the live reader
/// (true), or it cannot read on (false).
async fn build_partition(hub: &TopicHub, ctx: &FanoutContext, p: usize, from: i64) -> bool {
    use futures_util::{FutureExt, StreamExt};
    let reader = match ctx.kafka.reader(&hub.topic, &[(p as i32, from)], true) {
        Ok(r) => r,
        Err(status) => {
            tracing::warn!(topic = %hub.topic, partition = p, %status, "key index: no reader");
            return false;
        }
    };
    let mut events = reader.events();
    let mut batch: Vec<SharedRecord> = Vec::with_capacity(INDEX_BATCH);
    loop {
        let Some(first) = events.next().await else { return false };
        let mut event = Some(first);
        while let Some(ReadEvent::Record(rec)) = event {
            batch.push(rec);
            event = if batch.len() < INDEX_BATCH { events.next().now_or_never().flatten() } else { None };
        }
        let at_end = match &event {
            Some(ReadEvent::PartitionEnd) => Some(reader.position(&hub.topic, p as i32).unwrap_or(i64::MIN)),
            _ => None,
        };
        ctx.metrics.key_index_reads(batch.len());
        if hub.index_add(p, &batch, at_end) {
            tracing::debug!(topic = %hub.topic, partition = p, "key index: caught up with the live reader");
            return true;
        }
        batch.clear();
        tokio::task::yield_now().await;
        match event {
            None | Some(ReadEvent::Record(_) | ReadEvent::PartitionEnd) => {}
            // What it indexed stays valid; the rest of the partition is read as without
            // an index.
            Some(ReadEvent::BelowLogStart | ReadEvent::Denied(_)) => {
                tracing::warn!(topic = %hub.topic, partition = p, "key index: cannot read on; left partial");
                return false;
            }
            Some(ReadEvent::Error(e)) => {
                ctx.metrics.kafka_error();
                tracing::warn!(topic = %hub.topic, partition = p, error = %e, "key index: reader error");
            }
        }
    }
}

fn deliver_live(sub: &Arc<Subscriber>, rec: &SharedRecord, p: usize) -> bool {
    if sub.is_ended() {
        return false;
    }
    let mut st: MutexGuard<'_, SubState> = sub.lock();
    match sub.offer(&mut st, rec, p) {
        Offer::Sent | Offer::Skipped => true,
        Offer::Refused => {
            st.set_live(p, false);
            drop(st);
            sub.wake.notify_one();
            false
        }
    }
}

async fn run_live(hub: Arc<TopicHub>, ctx: Arc<FanoutContext>, reader: Reader) {
    let mut check = tokio::time::interval(Duration::from_secs(5));
    check.tick().await;
    loop {
        tokio::select! {
            event = reader.next() => match event {
                ReadEvent::Record(rec) => {
                    ctx.metrics.live_read();
                    hub.dispatch(rec);
                    // Reading a backlog, the consumer always has a record ready: without
                    // this the reader never gives its worker back, and the connection
                    // writers it woke (tokio runs the last task a task woke on the same
                    // worker, after it) waited for the whole backlog to be read.
                    tokio::task::consume_budget().await;
                }
                ReadEvent::PartitionEnd => {}
                ReadEvent::BelowLogStart => {
                    ctx.metrics.kafka_error();
                    tracing::warn!(topic = %hub.topic, "live reader: the log no longer holds its offset");
                    check.reset_immediately();
                }
                ReadEvent::Denied(why) => {
                    // The principal lost (or never had) Read: nobody can be served from here.
                    ctx.metrics.kafka_error();
                    tracing::warn!(topic = %hub.topic, %why, "live reader: not authorized to read");
                    hub.retire_with(Status::permission_denied(format!("reading {:?}: {why}", hub.topic)));
                    return;
                }
                ReadEvent::Error(e) => {
                    ctx.metrics.kafka_error();
                    tracing::warn!(topic = %hub.topic, error = %e, "live reader error");
                    check.reset_immediately();
                }
            },
            _ = check.tick() => {
                let why = match ctx.kafka.describe(&hub.topic).await {
                    Err(s) if s.code() == Code::NotFound => Some(Discontinuity::TopicDeleted),
                    Ok(info) => TopicHub::discontinuity_to(&hub.info, &info),
                    Err(_) => None,
                };
                if let Some(d) = why {
                    tracing::warn!(topic = %hub.topic, reason = ?d, "topic changed under the live reader");
                    hub.retire(Some(d));
                    return;
                }
            }
        }
    }
}
