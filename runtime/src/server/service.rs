//! [`GatewayService`]: a bound gateway as something any HTTP server can serve. The checks on
//! an upgrade request, the session on an upgraded connection and the admin answers live
//! here, once: the gateway's own listener and admin port use them as an embedding server
//! does.
//!
//! Served from a hand-written hyper server (`serve_connection(..).with_upgrades()`):
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use hyper_util::rt::TokioIo;
//! # type Body = http_body_util::Full<bytes::Bytes>;
//!
//! async fn handle(
//!     service: kafkasocks::GatewayService,
//!     request: hyper::Request<hyper::body::Incoming>,
//!     remote: SocketAddr,
//! ) -> hyper::Response<Body> {
//!     if request.uri().path() != "/streams" {
//!         return service.admin_response(request.uri().path()).await.map(Body::new);
//!     }
//!     let (mut parts, _body) = request.into_parts();
//!     let admission = match service.admit(&parts, Some(remote)) {
//!         Ok(admission) => admission,
//!         Err(refusal) => return refusal.into_response(),
//!     };
//!     let answer = admission.response();
//!     if let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
//!         tokio::spawn(async move {
//!             if let Ok(upgraded) = upgrade.await {
//!                 service.serve_websocket(admission, TokioIo::new(upgraded)).await;
//!             }
//!         });
//!     }
//!     answer
//! }
//! ```

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::Either;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::admission::{Admission, Admitted, Refusal};
use super::door::Door;
use super::readiness::Readiness;
use super::reads::websocket_io;
use super::sessions::Sessions;
use crate::auth::{Handshake, Transport};
use crate::protocol::SUBPROTOCOL;
use crate::session::clients::Full;
use crate::session::connection;
use crate::session::shared::Shared;

/// What serving a gateway needs, whoever accepted the connection.
pub(crate) struct Front {
    pub(crate) door: Door,
    pub(crate) shared: Arc<Shared>,
    pub(crate) echo_path: Option<String>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) readiness: Readiness,
}

/// A bound [`Gateway`](crate::Gateway), to be served by another HTTP server on its port:
/// the kafkasocks WebSocket endpoint beside the server's own routes, and the admin answers
/// (`/metrics`, `/livez`, `/readyz`). Cheap to clone; get one with
/// [`Gateway::service`](crate::Gateway::service) and keep [`Gateway::run`](crate::Gateway::run)
/// running for the background work and the drain at shutdown (a gateway built
/// [`without_listener`](crate::GatewayBuilder::without_listener) needs no port of its own).
///
/// An upgrade goes in two steps, as the gateway's own listener does them:
/// [`GatewayService::admit`] checks the request and gives the answer to send, then
/// [`GatewayService::serve_websocket`] runs the session on the upgraded connection. With
/// the `axum` feature, `kafkasocks::axum` does both for an axum router.
#[derive(Clone)]
pub struct GatewayService {
    front: Arc<Front>,
}

impl std::fmt::Debug for GatewayService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayService").field("server_id", &self.front.shared.server_id).finish_non_exhaustive()
    }
}

impl GatewayService {
    pub(crate) fn new(front: Front) -> GatewayService {
        GatewayService { front: Arc::new(front) }
    }

    pub(crate) fn front(&self) -> &Front {
        &self.front
    }

    /// Checks a WebSocket upgrade request (`remote`: the TCP peer, when the server knows
    /// it) exactly as the gateway's own listener does, in this order: a well-formed
    /// WebSocket upgrade (`GET`, HTTP/1.1, `Connection: Upgrade`, `Upgrade: websocket`,
    /// version 13, a valid key; else 400), `Origin` and `Host`
    /// ([`OriginPolicy`](crate::OriginPolicy); 403), shutdown and the connection limits
    /// (503 with `Retry-After`), the kafkasocks subprotocol (400).
    ///
    /// Behind [trusted proxies](crate::GatewayConfig::trusted_proxies) the client address
    /// comes from `X-Forwarded-For`. Without `remote`, the per-address connection limit
    /// does not apply, `X-Forwarded-For` is not believed and anonymous clients share one
    /// publish budget: give it whenever the server knows it.
    ///
    /// The [`Admission`] holds a connection slot until it is served or dropped.
    pub fn admit(&self, request: &Parts, remote: Option<SocketAddr>) -> Result<Admission, Refusal> {
        let accept = upgrade_headers(request)?;
        let mut admission = self.check(&request.headers, &request.uri, remote)?;
        admission.headers.extend(accept);
        Ok(admission)
    }

