//! Readiness, cached. One background task checks Kafka (a metadata request) and the Schema
//! Registry, when there is one, every [`Limits::readiness_interval`] (5 s), each check
//! bounded by [`Limits::readiness_timeout`] (3 s), and keeps the last result. `/readyz`
//! reads that result: a probe never makes a request of its own, so a load balancer probing
//! every second from every node costs Kafka nothing.
//!
//! Readiness turns down with the first check that fails, which starts at most
//! `readiness_interval` after Kafka stopped answering and ends within
//! `readiness_timeout`: at most 8 s with the defaults. It turns up with the first check
//! that succeeds. The first check starts when the gateway binds; a probe made before it has
//! ended waits for it (for at most the check's timeout and 100 ms). Draining is not cached: the admin answer checks it on every probe.
//!
//! [`Limits::readiness_interval`]: crate::Limits::readiness_interval
//! [`Limits::readiness_timeout`]: crate::Limits::readiness_timeout

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::session::shared::Shared;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// Whether Kafka answered; if not, why.
    pub(crate) kafka: Result<(), String>,
    /// The same for the Schema Registry; `None` when none is configured.
    pub(crate) registry: Option<Result<(), String>>,
}

impl Report {
    /// Whether every dependency answered.
    pub(crate) fn ready(&self) -> bool {
        self.kafka.is_ok() && !matches!(self.registry, Some(Err(_)))
    }

    /// One line per dependency: `kafka: ok`, `schema registry: not ready: <why>`.
    pub(crate) fn lines(&self) -> String {
        let mut out = String::new();
        for (what, state) in [("kafka", Some(&self.kafka)), ("schema registry", self.registry.as_ref())] {
            match state {
                Some(Ok(())) => out.push_str(&format!("{what}: ok\n")),
                Some(Err(why)) => out.push_str(&format!("{what}: not ready: {why}\n")),
                None => {}
            }
        }
        out
    }
}

/// The probes' side: the last report.
#[derive(Debug, Clone)]
pub(crate) struct Readiness {
    last: watch::Receiver<Option<Report>>,
    /// How long a probe waits for the first report.
    first_wait: Duration,
}

impl Readiness {
    /// A readiness that the returned sender (given to [`refresh`]) keeps up to date; a
    /// probe before its first report waits at most `first_wait`.
    pub(crate) fn new(first_wait: Duration) -> (Readiness, watch::Sender<Option<Report>>) {
        let (tx, last) = watch::channel(None);
        (Readiness { last, first_wait }, tx)
    }

    /// The last report, without waiting; `None` before the first.
    pub(crate) fn now(&self) -> Option<Report> {
        self.last.borrow().clone()
    }

    /// The last report; before the first, waits for it (at most the first wait).
    pub(crate) async fn last(&self) -> Option<Report> {
        if let Some(report) = self.now() {
            return Some(report);
        }
        let mut last = self.last.clone();
        match tokio::time::timeout(self.first_wait, last.wait_for(Option::is_some)).await {
            Ok(Ok(report)) => report.clone(),
            _ => None,
        }
    }
}

/// Runs `check` at once and then every `interval` (a check that takes longer delays the
/// next, never doubles it), publishing each report to `last`, and logs each change. Ends
/// when no [`Readiness`] is left.
pub(crate) async fn refresh<C, F>(mut check: C, interval: Duration, last: watch::Sender<Option<Report>>)
where
    C: FnMut() -> F,
    F: Future<Output = Report>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = last.closed() => return,
        }
        let report = check().await;
        log_change(last.borrow().as_ref(), &report);
        last.send_replace(Some(report));
    }
}

/// Checks the gateway's dependencies at once, each within `timeout`.
pub(crate) async fn check(shared: &Shared, timeout: Duration) -> Report {
    let (kafka, registry) = tokio::join!(bounded(timeout, shared.kafka().health()), registry(shared, timeout));
    Report { kafka, registry }
}

