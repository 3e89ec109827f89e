//! The gateway in an axum 0.8 application (feature `axum`): its WebSocket endpoint and its
//! admin answers as routes beside the application's own, on the application's port.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use axum::routing::get;
//! use kafkasocks::{Gateway, GatewayConfig, KafkaConfig, KeyField, Streams};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let streams = Streams::new().subscribe("chat.v1.ChatStreams/Messages", "chat.messages", KeyField::new(1));
//! let gateway = Gateway::builder(GatewayConfig::new(KafkaConfig::from_env()?))
//!     .streams(streams)
//!     .allow_anonymous()
//!     .without_listener()
//!     .bind()
//!     .await?;
//! let app = axum::Router::new()
//!     .route("/hello", get(|| async { "hi" }))
//!     // WebSocket sessions on /streams; /metrics, /livez, /readyz
//!     .merge(kafkasocks::axum::routes(gateway.service()));
//! let shutdown = gateway.shutdown_handle();
//! tokio::spawn(gateway.run());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // ConnectInfo gives the gateway the client's address (per-address limits, proxies).
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! shutdown.shutdown();
//! # Ok(())
//! # }
//! ```
//!
//! The upgrade is hyper's own (`hyper::upgrade::on`), not axum's `WebSocketUpgrade`: the
//! session runs on the gateway's WebSocket implementation with its limits, exactly as on
//! the gateway's listener, and goes through the same checks first
//! ([`GatewayService::admit`]). The client's address comes from
//! `ConnectInfo<SocketAddr>` when the router is served with it; without it the
//! per-address connection limit does not apply (a warning says so, once).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use ::axum::Router;
use ::axum::body::Body;
use ::axum::extract::{ConnectInfo, Request};
use ::axum::http::StatusCode;
use ::axum::response::{IntoResponse, Response};
use ::axum::routing::{MethodRouter, get};
use hyper_util::rt::TokioIo;

use super::service::GatewayService;

/// The WebSocket endpoint on `/streams` (the path clients use by default) and the admin
/// answers ([`admin`]). Merge it into the application's router. To keep `/metrics` off a
/// public port, mount [`websocket`] alone and serve [`admin`] on another.
pub fn routes<S>(service: GatewayService) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new().route("/streams", websocket(service.clone())).merge(admin(service))
}

/// The WebSocket endpoint, to mount at any path: `.route("/streams", websocket(service))`.
/// An upgrade the gateway refuses is answered as its listener would (403, 503 with
/// `Retry-After`, 400); one on a connection that cannot be upgraded (HTTP/2, a server
/// without upgrades) gets 426.
pub fn websocket<S>(service: GatewayService) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(move |request: Request| upgrade(service.clone(), request))
}

/// `/metrics`, `/livez`, `/readyz`, and `/healthz` (deprecated alias of `/livez`), answered
/// as on the gateway's admin port ([`GatewayService::admin_response`]).
pub fn admin<S>(service: GatewayService) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    ["/metrics", "/livez", "/readyz", "/healthz"].into_iter().fold(Router::new(), |router, path| {
        let service = service.clone();
        router.route(path, get(move || async move { service.admin_response(path).await.map(Body::from) }))
    })
}

static WARNED_NO_ADDRESS: AtomicBool = AtomicBool::new(false);

async fn upgrade(service: GatewayService, request: Request) -> Response {
    let remote = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    if remote.is_none() && !WARNED_NO_ADDRESS.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "kafkasocks::axum: no ConnectInfo<SocketAddr> (serve the router with \
             into_make_service_with_connect_info::<SocketAddr>()): the per-address connection limit does not apply"
        );
    }
    let (mut parts, _body) = request.into_parts();
    let admission = match service.admit(&parts, remote) {
        Ok(admission) => admission,
        Err(refusal) => return refusal.into_response::<Body>(),
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        // The admission (and its connection slot) is given back here.
        return (StatusCode::UPGRADE_REQUIRED, "this connection cannot be upgraded to a WebSocket\n").into_response();
    };
    let response = admission.response::<Body>();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => service.serve_websocket(admission, TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!(?remote, error = %e, "the WebSocket upgrade failed"),
        }
    });
    response
}
