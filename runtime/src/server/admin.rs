//! The admin HTTP endpoint: `/metrics` (OpenMetrics text), `/healthz` (503 when Kafka
//! does not answer) and `/readyz` (503 when Kafka or the Schema Registry does not answer,
//! or the registry refuses the gateway's credentials).
//! A registry outage fails only readiness: publishes whose schema id is known and
//! subscriptions go on without it (but for a typed stream meeting a schema id it has not
//! read yet). Bounded like every port: at most [`MAX_CONNECTIONS`] connections at
//! once, [`MAX_CONNECTIONS_PER_ADDRESS`] of them from one address (more are closed
//! unread), and a request's headers must arrive within
//! [`HEADER_TIMEOUT`] (which also closes idle keep-alive connections).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::metrics;
use crate::session::shared::Shared;

use super::shares::Shares;

/// Connections the admin endpoint serves at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Of those, from one address.
pub(crate) const MAX_CONNECTIONS_PER_ADDRESS: usize = 8;
/// Time a client has to send a request's headers.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` turns true.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
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
        tokio::spawn(async move {
            let _slot = (slot, share);
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(req.uri().path(), &shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(path: &str, shared: &Shared) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/metrics" => (StatusCode::OK, metrics::CONTENT_TYPE, shared.metrics.render()),
        "/healthz" => match shared.kafka().health().await {
            Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("kafka unreachable: {why}\n")),
        },
        "/readyz" => {
            let (kafka, registry) = tokio::join!(shared.kafka().health(), registry_health(shared));
            let ready = kafka.is_ok() && !matches!(registry, Some(Err(_)));
            let mut body = String::new();
            for (what, state) in [("kafka", Some(kafka)), ("schema registry", registry)] {
                match state {
                    Some(Ok(())) => body.push_str(&format!("{what}: ok\n")),
                    Some(Err(why)) => body.push_str(&format!("{what}: not ready: {why}\n")),
                    None => {}
                }
            }
            (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, "text/plain", body)
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// The registry's state, when one is configured.
async fn registry_health(shared: &Shared) -> Option<Result<(), String>> {
    #[cfg(feature = "registry")]
    if let Some(registry) = &shared.registry {
        return Some(registry.health().await);
    }
    let _ = shared;
    None
}
