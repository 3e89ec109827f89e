//! The sessions a shutdown waits for: every WebSocket session the gateway serves, whether
//! its own listener accepted it or an embedding server did
//! ([`GatewayService::serve_websocket`](super::GatewayService::serve_websocket)), counts
//! itself here for as long as it runs. The drain waits until none is left, for at most its
//! grace period, then aborts the rest.

use std::sync::Arc;

use tokio::sync::watch;

/// How many sessions run, and whether the ones left must stop now.
#[derive(Debug)]
pub(crate) struct Sessions {
    open: watch::Sender<usize>,
    aborted: watch::Sender<bool>,
}

/// One running session's place in [`Sessions`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Running {
    sessions: Arc<Sessions>,
}

impl Sessions {
    pub(crate) fn new() -> Arc<Sessions> {
        Arc::new(Sessions { open: watch::Sender::new(0), aborted: watch::Sender::new(false) })
    }

    /// Counts a session in until the returned place is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> Running {
        self.open.send_modify(|n| *n += 1);
        Running { sessions: self.clone() }
    }

    /// Sessions running now.
    pub(crate) fn open(&self) -> usize {
        *self.open.borrow()
    }

    /// Returns once no session runs.
    pub(crate) async fn closed(&self) {
        let mut open = self.open.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let _ = open.wait_for(|n| *n == 0).await;
    }

    /// Tells every session still running, and any started later, to stop at once.
    pub(crate) fn abort(&self) {
        self.aborted.send_replace(true);
    }
}

impl Running {
    /// Returns once the sessions are aborted ([`Sessions::abort`]); at once if they are.
    pub(crate) async fn aborted(&self) {
        let mut aborted = self.sessions.aborted.subscribe();
        let _ = aborted.wait_for(|a| *a).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.sessions.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn closed_waits_for_every_session_and_abort_reaches_late_ones() {
        let sessions = Sessions::new();
        let a = sessions.enter();
        let b = sessions.enter();
        assert_eq!(sessions.open(), 2);
        let closed = tokio::spawn({
            let s = sessions.clone();
            async move { s.closed().await }
        });
        drop(a);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!closed.is_finished(), "one is still running");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), closed).await.expect("closed").expect("task");
        sessions.abort();
        let late = sessions.enter();
        tokio::time::timeout(Duration::from_secs(1), late.aborted()).await.expect("aborted at once");
    }
}
