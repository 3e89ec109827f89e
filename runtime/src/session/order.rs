//! Publish order on one connection: publishes are handed to the producer in the order
//! their frames arrived, whatever their hooks (async, of any duration) do in between, so
//! that Kafka's idempotent producer, which keeps the order it is handed records in, keeps
//! one connection's records for one key in send order. Each publish takes a [`Turn`] when
//! its frame is read; it waits for it just before the produce, and gives it up once its
//! record is queued in the producer (or when it fails or is answered from the dedup
//! window, whichever comes first), so a slow hook delays only the queueing of the
//! publishes sent after it, never their answers' wait.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// One connection's publish order.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    state: Mutex<State>,
    turned: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The next ticket given out.
    issued: u64,
    /// Every ticket below this one is done.
    next: u64,
    /// Tickets done out of order, above `next`.
    done: BTreeSet<u64>,
}

impl Sequencer {
    pub(crate) fn new() -> Arc<Sequencer> {
        Arc::new(Sequencer::default())
    }

    /// The turn of the publish read now.
    pub(crate) fn ticket(self: &Arc<Self>) -> Turn {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = s.issued;
        s.issued += 1;
        Turn { seq: self.clone(), n }
    }
}

/// A publish's place in its connection's order. Dropping it lets the next one go.
#[derive(Debug)]
pub(crate) struct Turn {
    seq: Arc<Sequencer>,
    n: u64,
}

impl Turn {
    /// Waits until every publish read before this one has been queued in the producer (or
    /// is over). After `limit` (a hook that never returns must not stop the connection's
    /// other publishes for ever) it goes ahead out of turn.
    pub(crate) async fn wait(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let turned = self.seq.turned.notified();
            if self.seq.state.lock().unwrap_or_else(|p| p.into_inner()).next >= self.n {
                return;
            }
            if tokio::time::timeout_at(deadline, turned).await.is_err() {
                tracing::warn!(turn = self.n, "a publish waited {limit:?} for earlier ones and goes out of order");
                return;
            }
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut s = self.seq.state.lock().unwrap_or_else(|p| p.into_inner());
        s.done.insert(self.n);
        let mut moved = false;
        while s.done.first() == Some(&s.next) {
            s.done.pop_first();
            s.next += 1;
            moved = true;
        }
        drop(s);
        if moved {
            self.seq.turned.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_come_in_ticket_order_whatever_order_they_end_in() {
        let seq = Sequencer::new();
        let (a, b, c) = (seq.ticket(), seq.ticket(), seq.ticket());
        let limit = Duration::from_secs(5);
        // c cannot go before a and b are done; b ending first is not enough.
        let waiting = tokio::spawn(async move {
            c.wait(limit).await;
            c
        });
        drop(b);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "c went before a");
        a.wait(limit).await;
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("c's turn came").expect("task");
        drop(c);
        assert_eq!(seq.state.lock().expect("lock").next, 3);
    }

    #[tokio::test]
    async fn a_turn_that_never_comes_goes_ahead_after_the_limit() {
        let seq = Sequencer::new();
        let stuck = seq.ticket();
        let next = seq.ticket();
        let started = tokio::time::Instant::now();
        next.wait(Duration::from_millis(100)).await;
        assert!(started.elapsed() >= Duration::from_millis(100));
        drop(stuck);
    }
}
