//! The publish dedup window: an idempotency key seen recently gets the first publish's
//! receipt instead of a second record. Bounded in time and in keys.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::protocol::{Code, Receipt, Status};

/// (scope: the principal, or the session when anonymous; method; idempotency key).
pub(crate) type DedupKey = (String, String, Bytes);

enum Slot {
    Pending(watch::Receiver<Option<Receipt>>),
    Done(Receipt),
}

pub(crate) enum Claim {
    /// Nobody produced this yet: produce, then [`DedupWindow::complete`] or
    /// [`DedupWindow::abandon`].
    Owner(watch::Sender<Option<Receipt>>),
    /// Already produced.
    Done(Receipt),
}

pub(crate) struct DedupWindow {
    inner: Mutex<Inner>,
    window: Duration,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<DedupKey, (Slot, Instant)>,
    order: VecDeque<(DedupKey, Instant)>,
}

impl DedupWindow {
    pub(crate) fn new(window: Duration, capacity: usize) -> DedupWindow {
        DedupWindow { inner: Mutex::default(), window, capacity }
    }

    /// Claims `key`, waiting for an in-flight publish with the same key to finish.
    pub(crate) async fn claim(&self, key: &DedupKey) -> Result<Claim, Status> {
        loop {
            let mut rx = {
                let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                self.expire(&mut inner, now);
                match inner.slots.get(key) {
                    Some((Slot::Done(l), _)) => return Ok(Claim::Done(l.clone())),
                    Some((Slot::Pending(rx), _)) => rx.clone(),
                    None => {
                        if inner.slots.len() >= self.capacity && !self.evict_one(&mut inner) {
                            return Err(Status::new(
                                Code::ResourceExhausted,
                                "dedup window full of in-flight publishes",
                            )
                            .with_retry_after(Duration::from_millis(100)));
                        }
                        let (tx, rx) = watch::channel(None);
                        inner.slots.insert(key.clone(), (Slot::Pending(rx), now));
                        inner.order.push_back((key.clone(), now));
                        return Ok(Claim::Owner(tx));
                    }
                }
            };
            // The owner either sends the receipt or drops the sender (failure): in both
            // cases look again.
            let _ = rx.wait_for(Option::is_some).await;
        }
    }

    pub(crate) fn complete(&self, key: &DedupKey, owner: watch::Sender<Option<Receipt>>, receipt: Receipt) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = inner.slots.get_mut(key) {
            slot.0 = Slot::Done(receipt.clone());
        }
        let _ = owner.send(Some(receipt));
    }

    pub(crate) fn abandon(&self, key: &DedupKey, owner: watch::Sender<Option<Receipt>>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.slots.remove(key);
        drop(owner);
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((key, at)) = inner.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            let key = key.clone();
            let at = *at;
            inner.order.pop_front();
            if matches!(inner.slots.get(&key), Some((Slot::Done(_), t)) if *t == at) {
                inner.slots.remove(&key);
            }
        }
    }

    /// Drops the oldest finished entry; false when every entry is in flight.
    fn evict_one(&self, inner: &mut Inner) -> bool {
        let mut kept = VecDeque::new();
        let mut evicted = false;
        while let Some((key, at)) = inner.order.pop_front() {
            if matches!(inner.slots.get(&key), Some((Slot::Done(_), t)) if *t == at) {
                inner.slots.remove(&key);
                evicted = true;
                break;
            }
            kept.push_back((key, at));
        }
        while let Some(e) = kept.pop_back() {
            inner.order.push_front(e);
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &'static [u8]) -> DedupKey {
        (String::new(), "m".into(), Bytes::from_static(k))
    }

    fn receipt(offset: i64) -> Receipt {
        Receipt { topic: "t".into(), partition: 0, offset, timestamp_ms: 1, duplicate: false }
    }

    #[tokio::test]
    async fn second_claim_gets_first_receipt_and_waits_while_in_flight() {
        let w = std::sync::Arc::new(DedupWindow::new(Duration::from_secs(60), 10));
        let Ok(Claim::Owner(tx)) = w.claim(&key(b"a")).await else { panic!("first claim must own") };
        let w2 = w.clone();
        let waiter = tokio::spawn(async move { w2.claim(&key(b"a")).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "must wait for the in-flight publish");
        w.complete(&key(b"a"), tx, receipt(5));
        match waiter.await {
            Ok(Ok(Claim::Done(l))) => assert_eq!(l.offset, 5),
            _ => panic!("waiter must get the receipt"),
        }
    }

    #[tokio::test]
    async fn abandoned_claim_lets_the_retry_produce() {
        let w = DedupWindow::new(Duration::from_secs(60), 10);
        let Ok(Claim::Owner(tx)) = w.claim(&key(b"a")).await else { panic!("first claim must own") };
        w.abandon(&key(b"a"), tx);
        assert!(matches!(w.claim(&key(b"a")).await, Ok(Claim::Owner(_))));
    }

    #[tokio::test]
    async fn capacity_evicts_finished_and_refuses_when_all_in_flight() {
        let w = DedupWindow::new(Duration::from_secs(60), 2);
        let Ok(Claim::Owner(a)) = w.claim(&key(b"a")).await else { panic!() };
        w.complete(&key(b"a"), a, receipt(1));
        let Ok(Claim::Owner(_b)) = w.claim(&key(b"b")).await else { panic!() };
        // "a" (finished) is evicted to make room for "c".
        let Ok(Claim::Owner(_c)) = w.claim(&key(b"c")).await else { panic!() };
        assert!(matches!(w.claim(&key(b"a")).await, Err(s) if s.code() == Code::ResourceExhausted));
    }

    #[tokio::test]
    async fn entries_expire_after_the_window() {
        let w = DedupWindow::new(Duration::from_millis(0), 10);
        let Ok(Claim::Owner(a)) = w.claim(&key(b"a")).await else { panic!() };
        w.complete(&key(b"a"), a, receipt(1));
        assert!(matches!(w.claim(&key(b"a")).await, Ok(Claim::Owner(_))));
    }
}