    /// The gateway's checks on an upgrade request (after the WebSocket handshake's own):
    /// Origin and Host (403), the gateway's state and connection limits (503 with
    /// Retry-After), the subprotocol (400). The admission's headers are the subprotocol's.
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        remote: Option<SocketAddr>,
    ) -> Result<Admission, Refusal> {
        let front = &*self.front;
        let shared = &front.shared;
        let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let origin = match headers.get(header::ORIGIN) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| {
                shared.metrics.connection_rejected("origin");
                Refusal::new(StatusCode::FORBIDDEN, "the Origin is not ASCII text", None)
            })?),
        };
        if let Err(why) = front.door.check_origin(origin) {
            shared.metrics.connection_rejected("origin");
            tracing::debug!(?remote, %why, "refused");
            return Err(Refusal::new(StatusCode::FORBIDDEN, why, None));
        }
        if let Err(why) = front.door.check_host(text(header::HOST)) {
            shared.metrics.connection_rejected("host");
            return Err(Refusal::new(StatusCode::FORBIDDEN, why, None));
        }
        if shared.draining() {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "gateway shutting down; reconnect elsewhere",
                Some(1),
            ));
        }
        let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let client_ip = remote.map(|r| front.door.client_ip(r.ip(), forwarded));
        let slot = shared.clients.connect(client_ip).map_err(|full| {
            shared.metrics.connection_rejected(match full {
                Full::Address => "address_limit",
                _ => "connection_limit",
            });
            let status = full.status(&shared.limits);
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, status.message(), Some(5))
        })?;
        #[cfg(feature = "conformance-echo")]
        if front.echo_path.as_deref() == Some(uri.path()) {
            return Ok(Admission::new(Admitted::Echo(slot)));
        }
        let offered = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == SUBPROTOCOL);
        if !offered {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("offer the WebSocket subprotocol {SUBPROTOCOL}"),
                None,
            ));
        }
        let pairs = headers.iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())));
        let mut handshake = Handshake::new(Transport::WebSocket, uri.path(), pairs, remote);
        if let Some(ip) = client_ip {
            handshake = handshake.with_client_ip(ip);
        }
        let mut admission = Admission::new(Admitted::Session(handshake, slot));
        admission.headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
        Ok(admission)
    }

    /// Serves an admitted upgrade on `stream`, the connection another server upgraded
    /// (after answering 101 with [`Admission::response_headers`]), until the session
    /// ends: the same session, limits and metrics as the gateway's own listener. A
    /// shutdown of the gateway reaches it too: GoAway, then close 1001 once its publishes
    /// are answered, awaited by [`Gateway::run`](crate::Gateway::run) within the same
    /// grace period.
    pub async fn serve_websocket<S>(&self, admission: Admission, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (stream, config) = websocket_io(stream, &self.front.shared.limits);
        let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
        self.serve_upgraded(admission.admitted, ws).await;
    }

    /// Runs what was admitted on an upgraded WebSocket, counted among the sessions the
    /// drain waits for, and stopped if the drain's grace period runs out.
    ///
    /// Not an `async fn`: the session is built before the future exists, so the
    /// connection's task holds no second copy of the WebSocket and the admission.
    pub(crate) fn serve_upgraded<S>(
        &self,
        admitted: Admitted,
        ws: WebSocketStream<S>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let running = self.front.sessions.enter();
        let shared = self.front.shared.clone();
        let (work, counted) = match admitted {
            Admitted::Session(handshake, slot) => {
                shared.metrics.connection_opened();
                (Either::Left(connection::serve(ws, shared.clone(), handshake, Some(slot))), true)
            }
            #[cfg(feature = "conformance-echo")]
            Admitted::Echo(slot) => {
                let echo: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(super::echo::serve(ws, slot));
                (Either::Right(echo), false)
            }
        };
        #[cfg(not(feature = "conformance-echo"))]
        let work: Either<_, Pin<Box<dyn Future<Output = ()> + Send>>> = work;
        // Its own allocation: moved into the `select!` below it would take its room twice.
        let mut work = Box::pin(work);
        async move {
            tokio::select! {
                () = &mut work => {}
                () = running.aborted() => {}
            }
            if counted {
                shared.metrics.connection_closed();
            }
        }
    }

    /// The admin answer for `path`: `/metrics`, `/livez`, `/readyz` (and `/healthz`, a
    /// deprecated alias of `/livez`), 404 for anything else; the admin listener serves
    /// exactly these. Never a request of Kafka: readiness is the last background check's
    /// (docs of [`Limits::readiness_interval`](crate::Limits::readiness_interval)).
    pub async fn admin_response(&self, path: &str) -> Response<Bytes> {
        super::admin::respond(path, &self.front.shared, &self.front.readiness).await
    }
}

/// The WebSocket handshake's checks on an upgrade request (tungstenite's, so that an
/// embedding server's upgrades pass exactly those of the listener) and the headers of the
/// 101 answer they give; 400 saying why when the request is not a WebSocket upgrade.
fn upgrade_headers(parts: &Parts) -> Result<HeaderMap, Refusal> {
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    match tokio_tungstenite::tungstenite::handshake::server::create_response(&request) {
        Ok(resp) => Ok(resp.into_parts().0.headers),
        Err(e) => Err(Refusal::new(StatusCode::BAD_REQUEST, format!("not a WebSocket upgrade request: {e}"), None)),
    }
}
