//! The top layer: the gateway's WebSocket listener (`ws://`, or `wss://` with rustls), the
//! handshake (subprotocol, connection limit), the admin endpoint ([`admin`]), and
//! graceful shutdown. It builds the layers below and hands each upgraded socket to a
//! session.

mod admin;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
#[cfg(feature = "tls")]
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::auth::{AllowAnonymous, Authenticator};
use crate::config::{GatewayConfig, Limits, TlsConfig};
use crate::error::Error;
use crate::fanout::context::FanoutContext;
use crate::fanout::hubs::Hubs;
use crate::kafka::Kafka;
use crate::metrics::Metrics;
use crate::protocol::{SUBPROTOCOL, close};
use crate::session::connection;
use crate::session::dedup::DedupWindow;
use crate::session::local::LocalStreams;
use crate::session::shared::Shared;
use crate::stream::Streams;

#[cfg(feature = "tls")]
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(not(feature = "tls"))]
#[derive(Clone)]
enum TlsAcceptor {}

/// Builds a [`Gateway`].
pub struct GatewayBuilder {
    config: GatewayConfig,
    streams: Streams,
    auth: Arc<dyn Authenticator>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("config", &self.config)
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

impl GatewayBuilder {
    /// Serves these streams (added to any given before).
    pub fn streams(mut self, streams: Streams) -> GatewayBuilder {
        self.streams = std::mem::take(&mut self.streams).merge(streams);
        self
    }

    /// Authenticates tokens with `auth`. Default: [`AllowAnonymous`].
    pub fn authenticator(mut self, auth: impl Authenticator) -> GatewayBuilder {
        self.auth = Arc::new(auth);
        self
    }

    /// Appends text to every `/metrics` scrape, after the gateway's own metrics: your
    /// application's metrics on the same endpoint. `encode` writes OpenMetrics text, for
    /// example with `prometheus_client::encoding::text::encode_registry(out, &registry)`
    /// for a `prometheus-client` registry of your own (without its `# EOF`, which the
    /// gateway writes last).
    pub fn metrics_extension(self, encode: impl Fn(&mut String) -> std::fmt::Result + Send + Sync + 'static) -> Self {
        self.metrics.add_extension(Box::new(encode));
        self
    }

    /// Binds the listeners and connects the Kafka clients. Kafka need not be reachable
    /// yet: requests fail with `UNAVAILABLE` until it is.
    pub async fn bind(self) -> Result<Gateway, Error> {
        let GatewayBuilder { config, streams, auth, metrics } = self;
        if streams.is_empty() {
            return Err(Error::Config("a gateway needs at least one stream".into()));
        }
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let listener = listen(config.listen, config.limits.accept_backlog)?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?),
            None => None,
        };
        let kafka = Kafka::new(config.kafka.clone(), config.limits.publish_timeout, &config.server_id)?;
        let hubs = Hubs::new(FanoutContext::new(kafka, config.limits.clone(), metrics.clone()));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            hubs,
            streams,
            auth,
            dedup: DedupWindow::new(config.limits.dedup_window, config.limits.dedup_capacity),
            #[cfg(feature = "registry")]
            registry: registry_client(config.schema_registry.as_deref()),
            limits: config.limits.clone(),
            metrics,
            server_id: config.server_id.clone(),
            shutdown: shutdown_rx,
        });
        #[cfg(not(feature = "registry"))]
        if config.schema_registry.is_some() {
            return Err(Error::Config(
                "a schema registry is configured but kafkasocks was built without `registry`".into(),
            ));
        }
        Ok(Gateway { listener, metrics_listener, tls, shared, shutdown_tx })
    }
}

#[cfg(feature = "registry")]
fn registry_client(url: Option<&str>) -> Option<crate::registry::SchemaRegistry> {
    // The registry client (reqwest) uses rustls without a built-in provider: ring is the
    // one this crate compiles. Another one already installed is fine too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    url.map(crate::registry::SchemaRegistry::new)
}

