//! The admin endpoints and their own HTTP listener.
//!
//! | path | answer |
//! |---|---|
//! | `/livez` | liveness: **200** `ok` whenever the process serves; Kafka is not asked (a Kafka outage must not get every gateway restarted) |
//! | `/readyz` | readiness: **200** when the last check found Kafka, and the Schema Registry if one is configured, answering, else **503**; one line per dependency (`kafka: ok`, `schema registry: not ready: <why>`); **503** `draining: …` at once while the gateway shuts down |
//! | `/metrics` | **200**, OpenMetrics text |
//! | `/healthz` | deprecated alias of `/livez` |
//! | anything else | **404** `not found` |
//!
//! Readiness is cached ([`readiness`](super::readiness)): a background task checks every
//! [`Limits::readiness_interval`](crate::Limits::readiness_interval) and a probe reads its
//! last result, so probes never make Kafka requests. A registry outage fails only
//! readiness: publishes whose schema id is known and subscriptions go on without it (but
//! for a typed stream meeting a schema id it has not read yet).
//!
//! The same answers are served by the gateway's admin listener
//! ([`GatewayConfig::metrics_listen`](crate::GatewayConfig::metrics_listen)), by
//! [`GatewayService::admin_response`](crate::GatewayService::admin_response) for any HTTP
//! server, and by the `axum` routes. The listener is bounded like every port: at most
//! [`MAX_CONNECTIONS`] connections at once, [`MAX_CONNECTIONS_PER_ADDRESS`] of them from
//! one address (more are closed unread), and a request's headers must arrive within
//! [`HEADER_TIMEOUT`] (which also closes idle keep-alive connections).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::readiness::Readiness;
use super::shares::Shares;
use crate::metrics;
use crate::session::shared::Shared;

/// Connections the admin endpoint serves at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Of those, from one address.
pub(crate) const MAX_CONNECTIONS_PER_ADDRESS: usize = 8;
/// Time a client has to send a request's headers.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the admin endpoints on `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    readiness: Readiness,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let shares = Shares::new(MAX_CONNECTIONS_PER_ADDRESS);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let Some(share) = shares.take(peer.ip()) else {
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let _slot = (slot, share);
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                let readiness = readiness.clone();
                async move {
                    let resp = respond(req.uri().path(), &shared, &readiness).await;
                    Ok::<_, std::convert::Infallible>(resp.map(Full::new))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The answer for `path` (the table above). Never makes a request of Kafka or the
/// registry; before the first readiness check has ended, `/readyz` waits for it.
pub(crate) async fn respond(path: &str, shared: &Shared, readiness: &Readiness) -> Response<Bytes> {
    let text = "text/plain; charset=utf-8";
    let (status, ctype, body) = match path {
        "/metrics" => (StatusCode::OK, metrics::CONTENT_TYPE, shared.metrics.render()),
        "/livez" | "/healthz" => (StatusCode::OK, text, "ok\n".to_owned()),
        "/readyz" if shared.draining() => {
            let last = readiness.now().map(|r| r.lines()).unwrap_or_default();
            (StatusCode::SERVICE_UNAVAILABLE, text, format!("draining: gateway shutting down\n{last}"))
        }
        "/readyz" => match readiness.last().await {
            Some(report) if report.ready() => (StatusCode::OK, text, report.lines()),
            Some(report) => (StatusCode::SERVICE_UNAVAILABLE, text, report.lines()),
            None => (StatusCode::SERVICE_UNAVAILABLE, text, "kafka: not checked yet\n".to_owned()),
        },
        _ => (StatusCode::NOT_FOUND, text, "not found\n".to_owned()),
    };
    let mut resp = Response::new(Bytes::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::server::readiness::{Report, refresh};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// `/readyz` answers from the cache (no check per probe), follows the checks, and
    /// turns 503 at once when the gateway drains; `/livez` is 200 throughout.
    #[tokio::test]
    async fn readyz_answers_from_the_cache_and_drains_at_once() {
        let (shared, shutdown) = crate::session::shared::test_shared(Limits::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let up = Arc::new(AtomicBool::new(true));
        let (readiness, tx) = Readiness::new(Duration::from_secs(3));
        let check = {
            let (calls, up) = (calls.clone(), up.clone());
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                let kafka = if up.load(Ordering::SeqCst) { Ok(()) } else { Err("refused".to_owned()) };
                std::future::ready(Report { kafka, registry: None })
            }
        };
        let interval = Duration::from_millis(200);
        tokio::spawn(refresh(check, interval, tx));
        let get = |path: &'static str| {
            let (shared, readiness) = (shared.clone(), readiness.clone());
            async move {
                let r = respond(path, &shared, &readiness).await;
                (r.status().as_u16(), String::from_utf8_lossy(r.body()).into_owned())
            }
        };
        let until = |status: u16| async move {
            let began = std::time::Instant::now();
            loop {
                let (s, body) = get("/readyz").await;
                if s == status {
                    return body;
                }
                assert!(began.elapsed() < Duration::from_secs(5), "/readyz never turned {status}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let before = calls.load(Ordering::SeqCst);
        for _ in 0..1000 {
            assert_eq!(get("/readyz").await, (200, "kafka: ok\n".to_owned()));
        }
        assert!(calls.load(Ordering::SeqCst) <= before + 1, "a thousand probes, no check of their own");
        up.store(false, Ordering::SeqCst);
        assert_eq!(until(503).await, "kafka: not ready: refused\n");
        assert_eq!(get("/livez").await, (200, "ok\n".to_owned()));
        assert_eq!(get("/healthz").await, (200, "ok\n".to_owned()));
        up.store(true, Ordering::SeqCst);
        assert_eq!(until(200).await, "kafka: ok\n");
        shutdown.send(true).expect("drain");
        assert_eq!(get("/readyz").await, (503, "draining: gateway shutting down\nkafka: ok\n".to_owned()));
        assert_eq!(get("/livez").await.0, 200);
        assert_eq!(get("/nope").await.0, 404);
        let (status, metrics) = get("/metrics").await;
        assert_eq!(status, 200);
        assert!(metrics.contains("kafkasocks_build_info"), "{metrics}");
    }
}
