//! The admin HTTP endpoint: `/metrics` (OpenMetrics text) and `/healthz` (503 when Kafka
//! does not answer). Bounded like every port: at most [`MAX_CONNECTIONS`] connections at
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

use crate::kafka::Kafka;
use crate::metrics::{self, Metrics};

use super::shares::Shares;

/// Connections the admin endpoint serves at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Of those, from one address.
pub(crate) const MAX_CONNECTIONS_PER_ADDRESS: usize = 8;
/// Time a client has to send a request's headers.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/metrics` and `/healthz` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    kafka: Arc<Kafka>,
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
        let metrics = metrics.clone();
        let kafka = kafka.clone();
        tokio::spawn(async move {
            let _slot = (slot, share);
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                let kafka = kafka.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(req.uri().path(), &metrics, &kafka).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(path: &str, metrics: &Metrics, kafka: &Kafka) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/metrics" => (StatusCode::OK, metrics::CONTENT_TYPE, metrics.render()),
        "/healthz" => match kafka.health().await {
            Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("kafka unreachable: {why}\n")),
        },
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}