fn listen(addr: SocketAddr, backlog: u32) -> Result<TcpListener, Error> {
    let bind = || {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    bind().map_err(|source| Error::Bind { addr, source })
}

#[cfg(feature = "tls")]
fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert_chain)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::tls_file(&tls.cert_chain, e))?;
    let key = PrivateKeyDer::from_pem_file(&tls.private_key).map_err(|e| Error::tls_file(&tls.private_key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::tls("choosing TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::tls("using the certificate and key", e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(not(feature = "tls"))]
fn tls_acceptor(_tls: &TlsConfig) -> Result<TlsAcceptor, Error> {
    Err(Error::Config("wss:// needs the `tls` feature of kafkasocks".into()))
}

/// A running gateway. See the crate docs for an example.
pub struct Gateway {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.listener.local_addr().ok())
            .field("server_id", &self.shared.server_id)
            .finish_non_exhaustive()
    }
}

/// Stops a running [`Gateway`]: GoAway to every client, then close 1001 once their
/// in-flight publishes are answered (at most the drain timeout).
#[derive(Debug, Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Begins the shutdown. [`Gateway::run`] returns once it is done.
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

impl Gateway {
    /// Starts configuring a gateway.
    pub fn builder(config: GatewayConfig) -> GatewayBuilder {
        GatewayBuilder {
            config,
            streams: Streams::new(),
            auth: Arc::new(AllowAnonymous),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The WebSocket listener's address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The metrics listener's address, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The gateway id sent in Welcome.
    pub fn server_id(&self) -> &str {
        &self.shared.server_id
    }

    /// The gateway's streams in process (for gRPC services and tests), sharing its
    /// Kafka readers.
    pub fn local_streams(&self) -> LocalStreams {
        LocalStreams { shared: self.shared.clone() }
    }

    /// A handle that stops [`Gateway::run`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown_tx.clone())
    }

    /// Serves until the shutdown handle is used, then drains.
    pub async fn run(self) -> Result<(), Error> {
        let Gateway { listener, metrics_listener, tls, shared, shutdown_tx } = self;
        tracing::info!(addr = ?listener.local_addr().ok(), tls = tls.is_some(), server_id = %shared.server_id, "gateway listening");
        // Say at once when Kafka refuses this configuration (a wrong password, an untrusted
        // certificate), instead of only when the first request times out.
        let kafka = shared.kafka().clone();
        tokio::spawn(async move {
            match kafka.health().await {
                Ok(()) => tracing::info!("Kafka answers"),
                Err(why) => tracing::error!(
                    %why,
                    "Kafka is not usable with this configuration: publishes and subscriptions fail with UNAVAILABLE \
                     and /healthz says why, until it is"
                ),
            }
        });
        let mut shutdown = shutdown_tx.subscribe();
        if let Some(l) = metrics_listener {
            tokio::spawn(admin::serve(l, shared.metrics.clone(), shared.kafka().clone(), shutdown_tx.subscribe()));
        }
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((tcp, remote)) => {
                        let _ = tcp.set_nodelay(true);
                        conns.spawn(accept(tcp, remote, tls.clone(), shared.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        drop(listener);
        let grace = shared.limits.drain_timeout + Duration::from_secs(6);
        if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await.is_err() {
            conns.abort_all();
        }
        shared.hubs.retire_all();
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// One accepted connection, for its whole life. Each branch is boxed: a task's memory is
/// sized for the largest state of its future, and the TLS handshake's state (rustls, held
/// inline) would otherwise cost every connection, `ws://` included, about 9 KB for as long
/// as it lives (measured with heaptrack in bench/).
async fn accept(tcp: TcpStream, remote: SocketAddr, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    match tls {
        #[cfg(feature = "tls")]
        Some(acceptor) => {
            Box::pin(async move {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => upgrade(stream, remote, shared).await,
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            })
            .await
        }
        #[cfg(not(feature = "tls"))]
        Some(never) => match never {},
        None => Box::pin(upgrade(tcp, remote, shared)).await,
    }
}

pub(crate) fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(limits.read_buffer_bytes)
        .write_buffer_size(limits.write_buffer_bytes)
        .max_write_buffer_size(limits.write_buffer_bytes + limits.send_queue_bytes + (1 << 20))
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
}

#[allow(clippy::result_large_err)]
fn negotiate(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        let mut err = ErrorResponse::new(Some(format!("offer the WebSocket subprotocol {SUBPROTOCOL}\n")));
        *err.status_mut() = StatusCode::BAD_REQUEST;
        return Err(err);
    }
    resp.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    Ok(resp)
}

async fn upgrade<S>(stream: S, remote: SocketAddr, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = ws_config(&shared.limits);
    let ws = match tokio::time::timeout(
        shared.limits.hello_timeout,
        tokio_tungstenite::accept_hdr_async_with_config(stream, negotiate, Some(config)),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "WebSocket handshake failed");
            return;
        }
        Err(_) => return,
    };
    if shared.metrics.connections_open() >= shared.limits.max_connections as i64 || *shared.shutdown.borrow() {
        shared.metrics.connection_rejected();
        let mut ws = ws;
        let _ = ws
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(close::OVERLOADED),
                reason: "gateway at its connection limit".into(),
            })))
            .await;
        return;
    }
    shared.metrics.connection_opened();
    connection::serve(ws, shared.clone(), Some(remote)).await;
    shared.metrics.connection_closed();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection holds its `accept` task for its whole life: that task must stay
    /// small (the TLS handshake's state once made it about 11 KB, for `ws://` too).
    #[tokio::test]
    async fn the_per_connection_task_stays_small() {
        let (shared, _shutdown) = crate::session::shared::test_shared(Limits::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (tcp, remote) = listener.accept().await.expect("accept");
        let task = accept(tcp, remote, None, shared);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 256, "accept future is {size} bytes");
    }
}