/// `check`'s answer, or a failure once `timeout` is up.
pub(crate) async fn bounded(timeout: Duration, check: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(timeout, check).await.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

async fn registry(shared: &Shared, timeout: Duration) -> Option<Result<(), String>> {
    #[cfg(feature = "registry")]
    if let Some(registry) = &shared.registry {
        return Some(bounded(timeout, registry.health()).await);
    }
    let _ = (shared, timeout);
    None
}

fn log_change(before: Option<&Report>, now: &Report) {
    let states = |r: Option<&Report>| r.map(|r| (Some(r.kafka.clone()), r.registry.clone()));
    let (kafka_before, registry_before) = states(before).unwrap_or((None, None));
    match (kafka_before, &now.kafka) {
        // Say at once when Kafka refuses this configuration (a wrong password, an
        // untrusted certificate), instead of only when the first request times out.
        (None, Err(why)) => tracing::error!(
            %why,
            "Kafka is not usable with this configuration: publishes and subscriptions fail with UNAVAILABLE \
             and /readyz says why, until it is"
        ),
        (None, Ok(())) => tracing::info!("Kafka answers"),
        (Some(Ok(())), Err(why)) => tracing::warn!(%why, "Kafka does not answer: not ready"),
        (Some(Err(_)), Ok(())) => tracing::info!("Kafka answers again: ready"),
        _ => {}
    }
    match (registry_before, &now.registry) {
        (None | Some(Ok(())), Some(Err(why))) => tracing::warn!(%why, "the schema registry does not answer: not ready"),
        (Some(Err(_)), Some(Ok(()))) => tracing::info!("the schema registry answers again"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    /// A scripted dependency: counts its checks; answers, fails, or hangs.
    #[derive(Default)]
    struct Script {
        calls: AtomicUsize,
        down: AtomicBool,
        hangs: AtomicBool,
    }

    impl Script {
        async fn check(self: Arc<Self>, timeout: Duration) -> Report {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let kafka = bounded(timeout, async {
                if self.hangs.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                if self.down.load(Ordering::SeqCst) { Err("down".to_owned()) } else { Ok(()) }
            })
            .await;
            Report { kafka, registry: None }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    fn start(script: &Arc<Script>, interval: Duration, timeout: Duration) -> Readiness {
        let (readiness, tx) = Readiness::new(timeout);
        let script = script.clone();
        tokio::spawn(refresh(move || script.clone().check(timeout), interval, tx));
        readiness
    }

    fn ready(r: &Readiness) -> bool {
        r.now().is_some_and(|r| r.ready())
    }

    /// Waits (at most 5 s) until `r`'s readiness is `want`; how long that took.
    async fn until(r: &Readiness, want: bool) -> Duration {
        let began = Instant::now();
        while ready(r) != want {
            assert!(began.elapsed() < Duration::from_secs(5), "readiness never turned {want}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        began.elapsed()
    }

    /// Probes read the cache: a thousand of them make no check.
    #[tokio::test]
    async fn probes_never_trigger_a_check() {
        let script = Arc::new(Script::default());
        let readiness = start(&script, Duration::from_secs(3600), Duration::from_secs(1));
        assert_eq!(readiness.last().await.map(|r| r.ready()), Some(true), "the first probe waits for the first check");
        for _ in 0..1000 {
            assert!(readiness.last().await.is_some_and(|r| r.ready()));
        }
        assert_eq!(script.calls(), 1, "a thousand probes made no check");
    }

    /// One check per interval, down with the first failed one, up with the first good one;
    /// a check that hangs fails at its timeout: down at most interval + timeout after the
    /// outage began.
    #[tokio::test]
    async fn turns_down_within_interval_plus_timeout_and_up_at_the_first_success() {
        let (interval, timeout) = (Duration::from_millis(100), Duration::from_millis(200));
        let script = Arc::new(Script::default());
        let readiness = start(&script, interval, timeout);
        assert!(readiness.last().await.is_some_and(|r| r.ready()));
        tokio::time::sleep(interval * 5).await;
        let calls = script.calls();
        assert!((4..=7).contains(&calls), "{calls} checks in 5 intervals");
        // An outage that makes checks hang.
        script.hangs.store(true, Ordering::SeqCst);
        let took = until(&readiness, false).await;
        assert!(
            took >= timeout - Duration::from_millis(20),
            "a hanging check counts at its timeout, not before: {took:?}"
        );
        assert!(took <= interval + timeout + Duration::from_millis(500), "down after {took:?}");
        assert_eq!(readiness.now().expect("report").lines(), "kafka: not ready: no answer within 200ms\n");
        // A refusal is reported as such.
        script.hangs.store(false, Ordering::SeqCst);
        script.down.store(true, Ordering::SeqCst);
        let began = Instant::now();
        while readiness.now().expect("report").lines() != "kafka: not ready: down\n" {
            assert!(began.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Back: ready at the next check.
        script.down.store(false, Ordering::SeqCst);
        let took = until(&readiness, true).await;
        assert!(took <= interval + Duration::from_millis(500), "up after {took:?}");
    }

    #[tokio::test]
    async fn a_probe_before_any_check_waits_at_most_its_first_wait() {
        let (readiness, _tx) = Readiness::new(Duration::from_millis(100));
        let asked = Instant::now();
        assert_eq!(readiness.last().await, None);
        let waited = asked.elapsed();
        assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(2), "{waited:?}");
    }

    #[test]
    fn a_report_is_ready_only_when_every_dependency_answers() {
        let ok = Report { kafka: Ok(()), registry: None };
        assert!(ok.ready());
        assert_eq!(ok.lines(), "kafka: ok\n");
        let registry_down = Report { kafka: Ok(()), registry: Some(Err("HTTP 503".into())) };
        assert!(!registry_down.ready());
        assert_eq!(registry_down.lines(), "kafka: ok\nschema registry: not ready: HTTP 503\n");
        assert!(!Report { kafka: Err("x".into()), registry: Some(Ok(())) }.ready());
    }
}
